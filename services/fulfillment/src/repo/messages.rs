//! SQL of messages between the office and the nodes.
use chrono::{DateTime, Utc};
use oms_kernel::Tenant;
use oms_proto::fulfillment::Message as Msg;
use oms_runtime::{db::decode, time::to_timestamp};
use prost::Message;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// Stores a message: the office's with the sequence of the command that
/// carries it, the warehouse's with sequence 0 and delivered at once.
pub async fn insert(
    tx: &mut PgConnection,
    tenant: &Tenant,
    id: Uuid,
    m: &Msg,
    command_seq: i64,
    delivered: Option<DateTime<Utc>>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO messages (tenant, id, subject, node_id, command_seq, doc, deliver_time)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(tenant.as_str())
    .bind(id)
    .bind(&m.subject)
    .bind(&m.node_id)
    .bind(command_seq)
    .bind(m.encode_to_vec())
    .bind(delivered)
    .execute(tx)
    .await?;
    Ok(())
}

type Row = (Uuid, Vec<u8>, Option<DateTime<Utc>>, Option<DateTime<Utc>>);

fn message((_, doc, delivered, read): Row) -> sqlx::Result<Msg> {
    let mut m: Msg = decode(&doc)?;
    m.deliver_time = delivered.map(to_timestamp);
    m.read_time = read.map(to_timestamp);
    Ok(m)
}

/// Marks a message read (the first time only) and returns it; None when
/// there is no such message.
pub async fn mark_read(
    ex: impl PgExecutor<'_>,
    tenant: &Tenant,
    id: Uuid,
    now: DateTime<Utc>,
) -> sqlx::Result<Option<Msg>> {
    let row: Option<Row> = sqlx::query_as(
        "UPDATE messages SET read_time = coalesce(read_time, $3) WHERE tenant = $1 AND id = $2
         RETURNING id, doc, deliver_time, read_time",
    )
    .bind(tenant.as_str())
    .bind(id)
    .bind(now)
    .fetch_optional(ex)
    .await?;
    row.map(message).transpose()
}

/// Newest first, about `subject` when given, unread only when asked.
pub async fn list(
    ex: impl PgExecutor<'_>,
    tenant: &Tenant,
    subject: &str,
    unread_only: bool,
    before: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<(Uuid, Msg)>> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, doc, deliver_time, read_time FROM messages
         WHERE tenant = $1 AND ($2 = '' OR subject = $2) AND (NOT $3 OR read_time IS NULL)
           AND id < $4
         ORDER BY id DESC LIMIT $5",
    )
    .bind(tenant.as_str())
    .bind(subject)
    .bind(unread_only)
    .bind(before.unwrap_or(Uuid::max()))
    .bind(limit)
    .fetch_all(ex)
    .await?;
    rows.into_iter().map(|r| Ok((r.0, message(r)?))).collect()
}

/// Messages to `nodes` whose command the adapter acknowledged (sequence up
/// to `acked`) are delivered.
pub async fn delivered(
    ex: impl PgExecutor<'_>,
    tenant: &Tenant,
    nodes: &[String],
    acked: i64,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE messages SET deliver_time = $4
         WHERE tenant = $1 AND node_id = ANY($2) AND command_seq <= $3 AND deliver_time IS NULL",
    )
    .bind(tenant.as_str())
    .bind(nodes)
    .bind(acked)
    .bind(now)
    .execute(ex)
    .await?;
    Ok(())
}
