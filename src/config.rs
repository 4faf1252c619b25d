//! `nhiwatch.toml`: the configuration file. Every section is optional and every field has a
//! default, so nhiwatch runs with no file at all. Unknown keys are errors (a typo must not be
//! silently ignored), and [`Config::validate`] names the offending key in every message.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

use crate::time::Timestamp;

/// Environment variable that overrides `fingerprint.key`.
pub const FINGERPRINT_KEY_ENV: &str = "NHIWATCH_FINGERPRINT_KEY";

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

/// `[kafka]`: the cluster, the topics, and librdkafka options.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `host:port[,host:port…]` of the brokers (`NHIWATCH_KAFKA_BOOTSTRAP`,
    /// `--bootstrap-servers`).
    #[serde(default)]
    pub bootstrap_servers: Option<String>,
    /// The consumer group. Instances with the same group split the work; the internal topics
    /// are named after it.
    #[serde(default = "default_group_id")]
    pub group_id: String,
    /// Input topics with their format (`auto` detects it per record).
    #[serde(default)]
    pub topics: Vec<TopicConfig>,
    /// Alerts go here (key: identity; value: alert JSON; headers: detector, severity).
    #[serde(default)]
    pub alerts_topic: Option<String>,
    /// Records that cannot be decoded go here with the reason and origin in headers. Without
    /// one, rejected records are logged with their location and counted, never silently
    /// dropped.
    #[serde(default)]
    pub dlq_topic: Option<String>,
    /// Encoding of the records on the alerts topic: `json` (default, the alert schema),
    /// `ocsf`, `ecs`, `cef` or `hec`.
    #[serde(default)]
    pub alerts_encoding: crate::encode::Encoding,
    /// Partitions of the internal topics (`<group_id>-events`, keyed by identity, and the
    /// compacted `<group_id>-changelog`). The unit of scale-out: at most this many instances
    /// share the work. Fixed once the topics exist. Each partition judges fleet rollouts among
    /// its own identities, so keep at least ~100 identities per partition (README, "Running
    /// at scale").
    #[serde(default = "default_partitions")]
    pub partitions: u32,
    /// Repartition the input through `<group_id>-events`, keyed by identity (the default).
    /// Set to `false` only when every identity's records already arrive in one partition
    /// (input topics keyed by identity, or of one partition): detection then reads the input
    /// topics directly, one engine per input partition, saving a hop through the brokers.
    #[serde(default = "default_true")]
    pub repartition: bool,
    /// Replication factor of the internal topics when nhiwatch creates them.
    #[serde(default = "default_replication")]
    pub replication_factor: u16,
    /// Extra librdkafka properties for every client (consumers, producer, admin), e.g.
    /// `"security.protocol" = "SASL_SSL"`, `"sasl.mechanism" = "SCRAM-SHA-512"`,
    /// `"ssl.ca.location" = "/etc/ssl/kafka-ca.pem"`.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// librdkafka properties for the consumers only (`session.timeout.ms`, `fetch.max.bytes`).
    #[serde(default)]
    pub consumer_options: BTreeMap<String, String>,
    /// librdkafka properties for the producer only (`linger.ms`, `compression.type`).
    #[serde(default)]
    pub producer_options: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            bootstrap_servers: None,
            group_id: default_group_id(),
            topics: Vec::new(),
            alerts_topic: None,
            dlq_topic: None,
            alerts_encoding: crate::encode::Encoding::Json,
            partitions: default_partitions(),
            repartition: true,
            replication_factor: default_replication(),
            options: BTreeMap::new(),
            consumer_options: BTreeMap::new(),
            producer_options: BTreeMap::new(),
        }
    }
}

fn default_group_id() -> String {
    "nhiwatch".into()
}

fn default_true() -> bool {
    true
}

fn default_partitions() -> u32 {
    1
}

fn default_replication() -> u16 {
    1
}

/// `[[kafka.topics]]`: one input topic.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    /// The topic name.
    pub name: String,
    /// The format of its records; `auto` detects it per record.
    #[serde(default)]
    pub format: crate::decode::Format,
}

impl FromStr for TopicConfig {
    type Err = String;

