//! Runtime pieces against real peers: an in-process OTLP collector, Redis.
#![allow(clippy::unwrap_used)]

mod database;
mod redis;
mod telemetry;
