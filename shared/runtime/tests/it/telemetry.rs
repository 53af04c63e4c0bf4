//! Spans reach an OTLP collector when OTEL_EXPORTER_OTLP_ENDPOINT is set:
//! here one served over TLS that asks for a client certificate, as a
//! collector outside the cluster may (the plaintext one is in the suite's
//! metrics test). This binary owns the global subscriber, so it holds this
//! one test.
use oms_runtime::{Config, Service};
use oms_testkit::pki::{Pki, path};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};
use tokio::sync::mpsc;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic::{Request, Response, Status};

struct Collector(mpsc::UnboundedSender<ExportTraceServiceRequest>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        req: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let _ = self.0.send(req.into_inner());
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_are_exported_over_otlp_with_the_service_name() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let pki = Pki::new("collector CA");
    let (collector, exporter) = (pki.issue("collector"), pki.issue("inventory"));
    let read = |p: &std::path::Path| std::fs::read(p).unwrap();
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(
            read(&collector.cert),
            read(&collector.key),
        ))
        .client_ca_root(Certificate::from_pem(read(&pki.ca)));
    tokio::spawn(
        tonic::transport::Server::builder()
            .tls_config(tls)
            .unwrap()
            .add_service(TraceServiceServer::new(Collector(tx)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let vars = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("https://{addr}")),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", path(&pki.ca)),
        (
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
            path(&exporter.cert),
        ),
        ("OTEL_EXPORTER_OTLP_CLIENT_KEY", path(&exporter.key)),
    ];
    let config = Config::from_pairs(Service::Inventory, &vars).unwrap();
    let guard = oms_runtime::telemetry::init("inventory", &config.log).unwrap();
    {
        let span = tracing::info_span!("reserve-stock", sku = "SKU-1");
        let _entered = span.enter();
        tracing::info!("inside");
    }
    // Shutdown flushes the batch exporter; it blocks, so off the runtime.
    tokio::task::spawn_blocking(move || guard.shutdown())
        .await
        .unwrap();

    // The collector queued the export before answering it, and shutdown
    // waited for that answer: it is there, or it never came.
    let export = rx.try_recv().expect("the collector received an export");
    let resource = export.resource_spans[0].resource.as_ref().unwrap();
    let service_name = resource
        .attributes
        .iter()
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| kv.value.as_ref())
        .map(|v| format!("{v:?}"))
        .unwrap();
    assert!(service_name.contains("oms-inventory"), "{service_name}");
    let names: Vec<_> = export
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .map(|s| s.name.clone())
        .collect();
    assert!(names.contains(&"reserve-stock".to_string()), "{names:?}");
}
