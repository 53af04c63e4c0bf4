//! The routing service: sourcing rules per tenant (versioned, activated,
//! rolled back), plans with their explanation, simulations and reroutes.
//!
//! `engine` is the pure sourcing engine; `grpc` the API edge; `rulesets`
//! and `planning` the use cases; `network` what comes from inventory;
//! `repo` the SQL.
pub mod engine;
mod grpc;
mod input;
pub mod network;
mod planning;
mod repo;
mod rulesets;
mod service;

use oms_proto::routing::routing_service_server::RoutingServiceServer;
use oms_runtime::{
    Config, Service, auth::Authenticator, auth::TokenIssuer, outbox::FeedWaker, server::GrpcServer,
};
use std::{sync::Arc, time::Duration};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Runs the routing service on `listener` until `shutdown`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let pool = oms_runtime::db::connect_and_migrate(
        &config.database,
        Some(&MIGRATOR),
        Duration::from_secs(30),
    )
    .await?;
    let inventory = network::Inventory::new(
        oms_runtime::client::peer(&config, Service::Inventory)?,
        TokenIssuer::new(&config.auth),
    );
    oms_runtime::retention::start(&pool, &config, shutdown.clone());
    let routing = Arc::new(service::Routing {
        pool: pool.clone(),
        inventory,
        waker: FeedWaker::start(&pool, shutdown.clone()),
        shutdown: shutdown.clone(),
    });
    GrpcServer::new(&config)
        .with_service(RoutingServiceServer::with_interceptor(
            grpc::RoutingApi(routing),
            Authenticator::new(&config.auth),
        ))
        .with_db(&pool)
        .serve(listener, shutdown)
        .await
}
