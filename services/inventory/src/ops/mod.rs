//! Inventory use cases. Each mutation (but a snapshot import: one per
//! chunk of rows, `imports`) is one Postgres transaction that
//! holds the tenant's gate lock (shared), claims the `request_id`, writes
//! the record and its outbox event, and changes the Redis gate the same
//! way; when Redis has lost its data the gate is rebuilt and the use case
//! runs again.
pub mod availability;
pub mod backorders;
pub mod catalog;
mod counts;
pub mod imports;
pub mod inbound;
pub mod lot_expiry;
pub mod movements;
pub mod reconcile;
pub mod replicas;
pub mod reservations;
pub mod transfers;

use crate::error::{Error, Result};
use crate::gate::{AvailChange, Gate, GateError};
use crate::repo::{self, lock};
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
use uuid::Uuid;

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
            let run = Arc::new(Run::new(self, tenant));
            let mut abandoned = Unkept(Some(run.clone()));
            let out = RUN.scope(run.clone(), op()).await;
            abandoned.0 = None; // the run ended: handled here, not on drop
            // (A gate Redis lost is rebuilt below anyway.)
            if run.unkept() && !matches!(out, Err(Error::Gate(GateError::NotReady))) {
                run.drop_gate_or_sweep("a gate change was not recorded")
                    .await;
            }
            match out {
                Err(Error::Gate(GateError::NotReady)) if attempt < 5 => {
                    attempt += 1;
                    reconcile::ensure_ready(self, tenant, "missing").await?;
                }
                other => return other,
            }
        }
    }
}

/// One run of a mutation (in [`Inventory::retrying`]): what it did to the
/// tenant's gate that its commit has not settled yet.
struct Run {
    gate: Gate,
    pool: PgPool,
    tenant: Tenant,
    /// The gate was changed (or may have been: a script whose answer was
    /// lost may have run) since the last commit.
    unkept: AtomicBool,
    after_commit: std::sync::Mutex<Later>,
}

/// Stock a run gives back after its commit.
#[derive(Default)]
struct Later {
    /// The gate's epoch while the stock was recorded: one for the whole
    /// run, since no rebuild can come while its transaction holds the
    /// shared gate lock. `None`: nothing to give back.
    epoch: Option<String>,
    changes: Vec<AvailChange>,
    /// The row (`repo::give_backs`) the commit wrote for it.
    row: Option<Uuid>,
}

impl Run {
    fn new(inv: &Inventory, tenant: &Tenant) -> Self {
        Run {
            gate: inv.gate.clone(),
            pool: inv.pool.clone(),
            tenant: tenant.clone(),
            unkept: AtomicBool::new(false),
            after_commit: Default::default(),
        }
    }

    fn unkept(&self) -> bool {
        self.unkept.load(Ordering::Relaxed)
    }

    fn later(&self) -> std::sync::MutexGuard<'_, Later> {
        self.after_commit.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// After the run's commit: its row has the sweep drop the gate should
    /// Redis not be told.
    async fn drop_gate(&self, why: &str) -> bool {
        drop_gate(&self.gate, &self.tenant, why).await
    }

    /// Before, or without, the run's commit: it has no row.
    async fn drop_gate_or_sweep(&self, why: &str) {
        drop_gate_or_sweep(&self.pool, &self.gate, &self.tenant, why).await
    }

    /// Writes, in the run's transaction, that stock is to be given back
    /// after its commit (nothing when there is none): should the give-back
    /// never arrive, the sweep finds the row ([`reconcile::recover_give_backs`]).
    async fn announce(&self, tx: &mut PgConnection) -> Result<()> {
        if self.later().epoch.is_none() {
            return Ok(());
        }
        let id = Uuid::now_v7();
        repo::give_backs::record(tx, &self.tenant, id).await?;
        self.later().row = Some(id);
        Ok(())
    }

    /// Gives back what the committed run freed, in one script per batch
    /// of SKUs and nodes, unless the gate was rebuilt since; then deletes
    /// the run's row, unless neither the stock nor a dropped gate reached
    /// Redis (the sweep tries again).
    async fn give_back(self: Arc<Self>) {
        let Later {
            epoch,
            changes,
            row,
        } = std::mem::take(&mut *self.later());
        let Some(epoch) = epoch else {
            return;
        };
        let mut arrived = true;
        for batch in merged(changes).chunks(GIVE_BACK_BATCH) {
            if let Err(e) = self.gate.adjust_at(&self.tenant, batch, &epoch).await {
                tracing::error!(error = %e, "stock given back could not reach the gate");
                arrived = self.drop_gate("stock given back is not in the gate").await;
                break;
            }
        }
        if let (true, Some(id)) = (arrived, row) {
            // Left behind, the row costs one needless rebuild, no more.
            let forgotten = repo::give_backs::forget(&self.pool, &self.tenant, &[id]).await;
            if let Err(e) = forgotten {
                tracing::warn!(error = %e, "a give-back's row was not deleted");
            }
        }
    }
}

