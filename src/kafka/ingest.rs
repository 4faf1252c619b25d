//! The ingest stage: input topics → decode → `<group>-events` keyed by identity (and dead
//! letters). Stateless: what it produces twice after a crash or a rebalance, the detect stage
//! drops by origin, so offsets are committed simply after the producer has delivered
//! everything produced before them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::{BorrowedMessage, Header, OwnedHeaders};
use rdkafka::producer::BaseRecord;
use rdkafka::{ClientContext, Message, TopicPartitionList};

use super::client::{self, Deliveries, Producer, Role};
use super::{Error, headers};
use crate::decode::{Decoded, Decoder, Reject};
use crate::redact::redact;

/// How often delivered input offsets are committed.
const COMMIT_EVERY: Duration = Duration::from_millis(500);

/// Counters of the ingest stage.
#[derive(Debug, Default)]
pub struct Counters {
    /// Input records consumed.
    pub records: std::sync::atomic::AtomicU64,
    /// Events produced to the events topic.
    pub events: std::sync::atomic::AtomicU64,
    /// Records (or batch elements) rejected.
    pub rejects: std::sync::atomic::AtomicU64,
    /// Rejects written to the dead-letter topic.
    pub dead_letters: std::sync::atomic::AtomicU64,
}

/// Settings of the stage.
pub struct Ingest {
    /// Decoders by input topic.
    pub decoders: HashMap<String, Decoder>,
    /// `<group>-events`.
    pub events_topic: String,
    /// Its partition count.
    pub partitions: u32,
    /// The dead-letter topic.
    pub dlq_topic: Option<String>,
    /// Counters.
    pub counters: Arc<Counters>,
}

/// The next offset to commit, by topic and partition (nested so the per-record update needs
/// no key allocation).
type Pending = Arc<Mutex<HashMap<String, HashMap<i32, i64>>>>;

struct Ctx {
    producer: Arc<Producer>,
    deliveries: Deliveries,
    pending: Pending,
}

impl ClientContext for Ctx {}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            // Hand over cleanly: everything produced is delivered, then committed.
            let revoked: Vec<(String, i32)> = tpl
                .elements()
                .iter()
                .map(|e| (e.topic().to_string(), e.partition()))
                .collect();
            let before = self.deliveries.failed();
            match super::flush(
                &self.producer,
                &self.deliveries,
                before,
                Duration::from_secs(30),
            ) {
                Ok(()) => {
                    if let Err(e) =
                        commit(consumer, &self.pending, Some(&revoked), CommitMode::Sync)
                    {
                        tracing::warn!(error = %e, "commit on revoke failed; the new owner re-reads (duplicates are dropped downstream)");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "flush on revoke failed"),
            }
            tracing::info!(partitions = revoked.len(), "input partitions revoked");
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            tracing::info!(partitions = tpl.count(), "input partitions assigned");
        }
    }
}

/// Commits the pending offsets (of `only` the given partitions, or all) and forgets them.
fn commit<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    pending: &Pending,
    only: Option<&[(String, i32)]>,
    mode: CommitMode,
) -> Result<(), Error> {
    let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
    let mut tpl = TopicPartitionList::new();
    for (topic, parts) in p.iter_mut() {
        parts.retain(|partition, next| {
            let chosen = only.is_none_or(|o| o.iter().any(|(t, q)| t == topic && q == partition));
            if chosen {
                let _ = tpl.add_partition_offset(topic, *partition, rdkafka::Offset::Offset(*next));
            }
            !chosen
        });
    }
    if tpl.count() == 0 {
        return Ok(());
    }
    consumer.commit(&tpl, mode).map_err(|e| Error::Unavailable {
        message: format!("commit: {e}"),
    })
}

