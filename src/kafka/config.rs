//! `[kafka]` and `[run]`: the cluster, the topics, librdkafka options, and how `nhiwatch run`
//! keeps its state. The sections sit below the assembled [`crate::config::Config`]; the
//! stages that use them sit above it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;

use serde::Deserialize;

use crate::error::ConfigError;
use crate::units::Duration;

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
    /// The partitions one instance owns judge together (the default): one fleet and peer
    /// context, one table of credential bindings, kept in step by event time, as `replay`
    /// judges. With `false` every partition judges alone (its own fleet, peers and
    /// bindings), as earlier versions did: alerts then depend only on the partition count,
    /// never on which instance owns which partitions.
    #[serde(default = "default_true")]
    pub share_context: bool,
    /// With several partitions judging together: how long a record waits for a partition
    /// that has nothing buffered before it is taken anyway (milliseconds). Records of one
    /// instance's partitions are judged in the order ingest produced them as long as no
    /// partition's records reach this instance more than this after another's; raise it when
    /// the broker is slow to serve some partitions (the cost: alerts wait up to this long
    /// while a partition is quiet).
    #[serde(default = "default_merge_wait_ms")]
    pub merge_wait_ms: u64,
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
            share_context: true,
            merge_wait_ms: default_merge_wait_ms(),
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

fn default_merge_wait_ms() -> u64 {
    200
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
                        let known: Vec<String> =
                            <crate::decode::Format as clap::ValueEnum>::value_variants()
                                .iter()
                                .filter_map(clap::ValueEnum::to_possible_value)
                                .map(|v| v.get_name().to_string())
                                .collect();
                        format!("unknown format {f:?} in {s:?} ({})", known.join(", "))
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
    /// A file whose first line is the bearer token `/metrics` asks for (else
    /// `NHIWATCH_METRICS_TOKEN`; open when neither is set). `replay --metrics-addr` uses it too.
    #[serde(default)]
    pub metrics_token_file: Option<std::path::PathBuf>,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            state_dir: None,
            checkpoint_interval: default_checkpoint_interval(),
            alerts_stdout: false,
            alerts_encoding: crate::encode::Encoding::Json,
            metrics_addr: None,
            metrics_token_file: None,
        }
    }
}

fn default_checkpoint_interval() -> Duration {
    Duration::from_secs(10)
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

impl KafkaConfig {
    /// Checks what `nhiwatch run` needs: brokers, valid and distinct topic names, partitions,
    /// and no librdkafka option that nhiwatch manages itself.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: key.to_string(),
            message,
        };
        let k = self;
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
        Ok(())
    }
}

impl RunConfig {
    /// Checks the checkpoint interval.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.checkpoint_interval.as_secs() == 0 {
            return Err(ConfigError::Invalid {
                key: "run.checkpoint_interval".into(),
                message: "must be at least 1s".into(),
            });
        }
        Ok(())
    }
}
