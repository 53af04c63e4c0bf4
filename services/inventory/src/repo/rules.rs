use super::decode;
use crate::domain::pairs::{PairMap, find};
use oms_kernel::Tenant;
use oms_proto::inventory::{ChannelRule, SafetyStock};
use prost::Message;
use sqlx::{PgConnection, PgExecutor};

/// Safety stock rows (node, sku; sku '' = node default) for some SKUs.
pub async fn safety(
    db: impl PgExecutor<'_>,
    tenant: &Tenant,
    skus: &[String],
) -> sqlx::Result<PairMap<i64>> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT node_id, sku, quantity FROM safety_stock
         WHERE tenant = $1 AND (sku = '' OR cardinality($2::text[]) = 0 OR sku = ANY($2))",
    )
    .bind(tenant.as_str())
    .bind(skus)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|(n, s, q)| ((n, s), q)).collect())
}

/// A page of safety stock rows by node, then SKU, after `after`; with
/// SKUs, their rows and the node defaults that apply to them.
pub async fn list_safety(
    db: impl PgExecutor<'_>,
    tenant: &Tenant,
    node: Option<&str>,
    skus: &[String],
    after: Option<&(String, String)>,
    limit: i64,
) -> sqlx::Result<Vec<SafetyStock>> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT node_id, sku, quantity FROM safety_stock
         WHERE tenant = $1 AND ($2::text IS NULL OR node_id = $2)
           AND (cardinality($3::text[]) = 0 OR sku = '' OR sku = ANY($3))
           AND ($4::text IS NULL OR (node_id, sku) > ($4, $5))
         ORDER BY node_id, sku LIMIT $6",
    )
    .bind(tenant.as_str())
    .bind(node)
    .bind(skus)
    .bind(after.map(|a| a.0.as_str()))
    .bind(after.map(|a| a.1.as_str()).unwrap_or(""))
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(node_id, sku, quantity)| SafetyStock {
            node_id,
            sku,
            quantity,
        })
        .collect())
}

/// The safety stock in force for a SKU at a node.
pub fn effective(safety: &PairMap<i64>, node: &str, sku: &str) -> i64 {
    find(safety, node, sku)
        .or_else(|| find(safety, node, ""))
        .copied()
        .unwrap_or(0)
}

/// The safety stock rows at one node: its default and, with `sku`, that
/// SKU's own row; without, every SKU's.
pub async fn safety_at(
    db: impl PgExecutor<'_>,
    tenant: &Tenant,
    node: &str,
    sku: Option<&str>,
) -> sqlx::Result<PairMap<i64>> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT sku, quantity FROM safety_stock
         WHERE tenant = $1 AND node_id = $2 AND ($3::text IS NULL OR sku = '' OR sku = $3)",
    )
    .bind(tenant.as_str())
    .bind(node)
    .bind(sku)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(s, q)| ((node.to_owned(), s), q))
        .collect())
}

/// Sets a safety stock row.
pub async fn set_safety(
    tx: &mut PgConnection,
    tenant: &Tenant,
    node: &str,
    sku: &str,
    quantity: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO safety_stock (tenant, node_id, sku, quantity) VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant, node_id, sku) DO UPDATE SET quantity = EXCLUDED.quantity",
    )
    .bind(tenant.as_str())
    .bind(node)
    .bind(sku)
    .bind(quantity)
    .execute(tx)
    .await?;
    Ok(())
}

/// Removes a safety stock row, if there is one.
pub async fn remove_safety(
    tx: &mut PgConnection,
    tenant: &Tenant,
    node: &str,
    sku: &str,
) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM safety_stock WHERE tenant = $1 AND node_id = $2 AND sku = $3")
        .bind(tenant.as_str())
        .bind(node)
        .bind(sku)
        .execute(tx)
        .await?;
    Ok(())
}

/// SKUs the tenant has at a node.
pub async fn skus_at(
    tx: &mut PgConnection,
    tenant: &Tenant,
    node: &str,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar("SELECT DISTINCT sku FROM stock WHERE tenant = $1 AND node_id = $2")
        .bind(tenant.as_str())
        .bind(node)
        .fetch_all(tx)
        .await
}

pub async fn set_channel_rule(
    tx: &mut PgConnection,
    tenant: &Tenant,
    rule: &ChannelRule,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO channel_rules (tenant, channel, doc) VALUES ($1, $2, $3)
         ON CONFLICT (tenant, channel) DO UPDATE SET doc = EXCLUDED.doc",
    )
    .bind(tenant.as_str())
    .bind(&rule.channel)
    .bind(rule.encode_to_vec())
    .execute(tx)
    .await?;
    Ok(())
}

/// Removes a channel's rule; false when it had none.
pub async fn remove_channel_rule(
    tx: &mut PgConnection,
    tenant: &Tenant,
    channel: &str,
) -> sqlx::Result<bool> {
    let done = sqlx::query("DELETE FROM channel_rules WHERE tenant = $1 AND channel = $2")
        .bind(tenant.as_str())
        .bind(channel)
        .execute(tx)
        .await?;
    Ok(done.rows_affected() > 0)
}

pub async fn channel_rule(
    db: impl PgExecutor<'_>,
    tenant: &Tenant,
    channel: &str,
) -> sqlx::Result<Option<ChannelRule>> {
    let doc: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT doc FROM channel_rules WHERE tenant = $1 AND channel = $2")
            .bind(tenant.as_str())
            .bind(channel)
            .fetch_optional(db)
            .await?;
    doc.as_deref().map(decode).transpose()
}

pub async fn channel_rules(
    db: impl PgExecutor<'_>,
    tenant: &Tenant,
    after: &str,
    limit: i64,
) -> sqlx::Result<Vec<ChannelRule>> {
    let docs: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT doc FROM channel_rules WHERE tenant = $1 AND channel > $2 ORDER BY channel LIMIT $3",
    )
    .bind(tenant.as_str())
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await?;
    docs.iter().map(|d| decode(d)).collect()
}
