//! Every metric nhiwatch exports, in one place: names follow
//! `nhiwatch_<area>_<name>_<unit>[_total]`; label values come from small closed sets (stages,
//! reasons, detectors, severities, sources, configured topics, environment *classes*) and are
//! never an identity, a token, a credential or an address.
//!
//! The registry is process-wide ([`get`]). Hot loops update pre-resolved handles (an atomic
//! add) or per batch; values that are cheaper to read than to maintain (event-time lag) are
//! computed when scraped ([`Metrics::encode`]).

mod handles;

pub use handles::{Census, EventCounters, RecordCounters, now_micros, observe_alert_latency};

use std::sync::LazyLock;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use prometheus::core::Collector;
use prometheus::{
    Encoder as _, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::decode::RejectReason;
use crate::event::{Action, Source};

/// Names of the process metrics (from the `prometheus` crate's process collector, under the
/// `nhiwatch` namespace); listed here so every exported name is in this file. The
/// `virtual_memory_max_bytes` one appears only when the process has an address-space limit.
pub const PROCESS_METRICS: &[&str] = &[
    "nhiwatch_process_cpu_seconds_total",
    "nhiwatch_process_open_fds",
    "nhiwatch_process_max_fds",
    "nhiwatch_process_virtual_memory_bytes",
    "nhiwatch_process_virtual_memory_max_bytes",
    "nhiwatch_process_resident_memory_bytes",
    "nhiwatch_process_start_time_seconds",
    "nhiwatch_process_threads",
];

/// Stages, for the `stage` label.
pub mod stage {
    /// `replay`: files or stdin.
    pub const REPLAY: &str = "replay";
    /// `run`: input topics → events topic.
    pub const INGEST: &str = "ingest";
    /// `run`: events → detectors → alerts.
    pub const DETECT: &str = "detect";
    /// Checkpoints and restores of partition state.
    pub const STATE: &str = "state";
    /// Alert delivery.
    pub const SINK: &str = "sink";
    /// The Parquet lake.
    pub const LAKE: &str = "lake";
    /// The SQL endpoints.
    pub const QUERY: &str = "query";
    /// The cluster as a whole (`run` cannot reach it).
    pub const KAFKA: &str = "kafka";
}

/// Operational error reasons, for `nhiwatch_errors_total{stage,reason}` (bad *records* are
/// rejects, not errors). Every (stage, reason) pair is exported from the start at 0.
pub const ERRORS: &[(&str, &str)] = &[
    (stage::REPLAY, "input_unreadable"),
    (stage::KAFKA, "unreachable"),
    (stage::INGEST, "kafka_consumer"),
    (stage::INGEST, "commit"),
    (stage::INGEST, "delivery"),
    (stage::DETECT, "kafka_consumer"),
    (stage::DETECT, "commit"),
    (stage::DETECT, "delivery"),
    (stage::STATE, "checkpoint"),
    (stage::STATE, "restore"),
    (stage::STATE, "local_checkpoint_unusable"),
    (stage::STATE, "changelog_slot_unusable"),
    (stage::STATE, "partitions_lost"),
    (stage::STATE, "checkpoint_fenced"),
    (stage::STATE, "disk_full"),
    (stage::STATE, "spill_failed"),
    (stage::STATE, "spill_unreadable"),
    (stage::SINK, "delivery"),
    (stage::SINK, "write"),
    (stage::SINK, "disk_full"),
    (stage::LAKE, "write"),
    (stage::LAKE, "disk_full"),
    (stage::LAKE, "staging_unreadable"),
    (stage::LAKE, "expire"),
];

/// Where records are decoded (and so can be rejected or dead-lettered).
const REJECT_STAGES: &[&str] = &[stage::REPLAY, stage::INGEST, stage::DETECT];

/// Latency buckets, seconds: 1 ms to 2 min.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
/// Checkpoint duration buckets, seconds.
const CHECKPOINT_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// SQL query duration buckets, seconds.
const QUERY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The `source` label of a record no decoder recognised.
pub const UNKNOWN_SOURCE: &str = "unknown";

/// All of nhiwatch's metrics.
pub struct Metrics {
    registry: Registry,
    /// `nhiwatch_input_records_total{topic,source}`.
    pub input_records: IntCounterVec,
    /// `nhiwatch_input_bytes_total{topic}`.
    pub input_bytes: IntCounterVec,
    /// `nhiwatch_events_total{source,action}`.
    pub events: IntCounterVec,
    /// `nhiwatch_records_rejected_total{stage,reason}`.
    pub rejects: IntCounterVec,
    /// `nhiwatch_errors_total{stage,reason}`.
    pub errors: IntCounterVec,
    /// `nhiwatch_dlq_records_total{stage,reason}`.
    pub dlq: IntCounterVec,
    /// `nhiwatch_detect_events_total`.
    pub detect_events: IntCounter,
    /// `nhiwatch_detect_skipped_total{reason}`.
    pub detect_skipped: IntCounterVec,
    /// `nhiwatch_alerts_total{detector,severity,environment}`.
    pub alerts: IntCounterVec,
    /// `nhiwatch_detector_findings_total{detector,outcome}`.
    pub findings: IntCounterVec,
    /// `nhiwatch_detector_held_total{detector,outcome}`.
    pub held_outcomes: IntCounterVec,
    /// `nhiwatch_alerts_held`.
    pub alerts_held: IntGauge,
    /// `nhiwatch_identities`.
    pub identities: IntGauge,
    /// `nhiwatch_identities_armed{detector}`.
    pub identities_armed: IntGaugeVec,
    /// `nhiwatch_identities_learning{detector}`.
    pub identities_learning: IntGaugeVec,
    /// `nhiwatch_baseline_memory_bytes`.
    pub baseline_bytes: IntGauge,
    /// `nhiwatch_credentials_live`.
    pub credentials: IntGauge,
    /// `nhiwatch_identities_spilled`.
    pub identities_spilled: IntGauge,
    /// `nhiwatch_state_fill_ratio{bound}`.
    pub state_fill: GaugeVec,
    /// `nhiwatch_state_evicted_total{bound,outcome}`.
    pub state_evicted: IntCounterVec,
    /// `nhiwatch_state_reloaded_total`.
    pub state_reloaded: IntCounter,
    /// `nhiwatch_alert_latency_seconds`.
    pub alert_latency: Histogram,
    /// `nhiwatch_event_time_lag_seconds{source}` (set when scraped).
    event_time_lag: GaugeVec,
    newest_event: [AtomicI64; Source::ALL.len()],
    /// `nhiwatch_kafka_consumer_lag_records{stage,topic,partition}`.
    pub consumer_lag: IntGaugeVec,
    /// `nhiwatch_kafka_commits_total{stage}`.
    pub commits: IntCounterVec,
    /// `nhiwatch_kafka_rebalances_total{stage,kind}`.
    pub rebalances: IntCounterVec,
    /// `nhiwatch_kafka_partitions_assigned{stage}`.
    pub partitions: IntGaugeVec,
    /// `nhiwatch_checkpoints_total`.
    pub checkpoints: IntCounter,
    /// `nhiwatch_alerts_already_sent_total`.
    pub alerts_already_sent: IntCounter,
    /// `nhiwatch_alerts_withheld_total`.
    pub alerts_withheld: IntCounter,
    /// `nhiwatch_partitions_judged_together`.
    pub judged_together: IntGauge,
    /// `nhiwatch_merge_buffered_records`.
    pub merge_buffered: IntGauge,
    /// `nhiwatch_bindings_published_total`.
    pub bindings_published: IntCounter,
    /// `nhiwatch_bindings_received_total`.
    pub bindings_received: IntCounter,
    /// `nhiwatch_checkpoint_duration_seconds`.
    pub checkpoint_seconds: Histogram,
    /// `nhiwatch_checkpoint_bytes_total`.
    pub checkpoint_bytes: IntCounter,
    /// `nhiwatch_state_restores_total{from}`.
    pub restores: IntCounterVec,
    /// `nhiwatch_sink_deliveries_total{sink}`.
    pub sink_deliveries: IntCounterVec,
    /// `nhiwatch_sink_failures_total{sink}`.
    pub sink_failures: IntCounterVec,
    /// `nhiwatch_sink_retries_total{sink}`.
    pub sink_retries: IntCounterVec,
    /// `nhiwatch_sink_queued_records{sink}`.
    pub sink_queued: IntGaugeVec,
    /// `nhiwatch_sink_dropped_total{sink,reason}`.
    pub sink_dropped: IntCounterVec,
    /// `nhiwatch_sink_spool_bytes{sink}`.
    pub sink_spool_bytes: IntGaugeVec,
    /// `nhiwatch_lake_rows_total{table}`.
    pub lake_rows: IntCounterVec,
    /// `nhiwatch_lake_files_total{table}`.
    pub lake_files: IntCounterVec,
    /// `nhiwatch_lake_bytes_total{table}`.
    pub lake_bytes: IntCounterVec,
    /// `nhiwatch_lake_partitions_expired_total`.
    pub lake_expired: IntCounter,
    /// `nhiwatch_query_requests_total{endpoint,outcome}`.
    pub queries: IntCounterVec,
    /// `nhiwatch_query_duration_seconds{endpoint}`.
    pub query_duration: HistogramVec,
    /// `nhiwatch_build_info{version}`.
    pub build_info: IntGaugeVec,
    /// Series of `consumer_lag` set so far: (stage, topic, partition).
    lag_series: std::sync::Mutex<Vec<(String, String, String)>>,
    /// Producer retries already added to `sink_retries` (librdkafka reports a running total).
    kafka_retries_seen: AtomicU64,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process-wide metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

/// Registers a collector built from a valid definition (names are constants of this file:
/// a bad one is a programming error, caught by the unit test below).
fn register<C: Collector + Clone + 'static>(r: &Registry, c: prometheus::Result<C>) -> C {
    let c = c.expect("valid metric definition");
    r.register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(r, IntCounterVec::new(Opts::new(name, help), labels))
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    register(r, IntCounter::new(name, help))
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(r, IntGaugeVec::new(Opts::new(name, help), labels))
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    register(r, IntGauge::new(name, help))
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: &[f64]) -> Histogram {
    register(
        r,
        Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec())),
    )
}

