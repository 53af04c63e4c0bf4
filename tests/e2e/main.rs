//! End-to-end tests of the suite.
#![allow(clippy::unwrap_used)]

mod ingest;
mod journeys;
mod placement;
mod platform;
mod shipping;
mod tls;
