//! Transfers sent in transit: stock between the movement that took it
//! from one node and those that bring it to another.
use super::decode;
use chrono::{DateTime, Utc};
use oms_kernel::Tenant;
use oms_proto::inventory::{Transfer, TransferState};
use oms_runtime::time::from_timestamp;
use prost::Message;
use sqlx::{PgConnection, PgExecutor, Postgres, QueryBuilder};

fn id_of(t: &Transfer) -> &str {
    t.name.trim_start_matches("transfers/")
}

fn state_of(t: &Transfer) -> &'static str {
    TransferState::try_from(t.state)
        .unwrap_or_default()
        .as_str_name()
}

/// Stores a new transfer and its lines; false when its id is taken.
pub async fn insert(
    tx: &mut PgConnection,
    tenant: &Tenant,
    t: &Transfer,
    now: DateTime<Utc>,
) -> sqlx::Result<bool> {
    let n = sqlx::query(
        "INSERT INTO transfers (tenant, transfer_id, from_node_id, to_node_id, state, doc,
                                create_time, update_time, expected_arrival)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8) ON CONFLICT DO NOTHING",
    )
    .bind(tenant.as_str())
    .bind(id_of(t))
    .bind(&t.from_node_id)
    .bind(&t.to_node_id)
    .bind(state_of(t))
    .bind(t.encode_to_vec())
    .bind(now)
    .bind(t.expected_arrival_time.as_ref().and_then(from_timestamp))
    .execute(&mut *tx)
    .await?;
    if n.rows_affected() == 0 {
        return Ok(false);
    }
    let skus: Vec<&str> = t.lines.iter().map(|l| l.sku.as_str()).collect();
    let lots: Vec<&str> = t.lines.iter().map(|l| l.lot.as_str()).collect();
    sqlx::query(
        "INSERT INTO transfer_lines (tenant, transfer_id, line, to_node_id, sku, lot, in_transit)
         SELECT $1, $2, l.n - 1, $3, l.sku, l.lot, l.q
         FROM UNNEST($4::text[], $5::text[], $6::bigint[]) WITH ORDINALITY AS l(sku, lot, q, n)",
    )
    .bind(tenant.as_str())
    .bind(id_of(t))
    .bind(&t.to_node_id)
    .bind(&skus)
    .bind(&lots)
    .bind(in_transit(t))
    .execute(tx)
    .await?;
    Ok(true)
}

fn in_transit(t: &Transfer) -> Vec<i64> {
    t.lines.iter().map(|l| l.in_transit).collect()
}

/// Stores a transfer after a receipt or close, with what each line still
/// has on the way.
pub async fn update(
    tx: &mut PgConnection,
    tenant: &Tenant,
    t: &Transfer,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE transfers SET state = $3, doc = $4, update_time = $5
         WHERE tenant = $1 AND transfer_id = $2",
    )
    .bind(tenant.as_str())
    .bind(id_of(t))
    .bind(state_of(t))
    .bind(t.encode_to_vec())
    .bind(now)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE transfer_lines SET in_transit = l.q
         FROM UNNEST($3::bigint[]) WITH ORDINALITY AS l(q, n)
         WHERE tenant = $1 AND transfer_id = $2 AND line = l.n - 1",
    )
    .bind(tenant.as_str())
    .bind(id_of(t))
    .bind(in_transit(t))
    .execute(tx)
    .await?;
    Ok(())
}

/// One transfer of the tenant; `for_update` locks it for the rest of the
/// transaction (two receipts of one transfer go one after the other).
pub async fn get(
    db: impl PgExecutor<'_>,
    tenant: &Tenant,
    id: &str,
    for_update: bool,
) -> sqlx::Result<Option<Transfer>> {
    let sql = if for_update {
        "SELECT doc FROM transfers WHERE tenant = $1 AND transfer_id = $2 FOR UPDATE"
    } else {
        "SELECT doc FROM transfers WHERE tenant = $1 AND transfer_id = $2"
    };
    let doc: Option<Vec<u8>> = sqlx::query_scalar(sql)
        .bind(tenant.as_str())
        .bind(id)
        .fetch_optional(db)
        .await?;
    doc.as_deref().map(decode).transpose()
}

