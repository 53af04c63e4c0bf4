//! The placement saga across orders and inventory: reserve, backorder,
//! cancel with compensation, holds, and a crash in the middle.
use oms_e2e::{Suite, next_order_event, receive, rid, until_all};
use oms_proto::common::{Money, PostalAddress};
use oms_proto::inventory::{self as inv, inventory_service_client::InventoryServiceClient};
use oms_proto::orders::{self as ord, OrderState, order_service_client::OrderServiceClient};
use oms_runtime::Service;
use oms_testkit::{authed, trigger};

/// The body of a trigger that fails the write.
pub(crate) const FAIL: &str = "RAISE EXCEPTION 'injected';";
use tonic::transport::Channel;

const T: &str = "acme";

pub(crate) fn order(lines: &[(&str, i64)]) -> ord::Order {
    ord::Order {
        currency_code: "EUR".into(),
        lines: lines
            .iter()
            .map(|(sku, q)| ord::OrderLine {
                sku: sku.to_string(),
                quantity: *q,
                unit_price: Some(Money {
                    currency_code: "EUR".into(),
                    amount_minor: 500,
                }),
                ..Default::default()
            })
            .collect(),
        ship_to: Some(PostalAddress {
            lines: vec!["1 Main St".into()],
            city: "Lisbon".into(),
            country_code: "PT".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub async fn create(
    c: &mut OrderServiceClient<Channel>,
    request_id: &str,
    lines: &[(&str, i64)],
) -> ord::Order {
    c.create_order(authed(
        T,
        ord::CreateOrderRequest {
            request_id: request_id.into(),
            order: Some(order(lines)),
        },
    ))
    .await
    .unwrap()
    .into_inner()
    .order
    .unwrap()
}

/// The order `name` as GetOrder gives it.
pub async fn order_of(c: &mut OrderServiceClient<Channel>, name: &str) -> ord::Order {
    c.get_order(authed(T, ord::GetOrderRequest { name: name.into() }))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap()
}

pub use oms_e2e::until_state;

/// Follows inventory's feed until a reservation released units for
/// `reason` (saga steps give stock back after the change that asked).
/// An edit of `order`'s first line to `quantity` units.
pub(crate) fn edit_first_line(
    order: &str,
    request_id: &str,
    quantity: i64,
) -> ord::EditOrderLinesRequest {
    ord::EditOrderLinesRequest {
        request_id: request_id.into(),
        name: order.into(),
        lines: vec![ord::LineQuantity {
            line_id: "1".into(),
            quantity,
        }],
        reason: "customer call".into(),
    }
}

/// Cancels `quantity` units of an order's first line ("one less").
pub(crate) fn cancel_first_line(
    order: &str,
    request_id: &str,
    quantity: i64,
) -> ord::CancelOrderLinesRequest {
    ord::CancelOrderLinesRequest {
        request_id: request_id.into(),
        name: order.into(),
        lines: vec![ord::LineQuantity {
            line_id: "1".into(),
            quantity,
        }],
        reason: "one less".into(),
    }
}

pub async fn until_released(c: &mut InventoryServiceClient<Channel>, reason: &str) {
    let mut feed = c
        .watch_inventory_events(authed(T, inv::WatchInventoryEventsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    loop {
        let ev = feed.message().await.unwrap().unwrap().event.unwrap();
        if let Some(inv::inventory_event::Kind::ReservationReleased(r)) = ev.kind
            && r.reason == reason
        {
            return;
        }
    }
}

pub async fn available(c: &mut InventoryServiceClient<Channel>, sku: &str) -> i64 {
    c.get_availability(authed(
        T,
        inv::GetAvailabilityRequest {
            skus: vec![sku.into()],
            ..Default::default()
        },
    ))
    .await
    .unwrap()
    .into_inner()
    .availabilities[0]
        .available
}

#[tokio::test]
async fn orders_are_reserved_backordered_held_and_cancelled_with_their_stock() {
    let mut suite = Suite::start().await;
    // Fulfillment is down: routed orders wait in ROUTED (their release is
    // retried), where holds, edits and cancels still apply.
    suite.crash(Service::Fulfillment).await;
    let mut stock_c = suite.stock(T, &[("A", 5), ("B", 1)]).await;
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let mut feed = suite.order_events(T).await;

    let first = create(&mut orders, "o1", &[("A", 2), ("B", 1)]).await;
    until_state(&mut feed, &first.name, OrderState::Reserved).await;
    // Then routing places it and the reservation becomes allocations at DC1.
    let routed = until_state(&mut feed, &first.name, OrderState::Routed)
        .await
        .order
        .unwrap();
    assert!(routed.routing_decision.starts_with("decisions/"));
    let sourcing: Vec<(String, i64)> = routed
        .lines
        .iter()
        .flat_map(|l| l.sourcing.iter().map(|s| (s.node_id.clone(), s.quantity)))
        .collect();
    assert_eq!(sourcing, [("DC1".to_owned(), 2), ("DC1".to_owned(), 1)]);
    assert_eq!(
        (
            available(&mut stock_c, "A").await,
            available(&mut stock_c, "B").await
        ),
        (3, 0)
    );

    // Short stock: a backorder naming the short line, not an error.
    let second = create(&mut orders, "o2", &[("A", 1), ("B", 2)]).await;
    let ev = until_state(&mut feed, &second.name, OrderState::Backordered).await;
    let o = ev.order.unwrap();
    assert_eq!(
        (
            o.lines[0].quantity_backordered,
            o.lines[1].quantity_backordered
        ),
        (0, 2)
    );
    match ev.kind {
        Some(ord::order_event::Kind::StateChanged(c)) => {
            assert!(c.reason.contains("B (2 missing)"), "{}", c.reason)
        }
        other => panic!("{other:?}"),
    }

    // A hold stops a routed order; releasing it resumes where it was.
    let held = orders
        .place_hold(authed(
            T,
            ord::PlaceHoldRequest {
                request_id: "h1".into(),
                name: first.name.clone(),
                r#type: ord::HoldType::Fraud as i32,
                reason: "review".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(held.state, OrderState::OnHold as i32);
    let resumed = orders
        .release_hold(authed(
            T,
            ord::ReleaseHoldRequest {
                request_id: "h2".into(),
                name: first.name.clone(),
                r#type: ord::HoldType::Fraud as i32,
                reason: "ok".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(resumed.state, OrderState::Routed as i32);

    // More units on a routed line are allocated at its node, all or
    // nothing; fewer give the difference back.
    let edit = |request_id: &str, q: i64| edit_first_line(&first.name, request_id, q);
    let err = orders
        .edit_order_lines(authed(T, edit("e0", 6)))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), oms_runtime::status::reason(&err)),
        (tonic::Code::FailedPrecondition, "INSUFFICIENT_STOCK".into()),
        "DC1 has 3 more A, not 4: {err:?}"
    );
    assert_eq!(available(&mut stock_c, "A").await, 3);
    let grown = orders
        .edit_order_lines(authed(T, edit("e+", 3)))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(grown.lines[0].quantity, 3);
    assert_eq!(
        grown.lines[0]
            .sourcing
            .iter()
            .map(|s| (s.node_id.as_str(), s.quantity))
            .collect::<Vec<_>>(),
        [("DC1", 3)]
    );
    let replay = orders
        .edit_order_lines(authed(T, edit("e+", 3)))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(replay, grown);
    assert_eq!(
        available(&mut stock_c, "A").await,
        2,
        "one more A held, once"
    );
    let reservation = stock_c
        .get_reservation(authed(
            T,
            inv::GetReservationRequest {
                name: format!(
                    "reservations/order-{}",
                    first.name.trim_start_matches("orders/")
                ),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .reservation
        .unwrap();
    let a = reservation.lines.iter().find(|l| l.sku == "A").unwrap();
    assert_eq!(
        a.allocations
            .iter()
            .map(|x| (x.node_id.as_str(), x.quantity))
            .collect::<Vec<_>>(),
        [("DC1", 3)]
    );
    let edited = orders
        .edit_order_lines(authed(T, edit("e1", 1)))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(edited.lines[0].quantity, 1);
    until_released(&mut stock_c, "lines edited").await;
    assert_eq!(available(&mut stock_c, "A").await, 4);

    // Cancelling the first order gives its stock back; the backorder then fills.
    let cancelled = orders
        .cancel_order(authed(
            T,
            ord::CancelOrderRequest {
                request_id: "c1".into(),
                name: first.name.clone(),
                reason: "customer".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(cancelled.state, OrderState::Cancelled as i32);
    receive(&mut stock_c, T, "B", 1).await;
    until_state(&mut feed, &second.name, OrderState::Reserved).await;
    until_state(&mut feed, &second.name, OrderState::Routed).await;
    // The cancelled order's plan no longer counts against DC1's capacity
    // (its step ran before the backorder's, which was due later).
    let plan = suite.decision(T, &routed.routing_decision).await;
    assert!(plan.release_time.is_some());
    assert_eq!(plan.release_reason, "order cancelled");
    assert_eq!(
        (
            available(&mut stock_c, "A").await,
            available(&mut stock_c, "B").await
        ),
        (4, 0)
    );

    let err = orders
        .cancel_order(authed(
            T,
            ord::CancelOrderRequest {
                request_id: "c2".into(),
                name: first.name.clone(),
                reason: "again".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);

    let counts = orders
        .count_orders(authed(T, ord::CountOrdersRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let by_state: Vec<(i32, i64)> = counts.counts.iter().map(|c| (c.state, c.count)).collect();
    assert_eq!(
        by_state,
        [
            (OrderState::Routed as i32, 1),
            (OrderState::Cancelled as i32, 1)
        ]
    );
    assert_eq!(counts.total, 2);
}

/// ListBackorderDemand for `skus`, all pages.
async fn demand(c: &mut OrderServiceClient<Channel>, skus: &[&str]) -> Vec<ord::BackorderDemand> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let req = ord::ListBackorderDemandRequest {
            skus: skus.iter().map(|s| s.to_string()).collect(),
            page_size: 1,
            page_token,
        };
        let page = c
            .list_backorder_demand(authed(T, req))
            .await
            .unwrap()
            .into_inner();
        all.extend(page.demand);
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

/// Whether the `reserve` step of order `name` still waits out its
/// backoff (set an hour ahead by the test), i.e. was not woken.
/// The orders waiting for `sku`, in their turn, read in pages of two.
async fn queue(c: &mut OrderServiceClient<Channel>, sku: &str) -> Vec<ord::BackorderQueueEntry> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let req = ord::ListBackorderQueueRequest {
            sku: sku.into(),
            page_size: 2,
            page_token,
            ..Default::default()
        };
        let page = c
            .list_backorder_queue(authed(T, req))
            .await
            .unwrap()
            .into_inner();
        all.extend(page.entries);
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

/// Each order in line is told when the stock it waits for is due: units
/// on their way by a transfer go to the orders in their turn; the one
/// they do not reach has no time. Before 2026-12-05 the line said how many
/// units came before an order, not when stock would come.
#[tokio::test]
async fn a_backorder_is_told_when_its_stock_is_due() {
    let (suite, mut stock_c) = none_of_a().await;
    // Three units leave DC1 for STORE1, due in two days.
    let due = on_their_way_to_a_store(&mut stock_c, 3).await;
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let mut feed = suite.order_events(T).await;
    for (id, q) in [("d1", 2), ("d2", 1), ("d3", 1)] {
        let o = create(&mut orders, id, &[("A", q)]).await;
        until_state(&mut feed, &o.name, OrderState::Backordered).await;
    }
    let line = queue(&mut orders, "A").await;
    let told: Vec<_> = (line.iter())
        .map(|e| (e.units_ahead, e.stock_due_time, e.covered_now))
        .collect();
    assert_eq!(
        told,
        [
            (0, Some(due), false),
            (2, Some(due), false),
            (3, None, false)
        ],
        "the 3 coming cover the first two"
    );
}

/// A supplier's delivery tells the line too: an advance shipping notice
/// of 2 A due in three days (no warehouse has received it) reaches the
/// first order in line, not the second. Fulfillment tells inventory what
/// the notice brings; orders reads it in inventory's arrivals.
#[tokio::test]
async fn a_backorder_is_told_when_a_suppliers_delivery_brings_its_stock() {
    use oms_proto::fulfillment as ful;
    let (suite, _stock_c) = none_of_a().await;
    let due = prost_types::Timestamp {
        seconds: (chrono::Utc::now() + chrono::Duration::days(3)).timestamp(),
        nanos: 0,
    };
    let notice = ful::CreateAdvanceShippingNoticeRequest {
        request_id: rid(),
        asn: Some(ful::AdvanceShippingNotice {
            node_id: "DC1".into(),
            reference: "PO-1".into(),
            expected_time: Some(due),
            lines: vec![ful::ExpectedLine {
                sku: "A".into(),
                quantity: 2,
                lot: String::new(),
            }],
            ..Default::default()
        }),
    };
    let channel = suite.channel(Service::Fulfillment);
    let mut work = ful::fulfillment_service_client::FulfillmentServiceClient::new(channel);
    work.create_advance_shipping_notice(authed(T, notice))
        .await
        .unwrap();
    let mut db = suite.db.connect("fulfillment").await;
    let told = "SELECT count(*) FROM asns WHERE inbound_post_time IS NOT NULL";
    wait_for(&mut db, told, 1).await;
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let mut feed = suite.order_events(T).await;
    for id in ["s1", "s2"] {
        let o = create(&mut orders, id, &[("A", 2)]).await;
        until_state(&mut feed, &o.name, OrderState::Backordered).await;
    }
    let line = queue(&mut orders, "A").await;
    let told: Vec<_> = (line.iter())
        .map(|e| (e.units_ahead, e.stock_due_time))
        .collect();
    assert_eq!(told, [(0, Some(due)), (2, None)]);
}

/// Receives `units` of A at DC1 and sends them to a new node STORE1 by a
/// transfer due in two days; the time it is due.
pub(crate) async fn on_their_way_to_a_store(
    stock_c: &mut InventoryServiceClient<Channel>,
    units: i64,
) -> prost_types::Timestamp {
    let store = inv::Node {
        node_id: "STORE1".into(),
        kind: oms_proto::common::NodeKind::Store as i32,
        enabled: true,
        ..Default::default()
    };
    let store = inv::CreateNodeRequest {
        request_id: rid(),
        node: Some(store),
    };
    stock_c.create_node(authed(T, store)).await.unwrap();
    receive(stock_c, T, "A", units).await;
    let due = prost_types::Timestamp {
        seconds: (chrono::Utc::now() + chrono::Duration::days(2)).timestamp(),
        nanos: 0,
    };
    let sent = inv::SendTransferRequest {
        request_id: rid(),
        transfer_id: "TO-1".into(),
        from_node_id: "DC1".into(),
        to_node_id: "STORE1".into(),
        lines: vec![inv::TransferLine {
            sku: "A".into(),
            quantity: units,
            ..Default::default()
        }],
        expected_arrival_time: Some(due),
        ..Default::default()
    };
    stock_c.send_transfer(authed(T, sent)).await.unwrap();
    due
}

async fn still_waiting(db: &mut sqlx::PgConnection, name: &str) -> bool {
    sqlx::query_scalar(
        "SELECT next_attempt_time > now() + interval '30 minutes' FROM saga_steps
         WHERE order_id = $1::uuid AND step = 'reserve'",
    )
    .bind(name.trim_start_matches("orders/"))
    .fetch_one(db)
    .await
    .unwrap()
}

#[tokio::test]
async fn backordered_orders_are_woken_by_stock_that_comes_oldest_first() {
    let suite = Suite::start().await;
    let mut stock_c = suite.stock(T, &[("A", 1)]).await;
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let mut feed = suite.order_events(T).await;
    // A cart holds the one A there is.
    let cart = inv::CreateReservationRequest {
        reservation_id: "cart".into(),
        lines: vec![inv::ReservationLine {
            sku: "A".into(),
            quantity: 1,
            ..Default::default()
        }],
        ..Default::default()
    };
    stock_c.create_reservation(authed(T, cart)).await.unwrap();
    let mut names = Vec::new();
    for (id, q) in [("w1", 2), ("w2", 1), ("w3", 1)] {
        let o = create(&mut orders, id, &[("A", q)]).await;
        until_state(&mut feed, &o.name, OrderState::Backordered).await;
        names.push(o.name);
    }
    // What they wait for, as a buyer reads it: 3 orders asking 4 units,
    // the oldest first served.
    let a = demand(&mut orders, &[]).await;
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!((a[0].sku.as_str(), a[0].orders, a[0].units), ("A", 3, 4));
    let first = order_of(&mut orders, &names[0]).await;
    // (Kept to the microsecond, as Postgres keeps time.)
    let micros = |t: Option<prost_types::Timestamp>| t.map(|t| (t.seconds, t.nanos / 1000));
    assert_eq!(micros(a[0].oldest_order_time), micros(first.create_time));
    assert!(demand(&mut orders, &["B"]).await.is_empty());
    // Where each stands in line (pages of two).
    let line = queue(&mut orders, "A").await;
    let at: Vec<_> = line
        .iter()
        .map(|e| (e.order.as_str(), e.units, e.orders_ahead, e.units_ahead))
        .collect();
    assert_eq!(
        at,
        [
            (names[0].as_str(), 2, 0, 0),
            (names[1].as_str(), 1, 1, 2),
            (names[2].as_str(), 1, 2, 3)
        ]
    );
    assert_eq!(micros(line[0].create_time), micros(first.create_time));
    // One order's place alone.
    let one = ord::ListBackorderQueueRequest {
        sku: "A".into(),
        order: names[2].clone(),
        ..Default::default()
    };
    let one = orders.list_backorder_queue(authed(T, one)).await.unwrap();
    assert_eq!(one.into_inner().entries, line[2..]);
    let bad = ord::ListBackorderQueueRequest {
        sku: "A B".into(),
        order: "orders/nope".into(),
        ..Default::default()
    };
    let err = orders
        .list_backorder_queue(authed(T, bad))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    use tonic_types::StatusExt;
    let fields = err.get_error_details().bad_request().map(|b| {
        b.field_violations
            .iter()
            .map(|f| f.field.clone())
            .collect::<Vec<_>>()
    });
    assert_eq!(fields, Some(vec!["sku".to_string(), "order".to_string()]));
    let bad = ord::ListBackorderDemandRequest {
        skus: vec!["A".into(), "A B".into()],
        ..Default::default()
    };
    let err = orders
        .list_backorder_demand(authed(T, bad))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("skus[1]"), "{err:?}");
    // Their backoff is put an hour off: only stock that comes wakes them.
    let mut db = suite.db.connect("orders").await;
    backoffs_an_hour_off(&mut db).await;

    // Two units come: the oldest order takes both, the others wait on.
    receive(&mut stock_c, T, "A", 2).await;
    until_state(&mut feed, &names[0], OrderState::Reserved).await;
    assert!(still_waiting(&mut db, &names[1]).await);
    assert!(still_waiting(&mut db, &names[2]).await);
    let waits: i64 =
        sqlx::query_scalar("SELECT count(*) FROM stock_waits WHERE order_id = $1::uuid")
            .bind(names[0].trim_start_matches("orders/"))
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(waits, 0, "a placed order waits for nothing");
    let a = demand(&mut orders, &["A"]).await;
    assert_eq!((a[0].orders, a[0].units), (2, 2), "{a:?}");

    // The cart is abandoned (its expiry brought to now) and its unit comes
    // back: the next order in line takes it. (Before 2026-12-05 the
    // expiry's event named no units, and nothing woke.)
    let abandon = inv::ExtendReservationRequest {
        request_id: rid(),
        name: "reservations/cart".into(),
        ttl: Some(prost_types::Duration {
            seconds: 0,
            nanos: 100_000_000,
        }),
        ..Default::default()
    };
    stock_c
        .extend_reservation(authed(T, abandon))
        .await
        .unwrap();
    until_state(&mut feed, &names[1], OrderState::Reserved).await;
    assert!(still_waiting(&mut db, &names[2]).await);
    // A cancelled order asks for nothing more.
    let cancel = ord::CancelOrderRequest {
        request_id: "w3-cancel".into(),
        name: names[2].clone(),
        reason: "customer".into(),
    };
    orders.cancel_order(authed(T, cancel)).await.unwrap();
    assert!(demand(&mut orders, &["A"]).await.is_empty());
}

/// A backordered order of a channel kept to a pool of nodes is woken by
/// stock its channel may sell, not by stock elsewhere: a receipt outside
/// the pool goes to the younger order of no channel.
#[tokio::test]
async fn a_backordered_order_waits_for_its_channels_share() {
    let suite = Suite::start().await;
    let mut stock_c = suite.stock(T, &[]).await;
    suite.stock_at(T, "DC2", &[]).await;
    oms_e2e::create_item(
        &mut stock_c,
        T,
        inv::Item {
            sku: "A".into(),
            ..Default::default()
        },
    )
    .await;
    web_pool(&mut stock_c, "web-dc2", &["DC2"]).await;
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let mut feed = suite.order_events(T).await;
    let mut web = order(&[("A", 1)]);
    web.channel = "channels/web".into();
    let web = orders
        .create_order(authed(
            T,
            ord::CreateOrderRequest {
                request_id: "web-1".into(),
                order: Some(web),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    until_state(&mut feed, &web.name, OrderState::Backordered).await;
    let plain = create(&mut orders, "plain-1", &[("A", 1)]).await;
    until_state(&mut feed, &plain.name, OrderState::Backordered).await;
    let mut db = suite.db.connect("orders").await;
    backoffs_an_hour_off(&mut db).await;

    // A unit at DC1, outside the web's pool.
    receive(&mut stock_c, T, "A", 1).await;
    until_state(&mut feed, &plain.name, OrderState::Reserved).await;
    assert!(still_waiting(&mut db, &web.name).await);
    let a = demand(&mut orders, &["A"]).await;
    assert_eq!((a[0].orders, a[0].units), (1, 1), "{a:?}");

    // Another unit at DC1, outside the pool: weighed (the feed's cursor
    // moves past it), it wakes nobody. Then the web's pool grows to take
    // DC1 in: a rule over all SKUs weighs every waiting order, and the web
    // order goes.
    let cursor = || {
        sqlx::query_scalar::<_, String>(
            "SELECT cursor FROM feed_cursors WHERE source = 'inventory'",
        )
    };
    let before = cursor().fetch_one(&mut db).await.unwrap();
    receive(&mut stock_c, T, "A", 1).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while cursor().fetch_one(&mut db).await.unwrap() == before {
        assert!(
            std::time::Instant::now() < deadline,
            "the receipt was never weighed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(still_waiting(&mut db, &web.name).await);
    web_pool(&mut stock_c, "web-dc1-dc2", &["DC1", "DC2"]).await;
    until_state(&mut feed, &web.name, OrderState::Reserved).await;
    assert!(demand(&mut orders, &["A"]).await.is_empty());
}

/// Puts every backordered order's backoff an hour off: from then on only
/// a wake (stock that comes) or a change of the order tries it again.
async fn backoffs_an_hour_off(db: &mut sqlx::PgConnection) {
    sqlx::query("UPDATE saga_steps SET next_attempt_time = now() + interval '1 hour' WHERE step = 'reserve'")
        .execute(db)
        .await
        .unwrap();
}

/// A suite whose item A has no stock, with its clients and order feed,
/// and an order for one A, backordered.
/// A suite whose item A has no stock (at DC1), with its inventory client.
pub(crate) async fn none_of_a() -> (Suite, InventoryServiceClient<Channel>) {
    let suite = Suite::start().await;
    let mut stock_c = suite.stock(T, &[]).await;
    let a = inv::Item {
        sku: "A".into(),
        ..Default::default()
    };
    oms_e2e::create_item(&mut stock_c, T, a).await;
    (suite, stock_c)
}

struct SoldOut {
    suite: Suite,
    stock_c: InventoryServiceClient<Channel>,
    orders: OrderServiceClient<Channel>,
    feed: tonic::Streaming<ord::WatchOrderEventsResponse>,
    older: ord::Order,
}

async fn sold_out(request_id: &str) -> SoldOut {
    let (suite, stock_c) = none_of_a().await;
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let mut feed = suite.order_events(T).await;
    let older = create(&mut orders, request_id, &[("A", 1)]).await;
    until_state(&mut feed, &older.name, OrderState::Backordered).await;
    SoldOut {
        suite,
        stock_c,
        orders,
        feed,
        older,
    }
}

/// An order on hold waits for its release, not for stock: the unit that
/// comes goes to the younger order behind it, and the held one is out of
/// the demand until its hold goes, when it takes its place in line again.
/// Before 2026-12-05 the held order's wait was counted first, so the
/// unit woke nobody who could take it (the held order's attempt stopped
/// at its hold) and the younger order waited out its backoff.
#[tokio::test]
async fn a_held_backorder_keeps_no_stock_from_the_orders_behind_it() {
    let SoldOut {
        suite,
        mut stock_c,
        mut orders,
        mut feed,
        older,
    } = sold_out("held-1").await;
    let younger = create(&mut orders, "held-2", &[("A", 1)]).await;
    until_state(&mut feed, &younger.name, OrderState::Backordered).await;
    let mut db = suite.db.connect("orders").await;
    backoffs_an_hour_off(&mut db).await;
    let hold = fraud_hold(&older.name, "held-1-hold");
    orders.place_hold(authed(T, hold)).await.unwrap();
    let a = demand(&mut orders, &["A"]).await;
    assert_eq!((a[0].orders, a[0].units), (1, 1), "{a:?}");

    receive(&mut stock_c, T, "A", 1).await;
    until_state(&mut feed, &younger.name, OrderState::Reserved).await;
    assert!(demand(&mut orders, &["A"]).await.is_empty());

    // Released, the older order is placed again: the next unit is its.
    let cleared = fraud_cleared(&older.name, "held-1-cleared");
    orders.release_hold(authed(T, cleared)).await.unwrap();
    until_state(&mut feed, &older.name, OrderState::Backordered).await;
    receive(&mut stock_c, T, "A", 1).await;
    until_state(&mut feed, &older.name, OrderState::Reserved).await;
}

/// A new order does not take the units an older backorder waits for: it
/// waits behind it, and hands them to it. The feed's wake is kept off
/// here (its lock held) so the new order comes first, as one made in the
/// instant between a receipt and the wake would. Before 2026-12-05 the
/// new order reserved the unit and the older one waited on.
#[tokio::test]
async fn a_new_order_waits_behind_older_backorders() {
    let mut s = sold_out("line-1").await;
    let mut db = s.suite.db.connect("orders").await;
    backoffs_an_hour_off(&mut db).await;
    let wake_off = wake_off(&mut db).await;
    receive(&mut s.stock_c, T, "A", 1).await;
    let newer = create(&mut s.orders, "line-2", &[("A", 1)]).await;
    let ev = until_state(&mut s.feed, &newer.name, OrderState::Backordered).await;
    let reason = match ev.kind {
        Some(ord::order_event::Kind::StateChanged(c)) => c.reason,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        reason,
        "short: A (1 missing); older orders waiting for it come first"
    );
    // The older order was handed the unit, with the feed's wake still off.
    until_state(&mut s.feed, &s.older.name, OrderState::Reserved).await;
    wake_off.rollback().await.unwrap();
    let a = demand(&mut s.orders, &["A"]).await;
    assert_eq!((a[0].orders, a[0].units), (1, 1), "{a:?}");
    receive(&mut s.stock_c, T, "A", 1).await;
    until_state(&mut s.feed, &newer.name, OrderState::Reserved).await;
}

/// Availability published while orders wait for stock keeps their units:
/// after a receipt, the network's figure (what channels publish) shows
/// only what the backorders leave, before and after they reserve. The
/// feed's wake is kept off at first (its lock held), as in the seconds
/// between a receipt and the wake. Before 2026-12-05 the figure showed
/// every unit received until the backorders had them; and the gate keeps
/// them too: a cart made in inventory meanwhile gets only what is left.
#[tokio::test]
async fn published_availability_keeps_what_backorders_wait_for() {
    let mut s = sold_out("kept-1").await;
    let second = create(&mut s.orders, "kept-2", &[("A", 1)]).await;
    until_state(&mut s.feed, &second.name, OrderState::Backordered).await;
    let mut db = s.suite.db.connect("orders").await;
    backoffs_an_hour_off(&mut db).await;
    // Orders tells inventory what its backorders ask for.
    let before = until_figure(&mut s.stock_c, |a| a.backordered == 2).await;
    assert_eq!(before.availabilities[0].available, 0);
    let watch = inv::WatchAvailabilityRequest {
        after_cursor: before.feed_cursor,
        skus: vec!["A".into()],
        ..Default::default()
    };
    let mut published = (s.stock_c.watch_availability(authed(T, watch)).await)
        .unwrap()
        .into_inner();
    let wake_off = wake_off(&mut db).await;
    receive(&mut s.stock_c, T, "A", 3).await;
    // The receipt's figure (the demand's may come first again: the feed
    // may repeat what the figures read at its cursor already had).
    let a = loop {
        let a = next_figure(&mut published).await;
        if a.on_hand > 0 {
            break a;
        }
    };
    assert_eq!((a.on_hand, a.backordered, a.available), (3, 2, 1));
    let gross = (s.stock_c.get_availability(authed(
        T,
        inv::GetAvailabilityRequest {
            skus: vec!["A".into()],
            before_backorders: true,
            ..Default::default()
        },
    )))
    .await
    .unwrap()
    .into_inner();
    assert_eq!(
        gross.availabilities[0].available, 3,
        "what orders' own reservations could take"
    );
    // A cart, made in inventory for no backorders, gets the one unit
    // published, not theirs.
    let cart = |id: &str, quantity| {
        let lines = vec![inv::ReservationLine {
            sku: "A".into(),
            quantity,
            ..Default::default()
        }];
        let id = id.into();
        authed(
            T,
            inv::CreateReservationRequest {
                reservation_id: id,
                lines,
                ..Default::default()
            },
        )
    };
    let err = s.stock_c.create_reservation(cart("kept-cart-0", 2)).await;
    let err = err.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    s.stock_c
        .create_reservation(cart("kept-cart-1", 1))
        .await
        .unwrap();
    wake_off.rollback().await.unwrap();
    let both = [s.older.name.as_str(), second.name.as_str()];
    until_all(&mut s.feed, &both, OrderState::Reserved).await;
    // Every figure from the cart's on shows nothing left, until orders
    // says that nothing waits any more.
    loop {
        let a = next_figure(&mut published).await;
        assert_eq!(a.available, 0, "{a:?}");
        if a.backordered == 0 {
            assert_eq!(a.reserved, 3);
            break;
        }
    }
}

/// Another source's backorders (an ERP's, set in inventory) keep their
/// units from orders' too: a unit that comes while they ask for it
/// leaves orders' backorder waiting, told it is not covered; when they
/// ask for none any more, the feed wakes orders' backorder for it (its
/// backoff put an hour off).
#[tokio::test]
async fn another_sources_backorders_keep_their_units_from_orders() {
    let mut s = sold_out("erp-1").await;
    let erp = |request_id: &str, revision, units| {
        let demand = vec![inv::BackorderDemandFigure {
            sku: "A".into(),
            channel: String::new(),
            units,
        }];
        let source = "erp".into();
        let request_id = request_id.into();
        let set = inv::SetBackorderDemandRequest {
            request_id,
            demand,
            revision,
            source,
            complete: false,
        };
        authed(T, set)
    };
    s.stock_c
        .set_backorder_demand(erp("erp-demand-1", 1, 1))
        .await
        .unwrap();
    let mut db = s.suite.db.connect("orders").await;
    backoffs_an_hour_off(&mut db).await;
    receive(&mut s.stock_c, T, "A", 1).await;
    let line = queue(&mut s.orders, "A").await;
    assert_eq!(line.len(), 1);
    assert!(!line[0].covered_now, "erp's unit: {line:?}");
    let waiting = order_of(&mut s.orders, &s.older.name).await;
    assert_eq!(waiting.state, OrderState::Backordered as i32);
    s.stock_c
        .set_backorder_demand(erp("erp-demand-2", 2, 0))
        .await
        .unwrap();
    until_state(&mut s.feed, &s.older.name, OrderState::Reserved).await;
}

/// Two orders replicas publish what backorders ask for in turn:
/// backorders made, then cancelled, through both at once leave inventory
/// with what the waits ask for (figures under rising revisions taken in
/// turn, so neither replica sets the other's back).
#[tokio::test]
async fn replicas_publish_backorder_demand_in_turn() {
    let mut s = sold_out("turn-0").await;
    let second = s.suite.start_replica(Service::Orders).await;
    let clients = [s.orders.clone(), OrderServiceClient::new(second.channel())];
    let made = futures::future::join_all((1..=20).map(|i| {
        let mut c = clients[i % 2].clone();
        async move { create(&mut c, &format!("turn-{i}"), &[("A", 1)]).await }
    }))
    .await;
    until_figure(&mut s.stock_c, |a| a.backordered == 21).await;
    futures::future::join_all(made.iter().take(10).enumerate().map(|(i, o)| {
        let mut c = clients[i % 2].clone();
        let cancel = ord::CancelOrderRequest {
            request_id: format!("turn-cancel-{i}"),
            name: o.name.clone(),
            reason: "customer".into(),
        };
        async move { c.cancel_order(authed(T, cancel)).await.unwrap() }
    }))
    .await;
    until_figure(&mut s.stock_c, |a| a.backordered == 11).await;
    // And orders remembers as published what inventory was told.
    let mut db = s.suite.db.connect("orders").await;
    let published = "SELECT coalesce(sum(units), 0)::bigint FROM published_demand WHERE sku = 'A'";
    wait_for(&mut db, published, 11).await;
}

/// A publisher that starts states all the demand again, whatever
/// drifted: figures of orders' source set by hand in inventory (as after
/// inventory's database was restored) are set right, and those of SKUs
/// nothing waits for are zeroed. Before, only what changed in orders was
/// sent, so a drift stayed until the SKU's waits changed.
#[tokio::test]
async fn a_starting_publisher_sets_drifted_demand_right() {
    let mut s = sold_out("drift-1").await;
    until_figure(&mut s.stock_c, |a| a.backordered == 1).await;
    let figure = |sku: &str, units| inv::BackorderDemandFigure {
        sku: sku.into(),
        channel: String::new(),
        units,
    };
    let drift = inv::SetBackorderDemandRequest {
        request_id: rid(),
        demand: vec![figure("A", 50), figure("B", 7)],
        revision: chrono::Utc::now().timestamp_micros(),
        source: "orders".into(),
        complete: false,
    };
    s.stock_c
        .set_backorder_demand(authed(T, drift))
        .await
        .unwrap();
    until_figure(&mut s.stock_c, |a| a.backordered == 50).await;
    let _second = s.suite.start_replica(Service::Orders).await;
    until_figure(&mut s.stock_c, |a| a.backordered == 1).await;
    let b = inv::GetAvailabilityRequest {
        skus: vec!["B".into()],
        ..Default::default()
    };
    let b = s.stock_c.get_availability(authed(T, b)).await.unwrap();
    assert_eq!(
        b.into_inner().availabilities[0].backordered,
        0,
        "zeroed with A's"
    );
}

async fn next_figure(
    feed: &mut tonic::Streaming<inv::WatchAvailabilityResponse>,
) -> inv::Availability {
    let next = feed.message().await.unwrap().unwrap();
    next.availability.unwrap()
}

/// Keeps the stock feed's wake off until the transaction is rolled back:
/// the feed follower takes this lock to wake anyone (repo::feeds::claim).
pub(crate) async fn wake_off(db: &mut sqlx::PgConnection) -> sqlx::Transaction<'_, sqlx::Postgres> {
    let mut tx = sqlx::Connection::begin(db).await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("feed:inventory:{T}"))
        .execute(&mut *tx)
        .await
        .unwrap();
    tx
}

/// GetAvailability of A in the network, read until `ok` holds of it.
pub(crate) async fn until_figure(
    c: &mut InventoryServiceClient<Channel>,
    ok: impl Fn(&inv::Availability) -> bool,
) -> inv::GetAvailabilityResponse {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let req = inv::GetAvailabilityRequest {
            skus: vec!["A".into()],
            ..Default::default()
        };
        let got = c
            .get_availability(authed(T, req))
            .await
            .unwrap()
            .into_inner();
        if ok(&got.availabilities[0]) {
            return got;
        }
        assert!(std::time::Instant::now() < deadline, "{got:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Orders follows a tenant's inventory feed from where the feed stands
/// at its first backorder (after weighing the waiting orders once), not
/// from the oldest event kept: the receipt before it is not read. Before
/// 2026-12-05 the first follow read every event inventory keeps (a month
/// of a busy tenant's), and no backorder woke until it was through.
#[tokio::test]
async fn the_stock_feed_is_followed_from_where_it_stands() {
    let suite = Suite::start().await;
    let mut stock_c = suite.stock(T, &[("A", 1)]).await;
    let moved = inv::WatchInventoryEventsRequest {
        event_types: vec!["StockMoved".into()],
        ..Default::default()
    };
    let mut events = stock_c
        .watch_inventory_events(authed(T, moved))
        .await
        .unwrap()
        .into_inner();
    let receipt = events.message().await.unwrap().unwrap().event.unwrap();
    let receipt = receipt.meta.unwrap().cursor;
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let mut feed = suite.order_events(T).await;
    let o = create(&mut orders, "two-a", &[("A", 2)]).await;
    until_state(&mut feed, &o.name, OrderState::Backordered).await;
    let mut db = suite.db.connect("orders").await;
    let stored = "SELECT count(*) FROM feed_cursors WHERE source = 'inventory' AND cursor <> ''";
    wait_for(&mut db, stored, 1).await;
    let cursor: String =
        sqlx::query_scalar("SELECT cursor FROM feed_cursors WHERE source = 'inventory'")
            .fetch_one(&mut db)
            .await
            .unwrap();
    let at = |c: &str| -> (u64, i64) {
        let (txid, id) = c.split_once('.').unwrap();
        (txid.parse().unwrap(), id.parse().unwrap())
    };
    assert!(at(&cursor) > at(&receipt), "{cursor} after {receipt}");
    // It follows on from there: the next unit places the order.
    receive(&mut stock_c, T, "A", 1).await;
    until_state(&mut feed, &o.name, OrderState::Reserved).await;
}

/// A backordered order whose short line is cancelled reserves the rest
/// at once. Before 2026-12-05 it waited for its backoff (up to 5
/// minutes) or for stock of the SKU it no longer wanted.
#[tokio::test]
async fn a_backorder_whose_short_line_is_cancelled_reserves_the_rest() {
    let suite = Suite::start().await;
    let mut stock_c = suite.stock(T, &[("A", 1)]).await;
    let b = inv::Item {
        sku: "B".into(),
        ..Default::default()
    };
    oms_e2e::create_item(&mut stock_c, T, b).await;
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let mut feed = suite.order_events(T).await;
    let o = create(&mut orders, "short-b", &[("B", 1), ("A", 1)]).await;
    until_state(&mut feed, &o.name, OrderState::Backordered).await;
    let mut db = suite.db.connect("orders").await;
    backoffs_an_hour_off(&mut db).await;
    let cancel = cancel_first_line(&o.name, "short-b-cancel", 1);
    orders.cancel_order_lines(authed(T, cancel)).await.unwrap();
    until_state(&mut feed, &o.name, OrderState::Reserved).await;
    assert_eq!(available(&mut stock_c, "A").await, 0);
    assert!(demand(&mut orders, &[]).await.is_empty());
}

/// An order held for payment and for review reserves its stock once the
/// review hold goes and only the payment is awaited, as an order held for
/// payment alone does. Before 2026-12-05 it reserved nothing until it was
/// paid.
#[tokio::test]
async fn an_order_left_awaiting_payment_only_reserves() {
    let suite = Suite::start().await;
    let mut stock_c = suite.stock(T, &[("A", 5)]).await;
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let mut feed = suite.order_events(T).await;
    let mut held = order(&[("A", 2)]);
    held.holds = [ord::HoldType::Payment, ord::HoldType::Fraud]
        .into_iter()
        .map(|t| ord::Hold {
            r#type: t as i32,
            reason: "on arrival".into(),
            ..Default::default()
        })
        .collect();
    let req = ord::CreateOrderRequest {
        request_id: "two-holds".into(),
        order: Some(held),
    };
    let o = orders.create_order(authed(T, req)).await.unwrap();
    let o = o.into_inner().order.unwrap();
    let cleared = fraud_cleared(&o.name, "two-holds-cleared");
    orders.release_hold(authed(T, cleared)).await.unwrap();
    loop {
        let ev = next_order_event(&mut feed).await;
        let reason = match &ev.kind {
            Some(ord::order_event::Kind::Updated(u)) => u.reason.as_str(),
            _ => "",
        };
        if ev.order.is_some_and(|x| x.name == o.name) && reason.contains("awaits payment") {
            assert_eq!(reason, "stock reserved while the order awaits payment");
            break;
        }
    }
    assert_eq!(available(&mut stock_c, "A").await, 3);
    assert_eq!(
        order_of(&mut orders, &o.name).await.state,
        OrderState::OnHold as i32
    );
}

#[tokio::test]
async fn a_crash_in_the_middle_of_placements_places_every_order_exactly_once() {
    let mut suite = Suite::start().await;
    suite.stock(T, &[("A", 30)]).await;
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    // Inventory is down: every accepted order's placement is pending.
    suite.crash(Service::Inventory).await;
    let mut names = Vec::new();
    for i in 0..40 {
        names.push(
            create(&mut orders, &format!("crash-{i}"), &[("A", 1)])
                .await
                .name,
        );
    }
    let mut db = suite.db.connect("orders").await;
    // (Not the in-doubt mark a reserve attempt holds while it calls.)
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM saga_steps WHERE step = 'reserve'")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(pending, 40);
    // Kill orders without draining, then bring both back.
    suite.crash(Service::Orders).await;
    suite.start_again(Service::Inventory).await;
    suite.start_again(Service::Orders).await;
    let mut stock_c = InventoryServiceClient::new(suite.channel(Service::Inventory));
    let mut feed = suite.order_events(T).await;
    let mut settled = std::collections::HashSet::new();
    while settled.len() < names.len() {
        let o = next_order_event(&mut feed).await.order.unwrap();
        if o.state == OrderState::Reserved as i32 || o.state == OrderState::Backordered as i32 {
            settled.insert(o.name);
        }
    }
    let reserved: Vec<(String, i64)> = sqlx::query_as(
        "SELECT order_id::text, count(*) FROM order_history WHERE to_state = 'reserved' AND kind = 'OrderStateChanged' GROUP BY order_id",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert_eq!(reserved.len(), 30, "30 units, 30 reserved orders");
    assert!(
        reserved.iter().all(|(_, n)| *n == 1),
        "each reserved once: {reserved:?}"
    );
    assert_eq!(available(&mut stock_c, "A").await, 0);
    let mut inv_db = suite.db.connect("inventory").await;
    let holds: i64 =
        sqlx::query_scalar("SELECT COALESCE(SUM(held), 0)::bigint FROM holds WHERE sku = 'A'")
            .fetch_one(&mut inv_db)
            .await
            .unwrap();
    assert_eq!(holds, 30);
}

/// A suite with fulfillment down and an order of 2 A (of 5 at DC1): the
/// order stays ROUTED, its stock held at DC1 and its lines editable.
async fn routed_with_fulfillment_down(
    request_id: &str,
) -> (
    Suite,
    InventoryServiceClient<Channel>,
    OrderServiceClient<Channel>,
    ord::Order,
) {
    let mut suite = Suite::start().await;
    suite.crash(Service::Fulfillment).await;
    let mut stock_c = suite.stock(T, &[("A", 5)]).await;
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let mut feed = suite.order_events(T).await;
    let o = create(&mut orders, request_id, &[("A", 2)]).await;
    until_state(&mut feed, &o.name, OrderState::Routed).await;
    assert_eq!(available(&mut stock_c, "A").await, 3);
    (suite, stock_c, orders, o)
}

#[tokio::test]
async fn a_cancel_with_the_longest_request_id_still_gives_the_stock_back() {
    let (_suite, mut stock_c, mut orders, o) = routed_with_fulfillment_down("long-1").await;
    // The saga's own request ids are built from this one: they must stay
    // valid request ids however long it is.
    orders
        .cancel_order(authed(
            T,
            ord::CancelOrderRequest {
                request_id: "k".repeat(128),
                name: o.name.clone(),
                reason: "customer".into(),
            },
        ))
        .await
        .unwrap();
    until_released(&mut stock_c, "order cancelled").await;
    assert_eq!(available(&mut stock_c, "A").await, 5);
}

/// An edit whose extension reached inventory but whose own commit did not
/// (a failed commit, a crash in between) leaves an undo step behind, as the
/// edit writes it before calling inventory: the step takes the units back,
/// and a late retry of that edit is refused instead of counting on them.
#[tokio::test]
async fn units_of_an_edit_that_was_not_recorded_go_back_to_inventory() {
    let (suite, mut stock_c, mut orders, o) = routed_with_fulfillment_down("lost-1").await;

    // What edit "lost-edit" (+1 A) did before its commit failed: the
    // extension, keyed as the edit keys it, and the undo step, due now.
    let id = o.name.trim_start_matches("orders/");
    let extend = inv::ExtendReservationRequest {
        request_id: oms_kernel::RequestId::derived("extend", format!("extend-{id}-lost-edit")),
        name: format!("reservations/order-{id}"),
        lines: vec![inv::Allocation {
            sku: "A".into(),
            node_id: "DC1".into(),
            quantity: 1,
            ..Default::default()
        }],
        reason: "customer call".into(),
        ttl: None,
    };
    stock_c
        .extend_reservation(authed(T, extend.clone()))
        .await
        .unwrap();
    assert_eq!(available(&mut stock_c, "A").await, 2);
    let pool = suite.db.pool("orders", None).await;
    sqlx::query(
        "INSERT INTO saga_steps (tenant, order_id, step, payload) VALUES ($1, $2::uuid, $3, $4)",
    )
    .bind(T)
    .bind(id)
    .bind("undo-extend:lost-edit")
    .bind(prost::Message::encode_to_vec(&extend))
    .execute(&pool)
    .await
    .unwrap();
    until_released(&mut stock_c, "edit not recorded").await;
    assert_eq!(available(&mut stock_c, "A").await, 3);

    // The edit retried late: refused, nothing held, the line as it was.
    let edit = |request_id: &str| edit_first_line(&o.name, request_id, 3);
    let err = orders
        .edit_order_lines(authed(T, edit("lost-edit")))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), oms_runtime::status::reason(&err)),
        (tonic::Code::FailedPrecondition, "EDIT_GIVEN_UP".into())
    );
    assert_eq!(available(&mut stock_c, "A").await, 3);
    // Sent again as a new edit, it holds its unit and leaves no undo step.
    let grown = orders
        .edit_order_lines(authed(T, edit("found-edit")))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(grown.lines[0].quantity, 3);
    assert_eq!(available(&mut stock_c, "A").await, 2);
    let left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM saga_steps WHERE step = 'undo-extend:found-edit'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(left, 0);
}

/// A routed order held while fulfillment was down: its fulfil step found
/// it held and ended, so releasing the hold must hand it to fulfillment
/// again (it stayed ROUTED for good).
#[tokio::test]
async fn a_routed_order_released_from_hold_goes_to_fulfillment() {
    let (mut suite, _, mut orders, order) = routed_with_fulfillment_down("held-1").await;
    orders
        .place_hold(authed(T, fraud_hold(&order.name, "h1")))
        .await
        .unwrap();
    // What the fulfil step does when it finds the order held: it ends.
    let id = order.name.trim_start_matches("orders/");
    let pool = suite.db.pool("orders", None).await;
    sqlx::query("DELETE FROM saga_steps WHERE order_id = $1::uuid AND step = 'fulfil'")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    let release = fraud_cleared(&order.name, "h2");
    orders.release_hold(authed(T, release)).await.unwrap();
    suite.start_again(Service::Fulfillment).await;
    let mut feed = suite.order_events(T).await;
    until_state(&mut feed, &order.name, OrderState::Released).await;
}

/// A fraud hold on `order`, for review.
fn fraud_hold(order: &str, request_id: &str) -> ord::PlaceHoldRequest {
    ord::PlaceHoldRequest {
        request_id: request_id.into(),
        name: order.into(),
        r#type: ord::HoldType::Fraud as i32,
        reason: "review".into(),
    }
}

/// The release of `order`'s fraud hold.
fn fraud_cleared(order: &str, request_id: &str) -> ord::ReleaseHoldRequest {
    ord::ReleaseHoldRequest {
        request_id: request_id.into(),
        name: order.into(),
        r#type: ord::HoldType::Fraud as i32,
        reason: "cleared".into(),
    }
}

/// A suite with 5 A at DC1 and routing down, and an order of `units` A
/// reserved there.
struct Reserved {
    suite: Suite,
    stock_c: InventoryServiceClient<Channel>,
    orders: OrderServiceClient<Channel>,
    feed: tonic::Streaming<ord::WatchOrderEventsResponse>,
    order: ord::Order,
}

async fn reserved_with_routing_down(request_id: &str, units: i64) -> Reserved {
    let mut suite = Suite::start().await;
    let stock_c = suite.stock(T, &[("A", 5)]).await;
    suite.crash(Service::Routing).await;
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let mut feed = suite.order_events(T).await;
    let order = create(&mut orders, request_id, &[("A", units)]).await;
    until_state(&mut feed, &order.name, OrderState::Reserved).await;
    Reserved {
        suite,
        stock_c,
        orders,
        feed,
        order,
    }
}

/// An order put on hold while it waits for routing (RESERVED) has its
/// unconfirmed reservation watched: `PlaceHold` schedules the held-expiry
/// step, which reads the reservation's 7-day expiry and waits for it.
#[tokio::test]
async fn an_order_held_while_reserved_has_its_reservation_watched() {
    let Reserved {
        suite,
        mut orders,
        mut feed,
        order,
        ..
    } = reserved_with_routing_down("held-reserved", 1).await;
    let hold = fraud_hold(&order.name, "fraud-check");
    orders.place_hold(authed(T, hold)).await.unwrap();
    until_state(&mut feed, &order.name, OrderState::OnHold).await;
    let mut db = suite.db.connect("orders").await;
    let waiting = "SELECT count(*) FROM saga_steps WHERE step = 'held-expiry'
                   AND next_attempt_time > now() + interval '6 days'";
    wait_for(&mut db, waiting, 1).await;
    // Released, the order waits for routing again; the watch ends.
    let release = fraud_cleared(&order.name, "fraud-cleared");
    orders.release_hold(authed(T, release)).await.unwrap();
    let watches = "SELECT count(*) FROM saga_steps WHERE step = 'held-expiry'";
    wait_for(&mut db, watches, 0).await;
}

/// Units cancelled while an order waits for routing are given back before
/// its reservation is confirmed: confirming first would allocate fewer
/// units than the reservation holds, which inventory refuses (the order
/// went ON_HOLD for review). Here the give-back is held up (inventory down
/// when it was first tried, then delayed) while routing plans the order.
#[tokio::test]
async fn units_cancelled_before_routing_go_back_before_the_confirmation() {
    let Reserved {
        mut suite,
        mut stock_c,
        mut orders,
        mut feed,
        order,
    } = reserved_with_routing_down("late-give-back", 3).await;

    suite.crash(Service::Inventory).await;
    orders
        .cancel_order_lines(authed(T, cancel_first_line(&order.name, "one-less", 1)))
        .await
        .unwrap();
    let mut db = suite.db.connect("orders").await;
    let delay = |when: &'static str| {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE saga_steps SET next_attempt_time = {when} WHERE step = 'release:one-less'"
        )))
    };
    let delayed = delay("now() + interval '1 hour'")
        .execute(&mut db)
        .await
        .unwrap();
    assert_eq!(delayed.rows_affected(), 1, "the give-back is still to do");
    suite.start_again(Service::Inventory).await;
    suite.start_again(Service::Routing).await;

    // The route step waits for the give-back (or, wrongly, holds the order).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let waiting: Option<String> = sqlx::query_scalar(
            "SELECT last_error FROM saga_steps WHERE step = 'route' AND last_error = 'units still to give back'",
        )
        .fetch_optional(&mut db)
        .await
        .unwrap();
        if waiting.is_some() {
            break;
        }
        let now = order_of(&mut orders, &order.name).await;
        assert_ne!(now.state(), OrderState::OnHold, "{:?}", now.holds);
        assert!(std::time::Instant::now() < deadline, "routing never ran");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    delay("now()").execute(&mut db).await.unwrap();
    let routed = until_state(&mut feed, &order.name, OrderState::Routed)
        .await
        .order
        .unwrap();
    assert_eq!(routed.lines[0].quantity_cancelled, 1);
    // Two units allocated, three free again.
    assert_eq!(available(&mut stock_c, "A").await, 3);
}

/// Inventory confirms an order's reservation, but its answer is lost (it
/// crashes after the commit). The route step, retried, gets the same plan
/// back and confirms it again, which inventory answers as the first time:
/// the order is routed. (Asking for a new plan confirmed another decision,
/// which inventory refused as the reservation was confirmed already: the
/// order went on hold.) Meanwhile its lines do not change
/// (`PLACEMENT_IN_DOUBT`): an edit made the next attempt plan afresh, and
/// the order went on hold the same way.
#[tokio::test]
async fn a_confirmation_whose_answer_was_lost_is_confirmed_again() {
    let mut suite = Suite::start().await;
    let mut stock_c = suite.stock(T, &[("A", 5)]).await;
    // The confirmation's commit waits on lock 4242 while the test holds it.
    let mut inv_db = suite.db.connect("inventory").await;
    sqlx::raw_sql(
        "CREATE FUNCTION confirm_waits() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF NEW.state = 'confirmed' THEN PERFORM pg_advisory_xact_lock(4242); END IF;
           RETURN NEW;
         END $$;
         CREATE CONSTRAINT TRIGGER confirm_waits AFTER UPDATE ON reservations
           DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION confirm_waits();
         SELECT pg_advisory_lock(4242);",
    )
    .execute(&mut inv_db)
    .await
    .unwrap();
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let mut feed = suite.order_events(T).await;
    let order = create(&mut orders, "lost-answer", &[("A", 2)]).await;

    // The confirmation is committing: inventory crashes before it answers.
    let mut probe = suite.db.connect("inventory").await;
    // This lock, in this test's database: other tests wait on theirs.
    let waiting = "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
        WHERE locktype = 'advisory' AND objid = 4242 AND NOT granted AND a.datname = current_database()";
    wait_for(&mut probe, waiting, 1).await;
    suite.crash(Service::Inventory).await;
    // Until the confirmation is recorded, the order's lines stay as
    // inventory may have confirmed them.
    let edit = edit_first_line(&order.name, "fewer", 1);
    let refused = orders.edit_order_lines(authed(T, edit)).await.unwrap_err();
    assert_in_doubt(&refused);
    sqlx::raw_sql("SELECT pg_advisory_unlock(4242); DROP TRIGGER confirm_waits ON reservations")
        .execute(&mut inv_db)
        .await
        .unwrap();
    let confirmed = "SELECT count(*) FROM reservations WHERE state = 'confirmed'";
    wait_for(&mut probe, confirmed, 1).await;
    suite.start_again(Service::Inventory).await;

    until_routed_with_two(&mut feed, &order.name, &mut stock_c).await;
}

/// Inventory reserves a new order's stock, but recording it fails. Until
/// the reserve step's next attempt records it, the order keeps its lines
/// (`PLACEMENT_IN_DOUBT`). (An edit went through; the next attempt asked
/// for other lines under the same reservation id, inventory refused, and
/// the order went on hold.)
#[tokio::test]
async fn an_order_whose_reservation_may_be_made_keeps_its_lines() {
    let suite = Suite::start().await;
    let mut stock_c = suite.stock(T, &[("A", 5)]).await;
    let mut db = suite.db.connect("orders").await;
    fail_recording(&mut db, "reserved").await;
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let mut feed = suite.order_events(T).await;
    let order = create(&mut orders, "reserve-in-doubt", &[("A", 2)]).await;
    let mut inv_db = suite.db.connect("inventory").await;
    wait_for(&mut inv_db, "SELECT count(*) FROM reservations", 1).await;
    let edit = edit_first_line(&order.name, "more", 3);
    let refused = orders.edit_order_lines(authed(T, edit)).await.unwrap_err();
    assert_in_doubt(&refused);
    record_again(&mut db, "reserved").await;
    until_routed_with_two(&mut feed, &order.name, &mut stock_c).await;
}

/// A step that waits (here for its order's lock, which the test holds)
/// keeps its count of failed attempts, which sets how long it backs off
/// after a failure. (Each wait counted as a failure: after a few, the next
/// real failure backed off for most of a minute, and orders stalled that
/// long after a crash.)
#[tokio::test]
async fn a_step_waiting_for_its_order_does_not_count_as_failing() {
    let Reserved { suite, order, .. } = reserved_with_routing_down("waits", 1).await;
    let mut db = suite.db.connect("orders").await;
    // The route step failed at least once (routing is down).
    let failed = "SELECT count(*) FROM saga_steps WHERE step = 'route' AND attempts >= 1";
    wait_for(&mut db, failed, 1).await;
    let mut holder = suite.db.connect("orders").await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "BEGIN; SELECT 1 FROM orders WHERE order_id = '{}' FOR UPDATE",
        order.order_id
    )))
    .execute(&mut holder)
    .await
    .unwrap();
    let step =
        "SELECT attempts, next_attempt_time::text, last_error FROM saga_steps WHERE step = 'route'";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut seen: Vec<(i32, String)> = Vec::new();
    while seen.len() < 4 {
        let (attempts, at, why): (i32, String, String) =
            sqlx::query_as(step).fetch_one(&mut db).await.unwrap();
        if why == "order busy" && seen.last().is_none_or(|(_, last)| *last != at) {
            seen.push((attempts, at));
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never waited: {seen:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let attempts: Vec<i32> = seen.iter().map(|(a, _)| *a).collect();
    assert!(attempts.windows(2).all(|w| w[0] == w[1]), "{attempts:?}");
}

/// Makes orders fail to record that an order reached `state` (that
/// commit fails) until [`record_again`].
pub(crate) async fn fail_recording(db: &mut sqlx::PgConnection, state: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {state}_fails ()"
    )))
    .execute(&mut *db)
    .await
    .unwrap();
    let when = format!("NEW.to_state = '{state}' AND to_regclass('{state}_fails') IS NOT NULL");
    let name = format!("{state}_fails");
    trigger(db, &name, "INSERT ON order_history", &when, FAIL).await;
}

pub(crate) async fn record_again(db: &mut sqlx::PgConnection, state: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TABLE {state}_fails")))
        .execute(db)
        .await
        .unwrap();
}

/// Asserts that `refused` is a refusal to change lines while the
/// order's placement is in doubt.
pub(crate) fn assert_in_doubt(refused: &tonic::Status) {
    assert_eq!(
        (refused.code(), oms_runtime::status::reason(refused)),
        (tonic::Code::FailedPrecondition, "PLACEMENT_IN_DOUBT".into()),
        "{refused:?}"
    );
}

/// Waits until `order` (2 A of 5) is routed as placed: no hold, its 2
/// units allocated, 3 left available. Returns it.
async fn until_routed_with_two(
    feed: &mut tonic::Streaming<ord::WatchOrderEventsResponse>,
    order: &str,
    stock_c: &mut InventoryServiceClient<Channel>,
) -> ord::Order {
    let routed = until_state(feed, order, OrderState::Routed)
        .await
        .order
        .unwrap();
    assert!(routed.holds.is_empty(), "{:?}", routed.holds);
    assert_eq!(routed.lines[0].quantity, 2);
    assert_eq!(available(stock_c, "A").await, 3);
    routed
}

/// Polls `sql` (a count) on `db` until it gives `want`; fails after 60 s.
pub(crate) async fn wait_for(db: &mut sqlx::PgConnection, sql: &'static str, want: i64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let n: i64 = sqlx::query_scalar(sql).fetch_one(&mut *db).await.unwrap();
        if n == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{sql}: {n}, not {want}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// An edit of `order` (2 A of 5) to 3 A whose commit fails after inventory
/// extended the reservation: its unit stays held (for now). Returns it.
async fn failed_edit(
    suite: &Suite,
    orders: &mut OrderServiceClient<Channel>,
    stock_c: &mut InventoryServiceClient<Channel>,
    order: &str,
) -> ord::EditOrderLinesRequest {
    let mut db = suite.db.connect("orders").await;
    let on = "INSERT ON order_history";
    trigger(&mut db, "edit_fails", on, "NEW.request_id = 'grow-1'", FAIL).await;
    let grow = edit_first_line(order, "grow-1", 3);
    let failed = orders
        .edit_order_lines(authed(T, grow.clone()))
        .await
        .unwrap_err();
    assert_eq!(failed.code(), tonic::Code::Internal, "{failed:?}");
    assert_eq!(available(stock_c, "A").await, 2, "the extension held");
    sqlx::raw_sql("DROP TRIGGER edit_fails ON order_history")
        .execute(&mut db)
        .await
        .unwrap();
    grow
}

/// An edit that added units to a reserved order fails after inventory
/// extended the reservation (its commit fails). Routing, meanwhile, takes
/// those units back first (the undo step, due in a minute, is run at
/// once) and then confirms what the order holds: the order is routed
/// with its recorded quantity. (Confirming first allocated fewer units
/// than the reservation held, which inventory refused: the order went on
/// hold.)
#[tokio::test]
async fn units_of_an_edit_that_failed_go_back_before_the_confirmation() {
    let Reserved {
        mut suite,
        mut stock_c,
        mut orders,
        mut feed,
        order,
    } = reserved_with_routing_down("grown", 2).await;

    let grow = failed_edit(&suite, &mut orders, &mut stock_c, &order.name).await;

    suite.start_again(Service::Routing).await;
    until_routed_with_two(&mut feed, &order.name, &mut stock_c).await;
    // The edit, sent again, is refused (its request now differs from the
    // extension inventory undid: the order is routed) and changes nothing.
    let again = orders.edit_order_lines(authed(T, grow)).await.unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition, "{again:?}");
    assert_eq!(available(&mut stock_c, "A").await, 3);
}

/// An edit that added units to a routed order (at its node) fails after
/// inventory extended the reservation. When the order is then released,
/// the step that gives those units back is made due at once rather than a
/// minute after the edit: nothing else holds the order (an order
/// delivered within that minute kept the units allocated until then).
#[tokio::test]
async fn units_of_an_edit_that_failed_go_back_once_the_order_moves_on() {
    let mut suite = Suite::start().await;
    suite.crash(Service::Fulfillment).await;
    let mut stock_c = suite.stock(T, &[("A", 5)]).await;
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let mut feed = suite.order_events(T).await;
    let order = create(&mut orders, "grown-routed", &[("A", 2)]).await;
    until_state(&mut feed, &order.name, OrderState::Routed).await;

    failed_edit(&suite, &mut orders, &mut stock_c, &order.name).await;
    let mut db = suite.db.connect("orders").await;

    suite.start_again(Service::Fulfillment).await;
    until_state(&mut feed, &order.name, OrderState::Released).await;
    let later: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM saga_steps
         WHERE starts_with(step, 'undo-extend:') AND next_attempt_time > now() + interval '10 seconds'
           AND next_attempt_time <> 'infinity' -- run already (kept, retired)",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(later, 0, "the undo is due once the order was released");
    wait_for(
        &mut db,
        "SELECT count(*) FROM saga_steps WHERE starts_with(step, 'undo-extend:') AND next_attempt_time <> 'infinity'",
        0,
    )
    .await;
    assert_eq!(available(&mut stock_c, "A").await, 3);
}

/// A saga step that fails every time (here a database error while saving
/// its order) is retried on its own: the other orders' steps go on. (It
/// rolled back the whole batch of steps and, due first again, held up
/// every other order for good.)
#[tokio::test]
async fn a_step_that_keeps_failing_holds_up_no_other_order() {
    let suite = Suite::start().await;
    let _stock_c = suite.stock(T, &[("A", 5), ("POISON", 5)]).await;
    let mut db = suite.db.connect("orders").await;
    let poisoned = "position('POISON'::bytea in NEW.doc) > 0";
    trigger(&mut db, "poisoned", "UPDATE ON orders", poisoned, FAIL).await;
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let mut feed = suite.order_events(T).await;
    let stuck = create(&mut orders, "stuck", &[("POISON", 1)]).await;
    let fine = create(&mut orders, "fine", &[("A", 1)]).await;
    until_state(&mut feed, &fine.name, OrderState::Routed).await;
    let (attempts, error): (i32, String) = sqlx::query_as(
        "SELECT attempts, last_error FROM saga_steps WHERE order_id = $1::text::uuid AND step = 'reserve'",
    )
    .bind(&stuck.order_id)
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert!(attempts >= 1, "{attempts}");
    assert!(error.contains("injected"), "{error}");
    assert_eq!(
        order_of(&mut orders, &stuck.name).await.state(),
        OrderState::Created
    );
}

/// Routing planned a reserved order but its confirmation failed (a
/// database error in inventory); the order is then edited. The route
/// step's next attempt plans afresh for the edited order: the same plan
/// request with other lines was refused by routing, and the order went on
/// hold.
#[tokio::test]
async fn an_order_edited_after_its_plan_is_planned_again() {
    let Reserved {
        mut suite,
        mut stock_c,
        mut orders,
        mut feed,
        order,
    } = reserved_with_routing_down("edited-after-plan", 3).await;
    let mut inv_db = suite.db.connect("inventory").await;
    // Until table confirm_fails is dropped.
    sqlx::raw_sql("CREATE TABLE confirm_fails ()")
        .execute(&mut inv_db)
        .await
        .unwrap();
    let when = "NEW.state = 'confirmed' AND to_regclass('confirm_fails') IS NOT NULL";
    trigger(
        &mut inv_db,
        "confirm_fails",
        "UPDATE ON reservations",
        when,
        FAIL,
    )
    .await;
    suite.start_again(Service::Routing).await;
    let mut routing_db = suite.db.connect("routing").await;
    let planned = "SELECT count(*) FROM idempotency WHERE method = 'PlanOrder'";
    wait_for(&mut routing_db, planned, 1).await;

    let edit = edit_first_line(&order.name, "two-only", 2);
    orders.edit_order_lines(authed(T, edit)).await.unwrap();
    sqlx::raw_sql("DROP TABLE confirm_fails")
        .execute(&mut inv_db)
        .await
        .unwrap();
    let routed = until_routed_with_two(&mut feed, &order.name, &mut stock_c).await;
    // The first plan went back: only the one the order ships by counts
    // against the node's capacity (the first stayed counted).
    let counted = until_counted_plans(&suite, &order.name, 1).await;
    assert_eq!(counted, vec![routed.routing_decision]);
}

/// Orders stopped after routing planned an order and inventory confirmed
/// it (its record failed), and the order was then cancelled: the plan it
/// never recorded no longer counts against the node's capacity (it
/// counted for good: the cancel gave back only a recorded plan).
#[tokio::test]
async fn a_plan_the_order_never_recorded_goes_back_when_it_is_cancelled() {
    let Reserved {
        mut suite,
        mut orders,
        mut feed,
        order,
        ..
    } = reserved_with_routing_down("cancel-unrecorded-plan", 2).await;
    let mut db = suite.db.connect("orders").await;
    fail_recording(&mut db, "routed").await;
    suite.start_again(Service::Routing).await;
    let mut inv_db = suite.db.connect("inventory").await;
    let confirmed = "SELECT count(*) FROM reservations WHERE state = 'confirmed'";
    wait_for(&mut inv_db, confirmed, 1).await;
    assert_eq!(until_counted_plans(&suite, &order.name, 1).await.len(), 1);

    let cancel = ord::CancelOrderRequest {
        request_id: "cancel-it".into(),
        name: order.name.clone(),
        reason: "changed my mind".into(),
    };
    orders.cancel_order(authed(T, cancel)).await.unwrap();
    until_state(&mut feed, &order.name, OrderState::Cancelled).await;
    until_counted_plans(&suite, &order.name, 0).await;
    record_again(&mut db, "routed").await;
}

/// Waits until routing counts `want` plans of `order` against node
/// capacity (decisions not released); returns their names. Fails after
/// 60 s.
pub(crate) async fn until_counted_plans(suite: &Suite, order: &str, want: usize) -> Vec<String> {
    use oms_proto::routing::{ListDecisionsRequest, routing_service_client::RoutingServiceClient};
    let mut routing = RoutingServiceClient::new(suite.channel(Service::Routing));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let list = ListDecisionsRequest {
            page_size: 500,
            order: order.to_owned(),
            ..Default::default()
        };
        let decisions = routing
            .list_decisions(authed(T, list))
            .await
            .unwrap()
            .into_inner()
            .decisions;
        let counted: Vec<String> = decisions
            .into_iter()
            .filter(|d| d.release_time.is_none())
            .map(|d| d.name)
            .collect();
        if counted.len() == want {
            return counted;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{order}: {counted:?} counted, not {want}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Keeps `channels/web` to the pool of `nodes`.
pub(crate) async fn web_pool(
    stock: &mut InventoryServiceClient<Channel>,
    request_id: &str,
    nodes: &[&str],
) {
    let rule = inv::SetChannelRuleRequest {
        request_id: request_id.into(),
        rule: Some(inv::ChannelRule {
            channel: "channels/web".into(),
            node_ids: nodes.iter().map(|n| n.to_string()).collect(),
            buffer: None,
        }),
        remove: false,
    };
    stock.set_channel_rule(authed(T, rule)).await.unwrap();
}

/// A `channels/web` order of `units` of A, once ROUTED.
async fn routed_web_order(
    orders: &mut OrderServiceClient<Channel>,
    feed: &mut tonic::Streaming<ord::WatchOrderEventsResponse>,
    request_id: &str,
    units: i64,
) -> ord::Order {
    let mut web = order(&[("A", units)]);
    web.channel = "channels/web".into();
    let request = ord::CreateOrderRequest {
        request_id: request_id.into(),
        order: Some(web),
    };
    let created = orders
        .create_order(authed(T, request))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    until_state(feed, &created.name, OrderState::Routed)
        .await
        .order
        .unwrap()
}

/// An order of a channel whose rule keeps it to a pool of nodes is placed
/// at the pool's nodes, even where a node outside it ranks first, and its
/// decision says why that node was passed over.
#[tokio::test]
async fn an_order_of_a_channel_with_a_pool_ships_from_the_pool() {
    let suite = Suite::start().await;
    let mut stock = suite.stock(T, &[("A", 5)]).await;
    // DC2 ranks below DC1 (lower priority), but only DC2 is the web's.
    crate::shipping::warehouse_with(&mut stock, "DC2", -5, &[("A", 5)]).await;
    web_pool(&mut stock, "web-pool", &["DC2"]).await;
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let mut feed = suite.order_events(T).await;
    let routed = routed_web_order(&mut orders, &mut feed, "web-order", 2).await;
    assert_eq!(routed.lines[0].sourcing[0].node_id, "DC2");
    let decision = suite.decision(T, &routed.routing_decision).await;
    let dc1 = decision
        .explanation
        .unwrap()
        .candidates
        .into_iter()
        .find(|c| c.node_id == "DC1")
        .unwrap();
    assert_eq!(
        dc1.rejection_reason,
        "not in the pool of nodes of the order's channel"
    );

    // The pool moves to DC1. Routing may still plan by the pool it read a
    // moment ago; inventory then refuses DC2 and the order is planned
    // again, not held for review: it ships from DC1.
    web_pool(&mut stock, "web-pool-moved", &["DC1"]).await;
    let routed = routed_web_order(&mut orders, &mut feed, "web-order-2", 1).await;
    assert_eq!(routed.lines[0].sourcing[0].node_id, "DC1");
}

/// A reroute plans inside the channel's pool as it stands when the work
/// comes back, not as it stood when the order was placed: routing may
/// still plan by the pool it read a moment ago, inventory then refuses the
/// node the pool left, and the reroute plans again instead of holding the
/// order.
#[tokio::test]
async fn a_reroute_after_the_pool_changed_ships_from_the_new_pool() {
    let suite = Suite::start().await;
    let mut stock = suite.stock(T, &[("A", 5)]).await;
    // DC1 ranks first, then DC2, then DC3.
    crate::shipping::warehouse_with(&mut stock, "DC2", -5, &[("A", 5)]).await;
    crate::shipping::warehouse_with(&mut stock, "DC3", -10, &[("A", 5)]).await;
    web_pool(&mut stock, "web-pool", &["DC1", "DC2"]).await;
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let mut feed = suite.order_events(T).await;
    let routed = routed_web_order(&mut orders, &mut feed, "web-reroute", 2).await;
    assert_eq!(routed.lines[0].sourcing[0].node_id, "DC1");

    // The pool trades DC2 for DC3 before DC1 (whose WMS connects only now)
    // rejects the work.
    web_pool(&mut stock, "web-pool-moved", &["DC1", "DC3"]).await;
    let _wms: Vec<_> = [("DC1", 1.0), ("DC2", 0.0), ("DC3", 0.0)]
        .into_iter()
        .map(|(node, reject)| crate::shipping::warehouse(&suite, node, reject))
        .collect();
    let delivered = until_state(&mut feed, &routed.name, OrderState::Delivered)
        .await
        .order
        .unwrap();
    let sourcing: Vec<(&str, i64)> = delivered.lines[0]
        .sourcing
        .iter()
        .map(|s| (s.node_id.as_str(), s.quantity))
        .collect();
    assert_eq!(sourcing, [("DC3", 2)]);
}

/// Waits until `rows` counts one row, then brings its time forward by
/// `forward` (a test's stand-in for days passing).
async fn bring_forward(db: &mut sqlx::PgConnection, rows: &'static str, forward: &'static str) {
    wait_for(db, rows, 1).await;
    sqlx::query(forward).execute(db).await.unwrap();
}

/// A suite with an order created on a payment hold, reserved while the
/// payment comes, whose reservation then expired (its time brought
/// forward in inventory's record).
struct ExpiredUnpaid {
    suite: Suite,
    stock_c: InventoryServiceClient<Channel>,
    orders: OrderServiceClient<Channel>,
    /// The tenant's order feed, from before the order.
    feed: tonic::Streaming<ord::WatchOrderEventsResponse>,
    created: ord::Order,
    /// The name of the order's first reservation (the expired one).
    first: String,
}

async fn unpaid_order_whose_reservation_expired() -> ExpiredUnpaid {
    let suite = Suite::start().await;
    let mut stock_c = suite.stock(T, &[("A", 5)]).await;
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let feed = suite.order_events(T).await;
    let mut unpaid = order(&[("A", 2)]);
    unpaid.holds = vec![ord::Hold {
        r#type: ord::HoldType::Payment as i32,
        reason: "awaiting payment".into(),
        ..Default::default()
    }];
    let req = ord::CreateOrderRequest {
        request_id: "unpaid".into(),
        order: Some(unpaid),
    };
    let created = orders.create_order(authed(T, req)).await.unwrap();
    let created = created.into_inner().order.unwrap();
    let first = format!("reservations/order-{}", created.order_id);
    assert_eq!(created.reservation, first);
    // Reserved while the payment comes; then its time passes.
    let mut db = suite.db.connect("inventory").await;
    bring_forward(
        &mut db,
        "SELECT count(*) FROM reservations WHERE state = 'active'",
        "UPDATE reservations SET expire_time = now() - interval '1 minute'",
    )
    .await;
    let expired = "SELECT count(*) FROM reservations WHERE state = 'expired'";
    wait_for(&mut db, expired, 1).await;
    assert_eq!(available(&mut stock_c, "A").await, 5, "its units went back");
    ExpiredUnpaid {
        suite,
        stock_c,
        orders,
        feed,
        created,
        first,
    }
}

/// Releases the payment hold of `order`.
async fn paid(orders: &mut OrderServiceClient<Channel>, order: &str) {
    let paid = ord::ReleaseHoldRequest {
        request_id: "paid".into(),
        name: order.into(),
        r#type: ord::HoldType::Payment as i32,
        reason: "paid".into(),
    };
    orders.release_hold(authed(T, paid)).await.unwrap();
}

/// An order whose reservation expired before it was confirmed (held 7
/// days unconfirmed; here its time is brought forward in inventory's
/// record, and the order learns of it when its payment hold goes) is
/// placed again under a new reservation, and routed, with the lines
/// edited meanwhile. Before 2026-12-04 it went on hold for review ("is
/// expired"), and every release of that hold met the same refusal; the
/// edit was refused.
#[tokio::test]
async fn an_order_whose_reservation_expired_is_reserved_again() {
    let ExpiredUnpaid {
        suite: _suite,
        mut stock_c,
        mut orders,
        mut feed,
        created,
        first,
    } = unpaid_order_whose_reservation_expired().await;
    // One unit more meanwhile: recorded with nothing to extend (before, it
    // was refused RESERVATION_EXPIRED), and reserved with the rest below.
    let more = edit_first_line(&created.name, "one-more", 3);
    orders.edit_order_lines(authed(T, more)).await.unwrap();
    paid(&mut orders, &created.name).await;
    // Routed, or (before) held for review: whichever comes first.
    let placed = loop {
        let ev = next_order_event(&mut feed).await;
        let o = ev.order.unwrap_or_default();
        let manual = ord::HoldType::Manual as i32;
        if o.name == created.name
            && (o.state == OrderState::Routed as i32 || o.holds.iter().any(|h| h.r#type == manual))
        {
            break o;
        }
    };
    assert_eq!(
        placed.state,
        OrderState::Routed as i32,
        "{:?}",
        placed.holds
    );
    assert_eq!(placed.reservation, format!("{first}-2"));
    let held = |name: &str| inv::GetReservationRequest { name: name.into() };
    let again = stock_c
        .get_reservation(authed(T, held(&placed.reservation)))
        .await;
    let again = again.unwrap().into_inner().reservation.unwrap();
    assert_eq!(again.state, inv::ReservationState::Confirmed as i32);
    assert_eq!(available(&mut stock_c, "A").await, 2, "the 3 units edited");
    let history = crate::shipping::history_of(&mut orders, &created.name).await;
    let why = format!("{first} expired unconfirmed: reserving again as {first}-2");
    let said = history.iter().any(|e| e.reason == why);
    assert!(said, "{history:?}");
}

/// An order on hold whose reservation expires says so then, not when its
/// hold goes (before 2026-12-04 its history was silent until then): the
/// units went back, and it reserves again under the next name once paid.
#[tokio::test]
async fn a_held_order_says_when_its_reservation_expired() {
    let ExpiredUnpaid {
        suite,
        mut stock_c,
        mut orders,
        mut feed,
        created,
        first,
    } = unpaid_order_whose_reservation_expired().await;
    // The watch waits for the reservation's end, 7 days on: brought
    // forward as the reservation's was.
    let mut db = suite.db.connect("orders").await;
    bring_forward(
        &mut db,
        "SELECT count(*) FROM saga_steps WHERE step = 'held-expiry'",
        "UPDATE saga_steps SET next_attempt_time = now() WHERE step = 'held-expiry'",
    )
    .await;
    let told = loop {
        let ev = next_order_event(&mut feed).await;
        if let Some(ord::order_event::Kind::Updated(u)) = &ev.kind
            && u.paths == ["reservation"]
        {
            break ev.order.unwrap_or_default();
        }
    };
    assert_eq!(told.state, OrderState::OnHold as i32);
    assert_eq!(told.reservation, format!("{first}-2"));
    let history = crate::shipping::history_of(&mut orders, &created.name).await;
    let why = format!(
        "{first} expired unconfirmed while the order was on hold: its units went back to \
         stock; it reserves again as {first}-2 once its holds go"
    );
    assert!(history.iter().any(|e| e.reason == why), "{history:?}");
    paid(&mut orders, &created.name).await;
    until_state(&mut feed, &created.name, OrderState::Routed).await;
    let held = inv::GetReservationRequest {
        name: told.reservation.clone(),
    };
    let again = stock_c.get_reservation(authed(T, held)).await.unwrap();
    let again = again.into_inner().reservation.unwrap();
    assert_eq!(again.state, inv::ReservationState::Confirmed as i32);
    assert_eq!(available(&mut stock_c, "A").await, 3);
}
