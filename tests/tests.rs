//! Integration tests, one module per area (see ARCHITECTURE.md, "Conventions").

mod util;

mod cli;
mod decode;
mod flood;
mod hostile;
mod kafka;
mod lake;
mod layers;
mod metrics;
mod partitions;
mod quality;
mod samples;
mod schema;
mod secrets;
mod sinks;
