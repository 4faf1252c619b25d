//! `nhiwatch run`: streaming from Kafka with at-least-once delivery.
//!
//! Two stages run in one process, each a consumer in its own group:
//!
//! 1. **ingest** ([`ingest`]) reads the input topics, decodes each record, and produces the
//!    canonical events to the internal `<group>-events` topic, keyed by identity and
//!    partitioned by its hash; undecodable records go to the dead-letter topic. Input offsets
//!    are committed after the producer has delivered everything before them.
//! 2. **detect** ([`detect`]) reads `<group>-events`. Each partition has its own detection
//!    engine, so an identity's baseline lives in exactly one partition, and whichever instance
//!    owns a partition owns its state. The partitions one instance holds judge together (one
//!    fleet and peer context, one table of credential bindings; `kafka.share_context`), and
//!    the instances share their credential bindings through `<group>-bindings` ([`bindings`]).
//!    Alerts go to the alerts topic (and stdout). Every `run.checkpoint_interval` the stage flushes
//!    alerts, writes each changed partition's state with the offset it includes to the local
//!    state directory and the compacted `<group>-changelog` topic ([`checkpoint`]), and only
//!    then commits the offsets.
//!
//! After a crash, a partition restarts from its checkpoint: records the checkpoint includes
//! are skipped, records after it are processed again (same alerts, same ids), and events the
//! ingest stage produced twice are dropped by their origin's high-water mark.

pub mod bindings;
pub mod checkpoint;
pub mod client;
pub mod config;
pub mod detect;
pub mod ingest;
pub mod run;

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::BaseRecord;

/// Header names on the messages nhiwatch writes.
pub mod headers {
    /// Alerts: the detector that fired.
    pub const DETECTOR: &str = "nhiwatch-detector";
    /// Alerts: the severity.
    pub const SEVERITY: &str = "nhiwatch-severity";
    /// Alerts: the alert's id (the same for a record processed twice), so a restore can
    /// tell which alerts were already sent without decoding any encoding.
    pub const ALERT_ID: &str = "nhiwatch-alert-id";
    /// Alerts: the Kafka timestamp (ms) of the input record that triggered it, to measure
    /// arrival-to-alert latency.
    pub const INPUT_TIME: &str = "nhiwatch-input-time";
    /// Events: when ingest consumed the input record (Unix microseconds), so the detect
    /// stage can measure an alert's processing latency from the record's arrival.
    pub const ARRIVAL: &str = "nhiwatch-arrival";
    /// Events and dead letters: `topic/partition/offset[/index]` of the input record.
    pub const ORIGIN: &str = "nhiwatch-origin";
    /// Dead letters: the reject reason code (`malformed_json`, …).
    pub const REASON: &str = "nhiwatch-reason";
    /// Dead letters: the human message (names the field).
    pub const MESSAGE: &str = "nhiwatch-message";
    /// Dead letters: the origin topic.
    pub const TOPIC: &str = "nhiwatch-origin-topic";
    /// Dead letters: the origin partition.
    pub const PARTITION: &str = "nhiwatch-origin-partition";
    /// Dead letters: the origin offset.
    pub const OFFSET: &str = "nhiwatch-origin-offset";
}

/// A failure that stops `run` (bad records never do).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A client could not be created (a bad librdkafka option, usually).
    #[error("kafka {what}: {message}")]
    Client {
        /// Which client.
        what: &'static str,
        /// librdkafka's message.
        message: String,
    },
    /// The cluster could not be reached or did not answer in time.
    #[error("kafka unavailable: {message}")]
    Unavailable {
        /// What failed.
        message: String,
    },
    /// An internal topic exists with another partition count.
    #[error(
        "topic {topic} has {found} partitions but kafka.partitions is {expected}: state is partitioned by it; use another kafka.group_id or set kafka.partitions = {found}"
    )]
    Partitions {
        /// The topic.
        topic: String,
        /// Partitions found.
        found: usize,
        /// Partitions configured.
        expected: i32,
    },
    /// Messages could not be delivered; nothing after them is committed.
    #[error("kafka delivery failed: {message}")]
    Delivery {
        /// What failed.
        message: String,
    },
    /// A checkpoint could not be written or read.
    #[error("state of partition {partition}: {message}")]
    State {
        /// The events-topic partition.
        partition: i32,
        /// What failed.
        message: String,
    },
    /// Something else in setup (the decoder, the detectors, signals).
    #[error("{0}")]
    Setup(String),
    /// A sink could not take or persist alerts (spool or file write failed).
    #[error("{0}")]
    Sink(String),
    /// The lake could not be written (offsets stay uncommitted).
    #[error(transparent)]
    Lake(#[from] crate::lake::Error),
}

impl Error {
    /// The error is a file system out of space (`ENOSPC`) or over quota (`EDQUOT`) under the
    /// state directory, the lake or a spool: something that passes when space returns. The
    /// errors carry the OS error's text, and the code in it is what is matched.
    pub fn is_disk_full(&self) -> bool {
        crate::error::is_disk_full(self)
    }

    /// The cluster could not be reached or did not answer in time (a broker down or
    /// restarting): something to try again, not a reason to stop.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }

    /// The stage a full disk is counted under: whose files could not be written.
    pub fn disk_stage(&self) -> &'static str {
        match self {
            Error::Sink(_) => crate::telemetry::metrics::stage::SINK,
            Error::Lake(_) => crate::telemetry::metrics::stage::LAKE,
            _ => crate::telemetry::metrics::stage::STATE,
        }
    }
}

/// A warning that repeats while a condition lasts (a broker down: librdkafka reports each
/// failed reconnect), said once and then at most every 10 s with how many went unsaid.
#[derive(Default)]
pub(crate) struct Throttle {
    said: Option<std::time::Instant>,
    unsaid: u64,
}

