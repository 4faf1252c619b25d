//! The detect stage: `<group>-events` → one detection engine per partition → alerts, with
//! checkpoints of each partition's state and the offset it includes (see [`super::checkpoint`]).
//!
//! A partition's state is restored (local file if it is current, else the changelog) when its
//! first record arrives after an assignment, and checkpointed and dropped when it is revoked,
//! so a partition that moves between instances takes its baselines with it.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::{BorrowedMessage, Header, Headers as _, OwnedHeaders};
use rdkafka::producer::BaseRecord;
use rdkafka::{ClientContext, Message, TopicPartitionList};

use super::checkpoint::{self, Checkpoint, Marks, Src};
use super::client::{self, Deliveries, Producer, Role};
use super::{Error, headers};
use crate::alert::Alert;
use crate::config::{Config, KafkaConfig};
use crate::decode::{Decoded, Decoder};
use crate::detect::Engine;

/// The least time between two checkpoints taken because the stream went quiet.
const IDLE_CHECKPOINT: Duration = Duration::from_secs(1);
/// How long a checkpoint may wait for the cluster.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Counters of the detect stage.
#[derive(Debug, Default)]
pub struct Counters {
    /// Events processed by the detectors.
    pub events: AtomicU64,
    /// Events skipped because the restored checkpoint already includes them.
    pub in_checkpoint: AtomicU64,
    /// Events dropped as repeats of an origin already processed (ingest produced them twice).
    pub duplicates: AtomicU64,
    /// Alerts emitted.
    pub alerts: AtomicU64,
    /// Checkpoints written (partitions).
    pub checkpoints: AtomicU64,
    /// Partitions restored.
    pub restores: AtomicU64,
    /// Records that could not be decoded (direct mode, or a damaged events record).
    pub rejects: AtomicU64,
    /// Of those, written to the dead-letter topic.
    pub dead_letters: AtomicU64,
    /// Partitions currently assigned to detection here.
    pub owned: AtomicU64,
    /// Set once partitions are assigned (ready for traffic).
    pub ready: Arc<AtomicBool>,
}

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
    /// Counters.
    pub counters: Arc<Counters>,
}

struct Part {
    src: Src,
    engine: Engine,
    next_offset: i64,
    epoch: u64,
    marks: HashMap<(String, i32), (i64, u32)>,
    dirty: bool,
    warned_gap: bool,
}

/// What a checkpoint needs; shared with the rebalance callback.
struct Saver {
    k: KafkaConfig,
    group: String,
    changelog_topic: String,
    changelog_partitions: i32,
    repartitioned: bool,
    state_dir: Option<PathBuf>,
    producer: Arc<Producer>,
    deliveries: Deliveries,
    failed_before: AtomicU64,
    stdout: Option<std::io::Stdout>,
    counters: Arc<Counters>,
    watermarks: BaseConsumer,
}

struct Ctx {
    parts: Arc<Mutex<HashMap<Key, Part>>>,
    saver: Arc<Saver>,
}

/// A partition detection reads: topic and partition.
type Key = (String, i32);

fn keys_of(tpl: &TopicPartitionList) -> Vec<Key> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

impl ClientContext for Ctx {}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let revoked = keys_of(tpl);
            let mut parts = self.parts.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = self.saver.checkpoint(consumer, &mut parts, Some(&revoked)) {
                tracing::error!(error = %e, "checkpoint on revoke failed; the next owner resumes from the previous checkpoint");
            }
            for p in &revoked {
                parts.remove(p);
            }
            tracing::info!(partitions = ?revoked, "event partitions revoked");
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let assigned = keys_of(tpl);
            self.saver
                .counters
                .owned
                .store(assigned.len() as u64, Ordering::Relaxed);
            self.saver.counters.ready.store(true, Ordering::Release);
            tracing::info!(partitions = ?assigned, "event partitions assigned");
        }
    }
}