/// SKUs and nodes given back by one script at most (an import gives back
/// thousands).
const GIVE_BACK_BATCH: usize = 500;

/// Drops the tenant's gate (its ready marker), so the next change rebuilds
/// it from the record. False when Redis could not be told.
async fn drop_gate(gate: &Gate, tenant: &Tenant, why: &str) -> bool {
    tracing::warn!(tenant = %tenant, "{why}; the gate is rebuilt from the record");
    match gate.invalidate(tenant).await {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(error = %e, tenant = %tenant, "dropping the gate failed");
            false
        }
    }
}

/// [`drop_gate`], and where Redis cannot be told, a `gate_give_backs` row
/// that has the sweep drop it ([`reconcile::recover_give_backs`]).
pub(crate) async fn drop_gate_or_sweep(pool: &PgPool, gate: &Gate, tenant: &Tenant, why: &str) {
    if drop_gate(gate, tenant, why).await {
        return;
    }
    let swept = async {
        let mut c = pool.acquire().await?;
        repo::give_backs::record(&mut c, tenant, Uuid::now_v7()).await
    };
    if let Err(e) = swept.await {
        tracing::error!(error = %e, tenant = %tenant, "nor could the sweep be told; Reconcile rebuilds the gate");
    }
}

/// One change per SKU and field, deltas summed.
fn merged(changes: Vec<AvailChange>) -> Vec<AvailChange> {
    let mut by_key: std::collections::BTreeMap<(String, String), AvailChange> = Default::default();
    for c in changes {
        match by_key.entry((c.sku.clone(), c.field.clone())) {
            std::collections::btree_map::Entry::Occupied(mut e) => e.get_mut().delta += c.delta,
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(c);
            }
        }
    }
    by_key.into_values().collect()
}

tokio::task_local! {
    static RUN: Arc<Run>;
}

/// Says that the running mutation is about to change the gate: called
/// before the script, so that the change counts as unrecorded until the
/// transaction commits.
pub fn changing_gate() -> GateMark {
    let was = RUN
        .try_with(|r| r.unkept.swap(true, Ordering::Relaxed))
        .unwrap_or(false);
    GateMark { was }
}

/// What [`changing_gate`] found before it marked the run.
pub struct GateMark {
    was: bool,
}

impl GateMark {
    /// The script answered that it changed nothing (a refusal): the run
    /// is as it was before, so its end need not drop the gate (a rebuild
    /// of the tenant's whole gate for a refused release).
    pub fn unchanged(self) {
        let _ = RUN.try_with(|r| r.unkept.store(self.was, Ordering::Relaxed));
    }
}

/// Changes what nodes can promise: decreases now, in the transaction (see
/// [`changing_gate`]); increases after the commit ([`give_back_later`]).
pub async fn adjust_gate(
    inv: &Inventory,
    tenant: &Tenant,
    changes: Vec<AvailChange>,
) -> Result<()> {
    let (up, down): (Vec<_>, Vec<_>) = changes.into_iter().partition(|c| c.delta > 0);
    if !down.is_empty() {
        changing_gate();
        inv.gate.adjust(tenant, &down).await?;
    }
    give_back_later(inv, tenant, up, None).await
}

/// Gives `changes` (stock given back: [`adjust_gate`]'s increases, or
/// what a release or expiry freed,
/// [`crate::gate::ChangeOutcome::given_back`]) to the gate after the
/// running mutation commits, unless the gate is rebuilt in between (the
/// rebuild read them from the record). `epoch` is the gate's when a script
/// just told it; otherwise it is read, here under the transaction's shared
/// gate lock, and a missing gate is rebuilt first, as for any other change.
/// Outside a run (no commit to wait for) at once.
pub async fn give_back_later(
    inv: &Inventory,
    tenant: &Tenant,
    changes: Vec<AvailChange>,
    epoch: Option<String>,
) -> Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let known = RUN.try_with(|r| r.later().epoch.clone()).ok().flatten();
    let epoch = match known.or(epoch) {
        Some(e) => e,
        None => inv.gate.epoch(tenant).await?.ok_or(GateError::NotReady)?,
    };
    let queued = RUN.try_with(|r| {
        let mut later = r.later();
        later.epoch = Some(epoch.clone());
        later.changes.extend(changes.iter().cloned());
    });
    if queued.is_err() {
        inv.gate.adjust_at(tenant, &changes, &epoch).await?;
    }
    Ok(())
}

/// Commits a mutation's transaction: the record now keeps every gate
/// change the mutation made, and the stock it gave back is applied.
pub async fn commit(mut tx: Transaction<'static, Postgres>) -> Result<()> {
    let run = RUN.try_with(|r| r.clone()).ok();
    if let Some(run) = &run {
        run.announce(&mut tx).await?;
    }
    tx.commit().await?;
    if let Some(run) = run {
        run.unkept.store(false, Ordering::Relaxed);
        // A task of its own: a caller going away now must not leave
        // recorded stock unpromised.
        let _ = tokio::spawn(run.give_back()).await;
    }
    Ok(())
}

