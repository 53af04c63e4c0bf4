//! SQL of advance shipping notices and receipts.
use chrono::{DateTime, Utc};
use oms_kernel::Tenant;
use oms_proto::fulfillment::{AdvanceShippingNotice, Receipt};
use oms_runtime::{db::decode, time::to_timestamp};
use prost::Message;
use sqlx::{PgConnection, PgExecutor};
use std::collections::HashMap;
use uuid::Uuid;

pub async fn insert_asn(
    tx: &mut PgConnection,
    tenant: &Tenant,
    id: Uuid,
    asn: &AdvanceShippingNotice,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO asns (tenant, id, node_id, doc, create_time) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(tenant.as_str())
    .bind(id)
    .bind(&asn.node_id)
    .bind(asn.encode_to_vec())
    .bind(now)
    .execute(tx)
    .await?;
    Ok(())
}

/// A notice, locked for the transaction when `lock` (receipts against it
/// are recorded one at a time, so each sees the ones before it).
pub async fn asn(
    ex: impl PgExecutor<'_>,
    tenant: &Tenant,
    id: Uuid,
    lock: bool,
) -> sqlx::Result<Option<AdvanceShippingNotice>> {
    let sql = if lock {
        "SELECT doc FROM asns WHERE tenant = $1 AND id = $2 FOR UPDATE"
    } else {
        "SELECT doc FROM asns WHERE tenant = $1 AND id = $2"
    };
    let doc: Option<Vec<u8>> = sqlx::query_scalar(sql)
        .bind(tenant.as_str())
        .bind(id)
        .fetch_optional(ex)
        .await?;
    doc.map(|d| decode(&d)).transpose()
}

/// Newest first, at `node` when given.
pub async fn list_asns(
    ex: impl PgExecutor<'_>,
    tenant: &Tenant,
    node: &str,
    before: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<(Uuid, AdvanceShippingNotice)>> {
    let rows: Vec<(Uuid, Vec<u8>)> = sqlx::query_as(
        "SELECT id, doc FROM asns
         WHERE tenant = $1 AND ($2 = '' OR node_id = $2) AND id < $3
         ORDER BY id DESC LIMIT $4",
    )
    .bind(tenant.as_str())
    .bind(node)
    .bind(before.unwrap_or(Uuid::max()))
    .bind(limit)
    .fetch_all(ex)
    .await?;
    rows.into_iter()
        .map(|(id, d)| Ok((id, decode(&d)?)))
        .collect()
}

/// Stores a receipt; false when its id was taken already.
pub async fn insert_receipt(
    ex: impl PgExecutor<'_>,
    tenant: &Tenant,
    asn: Option<Uuid>,
    rc: &Receipt,
    now: DateTime<Utc>,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "INSERT INTO receipts (tenant, receipt_id, asn_id, node_id, doc, record_time)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(tenant.as_str())
    .bind(&rc.receipt_id)
    .bind(asn)
    .bind(&rc.node_id)
    .bind(rc.encode_to_vec())
    .bind(now)
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

type ReceiptRow = (Vec<u8>, Option<DateTime<Utc>>, Option<String>);
type AsnReceiptRow = (Uuid, Vec<u8>, Option<DateTime<Utc>>, Option<String>);

fn receipt((doc, posted, error): ReceiptRow) -> sqlx::Result<Receipt> {
    let mut rc: Receipt = decode(&doc)?;
    rc.post_time = posted.map(to_timestamp);
    rc.post_error = error.unwrap_or_default();
    Ok(rc)
}

/// Receipts against each of some notices, in the order they were recorded.
pub async fn receipts_of(
    ex: impl PgExecutor<'_>,
    tenant: &Tenant,
    asns: &[Uuid],
) -> sqlx::Result<HashMap<Uuid, Vec<Receipt>>> {
    let rows: Vec<AsnReceiptRow> = sqlx::query_as(
        "SELECT asn_id, doc, post_time, post_error FROM receipts
         WHERE tenant = $1 AND asn_id = ANY($2) ORDER BY record_time, receipt_id",
    )
    .bind(tenant.as_str())
    .bind(asns)
    .fetch_all(ex)
    .await?;
    let mut out: HashMap<Uuid, Vec<Receipt>> = HashMap::new();
    for (asn, doc, posted, error) in rows {
        out.entry(asn)
            .or_default()
            .push(receipt((doc, posted, error))?);
    }
    Ok(out)
}

/// Receipts of any tenant whose good units are not posted yet, oldest first.
pub async fn to_post(ex: impl PgExecutor<'_>, limit: i64) -> sqlx::Result<Vec<(String, Receipt)>> {
    let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(
        "SELECT tenant, doc FROM receipts
         WHERE post_time IS NULL AND post_error IS NULL ORDER BY record_time LIMIT $1",
    )
    .bind(limit)
    .fetch_all(ex)
    .await?;
    rows.into_iter()
        .map(|(t, d)| Ok((t, decode(&d)?)))
        .collect()
}

/// Marks a receipt posted, or never postable with `error`.
pub async fn mark_posted(
    ex: impl PgExecutor<'_>,
    tenant: &Tenant,
    receipt_id: &str,
    error: Option<&str>,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE receipts SET post_time = $4, post_error = $3
         WHERE tenant = $1 AND receipt_id = $2",
    )
    .bind(tenant.as_str())
    .bind(receipt_id)
    .bind(error)
    .bind(now)
    .execute(ex)
    .await?;
    Ok(())
}

/// The node a receipt was received at.
pub async fn receipt_node(
    ex: impl PgExecutor<'_>,
    tenant: &Tenant,
    receipt_id: &str,
) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar("SELECT node_id FROM receipts WHERE tenant = $1 AND receipt_id = $2")
        .bind(tenant.as_str())
        .bind(receipt_id)
        .fetch_optional(ex)
        .await
}
