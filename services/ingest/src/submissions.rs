//! What a submission reads and writes in Postgres, batched across the
//! submissions under way: the channel, what its channel order became, and
//! the audit record (the payload, with what its channel order became) each
//! go to Postgres as one statement for every submission waiting, so the
//! webhook path is not bound by round trips and commit latency. Channels
//! are also remembered for [`CHANNEL_TTL`]: they change rarely, and every
//! submission and every availability figure needs one.
use crate::repo::{self, AuditRow, ChannelOrder};
use oms_kernel::Tenant;
use oms_proto::ingest::Channel;
use oms_runtime::{
    batch::{self, Batcher},
    status,
};
use sqlx::PgPool;
use std::future::Future;
use tokio_util::sync::CancellationToken;
use tonic::Status;

const WORKERS: usize = 2;
/// How long a channel read is used before it is read again. A change made
/// through this replica is seen at once (it forgets the channel); one made
/// through another replica is seen within this time.
pub const CHANNEL_TTL: std::time::Duration = std::time::Duration::from_secs(2);
/// Channels remembered at most.
const CHANNELS_KEPT: u64 = 10_000;
/// Payload bodies reach 1 MiB: an audit transaction carries at most this
/// many.
const MAX_AUDIT_BATCH: usize = 64;
const MAX_READ_BATCH: usize = 256;

type ChannelKey = (Tenant, String);
type ChannelOrderKey = (Tenant, String, String);

type ChannelRead = Option<(Channel, String)>;

#[derive(Clone)]
pub struct Submissions {
    known: moka::sync::Cache<ChannelKey, ChannelRead>,
    channels: Batcher<ChannelKey, Result<ChannelRead, Status>>,
    channel_orders: Batcher<ChannelOrderKey, Result<Option<ChannelOrder>, Status>>,
    audit: Batcher<AuditRow, Result<(), Status>>,
}

fn db(e: &sqlx::Error) -> Status {
    status::from_db(crate::grpc::DOMAIN, e)
}

fn stopped(s: batch::Stopped) -> Status {
    s.into_status(crate::grpc::DOMAIN)
}

