//! The same scripts on a three-node Redis Cluster.
use crate::*;
use futures::future::join_all;
use oms_testkit::RedisCluster;

#[tokio::test]
async fn reservations_run_on_a_redis_cluster() {
    let cluster = RedisCluster::start();
    let mut h = start_with(&[("OMS_REDIS_CLUSTER_NODES", cluster.nodes())]).await;
    node(&mut h.client, "acme", "DC1").await;
    for (sku, q) in [("A", 10), ("B", 10), ("C", 10)] {
        item(&mut h.client, "acme", sku).await;
        receive(&mut h.client, "acme", "DC1", sku, q).await;
    }
    // Several tenants spread over the slots.
    for t in ["globex", "initech"] {
        node(&mut h.client, t, &format!("DC-{t}")).await;
        item(&mut h.client, t, "A").await;
        receive(&mut h.client, t, &format!("DC-{t}"), "A", 3).await;
    }
    let calls = (0..40).map(|i| {
        let mut c = h.client.clone();
        async move {
            reserve(
                &mut c,
                "acme",
                &format!("c{i}"),
                vec![line("A", "", 1), line("B", "", 1), line("C", "", 1)],
            )
            .await
        }
    });
    let granted = join_all(calls)
        .await
        .into_iter()
        .filter(|r| r.is_ok())
        .count();
    assert_eq!(granted, 10);
    for t in ["globex", "initech"] {
        reserve(&mut h.client, t, "x", vec![line("A", "", 3)])
            .await
            .unwrap();
        assert_eq!(available(&mut h.client, t, "A").await.available, 0);
    }
    let report = reconcile(&mut h.client, "acme", true).await;
    assert!(report.drifts.is_empty(), "{:?}", report.drifts);
}
