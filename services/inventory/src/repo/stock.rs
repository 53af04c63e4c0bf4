use super::decode;
use chrono::{DateTime, Utc};
use oms_kernel::Tenant;
use oms_proto::inventory::{StockLevel, StockMovement};
use prost::Message;
use sqlx::{PgConnection, PgExecutor, PgPool, Postgres, QueryBuilder};
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

/// A lot as the stock table keeps it.
#[derive(Debug, Clone, Default)]
pub struct Lot {
    pub on_hand: i64,
    /// `YYYY-MM-DD`, or empty.
    pub expiry_date: String,
    /// Its units are left out of availability (`crate::domain::expiry`).
    pub expired: bool,
}

/// Locks, before a change makes several movements, the items (key share)
/// and the lots (`(node, sku, lot)`) they will move, each kind in one
/// order whatever the request's: two changes moving the same lots in other
/// orders (two transfer orders leaving one node, two shipments, transfers
/// both ways between two nodes) would otherwise each hold a lot the other
/// waits for, a deadlock Postgres ends by failing one of them. Items come
/// first, as in a single movement and in an item's update. The order of
/// lots is bytewise (`COLLATE "C"`), as Rust sorts strings, so that a
/// snapshot import, which applies its rows sorted, takes them in the same
/// order too. A lot is kept only for lot-tracked items (what the movement
/// locks: an untracked item's shipment drops the lot a WMS named; other
/// movements naming one are refused). The movements lock them again as
/// they go, holding them already.
pub async fn lock_for_movements(
    tx: &mut PgConnection,
    tenant: &Tenant,
    lots: &[(&str, &str, &str)],
) -> sqlx::Result<()> {
    // One lot has no order to keep: its movement locks it (a shipment of
    // one entry, the common case, makes no extra round trips).
    if lots.len() < 2 {
        return Ok(());
    }
    let mut skus: Vec<String> = lots.iter().map(|(_, sku, _)| sku.to_string()).collect();
    skus.sort_unstable();
    skus.dedup();
    let items = super::items::existing_shared(tx, tenant, &skus).await?;
    let lot_tracked = |sku: &str| items.get(sku).is_some_and(|i| i.lot_tracked);
    let keys: Vec<(&str, &str, &str)> = lots
        .iter()
        .map(|&(node, sku, lot)| match lot_tracked(sku) {
            true => (node, sku, lot),
            false => (node, sku, ""),
        })
        .collect();
    lock_lots(tx, tenant, &keys).await?;
    Ok(())
}

/// A lot's key: node, SKU, lot.
pub type LotKey = (String, String, String);

/// Lots locked by [`lock_lots`].
#[derive(Default)]
pub struct Locked {
    pub lots: HashMap<LotKey, Lot>,
    /// Those it made (never seen before): [`forget_lots`] removes them
    /// again if nothing is recorded of them.
    pub made: HashSet<LotKey>,
}

/// Locks these lots (`(node, sku, lot)`), making those never seen, in
/// the order `lock_for_movements` gives, after the locks of their SKUs at
/// their nodes ([`super::lock::stock_at`]), and returns them.
pub async fn lock_lots(
    tx: &mut PgConnection,
    tenant: &Tenant,
    keys: &[(&str, &str, &str)],
) -> sqlx::Result<Locked> {
    let mut keys = keys.to_vec();
    keys.sort_unstable();
    keys.dedup();
    let mut tracked: Vec<(&str, &str)> = (keys.iter())
        .filter(|k| !k.2.is_empty())
        .map(|k| (k.0, k.1))
        .collect();
    tracked.dedup();
    super::lock::stock_at(tx, tenant, &tracked).await?;
    let nodes: Vec<&str> = keys.iter().map(|k| k.0).collect();
    let skus: Vec<&str> = keys.iter().map(|k| k.1).collect();
    let lots: Vec<&str> = keys.iter().map(|k| k.2).collect();
    let made: Vec<LotKey> = sqlx::query_as(
        "INSERT INTO stock (tenant, node_id, sku, lot, on_hand)
         SELECT $1, n, s, l, 0 FROM UNNEST($2::text[], $3::text[], $4::text[]) AS k(n, s, l)
         ON CONFLICT DO NOTHING RETURNING node_id, sku, lot",
    )
    .bind(tenant.as_str())
    .bind(&nodes)
    .bind(&skus)
    .bind(&lots)
    .fetch_all(&mut *tx)
    .await?;
    // Rows are locked as they come out of the sort (the lock sits above
    // it in the plan), so in this order.
    let rows: Vec<(String, String, String, i64, String, bool)> = sqlx::query_as(
        r#"SELECT node_id, sku, lot, on_hand, expiry_date, expired FROM stock WHERE tenant = $1
           AND (node_id, sku, lot) IN (SELECT * FROM UNNEST($2::text[], $3::text[], $4::text[]))
         ORDER BY node_id COLLATE "C", sku COLLATE "C", lot COLLATE "C" FOR UPDATE"#,
    )
    .bind(tenant.as_str())
    .bind(&nodes)
    .bind(&skus)
    .bind(&lots)
    .fetch_all(tx)
    .await?;
    let lots = (rows.into_iter())
        .map(|(node, sku, lot, on_hand, expiry_date, expired)| {
            let found = Lot {
                on_hand,
                expiry_date,
                expired,
            };
            ((node, sku, lot), found)
        })
        .collect();
    Ok(Locked {
        lots,
        made: made.into_iter().collect(),
    })
}

