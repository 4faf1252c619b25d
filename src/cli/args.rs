//! The command line's grammar: every command, argument and flag with its help text and
//! `NHIWATCH_*` environment variable (clap derive), and how `run`'s flags override the file.

use super::*;

/// nhiwatch: anomaly detection for non-human identities (CI pipelines, deploy bots, workloads).
#[derive(Debug, Parser)]
#[command(name = "nhiwatch", version, about, max_term_width = 100)]
pub struct Cli {
    /// Configuration file (TOML). Without one, built-in defaults apply.
    #[arg(long, short = 'c', env = "NHIWATCH_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(
        long,
        value_enum,
        default_value_t,
        env = "NHIWATCH_LOG_FORMAT",
        global = true
    )]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Consume audit records from Kafka, detect, and write alerts to Kafka (and stdout), with
    /// at-least-once delivery and checkpointed baselines.
    Run(RunArgs),
    /// Decode records from files or stdin, run the detectors and write alerts as JSON lines.
    Replay(ReplayArgs),
    /// Show what nhiwatch has learned about identities (from a `--state` directory).
    #[command(subcommand)]
    Baselines(BaselinesCommand),
    /// Every identity with its kind, owner, environments, privilege, credential lifetime,
    /// runners, activity and risk tier (from a `--state` directory).
    Inventory(InventoryArgs),
    /// List the detectors with their effective specifications.
    Detectors,
    /// Write a synthetic organisation's records in the real formats, with injected attacks
    /// and an answer key.
    Simulate(SimulateArgs),
    /// Score alerts against a simulation's answer key: recall per attack kind, precision,
    /// false alerts per 1,000 identity-days.
    Score(ScoreArgs),
    /// Run SQL over the lake (tables `events`, `alerts`, `baselines`, `identities`), or serve it to
    /// `psql`, Grafana and HTTP clients with `--serve`.
    Query(QueryArgs),
    /// Validate the configuration file and exit.
    CheckConfig,
}

/// `nhiwatch query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The SQL: a query (the lake is read-only); `-` reads it from stdin. It may start with
    /// a `--` comment.
    #[arg(
        required_unless_present = "serve",
        value_name = "SQL",
        allow_hyphen_values = true
    )]
    pub sql: Option<String>,
    /// The lake directory (`lake.dir`).
    #[arg(long, env = "NHIWATCH_LAKE")]
    pub lake: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t, env = "NHIWATCH_QUERY_FORMAT")]
    pub format: crate::query::Format,
    /// Write the result here instead of stdout.
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    /// Serve the lake on the SQL endpoints until interrupted, instead of running one query.
    #[arg(long, conflicts_with = "sql")]
    pub serve: bool,
    /// PostgreSQL wire-protocol listener for `--serve` (`sql.pg_listen`).
    #[arg(long, env = "NHIWATCH_SQL_PG_LISTEN")]
    pub pg_listen: Option<String>,
    /// HTTP listener for `--serve` (`sql.http_listen`).
    #[arg(long, env = "NHIWATCH_SQL_HTTP_LISTEN")]
    pub http_listen: Option<String>,
}

