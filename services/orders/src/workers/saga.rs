//! The placement saga: durable steps (`saga_steps`) run by a worker that
//! claims them with `FOR UPDATE SKIP LOCKED`, calls inventory, and records
//! the outcome on the order in the same transaction. Every call it makes is
//! idempotent (the reservation id is the order's), so a step retried after
//! a crash changes nothing twice.
//!
//! Steps: `reserve` (reserve the open lines; short stock backorders the
//! order and retries; a permanent refusal puts a manual hold), and
//! `release:<key>` (give stock back after a cancellation; retried until
//! inventory confirms).
use crate::changes::{Happened, record};
use crate::domain::{OrderState, lifecycle};
use crate::repo::{self, orders::TryLock, saga::Step};
use chrono::Utc;
use oms_kernel::Tenant;
use oms_proto::inventory::{
    CreateReservationRequest, ReleaseReservationRequest, ReservationLine,
    inventory_service_client::InventoryServiceClient,
};
use oms_proto::orders::{Hold, HoldType, OrderHoldPlaced, order_event};
use oms_runtime::{auth::TokenIssuer, client::Outbound, time::to_timestamp};
use prost::Message;
use sqlx::{PgConnection, PgPool};
use std::{sync::Arc, time::Duration};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::{Code, transport::Channel};
use tonic_types::StatusExt;

const ACTOR: &str = "system:placement";
/// Reservations live while routing and release are still to come.
const RESERVATION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

pub fn reservation_id(order_id: uuid::Uuid) -> String {
    format!("order-{order_id}")
}

#[derive(Clone)]
pub struct Saga {
    pool: PgPool,
    inventory: Channel,
    issuer: TokenIssuer,
    wake: Arc<Notify>,
}