impl Throttle {
    /// `Some(n)` when the warning is to be said now, `n` repeats having gone unsaid.
    pub(crate) fn due(&mut self) -> Option<u64> {
        const EVERY: std::time::Duration = std::time::Duration::from_secs(10);
        if self.said.is_some_and(|t| t.elapsed() < EVERY) {
            self.unsaid += 1;
            return None;
        }
        self.said = Some(std::time::Instant::now());
        Some(std::mem::take(&mut self.unsaid))
    }
}

/// Keeps the first full-disk error to report once a record is processed whole (the lake and
/// the spools keep what they could not write); any other error is returned at once.
pub(crate) fn keep_if_full(full: &mut Option<Error>, e: Error) -> Result<(), Error> {
    if !e.is_disk_full() {
        return Err(e);
    }
    full.get_or_insert(e);
    Ok(())
}

/// How often a stage paused by a full disk tries to write what it kept.
pub(crate) const DISK_FULL_RETRY: std::time::Duration = std::time::Duration::from_secs(2);

/// Resumes (or pauses) every assigned partition.
pub(crate) fn resume<C: rdkafka::consumer::ConsumerContext>(
    consumer: &rdkafka::consumer::BaseConsumer<C>,
    go: bool,
) {
    use rdkafka::consumer::Consumer as _;
    let Ok(tpl) = consumer.assignment() else {
        return;
    };
    let r = if go {
        consumer.resume(&tpl)
    } else {
        consumer.pause(&tpl)
    };
    if let Err(e) = r {
        tracing::warn!(error = %e, "could not {} consumption", if go { "resume" } else { "pause" });
    }
}

/// A write failed for want of disk space (the state directory, the lake or a spool; what
/// could not be written is kept in memory): pauses consumption (the consumer keeps polling,
/// so it stays in its group), counts it under the stage whose files they were, and says so
/// once per outage. The caller retries its durable point every [`DISK_FULL_RETRY`] and resumes when it
/// succeeds; nothing is committed meanwhile.
pub(crate) fn disk_full<C: rdkafka::consumer::ConsumerContext>(
    consumer: &rdkafka::consumer::BaseConsumer<C>,
    e: &Error,
    full_since: &mut Option<std::time::Instant>,
    full_retry: &mut std::time::Instant,
) {
    crate::telemetry::metrics::get().error(e.disk_stage(), "disk_full");
    *full_retry = std::time::Instant::now();
    if full_since.is_none() {
        *full_since = Some(std::time::Instant::now());
        tracing::error!(
            error = %e,
            "disk full: consumption paused; what could not be written is kept in memory and nothing is committed; trying again every {} s",
            DISK_FULL_RETRY.as_secs()
        );
    }
    resume(consumer, false);
}

/// The (topic, partition) pairs of a partition list.
pub(crate) fn partitions_of(tpl: &rdkafka::TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

/// Sends one record, waiting while the producer's queue is full (back-pressure) rather than
/// dropping it.
pub(crate) fn send<K, P>(
    producer: &client::Producer,
    record: BaseRecord<'_, K, P, ()>,
) -> Result<(), Error>
where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    send_tagged(producer, record, 0)
}

/// [`send`] with a delivery tag: an alert's arrival time (Unix microseconds), so its delivery
/// is counted and its latency observed; 0 for other messages.
pub(crate) fn send_tagged<K, P>(
    producer: &client::Producer,
    record: BaseRecord<'_, K, P, ()>,
    tag: usize,
) -> Result<(), Error>
where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    let mut record = BaseRecord {
        topic: record.topic,
        partition: record.partition,
        payload: record.payload,
        key: record.key,
        timestamp: record.timestamp,
        headers: record.headers,
        delivery_opaque: tag,
    };
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((e, r)) => {
                return Err(Error::Delivery {
                    message: format!("cannot queue a message to {}: {e}", r.topic),
                });
            }
        }
    }
}

/// Waits for every queued message and fails if any delivery failed since `failed_before`.
pub(crate) fn flush(
    producer: &client::Producer,
    deliveries: &client::Deliveries,
    failed_before: u64,
    timeout: Duration,
) -> Result<(), Error> {
    use rdkafka::producer::Producer as _;
    // Still in flight when the time is up (the broker down or restarting): the producer
    // keeps retrying them, so this passes; a message it gives up on is counted below.
    producer.flush(timeout).map_err(|e| Error::Unavailable {
        message: format!("flush: {e}"),
    })?;
    let failed = deliveries.failed();
    if failed > failed_before {
        return Err(Error::Delivery {
            message: format!(
                "{} message(s) could not be delivered; stopping without committing, so the records are processed again after a restart",
                failed - failed_before
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_warning_is_said_once_then_with_the_count_of_repeats_unsaid() {
        let mut t = Throttle::default();
        assert_eq!(t.due(), Some(0));
        assert_eq!(t.due(), None);
        assert_eq!(t.due(), None);
        // Ten seconds later.
        t.said = Some(std::time::Instant::now() - std::time::Duration::from_secs(11));
        assert_eq!(t.due(), Some(2));
        assert_eq!(t.due(), None);
    }

    #[test]
    fn only_an_unreachable_cluster_is_transient() {
        let unavailable = Error::Unavailable {
            message: "flush: timed out".into(),
        };
        assert!(unavailable.is_transient());
        let lost = Error::Delivery {
            message: "2 message(s) could not be delivered".into(),
        };
        assert!(!lost.is_transient());
        assert!(!Error::Setup("bad".into()).is_transient());
    }
}
