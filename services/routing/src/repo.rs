//! The routing schema's SQL. Documents are stored encoded; columns beside
//! them exist only to find rows.
use chrono::{DateTime, NaiveDate, Utc};
use oms_kernel::Tenant;
use oms_proto::routing::{Decision, RoutingOrder, RuleSet, RuleSetState};
use oms_runtime::db::decode;
use prost::Message;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

pub fn state_db(s: RuleSetState) -> &'static str {
    match s {
        RuleSetState::Active => "active",
        RuleSetState::Superseded => "superseded",
        _ => "draft",
    }
}

/// Serialises rule set changes of one tenant (versions, the active one).
pub async fn lock_tenant(tx: &mut PgConnection, tenant: &Tenant) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('routing:' || $1, 0))")
        .bind(tenant.as_str())
        .execute(tx)
        .await?;
    Ok(())
}

pub async fn next_version(tx: &mut PgConnection, tenant: &Tenant) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT coalesce(max(version), 0) + 1 FROM rule_sets WHERE tenant = $1")
        .bind(tenant.as_str())
        .fetch_one(tx)
        .await
}

pub async fn insert_rule_set(
    tx: &mut PgConnection,
    tenant: &Tenant,
    id: Uuid,
    rs: &RuleSet,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO rule_sets (tenant, rule_set_id, version, state, doc, create_time)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(tenant.as_str())
    .bind(id)
    .bind(rs.version)
    .bind(state_db(rs.state()))
    .bind(rs.encode_to_vec())
    .bind(now)
    .execute(tx)
    .await?;
    Ok(())
}

/// Rewrites a rule set's document and state.
pub async fn save_rule_set(
    tx: &mut PgConnection,
    tenant: &Tenant,
    id: Uuid,
    rs: &RuleSet,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE rule_sets SET state = $3, doc = $4 WHERE tenant = $1 AND rule_set_id = $2")
        .bind(tenant.as_str())
        .bind(id)
        .bind(state_db(rs.state()))
        .bind(rs.encode_to_vec())
        .execute(tx)
        .await?;
    Ok(())
}

pub async fn rule_set(
    ex: impl PgExecutor<'_>,
    tenant: &Tenant,
    id: Uuid,
) -> sqlx::Result<Option<RuleSet>> {
    let doc: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT doc FROM rule_sets WHERE tenant = $1 AND rule_set_id = $2")
            .bind(tenant.as_str())
            .bind(id)
            .fetch_optional(ex)
            .await?;
    doc.map(|d| decode(&d)).transpose()
}

pub async fn active_rule_set(
    ex: impl PgExecutor<'_>,
    tenant: &Tenant,
) -> sqlx::Result<Option<RuleSet>> {
    let doc: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT doc FROM rule_sets WHERE tenant = $1 AND state = 'active'")
            .bind(tenant.as_str())
            .fetch_optional(ex)
            .await?;
    doc.map(|d| decode(&d)).transpose()
}

/// Rule sets newest first, after version `before` (exclusive).
pub async fn list_rule_sets(
    ex: impl PgExecutor<'_>,
    tenant: &Tenant,
    before: Option<i64>,
    limit: i64,
) -> sqlx::Result<Vec<RuleSet>> {
    let docs: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT doc FROM rule_sets WHERE tenant = $1 AND version < $2
         ORDER BY version DESC LIMIT $3",
    )
    .bind(tenant.as_str())
    .bind(before.unwrap_or(i64::MAX))
    .bind(limit)
    .fetch_all(ex)
    .await?;
    docs.iter().map(|d| decode(d)).collect()
}

pub async fn push_activation(
    tx: &mut PgConnection,
    tenant: &Tenant,
    id: Uuid,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO activations (tenant, rule_set_id, activate_time) VALUES ($1, $2, $3)")
        .bind(tenant.as_str())
        .bind(id)
        .bind(now)
        .execute(tx)
        .await?;
    Ok(())
}

/// The two newest activations not rolled back: (seq, rule set) of the
/// current one and of the one before it.
pub async fn top_activations(
    tx: &mut PgConnection,
    tenant: &Tenant,
) -> sqlx::Result<Vec<(i64, Uuid)>> {
    sqlx::query_as(
        "SELECT seq, rule_set_id FROM activations WHERE tenant = $1 AND NOT rolled_back
         ORDER BY seq DESC LIMIT 2",
    )
    .bind(tenant.as_str())
    .fetch_all(tx)
    .await
}

