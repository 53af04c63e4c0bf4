use super::decode;
use crate::gate::{Holds, split_hold};
use chrono::{DateTime, Utc};
use oms_kernel::Tenant;
use oms_proto::inventory::{Reservation, ReservationState};
use prost::Message;
use sqlx::{PgConnection, PgExecutor, Postgres, QueryBuilder};
use std::collections::{BTreeMap, HashMap, HashSet};

pub fn state_db(s: ReservationState) -> &'static str {
    match s {
        ReservationState::Active => "active",
        ReservationState::Confirmed => "confirmed",
        ReservationState::Released => "released",
        ReservationState::Expired => "expired",
        ReservationState::Consumed => "consumed",
        ReservationState::Unspecified => "unspecified",
    }
}

pub fn state_from(s: &str) -> ReservationState {
    match s {
        "active" => ReservationState::Active,
        "confirmed" => ReservationState::Confirmed,
        "released" => ReservationState::Released,
        "expired" => ReservationState::Expired,
        "consumed" => ReservationState::Consumed,
        _ => ReservationState::Unspecified,
    }
}

/// A new reservation to store.
pub struct NewRow<'a> {
    pub reservation: &'a Reservation,
    pub request_hash: &'a str,
    pub expire_time: DateTime<Utc>,
    pub holds: &'a Holds,
}

/// Stored reservations among `ids`: request hash and document.
pub async fn existing(
    db: impl PgExecutor<'_>,
    tenant: &Tenant,
    ids: &[String],
) -> sqlx::Result<HashMap<String, (String, Reservation)>> {
    let rows: Vec<(String, String, Vec<u8>)> = sqlx::query_as(
        "SELECT r.reservation_id, r.request_hash, r.doc FROM UNNEST($2::text[]) AS x(id)
         CROSS JOIN LATERAL (
           SELECT reservation_id, request_hash, doc FROM reservations
           WHERE tenant = $1 AND reservation_id = x.id LIMIT 1
         ) r",
    )
    // One primary-key probe per id whatever the statistics say: planned
    // from none (a young table), `reservation_id = ANY($2)` scanned the
    // tenant's whole range by time and filtered it, every batch.
    .bind(tenant.as_str())
    .bind(ids)
    .fetch_all(db)
    .await?;
    rows.into_iter()
        .map(|(id, h, d)| decode(&d).map(|r| (id, (h, r))))
        .collect()
}

