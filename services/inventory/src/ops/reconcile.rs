//! Rebuilding the Redis gate from the Postgres record: automatically when
//! Redis has lost a tenant's data or a give-back never reached it, and on
//! demand (Reconcile) with a report of every difference found.
use super::Inventory;
use crate::domain::availability::Figures;
use crate::error::Result;
use crate::gate::{Gate, demand_field, rebuild::LiveRecord, split_hold};
use crate::repo::{self, lock};
use oms_kernel::Tenant;
use oms_proto::inventory::{Drift, HeldTotalDrift, ReconcileRequest, ReconcileResponse};
use oms_runtime::idempotency::{self, Claim};
use sqlx::{PgConnection, PgPool};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// Most drifts of each kind listed by one Reconcile (all are counted).
const MAX_DRIFTS: usize = 1000;

/// Logs at `level` what a rebuild or a comparison (`found`) found and read,
/// and how long its parts took (`took`): the tenant's changes waited for
/// all of it. `field` is one more field, by its variable's name.
macro_rules! said {
    ($level:ident, $tenant:expr, $found:expr, $took:expr, $msg:literal, $field:ident) => {
        tracing::$level!(
            tenant = %$tenant,
            $field,
            drifts = $found.drift_count,
            held_total_drifts = $found.held_total_drift_count,
            reservation_drifts = $found.reservation_drift_count,
            skus = $found.skus_checked,
            reservations = $found.reservations_checked,
            record_ms = $took.record.as_millis() as u64,
            compare_ms = $took.compare.as_millis() as u64,
            install_ms = $took.install.as_millis() as u64,
            $msg
        )
    };
}

/// Rebuilds the gate unless another caller already has; `trigger` says
/// why it went missing (a metric attribute).
pub async fn ensure_ready(inv: &Inventory, tenant: &Tenant, trigger: &'static str) -> Result<()> {
    ensure_ready_with(&inv.pool, &inv.gate, tenant, trigger).await
}

pub async fn ensure_ready_with(
    pool: &PgPool,
    gate: &Gate,
    tenant: &Tenant,
    trigger: &'static str,
) -> Result<()> {
    let mut tx = pool.begin().await?;
    lock::exclusive(&mut tx, tenant).await?;
    if !gate.is_ready(tenant).await? {
        let (found, took) = rebuild(&mut tx, gate, tenant, Some(trigger)).await?;
        said!(
            warn,
            tenant,
            found,
            took,
            "reservation gate rebuilt from the record",
            trigger
        );
    }
    tx.commit().await?;
    Ok(())
}

/// Drops the tenant's ready marker; the next gate change rebuilds.
pub async fn invalidate(inv: &Inventory, tenant: &Tenant) -> Result<()> {
    inv.gate.invalidate(tenant).await?;
    Ok(())
}

/// A give-back whose row is this old never arrived: its replica stopped
/// between the commit and the gate, or could reach neither Redis nor
/// Postgres since. Far above the milliseconds one takes.
const GIVE_BACK_LOST_AFTER: Duration = Duration::from_secs(60);

/// Drops the gate of every tenant with a give-back that never arrived, so
/// its next change rebuilds the gate from the record (which has the
/// stock), then deletes those rows. Run by the sweep. Dropping a gate
/// whose give-back is only slow is harmless: that give-back then finds a
/// new epoch and skips itself.
pub async fn recover_give_backs(inv: &Inventory) {
    let lost = match repo::give_backs::lost(&inv.pool, GIVE_BACK_LOST_AFTER).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "the sweep cannot read give-backs on their way");
            return;
        }
    };
    for (tenant, ids) in lost {
        let Ok(t) = Tenant::parse(&tenant) else {
            continue;
        };
        tracing::warn!(tenant = %t, give_backs = ids.len(), "stock given back never reached the gate; the gate is rebuilt from the record");
        if let Err(e) = invalidate(inv, &t).await {
            tracing::warn!(error = %e, tenant = %t, "dropping the gate failed; retried next sweep");
            continue;
        }
        if let Err(e) = repo::give_backs::forget(&inv.pool, &t, &ids).await {
            tracing::warn!(error = %e, "lost give-backs were not deleted; retried next sweep");
        }
    }
}

/// Rebuilds the gates found to have lost changes this replica made
/// ([`Gate::find_lost_writes`]): run by the sweep, so that a replica that
/// makes no more changes of a tenant still finds the loss within a sweep.
pub async fn recover_lost_writes(inv: &Inventory) {
    for found in inv.gate.find_lost_writes().await {
        let t = match found {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "the sweep cannot check that Redis kept the gate's changes");
                continue;
            }
        };
        if let Err(e) = ensure_ready(inv, &t, "lost_writes").await {
            tracing::warn!(error = %e, tenant = %t, "a gate was not rebuilt; its next change rebuilds it");
        }
    }
}

