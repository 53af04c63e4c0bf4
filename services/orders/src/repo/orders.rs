use crate::domain::{OrderFilter, OrderState};
use chrono::{DateTime, Utc};
use oms_kernel::Tenant;
use oms_proto::orders::Order;
use prost::Message;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

/// Columns projected from an order for lookups and filters.
pub struct Projection<'a> {
    pub order_id: Uuid,
    pub state: OrderState,
    /// For an order created on hold: the state its release returns to.
    pub held_from: Option<OrderState>,
    pub promise_time: Option<DateTime<Utc>>,
    pub create_time: DateTime<Utc>,
    pub doc: &'a Order,
}

/// Inserts new orders in one statement. Returns, for each, `Some(existing
/// order id)` instead when its tenant already has an order for the same
/// channel order id (an earlier row of the same batch included).
pub async fn insert_many(
    tx: &mut PgConnection,
    rows: &[(&Tenant, Projection<'_>)],
) -> sqlx::Result<Vec<Option<Uuid>>> {
    if rows.is_empty() {
        return Ok(vec![]);
    }
    let tenants: Vec<&str> = rows.iter().map(|(t, _)| t.as_str()).collect();
    let ids: Vec<Uuid> = rows.iter().map(|(_, p)| p.order_id).collect();
    let channels: Vec<&str> = rows.iter().map(|(_, p)| p.doc.channel.as_str()).collect();
    let coids: Vec<&str> = rows
        .iter()
        .map(|(_, p)| p.doc.channel_order_id.as_str())
        .collect();
    let states: Vec<&str> = rows.iter().map(|(_, p)| p.state.as_db()).collect();
    let held_from: Vec<&str> = rows
        .iter()
        .map(|(_, p)| p.held_from.map_or("", |s| s.as_db()))
        .collect();
    let promises: Vec<Option<DateTime<Utc>>> = rows.iter().map(|(_, p)| p.promise_time).collect();
    let created: Vec<DateTime<Utc>> = rows.iter().map(|(_, p)| p.create_time).collect();
    let docs: Vec<Vec<u8>> = rows.iter().map(|(_, p)| p.doc.encode_to_vec()).collect();
    let inserted: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO orders (tenant, order_id, channel, channel_order_id, state, promise_time,
                             create_time, update_time, version, doc, held_from)
         SELECT t, i, c, co, s, p, ct, ct, 1, d, h
         FROM UNNEST($1::text[], $2::uuid[], $3::text[], $4::text[], $5::text[],
                     $6::timestamptz[], $7::timestamptz[], $8::bytea[], $9::text[])
              AS x(t, i, c, co, s, p, ct, d, h)
         ON CONFLICT (tenant, channel, channel_order_id) WHERE channel_order_id <> '' DO NOTHING
         RETURNING order_id",
    )
    .bind(&tenants)
    .bind(&ids)
    .bind(&channels)
    .bind(&coids)
    .bind(&states)
    .bind(&promises)
    .bind(&created)
    .bind(&docs)
    .bind(&held_from)
    .fetch_all(&mut *tx)
    .await?;
    let inserted: std::collections::HashSet<Uuid> = inserted.into_iter().collect();
    let refused: Vec<usize> = (0..rows.len())
        .filter(|&i| !inserted.contains(&ids[i]))
        .collect();
    let mut out = vec![None; rows.len()];
    if refused.is_empty() {
        return Ok(out);
    }
    let pick = |v: &[&str]| -> Vec<String> { refused.iter().map(|&i| v[i].to_owned()).collect() };
    let found: Vec<(String, String, String, Uuid)> = sqlx::query_as(
        "SELECT o.tenant, o.channel, o.channel_order_id, o.order_id
         FROM orders o JOIN UNNEST($1::text[], $2::text[], $3::text[]) AS x(t, c, co)
           ON o.tenant = x.t AND o.channel = x.c AND o.channel_order_id = x.co",
    )
    .bind(pick(&tenants))
    .bind(pick(&channels))
    .bind(pick(&coids))
    .fetch_all(&mut *tx)
    .await?;
    for i in refused {
        out[i] = found
            .iter()
            .find(|(t, c, co, _)| {
                (t.as_str(), c.as_str(), co.as_str()) == (tenants[i], channels[i], coids[i])
            })
            .map(|f| f.3);
    }
    Ok(out)
}

use oms_runtime::db::decode;

pub async fn get(pool: &PgPool, tenant: &Tenant, order_id: Uuid) -> sqlx::Result<Option<Order>> {
    let doc: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT doc FROM orders WHERE tenant = $1 AND order_id = $2")
            .bind(tenant.as_str())
            .bind(order_id)
            .fetch_optional(pool)
            .await?;
    doc.as_deref().map(decode).transpose()
}

/// One page of orders, newest first, plus the cursor of the last one when
/// more follow.
pub async fn list(
    pool: &PgPool,
    tenant: &Tenant,
    f: &OrderFilter,
) -> sqlx::Result<(Vec<Order>, Option<Uuid>)> {
    let mut q: QueryBuilder<Postgres> =
        QueryBuilder::new("SELECT order_id, doc FROM orders WHERE tenant = ");
    q.push_bind(tenant.as_str());
    if !f.states.is_empty() {
        let states: Vec<&str> = f.states.iter().map(|s| s.as_db()).collect();
        q.push(" AND state = ANY(").push_bind(states).push(")");
    }
    if let Some(c) = &f.channel {
        q.push(" AND channel = ").push_bind(c.clone());
    }
    if let Some(c) = &f.channel_order_id {
        q.push(" AND channel_order_id = ").push_bind(c.clone());
    }
    if let Some(n) = &f.node_id {
        // The index by node holds only orders with nodes.
        q.push(" AND node_ids <> '{}' AND node_ids @> ARRAY[")
            .push_bind(n.clone())
            .push("]::text[]");
    }
    // A time range also bounds the ids, so that the scan of the key stays
    // within it (see `ids_from`).
    if let Some(t) = f.create_time_from {
        q.push(" AND create_time >= ").push_bind(t);
        q.push(" AND order_id >= ")
            .push_bind(ids_from(t - ID_CLOCK_SLACK));
    }
    if let Some(t) = f.create_time_to {
        q.push(" AND create_time < ").push_bind(t);
        q.push(" AND order_id < ")
            .push_bind(ids_from(t + ID_CLOCK_SLACK));
    }
    if f.sla_at_risk {
        let open: Vec<&str> = OrderState::ALL
            .iter()
            .filter(|s| s.is_open())
            .map(|s| s.as_db())
            .collect();
        q.push(" AND promise_time < now() + interval '24 hours' AND state = ANY(")
            .push_bind(open)
            .push(")");
    }
    if let Some(id) = f.after {
        q.push(" AND order_id < ").push_bind(id);
    }
    let limit = i64::from(f.page_size.get());
    q.push(" ORDER BY order_id DESC LIMIT ")
        .push_bind(limit + 1);
    let rows: Vec<(Uuid, Vec<u8>)> = q.build_query_as().fetch_all(pool).await?;
    let more = rows.len() as i64 > limit;
    let mut orders = Vec::with_capacity(rows.len());
    let mut last = None;
    for (id, doc) in rows.into_iter().take(limit as usize) {
        orders.push(decode(&doc)?);
        last = Some(id);
    }
    Ok((orders, if more { last } else { None }))
}

/// How far an order id's clock may be from its create time: the id is
/// taken right after the time, from the same clock; the slack covers a
/// slow batch and a small clock step.
const ID_CLOCK_SLACK: chrono::TimeDelta = chrono::TimeDelta::minutes(1);

/// The lowest UUIDv7 of the millisecond `t`: ids from then on are >= it.
fn ids_from(t: DateTime<Utc>) -> Uuid {
    let ms = u128::try_from(t.timestamp_millis()).unwrap_or(0);
    Uuid::from_u128(ms << 80)
}

/// Whether an order could be locked without waiting.
pub enum TryLock {
    Locked(Box<Order>, Option<OrderState>),
    /// A request is changing it right now.
    Busy,
    Missing,
}

/// Locks an order unless someone else holds it. The saga uses this: it
/// already holds its step's row lock, and waiting here while a request
/// that holds the order waits on that step would deadlock.
pub async fn try_lock(
    tx: &mut PgConnection,
    tenant: &Tenant,
    order_id: Uuid,
) -> sqlx::Result<TryLock> {
    let row: Option<(Vec<u8>, String)> = sqlx::query_as(
        "SELECT doc, held_from FROM orders WHERE tenant = $1 AND order_id = $2 FOR UPDATE SKIP LOCKED",
    )
    .bind(tenant.as_str())
    .bind(order_id)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((d, h)) = row {
        return Ok(TryLock::Locked(
            Box::new(decode(&d)?),
            OrderState::from_db(&h),
        ));
    }
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM orders WHERE tenant = $1 AND order_id = $2)",
    )
    .bind(tenant.as_str())
    .bind(order_id)
    .fetch_one(tx)
    .await?;
    Ok(if exists {
        TryLock::Busy
    } else {
        TryLock::Missing
    })
}