impl Metrics {
    fn new() -> Metrics {
        let r = Registry::new();
        let m = Metrics {
            input_records: counter_vec(
                &r,
                "nhiwatch_input_records_total",
                "Input records read, by Kafka topic (`file` or `stdin` for replay) and the source system they came from (`unknown` when no decoder recognised them).",
                &["topic", "source"],
            ),
            input_bytes: counter_vec(
                &r,
                "nhiwatch_input_bytes_total",
                "Bytes of input records read, by Kafka topic (`file` or `stdin` for replay).",
                &["topic"],
            ),
            events: counter_vec(
                &r,
                "nhiwatch_events_total",
                "Canonical events decoded from input records, by source system and action.",
                &["source", "action"],
            ),
            rejects: counter_vec(
                &r,
                "nhiwatch_records_rejected_total",
                "Input records (or elements of a batch record) that could not be decoded, by stage and reason.",
                &["stage", "reason"],
            ),
            errors: counter_vec(
                &r,
                "nhiwatch_errors_total",
                "Operational errors (Kafka, commits, deliveries, checkpoints, outputs), by stage and reason.",
                &["stage", "reason"],
            ),
            dlq: counter_vec(
                &r,
                "nhiwatch_dlq_records_total",
                "Rejected records written to the dead-letter topic, by stage and reason.",
                &["stage", "reason"],
            ),
            detect_events: counter(
                &r,
                "nhiwatch_detect_events_total",
                "Events inspected and learned by the detectors.",
            ),
            detect_skipped: counter_vec(
                &r,
                "nhiwatch_detect_skipped_total",
                "Events the detect stage skipped: `in_checkpoint` (already in the restored state) or `duplicate` (produced twice by ingest).",
                &["reason"],
            ),
            alerts: counter_vec(
                &r,
                "nhiwatch_alerts_total",
                "Alerts emitted, by detector, severity and environment class (a configured or canonical environment name, else production/staging/other, or none).",
                &["detector", "severity", "environment"],
            ),
            findings: counter_vec(
                &r,
                "nhiwatch_detector_findings_total",
                "Detector findings by what became of them: alerted, held (for the fleet grace period), suppressed (repeat within the suppression window), allowlisted, or peer_routine (usual among the identity's peers, not alerted).",
                &["detector", "outcome"],
            ),
            held_outcomes: counter_vec(
                &r,
                "nhiwatch_detector_held_total",
                "Held findings resolved: released (became an alert), fleet_rollout (dropped because the fleet adopted the value) or runner_replacement (dropped because the identity moved to the new runner for good).",
                &["detector", "outcome"],
            ),
            alerts_held: gauge(
                &r,
                "nhiwatch_alerts_held",
                "Alerts held in their fleet grace period now.",
            ),
            identities: gauge(
                &r,
                "nhiwatch_identities",
                "Identities with a baseline in memory (see `nhiwatch_identities_spilled` for the ones on disk).",
            ),
            identities_armed: gauge_vec(
                &r,
                "nhiwatch_identities_armed",
                "Identities past a detector's learning period (the detector judges them).",
                &["detector"],
            ),
            identities_learning: gauge_vec(
                &r,
                "nhiwatch_identities_learning",
                "Identities still in a detector's learning period (the detector only learns).",
                &["detector"],
            ),
            baseline_bytes: gauge(
                &r,
                "nhiwatch_baseline_memory_bytes",
                "Estimated memory of the identity baselines (keys, structures and heap).",
            ),
            credentials: gauge(
                &r,
                "nhiwatch_credentials_live",
                "Live credential bindings (minted credentials not yet expired).",
            ),
            identities_spilled: gauge(
                &r,
                "nhiwatch_identities_spilled",
                "Identities whose baseline is spilled to disk (past `state.max_identities`); read back when they return.",
            ),
            state_fill: register(
                &r,
                GaugeVec::new(
                    Opts::new(
                        "nhiwatch_state_fill_ratio",
                        "How full each bound of the detection state is (0–1): `identities` (in memory, of `state.max_identities`), `spilled` (of `state.max_spilled_identities`), `credentials` (of `state.max_credentials`), `fleet_values` (of `state.max_fleet_values`).",
                    ),
                    &["bound"],
                ),
            ),
            state_evicted: counter_vec(
                &r,
                "nhiwatch_state_evicted_total",
                "State moved out or forgotten to stay within its bounds: `bound` identities (outcome `spilled` to disk, or `dropped`: past `state.max_spilled_identities` or the spill failed), credentials (outcome `dropped`: the bindings expiring soonest, past `state.max_credentials`) or fleet_values (outcome `dropped`: the values seen longest ago, past `state.max_fleet_values`).",
                &["bound", "outcome"],
            ),
            state_reloaded: counter(
                &r,
                "nhiwatch_state_reloaded_total",
                "Spilled identities read back from disk when they returned.",
            ),
            alert_latency: histogram(
                &r,
                "nhiwatch_alert_latency_seconds",
                "Processing latency of alerts: from the arrival of the record that made the detectors emit the alert to the alert's handoff (delivery confirmed by the alerts topic, or written to stdout or the output file).",
                LATENCY_BUCKETS,
            ),
            event_time_lag: register(
                &r,
                GaugeVec::new(
                    Opts::new(
                        "nhiwatch_event_time_lag_seconds",
                        "Wall-clock time minus the event time of the newest event the detectors processed, by source system.",
                    ),
                    &["source"],
                ),
            ),
            newest_event: std::array::from_fn(|_| AtomicI64::new(i64::MIN)),
            consumer_lag: gauge_vec(
                &r,
                "nhiwatch_kafka_consumer_lag_records",
                "Records in a partition not yet processed: high watermark minus the position of processing, by stage, topic and partition (from librdkafka statistics).",
                &["stage", "topic", "partition"],
            ),
            commits: counter_vec(
                &r,
                "nhiwatch_kafka_commits_total",
                "Offset commits, by stage.",
                &["stage"],
            ),
            rebalances: counter_vec(
                &r,
                "nhiwatch_kafka_rebalances_total",
                "Consumer group rebalances seen, by stage and kind (assign, revoke).",
                &["stage", "kind"],
            ),
            partitions: gauge_vec(
                &r,
                "nhiwatch_kafka_partitions_assigned",
                "Partitions assigned to this instance, by stage.",
                &["stage"],
            ),
            checkpoints: counter(
                &r,
                "nhiwatch_checkpoints_total",
                "Partition checkpoints written and committed.",
            ),
            alerts_already_sent: counter(
                &r,
                "nhiwatch_alerts_already_sent_total",
                "Alerts of records processed again after a restore that the alerts topic already held (sent before a crash), not sent twice.",
            ),
            alerts_withheld: counter(
                &r,
                "nhiwatch_alerts_withheld_total",
                "Alerts held back because this instance stood still past the group's session timeout and may no longer own the partition: sent once the group confirms it does, dropped with a partition it lost (its new owner sends them).",
            ),
            judged_together: gauge(
                &r,
                "nhiwatch_partitions_judged_together",
                "Event partitions this instance holds that judge together (one fleet and peer context, one table of credential bindings; kafka.share_context); 0 when each judges alone.",
            ),
            merge_buffered: gauge(
                &r,
                "nhiwatch_merge_buffered_records",
                "Records of the partitions judged together read from Kafka and waiting for their turn in the order ingest produced them.",
            ),
            bindings_published: counter(
                &r,
                "nhiwatch_bindings_published_total",
                "New credential bindings (a credential's first mint) this instance published to <group>-bindings for the other instances.",
            ),
            bindings_received: counter(
                &r,
                "nhiwatch_bindings_received_total",
                "Credential bindings other instances published, read from <group>-bindings and merged into this instance's table.",
            ),
            checkpoint_seconds: histogram(
                &r,
                "nhiwatch_checkpoint_duration_seconds",
                "Time to take a checkpoint: flush alerts, write the changelog and local files, commit.",
                CHECKPOINT_BUCKETS,
            ),
            checkpoint_bytes: counter(
                &r,
                "nhiwatch_checkpoint_bytes_total",
                "Bytes of partition state written to checkpoints.",
            ),
            restores: counter_vec(
                &r,
                "nhiwatch_state_restores_total",
                "Partition states restored, by where from (local, changelog, empty).",
                &["from"],
            ),
            sink_deliveries: counter_vec(
                &r,
                "nhiwatch_sink_deliveries_total",
                "Alerts delivered, by sink.",
                &["sink"],
            ),
            sink_failures: counter_vec(
                &r,
                "nhiwatch_sink_failures_total",
                "Alert deliveries that failed, by sink.",
                &["sink"],
            ),
            sink_retries: counter_vec(
                &r,
                "nhiwatch_sink_retries_total",
                "Delivery retries, by sink (kafka: produce requests librdkafka retried).",
                &["sink"],
            ),
            sink_queued: gauge_vec(
                &r,
                "nhiwatch_sink_queued_records",
                "Records accepted by a sink and not yet confirmed delivered, by sink (kafka: librdkafka's producer queue; http, syslog: records in the disk spool).",
                &["sink"],
            ),
            sink_dropped: counter_vec(
                &r,
                "nhiwatch_sink_dropped_total",
                "Alerts a sink gave up on, by sink and reason (spool_full: dropped oldest by the drop_oldest policy; refused: the receiver refused the record; too_large: larger than the spool's record limit; both kept in the spool's rejected file).",
                &["sink", "reason"],
            ),
            sink_spool_bytes: gauge_vec(
                &r,
                "nhiwatch_sink_spool_bytes",
                "Bytes of undelivered alerts in a sink's disk spool.",
                &["sink"],
            ),
            lake_rows: counter_vec(
                &r,
                "nhiwatch_lake_rows_total",
                "Rows written to Parquet files of the lake, by table.",
                &["table"],
            ),
            lake_files: counter_vec(
                &r,
                "nhiwatch_lake_files_total",
                "Parquet files written to the lake, by table.",
                &["table"],
            ),
            lake_bytes: counter_vec(
                &r,
                "nhiwatch_lake_bytes_total",
                "Bytes of Parquet written to the lake, by table.",
                &["table"],
            ),
            lake_expired: counter(
                &r,
                "nhiwatch_lake_partitions_expired_total",
                "Day partitions deleted by lake.retention.",
            ),
            queries: counter_vec(
                &r,
                "nhiwatch_query_requests_total",
                "SQL queries served, by endpoint (http, postgres) and outcome (ok, error, refused, memory_limit, timeout).",
                &["endpoint", "outcome"],
            ),
            query_duration: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "nhiwatch_query_duration_seconds",
                        "Time to plan and run a SQL query, by endpoint.",
                    )
                    .buckets(QUERY_BUCKETS.to_vec()),
                    &["endpoint"],
                ),
            ),
            build_info: gauge_vec(
                &r,
                "nhiwatch_build_info",
                "Always 1; labels identify the running build.",
                &["version"],
            ),
            kafka_retries_seen: AtomicU64::new(0),
            lag_series: std::sync::Mutex::default(),
            registry: r,
        };
        m.registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::new(
                    std::process::id() as i32,
                    "nhiwatch",
                ),
            ))
            .expect("process collector registered once");
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        // Families whose label sets are known up front start at zero, so a dashboard shows 0
        // rather than "no data" on a healthy system.
        for (s, reason) in ERRORS {
            m.errors.with_label_values(&[s, reason]);
        }
        for s in REJECT_STAGES {
            for r in RejectReason::ALL {
                m.rejects.with_label_values(&[s, r.as_str()]);
            }
        }
        m.detect_events.inc_by(0);
        for reason in ["in_checkpoint", "duplicate"] {
            m.detect_skipped.with_label_values(&[reason]);
        }
        for labels in [
            ["identities", "spilled"],
            ["identities", "dropped"],
            ["credentials", "dropped"],
            ["fleet_values", "dropped"],
        ] {
            m.state_evicted.with_label_values(&labels);
        }
        m
    }

    /// Marks a stage and its sinks as present, so their families export zeros from the start.
    pub fn declare_sink(&self, sink: &str) {
        self.sink_deliveries.with_label_values(&[sink]);
        self.sink_failures.with_label_values(&[sink]);
        self.sink_retries.with_label_values(&[sink]);
        self.sink_queued.with_label_values(&[sink]);
    }

    /// Declares a sink with a disk spool: its drop counters and spool size export zeros too.
    pub fn declare_spooled_sink(&self, sink: &str) {
        self.declare_sink(sink);
        for reason in ["spool_full", "refused", "too_large"] {
            self.sink_dropped.with_label_values(&[sink, reason]);
        }
        self.sink_spool_bytes.with_label_values(&[sink]);
    }

    /// Declares the alert series of the detectors that run, for every severity and
    /// environment label, so the first alert of a kind shows in `increase()` (a series born
    /// at 1 has no earlier sample to rise from).
    pub fn declare_alerts(&self, detectors: &[&str], environments: &[&str]) {
        for d in detectors {
            for sev in crate::alert::Severity::ALL {
                for env in environments {
                    self.alerts.with_label_values(&[d, sev.as_str(), env]);
                }
            }
        }
    }

    /// Declares the dead-letter families of a stage (when a dead-letter topic is set).
    pub fn declare_dlq(&self, stage: &str) {
        for r in RejectReason::ALL {
            self.dlq.with_label_values(&[stage, r.as_str()]);
        }
    }

    /// Declares a Kafka stage: commits, rebalances and assigned partitions export zeros.
    pub fn declare_kafka_stage(&self, stage: &str) {
        self.commits.with_label_values(&[stage]);
        for kind in ["assign", "revoke"] {
            self.rebalances.with_label_values(&[stage, kind]);
        }
        self.partitions.with_label_values(&[stage]);
    }

    /// Counts a partition revocation of `stage`.
    pub fn revoked(&self, stage: &str) {
        self.rebalances.with_label_values(&[stage, "revoke"]).inc();
    }

    /// Counts an assignment of `partitions` partitions to `stage`.
    pub fn assigned(&self, stage: &str, partitions: usize) {
        self.rebalances.with_label_values(&[stage, "assign"]).inc();
        self.partitions
            .with_label_values(&[stage])
            .set(partitions as i64);
    }

    /// Counts a commit of `stage`: a success, or an error. (Commits are synchronous:
    /// rust-rdkafka 0.39 never reports the result of an asynchronous one to
    /// `commit_callback`, fede1024/rust-rdkafka#856, so a failed async commit went unseen.)
    pub fn committed(&self, stage: &str, ok: bool) {
        if ok {
            self.commits.with_label_values(&[stage]).inc();
        } else {
            self.error(stage, "commit");
        }
    }

    /// Declares the lake's families (when a lake is written).
    pub fn declare_lake(&self) {
        for t in ["events", "alerts"] {
            self.lake_rows.with_label_values(&[t]);
            self.lake_files.with_label_values(&[t]);
            self.lake_bytes.with_label_values(&[t]);
        }
    }

    /// Counts a Parquet file of `rows` rows and `bytes` bytes written to `table`.
    pub fn lake_written(&self, table: &str, rows: u64, bytes: u64) {
        self.lake_rows.with_label_values(&[table]).inc_by(rows);
        self.lake_files.with_label_values(&[table]).inc();
        self.lake_bytes.with_label_values(&[table]).inc_by(bytes);
    }

    /// Counts day partitions removed by retention.
    pub fn lake_expired(&self, partitions: u64) {
        self.lake_expired.inc_by(partitions);
    }

    /// Declares the SQL endpoints' families.
    pub fn declare_query(&self, endpoint: &str) {
        for outcome in ["ok", "error", "refused", "timeout", "too_large"] {
            self.queries.with_label_values(&[endpoint, outcome]);
        }
        self.query_duration.with_label_values(&[endpoint]);
    }

    /// Counts a query of `endpoint` with its outcome and duration.
    pub fn query_done(&self, endpoint: &str, outcome: &str, secs: f64) {
        self.queries.with_label_values(&[endpoint, outcome]).inc();
        self.query_duration
            .with_label_values(&[endpoint])
            .observe(secs);
    }

    /// Counts an operational error.
    pub fn error(&self, stage: &str, reason: &str) {
        self.errors.with_label_values(&[stage, reason]).inc();
    }

    /// Notes the event time (Unix seconds) of an event the detectors processed.
    #[inline]
    pub fn saw_event_time(&self, source: Source, secs: i64) {
        let slot = &self.newest_event[source as usize];
        if secs > slot.load(Ordering::Relaxed) {
            slot.fetch_max(secs, Ordering::Relaxed);
        }
    }

    /// Updates the consumer lag of `stage` from librdkafka statistics: every assigned
    /// partition's high watermark minus the next offset handed to nhiwatch. Series of
    /// partitions no longer assigned are removed.
    pub fn consumer_stats(&self, stage: &str, stats: &rdkafka::Statistics) {
        let mut live: Vec<(String, String)> = Vec::new();
        for (topic, t) in &stats.topics {
            for (p, part) in &t.partitions {
                // -1 is librdkafka's internal "unassigned" partition.
                if *p < 0 || !part.desired || part.hi_offset < 0 {
                    continue;
                }
                let position = if part.app_offset >= 0 {
                    part.app_offset
                } else if part.committed_offset >= 0 {
                    part.committed_offset
                } else {
                    part.lo_offset.max(0)
                };
                let lag = (part.hi_offset - position).max(0);
                let partition = p.to_string();
                self.consumer_lag
                    .with_label_values(&[stage, topic.as_str(), partition.as_str()])
                    .set(lag);
                live.push((topic.clone(), partition));
            }
        }
        let mut series = self.lag_series.lock().unwrap_or_else(|e| e.into_inner());
        series.retain(|(st, topic, partition)| {
            let keep = st != stage || live.iter().any(|(t, p)| t == topic && p == partition);
            if !keep {
                let _ = self.consumer_lag.remove_label_values(&[
                    st.as_str(),
                    topic.as_str(),
                    partition.as_str(),
                ]);
            }
            keep
        });
        for (t, p) in live {
            if !series
                .iter()
                .any(|(st, topic, partition)| st == stage && *topic == t && *partition == p)
            {
                series.push((stage.to_string(), t, p));
            }
        }
    }

    /// Updates the Kafka sink's queue and retries from the alert producer's statistics.
    pub fn producer_stats(&self, stats: &rdkafka::Statistics) {
        self.sink_queued
            .with_label_values(&["kafka"])
            .set(stats.msg_cnt as i64);
        let total: u64 = stats.brokers.values().map(|b| b.txretries).sum();
        let seen = self.kafka_retries_seen.swap(total, Ordering::Relaxed);
        if total > seen {
            self.sink_retries
                .with_label_values(&["kafka"])
                .inc_by(total - seen);
        }
    }

    /// Sets the detection-state gauges from a census of every engine in the process.
    pub fn set_census(&self, c: &Census) {
        self.identities.set(c.identities as i64);
        for (name, armed) in &c.armed {
            self.identities_armed
                .with_label_values(&[name])
                .set(*armed as i64);
            self.identities_learning
                .with_label_values(&[name])
                .set(c.identities.saturating_sub(*armed) as i64);
        }
        self.baseline_bytes.set(c.baseline_bytes as i64);
        self.credentials.set(c.credentials as i64);
        self.alerts_held.set(c.held as i64);
        self.identities_spilled.set(c.spilled as i64);
        for (bound, n, max) in [
            ("identities", c.identities, c.max[0]),
            ("spilled", c.spilled, c.max[1]),
            ("credentials", c.credentials, c.max[2]),
            ("fleet_values", c.fleet_values, c.max[3]),
        ] {
            if max > 0 {
                self.state_fill
                    .with_label_values(&[bound])
                    .set(n as f64 / max as f64);
            }
        }
    }

    /// The exposition in Prometheus text format, with the scrape-time values refreshed.
    pub fn encode(&self) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        for (i, s) in Source::ALL.iter().enumerate() {
            let newest = self.newest_event[i].load(Ordering::Relaxed);
            if newest != i64::MIN {
                self.event_time_lag
                    .with_label_values(&[s.as_str()])
                    .set((now - newest) as f64);
            }
        }
        let mut buf = Vec::with_capacity(16 << 10);
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// The sum of every series of a counter family (for log lines and summaries).
pub fn total(v: &IntCounterVec) -> u64 {
    v.collect()
        .iter()
        .flat_map(|f| f.get_metric())
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_prefixed_and_declared_families_export_zeros() {
        let text = get().encode();
        let mut names = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                names.push(rest.split(' ').next().unwrap_or_default().to_string());
            }
        }
        for expected in ["nhiwatch_errors_total", "nhiwatch_alert_latency_seconds"] {
            assert!(names.iter().any(|n| n == expected), "{expected}: {names:?}");
        }
        for p in PROCESS_METRICS {
            // Exported when the process has a virtual memory limit only.
            if !p.ends_with("_max_bytes") {
                assert!(names.iter().any(|n| n == p), "{p}: {names:?}");
            }
        }
        for n in &names {
            assert!(n.starts_with("nhiwatch_"), "{n} lacks the prefix");
        }
        assert!(text.contains("nhiwatch_errors_total{reason=\"commit\",stage=\"detect\"} 0"));
        assert!(text.contains("nhiwatch_build_info{version=\""));
    }
}
