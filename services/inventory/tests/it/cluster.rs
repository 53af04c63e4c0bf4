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
    // Backorder demand set on the cluster is kept from a cart, not from a
    // reservation for its source.
    item(&mut h.client, "acme", "D").await;
    receive(&mut h.client, "acme", "DC1", "D", 2).await;
    let demand = SetBackorderDemandRequest {
        request_id: rid(),
        demand: vec![BackorderDemandFigure {
            sku: "D".into(),
            channel: String::new(),
            units: 1,
        }],
        revision: 1,
        source: "orders".into(),
        complete: false,
    };
    h.client
        .set_backorder_demand(authed("acme", demand))
        .await
        .unwrap();
    let err = reserve(&mut h.client, "acme", "d-cart", vec![line("D", "", 2)]).await;
    assert_eq!(err.unwrap_err().code(), tonic::Code::FailedPrecondition);
    reserve(&mut h.client, "acme", "d-cart-1", vec![line("D", "", 1)])
        .await
        .unwrap();
    let mine = CreateReservationRequest {
        reservation_id: "d-order".into(),
        lines: vec![line("D", "", 1)],
        backorders_of: "orders".into(),
        ..Default::default()
    };
    h.client
        .create_reservation(authed("acme", mine))
        .await
        .unwrap();
    let report = reconcile(&mut h.client, "acme", true).await;
    assert_clean(&report, "acme");
}

/// The sweep's expiry script (one per batch of a tenant's carts) on a
/// cluster: every tenant's carts expire and their units come back.
#[tokio::test]
async fn carts_expire_on_a_redis_cluster() {
    let cluster = RedisCluster::start();
    let mut h = start_with(&[("OMS_REDIS_CLUSTER_NODES", cluster.nodes())]).await;
    let tenants = ["acme", "globex", "initech"];
    for t in tenants {
        node(&mut h.client, t, &format!("DC-{t}")).await;
        item(&mut h.client, t, "A").await;
        receive(&mut h.client, t, &format!("DC-{t}"), "A", 30).await;
        for i in 0..30 {
            cart(&mut h.client, t, &format!("c{i}"), vec![line("A", "", 1)]).await;
        }
    }
    for t in tenants {
        wait_until(async || available(&mut h.client, t, "A").await.available == 30).await;
        for i in 0..30 {
            let r = reservation(&mut h.client, t, &format!("c{i}")).await;
            assert_eq!(r.state(), ReservationState::Expired, "{t} c{i}");
        }
        let report = reconcile(&mut h.client, t, true).await;
        assert_clean(&report, t);
    }
}

/// With `OMS_REDIS_MIN_REPLICAS` on a cluster, a change waits for the
/// replicas of the master holding the tenant's gate (`WAIT` goes there,
/// on the connection the script went by): once they are gone, a
/// reservation is refused and holds nothing, though every other master
/// still has its replica.
#[tokio::test]
async fn on_a_cluster_a_change_waits_for_the_replicas_of_its_gate() {
    let mut cluster = RedisCluster::start_with(1);
    let mut h = start_with(&[
        ("OMS_REDIS_CLUSTER_NODES", cluster.nodes()),
        ("OMS_REDIS_MIN_REPLICAS", "1".into()),
        // Generous: a loaded test machine answers WAIT late.
        ("OMS_REDIS_REPLICA_TIMEOUT_MS", "2000".into()),
    ])
    .await;
    node(&mut h.client, "acme", "DC1").await;
    item(&mut h.client, "acme", "A").await;
    receive(&mut h.client, "acme", "DC1", "A", 3).await;
    reserve(&mut h.client, "acme", "r1", vec![line("A", "", 1)])
        .await
        .unwrap();

    cluster.kill_replicas_of("acme");
    let err = reserve(&mut h.client, "acme", "r2", vec![line("A", "", 1)])
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert_eq!(held_in_record(&h.db, "acme", "A").await, 1);
}
