//! Telemetry: logs (and, with the metrics issue, Prometheus metrics and health endpoints).

pub mod logs;
pub mod server;
