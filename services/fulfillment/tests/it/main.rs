//! Fulfillment through real gRPC against a real Postgres (one database per
//! test), with adapters speaking the real bidirectional stream.
#![allow(clippy::unwrap_used)]

mod bridge;
mod inbound;
mod orders;

use oms_fulfillment::BridgeConfig;
use oms_proto::fulfillment::{
    self as pb, ConnectAdapterRequest, ConnectAdapterResponse,
    connect_adapter_request::Message as In, connect_adapter_response::Message as Out,
    fulfillment_service_client::FulfillmentServiceClient,
};
use oms_runtime::Service;
use oms_testkit::{Running, TestDb, authed};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Streaming, transport::Channel};

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

/// A WMS adapter as a test drives it: what it sends and what it receives.
pub struct Adapter {
    tx: mpsc::Sender<ConnectAdapterRequest>,
    rx: Streaming<ConnectAdapterResponse>,
    pub welcome: pb::AdapterWelcome,
}

pub fn hello(id: &str, nodes: &[&str], last: i64) -> ConnectAdapterRequest {
    ConnectAdapterRequest {
        message: Some(In::Hello(pb::AdapterHello {
            adapter_id: id.into(),
            node_ids: nodes.iter().map(|n| (*n).to_string()).collect(),
            last_processed_sequence: last,
            software: "test-adapter/1".into(),
        })),
    }
}

/// Opens a stream whose first message is `first`; the server's answer to
/// opening it.
pub async fn open(
    h: &Harness,
    tenant: &str,
    first: ConnectAdapterRequest,
) -> Result<
    (
        mpsc::Sender<ConnectAdapterRequest>,
        Streaming<ConnectAdapterResponse>,
    ),
    tonic::Status,
> {
    let (tx, rx) = mpsc::channel(64);
    tx.send(first).await.unwrap();
    let mut client = FulfillmentServiceClient::new(h.svc.channel());
    let resp = client
        .connect_adapter(authed(tenant, ReceiverStream::new(rx)))
        .await?;
    Ok((tx, resp.into_inner()))
}

impl Adapter {
    pub async fn connect(
        h: &Harness,
        tenant: &str,
        id: &str,
        nodes: &[&str],
        last: i64,
    ) -> Adapter {
        let (tx, mut rx) = open(h, tenant, hello(id, nodes, last)).await.unwrap();
        let welcome = match next(&mut rx).await {
            Out::Welcome(w) => w,
            other => panic!("expected welcome, got {other:?}"),
        };
        Adapter { tx, rx, welcome }
    }

    pub async fn send(&self, m: In) {
        self.tx
            .send(ConnectAdapterRequest { message: Some(m) })
            .await
            .unwrap();
    }

    pub async fn next(&mut self) -> Out {
        next(&mut self.rx).await
    }

    /// The next command (the stream must not carry anything else first).
    pub async fn command(&mut self) -> pb::Command {
        match self.next().await {
            Out::Command(c) => c,
            other => panic!("expected a command, got {other:?}"),
        }
    }

    pub async fn ack(&self, seq: i64) {
        self.send(In::Ack(pb::CommandAck { sequence: seq })).await;
    }

    /// Sends a status event and returns its acknowledgement.
    pub async fn report(
        &mut self,
        event_id: &str,
        node: &str,
        fo: &str,
        kind: pb::status_event::Kind,
    ) -> pb::EventAck {
        self.send(In::Status(pb::StatusEvent {
            event_id: event_id.into(),
            node_id: node.into(),
            fulfillment_order: fo.into(),
            occur_time: None,
            kind: Some(kind),
        }))
        .await;
        match self.next().await {
            Out::EventAck(a) => a,
            other => panic!("expected an event ack, got {other:?}"),
        }
    }
}

async fn next(rx: &mut Streaming<ConnectAdapterResponse>) -> Out {
    tokio::time::timeout(Duration::from_secs(10), rx.message())
        .await
        .expect("a message within 10 s")
        .expect("stream ok")
        .expect("stream open")
        .message
        .expect("message set")
}
