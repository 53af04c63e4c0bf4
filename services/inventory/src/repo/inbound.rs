//! What inbound deliveries still bring (`expected_inbounds` and their
//! lines), as their source last said.
use chrono::{DateTime, Utc};
use oms_kernel::Tenant;
use oms_proto::inventory::{ExpectedInbound, InboundLine};
use oms_runtime::time::{from_timestamp, to_timestamp};
use sqlx::{PgConnection, PgExecutor};
use std::collections::HashMap;

type Header = (
    String,
    String,
    String,
    Option<DateTime<Utc>>,
    i64,
    DateTime<Utc>,
);

/// The columns of a [`Header`] (a macro: statements are literals, see
/// `concat!`).
macro_rules! header {
    () => {
        "SELECT source, inbound_id, node_id, expected_arrival, revision, update_time FROM expected_inbounds"
    };
}

/// The deliveries of `headers` with their lines, in the order given.
async fn with_lines(
    db: &mut PgConnection,
    tenant: &Tenant,
    headers: Vec<Header>,
) -> sqlx::Result<Vec<ExpectedInbound>> {
    let sources: Vec<&str> = headers.iter().map(|h| h.0.as_str()).collect();
    let ids: Vec<&str> = headers.iter().map(|h| h.1.as_str()).collect();
    let lines: Vec<(String, String, String, i64)> = sqlx::query_as(
        "SELECT l.source, l.inbound_id, l.sku, l.units FROM expected_inbound_lines l
         JOIN unnest($2::text[], $3::text[]) AS k(source, inbound_id) USING (source, inbound_id)
         WHERE l.tenant = $1 ORDER BY l.sku",
    )
    .bind(tenant.as_str())
    .bind(&sources)
    .bind(&ids)
    .fetch_all(&mut *db)
    .await?;
    // Each delivery's lines, in SKU order: one pass, not a scan of every
    // line per delivery (a page of 1,000 deliveries of 1,000 lines each).
    let mut by_delivery: HashMap<(String, String), Vec<InboundLine>> = HashMap::new();
    for (source, inbound_id, sku, units) in lines {
        let line = InboundLine { sku, units };
        by_delivery
            .entry((source, inbound_id))
            .or_default()
            .push(line);
    }
    Ok(headers
        .into_iter()
        .map(|(source, inbound_id, node_id, at, revision, updated)| {
            let key = (source, inbound_id);
            let lines = by_delivery.remove(&key).unwrap_or_default();
            let (source, inbound_id) = key;
            ExpectedInbound {
                source,
                inbound_id,
                node_id,
                expected_arrival_time: at.map(to_timestamp),
                lines,
                revision,
                update_time: Some(to_timestamp(updated)),
            }
        })
        .collect())
}

/// The delivery as stored, if any.
pub async fn get(
    tx: &mut PgConnection,
    tenant: &Tenant,
    source: &str,
    inbound_id: &str,
) -> sqlx::Result<Option<ExpectedInbound>> {
    let header: Option<Header> = sqlx::query_as(concat!(
        header!(),
        " WHERE tenant = $1 AND source = $2 AND inbound_id = $3"
    ))
    .bind(tenant.as_str())
    .bind(source)
    .bind(inbound_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(header) = header else {
        return Ok(None);
    };
    Ok(with_lines(tx, tenant, vec![header]).await?.pop())
}

/// Replaces the delivery and its lines (those of 0 units left out).
pub async fn put(
    tx: &mut PgConnection,
    tenant: &Tenant,
    inbound: &ExpectedInbound,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    let at = inbound
        .expected_arrival_time
        .as_ref()
        .and_then(from_timestamp);
    sqlx::query(
        "INSERT INTO expected_inbounds
           (tenant, source, inbound_id, node_id, expected_arrival, revision, update_time)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (tenant, source, inbound_id) DO UPDATE
         SET node_id = excluded.node_id, expected_arrival = excluded.expected_arrival,
             revision = excluded.revision, update_time = excluded.update_time",
    )
    .bind(tenant.as_str())
    .bind(&inbound.source)
    .bind(&inbound.inbound_id)
    .bind(&inbound.node_id)
    .bind(at)
    .bind(inbound.revision)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "DELETE FROM expected_inbound_lines WHERE tenant = $1 AND source = $2 AND inbound_id = $3",
    )
    .bind(tenant.as_str())
    .bind(&inbound.source)
    .bind(&inbound.inbound_id)
    .execute(&mut *tx)
    .await?;
    let lines = inbound.lines.iter().filter(|l| l.units > 0);
    let (skus, units): (Vec<&str>, Vec<i64>) = lines.map(|l| (l.sku.as_str(), l.units)).unzip();
    sqlx::query(
        "INSERT INTO expected_inbound_lines (tenant, source, inbound_id, sku, units)
         SELECT $1, $2, $3, sku, units FROM unnest($4::text[], $5::bigint[]) AS l(sku, units)",
    )
    .bind(tenant.as_str())
    .bind(&inbound.source)
    .bind(&inbound.inbound_id)
    .bind(&skus)
    .bind(&units)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Units expected per (receiving node, SKU) and expected arrival (None:
/// not said), for these SKUs: the rows `Figures::add_on_the_way` takes.
pub async fn expected(
    db: impl PgExecutor<'_>,
    tenant: &Tenant,
    skus: &[String],
) -> sqlx::Result<Vec<crate::domain::availability::Arriving>> {
    sqlx::query_as(
        "SELECT h.node_id, l.sku, h.expected_arrival, SUM(l.units)::bigint
         FROM expected_inbound_lines l JOIN expected_inbounds h USING (tenant, source, inbound_id)
         WHERE l.tenant = $1 AND l.sku = ANY($2)
         GROUP BY h.node_id, l.sku, h.expected_arrival",
    )
    .bind(tenant.as_str())
    .bind(skus)
    .fetch_all(db)
    .await
}

/// A page of deliveries that still bring units, by (source, id) after
/// `after`, of `sku` and to `node` when not empty, expected before
/// `due_before` when given.
pub async fn list(
    db: &mut PgConnection,
    tenant: &Tenant,
    (sku, node, due_before): (&str, &str, Option<DateTime<Utc>>),
    after: Option<&(String, String)>,
    limit: i64,
) -> sqlx::Result<Vec<ExpectedInbound>> {
    let (after_source, after_id) = after.map_or(("", ""), |(s, i)| (s.as_str(), i.as_str()));
    let headers: Vec<Header> = sqlx::query_as(concat!(
        header!(),
        " h WHERE tenant = $1 AND (source, inbound_id) > ($2, $3)
           AND ($4 = '' OR node_id = $4)
           AND ($7::timestamptz IS NULL OR expected_arrival < $7)
           AND EXISTS (SELECT 1 FROM expected_inbound_lines l
                       WHERE l.tenant = h.tenant AND l.source = h.source
                         AND l.inbound_id = h.inbound_id AND ($5 = '' OR l.sku = $5))
         ORDER BY source, inbound_id LIMIT $6"
    ))
    .bind(tenant.as_str())
    .bind(after_source)
    .bind(after_id)
    .bind(node)
    .bind(sku)
    .bind(limit)
    .bind(due_before)
    .fetch_all(&mut *db)
    .await?;
    with_lines(db, tenant, headers).await
}
