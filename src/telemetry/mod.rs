//! Telemetry: logs, Prometheus metrics (every name in [`metrics`]) and the HTTP endpoint that
//! serves them with the health checks.

pub mod logs;
pub mod metrics;
pub mod server;

pub use metrics::Census;
