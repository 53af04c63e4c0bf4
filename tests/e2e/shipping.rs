//! The whole journey with the reference WMS simulator on the adapter
//! stream: an order is reserved, routed, released, shipped and delivered,
//! and the stock it shipped leaves inventory.
use crate::placement::{available, create, until_state};
use oms_e2e::Suite;
use oms_kernel::Tenant;
use oms_proto::inventory as inv;
use oms_proto::orders::{self as ord, OrderState, order_service_client::OrderServiceClient};
use oms_runtime::{Config, Service, auth::TokenIssuer};
use oms_testkit::authed;
use oms_wms_sim::Sim;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const T: &str = "acme";

#[tokio::test]
async fn an_order_is_shipped_by_the_warehouse_and_delivered() {
    let suite = Suite::start().await;
    let mut stock = suite.stock(T, &[("A", 5), ("B", 1)]).await;
    let cfg = Config::from_lookup(Service::Fulfillment, |_| None).unwrap();
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    tokio::spawn(
        Sim {
            url: format!("http://{}", suite.services[&Service::Fulfillment].addr),
            tenant: Tenant::parse(T).unwrap(),
            issuer: TokenIssuer::new(&cfg.auth),
            adapter_id: "wms-dc1".into(),
            nodes: vec!["DC1".into()],
            step: Duration::from_millis(5),
            reject_rate: 0.0,
            short_pick_rate: 0.0,
            seed: 1,
        }
        .run(stop),
    );
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let mut feed = orders
        .watch_order_events(authed(T, ord::WatchOrderEventsRequest::default()))
        .await
        .unwrap()
        .into_inner();
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
    let history = orders
        .list_order_history(authed(
            T,
            ord::ListOrderHistoryRequest {
                name: order.name.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let actors: Vec<&str> = history.changes.iter().map(|e| e.actor.as_str()).collect();
    assert!(actors.contains(&"system:fulfillment"), "{actors:?}");
}
