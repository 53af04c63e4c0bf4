//! The fulfillment service: fulfillment orders per node, released to WMS
//! adapters over a bidirectional stream that carries commands out and
//! status events back, each exactly once.
//!
//! `work` is the fulfillment orders' use cases; `bridge` the adapter
//! stream; `events` the status events it applies; `state` the states and
//! their moves; `inbound` advance shipping notices and receipts, which
//! `posting` carries to the inventory ledger; `messages` the notes between
//! office and warehouse; `health` the adapters' metrics; `repo` the SQL;
//! `grpc` the API edge.
mod bridge;
mod events;
mod expected_inbound;
mod grpc;
mod health;
mod inbound;
mod inventory;
mod messages;
mod posting;
mod repo;
mod service;
mod state;
mod work;

pub use service::BridgeConfig;

use oms_proto::fulfillment::fulfillment_service_server::FulfillmentServiceServer;
use oms_runtime::{
    Config, Service,
    auth::{Authenticator, TokenIssuer},
    outbox::FeedWaker,
    server::GrpcServer,
};
use std::{sync::Arc, time::Duration};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Runs the fulfillment service on `listener` until `shutdown`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    run_with(config, BridgeConfig::default(), listener, shutdown).await
}

/// [`run`] with adapter streams configured (tests shorten the times).
pub async fn run_with(
    config: Config,
    bridge: BridgeConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let pool = oms_runtime::db::connect_and_migrate(
        &config.database,
        Some(&MIGRATOR),
        Duration::from_secs(30),
    )
    .await?;
    let posting = Arc::new(Notify::new());
    let inventory = inventory::Inventory {
        channel: oms_runtime::client::peer(&config, Service::Inventory)?,
        issuer: TokenIssuer::new(&config.auth),
    };
    posting::Poster {
        pool: pool.clone(),
        inventory: inventory.clone(),
        wake: posting.clone(),
    }
    .start(config.sweep_interval, shutdown.clone());
    oms_runtime::retention::start(&pool, &config, shutdown.clone());
    let fulfillment = Arc::new(service::Fulfillment {
        pool: pool.clone(),
        waker: FeedWaker::start(&pool, shutdown.clone()),
        shutdown: shutdown.clone(),
        bridge,
        posting,
        inventory,
        health: health::Health::new(),
    });
    GrpcServer::new(&config)
        .with_service(FulfillmentServiceServer::with_interceptor(
            grpc::FulfillmentApi(fulfillment),
            Authenticator::new(&config.auth),
        ))
        .with_db(&pool)
        .serve(listener, shutdown)
        .await
}
