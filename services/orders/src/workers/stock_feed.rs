//! Wakes the steps waiting for stock (backordered orders; rests, reroutes
//! and deferred plans short of stock) when stock may have come: follows
//! each tenant's inventory feed, only the events that can raise
//! availability (receipts, returns, counts, releases and expiries of
//! reservations, restored lots, enabled nodes, lowered safety stock or
//! channel rules), and after each run of them asks inventory for the
//! availability of the SKUs waited for, in the network and in the waiting
//! orders' channels, and wakes, oldest order first, every waiting step
//! whose units it covers (first fit: an order too large for what came
//! keeps its turn, one behind it that fits goes now). Steps that plan wake
//! only for stock that arrived at a node (see [`first_fit`]). A step woken
//! for nothing (another order took the units first, a node routing cannot
//! use) fails its attempt and waits again; each step's own backoff stays
//! the safety net for what the feed does not say (and while the feed is
//! down).
use crate::metrics::Metrics;
use crate::repo::{self, feeds, stock_waits, stock_waits::Waiter};
use crate::workers::{followers, peers::Peers, saga::Saga};
use futures::{FutureExt, StreamExt};
use oms_kernel::Tenant;
use oms_proto::inventory::{
    AvailabilityScope, GetAvailabilityRequest, InventoryEvent, WatchInventoryEventsRequest,
    inventory_event::Kind,
};
use sqlx::PgPool;
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The inventory events that can raise availability.
const SUPPLY: [&str; 6] = [
    "StockMoved",
    "ReservationReleased",
    "LotRestored",
    "NodeChanged",
    "SafetyStockSet",
    "ChannelRuleSet",
];

/// Events taken in one run (those already arrived, up to this many).
const RUN: usize = 1000;

/// Waiting steps weighed per page, and SKUs per availability call.
const BATCH: usize = 1000;

#[derive(Clone)]
pub struct StockFeed {
    pub pool: PgPool,
    pub peers: Peers,
    pub saga: Saga,
    pub metrics: Metrics,
}

/// SKUs whose availability a run of events may have raised.
#[derive(Debug, Default, PartialEq)]
enum Raised {
    #[default]
    Nothing,
    Skus {
        raised: BTreeSet<String>,
        /// Those of them with stock newly promised at a node (received,
        /// counted up, restored, a node enabled), not only units given
        /// back to the network.
        arrived: BTreeSet<String>,
    },
    /// A change of a rule over many SKUs (a node's default safety stock,
    /// a channel's pool): every SKU waited for.
    All,
}

impl Raised {
    fn add(&mut self, ev: &InventoryEvent) {
        let (skus, arrival): (Vec<String>, bool) = match &ev.kind {
            Some(Kind::StockMoved(m)) => (
                m.movement
                    .iter()
                    .filter(|m| m.quantity > 0)
                    .map(|m| m.sku.clone())
                    .collect(),
                true,
            ),
            Some(Kind::ReservationReleased(r)) => {
                (r.released.iter().map(|a| a.sku.clone()).collect(), false)
            }
            Some(Kind::LotRestored(l)) => (vec![l.sku.clone()], true),
            Some(Kind::NodeChanged(n)) if n.enabled && n.usable => (n.skus.clone(), true),
            Some(Kind::SafetyStockSet(s)) if !s.sku.is_empty() => (vec![s.sku.clone()], false),
            Some(Kind::SafetyStockSet(_) | Kind::ChannelRuleSet(_)) => {
                *self = Raised::All;
                return;
            }
            _ => return,
        };
        if skus.is_empty() || *self == Raised::All {
            return;
        }
        if *self == Raised::Nothing {
            *self = Raised::Skus {
                raised: BTreeSet::new(),
                arrived: BTreeSet::new(),
            };
        }
        if let Raised::Skus { raised, arrived } = self {
            if arrival {
                arrived.extend(skus.iter().cloned());
            }
            raised.extend(skus);
        }
    }

    /// Whether stock of `sku` arrived at a node in the run.
    fn arrived(&self, sku: &str) -> bool {
        match self {
            Raised::Nothing => false,
            Raised::Skus { arrived, .. } => arrived.contains(sku),
            Raised::All => true,
        }
    }
}

/// What is left to give out: units per SKU of the network (channel `""`)
/// and of each waiting order's channel.
type Left = HashMap<(String, String), i64>;

