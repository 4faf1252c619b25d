//! The detect stage: `<group>-events` → one detection engine per partition → alerts, with
//! checkpoints of each partition's state and the offset it includes (see [`super::checkpoint`]).
//!
//! A partition's state is restored (local file if it is current, else the changelog) when its
//! first record arrives after an assignment, and checkpointed and dropped when it is revoked,
//! so a partition that moves between instances takes its baselines with it.

mod merge;
mod saver;

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::{Header, Headers as _, OwnedHeaders};
use rdkafka::producer::BaseRecord;
use rdkafka::{ClientContext, Message, TopicPartitionList};

use super::checkpoint::{self, Checkpoint, Marks, Src};
use super::client::{self, Deliveries, Producer, Role};
use super::{Error, headers};
use crate::alert::Alert;
use crate::config::{Config, KafkaConfig};
use crate::decode::{Decoded, Decoder};
use crate::detect::Engine;
use crate::telemetry::metrics::{self, stage};
use saver::*;

/// librdkafka's default `session.timeout.ms`.
const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(45);

/// The least time between two checkpoints taken because the stream went quiet.
const IDLE_CHECKPOINT: Duration = Duration::from_secs(1);
/// How often the value texts shared by the partitions judging together are pruned (an
/// engine alone prunes its own once a day of event time).
const PRUNE_SHARED_EVERY: Duration = Duration::from_secs(600);
/// Records taken from the merge buffer between two polls of the consumer.
const MERGE_BATCH: usize = 1024;
/// How long a checkpoint may wait for the cluster.
const TIMEOUT: Duration = Duration::from_secs(60);

/// How often a restore that failed for want of the cluster is tried again.
const RESTORE_RETRY: Duration = Duration::from_secs(2);
/// How often the detection-state gauges (identities, memory, held alerts) are recounted.
const CENSUS_EVERY: Duration = Duration::from_secs(5);

/// Settings of the stage.
pub struct Detect {
    /// The whole configuration (each partition builds its engine from it).
    pub cfg: Config,
    /// The topics detection reads, with their decoders: `<group>-events` (canonical events)
    /// after repartitioning, or the input topics themselves in direct mode.
    pub topics: HashMap<String, Decoder>,
    /// Partitions of the changelog topic.
    pub changelog_partitions: i32,
    /// Repartitioned (the events topic's partition p checkpoints to changelog partition p)
    /// or direct (input partitions are spread over the changelog partitions by hash).
    pub repartitioned: bool,
    /// `<group>-changelog`.
    pub changelog_topic: String,
    /// The group of this stage.
    pub group: String,
    /// Alerts topic.
    pub alerts_topic: Option<String>,
    /// Dead letters.
    pub dlq_topic: Option<String>,
    /// Local checkpoints.
    pub state_dir: Option<PathBuf>,
    /// Checkpoint interval.
    pub interval: Duration,
    /// Alerts to stdout too.
    pub stdout: bool,
    /// Set once partitions are assigned (`/readyz`).
    pub ready: Arc<AtomicBool>,
}

struct Part {
    src: Src,
    engine: Engine,
    next_offset: i64,
    epoch: u64,
    marks: HashMap<(String, i32), (i64, u32)>,
    dirty: bool,
    warned_gap: bool,
    /// Ids of alerts already on the alerts topic for records after the restored checkpoint.
    sent: HashSet<String>,
    /// Alerts of records processed while this instance may have lost the partition (it stood
    /// still past the session timeout; see [`Saver::fenced`]), held back until it knows: sent
    /// if it still owns the partition, dropped with it if not (its new owner processes those
    /// records again and sends them). A partition holding some is not checkpointed.
    withheld: Vec<Withheld>,
}

/// An alert held back while the partition's ownership is in doubt.
struct Withheld {
    alert: Alert,
    input_time: Option<i64>,
    arrival: u64,
    already_sent: bool,
}

struct Ctx {
    parts: Arc<Mutex<HashMap<Key, Part>>>,
    saver: Arc<Saver>,
    /// The partitions held here judge together (`kafka.share_context`).
    share: bool,
    /// Their records, taken in the order ingest produced them (several partitions that
    /// judge together, repartitioned).
    merge: Option<Mutex<merge::Merge>>,
    /// The instance's shared context (fleet, bindings, value texts, news, trust): an engine
    /// without identities that every partition restored here joins (several partitions that
    /// judge together).
    root: Option<Mutex<Engine>>,
    /// The event partitions this instance holds (restored or being restored): the bindings
    /// their identities minted come from their own processing, never from other instances.
    held: Arc<std::sync::RwLock<Vec<i32>>>,
    /// Partitions just assigned, for the poll loop to restore.
    assigned: Arc<Mutex<Option<Vec<Key>>>>,
}

/// A partition detection reads: topic and partition.
type Key = (String, i32);

