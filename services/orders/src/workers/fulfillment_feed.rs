//! Follows each tenant's fulfillment feed (from the cursor stored in
//! `feed_cursors`, moved in the same transaction as the work each event
//! causes, so nothing is lost or applied twice across restarts): shipped
//! units consume the order's allocations in inventory, and the order's
//! lines and state follow its fulfillment orders to PARTIALLY_SHIPPED,
//! SHIPPED and DELIVERED; units a node gave back (rejected, short-picked)
//! are rerouted by a saga step. When the retention deleted events it never
//! read, it resyncs from the fulfillment orders themselves.
use crate::changes::{Happened, record};
use crate::domain::OrderState;
use crate::domain::lifecycle;
use crate::metrics::Metrics;
use crate::repo::{self, feeds, feeds::Put};
use crate::workers::{
    followers,
    peers::Peers,
    reroute,
    saga::{cancel_work_step, open_work, release_request},
};
use chrono::Utc;
use oms_kernel::{Tenant, parse_name};
use oms_proto::fulfillment::{
    FulfillmentOrder, FulfillmentState, ListFulfillmentOrdersRequest,
    WatchFulfillmentEventsRequest, WatchFulfillmentEventsResponse,
};
use oms_proto::inventory::{
    Allocation, ConsumeAllocationsRequest, MovementKind, RecordMovementRequest, StockMovement,
};
use oms_runtime::time::{from_timestamp, to_timestamp};
use prost::Message;
use sqlx::PgPool;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use uuid::Uuid;

const ACTOR: &str = "system:fulfillment";

/// How far before the last event taken a resync looks: fulfillment's
/// replicas time reports and events by their own clocks.
const RESYNC_MARGIN: chrono::Duration = chrono::Duration::minutes(5);

#[derive(Clone)]
pub struct FulfillmentFeed {
    pub pool: PgPool,
    pub peers: Peers,
    pub metrics: Metrics,
}

/// Shipped units inventory refused to take from stock.
struct Untaken {
    units: i64,
    /// What the order's history tells of them: units, SKU and why.
    told: String,
}

impl FulfillmentFeed {
    /// Follows every followed tenant's feed (see [`followers::supervise`]).
    pub fn start(self, every: Duration, shutdown: CancellationToken) {
        let pool = self.pool.clone();
        followers::supervise(
            pool,
            feeds::FULFILLMENT,
            every,
            shutdown,
            move |t, cursor| {
                let me = self.clone();
                async move { me.follow_or_resync(&t, cursor).await }
            },
        );
    }

    /// Follows `tenant`'s feed from `cursor` until it breaks; resyncs from
    /// the fulfillment orders when the events after the cursor are gone.
    /// A new follower reads the feed from before its first event (`0.0`,
    /// not empty, which would skip what the retention deleted): event by
    /// event, an order passes through every state, where a resync moves
    /// it to where it is now.
    async fn follow_or_resync(&self, tenant: &Tenant, cursor: String) {
        match self.follow(tenant, cursor).await {
            Err(e) if followers::cursor_expired(&e) => {
                tracing::warn!(tenant = %tenant, error = %e, "fulfillment events were deleted before this service read them (OMS_EVENT_RETENTION_DAYS): resyncing from the fulfillment orders");
                match self.resync(tenant).await {
                    Ok(n) => {
                        tracing::info!(tenant = %tenant, fulfillment_orders = n, "resynced from the fulfillment orders; following the feed again")
                    }
                    Err(e) => {
                        tracing::warn!(tenant = %tenant, error = %e, "resync failed; trying again")
                    }
                }
            }
            Err(e) => {
                tracing::warn!(tenant = %tenant, error = %e, "fulfillment feed broke; resuming from the stored cursor")
            }
            Ok(()) => {}
        }
    }

