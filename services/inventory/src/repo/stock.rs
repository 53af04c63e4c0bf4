use super::decode;
use chrono::{DateTime, Utc};
use oms_kernel::Tenant;
use oms_proto::inventory::{StockLevel, StockMovement};
use prost::Message;
use sqlx::{PgConnection, PgExecutor, Postgres, QueryBuilder};
use uuid::Uuid;

/// The on-hand of one lot, locked for the rest of the transaction; 0 when
/// the lot has never been seen.
pub async fn lock_on_hand(
    tx: &mut PgConnection,
    tenant: &Tenant,
    node: &str,
    sku: &str,
    lot: &str,
) -> sqlx::Result<i64> {
    sqlx::query(
        "INSERT INTO stock (tenant, node_id, sku, lot, on_hand) VALUES ($1, $2, $3, $4, 0) ON CONFLICT DO NOTHING",
    )
    .bind(tenant.as_str())
    .bind(node)
    .bind(sku)
    .bind(lot)
    .execute(&mut *tx)
    .await?;
    sqlx::query_scalar(
        "SELECT on_hand FROM stock WHERE tenant = $1 AND node_id = $2 AND sku = $3 AND lot = $4 FOR UPDATE",
    )
    .bind(tenant.as_str())
    .bind(node)
    .bind(sku)
    .bind(lot)
    .fetch_one(tx)
    .await
}

/// Sets the on-hand of a locked lot and appends the movement to the ledger.
pub async fn record(
    tx: &mut PgConnection,
    tenant: &Tenant,
    m: &StockMovement,
    id: Uuid,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE stock SET on_hand = $5, expiry_date = CASE WHEN $6 = '' THEN expiry_date ELSE $6 END
         WHERE tenant = $1 AND node_id = $2 AND sku = $3 AND lot = $4",
    )
    .bind(tenant.as_str())
    .bind(&m.node_id)
    .bind(&m.sku)
    .bind(&m.lot)
    .bind(m.on_hand_after)
    .bind(&m.expiry_date)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO movements (movement_id, tenant, node_id, sku, lot, kind, quantity, on_hand_after, record_time, doc)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(id)
    .bind(tenant.as_str())
    .bind(&m.node_id)
    .bind(&m.sku)
    .bind(&m.lot)
    .bind(m.kind.to_string())
    .bind(m.quantity)
    .bind(m.on_hand_after)
    .bind(now)
    .bind(m.encode_to_vec())
    .execute(tx)
    .await?;
    Ok(())
}

pub struct MovementFilter {
    pub node_id: Option<String>,
    pub sku: Option<String>,
    pub kinds: Vec<String>,
    pub serial: Option<String>,
    pub after: Option<(DateTime<Utc>, Uuid)>,
    pub limit: i64,
}

pub async fn movements(
    db: impl PgExecutor<'_>,
    tenant: &Tenant,
    f: &MovementFilter,
) -> sqlx::Result<Vec<(DateTime<Utc>, Uuid, StockMovement)>> {
    let mut q: QueryBuilder<Postgres> =
        QueryBuilder::new("SELECT record_time, movement_id, doc FROM movements WHERE tenant = ");
    q.push_bind(tenant.as_str().to_owned());
    if let Some(n) = &f.node_id {
        q.push(" AND node_id = ").push_bind(n.clone());
    }
    if let Some(s) = &f.sku {
        q.push(" AND sku = ").push_bind(s.clone());
    }
    if let Some(serial) = &f.serial {
        q.push(" AND movement_id IN (SELECT movement_id FROM serial_movements WHERE tenant = ")
            .push_bind(tenant.as_str().to_owned())
            .push(" AND serial = ")
            .push_bind(serial.clone())
            .push(")");
    }
    if !f.kinds.is_empty() {
        q.push(" AND kind = ANY(")
            .push_bind(f.kinds.clone())
            .push(")");
    }
    if let Some((t, id)) = f.after {
        q.push(" AND (record_time, movement_id) < (")
            .push_bind(t)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    q.push(" ORDER BY record_time DESC, movement_id DESC LIMIT ")
        .push_bind(f.limit);
    let rows: Vec<(DateTime<Utc>, Uuid, Vec<u8>)> = q.build_query_as().fetch_all(db).await?;
    rows.into_iter()
        .map(|(t, id, d)| decode(&d).map(|m| (t, id, m)))
        .collect()
}

/// Stock levels with allocated units per node and SKU; keyset on (node, sku, lot).
pub async fn levels(
    db: impl PgExecutor<'_>,
    tenant: &Tenant,
    node: Option<&str>,
    skus: &[String],
    after: Option<&(String, String, String)>,
    limit: i64,
) -> sqlx::Result<Vec<StockLevel>> {
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
        "SELECT s.node_id, s.sku, s.lot, s.expiry_date, s.on_hand,
                COALESCE((SELECT SUM(h.held) FROM held_totals h WHERE h.tenant = s.tenant AND h.node_id = s.node_id AND h.sku = s.sku), 0)::bigint
         FROM stock s WHERE s.tenant = ",
    );
    q.push_bind(tenant.as_str().to_owned());
    if let Some(n) = node {
        q.push(" AND s.node_id = ").push_bind(n.to_owned());
    }
    if !skus.is_empty() {
        q.push(" AND s.sku = ANY(")
            .push_bind(skus.to_vec())
            .push(")");
    }
    if let Some((n, s, l)) = after {
        q.push(" AND (s.node_id, s.sku, s.lot) > (")
            .push_bind(n.clone())
            .push(", ")
            .push_bind(s.clone())
            .push(", ")
            .push_bind(l.clone())
            .push(")");
    }
    q.push(" ORDER BY s.node_id, s.sku, s.lot LIMIT ")
        .push_bind(limit);
    let rows: Vec<(String, String, String, String, i64, i64)> =
        q.build_query_as().fetch_all(db).await?;
    Ok(rows
        .into_iter()
        .map(
            |(node_id, sku, lot, expiry_date, on_hand, allocated)| StockLevel {
                node_id,
                sku,
                lot,
                expiry_date,
                on_hand,
                allocated,
            },
        )
        .collect())
}

/// On-hand per (node, sku) summed over lots, for some SKUs (all when empty).
pub async fn on_hand(
    db: impl PgExecutor<'_>,
    tenant: &Tenant,
    skus: &[String],
) -> sqlx::Result<Vec<(String, String, i64)>> {
    sqlx::query_as(
        "SELECT node_id, sku, SUM(on_hand)::bigint FROM stock
         WHERE tenant = $1 AND (cardinality($2::text[]) = 0 OR sku = ANY($2)) GROUP BY node_id, sku",
    )
    .bind(tenant.as_str())
    .bind(skus)
    .fetch_all(db)
    .await
}
