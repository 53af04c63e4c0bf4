//! Feeds of other services that orders follows, their cursors, and what
//! orders keeps of the fulfillment orders it hears about.
use oms_kernel::Tenant;
use oms_proto::fulfillment::FulfillmentOrder;
use oms_runtime::db::decode;
use prost::Message;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

pub const FULFILLMENT: &str = "fulfillment";

/// Starts following `source` for `tenant` (from the beginning) unless it
/// is followed already.
pub async fn follow(tx: &mut PgConnection, source: &str, tenant: &Tenant) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO feed_cursors (source, tenant) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(source)
        .bind(tenant.as_str())
        .execute(tx)
        .await?;
    Ok(())
}

/// Tenants followed on `source`, with their cursors.
pub async fn followed(
    ex: impl PgExecutor<'_>,
    source: &str,
) -> sqlx::Result<Vec<(String, String)>> {
    sqlx::query_as("SELECT tenant, cursor FROM feed_cursors WHERE source = $1")
        .bind(source)
        .fetch_all(ex)
        .await
}

pub async fn advance(
    tx: &mut PgConnection,
    source: &str,
    tenant: &Tenant,
    cursor: &str,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE feed_cursors SET cursor = $3 WHERE source = $1 AND tenant = $2")
        .bind(source)
        .bind(tenant.as_str())
        .bind(cursor)
        .execute(tx)
        .await?;
    Ok(())
}

/// Stores the latest report of a fulfillment order; returns the previous.
pub async fn put_fulfillment(
    tx: &mut PgConnection,
    tenant: &Tenant,
    order_id: Uuid,
    fo: &FulfillmentOrder,
) -> sqlx::Result<Option<FulfillmentOrder>> {
    let old: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT doc FROM fulfillments WHERE tenant = $1 AND name = $2")
            .bind(tenant.as_str())
            .bind(&fo.name)
            .fetch_optional(&mut *tx)
            .await?;
    sqlx::query(
        "INSERT INTO fulfillments (tenant, order_id, name, doc) VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant, name) DO UPDATE SET doc = EXCLUDED.doc",
    )
    .bind(tenant.as_str())
    .bind(order_id)
    .bind(&fo.name)
    .bind(fo.encode_to_vec())
    .execute(&mut *tx)
    .await?;
    old.map(|d| decode(&d)).transpose()
}

/// Every fulfillment order of an order, as last reported.
pub async fn fulfillments(
    tx: &mut PgConnection,
    tenant: &Tenant,
    order_id: Uuid,
) -> sqlx::Result<Vec<FulfillmentOrder>> {
    let docs: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT doc FROM fulfillments WHERE tenant = $1 AND order_id = $2")
            .bind(tenant.as_str())
            .bind(order_id)
            .fetch_all(tx)
            .await?;
    docs.iter().map(|d| decode(d)).collect()
}