/// Stores new reservations and their holds in a few statements, whatever
/// their number (the group-commit writer sends hundreds at once). Returns
/// the ids it stored: an id stored already (by a concurrent batch, or
/// twice in `rows`) is left as it was and not returned.
pub async fn insert_many(
    tx: &mut PgConnection,
    tenant: &Tenant,
    rows: &[NewRow<'_>],
    now: DateTime<Utc>,
) -> sqlx::Result<HashSet<String>> {
    if rows.is_empty() {
        return Ok(HashSet::new());
    }
    let ids: Vec<&str> = rows
        .iter()
        .map(|r| r.reservation.reservation_id.as_str())
        .collect();
    let hashes: Vec<&str> = rows.iter().map(|r| r.request_hash).collect();
    let expires: Vec<DateTime<Utc>> = rows.iter().map(|r| r.expire_time).collect();
    let refs: Vec<&str> = rows
        .iter()
        .map(|r| r.reservation.reference.as_str())
        .collect();
    let docs: Vec<Vec<u8>> = rows.iter().map(|r| r.reservation.encode_to_vec()).collect();
    let mut h_ids = Vec::new();
    let mut h_skus = Vec::new();
    let mut h_nodes = Vec::new();
    let mut h_held = Vec::new();
    for r in rows {
        for (k, v) in r.holds {
            let (sku, node) = split_hold(k);
            h_ids.push(r.reservation.reservation_id.as_str());
            h_skus.push(sku);
            h_nodes.push(node);
            h_held.push(*v);
        }
    }
    // One statement (one round trip) for both tables. Holds only of the
    // reservations stored here: a stored one may have changed since (a
    // released one holds nothing).
    let stored: Vec<String> = sqlx::query_scalar(
        "WITH r AS (
            INSERT INTO reservations (tenant, reservation_id, state, request_hash, expire_time, create_time, update_time, reference, doc)
            SELECT $1, id, 'active', h, e, $2, $2, r, d
            FROM UNNEST($3::text[], $4::text[], $5::timestamptz[], $6::text[], $7::bytea[]) AS t(id, h, e, r, d)
            ON CONFLICT DO NOTHING
            RETURNING reservation_id
         ), h AS (
            INSERT INTO holds (tenant, reservation_id, sku, node_id, held)
            SELECT $1, id, s, n, h FROM UNNEST($8::text[], $9::text[], $10::text[], $11::bigint[]) AS t(id, s, n, h)
            JOIN r ON r.reservation_id = t.id
            ON CONFLICT DO NOTHING -- the same id twice in one batch
            RETURNING sku, node_id, held
         ), t AS (
            INSERT INTO held_totals (tenant, sku, node_id, shard, held)
            SELECT $1, sku, node_id, $12, SUM(held) FROM h GROUP BY sku, node_id ORDER BY sku, node_id
            ON CONFLICT (tenant, sku, node_id, shard) DO UPDATE SET held = held_totals.held + EXCLUDED.held
         )
         SELECT reservation_id FROM r",
    )
    .bind(tenant.as_str())
    .bind(now)
    .bind(&ids)
    .bind(&hashes)
    .bind(&expires)
    .bind(&refs)
    .bind(&docs)
    .bind(&h_ids)
    .bind(&h_skus)
    .bind(&h_nodes)
    .bind(&h_held)
    .bind(shard())
    .fetch_all(tx)
    .await?;
    Ok(stored.into_iter().collect())
}

/// A reservation locked for a change.
pub async fn lock(
    tx: &mut PgConnection,
    tenant: &Tenant,
    id: &str,
) -> sqlx::Result<Option<(Reservation, bool)>> {
    let row: Option<(Vec<u8>, bool)> = sqlx::query_as(
        "SELECT doc, consumed FROM reservations WHERE tenant = $1 AND reservation_id = $2 FOR UPDATE",
    )
    .bind(tenant.as_str())
    .bind(id)
    .fetch_optional(tx)
    .await?;
    row.map(|(d, c)| decode(&d).map(|r| (r, c))).transpose()
}

/// Writes a changed reservation and replaces its holds.
pub async fn save(
    tx: &mut PgConnection,
    tenant: &Tenant,
    r: &Reservation,
    holds: &Holds,
    consumed: bool,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    let state = state_db(ReservationState::try_from(r.state).unwrap_or_default());
    sqlx::query(
        "UPDATE reservations SET state = $3, consumed = $4, doc = $5, update_time = $6
         WHERE tenant = $1 AND reservation_id = $2",
    )
    .bind(tenant.as_str())
    .bind(&r.reservation_id)
    .bind(state)
    .bind(consumed)
    .bind(r.encode_to_vec())
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let old: Vec<(String, String, i64)> = sqlx::query_as(
        "DELETE FROM holds WHERE tenant = $1 AND reservation_id = $2 RETURNING sku, node_id, held",
    )
    .bind(tenant.as_str())
    .bind(&r.reservation_id)
    .fetch_all(&mut *tx)
    .await?;
    let mut delta: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    for (sku, node, held) in &old {
        *delta.entry((sku, node)).or_default() -= held;
    }
    for (k, v) in holds.iter().filter(|(_, v)| **v > 0) {
        *delta.entry(split_hold(k)).or_default() += v;
    }
    add_to_totals(&mut *tx, tenant, &delta).await?;
    let (skus, nodes, held): (Vec<&str>, Vec<&str>, Vec<i64>) = holds
        .iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| {
            let (s, n) = split_hold(k);
            (s, n, *v)
        })
        .fold(
            (vec![], vec![], vec![]),
            |(mut a, mut b, mut c), (s, n, v)| {
                a.push(s);
                b.push(n);
                c.push(v);
                (a, b, c)
            },
        );
    sqlx::query(
        "INSERT INTO holds (tenant, reservation_id, sku, node_id, held)
         SELECT $1, $2, s, n, h FROM UNNEST($3::text[], $4::text[], $5::bigint[]) AS t(s, n, h)",
    )
    .bind(tenant.as_str())
    .bind(&r.reservation_id)
    .bind(&skus)
    .bind(&nodes)
    .bind(&held)
    .execute(tx)
    .await?;
    Ok(())
}

