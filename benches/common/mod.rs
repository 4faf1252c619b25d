//! What the benches over the simulated organisation share: its configuration and a decoder
//! with a fixed fingerprint key.

use nhiwatch::config::{Config, DecodeConfig};
use nhiwatch::decode::{Decoder, Format};
use nhiwatch::environment::EnvResolver;
use nhiwatch::fingerprint::Fingerprinter;

/// `schemas/samples/simulated/nhiwatch.toml`.
pub fn config() -> Config {
    Config::parse(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schemas/samples/simulated/nhiwatch.toml"
        ))
        .expect("config"),
    )
    .expect("valid config")
}

/// A decoder of every format with the bench key and the organisation's environments.
pub fn decoder(cfg: &Config) -> Decoder {
    Decoder::new(
        &DecodeConfig::default(),
        Fingerprinter::new(b"bench-key-0123456789").expect("key"),
        EnvResolver::new(&cfg.environments),
        Format::Auto,
    )
}