/// Filters of [`list`].
pub struct Filter {
    pub states: Vec<String>,
    pub from_node: Option<String>,
    pub to_node: Option<String>,
    pub sku: Option<String>,
    /// Only those in transit expected before this time, earliest first;
    /// the cursor is then the expected arrival, not the creation.
    pub due_before: Option<DateTime<Utc>>,
    pub after: Option<(DateTime<Utc>, String)>,
    pub limit: i64,
}

/// Transfers newest first, with the cursor of each.
pub async fn list(
    db: impl PgExecutor<'_>,
    tenant: &Tenant,
    f: &Filter,
) -> sqlx::Result<Vec<(DateTime<Utc>, String, Transfer)>> {
    let (at, newest_first) = match f.due_before {
        Some(_) => ("expected_arrival", false),
        None => ("create_time", true),
    };
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new(format!(
        "SELECT {at}, transfer_id, doc FROM transfers WHERE tenant = "
    ));
    q.push_bind(tenant.as_str().to_owned());
    if !f.states.is_empty() {
        q.push(" AND state = ANY(")
            .push_bind(f.states.clone())
            .push(")");
    }
    for (column, value) in [("from_node_id", &f.from_node), ("to_node_id", &f.to_node)] {
        if let Some(v) = value {
            q.push(format!(" AND {column} = ")).push_bind(v.clone());
        }
    }
    if let Some(sku) = &f.sku {
        q.push(" AND transfer_id IN (SELECT transfer_id FROM transfer_lines WHERE tenant = ")
            .push_bind(tenant.as_str().to_owned())
            .push(" AND sku = ")
            .push_bind(sku.clone())
            .push(")");
    }
    if let Some(due) = f.due_before {
        q.push(" AND state = 'TRANSFER_STATE_IN_TRANSIT' AND expected_arrival < ")
            .push_bind(due);
    }
    let (after, order) = match newest_first {
        true => ("<", "DESC"),
        false => (">", "ASC"),
    };
    if let Some((t, id)) = &f.after {
        q.push(format!(" AND ({at}, transfer_id) {after} ("))
            .push_bind(*t)
            .push(", ")
            .push_bind(id.clone())
            .push(")");
    }
    q.push(format!(
        " ORDER BY {at} {order}, transfer_id {order} LIMIT "
    ))
    .push_bind(f.limit);
    let rows: Vec<(DateTime<Utc>, String, Vec<u8>)> = q.build_query_as().fetch_all(db).await?;
    rows.into_iter()
        .map(|(t, id, d)| decode(&d).map(|x| (t, id, x)))
        .collect()
}

/// Units on the way per (receiving node, SKU) and expected arrival (as
/// the transfer was sent; None: not said), for these SKUs.
pub async fn on_the_way(
    db: impl PgExecutor<'_>,
    tenant: &Tenant,
    skus: &[String],
) -> sqlx::Result<Vec<crate::domain::availability::Arriving>> {
    sqlx::query_as(
        "SELECT l.to_node_id, l.sku, t.expected_arrival, SUM(l.in_transit)::bigint
         FROM transfer_lines l JOIN transfers t USING (tenant, transfer_id)
         WHERE l.tenant = $1 AND l.sku = ANY($2) AND l.in_transit > 0
         GROUP BY l.to_node_id, l.sku, t.expected_arrival",
    )
    .bind(tenant.as_str())
    .bind(skus)
    .fetch_all(db)
    .await
}

/// Units of a SKU on the way anywhere, per lot (an item's tracking change
/// must not strand them).
pub async fn on_the_way_by_lot(
    db: impl PgExecutor<'_>,
    tenant: &Tenant,
    sku: &str,
) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as(
        "SELECT lot, SUM(in_transit)::bigint FROM transfer_lines
         WHERE tenant = $1 AND sku = $2 AND in_transit > 0 GROUP BY lot ORDER BY lot",
    )
    .bind(tenant.as_str())
    .bind(sku)
    .fetch_all(db)
    .await
}
