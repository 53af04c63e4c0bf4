//! End-to-end tests of the suite.
#![allow(clippy::unwrap_used)]

mod placement;
mod platform;
