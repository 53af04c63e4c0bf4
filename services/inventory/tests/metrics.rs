//! Reservations answered reach an OTLP collector as a business metric, by
//! outcome and API: a stream is one RPC to the RED metrics, so this is
//! where its refusals show. This binary owns the global meter provider,
//! so it holds this one test.
#![allow(clippy::unwrap_used)]
use oms_proto::common::NodeKind;
use oms_proto::inventory::{inventory_service_client::InventoryServiceClient, *};
use oms_runtime::Service;
use oms_testkit::{TestDb, authed};

fn one(id: &str, sku: &str, q: i64) -> CreateReservationRequest {
    CreateReservationRequest {
        reservation_id: id.into(),
        lines: vec![ReservationLine {
            sku: sku.into(),
            quantity: q,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A node `node` of `tenant` with `q` units of `sku` received there.
async fn stocked(
    c: &mut InventoryServiceClient<tonic::transport::Channel>,
    tenant: &str,
    node: &str,
    sku: &str,
    q: i64,
) {
    c.create_node(authed(
        tenant,
        CreateNodeRequest {
            request_id: format!("n-{node}"),
            node: Some(Node {
                node_id: node.into(),
                kind: NodeKind::Warehouse as i32,
                enabled: true,
                ..Default::default()
            }),
        },
    ))
    .await
    .unwrap();
    c.create_item(authed(
        tenant,
        CreateItemRequest {
            request_id: format!("i-{sku}"),
            item: Some(Item {
                sku: sku.into(),
                ..Default::default()
            }),
        },
    ))
    .await
    .unwrap();
    c.record_movement(authed(
        tenant,
        RecordMovementRequest {
            request_id: format!("m-{node}-{sku}"),
            movement: Some(StockMovement {
                kind: MovementKind::Receipt as i32,
                node_id: node.into(),
                sku: sku.into(),
                quantity: q,
                ..Default::default()
            }),
        },
    ))
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn reservations_are_counted_by_outcome_and_api() {
    let (guard, mut rx) = oms_testkit::otlp::exporting(Service::Inventory).await;

    let db = TestDb::new().await;
    let prefix = oms_testkit::redis_prefix();
    let svc = oms_testkit::spawn(
        oms_testkit::config_with(
            Service::Inventory,
            &db,
            &[],
            &[("OMS_REDIS_KEY_PREFIX", prefix.clone())],
        ),
        oms_inventory::run,
    )
    .await;
    let mut c = InventoryServiceClient::new(svc.channel());
    stocked(&mut c, "acme", "DC1", "S", 3).await;
    // Unary: granted twice (a repeat is answered too), refused once;
    // granted once more below, after the gate went missing.
    for r in [one("u1", "S", 1), one("u1", "S", 1), one("u2", "S", 5)] {
        let _ = c.create_reservation(authed("acme", r)).await;
    }
    // Stream: granted once, invalid twice (a quantity, a trace), refused once.
    let mut msgs = [one("s1", "S", 1), one("s2", "S", 0), one("s3", "S", 5)]
        .map(|r| StreamReservationsRequest {
            reservation: Some(r),
            ..Default::default()
        })
        .to_vec();
    msgs.push(StreamReservationsRequest {
        reservation: Some(one("s4", "S", 1)),
        traceparent: "not-a-trace".into(),
        ..Default::default()
    });
    let answers = c
        .stream_reservations(authed("acme", tokio_stream::iter(msgs)))
        .await
        .unwrap()
        .into_inner();
    let n = futures::StreamExt::count(answers).await;
    assert_eq!(n, 4);

    // Gate rebuilds: the first change of the tenant built its gate; a
    // Reconcile rebuilds it; so does a change after the gate went missing.
    c.reconcile(authed(
        "acme",
        ReconcileRequest {
            request_id: "rc".into(),
            dry_run: false,
        },
    ))
    .await
    .unwrap();
    let mut redis = redis::Client::open(oms_testkit::redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("DEL")
        .arg(format!("{prefix}oms:inventory:{{acme}}:ready"))
        .query_async::<i64>(&mut redis)
        .await
        .unwrap();
    let _ = c
        .create_reservation(authed("acme", one("after", "S", 1)))
        .await;
    // And every gate, once a replica that stopped without a word is found.
    let mut pg = db.connect("inventory").await;
    sqlx::query(
        "INSERT INTO gate_replicas (replica_id, seen_time)
         VALUES (gen_random_uuid(), now() - interval '1 hour')",
    )
    .execute(&mut pg)
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while sqlx::query_scalar::<_, i64>("SELECT count(*) FROM gate_replicas")
        .fetch_one(&mut pg)
        .await
        .unwrap()
        > 1
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the dead replica stays"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // Expiry: acme's cart expires; globex's cannot (its row refuses the
    // change), so after the sweep that expired acme's (due later) it is
    // still due: the lag the sweep reports.
    oms_testkit::trigger(
        &mut pg,
        "refuse_stuck",
        "UPDATE ON reservations",
        "NEW.reservation_id = 'stuck' AND NEW.state = 'expired'",
        "RAISE EXCEPTION 'injected: this reservation cannot expire';",
    )
    .await;
    stocked(&mut c, "globex", "DC-G", "S", 1).await;
    stocked(&mut c, "acme", "DC-T", "T", 1).await;
    for (tenant, id, sku) in [("globex", "stuck", "S"), ("acme", "cart", "T")] {
        let mut r = one(id, sku, 1);
        r.ttl = Some(prost_types::Duration {
            seconds: 0,
            nanos: 100_000_000,
        });
        c.create_reservation(authed(tenant, r)).await.unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while sqlx::query_scalar::<_, String>(
        "SELECT state FROM reservations WHERE reservation_id = 'cart'",
    )
    .fetch_one(&mut pg)
    .await
    .unwrap()
        != "expired"
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the cart never expired"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // Shutdown collects and flushes; it blocks, so off the runtime.
    tokio::task::spawn_blocking(move || guard.shutdown())
        .await
        .unwrap();
    let seen = oms_testkit::otlp::points(&mut rx);
    let point =
        |metric: &str, attrs: &str| seen.get(&(metric.to_string(), attrs.to_string())).copied();
    let get = |attrs: &str| point("oms.inventory.reservations", attrs);
    // Three above, and the cart.
    assert_eq!(
        get("api=unary,outcome=granted,tenant=acme"),
        Some(4.0),
        "{seen:#?}"
    );
    assert_eq!(get("api=unary,outcome=refused,tenant=acme"), Some(1.0));
    assert_eq!(get("api=stream,outcome=granted,tenant=acme"), Some(1.0));
    assert_eq!(get("api=stream,outcome=invalid,tenant=acme"), Some(2.0));
    assert_eq!(get("api=stream,outcome=refused,tenant=acme"), Some(1.0));
    let rebuilt = |trigger: &str| {
        point(
            "oms.inventory.gate.rebuilds",
            &format!("tenant=acme,trigger={trigger}"),
        )
    };
    assert_eq!(rebuilt("missing"), Some(2.0), "{seen:#?}");
    assert_eq!(rebuilt("reconcile"), Some(1.0));
    assert_eq!(rebuilt("replica_lost"), Some(1.0));
    let of_tenant = |metric: &str, tenant: &str| point(metric, &format!("tenant={tenant}"));
    let expired = |tenant: &str| of_tenant("oms.inventory.reservations.expired", tenant);
    assert_eq!(expired("acme"), Some(1.0), "{seen:#?}");
    assert_eq!(expired("globex"), None);
    let lag = |tenant: &str| of_tenant("oms.inventory.expiry.lag", tenant);
    // The stuck cart's tenant lags, by name; acme's expired.
    assert!(lag("globex").is_some_and(|s| s > 0.0), "{seen:#?}");
    assert_eq!(lag("acme").unwrap_or(0.0), 0.0);
    svc.stop().await.unwrap();
}