fn left_of(left: &Left, channel: &str, sku: &str) -> i64 {
    left.get(&(channel.to_owned(), sku.to_owned()))
        .copied()
        .unwrap_or(0)
}

/// The waiting steps to wake, oldest first: each whose every SKU's units
/// fit in what is `left` (taken from it) of the network and of its
/// channel once the older ones woken took theirs. (A step due already
/// is woken again for nothing: [`stock_waits::wake`] leaves it as it is,
/// but the stock it will take is counted, so a run during a wave of
/// releases does not wake others for the units an earlier run gave it.)
/// A step that plans (a deferred route, a rest, a reroute: it waits for
/// stock at a node it may use, not only in the network) is woken only
/// when stock of one of its SKUs `arrived` at a node: units given back to
/// the network, a cart's, come often and rarely change where stock is,
/// and each wake costs a plan. Only a backorder's `reserve` is woken by
/// those.
fn first_fit(
    waiters: &[Waiter],
    left: &mut Left,
    arrived: impl Fn(&str) -> bool,
) -> Vec<(Uuid, String)> {
    let mut woken = Vec::new();
    for w in waiters {
        let plan = w.step != repo::saga::RESERVE;
        if plan && !w.needs.iter().any(|(sku, _)| arrived(sku)) {
            continue;
        }
        let mut scopes = vec![""];
        if !w.channel.is_empty() {
            scopes.push(&w.channel);
        }
        let fits = w.needs.iter().all(|(sku, q)| {
            scopes
                .iter()
                .all(|channel| left_of(left, channel, sku) >= *q)
        });
        if !fits {
            continue;
        }
        for (sku, q) in &w.needs {
            for channel in &scopes {
                *left.entry((channel.to_string(), sku.clone())).or_default() -= q;
            }
        }
        woken.push((w.order_id, w.step.clone()));
    }
    woken
}

impl StockFeed {
    /// Follows the inventory feed of every tenant with steps that waited
    /// for stock (see [`followers::supervise`]).
    pub fn start(self, every: Duration, shutdown: CancellationToken) {
        let pool = self.pool.clone();
        followers::supervise(pool, feeds::INVENTORY, every, shutdown, move |t, cursor| {
            let me = self.clone();
            async move {
                if let Err(e) = me.follow(&t, cursor).await {
                    tracing::warn!(tenant = %t, error = %e, "inventory feed broke; resuming from the stored cursor");
                }
            }
        });
    }

    /// Follows `tenant`'s feed from `cursor` (empty: from the oldest event
    /// kept, which only weighs the waiting steps once more). When the
    /// events after the cursor are gone, it starts from the oldest kept
    /// and weighs every waiting step.
    async fn follow(&self, tenant: &Tenant, cursor: String) -> anyhow::Result<()> {
        match self.run(tenant, cursor, Raised::Nothing).await {
            Err(e) if followers::cursor_expired(&e) => {
                tracing::warn!(tenant = %tenant, error = %e, "inventory events were deleted before this service read them: weighing every step waiting for stock");
                self.run(tenant, String::new(), Raised::All).await
            }
            other => other,
        }
    }

    /// Takes the feed after `cursor` a run of events at a time, the first
    /// run with what is `raised` already.
    async fn run(&self, tenant: &Tenant, cursor: String, mut raised: Raised) -> anyhow::Result<()> {
        let watch = WatchInventoryEventsRequest {
            after_cursor: cursor,
            event_types: SUPPLY.iter().map(|t| t.to_string()).collect(),
        };
        let mut feed = (self.peers.inventory(tenant))
            .watch_inventory_events(watch)
            .await?
            .into_inner();
        while let Some(first) = feed.next().await {
            let mut last = first?;
            raised.add(last.event.as_ref().unwrap_or(&InventoryEvent::default()));
            // The events already here join the run: one availability call
            // and one commit for a wave of expired carts.
            for _ in 1..RUN {
                match feed.next().now_or_never() {
                    Some(Some(ev)) => {
                        last = ev?;
                        raised.add(last.event.as_ref().unwrap_or(&InventoryEvent::default()));
                    }
                    _ => break,
                }
            }
            let Some(cursor) = last.event.and_then(|e| e.meta).map(|m| m.cursor) else {
                continue;
            };
            self.settle(tenant, std::mem::take(&mut raised), &cursor)
                .await?;
        }
        Ok(())
    }

