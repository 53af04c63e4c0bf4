use super::decode;
use chrono::{DateTime, Utc};
use oms_kernel::Tenant;
use oms_proto::inventory::Node;
use prost::Message;
use sqlx::{PgConnection, PgExecutor, Postgres, QueryBuilder};
use std::collections::HashMap;

// A tenant sees the nodes it owns and those shared with it.

/// Inserts a node; false when the id is taken.
pub async fn insert(tx: &mut PgConnection, node: &Node, now: DateTime<Utc>) -> sqlx::Result<bool> {
    let n = sqlx::query(
        "INSERT INTO nodes (node_id, owner_tenant, shared_with, enabled, doc, create_time, update_time)
         VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (node_id) DO NOTHING",
    )
    .bind(&node.node_id)
    .bind(&node.owner_tenant)
    .bind(&node.shared_with_tenants)
    .bind(node.enabled)
    .bind(node.encode_to_vec())
    .bind(now)
    .execute(tx)
    .await?;
    Ok(n.rows_affected() == 1)
}

pub async fn update(tx: &mut PgConnection, node: &Node, now: DateTime<Utc>) -> sqlx::Result<()> {
    sqlx::query("UPDATE nodes SET shared_with = $2, enabled = $3, doc = $4, update_time = $5 WHERE node_id = $1")
        .bind(&node.node_id)
        .bind(&node.shared_with_tenants)
        .bind(node.enabled)
        .bind(node.encode_to_vec())
        .bind(now)
        .execute(tx)
        .await?;
    Ok(())
}

/// A node the tenant owns or shares.
pub async fn get_visible(
    db: impl PgExecutor<'_>,
    tenant: &Tenant,
    node_id: &str,
) -> sqlx::Result<Option<Node>> {
    let doc: Option<Vec<u8>> = sqlx::query_scalar(
        "SELECT doc FROM nodes WHERE node_id = $2 AND (owner_tenant = $1 OR $1 = ANY(shared_with))",
    )
    .bind(tenant.as_str())
    .bind(node_id)
    .fetch_optional(db)
    .await?;
    doc.as_deref().map(decode).transpose()
}

/// The nodes among `ids` the tenant may use (owns, or shares).
pub async fn get_visible_many(
    db: impl PgExecutor<'_>,
    tenant: &Tenant,
    ids: &[String],
) -> sqlx::Result<HashMap<String, Node>> {
    let docs: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT doc FROM nodes WHERE node_id = ANY($2) AND (owner_tenant = $1 OR $1 = ANY(shared_with))",
    )
    .bind(tenant.as_str())
    .bind(ids)
    .fetch_all(db)
    .await?;
    docs.iter()
        .map(|d| decode::<Node>(d).map(|n| (n.node_id.clone(), n)))
        .collect()
}

/// A node the tenant owns, locked for update.
pub async fn get_owned_for_update(
    tx: &mut PgConnection,
    tenant: &Tenant,
    node_id: &str,
) -> sqlx::Result<Option<Node>> {
    let doc: Option<Vec<u8>> = sqlx::query_scalar(
        "SELECT doc FROM nodes WHERE node_id = $2 AND owner_tenant = $1 FOR UPDATE",
    )
    .bind(tenant.as_str())
    .bind(node_id)
    .fetch_optional(tx)
    .await?;
    doc.as_deref().map(decode).transpose()
}

/// Which of `ids` the tenant may use, with their enabled flag.
pub async fn visible(
    db: impl PgExecutor<'_>,
    tenant: &Tenant,
    ids: &[String],
) -> sqlx::Result<HashMap<String, bool>> {
    let rows: Vec<(String, bool)> =
        sqlx::query_as(
            "SELECT node_id, enabled FROM nodes WHERE node_id = ANY($2) AND (owner_tenant = $1 OR $1 = ANY(shared_with))",
        )
            .bind(tenant.as_str())
            .bind(ids)
            .fetch_all(db)
            .await?;
    Ok(rows.into_iter().collect())
}

/// The time zone of each of these nodes (empty: none set).
pub async fn zones(
    db: impl PgExecutor<'_>,
    ids: &[String],
) -> sqlx::Result<HashMap<String, String>> {
    let rows: Vec<(String, Vec<u8>)> =
        sqlx::query_as("SELECT node_id, doc FROM nodes WHERE node_id = ANY($1)")
            .bind(ids)
            .fetch_all(db)
            .await?;
    rows.into_iter()
        .map(|(id, doc)| decode::<Node>(&doc).map(|n| (id, n.time_zone)))
        .collect()
}

/// Every enabled node the tenant may use.
pub async fn enabled_ids(db: impl PgExecutor<'_>, tenant: &Tenant) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT node_id FROM nodes WHERE enabled AND (owner_tenant = $1 OR $1 = ANY(shared_with))",
    )
    .bind(tenant.as_str())
    .fetch_all(db)
    .await
}

/// Tenants that hold stock or reservations at a node.
pub async fn tenants_at(tx: &mut PgConnection, node_id: &str) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT tenant FROM stock WHERE node_id = $1
         UNION SELECT tenant FROM held_totals WHERE node_id = $1 GROUP BY tenant HAVING SUM(held) <> 0",
    )
    .bind(node_id)
    .fetch_all(tx)
    .await
}

pub struct ListFilter {
    pub kinds: Vec<i32>,
    pub enabled_only: bool,
    pub after: Option<String>,
    pub limit: i64,
}

/// Nodes visible to the tenant, by id; region and capability are filtered
/// by the caller from the documents.
pub async fn list(
    db: impl PgExecutor<'_>,
    tenant: &Tenant,
    f: &ListFilter,
) -> sqlx::Result<Vec<Node>> {
    let mut q: QueryBuilder<Postgres> =
        QueryBuilder::new("SELECT doc FROM nodes WHERE (owner_tenant = ");
    q.push_bind(tenant.as_str().to_owned())
        .push(" OR ")
        .push_bind(tenant.as_str().to_owned())
        .push(" = ANY(shared_with))");
    if f.enabled_only {
        q.push(" AND enabled");
    }
    if let Some(a) = &f.after {
        q.push(" AND node_id > ").push_bind(a.clone());
    }
    q.push(" ORDER BY node_id LIMIT ").push_bind(f.limit);
    let docs: Vec<(Vec<u8>,)> = q.build_query_as().fetch_all(db).await?;
    let mut out = Vec::new();
    for (d,) in docs {
        let n: Node = decode(&d)?;
        if f.kinds.is_empty() || f.kinds.contains(&n.kind) {
            out.push(n);
        }
    }
    Ok(out)
}
