//! The whole journey with the reference WMS simulator on the adapter
//! stream: an order is reserved, routed, released, shipped and delivered,
//! and the stock it shipped leaves inventory.
use crate::placement::{
    FAIL, available, create, fail_recording, order_of, record_again, until_counted_plans,
    until_released, until_state, wait_for,
};
use oms_e2e::{Inventory, Suite, phones_at_dc1, rid};
use oms_kernel::Tenant;
use oms_proto::fulfillment::{
    FulfillmentOrder, FulfillmentState, ListFulfillmentOrdersRequest,
    WatchFulfillmentEventsRequest, fulfillment_service_client::FulfillmentServiceClient,
};
use oms_proto::inventory::{self as inv, inventory_service_client::InventoryServiceClient};
use oms_proto::orders::{self as ord, OrderState, order_service_client::OrderServiceClient};
use oms_runtime::{Config, Service, auth::TokenIssuer};
use oms_testkit::adapter::{Adapter, shipped_line};
use oms_testkit::{authed, trigger};
use oms_wms_sim::Sim;
use prost::Message as _;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

const T: &str = "acme";

/// A simulated WMS serving `node`, rejecting `reject_rate` of its work;
/// it stops when the guard is dropped.
pub(crate) fn warehouse(
    suite: &Suite,
    node: &str,
    reject_rate: f64,
) -> tokio_util::sync::DropGuard {
    warehouse_pacing(suite, node, reject_rate, Duration::from_millis(5))
}

/// [`warehouse`] taking `step` for each stage of its work.
fn warehouse_pacing(
    suite: &Suite,
    node: &str,
    reject_rate: f64,
    step: Duration,
) -> tokio_util::sync::DropGuard {
    simulated_wms(suite, node, (reject_rate, 0.0), step)
}

/// A simulated WMS serving `node`, rejecting and short-picking the given
/// shares of its work, taking `step` for each stage of it.
pub(crate) fn simulated_wms(
    suite: &Suite,
    node: &str,
    rates: (f64, f64),
    step: Duration,
) -> tokio_util::sync::DropGuard {
    simulated_wms_of(suite, T, node, rates, step)
}

/// [`simulated_wms`] of `tenant`.
fn simulated_wms_of(
    suite: &Suite,
    tenant: &str,
    node: &str,
    (reject_rate, short_pick_rate): (f64, f64),
    step: Duration,
) -> tokio_util::sync::DropGuard {
    let cfg = Config::from_lookup(Service::Fulfillment, |_| None).unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(
        Sim {
            url: suite.services[&Service::Fulfillment].url(),
            tenant: Tenant::parse(tenant).unwrap(),
            issuer: TokenIssuer::new(&cfg.auth),
            adapter_id: format!("wms-{node}"),
            nodes: vec![node.into()],
            step,
            reject_rate,
            short_pick_rate,
            seed: 1,
            inventory_url: Some(suite.services[&Service::Inventory].url()),
            // Over TLS, the adapter shows fulfillment's certificate: one of
            // the CA's, which is all the services ask of a caller.
            tls: suite.services[&Service::Fulfillment].tls.clone(),
        }
        .run(stop.clone()),
    );
    stop.drop_guard()
}