pub async fn get(
    db: impl PgExecutor<'_>,
    tenant: &Tenant,
    id: &str,
) -> sqlx::Result<Option<Reservation>> {
    let doc: Option<Vec<u8>> = sqlx::query_scalar(
        "SELECT doc FROM reservations WHERE tenant = $1 AND reservation_id = $2",
    )
    .bind(tenant.as_str())
    .bind(id)
    .fetch_optional(db)
    .await?;
    doc.as_deref().map(decode).transpose()
}

pub async fn list(
    db: impl PgExecutor<'_>,
    tenant: &Tenant,
    states: &[&str],
    reference: Option<&str>,
    after: Option<(DateTime<Utc>, String)>,
    limit: i64,
) -> sqlx::Result<Vec<(DateTime<Utc>, Reservation)>> {
    let mut q: QueryBuilder<Postgres> =
        QueryBuilder::new("SELECT create_time, doc FROM reservations WHERE tenant = ");
    q.push_bind(tenant.as_str().to_owned());
    if !states.is_empty() {
        let s: Vec<String> = states.iter().map(|s| s.to_string()).collect();
        q.push(" AND state = ANY(").push_bind(s).push(")");
    }
    if let Some(r) = reference {
        q.push(" AND reference = ").push_bind(r.to_owned());
    }
    if let Some((t, id)) = after {
        q.push(" AND (create_time, reservation_id) < (")
            .push_bind(t)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    q.push(" ORDER BY create_time DESC, reservation_id DESC LIMIT ")
        .push_bind(limit);
    let rows: Vec<(DateTime<Utc>, Vec<u8>)> = q.build_query_as().fetch_all(db).await?;
    rows.into_iter()
        .map(|(t, d)| decode(&d).map(|r| (t, r)))
        .collect()
}

/// Active reservations past their expiry, oldest first.
pub async fn due(db: impl PgExecutor<'_>, limit: i64) -> sqlx::Result<Vec<(String, String)>> {
    sqlx::query_as(
        "SELECT tenant, reservation_id FROM reservations
         WHERE state = 'active' AND expire_time <= now() ORDER BY expire_time LIMIT $1",
    )
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Shards of each held total: a writer adds to one at random, so few
/// concurrent writers wait for the same row.
const SHARDS: i16 = 16;

fn shard() -> i16 {
    rand::random_range(0..SHARDS)
}

/// Adds changes of held units to the totals, in key order (so that
/// concurrent writers lock rows in one order).
async fn add_to_totals(
    tx: &mut PgConnection,
    tenant: &Tenant,
    delta: &BTreeMap<(&str, &str), i64>,
) -> sqlx::Result<()> {
    let (skus, nodes, held): (Vec<&str>, Vec<&str>, Vec<i64>) = delta
        .iter()
        .filter(|(_, v)| **v != 0)
        .map(|((s, n), v)| (*s, *n, *v))
        .collect();
    if skus.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO held_totals (tenant, sku, node_id, shard, held)
         SELECT $1, s, n, $5, h FROM UNNEST($2::text[], $3::text[], $4::bigint[]) AS t(s, n, h)
         ON CONFLICT (tenant, sku, node_id, shard) DO UPDATE SET held = held_totals.held + EXCLUDED.held",
    )
    .bind(tenant.as_str())
    .bind(&skus)
    .bind(&nodes)
    .bind(&held)
    .bind(shard())
    .execute(tx)
    .await?;
    Ok(())
}

/// Units held per (sku, node) by live reservations of some SKUs (all when
/// empty), from the totals: a few rows whatever the number of holds.
pub async fn held(
    db: impl PgExecutor<'_>,
    tenant: &Tenant,
    skus: &[String],
) -> sqlx::Result<Vec<(String, String, i64)>> {
    sqlx::query_as(
        "SELECT sku, node_id, SUM(held)::bigint FROM held_totals
         WHERE tenant = $1 AND (cardinality($2::text[]) = 0 OR sku = ANY($2))
         GROUP BY sku, node_id HAVING SUM(held) <> 0",
    )
    .bind(tenant.as_str())
    .bind(skus)
    .fetch_all(db)
    .await
}

/// Units held per (sku, node), summed over every hold of every live
/// reservation of the tenant: the truth the totals keep up with.
pub async fn held_by_holds(
    db: &mut PgConnection,
    tenant: &Tenant,
) -> sqlx::Result<Vec<(String, String, i64)>> {
    sqlx::query_as(
        "SELECT sku, node_id, SUM(held)::bigint FROM holds WHERE tenant = $1
         GROUP BY sku, node_id HAVING SUM(held) <> 0 ORDER BY sku, node_id",
    )
    .bind(tenant.as_str())
    .fetch_all(db)
    .await
}

/// Rewrites the tenant's totals from `exact` (under the exclusive gate
/// lock: no writer adds to them meanwhile).
pub async fn reset_totals(
    tx: &mut PgConnection,
    tenant: &Tenant,
    exact: &[(String, String, i64)],
) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM held_totals WHERE tenant = $1")
        .bind(tenant.as_str())
        .execute(&mut *tx)
        .await?;
    let delta: BTreeMap<(&str, &str), i64> = exact
        .iter()
        .map(|(s, n, h)| ((s.as_str(), n.as_str()), *h))
        .collect();
    add_to_totals(tx, tenant, &delta).await
}

