//! Replicas that change the gate, with their last sign of life (migration
//! 0014).
use sqlx::PgExecutor;
use std::time::Duration;
use uuid::Uuid;

/// The replica is alive now (its row is written again if another replica
/// took it for dead and deleted it).
pub async fn seen(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO gate_replicas (replica_id) VALUES ($1)
         ON CONFLICT (replica_id) DO UPDATE SET seen_time = now()",
    )
    .bind(id)
    .execute(db)
    .await?;
    Ok(())
}

/// Replicas other than `me` not seen for `age`, locked until the
/// transaction ends; those another replica has locked are skipped (it is
/// seeing to them).
pub async fn lapsed(db: impl PgExecutor<'_>, me: Uuid, age: Duration) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "SELECT replica_id FROM gate_replicas
         WHERE replica_id <> $1 AND seen_time < now() - make_interval(secs => $2)
         FOR UPDATE SKIP LOCKED",
    )
    .bind(me)
    .bind(age.as_secs_f64())
    .fetch_all(db)
    .await
}

pub async fn forget(db: impl PgExecutor<'_>, ids: &[Uuid]) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM gate_replicas WHERE replica_id = ANY($1)")
        .bind(ids)
        .execute(db)
        .await?;
    Ok(())
}
