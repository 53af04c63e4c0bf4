//! Calling other services: lazily connected channels, and an interceptor
//! that carries the W3C trace context and a bearer token, so one order is
//! one trace across services and every call is authenticated.
use crate::auth::TokenIssuer;
use oms_kernel::Tenant;
use opentelemetry::propagation::Injector;
use std::time::Duration;
use tonic::{
    Request, Status,
    metadata::{MetadataKey, MetadataMap, MetadataValue},
    transport::{Channel, Endpoint},
};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// How long a unary call to a peer may take: a hung peer must not hold a
/// caller's transaction (the saga's, ingest's) forever.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A channel that connects on first use and reconnects by itself; unary
/// calls on it time out after [`CALL_TIMEOUT`].
pub fn channel(url: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(5))
        .timeout(CALL_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        // Feeds stream small events to the caller: see `crate::http2`.
        .initial_stream_window_size(crate::http2::STREAM_WINDOW)
        .initial_connection_window_size(crate::http2::CONNECTION_WINDOW)
        .connect_lazy())
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(k, v);
        }
    }
}

/// Writes the current span's trace context into outgoing metadata.
pub fn inject_trace_context(metadata: &mut MetadataMap) {
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut MetadataInjector(metadata))
    });
}

/// Interceptor for service-to-service calls on behalf of a tenant.
#[derive(Clone)]
pub struct Outbound {
    bearer: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl Outbound {
    /// Calls carrying a short-lived token for `tenant` signed as `subject`.
    pub fn for_tenant(issuer: &TokenIssuer, tenant: &Tenant, subject: &str) -> Self {
        let token = issuer.mint(tenant, subject, Duration::from_secs(300));
        Self {
            bearer: MetadataValue::try_from(format!("Bearer {token}")).ok(),
        }
    }
}

impl tonic::service::Interceptor for Outbound {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        inject_trace_context(req.metadata_mut());
        if let Some(b) = &self.bearer {
            req.metadata_mut().insert("authorization", b.clone());
        }
        Ok(req)
    }
}