impl Saver {
    /// Flushes alerts, writes the changed partitions' state (changelog, then local file) and
    /// commits their offsets — in that order, so a committed offset is always covered by a
    /// durable checkpoint and every alert before it was delivered.
    fn checkpoint(
        &self,
        consumer: &BaseConsumer<Ctx>,
        parts: &mut HashMap<Key, Part>,
        only: Option<&[Key]>,
    ) -> Result<(), Error> {
        let chosen: Vec<Key> = parts
            .iter()
            .filter(|(p, part)| part.dirty && only.is_none_or(|o| o.contains(p)))
            .map(|(p, _)| p.clone())
            .collect();
        if chosen.is_empty() {
            return Ok(());
        }
        if let Some(out) = &self.stdout {
            let _ = out.lock().flush();
        }
        let before = self.failed_before.load(Ordering::Acquire);
        super::flush(&self.producer, &self.deliveries, before, TIMEOUT)?;
        let mut written = Vec::new();
        for p in &chosen {
            let Some(part) = parts.get_mut(p) else {
                continue;
            };
            let engine = part.engine.snapshot_bytes().map_err(|e| Error::State {
                partition: p.1,
                message: format!("cannot encode state of {}: {e}", part.src),
            })?;
            let cp = Checkpoint {
                topic: p.0.clone(),
                partition: p.1,
                epoch: part.epoch + 1,
                next_offset: part.next_offset,
                marks: Marks::from_map(&part.marks),
                changelog_end: -1,
                engine,
            };
            checkpoint::send_changelog(&self.producer, &self.changelog_topic, &part.src, &cp)?;
            written.push((part.src.changelog, cp));
        }
        super::flush(&self.producer, &self.deliveries, before, TIMEOUT)?;
        let mut tpl = TopicPartitionList::new();
        for (changelog, mut cp) in written {
            if let Some(dir) = &self.state_dir {
                cp.changelog_end = checkpoint::changelog_end(
                    &self.watermarks,
                    &self.changelog_topic,
                    changelog,
                    TIMEOUT,
                )?;
                checkpoint::write_local(dir, &cp)?;
            }
            let _ = tpl.add_partition_offset(
                &cp.topic,
                cp.partition,
                rdkafka::Offset::Offset(cp.next_offset),
            );
            if let Some(part) = parts.get_mut(&(cp.topic.clone(), cp.partition)) {
                part.epoch = cp.epoch;
                part.dirty = false;
            }
            self.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
        }
        consumer
            .commit(&tpl, CommitMode::Sync)
            .map_err(|e| Error::Unavailable {
                message: format!("commit after checkpoint: {e}"),
            })?;
        tracing::debug!(partitions = ?chosen, "checkpoint written and committed");
        Ok(())
    }

    /// The latest checkpoint of a partition: the local file when it is as new as the
    /// changelog, else the changelog.
    fn restore(&self, cfg: &Config, topic: &str, partition: i32) -> Result<Part, Error> {
        let src = Src {
            topic: topic.to_string(),
            partition,
            changelog: if self.repartitioned {
                partition
            } else {
                (crate::baseline::hash_identity(&format!("{topic}/{partition}"))
                    % self.changelog_partitions.max(1) as u32) as i32
            },
        };
        let local = match &self.state_dir {
            Some(dir) => match checkpoint::read_local(dir, topic, partition) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "local checkpoint unusable; restoring from the changelog");
                    None
                }
            },
            None => None,
        };
        let end = checkpoint::changelog_end(
            &self.watermarks,
            &self.changelog_topic,
            src.changelog,
            TIMEOUT,
        )?;
        let (cp, from) = match local {
            Some(c) if c.changelog_end == end => (Some(c), "local"),
            local => {
                let remote = checkpoint::read_changelog(
                    &self.k,
                    &self.group,
                    &self.producer,
                    &self.deliveries,
                    &self.changelog_topic,
                    &src,
                    TIMEOUT,
                )?;
                match (local, remote) {
                    (Some(l), Some(r)) if l.epoch > r.epoch => (Some(l), "local"),
                    (_, Some(r)) => (Some(r), "changelog"),
                    (l, None) => (l, "local"),
                }
            }
        };
        let mut engine = Engine::from_config(cfg, None).map_err(|e| Error::Setup(e.to_string()))?;
        let (next_offset, epoch, marks) = match cp {
            Some(cp) => {
                engine.restore_bytes(&cp.engine).map_err(|e| Error::State {
                    partition,
                    message: format!("cannot decode state: {e}"),
                })?;
                tracing::info!(
                    topic,
                    partition,
                    from,
                    epoch = cp.epoch,
                    next_offset = cp.next_offset,
                    identities = engine.state.identities.len(),
                    "partition state restored"
                );
                (cp.next_offset, cp.epoch, cp.marks.to_map())
            }
            None => {
                tracing::info!(
                    topic,
                    partition,
                    "no checkpoint yet; partition starts empty"
                );
                (0, 0, HashMap::new())
            }
        };
        let part = Part {
            src,
            engine,
            next_offset,
            epoch,
            marks,
            dirty: false,
            warned_gap: false,
        };
        self.counters.restores.fetch_add(1, Ordering::Relaxed);
        Ok(part)
    }
}