/// `nhiwatch run`. Flags override the `[kafka]` and `[run]` sections of the config.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Brokers, `host:port[,host:port…]` (`kafka.bootstrap_servers`).
    #[arg(long, env = "NHIWATCH_KAFKA_BOOTSTRAP")]
    pub bootstrap_servers: Option<String>,
    /// An input topic, `NAME` or `NAME=FORMAT` (repeatable; replaces `kafka.topics`).
    #[arg(
        long = "topic",
        value_name = "NAME[=FORMAT]",
        env = "NHIWATCH_TOPICS",
        value_delimiter = ','
    )]
    pub topics: Vec<crate::config::TopicConfig>,
    /// Consumer group; internal topics are named after it (`kafka.group_id`).
    #[arg(long, env = "NHIWATCH_GROUP_ID")]
    pub group_id: Option<String>,
    /// Topic for alerts (`kafka.alerts_topic`).
    #[arg(long, env = "NHIWATCH_ALERTS_TOPIC")]
    pub alerts_topic: Option<String>,
    /// Dead-letter topic for undecodable records (`kafka.dlq_topic`).
    #[arg(long, env = "NHIWATCH_DLQ_TOPIC")]
    pub dlq_topic: Option<String>,
    /// Partitions of the internal topics (`kafka.partitions`).
    #[arg(long, env = "NHIWATCH_PARTITIONS")]
    pub partitions: Option<u32>,
    /// Local checkpoint directory (`run.state_dir`).
    #[arg(long, env = "NHIWATCH_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Checkpoint interval, e.g. `10s` (`run.checkpoint_interval`).
    #[arg(long, env = "NHIWATCH_CHECKPOINT_INTERVAL")]
    pub checkpoint_interval: Option<crate::config::Duration>,
    /// Serve `/metrics`, `/healthz` and `/readyz` here, e.g. `0.0.0.0:9464`
    /// (`run.metrics_addr`).
    #[arg(long, env = "NHIWATCH_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// Also write alerts to stdout, one per line (`run.alerts_stdout`).
    #[arg(long, env = "NHIWATCH_ALERTS_STDOUT")]
    pub alerts_stdout: bool,
    /// Encoding of the alerts written to stdout (`run.alerts_encoding`).
    #[arg(long, value_enum, env = "NHIWATCH_ENCODING")]
    pub encoding: Option<crate::encode::Encoding>,
    /// Write events and alerts to this lake directory (`lake.dir`).
    #[arg(long, env = "NHIWATCH_LAKE")]
    pub lake: Option<PathBuf>,
    /// A librdkafka property `NAME=VALUE` for every client (repeatable; adds to
    /// `kafka.options`).
    #[arg(long = "kafka-option", short = 'X', value_name = "NAME=VALUE")]
    pub kafka_options: Vec<String>,
}

impl RunArgs {
    /// Applies the flags to the configuration.
    pub fn apply(self, cfg: &mut Config) -> anyhow::Result<()> {
        let k = &mut cfg.kafka;
        if let Some(b) = self.bootstrap_servers {
            k.bootstrap_servers = Some(b);
        }
        if !self.topics.is_empty() {
            k.topics = self.topics;
        }
        if let Some(g) = self.group_id {
            k.group_id = g;
        }
        if self.alerts_topic.is_some() {
            k.alerts_topic = self.alerts_topic;
        }
        if self.dlq_topic.is_some() {
            k.dlq_topic = self.dlq_topic;
        }
        if let Some(p) = self.partitions {
            k.partitions = p;
        }
        for o in self.kafka_options {
            let (name, value) = o
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--kafka-option {o:?}: expected NAME=VALUE"))?;
            k.options.insert(name.trim().to_string(), value.to_string());
        }
        if self.state_dir.is_some() {
            cfg.run.state_dir = self.state_dir;
        }
        if self.lake.is_some() {
            cfg.lake.dir = self.lake;
        }
        if let Some(i) = self.checkpoint_interval {
            cfg.run.checkpoint_interval = i;
        }
        if self.alerts_stdout {
            cfg.run.alerts_stdout = true;
        }
        if let Some(e) = self.encoding {
            cfg.run.alerts_encoding = e;
        }
        if self.metrics_addr.is_some() {
            cfg.run.metrics_addr = self.metrics_addr;
        }
        Ok(())
    }
}

