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

/// Which payloads a list shows.
pub struct PayloadFilter<'a> {
    pub channel: Option<&'a str>,
    /// A `PayloadStatus` name.
    pub status: Option<&'a str>,
    /// Only payloads received before this one (the previous page's last).
    pub before: Option<uuid::Uuid>,
}

/// Payloads newest first (their ids are UUIDv7, taken on arrival), with
/// their ids.
pub async fn payloads(
    db: &PgPool,
    tenant: &Tenant,
    f: &PayloadFilter<'_>,
    limit: i64,
) -> sqlx::Result<Vec<(uuid::Uuid, Payload)>> {
    let rows: Vec<(uuid::Uuid, Vec<u8>)> = sqlx::query_as(
        "SELECT payload_id, doc FROM payloads
         WHERE tenant = $1 AND ($2::text IS NULL OR channel_id = $2)
           AND ($3::text IS NULL OR status = $3) AND ($4::uuid IS NULL OR payload_id < $4)
         ORDER BY payload_id DESC LIMIT $5",
    )
    .bind(tenant.as_str())
    .bind(f.channel)
    .bind(f.status)
    .bind(f.before)
    .bind(limit)
    .fetch_all(db)
    .await?;
    rows.into_iter()
        .map(|(id, d)| decode(&d).map(|p| (id, p)))
        .collect()
}

/// What a channel order became.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ChannelOrder {
    pub order_name: String,
    pub last_body_hash: String,
    pub cancelled: bool,
}

/// Channels with their webhook secrets, one answer per key, in order.
pub async fn channels_by_key(
    db: &PgPool,
    keys: &[(Tenant, String)],
) -> sqlx::Result<Vec<Option<(Channel, String)>>> {
    let tenants: Vec<&str> = keys.iter().map(|k| k.0.as_str()).collect();
    let ids: Vec<&str> = keys.iter().map(|k| k.1.as_str()).collect();
    let rows: Vec<(i64, Vec<u8>, String)> = sqlx::query_as(
        "SELECT x.n, c.doc, c.webhook_secret
         FROM UNNEST($1::text[], $2::text[]) WITH ORDINALITY AS x(t, id, n)
         JOIN channels c ON c.tenant = x.t AND c.channel_id = x.id",
    )
    .bind(&tenants)
    .bind(&ids)
    .fetch_all(db)
    .await?;
    let mut out = vec![None; keys.len()];
    for (n, doc, secret) in rows {
        out[n as usize - 1] = Some((decode(&doc)?, secret));
    }
    Ok(out)
}

/// What channel orders became, one answer per (tenant, channel, channel
/// order id), in order: read from their accepted payloads, the newest
/// giving the order and the last body, any one cancelling making it
/// cancelled for good. The status is written out, not bound: it is the
/// predicate of the partial index that serves this lookup.
pub async fn channel_orders_by_key(
    db: &PgPool,
    keys: &[(Tenant, String, String)],
) -> sqlx::Result<Vec<Option<ChannelOrder>>> {
    let tenants: Vec<&str> = keys.iter().map(|k| k.0.as_str()).collect();
    let channels: Vec<&str> = keys.iter().map(|k| k.1.as_str()).collect();
    let ids: Vec<&str> = keys.iter().map(|k| k.2.as_str()).collect();
    let rows: Vec<(i64, String, String, bool)> = sqlx::query_as(
        "SELECT x.n, p.order_name, p.body_hash,
                EXISTS (SELECT 1 FROM payloads c
                        WHERE c.tenant = x.t AND c.channel_id = x.c AND c.channel_order_id = x.id
                          AND c.status = 'PAYLOAD_STATUS_ACCEPTED' AND c.cancelled)
         FROM UNNEST($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS x(t, c, id, n)
         CROSS JOIN LATERAL (
             SELECT order_name, body_hash FROM payloads p
             WHERE p.tenant = x.t AND p.channel_id = x.c AND p.channel_order_id = x.id
               AND p.status = 'PAYLOAD_STATUS_ACCEPTED'
             ORDER BY p.payload_id DESC LIMIT 1) p",
    )
    .bind(&tenants)
    .bind(&channels)
    .bind(&ids)
    .fetch_all(db)
    .await?;
    let mut out = vec![None; keys.len()];
    for (n, order_name, last_body_hash, cancelled) in rows {
        out[n as usize - 1] = Some(ChannelOrder {
            order_name,
            last_body_hash,
            cancelled,
        });
    }
    Ok(out)
}

/// One submission's audit record: the payload as received and, when it was
/// accepted, what its channel order became.
pub struct AuditRow {
    pub tenant: Tenant,
    pub payload_id: uuid::Uuid,
    pub payload: Payload,
    pub body_hash: String,
    pub seen: Option<Seen>,
}

/// What a channel order became, as a submission saw it.
pub struct Seen {
    pub channel_order_id: String,
    pub order: String,
    pub cancelled: bool,
}

/// Records submissions in one statement: their payloads, with what their
/// channel orders became (read back by [`channel_orders_by_key`]).
pub async fn record_submissions(db: &PgPool, rows: &[AuditRow]) -> sqlx::Result<()> {
    let ids: Vec<uuid::Uuid> = rows.iter().map(|r| r.payload_id).collect();
    let tenants: Vec<&str> = rows.iter().map(|r| r.tenant.as_str()).collect();
    let channels: Vec<&str> = rows
        .iter()
        .map(|r| r.payload.channel.trim_start_matches("channels/"))
        .collect();
    let statuses: Vec<&str> = rows
        .iter()
        .map(|r| {
            oms_proto::ingest::PayloadStatus::try_from(r.payload.status)
                .unwrap_or_default()
                .as_str_name()
        })
        .collect();
    let hashes: Vec<&str> = rows.iter().map(|r| r.body_hash.as_str()).collect();
    let coids: Vec<&str> = rows
        .iter()
        .map(|r| r.seen.as_ref().map_or("", |s| s.channel_order_id.as_str()))
        .collect();
    let orders: Vec<&str> = rows
        .iter()
        .map(|r| r.seen.as_ref().map_or("", |s| s.order.as_str()))
        .collect();
    let cancelled: Vec<bool> = rows
        .iter()
        .map(|r| r.seen.as_ref().is_some_and(|s| s.cancelled))
        .collect();
    let docs: Vec<Vec<u8>> = rows.iter().map(|r| r.payload.encode_to_vec()).collect();
    sqlx::query(
        "INSERT INTO payloads (payload_id, tenant, channel_id, status, body_hash, channel_order_id,
                               order_name, cancelled, receive_time, doc)
         SELECT i, t, c, s, h, co, o, x, now(), d
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::text[], $8::bool[], $9::bytea[]) AS u(i, t, c, s, h, co, o, x, d)",
    )
    .bind(&ids)
    .bind(&tenants)
    .bind(&channels)
    .bind(&statuses)
    .bind(&hashes)
    .bind(&coids)
    .bind(&orders)
    .bind(&cancelled)
    .bind(&docs)
    .execute(db)
    .await?;
    Ok(())
}
