//! Tells inventory what the orders waiting for stock ask for (the view
//! `stock_demand`, per SKU and channel), so that published availability
//! keeps those units for them: after a receipt, a channel would otherwise
//! show the units for the seconds until the backorders reserve them, and
//! sell them to orders that then wait behind. Sends only what differs from
//! what it sent last (`published_demand`), each tenant's figures in turn
//! across replicas and under a rising revision, so a late call never sets
//! an older figure. Woken by the waits' triggers, whose notifications name
//! the tenants' SKUs that changed (only those are summed again), and every
//! few seconds for everything: what no wait records (an order cancelled or
//! a step parked while its waits stay), and notifications lost. At start
//! and every 10 minutes it states each tenant's whole demand instead
//! (`complete`), which sets right any drift between the two.
use crate::metrics::Metrics;
use crate::repo::published_demand::{self, Demand};
use crate::workers::peers::Peers;
use futures::FutureExt;
use oms_kernel::Tenant;
use oms_proto::inventory::{BackorderDemandFigure, SetBackorderDemandRequest};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The notification channel the waits' triggers speak on (migrations
/// 0010, 0011).
const CHANNEL: &str = "stock_demand";
/// How often it looks at everything without being woken (each such look
/// sums every wait: 150 ms at 100,000 waits of a tenant).
const BACKSTOP: Duration = Duration::from_secs(10);
/// The least time between looks: a burst of backorders (a notification
/// each) is weighed a few times a second, not once per order.
const MIN_GAP: Duration = Duration::from_millis(200);
/// How often each tenant's whole demand is stated to inventory (and at
/// start): whatever drifted between the two (inventory's database
/// restored, a figure set by hand under this source) is set right.
const RESYNC: Duration = Duration::from_secs(600);
/// How soon SKUs whose figures failed are tried again.
const RETRY: Duration = Duration::from_secs(1);
/// Figures per call (inventory takes up to 1,000).
const BATCH: i64 = 1000;
/// How long inventory may take to answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The figures' source in inventory: orders' own, beside any other's.
/// Orders' reservations name it (`backorders_of`): the gate keeps its
/// backorders' units from others, not from its own orders, which the
/// line (`stock_line`) orders among themselves.
pub(crate) const SOURCE: &str = "orders";

#[derive(Clone)]
pub struct DemandPublisher {
    pub pool: PgPool,
    pub peers: Peers,
    pub metrics: Metrics,
}

/// What the next look weighs again.
#[derive(Debug, Default, PartialEq)]
enum Look {
    #[default]
    Nothing,
    /// These SKUs of these tenants.
    Skus(BTreeMap<String, BTreeSet<String>>),
    /// Every SKU of every tenant.
    Everything,
}

impl Look {
    /// Adds what a notification names: "tenant sku" lines, or '*'.
    fn add(&mut self, payload: &str) {
        let mut named = BTreeMap::<String, BTreeSet<String>>::new();
        for line in payload.lines() {
            match line.split_once(' ') {
                Some((tenant, sku)) => {
                    named.entry(tenant.into()).or_default().insert(sku.into());
                }
                // '*' (too many to name), or a form this does not know.
                None => return self.merge(Look::Everything),
            }
        }
        if named.is_empty() {
            return self.merge(Look::Everything);
        }
        self.merge(Look::Skus(named));
    }

    fn merge(&mut self, other: Look) {
        match (&mut *self, other) {
            (Look::Everything, _) | (_, Look::Nothing) => {}
            (Look::Skus(mine), Look::Skus(theirs)) => {
                for (tenant, skus) in theirs {
                    mine.entry(tenant).or_default().extend(skus);
                }
            }
            (me, other) => *me = other,
        }
    }
}

impl DemandPublisher {
    pub fn start(self, shutdown: CancellationToken) {
        tokio::spawn(async move { self.run(shutdown).await });
    }

