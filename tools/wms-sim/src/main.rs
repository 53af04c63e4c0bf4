//! `oms-wms-sim`: a WMS for local runs and tests. See the crate docs.
use clap::Parser;
use oms_kernel::Tenant;
use oms_runtime::{Config, Service, auth::TokenIssuer};
use oms_wms_sim::Sim;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "oms-wms-sim", about = "Reference WMS simulator for the OMS")]
struct Args {
    /// The fulfillment service.
    #[arg(
        long,
        env = "OMS_WMS_SIM_URL",
        default_value = "http://127.0.0.1:50055"
    )]
    url: String,
    /// Tenants (depositors) whose work it takes, one stream each.
    #[arg(
        long,
        env = "OMS_WMS_SIM_TENANTS",
        value_delimiter = ',',
        default_value = "acme"
    )]
    tenants: Vec<String>,
    /// Nodes it serves.
    #[arg(
        long,
        env = "OMS_WMS_SIM_NODES",
        value_delimiter = ',',
        default_value = "DC1"
    )]
    nodes: Vec<String>,
    /// Adapter id.
    #[arg(long, env = "OMS_WMS_SIM_ADAPTER_ID", default_value = "wms-sim")]
    adapter_id: String,
    /// Milliseconds between the steps of a fulfillment order.
    #[arg(long, env = "OMS_WMS_SIM_STEP_MS", default_value_t = 500)]
    step_ms: u64,
    /// Share of fulfillment orders rejected (0..1).
    #[arg(long, env = "OMS_WMS_SIM_REJECT_RATE", default_value_t = 0.0)]
    reject_rate: f64,
    /// Share of fulfillment orders short-picked by one unit (0..1).
    #[arg(long, env = "OMS_WMS_SIM_SHORT_PICK_RATE", default_value_t = 0.0)]
    short_pick_rate: f64,
    /// Random seed (decisions to reject or short-pick).
    #[arg(long, env = "OMS_WMS_SIM_SEED", default_value_t = 1)]
    seed: u64,
    /// The inventory service, to pick lot-kept stock from (first expiring
    /// first, within each line's min_expiry_date); empty: ship lines as
    /// released.
    #[arg(
        long,
        env = "OMS_WMS_SIM_INVENTORY_URL",
        default_value = "http://127.0.0.1:50053"
    )]
    inventory_url: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Tokens are signed like the services' (OMS_AUTH_JWT_SECRET); logs
    // and traces go where theirs do.
    let config = Config::from_env(Service::Fulfillment)
        .map_err(|e| anyhow::anyhow!("invalid configuration:\n{e}"))?;
    let _telemetry = oms_runtime::telemetry::init("wms-sim", &config.log)?;
    let issuer = TokenIssuer::new(&config.auth);
    let shutdown = CancellationToken::new();
    let mut tasks = Vec::new();
    for t in &args.tenants {
        let tenant = Tenant::parse(t).map_err(anyhow::Error::msg)?;
        let sim = Sim {
            url: args.url.clone(),
            tenant,
            issuer: issuer.clone(),
            adapter_id: args.adapter_id.clone(),
            nodes: args.nodes.clone(),
            step: Duration::from_millis(args.step_ms),
            reject_rate: args.reject_rate,
            short_pick_rate: args.short_pick_rate,
            seed: args.seed,
            inventory_url: Some(args.inventory_url.clone()).filter(|u| !u.is_empty()),
            tls: config.tls.clone(),
        };
        tasks.push(tokio::spawn(sim.run(shutdown.clone())));
    }
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    });
    for t in tasks {
        t.await??;
    }
    Ok(())
}
