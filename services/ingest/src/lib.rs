//! The ingest service: sales channels, signed channel payloads mapped to
//! canonical orders (Shopify, WooCommerce, Amazon, Trendyol; canonical for
//! POS and generic), the raw payload audit log, dedupe of webhook retries,
//! and each channel's available-to-sell feed.
mod adapters;
mod availability;
mod grpc;
mod lines_left;
mod metrics;
mod order_creator;
mod repo;
pub mod signature;
mod skus;
mod submissions;
mod time;

use oms_proto::ingest::ingest_service_server::IngestServiceServer;
use oms_runtime::{Config, Service, auth::Authenticator, auth::TokenIssuer, server::GrpcServer};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Runs the ingest service on `listener` until `shutdown`.
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
    let orders = oms_runtime::client::peer(&config, Service::Orders)?;
    let api = grpc::IngestApi {
        pool: pool.clone(),
        submissions: submissions::Submissions::start(&pool, &shutdown),
        creator: order_creator::OrderCreator::start(
            orders.clone(),
            TokenIssuer::new(&config.auth),
            &shutdown,
        ),
        orders,
        inventory: oms_runtime::client::peer(&config, Service::Inventory)?,
        issuer: TokenIssuer::new(&config.auth),
        metrics: metrics::Metrics::new(),
        shutdown: shutdown.clone(),
    };
    GrpcServer::new(&config)
        .with_service(IngestServiceServer::with_interceptor(
            api,
            Authenticator::new(&config.auth),
        ))
        .with_db(&pool)
        .serve(listener, shutdown)
        .await
}