pub async fn reconcile(
    inv: &Inventory,
    tenant: &Tenant,
    req: ReconcileRequest,
) -> Result<ReconcileResponse> {
    let rid = oms_kernel::RequestId::parse(&req.request_id)
        .map_err(|e| oms_kernel::Violations::one("request_id", e))?;
    let mut tx = inv.pool.begin().await?;
    lock::exclusive(&mut tx, tenant).await?;
    // A repeat answers what the first run found: running again would
    // report no drift, as the first run repaired it.
    if let Claim::Replay(r) = idempotency::claim(&mut tx, tenant, &rid, "Reconcile", &req).await? {
        return Ok(r);
    }
    let trigger = (!req.dry_run).then_some("reconcile");
    let (found, took) = rebuild(&mut tx, &inv.gate, tenant, trigger).await?;
    let drifted = found.drift_count > 0
        || found.held_total_drift_count > 0
        || found.reservation_drift_count > 0;
    let dry_run = req.dry_run;
    if drifted {
        said!(warn, tenant, found, took, "gate drift found", dry_run);
    } else {
        said!(
            info,
            tenant,
            found,
            took,
            "gate reconciled: no drift",
            dry_run
        );
    }
    inv.finish(tx, tenant, &rid, found).await
}

/// Computes the gate from the record (under the exclusive lock), compares
/// it with Redis and the held totals with the holds and, unless a dry
/// run, installs the gate and rewrites the totals; answers what it found.
/// `trigger` names why the gate is installed (a metric attribute); `None`
/// is a dry run, which only compares. Also answers how long each part
/// took, which the tenant's changes waited for.
async fn rebuild(
    tx: &mut PgConnection,
    gate: &Gate,
    tenant: &Tenant,
    trigger: Option<&'static str>,
) -> Result<(ReconcileResponse, Took)> {
    let dry_run = trigger.is_none();
    let start = Instant::now();
    let mut f = Figures::default();
    f.add_stock(repo::stock::on_hand(&mut *tx, tenant, &[], None).await?);
    // One read of the live reservations serves both the held figures and
    // the gate's records (it scans the tenant's reservations). The totals
    // are checked against the holds here, and rewritten from them.
    let live = repo::reservations::live(&mut *tx, tenant).await?;
    let exact = held_by_sku_and_node(&live);
    let mut totals = repo::reservations::held(&mut *tx, tenant, &[], None).await?;
    totals.sort();
    let (held_total_drifts, held_total_drift_count) =
        capped(compare_totals(&totals, &exact).into_iter(), |d| d);
    if !dry_run {
        repo::reservations::reset_totals(&mut *tx, tenant, &exact).await?;
    }
    for (sku, node, q) in exact {
        f.held.insert((sku, node), q);
    }
    f.safety = repo::rules::safety(&mut *tx, tenant, &[]).await?;
    f.enabled = repo::nodes::enabled_ids(&mut *tx, tenant)
        .await?
        .into_iter()
        .collect();
    let skus: BTreeSet<String> = f
        .on_hand
        .keys()
        .map(|(_, s)| s.clone())
        .chain(f.held.keys().map(|(s, _)| s.clone()))
        .collect();
    let mut expected: BTreeMap<String, BTreeMap<String, i64>> =
        skus.iter().map(|s| (s.clone(), f.gate_fields(s))).collect();
    for (sku, source, channel, units) in repo::backorders::all_by_source(&mut *tx, tenant).await? {
        let fields = expected.entry(sku).or_default();
        fields.insert(demand_field(&source, &channel), units);
    }
    let sku_list: Vec<String> = expected.keys().cloned().collect();
    let read = Instant::now();
    let current = gate.read(tenant, &sku_list).await?;
    let (drifts, drift_count) = capped(compare(&expected, &current), drift);
    let scheduled = gate.schedule(tenant).await?;
    let (reservation_drifts, reservation_drift_count) = capped(
        (gate.reservation_drifts(tenant, &live, &scheduled).await?).into_iter(),
        |d| d,
    );
    let compared = Instant::now();
    if let Some(trigger) = trigger {
        gate.install(tenant, &expected, &live, &scheduled, trigger)
            .await?;
        // Every give-back on its way is in what was just installed.
        repo::give_backs::counted(&mut *tx, tenant).await?;
    }
    let took = Took {
        record: read - start,
        compare: compared - read,
        install: compared.elapsed(),
    };
    gate.rebuilt_in(tenant, trigger.unwrap_or("dry_run"), start.elapsed());
    let found = ReconcileResponse {
        keys_rebuilt: if dry_run { 0 } else { expected.len() as i64 },
        drifts,
        skus_checked: expected.len() as i64,
        reservations_checked: live.len() as i64,
        drift_count,
        held_total_drifts,
        held_total_drift_count,
        reservation_drifts,
        reservation_drift_count,
    };
    Ok((found, took))
}

