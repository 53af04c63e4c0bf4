//! Inventory use cases. Each mutation is one Postgres transaction that
//! holds the tenant's gate lock (shared), claims the `request_id`, writes
//! the record and its outbox event, and changes the Redis gate the same
//! way; when Redis has lost its data the gate is rebuilt and the use case
//! runs again.
pub mod availability;
pub mod catalog;
pub mod movements;
pub mod reconcile;
pub mod reservations;

use crate::error::{Error, Result};
use crate::gate::{Gate, GateError};
use crate::repo::lock;
use oms_kernel::{RequestId, Tenant, Violations};
use oms_proto::inventory::{InventoryEvent, inventory_event};
use oms_runtime::{
    idempotency::{self, Claim},
    outbox::{self, FeedWaker, NewEvent},
};
use prost::Message;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use std::future::Future;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub struct Inventory {
    pub pool: PgPool,
    pub gate: Gate,
    pub waker: FeedWaker,
    pub shutdown: CancellationToken,
    pub writer: reservations::Writer,
    pub metrics: crate::metrics::Metrics,
}

pub type Shared = Arc<Inventory>;

/// A started mutation: either the stored answer of a repeated request, or
/// a transaction holding the gate lock with the request claimed.
pub enum Begin<R> {
    Replay(R),
    Tx(Transaction<'static, Postgres>, RequestId),
}

impl Inventory {
    pub async fn begin<Req: Message, Resp: Message + Default>(
        &self,
        tenant: &Tenant,
        request_id: &str,
        method: &str,
        req: &Req,
    ) -> Result<Begin<Resp>> {
        let rid = RequestId::parse(request_id).map_err(|e| Violations::one("request_id", e))?;
        let mut tx = self.pool.begin().await?;
        lock::shared(&mut tx, tenant).await?;
        Ok(
            match idempotency::claim(&mut tx, tenant, &rid, method, req).await? {
                Claim::Replay(r) => Begin::Replay(r),
                Claim::New => Begin::Tx(tx, rid),
            },
        )
    }

    /// Stores the answer with the claim and commits.
    pub async fn finish<Resp: Message>(
        &self,
        mut tx: Transaction<'static, Postgres>,
        tenant: &Tenant,
        rid: &RequestId,
        resp: Resp,
    ) -> Result<Resp> {
        idempotency::complete(&mut tx, tenant, rid, &resp).await?;
        tx.commit().await?;
        Ok(resp)
    }

    /// Runs `op`, rebuilding the tenant's gate and running it again when
    /// Redis turns out to have lost its data.
    pub async fn retrying<T, F, Fut>(&self, tenant: &Tenant, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut attempt = 0;
        loop {
            match op().await {
                Err(Error::Gate(GateError::NotReady)) if attempt < 5 => {
                    attempt += 1;
                    reconcile::ensure_ready(self, tenant).await?;
                }
                other => return other,
            }
        }
    }
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub fn event_type(kind: &inventory_event::Kind) -> &'static str {
    match kind {
        inventory_event::Kind::StockMoved(_) => "StockMoved",
        inventory_event::Kind::StockReserved(_) => "StockReserved",
        inventory_event::Kind::ReservationConfirmed(_) => "ReservationConfirmed",
        inventory_event::Kind::ReservationReleased(_) => "ReservationReleased",
        inventory_event::Kind::AllocationsConsumed(_) => "AllocationsConsumed",
        inventory_event::Kind::SafetyStockSet(_) => "SafetyStockSet",
        inventory_event::Kind::ChannelRuleSet(_) => "ChannelRuleSet",
        inventory_event::Kind::ReservationExtended(_) => "ReservationExtended",
    }
}

/// Appends one inventory event in the transaction.
pub async fn emit(
    tx: &mut PgConnection,
    tenant: &Tenant,
    subject: &str,
    request_id: &str,
    kind: inventory_event::Kind,
) -> Result<()> {
    let event_type = event_type(&kind);
    let payload = InventoryEvent {
        meta: None,
        kind: Some(kind),
    }
    .encode_to_vec();
    outbox::append(
        tx,
        NewEvent {
            tenant,
            event_type,
            subject,
            request_id,
            payload,
        },
    )
    .await?;
    Ok(())
}
