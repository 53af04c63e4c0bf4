//! Wakes the steps waiting for stock (backordered orders; rests, reroutes
//! and deferred plans short of stock) when stock may have come: follows
//! each tenant's inventory feed, only the events that can raise
//! availability (receipts, returns, counts, releases and expiries of
//! reservations, restored lots, enabled nodes, lowered safety stock or
//! channel rules, less demand of another source's backorders), and after
//! each run of them asks inventory for the availability of the SKUs
//! waited for, in the network and in the waiting orders' channels, and
//! wakes, oldest order first, every waiting step
//! whose units it covers (first fit: an order too large for what came
//! keeps its turn, one behind it that fits goes now). Steps that plan wake
//! only for stock that arrived at a node (see [`stock_line::first_fit`]). A step woken
//! for nothing (another order took the units first, a node routing cannot
//! use) fails its attempt and waits again; each step's own backoff stays
//! the safety net for what the feed does not say (and while the feed is
//! down).
use crate::metrics::Metrics;
use crate::repo::{feeds, stock_waits};
use crate::workers::stock_line::{self, Left};
use crate::workers::{demand_publisher, followers, peers::Peers, saga::Saga};
use futures::{FutureExt, StreamExt};
use oms_kernel::Tenant;
use oms_proto::inventory::{
    GetAvailabilityRequest, InventoryEvent, WatchInventoryEventsRequest, inventory_event::Kind,
};
use sqlx::PgPool;
use std::collections::BTreeSet;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The inventory events that can raise availability.
const SUPPLY: [&str; 7] = [
    "StockMoved",
    "ReservationReleased",
    "LotRestored",
    "NodeChanged",
    "SafetyStockSet",
    "ChannelRuleSet",
    "BackorderDemandSet",
];

/// Events taken in one run (those already arrived, up to this many).
const RUN: usize = 1000;

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
            // Another source's backorders may ask for less: the units the
            // gate kept for them are orders' to take. (Its own figures
            // change nothing orders' reservations may take.)
            Some(Kind::BackorderDemandSet(d)) if d.source != demand_publisher::SOURCE => {
                (d.skus.clone(), false)
            }
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

    /// Follows `tenant`'s feed from `cursor`; without one (the tenant's
    /// first wait), or when the events after it are gone, from the feed's
    /// head (see [`StockFeed::follow_from_head`]).
    async fn follow(&self, tenant: &Tenant, cursor: String) -> anyhow::Result<()> {
        let followed = if cursor.is_empty() {
            self.follow_from_head(tenant).await
        } else {
            self.run(tenant, cursor).await
        };
        match followed {
            Err(e) if followers::cursor_expired(&e) => {
                tracing::warn!(tenant = %tenant, error = %e, "inventory events were deleted before this service read them: weighing every step waiting for stock");
                self.follow_from_head(tenant).await
            }
            other => other,
        }
    }

    /// Weighs every step waiting for stock against the availability read
    /// after the feed's head, stores the head as the cursor and follows on
    /// from there (nothing while nothing waits). Before 2026-12-05 a
    /// tenant's first follow (and one after its cursor's events were
    /// deleted) read every event inventory keeps (a month of a busy
    /// tenant's, all types, passed over in inventory after they were read),
    /// its wakes held up until it was through; the weighing covers what
    /// happened before the head.
    async fn follow_from_head(&self, tenant: &Tenant) -> anyhow::Result<()> {
        let Some(sku) = stock_waits::any_sku(&self.pool, tenant).await? else {
            return Ok(());
        };
        let head = (self.peers.inventory(tenant))
            .get_availability(GetAvailabilityRequest {
                skus: vec![sku],
                ..Default::default()
            })
            .await?
            .into_inner()
            .feed_cursor;
        self.settle(tenant, Raised::All, &head).await?;
        self.run(tenant, head).await
    }

    /// Takes the feed after `cursor` a run of events at a time.
    async fn run(&self, tenant: &Tenant, cursor: String) -> anyhow::Result<()> {
        let mut raised = Raised::Nothing;
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
        let woken = match &skus {
            Some(s) if s.is_empty() => vec![],
            _ => {
                let mut db = self.pool.acquire().await?;
                let mut left = Left::new();
                let among = (skus.as_deref(), None);
                let arrived = |sku: &str| raised.arrived(sku);
                stock_line::give_out(&mut db, &self.peers, tenant, among, &mut left, arrived)
                    .await?
            }
        };
        let mut tx = self.pool.begin().await?;
        if !feeds::claim(&mut tx, feeds::INVENTORY, tenant, cursor).await? {
            return Ok(());
        }
        let n = stock_waits::wake(&mut *tx, tenant, &woken, false).await?;
        feeds::advance(&mut tx, feeds::INVENTORY, tenant, cursor, None).await?;
        tx.commit().await?;
        if n > 0 {
            tracing::info!(tenant = %tenant, steps = n, "stock came: woke the steps it covers");
            self.metrics.woken(tenant.as_str(), n);
            self.saga.wake();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oms_proto::inventory::{
        Allocation, BackorderDemandSet, ChannelRuleSet, MovementKind, NodeChanged,
        ReservationReleased, StockMoved, StockMovement,
    };

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
        let demand = |source: &str| {
            event(Kind::BackorderDemandSet(BackorderDemandSet {
                skus: vec![format!("{source}-DEMAND")],
                source: source.into(),
                ..Default::default()
            }))
        };
        raised.add(&demand("orders"));
        assert_eq!(raised, Raised::Nothing);
        raised.add(&moved("RECEIVED", MovementKind::Receipt, 4));
        raised.add(&demand("erp"));
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
                raised: set(&["COUNTED", "RECEIVED", "RELEASED", "erp-DEMAND"]),
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
