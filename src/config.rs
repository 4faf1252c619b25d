//! `nhiwatch.toml`: the configuration file, assembled from the sections each component owns
//! (`[decode]` lives in `decode`, `[detectors]` and `[time]` in `detect`, `[kafka]` and
//! `[run]` in `kafka::config`, …). Every section is optional and every field has a default,
//! so nhiwatch runs with no file at all. Unknown keys are errors (a typo must not be silently
//! ignored), and [`Config::validate`] names the offending key in every message.
//!
//! This module sits above the components whose sections it assembles and below the pipelines
//! (`replay`, `kafka`'s stages) and `cli`, which are the only users of [`Config`].

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::decode::DecodeConfig;
pub use crate::detect::{DetectorsConfig, IdentityZone, TimeConfig};
pub use crate::environment::EnvironmentsConfig;
pub use crate::error::ConfigError;
pub use crate::fingerprint::{FINGERPRINT_KEY_ENV, FingerprintConfig};
pub use crate::kafka::config::{KafkaConfig, MANAGED_OPTIONS, RunConfig, TopicConfig};
pub use crate::units::Duration;

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Keyed fingerprints of credential ids.
    #[serde(default)]
    pub fingerprint: FingerprintConfig,
    /// Record decoding limits.
    #[serde(default)]
    pub decode: DecodeConfig,
    /// Mappings from source-specific names to environments.
    #[serde(default)]
    pub environments: EnvironmentsConfig,
    /// Time zones for the time-of-week model.
    #[serde(default)]
    pub time: TimeConfig,
    /// Where detector specifications come from and which run.
    #[serde(default)]
    pub detectors: DetectorsConfig,
    /// Bounds of the detection state (identities in memory and spilled, credentials).
    #[serde(default)]
    pub state: crate::baseline::StateConfig,
    /// The Kafka topics `nhiwatch run` reads and writes, and the client settings.
    #[serde(default)]
    pub kafka: KafkaConfig,
    /// `nhiwatch run`: state, checkpoints and local outputs.
    #[serde(default)]
    pub run: RunConfig,
    /// Settings shared by the `[[sinks]]`: spool directory, host name, drain timeout.
    #[serde(default)]
    pub delivery: crate::sink::DeliveryConfig,
    /// Where alerts go besides the alerts topic: stdout, files, HTTP and syslog receivers.
    #[serde(default)]
    pub sinks: Vec<crate::sink::SinkConfig>,
    /// The Parquet lake of events and alerts (`--lake`).
    #[serde(default)]
    pub lake: crate::lake::LakeConfig,
    /// The SQL endpoints over the lake (PostgreSQL wire, HTTP); off by default.
    #[serde(default)]
    pub sql: crate::query::SqlConfig,
}

