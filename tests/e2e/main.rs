//! End-to-end tests of the suite.
#![allow(clippy::unwrap_used)]

mod ingest;
mod placement;
mod platform;
mod shipping;