    async fn run(self, shutdown: CancellationToken) {
        let mut listener: Option<PgListener> = None;
        let mut next = Look::Nothing;
        let mut stated: Option<tokio::time::Instant> = None;
        loop {
            if listener.is_none() {
                listener = self.listen().await;
            }
            let look = tokio::time::Instant::now();
            if stated.is_none_or(|at| at.elapsed() >= RESYNC) {
                stated = Some(look);
                // Covers every change so far; what fails, the diff retries.
                next = self.state_all().await;
            } else {
                let failed = self.publish(std::mem::take(&mut next)).await;
                next.merge(failed);
            }
            // SKUs that failed are tried again soon; a whole look that
            // failed (each sums every wait) at the backstop's pace.
            let idle = match next {
                Look::Skus(_) => RETRY,
                _ => BACKSTOP,
            };
            let woken = async {
                match listener.as_mut() {
                    Some(l) => l.recv().await.map(|n| n.payload().to_owned()),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = woken => match r {
                    Ok(payload) => {
                        next.add(&payload);
                        tokio::time::sleep_until(look + MIN_GAP).await;
                        // What else came meanwhile joins this look.
                        while let Some(Ok(n)) = listener.as_mut().and_then(|l| l.recv().now_or_never()) {
                            next.add(n.payload());
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "lost the stock demand notifications; listening again");
                        listener = None;
                        next = Look::Everything;
                    }
                },
                // Nothing failed: everything; otherwise what failed.
                _ = tokio::time::sleep(idle) => if next == Look::Nothing {
                    next = Look::Everything;
                },
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

    /// Publishes the demand `look` names that changed; returns what failed,
    /// to be tried again at the next look.
    async fn publish(&self, look: Look) -> Look {
        let tenants: Vec<(String, Option<Vec<String>>)> = match look {
            Look::Nothing => return Look::Nothing,
            Look::Skus(named) => (named.into_iter())
                .map(|(t, skus)| (t, Some(skus.into_iter().collect())))
                .collect(),
            Look::Everything => match self.tenants().await {
                Some(all) => all.into_iter().map(|t| (t, None)).collect(),
                None => return Look::Everything,
            },
        };
        let mut failed = Look::Nothing;
        for (name, skus) in tenants {
            let Ok(tenant) = Tenant::parse(&name) else {
                continue;
            };
            if let Err(e) = self.publish_tenant(&tenant, skus.as_deref()).await {
                tracing::warn!(tenant = %tenant, error = %e, "could not publish the stock demand");
                self.metrics.unpublished(tenant.as_str());
                failed.merge(match skus {
                    Some(s) => Look::Skus(BTreeMap::from([(name, s.into_iter().collect())])),
                    None => Look::Everything,
                });
            }
        }
        failed
    }

    /// States every tenant's whole demand; returns what to look at again
    /// (everything, when some tenant failed).
    async fn state_all(&self) -> Look {
        let Some(tenants) = self.tenants().await else {
            return Look::Everything;
        };
        let mut next = Look::Nothing;
        for tenant in tenants.iter().filter_map(|t| Tenant::parse(t).ok()) {
            if let Err(e) = self.state_tenant(&tenant).await {
                tracing::warn!(tenant = %tenant, error = %e, "could not state the stock demand");
                self.metrics.unpublished(tenant.as_str());
                next = Look::Everything;
            }
        }
        next
    }

    /// Tells inventory all the tenant's demand at one revision, the last
    /// call `complete` (inventory zeroes the rest of orders' figures).
    async fn state_tenant(&self, tenant: &Tenant) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        published_demand::take_turn(&mut tx, tenant).await?;
        let now = published_demand::current(&mut *tx, tenant).await?;
        let revision = published_demand::next_revision(&mut *tx).await?;
        let mut chunks: Vec<&[Demand]> = now.chunks(BATCH as usize).collect();
        if chunks.is_empty() {
            chunks.push(&[]);
        }
        let last = chunks.len() - 1;
        for (i, chunk) in chunks.into_iter().enumerate() {
            self.send(tenant, chunk, revision, i == last).await?;
        }
        published_demand::replace(&mut tx, tenant, &now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn publish_tenant(&self, tenant: &Tenant, skus: Option<&[String]>) -> anyhow::Result<()> {
        loop {
            let mut tx = self.pool.begin().await?;
            published_demand::take_turn(&mut tx, tenant).await?;
            let changed = published_demand::unpublished(&mut *tx, tenant, skus, BATCH).await?;
            if changed.is_empty() {
                return Ok(());
            }
            let revision = published_demand::next_revision(&mut *tx).await?;
            self.send(tenant, &changed, revision, false).await?;
            published_demand::published(&mut tx, tenant, &changed).await?;
            tx.commit().await?;
            tracing::debug!(tenant = %tenant, figures = changed.len(), "published stock demand");
            if (changed.len() as i64) < BATCH {
                return Ok(());
            }
        }
    }
}

impl DemandPublisher {
    /// The tenants with waits or demand published; None (logged) when
    /// they cannot be read.
    async fn tenants(&self) -> Option<Vec<String>> {
        published_demand::tenants(&self.pool)
            .await
            .inspect_err(
                |e| tracing::warn!(error = %e, "could not read the tenants with stock demand"),
            )
            .ok()
    }

    /// Tells inventory `figures` under orders' source at `revision`.
    async fn send(
        &self,
        tenant: &Tenant,
        figures: &[Demand],
        revision: i64,
        complete: bool,
    ) -> anyhow::Result<()> {
        let req = SetBackorderDemandRequest {
            request_id: uuid::Uuid::now_v7().to_string(),
            demand: figures
                .iter()
                .map(|d| BackorderDemandFigure {
                    sku: d.sku.clone(),
                    channel: d.channel.clone(),
                    units: d.units,
                })
                .collect(),
            revision,
            source: SOURCE.into(),
            complete,
        };
        let mut inventory = self.peers.inventory(tenant);
        tokio::time::timeout(CALL_TIMEOUT, inventory.set_backorder_demand(req)).await??;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skus(pairs: &[(&str, &[&str])]) -> Look {
        Look::Skus(
            (pairs.iter())
                .map(|(t, s)| (t.to_string(), s.iter().map(|s| s.to_string()).collect()))
                .collect(),
        )
    }

    #[test]
    fn notifications_name_what_the_next_look_weighs() {
        let mut next = Look::Nothing;
        next.add("acme A\nacme B");
        next.add("globex A\nacme A");
        assert_eq!(next, skus(&[("acme", &["A", "B"]), ("globex", &["A"])]));
        next.add("*");
        assert_eq!(next, Look::Everything, "too many to name");
        next.add("acme C");
        assert_eq!(next, Look::Everything);
        let mut next = Look::Nothing;
        next.add("");
        assert_eq!(next, Look::Everything, "a notification naming nothing");
        let mut failed = skus(&[("acme", &["A"])]);
        failed.merge(Look::Nothing);
        assert_eq!(failed, skus(&[("acme", &["A"])]));
    }
}
