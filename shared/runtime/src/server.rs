//! gRPC server bootstrap shared by every service: health (NOT_SERVING while
//! a dependency is down and during drain), reflection v1 and v1alpha with
//! the whole descriptor set (so grpcurl can decode error details), a span
//! per call that continues the caller's W3C trace, RED metrics, request
//! timeout, concurrency limit with load shedding, and graceful drain.
use crate::{config::Config, metrics::RedLayer, redis::RedisConn};
use http::HeaderMap;
use opentelemetry::{propagation::Extractor, trace::TraceContextExt as _};
use sqlx::PgPool;
use std::{convert::Infallible, time::Duration};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::{body::Body, server::NamedService, service::RoutesBuilder};
use tonic_health::pb::health_server::HealthServer;
use tonic_health::{
    ServingStatus,
    server::{HealthReporter, HealthService},
};
use tower::{Service, limit::GlobalConcurrencyLimitLayer};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// A response body tonic's router can carry.
pub trait ResponseBody:
    http_body::Body<Data = bytes::Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
    + Send
    + 'static
{
}
impl<B> ResponseBody for B where
    B: http_body::Body<Data = bytes::Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + 'static
{
}

/// A generated gRPC server (usually wrapped in the auth interceptor).
pub trait GrpcService<B>:
    Service<
        http::Request<Body>,
        Response = http::Response<B>,
        Error = Infallible,
        Future: Send + 'static,
    > + NamedService
    + Clone
    + Send
    + Sync
    + 'static
{
}
impl<S, B> GrpcService<B> for S where
    S: Service<
            http::Request<Body>,
            Response = http::Response<B>,
            Error = Infallible,
            Future: Send + 'static,
        > + NamedService
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// Collects a service's gRPC services and dependencies, then serves them.
pub struct GrpcServer {
    config: Config,
    routes: RoutesBuilder,
    /// Also served alone on `OMS_HEALTH_LISTEN_ADDR`.
    health_service: HealthGrpc,
    names: Vec<&'static str>,
    health: HealthReporter,
    db: Option<PgPool>,
    redis: Option<RedisConn>,
}

impl GrpcServer {
    pub fn new(config: &Config) -> Self {
        let health = HealthReporter::new();
        let health_service = HealthServer::new(HealthService::from_health_reporter(health.clone()));
        let mut routes = RoutesBuilder::default();
        routes.add_service(health_service.clone());
        Self {
            config: config.clone(),
            routes,
            health_service,
            names: Vec::new(),
            health,
            db: None,
            redis: None,
        }
    }

    /// Adds a gRPC service (normally wrapped in the auth interceptor).
    pub fn with_service<S: GrpcService<B>, B: ResponseBody>(mut self, svc: S) -> Self {
        self.names.push(S::NAME);
        self.routes.add_service(svc);
        self
    }

    /// Health follows this database.
    pub fn with_db(mut self, pool: &PgPool) -> Self {
        self.db = Some(pool.clone());
        self
    }

    /// Health follows this Redis.
    pub fn with_redis(mut self, conn: &RedisConn) -> Self {
        self.redis = Some(conn.clone());
        self
    }

