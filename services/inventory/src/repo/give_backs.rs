//! Give-backs on their way to the gate (migration 0009): written with the
//! change, deleted once the gate has the stock or a rebuild counted it.
use oms_kernel::Tenant;
use sqlx::{PgConnection, PgExecutor};
use std::time::Duration;
use uuid::Uuid;

pub async fn record(tx: &mut PgConnection, tenant: &Tenant, id: Uuid) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO gate_give_backs (tenant, give_back_id) VALUES ($1, $2)")
        .bind(tenant.as_str())
        .bind(id)
        .execute(tx)
        .await?;
    Ok(())
}

/// Deletes the tenant's rows: a rebuild, under the exclusive gate lock,
/// read every change they stand for from the record.
pub async fn counted(tx: &mut PgConnection, tenant: &Tenant) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM gate_give_backs WHERE tenant = $1")
        .bind(tenant.as_str())
        .execute(tx)
        .await?;
    Ok(())
}

/// Rows older than `age`, by tenant: give-backs that never arrived.
pub async fn lost(
    db: impl PgExecutor<'_>,
    age: Duration,
) -> sqlx::Result<Vec<(String, Vec<Uuid>)>> {
    sqlx::query_as(
        "SELECT tenant, array_agg(give_back_id) FROM gate_give_backs
         WHERE create_time < now() - make_interval(secs => $1)
         GROUP BY tenant",
    )
    .bind(age.as_secs_f64())
    .fetch_all(db)
    .await
}

/// Deletes give-backs that arrived (or that a dropped gate will count).
pub async fn forget(db: impl PgExecutor<'_>, tenant: &Tenant, ids: &[Uuid]) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM gate_give_backs WHERE tenant = $1 AND give_back_id = ANY($2)")
        .bind(tenant.as_str())
        .bind(ids)
        .execute(db)
        .await?;
    Ok(())
}
