//! Steps waiting for stock, and what each needs (`stock_waits`; a row goes
//! with its step).
use chrono::{DateTime, Utc};
use oms_kernel::Tenant;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// An order's place in the line for stock: its creation, then its id.
pub type Turn = (DateTime<Utc>, Uuid);

/// A step waiting for stock.
#[derive(Debug, Clone, PartialEq)]
pub struct Waiter {
    pub order_id: Uuid,
    pub step: String,
    /// Its turn (the order's creation).
    pub since: DateTime<Utc>,
    /// The order's sales channel (empty: none).
    pub channel: String,
    /// Units per SKU it asks for.
    pub needs: Vec<(String, i64)>,
}

/// Says that the step `step` of the order (created `since`, sold in
/// `channel`) waits for `needs` (units per SKU), replacing what it waited
/// for before.
pub async fn wait_for(
    tx: &mut PgConnection,
    tenant: &Tenant,
    (order_id, step): (Uuid, &str),
    (since, channel): (DateTime<Utc>, &str),
    needs: &[(String, i64)],
) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM stock_waits WHERE tenant = $1 AND order_id = $2 AND step = $3")
        .bind(tenant.as_str())
        .bind(order_id)
        .bind(step)
        .execute(&mut *tx)
        .await?;
    let (skus, wanted): (Vec<&str>, Vec<i64>) = needs.iter().map(|(s, q)| (s.as_str(), *q)).unzip();
    sqlx::query(
        "INSERT INTO stock_waits (tenant, order_id, step, sku, wanted, since, channel)
         SELECT $1, $2, $3, sku, sum(wanted), $6, $7
         FROM unnest($4::text[], $5::bigint[]) AS n(sku, wanted) GROUP BY sku",
    )
    .bind(tenant.as_str())
    .bind(order_id)
    .bind(step)
    .bind(&skus)
    .bind(&wanted)
    .bind(since)
    .bind(channel)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// A SKU some step of the tenant waits for, if any.
pub async fn any_sku(ex: impl PgExecutor<'_>, tenant: &Tenant) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar("SELECT sku FROM stock_waits WHERE tenant = $1 LIMIT 1")
        .bind(tenant.as_str())
        .fetch_optional(ex)
        .await
}

/// Drops every wait of the order (it takes no stock now).
pub async fn forget(tx: &mut PgConnection, tenant: &Tenant, order_id: Uuid) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM stock_waits WHERE tenant = $1 AND order_id = $2")
        .bind(tenant.as_str())
        .bind(order_id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Whether a backorder (a `reserve` step) of an order older than `turn`
/// waits for any of `skus`: one index probe, stopping at the first. (The
/// order itself never counts, whatever the precision its creation time
/// was kept to: Postgres keeps microseconds.)
pub async fn backorders_before(
    ex: impl PgExecutor<'_>,
    tenant: &Tenant,
    skus: &[String],
    (since, order_id): Turn,
) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (
           SELECT 1 FROM stock_waits w
           JOIN saga_steps s USING (tenant, order_id, step)
           WHERE w.tenant = $1 AND w.sku = ANY($2) AND w.step = $5
             AND (w.since, w.order_id) < ($3, $4) AND w.order_id <> $4
             AND s.next_attempt_time <> 'infinity')",
    )
    .bind(tenant.as_str())
    .bind(skus)
    .bind(since)
    .bind(order_id)
    .bind(crate::repo::saga::RESERVE)
    .fetch_one(ex)
    .await
}

/// The oldest `limit` steps waiting for any of `skus` (`None`: any SKU),
/// after the waiter `after` (a page's last) and older than the turn
/// `before` (an order's creation and id) when given, with all they need,
/// oldest first. Steps due already (woken by an earlier run, their
/// attempt not made yet) are among them: the stock they will take is not
/// there for the others.
pub async fn waiting(
    ex: impl PgExecutor<'_>,
    tenant: &Tenant,
    (skus, after, before): (Option<&[String]>, Option<&Waiter>, Option<Turn>),
    limit: i64,
) -> sqlx::Result<Vec<Waiter>> {
    let rows: Vec<(Uuid, String, DateTime<Utc>, String, String, i64)> = sqlx::query_as(
        "WITH w AS (
           SELECT DISTINCT ON (w.since, w.order_id, w.step) w.order_id, w.step, w.since
           FROM stock_waits w
           JOIN saga_steps s USING (tenant, order_id, step)
           WHERE w.tenant = $1 AND ($2::text[] IS NULL OR w.sku = ANY($2))
             AND s.next_attempt_time <> 'infinity'
             AND ($4::timestamptz IS NULL OR (w.since, w.order_id, w.step) > ($4, $5, $6))
             AND ($7::timestamptz IS NULL OR ((w.since, w.order_id) < ($7, $8) AND w.order_id <> $8))
           ORDER BY w.since, w.order_id, w.step
           LIMIT $3
         )
         SELECT w.order_id, w.step, w.since, n.channel, n.sku, n.wanted
         FROM w JOIN stock_waits n ON n.tenant = $1 AND n.order_id = w.order_id AND n.step = w.step
         ORDER BY w.since, w.order_id, w.step, n.sku",
    )
    .bind(tenant.as_str())
    .bind(skus)
    .bind(limit)
    .bind(after.map(|w| w.since))
    .bind(after.map(|w| w.order_id))
    .bind(after.map(|w| w.step.as_str()))
    .bind(before.map(|(since, _)| since))
    .bind(before.map(|(_, order_id)| order_id))
    .fetch_all(ex)
    .await?;
    let mut out: Vec<Waiter> = Vec::new();
    for (order_id, step, since, channel, sku, wanted) in rows {
        match out.last_mut() {
            Some(w) if w.order_id == order_id && w.step == step => w.needs.push((sku, wanted)),
            _ => out.push(Waiter {
                order_id,
                step,
                since,
                channel,
                needs: vec![(sku, wanted)],
            }),
        }
    }
    Ok(out)
}