/// An order locked for a change, with the state it was held in.
pub async fn lock(
    tx: &mut PgConnection,
    tenant: &Tenant,
    order_id: Uuid,
) -> sqlx::Result<Option<(Order, Option<OrderState>)>> {
    let row: Option<(Vec<u8>, String)> = sqlx::query_as(
        "SELECT doc, held_from FROM orders WHERE tenant = $1 AND order_id = $2 FOR UPDATE",
    )
    .bind(tenant.as_str())
    .bind(order_id)
    .fetch_optional(tx)
    .await?;
    row.map(|(d, h)| decode(&d).map(|o| (o, OrderState::from_db(&h))))
        .transpose()
}

/// Writes a changed order (its version and update time are set here).
pub async fn save(
    tx: &mut PgConnection,
    tenant: &Tenant,
    order_id: Uuid,
    order: &mut Order,
    held_from: Option<OrderState>,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    order.version += 1;
    order.update_time = Some(oms_runtime::time::to_timestamp(now));
    let state = oms_proto::orders::OrderState::try_from(order.state)
        .ok()
        .and_then(OrderState::from_proto)
        .unwrap_or(OrderState::Created);
    sqlx::query(
        "UPDATE orders SET state = $3, held_from = $4, doc = $5, version = $6, update_time = $7,
                           node_ids = $8
         WHERE tenant = $1 AND order_id = $2",
    )
    .bind(tenant.as_str())
    .bind(order_id)
    .bind(state.as_db())
    .bind(held_from.map_or("", |s| s.as_db()))
    .bind(order.encode_to_vec())
    .bind(order.version)
    .bind(now)
    .bind(nodes_of(order))
    .execute(tx)
    .await?;
    Ok(())
}

