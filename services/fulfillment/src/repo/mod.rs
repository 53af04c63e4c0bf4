//! The fulfillment schema's SQL. Documents are stored encoded; columns
//! beside them exist only to find rows.
use crate::state;
use chrono::{DateTime, Utc};
use oms_kernel::Tenant;
use oms_proto::fulfillment::{AdapterSession, Command, EventAck, FulfillmentOrder, command};
use oms_runtime::{db::decode, time::to_timestamp};
use prost::Message;
use sqlx::{PgConnection, PgExecutor};
use std::collections::HashMap;
use uuid::Uuid;

pub mod inbound;
pub mod messages;

pub async fn insert_order(
    tx: &mut PgConnection,
    tenant: &Tenant,
    id: Uuid,
    fo: &FulfillmentOrder,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO fulfillment_orders
           (tenant, id, order_name, node_id, state, doc, create_time, update_time)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
    )
    .bind(tenant.as_str())
    .bind(id)
    .bind(&fo.order)
    .bind(&fo.node_id)
    .bind(state::to_db(fo.state()))
    .bind(fo.encode_to_vec())
    .bind(now)
    .execute(tx)
    .await?;
    Ok(())
}

pub async fn save_order(
    tx: &mut PgConnection,
    tenant: &Tenant,
    id: Uuid,
    fo: &FulfillmentOrder,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE fulfillment_orders SET state = $3, doc = $4, update_time = $5
         WHERE tenant = $1 AND id = $2",
    )
    .bind(tenant.as_str())
    .bind(id)
    .bind(state::to_db(fo.state()))
    .bind(fo.encode_to_vec())
    .bind(now)
    .execute(tx)
    .await?;
    Ok(())
}

/// Several fulfillment orders by id, each locked for the transaction, in id
/// order (callers locking several at once then cannot deadlock).
pub async fn orders_locked(
    tx: &mut PgConnection,
    tenant: &Tenant,
    ids: &[Uuid],
) -> sqlx::Result<HashMap<Uuid, FulfillmentOrder>> {
    let mut ids = ids.to_vec();
    ids.sort();
    ids.dedup();
    // One index probe per id, whatever the statistics say: without them
    // (a young table) the planner takes the tenant's whole range for a few
    // hundred rows and filters it, every batch. The probes run, and lock,
    // in id order.
    let rows: Vec<(Uuid, Vec<u8>)> = sqlx::query_as(
        "SELECT f.id, f.doc FROM UNNEST($2::uuid[]) WITH ORDINALITY AS x(id, n)
         CROSS JOIN LATERAL (
           SELECT id, doc FROM fulfillment_orders
           WHERE tenant = $1 AND id = x.id LIMIT 1 FOR UPDATE
         ) f
         ORDER BY x.n",
    )
    .bind(tenant.as_str())
    .bind(ids)
    .fetch_all(tx)
    .await?;
    rows.into_iter()
        .map(|(id, d)| Ok((id, decode(&d)?)))
        .collect()
}

/// Writes several changed fulfillment orders in one statement.
pub async fn save_orders(
    tx: &mut PgConnection,
    tenant: &Tenant,
    orders: &[(Uuid, &FulfillmentOrder)],
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    if orders.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = orders.iter().map(|(id, _)| *id).collect();
    let states: Vec<&str> = orders
        .iter()
        .map(|(_, fo)| state::to_db(fo.state()))
        .collect();
    let docs: Vec<Vec<u8>> = orders.iter().map(|(_, fo)| fo.encode_to_vec()).collect();
    sqlx::query(
        "UPDATE fulfillment_orders f SET state = x.state, doc = x.doc, update_time = $5
         FROM UNNEST($2::uuid[], $3::text[], $4::bytea[]) AS x(id, state, doc)
         WHERE f.tenant = $1 AND f.id = x.id",
    )
    // Prepared, so that the cached generic plan (which takes the array for
    // a few rows) probes the primary key per row. Planned per call with the
    // array's real length, and without statistics on a young table, it
    // hash-joins the tenant's whole range instead.
    .bind(tenant.as_str())
    .bind(&ids)
    .bind(&states)
    .bind(&docs)
    .bind(now)
    .execute(tx)
    .await?;
    Ok(())
}

