//! The line of orders waiting for stock: who is given what is available,
//! oldest order first (first fit: an order wanting more than there is
//! keeps its turn, a younger one that fits goes). The inventory feed
//! follower (`stock_feed`) wakes the orders stock that came covers; a
//! reservation attempt of the saga (`behind_older`) leaves the stock to
//! the older orders waiting for it, so that a new order, or a woken one
//! retried early, does not take units an older one waits for.
use crate::repo::{self, stock_waits, stock_waits::Turn, stock_waits::Waiter};
use crate::workers::peers::Peers;
use oms_kernel::Tenant;
use oms_proto::inventory::{Availability, AvailabilityScope, GetAvailabilityRequest};
use sqlx::PgConnection;
use std::collections::{BTreeSet, HashMap};
use uuid::Uuid;

/// Waiting steps weighed per page, and SKUs per availability call.
const BATCH: usize = 1000;

/// What is left to give out: units per SKU of the network (channel `""`)
/// and of each waiting order's channel.
pub(crate) type Left = HashMap<(String, String), i64>;

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
pub(crate) fn first_fit(
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
        if !missing(w, left).is_empty() {
            continue;
        }
        for (sku, q) in &w.needs {
            for channel in scopes(w) {
                *left.entry((channel.to_owned(), sku.clone())).or_default() -= q;
            }
        }
        woken.push((w.order_id, w.step.clone()));
    }
    woken
}

/// Gives what is available out to the steps waiting for `skus` (`None`:
/// any SKU; and only those older than the turn `before`, when given),
/// oldest first, page by page while the network has units left: the
/// steps that get their units ([`first_fit`]). `left` holds what was
/// read and taken already; what they take is taken from it.
pub(crate) async fn give_out(
    db: &mut PgConnection,
    peers: &Peers,
    tenant: &Tenant,
    (skus, before): (Option<&[String]>, Option<Turn>),
    left: &mut Left,
    arrived: impl Fn(&str) -> bool,
) -> anyhow::Result<Vec<(Uuid, String)>> {
    let (mut woken, mut after) = (vec![], None);
    loop {
        let page = stock_waits::waiting(
            &mut *db,
            tenant,
            (skus, after.as_ref(), before),
            BATCH as i64,
        )
        .await?;
        available(peers, tenant, &page, left).await?;
        woken.extend(first_fit(&page, left, &arrived));
        let more = left.iter().any(|((c, _), q)| c.is_empty() && *q > 0);
        match page.into_iter().last() {
            Some(last) if more => after = Some(last),
            _ => return Ok(woken),
        }
    }
}

/// What `me` (an order's reservation attempt) misses, per SKU, once the
/// older backorders waiting for its SKUs have taken what is available
/// (empty: it may go; so too when it is short anyway, which the
/// reservation's refusal says better). The older backorders the stock
/// covers are made due, as the feed would have: their turn comes first.
/// A step locked meanwhile (another replica runs it now) is left as it
/// is.
pub(crate) async fn behind_older(
    db: &mut PgConnection,
    peers: &Peers,
    tenant: &Tenant,
    me: &Waiter,
) -> anyhow::Result<Vec<(String, i64)>> {
    let skus: Vec<String> = me.needs.iter().map(|(s, _)| s.clone()).collect();
    let turn = (me.since, me.order_id);
    // The common case, nobody older waiting for these SKUs, costs this
    // read only.
    if !stock_waits::backorders_before(&mut *db, tenant, &skus, turn).await? {
        return Ok(vec![]);
    }
    let mut left = Left::new();
    available(peers, tenant, std::slice::from_ref(me), &mut left).await?;
    if !missing(me, &left).is_empty() {
        // Short whoever waits (inventory's refusal says of what), so the
        // line need not be read: cheap while a sold-out SKU has many
        // orders waiting and more coming.
        return Ok(vec![]);
    }
    // Only older backorders go first, as with units the feed sees given
    // back: a plan waiting (a rest, a reroute) is woken by stock arriving
    // at a node, so an order yielding to one would leave the units idle
    // until the plan's backoff.
    let woken = give_out(
        db,
        peers,
        tenant,
        (Some(&skus), Some(turn)),
        &mut left,
        |_| false,
    )
    .await?;
    stock_waits::wake(&mut *db, tenant, &woken, true).await?;
    Ok(missing(me, &left))
}

/// Where `w` takes stock from: the network (`""`) and its channel.
fn scopes(w: &Waiter) -> impl Iterator<Item = &str> {
    std::iter::once("").chain((!w.channel.is_empty()).then_some(w.channel.as_str()))
}

/// Units `w` needs beyond what is `left` in each of its [`scopes`].
fn missing(w: &Waiter, left: &Left) -> Vec<(String, i64)> {
    w.needs
        .iter()
        .filter_map(|(sku, q)| {
            let have = scopes(w).map(|c| left_of(left, c, sku)).min()?;
            (have < *q).then(|| (sku.clone(), q - have.max(0)))
        })
        .collect()
}

/// Adds to `left` the availability of every SKU the waiters need, in
/// the network and in each of their channels, that it has not got
/// (what older waiters left of the others).
async fn available(
    peers: &Peers,
    tenant: &Tenant,
    waiters: &[Waiter],
    left: &mut Left,
) -> anyhow::Result<()> {
    let wanted: BTreeSet<(&str, &str)> = waiters
        .iter()
        .flat_map(|w| {
            w.needs
                .iter()
                .flat_map(move |(sku, _)| scopes(w).map(move |c| (c, sku.as_str())))
        })
        .filter(|(c, s)| !left.contains_key(&(c.to_string(), s.to_string())))
        .collect();
    let mut by_channel: HashMap<&str, Vec<String>> = HashMap::new();
    for (channel, sku) in wanted {
        by_channel.entry(channel).or_default().push(sku.to_owned());
    }
    for (channel, skus) in by_channel {
        for chunk in skus.chunks(BATCH) {
            for a in before_own_backorders(peers, tenant, channel, chunk.to_vec()).await? {
                left.insert((channel.to_owned(), a.sku), a.available);
            }
        }
    }
    Ok(())
}

/// What inventory says of `skus` (at most 1,000) where an order of
/// `channel` takes its stock from (the network when empty, else the
/// channel's share), before orders' own backorders' demand is taken out
/// (another source's is: the gate keeps those units from orders too):
/// what an order's reservation could take now, and what is on the way.
pub(crate) async fn before_own_backorders(
    peers: &Peers,
    tenant: &Tenant,
    channel: &str,
    skus: Vec<String>,
) -> Result<Vec<Availability>, tonic::Status> {
    let scope = match channel {
        "" => AvailabilityScope::Network,
        _ => AvailabilityScope::Channel,
    };
    let req = GetAvailabilityRequest {
        skus,
        scope: scope as i32,
        channel: channel.to_owned(),
        backorders_of: crate::workers::demand_publisher::SOURCE.to_owned(),
        ..Default::default()
    };
    let answer = peers.inventory(tenant).get_availability(req).await?;
    Ok(answer.into_inner().availabilities)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

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

    #[test]
    fn an_order_misses_what_its_scopes_lack() {
        let web = Waiter {
            channel: "channels/web".into(),
            ..waiter(9, &[("A", 3), ("B", 1)])
        };
        let left = left(&[("", "A", 5), ("channels/web", "A", 1), ("", "B", -2)]);
        assert_eq!(
            missing(&web, &left),
            [("A".to_string(), 2), ("B".to_string(), 1)]
        );
        assert!(missing(&waiter(9, &[("A", 5)]), &left).is_empty());
    }
}