    /// `NAME` or `NAME=FORMAT`, as given to `--topic`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, format) = match s.split_once('=') {
            Some((n, f)) => {
                let format = <crate::decode::Format as clap::ValueEnum>::from_str(f, true)
                    .map_err(|_| {
                        format!(
                            "unknown format {f:?} in {s:?} (auto, github, gitlab, vault, cloudtrail, kubernetes, canonical)"
                        )
                    })?;
                (n, format)
            }
            None => (s, crate::decode::Format::Auto),
        };
        if name.trim().is_empty() {
            return Err(format!("{s:?} has no topic name"));
        }
        Ok(TopicConfig {
            name: name.to_string(),
            format,
        })
    }
}

/// `[run]`: how `nhiwatch run` keeps its state and where else alerts go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Local checkpoint directory (one file per owned partition). Restarts read it before
    /// the changelog topic; without one, state comes from the changelog alone.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// How often state is checkpointed and input offsets committed. Records after the last
    /// checkpoint are processed again after a crash (their alerts keep their ids).
    #[serde(default = "default_checkpoint_interval")]
    pub checkpoint_interval: Duration,
    /// Also write alerts to stdout, one per line.
    #[serde(default)]
    pub alerts_stdout: bool,
    /// Encoding of the alerts written to stdout: `json` (default), `ocsf`, `ecs`, `cef`, `hec`.
    #[serde(default)]
    pub alerts_encoding: crate::encode::Encoding,
    /// `host:port` for `/metrics`, `/healthz` and `/readyz` (off when unset).
    #[serde(default)]
    pub metrics_addr: Option<String>,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            state_dir: None,
            checkpoint_interval: default_checkpoint_interval(),
            alerts_stdout: false,
            alerts_encoding: crate::encode::Encoding::Json,
            metrics_addr: None,
        }
    }
}

fn default_checkpoint_interval() -> Duration {
    Duration::from_secs(10)
}

/// `[time]`: the time zone schedules are judged in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeConfig {
    /// The organisation's time zone (IANA name, e.g. `Europe/Berlin`); `UTC` by default.
    /// Jobs scheduled in local time keep their hour across daylight-saving changes.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// Identities in another time zone, first matching pattern wins.
    #[serde(default)]
    pub identities: Vec<IdentityZone>,
}

impl Default for TimeConfig {
    fn default() -> Self {
        TimeConfig {
            timezone: default_timezone(),
            identities: Vec::new(),
        }
    }
}

fn default_timezone() -> String {
    "UTC".into()
}

/// `[[time.identities]]`: a time zone for identities matching a pattern.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityZone {
    /// Identity glob (`github:acme-us/*`).
    pub pattern: String,
    /// IANA time-zone name.
    pub timezone: String,
}

/// `[detectors]`: detector specifications.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorsConfig {
    /// A directory whose `<detector>.toml`, `privileges.toml` and `peers.toml` override the
    /// built-in ones, file by file.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Detectors to run, overriding each specification's `enabled`.
    #[serde(default)]
    pub enabled: Option<Vec<String>>,
}

/// `[fingerprint]`: the HMAC key for credential fingerprints.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FingerprintConfig {
    /// The key itself (at least 16 bytes). Prefer `key_file` or `NHIWATCH_FINGERPRINT_KEY`
    /// so the key is not in the config file.
    #[serde(default)]
    pub key: Option<String>,
    /// A file holding the key (trailing whitespace is ignored).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// `[decode]`: limits applied to every record.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecodeConfig {
    /// Records larger than this are rejected with `too_large` (CloudTrail delivery files can be
    /// tens of MiB, so the default is generous).
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
    /// Event times before this instant are absurd (`absurd_timestamp`).
    #[serde(default = "default_min_time")]
    pub min_time: Timestamp,
    /// Event times further than this in the future of the wall clock are absurd.
    #[serde(default = "default_max_future_skew")]
    pub max_future_skew: Duration,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        DecodeConfig {
            max_record_bytes: default_max_record_bytes(),
            min_time: default_min_time(),
            max_future_skew: default_max_future_skew(),
        }
    }
}

fn default_max_record_bytes() -> usize {
    128 << 20
}

fn default_min_time() -> Timestamp {
    // 2000-01-01T00:00:00Z: older "event times" are zero values or unit mistakes.
    Timestamp::from_micros(946_684_800_000_000)
}

fn default_max_future_skew() -> Duration {
    Duration::from_secs(86_400)
}

