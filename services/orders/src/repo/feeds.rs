//! Feeds of other services that orders follows, their cursors, and what
//! orders keeps of the fulfillment orders it hears about.
use chrono::{DateTime, Utc};
use oms_kernel::Tenant;
use oms_proto::fulfillment::FulfillmentOrder;
use oms_runtime::db::decode;
use oms_runtime::outbox::Cursor;
use prost::Message;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

pub const FULFILLMENT: &str = "fulfillment";
/// Inventory's feed, followed for stock that may let waiting steps go
/// (see `workers::stock_feed`).
pub const INVENTORY: &str = "inventory";

/// Starts following `source` for `tenant` (from the beginning) unless it
/// is followed already.
pub async fn follow(db: impl PgExecutor<'_>, source: &str, tenant: &Tenant) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO feed_cursors (source, tenant) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(source)
        .bind(tenant.as_str())
        .execute(db)
        .await?;
    Ok(())
}

/// Tenants followed on `source`, with their cursors.
pub async fn followed(
    ex: impl PgExecutor<'_>,
    source: &str,
) -> sqlx::Result<Vec<(String, String)>> {
    sqlx::query_as("SELECT tenant, cursor FROM feed_cursors WHERE source = $1")
        .bind(source)
        .fetch_all(ex)
        .await
}

/// Takes the event at `cursor` of `source` for `tenant` in `tx`, unless
/// the stored cursor is there or past it: every orders replica follows
/// every tenant, the first to take an event makes the others skip it, and
/// the cursor never moves back. Takers wait for each other on a lock of
/// the source and tenant, held until `tx` ends.
pub async fn claim(
    tx: &mut PgConnection,
    source: &str,
    tenant: &Tenant,
    cursor: &str,
) -> sqlx::Result<bool> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("feed:{source}:{}", tenant.as_str()))
        .execute(&mut *tx)
        .await?;
    let stored: Option<String> =
        sqlx::query_scalar("SELECT cursor FROM feed_cursors WHERE source = $1 AND tenant = $2")
            .bind(source)
            .bind(tenant.as_str())
            .fetch_optional(&mut *tx)
            .await?;
    Ok(before(stored.as_deref().unwrap_or(""), cursor))
}

/// Whether the stored cursor lies before `cursor` (cursors that cannot be
/// compared count as before: the event is taken, as it always was).
fn before(stored: &str, cursor: &str) -> bool {
    match (Cursor::parse(stored), Cursor::parse(cursor)) {
        (Ok(s), Ok(c)) => s < c,
        _ => true,
    }
}

/// Moves the cursor of `source` for `tenant`, with when the event at it
/// happened (`None` keeps the time stored).
pub async fn advance(
    tx: &mut PgConnection,
    source: &str,
    tenant: &Tenant,
    cursor: &str,
    event_time: Option<DateTime<Utc>>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE feed_cursors SET cursor = $3, event_time = coalesce($4, event_time)
         WHERE source = $1 AND tenant = $2",
    )
    .bind(source)
    .bind(tenant.as_str())
    .bind(cursor)
    .bind(event_time)
    .execute(tx)
    .await?;
    Ok(())
}

/// When the event at the stored cursor of `source` for `tenant` happened,
/// if known.
pub async fn event_time(
    ex: impl PgExecutor<'_>,
    source: &str,
    tenant: &Tenant,
) -> sqlx::Result<Option<DateTime<Utc>>> {
    let t: Option<Option<DateTime<Utc>>> =
        sqlx::query_scalar("SELECT event_time FROM feed_cursors WHERE source = $1 AND tenant = $2")
            .bind(source)
            .bind(tenant.as_str())
            .fetch_optional(ex)
            .await?;
    Ok(t.flatten())
}

/// What storing a report of a fulfillment order found.
pub enum Put {
    /// The stored report is as new or newer (a feed repeating what a
    /// resync read): nothing stored.
    Stale,
    /// Stored, replacing this report (none: the first).
    Stored(Option<Box<FulfillmentOrder>>),
}

/// Whether `fo` is a later report than `stored`. Reports without a
/// version (0: from before fulfillment kept them) come in feed order, so
/// only a versioned stored report can tell an older one.
fn newer(fo: &FulfillmentOrder, stored: &FulfillmentOrder) -> bool {
    stored.version == 0 || fo.version > stored.version
}

/// Stores the latest report of a fulfillment order, unless the one stored
/// is as new.
pub async fn put_fulfillment(
    tx: &mut PgConnection,
    tenant: &Tenant,
    order_id: Uuid,
    fo: &FulfillmentOrder,
) -> sqlx::Result<Put> {
    let old: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT doc FROM fulfillments WHERE tenant = $1 AND name = $2")
            .bind(tenant.as_str())
            .bind(&fo.name)
            .fetch_optional(&mut *tx)
            .await?;
    let old: Option<FulfillmentOrder> = old.map(|d| decode(&d)).transpose()?;
    if old.as_ref().is_some_and(|o| !newer(fo, o)) {
        return Ok(Put::Stale);
    }
    sqlx::query(
        "INSERT INTO fulfillments (tenant, order_id, name, doc) VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant, name) DO UPDATE SET doc = EXCLUDED.doc",
    )
    .bind(tenant.as_str())
    .bind(order_id)
    .bind(&fo.name)
    .bind(fo.encode_to_vec())
    .execute(&mut *tx)
    .await?;
    Ok(Put::Stored(old.map(Box::new)))
}

/// Every fulfillment order of an order, as last reported.
pub async fn fulfillments(
    tx: &mut PgConnection,
    tenant: &Tenant,
    order_id: Uuid,
) -> sqlx::Result<Vec<FulfillmentOrder>> {
    let docs: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT doc FROM fulfillments WHERE tenant = $1 AND order_id = $2")
            .bind(tenant.as_str())
            .bind(order_id)
            .fetch_all(tx)
            .await?;
    docs.iter().map(|d| decode(d)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_taken_only_past_the_stored_cursor() {
        assert!(before("", "1.1"));
        assert!(before("0.0", "1.1"));
        assert!(before("7.3", "7.4"));
        assert!(before("7.3", "8.1"));
        assert!(!before("7.4", "7.4"), "taken already");
        assert!(!before("8.1", "7.9"), "another replica is past it");
        // A resync's cursor lies past every event of its transaction.
        assert!(!before("7.9223372036854775807", "7.5"));
        assert!(before("7.9223372036854775807", "8.1"));
    }

    #[test]
    fn a_report_is_newer_by_version_unless_the_stored_one_has_none() {
        let v = |version| FulfillmentOrder {
            version,
            ..Default::default()
        };
        assert!(newer(&v(3), &v(2)));
        assert!(!newer(&v(2), &v(2)));
        assert!(!newer(&v(1), &v(2)));
        // An unversioned stored report: whatever comes next is later.
        assert!(newer(&v(1), &v(0)));
        assert!(newer(&v(0), &v(0)));
        // Unversioned after versioned: an old report repeated.
        assert!(!newer(&v(0), &v(2)));
    }
}
