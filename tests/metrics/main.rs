//! Business metrics of the whole suite reach an OTLP collector. This
//! binary owns the global meter provider (every service in it shares one),
//! so it holds one test.
#![allow(clippy::unwrap_used)]
use oms_e2e::{Suite, next_order_event, pos_submission};
use oms_proto::ingest::{self as ing, ingest_service_client::IngestServiceClient};
use oms_proto::orders::{self as ord, order_service_client::OrderServiceClient};
use oms_runtime::Service;
use oms_testkit::authed;

/// Orders in by channel: each submission counted once, by what became of
/// it; the lag of the events a feed reader gets; and a reader refused
/// because the event retention overtook its cursor.
#[tokio::test(flavor = "multi_thread")]
async fn submissions_and_feed_lag_are_measured() {
    let (guard, mut rx) = oms_testkit::otlp::exporting(Service::Ingest).await;
    let suite = Suite::start().await;
    let mut ingest = IngestServiceClient::new(suite.channel(Service::Ingest));
    ingest
        .create_channel(authed(
            "acme",
            ing::CreateChannelRequest {
                request_id: "ch".into(),
                channel: Some(ing::Channel {
                    channel_id: "pos".into(),
                    kind: ing::ChannelKind::Pos as i32,
                    display_name: "POS".into(),
                    enabled: true,
                    ..Default::default()
                }),
            },
        ))
        .await
        .unwrap();
    let sent = [
        pos_submission("s1", "till-1", "A", "1 Main St", "Lisbon"), // created
        pos_submission("s1", "till-1", "A", "1 Main St", "Lisbon"), // the same again: duplicate
        pos_submission("s2", "till-1", "A", "1 Main St", "Porto"),  // a later version: updated
        pos_submission("s3", "till-2", "", "1 Main St", "Lisbon"),  // no SKU: rejected
    ];
    let mut outcomes = Vec::new();
    for s in sent {
        outcomes.push(
            ingest
                .submit_order(authed("acme", s))
                .await
                .map(|r| r.into_inner().outcome),
        );
    }
    assert_eq!(
        outcomes[0].as_ref().ok(),
        Some(&(ing::SubmissionOutcome::Created as i32))
    );
    assert_eq!(
        outcomes[1].as_ref().ok(),
        Some(&(ing::SubmissionOutcome::Duplicate as i32))
    );
    assert_eq!(
        outcomes[2].as_ref().ok(),
        Some(&(ing::SubmissionOutcome::Updated as i32))
    );
    assert!(outcomes[3].is_err());

    // Feed lag: every event delivered to a feed reader is timed.
    let mut feed = suite.order_events("acme").await;
    let first = next_order_event(&mut feed).await.meta.unwrap().cursor;
    next_order_event(&mut feed).await;
    drop(feed);

    // A reader whose cursor the event retention overtook is refused, and
    // counted: the events so far aged past it and deleted, then one more.
    let orders = suite.db.pool("orders", None).await;
    sqlx::query("UPDATE outbox SET occur_time = now() - interval '40 days'")
        .execute(&orders)
        .await
        .unwrap();
    let cutoff = chrono::Utc::now() - chrono::Duration::days(30);
    assert!(
        oms_runtime::outbox::purge(&orders, cutoff, 1000)
            .await
            .unwrap()
            >= 2
    );
    ingest
        .submit_order(authed(
            "acme",
            pos_submission("s4", "till-3", "A", "1 Main St", "Braga"),
        ))
        .await
        .unwrap();
    let mut stale = OrderServiceClient::new(suite.channel(Service::Orders))
        .watch_order_events(authed(
            "acme",
            ord::WatchOrderEventsRequest {
                after_cursor: first,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let refused = tokio::time::timeout(std::time::Duration::from_secs(120), stale.message())
        .await
        .expect("an answer within 120 s")
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );

    // Shutdown collects and flushes; it blocks, so off the runtime.
    tokio::task::spawn_blocking(move || guard.shutdown())
        .await
        .unwrap();
    let seen = oms_testkit::otlp::points(&mut rx);
    let get = |outcome: &str| {
        let attrs =
            format!("channel=pos,channel_kind=CHANNEL_KIND_POS,outcome={outcome},tenant=acme");
        seen.get(&("oms.ingest.submissions".to_string(), attrs))
            .copied()
    };
    // s1, and s4 sent after the retention test's purge.
    assert_eq!(get("created"), Some(2.0), "{seen:#?}");
    assert_eq!(get("duplicate"), Some(1.0));
    assert_eq!(get("updated"), Some(1.0));
    assert_eq!(get("rejected"), Some(1.0));
    assert_eq!(get("failed"), None);
    let delivered = seen
        .get(&("oms.feed.lag".to_string(), "tenant=acme".to_string()))
        .copied()
        .unwrap_or(0.0);
    assert!(delivered >= 2.0, "{seen:#?}");
    assert_eq!(
        seen.get(&("oms.feed.expired".to_string(), "tenant=acme".to_string()))
            .copied(),
        Some(1.0),
        "{seen:#?}"
    );
}