pub async fn pop_activation(tx: &mut PgConnection, seq: i64) -> sqlx::Result<()> {
    sqlx::query("UPDATE activations SET rolled_back = true WHERE seq = $1")
        .bind(seq)
        .execute(tx)
        .await?;
    Ok(())
}

pub async fn insert_decision(
    tx: &mut PgConnection,
    tenant: &Tenant,
    id: Uuid,
    kind: &str,
    d: &Decision,
    input: &RoutingOrder,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO decisions (tenant, decision_id, order_name, kind, doc, input, create_time)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(tenant.as_str())
    .bind(id)
    .bind(&d.order)
    .bind(kind)
    .bind(d.encode_to_vec())
    .bind(input.encode_to_vec())
    .bind(now)
    .execute(tx)
    .await?;
    Ok(())
}

pub async fn decision(
    ex: impl PgExecutor<'_>,
    tenant: &Tenant,
    id: Uuid,
) -> sqlx::Result<Option<Decision>> {
    let doc: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT doc FROM decisions WHERE tenant = $1 AND decision_id = $2")
            .bind(tenant.as_str())
            .bind(id)
            .fetch_optional(ex)
            .await?;
    doc.map(|d| decode(&d)).transpose()
}

/// Decisions newest first (ids are time-ordered), optionally of one order.
pub async fn list_decisions(
    ex: impl PgExecutor<'_>,
    tenant: &Tenant,
    order: &str,
    before: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<(Uuid, Decision)>> {
    let rows: Vec<(Uuid, Vec<u8>)> = sqlx::query_as(
        "SELECT decision_id, doc FROM decisions
         WHERE tenant = $1 AND ($2 = '' OR order_name = $2) AND decision_id < $3
         ORDER BY decision_id DESC LIMIT $4",
    )
    .bind(tenant.as_str())
    .bind(order)
    .bind(before.unwrap_or(Uuid::max()))
    .bind(limit)
    .fetch_all(ex)
    .await?;
    rows.into_iter()
        .map(|(id, d)| Ok((id, decode(&d)?)))
        .collect()
}

/// The orders of the newest `n` plan decisions, one per order.
pub async fn recent_inputs(
    ex: impl PgExecutor<'_>,
    tenant: &Tenant,
    n: i64,
) -> sqlx::Result<Vec<RoutingOrder>> {
    let docs: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT input FROM (
             SELECT DISTINCT ON (order_name) order_name, decision_id, input FROM decisions
             WHERE tenant = $1 AND kind = 'plan'
             ORDER BY order_name, decision_id DESC
         ) latest ORDER BY decision_id DESC LIMIT $2",
    )
    .bind(tenant.as_str())
    .bind(n)
    .fetch_all(ex)
    .await?;
    docs.iter().map(|d| decode(d)).collect()
}

/// Shipments planned at each node on its given local day.
pub async fn load(
    ex: impl PgExecutor<'_>,
    nodes: &[String],
    days: &[NaiveDate],
) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as(
        "SELECT l.node_id, l.shipments FROM node_load l
         JOIN UNNEST($1::text[], $2::date[]) AS x(node_id, day)
           ON l.node_id = x.node_id AND l.day = x.day",
    )
    .bind(nodes)
    .bind(days)
    .fetch_all(ex)
    .await
}

/// Counts one shipment of decision `id` (of `order`) at each node on its
/// day, in one statement.
pub async fn add_load(
    tx: &mut PgConnection,
    tenant: &Tenant,
    (id, order): (Uuid, &str),
    load: &[(String, NaiveDate)],
) -> sqlx::Result<()> {
    if load.is_empty() {
        return Ok(());
    }
    let (nodes, days): (Vec<&str>, Vec<NaiveDate>) =
        load.iter().map(|(n, d)| (n.as_str(), *d)).unzip();
    sqlx::query(
        "WITH counted AS (
             INSERT INTO decision_load (tenant, decision_id, order_name, node_id, day)
             SELECT $1, $2, $3, n, d FROM UNNEST($4::text[], $5::date[]) AS x(n, d)
             RETURNING node_id, day
         )
         INSERT INTO node_load (node_id, day, shipments)
         SELECT node_id, day, 1 FROM counted
         ON CONFLICT (node_id, day) DO UPDATE SET shipments = node_load.shipments + 1",
    )
    .bind(tenant.as_str())
    .bind(id)
    .bind(order)
    .bind(&nodes)
    .bind(&days)
    .execute(tx)
    .await?;
    Ok(())
}

