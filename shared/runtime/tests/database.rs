//! Database errors as callers get them, from a real Postgres. A binary of
//! its own: the test database sets the global subscriber, which the `it`
//! binary's telemetry test owns.
#![allow(clippy::unwrap_used)]
use oms_runtime::status::{from_db, reason};
use oms_testkit::TestDb;
use sqlx::{Connection, PgConnection};
use tonic::Code;

async fn connect(db: &TestDb) -> PgConnection {
    let mut c = db.connect("public").await;
    // Deadlocks are looked for after this wait (1 s by default).
    sqlx::query("SET deadlock_timeout = '100ms'")
        .execute(&mut c)
        .await
        .unwrap();
    c
}

fn lock(id: i32) -> sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments> {
    sqlx::query("SELECT 1 FROM pair WHERE id = $1 FOR UPDATE").bind(id)
}

/// A transaction Postgres rolls back to break a deadlock is UNAVAILABLE
/// (`TRANSACTION_CONFLICT`): retryable, where it was INTERNAL.
#[tokio::test]
async fn a_transaction_rolled_back_for_a_deadlock_is_unavailable() {
    let db = TestDb::new().await;
    let mut a = connect(&db).await;
    let mut b = connect(&db).await;
    sqlx::raw_sql("CREATE TABLE pair (id int PRIMARY KEY); INSERT INTO pair VALUES (1), (2)")
        .execute(&mut a)
        .await
        .unwrap();
    // b holds row 2; a holds row 1 and waits for row 2; then b asks for
    // row 1: each waits for the other, and Postgres fails one of them.
    let mut b_tx = b.begin().await.unwrap();
    lock(2).execute(&mut *b_tx).await.unwrap();
    let a_side = tokio::spawn(async move {
        let mut tx = a.begin().await?;
        lock(1).execute(&mut *tx).await?;
        lock(2).execute(&mut *tx).await?;
        tx.commit().await
    });
    // Until a waits (each poll a round trip to Postgres).
    let mut probe = db.connect("public").await;
    let waiting = "SELECT count(*) > 0 FROM pg_stat_activity
        WHERE datname = current_database() AND wait_event_type = 'Lock'";
    let mut polls = 0;
    while !sqlx::query_scalar::<_, bool>(waiting)
        .fetch_one(&mut probe)
        .await
        .unwrap()
    {
        polls += 1;
        assert!(polls < 100_000, "a never waited for row 2");
    }
    let failed = match lock(1).execute(&mut *b_tx).await {
        Err(e) => e,
        Ok(_) => {
            b_tx.commit().await.unwrap();
            a_side.await.unwrap().unwrap_err()
        }
    };
    let status = from_db("test.oms", &failed);
    assert_eq!(status.code(), Code::Unavailable, "{failed}");
    assert_eq!(reason(&status), "TRANSACTION_CONFLICT");
}
