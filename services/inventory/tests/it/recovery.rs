//! Redis losing its data: the gate is rebuilt from the record with nothing
//! oversold and nothing confirmed lost; Reconcile reports drift.
use crate::*;
use futures::future::join_all;
use oms_testkit::RedisServer;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::Notify;

#[tokio::test]
async fn flushall_in_a_reservation_storm_oversells_nothing_and_loses_nothing() {
    let redis = RedisServer::start();
    let mut h = start_with(&[("OMS_REDIS_URL", redis.url())]).await;
    node(&mut h.client, "acme", "DC1").await;
    item(&mut h.client, "acme", "HOT").await;
    receive(&mut h.client, "acme", "DC1", "HOT", 110).await;
    // A confirmed reservation made before the loss.
    reserve(&mut h.client, "acme", "keeper", vec![line("HOT", "", 10)])
        .await
        .unwrap();
    h.client
        .confirm_reservation(authed(
            "acme",
            ConfirmReservationRequest {
                request_id: rid(),
                name: "reservations/keeper".into(),
                allocations: vec![Allocation {
                    sku: "HOT".into(),
                    node_id: "DC1".into(),
                    quantity: 10,
                    ..Default::default()
                }],
            },
        ))
        .await
        .unwrap();

    let done = Arc::new(AtomicUsize::new(0));
    let flush_now = Arc::new(Notify::new());
    let storm = (0..300).map(|i| {
        let mut c = h.client.clone();
        let (done, flush_now) = (done.clone(), flush_now.clone());
        async move {
            let r = reserve(&mut c, "acme", &format!("s{i}"), vec![line("HOT", "", 1)]).await;
            if done.fetch_add(1, Ordering::SeqCst) + 1 == 60 {
                flush_now.notify_one();
            }
            r
        }
    });
    let flusher = {
        let flush_now = flush_now.clone();
        let port = redis.port;
        tokio::spawn(async move {
            flush_now.notified().await;
            let out = tokio::process::Command::new("redis-cli")
                .args(["-p", &port.to_string(), "FLUSHALL"])
                .output()
                .await
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK");
        })
    };
    let results = join_all(storm).await;
    flusher.await.unwrap();
    let granted = results.iter().filter(|r| r.is_ok()).count();
    for e in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(reason(e), "INSUFFICIENT_STOCK", "{e:?}");
    }
    assert_eq!(granted, 100, "every unit sold once, none twice");
    assert_eq!(held_in_record(&h.db, "acme", "HOT").await, 110);
    assert_eq!(available(&mut h.client, "acme", "HOT").await.available, 0);
    let more = reserve(&mut h.client, "acme", "one-more", vec![line("HOT", "", 1)])
        .await
        .unwrap_err();
    assert_eq!(reason(&more), "INSUFFICIENT_STOCK");

    // The confirmed reservation survived: it ships.
    h.client
        .consume_allocations(authed(
            "acme",
            ConsumeAllocationsRequest {
                request_id: rid(),
                name: "reservations/keeper".into(),
                shipped: vec![Allocation {
                    sku: "HOT".into(),
                    node_id: "DC1".into(),
                    quantity: 10,
                    ..Default::default()
                }],
                reference: "fulfillmentOrders/k".into(),
            },
        ))
        .await
        .unwrap();
    let a = available(&mut h.client, "acme", "HOT").await;
    assert_eq!((a.on_hand, a.reserved, a.available), (100, 100, 0));

    // Gate and record agree.
    let report = reconcile(&mut h.client, "acme", true).await;
    assert!(report.drifts.is_empty(), "{:?}", report.drifts);
}

#[tokio::test]
async fn reconcile_reports_drift_and_repairs_it() {
    let redis = RedisServer::start();
    let mut h = start_with(&[("OMS_REDIS_URL", redis.url())]).await;
    node(&mut h.client, "acme", "DC1").await;
    item(&mut h.client, "acme", "S").await;
    receive(&mut h.client, "acme", "DC1", "S", 5).await;
    let keys = redis.cli(&["--scan", "--pattern", "*avail:S"]);
    let key = keys
        .lines()
        .next()
        .expect("the gate has a key for S")
        .to_owned();
    redis.cli(&["HSET", &key, "n:DC1", "999"]);

    let dry = reconcile(&mut h.client, "acme", true).await;
    assert_eq!(dry.keys_rebuilt, 0);
    assert_eq!(dry.drifts.len(), 1);
    let d = &dry.drifts[0];
    assert_eq!(
        (
            d.sku.as_str(),
            d.node_id.as_str(),
            d.gate_value,
            d.record_value,
            d.gate_missing
        ),
        ("S", "DC1", 999, 5, false)
    );
    // A figure the gate lost is told apart from a wrong one.
    redis.cli(&["HDEL", &key, "n:DC1"]);
    let d = reconcile(&mut h.client, "acme", true).await.drifts;
    assert_eq!(
        d.iter()
            .map(|d| (
                d.node_id.as_str(),
                d.gate_value,
                d.record_value,
                d.gate_missing
            ))
            .collect::<Vec<_>>(),
        [("DC1", -1, 5, true)]
    );
    redis.cli(&["HSET", &key, "n:DC1", "999"]);

    let fixed = reconcile(&mut h.client, "acme", false).await;
    assert_eq!(fixed.drifts.len(), 1);
    assert_eq!(redis.cli(&["HGET", &key, "n:DC1"]).trim(), "5");
    // The repaired gate refuses what the record cannot give.
    let err = reserve(&mut h.client, "acme", "big", vec![line("S", "", 6)])
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "INSUFFICIENT_STOCK");

    // Held totals that drifted from the holds (what availability reads)
    // are rewritten from the holds too.
    reserve(&mut h.client, "acme", "two", vec![line("S", "", 2)])
        .await
        .unwrap();
    let mut c = h.db.connect("inventory").await;
    sqlx::query("UPDATE held_totals SET held = held + 3 WHERE tenant = 'acme' AND sku = 'S'")
        .execute(&mut c)
        .await
        .unwrap();
    assert!(available(&mut h.client, "acme", "S").await.available < 3);
    reconcile(&mut h.client, "acme", false).await;
    assert_eq!(available(&mut h.client, "acme", "S").await.available, 3);
    assert_eq!(held_in_record(&h.db, "acme", "S").await, 2);
}
