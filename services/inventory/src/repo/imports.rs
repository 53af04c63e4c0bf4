//! Snapshot imports under way (migrations 0015, 0016): how far each got,
//! and the rows it refused so far.
use chrono::{DateTime, Utc};
use oms_kernel::{RequestId, Tenant};
use oms_proto::inventory::RowError;
use sqlx::PgConnection;

/// An import's progress: rows done (in the order rows apply), rows
/// applied among them, and when its first chunk began.
pub struct Progress {
    pub hash: Vec<u8>,
    pub rows_done: usize,
    pub rows_applied: i64,
    pub start_time: DateTime<Utc>,
}

/// The progress of the import `request_id`, started with `hash` when new,
/// locked until the transaction ends: copies of one import running at
/// once take turns, each going on from where the last left it. `None`
/// when a copy finishing it deleted it just now.
pub async fn lock(
    tx: &mut PgConnection,
    tenant: &Tenant,
    request_id: &RequestId,
    hash: &[u8],
) -> sqlx::Result<Option<Progress>> {
    sqlx::query(
        "INSERT INTO snapshot_imports (tenant, request_id, request_hash)
         VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(tenant.as_str())
    .bind(request_id.as_str())
    .bind(hash)
    .execute(&mut *tx)
    .await?;
    let row: Option<(Vec<u8>, i32, i64, DateTime<Utc>)> = sqlx::query_as(
        "SELECT request_hash, rows_done, rows_applied, start_time FROM snapshot_imports
         WHERE tenant = $1 AND request_id = $2 FOR UPDATE",
    )
    .bind(tenant.as_str())
    .bind(request_id.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    Ok(
        row.map(|(hash, rows_done, rows_applied, start_time)| Progress {
            hash,
            rows_done: usize::try_from(rows_done).unwrap_or(0),
            rows_applied,
            start_time,
        }),
    )
}

/// Records a chunk: the progress after it and the rows it refused.
pub async fn save(
    tx: &mut PgConnection,
    tenant: &Tenant,
    request_id: &RequestId,
    progress: &Progress,
    refused: &[RowError],
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE snapshot_imports SET rows_done = $3, rows_applied = $4, update_time = now()
         WHERE tenant = $1 AND request_id = $2",
    )
    .bind(tenant.as_str())
    .bind(request_id.as_str())
    .bind(i32::try_from(progress.rows_done).unwrap_or(i32::MAX))
    .bind(progress.rows_applied)
    .execute(&mut *tx)
    .await?;
    if refused.is_empty() {
        return Ok(());
    }
    let rows: Vec<i32> = refused
        .iter()
        .map(|e| i32::try_from(e.row_index).unwrap_or(i32::MAX))
        .collect();
    let fields: Vec<&str> = refused.iter().map(|e| e.field.as_str()).collect();
    let why: Vec<&str> = refused.iter().map(|e| e.description.as_str()).collect();
    sqlx::query(
        "INSERT INTO snapshot_import_errors (tenant, request_id, row_index, field, description)
         SELECT $1, $2, * FROM UNNEST($3::int[], $4::text[], $5::text[])",
    )
    .bind(tenant.as_str())
    .bind(request_id.as_str())
    .bind(&rows)
    .bind(&fields)
    .bind(&why)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The rows the import refused, by row.
pub async fn refused(
    tx: &mut PgConnection,
    tenant: &Tenant,
    request_id: &RequestId,
) -> sqlx::Result<Vec<RowError>> {
    let rows: Vec<(i32, String, String)> = sqlx::query_as(
        "SELECT row_index, field, description FROM snapshot_import_errors
         WHERE tenant = $1 AND request_id = $2 ORDER BY row_index",
    )
    .bind(tenant.as_str())
    .bind(request_id.as_str())
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(row, field, description)| RowError {
            row_index: i64::from(row),
            field,
            description,
        })
        .collect())
}

/// Deletes the import's progress and refused rows (its answer is stored).
pub async fn forget(
    tx: &mut PgConnection,
    tenant: &Tenant,
    request_id: &RequestId,
) -> sqlx::Result<()> {
    sqlx::query(
        "WITH gone AS (DELETE FROM snapshot_imports WHERE tenant = $1 AND request_id = $2)
         DELETE FROM snapshot_import_errors WHERE tenant = $1 AND request_id = $2",
    )
    .bind(tenant.as_str())
    .bind(request_id.as_str())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Deletes up to `limit` imports nobody went on with since `cutoff`, with
/// their refused rows; how many imports.
pub async fn purge_abandoned(
    db: impl sqlx::PgExecutor<'_>,
    cutoff: chrono::DateTime<chrono::Utc>,
    limit: i64,
) -> sqlx::Result<u64> {
    let gone: i64 = sqlx::query_scalar(
        "WITH gone AS (
             DELETE FROM snapshot_imports WHERE ctid = ANY(ARRAY(
                 SELECT ctid FROM snapshot_imports WHERE update_time < $1 LIMIT $2))
             RETURNING tenant, request_id
         ), errors AS (
             DELETE FROM snapshot_import_errors e USING gone g
             WHERE e.tenant = g.tenant AND e.request_id = g.request_id
         )
         SELECT count(*) FROM gone",
    )
    .bind(cutoff)
    .bind(limit)
    .fetch_one(db)
    .await?;
    Ok(gone.unsigned_abs())
}