/// A fulfillment order, locked for the transaction when `lock`.
pub async fn order(
    ex: impl PgExecutor<'_>,
    tenant: &Tenant,
    id: Uuid,
    lock: bool,
) -> sqlx::Result<Option<FulfillmentOrder>> {
    let sql = if lock {
        "SELECT doc FROM fulfillment_orders WHERE tenant = $1 AND id = $2 FOR UPDATE"
    } else {
        "SELECT doc FROM fulfillment_orders WHERE tenant = $1 AND id = $2"
    };
    let doc: Option<Vec<u8>> = sqlx::query_scalar(sql)
        .bind(tenant.as_str())
        .bind(id)
        .fetch_optional(ex)
        .await?;
    doc.map(|d| decode(&d)).transpose()
}

/// What `list_orders` lists: empty strings and slices, and `None`, leave
/// that filter out.
pub struct OrderFilter<'a> {
    pub order: &'a str,
    pub node: &'a str,
    pub states: &'a [&'a str],
    /// Changed at or after.
    pub changed_from: Option<DateTime<Utc>>,
}

/// Newest first, filtered.
pub async fn list_orders(
    ex: impl PgExecutor<'_>,
    tenant: &Tenant,
    f: &OrderFilter<'_>,
    before: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<(Uuid, FulfillmentOrder)>> {
    let rows: Vec<(Uuid, Vec<u8>)> = sqlx::query_as(
        "SELECT id, doc FROM fulfillment_orders
         WHERE tenant = $1 AND ($2 = '' OR order_name = $2) AND ($3 = '' OR node_id = $3)
           AND (cardinality($4::text[]) = 0 OR state = ANY($4)) AND id < $5
           AND ($7::timestamptz IS NULL OR update_time >= $7)
         ORDER BY id DESC LIMIT $6",
    )
    .bind(tenant.as_str())
    .bind(f.order)
    .bind(f.node)
    .bind(f.states)
    .bind(before.unwrap_or(Uuid::max()))
    .bind(limit)
    .bind(f.changed_from)
    .fetch_all(ex)
    .await?;
    rows.into_iter()
        .map(|(id, d)| Ok((id, decode(&d)?)))
        .collect()
}

/// Appends a command for its node with the tenant's next sequence. The
/// head row stays locked until commit, so sequences commit in order.
pub async fn append_command(
    tx: &mut PgConnection,
    tenant: &Tenant,
    node_id: &str,
    kind: command::Kind,
    now: DateTime<Utc>,
) -> sqlx::Result<i64> {
    let seq: i64 = sqlx::query_scalar(
        "INSERT INTO command_heads (tenant, head) VALUES ($1, 1)
         ON CONFLICT (tenant) DO UPDATE SET head = command_heads.head + 1
         RETURNING head",
    )
    .bind(tenant.as_str())
    .fetch_one(&mut *tx)
    .await?;
    let id = Uuid::now_v7();
    let cmd = Command {
        sequence: 0,
        command_id: id.to_string(),
        node_id: node_id.to_owned(),
        kind: Some(kind),
    };
    sqlx::query(
        "INSERT INTO commands (tenant, seq, command_id, node_id, body, create_time)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(tenant.as_str())
    .bind(seq)
    .bind(id)
    .bind(&cmd.node_id)
    .bind(cmd.encode_to_vec())
    .bind(now)
    .execute(&mut *tx)
    .await?;
    Ok(seq)
}

/// Commands for `nodes` after sequence `after`, in order, with their
/// sequence set.
pub async fn commands_after(
    ex: impl PgExecutor<'_>,
    tenant: &Tenant,
    nodes: &[String],
    after: i64,
    limit: i64,
) -> sqlx::Result<Vec<Command>> {
    let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
        "SELECT seq, body FROM commands
         WHERE tenant = $1 AND node_id = ANY($2) AND seq > $3
         ORDER BY seq LIMIT $4",
    )
    .bind(tenant.as_str())
    .bind(nodes)
    .bind(after)
    .bind(limit)
    .fetch_all(ex)
    .await?;
    rows.into_iter()
        .map(|(seq, body)| {
            let mut c: Command = decode(&body)?;
            c.sequence = seq;
            Ok(c)
        })
        .collect()
}

/// The highest command sequence for `nodes` (0 when none).
pub async fn head(ex: impl PgExecutor<'_>, tenant: &Tenant, nodes: &[String]) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "SELECT coalesce(max(seq), 0) FROM commands WHERE tenant = $1 AND node_id = ANY($2)",
    )
    .bind(tenant.as_str())
    .bind(nodes)
    .fetch_one(ex)
    .await
}

