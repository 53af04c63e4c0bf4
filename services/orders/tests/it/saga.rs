use crate::*;
use oms_proto::orders::BatchCreateOrdersRequest;
use std::time::{Duration, Instant};

/// With inventory down, the placement saga tries one order, finds the peer
/// unavailable and pauses (here the 30 s maximum, the sweep being rare),
/// instead of failing every due order against it.
#[tokio::test]
async fn a_down_peer_pauses_the_saga_instead_of_failing_every_order() {
    let db = TestDb::new().await;
    let cfg = oms_testkit::config_with(
        Service::Orders,
        &db,
        &[],
        &[("OMS_SWEEP_INTERVAL_MS", "600000".into())],
    );
    let svc = oms_testkit::spawn(cfg, oms_orders::run).await;
    let mut client = OrderServiceClient::new(svc.channel());
    let requests = (0..30)
        .map(|i| CreateOrderRequest {
            request_id: format!("r{i}"),
            order: Some(order(&format!("9{i:03}"))),
        })
        .collect();
    let results = client
        .batch_create_orders(authed(
            "acme",
            BatchCreateOrdersRequest {
                requests,
                traces: vec![],
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .results;
    assert!(results.iter().all(|r| r.order.is_some()));

    let mut conn = db.connect("orders").await;
    let tried =
        || sqlx::query_scalar::<_, i64>("SELECT count(*) FROM saga_steps WHERE attempts > 0");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = tried().fetch_one(&mut conn).await.unwrap();
        if n > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the saga never tried an order");
        tokio::task::yield_now().await;
    }
    // The tick stopped at the first failure; the others stay due, untried.
    let (tried, due): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE attempts > 0), count(*) FROM saga_steps WHERE step = 'reserve'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!((tried, due), (1, 30));
}
