//! Stock snapshot imports (`ImportStockSnapshot`): an initial load from a
//! WMS or ERP, or its periodic count; every valid row is a cycle count,
//! invalid rows are reported and skipped.
//!
//! An import commits its rows a chunk at a time. Each transaction holds
//! the tenant's gate lock (shared) and its rows' lots until it commits, so
//! in one transaction a large import (up to 100,000 rows, minutes) would
//! hold off every gate rebuild of the tenant, and with it every
//! reservation until the rebuild, and every shipment of its lots. How far
//! it got is kept (`repo::imports`), so a repeat of the request goes on
//! from there and ends with the same answer.
use super::counts;
use super::movements::{Origin, apply};
use super::{Inventory, commit, distinct};
use crate::domain::snapshot;
use crate::error::{Error, Result};
use crate::repo::{self, lock};
use chrono::Utc;
use oms_kernel::{RequestId, Tenant, Violation, Violations};
use oms_proto::inventory::*;
use oms_runtime::idempotency::{self, IdempotencyError};
use oms_runtime::time::to_timestamp;
use prost_types::Timestamp;
use sqlx::PgConnection;
use std::collections::{BTreeSet, HashSet};

pub const MAX_SNAPSHOT_ROWS: usize = 100_000;

/// Rows applied per transaction: a rebuild or a shipment waits for one
/// chunk at most (a fraction of a second), not for the import. Rows
/// counted in runs (`counts`) take about 70 µs each in a release build,
/// rows one by one about a millisecond: a chunk takes up to `CHUNK_ROWS`
/// rows, of which up to `ONE_BY_ONE_ROWS` go one by one.
const CHUNK_ROWS: usize = 1000;
const ONE_BY_ONE_ROWS: usize = 200;

const METHOD: &str = "ImportStockSnapshot";

/// What an import's `request_id` is claimed with: the whole snapshot.
#[derive(Clone, PartialEq, prost::Message)]
struct SnapshotDigest {
    #[prost(message, optional, tag = "1")]
    header: Option<SnapshotHeader>,
    #[prost(message, repeated, tag = "2")]
    rows: Vec<SnapshotRow>,
}

/// An import to run: the snapshot, its key, and its rows in the order they
/// apply, each with why it is refused before it is tried, if it is.
struct Import<'a> {
    tenant: &'a Tenant,
    actor: &'a str,
    rid: RequestId,
    hash: Vec<u8>,
    digest: SnapshotDigest,
    order: Vec<usize>,
    refused: Vec<Option<Violation>>,
}

/// What one transaction of an import came to.
enum Step {
    /// The import's answer was stored already (a repeat).
    Answered(ImportStockSnapshotResponse),
    /// A chunk committed; more may follow.
    Chunk,
    /// Every row is done: the answer is to be stored.
    AllRows,
}

pub async fn import(
    inv: &Inventory,
    tenant: &Tenant,
    actor: &str,
    header: SnapshotHeader,
    rows: Vec<SnapshotRow>,
) -> Result<ImportStockSnapshotResponse> {
    let mut v = Violations::new();
    let rid = v.check("request_id", RequestId::parse(&header.request_id));
    // The source is part of every count's reason.
    v.at_most("header.source", &header.source, 200);
    // Every count's time.
    let counted = oms_runtime::time::check_happened(header.count_time.as_ref(), Utc::now());
    v.check("header.count_time", counted);
    let (Some(rid), true) = (rid, v.0.is_empty()) else {
        return Err(v.into());
    };
    let refused: Vec<_> = rows.iter().map(snapshot::check_row).collect();
    let repeated = snapshot::repeated(&rows, |i| refused[i].is_none());
    let refused = (refused.into_iter().enumerate())
        .map(|(i, bad)| {
            bad.or_else(|| {
                repeated.get(&i).map(|why| Violation {
                    field: "sku".into(),
                    description: why.clone(),
                })
            })
        })
        .collect();
    // Rows apply in the order of their lots (node, SKU, lot), the order
    // every change of several lots takes them in
    // (`repo::stock::lock_for_movements`), so an import never deadlocks
    // with a shipment or transfer moving the same lots.
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by_key(|&i| (&rows[i].node_id, &rows[i].sku, &rows[i].lot));
    let digest = SnapshotDigest {
        header: Some(header),
        rows,
    };
    let import = Import {
        tenant,
        actor,
        rid,
        hash: idempotency::request_hash(&digest),
        digest,
        order,
        refused,
    };
    loop {
        match inv.retrying(tenant, || import.chunk(inv)).await? {
            Step::Answered(resp) => return Ok(resp),
            Step::Chunk => {}
            Step::AllRows => break,
        }
    }
    inv.retrying(tenant, || import.answer(inv)).await
}