/// Makes the steps due now, in the order given (the saga takes due steps
/// by their time, so the first is tried first); a step due already, or
/// retired, stays as it is. With `pass_locked`, a step another
/// transaction has locked (a saga replica running it now) stays as it is
/// too, rather than waited for: a wake from inside a saga step must not
/// wait on another replica's batch. Returns how many it woke.
pub async fn wake(
    ex: impl PgExecutor<'_>,
    tenant: &Tenant,
    steps: &[(Uuid, String)],
    pass_locked: bool,
) -> sqlx::Result<u64> {
    if steps.is_empty() {
        return Ok(0);
    }
    let (orders, names): (Vec<Uuid>, Vec<&str>) =
        steps.iter().map(|(o, s)| (*o, s.as_str())).unzip();
    let locked = if pass_locked { "SKIP LOCKED" } else { "" };
    // Safe: the only text put in is one of two literals.
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "WITH w AS (
           SELECT s.order_id, s.step, w.turn
           FROM unnest($2::uuid[], $3::text[]) WITH ORDINALITY AS w(order_id, step, turn)
           JOIN saga_steps s ON s.tenant = $1 AND s.order_id = w.order_id AND s.step = w.step
           WHERE s.next_attempt_time > now() AND s.next_attempt_time <> 'infinity'
           FOR UPDATE OF s {locked}
         )
         UPDATE saga_steps s SET next_attempt_time = now() + make_interval(secs => w.turn / 1e6)
         FROM w WHERE s.tenant = $1 AND s.order_id = w.order_id AND s.step = w.step",
    )))
    .bind(tenant.as_str())
    .bind(&orders)
    .bind(&names)
    .execute(ex)
    .await?;
    Ok(done.rows_affected())
}

/// What the orders waiting for each SKU's stock ask for (SKU, orders,
/// units, the oldest's creation), by SKU, after `after` (the waits of the
/// view `stock_demand`).
pub async fn demand(
    ex: impl PgExecutor<'_>,
    tenant: &Tenant,
    skus: Option<&[String]>,
    after: Option<&str>,
    limit: i64,
) -> sqlx::Result<Vec<(String, i64, i64, DateTime<Utc>)>> {
    sqlx::query_as(
        "SELECT sku, count(DISTINCT order_id), sum(wanted)::bigint, min(since)
         FROM stock_demand
         WHERE tenant = $1
           AND ($2::text[] IS NULL OR sku = ANY($2))
           AND ($3::text IS NULL OR sku > $3)
         GROUP BY sku ORDER BY sku LIMIT $4",
    )
    .bind(tenant.as_str())
    .bind(skus)
    .bind(after)
    .bind(limit)
    .fetch_all(ex)
    .await
}

/// An order waiting for a SKU's stock and its place in line.
#[derive(Debug, sqlx::FromRow)]
pub struct InLine {
    pub order_id: Uuid,
    pub since: DateTime<Utc>,
    pub channel: String,
    pub units: i64,
    pub orders_ahead: i64,
    pub units_ahead: i64,
}

/// The orders waiting for `sku`'s stock (the same as [`demand`] counts)
/// in their turn, after the turn `after`, with what the orders before
/// each ask for; only `order`, when given.
pub async fn queue(
    ex: impl PgExecutor<'_>,
    tenant: &Tenant,
    (sku, order): (&str, Option<Uuid>),
    after: Option<Turn>,
    limit: i64,
) -> sqlx::Result<Vec<InLine>> {
    sqlx::query_as(
        "WITH q AS (
           SELECT order_id, min(since) AS since, max(channel) AS channel,
                  sum(wanted)::bigint AS units
           FROM stock_demand
           WHERE tenant = $1 AND sku = $2
           GROUP BY order_id
         ), r AS (
           SELECT order_id, since, channel, units,
                  row_number() OVER turn - 1 AS orders_ahead,
                  (coalesce(sum(units) OVER turn, 0) - units)::bigint AS units_ahead
           FROM q WINDOW turn AS (ORDER BY since, order_id)
         )
         SELECT * FROM r
         WHERE ($3::timestamptz IS NULL OR (since, order_id) > ($3, $4))
           AND ($6::uuid IS NULL OR order_id = $6)
         ORDER BY since, order_id LIMIT $5",
    )
    .bind(tenant.as_str())
    .bind(sku)
    .bind(after.map(|(since, _)| since))
    .bind(after.map(|(_, order_id)| order_id))
    .bind(limit)
    .bind(order)
    .fetch_all(ex)
    .await
}