/// `nhiwatch replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Input files or directories (JSON lines, JSON documents or arrays, CloudTrail delivery
    /// files, gzip), or `-` for stdin.
    #[arg(required = true, value_name = "FILE")]
    pub inputs: Vec<String>,
    /// Input format; `auto` detects it per record.
    #[arg(long, value_enum, default_value_t, env = "NHIWATCH_FORMAT")]
    pub format: Format,
    /// What to write to the output: alerts (default), the decoded events, or nothing.
    #[arg(long, value_enum, default_value_t, env = "NHIWATCH_EMIT")]
    pub emit: Emit,
    /// Detectors to run, comma-separated (default: those enabled in their specifications;
    /// `first_seen` is the naive comparison rule).
    #[arg(long, value_delimiter = ',', env = "NHIWATCH_DETECTORS")]
    pub detectors: Option<Vec<String>>,
    /// Restore baselines from this directory at start and save them there on exit, so
    /// history replayed from files carries over to later runs.
    #[arg(long, env = "NHIWATCH_STATE_DIR")]
    pub state: Option<PathBuf>,
    /// Split identities over this many engines as `nhiwatch run` splits them over the
    /// partitions of its events topic (`kafka.partitions`). The engines share their
    /// cross-identity context (fleet and peer context, credential bindings), as designed in
    /// `docs/scale-out.md`, so the alerts are the same as with one partition.
    #[arg(long, default_value_t = 1, env = "NHIWATCH_REPLAY_PARTITIONS")]
    pub partitions: u32,
    /// With `--partitions N`: each engine judges its identities against its own context
    /// only, as `run`'s partitions do with `kafka.share_context = false`, to reproduce such a
    /// run's alerts exactly.
    #[arg(long, requires = "partitions")]
    pub isolated_partitions: bool,
    /// With `--partitions N`: the engines are held by this many `run` instances, as the
    /// consumer group spreads N partitions over them (contiguous ranges): the partitions of
    /// one instance judge together, instances apart, as `run` does with that many instances
    /// (`kafka.share_context`).
    #[arg(
        long,
        default_value_t = 1,
        requires = "partitions",
        conflicts_with = "isolated_partitions"
    )]
    pub instances: u32,
    /// With `--instances K`: the instances share their credential bindings, as `run` does
    /// through `<group>-bindings` (here with no delay).
    #[arg(long, requires = "instances")]
    pub share_bindings: bool,
    /// Do not release alerts still held in their fleet grace period at the end of the input:
    /// a live `run` would hold them until event time passes the grace period.
    #[arg(long)]
    pub hold: bool,
    /// Output file (default: stdout).
    #[arg(long, short = 'o', env = "NHIWATCH_OUTPUT")]
    pub output: Option<PathBuf>,
    /// How alerts are written to the output: the nhiwatch JSON, an OCSF Detection Finding,
    /// an ECS document, a CEF line or a Splunk HEC event.
    #[arg(long, value_enum, default_value_t, env = "NHIWATCH_ENCODING")]
    pub encoding: crate::encode::Encoding,
    /// Also deliver alerts to the config's `[[sinks]]` (SIEMs, files). Network sinks spool
    /// under `delivery.spool_dir`; what is not delivered within `delivery.drain_timeout` of
    /// the end stays spooled for the next run or replay with the same sinks.
    #[arg(long, env = "NHIWATCH_REPLAY_SINKS")]
    pub sinks: bool,
    /// Write every rejected record here (JSON lines: location, reason, record with secrets
    /// masked).
    #[arg(long, env = "NHIWATCH_REJECTS")]
    pub rejects: Option<PathBuf>,
    /// Progress bar on stderr.
    #[arg(long, value_enum, default_value_t, env = "NHIWATCH_PROGRESS")]
    pub progress: Progress,
    /// Serve `/metrics`, `/healthz` and `/readyz` here while the replay runs, e.g.
    /// `127.0.0.1:9464` (useful with a live stream on stdin).
    #[arg(long, env = "NHIWATCH_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// Write the events, the alerts and the final baselines to this lake directory, for
    /// `nhiwatch query` (`lake.dir`).
    #[arg(long, env = "NHIWATCH_LAKE")]
    pub lake: Option<PathBuf>,
}

/// `nhiwatch baselines`.
#[derive(Debug, Subcommand)]
pub enum BaselinesCommand {
    /// What nhiwatch believes about one identity: the first question after an alert.
    Show(ShowArgs),
    /// List the identities with a baseline, most active first.
    List(ListArgs),
}

/// `nhiwatch baselines show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The identity (as in alerts, e.g. `github:acme/api/.github/workflows/deploy.yml`).
    pub identity: String,
    /// The state directory written by `replay --state` or `run --state-dir`.
    #[arg(long, env = "NHIWATCH_STATE_DIR", default_value = "state")]
    pub state: PathBuf,
    /// JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `nhiwatch baselines list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// The state directory written by `replay --state` or `run --state-dir`.
    #[arg(long, env = "NHIWATCH_STATE_DIR", default_value = "state")]
    pub state: PathBuf,
    /// At most this many identities.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
}

/// `nhiwatch inventory`.
#[derive(Debug, Args)]
pub struct InventoryArgs {
    /// Record files, directories or `-` to build the inventory from directly (every format,
    /// auto-detected, as `replay` reads them); without any, the inventory is read from
    /// `--state`.
    #[arg(value_name = "INPUT")]
    pub inputs: Vec<String>,
    /// The state directory written by `replay --state` or `run --state-dir`.
    #[arg(long, env = "NHIWATCH_STATE_DIR", default_value = "state")]
    pub state: PathBuf,
    /// The input format when reading records (default: detect each record's).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// One JSON object per identity, as a JSON array.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// CSV with a header row.
    #[arg(long)]
    pub csv: bool,
    /// Only identities that minted for this environment.
    #[arg(long)]
    pub environment: Option<String>,
    /// Only identities of this tier or a riskier one (1 is the riskiest).
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=3))]
    pub tier: Option<u8>,
    /// Only identities of this source: github, gitlab, vault, k8s, aws.
    #[arg(long)]
    pub source: Option<String>,
    /// Only identities idle for at least this many days (counted from the newest event).
    #[arg(long)]
    pub stale_days: Option<u32>,
    /// Order: `tier` (riskiest first, then most mints), `last-seen` (most idle first),
    /// `mints` (busiest first) or `identity`.
    #[arg(long, default_value = "tier", value_parser = ["tier", "last-seen", "mints", "identity"])]
    pub sort: String,
}