impl Import<'_> {
    /// Applies the next chunk of rows in a transaction of its own.
    async fn chunk(&self, inv: &Inventory) -> Result<Step> {
        let mut tx = inv.pool.begin().await?;
        lock::shared(&mut tx, self.tenant).await?;
        let progress = self.progress(&mut tx).await?;
        // Looked up after the progress is locked: a copy of this import
        // that stored the answer (and deleted the progress) meanwhile has
        // committed by now, and no chunk is applied twice.
        let answered = idempotency::stored(&mut tx, self.tenant, &self.rid, METHOD, &self.hash);
        if let Some(resp) = answered.await? {
            return Ok(Step::Answered(resp));
        }
        let Some(mut progress) = progress else {
            return Err(interrupted(&self.rid));
        };
        let done = progress.rows_done;
        if done == self.order.len() {
            return Ok(Step::AllRows);
        }
        let end = (done + CHUNK_ROWS).min(self.order.len());
        let (catalog, batched) = self.batched(&mut tx, &self.order[done..end]).await?;
        let mut one_by_one = 0;
        let end = (self.order[done..end].iter())
            .position(|i| {
                one_by_one += usize::from(!batched.contains(i));
                one_by_one > ONE_BY_ONE_ROWS
            })
            .map_or(end, |n| done + n);
        let rows = &self.order[done..end];
        self.lock_lots_skus(&mut tx, rows).await?;
        let counted = self.counted(&progress);
        let outcomes = self.apply_rows(inv, &mut tx, rows, counted, &catalog, &batched);
        let mut refused = vec![];
        for (&i, bad) in rows.iter().zip(outcomes.await?) {
            match bad {
                None => progress.rows_applied += 1,
                Some(bad) => refused.push(row_error(i, bad)),
            }
        }
        progress.rows_done = end;
        repo::imports::save(&mut tx, self.tenant, &self.rid, &progress, &refused).await?;
        commit(tx).await?;
        Ok(Step::Chunk)
    }

    /// Takes the locks of the SKUs of `rows` with lots at their nodes, all
    /// before any lot's, as a change of several lots takes them
    /// (`repo::stock::lock_lots`): the rows lock their lots a run or a row
    /// at a time.
    async fn lock_lots_skus(&self, tx: &mut PgConnection, rows: &[usize]) -> Result<()> {
        let mut tracked: Vec<(&str, &str)> = (rows.iter())
            .filter(|&&i| self.refused[i].is_none())
            .map(|&i| &self.digest.rows[i])
            .filter(|r| !r.lot.is_empty())
            .map(|r| (r.node_id.as_str(), r.sku.as_str()))
            .collect();
        tracked.dedup();
        Ok(lock::stock_at(tx, self.tenant, &tracked).await?)
    }

    /// The one moment of every count: the snapshot's, else when the import
    /// began (kept with its progress, so a resumed import keeps it).
    fn counted(&self, progress: &repo::imports::Progress) -> Timestamp {
        let header = self.digest.header.as_ref();
        (header.and_then(|h| h.count_time)).unwrap_or_else(|| to_timestamp(progress.start_time))
    }

    /// Applies `rows` in their order (that of their lots): runs of rows
    /// in `batched` in one go, the others one by one. For each, why it was
    /// refused, if it was.
    async fn apply_rows(
        &self,
        inv: &Inventory,
        tx: &mut PgConnection,
        rows: &[usize],
        counted: Timestamp,
        catalog: &counts::Catalog,
        batched: &HashSet<usize>,
    ) -> Result<Vec<Option<Violation>>> {
        let mut outcomes = Vec::with_capacity(rows.len());
        for run in rows.chunk_by(|a, b| batched.contains(a) == batched.contains(b)) {
            if batched.contains(&run[0]) {
                outcomes.extend(self.counts(inv, tx, catalog, run, counted).await?);
                continue;
            }
            for &i in run {
                outcomes.push(match &self.refused[i] {
                    Some(bad) => Some(bad.clone()),
                    None => self.apply_row(inv, tx, i, counted).await?,
                });
            }
        }
        Ok(outcomes)
    }

    /// Which of `rows` are counted in runs (`counts`), with the nodes and
    /// items they need: a row not refused already, at a node the tenant
    /// may use, of an item that tracks no serial numbers. Their items are
    /// locked as their movements lock them.
    async fn batched(
        &self,
        tx: &mut PgConnection,
        rows: &[usize],
    ) -> Result<(counts::Catalog, HashSet<usize>)> {
        let row = |i: usize| &self.digest.rows[i];
        let fit: Vec<usize> = (rows.iter().copied())
            .filter(|&i| self.refused[i].is_none())
            .collect();
        let nodes = distinct(fit.iter().map(|&i| &row(i).node_id));
        let nodes = repo::nodes::get_visible_many(&mut *tx, self.tenant, &nodes).await?;
        let skus = distinct(fit.iter().map(|&i| &row(i).sku));
        let items = repo::items::existing_shared(tx, self.tenant, &skus).await?;
        let batched = (fit.into_iter())
            .filter(|&i| nodes.contains_key(&row(i).node_id))
            .filter(|&i| items.get(&row(i).sku).is_some_and(|t| !t.serial_tracked))
            .collect();
        Ok((counts::Catalog { nodes, items }, batched))
    }

    /// Records a run of rows as counts at once (`counts::record`): for
    /// each, why it was refused, if it was.
    async fn counts(
        &self,
        inv: &Inventory,
        tx: &mut PgConnection,
        catalog: &counts::Catalog,
        run: &[usize],
        counted: Timestamp,
    ) -> Result<Vec<Option<Violation>>> {
        let counts = run.iter().map(|&i| self.count(i, counted)).collect();
        let rid = self.rid.as_str();
        let outcomes = counts::record(inv, tx, self.tenant, catalog, counts, self.actor, rid);
        Ok((outcomes.await?.into_iter())
            .map(|o| o.err().map(|e| refusal(&e)))
            .collect())
    }

    /// Row `i` as a cycle count made at `counted`.
    fn count(&self, i: usize, counted: Timestamp) -> StockMovement {
        let row = &self.digest.rows[i];
        let header = self.digest.header.as_ref();
        StockMovement {
            kind: MovementKind::CycleCount as i32,
            node_id: row.node_id.clone(),
            sku: row.sku.clone(),
            lot: row.lot.clone(),
            expiry_date: row.expiry_date.clone(),
            counted_quantity: Some(row.on_hand),
            serial_numbers: row.serial_numbers.clone(),
            reason: format!(
                "snapshot import from {}",
                header.map_or("", |h| h.source.as_str())
            ),
            occur_time: Some(counted),
            // Which import: its counts are listed by it.
            reference: format!("snapshotImports/{}", self.rid.as_str()),
            ..Default::default()
        }
    }

    /// Applies row `i` as a cycle count: `Some(why)` when it is refused,
    /// having changed nothing.
    async fn apply_row(
        &self,
        inv: &Inventory,
        tx: &mut PgConnection,
        i: usize,
        counted: Timestamp,
    ) -> Result<Option<Violation>> {
        let m = self.count(i, counted);
        // A savepoint per row: a refused row leaves the others applied.
        let mut sp = sqlx::Connection::begin(&mut *tx).await?;
        let rid = self.rid.as_str();
        match apply(
            inv,
            &mut sp,
            self.tenant,
            m,
            self.actor,
            rid,
            Origin::Request,
        )
        .await
        {
            Ok(_) => {
                sp.commit().await?;
                Ok(None)
            }
            Err(e @ (Error::Gate(_) | Error::Db(_))) => Err(e),
            Err(e) => {
                sp.rollback().await?;
                Ok(Some(refusal(&e)))
            }
        }
    }

    /// Stores the answer once every row is done: with what reservations
    /// hold beyond the stock where rows counted.
    async fn answer(&self, inv: &Inventory) -> Result<ImportStockSnapshotResponse> {
        let (mut tx, rid) = match inv
            .begin(self.tenant, self.rid.as_str(), METHOD, &self.digest)
            .await?
        {
            super::Begin::Replay(r) => return Ok(r),
            super::Begin::Tx(tx, rid) => (tx, rid),
        };
        let Some(progress) = self.progress(&mut tx).await? else {
            return Err(interrupted(&rid));
        };
        if progress.rows_done < self.order.len() {
            return Err(interrupted(&rid));
        }
        let mut resp = ImportStockSnapshotResponse {
            rows_applied: progress.rows_applied,
            errors: repo::imports::refused(&mut tx, self.tenant, &rid).await?,
            ..Default::default()
        };
        // Where rows counted: a count restates the stock, so it reports
        // reservations it finds short whether or not it took units (taken
        // after the last row: another lot's may make up for one).
        let refused: BTreeSet<i64> = resp.errors.iter().map(|e| e.row_index).collect();
        let counted: BTreeSet<(String, String)> = (self.digest.rows.iter().enumerate())
            .filter(|(i, _)| !refused.contains(&(*i as i64)))
            .map(|(_, r)| (r.node_id.clone(), r.sku.clone()))
            .collect();
        resp.shortfalls = shortfalls(&mut tx, self.tenant, &counted).await?;
        repo::imports::forget(&mut tx, self.tenant, &rid).await?;
        inv.finish(tx, self.tenant, &rid, resp).await
    }

    /// How far the import got, locked until `tx` ends; `None` when a copy
    /// of this import finished it just now.
    async fn progress(&self, tx: &mut PgConnection) -> Result<Option<repo::imports::Progress>> {
        let locked = repo::imports::lock(tx, self.tenant, &self.rid, &self.hash).await?;
        let Some(mut p) = locked else {
            return Ok(None);
        };
        if p.hash != self.hash {
            // Another import under way with this request_id.
            let method = METHOD.to_owned();
            return Err(IdempotencyError::Reused { method }.into());
        }
        p.rows_done = p.rows_done.min(self.order.len());
        Ok(Some(p))
    }
}