impl ClientContext for Ctx {
    fn stats(&self, statistics: rdkafka::Statistics) {
        metrics::get().consumer_stats(stage::DETECT, &statistics);
    }
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            metrics::get().revoked(stage::DETECT);
            let revoked = super::partitions_of(tpl);
            if let Some(m) = &self.merge {
                m.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .revoked(&revoked);
            }
            let mut parts = self.parts.lock().unwrap_or_else(|e| e.into_inner());
            if consumer.assignment_lost() {
                // The group gave them to another instance while this one did not answer:
                // that owner restored the last checkpoint and writes its own from there, so
                // this instance's newer but unwritten state is dropped, never written.
                metrics::get().error(stage::STATE, "partitions_lost");
                tracing::warn!(partitions = ?revoked, "event partitions lost (the group's session timed out): their state since the last checkpoint is dropped unwritten; the new owner re-reads those records");
                for p in &revoked {
                    if let Some(part) = parts.remove(p) {
                        self.saver.forget_withheld(&part);
                    }
                }
                if self.share {
                    settle_shared(&mut parts, &self.held);
                }
                return;
            }
            if let Err(e) = self.saver.checkpoint(consumer, &mut parts, Some(&revoked)) {
                tracing::error!(error = %e, "checkpoint on revoke failed; the next owner resumes from the previous checkpoint");
            }
            for p in &revoked {
                if let Some(part) = parts.remove(p) {
                    self.saver.forget_withheld(&part);
                }
            }
            if self.share {
                settle_shared(&mut parts, &self.held);
            }
            tracing::info!(partitions = ?revoked, "event partitions revoked");
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let assigned = super::partitions_of(tpl);
            metrics::get().assigned(stage::DETECT, assigned.len());
            tracing::info!(partitions = ?assigned, "event partitions assigned");
            if let Some(m) = &self.merge {
                m.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .assigned(&assigned);
            }
            *self.assigned.lock().unwrap_or_else(|e| e.into_inner()) = Some(assigned);
        }
    }
}