/// `nhiwatch simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Random seed: the same settings give byte-identical records.
    #[arg(long, default_value_t = 1, env = "NHIWATCH_SIM_SEED")]
    pub seed: u64,
    /// The organisation's archetype: `classic` (the default, and the shipped sample week),
    /// `release-train`, `monorepo`, `self-hosted`, `kubernetes`, `vault`, `small`, `large`.
    /// Every profile but `classic` draws its parameters (time zone, schedules, mix of
    /// services, promotion cadence, runner fleets, rollouts) from the seed.
    #[arg(
        long,
        value_enum,
        default_value = "classic",
        env = "NHIWATCH_SIM_PROFILE"
    )]
    pub profile: simulate::Profile,
    /// Number of non-human identities in the simulated organisation (approximate: services,
    /// with one to four identities each, are added until it is reached). Default: 200, 40
    /// for `small`, 2,000 for `large`, 300 for the other profiles.
    #[arg(long, env = "NHIWATCH_SIM_IDENTITIES")]
    pub identities: Option<u32>,
    /// Number of days.
    #[arg(long, default_value_t = 14, env = "NHIWATCH_SIM_DAYS")]
    pub days: u32,
    /// Attacks to inject (default: one per 100 identity-days, at least 5).
    #[arg(long, env = "NHIWATCH_SIM_ATTACKS")]
    pub attacks: Option<u32>,
    /// Write the answer key here (JSON lines: one line per record an attack wrote, then a
    /// summary line).
    #[arg(long, env = "NHIWATCH_SIM_LABELS")]
    pub labels: Option<PathBuf>,
    /// The first day: a UTC date (`2026-01-05`) or any time on it. The default week contains
    /// Europe's change to summer time.
    #[arg(long, default_value = simulate::DEFAULT_START, env = "NHIWATCH_SIM_START")]
    pub start: String,
    /// The organisation's time zone: office hours follow it, cron schedules follow UTC.
    /// Default: Europe/Berlin for `classic`, drawn from the seed for the other profiles.
    #[arg(long, env = "NHIWATCH_SIM_TIMEZONE")]
    pub timezone: Option<String>,
    /// Also write the organisation's nhiwatch configuration (its time zone and AWS accounts
    /// by environment) to this file, for `replay --config`.
    #[arg(long, env = "NHIWATCH_SIM_CONFIG_OUT")]
    pub config_out: Option<PathBuf>,
    /// Stop after this many records.
    #[arg(long, env = "NHIWATCH_SIM_RECORDS")]
    pub records: Option<u64>,
    /// Only the records of this format (the organisation is the same).
    #[arg(long, value_enum, env = "NHIWATCH_SIM_FORMAT")]
    pub format: Option<Format>,
    /// Add the hygiene scenarios: labelled positives and hard negatives of the five hygiene
    /// findings (dormant identities, standing credentials, people's credentials on runners,
    /// new trust, production from unapproved refs) beside the organisation. Needs 14 days, 42
    /// for the dormant ones.
    #[arg(long, env = "NHIWATCH_SIM_HYGIENE")]
    pub hygiene: bool,
    /// Output file (default: stdout); gzip-compressed when it ends in `.gz`.
    #[arg(long, short = 'o', env = "NHIWATCH_OUTPUT")]
    pub output: Option<PathBuf>,
}

/// `nhiwatch score`.
#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// Alerts written by `replay` (JSON lines). Repeat with `--labels` to score several runs
    /// (seeds) as one: the n-th alerts file goes with the n-th answer key.
    #[arg(long, required = true)]
    pub alerts: Vec<PathBuf>,
    /// The answer key written by `simulate --labels`.
    #[arg(long, required = true)]
    pub labels: Vec<PathBuf>,
    /// JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Exit with status 2 when the recall of any attack kind (own detector) is below this.
    #[arg(long)]
    pub min_recall: Option<f64>,
    /// Exit with status 2 when precision is below this.
    #[arg(long)]
    pub min_precision: Option<f64>,
}