impl Detect {
    /// Runs until `stop` is set; checkpoints and commits before returning.
    pub fn run(self, stop: &AtomicBool) -> Result<(), Error> {
        let k = self.cfg.kafka.clone();
        let (producer, deliveries) = client::producer(&k, &self.group)?;
        let saver = Arc::new(Saver {
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
            counters: self.counters.clone(),
            watermarks: checkpoint::restore_client(&k, &self.group)?,
        });
        let parts: Arc<Mutex<HashMap<Key, Part>>> = Arc::default();
        let consumer: BaseConsumer<Ctx> = client::client_config(&k, Role::Consumer, &self.group)
            .create_with_context(Ctx {
                parts: parts.clone(),
                saver: saver.clone(),
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
        let mut results: Vec<Decoded> = Vec::with_capacity(2);
        let mut alerts: Vec<Alert> = Vec::new();
        let mut last = Instant::now();
        let mut idle_dirty = false;
        let result = loop {
            if stop.load(Ordering::Relaxed) {
                break Ok(());
            }
            match consumer.poll(Duration::from_millis(100)) {
                None => {
                    // Idle: checkpoint now rather than at the interval, so a drained stream
                    // is committed promptly (and a quiet period costs nothing to restart).
                    if idle_dirty && last.elapsed() >= IDLE_CHECKPOINT.min(self.interval) {
                        idle_dirty = false;
                        last = Instant::now();
                        let mut g = parts.lock().unwrap_or_else(|e| e.into_inner());
                        if let Err(e) = saver.checkpoint(&consumer, &mut g, None) {
                            break Err(e);
                        }
                    }
                }
                Some(Err(e)) => tracing::warn!(error = %e, "kafka consumer error (retrying)"),
                Some(Ok(m)) => {
                    idle_dirty = true;
                    let mut g = parts.lock().unwrap_or_else(|e| e.into_inner());
                    if let Err(e) = self.message(&saver, &mut g, &m, &mut results, &mut alerts) {
                        break Err(e);
                    }
                }
            }
            if last.elapsed() >= self.interval {
                last = Instant::now();
                let mut g = parts.lock().unwrap_or_else(|e| e.into_inner());
                if let Err(e) = saver.checkpoint(&consumer, &mut g, None) {
                    break Err(e);
                }
            }
        };
        if result.is_ok() {
            let mut g = parts.lock().unwrap_or_else(|e| e.into_inner());
            saver.checkpoint(&consumer, &mut g, None)?;
            tracing::info!(partitions = g.len(), "final checkpoint written");
        }
        consumer.unsubscribe();
        result
    }

    fn message(
        &self,
        saver: &Saver,
        parts: &mut HashMap<Key, Part>,
        m: &BorrowedMessage<'_>,
        results: &mut Vec<Decoded>,
        alerts: &mut Vec<Alert>,
    ) -> Result<(), Error> {
        let p = m.partition();
        let Some(decoder) = self.topics.get(m.topic()) else {
            return Ok(());
        };
        // Looked up without building a key: this runs for every record.
        if !parts.keys().any(|(t, q)| *q == p && t == m.topic()) {
            let part = saver.restore(&self.cfg, m.topic(), p)?;
            parts.insert((m.topic().to_string(), p), part);
        }
        let Some(part) = parts
            .iter_mut()
            .find(|((t, q), _)| *q == p && t == m.topic())
            .map(|(_, part)| part)
        else {
            return Ok(());
        };
        let offset = m.offset();
        if offset < part.next_offset {
            self.counters.in_checkpoint.fetch_add(1, Ordering::Relaxed);
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
        if self.repartitioned
            && let Some(origin) = origin_of(m)
        {
            let key = (origin.0.to_string(), origin.1);
            let at = (origin.2, origin.3);
            match part.marks.get(&key) {
                Some(seen) if at <= *seen => {
                    self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                _ => {
                    part.marks.insert(key, at);
                }
            }
        }
        results.clear();
        let payload = m.payload().unwrap_or_default();
        decoder.decode(payload, results);
        for r in results.drain(..) {
            match r {
                Ok(event) => {
                    self.counters.events.fetch_add(1, Ordering::Relaxed);
                    part.engine.process(&event, alerts);
                }
                Err(reject) => {
                    self.counters.rejects.fetch_add(1, Ordering::Relaxed);
                    if self.dlq_topic.is_some() {
                        self.counters.dead_letters.fetch_add(1, Ordering::Relaxed);
                    }
                    super::ingest::dead_letter(
                        &saver.producer,
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
        let input_time = m.timestamp().to_millis();
        for alert in alerts.drain(..) {
            self.emit(saver, &alert, input_time)?;
        }
        Ok(())
    }

    fn emit(&self, saver: &Saver, alert: &Alert, input_time: Option<i64>) -> Result<(), Error> {
        self.counters.alerts.fetch_add(1, Ordering::Relaxed);
        let json = serde_json::to_vec(alert).map_err(|e| Error::Setup(e.to_string()))?;
        if let Some(topic) = &self.alerts_topic {
            let h = OwnedHeaders::new()
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
            super::send(
                &saver.producer,
                BaseRecord::to(topic)
                    .key(alert.identity.as_bytes())
                    .payload(&json[..])
                    .headers(h),
            )?;
        }
        if let Some(out) = &saver.stdout {
            let mut w = out.lock();
            // A closed stdout must not stop detection; alerts still reach the topic.
            let _ = w.write_all(&json).and_then(|()| w.write_all(b"\n"));
            let _ = w.flush();
        }
        Ok(())
    }
}

/// `(topic, partition, offset, index)` from the origin header of a repartitioned event.
fn origin_of<'a>(m: &'a BorrowedMessage<'_>) -> Option<(&'a str, i32, i64, u32)> {
    let h = m.headers()?;
    let v = h
        .iter()
        .find(|h| h.key == headers::ORIGIN)
        .and_then(|h| h.value)?;
    let s = std::str::from_utf8(v).ok()?;
    let mut it = s.rsplitn(4, '/');
    let index = it.next()?.parse().ok()?;
    let offset = it.next()?.parse().ok()?;
    let partition = it.next()?.parse().ok()?;
    let topic = it.next()?;
    Some((topic, partition, offset, index))
}
