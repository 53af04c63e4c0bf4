//! `oms-cli`: operator tools.
//!
//! `oms-cli token --tenant acme` prints a bearer token signed with
//! `OMS_AUTH_JWT_SECRET` (the local development secret when unset), which
//! every service accepts while it runs with the same secret.
use clap::{Parser, Subcommand};
use oms_kernel::Tenant;
use oms_runtime::{Config, Service, auth::TokenIssuer};
use std::time::Duration;

#[derive(Parser)]
#[command(name = "oms-cli", about = "OMS operator tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a bearer token for a tenant.
    Token {
        /// Tenant the token is scoped to.
        #[arg(long)]
        tenant: String,
        /// Who the token identifies.
        #[arg(long, default_value = "oms-cli")]
        subject: String,
        /// Lifetime in hours.
        #[arg(long, default_value_t = 12)]
        ttl_hours: u64,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Token {
            tenant,
            subject,
            ttl_hours,
        } => {
            let tenant = Tenant::parse(&tenant).map_err(anyhow::Error::msg)?;
            // Same configuration rules as the services: same secret, issuer
            // and audience.
            let config = Config::from_env(Service::Orders)
                .map_err(|e| anyhow::anyhow!("invalid configuration:\n{e}"))?;
            let token = TokenIssuer::new(&config.auth).mint(
                &tenant,
                &subject,
                Duration::from_secs(ttl_hours * 3600),
            );
            println!("{token}");
            Ok(())
        }
    }
}
