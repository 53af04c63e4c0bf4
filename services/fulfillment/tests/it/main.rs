//! Fulfillment through real gRPC against a real Postgres (one database per
//! test), with adapters speaking the real bidirectional stream.
#![allow(clippy::unwrap_used)]

mod bridge;
mod inbound;
mod orders;

use oms_fulfillment::BridgeConfig;
use oms_proto::fulfillment::{self as pb, fulfillment_service_client::FulfillmentServiceClient};
use oms_runtime::Service;
pub use oms_testkit::adapter::{Adapter, hello, open};
use oms_testkit::{Running, TestDb, authed};
use std::time::Duration;
use tonic::transport::Channel;

pub const TENANT: &str = "acme";

pub fn rid() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub struct Harness {
    pub db: TestDb,
    pub svc: Running,
    pub client: FulfillmentServiceClient<Channel>,
    pub bridge: BridgeConfig,
}

pub async fn start_with(bridge: BridgeConfig) -> Harness {
    let db = TestDb::new().await;
    let svc = spawn(&db, bridge.clone()).await;
    Harness {
        client: FulfillmentServiceClient::new(svc.channel()),
        db,
        svc,
        bridge,
    }
}

pub async fn start() -> Harness {
    start_with(BridgeConfig::default()).await
}

async fn spawn(db: &TestDb, bridge: BridgeConfig) -> Running {
    // Nothing listens on the discard port: receipts stay unposted here
    // (the e2e suite posts them to a real inventory).
    let nowhere = ([127, 0, 0, 1], 9).into();
    oms_testkit::spawn(
        oms_testkit::config(Service::Fulfillment, db, &[(Service::Inventory, nowhere)]),
        move |c, l, s| oms_fulfillment::run_with(c, bridge, l, s),
    )
    .await
}

impl Harness {
    /// Stops the service (as SIGTERM would) and starts a new one on the
    /// same database.
    pub async fn restart(&mut self) {
        let old = std::mem::replace(&mut self.svc, spawn(&self.db, self.bridge.clone()).await);
        old.stop().await.unwrap();
        self.client = FulfillmentServiceClient::new(self.svc.channel());
    }

    /// A new fulfillment order of `tenant` at `node`: lines (id, sku, units).
    pub async fn create(
        &mut self,
        tenant: &str,
        node: &str,
        lines: &[(&str, &str, i64)],
    ) -> pb::FulfillmentOrder {
        self.client
            .create_fulfillment_order(authed(
                tenant,
                pb::CreateFulfillmentOrderRequest {
                    request_id: rid(),
                    fulfillment_order: Some(new_order(node, lines)),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .fulfillment_order
            .unwrap()
    }

    pub async fn release(&mut self, tenant: &str, name: &str) -> pb::FulfillmentOrder {
        self.client
            .release_fulfillment_order(authed(
                tenant,
                pb::ReleaseFulfillmentOrderRequest {
                    request_id: rid(),
                    name: name.into(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .fulfillment_order
            .unwrap()
    }

    pub async fn get(&mut self, tenant: &str, name: &str) -> pb::FulfillmentOrder {
        self.client
            .get_fulfillment_order(authed(
                tenant,
                pb::GetFulfillmentOrderRequest { name: name.into() },
            ))
            .await
            .unwrap()
            .into_inner()
            .fulfillment_order
            .unwrap()
    }

    /// Created and released at `node` with one line of two units.
    pub async fn released(&mut self, tenant: &str, node: &str) -> pb::FulfillmentOrder {
        let fo = self.create(tenant, node, &[("1", "SKU-A", 2)]).await;
        self.release(tenant, &fo.name).await
    }

    /// The first `n` events of `tenant`'s feed.
    pub async fn feed(
        &mut self,
        tenant: &str,
        n: usize,
    ) -> Vec<pb::WatchFulfillmentEventsResponse> {
        let mut stream = self
            .client
            .watch_fulfillment_events(authed(tenant, pb::WatchFulfillmentEventsRequest::default()))
            .await
            .unwrap()
            .into_inner();
        let mut out = Vec::new();
        while out.len() < n {
            let e = tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .expect("feed event within 10 s")
                .unwrap()
                .unwrap();
            out.push(e);
        }
        out
    }
}

pub fn new_order(node: &str, lines: &[(&str, &str, i64)]) -> pb::FulfillmentOrder {
    pb::FulfillmentOrder {
        order: "orders/0192f3a0-0000-7000-8000-000000000001".into(),
        node_id: node.into(),
        lines: lines
            .iter()
            .map(|(id, sku, q)| pb::FulfillmentLine {
                line_id: (*id).into(),
                sku: (*sku).into(),
                quantity: *q,
                ..Default::default()
            })
            .collect(),
        ship_to: Some(oms_proto::common::PostalAddress {
            country_code: "DE".into(),
            city: "Berlin".into(),
            ..Default::default()
        }),
        carrier_service: "dhl_paket".into(),
        ..Default::default()
    }
}
