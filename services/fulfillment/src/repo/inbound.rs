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

/// A notice's row: its document and what the table keeps beside it.
type AsnRow = (
    Vec<u8>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<String>,
);

/// An [`AsnRow`] with the notice's id first.
type ListedRow = (
    Uuid,
    Vec<u8>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<String>,
);

/// The columns of an [`AsnRow`] (a macro: statements are literals, see
/// `concat!`).
macro_rules! asn_columns {
    () => {
        "doc, close_time, inbound_post_time, inbound_error"
    };
}

fn asn_of((doc, closed, told, error): AsnRow) -> sqlx::Result<AdvanceShippingNotice> {
    let mut asn: AdvanceShippingNotice = decode(&doc)?;
    asn.close_time = closed.map(to_timestamp);
    asn.inbound_post_time = told.map(to_timestamp);
    asn.inbound_error = error.unwrap_or_default();
    Ok(asn)
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
        concat!(
            "SELECT ",
            asn_columns!(),
            " FROM asns WHERE tenant = $1 AND id = $2 FOR UPDATE"
        )
    } else {
        concat!(
            "SELECT ",
            asn_columns!(),
            " FROM asns WHERE tenant = $1 AND id = $2"
        )
    };
    let row: Option<AsnRow> = sqlx::query_as(sql)
        .bind(tenant.as_str())
        .bind(id)
        .fetch_optional(ex)
        .await?;
    row.map(asn_of).transpose()
}

/// Newest first, at `node` when given.
pub async fn list_asns(
    ex: impl PgExecutor<'_>,
    tenant: &Tenant,
    node: &str,
    before: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<(Uuid, AdvanceShippingNotice)>> {
    let rows: Vec<ListedRow> = sqlx::query_as(concat!(
        "SELECT id, ",
        asn_columns!(),
        " FROM asns
         WHERE tenant = $1 AND ($2 = '' OR node_id = $2) AND id < $3
         ORDER BY id DESC LIMIT $4"
    ))
    .bind(tenant.as_str())
    .bind(node)
    .bind(before.unwrap_or(Uuid::max()))
    .bind(limit)
    .fetch_all(ex)
    .await?;
    rows.into_iter()
        .map(|(id, doc, closed, told, error)| Ok((id, asn_of((doc, closed, told, error))?)))
        .collect()
}

/// Counts a change to what a notice still brings (a receipt against it),
/// so that inventory is told again.
pub async fn bump_inbound(ex: impl PgExecutor<'_>, tenant: &Tenant, id: Uuid) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE asns SET inbound_revision = inbound_revision + 1 WHERE tenant = $1 AND id = $2",
    )
    .bind(tenant.as_str())
    .bind(id)
    .execute(ex)
    .await?;
    Ok(())
}

/// Closes an open notice (a change to what it brings, as in
/// [`bump_inbound`]); false when it was closed already.
pub async fn close(
    ex: impl PgExecutor<'_>,
    tenant: &Tenant,
    id: Uuid,
    now: DateTime<Utc>,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE asns SET close_time = $3, inbound_revision = inbound_revision + 1
         WHERE tenant = $1 AND id = $2 AND close_time IS NULL",
    )
    .bind(tenant.as_str())
    .bind(id)
    .bind(now)
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Notices of any tenant whose latest change inventory was not told yet,
/// oldest first: (tenant, id, revision).
pub async fn inbound_to_post(
    ex: impl PgExecutor<'_>,
    limit: i64,
) -> sqlx::Result<Vec<(String, Uuid, i64)>> {
    sqlx::query_as(
        "SELECT tenant, id, inbound_revision FROM asns
         WHERE inbound_posted < inbound_revision ORDER BY create_time LIMIT $1",
    )
    .bind(limit)
    .fetch_all(ex)
    .await
}

/// Counts a change to the open notices inventory refused lines of when it
/// was last told, more than `after` ago, so that they are told again: an
/// item or node created since is then counted.
pub async fn retell_refused(
    ex: impl PgExecutor<'_>,
    after: std::time::Duration,
) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "UPDATE asns SET inbound_revision = inbound_revision + 1
         WHERE inbound_error IS NOT NULL AND close_time IS NULL
           AND inbound_posted = inbound_revision
           AND inbound_post_time < now() - make_interval(secs => $1)",
    )
    .bind(after.as_secs_f64())
    .execute(ex)
    .await?;
    Ok(done.rows_affected())
}

/// Records that inventory was told revision `revision` of a notice, with
/// the lines it did not take (`error`), at `now` (None: nothing to tell,
/// a transfer's notice); a later revision told already stands.
pub async fn mark_inbound_posted(
    ex: impl PgExecutor<'_>,
    tenant: &Tenant,
    (id, revision): (Uuid, i64),
    error: Option<&str>,
    now: Option<DateTime<Utc>>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE asns SET inbound_posted = $3, inbound_error = $4, inbound_post_time = $5
         WHERE tenant = $1 AND id = $2 AND inbound_posted < $3",
    )
    .bind(tenant.as_str())
    .bind(id)
    .bind(revision)
    .bind(error)
    .bind(now)
    .execute(ex)
    .await?;
    Ok(())
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