impl Ingest {
    /// Runs until `stop` is set: consume, decode, produce; commit delivered offsets.
    pub fn run(
        self,
        k: &crate::config::KafkaConfig,
        group: &str,
        stop: &AtomicBool,
    ) -> Result<(), Error> {
        let (producer, deliveries) = client::producer(k, group)?;
        let producer = Arc::new(producer);
        let pending: Pending = Arc::default();
        let ctx = Ctx {
            producer: producer.clone(),
            deliveries: deliveries.clone(),
            pending: pending.clone(),
        };
        let consumer: BaseConsumer<Ctx> = client::client_config(k, Role::Consumer, group)
            .create_with_context(ctx)
            .map_err(|e| Error::Client {
                what: "ingest consumer",
                message: e.to_string(),
            })?;
        let topics: Vec<&str> = self.decoders.keys().map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(|e| Error::Client {
            what: "ingest consumer",
            message: e.to_string(),
        })?;
        let mut results: Vec<Decoded> = Vec::with_capacity(8);
        let mut json = Vec::with_capacity(2048);
        let mut origin = String::with_capacity(128);
        let mut last_commit = Instant::now();
        let mut failed_before = deliveries.failed();
        while !stop.load(Ordering::Relaxed) {
            if let Some(msg) = consumer.poll(Duration::from_millis(100)) {
                match msg {
                    Ok(m) => {
                        self.record(&producer, &m, &mut results, &mut json, &mut origin)?;
                        let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
                        match p.get_mut(m.topic()) {
                            Some(parts) => {
                                parts.insert(m.partition(), m.offset() + 1);
                            }
                            None => {
                                p.insert(
                                    m.topic().to_string(),
                                    HashMap::from([(m.partition(), m.offset() + 1)]),
                                );
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "kafka consumer error (retrying)"),
                }
            }
            if last_commit.elapsed() >= COMMIT_EVERY {
                last_commit = Instant::now();
                super::flush(
                    &producer,
                    &deliveries,
                    failed_before,
                    Duration::from_secs(60),
                )?;
                failed_before = deliveries.failed();
                if let Err(e) = commit(&consumer, &pending, None, CommitMode::Async) {
                    tracing::warn!(error = %e, "commit failed (retried at the next interval)");
                }
            }
        }
        super::flush(
            &producer,
            &deliveries,
            failed_before,
            Duration::from_secs(60),
        )?;
        if let Err(e) = commit(&consumer, &pending, None, CommitMode::Sync) {
            tracing::warn!(error = %e, "final commit failed; the next start re-reads (duplicates are dropped downstream)");
        }
        Ok(())
    }

    fn record(
        &self,
        producer: &Producer,
        m: &BorrowedMessage<'_>,
        results: &mut Vec<Decoded>,
        json: &mut Vec<u8>,
        origin: &mut String,
    ) -> Result<(), Error> {
        use std::fmt::Write as _;
        use std::sync::atomic::Ordering::Relaxed;
        self.counters.records.fetch_add(1, Relaxed);
        let payload = m.payload().unwrap_or_default();
        results.clear();
        let Some(decoder) = self.decoders.get(m.topic()) else {
            return Ok(());
        };
        decoder.decode(payload, results);
        if results.is_empty() {
            // A blank message holds no record; say so rather than drop it unseen.
            let reject = Reject {
                reason: crate::decode::RejectReason::MalformedJson,
                message: "empty message".into(),
                offset: 0,
                len: 0,
                index: None,
            };
            results.push(Err(reject));
        }
        for (i, r) in results.drain(..).enumerate() {
            match r {
                Ok(event) => {
                    origin.clear();
                    let _ = write!(origin, "{}/{}/{}/{i}", m.topic(), m.partition(), m.offset());
                    json.clear();
                    event.write_json(json);
                    let partition =
                        (crate::baseline::hash_identity(&event.identity) % self.partitions) as i32;
                    let h = OwnedHeaders::new().insert(Header {
                        key: headers::ORIGIN,
                        value: Some(origin.as_bytes()),
                    });
                    let mut rec = BaseRecord::to(&self.events_topic)
                        .partition(partition)
                        .key(event.identity.as_bytes())
                        .payload(&json[..])
                        .headers(h);
                    // The input's timestamp travels with the event (as in Kafka Streams), so
                    // the alert can say when its record arrived.
                    if let Some(ts) = m.timestamp().to_millis() {
                        rec = rec.timestamp(ts);
                    }
                    super::send(producer, rec)?;
                    self.counters.events.fetch_add(1, Relaxed);
                }
                Err(reject) => {
                    self.counters.rejects.fetch_add(1, Relaxed);
                    dead_letter(
                        producer,
                        self.dlq_topic.as_deref(),
                        m.topic(),
                        m.partition(),
                        m.offset(),
                        payload,
                        &reject,
                    )?;
                    if self.dlq_topic.is_some() {
                        self.counters.dead_letters.fetch_add(1, Relaxed);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Sends a rejected record (secrets masked) to the dead-letter topic with the reason and
/// origin in headers; without a dead-letter topic, logs it with its location.
pub(crate) fn dead_letter(
    producer: &Producer,
    dlq: Option<&str>,
    topic: &str,
    partition: i32,
    offset: i64,
    payload: &[u8],
    reject: &Reject,
) -> Result<(), Error> {
    let reason = reject.reason.as_str();
    let Some(dlq) = dlq else {
        tracing::warn!(topic, partition, offset, index = reject.index, reason, message = %reject.message, "record rejected (no kafka.dlq_topic)");
        return Ok(());
    };
    let body = if reject.len > 0 && reject.offset + reject.len <= payload.len() {
        &payload[reject.offset..reject.offset + reject.len]
    } else {
        payload
    };
    let body = redact(body);
    let origin = match reject.index {
        Some(i) => format!("{topic}/{partition}/{offset}/{i}"),
        None => format!("{topic}/{partition}/{offset}"),
    };
    let (p, o) = (partition.to_string(), offset.to_string());
    let h = OwnedHeaders::new()
        .insert(Header {
            key: headers::REASON,
            value: Some(reason),
        })
        .insert(Header {
            key: headers::MESSAGE,
            value: Some(&reject.message),
        })
        .insert(Header {
            key: headers::ORIGIN,
            value: Some(&origin),
        })
        .insert(Header {
            key: headers::TOPIC,
            value: Some(topic),
        })
        .insert(Header {
            key: headers::PARTITION,
            value: Some(&p),
        })
        .insert(Header {
            key: headers::OFFSET,
            value: Some(&o),
        });
    // Keyed by the origin partition, so dead letters of one input partition stay in order.
    let key = format!("{topic}/{partition}");
    super::send(
        producer,
        BaseRecord::to(dlq)
            .key(key.as_bytes())
            .payload(&body[..])
            .headers(h),
    )
}