/// A live reservation as the gate keeps it.
pub struct Live {
    pub id: String,
    pub state: String,
    pub request_hash: String,
    pub expire_ms: i64,
    pub consumed: bool,
    pub holds: Holds,
}

/// Every active or confirmed reservation of a tenant with its holds.
pub async fn live(db: &mut PgConnection, tenant: &Tenant) -> sqlx::Result<Vec<Live>> {
    let rows: Vec<(String, String, String, DateTime<Utc>, bool)> = sqlx::query_as(
        "SELECT reservation_id, state, request_hash, expire_time, consumed FROM reservations
         WHERE tenant = $1 AND state IN ('active', 'confirmed')",
    )
    .bind(tenant.as_str())
    .fetch_all(&mut *db)
    .await?;
    let holds: Vec<(String, String, String, i64)> =
        sqlx::query_as("SELECT reservation_id, sku, node_id, held FROM holds WHERE tenant = $1")
            .bind(tenant.as_str())
            .fetch_all(&mut *db)
            .await?;
    let mut by_id: HashMap<String, Holds> = HashMap::new();
    for (id, sku, node, held) in holds {
        by_id
            .entry(id)
            .or_default()
            .insert(crate::gate::hold_key(&sku, &node), held);
    }
    Ok(rows
        .into_iter()
        .map(|(id, state, request_hash, expire, consumed)| Live {
            holds: by_id.remove(&id).unwrap_or_default(),
            id,
            state,
            request_hash,
            expire_ms: expire.timestamp_millis(),
            consumed,
        })
        .collect())
}
