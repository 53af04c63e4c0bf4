//! The server's deadline for calls that answer once (`OMS_REQUEST_TIMEOUT_MS`):
//! unary calls, and client streams, which were limited alike before
//! 2026-12-04 (tonic's server timeout covers every call until its answer).
//! A client stream answers when the caller has sent everything and the
//! work is done: a stock snapshot of 100,000 rows takes minutes, and was
//! cancelled at 30 s whatever the caller's own deadline. Calls that stream
//! their answers (feeds, `StreamReservations`, the WMS bridge) answer at
//! once and were never limited. A caller's `grpc-timeout` still applies to
//! every call (tonic enforces it).
use futures::future::BoxFuture;
use std::collections::HashSet;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::body::Body;
use tower::{Layer, Service};

/// Limits every call but those of client-streaming methods to `timeout`.
#[derive(Clone)]
pub struct DeadlineLayer {
    timeout: Duration,
    client_streams: Arc<HashSet<String>>,
}

impl DeadlineLayer {
    /// `descriptors`: encoded `FileDescriptorSet`s of the services served,
    /// where the client-streaming methods are found.
    pub fn new(timeout: Duration, descriptors: &[&[u8]]) -> anyhow::Result<Self> {
        let mut client_streams = HashSet::new();
        for set in descriptors {
            let set: prost_types::FileDescriptorSet = prost::Message::decode(*set)?;
            for file in &set.file {
                for service in &file.service {
                    for method in &service.method {
                        if method.client_streaming() {
                            client_streams.insert(format!(
                                "/{}.{}/{}",
                                file.package(),
                                service.name(),
                                method.name()
                            ));
                        }
                    }
                }
            }
        }
        Ok(Self {
            timeout,
            client_streams: Arc::new(client_streams),
        })
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Deadline<S> {
    inner: S,
    layer: DeadlineLayer,
}

impl<S, B> Service<http::Request<B>> for Deadline<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<http::Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let limited = !self.layer.client_streams.contains(req.uri().path());
        let timeout = self.layer.timeout;
        let answer = self.inner.call(req);
        Box::pin(async move {
            if !limited {
                return answer.await;
            }
            match tokio::time::timeout(timeout, answer).await {
                Ok(answer) => answer,
                // As tonic's own server timeout answered.
                Err(_) => Ok(tonic::Status::cancelled("Timeout expired").into_http()),
            }
        })
    }
}
