//! The sweep: expires due reservations, takes lots past their date out of
//! availability, and deletes what is kept no longer.
use super::change::expire_many;
use crate::error::Error;
use crate::ops::Inventory;
use crate::repo;
use chrono::{DateTime, Utc};
use oms_kernel::Tenant;
use std::collections::BTreeMap;

/// Expires due reservations every `interval` until `shutdown`, takes lots
/// past their expiry date out of availability, rebuilds gates that lost a
/// give-back ([`crate::ops::reconcile::recover_give_backs`]) or changes
/// Redis had answered ([`crate::ops::reconcile::recover_lost_writes`]),
/// and deletes
/// reservations finished longer than `retention` ago and snapshot imports
/// nobody went on with for `imports_retention` (the idempotency retention:
/// after it, a repeat of the request is a new request anyway).
pub fn start_sweeper(
    inv: crate::ops::Shared,
    interval: std::time::Duration,
    retention: Option<std::time::Duration>,
    imports_retention: Option<std::time::Duration>,
) {
    let shutdown = inv.shutdown.clone();
    oms_runtime::periodic::every(interval, shutdown, move || {
        let inv = inv.clone();
        async move {
            expire_due(&inv).await;
            // What is still due now waits for the next sweep: alerted on
            // when it grows (expiries failing keep carts' units from sale).
            match repo::reservations::oldest_due(&inv.pool).await {
                Ok(lags) => inv.metrics.expiry_lag(&lags),
                Err(e) => tracing::warn!(error = %e, "the expiry sweep's lag is unknown"),
            }
            crate::ops::lot_expiry::expire_due_lots(&inv).await;
            crate::ops::reconcile::recover_give_backs(&inv).await;
            crate::ops::reconcile::recover_lost_writes(&inv).await;
            // Every sweep: with nothing old enough it is one probe of an
            // index, and a backlog (a first start with years of
            // reservations) goes a batch per sweep.
            if let Some(keep) = retention {
                purge_old("finished reservations", keep, |cutoff, n| {
                    repo::reservations::purge_finished(&inv.pool, cutoff, n)
                })
                .await;
            }
            if let Some(keep) = imports_retention {
                purge_old("abandoned snapshot imports", keep, |cutoff, n| {
                    repo::imports::purge_abandoned(&inv.pool, cutoff, n)
                })
                .await;
            }
        }
    });
}

/// Reservations deleted per sweep at most.
const PURGE_BATCH: i64 = 1000;

/// Due reservations read at a time.
const DUE_BATCH: i64 = 1000;
/// Reservations of one tenant expired in one transaction and one gate
/// script ([`expire_many`]) at most: one transaction each returned about
/// 1,300 carts a second (release build, `oms-bench expiry`), a flash
/// sale's 100,000 abandoned carts in over a minute.
const EXPIRE_BATCH: usize = 250;
/// Batches expired at once: at most 4, and half the pool's connections (5
/// of the default 10), so an expiry wave leaves the other half to callers
/// and the reservation writer.
fn expiring_at_once(pool: &sqlx::PgPool) -> usize {
    (pool.options().get_max_connections() as usize / 2).clamp(1, 4)
}