    /// Serves until `shutdown`, then goes NOT_SERVING, drains in-flight
    /// calls for up to the configured grace, and returns.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let GrpcServer {
            config,
            mut routes,
            health_service,
            names,
            health,
            db,
            redis,
        } = self;
        let service = config.service.name();
        // Every descriptor is registered (google.rpc included, so clients can
        // decode error details) but only the services served here are listed.
        let reflection = || {
            names.iter().fold(
                tonic_reflection::server::Builder::configure()
                    .register_encoded_file_descriptor_set(oms_proto::FILE_DESCRIPTOR_SET)
                    .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                    .with_service_name("grpc.health.v1.Health"),
                |b, n| b.with_service_name(*n),
            )
        };
        routes.add_service(reflection().build_v1()?);
        routes.add_service(reflection().build_v1alpha()?);

        let deadline = crate::deadline::DeadlineLayer::new(
            config.server.request_timeout,
            &[oms_proto::FILE_DESCRIPTOR_SET],
        )?;
        let limit = config.server.concurrency_limit;
        let drain = shutdown.clone();
        let reporter = health.clone();
        let drain_names = names.clone();
        let _tls_watch = config.tls.clone().map(|t| t.watch(service));
        let tls = config.tls.as_ref().and_then(|t| t.server());
        let health_port = match config.health_listen_addr {
            Some(addr) => {
                let listener = TcpListener::bind(addr).await.map_err(|e| {
                    anyhow::anyhow!("cannot listen on {addr} (OMS_HEALTH_LISTEN_ADDR): {e}")
                })?;
                Some(tokio::spawn(serve_health(listener, health_service.clone())))
            }
            None => None,
        };
        // Only now, with every fallible step of the start behind: a start
        // that fails leaves no watcher running.
        set_all(&health, &names, ServingStatus::Serving).await;
        let watcher = tokio::spawn(watch_dependencies(
            health.clone(),
            names.clone(),
            db,
            redis,
            shutdown.clone(),
        ));
        let server = tonic::transport::Server::builder()
            .trace_fn(request_span)
            .concurrency_limit_per_connection(limit)
            .load_shed(true)
            .tcp_nodelay(true)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .initial_stream_window_size(crate::http2::STREAM_WINDOW)
            .initial_connection_window_size(crate::http2::CONNECTION_WINDOW)
            .layer(GlobalConcurrencyLimitLayer::new(limit))
            .layer(RedLayer::new(config.service.name()))
            .layer(deadline)
            .add_routes(routes.routes());
        let drained = async move {
            drain.cancelled().await;
            set_all(&reporter, &drain_names, ServingStatus::NotServing).await;
        };
        // `tcp_nodelay` above applies only to listeners tonic binds itself;
        // without it here every response waits out Nagle and the peer's
        // delayed ACK (~40 ms).
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let server: futures::future::BoxFuture<'static, Result<(), tonic::transport::Error>> =
            match tls {
                // TLS accepted here, not by tonic, so that renewed files are
                // used without a restart (`tls_live`).
                Some(tls) => {
                    let incoming = crate::tls_live::accept(incoming, tls);
                    Box::pin(server.serve_with_incoming_shutdown(incoming, drained))
                }
                None => Box::pin(server.serve_with_incoming_shutdown(incoming, drained)),
            };
        let mut server = tokio::spawn(server);
        let result = tokio::select! {
            r = &mut server => r,
            _ = shutdown.cancelled() => {
                match tokio::time::timeout(config.server.shutdown_grace, &mut server).await {
                    Ok(r) => r,
                    Err(_) => {
                        tracing::warn!("calls still running after the shutdown grace; stopping");
                        server.abort();
                        Ok(Ok(()))
                    }
                }
            }
        };
        watcher.abort();
        if let Some(h) = health_port {
            h.abort();
        }
        result??;
        tracing::info!(service, "stopped");
        Ok(())
    }
}

type HealthGrpc = HealthServer<HealthService>;

/// The health service alone, in plaintext, for probes that cannot speak
/// TLS (the kubelet's gRPC probe); it reports what the main port does,
/// NOT_SERVING while that drains too, until the server stops it.
/// Reflection lists it alone, so grpcurl can call it there too.
async fn serve_health(listener: TcpListener, health: HealthGrpc) -> anyhow::Result<()> {
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("grpc.health.v1.Health")
    };
    Ok(tonic::transport::Server::builder()
        .add_service(health)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true)))
        .await?)
}

async fn set_all(health: &HealthReporter, names: &[&'static str], status: ServingStatus) {
    health.set_service_status("", status).await;
    for n in names {
        health.set_service_status(*n, status).await;
    }
}

/// The whole `run` of a service that only needs its database: connect and
/// migrate its schema, then serve `svc` with health following the database.
pub async fn serve_with_database<S: GrpcService<B>, B: ResponseBody>(
    config: &Config,
    migrator: Option<&sqlx::migrate::Migrator>,
    listener: TcpListener,
    shutdown: CancellationToken,
    svc: S,
) -> anyhow::Result<()> {
    let pool =
        crate::db::connect_and_migrate(&config.database, migrator, Duration::from_secs(30)).await?;
    GrpcServer::new(config)
        .with_service(svc)
        .with_db(&pool)
        .serve(listener, shutdown)
        .await
}

/// Marks the service NOT_SERVING while its database or Redis is down.
async fn watch_dependencies(
    health: HealthReporter,
    names: Vec<&'static str>,
    db: Option<PgPool>,
    mut redis: Option<RedisConn>,
    shutdown: CancellationToken,
) {
    let mut serving = true;
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let db_ok = match &db {
            Some(p) => crate::db::ping(p).await,
            None => true,
        };
        let redis_ok = match &mut redis {
            Some(r) => crate::redis::ping(r).await,
            None => true,
        };
        let ok = db_ok && redis_ok;
        if ok != serving && !shutdown.is_cancelled() {
            tracing::warn!(db_ok, redis_ok, "dependency health changed");
            let status = if ok {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            set_all(&health, &names, status).await;
            serving = ok;
        }
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// One span per call, child of the caller's `traceparent` when present, with
/// its `trace_id` as a field so every log line of the call carries it.
fn request_span(req: &http::Request<()>) -> tracing::Span {
    let path = req.uri().path();
    let span = tracing::info_span!(
        "grpc",
        otel.name = %path.trim_start_matches('/'),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.method = %path,
        trace_id = tracing::field::Empty,
        tenant = tracing::field::Empty,
    );
    let parent = opentelemetry::global::get_text_map_propagator(|p| {
        p.extract(&HeaderExtractor(req.headers()))
    });
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    let trace_id = span.context().span().span_context().trace_id();
    span.record("trace_id", tracing::field::display(trace_id));
    span
}
