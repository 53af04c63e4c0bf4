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
use crate::gate::{AvailChange, ChangeOutcome, Gate, GateError};
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
    /// A gate change that takes stock away (a reservation's hold, a
    /// shipment, more safety stock) is made inside the transaction that
    /// records it, so nothing is promised twice meanwhile; a change that
    /// gives stock back is applied after the commit ([`adjust_gate`]), so
    /// stock the record never got is never promised. A transaction that
    /// changed the gate and then fails or is abandoned (a lost connection,
    /// a failed commit, a caller that went away) leaves the gate changed
    /// and the record not: such a gate is dropped (its ready marker) so the
    /// next change rebuilds it from the record; see [`changing_gate`].
    pub async fn retrying<T, F, Fut>(&self, tenant: &Tenant, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut attempt = 0;
        loop {
            let unkept = Unkept::new(&self.gate, tenant);
            let out = RUN.scope(unkept.0.clone(), op()).await;
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

/// What one run of a mutation (in [`Inventory::retrying`]) did to the
/// gate that its commit has not settled yet.
#[derive(Default)]
struct Run {
    /// The gate was changed (or may have been: a script whose answer was
    /// lost may have run) since the last commit.
    unkept: AtomicBool,
    /// Stock given back, applied after the commit.
    after_commit: std::sync::Mutex<Vec<Deferred>>,
}

struct Deferred {
    gate: Gate,
    tenant: Tenant,
    /// The gate's epoch while the change was recorded.
    epoch: String,
    changes: Vec<AvailChange>,
}

tokio::task_local! {
    static RUN: Arc<Run>;
}

/// Says that the running mutation is about to change the gate: called
/// before the script, so that the change counts as unrecorded until the
/// transaction commits.
pub fn changing_gate() {
    let _ = RUN.try_with(|r| r.unkept.store(true, Ordering::Relaxed));
}

/// Changes what nodes can promise: decreases now, in the transaction (see
/// [`changing_gate`]); increases after the commit, unless the gate is
/// rebuilt in between (the rebuild read them from the record) or lost
/// (its rebuild will). Outside a run (no commit to wait for) both now.
pub async fn adjust_gate(
    inv: &Inventory,
    tenant: &Tenant,
    changes: Vec<AvailChange>,
) -> Result<()> {
    let (up, down): (Vec<_>, Vec<_>) = changes.into_iter().partition(|c| c.delta > 0);
    let in_run = RUN.try_with(|_| ()).is_ok();
    let now = if in_run {
        down
    } else {
        [down, up.clone()].concat()
    };
    if !now.is_empty() {
        changing_gate();
        inv.gate.adjust(tenant, &now).await?;
    }
    if !in_run || up.is_empty() {
        return Ok(());
    }
    // Read under this transaction's shared gate lock: a rebuild, which
    // takes it exclusively, comes after the commit and counts the change.
    // A missing gate is rebuilt first, as for any other change.
    let Some(epoch) = inv.gate.epoch(tenant).await? else {
        return Err(GateError::NotReady.into());
    };
    defer(inv, tenant, epoch, up);
    Ok(())
}

/// Gives back after the commit the units a gate change freed (a release,
/// an expiry: [`ChangeOutcome::given_back`]), at the epoch it was made in.
pub async fn give_back_after_commit(
    inv: &Inventory,
    tenant: &Tenant,
    out: &ChangeOutcome,
) -> Result<()> {
    let changes = out.given_back();
    let Some(epoch) = out.epoch.clone().filter(|_| !changes.is_empty()) else {
        return Ok(());
    };
    if RUN.try_with(|_| ()).is_ok() {
        defer(inv, tenant, epoch, changes);
    } else {
        inv.gate.adjust_at(tenant, &changes, &epoch).await?;
    }
    Ok(())
}

fn defer(inv: &Inventory, tenant: &Tenant, epoch: String, changes: Vec<AvailChange>) {
    let deferred = Deferred {
        gate: inv.gate.clone(),
        tenant: tenant.clone(),
        epoch,
        changes,
    };
    let _ = RUN.try_with(|r| lock(&r.after_commit).push(deferred));
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Commits a mutation's transaction: the record now keeps every gate
/// change the mutation made, and the stock it gave back is applied.
pub async fn commit(tx: Transaction<'static, Postgres>) -> Result<()> {
    tx.commit().await?;
    let deferred = RUN
        .try_with(|r| {
            r.unkept.store(false, Ordering::Relaxed);
            std::mem::take(&mut *lock(&r.after_commit))
        })
        .unwrap_or_default();
    if !deferred.is_empty() {
        // A task of its own: a caller going away now must not leave
        // recorded stock unpromised.
        let _ = tokio::spawn(give_back(deferred)).await;
    }
    Ok(())
}

async fn give_back(deferred: Vec<Deferred>) {
    for d in deferred {
        if let Err(e) = d.gate.adjust_at(&d.tenant, &d.changes, &d.epoch).await {
            // Recorded but not promised: dropped, the gate is rebuilt with
            // it on the next change.
            tracing::error!(error = %e, tenant = %d.tenant, "stock given back could not reach the gate; it is rebuilt from the record");
            if let Err(e) = d.gate.invalidate(&d.tenant).await {
                tracing::error!(error = %e, tenant = %d.tenant, "dropping the gate failed; run Reconcile");
            }
        }
    }
}

/// One run of a mutation. Dropped without being disarmed (the caller went
/// away mid-run) after an unrecorded gate change, it drops the gate in a
/// task of its own.
struct Unkept(Arc<Run>, Option<(Gate, Tenant)>);

impl Unkept {
    fn new(gate: &Gate, tenant: &Tenant) -> Self {
        Unkept(Arc::default(), Some((gate.clone(), tenant.clone())))
    }

    /// Ends the run normally: whether a gate change is unrecorded.
    fn disarm(mut self) -> bool {
        self.1 = None;
        self.0.unkept.load(Ordering::Relaxed)
    }
}

impl Drop for Unkept {
    fn drop(&mut self) {
        let Some((gate, tenant)) = self.1.take() else {
            return;
        };
        if !self.0.unkept.load(Ordering::Relaxed) {
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