/// Removes lots [`lock_lots`] made in this transaction of which nothing
/// was recorded (refused movements): as if they had never been asked for.
pub async fn forget_lots(
    tx: &mut PgConnection,
    tenant: &Tenant,
    keys: &[&LotKey],
) -> sqlx::Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "DELETE FROM stock WHERE tenant = $1
           AND (node_id, sku, lot) IN (SELECT * FROM UNNEST($2::text[], $3::text[], $4::text[]))",
    )
    .bind(tenant.as_str())
    .bind(keys.iter().map(|k| k.0.as_str()).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.1.as_str()).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.2.as_str()).collect::<Vec<_>>())
    .execute(tx)
    .await?;
    Ok(())
}

/// One lot, locked for the rest of the transaction; empty when the lot
/// has never been seen. A lot on record takes one round trip (the lock),
/// a new one two (the lock finds nothing; the insert returns the row it
/// made, which no one else sees until the commit), a lot another
/// transaction creates meanwhile three: every movement goes through here,
/// and round trips are most of a movement's time. A lot (of a lot-tracked
/// item) takes one more first: its SKU's lock at the node
/// ([`super::lock::stock_at`]).
pub async fn lock_lot(
    tx: &mut PgConnection,
    tenant: &Tenant,
    node: &str,
    sku: &str,
    lot: &str,
) -> sqlx::Result<Lot> {
    if !lot.is_empty() {
        super::lock::stock_at(tx, tenant, &[(node, sku)]).await?;
    }
    let locked = || {
        sqlx::query_as(
            "SELECT on_hand, expiry_date, expired FROM stock
             WHERE tenant = $1 AND node_id = $2 AND sku = $3 AND lot = $4 FOR UPDATE",
        )
        .bind(tenant.as_str())
        .bind(node)
        .bind(sku)
        .bind(lot)
    };
    let mut found: Option<(i64, String, bool)> = locked().fetch_optional(&mut *tx).await?;
    if found.is_none() {
        found = sqlx::query_as(
            "INSERT INTO stock (tenant, node_id, sku, lot, on_hand) VALUES ($1, $2, $3, $4, 0)
             ON CONFLICT DO NOTHING RETURNING on_hand, expiry_date, expired",
        )
        .bind(tenant.as_str())
        .bind(node)
        .bind(sku)
        .bind(lot)
        .fetch_optional(&mut *tx)
        .await?;
    }
    let (on_hand, expiry_date, expired) = match found {
        Some(row) => row,
        // Inserted by another transaction since the lock found nothing:
        // this waits for it, then locks the row.
        None => locked().fetch_one(tx).await?,
    };
    Ok(Lot {
        on_hand,
        expiry_date,
        expired,
    })
}

/// A movement to record: with its lot's dates and state after it.
pub struct Recorded<'a> {
    pub movement: &'a StockMovement,
    pub id: Uuid,
    pub withdraw_date: &'a str,
    pub expired: bool,
}

