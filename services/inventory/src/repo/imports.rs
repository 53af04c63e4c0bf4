//! Snapshot imports under way (migration 0015): how far each got.
use oms_kernel::{RequestId, Tenant};
use sqlx::PgConnection;

/// An import's progress: rows done (in the order rows apply) and its
/// answer so far (an encoded `ImportStockSnapshotResponse`).
pub struct Progress {
    pub hash: Vec<u8>,
    pub rows_done: usize,
    pub answer: Vec<u8>,
}

/// The progress of the import `request_id`, started with `hash` and an
/// empty `answer` when new, locked until the transaction ends: copies of
/// one import running at once take turns, each going on from where the
/// last left it. `None` when a copy finishing it deleted it just now.
pub async fn lock(
    tx: &mut PgConnection,
    tenant: &Tenant,
    request_id: &RequestId,
    hash: &[u8],
    answer: &[u8],
) -> sqlx::Result<Option<Progress>> {
    sqlx::query(
        "INSERT INTO snapshot_imports (tenant, request_id, request_hash, answer)
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(tenant.as_str())
    .bind(request_id.as_str())
    .bind(hash)
    .bind(answer)
    .execute(&mut *tx)
    .await?;
    let row: Option<(Vec<u8>, i32, Vec<u8>)> = sqlx::query_as(
        "SELECT request_hash, rows_done, answer FROM snapshot_imports
         WHERE tenant = $1 AND request_id = $2 FOR UPDATE",
    )
    .bind(tenant.as_str())
    .bind(request_id.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    Ok(row.map(|(hash, rows_done, answer)| Progress {
        hash,
        rows_done: usize::try_from(rows_done).unwrap_or(0),
        answer,
    }))
}

pub async fn save(
    tx: &mut PgConnection,
    tenant: &Tenant,
    request_id: &RequestId,
    rows_done: usize,
    answer: &[u8],
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE snapshot_imports SET rows_done = $3, answer = $4, update_time = now()
         WHERE tenant = $1 AND request_id = $2",
    )
    .bind(tenant.as_str())
    .bind(request_id.as_str())
    .bind(i32::try_from(rows_done).unwrap_or(i32::MAX))
    .bind(answer)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub async fn forget(
    tx: &mut PgConnection,
    tenant: &Tenant,
    request_id: &RequestId,
) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM snapshot_imports WHERE tenant = $1 AND request_id = $2")
        .bind(tenant.as_str())
        .bind(request_id.as_str())
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Deletes up to `limit` imports nobody went on with since `cutoff`; how
/// many.
pub async fn purge_abandoned(
    db: impl sqlx::PgExecutor<'_>,
    cutoff: chrono::DateTime<chrono::Utc>,
    limit: i64,
) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "DELETE FROM snapshot_imports WHERE ctid = ANY(ARRAY(
             SELECT ctid FROM snapshot_imports WHERE update_time < $1 LIMIT $2))",
    )
    .bind(cutoff)
    .bind(limit)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}