/// A batcher of lookups: `find` answers every key, in order, with one
/// query; if it fails, every key gets its error.
fn lookups<K, V, F, Fut>(
    pool: &PgPool,
    shutdown: &CancellationToken,
    find: F,
) -> Batcher<K, Result<V, Status>>
where
    K: Send + 'static,
    V: Send + 'static,
    F: Fn(PgPool, Vec<K>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = sqlx::Result<Vec<V>>> + Send,
{
    let pool = pool.clone();
    Batcher::start(
        WORKERS,
        MAX_READ_BATCH,
        shutdown.clone(),
        move |keys: Vec<K>| {
            let (pool, find) = (pool.clone(), find.clone());
            async move {
                let n = keys.len();
                match find(pool, keys).await {
                    Ok(found) => found.into_iter().map(Ok).collect(),
                    Err(e) => {
                        let s = db(&e);
                        (0..n).map(|_| Err(s.clone())).collect()
                    }
                }
            }
        },
    )
}

impl Submissions {
    pub fn start(pool: &PgPool, shutdown: &CancellationToken) -> Self {
        let p = pool.clone();
        let audit = Batcher::start(
            WORKERS,
            MAX_AUDIT_BATCH,
            shutdown.clone(),
            move |rows: Vec<AuditRow>| {
                let p = p.clone();
                async move { write_audit(&p, rows).await }
            },
        );
        Submissions {
            known: moka::sync::Cache::builder()
                .max_capacity(CHANNELS_KEPT)
                .time_to_live(CHANNEL_TTL)
                .build(),
            channels: lookups(pool, shutdown, |p, keys| async move {
                repo::channels_by_key(&p, &keys).await
            }),
            channel_orders: lookups(pool, shutdown, |p, keys| async move {
                repo::channel_orders_by_key(&p, &keys).await
            }),
            audit,
        }
    }

    /// A channel with its webhook secret (`None`: no such channel), as
    /// read at most [`CHANNEL_TTL`] ago.
    pub async fn channel(&self, tenant: &Tenant, id: &str) -> Result<ChannelRead, Status> {
        let key = (tenant.clone(), id.to_owned());
        if let Some(known) = self.known.get(&key) {
            return Ok(known);
        }
        let read = self.channels.submit(key.clone()).await.map_err(stopped)??;
        self.known.insert(key, read.clone());
        Ok(read)
    }

    /// Forgets a channel this replica changed, so that its next read is
    /// fresh.
    pub fn forget_channel(&self, tenant: &Tenant, id: &str) {
        self.known.invalidate(&(tenant.clone(), id.to_owned()));
    }

    /// What a channel order became, if it was seen before.
    pub async fn channel_order(
        &self,
        tenant: &Tenant,
        channel: &str,
        id: &str,
    ) -> Result<Option<ChannelOrder>, Status> {
        let key = (tenant.clone(), channel.to_owned(), id.to_owned());
        self.channel_orders.submit(key).await.map_err(stopped)?
    }

    /// Records a submission (and what its channel order became) durably.
    pub async fn record(&self, row: AuditRow) -> Result<(), Status> {
        self.audit.submit(row).await.map_err(stopped)?
    }
}

/// Writes the audit rows of a batch in one statement (each row alone if
/// the batch fails).
async fn write_audit(pool: &PgPool, rows: Vec<AuditRow>) -> Vec<Result<(), Status>> {
    batch::together_or_alone(&rows, |rows| async move {
        repo::record_submissions(pool, rows)
            .await
            .map(|()| rows.iter().map(|_| Ok(())).collect())
    })
    .await
    .into_iter()
    .map(|r| r.map_err(|e| db(&e)))
    .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::repo::Seen;
    use oms_proto::ingest::{Payload, PayloadStatus};

    fn row(tenant: &str, coid: &str, hash: &str, cancelled: Option<bool>) -> AuditRow {
        AuditRow {
            tenant: Tenant::parse(tenant).unwrap(),
            payload_id: uuid::Uuid::now_v7(),
            payload: Payload {
                channel: "channels/shop".into(),
                status: if cancelled.is_some() {
                    PayloadStatus::Accepted
                } else {
                    PayloadStatus::Rejected
                } as i32,
                ..Default::default()
            },
            body_hash: hash.into(),
            seen: cancelled.map(|cancelled| Seen {
                channel_order_id: coid.into(),
                order: format!("orders/{coid}"),
                cancelled,
            }),
        }
    }

    /// One audit batch holding the same channel order several times (a
    /// webhook and its retries), another tenant's and a rejected payload.
    #[tokio::test]
    async fn an_audit_batch_keeps_every_payload_and_the_last_word_on_each_channel_order() {
        let db = oms_testkit::TestDb::new().await;
        let pool = db.pool("ingest", Some(&crate::MIGRATOR)).await;
        let answers = write_audit(
            &pool,
            vec![
                row("acme", "1", "h1", Some(false)),
                row("acme", "1", "h2", Some(true)),
                row("acme", "1", "h3", Some(false)),
                row("globex", "1", "g1", Some(false)),
                row("acme", "", "bad", None),
            ],
        )
        .await;
        assert!(answers.iter().all(|a| a.is_ok()));
        let shutdown = CancellationToken::new();
        let s = Submissions::start(&pool, &shutdown);
        let (acme, globex) = (
            Tenant::parse("acme").unwrap(),
            Tenant::parse("globex").unwrap(),
        );
        let a = s.channel_order(&acme, "shop", "1").await.unwrap().unwrap();
        assert_eq!((a.last_body_hash.as_str(), a.cancelled), ("h3", true));
        let g = s
            .channel_order(&globex, "shop", "1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!((g.order_name.as_str(), g.cancelled), ("orders/1", false));
        assert!(s.channel_order(&acme, "shop", "2").await.unwrap().is_none());
        let payloads: i64 = sqlx::query_scalar("SELECT count(*) FROM payloads")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(payloads, 5);
        shutdown.cancel();
    }
}
