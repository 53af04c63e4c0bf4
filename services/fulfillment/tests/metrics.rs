//! Integration health reaches an OTLP collector as metrics: streams open,
//! commands unacknowledged per adapter, adapter events by outcome. This
//! binary owns the global meter provider, so it holds this one test.
#![allow(clippy::unwrap_used)]
use oms_proto::fulfillment::{
    self as pb, ConnectAdapterRequest, connect_adapter_request::Message as In,
    connect_adapter_response::Message as Out, fulfillment_service_client::FulfillmentServiceClient,
};
use oms_runtime::{Config, Service};
use oms_testkit::{TestDb, authed};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
    metrics_service_server::{MetricsService, MetricsServiceServer},
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point};
use std::collections::BTreeMap;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

struct Collector(mpsc::UnboundedSender<ExportMetricsServiceRequest>);

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        req: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let _ = self.0.send(req.into_inner());
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// Every data point of the export: (metric, its attributes) -> value.
fn points(export: &ExportMetricsServiceRequest) -> BTreeMap<(String, String), f64> {
    let mut out = BTreeMap::new();
    for m in export
        .resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
    {
        let dps = match &m.data {
            Some(Data::Gauge(g)) => &g.data_points,
            Some(Data::Sum(s)) => &s.data_points,
            _ => continue,
        };
        for dp in dps {
            let mut attrs: Vec<String> = dp
                .attributes
                .iter()
                .map(
                    |kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                        Some(Value::StringValue(s)) => format!("{}={s}", kv.key),
                        other => format!("{}={other:?}", kv.key),
                    },
                )
                .collect();
            attrs.sort();
            let v = match dp.value {
                Some(number_data_point::Value::AsInt(i)) => i as f64,
                Some(number_data_point::Value::AsDouble(d)) => d,
                None => continue,
            };
            out.insert((m.name.clone(), attrs.join(",")), v);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn adapter_health_is_exported_as_metrics() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(MetricsServiceServer::new(Collector(tx)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let endpoint = format!("http://{addr}");
    let log = Config::from_lookup(Service::Fulfillment, |k| {
        (k == "OTEL_EXPORTER_OTLP_ENDPOINT").then(|| endpoint.clone())
    })
    .unwrap()
    .log;
    let guard = oms_runtime::telemetry::init("fulfillment", &log).unwrap();

    let db = TestDb::new().await;
    let nowhere = ([127, 0, 0, 1], 9).into();
    let svc = oms_testkit::spawn(
        oms_testkit::config(Service::Fulfillment, &db, &[(Service::Inventory, nowhere)]),
        oms_fulfillment::run,
    )
    .await;
    let mut client = FulfillmentServiceClient::new(svc.channel());
    // Two released orders at DC1: two commands the adapter will not ack.
    for i in 0..2 {
        let fo = client
            .create_fulfillment_order(authed(
                "acme",
                pb::CreateFulfillmentOrderRequest {
                    request_id: format!("c{i}"),
                    fulfillment_order: Some(pb::FulfillmentOrder {
                        order: "orders/0192f3a0-0000-7000-8000-000000000001".into(),
                        node_id: "DC1".into(),
                        lines: vec![pb::FulfillmentLine {
                            line_id: "1".into(),
                            sku: "A".into(),
                            quantity: 1,
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .fulfillment_order
            .unwrap();
        client
            .release_fulfillment_order(authed(
                "acme",
                pb::ReleaseFulfillmentOrderRequest {
                    request_id: format!("r{i}"),
                    name: fo.name,
                },
            ))
            .await
            .unwrap();
    }
    let (out, rx_out) = mpsc::channel(8);
    out.send(ConnectAdapterRequest {
        message: Some(In::Hello(pb::AdapterHello {
            adapter_id: "wms-1".into(),
            node_ids: vec!["DC1".into()],
            last_processed_sequence: 0,
            software: "test".into(),
        })),
    })
    .await
    .unwrap();
    let mut stream = client
        .connect_adapter(authed("acme", ReceiverStream::new(rx_out)))
        .await
        .unwrap()
        .into_inner();
    let mut commands = 0;
    while commands < 2 {
        if let Some(Out::Command(_)) = stream.message().await.unwrap().unwrap().message {
            commands += 1;
        }
    }
    // One event refused (unknown order), answered before the export.
    out.send(ConnectAdapterRequest {
        message: Some(In::Status(pb::StatusEvent {
            event_id: "e1".into(),
            node_id: "DC1".into(),
            fulfillment_order: "fulfillmentOrders/0192f3a0-0000-7000-8000-000000000009".into(),
            occur_time: None,
            kind: Some(pb::status_event::Kind::Accepted(pb::OrderAccepted {})),
        })),
    })
    .await
    .unwrap();
    while !matches!(
        stream.message().await.unwrap().unwrap().message,
        Some(Out::EventAck(_))
    ) {}

    // Shutdown collects and flushes; it blocks, so off the runtime.
    tokio::task::spawn_blocking(move || guard.shutdown())
        .await
        .unwrap();
    let mut seen = BTreeMap::new();
    while let Ok(export) = rx.try_recv() {
        seen.extend(points(&export));
    }
    let get = |name: &str, attrs: &str| seen.get(&(name.to_string(), attrs.to_string())).copied();
    assert_eq!(
        get("oms.fulfillment.adapter.streams", "tenant=acme"),
        Some(1.0),
        "{seen:#?}"
    );
    assert_eq!(
        get(
            "oms.fulfillment.adapter.unacknowledged_commands",
            "adapter=wms-1,tenant=acme"
        ),
        Some(2.0)
    );
    assert!(
        get(
            "oms.fulfillment.adapter.silence",
            "adapter=wms-1,tenant=acme"
        )
        .is_some()
    );
    assert_eq!(
        get(
            "oms.fulfillment.adapter.events",
            "outcome=refused,tenant=acme"
        ),
        Some(1.0)
    );
    drop(out);
    svc.stop().await.unwrap();
}
