//! Postgres: one schema per service, created at start, with the service's
//! embedded migrations applied and the runtime's common tables in place.
use crate::config::DbConfig;
use sqlx::{
    AssertSqlSafe, Connection, PgConnection, PgPool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use std::{str::FromStr, time::Duration};

/// Connects to the service's schema (creating it if needed), applies the
/// common tables and then the service's own `migrator`, if it has one. Retries the first connection for up
/// to `startup_wait`, because on Kubernetes or `make up` Postgres may still
/// be starting.
pub async fn connect_and_migrate(
    cfg: &DbConfig,
    migrator: Option<&Migrator>,
    startup_wait: Duration,
) -> anyhow::Result<PgPool> {
    let base = PgConnectOptions::from_str(&cfg.url)?;
    let mut conn = first_connection(&base, startup_wait).await?;
    // Lock per schema so replicas starting together do not race the DDL.
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('oms.schema.' || $1))")
        .bind(&cfg.schema)
        .execute(&mut *tx)
        .await?;
    // The schema name is validated as a plain identifier by the config.
    sqlx::query(AssertSqlSafe(format!(
        "CREATE SCHEMA IF NOT EXISTS \"{}\"",
        cfg.schema
    )))
    .execute(&mut *tx)
    .await?;
    sqlx::query(AssertSqlSafe(format!(
        "SET LOCAL search_path TO \"{}\"",
        cfg.schema
    )))
    .execute(&mut *tx)
    .await?;
    sqlx::raw_sql(include_str!("../sql/common.sql"))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    conn.close().await?;

    let pool = PgPoolOptions::new()
        .max_connections(cfg.max_connections)
        .acquire_timeout(Duration::from_secs(5))
        // A connection back in the pool within the last second is taken as
        // alive: checking it would cost a round trip per query on a busy
        // service. One idle for longer is checked first, so a restarted
        // Postgres or a dropped connection fails few requests (the HikariCP
        // rule); a failed one is discarded and the retry gets a new one.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > IDLE_CHECK_AFTER {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_with(base.options([("search_path", cfg.schema.as_str())]))
        .await?;
    if let Some(m) = migrator {
        m.run(&pool).await?;
    }
    Ok(pool)
}

/// How long a pooled connection may sit idle before it is checked.
const IDLE_CHECK_AFTER: Duration = Duration::from_secs(1);

async fn first_connection(opts: &PgConnectOptions, wait: Duration) -> anyhow::Result<PgConnection> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut backoff = Duration::from_millis(100);
    loop {
        match PgConnection::connect_with(opts).await {
            Ok(c) => return Ok(c),
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("3D000") => {
                // A fresh local Postgres has no `oms` database yet: create it.
                create_database(opts).await?;
                continue;
            }
            Err(e) if tokio::time::Instant::now() + backoff < deadline => {
                tracing::warn!(error = %e, "Postgres not reachable yet; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(anyhow::anyhow!("cannot connect to Postgres: {e}")),
        }
    }
}

async fn create_database(opts: &PgConnectOptions) -> anyhow::Result<()> {
    let name = opts.get_database().unwrap_or("oms").to_owned();
    let mut admin = PgConnection::connect_with(&opts.clone().database("postgres")).await?;
    tracing::info!(database = %name, "creating database");
    let sql = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
    match sqlx::query(AssertSqlSafe(sql)).execute(&mut admin).await {
        Ok(_) => Ok(()),
        // Another service created it at the same moment.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => Ok(()),
        Err(e) if matches!(&e, sqlx::Error::Database(d) if d.code().as_deref() == Some("23505")) => {
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Is the database answering? Used by health checks.
pub async fn ping(pool: &PgPool) -> bool {
    tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query("SELECT 1").execute(pool),
    )
    .await
    .is_ok_and(|r| r.is_ok())
}

/// Decodes a protobuf document stored in a `bytea` column (services keep
/// their resources whole beside the columns they query).
pub fn decode<M: prost::Message + Default>(doc: &[u8]) -> sqlx::Result<M> {
    M::decode(doc).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}