/// How long the parts of a rebuild took: reading the record and computing
/// the gate from it, reading Redis's gate and comparing, installing.
struct Took {
    record: Duration,
    compare: Duration,
    install: Duration,
}

/// The first [`MAX_DRIFTS`] of `all`, as `listed`, and how many there
/// were.
fn capped<T, D>(all: impl Iterator<Item = T>, listed: impl Fn(T) -> D) -> (Vec<D>, i64) {
    let mut out = Vec::new();
    let mut count = 0;
    for d in all {
        if out.len() < MAX_DRIFTS {
            out.push(listed(d));
        }
        count += 1;
    }
    (out, count)
}

/// Where the held totals (`totals`) differ from what the holds add up to
/// (`exact`); both as `repo::reservations::held` reads them: sorted by SKU
/// and node, zeros left out.
fn compare_totals(
    totals: &[(String, String, i64)],
    exact: &[(String, String, i64)],
) -> Vec<HeldTotalDrift> {
    let key = |(sku, node, _): &(String, String, i64)| (sku.clone(), node.clone());
    let said: BTreeMap<_, i64> = totals.iter().map(|t| (key(t), t.2)).collect();
    let held: BTreeMap<_, i64> = exact.iter().map(|t| (key(t), t.2)).collect();
    let keys: BTreeSet<&(String, String)> = said.keys().chain(held.keys()).collect();
    keys.into_iter()
        .filter_map(|k| {
            let (total, holds) = (
                said.get(k).copied().unwrap_or(0),
                held.get(k).copied().unwrap_or(0),
            );
            (total != holds).then(|| HeldTotalDrift {
                sku: k.0.clone(),
                node_id: k.1.clone(),
                total,
                holds,
            })
        })
        .collect()
}

/// Units held per (sku, node) by `live`, in key order, zeros left out (as
/// `repo::reservations::held` reads the totals).
fn held_by_sku_and_node(live: &[LiveRecord]) -> Vec<(String, String, i64)> {
    let mut sum: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    for (k, units) in live.iter().flat_map(|l| &l.holds) {
        *sum.entry(split_hold(k)).or_default() += units;
    }
    sum.into_iter()
        .filter(|(_, units)| *units != 0)
        .map(|((sku, node), units)| (sku.to_owned(), node.to_owned(), units))
        .collect()
}

/// Where the gate differs from the record, lazily (after a loss, every
/// figure does): (sku, field, the record's figure, the gate's).
fn compare<'a>(
    expected: &'a BTreeMap<String, BTreeMap<String, i64>>,
    current: &'a HashMap<String, HashMap<String, i64>>,
) -> impl Iterator<Item = (&'a str, &'a str, Option<i64>, Option<i64>)> {
    expected.iter().flat_map(move |(sku, fields)| {
        let cur = current.get(sku);
        let names: BTreeSet<&String> = fields
            .keys()
            .chain(cur.into_iter().flat_map(|c| c.keys()))
            .collect();
        names.into_iter().filter_map(move |name| {
            let want = fields.get(name).copied();
            let have = cur.and_then(|c| c.get(name)).copied();
            // A missing zero is no drift.
            (want.unwrap_or(0) != have.unwrap_or(0)).then_some((
                sku.as_str(),
                name.as_str(),
                want,
                have,
            ))
        })
    })
}

fn drift((sku, field, want, have): (&str, &str, Option<i64>, Option<i64>)) -> Drift {
    Drift {
        sku: sku.to_owned(),
        node_id: field.strip_prefix("n:").unwrap_or("").to_owned(),
        gate_value: have.unwrap_or(-1),
        record_value: want.unwrap_or(0),
        gate_missing: have.is_none(),
        field: field.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_drift_is_counted_and_the_first_thousand_listed() {
        let (listed, count) = capped(0..2500, |i| i * 2);
        assert_eq!((listed.len(), count), (MAX_DRIFTS, 2500));
        assert_eq!((listed[0], listed[MAX_DRIFTS - 1]), (0, 1998));
    }

    #[test]
    fn held_totals_are_compared_with_the_holds_both_ways() {
        let row = |sku: &str, node: &str, q| (sku.to_owned(), node.to_owned(), q);
        let totals = [row("A", "", 5), row("A", "DC1", 2), row("B", "DC1", 1)];
        let exact = [row("A", "", 5), row("A", "DC1", 3), row("C", "", 4)];
        let d: Vec<_> = compare_totals(&totals, &exact)
            .into_iter()
            .map(|d| (d.sku, d.node_id, d.total, d.holds))
            .collect();
        let want =
            |sku: &str, node: &str, total, holds| (sku.to_owned(), node.to_owned(), total, holds);
        assert_eq!(
            d,
            [
                want("A", "DC1", 2, 3),
                want("B", "DC1", 1, 0),
                want("C", "", 0, 4)
            ]
        );
    }
}