impl Detect {
    /// Runs until `stop` is set; checkpoints and commits before returning.
    pub fn run(self, stop: &AtomicBool) -> Result<(), Error> {
        let k = self.cfg.kafka.clone();
        let (producer, deliveries) =
            client::producer(&k, &self.group, stage::DETECT, self.alerts_topic.is_some())?;
        let m = metrics::get();
        m.declare_kafka_stage(stage::DETECT);
        if self.alerts_topic.is_some() {
            m.declare_sink("kafka");
        }
        if self.stdout {
            m.declare_sink("stdout");
        }
        if self.dlq_topic.is_some() && !self.repartitioned {
            m.declare_dlq(stage::DETECT);
        }
        let env = crate::environment::EnvResolver::new(&self.cfg.environments);
        let names = self
            .cfg
            .engine(None)
            .map_err(|e| Error::Setup(e.to_string()))?
            .detector_names();
        m.declare_alerts(&names, &env.metric_labels());
        let direct: HashMap<String, metrics::RecordCounters> = if self.repartitioned {
            HashMap::new()
        } else {
            self.topics
                .keys()
                .map(|t| (t.clone(), metrics::RecordCounters::new(t)))
                .collect()
        };
        let hot = Hot {
            env,
            direct,
            events: metrics::EventCounters::new(),
            detected: m.detect_events.clone(),
            in_checkpoint: m.detect_skipped.with_label_values(&["in_checkpoint"]),
            duplicates: m.detect_skipped.with_label_values(&["duplicate"]),
        };
        // Latency is observed once per alert, on the first delivery path there is.
        let latency_sink = if self.alerts_topic.is_some() || self.stdout {
            None
        } else {
            self.cfg
                .sinks
                .iter()
                .find(|s| s.is_network())
                .map(|s| s.name())
        };
        let spool_dir = self.cfg.spool_dir();
        let hostname = self.cfg.delivery.hostname();
        let sinks = crate::sink::Sinks::build(
            &self.cfg.sinks,
            &crate::sink::BuildOptions {
                spool_dir: spool_dir.as_deref(),
                hostname: hostname.clone(),
                latency_sink,
            },
        )
        .map_err(|e| Error::Sink(e.to_string()))?;
        let lake = match &self.cfg.lake.dir {
            Some(dir) => {
                m.declare_lake();
                Some(Mutex::new(Lake {
                    writer: crate::lake::Writer::open(dir, &self.cfg.lake, "detect")?,
                    baselines_every: Duration::from_secs(self.cfg.lake.roll_interval.as_secs()),
                    baselines_at: None,
                }))
            }
            None => None,
        };
        let watermarks = checkpoint::restore_client(&k, &self.group)?;
        // The alerts topic exists (run creates it before the stages start).
        let alerts_partitions = match &self.alerts_topic {
            Some(topic) => watermarks
                .fetch_metadata(Some(topic), TIMEOUT)
                .map_err(|e| Error::Unavailable {
                    message: format!("metadata of {topic}: {e}"),
                })?
                .topics()
                .iter()
                .find(|t| t.name() == topic)
                .map_or(0, |t| t.partitions().len() as i32),
            None => 0,
        };
        // Several partitions judging together: the instance's context, and the bindings
        // shared with other instances through `<group>-bindings` (created by `run`).
        let together = self.cfg.kafka.share_context && self.cfg.kafka.partitions > 1;
        let root = if together {
            Some(
                self.cfg
                    .engine(None)
                    .map_err(|e| Error::Setup(e.to_string()))?,
            )
        } else {
            None
        };
        let instance = format!(
            "{}-{}-{}",
            hostname,
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        let bindings_table = root.as_ref().map(|r| r.state.credentials.clone());
        let held: Arc<std::sync::RwLock<Vec<i32>>> = Arc::default();
        let saver = Arc::new(Saver {
            bindings_topic: (together && self.repartitioned)
                .then(|| super::bindings::topic(&k.group_id)),
            instance: instance.clone(),
            bindings: Mutex::default(),
            alerts_topic: self.alerts_topic.clone(),
            alerts_partitions,
            alerts_since: AtomicU64::new(0),
            written: AtomicU64::new(0),
            crash_after_alerts: std::env::var_os("NHIWATCH_TEST_CRASH_AFTER_ALERTS").is_some(),
            stall_before_alert: std::env::var("NHIWATCH_TEST_STALL_BEFORE_ALERT")
                .ok()
                .and_then(|s| s.parse().ok())
                .map(Duration::from_secs),
            stalled: std::sync::atomic::AtomicBool::new(false),
            withheld: AtomicU64::new(0),
            broken: std::sync::atomic::AtomicBool::new(false),
            unrestored: Mutex::new(Vec::new()),
            lake,
            sinks,
            topic_encoder: crate::encode::Encoder::new(k.alerts_encoding, hostname.clone()),
            stdout_encoder: crate::encode::Encoder::new(self.cfg.run.alerts_encoding, hostname),
            k: k.clone(),
            group: self.group.clone(),
            changelog_topic: self.changelog_topic.clone(),
            changelog_partitions: self.changelog_partitions,
            repartitioned: self.repartitioned,
            state_dir: self.state_dir.clone(),
            producer: Arc::new(producer),
            failed_before: AtomicU64::new(deliveries.failed()),
            deliveries,
            stdout: self.stdout.then(std::io::stdout),
            watermarks,
            session_timeout: k
                .consumer_options
                .get("session.timeout.ms")
                .and_then(|v| v.parse().ok())
                .map_or(DEFAULT_SESSION_TIMEOUT, Duration::from_millis),
            turns: Mutex::new(Turns {
                began: Instant::now(),
                stalled_until: None,
            }),
        });
        let parts: Arc<Mutex<HashMap<Key, Part>>> = Arc::default();
        let assigned: Arc<Mutex<Option<Vec<Key>>>> = Arc::default();
        let consumer: BaseConsumer<Ctx> = client::client_config(&k, Role::Consumer, &self.group)
            .create_with_context(Ctx {
                parts: parts.clone(),
                saver: saver.clone(),
                share: self.cfg.kafka.share_context,
                merge: (self.cfg.kafka.share_context
                    && self.repartitioned
                    && self.cfg.kafka.partitions > 1)
                    .then(|| {
                        Mutex::new(merge::Merge::new(Duration::from_millis(
                            self.cfg.kafka.merge_wait_ms,
                        )))
                    }),
                root: root.map(Mutex::new),
                held: held.clone(),
                assigned: assigned.clone(),
            })
            .map_err(|e| Error::Client {
                what: "detect consumer",
                message: e.to_string(),
            })?;
        consumer
            .subscribe(&self.topics.keys().map(String::as_str).collect::<Vec<_>>())
            .map_err(|e| Error::Client {
                what: "detect consumer",
                message: e.to_string(),
            })?;
        // Bindings other instances publish, merged into this instance's table.
        let reader_stop = Arc::new(AtomicBool::new(false));
        let reader = bindings_table.filter(|_| self.repartitioned).map(|table| {
            let (k, group, instance, stop, held) = (
                k.clone(),
                k.group_id.clone(),
                instance.clone(),
                reader_stop.clone(),
                held.clone(),
            );
            std::thread::spawn(move || {
                if let Err(e) = super::bindings::read(&k, &group, &instance, table, &held, &stop) {
                    metrics::get().error(stage::DETECT, "bindings_consumer");
                    tracing::error!(error = %e, "the bindings of other instances cannot be read; credentials they minted are judged as if unseen");
                }
            })
        });
        let mut results: Vec<Decoded> = Vec::with_capacity(2);
        let mut alerts: Vec<Alert> = Vec::new();
        let mut last = Instant::now();
        let mut last_census = Instant::now();
        let mut last_prune = Instant::now();
        let mut restore_retry = Instant::now();
        let mut consumer_errors = super::Throttle::default();
        let mut idle_dirty = false;
        // Since when checkpoints fail for want of disk space: consumption is paused, the
        // state stays in memory (nothing is committed past the last checkpoint, so nothing is
        // lost even if the process dies meanwhile), and the checkpoint is tried again until
        // space returns.
        let mut full_since: Option<Instant> = None;
        let mut full_retry = Instant::now();
        let mut failed: Option<Error> = None;
        let result = loop {
            if stop.load(Ordering::Relaxed) {
                break Ok(());
            }
            if let Some(since) = full_since
                && full_retry.elapsed() >= super::DISK_FULL_RETRY
            {
                full_retry = Instant::now();
                let mut g = parts.lock().unwrap_or_else(|e| e.into_inner());
                match saver.checkpoint(&consumer, &mut g, None) {
                    Ok(()) => {
                        full_since = None;
                        last = Instant::now();
                        super::resume(&consumer, true);
                        tracing::warn!(
                            paused_s = since.elapsed().as_secs(),
                            "disk space is back: checkpoint written, consumption resumed"
                        );
                    }
                    Err(e) if e.is_disk_full() => {
                        super::disk_full(&consumer, &e, &mut full_since, &mut full_retry)
                    }
                    // Still paused; tried again in a moment.
                    Err(e) if e.is_transient() => {}
                    Err(e) => break Err(e),
                }
            }
            saver.next_turn(&consumer);
            if let Err(e) = saver.publish_bindings(false) {
                break Err(e);
            }
            if saver.withheld.load(Ordering::Relaxed) > 0 {
                let mut g = parts.lock().unwrap_or_else(|e| e.into_inner());
                let released = self.release_withheld(&saver, &consumer, &hot, &mut g);
                if let Err(e) = released
                    && let Err(e) =
                        hand_off_failed(&saver, &consumer, e, &mut full_since, &mut full_retry)
                {
                    break Err(e);
                }
            }
            if last_census.elapsed() >= CENSUS_EVERY {
                last_census = Instant::now();
                census(&parts.lock().unwrap_or_else(|e| e.into_inner()));
            }
            // Engines judging together share their value texts, which none prunes alone.
            if self.cfg.kafka.share_context && last_prune.elapsed() >= PRUNE_SHARED_EVERY {
                last_prune = Instant::now();
                let g = parts.lock().unwrap_or_else(|e| e.into_inner());
                if g.len() > 1 {
                    let engines: Vec<&Engine> = g.values().map(|p| &p.engine).collect();
                    crate::detect::prune_shared_interner(&engines);
                }
            }
            let merging = consumer.context().merge.as_ref();
            let buffered = merging.map_or(0, |m| m.lock().unwrap_or_else(|e| e.into_inner()).len());
            if merging.is_some() {
                m.merge_buffered.set(buffered as i64);
            }
            // Records buffered for their turn are looked at again soon.
            let wait = if buffered > 0 {
                Duration::from_millis(10)
            } else {
                Duration::from_millis(100)
            };
            match consumer.poll(wait) {
                Some(Ok(msg)) if merging.is_some() => {
                    idle_dirty = true;
                    if let Some(m) = merging {
                        m.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(msg.detach());
                    }
                }
                None => {
                    // Idle: checkpoint now rather than at the interval, so a drained stream
                    // is committed promptly (and a quiet period costs nothing to restart).
                    if full_since.is_none()
                        && idle_dirty
                        && last.elapsed() >= IDLE_CHECKPOINT.min(self.interval)
                    {
                        idle_dirty = false;
                        last = Instant::now();
                        let mut g = parts.lock().unwrap_or_else(|e| e.into_inner());
                        if let Err(e) = saver.checkpoint(&consumer, &mut g, None)
                            && let Err(e) =
                                checkpoint_failed(&consumer, e, &mut full_since, &mut full_retry)
                        {
                            break Err(e);
                        }
                    }
                }
                Some(Err(e)) => {
                    m.error(stage::DETECT, "kafka_consumer");
                    if let Some(unsaid) = consumer_errors.due() {
                        tracing::warn!(error = %e, unsaid, "kafka consumer error (retrying)")
                    }
                }
                Some(Ok(msg)) => {
                    idle_dirty = true;
                    let mut g = parts.lock().unwrap_or_else(|e| e.into_inner());
                    let handled = self.message(
                        &saver,
                        &consumer,
                        &hot,
                        &mut g,
                        &msg,
                        &mut results,
                        &mut alerts,
                    );
                    if let Err(e) = handled
                        && let Err(e) =
                            hand_off_failed(&saver, &consumer, e, &mut full_since, &mut full_retry)
                    {
                        break Err(e);
                    }
                }
            }
            // Buffered records whose turn has come (a bounded batch, so the consumer is
            // polled in between); none while a full disk holds consumption.
            if let Some(m) = merging
                && full_since.is_none()
            {
                for _ in 0..MERGE_BATCH {
                    let Some(msg) = m.lock().unwrap_or_else(|e| e.into_inner()).pop() else {
                        break;
                    };
                    let mut g = parts.lock().unwrap_or_else(|e| e.into_inner());
                    let handled = self.message(
                        &saver,
                        &consumer,
                        &hot,
                        &mut g,
                        &msg,
                        &mut results,
                        &mut alerts,
                    );
                    if let Err(e) = handled
                        && let Err(e) =
                            hand_off_failed(&saver, &consumer, e, &mut full_since, &mut full_retry)
                    {
                        failed = Some(e);
                        break;
                    }
                    if full_since.is_some() {
                        break;
                    }
                }
                if let Some(e) = failed.take() {
                    break Err(e);
                }
            }
            // Restore newly assigned partitions now rather than at their first record, so
            // `/readyz` means the state is in memory.
            let fresh = assigned.lock().unwrap_or_else(|e| e.into_inner()).take();
            let retry = fresh.is_none()
                && !saver
                    .unrestored
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_empty()
                && restore_retry.elapsed() >= RESTORE_RETRY;
            if fresh.is_some() || retry {
                restore_retry = Instant::now();
                // Partitions whose restore failed for want of the cluster, still assigned.
                let owned = super::partitions_of(&consumer.assignment().unwrap_or_default());
                let mut keys = fresh.unwrap_or_default();
                {
                    // Kept in the list until restored (the restore resumes them).
                    let mut left = saver.unrestored.lock().unwrap_or_else(|e| e.into_inner());
                    left.retain(|k| owned.contains(k));
                    for k in left.iter() {
                        if !keys.contains(k) {
                            keys.push(k.clone());
                        }
                    }
                }
                let mut g = parts.lock().unwrap_or_else(|e| e.into_inner());
                match self.restore_all(&saver, &consumer, &mut g, &keys) {
                    Ok(()) => self.ready.store(true, Ordering::Release),
                    Err(e) if e.is_transient() => {
                        self.restore_later(&saver, &consumer, &g, &keys, &e)
                    }
                    Err(e) => break Err(e),
                }
            }
            if full_since.is_none() && last.elapsed() >= self.interval {
                last = Instant::now();
                let mut g = parts.lock().unwrap_or_else(|e| e.into_inner());
                if let Err(e) = saver.checkpoint(&consumer, &mut g, None)
                    && let Err(e) =
                        checkpoint_failed(&consumer, e, &mut full_since, &mut full_retry)
                {
                    break Err(e);
                }
            }
        };
        if result.is_ok() {
            let mut g = parts.lock().unwrap_or_else(|e| e.into_inner());
            census(&g);
            saver.checkpoint(&consumer, &mut g, None)?;
            tracing::info!(partitions = g.len(), "final checkpoint written");
            if let Some(lake) = &saver.lake {
                let mut lake = lake.lock().unwrap_or_else(|e| e.into_inner());
                lake.baselines(g.iter(), true)?;
                let w = lake.writer.close()?;
                tracing::info!(
                    events = w.events,
                    alerts = w.alerts,
                    files = w.files,
                    "lake closed"
                );
            }
        }
        consumer.unsubscribe();
        reader_stop.store(true, Ordering::Relaxed);
        if let Some(r) = reader {
            let _ = r.join();
        }
        if let Err(e) = saver.sinks.shutdown(self.cfg.delivery.drain()) {
            tracing::error!(error = %e, "sinks did not shut down cleanly");
        }
        result
    }

    /// Restores the state of every partition in `keys` not held yet. A partition without
    /// any checkpoint is checkpointed at once when there is an alerts topic, before its first
    /// record: the checkpoint records where the alerts topic ends, so if this instance dies
    /// before its next checkpoint, the next owner knows which alerts it already sent.
    /// A restore failed because the cluster is unavailable (a broker down or restarting):
    /// the partitions not restored are paused, so none of their records is processed
    /// without its state, and restored again every [`RESTORE_RETRY`] while still assigned.
    fn restore_later(
        &self,
        saver: &Saver,
        consumer: &BaseConsumer<Ctx>,
        parts: &HashMap<Key, Part>,
        keys: &[Key],
        e: &Error,
    ) {
        metrics::get().error(stage::STATE, "restore");
        let mut left = saver.unrestored.lock().unwrap_or_else(|e| e.into_inner());
        let mut tpl = TopicPartitionList::new();
        for k in keys.iter().filter(|k| !parts.contains_key(*k)) {
            tpl.add_partition(&k.0, k.1);
            if !left.contains(k) {
                left.push(k.clone());
            }
        }
        if let Err(pe) = consumer.pause(&tpl) {
            tracing::warn!(error = %pe, "could not pause the partitions waiting for a restore");
        }
        tracing::warn!(
            error = %e,
            partitions = ?*left,
            "restore failed: the cluster is unavailable; partitions paused, trying again every {} s",
            RESTORE_RETRY.as_secs()
        );
    }

    fn restore_all(
        &self,
        saver: &Saver,
        consumer: &BaseConsumer<Ctx>,
        parts: &mut HashMap<Key, Part>,
        keys: &[Key],
    ) -> Result<(), Error> {
        let mut empty = Vec::new();
        let mut joined = false;
        for key in keys {
            if !parts.contains_key(key) {
                {
                    let mut held = consumer
                        .context()
                        .held
                        .write()
                        .unwrap_or_else(|e| e.into_inner());
                    if !held.contains(&key.1) {
                        held.push(key.1);
                    }
                }
                let mut part = saver.restore(&self.cfg, &key.0, key.1).inspect_err(|_| {
                    metrics::get().error(stage::STATE, "restore");
                })?;
                if saver.alerts_topic.is_some() && part.epoch == 0 && part.next_offset == 0 {
                    part.dirty = true;
                    empty.push(key.clone());
                }
                if part.next_offset > 0 {
                    rewind(consumer, key, part.next_offset);
                }
                if let Some(root) = &consumer.context().root {
                    // The partitions held here judge together: what this partition's
                    // checkpoint knew of the fleet, bindings and trust is added to the
                    // instance's, which it judges against from now on.
                    let mut root = root.lock().unwrap_or_else(|e| e.into_inner());
                    part.engine.join_context(&mut root);
                    // Bindings its identities made came back from other instances (its
                    // previous owner published them, or this process before a crash):
                    // processing its records after the checkpoint makes them again.
                    let (p, n) = (key.1 as u32, self.cfg.kafka.partitions.max(1));
                    root.state
                        .credentials
                        .forget_remote(|b| b.identity % n != p);
                }
                if saver.bindings_topic.is_some() {
                    part.engine.collect_bindings();
                }
                parts.insert(key.clone(), part);
                joined = true;
                let mut left = saver.unrestored.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(i) = left.iter().position(|k| k == key) {
                    left.swap_remove(i);
                    let mut tpl = TopicPartitionList::new();
                    tpl.add_partition(&key.0, key.1);
                    let _ = consumer.resume(&tpl);
                    tracing::info!(topic = %key.0, partition = key.1, "partition restored after the cluster came back; resumed");
                }
            }
        }
        if joined && self.cfg.kafka.share_context {
            settle_shared(parts, &consumer.context().held);
        }
        if !empty.is_empty() {
            saver.checkpoint(consumer, parts, Some(&empty))?;
        }
        census(parts);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn message(
        &self,
        saver: &Saver,
        consumer: &BaseConsumer<Ctx>,
        hot: &Hot,
        parts: &mut HashMap<Key, Part>,
        m: &impl Message,
        results: &mut Vec<Decoded>,
        alerts: &mut Vec<Alert>,
    ) -> Result<(), Error> {
        let p = m.partition();
        let Some(decoder) = self.topics.get(m.topic()) else {
            return Ok(());
        };
        // Looked up without building a key: this runs for every record.
        if !parts.keys().any(|(t, q)| *q == p && t == m.topic()) {
            let key = (m.topic().to_string(), p);
            match self.restore_all(saver, consumer, parts, std::slice::from_ref(&key)) {
                Ok(()) => {}
                Err(e) if e.is_transient() => {
                    // This record is read again once the partition is restored.
                    if let Err(e) = consumer.seek(
                        &key.0,
                        key.1,
                        rdkafka::Offset::Offset(m.offset()),
                        Duration::from_secs(10),
                    ) {
                        return Err(Error::Unavailable {
                            message: format!("cannot read {}/{} again: {e}", key.0, key.1),
                        });
                    }
                    purge(consumer, &key);
                    self.restore_later(saver, consumer, parts, &[key], &e);
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        let topic = m.topic();
        let Some(part) = part_mut(parts, topic, p) else {
            return Ok(());
        };
        let offset = m.offset();
        if offset < part.next_offset {
            hot.in_checkpoint.inc();
            return Ok(());
        }
        if offset > part.next_offset && part.next_offset > 0 && !part.warned_gap {
            part.warned_gap = true;
            tracing::warn!(
                partition = p,
                expected = part.next_offset,
                offset,
                "events between the checkpoint and the committed offset are missing (retention, or a lost changelog); their learning is lost"
            );
        }
        part.next_offset = offset + 1;
        part.dirty = true;
        // When the record reached nhiwatch: stamped by ingest, or now (direct mode).
        let mut arrival = 0u64;
        if self.repartitioned {
            let (origin, stamped) = origin_of(m);
            arrival = stamped;
            if let Some(origin) = origin {
                let key = (origin.0.to_string(), origin.1);
                let at = (origin.2, origin.3);
                match part.marks.get(&key) {
                    Some(seen) if at <= *seen => {
                        hot.duplicates.inc();
                        return Ok(());
                    }
                    _ => {
                        part.marks.insert(key, at);
                    }
                }
            }
        }
        if arrival == 0 {
            arrival = metrics::now_micros();
        }
        let input_time = m.timestamp().to_millis();
        results.clear();
        let payload = m.payload().unwrap_or_default();
        decoder.decode(payload, results);
        if let Some(records) = hot.direct.get(m.topic()) {
            records.record(decoder.source_of(results), payload.len());
        }
        let meters = metrics::get();
        // A full disk under the lake or a spool: what could not be written is kept in
        // memory; the record is processed whole and the error reported after.
        let mut full: Option<Error> = None;
        for r in results.drain(..) {
            match r {
                Ok(event) => {
                    if !self.repartitioned {
                        hot.events.of(event.source, event.action).inc();
                    }
                    hot.detected.inc();
                    meters.saw_event_time(event.source, event.time.as_unix_seconds());
                    if self.cfg.kafka.share_context && parts.len() > 1 {
                        self.process_shared(
                            saver,
                            consumer,
                            hot,
                            parts,
                            (topic, p),
                            &event,
                            alerts,
                            input_time,
                            arrival,
                            &mut full,
                        )?;
                    } else if let Some(part) = part_mut(parts, topic, p) {
                        part.engine.process(&event, alerts);
                    }
                    if let Some(part) = part_mut(parts, topic, p) {
                        publish_bindings(saver, &mut part.engine)?;
                    }
                    // Direct mode: this stage decoded the native record, so it keeps the event.
                    if !self.repartitioned
                        && let Some(lake) = &saver.lake
                    {
                        let mut lake = lake.lock().unwrap_or_else(|e| e.into_inner());
                        if let Err(e) = lake.writer.event(&event) {
                            super::keep_if_full(&mut full, e.into())?;
                        }
                    }
                }
                Err(reject) => {
                    super::ingest::dead_letter(
                        &saver.producer,
                        stage::DETECT,
                        self.dlq_topic.as_deref(),
                        m.topic(),
                        p,
                        offset,
                        payload,
                        &reject,
                    )?;
                }
            }
        }
        if alerts.is_empty() {
            return full.map_or(Ok(()), Err);
        }
        let Some(part) = part_mut(parts, topic, p) else {
            return full.map_or(Ok(()), Err);
        };
        self.deliver(
            saver, consumer, hot, part, alerts, input_time, arrival, &mut full,
        )?;
        full.map_or(Ok(()), Err)
    }

    /// Processes an event of one of several partitions that judge together, as one engine
    /// holding all their identities would: every engine's clock moves to the event first
    /// (held alerts due by then are released, in their own partition), the identity's engine
    /// judges it, and the values it may have rolled out drop the other engines' alerts held
    /// on them.
    #[allow(clippy::too_many_arguments)]
    fn process_shared(
        &self,
        saver: &Saver,
        consumer: &BaseConsumer<Ctx>,
        hot: &Hot,
        parts: &mut HashMap<Key, Part>,
        (topic, p): (&str, i32),
        event: &crate::event::Event,
        alerts: &mut Vec<Alert>,
        input_time: Option<i64>,
        arrival: u64,
        full: &mut Option<Error>,
    ) -> Result<(), Error> {
        let secs = event.time.as_unix_seconds();
        let mut released = Vec::new();
        for ((t, q), other) in parts.iter_mut() {
            if *q == p && t == topic {
                continue;
            }
            other.engine.advance(secs, &mut released);
            if !released.is_empty() {
                other.dirty = true;
                self.deliver(
                    saver,
                    consumer,
                    hot,
                    other,
                    &mut released,
                    input_time,
                    arrival,
                    full,
                )?;
            }
        }
        let Some(part) = part_mut(parts, topic, p) else {
            return Ok(());
        };
        part.engine.process(event, alerts);
        let (day, values) = part.engine.rollout_values();
        if values.is_empty() {
            return Ok(());
        }
        let values = values.to_vec();
        for ((t, q), other) in parts.iter_mut() {
            if *q == p && t == topic {
                continue;
            }
            let held = other.engine.held();
            other.engine.drop_rollouts(day, &values);
            other.dirty |= other.engine.held() != held;
        }
        Ok(())
    }

    /// Hands a partition's alerts on (see [`Detect::emit`]), or holds them back in the
    /// partition while this instance may no longer own it.
    #[allow(clippy::too_many_arguments)]
    fn deliver(
        &self,
        saver: &Saver,
        consumer: &BaseConsumer<Ctx>,
        hot: &Hot,
        part: &mut Part,
        alerts: &mut Vec<Alert>,
        input_time: Option<i64>,
        arrival: u64,
        full: &mut Option<Error>,
    ) -> Result<(), Error> {
        saver.test_stall();
        // Only an owner sends alerts: after a stall past the session timeout another
        // instance may own the partition and send these very alerts (same ids) itself.
        let withhold = !part.withheld.is_empty() || saver.fenced(consumer);
        for alert in alerts.drain(..) {
            let sent = !part.sent.is_empty() && part.sent.remove(&alert.id);
            if withhold {
                metrics::get().alerts_withheld.inc();
                saver.withheld.fetch_add(1, Ordering::Relaxed);
                part.withheld.push(Withheld {
                    alert,
                    input_time,
                    arrival,
                    already_sent: sent,
                });
            } else if let Err(e) = self.emit(saver, hot, &alert, input_time, arrival, sent) {
                super::keep_if_full(full, e)?;
            }
        }
        if withhold {
            tracing::warn!(
                partition = part.src.partition,
                withheld = part.withheld.len(),
                "alerts held back: this instance stood still past the session timeout and may no longer own the partition; they are sent once the group confirms it does, or left to the new owner"
            );
        }
        Ok(())
    }

    /// Sends the alerts held back while ownership was in doubt, once it no longer is (the
    /// partitions this instance lost were removed, with their held alerts, on revoke).
    fn release_withheld(
        &self,
        saver: &Saver,
        consumer: &BaseConsumer<Ctx>,
        hot: &Hot,
        parts: &mut HashMap<Key, Part>,
    ) -> Result<(), Error> {
        if saver.withheld.load(Ordering::Relaxed) == 0 || saver.fenced(consumer) {
            return Ok(());
        }
        let mut full: Option<Error> = None;
        for part in parts.values_mut() {
            let n = part.withheld.len();
            for w in part.withheld.drain(..) {
                let emitted = self.emit(
                    saver,
                    hot,
                    &w.alert,
                    w.input_time,
                    w.arrival,
                    w.already_sent,
                );
                if let Err(e) = emitted {
                    super::keep_if_full(&mut full, e)?;
                }
            }
            if n > 0 {
                saver.withheld.fetch_sub(n as u64, Ordering::Relaxed);
                tracing::info!(
                    partition = part.src.partition,
                    alerts = n,
                    "this instance still owns the partition: the alerts held back are sent"
                );
            }
        }
        full.map_or(Ok(()), Err)
    }

    fn emit(
        &self,
        saver: &Saver,
        hot: &Hot,
        alert: &Alert,
        input_time: Option<i64>,
        arrival: u64,
        already_sent: bool,
    ) -> Result<(), Error> {
        let m = metrics::get();
        m.alerts
            .with_label_values(&[
                alert.detector.as_str(),
                alert.severity.as_str(),
                hot.env.metric_label(alert.environment.as_deref()),
            ])
            .inc();
        // The lake and the spools keep the alert when the disk is full; the other
        // destinations still get it, and the caller hears of the full disk after.
        let mut full: Option<Error> = None;
        if let Some(lake) = &saver.lake {
            let mut lake = lake.lock().unwrap_or_else(|e| e.into_inner());
            let written = lake.writer.alert(alert, crate::time::Timestamp::now());
            if let Err(e) = written {
                if !e.is_disk_full() {
                    m.error(stage::LAKE, "write");
                }
                super::keep_if_full(&mut full, e.into())?;
            }
        }
        // An alert of a record processed again after a restore that a previous owner already
        // sent is not sent to the topic twice (sinks and stdout are at least once).
        if already_sent {
            m.alerts_already_sent.inc();
        }
        if let Some(topic) = self.alerts_topic.as_ref().filter(|_| !already_sent) {
            let json = saver.topic_encoder.to_vec(alert);
            let h = OwnedHeaders::new()
                .insert(Header {
                    key: headers::ALERT_ID,
                    value: Some(alert.id.as_str()),
                })
                .insert(Header {
                    key: headers::DETECTOR,
                    value: Some(alert.detector.as_str()),
                })
                .insert(Header {
                    key: headers::SEVERITY,
                    value: Some(alert.severity.as_str()),
                });
            let t = input_time.map(|t| t.to_string());
            let h = match &t {
                Some(t) => h.insert(Header {
                    key: headers::INPUT_TIME,
                    value: Some(t.as_str()),
                }),
                None => h,
            };
            // The delivery report counts the delivery and observes the latency.
            super::send_tagged(
                &saver.producer,
                BaseRecord::to(topic)
                    .key(alert.identity.as_bytes())
                    .payload(&json[..])
                    .headers(h),
                arrival as usize,
            )?;
            saver.alerts_since.fetch_add(1, Ordering::Relaxed);
        }
        if let Err(e) = saver.sinks.send(alert, arrival) {
            super::keep_if_full(&mut full, Error::Sink(e.to_string()))?;
        }
        if let Some(out) = &saver.stdout {
            let line = saver.stdout_encoder.to_vec(alert);
            let mut w = out.lock();
            // A closed stdout must not stop detection; alerts still reach the topic.
            match w
                .write_all(&line)
                .and_then(|()| w.write_all(b"\n"))
                .and_then(|()| w.flush())
            {
                Ok(()) => {
                    m.sink_deliveries.with_label_values(&["stdout"]).inc();
                    if self.alerts_topic.is_none() {
                        metrics::observe_alert_latency(arrival);
                    }
                }
                Err(_) => m.sink_failures.with_label_values(&["stdout"]).inc(),
            }
        }
        full.map_or(Ok(()), Err)
    }
}

/// Per-record metric handles and the environment labeller of the detect stage.
struct Hot {
    env: crate::environment::EnvResolver,
    /// Input record counters by topic (direct mode, where this stage reads the inputs).
    direct: HashMap<String, metrics::RecordCounters>,
    events: metrics::EventCounters,
    detected: prometheus::IntCounter,
    in_checkpoint: prometheus::IntCounter,
    duplicates: prometheus::IntCounter,
}

/// Recounts the detection-state gauges over every partition held here.
/// What a failed checkpoint means for the poll loop: a full disk pauses consumption (see
/// [`disk_full`]); an unavailable cluster (a broker down or restarting) leaves the previous
/// checkpoint in force and nothing committed, and the next interval tries again; anything
/// else stops the stage.
fn checkpoint_failed(
    consumer: &BaseConsumer<Ctx>,
    e: Error,
    full_since: &mut Option<Instant>,
    full_retry: &mut Instant,
) -> Result<(), Error> {
    if e.is_disk_full() {
        super::disk_full(consumer, &e, full_since, full_retry);
        return Ok(());
    }
    if e.is_transient() {
        tracing::warn!(error = %e, "checkpoint not written: the cluster is unavailable; nothing committed, trying again at the next interval");
        return Ok(());
    }
    Err(e)
}

/// What a failed hand-off of a processed record's alerts (or events) means for the poll
/// loop: on a full disk the lake and the spools kept what they could not write, so
/// consumption pauses until a checkpoint (which writes it) succeeds; anything else stops the
/// stage, and no checkpoint may be written from the state in memory any more (the record
/// was learned; its alerts may not have been handed off).
fn hand_off_failed(
    saver: &Saver,
    consumer: &BaseConsumer<Ctx>,
    e: Error,
    full_since: &mut Option<Instant>,
    full_retry: &mut Instant,
) -> Result<(), Error> {
    if e.is_disk_full() {
        super::disk_full(consumer, &e, full_since, full_retry);
        return Ok(());
    }
    saver.break_off();
    Err(e)
}

/// Collects the credential bindings `engine` made since the last call for publication to
/// `<group>-bindings` (when this instance shares them), and sends the batch when it is due.
fn publish_bindings(saver: &Saver, engine: &mut Engine) -> Result<(), Error> {
    if saver.bindings_topic.is_none() {
        return Ok(());
    }
    let mut new = Vec::new();
    engine.take_bindings(&mut new);
    if !new.is_empty() {
        saver
            .bindings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(&mut new);
    }
    saver.publish_bindings(false)
}

/// The partition `topic`/`p` held here. Looked up without building a key: this runs for
/// every record.
fn part_mut<'a>(parts: &'a mut HashMap<Key, Part>, topic: &str, p: i32) -> Option<&'a mut Part> {
    parts
        .iter_mut()
        .find(|((t, q), _)| *q == p && t == topic)
        .map(|(_, part)| part)
}

/// After the partitions held here changed (restored or revoked) while they judge together:
/// their peer groups' counts are read summed over the engines held now, and one engine
/// counts the shared context in the metrics.
fn settle_shared(parts: &mut HashMap<Key, Part>, held: &std::sync::RwLock<Vec<i32>>) {
    *held.write().unwrap_or_else(|e| e.into_inner()) = parts.keys().map(|k| k.1).collect();
    let mut keys: Vec<&Key> = parts.keys().collect();
    keys.sort();
    let engines: Vec<&Engine> = keys.iter().map(|k| &parts[*k].engine).collect();
    crate::detect::link_peers(&engines);
    let first = keys.first().map(|k| (*k).clone());
    for (k, part) in parts.iter_mut() {
        part.engine.count_context(Some(k) == first.as_ref());
    }
    metrics::get().judged_together.set(parts.len() as i64);
}

fn census(parts: &HashMap<Key, Part>) {
    let mut c = crate::detect::Census::default();
    for part in parts.values() {
        c.add(&part.engine.census());
    }
    metrics::get().set_census(&c);
}

/// `(topic, partition, offset, index)` from the origin header of a repartitioned event, and
/// the arrival stamp ingest gave it (0 when absent).
type Origin<'a> = (&'a str, i32, i64, u32);

fn origin_of<M: Message>(m: &M) -> (Option<Origin<'_>>, u64) {
    let Some(h) = m.headers() else {
        return (None, 0);
    };
    let (mut origin, mut arrival) = (None, 0);
    for h in h.iter() {
        match h.key {
            headers::ORIGIN => origin = h.value.and_then(parse_origin),
            headers::ARRIVAL => {
                arrival = h
                    .value
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            }
            _ => {}
        }
    }
    (origin, arrival)
}

fn parse_origin(v: &[u8]) -> Option<Origin<'_>> {
    let s = std::str::from_utf8(v).ok()?;
    let mut it = s.rsplitn(4, '/');
    let index = it.next()?.parse().ok()?;
    let offset = it.next()?.parse().ok()?;
    let partition = it.next()?.parse().ok()?;
    let topic = it.next()?;
    Some((topic, partition, offset, index))
}

/// Reads a partition again from `next_offset` when the group's committed offset is past it:
/// the restored checkpoint is older than the last one (the newest was damaged and the older
/// changelog snapshot restored), and the records since are still on the topic. Without this
/// their learning would be lost; their alerts are not sent twice (the checkpoint says where
/// the alerts topic stood).
fn rewind(consumer: &BaseConsumer<Ctx>, key: &Key, next_offset: i64) {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&key.0, key.1);
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .ok()
        .and_then(|t| {
            t.find_partition(&key.0, key.1)
                .and_then(|e| e.offset().to_raw())
        })
        .unwrap_or(-1);
    if committed <= next_offset {
        return;
    }
    tracing::warn!(
        topic = %key.0,
        partition = key.1,
        checkpoint = next_offset,
        committed,
        "the restored checkpoint is older than the committed offset; reading {} records again",
        committed - next_offset
    );
    match consumer.seek(
        &key.0,
        key.1,
        rdkafka::Offset::Offset(next_offset),
        Duration::from_secs(10),
    ) {
        Ok(()) => purge(consumer, key),
        Err(e) => {
            tracing::warn!(topic = %key.0, partition = key.1, error = %e, "cannot rewind to the checkpoint; the records since are not learned")
        }
    }
}

/// Drops what is buffered of a partition the consumer reads again from an earlier offset.
fn purge(consumer: &BaseConsumer<Ctx>, key: &Key) {
    if let Some(m) = &consumer.context().merge {
        m.lock().unwrap_or_else(|e| e.into_inner()).purge(key);
    }
}
