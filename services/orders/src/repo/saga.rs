//! The placement saga's durable steps.
use chrono::{DateTime, Utc};
use oms_kernel::Tenant;
use sqlx::PgConnection;
use uuid::Uuid;

pub const RESERVE: &str = "reserve";
pub const ROUTE: &str = "route";
pub const FULFIL: &str = "fulfil";
/// Prefix of the steps that reroute what a node gave back (`reroute:<key>`).
pub const REROUTE: &str = "reroute:";
/// Prefix of the steps that give a routing decision's node capacity back
/// (`unplan:<decision id>`).
pub const UNPLAN: &str = "unplan:";
/// The step that gives back every plan routing still counts for a
/// cancelled order, recorded or not.
pub const UNPLAN_ALL: &str = "unplan-all";
/// The step that gives back the node capacity an order's plans count at
/// the nodes whose work for it ended with nothing shipped (they gave it
/// up at a cancel, others shipped).
pub const UNPLAN_IDLE: &str = "unplan-idle";
/// Prefix of the steps that ask a node to cancel a fulfillment order
/// (`cancel-work:<fulfillment order id>`).
pub const CANCEL_WORK: &str = "cancel-work:";
/// Prefix of the steps that give units back to inventory after a cancel,
/// an edit or a node's give-up (`release:<key>`).
pub const RELEASE: &str = "release:";
/// Prefix of the steps that take back units an edit added to an order's
/// reservation when the edit was not recorded (`undo-extend:<edit request
/// id>`).
pub const UNDO_EXTEND: &str = "undo-extend:";
/// The step that watches the unconfirmed reservation of an order held
/// while RESERVED, and says when it expired (see `workers::held_expiry`).
pub const HELD_EXPIRY: &str = "held-expiry";
/// A mark, never due, that a placement step's call may have changed its
/// peer without the step being recorded: the `reserve` step's reservation
/// (inventory), the `route` step's plan (routing) and confirmation
/// (inventory), or the `fulfil` step's release (fulfillment). Written, on
/// its own commit, before the call; removed with the step's record, when
/// the call surely changed nothing, or once the order is no longer being
/// placed. While it is there the order's lines do not change: the step's
/// next attempt must send what the first one sent.
pub const IN_DOUBT: &str = "in-doubt";

/// A pending step.
pub struct Step {
    pub tenant: String,
    pub order_id: Uuid,
    pub step: String,
    pub payload: Vec<u8>,
    pub attempts: i32,
}

/// Adds a step (or makes an existing one due now).
pub async fn enqueue(
    tx: &mut PgConnection,
    tenant: &Tenant,
    order_id: Uuid,
    step: &str,
    payload: &[u8],
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO saga_steps (tenant, order_id, step, payload) VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant, order_id, step) DO UPDATE SET next_attempt_time = now(), payload = EXCLUDED.payload",
    )
    .bind(tenant.as_str())
    .bind(order_id)
    .bind(step)
    .bind(payload)
    .execute(tx)
    .await?;
    Ok(())
}

/// Adds a step due at `at`, unless it is there already (then it stays as
/// it is).
pub async fn schedule(
    db: impl sqlx::PgExecutor<'_>,
    tenant: &Tenant,
    order_id: Uuid,
    step: &str,
    payload: &[u8],
    at: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO saga_steps (tenant, order_id, step, payload, next_attempt_time)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant, order_id, step) DO NOTHING",
    )
    .bind(tenant.as_str())
    .bind(order_id)
    .bind(step)
    .bind(payload)
    .bind(at)
    .execute(db)
    .await?;
    Ok(())
}

/// Writes the mark `step` (never due, see [`IN_DOUBT`]); whether it is
/// new (false: an earlier attempt left it).
pub async fn mark(
    db: impl sqlx::PgExecutor<'_>,
    tenant: &Tenant,
    order_id: Uuid,
    step: &str,
) -> sqlx::Result<bool> {
    let new: Option<bool> = sqlx::query_scalar(
        "INSERT INTO saga_steps (tenant, order_id, step, next_attempt_time, last_error)
         VALUES ($1, $2, $3, 'infinity', 'a mark, never due')
         ON CONFLICT (tenant, order_id, step) DO NOTHING RETURNING true",
    )
    .bind(tenant.as_str())
    .bind(order_id)
    .bind(step)
    .fetch_optional(db)
    .await?;
    Ok(new.is_some())
}

/// Removes a step before it runs: whether it was still to run (a
/// [`retire`]d step is removed too, but answers false).
pub async fn take(
    db: impl sqlx::PgExecutor<'_>,
    tenant: &Tenant,
    order_id: Uuid,
    step: &str,
) -> sqlx::Result<bool> {
    let pending: Option<bool> = sqlx::query_scalar(
        "DELETE FROM saga_steps WHERE tenant = $1 AND order_id = $2 AND step = $3
         RETURNING next_attempt_time <> 'infinity'",
    )
    .bind(tenant.as_str())
    .bind(order_id)
    .bind(step)
    .fetch_optional(db)
    .await?;
    Ok(pending == Some(true))
}

/// Ends a step but keeps it, never to run again, so that [`schedule`] does
/// not add it anew and [`take`] tells that it ran.
pub async fn retire(tx: &mut PgConnection, s: &Step) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE saga_steps SET next_attempt_time = 'infinity', last_error = 'done'
         WHERE tenant = $1 AND order_id = $2 AND step = $3",
    )
    .bind(&s.tenant)
    .bind(s.order_id)
    .bind(&s.step)
    .execute(tx)
    .await?;
    Ok(())
}

