//! Runtime pieces against real peers: an in-process OTLP collector, Redis;
//! TLS settings with a test CA's certificates.
#![allow(clippy::unwrap_used)]

mod health_port;
mod redis;
mod telemetry;
mod tls;
mod tls_reload;
