//! Integration health reaches an OTLP collector as metrics: streams open,
//! commands unacknowledged per adapter, adapter events by outcome. This
//! binary owns the global meter provider, so it holds this one test.
#![allow(clippy::unwrap_used)]
use oms_proto::fulfillment::{
    self as pb, ConnectAdapterRequest, connect_adapter_request::Message as In,
    connect_adapter_response::Message as Out, fulfillment_service_client::FulfillmentServiceClient,
};
use oms_runtime::Service;
use oms_testkit::{TestDb, authed};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

#[tokio::test(flavor = "multi_thread")]
async fn adapter_health_is_exported_as_metrics() {
    let (guard, mut rx) = oms_testkit::otlp::exporting(Service::Fulfillment).await;

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
    let seen = oms_testkit::otlp::points(&mut rx);
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