/// Sets the on-hand of locked lots (each once; and their dates and
/// state, from the movements) and appends the movements to the ledger, in
/// one statement however many.
pub async fn record(
    tx: &mut PgConnection,
    tenant: &Tenant,
    moved: &[Recorded<'_>],
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    let m = |f: fn(&StockMovement) -> &str| -> Vec<&str> {
        moved.iter().map(|r| f(r.movement)).collect()
    };
    sqlx::query(
        "WITH m AS (
           SELECT * FROM UNNEST($3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[],
                                $8::int8[], $9::int8[], $10::bytea[], $11::text[], $12::text[],
                                $13::bool[], $14::text[])
             AS m(id, node_id, sku, lot, kind, quantity, on_hand, doc, reference, expiry_date,
                  expired, withdraw_date)
         ), lots AS (
           UPDATE stock s SET on_hand = m.on_hand,
                              expiry_date = CASE WHEN m.expiry_date = '' THEN s.expiry_date ELSE m.expiry_date END,
                              expired = m.expired, withdraw_date = m.withdraw_date
           FROM m WHERE s.tenant = $1 AND s.node_id = m.node_id AND s.sku = m.sku AND s.lot = m.lot
         )
         INSERT INTO movements (movement_id, tenant, node_id, sku, lot, kind, quantity, on_hand_after, record_time, doc, reference)
         SELECT id, $1, node_id, sku, lot, kind, quantity, on_hand, $2, doc, reference FROM m",
    )
    .bind(tenant.as_str())
    .bind(now)
    .bind(moved.iter().map(|r| r.id).collect::<Vec<_>>())
    .bind(m(|m| &m.node_id))
    .bind(m(|m| &m.sku))
    .bind(m(|m| &m.lot))
    .bind(moved.iter().map(|r| r.movement.kind.to_string()).collect::<Vec<_>>())
    .bind(moved.iter().map(|r| r.movement.quantity).collect::<Vec<_>>())
    .bind(moved.iter().map(|r| r.movement.on_hand_after).collect::<Vec<_>>())
    .bind(moved.iter().map(|r| r.movement.encode_to_vec()).collect::<Vec<_>>())
    .bind(m(|m| &m.reference))
    .bind(m(|m| &m.expiry_date))
    .bind(moved.iter().map(|r| r.expired).collect::<Vec<_>>())
    .bind(moved.iter().map(|r| r.withdraw_date).collect::<Vec<_>>())
    .execute(tx)
    .await?;
    Ok(())
}

/// Copies the reference of up to `limit` movements recorded before it was
/// a column (migration 0011) from their documents. Returns how many it
/// found without one; 0 once none is left (counting those it wrote would
/// stop early when another replica wrote the same rows first). Replicas
/// may run it at once: each row gets the same value whoever writes it.
pub async fn copy_references(db: &PgPool, limit: i64) -> sqlx::Result<u64> {
    let rows: Vec<(Uuid, Vec<u8>)> =
        sqlx::query_as("SELECT movement_id, doc FROM movements WHERE reference IS NULL LIMIT $1")
            .bind(limit)
            .fetch_all(db)
            .await?;
    let mut ids = Vec::with_capacity(rows.len());
    let mut references = Vec::with_capacity(rows.len());
    for (id, doc) in rows {
        // A document that does not decode has no reference to copy; as an
        // error it would stop every later batch for good.
        let reference = match decode::<StockMovement>(&doc) {
            Ok(m) => m.reference,
            Err(e) => {
                tracing::warn!(error = %e, movement = %id, "a movement's document does not decode; no reference copied");
                String::new()
            }
        };
        ids.push(id);
        references.push(reference);
    }
    sqlx::query(
        "UPDATE movements m SET reference = r.reference
         FROM unnest($1::uuid[], $2::text[]) AS r(id, reference)
         WHERE m.movement_id = r.id AND m.reference IS NULL",
    )
    .bind(&ids)
    .bind(&references)
    .execute(db)
    .await?;
    Ok(ids.len() as u64)
}