impl Saga {
    pub fn new(pool: PgPool, inventory: Channel, issuer: TokenIssuer) -> Self {
        Self {
            pool,
            inventory,
            issuer,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Runs due steps now (after a commit that enqueued some).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub fn start(self, interval: Duration, shutdown: CancellationToken) {
        tokio::spawn(async move {
            loop {
                match self.tick().await {
                    // A full batch: there may be more.
                    Ok(n) if n >= 20 => continue,
                    Ok(_) => {}
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
        let mut tx = self.pool.begin().await?;
        let steps = repo::saga::claim_due(&mut tx, 20).await?;
        let n = steps.len();
        for s in steps {
            let tenant = match Tenant::parse(&s.tenant) {
                Ok(t) => t,
                Err(_) => {
                    repo::saga::done(&mut tx, &s).await?;
                    continue;
                }
            };
            if s.step == repo::saga::RESERVE {
                self.reserve(&mut tx, &tenant, &s).await?;
            } else {
                self.release(&mut tx, &tenant, &s).await?;
            }
        }
        tx.commit().await?;
        Ok(n)
    }

    fn client(
        &self,
        tenant: &Tenant,
    ) -> InventoryServiceClient<tonic::service::interceptor::InterceptedService<Channel, Outbound>>
    {
        InventoryServiceClient::with_interceptor(
            self.inventory.clone(),
            Outbound::for_tenant(&self.issuer, tenant, "service:orders"),
        )
    }

    async fn reserve(
        &self,
        tx: &mut PgConnection,
        tenant: &Tenant,
        s: &Step,
    ) -> anyhow::Result<()> {
        let (mut o, held_from) = match repo::orders::try_lock(tx, tenant, s.order_id).await? {
            TryLock::Locked(o, h) => (*o, h),
            TryLock::Missing => {
                repo::saga::done(tx, s).await?;
                return Ok(());
            }
            TryLock::Busy => {
                // A request is changing the order; come back shortly.
                repo::saga::retry(
                    tx,
                    s,
                    "order busy",
                    Utc::now() + chrono::Duration::milliseconds(100),
                )
                .await?;
                return Ok(());
            }
        };
        let from = lifecycle::state(&o);
        if !matches!(from, OrderState::Created | OrderState::Backordered) {
            // Held or cancelled meanwhile: releasing the hold enqueues it again.
            repo::saga::done(tx, s).await?;
            return Ok(());
        }
        let lines = lifecycle::open_quantity(&o)
            .into_iter()
            .map(|(_, sku, q)| ReservationLine {
                sku,
                quantity: q,
                ..Default::default()
            })
            .collect();
        let req = CreateReservationRequest {
            reservation_id: reservation_id(s.order_id),
            lines,
            ttl: prost_types::Duration::try_from(RESERVATION_TTL).ok(),
            reference: o.name.clone(),
            channel: o.channel.clone(),
        };
        match self.client(tenant).create_reservation(req).await {
            Ok(_) => {
                lifecycle::reserved(&mut o).map_err(|r| anyhow::anyhow!(r.message))?;
                let happened =
                    Happened::state_changed(from, OrderState::Reserved, "stock reserved");
                record(
                    tx, tenant, s.order_id, &mut o, held_from, from, ACTOR, "", happened,
                )
                .await?;
                repo::saga::done(tx, s).await?;
            }
            Err(st)
                if st.code() == Code::FailedPrecondition
                    && oms_runtime::status::reason(&st) == "INSUFFICIENT_STOCK" =>
            {
                let missing = missing_units(&st);
                let before: Vec<i64> = o.lines.iter().map(|l| l.quantity_backordered).collect();
                lifecycle::backordered(&mut o, &missing).map_err(|r| anyhow::anyhow!(r.message))?;
                let after: Vec<i64> = o.lines.iter().map(|l| l.quantity_backordered).collect();
                if from != OrderState::Backordered || before != after {
                    let short = missing
                        .iter()
                        .map(|(sku, q)| format!("{sku} ({q} missing)"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    let happened = Happened::state_changed(
                        from,
                        OrderState::Backordered,
                        format!("short: {short}"),
                    );
                    record(
                        tx, tenant, s.order_id, &mut o, held_from, from, ACTOR, "", happened,
                    )
                    .await?;
                }
                let wait = Duration::from_secs(5 * (1 + s.attempts.min(11) as u64));
                repo::saga::retry(tx, s, "insufficient stock", Utc::now() + wait).await?;
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
                let hold = Hold {
                    r#type: HoldType::Manual as i32,
                    reason: format!("placement refused by inventory: {}", st.message()),
                    placed_by: ACTOR.into(),
                    place_time: Some(to_timestamp(Utc::now())),
                };
                if let Ok(Some(h)) = lifecycle::place_hold(&mut o, hold.clone()) {
                    let happened = Happened {
                        kind: order_event::Kind::HoldPlaced(OrderHoldPlaced {
                            hold: Some(hold.clone()),
                        }),
                        reason: hold.reason.clone(),
                    };
                    record(
                        tx,
                        tenant,
                        s.order_id,
                        &mut o,
                        Some(h),
                        from,
                        ACTOR,
                        "",
                        happened,
                    )
                    .await?;
                }
                repo::saga::done(tx, s).await?;
            }
            Err(st) => {
                repo::saga::retry(tx, s, st.message(), Utc::now() + backoff(s.attempts)).await?;
            }
        }
        Ok(())
    }

    async fn release(
        &self,
        tx: &mut PgConnection,
        tenant: &Tenant,
        s: &Step,
    ) -> anyhow::Result<()> {
        let req = ReleaseReservationRequest::decode(s.payload.as_slice())?;
        match self.client(tenant).release_reservation(req).await {
            Ok(_) => repo::saga::done(tx, s).await?,
            // Never reserved, or already released or expired: nothing to give back.
            Err(st) if matches!(st.code(), Code::NotFound | Code::FailedPrecondition) => {
                repo::saga::done(tx, s).await?
            }
            Err(st) => {
                repo::saga::retry(tx, s, st.message(), Utc::now() + backoff(s.attempts)).await?
            }
        }
        Ok(())
    }
}

fn backoff(attempts: i32) -> chrono::Duration {
    let ms = 200u64
        .saturating_mul(1 << attempts.clamp(0, 9) as u32)
        .min(60_000);
    chrono::Duration::milliseconds(ms as i64)
}

/// Units missing per SKU, from inventory's PreconditionFailure violations
/// (`items/SKU-1`: "3 available, 5 requested").
fn missing_units(st: &tonic::Status) -> Vec<(String, i64)> {
    let details = st.get_error_details();
    let Some(pf) = details.precondition_failure() else {
        return vec![];
    };
    pf.violations
        .iter()
        .filter_map(|v| {
            let sku = v.subject.rsplit('/').next()?.to_owned();
            let mut nums = v
                .description
                .split(|c: char| !c.is_ascii_digit())
                .filter(|s| !s.is_empty());
            let have: i64 = nums.next()?.parse().ok()?;
            let want: i64 = nums.next()?.parse().ok()?;
            Some((sku, (want - have).max(0)))
        })
        .collect()
}

/// The request that gives back (some of) an order's reservation.
pub fn release_request(
    order_id: uuid::Uuid,
    key: &str,
    lines: &[(String, i64)],
    reason: &str,
) -> Vec<u8> {
    ReleaseReservationRequest {
        request_id: format!("release-{order_id}-{key}"),
        name: format!("reservations/{}", reservation_id(order_id)),
        lines: lines
            .iter()
            .map(|(sku, q)| oms_proto::inventory::Allocation {
                sku: sku.clone(),
                quantity: *q,
                ..Default::default()
            })
            .collect(),
        reason: reason.to_owned(),
    }
    .encode_to_vec()
}
