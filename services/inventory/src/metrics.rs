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
                "After each expiry sweep of this replica: how long the oldest reservation still due has been due (0: none); units it holds are kept from sale",
            )
            .build();
        Metrics {
            reservations,
            held_beyond_stock,
            expired,
            expiry_lag,
        }
    }

    pub fn expired(&self, tenant: &str, n: usize) {
        if n > 0 {
            self.expired
                .add(n as u64, &[KeyValue::new("tenant", tenant.to_owned())]);
        }
    }

    pub fn expiry_lag(&self, seconds: f64) {
        self.expiry_lag.record(seconds.max(0.0), &[]);
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

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
