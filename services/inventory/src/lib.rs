//! The inventory service: nodes, items, the stock ledger, availability,
//! and reservations gated in Redis that never oversell.
//!
//! `grpc` is the API edge, `ops` the use cases (one transaction each),
//! `domain` pure rules, `repo` the SQL, `gate` the Redis scripts.

mod domain;
mod error;
mod gate;
mod grpc;
mod metrics;
mod ops;
mod repo;

use oms_proto::inventory::inventory_service_server::InventoryServiceServer;
use oms_runtime::{Config, auth::Authenticator, outbox::FeedWaker, server::GrpcServer};
use std::{sync::Arc, time::Duration};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Runs the inventory service on `listener` until `shutdown`.
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
    // Before any gate change: a replica that dies from now on is found.
    let replica = ops::replicas::join(&pool).await?;
    let redis = oms_runtime::redis::connect(&config.redis).await?;
    let gate = gate::Gate::new(redis.clone(), gate::GateKeys::new(&config.redis.key_prefix))
        .with_replicas(config.redis.min_replicas, config.redis.replica_timeout);
    oms_runtime::retention::start(&pool, &config, shutdown.clone());
    let waker = FeedWaker::start(&pool, shutdown.clone());
    ops::movements::start_copying_references(pool.clone(), shutdown.clone());
    let writer = ops::reservations::Writer::start(pool.clone(), gate.clone(), shutdown.clone());
    let inv = Arc::new(ops::Inventory {
        pool: pool.clone(),
        gate,
        waker,
        shutdown: shutdown.clone(),
        writer,
        metrics: metrics::Metrics::new(),
    });
    ops::replicas::start(inv.clone(), replica, config.sweep_interval);
    ops::reservations::start_sweeper(
        inv.clone(),
        config.sweep_interval,
        config.reservation_retention,
        config.idempotency_retention,
    );
    let api = InventoryServiceServer::with_interceptor(
        grpc::InventoryApi(inv),
        Authenticator::new(&config.auth),
    );
    let served = GrpcServer::new(&config)
        .with_service(api)
        .with_db(&pool)
        .with_redis(&redis)
        .serve(listener, shutdown)
        .await;
    ops::replicas::leave(&pool, replica).await;
    served
}