/// `[environments]`: how source-specific names map to environments.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentsConfig {
    /// Extra aliases, name → canonical environment (`"live-eu" = "production"`). Built-in
    /// aliases map prod/prd/live → production, stage/stg/preprod/uat → staging,
    /// test/qa → testing, dev/develop → development.
    #[serde(default)]
    pub aliases: BTreeMap<String, String>,
    /// AWS account id → environment. Unmapped accounts use the account id as the environment.
    #[serde(default)]
    pub aws_accounts: BTreeMap<String, String>,
    /// Vault path prefix → environment (`"kv/data/payments/" = "production"`); the longest
    /// matching prefix wins. Unmapped paths use a segment that names an environment.
    #[serde(default)]
    pub vault_paths: BTreeMap<String, String>,
    /// Kubernetes namespace → environment; `"*"` is the default for unmapped namespaces whose
    /// name implies no environment.
    #[serde(default)]
    pub kubernetes_namespaces: BTreeMap<String, String>,
}

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML parser's message (names the key and line).
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid config: `{key}`: {message}")]
    Invalid {
        /// The dotted key.
        key: String,
        /// What is wrong.
        message: String,
    },
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

    /// Checks values that the types alone do not constrain.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: key.to_string(),
            message,
        };
        if self.fingerprint.key.is_some() && self.fingerprint.key_file.is_some() {
            return Err(invalid(
                "fingerprint.key",
                "set either `key` or `key_file`, not both".into(),
            ));
        }
        if let Some(key) = &self.fingerprint.key
            && key.len() < 16
        {
            return Err(invalid(
                "fingerprint.key",
                format!("is {} bytes; at least 16 are required", key.len()),
            ));
        }
        if self.decode.max_record_bytes < 1024 {
            return Err(invalid(
                "decode.max_record_bytes",
                format!(
                    "{} is too small; at least 1024",
                    self.decode.max_record_bytes
                ),
            ));
        }
        for (table, map) in [
            ("environments.aliases", &self.environments.aliases),
            ("environments.aws_accounts", &self.environments.aws_accounts),
            ("environments.vault_paths", &self.environments.vault_paths),
            (
                "environments.kubernetes_namespaces",
                &self.environments.kubernetes_namespaces,
            ),
        ] {
            for (k, v) in map {
                if k.trim().is_empty() || v.trim().is_empty() {
                    return Err(invalid(
                        &format!("{table}.{k:?}"),
                        "names and environments must not be empty".into(),
                    ));
                }
            }
        }
        for account in self.environments.aws_accounts.keys() {
            if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid(
                    &format!("environments.aws_accounts.{account:?}"),
                    "an AWS account id is 12 digits".into(),
                ));
            }
        }
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
        let k = &self.kafka;
        match &k.bootstrap_servers {
            None => {
                return Err(invalid(
                    "kafka.bootstrap_servers",
                    "is required (or --bootstrap-servers, NHIWATCH_KAFKA_BOOTSTRAP)".into(),
                ));
            }
            Some(b) if b.trim().is_empty() => {
                return Err(invalid("kafka.bootstrap_servers", "is empty".into()));
            }
            Some(_) => {}
        }
        if k.topics.is_empty() {
            return Err(invalid(
                "kafka.topics",
                "name at least one input topic (or --topic NAME[=FORMAT])".into(),
            ));
        }
        if k.group_id.trim().is_empty() || !k.group_id.bytes().all(topic_char) {
            return Err(invalid(
                "kafka.group_id",
                format!(
                    "{:?}: use letters, digits, '.', '_' and '-' (internal topics are named after it)",
                    k.group_id
                ),
            ));
        }
        let internal = [
            format!("{}-events", k.group_id),
            format!("{}-changelog", k.group_id),
        ];
        let mut seen = std::collections::BTreeSet::new();
        for (i, t) in k.topics.iter().enumerate() {
            if t.name.is_empty() || !t.name.bytes().all(topic_char) {
                return Err(invalid(
                    &format!("kafka.topics[{i}].name"),
                    format!("{:?} is not a valid topic name", t.name),
                ));
            }
            if internal.contains(&t.name) {
                return Err(invalid(
                    &format!("kafka.topics[{i}].name"),
                    format!("{:?} is one of nhiwatch's internal topics", t.name),
                ));
            }
            if !seen.insert(&t.name) {
                return Err(invalid(
                    &format!("kafka.topics[{i}].name"),
                    format!("{:?} is listed twice", t.name),
                ));
            }
        }
        for (key, topic) in [
            ("kafka.alerts_topic", &k.alerts_topic),
            ("kafka.dlq_topic", &k.dlq_topic),
        ] {
            if let Some(t) = topic {
                if t.is_empty() || !t.bytes().all(topic_char) {
                    return Err(invalid(key, format!("{t:?} is not a valid topic name")));
                }
                if seen.contains(t) || internal.contains(t) {
                    return Err(invalid(
                        key,
                        format!("{t:?} is also an input or internal topic"),
                    ));
                }
            }
        }
        if !(1..=10_000).contains(&k.partitions) {
            return Err(invalid(
                "kafka.partitions",
                format!("{} is out of range 1..=10000", k.partitions),
            ));
        }
        if k.replication_factor == 0 {
            return Err(invalid(
                "kafka.replication_factor",
                "must be at least 1".into(),
            ));
        }
        let all = [
            ("options", &k.options),
            ("consumer_options", &k.consumer_options),
            ("producer_options", &k.producer_options),
        ];
        for (table, name) in all.iter().flat_map(|(t, m)| m.keys().map(move |n| (*t, n))) {
            if MANAGED_OPTIONS.contains(&name.as_str()) {
                return Err(invalid(
                    &format!("kafka.{table}.{name:?}"),
                    "is managed by nhiwatch (at-least-once delivery depends on it)".into(),
                ));
            }
            if name == "bootstrap.servers" || name == "group.id" {
                return Err(invalid(
                    &format!("kafka.{table}.{name:?}"),
                    "set kafka.bootstrap_servers or kafka.group_id instead".into(),
                ));
            }
        }
        if self.run.checkpoint_interval.as_secs() == 0 {
            return Err(invalid(
                "run.checkpoint_interval",
                "must be at least 1s".into(),
            ));
        }
        Ok(())
    }

    /// The fingerprint key from the environment variable, the key file or the config, in that
    /// order; `None` when none is set.
    pub fn fingerprint_key(&self) -> Result<Option<Vec<u8>>, ConfigError> {
        if let Ok(k) = std::env::var(FINGERPRINT_KEY_ENV)
            && !k.is_empty()
        {
            return Ok(Some(k.into_bytes()));
        }
        if let Some(path) = &self.fingerprint.key_file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            return Ok(Some(text.trim_end().as_bytes().to_vec()));
        }
        Ok(self.fingerprint.key.as_ref().map(|k| k.as_bytes().to_vec()))
    }
}