/// The progress of an import went away before its answer was stored: only
/// when deleted as abandoned meanwhile. Sent again, it starts anew.
fn interrupted(rid: &RequestId) -> Error {
    Error::Unavailable(format!(
        "the import {} was interrupted; send it again",
        rid.as_str()
    ))
}

fn row_error(i: usize, bad: Violation) -> RowError {
    RowError {
        row_index: i as i64,
        field: bad.field,
        description: bad.description,
    }
}

/// A row's refusal by `apply`, named by the row's own fields.
fn refusal(e: &Error) -> Violation {
    let (field, description) = match e {
        e @ Error::NotFound { kind: "node", .. } => ("node_id".into(), e.to_string()),
        e @ Error::NotFound { .. } => ("sku".into(), e.to_string()),
        Error::Invalid(v) => {
            v.0.first()
                .map(|x| (x.field.clone(), x.description.clone()))
                .unwrap_or_default()
        }
        Error::Precondition {
            reason, message, ..
        } if reason.starts_with("SERIAL_") => ("serial_numbers".into(), message.clone()),
        other => (String::new(), other.to_string()),
    };
    Violation { field, description }
}

/// What reservations hold beyond the stock at each of `at` (node, SKU).
async fn shortfalls(
    tx: &mut PgConnection,
    tenant: &Tenant,
    at: &BTreeSet<(String, String)>,
) -> Result<Vec<StockShortfall>> {
    if at.is_empty() {
        return Ok(vec![]);
    }
    let skus: BTreeSet<&String> = at.iter().map(|(_, sku)| sku).collect();
    let skus: Vec<String> = skus.into_iter().cloned().collect();
    let now = super::availability::stock_and_holds(tx, tenant, &skus, None).await?;
    Ok(at
        .iter()
        .map(|(node, sku)| StockShortfall {
            node_id: node.clone(),
            sku: sku.clone(),
            held_beyond_stock: now.held_beyond_stock(node, sku),
        })
        .filter(|s| s.held_beyond_stock > 0)
        .collect())
}