/// Held while a run goes: dropped before the run ends (the caller went
/// away mid-run) after an unrecorded gate change, it drops the gate in a
/// task of its own.
struct Unkept(Option<Arc<Run>>);

impl Drop for Unkept {
    fn drop(&mut self) {
        let Some(run) = self.0.take().filter(|r| r.unkept()) else {
            return;
        };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                run.drop_gate_or_sweep("a gate change was abandoned unrecorded")
                    .await
            });
        }
    }
}

/// Each value once, sorted.
pub(crate) fn distinct<'a>(values: impl Iterator<Item = &'a String>) -> Vec<String> {
    let set: std::collections::BTreeSet<&String> = values.collect();
    set.into_iter().cloned().collect()
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Every inventory event type, as [`event_type`] names them.
pub const EVENT_TYPES: [&str; 14] = [
    "StockMoved",
    "StockReserved",
    "ReservationConfirmed",
    "ReservationReleased",
    "AllocationsConsumed",
    "SafetyStockSet",
    "ChannelRuleSet",
    "ReservationExtended",
    "LotExpired",
    "LotRestored",
    "NodeChanged",
    "TransferClosed",
    "BackorderDemandSet",
    "ExpectedInboundSet",
];

/// The event types a watcher asked for (empty: all), each a known one.
pub fn wanted_event_types(asked: &[String]) -> Result<std::collections::HashSet<&'static str>> {
    let mut v = Violations::new();
    let mut wanted = std::collections::HashSet::new();
    for (i, t) in asked.iter().enumerate() {
        match EVENT_TYPES.into_iter().find(|k| k == t) {
            Some(k) => {
                wanted.insert(k);
            }
            None => v.add(
                format!("event_types[{i}]"),
                format!(
                    "unknown event type {t:?}; known: {}",
                    EVENT_TYPES.join(", ")
                ),
            ),
        }
    }
    Ok(v.into_result(wanted)?)
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
        inventory_event::Kind::LotExpired(_) => "LotExpired",
        inventory_event::Kind::LotRestored(_) => "LotRestored",
        inventory_event::Kind::NodeChanged(_) => "NodeChanged",
        inventory_event::Kind::TransferClosed(_) => "TransferClosed",
        inventory_event::Kind::BackorderDemandSet(_) => "BackorderDemandSet",
        inventory_event::Kind::ExpectedInboundSet(_) => "ExpectedInboundSet",
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
    emit_many(tx, tenant, request_id, vec![(subject.to_owned(), kind)]).await
}

/// Appends inventory events (subject, kind) in the transaction, in one
/// statement however many.
pub async fn emit_many(
    tx: &mut PgConnection,
    tenant: &Tenant,
    request_id: &str,
    events: Vec<(String, inventory_event::Kind)>,
) -> Result<()> {
    let (subjects, kinds): (Vec<String>, Vec<_>) = events.into_iter().unzip();
    let events: Vec<NewEvent<'_>> = (subjects.iter().zip(kinds))
        .map(|(subject, kind)| NewEvent {
            tenant,
            event_type: event_type(&kind),
            subject,
            request_id,
            payload: InventoryEvent {
                meta: None,
                kind: Some(kind),
            }
            .encode_to_vec(),
        })
        .collect();
    outbox::append_many(tx, &events).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oms_proto::inventory::*;

    #[test]
    fn every_event_type_is_known_to_the_feed_filter() {
        use inventory_event::Kind;
        let kinds = [
            Kind::StockMoved(StockMoved::default()),
            Kind::StockReserved(StockReserved::default()),
            Kind::ReservationConfirmed(ReservationConfirmed::default()),
            Kind::ReservationReleased(ReservationReleased::default()),
            Kind::AllocationsConsumed(AllocationsConsumed::default()),
            Kind::SafetyStockSet(SafetyStockSet::default()),
            Kind::ChannelRuleSet(ChannelRuleSet::default()),
            Kind::ReservationExtended(ReservationExtended::default()),
            Kind::LotExpired(LotExpired::default()),
            Kind::LotRestored(LotRestored::default()),
            Kind::NodeChanged(NodeChanged::default()),
            Kind::TransferClosed(TransferClosed::default()),
            Kind::BackorderDemandSet(BackorderDemandSet::default()),
            Kind::ExpectedInboundSet(ExpectedInboundSet::default()),
        ];
        let named: Vec<&str> = kinds.iter().map(event_type).collect();
        assert_eq!(named, EVENT_TYPES);
        assert!(wanted_event_types(&["LotExpired".into()]).is_ok());
        assert!(wanted_event_types(&["lotexpired".into()]).is_err());
    }
}
