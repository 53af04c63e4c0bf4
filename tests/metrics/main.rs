//! Business metrics of the whole suite reach an OTLP collector. This
//! binary owns the global meter provider (every service in it shares one),
//! so it holds one test.
#![allow(clippy::unwrap_used)]
use chrono::Datelike as _;
use oms_e2e::{Suite, next_order_event, phones_at_dc1, pos_submission};
use oms_proto::ingest::{self as ing, ingest_service_client::IngestServiceClient};
use oms_proto::inventory as inv;
use oms_proto::orders::{self as ord, order_service_client::OrderServiceClient};
use oms_runtime::Service;
use oms_testkit::adapter::{Adapter, shipped_line};
use oms_testkit::authed;

/// Orders in by channel: each submission counted once, by what became of
/// it; the lag of the events a feed reader gets; a reader refused because
/// the event retention overtook its cursor; shipped units inventory
/// refused to take from stock; a change that left reservations holding
/// more than a node has; an order routing could not place; and the time
/// left on a served TLS certificate.
#[tokio::test(flavor = "multi_thread")]
async fn submissions_feed_lag_and_stock_trouble_are_measured() {
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

    // A warehouse ships a serial number inventory does not have at the
    // node: orders counts the unit it could not take from stock.
    let mut stock = suite.stock("acme", &[("M", 5)]).await;
    phones_at_dc1(&mut stock, "acme", &["P1"]).await;
    let mut wms = Adapter::connect(
        &suite.channel(Service::Fulfillment),
        "acme",
        "manual",
        &["DC1"],
        0,
    )
    .await;
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let order = ord::Order {
        currency_code: "EUR".into(),
        lines: [("M", 1), ("PHONE", 1)]
            .map(|(sku, quantity)| ord::OrderLine {
                sku: sku.into(),
                quantity,
                ..Default::default()
            })
            .to_vec(),
        ship_to: Some(oms_proto::common::PostalAddress {
            lines: vec!["1 Main St".into()],
            city: "Lisbon".into(),
            country_code: "PT".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let template = order.clone();
    let req = ord::CreateOrderRequest {
        request_id: "two-things".into(),
        order: Some(order),
    };
    let order = orders.create_order(authed("acme", req)).await.unwrap();
    let name = order.into_inner().order.unwrap().name;
    let mut feed = suite.order_events("acme").await;
    let fo = wms.release_of(&name).await;
    let lines = vec![
        shipped_line(&fo, "M", 1, &[]),
        shipped_line(&fo, "PHONE", 1, &["NOT-HERE"]),
    ];
    assert!(wms.ship(&fo, "shipped-1", lines).await.accepted);
    // Counted before the change the shipment made to the order commits.
    loop {
        let o = next_order_event(&mut feed).await.order.unwrap_or_default();
        if o.name == name && o.state == ord::OrderState::Shipped as i32 {
            break;
        }
    }
    // Damage at a node whose stock reservations hold in full.
    let hold = inv::CreateReservationRequest {
        reservation_id: "all-of-m".into(),
        lines: vec![inv::ReservationLine {
            sku: "M".into(),
            quantity: 4,
            node_id: "DC1".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    stock
        .create_reservation(authed("acme", hold))
        .await
        .unwrap();
    let damage = inv::RecordMovementRequest {
        request_id: "dropped".into(),
        movement: Some(inv::StockMovement {
            kind: inv::MovementKind::Damage as i32,
            node_id: "DC1".into(),
            sku: "M".into(),
            quantity: -1,
            reason: "dropped".into(),
            ..Default::default()
        }),
    };
    let answer = stock.record_movement(authed("acme", damage)).await.unwrap();
    assert_eq!(answer.into_inner().held_beyond_stock, 1);

    // An order only a warehouse that does not ship could take: routing
    // cannot place it, and says so once.
    let back = inv::Node {
        node_id: "BACK".into(),
        kind: oms_proto::common::NodeKind::Warehouse as i32,
        enabled: true,
        ..Default::default()
    };
    let node = inv::CreateNodeRequest {
        request_id: "back".into(),
        node: Some(back),
    };
    stock.create_node(authed("acme", node)).await.unwrap();
    let z = inv::Item {
        sku: "Z".into(),
        ..Default::default()
    };
    oms_e2e::create_item(&mut stock, "acme", z).await;
    let receipt = inv::RecordMovementRequest {
        request_id: "z-in".into(),
        movement: Some(inv::StockMovement {
            kind: inv::MovementKind::Receipt as i32,
            node_id: "BACK".into(),
            sku: "Z".into(),
            quantity: 1,
            ..Default::default()
        }),
    };
    stock
        .record_movement(authed("acme", receipt))
        .await
        .unwrap();
    let mut z_order = template.clone();
    z_order.lines.truncate(1);
    z_order.lines[0].sku = "Z".into();
    let req = ord::CreateOrderRequest {
        request_id: "z-order".into(),
        order: Some(z_order),
    };
    orders.create_order(authed("acme", req)).await.unwrap();
    while !matches!(
        next_order_event(&mut feed).await.kind,
        Some(ord::order_event::Kind::RoutingDeferred(_))
    ) {}

    // Inventory refuses what backorders ask for (a failing trigger): each
    // attempt to tell it is counted.
    // (A sequence counts the attempts: nextval outlives the rollback.)
    let mut inventory_db = suite.db.connect("inventory").await;
    sqlx::query("CREATE SEQUENCE demand_attempts")
        .execute(&mut inventory_db)
        .await
        .unwrap();
    let on = "INSERT ON backorder_demand";
    let refuse = "PERFORM nextval('demand_attempts'); RAISE EXCEPTION 'injected';";
    oms_testkit::trigger(&mut inventory_db, "demand_refused", on, "true", refuse).await;

    // A backorder of W, placed when W comes. (Orders now follows acme's
    // inventory feed, from its head, after weighing every waiting step
    // once: that wakes the deferred Z order once too.)
    let w = inv::Item {
        sku: "W".into(),
        ..Default::default()
    };
    oms_e2e::create_item(&mut stock, "acme", w).await;
    let mut w_order = template.clone();
    w_order.lines.truncate(1);
    w_order.lines[0].sku = "W".into();
    let req = ord::CreateOrderRequest {
        request_id: "w-order".into(),
        order: Some(w_order),
    };
    let w_name = orders
        .create_order(authed("acme", req))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap()
        .name;
    oms_e2e::until_state(&mut feed, &w_name, ord::OrderState::Backordered).await;
    // Inventory refused W's demand twice: the first refusal had reached
    // orders before its second attempt.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let taken: i64 = sqlx::query_scalar(
            "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM demand_attempts",
        )
        .fetch_one(&mut inventory_db)
        .await
        .unwrap();
        if taken >= 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{taken} attempts");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    oms_e2e::receive(&mut stock, "acme", "W", 1).await;
    oms_e2e::until_state(&mut feed, &w_name, ord::OrderState::Reserved).await;

    // A service over TLS tells how long its certificate has left (the
    // suite's own serve none): one expiring at the start of the day 30
    // days from now.
    let pki = oms_testkit::pki::Pki::new("OMS test CA");
    let due = chrono::Utc::now() + chrono::Duration::days(30);
    let (y, m, d) = (due.year(), due.month() as u8, due.day() as u8);
    let issued = pki.issue_until("routing", Some((y, m, d)));
    let path = oms_testkit::pki::path;
    let tls_vars = [
        ("OMS_TLS_CERT_FILE", path(&issued.cert)),
        ("OMS_TLS_KEY_FILE", path(&issued.key)),
        ("OMS_TLS_CA_FILE", path(&pki.ca)),
    ];
    let routing_db = oms_testkit::TestDb::new().await;
    let config = oms_testkit::config_with(Service::Routing, &routing_db, &[], &tls_vars);
    let _routing = oms_testkit::spawn(config, oms_routing::run).await;

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
    let left = seen
        .get(&("oms.tls.certificate.expiry".to_string(), String::new()))
        .copied()
        .unwrap_or_default();
    assert!(
        (29.0 * 86_400.0..30.0 * 86_400.0).contains(&left),
        "{left} s left, {seen:#?}"
    );
    let delivered = seen
        .get(&("oms.feed.lag".to_string(), "tenant=acme".to_string()))
        .copied()
        .unwrap_or(0.0);
    assert!(delivered >= 2.0, "{seen:#?}");
    // Buckets in seconds, fine around the alert's minute: every lag here
    // is under it.
    let lag_le = |bound: &str| {
        seen.get(&(
            format!("oms.feed.lag@le={bound}"),
            "tenant=acme".to_string(),
        ))
        .copied()
    };
    assert_eq!(lag_le("60"), Some(delivered), "{seen:#?}");
    assert!(lag_le("1").is_some(), "{seen:#?}");
    // Call durations likewise: the slow-calls alert's second is a bound
    // (the SDK's default bounds, made for milliseconds, put every call
    // under 5 s in one bucket).
    let submit = "rpc.grpc.status_code=0,rpc.method=/oms.ingest.v1.IngestService/SubmitOrder";
    let calls = |name: &str| seen.get(&(name.to_string(), submit.to_string())).copied();
    let answered = calls("rpc.server.duration").unwrap_or(0.0);
    assert!(answered >= 4.0, "{seen:#?}");
    assert!(calls("rpc.server.duration@le=1").is_some(), "{seen:#?}");
    assert_eq!(calls("rpc.server.duration@le=10"), Some(answered));
    // The gate of acme was built at its first change, and timed.
    let first = "tenant=acme,trigger=missing";
    let rebuilds = |name: &str| seen.get(&(name.to_string(), first.to_string())).copied();
    let timed = rebuilds("oms.inventory.gate.rebuild.duration").unwrap_or(0.0);
    assert!(timed >= 1.0, "{seen:#?}");
    assert_eq!(
        rebuilds("oms.inventory.gate.rebuild.duration@le=60"),
        Some(timed)
    );
    assert_eq!(
        seen.get(&("oms.feed.expired".to_string(), "tenant=acme".to_string()))
            .copied(),
        Some(1.0),
        "{seen:#?}"
    );
    let at_dc1 = |metric: &str| {
        seen.get(&(metric.to_string(), "node=DC1,tenant=acme".to_string()))
            .copied()
    };
    assert_eq!(
        at_dc1("oms.orders.shipped_units_untaken"),
        Some(1.0),
        "{seen:#?}"
    );
    assert_eq!(
        at_dc1("oms.inventory.held_beyond_stock"),
        Some(1.0),
        "{seen:#?}"
    );
    let by_tenant = |metric: &str| seen.get(&(metric.to_string(), "tenant=acme".to_string()));
    assert_eq!(
        by_tenant("oms.orders.routing_deferred").copied(),
        Some(1.0),
        "{seen:#?}"
    );
    let failed = by_tenant("oms.orders.demand_publish_failures").copied();
    assert!(failed.is_some_and(|n| n >= 1.0), "{seen:#?}");
    // The Z order (by the first weighing) and the W order.
    assert_eq!(
        by_tenant("oms.orders.stock_wakes").copied(),
        Some(2.0),
        "{seen:#?}"
    );
}