/// Adds the same first step for many new orders in one statement.
pub async fn enqueue_many(
    tx: &mut PgConnection,
    orders: &[(&Tenant, Uuid)],
    step: &str,
) -> sqlx::Result<()> {
    if orders.is_empty() {
        return Ok(());
    }
    let tenants: Vec<&str> = orders.iter().map(|(t, _)| t.as_str()).collect();
    let ids: Vec<Uuid> = orders.iter().map(|(_, id)| *id).collect();
    sqlx::query(
        "INSERT INTO saga_steps (tenant, order_id, step)
         SELECT t, i, $3 FROM UNNEST($1::text[], $2::uuid[]) AS x(t, i)
         ON CONFLICT (tenant, order_id, step) DO UPDATE SET next_attempt_time = now()",
    )
    .bind(&tenants)
    .bind(&ids)
    .bind(step)
    .execute(tx)
    .await?;
    Ok(())
}

/// Whether the order has step `step` (due, waiting or retired).
pub async fn exists(
    tx: &mut PgConnection,
    tenant: &Tenant,
    order_id: Uuid,
    step: &str,
) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM saga_steps WHERE tenant = $1 AND order_id = $2 AND step = $3)",
    )
    .bind(tenant.as_str())
    .bind(order_id)
    .bind(step)
    .fetch_one(tx)
    .await
}

/// Makes the order's [`UNDO_EXTEND`] steps (edits that added units and
/// were not recorded) due now rather than in the minute they wait for
/// their edit's own attempt to end. The caller holds the order's lock, so
/// no edit is under way: the units an attempt added would otherwise stay
/// held (past the order's placement, or its delivery) for that minute.
pub async fn hurry_undone_edits(
    tx: &mut PgConnection,
    tenant: &Tenant,
    order_id: Uuid,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE saga_steps SET next_attempt_time = now()
         WHERE tenant = $1 AND order_id = $2 AND starts_with(step, $3)
           AND next_attempt_time <> 'infinity' AND next_attempt_time > now()",
    )
    .bind(tenant.as_str())
    .bind(order_id)
    .bind(UNDO_EXTEND)
    .execute(tx)
    .await?;
    Ok(())
}

/// Whether the order has units still to give back to inventory: a
/// [`RELEASE`] step not yet done, or an [`UNDO_EXTEND`] step (hurried
/// when the order was locked: [`hurry_undone_edits`]).
pub async fn give_backs_pending(
    tx: &mut PgConnection,
    tenant: &Tenant,
    order_id: Uuid,
) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM saga_steps WHERE tenant = $1 AND order_id = $2
           AND (starts_with(step, $3) OR starts_with(step, $4)) AND next_attempt_time <> 'infinity')",
    )
    .bind(tenant.as_str())
    .bind(order_id)
    .bind(RELEASE)
    .bind(UNDO_EXTEND)
    .fetch_one(tx)
    .await
}

/// Due steps, locked for this transaction; other workers skip them.
pub async fn claim_due(tx: &mut PgConnection, limit: i64) -> sqlx::Result<Vec<Step>> {
    let rows: Vec<(String, Uuid, String, Vec<u8>, i32)> = sqlx::query_as(
        "SELECT tenant, order_id, step, payload, attempts FROM saga_steps
         WHERE next_attempt_time <= now() ORDER BY next_attempt_time
         LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(tenant, order_id, step, payload, attempts)| Step {
            tenant,
            order_id,
            step,
            payload,
            attempts,
        })
        .collect())
}

pub async fn done(tx: &mut PgConnection, s: &Step) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM saga_steps WHERE tenant = $1 AND order_id = $2 AND step = $3")
        .bind(&s.tenant)
        .bind(s.order_id)
        .bind(&s.step)
        .execute(tx)
        .await?;
    Ok(())
}

/// Runs a step again at `at` because it waits for something (the order's
/// lock, give-backs, the order's release), not because it failed: its
/// attempts, which set the backoff after a failure, stay as they are.
/// (Counted as failures, a few waits made the next real failure back off
/// for most of a minute.)
pub async fn wait(
    tx: &mut PgConnection,
    s: &Step,
    why: &str,
    at: DateTime<Utc>,
) -> sqlx::Result<()> {
    reschedule(tx, s, (why, at), false, None).await
}

/// Retries a step later with a new payload (what the next attempt should
/// ask).
pub async fn retry_with(
    tx: &mut PgConnection,
    s: &Step,
    payload: &[u8],
    error: &str,
    at: DateTime<Utc>,
) -> sqlx::Result<()> {
    reschedule(tx, s, (error, at), true, Some(payload)).await
}

/// Retries a failed step at `at`.
pub async fn retry(
    tx: &mut PgConnection,
    s: &Step,
    error: &str,
    at: DateTime<Utc>,
) -> sqlx::Result<()> {
    reschedule(tx, s, (error, at), true, None).await
}

/// Makes a step due at `at`, saying why; a failure counts an attempt; a
/// payload replaces the step's.
async fn reschedule(
    tx: &mut PgConnection,
    s: &Step,
    (why, at): (&str, DateTime<Utc>),
    failed: bool,
    payload: Option<&[u8]>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE saga_steps SET attempts = attempts + $6, last_error = $4,
             next_attempt_time = $5, payload = COALESCE($7, payload)
         WHERE tenant = $1 AND order_id = $2 AND step = $3",
    )
    .bind(&s.tenant)
    .bind(s.order_id)
    .bind(&s.step)
    .bind(why)
    .bind(at)
    .bind(i32::from(failed))
    .bind(payload)
    .execute(tx)
    .await?;
    Ok(())
}
