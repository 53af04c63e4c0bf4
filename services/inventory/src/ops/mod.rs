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
use std::sync::atomic::{AtomicBool, Ordering};
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
        commit(tx).await?;
        Ok(resp)
    }

    /// Runs `op`, rebuilding the tenant's gate and running it again when
    /// Redis turns out to have lost its data.
    ///
    /// A gate change is made inside the transaction that records it, so a
    /// transaction that changes the gate and then fails or is abandoned
    /// (a lost connection, a failed commit, a caller that went away) leaves
    /// the gate changed and the record not: stock a receipt never recorded
    /// would be promised, a release never recorded refused forever. Such a
    /// gate is dropped (its ready marker) so the next change rebuilds it
    /// from the record; see [`changing_gate`].
    pub async fn retrying<T, F, Fut>(&self, tenant: &Tenant, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut attempt = 0;
        loop {
            let unkept = Unkept::new(&self.gate, tenant);
            let out = UNKEPT_GATE_CHANGE.scope(unkept.0.clone(), op()).await;
            match (unkept.disarm(), &out) {
                // Redis lost the gate: it is rebuilt below anyway.
                (_, Err(Error::Gate(GateError::NotReady))) => {}
                (true, _) => {
                    tracing::warn!(tenant = %tenant, "a gate change was not recorded; the gate is rebuilt from the record");
                    if let Err(e) = reconcile::invalidate(self, tenant).await {
                        tracing::error!(error = %e, tenant = %tenant, "dropping a gate that holds an unrecorded change failed");
                    }
                }
                (false, _) => {}
            }
            match out {
                Err(Error::Gate(GateError::NotReady)) if attempt < 5 => {
                    attempt += 1;
                    reconcile::ensure_ready(self, tenant).await?;
                }
                other => return other,
            }
        }
    }
}

tokio::task_local! {
    /// Set while a mutation run by [`Inventory::retrying`] has changed the
    /// gate (or may have: a script whose answer was lost may have run)
    /// since its last commit.
    static UNKEPT_GATE_CHANGE: Arc<AtomicBool>;
}

/// Says that the running mutation is about to change the gate: called
/// before the script, so that the change counts as unrecorded until the
/// transaction commits.
pub fn changing_gate() {
    let _ = UNKEPT_GATE_CHANGE.try_with(|f| f.store(true, Ordering::Relaxed));
}

/// Commits a mutation's transaction: the record now keeps every gate
/// change the mutation made.
pub async fn commit(tx: Transaction<'static, Postgres>) -> Result<()> {
    tx.commit().await?;
    let _ = UNKEPT_GATE_CHANGE.try_with(|f| f.store(false, Ordering::Relaxed));
    Ok(())
}

/// One run of a mutation. Dropped without being disarmed (the caller went
/// away mid-run) after an unrecorded gate change, it drops the gate in a
/// task of its own.
struct Unkept(Arc<AtomicBool>, Option<(Gate, Tenant)>);

impl Unkept {
    fn new(gate: &Gate, tenant: &Tenant) -> Self {
        Unkept(
            Arc::new(AtomicBool::new(false)),
            Some((gate.clone(), tenant.clone())),
        )
    }

    /// Ends the run normally: whether a gate change is unrecorded.
    fn disarm(mut self) -> bool {
        self.1 = None;
        self.0.load(Ordering::Relaxed)
    }
}

impl Drop for Unkept {
    fn drop(&mut self) {
        let Some((gate, tenant)) = self.1.take() else {
            return;
        };
        if !self.0.load(Ordering::Relaxed) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            tracing::warn!(tenant = %tenant, "a gate change was abandoned unrecorded; the gate is rebuilt from the record");
            if let Err(e) = gate.invalidate(&tenant).await {
                tracing::error!(error = %e, tenant = %tenant, "dropping a gate that holds an unrecorded change failed");
            }
        });
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
