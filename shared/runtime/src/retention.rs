//! Deleting what a service keeps only for a while: its feed's events
//! (`OMS_EVENT_RETENTION_DAYS`) and the answers of its idempotent requests
//! (`OMS_IDEMPOTENCY_RETENTION_DAYS`), so that neither table grows with
//! everything the service ever did.
use crate::{Config, idempotency, outbox};
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often old rows are looked for.
const EVERY: Duration = Duration::from_secs(60);
/// Rows deleted per statement; a backlog (a first start after years)
/// goes a batch at a time, back to back.
const BATCH: i64 = 1000;

/// Starts deleting old events and request records about once a minute
/// until `shutdown`.
pub fn start(pool: &PgPool, config: &Config, shutdown: CancellationToken) {
    let (events, requests) = (config.event_retention, config.idempotency_retention);
    if events.is_none() && requests.is_none() {
        return;
    }
    let pool = pool.clone();
    crate::periodic::every(EVERY, shutdown.clone(), move || {
        let (pool, shutdown) = (pool.clone(), shutdown.clone());
        async move {
            if let Some(cutoff) = events.and_then(before) {
                drain("events", &shutdown, || outbox::purge(&pool, cutoff, BATCH)).await;
            }
            if let Some(cutoff) = requests.and_then(before) {
                drain("request records", &shutdown, || {
                    idempotency::purge(&pool, cutoff, BATCH)
                })
                .await;
            }
        }
    });
}

/// Now minus `keep`: what is older goes. None when that is before time
/// began (nothing is that old).
pub fn before(keep: Duration) -> Option<DateTime<Utc>> {
    chrono::Duration::from_std(keep)
        .ok()
        .and_then(|k| Utc::now().checked_sub_signed(k))
}

/// Runs `purge` until it deletes less than a batch.
async fn drain<F, Fut>(what: &str, shutdown: &CancellationToken, purge: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<u64, sqlx::Error>>,
{
    let mut deleted = 0;
    loop {
        match purge().await {
            Ok(n) => {
                deleted += n;
                if n < BATCH as u64 || shutdown.is_cancelled() {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "deleting old {what} failed; retried in a minute");
                break;
            }
        }
    }
    if deleted > 0 {
        tracing::info!(deleted, "old {what} deleted");
    }
}
