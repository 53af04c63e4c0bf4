//! Serial numbers of serial-tracked items: where each unit is.
use chrono::{DateTime, Utc};
use oms_kernel::Tenant;
use oms_proto::inventory::SerialNumber;
use oms_runtime::time::to_timestamp;
use sqlx::postgres::PgArguments;
use sqlx::query::QueryScalar;
use sqlx::{PgConnection, PgExecutor, Postgres};
use std::collections::HashSet;
use uuid::Uuid;

/// What a movement does to its serial numbers.
pub struct Moved<'a> {
    pub sku: &'a str,
    pub node: &'a str,
    pub lot: &'a str,
    pub serials: &'a [String],
    pub movement: Uuid,
    pub now: DateTime<Utc>,
}

/// Puts serials on hand at the node; returns those that are on hand
/// somewhere already (`at_node_too`: except at this very node, for
/// counts), which are left as they were.
pub async fn arrive(
    tx: &mut PgConnection,
    tenant: &Tenant,
    m: &Moved<'_>,
    at_node_too: bool,
) -> sqlx::Result<Vec<String>> {
    let q = sqlx::query_scalar(
        "INSERT INTO serials (tenant, sku, serial, node_id, lot, movement_id, update_time)
         SELECT $1, $2, s, $3, $4, $5, $6 FROM UNNEST($7::text[]) AS s
         ON CONFLICT (tenant, sku, serial) DO UPDATE
            SET node_id = EXCLUDED.node_id, lot = EXCLUDED.lot,
                movement_id = EXCLUDED.movement_id, update_time = EXCLUDED.update_time
            WHERE serials.node_id IS NULL OR ($8 AND serials.node_id = EXCLUDED.node_id)
         RETURNING serial",
    );
    let moved = run(tx, with(q, tenant, m).bind(at_node_too)).await?;
    Ok(refused(m.serials, &moved))
}

/// Takes serials off hand at the node (and lot); returns those that were
/// not on hand there, which are left as they were.
pub async fn leave(
    tx: &mut PgConnection,
    tenant: &Tenant,
    m: &Moved<'_>,
) -> sqlx::Result<Vec<String>> {
    let q = sqlx::query_scalar(
        "UPDATE serials SET node_id = NULL, movement_id = $5, update_time = $6
         WHERE tenant = $1 AND sku = $2 AND node_id = $3 AND lot = $4 AND serial = ANY($7)
         RETURNING serial",
    );
    let moved = run(tx, with(q, tenant, m)).await?;
    Ok(refused(m.serials, &moved))
}

/// A count that lists serials: those on hand at the node (and lot) that it
/// does not list are gone. Returns them.
pub async fn count_out_unlisted(
    tx: &mut PgConnection,
    tenant: &Tenant,
    m: &Moved<'_>,
) -> sqlx::Result<Vec<String>> {
    let q = sqlx::query_scalar(
        "UPDATE serials SET node_id = NULL, movement_id = $5, update_time = $6
         WHERE tenant = $1 AND sku = $2 AND node_id = $3 AND lot = $4 AND NOT (serial = ANY($7))
         RETURNING serial",
    );
    Ok(run(tx, with(q, tenant, m)).await?.into_iter().collect())
}

/// How many serials are on hand at a node, in a lot, and the first five
/// of them by serial (for a message).
pub async fn on_hand_at(
    db: impl PgExecutor<'_>,
    tenant: &Tenant,
    sku: &str,
    node: &str,
    lot: &str,
) -> sqlx::Result<(i64, Vec<String>)> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT serial, count(*) OVER () FROM serials
         WHERE tenant = $1 AND node_id = $2 AND sku = $3 AND lot = $4 ORDER BY serial LIMIT 5",
    )
    .bind(tenant.as_str())
    .bind(node)
    .bind(sku)
    .bind(lot)
    .fetch_all(db)
    .await?;
    let n = rows.first().map_or(0, |(_, n)| *n);
    Ok((n, rows.into_iter().map(|(s, _)| s).collect()))
}

/// Adds a movement to the history of the serials it moved.
pub async fn record_history(
    tx: &mut PgConnection,
    tenant: &Tenant,
    sku: &str,
    serials: &[String],
    movement: Uuid,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO serial_movements (tenant, serial, sku, movement_id)
         SELECT $1, s, $2, $3 FROM UNNEST($4::text[]) AS s ON CONFLICT DO NOTHING",
    )
    .bind(tenant.as_str())
    .bind(sku)
    .bind(movement)
    .bind(serials)
    .execute(tx)
    .await?;
    Ok(())
}

type Statement<'q> = QueryScalar<'q, Postgres, String, PgArguments>;

/// Binds a movement as $1-$7: tenant, SKU, node, lot, movement, time,
/// serials.
fn with<'q>(q: Statement<'q>, tenant: &'q Tenant, m: &'q Moved<'q>) -> Statement<'q> {
    q.bind(tenant.as_str())
        .bind(m.sku)
        .bind(m.node)
        .bind(m.lot)
        .bind(m.movement)
        .bind(m.now)
        .bind(m.serials)
}

/// The serials a statement changed.
async fn run(tx: &mut PgConnection, q: Statement<'_>) -> sqlx::Result<HashSet<String>> {
    Ok(q.fetch_all(tx).await?.into_iter().collect())
}

fn refused(asked: &[String], done: &HashSet<String>) -> Vec<String> {
    asked
        .iter()
        .filter(|s| !done.contains(*s))
        .cloned()
        .collect()
}

/// Where some serials are: (serial, node; empty when gone), for messages.
pub async fn whereabouts(
    db: impl PgExecutor<'_>,
    tenant: &Tenant,
    sku: &str,
    serials: &[String],
) -> sqlx::Result<Vec<(String, String)>> {
    sqlx::query_as(
        "SELECT serial, COALESCE(node_id, '') FROM serials
         WHERE tenant = $1 AND sku = $2 AND serial = ANY($3) ORDER BY serial",
    )
    .bind(tenant.as_str())
    .bind(sku)
    .bind(serials)
    .fetch_all(db)
    .await
}

pub struct SerialFilter<'a> {
    pub sku: &'a str,
    pub node: Option<&'a str>,
    pub serials: &'a [String],
    pub include_gone: bool,
    pub after: Option<&'a str>,
    pub limit: i64,
}

/// serial, node (None once gone), lot, last movement, its time.
type SerialRow = (String, Option<String>, String, Uuid, DateTime<Utc>);

/// A page of serials by serial number.
pub async fn list(
    db: impl PgExecutor<'_>,
    tenant: &Tenant,
    f: &SerialFilter<'_>,
) -> sqlx::Result<Vec<SerialNumber>> {
    let rows: Vec<SerialRow> = sqlx::query_as(
        "SELECT serial, node_id, lot, movement_id, update_time FROM serials
         WHERE tenant = $1 AND sku = $2
           AND ($3::text IS NULL OR node_id = $3)
           AND (cardinality($4::text[]) = 0 OR serial = ANY($4))
           AND ($5 OR node_id IS NOT NULL)
           AND ($6::text IS NULL OR serial > $6)
         ORDER BY serial LIMIT $7",
    )
    .bind(tenant.as_str())
    .bind(f.sku)
    .bind(f.node)
    .bind(f.serials)
    .bind(f.include_gone)
    .bind(f.after)
    .bind(f.limit)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(serial, node, lot, movement, at)| SerialNumber {
            sku: f.sku.to_owned(),
            serial_number: serial,
            node_id: node.unwrap_or_default(),
            lot,
            movement_id: movement.to_string(),
            update_time: Some(to_timestamp(at)),
        })
        .collect())
}
