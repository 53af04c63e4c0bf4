//! The placement saga: durable steps (`saga_steps`) run by a worker that
//! claims them with `FOR UPDATE SKIP LOCKED`, calls inventory, and records
//! the outcome on the order in the same transaction. Every call it makes is
//! idempotent (the reservation id is the order's), so a step retried after
//! a crash changes nothing twice.
//!
//! Steps: `reserve` (reserve the open lines; short stock backorders the
//! order and retries; a permanent refusal puts a manual hold), `route` (ask
//! routing for a plan, confirm the reservation into allocations at the
//! chosen nodes, ROUTED; a plan that cannot place everything is asked for
//! again later, a plan that holds puts a manual hold), and `release:<key>`
//! (give stock back after a cancellation; retried until inventory
//! confirms).
use crate::changes::{Happened, record, tell};
use crate::domain::{OrderState, lifecycle};
use crate::repo::stock_waits::Waiter;
use crate::repo::{self, orders::TryLock, saga::Step};
use crate::workers::{peers::Peers, stock_line};
use chrono::Utc;
use oms_kernel::{RequestId, Tenant};
use oms_proto::fulfillment::{
    CancelFulfillmentOrderRequest, CreateFulfillmentOrderRequest, FulfillmentLine,
    FulfillmentOrder, FulfillmentState, ReleaseFulfillmentOrderRequest,
};
use oms_proto::inventory::{
    Allocation, ConfirmReservationRequest, CreateReservationRequest, ExtendReservationRequest,
    GetReservationRequest, ReleaseReservationRequest, Reservation, ReservationLine,
};
use oms_proto::orders::{Hold, HoldType, OrderHoldPlaced, OrderRoutingDeferred, order_event};
use oms_proto::routing::{
    Decision, ListDecisionsRequest, PlanOrderRequest, ReleaseDecisionRequest, RoutingLine,
    RoutingOrder,
};
use oms_runtime::time::to_timestamp;
use prost::Message;
use sqlx::{PgConnection, PgPool};
use std::sync::atomic::{AtomicBool, Ordering};
use std::{sync::Arc, time::Duration};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic_types::StatusExt;

/// Who the placement saga's changes are by, in orders' histories.
pub(crate) const ACTOR: &str = "system:placement";

/// Locks the step's order, or settles the step without it: a missing order
/// ends the step, a busy one (a request is changing it) comes back shortly.
/// Undoing the units of edits that were not recorded is hurried then (no
/// edit is under way while the lock is held).
pub(crate) async fn lock_for_step(
    tx: &mut PgConnection,
    tenant: &Tenant,
    s: &Step,
) -> anyhow::Result<Option<(oms_proto::orders::Order, Option<OrderState>)>> {
    match repo::orders::try_lock(tx, tenant, s.order_id).await? {
        TryLock::Locked(o, h) => {
            repo::saga::hurry_undone_edits(tx, tenant, s.order_id).await?;
            Ok(Some((*o, h)))
        }
        TryLock::Missing => {
            repo::saga::done(tx, s).await?;
            Ok(None)
        }
        TryLock::Busy => {
            let soon = Utc::now() + chrono::Duration::milliseconds(100);
            repo::saga::wait(tx, s, "order busy", soon).await?;
            Ok(None)
        }
    }
}
/// Reservations live while routing and release are still to come.
const RESERVATION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

pub fn reservation_id(order_id: uuid::Uuid) -> String {
    format!("order-{order_id}")
}

/// The reservation holding `o`'s units (`Order.reservation`; an order
/// stored before 2026-12-04 has none: its first, `order-{id}`).
pub fn reservation_name(o: &oms_proto::orders::Order) -> String {
    if o.reservation.is_empty() {
        format!("reservations/order-{}", o.order_id)
    } else {
        o.reservation.clone()
    }
}

/// The id of the reservation holding `o`'s units: [`reservation_name`]
/// without its collection.
fn reservation_id_of(o: &oms_proto::orders::Order) -> String {
    let name = reservation_name(o);
    name.strip_prefix("reservations/")
        .unwrap_or(&name)
        .to_owned()
}

/// The reservation to place `o` under once its current one expired
/// unconfirmed: `order-{id}-{n}`, `n` from 2. A reservation id is never
/// used twice (inventory answers a repeat with the first result: expired).
pub(crate) fn next_reservation(o: &oms_proto::orders::Order) -> String {
    let first = format!("reservations/order-{}", o.order_id);
    let current = reservation_name(o);
    let n = (current.strip_prefix(&first))
        .and_then(|rest| rest.strip_prefix('-'))
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(1);
    format!("{first}-{}", n + 1)
}

/// A `route` step with a plan key of its own (its payload). Routing is
/// asked for plan `route-<order>-<key>-v<order version>` and the plan
/// confirmed with the decision's id, so a retry after a lost answer (a crash, a timeout, a
/// broken connection after the peer committed) gets the same plan back and
/// confirms it again, which inventory answers as the first time; a new key
/// (a new step, or a deliberate new plan) asks afresh. Counting attempts
/// instead asked for a new plan after a lost confirmation, which inventory
/// refused (the reservation was confirmed already): the order went on hold.
pub(crate) fn route_step() -> (String, Vec<u8>) {
    (repo::saga::ROUTE.to_owned(), new_plan_key())
}

fn new_plan_key() -> Vec<u8> {
    uuid::Uuid::now_v7().simple().to_string().into_bytes()
}

/// The plan's request id: the step's key and the order's version (an
/// order changed since, by an edit or a cancel, is planned afresh: the
/// same id with other lines is refused).
fn plan_request_id(s: &Step, version: i64) -> String {
    match std::str::from_utf8(&s.payload) {
        Ok(key) if !key.is_empty() => format!("route-{}-{key}-v{version}", s.order_id),
        // A step written before steps carried a key: as then.
        _ => format!("route-{}-{}", s.order_id, s.attempts),
    }
}

#[derive(Clone)]
pub struct Saga {
    pub(crate) pool: PgPool,
    pub(crate) peers: Peers,
    metrics: crate::metrics::Metrics,
    wake: Arc<Notify>,
    /// Set when a step's peer was down during the current tick.
    peer_down: Arc<AtomicBool>,
}

/// When the units of an edit that was not recorded go back to inventory:
/// well after the edit's own attempt has ended (its inventory call has a
/// deadline of seconds), and soon enough not to keep a placement that
/// meets the extra units waiting long. (Should it run while a retry of the
/// edit is under way, the step's row lock makes that retry see it and
/// refuse, so the two stay consistent either way.)
const UNDO_EXTENSION_AFTER: chrono::TimeDelta = chrono::TimeDelta::minutes(1);

/// The longest pause after a tick found a peer down. The first pause is
/// the sweep interval; it doubles while the peer stays down.
const MAX_PAUSE: Duration = Duration::from_secs(30);