/// Expires every reservation due, a read at a time, until none is left or
/// a read expires none (the gate or the record failing: the next sweep
/// tries again).
async fn expire_due(inv: &Inventory) {
    use futures::StreamExt as _;
    while !inv.shutdown.is_cancelled() {
        let mut due = match repo::reservations::due(&inv.pool, DUE_BATCH).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "expiry sweep cannot read due reservations");
                return;
            }
        };
        let read = due.len();
        // Each replica in an order of its own, so that replicas sweeping at
        // once rarely lock the same batch (each skips the other's rows).
        due.rotate_left(rand::random_range(0..read.max(1)));
        let mut by_tenant: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (tenant, id) in due {
            by_tenant.entry(tenant).or_default().push(id);
        }
        // Owned: the sweep's future must not borrow with lifetimes the
        // compiler cannot prove `Send` for.
        let batches: Vec<(String, Vec<String>)> = by_tenant
            .into_iter()
            .flat_map(|(tenant, ids)| {
                ids.chunks(EXPIRE_BATCH)
                    .map(|ids| (tenant.clone(), ids.to_vec()))
                    .collect::<Vec<_>>()
            })
            .collect();
        // How many each batch expired, or why it failed.
        let outcomes: Vec<(usize, Option<(String, Error)>)> = futures::stream::iter(batches)
            .map(|(tenant, ids)| async move {
                let Ok(t) = Tenant::parse(&tenant) else {
                    return (0, None);
                };
                let (expired, failed) = expire_batch(inv, &t, &ids).await;
                inv.metrics.expired(&tenant, expired);
                (expired, failed.map(|e| (tenant, e)))
            })
            .buffer_unordered(expiring_at_once(&inv.pool))
            .collect()
            .await;
        let expired: usize = outcomes.iter().map(|(n, _)| n).sum();
        let failed: Vec<_> = outcomes.into_iter().filter_map(|(_, f)| f).collect();
        if let Some((tenant, e)) = failed.first() {
            tracing::warn!(error = %e, tenant = %tenant, failed = failed.len(), "expiries failed; retried next sweep");
        }
        // Another read only after a full one that went well: rows that
        // stay due (failing, or not yet due by this replica's clock) wait
        // for the next sweep.
        if read < DUE_BATCH as usize || !failed.is_empty() || expired == 0 {
            return;
        }
    }
}

/// Expires a batch ([`expire_many`]); should it fail for what may be one
/// reservation's fault, each of its reservations on its own, so that one
/// that cannot expire (its row refused by the database, say) keeps none of
/// the others from expiring. How many expired, and the first failure.
async fn expire_batch(inv: &Inventory, tenant: &Tenant, ids: &[String]) -> (usize, Option<Error>) {
    let e = match expire_many(inv, tenant, ids).await {
        Ok(n) => return (n, None),
        Err(e) if ids.len() == 1 || !one_reservations_fault(&e) => return (0, Some(e)),
        Err(e) => e,
    };
    tracing::warn!(error = %e, tenant = %tenant, reservations = ids.len(), "an expiry batch failed; its reservations expire one by one");
    let mut expired = 0;
    let mut failed = None;
    for id in ids {
        match expire_many(inv, tenant, std::slice::from_ref(id)).await {
            Ok(n) => expired += n,
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    (expired, failed)
}

/// Whether a failed batch may owe it to one of its reservations: the
/// database refused a row, or a record does not decode. A failing Redis
/// or Postgres connection is not: each of the batch's reservations would
/// meet it again, one after the other (250 timeouts in a row), so the
/// batch waits for the next sweep instead.
fn one_reservations_fault(e: &Error) -> bool {
    matches!(
        e,
        Error::Db(sqlx::Error::Database(_) | sqlx::Error::Decode(_))
    )
}

/// Deletes one batch of `what` older than `keep` with `purge` (given the
/// cutoff and the batch size); a failure is retried at the next sweep.
async fn purge_old<F, Fut>(what: &str, keep: std::time::Duration, purge: F)
where
    F: FnOnce(DateTime<Utc>, i64) -> Fut,
    Fut: std::future::Future<Output = sqlx::Result<u64>>,
{
    let Some(cutoff) = oms_runtime::retention::before(keep) else {
        return;
    };
    match purge(cutoff, PURGE_BATCH).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(deleted = n, before = %cutoff, "{what} deleted"),
        Err(e) => tracing::warn!(error = %e, "deleting {what} failed; retried next sweep"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::GateError;

    #[test]
    fn only_a_refused_or_unreadable_row_sends_a_batch_one_by_one() {
        let decode = sqlx::Error::Decode("not a reservation".into());
        assert!(one_reservations_fault(&Error::Db(decode)));
        for infra in [
            Error::Db(sqlx::Error::PoolTimedOut),
            Error::Gate(GateError::NotReady),
            Error::Gate(GateError::NotReplicated {
                acked: 0,
                wanted: 1,
            }),
            Error::Unavailable("redis".into()),
        ] {
            assert!(!one_reservations_fault(&infra), "{infra:?}");
        }
    }
}
