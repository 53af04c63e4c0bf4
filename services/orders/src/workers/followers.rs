//! Runs one follower per tenant followed on a feed of another service,
//! on the replica that holds the tenant's lease.
use crate::repo::feeds;
use crate::workers::leases::Leases;
use oms_kernel::Tenant;
use sqlx::PgPool;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Keeps one follower (`follow(tenant, stored cursor)`) per tenant
/// followed on `source` whose lease this replica holds running until
/// `shutdown` (see [`Leases`]); a follower that ends is started again
/// from its stored cursor, one whose lease was given up to another
/// replica is stopped.
pub fn supervise<F, Fut>(
    pool: PgPool,
    source: &'static str,
    every: Duration,
    shutdown: CancellationToken,
    follow: F,
) where
    F: Fn(Tenant, String) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let mut leases = Leases::new(pool.clone(), source);
        // Each follower, with when it started.
        let mut running: HashMap<String, (JoinHandle<()>, Instant)> = HashMap::new();
        loop {
            let ended: Vec<String> = running
                .iter()
                .filter(|(_, (h, _))| h.is_finished())
                .map(|(t, _)| t.clone())
                .collect();
            for tenant in ended {
                if let Some((_, since)) = running.remove(&tenant) {
                    leases.ended(&tenant, since.elapsed()).await;
                }
            }
            if !leases.next_round().await {
                tracing::warn!(
                    source,
                    "the feed leases' connection broke: their followers stop until the leases are taken again"
                );
                for (h, _) in running.values() {
                    h.abort();
                }
                running.clear();
            }
            let mut cursors: HashMap<String, String> = match feeds::followed(&pool, source).await {
                Ok(rows) => rows.into_iter().collect(),
                Err(e) => {
                    // Nothing changes this round: shared out over no
                    // tenants, every lease would go.
                    tracing::warn!(source, error = %e, "could not read the followed feeds");
                    tokio::select! {
                        _ = tokio::time::sleep(every) => continue,
                        _ = shutdown.cancelled() => return,
                    }
                }
            };
            let followed: Vec<String> = cursors.keys().cloned().collect();
            let busy: HashSet<String> = running.keys().cloned().collect();
            let changes = leases.balance(followed, &busy).await;
            for tenant in changes.stop {
                if let Some((h, _)) = running.remove(&tenant) {
                    h.abort();
                }
            }
            for tenant in changes.start {
                let (Ok(t), Some(cursor)) = (Tenant::parse(&tenant), cursors.remove(&tenant))
                else {
                    continue;
                };
                let stop = shutdown.clone();
                let work = follow(t, cursor);
                let follower = tokio::spawn(async move {
                    tokio::select! {
                        _ = work => {}
                        _ = stop.cancelled() => {}
                    }
                });
                running.insert(tenant, (follower, Instant::now()));
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    });
}

/// Whether a feed refused the stored cursor because the events after it
/// are gone (retrying from it cannot succeed).
pub fn cursor_expired(e: &anyhow::Error) -> bool {
    e.downcast_ref::<tonic::Status>()
        .is_some_and(oms_runtime::outbox::is_cursor_expired)
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_a_refused_cursor_counts_as_expired() {
        let err = |s: tonic::Status| anyhow::Error::from(s);
        // As the feed answers it (oms_runtime::outbox::FeedError::status).
        assert!(super::cursor_expired(&err(
            oms_runtime::status::failed_precondition(
                "fulfillment.oms",
                oms_runtime::outbox::CURSOR_EXPIRED,
                "1.2",
                "events after cursor 1.2 are gone",
            )
        )));
        assert!(!super::cursor_expired(&err(tonic::Status::unavailable(
            "down"
        ))));
        assert!(!super::cursor_expired(&anyhow::anyhow!("database")));
    }
}
