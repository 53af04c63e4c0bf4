//! An OTLP metrics collector for tests: receives what a service exports
//! and flattens it into data points to assert on.
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
    metrics_service_server::{MetricsService, MetricsServiceServer},
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value::Value};
use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point};
use std::collections::BTreeMap;
use tokio::sync::mpsc;
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

/// Takes spans and drops them, as a collector without a trace pipeline
/// does: the service exports spans to the same endpoint, and a refusal
/// would log an export error in every test that collects metrics.
struct SpanSink;

#[tonic::async_trait]
impl TraceService for SpanSink {
    async fn export(
        &self,
        _req: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

/// A collector on an ephemeral port: its endpoint (for
/// `OTEL_EXPORTER_OTLP_ENDPOINT`) and the exports it receives.
pub async fn collector() -> (String, mpsc::UnboundedReceiver<ExportMetricsServiceRequest>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("a bound address");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(MetricsServiceServer::new(Collector(tx)))
            .add_service(TraceServiceServer::new(SpanSink))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (format!("http://{addr}"), rx)
}

/// This process's telemetry for `service`, exporting metrics (and spans)
/// to a new collector; what the collector receives. Once per test binary:
/// the meter provider is global.
pub async fn exporting(
    service: oms_runtime::Service,
) -> (
    oms_runtime::telemetry::TelemetryGuard,
    mpsc::UnboundedReceiver<ExportMetricsServiceRequest>,
) {
    let (endpoint, rx) = collector().await;
    let log = oms_runtime::Config::from_lookup(service, |k| {
        (k == "OTEL_EXPORTER_OTLP_ENDPOINT").then(|| endpoint.clone())
    })
    .expect("a config from the endpoint alone")
    .log;
    let guard = oms_runtime::telemetry::init(service.name(), &log).expect("telemetry starts");
    (guard, rx)
}

/// Every data point received so far: (metric, its attributes sorted and
/// joined as `k=v,k=v`) -> value; a later export overrides an earlier one.
/// A histogram's point is its count of values, and each of its buckets is
/// a point too, as Prometheus has it: `<metric>@le=<bound>` -> the count
/// of values at or under the bound.
pub fn points(
    rx: &mut mpsc::UnboundedReceiver<ExportMetricsServiceRequest>,
) -> BTreeMap<(String, String), f64> {
    let mut out = BTreeMap::new();
    while let Ok(export) = rx.try_recv() {
        for m in export
            .resource_metrics
            .iter()
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics)
        {
            if let Some(Data::Histogram(h)) = &m.data {
                for dp in &h.data_points {
                    let attrs = joined(&dp.attributes);
                    out.insert((m.name.clone(), attrs.clone()), dp.count as f64);
                    let mut below = 0;
                    for (bound, n) in dp.explicit_bounds.iter().zip(&dp.bucket_counts) {
                        below += n;
                        let name = format!("{}@le={bound}", m.name);
                        out.insert((name, attrs.clone()), below as f64);
                    }
                }
                continue;
            }
            let dps = match &m.data {
                Some(Data::Gauge(g)) => &g.data_points,
                Some(Data::Sum(s)) => &s.data_points,
                _ => continue,
            };
            for dp in dps {
                let v = match dp.value {
                    Some(number_data_point::Value::AsInt(i)) => i as f64,
                    Some(number_data_point::Value::AsDouble(d)) => d,
                    None => continue,
                };
                out.insert((m.name.clone(), joined(&dp.attributes)), v);
            }
        }
    }
    out
}

/// Attributes sorted and joined as `k=v,k=v`.
fn joined(attributes: &[KeyValue]) -> String {
    let mut attrs: Vec<String> = attributes
        .iter()
        .map(
            |kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => format!("{}={s}", kv.key),
                other => format!("{}={other:?}", kv.key),
            },
        )
        .collect();
    attrs.sort();
    attrs.join(",")
}
