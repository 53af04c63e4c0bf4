//! What backorders ask for (`backorder_demand`), as orders last said.
use oms_kernel::Tenant;
use oms_proto::inventory::BackorderDemandFigure;
use sqlx::{PgConnection, PgExecutor};

/// A figure stored, with the units it had before (0: new).
pub struct Stored {
    pub figure: BackorderDemandFigure,
    pub was: i64,
}

/// Sorts figures by SKU, then channel.
pub fn sort(stored: &mut [Stored]) {
    stored.sort_by(|a, b| {
        (&a.figure.sku, &a.figure.channel).cmp(&(&b.figure.sku, &b.figure.channel))
    });
}

/// Stores the figures newer than the revision stored for each; returns
/// those stored (an older or repeated revision stores nothing), sorted.
/// The caller holds the source's lock ([`crate::repo::lock::backorder_demand`]),
/// so what they had is what the last setting left.
pub async fn set(
    tx: &mut PgConnection,
    tenant: &Tenant,
    (source, revision): (&str, i64),
    figures: &[BackorderDemandFigure],
) -> sqlx::Result<Vec<Stored>> {
    let skus: Vec<&str> = figures.iter().map(|f| f.sku.as_str()).collect();
    let channels: Vec<&str> = figures.iter().map(|f| f.channel.as_str()).collect();
    let units: Vec<i64> = figures.iter().map(|f| f.units).collect();
    // Every part of the statement reads the table as it was before it.
    let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "WITH g AS (
           SELECT * FROM unnest($2::text[], $3::text[], $4::bigint[]) AS g(sku, channel, units)
         ), was AS (
           SELECT d.sku, d.channel, d.units FROM backorder_demand d JOIN g USING (sku, channel)
           WHERE d.tenant = $1 AND d.source = $6
         ), stored AS (
           INSERT INTO backorder_demand (tenant, sku, channel, units, revision, source)
           SELECT $1, sku, channel, units, $5, $6 FROM g
           ON CONFLICT (tenant, sku, channel, source) DO UPDATE
           SET units = excluded.units, revision = excluded.revision, update_time = now()
           WHERE backorder_demand.revision < excluded.revision
           RETURNING sku, channel, units
         )
         SELECT s.sku, s.channel, s.units, coalesce(was.units, 0)
         FROM stored s LEFT JOIN was USING (sku, channel)",
    )
    .bind(tenant.as_str())
    .bind(&skus)
    .bind(&channels)
    .bind(&units)
    .bind(revision)
    .bind(source)
    .fetch_all(&mut *tx)
    .await?;
    let mut stored: Vec<Stored> = rows
        .into_iter()
        .map(|(sku, channel, units, was)| Stored {
            figure: BackorderDemandFigure {
                sku,
                channel,
                units,
            },
            was,
        })
        .collect();
    sort(&mut stored);
    Ok(stored)
}

/// Sets to 0 every figure of `source` stored below `revision` (the rest
/// of a full statement made at `revision`); returns those that had units.
pub async fn zero_the_rest(
    tx: &mut PgConnection,
    tenant: &Tenant,
    (source, revision): (&str, i64),
) -> sqlx::Result<Vec<Stored>> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "UPDATE backorder_demand d SET units = 0, revision = $3, update_time = now()
         FROM backorder_demand was
         WHERE d.tenant = $1 AND d.source = $2 AND d.revision < $3
           AND was.tenant = d.tenant AND was.sku = d.sku AND was.channel = d.channel
           AND was.source = d.source
         RETURNING d.sku, d.channel, was.units",
    )
    .bind(tenant.as_str())
    .bind(source)
    .bind(revision)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .into_iter()
        .filter(|(_, _, had)| *had > 0)
        .map(|(sku, channel, was)| Stored {
            figure: BackorderDemandFigure {
                sku,
                channel,
                units: 0,
            },
            was,
        })
        .collect())
}

/// Every figure, per source: (sku, source, channel, units), as the gate
/// keeps them (those of 0 too: a rebuild rewrites their SKUs' figures).
pub async fn all_by_source(
    db: impl PgExecutor<'_>,
    tenant: &Tenant,
) -> sqlx::Result<Vec<(String, String, String, i64)>> {
    sqlx::query_as(
        "SELECT sku, source, channel, units FROM backorder_demand
         WHERE tenant = $1",
    )
    .bind(tenant.as_str())
    .fetch_all(db)
    .await
}

/// The demand of these SKUs, every source's but `except`'s summed: (sku,
/// channel, units), none of 0.
pub async fn of(
    db: impl PgExecutor<'_>,
    tenant: &Tenant,
    skus: &[String],
    except: &str,
) -> sqlx::Result<Vec<(String, String, i64)>> {
    sqlx::query_as(
        "SELECT sku, channel, sum(units)::bigint FROM backorder_demand
         WHERE tenant = $1 AND sku = ANY($2) AND units > 0 AND source <> $3
         GROUP BY sku, channel",
    )
    .bind(tenant.as_str())
    .bind(skus)
    .bind(except)
    .fetch_all(db)
    .await
}
