//! Business metrics of the inventory service (RED metrics per method come
//! from oms-runtime): reservations answered, by outcome and by API (a
//! stream is one RPC to the RED metrics, so only this counts the
//! reservations made over `StreamReservations` and how many were refused),
//! changes that left reservations resting on stock that is not there, and
//! how the expiry sweep keeps up (carts expired, the oldest one due).
use crate::error::Error;
use opentelemetry::{
    KeyValue, global,
    metrics::{Counter, Gauge},
};
use std::collections::BTreeSet;
use std::sync::Mutex;

#[derive(Clone, Copy)]
pub enum Api {
    Unary,
    Stream,
}

pub struct Metrics {
    reservations: Counter<u64>,
    held_beyond_stock: Counter<u64>,
    expired: Counter<u64>,
    expiry_lag: Gauge<f64>,
    /// Tenants the last sweep reported a lag for: set to 0 once they have
    /// none (a gauge keeps a tenant's last figure until told otherwise).
    lagging: Mutex<BTreeSet<String>>,
}

impl Metrics {
    pub fn new() -> Self {
        let meter = global::meter("oms-inventory");
        let reservations = meter
            .u64_counter("oms.inventory.reservations")
            .with_description(
                "New reservations answered, by outcome (granted, refused for stock, invalid, failed) and API (unary, stream)",
            )
            .build();
        let held_beyond_stock = meter
            .u64_counter("oms.inventory.held_beyond_stock")
            .with_description(
                "Changes (a lot withdrawn, damage, a count that found fewer, a transfer out) after which reservations hold more units of a SKU at a node than its unexpired stock, by tenant and node",
            )
            .build();
        let expired = meter
            .u64_counter("oms.inventory.reservations.expired")
            .with_description(
                "Reservations the expiry sweep expired (their units back to sale), by tenant",
            )
            .build();
        let expiry_lag = meter
            .f64_gauge("oms.inventory.expiry.lag")
            .with_unit("s")
            .with_description(
                "After each expiry sweep of this replica, by tenant: how long the tenant's oldest reservation still due has been due (0: none since it lagged); units it holds are kept from sale",
            )
            .build();
        Metrics {
            reservations,
            held_beyond_stock,
            expired,
            expiry_lag,
            lagging: Mutex::default(),
        }
    }

    pub fn expired(&self, tenant: &str, n: usize) {
        if n > 0 {
            self.expired
                .add(n as u64, &[KeyValue::new("tenant", tenant.to_owned())]);
        }
    }

    /// The lag of each tenant with reservations still due after a sweep
    /// (see [`lag_points`]).
    pub fn expiry_lag(&self, lags: &[(String, f64)]) {
        let points = {
            let mut lagging = self.lagging.lock().unwrap_or_else(|e| e.into_inner());
            lag_points(&mut lagging, lags)
        };
        for (tenant, seconds) in points {
            self.expiry_lag
                .record(seconds, &[KeyValue::new("tenant", tenant)]);
        }
    }

    /// A change left reservations holding `units` beyond the stock of a
    /// SKU at `node`: their orders will be short-picked there unless
    /// someone moves them. Counted per change, not per unit: the same
    /// shortage is told again by every later change that keeps it.
    pub fn held_beyond_stock(&self, tenant: &str, node: &str, units: i64) {
        if units > 0 {
            let attrs = [
                KeyValue::new("tenant", tenant.to_owned()),
                KeyValue::new("node", node.to_owned()),
            ];
            self.held_beyond_stock.add(1, &attrs);
        }
    }

    pub fn reservation<T>(&self, tenant: &str, api: Api, answer: &Result<T, Error>) {
        let outcome = match answer {
            Ok(_) => "granted",
            Err(Error::Insufficient { .. }) => "refused",
            Err(Error::Invalid(_)) => "invalid",
            Err(_) => "failed",
        };
        let api = match api {
            Api::Unary => "unary",
            Api::Stream => "stream",
        };
        self.reservations.add(
            1,
            &[
                KeyValue::new("tenant", tenant.to_owned()),
                KeyValue::new("outcome", outcome),
                KeyValue::new("api", api),
            ],
        );
    }
}

/// What the lag gauge records after a sweep: each tenant's lag, and 0 for
/// the tenants that lagged after the sweep before and have nothing due
/// now; `lagging` becomes the tenants that lag now.
fn lag_points(lagging: &mut BTreeSet<String>, lags: &[(String, f64)]) -> Vec<(String, f64)> {
    let now: BTreeSet<String> = lags.iter().map(|(t, _)| t.clone()).collect();
    let caught_up: Vec<(String, f64)> =
        lagging.difference(&now).map(|t| (t.clone(), 0.0)).collect();
    *lagging = now;
    let lags = lags.iter().map(|(t, s)| (t.clone(), s.max(0.0)));
    lags.chain(caught_up).collect()
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_that_caught_up_is_set_to_zero_once() {
        let mut lagging = BTreeSet::new();
        let lag = |t: &str, s: f64| (t.to_owned(), s);
        let first = lag_points(&mut lagging, &[lag("acme", 3.0), lag("globex", 70.0)]);
        assert_eq!(first, [lag("acme", 3.0), lag("globex", 70.0)]);
        // acme caught up: told 0; globex still lags.
        let second = lag_points(&mut lagging, &[lag("globex", 71.0)]);
        assert_eq!(second, [lag("globex", 71.0), lag("acme", 0.0)]);
        // Nothing due: globex told 0, acme not again.
        assert_eq!(lag_points(&mut lagging, &[]), [lag("globex", 0.0)]);
        assert!(lag_points(&mut lagging, &[]).is_empty());
        // A clock step makes no negative lag.
        assert_eq!(
            lag_points(&mut lagging, &[lag("acme", -0.2)]),
            [lag("acme", 0.0)]
        );
    }
}