impl Saga {
    pub fn new(pool: PgPool, peers: Peers, metrics: crate::metrics::Metrics) -> Self {
        Self {
            pool,
            peers,
            metrics,
            wake: Arc::new(Notify::new()),
            peer_down: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Runs due steps now (after a commit that enqueued some).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub fn start(self, interval: Duration, shutdown: CancellationToken) {
        tokio::spawn(async move {
            let first_pause = interval.min(MAX_PAUSE);
            let mut pause = first_pause;
            loop {
                match self.tick().await {
                    // A peer is down: wait (new work included) before
                    // trying again, longer while it stays down.
                    Ok(_) if self.peer_down.load(Ordering::Relaxed) => {
                        tracing::warn!(
                            pause_ms = pause.as_millis() as u64,
                            "placement saga: a peer is down; pausing"
                        );
                        tokio::select! {
                            _ = tokio::time::sleep(pause) => {}
                            _ = shutdown.cancelled() => return,
                        }
                        pause = (pause * 2).min(MAX_PAUSE);
                        continue;
                    }
                    // A full batch: there may be more.
                    Ok(n) if n >= 20 => {
                        pause = first_pause;
                        continue;
                    }
                    Ok(_) => pause = first_pause,
                    Err(e) => tracing::warn!(error = %e, "placement saga tick failed; retrying"),
                }
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(interval) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        });
    }

    async fn tick(&self) -> anyhow::Result<usize> {
        self.peer_down.store(false, Ordering::Relaxed);
        // For what a step commits on its own (the in-doubt mark) while its
        // order is locked: taken before any lock, so that a step never
        // waits for a connection that requests waiting on its order's
        // lock hold (they timed out, with the pool's every connection).
        let mut side = self.pool.acquire().await?;
        let mut tx = self.pool.begin().await?;
        let steps = repo::saga::claim_due(&mut tx, 20).await?;
        let n = steps.len();
        for s in steps {
            // The rest of the batch stays due, untouched, for after the pause.
            if self.peer_down.load(Ordering::Relaxed) {
                break;
            }
            let tenant = match Tenant::parse(&s.tenant) {
                Ok(t) => t,
                Err(_) => {
                    repo::saga::done(&mut tx, &s).await?;
                    continue;
                }
            };
            // Each step in a savepoint of its own: a step that fails (a
            // database error, an order it cannot decode) is retried later
            // on its own while the rest of the batch goes on. Before, it
            // rolled the whole batch back, and, due first again, stalled
            // every other order's steps for good.
            let mut one = sqlx::Connection::begin(&mut *tx).await?;
            match self.run_step(&mut one, &mut side, &tenant, &s).await {
                Ok(()) => one.commit().await?,
                Err(e) => {
                    one.rollback().await?;
                    tracing::warn!(error = %format!("{e:#}"), step = %s.step, order = %s.order_id, "saga step failed; retrying it later");
                    let at = Utc::now() + backoff(s.attempts);
                    repo::saga::retry(&mut tx, &s, &format!("{e:#}"), at).await?;
                }
            }
        }
        tx.commit().await?;
        Ok(n)
    }

    /// Runs one step in `tx` (its own savepoint); `side` commits on its
    /// own.
    async fn run_step(
        &self,
        tx: &mut PgConnection,
        side: &mut PgConnection,
        tenant: &Tenant,
        s: &Step,
    ) -> anyhow::Result<()> {
        if s.step == repo::saga::RESERVE {
            self.reserve(tx, side, tenant, s).await?;
        } else if s.step == repo::saga::ROUTE {
            self.route(tx, side, tenant, s).await?;
        } else if s.step == repo::saga::FULFIL {
            self.fulfil(tx, side, tenant, s).await?;
        } else if s.step.starts_with(repo::saga::REROUTE) {
            self.reroute(tx, tenant, s).await?;
        } else if s.step == repo::saga::UNPLAN_ALL {
            self.unplan_all(tx, tenant, s, Unplan::Whole).await?;
        } else if s.step == repo::saga::UNPLAN_IDLE {
            self.unplan_all(tx, tenant, s, Unplan::AtIdleNodes).await?;
        } else if s.step.starts_with(repo::saga::UNPLAN) {
            self.unplan(tx, tenant, s).await?;
        } else if s.step.starts_with(repo::saga::CANCEL_WORK) {
            self.cancel_work(tx, tenant, s).await?;
        } else if s.step.starts_with(repo::saga::UNDO_EXTEND) {
            self.undo_extend(tx, tenant, s).await?;
        } else if s.step.starts_with(repo::saga::RELEASE) {
            self.release(tx, tenant, s).await?;
        } else if s.step == repo::saga::HELD_EXPIRY {
            self.held_expiry(tx, tenant, s).await?;
        } else {
            // Written by a newer version during a rollout: left for
            // it, not dropped.
            tracing::error!(step = %s.step, order = %s.order_id, "unknown saga step");
            let later = Utc::now() + chrono::Duration::minutes(10);
            repo::saga::retry(tx, s, "unknown step", later).await?;
        }
        Ok(())
    }

    async fn reserve(
        &self,
        tx: &mut PgConnection,
        side: &mut PgConnection,
        tenant: &Tenant,
        s: &Step,
    ) -> anyhow::Result<()> {
        let Some((mut o, held_from)) = lock_for_step(tx, tenant, s).await? else {
            return Ok(());
        };
        let from = lifecycle::state(&o);
        // A payment hold keeps an order from its warehouse, not from its
        // stock: it reserves while the payment comes (so other channels
        // cannot sell those units meanwhile) and stops there.
        let unpaid = lifecycle::awaits_payment_only(&o)
            && matches!(
                held_from,
                Some(OrderState::Created | OrderState::Backordered)
            );
        let placing = if unpaid {
            held_from.unwrap_or(from)
        } else {
            from
        };
        if !matches!(placing, OrderState::Created | OrderState::Backordered) {
            // Held or cancelled meanwhile: releasing the hold enqueues it again.
            placement_over(tx, tenant, s, held_from.unwrap_or(from)).await?;
            repo::saga::done(tx, s).await?;
            return Ok(());
        }
        let lines: Vec<ReservationLine> = lifecycle::open_quantity(&o)
            .into_iter()
            .map(|(_, sku, q)| ReservationLine {
                sku,
                quantity: q,
                ..Default::default()
            })
            .collect();
        // Older orders waiting for these SKUs go first: the units they
        // wait for are theirs (a woken step retried early, a new order
        // made in the instant before a wake, would take them).
        let me = Waiter {
            order_id: s.order_id,
            step: s.step.clone(),
            since: order_turn(&o),
            channel: o.channel.clone(),
            needs: units_per_sku(&lines),
        };
        let mut behind = stock_line::behind_older(tx, &self.peers, tenant, &me).await?;
        if !behind.is_empty()
            && repo::saga::exists(tx, tenant, s.order_id, repo::saga::IN_DOUBT).await?
        {
            // An earlier attempt may have reserved the units already: the
            // same request's answer from inventory settles it.
            behind.clear();
        }
        if !behind.is_empty() {
            let short = Short {
                missing: behind,
                behind_older: true,
            };
            self.backorder(tx, tenant, s, (&mut o, held_from), unpaid, short)
                .await?;
            return Ok(());
        }
        let req = CreateReservationRequest {
            reservation_id: reservation_id_of(&o),
            lines,
            ttl: prost_types::Duration::try_from(RESERVATION_TTL).ok(),
            reference: o.name.clone(),
            channel: o.channel.clone(),
        };
        // As for the confirmation and the release: a reservation this
        // attempt leaves unrecorded holds the lines as they are.
        let first = doubt(side, tenant, s).await?;
        let answer = self.peers.inventory(tenant).create_reservation(req).await;
        settle_doubt(tx, tenant, s, settles(first, &answer)).await?;
        match answer {
            Ok(_) if unpaid => {
                // Still on hold: its release goes on to routing.
                lifecycle::reserved_on_hold(&mut o);
                let happened = on_hold_placement("stock reserved while the order awaits payment");
                let held_from = Some(OrderState::Reserved);
                record(
                    tx, tenant, s.order_id, &mut o, held_from, from, ACTOR, "", happened,
                )
                .await?;
                repo::saga::done(tx, s).await?;
                let expires = Utc::now() + RESERVATION_TTL;
                super::held_expiry::watch(tx, tenant, s.order_id, expires).await?;
            }
            Ok(_) => {
                lifecycle::reserved(&mut o).map_err(|r| anyhow::anyhow!(r.message))?;
                let happened =
                    Happened::state_changed(from, OrderState::Reserved, "stock reserved");
                record(
                    tx, tenant, s.order_id, &mut o, held_from, from, ACTOR, "", happened,
                )
                .await?;
                repo::saga::done(tx, s).await?;
                let (route, key) = route_step();
                repo::saga::enqueue(tx, tenant, s.order_id, &route, &key).await?;
            }
            Err(st)
                if st.code() == Code::FailedPrecondition
                    && oms_runtime::status::reason(&st) == "INSUFFICIENT_STOCK" =>
            {
                let short = Short {
                    missing: missing_units(&st),
                    behind_older: false,
                };
                self.backorder(tx, tenant, s, (&mut o, held_from), unpaid, short)
                    .await?;
            }
            Err(st)
                if matches!(
                    st.code(),
                    Code::InvalidArgument
                        | Code::NotFound
                        | Code::FailedPrecondition
                        | Code::PermissionDenied
                ) =>
            {
                // Refused for good: a person must look at it.
                let reason = format!("placement refused by inventory: {}", st.message());
                hold_for_review(tx, tenant, s.order_id, (&mut o, held_from), from, reason).await?;
                repo::saga::done(tx, s).await?;
            }
            Err(st) => {
                self.retry_failed(tx, s, &st).await?;
            }
        }
        Ok(())
    }

    /// Plans a reserved order and confirms its reservation at the chosen
    /// nodes. Both calls are idempotent: the plan's request id carries the
    /// step's plan key (see [`route_step`]) and the confirmation's is the
    /// decision's.
    async fn route(
        &self,
        tx: &mut PgConnection,
        side: &mut PgConnection,
        tenant: &Tenant,
        s: &Step,
    ) -> anyhow::Result<()> {
        let Some((mut o, held_from)) = lock_for_step(tx, tenant, s).await? else {
            return Ok(());
        };
        let from = lifecycle::state(&o);
        if from != OrderState::Reserved {
            // Held, cancelled or already routed meanwhile.
            placement_over(tx, tenant, s, held_from.unwrap_or(from)).await?;
            repo::saga::done(tx, s).await?;
            return Ok(());
        }
        if repo::saga::give_backs_pending(tx, tenant, s.order_id).await? {
            // Units cancelled or edited away, or added by an edit that was
            // not recorded, are still held: allocations for what the order
            // keeps would not cover the reservation, and inventory would
            // refuse them. Their give-back runs first (it backs off on its
            // own while inventory is down).
            let soon = Utc::now() + chrono::Duration::milliseconds(500);
            repo::saga::wait(tx, s, "units still to give back", soon).await?;
            return Ok(());
        }
        let plan = PlanOrderRequest {
            request_id: plan_request_id(s, o.version),
            order: Some(routing_order(&o)),
        };
        // A plan counts against its nodes' capacity until it is confirmed
        // or given back. One this attempt leaves unrecorded holds the lines
        // as they are, so that the next attempt asks for the same plan and
        // gets it back (an edit would plan afresh and leave it counted).
        let first = doubt(side, tenant, s).await?;
        let decision = match self.peers.routing(tenant).plan_order(plan).await {
            Ok(r) => r.into_inner().decision.unwrap_or_default(),
            Err(st) => {
                // A refusal is for good (an earlier attempt's same request
                // was refused too): no plan of this step counts.
                let refused = st.code() == Code::InvalidArgument;
                settle_doubt(tx, tenant, s, changed_nothing(&st) && (first || refused)).await?;
                if refused {
                    let reason = format!("routing refused the order: {}", st.message());
                    hold_for_review(tx, tenant, s.order_id, (&mut o, held_from), from, reason)
                        .await?;
                    repo::saga::done(tx, s).await?;
                } else {
                    self.retry_failed(tx, s, &st).await?;
                }
                return Ok(());
            }
        };
        if decision.assignments.is_empty() {
            // No node was chosen, so none counts the plan: nothing to hold.
            settle_doubt(tx, tenant, s, true).await?;
        }
        let summary = decision
            .explanation
            .as_ref()
            .map(|e| e.summary.clone())
            .unwrap_or_default();
        if decision.hold {
            let reason = format!("routing held the order ({}): {summary}", decision.name);
            hold_for_review(tx, tenant, s.order_id, (&mut o, held_from), from, reason).await?;
            repo::saga::done(tx, s).await?;
            return Ok(());
        }
        if !decision.backorders.is_empty() && !decision.assignments.is_empty() {
            // The rule ships what it can now and backorders the rest: the
            // rest leaves this reservation and waits on a step of its own.
            if !self
                .backorder_rest(tx, tenant, s, (&mut o, held_from), &decision)
                .await?
            {
                return Ok(());
            }
        } else if !decision.backorders.is_empty() || decision.assignments.is_empty() {
            // Reserved in the network but not placeable now (split rules,
            // capacity, distance): ask again as stock and load change.
            let wait = Duration::from_secs(30 * (1 + s.attempts.min(9) as u64));
            let why = format!("not fully routable ({}): {summary}", decision.name);
            tracing::info!(order = %o.name, %why, "routing again later");
            let next = Utc::now() + wait;
            if tell_deferred(tx, tenant, s.order_id, &o, &decision.name, &summary, next).await? {
                self.metrics.deferred(tenant.as_str());
            }
            if !decision.backorders.is_empty() {
                // Short at the nodes it may use (its units are held in the
                // network already, so it asks no more of it): stock of
                // those SKUs arriving at a node plans it again.
                let wanted: Vec<(String, i64)> = decision
                    .backorders
                    .iter()
                    .filter_map(|b| o.lines.iter().find(|l| l.line_id == b.line_id))
                    .map(|l| (l.sku.clone(), 0))
                    .collect();
                wait_for_stock(tx, tenant, s, &o, &wanted).await?;
            }
            repo::saga::retry_with(tx, s, &new_plan_key(), &why, next).await?;
            return Ok(());
        }
        let mut allocations: Vec<Allocation> = Vec::new();
        for a in &decision.assignments {
            match allocations
                .iter_mut()
                .find(|x| x.sku == a.sku && x.node_id == a.node_id)
            {
                Some(x) => x.quantity += a.quantity,
                None => allocations.push(Allocation {
                    sku: a.sku.clone(),
                    node_id: a.node_id.clone(),
                    quantity: a.quantity,
                    ..Default::default()
                }),
            }
        }
        let confirm = ConfirmReservationRequest {
            request_id: format!("confirm-{}", decision.decision_id),
            name: reservation_name(&o),
            allocations,
        };
        // The mark (above) holds the lines while the confirmation too is in
        // doubt: it is taken once the plan is recorded or given back.
        let answer = self
            .peers
            .inventory(tenant)
            .confirm_reservation(confirm)
            .await;
        match answer {
            Ok(_) => {
                settle_doubt(tx, tenant, s, true).await?;
                lifecycle::routed(&mut o, &decision).map_err(|r| anyhow::anyhow!(r.message))?;
                let happened = Happened::state_changed(from, OrderState::Routed, summary);
                record(
                    tx, tenant, s.order_id, &mut o, held_from, from, ACTOR, "", happened,
                )
                .await?;
                repo::saga::done(tx, s).await?;
                repo::saga::enqueue(tx, tenant, s.order_id, repo::saga::FULFIL, &[]).await?;
            }
            // Stock moved between the plan and the confirmation, or the
            // channel's pool changed (routing reads it every few seconds);
            // or the confirmation failed and surely changed nothing. The
            // plan goes back and the next attempt plans again, for the order
            // as it is then (the lines may change meanwhile).
            Err(st)
                if moved_since_the_plan(&st)
                    || (first && changed_nothing(&st) && !refused_for_good(&st)) =>
            {
                settle_doubt(tx, tenant, s, first).await?;
                let (step, payload) = unplan_step(&decision.name, "planned again");
                repo::saga::enqueue(tx, tenant, s.order_id, &step, &payload).await?;
                self.retry_failed_with(tx, s, &st, Some(&new_plan_key()))
                    .await?;
            }
            // Held unconfirmed past its time (the order on hold, or waiting
            // for a plan, for RESERVATION_TTL): its units went back. The
            // plan goes back and the order is placed again under a new
            // reservation (before 2026-12-04 it went on hold for review,
            // and every release of that hold met the same refusal).
            Err(st) if reservation_expired(&st) => {
                settle_doubt(tx, tenant, s, first && changed_nothing(&st)).await?;
                let (step, payload) = unplan_step(&decision.name, "reservation expired");
                repo::saga::enqueue(tx, tenant, s.order_id, &step, &payload).await?;
                let (expired, next) = (reservation_name(&o), next_reservation(&o));
                lifecycle::reservation_expired(&mut o, next.clone())
                    .map_err(|r| anyhow::anyhow!(r.message))?;
                let why = format!("{expired} expired unconfirmed: reserving again as {next}");
                let happened = Happened::state_changed(from, OrderState::Created, why);
                record(
                    tx, tenant, s.order_id, &mut o, held_from, from, ACTOR, "", happened,
                )
                .await?;
                repo::saga::done(tx, s).await?;
                repo::saga::enqueue(tx, tenant, s.order_id, repo::saga::RESERVE, &[]).await?;
            }
            Err(st) if refused_for_good(&st) => {
                settle_doubt(tx, tenant, s, first && changed_nothing(&st)).await?;
                let reason = format!("allocation refused by inventory: {}", st.message());
                let (step, payload) = unplan_step(&decision.name, &reason);
                repo::saga::enqueue(tx, tenant, s.order_id, &step, &payload).await?;
                hold_for_review(tx, tenant, s.order_id, (&mut o, held_from), from, reason).await?;
                repo::saga::done(tx, s).await?;
            }
            Err(st) => {
                self.retry_failed(tx, s, &st).await?;
            }
        }
        Ok(())
    }

    /// A partial plan: gives the backordered units of `decision` back to
    /// inventory, marks them backordered on the order (so a retried plan
    /// covers only what is still held) and enqueues the step that places
    /// them once stock allows. Returns false when inventory could not take
    /// them back yet (the step is retried). A retry of the step gets the
    /// same decision back (see [`route_step`]): after a crash before commit
    /// the release is replayed, not repeated; after a committed attempt
    /// (its confirmation failed) the rest's step is there and nothing is
    /// set aside twice.
    async fn backorder_rest(
        &self,
        tx: &mut PgConnection,
        tenant: &Tenant,
        s: &Step,
        (o, held_from): (&mut oms_proto::orders::Order, Option<OrderState>),
        decision: &oms_proto::routing::Decision,
    ) -> anyhow::Result<bool> {
        if repo::saga::exists(
            tx,
            tenant,
            s.order_id,
            &super::reroute::rest_step_name(&decision.decision_id),
        )
        .await?
        {
            return Ok(true);
        }
        let rest: Vec<(String, String, i64)> = decision
            .backorders
            .iter()
            .filter_map(|b| {
                let l = o.lines.iter().find(|l| l.line_id == b.line_id)?;
                Some((l.line_id.clone(), l.sku.clone(), b.quantity))
            })
            .collect();
        let units: Vec<(String, String, i64)> = rest
            .iter()
            .map(|(_, sku, q)| (sku.clone(), String::new(), *q))
            .collect();
        let key = format!("backorder-{}", decision.decision_id);
        let reason = format!("backordered by {}", decision.name);
        let give_back = release_request(&reservation_name(o), s.order_id, &key, &units, &reason);
        if let Err(st) = self
            .peers
            .inventory(tenant)
            .release_reservation(give_back)
            .await
        {
            self.retry_failed(tx, s, &st).await?;
            return Ok(false);
        }
        for (line, _, q) in &rest {
            if let Some(l) = o.lines.iter_mut().find(|l| l.line_id == *line) {
                l.quantity_backordered += q;
            }
        }
        let (step, payload) = super::reroute::rest_step(o, &rest, &decision.decision_id);
        repo::orders::save(tx, tenant, s.order_id, o, held_from, Utc::now()).await?;
        repo::saga::enqueue(tx, tenant, s.order_id, &step, &payload).await?;
        Ok(true)
    }

    /// Hands a routed order to fulfillment: one fulfillment order per node
    /// of its sourcing, created and released. Request ids are derived from
    /// the order, the decision and the node, so a retry creates nothing
    /// twice; the order is RELEASED once every node has its work.
    async fn fulfil(
        &self,
        tx: &mut PgConnection,
        side: &mut PgConnection,
        tenant: &Tenant,
        s: &Step,
    ) -> anyhow::Result<()> {
        let Some((mut o, held_from)) = lock_for_step(tx, tenant, s).await? else {
            return Ok(());
        };
        let from = lifecycle::state(&o);
        if from != OrderState::Routed {
            // Held: released again with the hold, as it is now.
            placement_over(tx, tenant, s, held_from.unwrap_or(from)).await?;
            repo::saga::done(tx, s).await?;
            return Ok(());
        }
        let decision = o
            .routing_decision
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let reservation = reservation_id_of(&o);
        let held = GetReservationRequest {
            name: format!("reservations/{reservation}"),
        };
        let fresh = match self.peers.inventory(tenant).get_reservation(held).await {
            Ok(r) => fresh_lots(r.into_inner().reservation.as_ref()),
            Err(st) => {
                self.retry_failed(tx, s, &st).await?;
                return Ok(());
            }
        };
        let work = fulfillment_orders(&o, &o.lines, &reservation, &fresh);
        // Committed before the call: should this attempt not be recorded
        // (orders stops, the answer is lost), its work may be at the node
        // all the same, and an edit of the order's lines meanwhile would
        // make the next attempt's request differ from it (refused).
        let first = doubt(side, tenant, s).await?;
        // Its progress comes back on the tenant's fulfillment feed, also
        // that of work this attempt leaves unrecorded.
        repo::feeds::follow(&mut *side, repo::feeds::FULFILLMENT, tenant).await?;
        let names = match self.release_work(tenant, s.order_id, &decision, work).await {
            Ok(names) => names,
            Err(e) => {
                let settled = first && !e.reached && changed_nothing(&e.status);
                settle_doubt(tx, tenant, s, settled).await?;
                if e.status.code() == Code::InvalidArgument {
                    let reason = format!("fulfillment refused the work: {}", e.status.message());
                    hold_for_review(tx, tenant, s.order_id, (&mut o, held_from), from, reason)
                        .await?;
                    repo::saga::done(tx, s).await?;
                } else {
                    self.retry_failed(tx, s, &e.status).await?;
                }
                return Ok(());
            }
        };
        settle_doubt(tx, tenant, s, true).await?;
        lifecycle::released(&mut o).map_err(|r| anyhow::anyhow!(r.message))?;
        let why = format!("released to fulfillment: {}", names.join(", "));
        let happened = Happened::state_changed(from, OrderState::Released, why);
        record(
            tx, tenant, s.order_id, &mut o, held_from, from, ACTOR, "", happened,
        )
        .await?;
        // What came on the feed already (the release's first attempt was
        // not recorded, and the WMS went on) is followed now: it will not
        // come again.
        let lines = o.lines.clone();
        let why = format!(
            "{} reported before the release was recorded",
            names.join(", ")
        );
        super::fulfillment_feed::follow_work(
            tx,
            tenant,
            s.order_id,
            (&mut o, held_from),
            &lines,
            why,
        )
        .await?;
        repo::saga::done(tx, s).await?;
        Ok(())
    }

    /// Creates and releases the fulfillment orders `work` (per node) of
    /// `decision`; returns their names. Request ids come from the order,
    /// the decision and the node, so a retry creates nothing twice.
    pub(crate) async fn release_work(
        &self,
        tenant: &Tenant,
        order_id: uuid::Uuid,
        decision: &str,
        work: Vec<(String, FulfillmentOrder)>,
    ) -> Result<Vec<String>, NotReleased> {
        let mut names = Vec::new();
        let mut client = self.peers.fulfillment(tenant);
        let failed = |reached: bool| move |status| NotReleased { status, reached };
        for (node, fo) in work {
            let created = client
                .create_fulfillment_order(CreateFulfillmentOrderRequest {
                    request_id: RequestId::derived(
                        "fo",
                        format!("fo-{order_id}-{decision}-{node}"),
                    ),
                    fulfillment_order: Some(fo),
                })
                .await
                .map_err(failed(!names.is_empty()))?;
            let name = created
                .into_inner()
                .fulfillment_order
                .unwrap_or_default()
                .name;
            client
                .release_fulfillment_order(ReleaseFulfillmentOrderRequest {
                    request_id: format!("release-{name}"),
                    name: name.clone(),
                })
                .await
                .map_err(failed(true))?;
            names.push(name);
        }
        Ok(names)
    }

    async fn release(
        &self,
        tx: &mut PgConnection,
        tenant: &Tenant,
        s: &Step,
    ) -> anyhow::Result<()> {
        let req = ReleaseReservationRequest::decode(s.payload.as_slice())?;
        let answer = self.peers.inventory(tenant).release_reservation(req).await;
        // Never reserved, or already released or expired: nothing to give back.
        self.settle(
            tx,
            s,
            answer.map(drop),
            &[Code::NotFound, Code::FailedPrecondition],
        )
        .await
    }

    /// Adds units to an order's reservation for the edit `key` (its
    /// request id), which `tx` records. They never outlive an edit that is
    /// not recorded (its commit fails, or this process stops first): an
    /// undo step, written and committed before inventory is asked, takes
    /// them back unless `tx` removes it. An edit whose earlier attempt was
    /// undone is refused (`EDIT_GIVEN_UP`): its extension would only
    /// replay now, holding nothing. A reservation that expired unconfirmed
    /// is not extended: the order is reserved again as a whole.
    /// `side` commits on its own; the caller took it before locking the
    /// order (see `tick`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn extend_for_edit(
        &self,
        tx: &mut PgConnection,
        side: &mut PgConnection,
        tenant: &Tenant,
        order_id: uuid::Uuid,
        key: &str,
        extend: ExtendReservationRequest,
    ) -> crate::error::Result<()> {
        use crate::error::Error;
        let undo = format!("{}{key}", repo::saga::UNDO_EXTEND);
        let at = Utc::now() + UNDO_EXTENSION_AFTER;
        repo::saga::schedule(
            &mut *side,
            tenant,
            order_id,
            &undo,
            &extend.encode_to_vec(),
            at,
        )
        .await?;
        if let Err(st) = self
            .peers
            .inventory(tenant)
            .extend_reservation(extend)
            .await
        {
            // Refused: nothing was added, nothing to take back. (After a
            // timeout it may have been: the step stays for that.)
            if reservation_expired(&st) {
                // The reservation expired unconfirmed (an order held past
                // its TTL): the route step reserves the order again, with
                // the edited lines, so the edit needs no extension.
                // Refusing it left the order uneditable until then.
                repo::saga::take(&mut *side, tenant, order_id, &undo).await?;
                return Ok(());
            }
            if matches!(
                st.code(),
                Code::FailedPrecondition | Code::InvalidArgument | Code::NotFound
            ) {
                repo::saga::take(&mut *side, tenant, order_id, &undo).await?;
            }
            return Err(Error::Inventory(st));
        }
        if !repo::saga::take(&mut *tx, tenant, order_id, &undo).await? {
            return Err(Error::Refused(lifecycle::Refused {
                reason: "EDIT_GIVEN_UP",
                message: format!(
                    "an earlier attempt of this edit was not recorded and its units went back \
                     to inventory; send the edit again with a new request_id ({key})"
                ),
            }));
        }
        Ok(())
    }

    /// Takes back the units an edit added to an order's reservation when
    /// the edit itself was not recorded (its commit failed, or the process
    /// stopped before it). Whether the extension happened is not known
    /// here, so it is asked again first: a replay if it happened, done now
    /// if not, so that the release then takes back exactly its units. An
    /// extension inventory refuses now (short, invalid for the
    /// reservation's state, reservation gone) never happened: nothing to
    /// take back.
    async fn undo_extend(
        &self,
        tx: &mut PgConnection,
        tenant: &Tenant,
        s: &Step,
    ) -> anyhow::Result<()> {
        let extend = ExtendReservationRequest::decode(s.payload.as_slice())?;
        let name = extend.name.clone();
        let mut inventory = self.peers.inventory(tenant);
        let lines: Vec<(String, String, i64)> = extend
            .lines
            .iter()
            .map(|a| (a.sku.clone(), a.node_id.clone(), a.quantity))
            .collect();
        match inventory.extend_reservation(extend).await {
            Ok(_) => {}
            Err(st)
                if matches!(
                    st.code(),
                    Code::NotFound | Code::FailedPrecondition | Code::InvalidArgument
                ) =>
            {
                repo::saga::retire(tx, s).await?;
                return Ok(());
            }
            Err(st) => return self.retry_failed(tx, s, &st).await,
        }
        let release = release_request(&name, s.order_id, &s.step, &lines, "edit not recorded");
        match inventory.release_reservation(release).await {
            // The step is kept, retired: a late retry of the edit must not
            // count on units given back (see `grpc::edit_lines`).
            Err(st) if !matches!(st.code(), Code::NotFound | Code::FailedPrecondition) => {
                self.retry_failed(tx, s, &st).await
            }
            _ => Ok(repo::saga::retire(tx, s).await?),
        }
    }

    /// Gives a decision's node capacity back; retried until routing
    /// answers. An unknown decision has nothing to give back.
    async fn unplan(&self, tx: &mut PgConnection, tenant: &Tenant, s: &Step) -> anyhow::Result<()> {
        let req = ReleaseDecisionRequest::decode(s.payload.as_slice())?;
        let answer = self.peers.routing(tenant).release_decision(req).await;
        self.settle(
            tx,
            s,
            answer.map(drop),
            &[Code::NotFound, Code::InvalidArgument],
        )
        .await
    }

    /// Gives back the node capacity of every plan routing still counts for
    /// an order: for a cancelled order, wholly (the plan it recorded, and
    /// any that an attempt made without recording it: orders stopped
    /// after the plan); else at the nodes whose work of the plan ended
    /// with nothing shipped. Retried until routing answers.
    async fn unplan_all(
        &self,
        tx: &mut PgConnection,
        tenant: &Tenant,
        s: &Step,
        how: Unplan,
    ) -> anyhow::Result<()> {
        let work = match how {
            Unplan::Whole => vec![],
            Unplan::AtIdleNodes => repo::feeds::fulfillments(&mut *tx, tenant, s.order_id).await?,
        };
        let mut routing = self.peers.routing(tenant);
        let mut page_token = String::new();
        loop {
            let list = ListDecisionsRequest {
                page_size: 500,
                page_token,
                order: format!("orders/{}", s.order_id),
            };
            let page = match routing.list_decisions(list).await {
                Ok(r) => r.into_inner(),
                Err(st) => return self.retry_failed(tx, s, &st).await,
            };
            for d in page.decisions.iter().filter(|d| d.release_time.is_none()) {
                let release = match how {
                    Unplan::Whole => unplan_request(&d.name, "order cancelled"),
                    Unplan::AtIdleNodes => match idle_nodes(d, &work) {
                        idle if idle.is_empty() => continue,
                        idle => unplan_at_request(&d.name, idle),
                    },
                };
                // Refused: released already under that request id.
                match routing.release_decision(release).await {
                    Err(st) if !matches!(st.code(), Code::NotFound | Code::InvalidArgument) => {
                        return self.retry_failed(tx, s, &st).await;
                    }
                    _ => {}
                }
            }
            if page.next_page_token.is_empty() {
                return Ok(repo::saga::done(tx, s).await?);
            }
            page_token = page.next_page_token;
        }
    }

    /// Asks a node to cancel a fulfillment order; retried until
    /// fulfillment answers. Work already shipped or finished stays as it
    /// is; the node's answer comes back on the fulfillment feed.
    async fn cancel_work(
        &self,
        tx: &mut PgConnection,
        tenant: &Tenant,
        s: &Step,
    ) -> anyhow::Result<()> {
        let req = CancelFulfillmentOrderRequest::decode(s.payload.as_slice())?;
        let answer = self
            .peers
            .fulfillment(tenant)
            .cancel_fulfillment_order(req)
            .await;
        self.settle(
            tx,
            s,
            answer.map(drop),
            &[Code::NotFound, Code::FailedPrecondition],
        )
        .await
    }

    /// Ends a step whose one call was answered, or refused with one of
    /// `final_codes` (there is nothing left to do); otherwise it is retried.
    async fn settle(
        &self,
        tx: &mut PgConnection,
        s: &Step,
        answer: Result<(), tonic::Status>,
        final_codes: &[Code],
    ) -> anyhow::Result<()> {
        match answer {
            Err(st) if !final_codes.contains(&st.code()) => self.retry_failed(tx, s, &st).await?,
            _ => repo::saga::done(tx, s).await?,
        }
        Ok(())
    }

    /// Retries a step whose call failed. A peer that is down or too slow
    /// (unavailable, deadline exceeded) opens the saga's breaker: the tick
    /// stops there and the worker waits before the next one, instead of
    /// trying every due step against it.
    pub(crate) async fn retry_failed(
        &self,
        tx: &mut PgConnection,
        s: &Step,
        st: &tonic::Status,
    ) -> anyhow::Result<()> {
        self.retry_failed_with(tx, s, st, None).await
    }

    /// [`Saga::retry_failed`], with what the next attempt should ask.
    async fn retry_failed_with(
        &self,
        tx: &mut PgConnection,
        s: &Step,
        st: &tonic::Status,
        payload: Option<&[u8]>,
    ) -> anyhow::Result<()> {
        if matches!(st.code(), Code::Unavailable | Code::DeadlineExceeded) {
            self.peer_down.store(true, Ordering::Relaxed);
        }
        let at = Utc::now() + backoff(s.attempts);
        match payload {
            Some(p) => repo::saga::retry_with(tx, s, p, st.message(), at).await?,
            None => repo::saga::retry(tx, s, st.message(), at).await?,
        }
        Ok(())
    }
}

/// The carrier service a node is asked for: the order's service level
/// ("next_day"), or none (the node's default) when the order named none.
/// Before 2026-12-03 it was the enum's name ("service_level_unspecified").
fn carrier_service(level: i32) -> String {
    use oms_proto::common::ServiceLevel;
    match ServiceLevel::try_from(level) {
        Ok(ServiceLevel::Unspecified) | Err(_) => String::new(),
        Ok(l) => l
            .as_str_name()
            .trim_start_matches("SERVICE_LEVEL_")
            .to_lowercase(),
    }
}

/// Whether `fo` is still work a node could give up (not shipped, nor
/// already ended).
pub fn open_work(fo: &FulfillmentOrder) -> bool {
    !matches!(
        fo.state(),
        FulfillmentState::Shipped
            | FulfillmentState::Delivered
            | FulfillmentState::Rejected
            | FulfillmentState::Cancelled
    )
}

/// The step that asks `fo`'s node to cancel it, for the order's cancel
/// request `key`.
pub fn cancel_work_step(fo: &FulfillmentOrder, key: &str, reason: &str) -> (String, Vec<u8>) {
    let req = CancelFulfillmentOrderRequest {
        request_id: RequestId::derived(
            "cancel",
            format!("cancel-{}-{key}", fo.fulfillment_order_id),
        ),
        name: fo.name.clone(),
        reason: if reason.is_empty() {
            "order cancelled".into()
        } else {
            format!("order cancelled: {reason}")
        },
    };
    (
        format!("{}{}", repo::saga::CANCEL_WORK, fo.fulfillment_order_id),
        req.encode_to_vec(),
    )
}

/// The step that gives back every plan routing counts for a cancelled
/// order ([`repo::saga::UNPLAN_ALL`]).
pub fn unplan_all_step() -> (String, Vec<u8>) {
    (repo::saga::UNPLAN_ALL.to_owned(), vec![])
}

/// For an order cancelled through its nodes (after release) that shipped
/// nothing: the step that gives its plans' capacity back, as for a cancel
/// before release (no node shipped any of it). Once anything shipped, the
/// plan's shipments count, but for the nodes that gave their work up
/// ([`repo::saga::UNPLAN_IDLE`]).
pub fn unplanned_if_unshipped(o: &oms_proto::orders::Order) -> Option<(String, Vec<u8>)> {
    let unshipped = o.lines.iter().all(|l| l.quantity_shipped == 0);
    (lifecycle::state(o) == OrderState::Cancelled && unshipped).then(unplan_all_step)
}

/// The step that gives decision `name`'s node capacity back, because its
/// plan will not ship (`reason`).
pub fn unplan_step(name: &str, reason: &str) -> (String, Vec<u8>) {
    let id = name.trim_start_matches("decisions/");
    let req = unplan_request(name, reason);
    (format!("{}{id}", repo::saga::UNPLAN), req.encode_to_vec())
}

/// The release of decision `name`, keyed by the decision: however many
/// steps ask for it, it is given back once.
fn unplan_request(name: &str, reason: &str) -> ReleaseDecisionRequest {
    let id = name.trim_start_matches("decisions/");
    ReleaseDecisionRequest {
        request_id: format!("unplan-{id}"),
        name: name.to_owned(),
        reason: reason.to_owned(),
        node_ids: vec![],
    }
}

/// How much of an order's plans [`Saga::unplan_all`] gives back.
#[derive(Clone, Copy)]
enum Unplan {
    /// All of them: the order is cancelled and shipped nothing.
    Whole,
    /// Their shipments at the nodes that gave their work up.
    AtIdleNodes,
}

/// The nodes of decision `d` whose work of it (of `work`, the order's)
/// all ended with nothing shipped, sorted; nodes with no work of it yet
/// are not among them.
fn idle_nodes(d: &Decision, work: &[FulfillmentOrder]) -> Vec<String> {
    let ended = |fo: &FulfillmentOrder| {
        matches!(
            fo.state(),
            FulfillmentState::Cancelled | FulfillmentState::Rejected
        ) && fo.lines.iter().all(|l| l.quantity_shipped == 0)
    };
    let mut idle: Vec<String> = d
        .assignments
        .iter()
        .map(|a| a.node_id.clone())
        .filter(|n| {
            let mut at = work
                .iter()
                .filter(|fo| fo.decision == d.name && fo.node_id == *n)
                .peekable();
            at.peek().is_some() && at.all(ended)
        })
        .collect();
    idle.sort();
    idle.dedup();
    idle
}

/// The release of decision `name` at `nodes` only (sorted), for an order
/// cancelled after they shipped none of it: keyed by the decision and the
/// nodes, so a repeat gives nothing back twice.
fn unplan_at_request(name: &str, nodes: Vec<String>) -> ReleaseDecisionRequest {
    let id = name.trim_start_matches("decisions/");
    ReleaseDecisionRequest {
        request_id: RequestId::derived("unplan", format!("unplan-{id}-at-{}", nodes.join(","))),
        name: name.to_owned(),
        reason: "order cancelled; these nodes shipped none of it".to_owned(),
        node_ids: nodes,
    }
}

/// What placement did for an order on a payment hold (it stays held):
/// told as an update of its lines.
fn on_hold_placement(reason: &str) -> Happened {
    Happened {
        kind: order_event::Kind::Updated(oms_proto::orders::OrderUpdated {
            paths: vec!["lines".into()],
            reason: reason.to_owned(),
        }),
        reason: reason.to_owned(),
    }
}

/// Tells the order's history and feed that routing could not place it in
/// full (`decision`, said by `summary`) and when it is planned next; only
/// when the reason is new, so that an order waiting days for a node that
/// ships gets one line per reason, not one per attempt. Whether it told.
async fn tell_deferred(
    tx: &mut PgConnection,
    tenant: &Tenant,
    order_id: uuid::Uuid,
    o: &oms_proto::orders::Order,
    decision: &str,
    summary: &str,
    next: chrono::DateTime<Utc>,
) -> anyhow::Result<bool> {
    let said = format!("): {summary}");
    let happened = Happened {
        kind: order_event::Kind::RoutingDeferred(OrderRoutingDeferred {
            decision: decision.to_owned(),
            reason: summary.to_owned(),
            next_plan_time: Some(to_timestamp(next)),
        }),
        reason: format!("not placed in full yet, planned again later ({decision}{said}"),
    };
    let latest = repo::history::latest(tx, tenant, order_id).await?;
    let kind = happened.event_type();
    if latest.is_some_and(|(k, reason)| k == kind && reason.ends_with(&said)) {
        return Ok(false);
    }
    let state = lifecycle::state(o);
    tell(tx, tenant, order_id, o, state, ACTOR, "", happened).await?;
    Ok(true)
}

/// Puts a manual hold on an order the saga cannot take further by itself.
async fn hold_for_review(
    tx: &mut PgConnection,
    tenant: &Tenant,
    order_id: uuid::Uuid,
    (o, held_from): (&mut oms_proto::orders::Order, Option<OrderState>),
    from: OrderState,
    reason: String,
) -> anyhow::Result<()> {
    let hold = Hold {
        r#type: HoldType::Manual as i32,
        reason,
        placed_by: ACTOR.into(),
        place_time: Some(to_timestamp(Utc::now())),
    };
    // An order held already (reserving while it awaits payment) keeps
    // the state its holds return it to.
    if let Ok(h) = lifecycle::place_hold(o, hold.clone()) {
        let happened = Happened {
            kind: order_event::Kind::HoldPlaced(OrderHoldPlaced {
                hold: Some(hold.clone()),
            }),
            reason: hold.reason.clone(),
        };
        let held_from = h.or(held_from);
        record(
            tx, tenant, order_id, o, held_from, from, ACTOR, "", happened,
        )
        .await?;
        if held_from == Some(OrderState::Reserved) {
            super::held_expiry::watch(tx, tenant, order_id, Utc::now()).await?;
        }
    }
    Ok(())
}

/// The earliest expiry date of a lot each allocation (SKU, node) may ship
/// from, as inventory set it at confirmation (items that track expiry).
pub(crate) type FreshLots = std::collections::HashMap<(String, String), String>;

/// The [`FreshLots`] of a confirmed reservation (none without one).
pub(crate) fn fresh_lots(r: Option<&Reservation>) -> FreshLots {
    r.into_iter()
        .flat_map(|r| &r.lines)
        .flat_map(|l| &l.allocations)
        .filter(|a| !a.min_expiry_date.is_empty())
        .map(|a| {
            (
                (a.sku.clone(), a.node_id.clone()),
                a.min_expiry_date.clone(),
            )
        })
        .collect()
}

/// The work per node of `lines` (by their sourcing), shipping the
/// allocations of reservation `reservation` (an id), each line from lots
/// `fresh` allows.
pub(crate) fn fulfillment_orders(
    o: &oms_proto::orders::Order,
    lines: &[oms_proto::orders::OrderLine],
    reservation: &str,
    fresh: &FreshLots,
) -> Vec<(String, FulfillmentOrder)> {
    let mut per_node: Vec<(String, FulfillmentOrder)> = Vec::new();
    for l in lines {
        for src in &l.sourcing {
            if src.quantity <= 0 {
                continue;
            }
            let i = match per_node.iter().position(|(n, _)| *n == src.node_id) {
                Some(i) => i,
                None => {
                    per_node.push((
                        src.node_id.clone(),
                        FulfillmentOrder {
                            order: o.name.clone(),
                            node_id: src.node_id.clone(),
                            ship_to: o.ship_to.clone(),
                            carrier_service: carrier_service(o.service_level),
                            ship_by_time: o.promise_time,
                            decision: o.routing_decision.clone(),
                            reservation: format!("reservations/{reservation}"),
                            ..Default::default()
                        },
                    ));
                    per_node.len() - 1
                }
            };
            let key = (l.sku.clone(), src.node_id.clone());
            per_node[i].1.lines.push(FulfillmentLine {
                line_id: l.line_id.clone(),
                sku: l.sku.clone(),
                quantity: src.quantity,
                min_expiry_date: fresh.get(&key).cloned().unwrap_or_default(),
                ..Default::default()
            });
        }
    }
    per_node
}

pub(crate) fn routing_order(o: &oms_proto::orders::Order) -> RoutingOrder {
    RoutingOrder {
        order: o.name.clone(),
        lines: o
            .lines
            .iter()
            .filter(|l| l.quantity > l.quantity_cancelled + l.quantity_backordered)
            .map(|l| RoutingLine {
                line_id: l.line_id.clone(),
                sku: l.sku.clone(),
                // Backordered units are not held: a later step places them.
                quantity: l.quantity - l.quantity_cancelled - l.quantity_backordered,
                unit_price: l.unit_price.clone(),
            })
            .collect(),
        ship_to: o.ship_to.clone(),
        delivery_method: o.delivery_method,
        pickup_node_id: o.pickup_node_id.clone(),
        service_level: o.service_level,
        promise_time: o.promise_time,
        channel: o.channel.clone(),
        priority: o.priority,
    }
}

/// Whether an order whose placed state (its own, or the one its hold keeps)
/// is `placed` is still being placed: not released, nor cancelled.
pub(crate) fn placing(placed: OrderState) -> bool {
    matches!(
        placed,
        OrderState::Created | OrderState::Backordered | OrderState::Reserved | OrderState::Routed
    )
}

/// Writes the order's [`repo::saga::IN_DOUBT`] mark (on `side`, committed
/// at once) before a placement step calls its peer; whether this attempt
/// wrote it (false: an earlier one left it).
async fn doubt(side: &mut PgConnection, tenant: &Tenant, s: &Step) -> sqlx::Result<bool> {
    repo::saga::mark(side, tenant, s.order_id, repo::saga::IN_DOUBT).await
}

/// Takes the mark, with `tx`, when `settled`.
async fn settle_doubt(
    tx: &mut PgConnection,
    tenant: &Tenant,
    s: &Step,
    settled: bool,
) -> sqlx::Result<()> {
    if settled {
        repo::saga::take(tx, tenant, s.order_id, repo::saga::IN_DOUBT).await?;
    }
    Ok(())
}

/// Whether a call's answer settles the doubt: it went through (the step
/// records it with the mark's removal), or it surely changed nothing and
/// this attempt wrote the mark (`first`: no earlier attempt may have gone
/// through).
fn settles<T>(first: bool, answer: &Result<T, tonic::Status>) -> bool {
    match answer {
        Ok(_) => true,
        Err(st) => first && changed_nothing(st),
    }
}

/// Takes the mark once the order is no longer being placed (cancelled,
/// say): no attempt will follow.
async fn placement_over(
    tx: &mut PgConnection,
    tenant: &Tenant,
    s: &Step,
    placed: OrderState,
) -> sqlx::Result<()> {
    settle_doubt(tx, tenant, s, !placing(placed)).await
}

/// Why work was not released: the failed call's status, and whether an
/// earlier call of the same release reached fulfillment.
pub(crate) struct NotReleased {
    pub status: tonic::Status,
    pub reached: bool,
}

/// Whether a failed call surely changed nothing at its peer: the peer
/// answered it with an error (a status the server sent has no source; the
/// services answer an error only for a change rolled back), or no
/// connection could be made. A broken connection or a timeout may come
/// after the peer committed.
fn changed_nothing(st: &tonic::Status) -> bool {
    use std::error::Error as _;
    if st.source().is_none() {
        return !matches!(
            st.code(),
            Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
        );
    }
    let mut source = st.source();
    while let Some(e) = source {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// Inventory refused a plan's units because stock, the channel's pool or
/// a node's being enabled (routing reads them every few seconds) moved
/// since the plan: nothing was held, and planning again is the answer.
pub(crate) fn moved_since_the_plan(st: &tonic::Status) -> bool {
    st.code() == Code::FailedPrecondition
        && [
            "INSUFFICIENT_STOCK",
            "OUTSIDE_CHANNEL_POOL",
            "NODE_DISABLED",
        ]
        .contains(&oms_runtime::status::reason(st).as_str())
}

/// Whether inventory refused a change because the reservation expired
/// before it was confirmed.
fn reservation_expired(st: &tonic::Status) -> bool {
    st.code() == Code::FailedPrecondition
        && oms_runtime::status::reason(st) == "RESERVATION_EXPIRED"
}

/// Whether inventory refused a confirmation for good (a person must look
/// at the order).
fn refused_for_good(st: &tonic::Status) -> bool {
    matches!(
        st.code(),
        Code::InvalidArgument | Code::NotFound | Code::FailedPrecondition
    )
}

/// Why a reservation attempt came back short: the units missing per SKU,
/// and whether they are there but older orders waiting for them come
/// first.
struct Short {
    missing: Vec<(String, i64)>,
    behind_older: bool,
}

impl Saga {
    /// Records that the order (locked, held from `held_from`) is short of
    /// `short`, backordered (or short while it awaits payment), and has
    /// its step wait for the stock.
    async fn backorder(
        &self,
        tx: &mut PgConnection,
        tenant: &Tenant,
        s: &Step,
        (o, held_from): (&mut oms_proto::orders::Order, Option<OrderState>),
        unpaid: bool,
        short: Short,
    ) -> anyhow::Result<()> {
        let from = lifecycle::state(o);
        let placing = if unpaid {
            held_from.unwrap_or(from)
        } else {
            from
        };
        let missing = short.missing;
        let before: Vec<i64> = o.lines.iter().map(|l| l.quantity_backordered).collect();
        if unpaid {
            lifecycle::short_on_hold(o, &missing);
        } else {
            lifecycle::backordered(o, &missing).map_err(|r| anyhow::anyhow!(r.message))?;
        }
        let after: Vec<i64> = o.lines.iter().map(|l| l.quantity_backordered).collect();
        if placing != OrderState::Backordered || before != after {
            let mut what = missing
                .iter()
                .map(|(sku, q)| format!("{sku} ({q} missing)"))
                .collect::<Vec<_>>()
                .join(", ");
            if short.behind_older {
                what.push_str("; older orders waiting for it come first");
            }
            let (happened, held_from) = if unpaid {
                let why = format!("short while the order awaits payment: {what}");
                (on_hold_placement(&why), Some(OrderState::Backordered))
            } else {
                let to = OrderState::Backordered;
                let why = format!("short: {what}");
                (Happened::state_changed(from, to, why), held_from)
            };
            record(
                tx, tenant, s.order_id, o, held_from, from, ACTOR, "", happened,
            )
            .await?;
        }
        // Stock that comes wakes the order (oldest first) through the
        // inventory feed, so its backoff (5 s, then 5 s longer at each
        // attempt, up to 5 minutes; 1 minute before the feed woke orders)
        // is for what the feed does not say.
        let wanted: Vec<(String, i64)> = lifecycle::open_quantity(o)
            .into_iter()
            .filter(|(_, sku, _)| missing.iter().any(|(m, _)| m == sku))
            .map(|(_, sku, q)| (sku, q))
            .collect();
        wait_for_stock(tx, tenant, s, o, &wanted).await?;
        let wait = Duration::from_secs(5 * (1 + s.attempts.min(59) as u64));
        repo::saga::retry(tx, s, "insufficient stock", Utc::now() + wait).await?;
        Ok(())
    }
}

/// Says that step `s` of order `o` waits for `wanted` (units per SKU,
/// all it asks of each SKU missing), and follows the tenant's inventory
/// feed so that stock coming wakes it (see `workers::stock_feed`).
pub(crate) async fn wait_for_stock(
    tx: &mut PgConnection,
    tenant: &Tenant,
    s: &Step,
    o: &oms_proto::orders::Order,
    wanted: &[(String, i64)],
) -> anyhow::Result<()> {
    let turn = (order_turn(o), o.channel.as_str());
    repo::stock_waits::wait_for(tx, tenant, (s.order_id, &s.step), turn, wanted).await?;
    repo::feeds::follow(&mut *tx, repo::feeds::INVENTORY, tenant).await?;
    Ok(())
}

/// An order's turn among those waiting for stock: its creation.
fn order_turn(o: &oms_proto::orders::Order) -> chrono::DateTime<Utc> {
    o.create_time
        .as_ref()
        .and_then(oms_runtime::time::from_timestamp)
        .unwrap_or_else(Utc::now)
}

/// Units per SKU of a reservation's lines.
fn units_per_sku(lines: &[ReservationLine]) -> Vec<(String, i64)> {
    let mut units: Vec<(String, i64)> = Vec::new();
    for l in lines {
        match units.iter_mut().find(|(sku, _)| *sku == l.sku) {
            Some((_, q)) => *q += l.quantity,
            None => units.push((l.sku.clone(), l.quantity)),
        }
    }
    units
}

pub(crate) fn backoff(attempts: i32) -> chrono::Duration {
    let ms = 200u64
        .saturating_mul(1 << attempts.clamp(0, 9) as u32)
        .min(60_000);
    chrono::Duration::milliseconds(ms as i64)
}

/// Units missing per SKU, from inventory's PreconditionFailure violations
/// (`items/SKU-1`: "3 available, 5 requested"), in the order inventory
/// named them. A SKU short in the network and in the channel's pool too
/// (`channels/web/items/SKU-1`) is missing the larger figure: before, it
/// was listed twice ("short: B (1 missing), B (1 missing)").
fn missing_units(st: &tonic::Status) -> Vec<(String, i64)> {
    let details = st.get_error_details();
    let Some(pf) = details.precondition_failure() else {
        return vec![];
    };
    let mut missing: Vec<(String, i64)> = Vec::new();
    for v in &pf.violations {
        let Some(sku) = v.subject.rsplit('/').next() else {
            continue;
        };
        let mut nums = (v.description.split(|c: char| !c.is_ascii_digit()))
            .filter(|s| !s.is_empty())
            .map(str::parse::<i64>);
        let (Some(Ok(have)), Some(Ok(want))) = (nums.next(), nums.next()) else {
            continue;
        };
        let units = (want - have).max(0);
        match missing.iter_mut().find(|(s, _)| s == sku) {
            Some((_, m)) => *m = (*m).max(units),
            None => missing.push((sku.to_owned(), units)),
        }
    }
    missing
}

/// The request that adds units (SKU, node, units) to an order's
/// reservation, keyed by the edit that needs them.
pub fn extend_request(
    o: &oms_proto::orders::Order,
    key: &str,
    lines: &[(String, String, i64)],
    reason: &str,
) -> ExtendReservationRequest {
    let order_id = &o.order_id;
    ExtendReservationRequest {
        request_id: RequestId::derived("extend", format!("extend-{order_id}-{key}")),
        name: reservation_name(o),
        lines: allocations(lines),
        reason: reason.to_owned(),
        // The reservation keeps its time.
        ttl: None,
    }
}

fn allocations(lines: &[(String, String, i64)]) -> Vec<Allocation> {
    lines
        .iter()
        .map(|(sku, node, q)| Allocation {
            sku: sku.clone(),
            node_id: node.clone(),
            quantity: *q,
            ..Default::default()
        })
        .collect()
}

/// The request that gives back (some of) reservation `name` of order
/// `order_id`: units per (SKU, node); none gives back everything.
pub fn release_request(
    name: &str,
    order_id: uuid::Uuid,
    key: &str,
    lines: &[(String, String, i64)],
    reason: &str,
) -> ReleaseReservationRequest {
    ReleaseReservationRequest {
        request_id: RequestId::derived("release", format!("release-{order_id}-{key}")),
        name: name.to_owned(),
        lines: allocations(lines),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oms_proto::common::ServiceLevel;
    use oms_proto::orders::{LineSourcing, Order, OrderLine};

    #[test]
    fn a_sku_short_in_the_network_and_its_pool_is_missing_once() {
        use tonic_types::{ErrorDetails, PreconditionViolation};
        let short = |subject: &str, description: &str| PreconditionViolation {
            r#type: "INSUFFICIENT_STOCK".into(),
            subject: subject.into(),
            description: description.into(),
        };
        let st = tonic::Status::with_error_details(
            Code::FailedPrecondition,
            "not enough stock",
            ErrorDetails::with_precondition_failure(vec![
                short("channels/web/items/P", "0 available, 2 requested"),
                short("items/M", "1 available, 2 requested"),
                short("channels/web/items/M", "0 available, 2 requested"),
                short("items/X", "garbled"),
            ]),
        );
        assert_eq!(missing_units(&st), [("P".into(), 2), ("M".into(), 2)]);
    }

    #[test]
    fn a_node_is_asked_for_the_service_level_or_none() {
        assert_eq!(carrier_service(ServiceLevel::NextDay as i32), "next_day");
        assert_eq!(carrier_service(ServiceLevel::Standard as i32), "standard");
        assert_eq!(carrier_service(ServiceLevel::Unspecified as i32), "");
        assert_eq!(carrier_service(99), "");
    }

    #[test]
    fn each_fulfillment_line_ships_from_lots_its_allocation_allows() {
        let line = |id: &str, sku: &str, at: &[(&str, i64)]| OrderLine {
            line_id: id.into(),
            sku: sku.into(),
            sourcing: at
                .iter()
                .map(|(n, q)| LineSourcing {
                    node_id: (*n).into(),
                    quantity: *q,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let o = Order {
            name: "orders/1".into(),
            lines: vec![
                line("1", "MILK", &[("DC1", 2), ("DC2", 1)]),
                line("2", "S", &[("DC1", 1)]),
            ],
            ..Default::default()
        };
        let reserved = Reservation {
            lines: vec![ReservationLine {
                sku: "MILK".into(),
                allocations: vec![
                    Allocation {
                        sku: "MILK".into(),
                        node_id: "DC1".into(),
                        min_expiry_date: "2027-01-03".into(),
                        ..Default::default()
                    },
                    Allocation {
                        sku: "MILK".into(),
                        node_id: "DC2".into(),
                        min_expiry_date: "2027-01-04".into(),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        };
        let work = fulfillment_orders(&o, &o.lines, "r1", &fresh_lots(Some(&reserved)));
        let dates: Vec<(&str, &str, &str)> = work
            .iter()
            .flat_map(|(node, fo)| {
                fo.lines
                    .iter()
                    .map(move |l| (node.as_str(), l.sku.as_str(), l.min_expiry_date.as_str()))
            })
            .collect();
        assert_eq!(
            dates,
            [
                ("DC1", "MILK", "2027-01-03"),
                ("DC1", "S", ""),
                ("DC2", "MILK", "2027-01-04")
            ]
        );
    }
}