    /// Wakes what the run of events up to `cursor` lets go, and moves the
    /// cursor past it.
    async fn settle(&self, tenant: &Tenant, raised: Raised, cursor: &str) -> anyhow::Result<()> {
        let skus: Option<Vec<String>> = match &raised {
            Raised::Nothing => Some(vec![]),
            Raised::Skus { raised, .. } => Some(raised.iter().cloned().collect()),
            Raised::All => None,
        };
        // Page by page, oldest first, while stock is left to give out.
        let (mut woken, mut left, mut after) = (vec![], HashMap::new(), None);
        while skus.as_ref().is_none_or(|s| !s.is_empty()) {
            let page = stock_waits::waiting(
                &self.pool,
                tenant,
                skus.as_deref(),
                after.as_ref(),
                BATCH as i64,
            )
            .await?;
            self.available(tenant, &page, &mut left).await?;
            woken.extend(first_fit(&page, &mut left, |sku| raised.arrived(sku)));
            let more = left.iter().any(|((c, _), q)| c.is_empty() && *q > 0);
            match page.into_iter().last() {
                Some(last) if more => after = Some(last),
                _ => break,
            }
        }
        let mut tx = self.pool.begin().await?;
        if !feeds::claim(&mut tx, feeds::INVENTORY, tenant, cursor).await? {
            return Ok(());
        }
        let n = stock_waits::wake(&mut *tx, tenant, &woken).await?;
        feeds::advance(&mut tx, feeds::INVENTORY, tenant, cursor, None).await?;
        tx.commit().await?;
        if n > 0 {
            tracing::info!(tenant = %tenant, steps = n, "stock came: woke the steps it covers");
            self.metrics.woken(tenant.as_str(), n);
            self.saga.wake();
        }
        Ok(())
    }

