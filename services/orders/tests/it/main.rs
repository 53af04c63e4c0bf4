//! Orders through real gRPC against a real Postgres: one database per test.
#![allow(clippy::unwrap_used)]

mod create;
mod feed;
mod read;
mod saga;

use oms_proto::common::{Money, PostalAddress};
use oms_proto::orders::{
    CreateOrderRequest, Order, OrderLine, order_service_client::OrderServiceClient,
};
use oms_runtime::Service;
use oms_testkit::{Running, TestDb, authed};
use tonic::transport::Channel;

pub struct Harness {
    pub db: TestDb,
    pub svc: Running,
    pub client: OrderServiceClient<Channel>,
}

pub async fn start() -> Harness {
    let db = TestDb::new().await;
    let svc = oms_testkit::spawn(
        oms_testkit::config(Service::Orders, &db, &[]),
        oms_orders::run,
    )
    .await;
    let client = OrderServiceClient::new(svc.channel());
    Harness { db, svc, client }
}

pub fn eur(amount_minor: i64) -> Option<Money> {
    Some(Money {
        currency_code: "EUR".into(),
        amount_minor,
    })
}

pub fn order(channel_order_id: &str) -> Order {
    Order {
        channel: "channels/web".into(),
        channel_order_id: channel_order_id.into(),
        currency_code: "EUR".into(),
        lines: vec![
            OrderLine {
                sku: "SKU-RED".into(),
                quantity: 2,
                unit_price: eur(1250),
                ..Default::default()
            },
            OrderLine {
                sku: "SKU-BLUE".into(),
                quantity: 1,
                unit_price: eur(999),
                ..Default::default()
            },
        ],
        ship_to: Some(PostalAddress {
            name: "Ada Lovelace".into(),
            lines: vec!["12 St James's Square".into()],
            city: "London".into(),
            postal_code: "SW1Y 4JH".into(),
            country_code: "GB".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub async fn create(
    client: &mut OrderServiceClient<Channel>,
    tenant: &str,
    request_id: &str,
    o: Order,
) -> Order {
    client
        .create_order(authed(
            tenant,
            CreateOrderRequest {
                request_id: request_id.into(),
                order: Some(o),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap()
}

pub use oms_runtime::status::{fields, reason};
