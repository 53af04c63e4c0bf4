//! A WMS adapter on fulfillment's adapter stream, driven by a test: what
//! it sends and what it receives, for reports the simulator never sends.
use crate::authed;
use oms_proto::fulfillment::{
    self as pb, ConnectAdapterRequest, ConnectAdapterResponse,
    connect_adapter_request::Message as In, connect_adapter_response::Message as Out,
    fulfillment_service_client::FulfillmentServiceClient,
};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Streaming, transport::Channel};

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
    fulfillment: &Channel,
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
    let mut client = FulfillmentServiceClient::new(fulfillment.clone());
    let resp = client
        .connect_adapter(authed(tenant, ReceiverStream::new(rx)))
        .await?;
    Ok((tx, resp.into_inner()))
}

impl Adapter {
    pub async fn connect(
        fulfillment: &Channel,
        tenant: &str,
        id: &str,
        nodes: &[&str],
        last: i64,
    ) -> Adapter {
        let (tx, mut rx) = open(fulfillment, tenant, hello(id, nodes, last))
            .await
            .unwrap();
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
    tokio::time::timeout(Duration::from_secs(30), rx.message())
        .await
        .expect("a message within 30 s")
        .expect("stream ok")
        .expect("stream open")
        .message
        .expect("message set")
}

impl Adapter {
    /// Takes (acknowledges) commands until the release of `order`'s work
    /// at the adapter's nodes; returns that fulfillment order.
    pub async fn release_of(&mut self, order: &str) -> pb::FulfillmentOrder {
        loop {
            let Out::Command(c) = self.next().await else {
                continue;
            };
            self.ack(c.sequence).await;
            if let Some(pb::command::Kind::Release(fo)) = c.kind
                && fo.order == order
            {
                return fo;
            }
        }
    }

    /// Reports `fo` shipped as `lines` (carrier `dhl`, the event id as the
    /// tracking number); returns the report's answer.
    pub async fn ship(
        &mut self,
        fo: &pb::FulfillmentOrder,
        event_id: &str,
        lines: Vec<pb::ShippedLine>,
    ) -> pb::EventAck {
        let shipment = pb::Shipment {
            carrier: "dhl".into(),
            tracking_number: event_id.into(),
            lines,
            ship_time: None,
        };
        let shipped = pb::OrderShipped {
            shipment: Some(shipment),
        };
        let kind = pb::status_event::Kind::Shipped(shipped);
        self.report(event_id, &fo.node_id, &fo.name, kind).await
    }
}

/// The line of `fo` of `sku`, shipped: `quantity` units with `serials`.
pub fn shipped_line(
    fo: &pb::FulfillmentOrder,
    sku: &str,
    quantity: i64,
    serials: &[&str],
) -> pb::ShippedLine {
    let line = fo.lines.iter().find(|l| l.sku == sku).unwrap();
    pb::ShippedLine {
        line_id: line.line_id.clone(),
        sku: sku.into(),
        quantity,
        serial_numbers: serials.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}
