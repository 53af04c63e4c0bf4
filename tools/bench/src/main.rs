//! `oms-bench`: the OMS's own benchmark scenarios. Each starts what it
//! measures in-process on a fresh database (real Postgres, real Redis,
//! real gRPC over loopback), drives it for a fixed time, verifies the
//! outcome, and prints one JSON line. `make bench` prints them beside the
//! raw baselines measured in the same run.
#![allow(clippy::unwrap_used)]

mod expiry;
mod fulfillment;
mod hot_sku;
mod import;
mod ingest;
mod load;
mod rebuild;
mod routing;
mod stock;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "oms-bench")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Abandoned carts: reservations of one unit left to expire, and how
    /// fast the sweep gives their units back.
    Expiry(expiry::Args),
    /// Concurrent clients each reserving one unit of one SKU through gRPC.
    HotSku(hot_sku::Args),
    /// Stock snapshot imports of every SKU at every node: the first count,
    /// the same again, and one that lowers every figure.
    Import(import::Args),
    /// Concurrent clients submitting 3-line orders through ingest.
    Ingest(ingest::Args),
    /// Status events through one fulfillment process, and release to
    /// adapter acknowledgement.
    Fulfillment(fulfillment::Args),
    /// Recovery of the reservation gate: Reconcile, and the rebuild after
    /// Redis lost its data, for a tenant with much stock and many
    /// reservations, beside a raw floor.
    Rebuild(rebuild::Args),
    /// The sourcing engine in-process over 10 to 1,000 nodes, its gap to
    /// the optimum, and PlanOrder through gRPC.
    Routing(routing::Args),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().scenario {
        Scenario::Expiry(args) => expiry::run(args).await,
        Scenario::Fulfillment(args) => fulfillment::run(args).await,
        Scenario::HotSku(args) => hot_sku::run(args).await,
        Scenario::Import(args) => import::run(args).await,
        Scenario::Ingest(args) => ingest::run(args).await,
        Scenario::Rebuild(args) => rebuild::run(args).await,
        Scenario::Routing(args) => routing::run(args).await,
    }
}
