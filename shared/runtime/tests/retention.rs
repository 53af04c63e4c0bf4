//! Old events and request records go; a feed reader they overtook is told.
//! (Its own test binary: `TestDb` installs the global subscriber that the
//! OTLP test in `it` must install.)
#![allow(clippy::unwrap_used)]

use futures::StreamExt as _;
use oms_kernel::Tenant;
use oms_runtime::outbox::{self, Cursor, FeedError, FeedWaker, NewEvent, OutboxRow};
use tokio_util::sync::CancellationToken;

/// Appends one event of `tenant` in a transaction of its own.
async fn append(pool: &sqlx::PgPool, tenant: &Tenant, subject: &str) {
    let mut tx = pool.begin().await.unwrap();
    outbox::append(
        &mut tx,
        NewEvent {
            tenant,
            event_type: "Happened",
            subject,
            request_id: "",
            payload: Vec::new(),
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

/// The first `n` items of `tenant`'s feed after `after` (each is there to
/// read: none waits for a new event).
async fn first(
    pool: &sqlx::PgPool,
    tenant: &Tenant,
    after: Cursor,
    n: usize,
) -> Vec<Result<OutboxRow, FeedError>> {
    let feed = outbox::follow(
        pool.clone(),
        tenant.clone(),
        after,
        FeedWaker::default(),
        CancellationToken::new(),
    );
    tokio::time::timeout(std::time::Duration::from_secs(30), feed.take(n).collect())
        .await
        .expect("the feed answers")
}

fn subjects(items: &[Result<OutboxRow, FeedError>]) -> Vec<String> {
    items
        .iter()
        .map(|r| r.as_ref().unwrap().subject.clone())
        .collect()
}

#[tokio::test]
async fn old_events_go_and_a_reader_they_overtook_is_told() {
    let db = oms_testkit::TestDb::new().await;
    let pool = db.pool("svc", None).await;
    let (acme, globex) = (
        Tenant::parse("acme").unwrap(),
        Tenant::parse("globex").unwrap(),
    );
    for s in ["a1", "a2", "a3"] {
        append(&pool, &acme, s).await;
    }
    append(&pool, &globex, "g1").await;
    sqlx::query("UPDATE outbox SET occur_time = now() - interval '40 days'")
        .execute(&pool)
        .await
        .unwrap();
    for s in ["a4", "a5"] {
        append(&pool, &acme, s).await;
    }
    let all = first(&pool, &acme, Cursor::default(), 5).await;
    assert_eq!(subjects(&all), ["a1", "a2", "a3", "a4", "a5"]);
    let at: Vec<Cursor> = all.iter().map(|r| r.as_ref().unwrap().cursor).collect();

    // The oldest first, a batch at a time; young events stay.
    let cutoff = chrono::Utc::now() - chrono::Duration::days(30);
    assert_eq!(outbox::purge(&pool, cutoff, 2).await.unwrap(), 2);
    assert_eq!(outbox::purge(&pool, cutoff, 1000).await.unwrap(), 2);
    assert_eq!(outbox::purge(&pool, cutoff, 1000).await.unwrap(), 0);

    // A reader at a1 missed a2 and a3: told, and the feed ends.
    let items = first(&pool, &acme, at[0], 2).await;
    assert_eq!(items.len(), 1);
    match &items[0] {
        Err(FeedError::Expired { after, horizon }) => {
            assert_eq!((*after, *horizon), (at[0], at[2]))
        }
        other => panic!("expected Expired, got {other:?}"),
    }
    // At a3 nothing was missed; from the start is from what is kept.
    assert_eq!(subjects(&first(&pool, &acme, at[2], 2).await), ["a4", "a5"]);
    assert_eq!(
        subjects(&first(&pool, &acme, Cursor::OLDEST_KEPT, 2).await),
        ["a4", "a5"]
    );
    // From before every event (`0.0`, not empty): a1 to a3 were missed.
    match &first(&pool, &acme, Cursor::ORIGIN, 1).await[..] {
        [Err(FeedError::Expired { horizon, .. })] => assert_eq!(*horizon, at[2]),
        other => panic!("expected Expired, got {other:?}"),
    }

    // As a Watch...Events RPC answers it.
    let feed = outbox::watch::<()>(
        pool.clone(),
        acme.clone(),
        &at[1].to_string(),
        FeedWaker::default(),
        CancellationToken::new(),
        "svc.oms",
    )
    .unwrap();
    let status = Box::pin(feed).next().await.unwrap().unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(
        status.message().contains("are gone"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn a_reader_whose_missed_events_are_all_gone_is_told_before_any_new_one() {
    let db = oms_testkit::TestDb::new().await;
    let pool = db.pool("svc", None).await;
    let acme = Tenant::parse("acme").unwrap();
    for s in ["a1", "a2"] {
        append(&pool, &acme, s).await;
    }
    let all = first(&pool, &acme, Cursor::default(), 2).await;
    let at: Vec<Cursor> = all.iter().map(|r| r.as_ref().unwrap().cursor).collect();
    let cutoff = chrono::Utc::now() + chrono::Duration::seconds(1);
    assert_eq!(outbox::purge(&pool, cutoff, 1000).await.unwrap(), 2);

    // A reader at a1 missed a2, and nothing came after it.
    match &first(&pool, &acme, at[0], 1).await[..] {
        [Err(FeedError::Expired { after, horizon })] => {
            assert_eq!((*after, *horizon), (at[0], at[1]))
        }
        other => panic!("expected Expired, got {other:?}"),
    }
    // A reader at a2 missed nothing: it waits for the next event.
    let feed = outbox::follow(
        pool.clone(),
        acme.clone(),
        at[1],
        FeedWaker::default(),
        CancellationToken::new(),
    );
    let mut feed = Box::pin(feed);
    append(&pool, &acme, "a3").await;
    let next = tokio::time::timeout(std::time::Duration::from_secs(30), feed.next())
        .await
        .expect("the feed answers")
        .unwrap();
    assert_eq!(next.unwrap().subject, "a3");
}

#[tokio::test]
async fn request_records_older_than_the_cutoff_go() {
    let db = oms_testkit::TestDb::new().await;
    let pool = db.pool("svc", None).await;
    for (id, days) in [("old-1", 40), ("old-2", 31), ("recent", 2)] {
        sqlx::query(
            "INSERT INTO idempotency (tenant, request_id, method, request_hash, create_time)
             VALUES ('acme', $1, 'M', '\\x00', now() - make_interval(days => $2))",
        )
        .bind(id)
        .bind(days)
        .execute(&pool)
        .await
        .unwrap();
    }
    let cutoff = chrono::Utc::now() - chrono::Duration::days(30);
    assert_eq!(
        oms_runtime::idempotency::purge(&pool, cutoff, 1)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        oms_runtime::idempotency::purge(&pool, cutoff, 10)
            .await
            .unwrap(),
        1
    );
    let left: Vec<String> = sqlx::query_scalar("SELECT request_id FROM idempotency")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(left, ["recent"]);
}