/// librdkafka properties nhiwatch sets itself: overriding them would break at-least-once
/// delivery or the state model.
pub const MANAGED_OPTIONS: &[&str] = &[
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.offset.reset",
    "enable.idempotence",
];

fn topic_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

/// A span of time written as `90s`, `15m`, `24h`, `7d` or `2w` in the config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(u64);

impl Duration {
    /// From seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Duration(secs)
    }

    /// In seconds.
    pub const fn as_secs(self) -> u64 {
        self.0
    }
}

impl FromStr for Duration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let split = s
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| format!("{s:?} has no unit (s, m, h, d, w)"))?;
        let (num, unit) = s.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{s:?} does not start with a number"))?;
        let mult = match unit.trim() {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 604_800,
            other => return Err(format!("unknown unit {other:?} in {s:?} (s, m, h, d, w)")),
        };
        n.checked_mul(mult)
            .map(Duration)
            .ok_or_else(|| format!("{s:?} is too long"))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        for (unit, n) in [("w", 604_800), ("d", 86_400), ("h", 3600), ("m", 60)] {
            if s != 0 && s.is_multiple_of(n) {
                return write!(f, "{}{unit}", s / n);
            }
        }
        write!(f, "{s}s")
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
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
                  [sql]\nhttp_listen = \"127.0.0.1:0\"\npassword = \"x\"\n";
        let mut cfg = Config::parse(ok).unwrap();
        cfg.validate().unwrap();
        let err = cfg.validate_run().unwrap_err().to_string();
        assert!(err.contains("lake.dir"), "{err}");
        cfg.lake.dir = Some("/tmp/lake".into());
        cfg.validate_run().unwrap();
    }

    #[test]
    fn durations_parse_and_print() {
        for (s, secs) in [
            ("90s", 90),
            ("15m", 900),
            ("24h", 86_400),
            ("7d", 604_800),
            ("2w", 1_209_600),
        ] {
            let d: Duration = s.parse().unwrap();
            assert_eq!(d.as_secs(), secs);
        }
        assert_eq!(Duration::from_secs(86_400).to_string(), "1d");
        assert_eq!(Duration::from_secs(90).to_string(), "90s");
        assert!("10".parse::<Duration>().is_err());
        assert!("10y".parse::<Duration>().is_err());
    }
}
