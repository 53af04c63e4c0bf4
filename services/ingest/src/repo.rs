//! SQL of the ingest service.
use oms_kernel::Tenant;
use oms_proto::ingest::{Channel, Payload};
use prost::Message;
use sqlx::{PgExecutor, PgPool};

use oms_runtime::db::decode;

pub async fn insert_channel(
    db: impl PgExecutor<'_>,
    tenant: &Tenant,
    c: &Channel,
    secret: &str,
) -> sqlx::Result<bool> {
    let n = sqlx::query(
        "INSERT INTO channels (tenant, channel_id, webhook_secret, doc) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(tenant.as_str())
    .bind(&c.channel_id)
    .bind(secret)
    .bind(c.encode_to_vec())
    .execute(db)
    .await?;
    Ok(n.rows_affected() == 1)
}

pub async fn save_channel(
    db: impl PgExecutor<'_>,
    tenant: &Tenant,
    c: &Channel,
    secret: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE channels SET webhook_secret = $3, doc = $4 WHERE tenant = $1 AND channel_id = $2",
    )
    .bind(tenant.as_str())
    .bind(&c.channel_id)
    .bind(secret)
    .bind(c.encode_to_vec())
    .execute(db)
    .await?;
    Ok(())
}

/// A channel with its webhook secret; `lock` holds it for the transaction.
pub async fn channel(
    db: impl PgExecutor<'_>,
    tenant: &Tenant,
    id: &str,
    lock: bool,
) -> sqlx::Result<Option<(Channel, String)>> {
    let sql = if lock {
        "SELECT doc, webhook_secret FROM channels WHERE tenant = $1 AND channel_id = $2 FOR UPDATE"
    } else {
        "SELECT doc, webhook_secret FROM channels WHERE tenant = $1 AND channel_id = $2"
    };
    let row: Option<(Vec<u8>, String)> = sqlx::query_as(sql)
        .bind(tenant.as_str())
        .bind(id)
        .fetch_optional(db)
        .await?;
    row.map(|(d, s)| decode(&d).map(|c| (c, s))).transpose()
}

pub async fn channels(
    db: &PgPool,
    tenant: &Tenant,
    after: &str,
    limit: i64,
) -> sqlx::Result<Vec<Channel>> {
    let docs: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT doc FROM channels WHERE tenant = $1 AND channel_id > $2 ORDER BY channel_id LIMIT $3",
    )
    .bind(tenant.as_str())
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await?;
    docs.iter().map(|d| decode(d)).collect()
}

pub async fn insert_payload(
    db: impl PgExecutor<'_>,
    tenant: &Tenant,
    id: uuid::Uuid,
    p: &Payload,
    body_hash: &str,
    channel_order_id: &str,
) -> sqlx::Result<()> {
    let status = oms_proto::ingest::PayloadStatus::try_from(p.status)
        .unwrap_or_default()
        .as_str_name();
    sqlx::query(
        "INSERT INTO payloads (payload_id, tenant, channel_id, status, body_hash, channel_order_id, receive_time, doc)
         VALUES ($1, $2, $3, $4, $5, $6, now(), $7)",
    )
    .bind(id)
    .bind(tenant.as_str())
    .bind(p.channel.trim_start_matches("channels/"))
    .bind(status)
    .bind(body_hash)
    .bind(channel_order_id)
    .bind(p.encode_to_vec())
    .execute(db)
    .await?;
    Ok(())
}

pub async fn payload(
    db: &PgPool,
    tenant: &Tenant,
    id: uuid::Uuid,
) -> sqlx::Result<Option<Payload>> {
    let doc: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT doc FROM payloads WHERE tenant = $1 AND payload_id = $2")
            .bind(tenant.as_str())
            .bind(id)
            .fetch_optional(db)
            .await?;
    doc.as_deref().map(decode).transpose()
}

pub async fn payloads(
    db: &PgPool,
    tenant: &Tenant,
    channel: Option<&str>,
    limit: i64,
) -> sqlx::Result<Vec<Payload>> {
    let docs: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT doc FROM payloads WHERE tenant = $1 AND ($2::text IS NULL OR channel_id = $2)
         ORDER BY receive_time DESC, payload_id DESC LIMIT $3",
    )
    .bind(tenant.as_str())
    .bind(channel)
    .bind(limit)
    .fetch_all(db)
    .await?;
    docs.iter().map(|d| decode(d)).collect()
}

/// What a channel order became: (order name, last body hash, cancelled).
pub async fn channel_order(
    db: impl PgExecutor<'_>,
    tenant: &Tenant,
    channel: &str,
    id: &str,
) -> sqlx::Result<Option<(String, String, bool)>> {
    sqlx::query_as(
        "SELECT order_name, last_body_hash, cancelled FROM channel_orders
         WHERE tenant = $1 AND channel_id = $2 AND channel_order_id = $3",
    )
    .bind(tenant.as_str())
    .bind(channel)
    .bind(id)
    .fetch_optional(db)
    .await
}

pub async fn upsert_channel_order(
    db: impl PgExecutor<'_>,
    tenant: &Tenant,
    channel: &str,
    id: &str,
    order: &str,
    hash: &str,
    cancelled: bool,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO channel_orders (tenant, channel_id, channel_order_id, order_name, last_body_hash, cancelled)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (tenant, channel_id, channel_order_id)
         DO UPDATE SET last_body_hash = EXCLUDED.last_body_hash, cancelled = channel_orders.cancelled OR EXCLUDED.cancelled",
    )
    .bind(tenant.as_str())
    .bind(channel)
    .bind(id)
    .bind(order)
    .bind(hash)
    .bind(cancelled)
    .execute(db)
    .await?;
    Ok(())
}