/// The stored answers to those of `event_ids` already seen.
pub async fn event_acks(
    ex: impl PgExecutor<'_>,
    tenant: &Tenant,
    event_ids: &[&str],
) -> sqlx::Result<HashMap<String, EventAck>> {
    // One index probe per id (see `orders_locked`): the table starts empty
    // and grows by every event, so its statistics lag the most.
    let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(
        "SELECT a.event_id, a.ack FROM UNNEST($2::text[]) AS x(id)
         CROSS JOIN LATERAL (
           SELECT event_id, ack FROM adapter_events
           WHERE tenant = $1 AND event_id = x.id LIMIT 1
         ) a",
    )
    .bind(tenant.as_str())
    .bind(event_ids)
    .fetch_all(ex)
    .await?;
    rows.into_iter()
        .map(|(id, d)| Ok((id, decode(&d)?)))
        .collect()
}

pub async fn insert_event_acks(
    tx: &mut PgConnection,
    tenant: &Tenant,
    acks: &[EventAck],
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    if acks.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = acks.iter().map(|a| a.event_id.as_str()).collect();
    let docs: Vec<Vec<u8>> = acks.iter().map(|a| a.encode_to_vec()).collect();
    sqlx::query(
        "INSERT INTO adapter_events (tenant, event_id, ack, apply_time)
         SELECT $1, id, ack, $4 FROM UNNEST($2::text[], $3::bytea[]) AS x(id, ack)
         ON CONFLICT DO NOTHING",
    )
    .persistent(false)
    .bind(tenant.as_str())
    .bind(&ids)
    .bind(&docs)
    .bind(now)
    .execute(tx)
    .await?;
    Ok(())
}

/// Records that `adapter` opened a stream as `session`.
#[allow(clippy::too_many_arguments)]
pub async fn open_session(
    ex: impl PgExecutor<'_>,
    tenant: &Tenant,
    adapter: &str,
    session: Uuid,
    nodes: &[String],
    software: &str,
    acked: i64,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO adapter_sessions
           (tenant, adapter_id, session_id, node_ids, software, connected, connect_time,
            last_seen_time, sent_seq, acked_seq)
         VALUES ($1, $2, $3, $4, $5, true, $6, $6, $7, $7)
         ON CONFLICT (tenant, adapter_id) DO UPDATE SET
           session_id = $3, node_ids = $4, software = $5, connected = true,
           connect_time = $6, last_seen_time = $6, sent_seq = $7, acked_seq = $7",
    )
    .bind(tenant.as_str())
    .bind(adapter)
    .bind(session)
    .bind(nodes)
    .bind(software)
    .bind(now)
    .bind(acked)
    .execute(ex)
    .await?;
    Ok(())
}

/// Liveness and progress of a session (ignored once another session of
/// the same adapter took over).
pub async fn touch_session(
    ex: impl PgExecutor<'_>,
    tenant: &Tenant,
    session: Uuid,
    sent: i64,
    acked: i64,
    connected: bool,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE adapter_sessions SET last_seen_time = $3, sent_seq = $4, acked_seq = $5,
                connected = $6
         WHERE tenant = $1 AND session_id = $2",
    )
    .bind(tenant.as_str())
    .bind(session)
    .bind(now)
    .bind(sent)
    .bind(acked)
    .bind(connected)
    .execute(ex)
    .await?;
    Ok(())
}

type SessionRow = (
    String,
    Vec<String>,
    bool,
    DateTime<Utc>,
    DateTime<Utc>,
    i64,
    i64,
);

/// Sessions by adapter id, after `after`.
pub async fn sessions(
    ex: impl PgExecutor<'_>,
    tenant: &Tenant,
    after: Option<String>,
    limit: i64,
) -> sqlx::Result<Vec<AdapterSession>> {
    let rows: Vec<SessionRow> = sqlx::query_as(
        "SELECT adapter_id, node_ids, connected, connect_time, last_seen_time, sent_seq, acked_seq
         FROM adapter_sessions WHERE tenant = $1 AND adapter_id > $2
         ORDER BY adapter_id LIMIT $3",
    )
    .bind(tenant.as_str())
    .bind(after.unwrap_or_default())
    .bind(limit)
    .fetch_all(ex)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(id, nodes, connected, opened, seen, sent, acked)| AdapterSession {
                adapter_id: id,
                node_ids: nodes,
                connected,
                connect_time: Some(to_timestamp(opened)),
                last_seen_time: Some(to_timestamp(seen)),
                unacknowledged_commands: (sent - acked).max(0),
                last_acknowledged_sequence: acked,
            },
        )
        .collect())
}
