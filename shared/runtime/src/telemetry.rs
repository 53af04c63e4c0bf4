//! Logs, traces and metrics.
//!
//! Logs are JSON lines (or pretty for people) carrying the request span's
//! `trace_id`. Spans always get W3C trace ids, so a trace id is logged and
//! propagated even with no collector; when `OTEL_EXPORTER_OTLP_ENDPOINT` is
//! set, traces and metrics are exported over OTLP/gRPC as configured by the
//! standard `OTEL_*` variables.
use crate::config::{LogConfig, LogFormat};
use opentelemetry::{global, trace::TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::{
    Resource, metrics::SdkMeterProvider, propagation::TraceContextPropagator,
    trace::SdkTracerProvider,
};
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

/// Flushes and stops exporters when the service ends.
pub struct TelemetryGuard {
    tracer: SdkTracerProvider,
    meter: Option<SdkMeterProvider>,
}

impl TelemetryGuard {
    pub fn shutdown(self) {
        if let Err(e) = self.tracer.shutdown() {
            eprintln!("trace exporter shutdown: {e}");
        }
        if let Some(m) = self.meter
            && let Err(e) = m.shutdown()
        {
            eprintln!("metric exporter shutdown: {e}");
        }
    }
}

fn resource(service: &str) -> Resource {
    let builder = Resource::builder();
    // OTEL_SERVICE_NAME wins when set (the env detector reads it).
    if std::env::var("OTEL_SERVICE_NAME").is_ok_and(|s| !s.is_empty()) {
        builder.build()
    } else {
        builder.with_service_name(format!("oms-{service}")).build()
    }
}

/// An `https://` collector is checked against the public CAs (a hosted
/// backend) and `OTEL_EXPORTER_OTLP_CERTIFICATE` (one of your own). Before
/// 2026-12-05 such an endpoint stopped the service at start ("uses HTTPS
/// but no TLS feature is enabled").
fn otlp_tls(log: &LogConfig) -> tonic::transport::ClientTlsConfig {
    let own = log.otlp_tls.as_ref().map(|t| t.client());
    own.unwrap_or_default().with_webpki_roots()
}

/// Installs the global subscriber, tracer and meter providers and the W3C
/// trace-context propagator.
pub fn init(service: &str, log: &LogConfig) -> anyhow::Result<TelemetryGuard> {
    global::set_text_map_propagator(TraceContextPropagator::new());
    let resource = resource(service);
    let mut tracer = SdkTracerProvider::builder().with_resource(resource.clone());
    let mut meter = None;
    if let Some(endpoint) = &log.otlp_endpoint {
        let mut spans = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint);
        let mut metrics = opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint);
        if endpoint.starts_with("https://") {
            spans = spans.with_tls_config(otlp_tls(log));
            metrics = metrics.with_tls_config(otlp_tls(log));
        }
        tracer = tracer.with_batch_exporter(spans.build()?);
        let metrics = metrics.build()?;
        let provider = SdkMeterProvider::builder()
            .with_resource(resource)
            .with_periodic_exporter(metrics)
            .build();
        global::set_meter_provider(provider.clone());
        meter = Some(provider);
    }
    let tracer = tracer.build();
    global::set_tracer_provider(tracer.clone());
    let otel = tracing_opentelemetry::layer().with_tracer(tracer.tracer("oms"));

    let filter = EnvFilter::try_new(&log.filter).unwrap_or_else(|e| {
        eprintln!(
            "OMS_LOG={:?} is not a valid filter ({e}); using info",
            log.filter
        );
        EnvFilter::new("info")
    });
    let fmt = match log.format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer().compact().boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()?;
    Ok(TelemetryGuard { tracer, meter })
}

/// For tests: the propagator and a tracer (no exporter) so trace ids flow
/// between in-process services; logs only when `TEST_LOG` is set. Safe to
/// call many times.
pub fn init_for_tests() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        global::set_text_map_propagator(TraceContextPropagator::new());
        let tracer = SdkTracerProvider::builder().build();
        global::set_tracer_provider(tracer.clone());
        let otel = tracing_opentelemetry::layer().with_tracer(tracer.tracer("oms-test"));
        // One filter for every layer: without it h2 and hyper trace events
        // would all reach the span layer and cost far more than the calls.
        let filter = EnvFilter::new(
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info,sqlx::postgres::notice=warn".into()),
        );
        let fmt = std::env::var("TEST_LOG").is_ok().then(|| {
            tracing_subscriber::fmt::layer()
                .compact()
                .with_test_writer()
        });
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(otel)
            .with(fmt)
            .try_init();
    });
}