pub struct MovementFilter {
    pub node_id: Option<String>,
    pub sku: Option<String>,
    pub lot: Option<String>,
    pub kinds: Vec<String>,
    pub serial: Option<String>,
    pub reference: Option<String>,
    /// Recorded in `[from, to)`.
    pub recorded: (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
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
    if let Some(lot) = &f.lot {
        q.push(" AND lot = ").push_bind(lot.clone());
    }
    if let Some(r) = &f.reference {
        q.push(" AND reference = ").push_bind(r.clone());
    }
    if let Some(t) = f.recorded.0 {
        q.push(" AND record_time >= ").push_bind(t);
    }
    if let Some(t) = f.recorded.1 {
        q.push(" AND record_time < ").push_bind(t);
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

/// A row of [`levels`].
#[derive(sqlx::FromRow)]
struct LevelRow {
    node_id: String,
    sku: String,
    lot: String,
    expiry_date: String,
    on_hand: i64,
    expired: bool,
    withdraw_date: String,
    allocated: i64,
}

/// Which stock levels to list.
pub struct LevelFilter<'a> {
    pub node: Option<&'a str>,
    /// Empty: every SKU.
    pub skus: &'a [String],
    /// Only lots withdrawn from availability before this date.
    pub withdraw_before: Option<&'a str>,
}

/// Stock levels with allocated units per node and SKU; keyset on (node, sku, lot).
pub async fn levels(
    db: impl PgExecutor<'_>,
    tenant: &Tenant,
    filter: &LevelFilter<'_>,
    after: Option<&(String, String, String)>,
    limit: i64,
) -> sqlx::Result<Vec<StockLevel>> {
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
        "SELECT s.node_id, s.sku, s.lot, s.expiry_date, s.on_hand, s.expired, s.withdraw_date,
                COALESCE((SELECT SUM(h.held) FROM held_totals h WHERE h.tenant = s.tenant AND h.node_id = s.node_id AND h.sku = s.sku), 0)::bigint AS allocated
         FROM stock s WHERE s.tenant = ",
    );
    q.push_bind(tenant.as_str().to_owned());
    if let Some(n) = filter.node {
        q.push(" AND s.node_id = ").push_bind(n.to_owned());
    }
    if !filter.skus.is_empty() {
        q.push(" AND s.sku = ANY(")
            .push_bind(filter.skus.to_vec())
            .push(")");
    }
    if let Some(d) = filter.withdraw_before {
        q.push(" AND s.withdraw_date <> '' AND s.withdraw_date < ")
            .push_bind(d.to_owned());
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
    let rows: Vec<LevelRow> = q.build_query_as().fetch_all(db).await?;
    Ok(rows
        .into_iter()
        .map(|r| StockLevel {
            node_id: r.node_id,
            sku: r.sku,
            lot: r.lot,
            expiry_date: r.expiry_date,
            on_hand: r.on_hand,
            allocated: r.allocated,
            expired: r.expired,
            withdraw_date: r.withdraw_date,
        })
        .collect())
}

/// On-hand per (node, sku, lot), and the part of it in an expired lot, for
/// some SKUs (all when empty): [`crate::domain::availability::Figures::add_stock`]
/// sums the lots. Summed here (`GROUP BY node_id, sku`), a whole tenant's
/// 100,000 rows took 100 ms, five times the plain read: Postgres's hash of
/// that many groups spilled to disk at the default `work_mem`, and took as
/// long in memory. A gate rebuild, which the tenant's changes wait for,
/// reads them all.
pub async fn on_hand(
    db: impl PgExecutor<'_>,
    tenant: &Tenant,
    skus: &[String],
    node: Option<&str>,
) -> sqlx::Result<Vec<(String, String, i64, i64)>> {
    sqlx::query_as(
        "SELECT node_id, sku, on_hand, CASE WHEN expired THEN on_hand ELSE 0 END
         FROM stock
         WHERE tenant = $1 AND (cardinality($2::text[]) = 0 OR sku = ANY($2))
           AND ($3::text IS NULL OR node_id = $3)",
    )
    .bind(tenant.as_str())
    .bind(skus)
    .bind(node)
    .fetch_all(db)
    .await
}

/// Lots not yet expired with a withdraw date up to `until`: (tenant,
/// node, withdraw date) once each, for the sweep to check against each
/// node's date.
pub async fn dated_up_to(
    db: impl PgExecutor<'_>,
    until: &str,
) -> sqlx::Result<Vec<(String, String, String)>> {
    sqlx::query_as(
        "SELECT DISTINCT tenant, node_id, withdraw_date FROM stock
         WHERE NOT expired AND withdraw_date <> '' AND withdraw_date <= $1",
    )
    .bind(until)
    .fetch_all(db)
    .await
}

/// Marks the tenant's lots at these (node, withdraw date) pairs expired, at
/// most `limit` of them; returns those it marked (each lot once: another
/// sweep or a movement that got there first has changed the row). Lots
/// another transaction holds are skipped (the next sweep takes them), as
/// are lots of a SKU a movement is changing at the node (its
/// [`super::lock::stock_at`] lock: each reads the other's lots to say what
/// reservations hold beyond them), so the sweep never waits on a row or a
/// lock, nor deadlocks with a movement or an item update.
pub async fn mark_expired(
    tx: &mut PgConnection,
    tenant: &Tenant,
    due: &[(String, String)],
    limit: i64,
) -> sqlx::Result<Vec<StockLevel>> {
    let (nodes, dates): (Vec<&str>, Vec<&str>) =
        due.iter().map(|(n, d)| (n.as_str(), d.as_str())).unzip();
    let rows: Vec<(String, String, String, String, i64, String)> = sqlx::query_as(concat!(
        "WITH due AS (
            SELECT s2.node_id, s2.sku, s2.lot FROM stock s2
            JOIN UNNEST($2::text[], $3::text[]) AS d(n, w) ON s2.node_id = d.n AND s2.withdraw_date = d.w
            WHERE s2.tenant = $1 AND NOT s2.expired
            ORDER BY s2.node_id, s2.sku, s2.lot LIMIT $4
            FOR UPDATE OF s2 SKIP LOCKED
         ), free AS (
            SELECT n AS node_id, s AS sku, l AS lot FROM due AS d(n, s, l)
            WHERE pg_try_advisory_xact_lock(",
        super::lock::stock_key!(),
        ")
         )
         UPDATE stock s SET expired = true FROM free AS due
         WHERE s.tenant = $1 AND s.node_id = due.node_id AND s.sku = due.sku AND s.lot = due.lot
           AND NOT s.expired AND (s.node_id, s.withdraw_date) IN (SELECT * FROM UNNEST($2::text[], $3::text[]))
         RETURNING s.node_id, s.sku, s.lot, s.expiry_date, s.on_hand, s.withdraw_date",
    ))
    .bind(tenant.as_str())
    .bind(&nodes)
    .bind(&dates)
    .bind(limit)
    .fetch_all(tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(node_id, sku, lot, expiry_date, on_hand, withdraw_date)| StockLevel {
                node_id,
                sku,
                lot,
                expiry_date,
                on_hand,
                expired: true,
                withdraw_date,
                ..Default::default()
            },
        )
        .collect())
}

/// Every dated lot of a SKU (lots only: see `domain::expiry`), locked,
/// as `StockLevel`s without `allocated`.
pub async fn dated_lots(
    tx: &mut PgConnection,
    tenant: &Tenant,
    sku: &str,
) -> sqlx::Result<Vec<StockLevel>> {
    let rows: Vec<(String, String, String, i64, String, bool)> = sqlx::query_as(
        "SELECT node_id, lot, expiry_date, on_hand, withdraw_date, expired FROM stock
         WHERE tenant = $1 AND sku = $2 AND expiry_date <> '' AND lot <> ''
         ORDER BY node_id, lot FOR UPDATE",
    )
    .bind(tenant.as_str())
    .bind(sku)
    .fetch_all(tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(node_id, lot, expiry_date, on_hand, withdraw_date, expired)| StockLevel {
                node_id,
                sku: sku.to_owned(),
                lot,
                expiry_date,
                on_hand,
                withdraw_date,
                expired,
                ..Default::default()
            },
        )
        .collect())
}

/// Writes the withdraw date and state of locked lots (`dated_lots`).
pub async fn restate(
    tx: &mut PgConnection,
    tenant: &Tenant,
    lots: &[StockLevel],
) -> sqlx::Result<()> {
    let nodes: Vec<&str> = lots.iter().map(|l| l.node_id.as_str()).collect();
    let skus: Vec<&str> = lots.iter().map(|l| l.sku.as_str()).collect();
    let lot_ids: Vec<&str> = lots.iter().map(|l| l.lot.as_str()).collect();
    let dates: Vec<&str> = lots.iter().map(|l| l.withdraw_date.as_str()).collect();
    let expired: Vec<bool> = lots.iter().map(|l| l.expired).collect();
    sqlx::query(
        "UPDATE stock s SET withdraw_date = d.w, expired = d.x
         FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::bool[]) AS d(n, k, l, w, x)
         WHERE s.tenant = $1 AND s.node_id = d.n AND s.sku = d.k AND s.lot = d.l",
    )
    .bind(tenant.as_str())
    .bind(&nodes)
    .bind(&skus)
    .bind(&lot_ids)
    .bind(&dates)
    .bind(&expired)
    .execute(tx)
    .await?;
    Ok(())
}
