//! Replicas that die without a word. A replica killed between a gate
//! change and its commit (out of memory, its machine lost) leaves Redis
//! changed and the record not, and drops no gate: units held for a
//! reservation the record never got, or gone from the gate for a shipment
//! it never recorded, are promised to no one. So each replica says it is
//! alive every sweep interval; one silent for [`lapse`] is dead, and the
//! first replica to see it drops every tenant's gate and rebuilds it from
//! the record. A rebuild takes the tenant's gate lock exclusively, so it
//! waits for the changes live replicas are making: taking a slow replica
//! for dead costs rebuilds, never a wrong gate.
use super::{Shared, reconcile};
use crate::error::Result;
use crate::repo;
use oms_kernel::Tenant;
use sqlx::PgPool;
use std::time::Duration;
use uuid::Uuid;

/// How long a replica may stay silent: many sweeps (a busy runtime delays
/// some), and never under two seconds.
fn lapse(interval: Duration) -> Duration {
    (interval * 20).max(Duration::from_secs(2))
}

/// Registers a starting replica; its id.
pub async fn join(pool: &PgPool) -> Result<Uuid> {
    let id = Uuid::now_v7();
    repo::replicas::seen(pool, id).await?;
    Ok(id)
}

/// A replica stopping cleanly: every change it made is recorded.
pub async fn leave(pool: &PgPool, id: Uuid) {
    if let Err(e) = repo::replicas::forget(pool, &[id]).await {
        tracing::warn!(error = %e, "this replica's row was not deleted; the others will rebuild the gates once it lapses");
    }
}

/// Says `id` is alive every `interval`, and looks for dead replicas.
pub fn start(inv: Shared, id: Uuid, interval: Duration) {
    let shutdown = inv.shutdown.clone();
    oms_runtime::periodic::every(interval, shutdown, move || {
        let inv = inv.clone();
        async move {
            if let Err(e) = repo::replicas::seen(&inv.pool, id).await {
                tracing::warn!(error = %e, "this replica could not say it is alive");
                return;
            }
            if let Err(e) = after_the_dead(&inv, id, lapse(interval)).await {
                tracing::warn!(error = %e, "gates a dead replica may have left were not all dropped; retried next sweep");
            }
        }
    });
}

/// Drops every tenant's gate if a replica other than `me` lapsed, rebuilds
/// them (a tenant whose rebuild fails here is rebuilt by its next change),
/// then forgets the dead. Their rows stay locked meanwhile, so the other
/// replicas, noticing at the same moment, do not drop the gates again;
/// should this one fail or die first, another does it all again.
async fn after_the_dead(inv: &Shared, me: Uuid, lapse: Duration) -> Result<()> {
    let mut tx = inv.pool.begin().await?;
    let dead = repo::replicas::lapsed(&mut *tx, me, lapse).await?;
    if dead.is_empty() {
        return Ok(());
    }
    let tenants: Vec<Tenant> = repo::items::tenants(&inv.pool)
        .await?
        .iter()
        .filter_map(|t| Tenant::parse(t).ok())
        .collect();
    tracing::warn!(replicas = ?dead, tenants = tenants.len(), "replicas stopped without a word; every gate is rebuilt from the record");
    for t in &tenants {
        reconcile::invalidate(inv, t).await?;
    }
    for t in &tenants {
        if let Err(e) = reconcile::ensure_ready(inv, t, "replica_lost").await {
            tracing::warn!(error = %e, tenant = %t, "a gate was not rebuilt; its next change rebuilds it");
        }
    }
    repo::replicas::forget(&mut *tx, &dead).await?;
    tx.commit().await?;
    Ok(())
}
