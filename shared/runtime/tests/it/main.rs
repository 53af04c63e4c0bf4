//! Runtime pieces against real peers: an in-process OTLP collector, Redis.
#![allow(clippy::unwrap_used)]

mod redis;
mod telemetry;