/// Which counted shipments to give back.
pub enum Counted<'a> {
    /// Every node of one decision.
    Decision(Uuid),
    /// Some nodes of one decision.
    DecisionAt(Uuid, &'a [String]),
    /// One node of every decision of an order.
    OrderAt(&'a str, &'a str),
}

/// Takes counted shipments off `node_load`, each once. Returns how many.
pub async fn release_load(
    tx: &mut PgConnection,
    tenant: &Tenant,
    which: Counted<'_>,
) -> sqlx::Result<u64> {
    let (decision, order, nodes) = match which {
        Counted::Decision(id) => (Some(id), None, None),
        Counted::DecisionAt(id, nodes) => (Some(id), None, Some(nodes.to_vec())),
        Counted::OrderAt(order, node) => (None, Some(order), Some(vec![node.to_owned()])),
    };
    let freed = sqlx::query(
        "WITH freed AS (
             UPDATE decision_load SET released = true
             WHERE tenant = $1 AND NOT released
               AND ($2::uuid IS NULL OR decision_id = $2)
               AND ($3::text IS NULL OR order_name = $3)
               AND ($4::text[] IS NULL OR node_id = ANY($4))
             RETURNING node_id, day
         ), per_day AS (
             SELECT node_id, day, count(*) AS n FROM freed GROUP BY node_id, day
         )
         UPDATE node_load l SET shipments = GREATEST(l.shipments - p.n, 0)
         FROM per_day p WHERE l.node_id = p.node_id AND l.day = p.day",
    )
    .bind(tenant.as_str())
    .bind(decision)
    .bind(order)
    .bind(nodes)
    .execute(tx)
    .await?;
    Ok(freed.rows_affected())
}

/// Saves a changed decision document.
pub async fn save_decision(
    tx: &mut PgConnection,
    tenant: &Tenant,
    id: Uuid,
    d: &Decision,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE decisions SET doc = $3 WHERE tenant = $1 AND decision_id = $2")
        .bind(tenant.as_str())
        .bind(id)
        .bind(d.encode_to_vec())
        .execute(tx)
        .await?;
    Ok(())
}

/// Locks a decision for a change.
pub async fn lock_decision(
    tx: &mut PgConnection,
    tenant: &Tenant,
    id: Uuid,
) -> sqlx::Result<Option<Decision>> {
    let doc: Option<Vec<u8>> = sqlx::query_scalar(
        "SELECT doc FROM decisions WHERE tenant = $1 AND decision_id = $2 FOR UPDATE",
    )
    .bind(tenant.as_str())
    .bind(id)
    .fetch_optional(tx)
    .await?;
    doc.map(|d| decode(&d)).transpose()
}

/// (node, sku) penalties in force for these SKUs.
pub async fn penalties(
    ex: impl PgExecutor<'_>,
    tenant: &Tenant,
    skus: &[String],
    now: DateTime<Utc>,
) -> sqlx::Result<Vec<(String, String)>> {
    sqlx::query_as(
        "SELECT node_id, sku FROM penalties
         WHERE tenant = $1 AND sku = ANY($2) AND until_time > $3",
    )
    .bind(tenant.as_str())
    .bind(skus)
    .bind(now)
    .fetch_all(ex)
    .await
}

pub async fn penalise(
    tx: &mut PgConnection,
    tenant: &Tenant,
    node: &str,
    skus: &[String],
    until: DateTime<Utc>,
    reason: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO penalties (tenant, node_id, sku, until_time, reason)
         SELECT $1, $2, s, $4, $5 FROM UNNEST($3::text[]) AS s
         ON CONFLICT (tenant, node_id, sku) DO UPDATE
           SET until_time = GREATEST(penalties.until_time, EXCLUDED.until_time),
               reason = EXCLUDED.reason",
    )
    .bind(tenant.as_str())
    .bind(node)
    .bind(skus)
    .bind(until)
    .bind(reason)
    .execute(tx)
    .await?;
    Ok(())
}