/// The nodes an order's lines are sourced from, each once: what the list
/// filter by node finds. (New orders have none: sourcing is output only.)
fn nodes_of(order: &Order) -> Vec<&str> {
    let mut nodes: Vec<&str> = order
        .lines
        .iter()
        .flat_map(|l| l.sourcing.iter().map(|s| s.node_id.as_str()))
        .collect();
    nodes.sort_unstable();
    nodes.dedup();
    nodes
}

/// Orders per state (the operations board).
pub async fn counts(
    pool: &PgPool,
    tenant: &Tenant,
    channel: Option<&str>,
) -> sqlx::Result<Vec<(OrderState, i64)>> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT state, count(*) FROM orders WHERE tenant = $1 AND ($2::text IS NULL OR channel = $2)
         GROUP BY state",
    )
    .bind(tenant.as_str())
    .bind(channel)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(s, n)| OrderState::from_db(&s).map(|s| (s, n)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_from_a_time_bound_the_ids_made_then() {
        let before = Utc::now();
        let id = Uuid::now_v7();
        let after = Utc::now() + chrono::TimeDelta::milliseconds(1);
        assert!(ids_from(before) <= id, "{id} made after {before}");
        assert!(id < ids_from(after), "{id} made before {after}");
        assert_eq!(ids_from(DateTime::<Utc>::MIN_UTC), Uuid::nil());
    }
}
