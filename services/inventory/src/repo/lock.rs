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
    exclusive_on(tx, format!("oms.inventory.safety:{tenant}/{node}")).await
}

/// The advisory lock key of tenant `$1`'s stock of SKU `s` at node `n`
/// (a macro: statements are literals, see `concat!`).
macro_rules! stock_key {
    () => {
        "hashtextextended('oms.inventory.stock:' || $1 || '/' || n || '/' || s, 0)"
    };
}
pub(crate) use stock_key;

/// Serializes the movements of each of `stock` (node, SKU) that touch
/// different lots: each movement reads the node's other lots of the SKU to
/// say what reservations hold beyond them, so it must read them after the
/// one before has committed, which no lot's row lock orders. Taken before
/// the lots' row locks, in one order (bytewise, as the lots), so no two
/// movements wait for each other in a cycle. Only lot-tracked stock needs it:
/// an untracked SKU has one row per node, which its row lock orders.
pub async fn stock_at(
    tx: &mut PgConnection,
    tenant: &Tenant,
    stock: &[(&str, &str)],
) -> sqlx::Result<()> {
    if stock.is_empty() {
        return Ok(());
    }
    let (nodes, skus): (Vec<&str>, Vec<&str>) = stock.iter().copied().unzip();
    // A volatile function in the select list runs after the sort.
    sqlx::query(concat!(
        "SELECT pg_advisory_xact_lock(",
        stock_key!(),
        r#") FROM UNNEST($2::text[], $3::text[]) AS k(n, s) ORDER BY n COLLATE "C", s COLLATE "C""#
    ))
    .bind(tenant.as_str())
    .bind(&nodes)
    .bind(&skus)
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

/// Serializes one backorder source's demand settings of a tenant: each
/// gives the gate the difference it makes to the figures stored, so each
/// must read them after the one before has committed (a figure new to
/// both has no row yet for a row lock to order).
pub async fn backorder_demand(
    tx: &mut PgConnection,
    tenant: &Tenant,
    source: &str,
) -> sqlx::Result<()> {
    exclusive_on(tx, format!("oms.inventory.demand:{tenant}/{source}")).await
}

/// Serializes the settings of one inbound delivery: each compares what
/// it sets with what the one before stored (a delivery new to both has no
/// row yet for a row lock to order).
pub async fn expected_inbound(
    tx: &mut PgConnection,
    tenant: &Tenant,
    source: &str,
    inbound_id: &str,
) -> sqlx::Result<()> {
    exclusive_on(
        tx,
        format!("oms.inventory.inbound:{tenant}/{source}/{inbound_id}"),
    )
    .await
}

/// The transaction's exclusive advisory lock on `key`.
async fn exclusive_on(tx: &mut PgConnection, key: String) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(key)
        .execute(tx)
        .await?;
    Ok(())
}
