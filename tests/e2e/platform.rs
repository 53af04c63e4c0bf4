//! What every service offers whatever it does: health, complete reflection,
//! authentication, UNIMPLEMENTED for what is not built, graceful drain.
use futures::StreamExt as _;
use oms_e2e::Suite;
use oms_runtime::Service;
use oms_testkit::authed;
use tonic::Code;

const SERVICE_NAMES: [(Service, &str); 8] = [
    (Service::Ingest, "oms.ingest.v1.IngestService"),
    (Service::Orders, "oms.orders.v1.OrderService"),
    (Service::Inventory, "oms.inventory.v1.InventoryService"),
    (Service::Routing, "oms.routing.v1.RoutingService"),
    (
        Service::Fulfillment,
        "oms.fulfillment.v1.FulfillmentService",
    ),
    (Service::Returns, "oms.returns.v1.ReturnService"),
    (Service::Billing, "oms.billing.v1.BillingService"),
    (
        Service::Notifications,
        "oms.notifications.v1.NotificationService",
    ),
];

#[tokio::test]
async fn every_service_is_healthy_and_fully_reflected() {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let suite = Suite::start().await;
    for (svc, name) in SERVICE_NAMES {
        let ch = suite.channel(svc);
        let status = HealthClient::new(ch.clone())
            .check(HealthCheckRequest {
                service: name.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, 1, "{name} SERVING");

        let listed = reflected_services(ch.clone()).await;
        let mut reflection = ServerReflectionClient::new(ch.clone());
        let requests = vec![
            MessageRequest::FileContainingSymbol(name.into()),
            // grpcurl decodes error details by resolving these.
            MessageRequest::FileContainingSymbol("google.rpc.BadRequest".into()),
            MessageRequest::FileContainingSymbol("google.rpc.ErrorInfo".into()),
        ]
        .into_iter()
        .map(|m| ServerReflectionRequest {
            host: String::new(),
            message_request: Some(m),
        });
        let mut answers = reflection
            .server_reflection_info(tokio_stream::iter(requests))
            .await
            .unwrap()
            .into_inner();
        assert!(
            listed.contains(&name.to_string()),
            "{name} lists {listed:?}"
        );
        assert!(listed.contains(&"grpc.health.v1.Health".to_string()));
        assert!(
            !listed.iter().any(|l| l.starts_with("oms.") && l != name),
            "{name} lists only what it serves: {listed:?}"
        );
        for _ in 0..3 {
            match answers
                .next()
                .await
                .unwrap()
                .unwrap()
                .message_response
                .unwrap()
            {
                MessageResponse::FileDescriptorResponse(f) => {
                    assert!(!f.file_descriptor_proto.is_empty())
                }
                other => panic!("{name}: {other:?}"),
            }
        }

        // grpcurl 1.8 still speaks v1alpha.
        let mut alpha =
            tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient::new(
                ch,
            );
        let req = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
            ),
        };
        let answer = alpha
            .server_reflection_info(tokio_stream::iter(vec![req]))
            .await
            .unwrap()
            .into_inner()
            .next()
            .await
            .unwrap()
            .unwrap();
        assert!(format!("{answer:?}").contains(name), "{name} on v1alpha");
    }
}

#[tokio::test]
async fn unbuilt_methods_answer_unimplemented_behind_authentication() {
    use oms_proto::billing::{GetInvoiceRequest, billing_service_client::BillingServiceClient};
    use oms_proto::returns::{GetReturnRequest, return_service_client::ReturnServiceClient};
    let suite = Suite::start().await;
    let mut returns = ReturnServiceClient::new(suite.channel(Service::Returns));
    let err = returns
        .get_return(GetReturnRequest {
            name: "returns/1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "auth comes first");
    let err = returns
        .get_return(authed(
            "acme",
            GetReturnRequest {
                name: "returns/1".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    let err = BillingServiceClient::new(suite.channel(Service::Billing))
        .get_invoice(authed(
            "acme",
            GetInvoiceRequest {
                name: "invoices/1".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
}

#[tokio::test]
async fn every_service_owns_its_schema() {
    let suite = Suite::start().await;
    let mut db = suite.db.connect("public").await;
    let schemas: Vec<String> = sqlx_schemas(&mut db).await;
    for s in Service::ALL {
        assert!(
            schemas.contains(&s.name().to_string()),
            "{} schema in {schemas:?}",
            s.name()
        );
    }
}

async fn sqlx_schemas(db: &mut oms_testkit::PgConnection) -> Vec<String> {
    oms_testkit::query_strings(
        db,
        "SELECT schema_name::text FROM information_schema.schemata",
    )
    .await
}

#[tokio::test]
async fn a_stopped_service_drains_and_exits_cleanly() {
    let mut suite = Suite::start().await;
    let orders = suite.services.remove(&Service::Orders).unwrap();
    orders
        .stop()
        .await
        .expect("orders stops with Ok after drain");
}

/// What reflection (v1) lists at `channel`.
pub(crate) async fn reflected_services(channel: tonic::transport::Channel) -> Vec<String> {
    use futures::StreamExt as _;
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let list = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let answer = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter(vec![list]))
        .await
        .unwrap()
        .into_inner()
        .next()
        .await
        .unwrap()
        .unwrap();
    match answer.message_response.unwrap() {
        MessageResponse::ListServicesResponse(l) => l.service.into_iter().map(|s| s.name).collect(),
        other => panic!("{other:?}"),
    }
}
