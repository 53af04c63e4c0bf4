//! The fulfillment service. Its API is designed (see `proto/oms/fulfillment/v1`) but
//! not built yet: every method answers UNIMPLEMENTED while the service
//! starts, owns its schema and serves health and reflection.

use oms_proto::fulfillment::fulfillment_service_server::{
    FulfillmentService, FulfillmentServiceServer,
};
use oms_runtime::{Config, auth::Authenticator};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The API; methods not implemented here answer UNIMPLEMENTED.
pub struct Api;

#[tonic::async_trait]
impl FulfillmentService for Api {}

/// Runs the fulfillment service on `listener` until `shutdown`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let api = FulfillmentServiceServer::with_interceptor(Api, Authenticator::new(&config.auth));
    oms_runtime::server::serve_with_database(&config, None, listener, shutdown, api).await
}
