//! The inventory service. Its API is designed (see `proto/oms/inventory/v1`) but
//! not built yet: every method answers UNIMPLEMENTED while the service
//! starts, owns its schema and serves health and reflection.

use oms_proto::inventory::inventory_service_server::{InventoryService, InventoryServiceServer};
use oms_runtime::{Config, auth::Authenticator, server::GrpcServer};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The API; methods not implemented here answer UNIMPLEMENTED.
pub struct Api;

#[tonic::async_trait]
impl InventoryService for Api {}

/// Runs the inventory service on `listener` until `shutdown`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let pool =
        oms_runtime::db::connect_and_migrate(&config.database, None, Duration::from_secs(30))
            .await?;
    // Redis gates reservations; health follows it as well as Postgres.
    let redis = oms_runtime::redis::connect(&config.redis).await?;
    let api = InventoryServiceServer::with_interceptor(Api, Authenticator::new(&config.auth));
    GrpcServer::new(&config)
        .with_service(api)
        .with_db(&pool)
        .with_redis(&redis)
        .serve(listener, shutdown)
        .await
}