    /// Brings orders up to date from the fulfillment orders themselves
    /// after the retention deleted events it never read. It takes in every
    /// fulfillment order changed since the last event it took, or all when
    /// that time is not known; a report no newer than the one orders has
    /// changes nothing. Then it moves the cursor to where the feed stood
    /// before the list was read, so no later change is missed. Stopped
    /// half way, it starts again from the same cursor. Returns how many
    /// fulfillment orders it read.
    async fn resync(&self, tenant: &Tenant) -> anyhow::Result<usize> {
        let since = feeds::event_time(&self.pool, feeds::FULFILLMENT, tenant)
            .await?
            .map(|t| to_timestamp(t - RESYNC_MARGIN));
        let mut client = self.peers.fulfillment(tenant);
        let (mut head, mut page_token, mut read) = (None, String::new(), 0);
        loop {
            let page = client
                .list_fulfillment_orders(ListFulfillmentOrdersRequest {
                    page_size: 500,
                    page_token,
                    update_time_from: since,
                    ..Default::default()
                })
                .await?
                .into_inner();
            // A fulfillment older than this orders sends no cursor:
            // following its feed from the start would replay reports older
            // than those taken.
            anyhow::ensure!(
                !page.feed_cursor.is_empty(),
                "fulfillment gave no feed cursor with its list (upgrade it first)"
            );
            head.get_or_insert(page.feed_cursor);
            for fo in &page.fulfillment_orders {
                let mut tx = self.pool.begin().await?;
                let key = format!("v{}", fo.version);
                self.take(&mut tx, tenant, fo, &key).await?;
                tx.commit().await?;
            }
            read += page.fulfillment_orders.len();
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        let head = head.unwrap_or_default();
        let mut tx = self.pool.begin().await?;
        if feeds::claim(&mut tx, feeds::FULFILLMENT, tenant, &head).await? {
            feeds::advance(&mut tx, feeds::FULFILLMENT, tenant, &head, None).await?;
        }
        tx.commit().await?;
        Ok(read)
    }

    async fn follow(&self, tenant: &Tenant, cursor: String) -> anyhow::Result<()> {
        let mut feed = self
            .peers
            .fulfillment(tenant)
            .watch_fulfillment_events(WatchFulfillmentEventsRequest {
                after_cursor: if cursor.is_empty() {
                    oms_runtime::outbox::Cursor::ORIGIN.to_string()
                } else {
                    cursor
                },
            })
            .await?
            .into_inner();
        while let Some(ev) = feed.message().await? {
            self.apply(tenant, ev).await?;
        }
        Ok(())
    }

    async fn apply(
        &self,
        tenant: &Tenant,
        ev: WatchFulfillmentEventsResponse,
    ) -> anyhow::Result<()> {
        let meta = ev.meta.unwrap_or_default();
        let occurred = meta.occur_time.as_ref().and_then(from_timestamp);
        let mut tx = self.pool.begin().await?;
        if !feeds::claim(&mut tx, feeds::FULFILLMENT, tenant, &meta.cursor).await? {
            return Ok(());
        }
        if let Some(fo) = ev.fulfillment_order {
            let key = meta.cursor.replace('.', "-");
            self.take(&mut tx, tenant, &fo, &key).await?;
        }
        feeds::advance(&mut tx, feeds::FULFILLMENT, tenant, &meta.cursor, occurred).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Takes in a report of a fulfillment order, unless orders has as new
    /// a one: its shipped units are consumed in inventory, units its node
    /// gave back are rerouted or cancelled (saga steps named with `key`,
    /// unique to the report), and its order's lines and state follow.
    async fn take(
        &self,
        tx: &mut sqlx::PgConnection,
        tenant: &Tenant,
        fo: &FulfillmentOrder,
        key: &str,
    ) -> anyhow::Result<()> {
        let Some(order_id) = parse_name(&fo.order, "orders")
            .ok()
            .and_then(|id| Uuid::parse_str(id).ok())
        else {
            return Ok(());
        };
        let Some((mut o, held_from)) = repo::orders::lock(&mut *tx, tenant, order_id).await? else {
            return Ok(());
        };
        repo::saga::hurry_undone_edits(&mut *tx, tenant, order_id).await?;
        let before = match feeds::put_fulfillment(&mut *tx, tenant, order_id, fo).await? {
            Put::Stale => return Ok(()),
            Put::Stored(before) => before.map(|b| *b),
        };
        let untaken = self.consume(tenant, fo, before.as_ref()).await?;
        // Work released just before the order's cancel, and reported
        // only after it: CancelOrder could not ask for it, so it is
        // asked now (the order's lock orders the two). So is work of an
        // order cancelled before its release was recorded (an attempt
        // that reached fulfillment, then orders stopped).
        let cancelled = o.cancel_requested || lifecycle::state(&o) == OrderState::Cancelled;
        if before.is_none() && cancelled && open_work(fo) {
            let (step, payload) = cancel_work_step(fo, "feed", "");
            repo::saga::enqueue(&mut *tx, tenant, order_id, &step, &payload).await?;
        }
        let lines_before = o.lines.clone();
        // Units the node gave back go to another node (a saga step), or,
        // when the order's cancel was asked, are cancelled and their
        // stock released (a saga step too).
        let back = reroute::given_back(before.as_ref(), fo);
        if !back.is_empty() {
            let (step, payload) = if cancelled {
                let by_line: Vec<(String, i64)> =
                    back.iter().map(|(l, _, q)| (l.clone(), *q)).collect();
                lifecycle::cancelled_at(&mut o, &fo.node_id, &by_line);
                let units: Vec<(String, String, i64)> = back
                    .iter()
                    .map(|(_, sku, q)| (sku.clone(), fo.node_id.clone(), *q))
                    .collect();
                let key = format!("cancelled-{}-{key}", fo.fulfillment_order_id);
                let release =
                    release_request(&fo.reservation, order_id, &key, &units, "order cancelled");
                (
                    format!("{}{key}", crate::repo::saga::RELEASE),
                    release.encode_to_vec(),
                )
            } else {
                reroute::step(&o, fo, &back, key)
            };
            repo::saga::enqueue(&mut *tx, tenant, order_id, &step, &payload).await?;
            // A node that gave all its work up at the cancel ships
            // nothing of the order: its plan need not count there (a
            // rerouted node's is given back by the reroute).
            let shipped_none = fo.lines.iter().all(|l| l.quantity_shipped == 0);
            if cancelled && fo.state() == FulfillmentState::Cancelled && shipped_none {
                let idle = repo::saga::UNPLAN_IDLE;
                repo::saga::enqueue(&mut *tx, tenant, order_id, idle, &[]).await?;
            }
        }
        let mut why = format!("{} is {}", fo.name, fo.state().as_str_name());
        // Shipped units inventory refused to take from stock: told in the
        // order's history, where people look, not only in the log.
        if !untaken.is_empty() {
            let told: Vec<&str> = untaken.iter().map(|u| u.told.as_str()).collect();
            why.push_str("; not taken from stock by inventory: ");
            why.push_str(&told.join("; "));
        }
        follow_work(
            &mut *tx,
            tenant,
            order_id,
            (&mut o, held_from),
            &lines_before,
            why,
        )
        .await?;
        // Counted once the event is applied (a failure before this point
        // applies it again, refusals included), for the alert that asks
        // someone to take the units from stock by hand.
        let units = untaken.iter().map(|u| u.units).sum();
        self.metrics.untaken(tenant.as_str(), &fo.node_id, units);
        Ok(())
    }

    /// Consumes in inventory what `fo` shipped since `before`. The request
    /// id is the fulfillment order's with its shipped total, so a replayed
    /// event consumes nothing twice. Returns what inventory refused to take
    /// (each with why).
    async fn consume(
        &self,
        tenant: &Tenant,
        fo: &FulfillmentOrder,
        before: Option<&FulfillmentOrder>,
    ) -> anyhow::Result<Vec<Untaken>> {
        let shipped = shipped_since(fo, before);
        if shipped.is_empty() || fo.reservation.is_empty() {
            return Ok(Vec::new());
        }
        let total: i64 = fo.lines.iter().map(|l| l.quantity_shipped).sum();
        let req = ConsumeAllocationsRequest {
            request_id: format!("consume-{}-{total}", fo.fulfillment_order_id),
            name: fo.reservation.clone(),
            shipped: shipped.clone(),
            reference: fo.name.clone(),
        };
        match self.peers.inventory(tenant).consume_allocations(req).await {
            Ok(_) => Ok(Vec::new()),
            // The reservation ended before the node shipped (its order was
            // cancelled while its release was in doubt, or it expired) and
            // its units went back to stock: they left all the same.
            Err(st)
                if ["RESERVATION_NOT_ACTIVE", "RESERVATION_EXPIRED"]
                    .contains(&oms_runtime::status::reason(&st).as_str()) =>
            {
                self.ship_unheld(tenant, fo, total, &shipped).await
            }
            // One entry inventory refuses (a serial number it does not
            // have there) refuses the whole request: each entry then goes
            // on its own, so the others leave stock as they left the node.
            Err(st) if refused(&st) && shipped.len() > 1 => {
                tracing::warn!(fulfillment_order = %fo.name, error = %st.message(), "shipment refused whole; consumed entry by entry");
                self.consume_each(tenant, fo, total, &shipped).await
            }
            // The record disagrees (nothing allocated there): the shipment
            // stands; say so rather than stall the feed.
            Err(st) if refused(&st) => Ok(vec![untaken_entry(fo, &shipped[0], &st)]),
            Err(st) => Err(st.into()),
        }
    }

    /// Consumes each entry of `shipped` by a request of its own (ids as
    /// the whole's, with the entry's place); returns the ones inventory
    /// refuses.
    async fn consume_each(
        &self,
        tenant: &Tenant,
        fo: &FulfillmentOrder,
        total: i64,
        shipped: &[Allocation],
    ) -> anyhow::Result<Vec<Untaken>> {
        let mut inventory = self.peers.inventory(tenant);
        let mut untaken = Vec::new();
        for (i, a) in shipped.iter().enumerate() {
            let req = ConsumeAllocationsRequest {
                request_id: format!("consume-{}-{total}-{i}", fo.fulfillment_order_id),
                name: fo.reservation.clone(),
                shipped: vec![a.clone()],
                reference: fo.name.clone(),
            };
            let answer = inventory.consume_allocations(req).await.map(|_| ());
            settle(fo, a, answer, &mut untaken)?;
        }
        Ok(untaken)
    }

    /// Records units `fo` shipped that no reservation held any more as
    /// shipments at its node, so that stock follows what left (it was
    /// promised again: left on hand, it would be sold twice). Request ids
    /// as the consume's, so a replayed event records nothing twice.
    /// Returns what inventory refused to record.
    async fn ship_unheld(
        &self,
        tenant: &Tenant,
        fo: &FulfillmentOrder,
        total: i64,
        shipped: &[Allocation],
    ) -> anyhow::Result<Vec<Untaken>> {
        let mut inventory = self.peers.inventory(tenant);
        let mut untaken = Vec::new();
        for (i, a) in shipped.iter().enumerate() {
            let req = RecordMovementRequest {
                request_id: format!("ship-unheld-{}-{total}-{i}", fo.fulfillment_order_id),
                movement: Some(StockMovement {
                    kind: MovementKind::Shipment as i32,
                    node_id: a.node_id.clone(),
                    sku: a.sku.clone(),
                    lot: a.lot.clone(),
                    serial_numbers: a.serial_numbers.clone(),
                    quantity: -a.quantity,
                    reference: fo.name.clone(),
                    reason: "shipped after its reservation ended".into(),
                    ..Default::default()
                }),
            };
            let answer = inventory.record_movement(req).await.map(|r| {
                let short = r.into_inner().held_beyond_stock;
                tracing::warn!(fulfillment_order = %fo.name, sku = %a.sku, units = a.quantity, held_beyond_stock = short,
                    "shipped units no reservation held any more; recorded as shipped");
            });
            settle(fo, a, answer, &mut untaken)?;
        }
        Ok(untaken)
    }
}

/// Takes inventory's answer for one shipped entry: a refusal is added to
/// `untaken` (with why), a failure that may pass later is passed on (the
/// event is applied again).
fn settle(
    fo: &FulfillmentOrder,
    a: &Allocation,
    answer: Result<(), tonic::Status>,
    untaken: &mut Vec<Untaken>,
) -> anyhow::Result<()> {
    match answer {
        Ok(()) => Ok(()),
        Err(st) if refused(&st) => {
            untaken.push(untaken_entry(fo, a, &st));
            Ok(())
        }
        Err(st) => Err(st.into()),
    }
}

/// Shipped units inventory refused to take from stock, with a warning in
/// the log.
fn untaken_entry(fo: &FulfillmentOrder, a: &Allocation, st: &tonic::Status) -> Untaken {
    tracing::warn!(fulfillment_order = %fo.name, sku = %a.sku, units = a.quantity, error = %st.message(),
        "shipped units not taken from stock in inventory");
    Untaken {
        units: a.quantity,
        told: format!("{} of {}: {}", a.quantity, a.sku, st.message()),
    }
}

/// An answer of inventory that the same request will always get.
fn refused(st: &tonic::Status) -> bool {
    matches!(
        st.code(),
        Code::FailedPrecondition | Code::NotFound | Code::InvalidArgument
    )
}

/// What `fo` shipped since `before`, as inventory consumes it: by SKU,
/// lot and serial numbers from the shipments reported since (so lot- and
/// serial-tracked units leave the right lot and serials), or by SKU alone
/// when those shipments do not account for every unit shipped.
fn shipped_since(fo: &FulfillmentOrder, before: Option<&FulfillmentOrder>) -> Vec<Allocation> {
    let was = |line: &str| {
        before
            .and_then(|b| b.lines.iter().find(|l| l.line_id == line))
            .map_or(0, |l| l.quantity_shipped)
    };
    // Adds units to the entry of their SKU and lot.
    let add = |to: &mut Vec<Allocation>, sku: &str, lot: &str, q: i64, serials: &[String]| match to
        .iter_mut()
        .find(|a| a.sku == sku && a.lot == lot)
    {
        Some(a) => {
            a.quantity += q;
            a.serial_numbers.extend(serials.iter().cloned());
        }
        None => to.push(Allocation {
            sku: sku.to_owned(),
            node_id: fo.node_id.clone(),
            quantity: q,
            lot: lot.to_owned(),
            serial_numbers: serials.to_vec(),
            ..Default::default()
        }),
    };
    let mut by_sku: Vec<Allocation> = Vec::new();
    for l in &fo.lines {
        let delta = l.quantity_shipped - was(&l.line_id);
        if delta > 0 {
            add(&mut by_sku, &l.sku, "", delta, &[]);
        }
    }
    let seen = before.map_or(0, |b| b.shipments.len());
    let mut detailed: Vec<Allocation> = Vec::new();
    for sl in fo.shipments.iter().skip(seen).flat_map(|s| &s.lines) {
        if sl.quantity > 0 {
            add(
                &mut detailed,
                &sl.sku,
                &sl.lot,
                sl.quantity,
                &sl.serial_numbers,
            );
        }
    }
    let units = |of: &[Allocation], sku: &str| -> i64 {
        of.iter().filter(|a| a.sku == sku).map(|a| a.quantity).sum()
    };
    let accounted = by_sku
        .iter()
        .all(|a| units(&detailed, &a.sku) == a.quantity)
        && detailed.iter().all(|d| units(&by_sku, &d.sku) > 0);
    if accounted { detailed } else { by_sku }
}

/// Moves an order as the reports of its fulfillment orders that orders
/// holds say (units shipped and delivered per line, and the state that
/// follows), saving lines that changed from `lines_before` even when the
/// state did not. Called for each report taken, and by the saga once it
/// recorded the release: reports taken before that (the WMS was quicker
/// than a release whose first attempt was not recorded) moved nothing.
pub(crate) async fn follow_work(
    tx: &mut sqlx::PgConnection,
    tenant: &Tenant,
    order_id: Uuid,
    (o, held_from): (&mut oms_proto::orders::Order, Option<OrderState>),
    lines_before: &[oms_proto::orders::OrderLine],
    why: String,
) -> anyhow::Result<()> {
    let per_line = progress(&feeds::fulfillments(&mut *tx, tenant, order_id).await?);
    let from = lifecycle::state(o);
    match lifecycle::progressed(o, &per_line) {
        Ok(Some(to)) => {
            // Delivered in one report: SHIPPED is told first, as step by
            // step, so that what follows the orders feed (a "shipped"
            // notice) does not miss it.
            let mut from = from;
            if let Some(mut at) = lifecycle::passed_through_shipped(from, o) {
                let shipped = OrderState::Shipped;
                let happened = Happened::state_changed(from, shipped, why.clone());
                record(
                    &mut *tx, tenant, order_id, &mut at, held_from, from, ACTOR, "", happened,
                )
                .await?;
                from = shipped;
            }
            let happened = Happened::state_changed(from, to, why);
            record(
                &mut *tx, tenant, order_id, o, held_from, from, ACTOR, "", happened,
            )
            .await?;
            if let Some((step, payload)) = crate::workers::saga::unplanned_if_unshipped(o) {
                repo::saga::enqueue(&mut *tx, tenant, order_id, &step, &payload).await?;
            }
        }
        Ok(None) if o.lines != lines_before => {
            repo::orders::save(&mut *tx, tenant, order_id, o, held_from, Utc::now()).await?;
        }
        Ok(None) => {}
        Err(r) => {
            tracing::warn!(order = %o.name, reason = %r.message, "fulfillment progress not applied")
        }
    }
    Ok(())
}

/// Units shipped and delivered per line of an order, by its fulfillment
/// orders (`work`) as last reported.
pub(crate) fn progress(work: &[FulfillmentOrder]) -> Vec<(String, lifecycle::LineProgress)> {
    work.iter()
        .flat_map(|f| {
            let delivered = f.state() == FulfillmentState::Delivered;
            f.lines.iter().map(move |l| {
                (
                    l.line_id.clone(),
                    lifecycle::LineProgress {
                        shipped: l.quantity_shipped,
                        delivered: if delivered { l.quantity_shipped } else { 0 },
                    },
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use oms_proto::fulfillment::{FulfillmentLine, FulfillmentOrder, Shipment, ShippedLine};

    fn fo(shipped: &[(&str, i64)], shipments: Vec<Vec<ShippedLine>>) -> FulfillmentOrder {
        FulfillmentOrder {
            node_id: "DC1".into(),
            lines: shipped
                .iter()
                .map(|(sku, q)| FulfillmentLine {
                    line_id: format!("l-{sku}"),
                    sku: sku.to_string(),
                    quantity: 5,
                    quantity_shipped: *q,
                    ..Default::default()
                })
                .collect(),
            shipments: shipments
                .into_iter()
                .map(|lines| Shipment {
                    lines,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn sl(sku: &str, q: i64, lot: &str, serials: &[&str]) -> ShippedLine {
        ShippedLine {
            line_id: format!("l-{sku}"),
            sku: sku.into(),
            quantity: q,
            lot: lot.into(),
            serial_numbers: serials.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// (sku, lot, units, serials) of what is consumed.
    fn consumed(a: Vec<oms_proto::inventory::Allocation>) -> Vec<(String, String, i64, usize)> {
        a.into_iter()
            .map(|a| (a.sku, a.lot, a.quantity, a.serial_numbers.len()))
            .collect()
    }

    #[test]
    fn shipments_since_the_last_event_give_lots_and_serials() {
        let first = fo(&[("A", 2)], vec![vec![sl("A", 2, "L1", &[])]]);
        let now = fo(
            &[("A", 5), ("P", 2)],
            vec![
                vec![sl("A", 2, "L1", &[])],
                vec![
                    sl("A", 1, "L1", &[]),
                    sl("A", 2, "L2", &[]),
                    sl("P", 2, "", &["s1", "s2"]),
                ],
            ],
        );
        let row = |sku: &str, lot: &str, q: i64, n: usize| (sku.to_string(), lot.to_string(), q, n);
        assert_eq!(
            consumed(super::shipped_since(&now, Some(&first))),
            [
                row("A", "L1", 1, 0),
                row("A", "L2", 2, 0),
                row("P", "", 2, 2)
            ]
        );
        // Shipments that do not account for what was shipped: by SKU.
        let bare = fo(&[("A", 3)], vec![vec![sl("A", 1, "L1", &[])]]);
        assert_eq!(
            consumed(super::shipped_since(&bare, None)),
            [row("A", "", 3, 0)]
        );
    }
}