    /// Adds to `left` the availability of every SKU the waiters need, in
    /// the network and in each of their channels, that it has not got
    /// (what older waiters left of the others).
    async fn available(
        &self,
        tenant: &Tenant,
        waiters: &[Waiter],
        left: &mut Left,
    ) -> anyhow::Result<()> {
        let wanted: BTreeSet<(&str, &str)> = waiters
            .iter()
            .flat_map(|w| {
                w.needs
                    .iter()
                    .flat_map(|(sku, _)| [("", sku.as_str()), (w.channel.as_str(), sku.as_str())])
            })
            .filter(|(c, s)| !left.contains_key(&(c.to_string(), s.to_string())))
            .collect();
        let mut by_channel: HashMap<&str, Vec<String>> = HashMap::new();
        for (channel, sku) in wanted {
            by_channel.entry(channel).or_default().push(sku.to_owned());
        }
        let mut inventory = self.peers.inventory(tenant);
        for (channel, skus) in by_channel {
            let scope = if channel.is_empty() {
                AvailabilityScope::Network
            } else {
                AvailabilityScope::Channel
            };
            for chunk in skus.chunks(BATCH) {
                let answer = inventory
                    .get_availability(GetAvailabilityRequest {
                        skus: chunk.to_vec(),
                        scope: scope as i32,
                        channel: channel.to_owned(),
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                for a in answer.availabilities {
                    left.insert((channel.to_owned(), a.sku), a.available);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use oms_proto::inventory::{
        Allocation, ChannelRuleSet, MovementKind, NodeChanged, ReservationReleased, StockMoved,
        StockMovement,
    };

    fn waiter(n: u128, needs: &[(&str, i64)]) -> Waiter {
        Waiter {
            order_id: Uuid::from_u128(n),
            step: "reserve".into(),
            since: Utc.timestamp_opt(n as i64, 0).unwrap(),
            channel: String::new(),
            needs: needs.iter().map(|(s, q)| (s.to_string(), *q)).collect(),
        }
    }

    fn left(figures: &[(&str, &str, i64)]) -> Left {
        figures
            .iter()
            .map(|(c, s, q)| ((c.to_string(), s.to_string()), *q))
            .collect()
    }

    fn ids(woken: &[(Uuid, String)]) -> Vec<u128> {
        woken.iter().map(|(o, _)| o.as_u128()).collect()
    }

    #[test]
    fn the_oldest_orders_that_fit_are_woken() {
        let waiters = [
            waiter(1, &[("A", 5)]),
            waiter(2, &[("A", 1)]),
            waiter(3, &[("A", 2)]),
            waiter(4, &[("A", 1), ("B", 1)]),
            waiter(5, &[("A", 1)]),
        ];
        let mut three = left(&[("", "A", 3)]);
        // 1 wants more than came and keeps its turn; 2 and 3 take the
        // three units; 4 misses B; nothing is left for 5.
        assert_eq!(ids(&first_fit(&waiters, &mut three, |_| false)), [2, 3]);
        assert_eq!(left_of(&three, "", "A"), 0);
        let mut six = left(&[("", "A", 6), ("", "B", 1)]);
        assert_eq!(ids(&first_fit(&waiters, &mut six, |_| false)), [1, 2]);
        // What the first page left goes on to the next.
        assert!(first_fit(&[waiter(6, &[("A", 1)])], &mut six, |_| false).is_empty());
        assert!(first_fit(&waiters, &mut Left::new(), |_| false).is_empty());
    }

    #[test]
    fn a_plan_wakes_only_when_stock_arrives_at_a_node() {
        // A deferred route's units are held: it asks for none.
        let plan = Waiter {
            step: "route".into(),
            ..waiter(1, &[("A", 0)])
        };
        let waiters = [plan, waiter(2, &[("A", 1)])];
        let mut left = left(&[("", "A", 1)]);
        // Units given back (a cart's): the backorder only.
        assert_eq!(ids(&first_fit(&waiters, &mut left.clone(), |_| false)), [2]);
        // Units received: both.
        assert_eq!(ids(&first_fit(&waiters, &mut left, |s| s == "A")), [1, 2]);
    }

    #[test]
    fn an_order_waits_for_its_channels_share_too() {
        let web = |n, q| Waiter {
            channel: "channels/web".into(),
            ..waiter(n, &[("A", q)])
        };
        let waiters = [web(1, 2), web(2, 1), waiter(3, &[("A", 2)])];
        // The web's pool has one unit of the network's three: the oldest
        // web order waits, the next takes it, the order of no channel the
        // other two.
        let mut left = left(&[("", "A", 3), ("channels/web", "A", 1)]);
        assert_eq!(ids(&first_fit(&waiters, &mut left, |_| false)), [2, 3]);
        assert_eq!(left_of(&left, "", "A"), 0);
        assert_eq!(left_of(&left, "channels/web", "A"), 0);
    }

    fn event(kind: Kind) -> InventoryEvent {
        InventoryEvent {
            kind: Some(kind),
            ..Default::default()
        }
    }

    fn moved(sku: &str, kind: MovementKind, quantity: i64) -> InventoryEvent {
        event(Kind::StockMoved(StockMoved {
            movement: Some(StockMovement {
                sku: sku.into(),
                kind: kind as i32,
                quantity,
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    #[test]
    fn only_what_can_raise_availability_counts() {
        let mut raised = Raised::default();
        raised.add(&moved("SHIPPED", MovementKind::Shipment, -1));
        raised.add(&event(Kind::NodeChanged(NodeChanged {
            enabled: false,
            usable: true,
            skus: vec!["DISABLED".into()],
            ..Default::default()
        })));
        assert_eq!(raised, Raised::Nothing);
        raised.add(&moved("RECEIVED", MovementKind::Receipt, 4));
        raised.add(&moved("CONFIRMED", MovementKind::CycleCount, 0));
        raised.add(&moved("COUNTED", MovementKind::CycleCount, 2));
        raised.add(&event(Kind::ReservationReleased(ReservationReleased {
            released: vec![Allocation {
                sku: "RELEASED".into(),
                quantity: 1,
                ..Default::default()
            }],
            ..Default::default()
        })));
        let set = |s: &[&str]| s.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            raised,
            Raised::Skus {
                raised: set(&["COUNTED", "RECEIVED", "RELEASED"]),
                arrived: set(&["COUNTED", "RECEIVED"]),
            }
        );
        assert!(raised.arrived("RECEIVED") && !raised.arrived("RELEASED"));
        raised.add(&event(Kind::ChannelRuleSet(ChannelRuleSet::default())));
        assert_eq!(raised, Raised::All);
        raised.add(&moved("RECEIVED", MovementKind::Receipt, 4));
        assert_eq!(raised, Raised::All);
    }
}
