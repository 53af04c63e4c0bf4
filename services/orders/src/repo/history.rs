use crate::domain::OrderState;
use chrono::{DateTime, Utc};
use oms_kernel::Tenant;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// One change to record.
pub struct Change<'a> {
    pub actor: &'a str,
    pub kind: &'a str,
    pub reason: &'a str,
    pub from: Option<OrderState>,
    pub to: Option<OrderState>,
    pub request_id: &'a str,
}

pub async fn record(
    tx: &mut PgConnection,
    tenant: &Tenant,
    order_id: Uuid,
    c: Change<'_>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO order_history (tenant, order_id, actor, kind, reason, from_state, to_state, request_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(tenant.as_str())
    .bind(order_id)
    .bind(c.actor)
    .bind(c.kind)
    .bind(c.reason)
    .bind(c.from.map_or("", |s| s.as_db()))
    .bind(c.to.map_or("", |s| s.as_db()))
    .bind(c.request_id)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Records the changes of many orders in one statement.
pub async fn record_many<'c>(
    tx: &mut PgConnection,
    changes: &[(&Tenant, Uuid, Change<'c>)],
) -> sqlx::Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let col = |f: fn(&Change<'c>) -> &'c str| -> Vec<&'c str> {
        changes.iter().map(|(_, _, c)| f(c)).collect()
    };
    let tenants: Vec<&str> = changes.iter().map(|(t, _, _)| t.as_str()).collect();
    let ids: Vec<Uuid> = changes.iter().map(|(_, id, _)| *id).collect();
    sqlx::query(
        "INSERT INTO order_history (tenant, order_id, actor, kind, reason, from_state, to_state, request_id)
         SELECT * FROM UNNEST($1::text[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[])",
    )
    .bind(&tenants)
    .bind(&ids)
    .bind(col(|c| c.actor))
    .bind(col(|c| c.kind))
    .bind(col(|c| c.reason))
    .bind(col(|c| c.from.map_or("", |s| s.as_db())))
    .bind(col(|c| c.to.map_or("", |s| s.as_db())))
    .bind(col(|c| c.request_id))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The kind and reason of the order's latest change.
pub async fn latest(
    tx: &mut PgConnection,
    tenant: &Tenant,
    order_id: Uuid,
) -> sqlx::Result<Option<(String, String)>> {
    sqlx::query_as(
        "SELECT kind, reason FROM order_history WHERE tenant = $1 AND order_id = $2
         ORDER BY seq DESC LIMIT 1",
    )
    .bind(tenant.as_str())
    .bind(order_id)
    .fetch_optional(tx)
    .await
}

/// A stored change.
pub struct Row {
    pub seq: i64,
    pub change_time: DateTime<Utc>,
    pub actor: String,
    pub kind: String,
    pub reason: String,
    pub from_state: Option<OrderState>,
    pub to_state: Option<OrderState>,
    pub request_id: String,
}

/// Up to `limit` changes after `after_seq`, oldest first.
pub async fn list(
    pool: &PgPool,
    tenant: &Tenant,
    order_id: Uuid,
    after_seq: i64,
    limit: i64,
) -> sqlx::Result<Vec<Row>> {
    type R = (
        i64,
        DateTime<Utc>,
        String,
        String,
        String,
        String,
        String,
        String,
    );
    let rows: Vec<R> = sqlx::query_as(
        "SELECT seq, change_time, actor, kind, reason, from_state, to_state, request_id
         FROM order_history WHERE tenant = $1 AND order_id = $2 AND seq > $3
         ORDER BY seq LIMIT $4",
    )
    .bind(tenant.as_str())
    .bind(order_id)
    .bind(after_seq)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Row {
            seq: r.0,
            change_time: r.1,
            actor: r.2,
            kind: r.3,
            reason: r.4,
            from_state: OrderState::from_db(&r.5),
            to_state: OrderState::from_db(&r.6),
            request_id: r.7,
        })
        .collect())
}
