//! Tells inventory what the orders waiting for stock ask for (the view
//! `stock_demand`, per SKU and channel), so that published availability
//! keeps those units for them: after a receipt, a channel would otherwise
//! show the units for the seconds until the backorders reserve them, and
//! sell them to orders that then wait behind. Sends only what differs from
//! what it sent last (`published_demand`), each tenant's figures in turn
//! across replicas and under a rising revision, so a late call never sets
//! an older figure. Woken by the waits' trigger (`stock_demand`
//! notifications), and every few seconds for what no wait records (an
//! order cancelled or a step parked while its waits stay).
use crate::metrics::Metrics;
use crate::repo::published_demand::{self, Demand};
use crate::workers::peers::Peers;
use futures::FutureExt;
use oms_kernel::Tenant;
use oms_proto::inventory::{BackorderDemandFigure, SetBackorderDemandRequest};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The notification channel the waits' trigger speaks on (migration 0010).
const CHANNEL: &str = "stock_demand";
/// How often it looks without being woken.
const BACKSTOP: Duration = Duration::from_secs(5);
/// Figures per call (inventory takes up to 1,000).
const BATCH: i64 = 1000;
/// The figures' source in inventory: orders' own, beside any other's.
const SOURCE: &str = "orders";
/// How long inventory may take to answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct DemandPublisher {
    pub pool: PgPool,
    pub peers: Peers,
    pub metrics: Metrics,
}

impl DemandPublisher {
    pub fn start(self, shutdown: CancellationToken) {
        tokio::spawn(async move { self.run(shutdown).await });
    }

    async fn run(self, shutdown: CancellationToken) {
        let mut listener: Option<PgListener> = None;
        loop {
            if listener.is_none() {
                listener = self.listen().await;
            }
            self.publish().await;
            let woken = async {
                match listener.as_mut() {
                    Some(l) => l.recv().await.map(|_| ()),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = woken => match r {
                    // What else came meanwhile is covered by this look.
                    Ok(()) => drain(listener.as_mut()),
                    Err(e) => {
                        tracing::warn!(error = %e, "lost the stock demand notifications; listening again");
                        listener = None;
                    }
                },
                _ = tokio::time::sleep(BACKSTOP) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    async fn listen(&self) -> Option<PgListener> {
        let mut l = PgListener::connect_with(&self.pool)
            .await
            .inspect_err(|e| tracing::warn!(error = %e, "cannot listen for stock demand changes"))
            .ok()?;
        l.listen(CHANNEL).await.ok()?;
        Some(l)
    }

    /// Publishes every tenant's changed demand; a tenant that fails is
    /// tried again at the next look.
    async fn publish(&self) {
        let tenants = match published_demand::tenants(&self.pool).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the tenants with stock demand");
                return;
            }
        };
        for tenant in tenants.iter().filter_map(|t| Tenant::parse(t).ok()) {
            if let Err(e) = self.publish_tenant(&tenant).await {
                tracing::warn!(tenant = %tenant, error = %e, "could not publish the stock demand");
                self.metrics.unpublished(tenant.as_str());
            }
        }
    }

    async fn publish_tenant(&self, tenant: &Tenant) -> anyhow::Result<()> {
        loop {
            let mut tx = self.pool.begin().await?;
            published_demand::take_turn(&mut tx, tenant).await?;
            let changed = published_demand::unpublished(&mut *tx, tenant, BATCH).await?;
            if changed.is_empty() {
                return Ok(());
            }
            let req = SetBackorderDemandRequest {
                request_id: uuid::Uuid::now_v7().to_string(),
                demand: changed.iter().map(figure).collect(),
                revision: published_demand::next_revision(&mut *tx).await?,
                source: SOURCE.into(),
            };
            let mut inventory = self.peers.inventory(tenant);
            tokio::time::timeout(CALL_TIMEOUT, inventory.set_backorder_demand(req)).await??;
            published_demand::published(&mut tx, tenant, &changed).await?;
            tx.commit().await?;
            tracing::debug!(tenant = %tenant, figures = changed.len(), "published stock demand");
            if (changed.len() as i64) < BATCH {
                return Ok(());
            }
        }
    }
}

fn figure(d: &Demand) -> BackorderDemandFigure {
    BackorderDemandFigure {
        sku: d.sku.clone(),
        channel: d.channel.clone(),
        units: d.units,
    }
}

/// Takes the notifications already here.
fn drain(listener: Option<&mut PgListener>) {
    if let Some(l) = listener {
        while let Some(Ok(_)) = l.recv().now_or_never() {}
    }
}
