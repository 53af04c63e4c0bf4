//! The orders service: the order of record and its lifecycle.
//!
//! `grpc` is the API edge (the only place errors become `Status`),
//! `domain` parses requests and guards state moves, `repo` holds the SQL.

mod changes;
mod domain;
mod error;
mod grpc;
mod intake;
mod metrics;
mod repo;
mod workers;

use oms_proto::orders::order_service_server::OrderServiceServer;
use oms_runtime::{Config, auth::Authenticator, outbox::FeedWaker, server::GrpcServer};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Runs the orders service on `listener` until `shutdown`.
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
    oms_runtime::retention::start(&pool, &config, shutdown.clone());
    let waker = FeedWaker::start(&pool, shutdown.clone());
    let channel = |s| oms_runtime::client::peer(&config, s);
    let peers = workers::peers::Peers {
        inventory: channel(oms_runtime::Service::Inventory)?,
        routing: channel(oms_runtime::Service::Routing)?,
        fulfillment: channel(oms_runtime::Service::Fulfillment)?,
        issuer: oms_runtime::auth::TokenIssuer::new(&config.auth),
    };
    let metrics = metrics::Metrics::new();
    let saga = workers::saga::Saga::new(pool.clone(), peers.clone(), metrics.clone());
    saga.clone().start(config.sweep_interval, shutdown.clone());
    workers::fulfillment_feed::FulfillmentFeed {
        pool: pool.clone(),
        peers: peers.clone(),
        metrics: metrics.clone(),
    }
    .start(config.sweep_interval, shutdown.clone());
    workers::demand_publisher::DemandPublisher {
        pool: pool.clone(),
        peers: peers.clone(),
        metrics: metrics.clone(),
    }
    .start(shutdown.clone());
    workers::stock_feed::StockFeed {
        pool: pool.clone(),
        peers,
        saga: saga.clone(),
        metrics,
    }
    .start(config.sweep_interval, shutdown.clone());
    let api = grpc::OrderApi::new(pool.clone(), waker, shutdown.clone(), saga);
    let auth = Authenticator::new(&config.auth);
    GrpcServer::new(&config)
        .with_service(OrderServiceServer::with_interceptor(api, auth))
        .with_db(&pool)
        .serve(listener, shutdown)
        .await
}
