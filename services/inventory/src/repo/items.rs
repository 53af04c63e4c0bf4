use super::decode;
use chrono::{DateTime, Utc};
use oms_kernel::Tenant;
use oms_proto::inventory::Item;
use prost::Message;
use sqlx::{PgConnection, PgExecutor};
use std::collections::HashMap;

pub async fn insert(
    tx: &mut PgConnection,
    tenant: &Tenant,
    item: &Item,
    now: DateTime<Utc>,
) -> sqlx::Result<bool> {
    let n = sqlx::query(
        "INSERT INTO items (tenant, sku, doc, create_time, update_time) VALUES ($1, $2, $3, $4, $4)
         ON CONFLICT DO NOTHING",
    )
    .bind(tenant.as_str())
    .bind(&item.sku)
    .bind(item.encode_to_vec())
    .bind(now)
    .execute(tx)
    .await?;
    Ok(n.rows_affected() == 1)
}

pub async fn update(
    tx: &mut PgConnection,
    tenant: &Tenant,
    item: &Item,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE items SET doc = $3, update_time = $4 WHERE tenant = $1 AND sku = $2")
        .bind(tenant.as_str())
        .bind(&item.sku)
        .bind(item.encode_to_vec())
        .bind(now)
        .execute(tx)
        .await?;
    Ok(())
}

/// How an item read locks the item for the rest of the transaction.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    None,
    /// Held by a movement, which records its lot's dates by the item's
    /// minimum shelf life: an update of the item waits for it, and it for
    /// the update.
    Share,
    /// Held by an update of the item.
    Update,
}

/// One item of the tenant.
pub async fn get(
    db: impl PgExecutor<'_>,
    tenant: &Tenant,
    sku: &str,
    lock: Lock,
) -> sqlx::Result<Option<Item>> {
    let sql = match lock {
        Lock::None => "SELECT doc FROM items WHERE tenant = $1 AND sku = $2",
        Lock::Share => "SELECT doc FROM items WHERE tenant = $1 AND sku = $2 FOR KEY SHARE",
        Lock::Update => "SELECT doc FROM items WHERE tenant = $1 AND sku = $2 FOR UPDATE",
    };
    let doc: Option<Vec<u8>> = sqlx::query_scalar(sql)
        .bind(tenant.as_str())
        .bind(sku)
        .fetch_optional(db)
        .await?;
    doc.as_deref().map(decode).transpose()
}

/// The items among `skus` that exist.
pub async fn existing(
    db: impl PgExecutor<'_>,
    tenant: &Tenant,
    skus: &[String],
) -> sqlx::Result<HashMap<String, Item>> {
    let docs: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT doc FROM items WHERE tenant = $1 AND sku = ANY($2)")
            .bind(tenant.as_str())
            .bind(skus)
            .fetch_all(db)
            .await?;
    docs.iter()
        .map(|d| decode::<Item>(d).map(|i| (i.sku.clone(), i)))
        .collect()
}

/// The items among `skus` that exist, each locked as a movement locks it
/// (`Lock::Share`), in SKU order as `stock::lock_for_movements` takes
/// them.
pub async fn existing_shared(
    tx: &mut PgConnection,
    tenant: &Tenant,
    skus: &[String],
) -> sqlx::Result<HashMap<String, Item>> {
    let docs: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT doc FROM items WHERE tenant = $1 AND sku = ANY($2) ORDER BY sku FOR KEY SHARE",
    )
    .bind(tenant.as_str())
    .bind(skus)
    .fetch_all(tx)
    .await?;
    docs.iter()
        .map(|d| decode::<Item>(d).map(|i| (i.sku.clone(), i)))
        .collect()
}

pub async fn list(
    db: impl PgExecutor<'_>,
    tenant: &Tenant,
    after: Option<&str>,
    limit: i64,
) -> sqlx::Result<Vec<Item>> {
    let docs: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT doc FROM items WHERE tenant = $1 AND sku > $2 ORDER BY sku LIMIT $3",
    )
    .bind(tenant.as_str())
    .bind(after.unwrap_or(""))
    .bind(limit)
    .fetch_all(db)
    .await?;
    docs.iter().map(|d| decode(d)).collect()
}

/// Every tenant with an item: those that may have a gate. Read only when
/// a replica died, so a scan of the key's index is fine.
pub async fn tenants(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar("SELECT DISTINCT tenant FROM items")
        .fetch_all(db)
        .await
}
