//! The gate lock of a tenant: every change of the Redis gate happens in a
//! transaction holding it shared; a rebuild holds it exclusively, so it
//! reads a record no gate change is still writing.
use oms_kernel::Tenant;
use sqlx::PgConnection;

const SQL_SHARED: &str =
    "SELECT pg_advisory_xact_lock_shared(hashtextextended('oms.inventory.gate:' || $1, 0))";
const SQL_EXCLUSIVE: &str =
    "SELECT pg_advisory_xact_lock(hashtextextended('oms.inventory.gate:' || $1, 0))";

pub async fn shared(tx: &mut PgConnection, tenant: &Tenant) -> sqlx::Result<()> {
    sqlx::query(SQL_SHARED)
        .bind(tenant.as_str())
        .execute(tx)
        .await?;
    Ok(())
}

pub async fn exclusive(tx: &mut PgConnection, tenant: &Tenant) -> sqlx::Result<()> {
    sqlx::query(SQL_EXCLUSIVE)
        .bind(tenant.as_str())
        .execute(tx)
        .await?;
    Ok(())
}

/// Serializes safety stock changes at one node of a tenant: each gives the
/// gate the difference it makes to the figures in force, so each must read
/// them after the one before has committed (a node default and a SKU's own
/// figure are different rows, which no row lock orders).
pub async fn safety_at(tx: &mut PgConnection, tenant: &Tenant, node: &str) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('oms.inventory.safety:' || $1 || '/' || $2, 0))")
        .bind(tenant.as_str())
        .bind(node)
        .execute(tx)
        .await?;
    Ok(())
}

/// `BEGIN` plus the shared gate locks of `tenants`, to send in one round
/// trip (`Pool::begin_with`). Tenant ids are `[a-z0-9_-]` (checked when the
/// token is read), so they embed safely.
pub fn begin_shared<'a>(tenants: impl IntoIterator<Item = &'a Tenant>) -> String {
    let mut sql = String::from("BEGIN;");
    for t in tenants {
        sql.push_str(&format!(
            " SELECT pg_advisory_xact_lock_shared(hashtextextended('oms.inventory.gate:{}', 0));",
            t.as_str()
        ));
    }
    sql
}