impl Config {
    /// Reads and validates a config file; `None` gives the defaults.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let cfg = match path {
            None => Config::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                Config::parse(&text).map_err(|e| match e {
                    ConfigError::Parse { message, .. } => ConfigError::Parse {
                        path: path.to_path_buf(),
                        message,
                    },
                    other => other,
                })?
            }
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses TOML text (without validating).
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<text>"),
            message: e.to_string(),
        })
    }

    /// Checks values that the types alone do not constrain, section by section.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.fingerprint.validate()?;
        self.decode.validate()?;
        self.environments.validate()?;
        self.state.validate()?;
        crate::sink::validate(&self.sinks)?;
        self.lake.validate()?;
        self.sql.validate()?;
        Ok(())
    }

    /// Where network sinks spool: `delivery.spool_dir`, else `<run.state_dir>/spool`.
    pub fn spool_dir(&self) -> Option<PathBuf> {
        self.delivery
            .spool_dir
            .clone()
            .or_else(|| self.run.state_dir.as_ref().map(|d| d.join("spool")))
    }

    /// Checks what `nhiwatch run` needs on top of [`Config::validate`]: brokers, topics, and
    /// librdkafka options nhiwatch manages itself.
    pub fn validate_run(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: key.to_string(),
            message,
        };
        crate::sink::require_spool(&self.sinks, self.spool_dir().as_deref())?;
        // Checked here, after the flags: `run --lake DIR` with `[sql]` in the file is a lake.
        if self.sql.enabled() && self.lake.dir.is_none() {
            return Err(invalid(
                "sql",
                "the SQL endpoints serve the lake: set lake.dir (or --lake)".into(),
            ));
        }
        self.kafka.validate()?;
        self.run.validate()
    }

    /// The fingerprint key (see [`FingerprintConfig::key`]).
    pub fn fingerprint_key(&self) -> Result<Option<Vec<u8>>, ConfigError> {
        self.fingerprint.key()
    }

    /// A decoder for `format` built from the `[decode]`, `[fingerprint]` and `[environments]`
    /// sections.
    pub fn decoder(
        &self,
        format: crate::decode::Format,
    ) -> Result<crate::decode::Decoder, ConfigError> {
        crate::decode::Decoder::from_sections(
            &self.decode,
            &self.fingerprint,
            &self.environments,
            format,
        )
    }

    /// A detection engine built from the `[detectors]`, `[time]` and `[state]` sections; `only` names
    /// the detectors to run.
    pub fn engine(
        &self,
        only: Option<&[String]>,
    ) -> Result<crate::detect::Engine, crate::detect::SetupError> {
        crate::detect::Engine::from_sections(&self.detectors, &self.time, &self.state, only)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let cfg = Config::parse("").unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.decode.max_future_skew.as_secs(), 86_400);
        assert_eq!(cfg.decode.min_time.to_rfc3339(), "2000-01-01T00:00:00Z");
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = Config::parse("[decode]\nmax_record_byte = 10\n").unwrap_err();
        assert!(err.to_string().contains("max_record_byte"), "{err}");
        let err = Config::parse("[environment]\n").unwrap_err();
        assert!(err.to_string().contains("environment"), "{err}");
    }

    #[test]
    fn validation_names_the_key() {
        let cfg =
            Config::parse("[environments.aws_accounts]\n\"12345\" = \"production\"\n").unwrap();
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("environments.aws_accounts.\"12345\""), "{err}");
        let cfg = Config::parse("[fingerprint]\nkey = \"short\"\n").unwrap();
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .contains("fingerprint.key")
        );
        let cfg = Config::parse("[decode]\nmax_future_skew = \"3 parsecs\"\n");
        assert!(cfg.unwrap_err().to_string().contains("max_future_skew"));
    }

    #[test]
    fn topics_parse_with_and_without_a_format() {
        let t: TopicConfig = "vault-audit=vault".parse().unwrap();
        assert_eq!(t.name, "vault-audit");
        assert_eq!(t.format, crate::decode::Format::Vault);
        let t: TopicConfig = "audit".parse().unwrap();
        assert_eq!(t.format, crate::decode::Format::Auto);
        assert!("=vault".parse::<TopicConfig>().is_err());
        assert!(
            "a=nope"
                .parse::<TopicConfig>()
                .unwrap_err()
                .contains("nope")
        );
        // The formats are listed from the enum, in its order.
        assert!(
            "a=nope"
                .parse::<TopicConfig>()
                .unwrap_err()
                .ends_with("(auto, github, gitlab, vault, cloudtrail, kubernetes, canonical)")
        );
    }

    #[test]
    fn run_needs_brokers_and_topics_and_rejects_managed_options() {
        let ok = "[kafka]\nbootstrap_servers = \"b:9092\"\n[[kafka.topics]]\nname = \"in\"\n";
        Config::parse(ok).unwrap().validate_run().unwrap();
        let err = Config::parse(&format!(
            "{ok}[kafka.producer_options]\n\"enable.idempotence\" = \"false\"\n"
        ))
        .unwrap()
        .validate_run()
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("kafka.producer_options.\"enable.idempotence\""),
            "{err}"
        );
        let err = Config::parse(&ok.replace("\"in\"", "\"nhiwatch-events\""))
            .unwrap()
            .validate_run()
            .unwrap_err()
            .to_string();
        assert!(err.contains("internal"), "{err}");
        let err = Config::parse(&format!("{ok}[run]\ncheckpoint_interval = \"0s\"\n"))
            .unwrap()
            .validate_run()
            .unwrap_err()
            .to_string();
        assert!(err.contains("run.checkpoint_interval"), "{err}");
    }

    /// Regression: `[sql]` in the file with the lake given as `run --lake DIR` was refused
    /// at load, before the flag could set `lake.dir`.
    #[test]
    fn sql_endpoints_need_a_lake_only_once_the_flags_are_applied() {
        let ok = "[kafka]\nbootstrap_servers = \"b:9092\"\n[[kafka.topics]]\nname = \"in\"\n\
                  [sql]\nhttp_listen = \"127.0.0.1:0\"\npassword = \"long-enough-pw\"\n";
        let mut cfg = Config::parse(ok).unwrap();
        cfg.validate().unwrap();
        let err = cfg.validate_run().unwrap_err().to_string();
        assert!(err.contains("lake.dir"), "{err}");
        cfg.lake.dir = Some("/tmp/lake".into());
        cfg.validate_run().unwrap();
    }

    #[test]
    fn an_unknown_detector_is_named_with_the_known_ones() {
        let err = Config::default()
            .engine(Some(&["nope".to_string()]))
            .err()
            .expect("an unknown detector is refused")
            .to_string();
        assert_eq!(
            err,
            "unknown detector \"nope\" (known: off_hours_mint, new_runner, scope_escalation, cross_env_reuse, dormant_reactivated, long_lived_credential, human_bound_credential, new_trust, unapproved_ref, identity_flood, first_seen)"
        );
    }
}
