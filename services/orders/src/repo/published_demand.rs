//! What inventory was last told the orders waiting for stock ask for
//! (`published_demand`), against what they ask for now (`stock_demand`).
use oms_kernel::Tenant;
use sqlx::{PgConnection, PgExecutor};

/// What orders waiting for stock ask of a SKU in a channel ('' = none).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Demand {
    pub sku: String,
    pub channel: String,
    pub units: i64,
}

/// Tenants whose demand may differ from what was published: those with
/// waits or with demand published.
pub async fn tenants(ex: impl PgExecutor<'_>) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT DISTINCT tenant FROM stock_waits
         UNION SELECT DISTINCT tenant FROM published_demand",
    )
    .fetch_all(ex)
    .await
}

/// Makes the tenant's publishers (one per replica) take turns until the
/// transaction ends, so that revisions reach inventory in the order their
/// figures were read.
pub async fn take_turn(tx: &mut PgConnection, tenant: &Tenant) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('demand:' || $1, 0))")
        .bind(tenant.as_str())
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Up to `limit` figures whose demand now differs from the published one
/// (0 where none waits any more), by SKU and channel; of `skus` only when
/// given. Planned for each call's own values (not a prepared generic
/// plan): with SKUs it reads their waits by index, without it every wait
/// of the tenant.
pub async fn unpublished(
    ex: impl PgExecutor<'_>,
    tenant: &Tenant,
    skus: Option<&[String]>,
    limit: i64,
) -> sqlx::Result<Vec<Demand>> {
    sqlx::query_as(
        "SELECT sku, channel, coalesce(d.units, 0)::bigint AS units
         FROM (SELECT sku, channel, sum(wanted)::bigint AS units FROM stock_demand
               WHERE tenant = $1 AND ($2::text[] IS NULL OR sku = ANY($2))
               GROUP BY sku, channel) d
         FULL JOIN (SELECT sku, channel, units FROM published_demand
                    WHERE tenant = $1 AND ($2::text[] IS NULL OR sku = ANY($2))) p
         USING (sku, channel)
         WHERE coalesce(d.units, 0) <> coalesce(p.units, 0)
         ORDER BY sku, channel LIMIT $3",
    )
    .persistent(false)
    .bind(tenant.as_str())
    .bind(skus)
    .bind(limit)
    .fetch_all(ex)
    .await
}

/// What the orders waiting for stock ask for now, every figure of the
/// tenant (none of 0), by SKU and channel.
pub async fn current(ex: impl PgExecutor<'_>, tenant: &Tenant) -> sqlx::Result<Vec<Demand>> {
    sqlx::query_as(
        "SELECT sku, channel, sum(wanted)::bigint AS units FROM stock_demand
         WHERE tenant = $1 GROUP BY sku, channel ORDER BY sku, channel",
    )
    .bind(tenant.as_str())
    .fetch_all(ex)
    .await
}

/// Remembers `figures` as all that was published for the tenant.
pub async fn replace(
    tx: &mut PgConnection,
    tenant: &Tenant,
    figures: &[Demand],
) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM published_demand WHERE tenant = $1")
        .bind(tenant.as_str())
        .execute(&mut *tx)
        .await?;
    published(tx, tenant, figures).await
}

/// The next revision: the database's clock in microseconds, rising for
/// a tenant since its publishers take turns (a sequence would start again
/// below inventory's figures if orders' database were restored).
pub async fn next_revision(ex: impl PgExecutor<'_>) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint")
        .fetch_one(ex)
        .await
}

/// Remembers `figures` as published (a figure of 0 is forgotten).
pub async fn published(
    tx: &mut PgConnection,
    tenant: &Tenant,
    figures: &[Demand],
) -> sqlx::Result<()> {
    let skus: Vec<&str> = figures.iter().map(|f| f.sku.as_str()).collect();
    let channels: Vec<&str> = figures.iter().map(|f| f.channel.as_str()).collect();
    let units: Vec<i64> = figures.iter().map(|f| f.units).collect();
    sqlx::query(
        "WITH f AS (SELECT * FROM unnest($2::text[], $3::text[], $4::bigint[]) AS f(sku, channel, units)),
         gone AS (
             DELETE FROM published_demand p USING f
             WHERE p.tenant = $1 AND p.sku = f.sku AND p.channel = f.channel AND f.units = 0
         )
         INSERT INTO published_demand (tenant, sku, channel, units)
         SELECT $1, sku, channel, units FROM f WHERE units > 0
         ON CONFLICT (tenant, sku, channel) DO UPDATE SET units = excluded.units",
    )
    .bind(tenant.as_str())
    .bind(&skus)
    .bind(&channels)
    .bind(&units)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
