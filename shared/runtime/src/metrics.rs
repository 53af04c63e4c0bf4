//! RED metrics per gRPC method: `rpc.server.duration` (histogram, seconds)
//! labelled with `rpc.method` and `rpc.grpc.status_code`, exported through
//! the global meter provider (OTLP when configured); and the time left on
//! the TLS certificate a service serves.
use futures::future::BoxFuture;
use opentelemetry::{KeyValue, global, metrics::Histogram};
use std::{
    task::{Context, Poll},
    time::Instant,
};
use tower::{Layer, Service};

/// Bucket bounds of call durations, in seconds: those the OpenTelemetry
/// semantic conventions advise for request durations. Without them the
/// SDK's defaults (0, 5, 10, 25 … 10,000, made for milliseconds) put
/// every call under 5 s in one bucket, so a p99 computed from them was
/// about 4.95 s whatever the calls took (and the slow-calls alert, at 1 s,
/// fired for every method with traffic).
pub const DURATION_BOUNDS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

#[derive(Clone)]
pub struct RedLayer {
    duration: Histogram<f64>,
}

impl RedLayer {
    pub fn new(service: &'static str) -> Self {
        let meter = global::meter(service);
        Self {
            duration: meter
                .f64_histogram("rpc.server.duration")
                .with_unit("s")
                .with_description("gRPC server call duration")
                .with_boundaries(DURATION_BOUNDS.to_vec())
                .build(),
        }
    }
}

impl<S> Layer<S> for RedLayer {
    type Service = Red<S>;
    fn layer(&self, inner: S) -> Red<S> {
        Red {
            inner,
            duration: self.duration.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Red<S> {
    inner: S,
    duration: Histogram<f64>,
}

impl<S, B, R> Service<http::Request<B>> for Red<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // The clone that was polled ready must serve this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let method = req.uri().path().to_owned();
        let histogram = self.duration.clone();
        let start = Instant::now();
        Box::pin(async move {
            let res = inner.call(req).await;
            // Errors before the body are in the headers (trailers-only);
            // a body that ends with an error is counted by its first status.
            let code = match &res {
                Ok(r) => r
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("0")
                    .to_owned(),
                Err(_) => "14".to_owned(),
            };
            histogram.record(
                start.elapsed().as_secs_f64(),
                &[
                    KeyValue::new("rpc.method", method),
                    KeyValue::new("rpc.grpc.status_code", code),
                ],
            );
            res
        })
    }
}

/// `oms.tls.certificate.expiry`: seconds until the certificate the service
/// serves expires, observed while the returned gauge lives.
pub fn certificate_expiry(
    service: &'static str,
    tls: crate::tls::TlsConfig,
) -> opentelemetry::metrics::ObservableGauge<f64> {
    global::meter(service)
        .f64_observable_gauge("oms.tls.certificate.expiry")
        .with_unit("s")
        .with_description("Time until the TLS certificate this service serves expires")
        .with_callback(move |o| {
            if let Some(left) = tls.expires_in() {
                o.observe(left, &[]);
            }
        })
        .build()
}