/// On hand of `sku` per node.
async fn on_hand(c: &mut InventoryServiceClient<Channel>, sku: &str) -> Vec<(String, i64)> {
    let mut v: Vec<(String, i64)> = c
        .get_availability(authed(
            T,
            inv::GetAvailabilityRequest {
                skus: vec![sku.into()],
                scope: inv::AvailabilityScope::Node as i32,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .availabilities
        .into_iter()
        .map(|a| (a.node_id, a.on_hand))
        .collect();
    v.sort();
    v
}

/// The fulfillment orders of `order`.
pub(crate) async fn work_of(suite: &Suite, order: &str) -> Vec<FulfillmentOrder> {
    let mut work = FulfillmentServiceClient::new(suite.channel(Service::Fulfillment));
    let list = ListFulfillmentOrdersRequest {
        order: order.into(),
        ..Default::default()
    };
    work.list_fulfillment_orders(authed(T, list))
        .await
        .unwrap()
        .into_inner()
        .fulfillment_orders
}

/// (node, state) of each fulfillment order of `order`, sorted.
async fn work_states(suite: &Suite, order: &str) -> Vec<(String, FulfillmentState)> {
    let mut states: Vec<(String, FulfillmentState)> = work_of(suite, order)
        .await
        .iter()
        .map(|f| (f.node_id.clone(), f.state()))
        .collect();
    states.sort();
    states
}

/// The stock levels (lots) of `sku`.
async fn levels_of(stock: &mut InventoryServiceClient<Channel>, sku: &str) -> Vec<inv::StockLevel> {
    let list = inv::ListStockLevelsRequest {
        skus: vec![sku.into()],
        ..Default::default()
    };
    stock
        .list_stock_levels(authed(T, list))
        .await
        .unwrap()
        .into_inner()
        .levels
}

/// The changes of an order's history, oldest first.
pub(crate) async fn history_of(
    orders: &mut OrderServiceClient<Channel>,
    name: &str,
) -> Vec<ord::OrderChange> {
    let list = ord::ListOrderHistoryRequest {
        name: name.into(),
        ..Default::default()
    };
    orders
        .list_order_history(authed(T, list))
        .await
        .unwrap()
        .into_inner()
        .changes
}

/// Asserts that a change in the order's history has a reason starting with `prefix`.
async fn assert_history(orders: &mut OrderServiceClient<Channel>, name: &str, prefix: &str) {
    let changes = history_of(orders, name).await;
    assert!(
        changes.iter().any(|c| c.reason.starts_with(prefix)),
        "{changes:?}"
    );
}

/// Adds a shipping warehouse `node` of `priority` holding `items`.
pub(crate) async fn warehouse_with(
    stock: &mut InventoryServiceClient<Channel>,
    node: &str,
    priority: i32,
    items: &[(&str, i64)],
) {
    stock
        .create_node(authed(
            T,
            inv::CreateNodeRequest {
                request_id: format!("node-{node}"),
                node: Some(inv::Node {
                    node_id: node.into(),
                    kind: oms_proto::common::NodeKind::Warehouse as i32,
                    enabled: true,
                    priority,
                    capabilities: Some(inv::NodeCapabilities {
                        ship: true,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            },
        ))
        .await
        .unwrap();
    for (sku, q) in items {
        stock
            .record_movement(authed(
                T,
                inv::RecordMovementRequest {
                    request_id: format!("receipt-{node}-{sku}"),
                    movement: Some(inv::StockMovement {
                        kind: inv::MovementKind::Receipt as i32,
                        node_id: node.into(),
                        sku: sku.to_string(),
                        quantity: *q,
                        ..Default::default()
                    }),
                },
            ))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_rejection_at_one_node_reroutes_to_another_that_ships() {
    let suite = Suite::start().await;
    let mut stock = suite.stock(T, &[("A", 5)]).await;
    // DC2 also holds A but ranks below DC1 (lower priority).
    warehouse_with(&mut stock, "DC2", -5, &[("A", 5)]).await;
    // DC1 rejects everything; DC2 ships.
    let _dc1 = warehouse(&suite, "DC1", 1.0);
    let _dc2 = warehouse(&suite, "DC2", 0.0);
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let mut feed = suite.order_events(T).await;
    let order = create(&mut orders, "reroute-1", &[("A", 2)]).await;
    let routed = until_state(&mut feed, &order.name, OrderState::Routed)
        .await
        .order
        .unwrap();
    assert_eq!(routed.lines[0].sourcing[0].node_id, "DC1");
    let delivered = until_state(&mut feed, &order.name, OrderState::Delivered)
        .await
        .order
        .unwrap();
    let sourcing: Vec<(String, i64)> = delivered.lines[0]
        .sourcing
        .iter()
        .map(|s| (s.node_id.clone(), s.quantity))
        .collect();
    assert_eq!(sourcing, [("DC2".to_string(), 2)]);
    assert_eq!(delivered.lines[0].quantity_shipped, 2);
    // DC1 shipped nothing; DC2 shipped the two units.
    assert_eq!(
        on_hand(&mut stock, "A").await,
        [("DC1".to_string(), 5), ("DC2".to_string(), 3)]
    );
    assert_eq!(available(&mut stock, "A").await, 8);
    assert_eq!(
        work_states(&suite, &order.name).await,
        [
            ("DC1".to_string(), FulfillmentState::Rejected),
            ("DC2".to_string(), FulfillmentState::Delivered)
        ]
    );
    assert_history(&mut orders, &order.name, "rerouted from DC1").await;
    // Listed by the node it ships from, no longer by the one that rejected it.
    for (node, expected) in [("DC2", vec![order.name.clone()]), ("DC1", vec![])] {
        let listed = orders
            .list_orders(authed(
                T,
                ord::ListOrdersRequest {
                    node_id: node.into(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        let names: Vec<String> = listed.orders.into_iter().map(|o| o.name).collect();
        assert_eq!(names, expected, "orders listed by node {node}");
    }
}

#[tokio::test]
async fn work_rejected_twice_ships_from_a_third_node_and_no_stock_stays_held() {
    let suite = Suite::start().await;
    let mut stock = suite.stock(T, &[("A", 5)]).await;
    warehouse_with(&mut stock, "DC2", -5, &[("A", 5)]).await;
    warehouse_with(&mut stock, "DC3", -10, &[("A", 5)]).await;
    // DC1 and DC2 reject everything; DC3 ships.
    let _dc1 = warehouse(&suite, "DC1", 1.0);
    let _dc2 = warehouse(&suite, "DC2", 1.0);
    let _dc3 = warehouse(&suite, "DC3", 0.0);
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let mut feed = suite.order_events(T).await;
    let order = create(&mut orders, "reroute-2", &[("A", 2)]).await;
    let delivered = until_state(&mut feed, &order.name, OrderState::Delivered)
        .await
        .order
        .unwrap();
    assert_eq!(delivered.lines[0].sourcing[0].node_id, "DC3");
    assert_history(&mut orders, &order.name, "rerouted from DC2").await;
    // DC2 held the rerouted units in the reroute's own reservation: they
    // went back from there, so only DC3's shipment is gone.
    assert_eq!(
        on_hand(&mut stock, "A").await,
        [
            ("DC1".to_string(), 5),
            ("DC2".to_string(), 5),
            ("DC3".to_string(), 3)
        ]
    );
    assert_eq!(available(&mut stock, "A").await, 13);
}

#[tokio::test]
async fn an_order_cancelled_after_release_is_given_up_by_its_node_and_its_stock_returns() {
    let suite = Suite::start().await;
    let mut stock = suite.stock(T, &[("A", 5)]).await;
    // DC1 takes a minute per stage: the work is still there to give up.
    let _dc1 = warehouse_pacing(&suite, "DC1", 0.0, Duration::from_secs(60));
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let mut feed = suite.order_events(T).await;
    let order = create(&mut orders, "cancel-late-1", &[("A", 2)]).await;
    until_state(&mut feed, &order.name, OrderState::Released).await;
    assert_eq!(available(&mut stock, "A").await, 3);
    let cancel = ord::CancelOrderRequest {
        request_id: "cancel-late".into(),
        name: order.name.clone(),
        reason: "customer changed their mind".into(),
    };
    let asked = orders
        .cancel_order(authed(T, cancel.clone()))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    // The node has the work: the order waits for its answer.
    assert_eq!(asked.state, OrderState::Released as i32);
    assert!(asked.cancel_requested);
    let replay = orders
        .cancel_order(authed(T, cancel))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(replay, asked);
    let cancelled = until_state(&mut feed, &order.name, OrderState::Cancelled)
        .await
        .order
        .unwrap();
    assert_eq!(cancelled.lines[0].quantity_cancelled, 2);
    assert!(cancelled.lines[0].sourcing.is_empty());
    assert_history(&mut orders, &order.name, "cancel requested after release").await;
    // The node gave the work up: nothing left on-hand, the allocation is back.
    assert_eq!(
        work_states(&suite, &order.name).await,
        [("DC1".to_string(), FulfillmentState::Cancelled)]
    );
    assert_eq!(on_hand(&mut stock, "A").await, [("DC1".to_string(), 5)]);
    // The release is a saga step after the node's answer.
    until_released(&mut stock, "order cancelled").await;
    // Nothing shipped: the plan no longer counts against DC1's capacity.
    until_counted_plans(&suite, &order.name, 0).await;
    assert_eq!(available(&mut stock, "A").await, 5);
    let again = orders
        .cancel_order(authed(
            T,
            ord::CancelOrderRequest {
                request_id: "cancel-late-again".into(),
                name: order.name.clone(),
                reason: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(oms_runtime::status::reason(&again), "ILLEGAL_STATE_CHANGE");
}

#[tokio::test]
async fn a_cancel_the_node_refuses_once_packed_leaves_the_order_shipping() {
    let suite = Suite::start().await;
    let mut stock = suite.stock(T, &[("A", 5)]).await;
    // Two seconds per stage: the cancel below must reach the order between
    // packed and shipped. At 300 ms a loaded CI machine (every e2e test at
    // once on two cores) let the shipment in first, and the cancel met a
    // shipped order.
    let _dc1 = warehouse_pacing(&suite, "DC1", 0.0, Duration::from_secs(2));
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let mut feed = suite.order_events(T).await;
    let mut work = FulfillmentServiceClient::new(suite.channel(Service::Fulfillment));
    let mut work_feed = work
        .watch_fulfillment_events(authed(
            T,
            oms_proto::fulfillment::WatchFulfillmentEventsRequest::default(),
        ))
        .await
        .unwrap()
        .into_inner();
    let order = create(&mut orders, "cancel-packed-1", &[("A", 2)]).await;
    // Packed at DC1: from here the node refuses to cancel (or has shipped).
    loop {
        let ev = work_feed.message().await.unwrap().unwrap();
        if ev
            .fulfillment_order
            .is_some_and(|f| f.order == order.name && f.state() == FulfillmentState::Packed)
        {
            break;
        }
    }
    let asked = orders
        .cancel_order(authed(
            T,
            ord::CancelOrderRequest {
                request_id: "cancel-packed".into(),
                name: order.name.clone(),
                reason: "too late".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert!(asked.cancel_requested);
    let delivered = until_state(&mut feed, &order.name, OrderState::Delivered)
        .await
        .order
        .unwrap();
    assert!(delivered.cancel_requested);
    assert_eq!(
        (
            delivered.lines[0].quantity_cancelled,
            delivered.lines[0].quantity_shipped
        ),
        (0, 2)
    );
    assert_eq!(on_hand(&mut stock, "A").await, [("DC1".to_string(), 3)]);
    assert_eq!(available(&mut stock, "A").await, 3);
}

/// An order split between two nodes is cancelled after one shipped its
/// part: the other gives its work up, and the plan stops counting
/// against that node's capacity, while it still counts at the node that
/// shipped.
#[tokio::test]
async fn a_node_that_gives_its_work_up_at_a_cancel_gets_its_capacity_back() {
    let suite = Suite::start().await;
    let _stock = split_stock(&suite).await;
    // DC1 ships at once; DC2 takes a minute per stage, so its work sits
    // there, accepted, when the order is cancelled.
    let _dc1 = warehouse(&suite, "DC1", 0.0);
    let _dc2 = warehouse_pacing(&suite, "DC2", 0.0, Duration::from_secs(60));
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let mut feed = suite.order_events(T).await;
    let order = create(&mut orders, "split-cancel", &[("A", 1), ("B", 1)]).await;
    until_state(&mut feed, &order.name, OrderState::PartiallyShipped).await;
    let cancel = ord::CancelOrderRequest {
        request_id: "split-cancel-it".into(),
        name: order.name.clone(),
        reason: "the rest is not needed".into(),
    };
    orders.cancel_order(authed(T, cancel)).await.unwrap();
    let delivered = until_state(&mut feed, &order.name, OrderState::Delivered)
        .await
        .order
        .unwrap();
    let b = delivered.lines.iter().find(|l| l.sku == "B").unwrap();
    assert_eq!((b.quantity_cancelled, b.quantity_shipped), (1, 0));
    let plans = until_counted_plans(&suite, &order.name, 1).await;
    assert_eq!(plans, [delivered.routing_decision]);
    let plan = until_released_at(&suite, &plans[0], &["DC2"]).await;
    assert!(plan.release_time.is_none(), "DC1 shipped: it counts there");
}

/// 5 A only at DC1 and 5 B only at DC2, so an order of both is split
/// between them; returns an inventory client.
async fn split_stock(suite: &Suite) -> InventoryServiceClient<Channel> {
    let mut stock = suite.stock(T, &[("A", 5)]).await;
    let b = inv::Item {
        sku: "B".into(),
        ..Default::default()
    };
    oms_e2e::create_item(&mut stock, T, b).await;
    warehouse_with(&mut stock, "DC2", 0, &[("B", 5)]).await;
    stock
}

/// Waits until routing's decision `name` is released at `nodes`; returns
/// it. Fails after 60 s.
async fn until_released_at(
    suite: &Suite,
    name: &str,
    nodes: &[&str],
) -> oms_proto::routing::Decision {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let d = suite.decision(T, name).await;
        if d.released_node_ids == nodes {
            return d;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} released at {:?}, not {nodes:?}",
            d.released_node_ids
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_fulfillment_order_cancelled_at_its_node_ships_from_another() {
    let suite = Suite::start().await;
    let mut stock = suite.stock(T, &[("A", 5)]).await;
    warehouse_with(&mut stock, "DC2", -5, &[("A", 5)]).await;
    // DC1 takes a minute per stage: the work sits there, accepted, when the
    // office cancels it. DC2 ships at once.
    let _dc1 = warehouse_pacing(&suite, "DC1", 0.0, Duration::from_secs(60));
    let _dc2 = warehouse(&suite, "DC2", 0.0);
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let mut feed = suite.order_events(T).await;
    let order = create(&mut orders, "cancel-fo-1", &[("A", 2)]).await;
    until_state(&mut feed, &order.name, OrderState::Released).await;
    let mut work = FulfillmentServiceClient::new(suite.channel(Service::Fulfillment));
    let list = ListFulfillmentOrdersRequest {
        order: order.name.clone(),
        ..Default::default()
    };
    let at_dc1 = work
        .list_fulfillment_orders(authed(T, list))
        .await
        .unwrap()
        .into_inner()
        .fulfillment_orders
        .remove(0);
    assert_eq!(at_dc1.node_id, "DC1");
    work.cancel_fulfillment_order(authed(
        T,
        oms_proto::fulfillment::CancelFulfillmentOrderRequest {
            request_id: "cancel-at-dc1".into(),
            name: at_dc1.name.clone(),
            reason: "DC1 closes for inventory".into(),
        },
    ))
    .await
    .unwrap();
    let delivered = until_state(&mut feed, &order.name, OrderState::Delivered)
        .await
        .order
        .unwrap();
    let sourcing: Vec<(String, i64)> = delivered.lines[0]
        .sourcing
        .iter()
        .map(|s| (s.node_id.clone(), s.quantity))
        .collect();
    assert_eq!(sourcing, [("DC2".to_string(), 2)]);
    assert_eq!(
        work_states(&suite, &order.name).await,
        [
            ("DC1".to_string(), FulfillmentState::Cancelled),
            ("DC2".to_string(), FulfillmentState::Delivered)
        ]
    );
    // DC1's allocation went back; DC2 shipped the two units.
    assert_eq!(
        on_hand(&mut stock, "A").await,
        [("DC1".to_string(), 5), ("DC2".to_string(), 3)]
    );
    assert_eq!(available(&mut stock, "A").await, 8);
    assert_history(&mut orders, &order.name, "rerouted from DC1").await;
}

/// The saga releases an order's work but fails to record the release (its
/// commit fails), and the warehouse ships and delivers the work before
/// the saga's next attempt records it. Orders took those reports while the
/// order was still ROUTED, where they move nothing, and they do not come
/// again: the release, once recorded, follows them (the order was left
/// RELEASED for good).
#[tokio::test]
async fn work_delivered_before_its_release_was_recorded_delivers_the_order() {
    let (suite, order) = released_while_unrecorded(0.0, FulfillmentState::Delivered).await;
    let mut stock = InventoryServiceClient::new(suite.channel(Service::Inventory));
    let left = [("DC1".to_owned(), 2), ("DC2".to_owned(), 5)];
    assert_eq!(on_hand(&mut stock, "A").await, left);
    assert_eq!(work_states(&suite, &order).await.len(), 1);
}

/// As above, but DC1 rejects the work before the release is recorded: the
/// units it gave back are rerouted to DC2 once it is (the reroute step
/// dropped them, the order being ROUTED: they stayed allocated at DC1 and
/// the order never shipped).
#[tokio::test]
async fn work_rejected_before_its_release_was_recorded_ships_elsewhere() {
    let (suite, order) = released_while_unrecorded(1.0, FulfillmentState::Rejected).await;
    assert_eq!(
        work_states(&suite, &order).await,
        [
            ("DC1".to_owned(), FulfillmentState::Rejected),
            ("DC2".to_owned(), FulfillmentState::Delivered)
        ]
    );
}

/// The saga's release reaches fulfillment, but recording it fails. Until
/// its next attempt records it, the order (ROUTED) refuses to change its
/// lines (`PLACEMENT_IN_DOUBT`): the work at the node keeps the lines it was
/// released with, and the next attempt must send the same request. (An
/// edit went through; the next attempt, with other lines, was refused by
/// fulfillment and the order went on hold while its first work shipped.)
#[tokio::test]
async fn an_order_whose_release_may_be_at_the_node_keeps_its_lines() {
    let suite = Suite::start().await;
    let _stock = suite.stock(T, &[("A", 5)]).await;
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let mut feed = suite.order_events(T).await;
    let mut db = suite.db.connect("orders").await;
    fail_recording(&mut db, "released").await;
    let order = create(&mut orders, "in-doubt", &[("A", 2)]).await;
    until_state(&mut feed, &order.name, OrderState::Routed).await;
    until_work(&suite, &order.name).await;
    let grow = crate::placement::edit_first_line(&order.name, "grow", 3);
    let edited = orders.edit_order_lines(authed(T, grow)).await;
    let cancel = crate::placement::cancel_first_line(&order.name, "one-less", 1);
    let cancelled = orders.cancel_order_lines(authed(T, cancel)).await;
    for refused in [edited.unwrap_err(), cancelled.unwrap_err()] {
        crate::placement::assert_in_doubt(&refused);
    }
    record_again(&mut db, "released").await;
    let released = until_state(&mut feed, &order.name, OrderState::Released)
        .await
        .order
        .unwrap();
    assert_eq!(released.lines[0].quantity, 2);
    let work = work_of(&suite, &order.name).await;
    assert_eq!(work.len(), 1);
    assert_eq!(work[0].carrier_service, "", "no service level, none asked");
    let marks: i64 = sqlx::query_scalar("SELECT count(*) FROM saga_steps WHERE step = 'in-doubt'")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(marks, 0, "the mark goes with the recorded release");
}

/// An order is cancelled while its release may be at its node (as above):
/// the cancel is taken as before release, and the work the release left
/// there, once fulfillment reports it, is asked to cancel (it was left to
/// ship against stock given back).
#[tokio::test]
async fn work_of_an_order_cancelled_while_its_release_was_in_doubt_is_cancelled() {
    let suite = Suite::start().await;
    let mut stock = suite.stock(T, &[("A", 5)]).await;
    // Slow enough that the cancel always comes before the work is packed.
    let _dc1 = warehouse_pacing(&suite, "DC1", 0.0, Duration::from_secs(30));
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let mut feed = suite.order_events(T).await;
    fail_recording(&mut suite.db.connect("orders").await, "released").await;
    let order = create(&mut orders, "in-doubt", &[("A", 2)]).await;
    until_state(&mut feed, &order.name, OrderState::Routed).await;
    until_work(&suite, &order.name).await;
    // Orders has heard of the work before the cancel (the other order of
    // the two, the feed after the cancel, asks it to stop as well).
    let mut db = suite.db.connect("orders").await;
    wait_for(&mut db, "SELECT count(*) FROM fulfillments", 1).await;
    cancel_now(&mut orders, &order.name).await;
    until_work_cancelled(&suite, &order.name).await;
    assert_eq!(
        order_of(&mut orders, &order.name).await.state(),
        OrderState::Cancelled
    );
    assert_eq!(on_hand(&mut stock, "A").await, [("DC1".to_string(), 5)]);
    assert_eq!(crate::placement::available(&mut stock, "A").await, 5);
}

/// As above, in the other order: orders hears of the work only after the
/// cancel (its reports wait), so the cancel cannot ask for it; the report,
/// when it comes, does.
#[tokio::test]
async fn work_reported_after_its_order_was_cancelled_in_doubt_is_cancelled() {
    let suite = Suite::start().await;
    let mut stock = suite.stock(T, &[("A", 5)]).await;
    // Slow enough that the cancel always comes before the work is packed.
    let _dc1 = warehouse_pacing(&suite, "DC1", 0.0, Duration::from_secs(30));
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let mut feed = suite.order_events(T).await;
    let mut db = suite.db.connect("orders").await;
    fail_recording(&mut db, "released").await;
    // Orders hears of no work until the reports go through.
    hold_reports(&mut db, "INSERT").await;
    let order = create(&mut orders, "reported-late", &[("A", 2)]).await;
    until_state(&mut feed, &order.name, OrderState::Routed).await;
    until_work(&suite, &order.name).await;
    cancel_now(&mut orders, &order.name).await;
    let_reports_through(&mut db).await;
    until_work_cancelled(&suite, &order.name).await;
    assert_eq!(on_hand(&mut stock, "A").await, [("DC1".to_string(), 5)]);
    assert_eq!(available(&mut stock, "A").await, 5);
}

/// An order is cancelled while its release may be at its node (as above),
/// and the node ships the work before the cancel reaches it: the units
/// left, so stock follows. (The cancel gave them back with the
/// reservation, inventory could not consume them, and they stayed on hand
/// to be sold again.)
#[tokio::test]
async fn work_shipped_after_its_order_was_cancelled_leaves_stock() {
    let suite = Suite::start().await;
    let mut stock = suite.stock(T, &[("A", 5)]).await;
    let _dc1 = warehouse(&suite, "DC1", 0.0);
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let mut feed = suite.order_events(T).await;
    let mut db = suite.db.connect("orders").await;
    fail_recording(&mut db, "released").await;
    // Orders hears of the work once; its later reports wait.
    hold_reports(&mut db, "UPDATE").await;
    let order = create(&mut orders, "shipped-anyway", &[("A", 2)]).await;
    until_state(&mut feed, &order.name, OrderState::Routed).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let states = work_states(&suite, &order.name).await;
        if matches!(
            states.as_slice(),
            [(_, FulfillmentState::Shipped | FulfillmentState::Delivered)]
        ) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never shipped: {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cancel_now(&mut orders, &order.name).await;
    let mut inv_db = suite.db.connect("inventory").await;
    let given_back = "SELECT count(*) FROM reservations WHERE state = 'released'";
    wait_for(&mut inv_db, given_back, 1).await;
    let_reports_through(&mut db).await;
    while on_hand(&mut stock, "A").await != [("DC1".to_string(), 3)] {
        assert!(
            std::time::Instant::now() < deadline,
            "the shipped units stayed on hand"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(available(&mut stock, "A").await, 3);
}

/// Makes orders' `op` ("INSERT", "UPDATE") of what it heard of work fail,
/// so the fulfillment feed's reports wait, until [`let_reports_through`].
async fn hold_reports(db: &mut sqlx::PgConnection, op: &str) {
    sqlx::raw_sql("CREATE TABLE reports_wait ()")
        .execute(&mut *db)
        .await
        .unwrap();
    let when = "to_regclass('reports_wait') IS NOT NULL";
    let on = format!("{op} ON fulfillments");
    trigger(db, "reports_wait", &on, when, FAIL).await;
}

async fn let_reports_through(db: &mut sqlx::PgConnection) {
    sqlx::raw_sql("DROP TABLE reports_wait")
        .execute(db)
        .await
        .unwrap();
}

/// Waits until `order`'s one piece of work, at DC1, is cancelled (60 s at
/// most).
async fn until_work_cancelled(suite: &Suite, order: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while work_states(suite, order).await != [("DC1".to_string(), FulfillmentState::Cancelled)] {
        assert!(
            std::time::Instant::now() < deadline,
            "its work never cancelled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Cancels `order` (request id "cancel").
async fn cancel_now(orders: &mut OrderServiceClient<Channel>, order: &str) {
    let cancel = ord::CancelOrderRequest {
        request_id: "cancel".into(),
        name: order.to_owned(),
        reason: "changed my mind".into(),
    };
    orders.cancel_order(authed(T, cancel)).await.unwrap();
}

/// Waits until fulfillment has work of `order` (60 s at most).
async fn until_work(suite: &Suite, order: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while work_of(suite, order).await.is_empty() {
        assert!(std::time::Instant::now() < deadline, "never released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A suite whose DC1 (5 A) rejects `reject_rate` of its work and DC2 (5 A,
/// ranked below) ships everything, and an order of 2 A whose release is
/// not recorded until orders holds its DC1 work's report in state
/// `reported`; returns the order's name once it is DELIVERED.
async fn released_while_unrecorded(
    reject_rate: f64,
    reported: FulfillmentState,
) -> (Suite, String) {
    let suite = Suite::start().await;
    let mut stock = suite.stock(T, &[("A", 5)]).await;
    warehouse_with(&mut stock, "DC2", -5, &[("A", 5)]).await;
    let dc2 = warehouse(&suite, "DC2", 0.0);
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let mut feed = suite.order_events(T).await;
    // A first order, shipped by DC1, makes orders follow the tenant's
    // fulfillment feed; then DC1's WMS rejects `reject_rate` of its work.
    let first_dc1 = warehouse(&suite, "DC1", 0.0);
    let first = create(&mut orders, "first", &[("A", 1)]).await;
    until_state(&mut feed, &first.name, OrderState::Delivered).await;
    drop(first_dc1);
    let dc1 = warehouse(&suite, "DC1", reject_rate);
    let mut db = suite.db.connect("orders").await;
    fail_recording(&mut db, "released").await;
    let order = create(&mut orders, "quick-wms", &[("A", 2)]).await;
    until_state(&mut feed, &order.name, OrderState::Routed).await;

    // Orders holds the DC1 work's report; the order is ROUTED.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let docs: Vec<Vec<u8>> =
            sqlx::query_scalar("SELECT doc FROM fulfillments WHERE order_id = $1::text::uuid")
                .bind(&order.order_id)
                .fetch_all(&mut db)
                .await
                .unwrap();
        let there = docs
            .iter()
            .any(|d| FulfillmentOrder::decode(d.as_slice()).unwrap().state() == reported);
        if there {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never {reported:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let now = order_of(&mut orders, &order.name).await;
    assert_eq!(now.state(), OrderState::Routed);

    // The release's next attempt comes late (as after a crash): what the
    // order's reports asked for (a reroute) runs first, on a ROUTED order.
    let fulfil = |at: &'static str| {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE saga_steps SET next_attempt_time = {at} WHERE step = 'fulfil'"
        )))
    };
    fulfil("now() + interval '1 hour'")
        .execute(&mut db)
        .await
        .unwrap();
    record_again(&mut db, "released").await;
    let untried = "SELECT count(*) FROM saga_steps WHERE step LIKE 'reroute:%' AND last_error = ''";
    loop {
        let n: i64 = sqlx::query_scalar(untried)
            .fetch_one(&mut db)
            .await
            .unwrap();
        if n == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the reroute never ran"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fulfil("now()").execute(&mut db).await.unwrap();
    for state in [
        OrderState::Released,
        OrderState::Shipped,
        OrderState::Delivered,
    ] {
        until_state(&mut feed, &order.name, state).await;
    }
    drop((dc1, dc2));
    (suite, order.name)
}

#[tokio::test]
async fn an_order_is_shipped_by_the_warehouse_and_delivered() {
    let suite = Suite::start().await;
    let mut stock = suite.stock(T, &[("A", 5), ("B", 1)]).await;
    let _wms = warehouse(&suite, "DC1", 0.0);
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let mut feed = suite.order_events(T).await;
    let order = create(&mut orders, "ship-1", &[("A", 2), ("B", 1)]).await;
    for state in [
        OrderState::Reserved,
        OrderState::Routed,
        OrderState::Released,
        OrderState::Shipped,
    ] {
        until_state(&mut feed, &order.name, state).await;
    }
    let delivered = until_state(&mut feed, &order.name, OrderState::Delivered)
        .await
        .order
        .unwrap();
    let lines: Vec<(i64, i64)> = delivered
        .lines
        .iter()
        .map(|l| (l.quantity_shipped, l.quantity_delivered))
        .collect();
    assert_eq!(lines, [(2, 2), (1, 1)]);

    // What shipped left the shelf; nothing else moved.
    let levels = stock
        .get_availability(authed(
            T,
            inv::GetAvailabilityRequest {
                skus: vec!["A".into(), "B".into()],
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .availabilities;
    let on_hand: Vec<(String, i64)> = levels.iter().map(|a| (a.sku.clone(), a.on_hand)).collect();
    assert_eq!(on_hand, [("A".to_string(), 3), ("B".to_string(), 0)]);
    assert_eq!(available(&mut stock, "A").await, 3);
    let history = history_of(&mut orders, &order.name).await;
    let actors: Vec<&str> = history.iter().map(|e| e.actor.as_str()).collect();
    assert!(actors.contains(&"system:fulfillment"), "{actors:?}");
}

/// Fulfillment crashes while the warehouse picks: the warehouse goes on
/// with the work, and what it reports meanwhile reaches fulfillment once
/// its stream is back. (The simulator used to stop the walk with the
/// stream; the release, acknowledged already, never came again, and the
/// work stayed PICKING.)
#[tokio::test]
async fn work_under_way_when_fulfillment_crashes_ships_once_it_is_back() {
    let mut suite = Suite::start().await;
    let mut stock = suite.stock(T, &[("A", 5)]).await;
    let _wms = warehouse_pacing(&suite, "DC1", 0.0, Duration::from_millis(300));
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let mut feed = suite.order_events(T).await;
    let order = create(&mut orders, "crash-picking", &[("A", 2)]).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while work_states(&suite, &order.name).await != [("DC1".to_string(), FulfillmentState::Picking)]
    {
        assert!(std::time::Instant::now() < deadline, "never picking");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    suite.crash(Service::Fulfillment).await;
    suite.start_again(Service::Fulfillment).await;
    let delivered = until_state(&mut feed, &order.name, OrderState::Delivered)
        .await
        .order
        .unwrap();
    assert_eq!(delivered.lines[0].quantity_delivered, 2);
    assert_eq!(
        work_states(&suite, &order.name).await,
        [("DC1".to_string(), FulfillmentState::Delivered)]
    );
    // Shipped once.
    assert_eq!(on_hand(&mut stock, "A").await, [("DC1".to_string(), 3)]);
}

/// Announces `quantity` of `sku` to DC1 by an advance shipping notice.
async fn announce(
    work: &mut FulfillmentServiceClient<Channel>,
    request_id: &str,
    sku: &str,
    quantity: i64,
) -> oms_proto::fulfillment::AdvanceShippingNotice {
    use oms_proto::fulfillment as ful;
    let req = ful::CreateAdvanceShippingNoticeRequest {
        request_id: request_id.into(),
        asn: Some(ful::AdvanceShippingNotice {
            node_id: "DC1".into(),
            reference: "PO-1".into(),
            lines: vec![ful::ExpectedLine {
                sku: sku.into(),
                quantity,
                lot: String::new(),
            }],
            ..Default::default()
        }),
    };
    let created = work.create_advance_shipping_notice(authed(T, req)).await;
    created.unwrap().into_inner().asn.unwrap()
}

/// The notice `name` as fulfillment has it now, with its receipts.
async fn notice(
    work: &mut FulfillmentServiceClient<Channel>,
    name: &str,
) -> oms_proto::fulfillment::AdvanceShippingNotice {
    let req = oms_proto::fulfillment::GetAdvanceShippingNoticeRequest { name: name.into() };
    let got = work.get_advance_shipping_notice(authed(T, req)).await;
    got.unwrap().into_inner().asn.unwrap()
}

/// Asserts that the first receipt against notice `name` reached inventory
/// (no posting error).
async fn first_receipt_posted(work: &mut FulfillmentServiceClient<Channel>, name: &str) {
    let got = notice(work, name).await;
    assert!(got.receipts[0].post_error.is_empty(), "{:?}", got.receipts);
}

#[tokio::test]
async fn goods_announced_by_a_notice_are_received_by_the_warehouse_and_become_stock() {
    let suite = Suite::start().await;
    let mut stock = suite.stock(T, &[("A", 5)]).await;
    let mut changes = stock
        .watch_availability(authed(
            T,
            inv::WatchAvailabilityRequest {
                skus: vec!["A".into()],
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let _wms = warehouse(&suite, "DC1", 0.0);
    let mut work = FulfillmentServiceClient::new(suite.channel(Service::Fulfillment));
    let asn = announce(&mut work, "asn-1", "A", 7).await;
    // The simulator receives the seven units; fulfillment posts them to
    // the ledger, and the availability feed shows them.
    loop {
        let a = changes
            .message()
            .await
            .unwrap()
            .expect("feed open")
            .availability
            .unwrap();
        if a.on_hand == 12 {
            break;
        }
    }
    assert_eq!(on_hand(&mut stock, "A").await, [("DC1".to_string(), 12)]);
    let movements = stock
        .list_movements(authed(
            T,
            inv::ListMovementsRequest {
                sku: "A".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .movements;
    let receipts: Vec<(i64, String)> = movements
        .iter()
        .filter(|m| m.reference == asn.name)
        .map(|m| (m.quantity, m.actor.clone()))
        .collect();
    assert_eq!(receipts, [(7, "service:fulfillment".to_string())]);
    let got = notice(&mut work, &asn.name).await;
    assert_eq!(got.receipts.len(), 1);
    assert!(got.receipts[0].post_error.is_empty());
    assert!(got.discrepancies.is_empty(), "{:?}", got.discrepancies);
}

/// A receipt line inventory refuses (a SKU it does not know) leaves the
/// receipt's other lines posted, before and after it; the refusal is kept
/// on the receipt. Before, the lines after it were never posted.
#[tokio::test]
async fn a_receipt_line_inventory_refuses_keeps_no_other_line_out_of_stock() {
    use oms_proto::fulfillment::{self as ful, connect_adapter_request::Message as In};
    let suite = Suite::start().await;
    let mut stock = suite.stock(T, &[("A", 1), ("B", 1)]).await;
    let mut work = FulfillmentServiceClient::new(suite.channel(Service::Fulfillment));
    let asn = announce(&mut work, "asn-2", "A", 2).await;
    // An adapter of DC1 reports what arrived: A, an unknown SKU, then B.
    let line = |sku: &str, quantity| ful::ReceivedLine {
        sku: sku.into(),
        quantity,
        ..Default::default()
    };
    let receipt = ful::Receipt {
        receipt_id: "rc-1".into(),
        asn: asn.name.clone(),
        node_id: "DC1".into(),
        lines: vec![line("A", 2), line("NOPE", 1), line("B", 3)],
        ..Default::default()
    };
    let wms = Adapter::connect(
        &suite.channel(Service::Fulfillment),
        T,
        "manual",
        &["DC1"],
        0,
    )
    .await;
    wms.send(In::Receipt(ful::ReceiptReported {
        event_id: "ev-1".into(),
        receipt: Some(receipt),
    }))
    .await;
    let mut db = suite.db.connect("fulfillment").await;
    wait_for(
        &mut db,
        "SELECT count(*) FROM receipts WHERE post_time IS NOT NULL",
        1,
    )
    .await;
    assert_eq!(on_hand(&mut stock, "A").await, [("DC1".to_string(), 3)]);
    assert_eq!(on_hand(&mut stock, "B").await, [("DC1".to_string(), 4)]);
    let got = notice(&mut work, &asn.name).await;
    let error = &got.receipts[0].post_error;
    assert!(error.starts_with("line 1 (NOPE): "), "{error}");
    assert!(
        !error.contains("line 0") && !error.contains("line 2"),
        "{error}"
    );
}

/// On hand, expected inbound and its arrivals of `sku` in the network.
async fn inbound_of(
    stock: &mut Inventory,
    sku: &str,
) -> (i64, i64, Vec<(Option<prost_types::Timestamp>, i64)>) {
    let req = inv::GetAvailabilityRequest {
        skus: vec![sku.into()],
        ..Default::default()
    };
    let got = stock.get_availability(authed(T, req)).await.unwrap();
    let a = got.into_inner().availabilities.remove(0);
    let arrivals = (a.arrivals.iter())
        .map(|x| (x.expected_arrival_time, x.units))
        .collect();
    (a.on_hand, a.expected_inbound, arrivals)
}

/// What a notice still brings is expected inbound in inventory: shown by
/// its expected time and never promised, less what each receipt brought,
/// nothing once closed. A SKU inventory does not know is named on the
/// notice and keeps no other line out, and counts once it is an item.
#[tokio::test]
async fn what_a_notice_still_brings_is_expected_inbound_until_received_or_closed() {
    use oms_proto::fulfillment as ful;
    let suite = Suite::start().await;
    let mut stock = suite.stock(T, &[("A", 1), ("B", 1)]).await;
    let mut work = FulfillmentServiceClient::new(suite.channel(Service::Fulfillment));
    let due = chrono::Utc::now() + chrono::Duration::days(2);
    let due = Some(prost_types::Timestamp {
        seconds: due.timestamp(),
        nanos: 0,
    });
    let line = |sku: &str, quantity| ful::ExpectedLine {
        sku: sku.into(),
        quantity,
        lot: String::new(),
    };
    let req = ful::CreateAdvanceShippingNoticeRequest {
        request_id: rid(),
        asn: Some(ful::AdvanceShippingNotice {
            node_id: "DC1".into(),
            reference: "PO-7".into(),
            expected_time: due,
            lines: vec![
                line("A", 10),
                line("NOPE", 3),
                line("ZILCH", 2),
                line("B", 4),
            ],
            ..Default::default()
        }),
    };
    let created = work.create_advance_shipping_notice(authed(T, req)).await;
    let asn = created.unwrap().into_inner().asn.unwrap();
    let mut db = suite.db.connect("fulfillment").await;
    let told = "SELECT count(*) FROM asns WHERE inbound_posted = inbound_revision";
    wait_for(&mut db, told, 1).await;
    assert_eq!(inbound_of(&mut stock, "A").await, (1, 10, vec![(due, 10)]));
    assert_eq!(inbound_of(&mut stock, "B").await, (1, 4, vec![(due, 4)]));
    assert_eq!(available(&mut stock, "A").await, 1, "never promised");
    let got = notice(&mut work, &asn.name).await;
    assert_eq!(
        got.inbound_error,
        "NOPE: items/NOPE not found; ZILCH: items/ZILCH not found"
    );
    assert!(got.inbound_post_time.is_some());
    // NOPE and ZILCH become items: the notice is told again a while later
    // (ten minutes; set back here), and their units count.
    for sku in ["NOPE", "ZILCH"] {
        let item = inv::Item {
            sku: sku.into(),
            ..Default::default()
        };
        oms_e2e::create_item(&mut stock, T, item).await;
    }
    sqlx::query("UPDATE asns SET inbound_post_time = now() - interval '1 hour'")
        .execute(&mut db)
        .await
        .unwrap();
    let clean = "SELECT count(*) FROM asns WHERE inbound_posted = inbound_revision AND inbound_error IS NULL";
    wait_for(&mut db, clean, 1).await;
    assert_eq!(inbound_of(&mut stock, "NOPE").await, (0, 3, vec![(due, 3)]));
    assert_eq!(
        inbound_of(&mut stock, "ZILCH").await,
        (0, 2, vec![(due, 2)])
    );

    // 6 good and 1 damaged arrive: 3 still come.
    receipt_of_a(&suite, "DC1", &asn.name, 6, 1).await;
    wait_for(&mut db, told, 1).await;
    assert_eq!(inbound_of(&mut stock, "A").await, (7, 3, vec![(due, 3)]));

    // Closed: nothing more comes. A replay answers as the first time; a
    // second close is refused.
    let close = ful::CloseAdvanceShippingNoticeRequest {
        request_id: rid(),
        name: asn.name.clone(),
    };
    let closed = work
        .close_advance_shipping_notice(authed(T, close.clone()))
        .await;
    let closed = closed.unwrap().into_inner().asn.unwrap();
    assert!(closed.close_time.is_some());
    assert_eq!(closed.receipts.len(), 1);
    let again = work
        .close_advance_shipping_notice(authed(T, close.clone()))
        .await;
    assert_eq!(again.unwrap().into_inner().asn.unwrap(), closed);
    let twice = ful::CloseAdvanceShippingNoticeRequest {
        request_id: rid(),
        ..close
    };
    let err = (work.close_advance_shipping_notice(authed(T, twice)).await).unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    wait_for(&mut db, told, 1).await;
    assert_eq!(inbound_of(&mut stock, "A").await, (7, 0, vec![]));
    assert_eq!(inbound_of(&mut stock, "B").await, (1, 0, vec![]));
}

/// A notice is told what a receipt brought only once the receipt's units
/// are on hand: while inventory fails to record them (a fault injected
/// into its movements), the notice still counts all it announced, rather
/// than the units that came counting nowhere.
#[tokio::test]
async fn a_notice_is_told_of_a_receipt_only_once_its_units_are_on_hand() {
    use oms_proto::fulfillment::{self as ful, connect_adapter_request::Message as In};
    let suite = Suite::start().await;
    let mut stock = suite.stock(T, &[("A", 1), ("B", 1)]).await;
    let mut work = FulfillmentServiceClient::new(suite.channel(Service::Fulfillment));
    let asn = announce(&mut work, &rid(), "A", 10).await;
    let mut db = suite.db.connect("fulfillment").await;
    let told = "SELECT count(*) FROM asns WHERE inbound_posted = inbound_revision";
    wait_for(&mut db, told, 1).await;
    let mut held = suite.db.connect("inventory").await;
    trigger(
        &mut held,
        "hold_a",
        "INSERT ON movements",
        "NEW.sku = 'A'",
        FAIL,
    )
    .await;
    // Six A arrive; inventory cannot record them.
    let wms = Adapter::connect(
        &suite.channel(Service::Fulfillment),
        T,
        "manual",
        &["DC1"],
        0,
    )
    .await;
    let receipt = ful::Receipt {
        receipt_id: "rc-1".into(),
        asn: asn.name.clone(),
        node_id: "DC1".into(),
        lines: vec![ful::ReceivedLine {
            sku: "A".into(),
            quantity: 6,
            ..Default::default()
        }],
        ..Default::default()
    };
    wms.send(In::Receipt(ful::ReceiptReported {
        event_id: "ev-1".into(),
        receipt: Some(receipt),
    }))
    .await;
    wait_for(&mut db, "SELECT count(*) FROM receipts", 1).await;
    // A later notice is told after this one, in the poster's order: once
    // it is, this one's turn came and went.
    announce(&mut work, &rid(), "B", 4).await;
    wait_for(&mut db, told, 1).await;
    assert_eq!(inbound_of(&mut stock, "A").await.0, 1, "not on hand yet");
    assert_eq!(
        inbound_of(&mut stock, "A").await.1,
        10,
        "all still expected"
    );
    // Recorded at last: on hand, and no longer expected.
    sqlx::raw_sql("DROP TRIGGER hold_a ON movements")
        .execute(&mut held)
        .await
        .unwrap();
    wait_for(&mut db, told, 2).await;
    let (on_hand, expected, _) = inbound_of(&mut stock, "A").await;
    assert_eq!((on_hand, expected), (7, 4));
}

/// Four units of A at DC2 sent in transit to DC1 as `transfer_id` (DC1
/// stocks B only); the inventory client.
async fn four_a_on_their_way_to_dc1(suite: &Suite, transfer_id: &str) -> Inventory {
    let mut stock = suite.stock_at(T, "DC2", &[("A", 4)]).await;
    suite.stock(T, &[("B", 1)]).await;
    let send = inv::SendTransferRequest {
        request_id: rid(),
        transfer_id: transfer_id.into(),
        from_node_id: "DC2".into(),
        to_node_id: "DC1".into(),
        lines: vec![inv::TransferLine {
            sku: "A".into(),
            quantity: 4,
            ..Default::default()
        }],
        ..Default::default()
    };
    stock.send_transfer(authed(T, send)).await.unwrap();
    stock
}

/// A notice at `node` naming the transfer, without lines.
async fn transfer_notice(
    work: &mut FulfillmentServiceClient<Channel>,
    node: &str,
    transfer: &str,
) -> Result<oms_proto::fulfillment::AdvanceShippingNotice, tonic::Status> {
    use oms_proto::fulfillment as ful;
    let req = ful::CreateAdvanceShippingNoticeRequest {
        request_id: rid(),
        asn: Some(ful::AdvanceShippingNotice {
            node_id: node.into(),
            transfer: transfer.into(),
            ..Default::default()
        }),
    };
    let created = work.create_advance_shipping_notice(authed(T, req)).await;
    created.map(|r| r.into_inner().asn.unwrap())
}

/// A hand-driven adapter of `node` reports a receipt against `asn` of A:
/// `good` and `damaged` units; returns once fulfillment posted it.
async fn receipt_of_a(suite: &Suite, node: &str, asn: &str, good: i64, damaged: i64) {
    use oms_proto::fulfillment::{self as ful, connect_adapter_request::Message as In};
    let wms = Adapter::connect(
        &suite.channel(Service::Fulfillment),
        T,
        "manual",
        &[node],
        0,
    )
    .await;
    let receipt = ful::Receipt {
        receipt_id: format!("rc-{node}"),
        asn: asn.into(),
        node_id: node.into(),
        lines: vec![ful::ReceivedLine {
            sku: "A".into(),
            quantity: good,
            damaged,
            ..Default::default()
        }],
        ..Default::default()
    };
    wms.send(In::Receipt(ful::ReceiptReported {
        event_id: format!("ev-{node}"),
        receipt: Some(receipt),
    }))
    .await;
    let mut db = suite.db.connect("fulfillment").await;
    let posted = "SELECT count(*) FROM receipts WHERE post_time IS NOT NULL";
    wait_for(&mut db, posted, 1).await;
}

/// The transfer `name` as inventory has it.
async fn transfer_now(stock: &mut Inventory, name: &str) -> inv::Transfer {
    let req = inv::GetTransferRequest { name: name.into() };
    let got = stock.get_transfer(authed(T, req)).await.unwrap();
    got.into_inner().transfer.unwrap()
}

/// (kind, quantity, reason) of A's movements at DC1, newest first.
async fn moves_of_a_at_dc1(stock: &mut Inventory) -> Vec<(inv::MovementKind, i64, String, String)> {
    let req = inv::ListMovementsRequest {
        sku: "A".into(),
        node_id: "DC1".into(),
        ..Default::default()
    };
    let got = stock.list_movements(authed(T, req)).await.unwrap();
    got.into_inner()
        .movements
        .iter()
        .map(|m| (m.kind(), m.quantity, m.reason.clone(), m.reference.clone()))
        .collect()
}

/// Stock sent from DC2 to DC1 in transit, announced to DC1's warehouse by
/// a notice naming the transfer: the warehouse receives it, fulfillment
/// posts the receipt as the transfer's delivery, and the units count once
/// (before, a receipt was new stock, on top of what left DC2).
#[tokio::test]
async fn a_transfer_announced_to_the_warehouse_arrives_once() {
    let suite = Suite::start().await;
    let mut stock = four_a_on_their_way_to_dc1(&suite, "TO-9").await;
    let mut events = stock
        .watch_inventory_events(authed(T, inv::WatchInventoryEventsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let mut work = FulfillmentServiceClient::new(suite.channel(Service::Fulfillment));
    // A notice at a node the transfer neither goes to nor left is refused.
    let err = transfer_notice(&mut work, "DC3", "transfers/TO-9")
        .await
        .unwrap_err();
    assert_eq!(oms_runtime::status::fields(&err), ["asn.node_id"]);
    let _wms = warehouse(&suite, "DC1", 0.0);
    let asn = transfer_notice(&mut work, "DC1", "transfers/TO-9")
        .await
        .unwrap();
    let expected: Vec<(&str, i64)> = asn
        .lines
        .iter()
        .map(|l| (l.sku.as_str(), l.quantity))
        .collect();
    assert_eq!(expected, [("A", 4)], "what the transfer has on the way");
    // Bounded: a receipt posted as new stock never ends the transfer.
    let arrival = async {
        loop {
            let ev = events.message().await.unwrap().unwrap().event.unwrap();
            if let Some(inv::inventory_event::Kind::TransferClosed(e)) = ev.kind {
                return e.transfer.unwrap();
            }
        }
    };
    let arrived = tokio::time::timeout(Duration::from_secs(30), arrival)
        .await
        .expect("the transfer was not received");
    assert_eq!(arrived.state(), inv::TransferState::Received);
    assert_eq!(
        on_hand(&mut stock, "A").await,
        [("DC1".to_string(), 4), ("DC2".to_string(), 0)]
    );
    assert_eq!(
        moves_of_a_at_dc1(&mut stock).await,
        [(
            inv::MovementKind::TransferIn,
            4,
            String::new(),
            "transfers/TO-9".to_string()
        )]
    );
    first_receipt_posted(&mut work, &asn.name).await;
    // Its units were in transit, never told to inventory as expected
    // inbound besides.
    let mut db = suite.db.connect("fulfillment").await;
    let settled = "SELECT count(*) FROM asns WHERE inbound_posted = inbound_revision";
    wait_for(&mut db, settled, 1).await;
    assert_eq!(notice(&mut work, &asn.name).await.inbound_post_time, None);
}

/// A warehouse reports part of a transfer damaged on arrival: the whole
/// transfer arrived (it is received, not left waiting for units that will
/// never come) and the damaged units are written off at the node.
#[tokio::test]
async fn a_transfer_received_with_damage_arrives_whole_and_writes_the_damage_off() {
    let suite = Suite::start().await;
    let mut stock = four_a_on_their_way_to_dc1(&suite, "TO-10").await;
    let mut work = FulfillmentServiceClient::new(suite.channel(Service::Fulfillment));
    let asn = transfer_notice(&mut work, "DC1", "transfers/TO-10")
        .await
        .unwrap();
    receipt_of_a(&suite, "DC1", &asn.name, 3, 1).await;
    let got = transfer_now(&mut stock, "transfers/TO-10").await;
    assert_eq!(got.state(), inv::TransferState::Received);
    assert_eq!(
        on_hand(&mut stock, "A").await,
        [("DC1".to_string(), 3), ("DC2".to_string(), 0)]
    );
    let damaged = "damaged on arrival (transfers/TO-10)".to_string();
    assert_eq!(
        moves_of_a_at_dc1(&mut stock).await,
        [
            (inv::MovementKind::Damage, -1, damaged, asn.name.clone()),
            (
                inv::MovementKind::TransferIn,
                4,
                String::new(),
                "transfers/TO-10".to_string()
            ),
        ]
    );
    first_receipt_posted(&mut work, &asn.name).await;
}

/// A transfer's units refused at the door come back: a notice at the
/// sending node names the transfer, and that warehouse's receipt brings
/// them back by the transfer (before, only the receiving node's notice was
/// taken, and a plain receipt would have counted them twice).
#[tokio::test]
async fn a_transfer_sent_back_is_received_at_its_origin() {
    let suite = Suite::start().await;
    let mut stock = four_a_on_their_way_to_dc1(&suite, "TO-11").await;
    let mut work = FulfillmentServiceClient::new(suite.channel(Service::Fulfillment));
    let asn = transfer_notice(&mut work, "DC2", "transfers/TO-11")
        .await
        .unwrap();
    receipt_of_a(&suite, "DC2", &asn.name, 4, 0).await;
    let got = transfer_now(&mut stock, "transfers/TO-11").await;
    let line = &got.lines[0];
    assert_eq!(
        (got.state(), line.quantity_received, line.quantity_returned),
        (inv::TransferState::Closed, 0, 4)
    );
    assert_eq!(on_hand(&mut stock, "A").await, [("DC2".to_string(), 4)]);
    first_receipt_posted(&mut work, &asn.name).await;
}

/// One shipment per plan, by node priority, doing `when_unfillable` when
/// one shipment cannot carry the order: made the tenant's active rule set.
async fn one_box_rules(suite: &Suite, when_unfillable: oms_proto::routing::UnfillableAction) {
    use oms_proto::routing::{self as rt, routing_service_client::RoutingServiceClient};
    let rule = rt::Rule {
        rule_id: "one-box".into(),
        ranking: vec![rt::RankingCriterion {
            criterion: rt::Criterion::NodePriority as i32,
            weight: 1.0,
        }],
        split_policy: Some(rt::SplitPolicy {
            mode: rt::SplitMode::MaxShipments as i32,
            max_shipments: 1,
            ..Default::default()
        }),
        when_unfillable: when_unfillable as i32,
        ..Default::default()
    };
    let mut routing = RoutingServiceClient::new(suite.channel(Service::Routing));
    let draft = routing
        .create_rule_set(authed(
            T,
            rt::CreateRuleSetRequest {
                request_id: "one-box".into(),
                rule_set: Some(rt::RuleSet {
                    display_name: "one box".into(),
                    rules: vec![rule],
                    ..Default::default()
                }),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .rule_set
        .unwrap();
    routing
        .activate_rule_set(authed(
            T,
            rt::ActivateRuleSetRequest {
                request_id: "go-live".into(),
                name: draft.name,
            },
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_partial_plan_ships_what_it_can_and_the_backordered_rest_later() {
    let suite = Suite::start().await;
    let mut stock = split_stock(&suite).await;
    // One shipment per plan; what does not fit is backordered, not refused.
    one_box_rules(
        &suite,
        oms_proto::routing::UnfillableAction::PartialBackorder,
    )
    .await;
    let _dc1 = warehouse(&suite, "DC1", 0.0);
    let _dc2 = warehouse(&suite, "DC2", 0.0);
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let mut feed = suite.order_events(T).await;
    let order = create(&mut orders, "partial-1", &[("A", 1), ("B", 2)]).await;
    // DC2 places the most units in one box: B now, A backordered.
    let routed = until_state(&mut feed, &order.name, OrderState::Routed)
        .await
        .order
        .unwrap();
    let line = |o: &ord::Order, sku: &str| o.lines.iter().find(|l| l.sku == sku).unwrap().clone();
    assert_eq!(line(&routed, "B").sourcing[0].node_id, "DC2");
    assert!(line(&routed, "A").sourcing.is_empty());
    assert_eq!(line(&routed, "A").quantity_backordered, 1);
    // The rest is placed on its own and the whole order ships.
    let delivered = until_state(&mut feed, &order.name, OrderState::Delivered)
        .await
        .order
        .unwrap();
    for (sku, node, q) in [("A", "DC1", 1), ("B", "DC2", 2)] {
        let l = line(&delivered, sku);
        assert_eq!(l.quantity_backordered, 0);
        assert_eq!(l.quantity_shipped, q);
        assert_eq!(l.sourcing[0].node_id, node);
    }
    assert_eq!(on_hand(&mut stock, "A").await, [("DC1".to_string(), 4)]);
    assert_eq!(on_hand(&mut stock, "B").await, [("DC2".to_string(), 3)]);
    assert_eq!(available(&mut stock, "A").await, 4);
    assert_history(&mut orders, &order.name, "backordered units placed").await;
}

/// An order routing holds while it is reserved (its rule cannot fill it
/// and says hold) has its reservation watched: the `held-expiry` step
/// reads the reservation and waits for its end, 7 days on, to say then
/// whether it expired (see `a_held_order_says_when_its_reservation_expired`).
#[tokio::test]
async fn an_order_routing_holds_has_its_reservation_watched() {
    let suite = Suite::start().await;
    let _stock = split_stock(&suite).await;
    one_box_rules(&suite, oms_proto::routing::UnfillableAction::Hold).await;
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let mut feed = suite.order_events(T).await;
    let order = create(&mut orders, "held-1", &[("A", 1), ("B", 2)]).await;
    let held = until_state(&mut feed, &order.name, OrderState::OnHold).await;
    let reason = &held.order.unwrap().holds[0].reason;
    assert!(reason.starts_with("routing held the order"), "{reason}");
    let mut db = suite.db.connect("orders").await;
    let waiting = "SELECT count(*) FROM saga_steps WHERE step = 'held-expiry'
                   AND next_attempt_time > now() + interval '6 days'";
    wait_for(&mut db, waiting, 1).await;
}

/// A reserved order routing cannot place (one box, its lines at two
/// warehouses) says so in its history and feed, once for its reason however
/// often it is planned again, and is planned again as soon as stock lets
/// one node take it.
#[tokio::test]
async fn an_order_routing_cannot_place_yet_says_why_once() {
    let suite = Suite::start().await;
    let mut stock = split_stock(&suite).await;
    one_box_rules(&suite, oms_proto::routing::UnfillableAction::NextRule).await;
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let mut feed = suite.order_events(T).await;
    let order = create(&mut orders, "two-boxes", &[("A", 1), ("B", 2)]).await;
    let deferred = loop {
        let ev = oms_e2e::next_order_event(&mut feed).await;
        if let Some(ord::order_event::Kind::RoutingDeferred(d)) = ev.kind {
            assert_eq!(ev.order.unwrap().state(), OrderState::Reserved);
            break d;
        }
    };
    assert!(
        deferred.reason.contains("no rule could fill"),
        "{deferred:?}"
    );
    let decision = suite.decision(T, &deferred.decision).await;
    assert!(decision.assignments.is_empty(), "{decision:?}");
    let next = deferred.next_plan_time.unwrap().seconds;
    assert!(next > chrono::Utc::now().timestamp() + 10, "{next}");

    // Planned again twice, for the same reason: still one line.
    let mut db = suite.db.connect("orders").await;
    for tried in [
        "SELECT count(*) FROM saga_steps WHERE step = 'route' AND attempts = 2",
        "SELECT count(*) FROM saga_steps WHERE step = 'route' AND attempts = 3",
    ] {
        sqlx::query("UPDATE saga_steps SET next_attempt_time = now() WHERE step = 'route'")
            .execute(&mut db)
            .await
            .unwrap();
        wait_for(&mut db, tried, 1).await;
    }
    let lines: Vec<(String, String)> = sqlx::query_as(
        "SELECT kind, reason FROM order_history WHERE kind = 'OrderRoutingDeferred'",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].1.contains(&deferred.decision), "{lines:?}");

    // Two B arrive at DC1: one box can take the order now. Its next plan
    // is an hour off: the receipt wakes it.
    sqlx::query(
        "UPDATE saga_steps SET next_attempt_time = now() + interval '1 hour' WHERE step = 'route'",
    )
    .execute(&mut db)
    .await
    .unwrap();
    oms_e2e::receive(&mut stock, T, "B", 2).await;
    let routed = until_state(&mut feed, &order.name, OrderState::Routed).await;
    let sourcing: Vec<&str> = (routed.order.as_ref().unwrap().lines.iter())
        .flat_map(|l| l.sourcing.iter().map(|s| s.node_id.as_str()))
        .collect();
    assert_eq!(sourcing, ["DC1", "DC1"]);
}

/// An item kept in lots with 30 days of minimum shelf life: the release
/// names the earliest expiry the warehouse may ship, and the warehouse
/// ships from the lot inventory promised, not from the older one inventory
/// withdrew from sale (first expiring first would have picked it).
#[tokio::test]
async fn the_warehouse_ships_from_the_lot_inventory_promised() {
    let suite = Suite::start().await;
    let mut stock = suite.stock(T, &[]).await;
    lots_at_dc1(&mut stock, "MILK", 30, &[("OLD", 10, 5), ("NEW", 90, 3)]).await;
    let _wms = warehouse(&suite, "DC1", 0.0);
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let mut feed = suite.order_events(T).await;
    let order = create(&mut orders, "milk-1", &[("MILK", 2)]).await;
    until_state(&mut feed, &order.name, OrderState::Delivered).await;

    let fos = work_of(&suite, &order.name).await;
    let line = &fos[0].lines[0];
    assert!(
        line.min_expiry_date > in_days(10) && line.min_expiry_date <= in_days(32),
        "{}",
        line.min_expiry_date
    );
    let shipped: Vec<(&str, i64)> = fos[0].shipments[0]
        .lines
        .iter()
        .map(|l| (l.lot.as_str(), l.quantity))
        .collect();
    assert_eq!(shipped, [("NEW", 2)]);
    let levels = levels_of(&mut stock, "MILK").await;
    let lots: Vec<(&str, i64)> = levels.iter().map(|l| (l.lot.as_str(), l.on_hand)).collect();
    assert_eq!(lots, [("NEW", 1), ("OLD", 5)]);
}

/// Two orders picked at once at one warehouse take different lots: the
/// units the first picked are still on hand in inventory until its
/// shipment is consumed, and the second must not pick them again (its
/// shipment's consumption would be refused, leaving the record off).
#[tokio::test]
async fn two_orders_picked_at_once_take_different_lots() {
    let suite = Suite::start().await;
    let mut stock = suite.stock(T, &[]).await;
    lots_at_dc1(
        &mut stock,
        "CHEESE",
        0,
        &[("SOON", 20, 1), ("LATER", 60, 1)],
    )
    .await;
    // Slow steps: both orders are picked before either ships.
    let _wms = warehouse_pacing(&suite, "DC1", 0.0, Duration::from_millis(300));
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let (mut first_feed, mut second_feed) =
        (suite.order_events(T).await, suite.order_events(T).await);
    let first = create(&mut orders, "cheese-1", &[("CHEESE", 1)]).await;
    let second = create(&mut orders, "cheese-2", &[("CHEESE", 1)]).await;
    until_state(&mut first_feed, &first.name, OrderState::Delivered).await;
    until_state(&mut second_feed, &second.name, OrderState::Delivered).await;
    let levels = levels_of(&mut stock, "CHEESE").await;
    let lots: Vec<(&str, i64)> = levels.iter().map(|l| (l.lot.as_str(), l.on_hand)).collect();
    assert_eq!(lots, [("LATER", 0), ("SOON", 0)]);
}

/// A serial-tracked item ships with a serial number per unit, ones the
/// warehouse has on hand, and those leave the node in inventory.
#[tokio::test]
async fn the_warehouse_ships_serial_numbers_it_has_on_hand() {
    let suite = Suite::start().await;
    let mut stock = suite.stock(T, &[]).await;
    phones_at_dc1(&mut stock, T, &["P1", "P2", "P3"]).await;
    let _wms = warehouse(&suite, "DC1", 0.0);
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let mut feed = suite.order_events(T).await;
    let order = create(&mut orders, "phone-1", &[("PHONE", 2)]).await;
    until_state(&mut feed, &order.name, OrderState::Delivered).await;
    let fos = work_of(&suite, &order.name).await;
    let shipped: Vec<String> = fos[0].shipments[0]
        .lines
        .iter()
        .flat_map(|l| l.serial_numbers.clone())
        .collect();
    assert_eq!(shipped.len(), 2, "{shipped:?}");
    let list = inv::ListSerialNumbersRequest {
        sku: "PHONE".into(),
        node_id: "DC1".into(),
        ..Default::default()
    };
    let left: Vec<String> = stock
        .list_serial_numbers(authed(T, list))
        .await
        .unwrap()
        .into_inner()
        .serial_numbers
        .into_iter()
        .map(|s| s.serial_number)
        .collect();
    assert_eq!(left.len(), 1);
    assert!(
        !shipped.contains(&left[0]),
        "{left:?} shipped as {shipped:?}"
    );
    assert_eq!(on_hand(&mut stock, "PHONE").await, [("DC1".to_string(), 1)]);
}

/// A shipment one of whose entries inventory refuses (a serial number it
/// does not have at the node) still takes the other entries' units out of
/// stock. Before 2026-12-03 the whole consume was refused and none left.
#[tokio::test]
async fn a_shipped_entry_inventory_refuses_leaves_the_others_consumed() {
    let suite = Suite::start().await;
    let mut stock = suite.stock(T, &[("A", 5)]).await;
    phones_at_dc1(&mut stock, T, &["P1"]).await;
    let mut wms = Adapter::connect(
        &suite.channel(Service::Fulfillment),
        T,
        "manual",
        &["DC1"],
        0,
    )
    .await;
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let mut feed = suite.order_events(T).await;
    let order = create(&mut orders, "two-things", &[("A", 1), ("PHONE", 1)]).await;
    let fo = wms.release_of(&order.name).await;
    let lines = vec![
        shipped_line(&fo, "A", 1, &[]),
        shipped_line(&fo, "PHONE", 1, &["NOT-HERE"]),
    ];
    let answer = wms.ship(&fo, "shipped-1", lines).await;
    assert!(answer.accepted, "{answer:?}");
    // A leaves stock; PHONE's serial is not there, so its unit stays.
    let mut db = suite.db.connect("inventory").await;
    wait_for(
        &mut db,
        "SELECT count(*) FROM movements WHERE sku = 'A' AND quantity < 0",
        1,
    )
    .await;
    assert_eq!(on_hand(&mut stock, "A").await, [("DC1".to_string(), 4)]);
    assert_eq!(on_hand(&mut stock, "PHONE").await, [("DC1".to_string(), 1)]);
    // The order's history says what stayed, where people look.
    until_state(&mut feed, &order.name, OrderState::Shipped).await;
    let req = ord::ListOrderHistoryRequest {
        name: order.name.clone(),
        ..Default::default()
    };
    let history = orders.list_order_history(authed(T, req)).await.unwrap();
    let told: Vec<String> = history
        .into_inner()
        .changes
        .into_iter()
        .map(|c| c.reason)
        .filter(|r| r.contains("not taken from stock"))
        .collect();
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(told[0].contains("1 of PHONE: "), "{told:?}");
    assert!(!told[0].contains(" of A: "), "{told:?}");
}

/// The date `d` days from today (UTC).
fn in_days(d: i64) -> String {
    (chrono::Utc::now().date_naive() + chrono::Duration::days(d))
        .format("%Y-%m-%d")
        .to_string()
}

/// `sku`, kept in lots with expiry and `shelf_life` days of minimum shelf
/// life, received at DC1 as `(lot, expiring in days, units)`.
async fn lots_at_dc1(
    stock: &mut InventoryServiceClient<Channel>,
    sku: &str,
    shelf_life: i32,
    lots: &[(&str, i64, i64)],
) {
    let item = inv::Item {
        sku: sku.into(),
        lot_tracked: true,
        expiry_tracked: true,
        min_shelf_life_days: shelf_life,
        ..Default::default()
    };
    oms_e2e::create_item(stock, T, item).await;
    for (lot, days, units) in lots {
        let receipt = inv::StockMovement {
            kind: inv::MovementKind::Receipt as i32,
            node_id: "DC1".into(),
            sku: sku.into(),
            lot: lot.to_string(),
            expiry_date: in_days(*days),
            quantity: *units,
            ..Default::default()
        };
        let req = inv::RecordMovementRequest {
            request_id: oms_e2e::rid(),
            movement: Some(receipt),
        };
        stock.record_movement(authed(T, req)).await.unwrap();
    }
}

#[tokio::test]
async fn orders_resyncs_what_it_missed_when_the_retention_deleted_the_events() {
    let mut suite = Suite::start().await;
    let mut stock = suite.stock(T, &[("A", 5)]).await;
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let mut feed = suite.order_events(T).await;
    // A first order delivered: orders has followed the feed past it.
    let wms = warehouse(&suite, "DC1", 0.0);
    let first = create(&mut orders, "resync-1", &[("A", 1)]).await;
    until_state(&mut feed, &first.name, OrderState::Delivered).await;
    drop(wms);

    // The next is released, then orders is down while the warehouse ships
    // and delivers it.
    let missed = create(&mut orders, "resync-2", &[("A", 2)]).await;
    until_state(&mut feed, &missed.name, OrderState::Released).await;
    suite.crash(Service::Orders).await;
    let mut work = FulfillmentServiceClient::new(suite.channel(Service::Fulfillment));
    let mut work_feed = work
        .watch_fulfillment_events(authed(T, WatchFulfillmentEventsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let _wms = warehouse(&suite, "DC1", 0.0);
    let delivered = async {
        loop {
            let ev = work_feed.message().await.unwrap().unwrap();
            let fo = ev.fulfillment_order.unwrap();
            if fo.order == missed.name && fo.state() == FulfillmentState::Delivered {
                return fo;
            }
        }
    };
    let fo = tokio::time::timeout(Duration::from_secs(120), delivered)
        .await
        .expect("the warehouse delivers the order");
    assert!(fo.version > 2, "created, released, then moved by the WMS");

    // The retention deletes every fulfillment event so far: orders never
    // read those of the second order's shipment.
    let pool = suite.db.pool("fulfillment", None).await;
    let cutoff = chrono::Utc::now() + chrono::Duration::seconds(1);
    assert!(
        oms_runtime::outbox::purge(&pool, cutoff, 10_000)
            .await
            .unwrap()
            > 0
    );

    // Back up, orders finds its cursor expired and resyncs from the
    // fulfillment orders: the order is shipped (told as a step of its
    // own), delivered, and its units consumed.
    suite.start_again(Service::Orders).await;
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let mut feed = suite.order_events(T).await;
    until_state(&mut feed, &missed.name, OrderState::Shipped).await;
    until_state(&mut feed, &missed.name, OrderState::Delivered).await;
    assert_eq!(on_hand(&mut stock, "A").await, [("DC1".to_string(), 2)]);
    assert_eq!(available(&mut stock, "A").await, 2);

    // And it follows the feed again from where the resync left it.
    let next = create(&mut orders, "resync-3", &[("A", 1)]).await;
    until_state(&mut feed, &next.name, OrderState::Delivered).await;
    assert_eq!(on_hand(&mut stock, "A").await, [("DC1".to_string(), 1)]);
}

#[tokio::test]
async fn two_orders_replicas_take_each_fulfillment_event_once() {
    let mut suite = Suite::start().await;
    let second = suite.start_replica(Service::Orders).await;
    let mut stock = suite.stock(T, &[("A", 5)]).await;
    let _wms = warehouse(&suite, "DC1", 0.0);
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let mut feed = suite.order_events(T).await;
    let mut names = Vec::new();
    for i in 0..3 {
        names.push(
            create(&mut orders, &format!("twice-{i}"), &[("A", 1)])
                .await
                .name,
        );
    }
    // In whatever order they are delivered (the replicas place them at
    // once): waiting for each in turn would pass over the others' events.
    let mut undelivered: std::collections::HashSet<&String> = names.iter().collect();
    while !undelivered.is_empty() {
        let ev = oms_e2e::next_order_event(&mut feed).await;
        if let Some(o) = ev.order.filter(|o| o.state == OrderState::Delivered as i32) {
            undelivered.remove(&o.name);
        }
    }
    // Both replicas followed the feed: each shipment left the shelf once,
    // and each order's history tells each step once.
    assert_eq!(on_hand(&mut stock, "A").await, [("DC1".to_string(), 2)]);
    for name in &names {
        let by_feed: Vec<i32> = history_of(&mut orders, name)
            .await
            .iter()
            .filter(|c| c.actor == "system:fulfillment")
            .map(|c| c.to_state)
            .collect();
        assert_eq!(
            by_feed,
            [OrderState::Shipped as i32, OrderState::Delivered as i32],
            "{name}"
        );
    }
    // One replica reads the tenant's feed: one session holds its lease.
    let mut db = suite.db.connect("orders").await;
    let leases = "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
        WHERE l.locktype = 'advisory' AND l.granted AND a.datname = current_database()
          AND ((l.classid::bigint << 32) | l.objid::bigint)
              = hashtextextended('follow:fulfillment:acme', 0)";
    crate::placement::wait_for(&mut db, leases, 1).await;

    // Whichever replica stops, the other takes the feed over: each is
    // stopped in turn, and an order placed on the other is delivered.
    suite.crash(Service::Orders).await;
    let mut on_second = OrderServiceClient::new(second.channel());
    until_delivered(&mut on_second, "after-first-stops").await;
    suite.start_again(Service::Orders).await;
    second.crash().await;
    let mut on_first = OrderServiceClient::new(suite.channel(Service::Orders));
    until_delivered(&mut on_first, "after-second-stops").await;
    assert_eq!(on_hand(&mut stock, "A").await, [("DC1".to_string(), 0)]);
}

/// Tenants whose fulfillment feeds the lease tests follow.
const TENANTS: [&str; 4] = ["acme", "beta", "gamma", "delta"];

#[tokio::test]
async fn orders_replicas_share_the_tenants_feeds_out() {
    let mut suite = Suite::start().await;
    let _wms = tenants_followed(&suite).await;
    let mut db = suite.db.connect("orders").await;
    until_leases(&mut db, &[4]).await;
    // A second replica takes half of them; stopped, its half comes back.
    let second = suite.start_replica(Service::Orders).await;
    until_leases(&mut db, &[2, 2]).await;
    second.crash().await;
    until_leases(&mut db, &[4]).await;
    // And the feeds are followed: an order of each tenant is delivered.
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    for t in TENANTS {
        until_delivered_of(&mut orders, t, "after-the-second-stops").await;
    }
    // The same when the first one stops instead.
    let second = suite.start_replica(Service::Orders).await;
    until_leases(&mut db, &[2, 2]).await;
    suite.crash(Service::Orders).await;
    until_leases(&mut db, &[4]).await;
    let mut orders = OrderServiceClient::new(second.channel());
    for t in TENANTS {
        until_delivered_of(&mut orders, t, "after-the-first-stops").await;
    }
}

#[tokio::test]
async fn a_replica_cut_off_from_fulfillment_leaves_its_share_of_the_feeds_to_another() {
    let suite = Suite::start().await;
    let _wms = tenants_followed(&suite).await;
    let mut db = suite.db.connect("orders").await;
    until_leases(&mut db, &[4]).await;
    // The second replica is given half of the feeds, and cannot read
    // them: it gives them up, and the first one takes them beyond its
    // share, so every tenant's orders are still delivered.
    let _cut_off = suite
        .start_replica_cut_off(Service::Orders, Service::Fulfillment)
        .await;
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    for t in TENANTS {
        until_delivered_of(&mut orders, t, "while-one-is-cut-off").await;
    }
    until_leases(&mut db, &[4]).await;
}

#[tokio::test]
async fn a_replica_whose_lease_connection_breaks_takes_its_share_again() {
    let suite = Suite::start().await;
    let _wms = tenants_followed(&suite).await;
    let _second = suite.start_replica(Service::Orders).await;
    let mut db = suite.db.connect("orders").await;
    until_leases(&mut db, &[2, 2]).await;
    // One replica's lease connection is cut off (a Postgres restart or a
    // proxy dropping it, say): its leases go with it. It stops its
    // followers, connects again and takes its share back.
    let holders = |held: Vec<(i32, i64)>| held.into_iter().map(|(pid, _)| pid).collect::<Vec<_>>();
    let before = holders(lease_holders(&mut db).await);
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(before[0])
        .execute(&mut db)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let now = holders(lease_holders(&mut db).await);
        if now.len() == 2 && !now.contains(&before[0]) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "leases held by {now:?}, before {before:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    until_leases(&mut db, &[2, 2]).await;
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    for t in TENANTS {
        until_delivered_of(&mut orders, t, "after-the-lease-connection-broke").await;
    }
}

/// Gives each of [`TENANTS`] stock of A at a node of its own served by a simulated WMS,
/// and an order delivered through its fulfillment feed (which orders then
/// follows). Returns the WMSs.
async fn tenants_followed(suite: &Suite) -> Vec<tokio_util::sync::DropGuard> {
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let mut wms = Vec::new();
    for t in TENANTS {
        let node = format!("DC-{t}");
        suite.stock_at(t, &node, &[("A", 10)]).await;
        wms.push(simulated_wms_of(
            suite,
            t,
            &node,
            (0.0, 0.0),
            Duration::from_millis(5),
        ));
        until_delivered_of(&mut orders, t, "first").await;
    }
    wms
}

/// Waits until the orders replicas hold the leases of the followed
/// fulfillment feeds as `want` says: how many each holder holds, fewest
/// first.
async fn until_leases(db: &mut sqlx::PgConnection, want: &[i64]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut held: Vec<i64> = lease_holders(db)
            .await
            .into_iter()
            .map(|(_, n)| n)
            .collect();
        held.sort();
        if held == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "leases held {held:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The sessions holding leases of the followed fulfillment feeds, each
/// with how many it holds, by pid.
async fn lease_holders(db: &mut sqlx::PgConnection) -> Vec<(i32, i64)> {
    sqlx::query_as(
        "SELECT l.pid, count(*) FROM pg_locks l
         JOIN feed_cursors f ON f.source = 'fulfillment'
          AND ((l.classid::bigint << 32) | l.objid::bigint)
              = hashtextextended('follow:fulfillment:' || f.tenant, 0)
         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
         GROUP BY l.pid ORDER BY 1",
    )
    .fetch_all(db)
    .await
    .unwrap()
}

/// Creates an order of 1 A on `orders` and waits until it is delivered.
async fn until_delivered(orders: &mut OrderServiceClient<Channel>, request_id: &str) {
    until_delivered_of(orders, T, request_id).await
}

/// [`until_delivered`] for `tenant`.
async fn until_delivered_of(
    orders: &mut OrderServiceClient<Channel>,
    tenant: &str,
    request_id: &str,
) {
    let create = ord::CreateOrderRequest {
        request_id: request_id.into(),
        order: Some(crate::placement::order(&[("A", 1)])),
    };
    let name = orders
        .create_order(authed(tenant, create))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap()
        .name;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let state = |o: ord::GetOrderResponse| o.order.unwrap().state();
    let get = || ord::GetOrderRequest { name: name.clone() };
    while state(
        orders
            .get_order(authed(tenant, get()))
            .await
            .unwrap()
            .into_inner(),
    ) != OrderState::Delivered
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{name} never delivered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
