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
//!
//! Here: the worker (claiming and running due steps, retries, the
//! breaker) and what every step shares (the order's lock, the in-doubt
//! mark, holds for review). Each step's work is in its own module:
//! [`reserve`], [`route`], [`fulfil`] (and cancelling work at the nodes),
//! [`give_back`] (releases, undone edits, plans given back to routing).
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

mod fulfil;
mod give_back;
mod reserve;
mod route;

pub use fulfil::{cancel_work_step, open_work};
pub(crate) use fulfil::{fresh_lots, fulfillment_orders};
use give_back::Unplan;
pub use give_back::{
    extend_request, release_request, unplan_all_step, unplan_step, unplanned_if_unshipped,
};
use reserve::reservation_id_of;
pub(crate) use reserve::{next_reservation, wait_for_stock};
pub use reserve::{reservation_id, reservation_name};
pub(crate) use route::{route_step, routing_order};

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

#[derive(Clone)]
pub struct Saga {
    pub(crate) pool: PgPool,
    pub(crate) peers: Peers,
    metrics: crate::metrics::Metrics,
    wake: Arc<Notify>,
    /// Set when a step's peer was down during the current tick.
    peer_down: Arc<AtomicBool>,
}

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
            crate::workers::held_expiry::watch(tx, tenant, order_id, Utc::now()).await?;
        }
    }
    Ok(())
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

/// [`lock_for_step`], for a step that goes on only from `state`: an order
/// in another (held, cancelled, moved on meanwhile) ends the step; a hold's
/// release enqueues it again.
async fn lock_in_state(
    tx: &mut PgConnection,
    tenant: &Tenant,
    s: &Step,
    state: OrderState,
) -> anyhow::Result<Option<(oms_proto::orders::Order, Option<OrderState>)>> {
    let Some((o, held_from)) = lock_for_step(tx, tenant, s).await? else {
        return Ok(None);
    };
    let from = lifecycle::state(&o);
    if from != state {
        placement_over(tx, tenant, s, held_from.unwrap_or(from)).await?;
        repo::saga::done(tx, s).await?;
        return Ok(None);
    }
    Ok(Some((o, held_from)))
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

pub(crate) fn backoff(attempts: i32) -> chrono::Duration {
    let ms = 200u64
        .saturating_mul(1 << attempts.clamp(0, 9) as u32)
        .min(60_000);
    chrono::Duration::milliseconds(ms as i64)
}
