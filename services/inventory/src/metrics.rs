//! Business metrics of the inventory service (RED metrics per method come
//! from oms-runtime): reservations answered, by outcome and by API. A
//! stream is one RPC to the RED metrics, so only this counts the
//! reservations made over `StreamReservations` and how many were refused.
use crate::error::Error;
use opentelemetry::{KeyValue, global, metrics::Counter};

#[derive(Clone, Copy)]
pub enum Api {
    Unary,
    Stream,
}

pub struct Metrics {
    reservations: Counter<u64>,
}

impl Metrics {
    pub fn new() -> Self {
        let reservations = global::meter("oms-inventory")
            .u64_counter("oms.inventory.reservations")
            .with_description(
                "New reservations answered, by outcome (granted, refused for stock, invalid, failed) and API (unary, stream)",
            )
            .build();
        Metrics { reservations }
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
