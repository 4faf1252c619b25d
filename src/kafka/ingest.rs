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
use crate::telemetry::metrics::{self, stage};

/// How often delivered input offsets are committed.
const COMMIT_EVERY: Duration = Duration::from_millis(500);

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
    /// The lake the decoded events are written to (synced before input offsets are
    /// committed).
    pub lake: Option<crate::lake::Writer>,
}

type SharedLake = Option<Arc<Mutex<crate::lake::Writer>>>;

/// Makes the lake's rows durable; called before every commit.
fn sync_lake(lake: &SharedLake) -> Result<(), Error> {
    if let Some(l) = lake {
        l.lock()
            .unwrap_or_else(|e| e.into_inner())
            .sync()
            .inspect_err(|e| {
                if !e.is_disk_full() {
                    metrics::get().error(stage::LAKE, "write")
                }
            })?;
    }
    Ok(())
}

/// The next offset to commit, by topic and partition (nested so the per-record update needs
/// no key allocation).
type Pending = Arc<Mutex<HashMap<String, HashMap<i32, i64>>>>;

struct Ctx {
    producer: Arc<Producer>,
    deliveries: Deliveries,
    pending: Pending,
    lake: SharedLake,
}

impl ClientContext for Ctx {
    fn stats(&self, statistics: rdkafka::Statistics) {
        metrics::get().consumer_stats(stage::INGEST, &statistics);
    }
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            metrics::get().revoked(stage::INGEST);
            // Hand over cleanly: everything produced is delivered, then committed.
            let revoked = super::partitions_of(tpl);
            let before = self.deliveries.failed();
            match super::flush(
                &self.producer,
                &self.deliveries,
                before,
                Duration::from_secs(30),
            ) {
                Ok(()) => {
                    if let Err(e) = sync_lake(&self.lake) {
                        tracing::warn!(error = %e, "lake sync on revoke failed; not committing (the new owner re-reads)");
                    } else if let Err(e) = commit(consumer, &self.pending, Some(&revoked)) {
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
            metrics::get().assigned(stage::INGEST, tpl.count());
            tracing::info!(partitions = tpl.count(), "input partitions assigned");
        }
    }
}

/// Commits the pending offsets (of `only` the given partitions, or all), synchronously, and
/// forgets them once committed; after a failure they stay pending for the next attempt.
fn commit<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    pending: &Pending,
    only: Option<&[(String, i32)]>,
) -> Result<(), Error> {
    let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
    let chosen = |topic: &str, partition: i32| {
        only.is_none_or(|o| o.iter().any(|(t, q)| t == topic && *q == partition))
    };
    let mut tpl = TopicPartitionList::new();
    for (topic, parts) in p.iter() {
        for (partition, next) in parts {
            if chosen(topic, *partition) {
                let _ = tpl.add_partition_offset(topic, *partition, rdkafka::Offset::Offset(*next));
            }
        }
    }
    if tpl.count() == 0 {
        return Ok(());
    }
    let result = consumer.commit(&tpl, CommitMode::Sync);
    metrics::get().committed(stage::INGEST, result.is_ok());
    result.map_err(|e| Error::Unavailable {
        message: format!("commit: {e}"),
    })?;
    for (topic, parts) in p.iter_mut() {
        parts.retain(|partition, _| !chosen(topic, *partition));
    }
    Ok(())
}

impl Ingest {
    /// Runs until `stop` is set: consume, decode, produce; commit delivered offsets.
    pub fn run(
        mut self,
        k: &crate::config::KafkaConfig,
        group: &str,
        stop: &AtomicBool,
    ) -> Result<(), Error> {
        let (producer, deliveries) = client::producer(k, group, stage::INGEST, false)?;
        let m = metrics::get();
        m.declare_kafka_stage(stage::INGEST);
        if self.dlq_topic.is_some() {
            m.declare_dlq(stage::INGEST);
        }
        // One lookup per record finds the topic's decoder and its counters.
        let per_topic: HashMap<&str, (&Decoder, metrics::RecordCounters)> = self
            .decoders
            .iter()
            .map(|(t, d)| (t.as_str(), (d, metrics::RecordCounters::new(t))))
            .collect();
        let events = metrics::EventCounters::new();
        let producer = Arc::new(producer);
        let pending: Pending = Arc::default();
        let lake: SharedLake = self.lake.take().map(|w| Arc::new(Mutex::new(w)));
        if lake.is_some() {
            m.declare_lake();
        }
        let ctx = Ctx {
            producer: producer.clone(),
            deliveries: deliveries.clone(),
            pending: pending.clone(),
            lake: lake.clone(),
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
        // Since when the lake's disk is full: consumption is paused, the rows are kept in
        // memory, nothing is committed; the lake is synced again every 2 s until it works.
        let mut full_since: Option<Instant> = None;
        let mut full_retry = Instant::now();
        let mut consumer_errors = super::Throttle::default();
        while !stop.load(Ordering::Relaxed) {
            if let Some(since) = full_since
                && full_retry.elapsed() >= super::DISK_FULL_RETRY
            {
                full_retry = Instant::now();
                match sync_lake(&lake) {
                    Ok(()) => {
                        full_since = None;
                        super::resume(&consumer, true);
                        tracing::warn!(
                            paused_s = since.elapsed().as_secs(),
                            "disk space is back: the lake's rows are written, consumption resumed"
                        );
                        // Committed at the next interval, after the producer's flush.
                        last_commit = Instant::now() - COMMIT_EVERY;
                    }
                    Err(e) if e.is_disk_full() => {
                        super::disk_full(&consumer, &e, &mut full_since, &mut full_retry)
                    }
                    Err(e) => return Err(e),
                }
            }
            if let Some(msg) = consumer.poll(Duration::from_millis(100)) {
                match msg {
                    Ok(m) => {
                        let done = self.record(
                            &producer,
                            lake.as_deref(),
                            &m,
                            &per_topic,
                            &events,
                            &mut results,
                            &mut json,
                            &mut origin,
                        );
                        match done {
                            Ok(()) => {}
                            // The record was processed whole; its lake rows wait in memory.
                            Err(e) if e.is_disk_full() => {
                                super::disk_full(&consumer, &e, &mut full_since, &mut full_retry)
                            }
                            Err(e) => return Err(e),
                        }
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
                    Err(e) => {
                        m.error(stage::INGEST, "kafka_consumer");
                        if let Some(unsaid) = consumer_errors.due() {
                            tracing::warn!(error = %e, unsaid, "kafka consumer error (retrying)")
                        }
                    }
                }
            }
            if full_since.is_none() && last_commit.elapsed() >= COMMIT_EVERY {
                last_commit = Instant::now();
                let flushed = super::flush(
                    &producer,
                    &deliveries,
                    failed_before,
                    Duration::from_secs(60),
                );
                match flushed {
                    Ok(()) => {}
                    // Events still in flight (the broker down or restarting): nothing is
                    // committed; the producer keeps retrying them.
                    Err(e) if e.is_transient() => {
                        tracing::warn!(error = %e, "not committing: events still in flight");
                        continue;
                    }
                    Err(e) => return Err(e),
                }
                failed_before = deliveries.failed();
                match sync_lake(&lake) {
                    Ok(()) => {}
                    Err(e) if e.is_disk_full() => {
                        super::disk_full(&consumer, &e, &mut full_since, &mut full_retry);
                        continue;
                    }
                    Err(e) => return Err(e),
                }
                if let Err(e) = commit(&consumer, &pending, None) {
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
        sync_lake(&lake)?;
        if let Err(e) = commit(&consumer, &pending, None) {
            tracing::warn!(error = %e, "final commit failed; the next start re-reads (duplicates are dropped downstream)");
        }
        if let Some(l) = &lake {
            let w = l.lock().unwrap_or_else(|e| e.into_inner()).close()?;
            tracing::info!(events = w.events, files = w.files, "lake closed");
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        producer: &Producer,
        lake: Option<&Mutex<crate::lake::Writer>>,
        m: &BorrowedMessage<'_>,
        topics: &HashMap<&str, (&Decoder, metrics::RecordCounters)>,
        events: &metrics::EventCounters,
        results: &mut Vec<Decoded>,
        json: &mut Vec<u8>,
        origin: &mut String,
    ) -> Result<(), Error> {
        use std::fmt::Write as _;
        let payload = m.payload().unwrap_or_default();
        results.clear();
        let Some((decoder, counters)) = topics.get(m.topic()) else {
            return Ok(());
        };
        let mut stamp = itoa::Buffer::new();
        let arrival = stamp.format(metrics::now_micros());
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
        counters.record(decoder.source_of(results), payload.len());
        let mut full: Option<Error> = None;
        for (i, r) in results.drain(..).enumerate() {
            match r {
                Ok(event) => {
                    origin.clear();
                    let _ = write!(origin, "{}/{}/{}/{i}", m.topic(), m.partition(), m.offset());
                    json.clear();
                    event.write_json(json);
                    let partition =
                        (crate::baseline::hash_identity(&event.identity) % self.partitions) as i32;
                    let h = OwnedHeaders::new_with_capacity(2)
                        .insert(Header {
                            key: headers::ORIGIN,
                            value: Some(origin.as_bytes()),
                        })
                        .insert(Header {
                            key: headers::ARRIVAL,
                            value: Some(arrival.as_bytes()),
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
                    events.of(event.source, event.action).inc();
                    if let Some(l) = lake
                        && let Err(e) = l.lock().unwrap_or_else(|e| e.into_inner()).event(&event)
                    {
                        // The row is kept; a full disk is reported once the record is done.
                        super::keep_if_full(&mut full, e.into())?;
                    }
                }
                Err(reject) => {
                    dead_letter(
                        producer,
                        stage::INGEST,
                        self.dlq_topic.as_deref(),
                        m.topic(),
                        m.partition(),
                        m.offset(),
                        payload,
                        &reject,
                    )?;
                }
            }
        }
        full.map_or(Ok(()), Err)
    }
}

/// Sends a rejected record (secrets masked) to the dead-letter topic with the reason and
/// origin in headers; without a dead-letter topic, logs it with its location.
#[allow(clippy::too_many_arguments)]
pub(crate) fn dead_letter(
    producer: &Producer,
    stage: &'static str,
    dlq: Option<&str>,
    topic: &str,
    partition: i32,
    offset: i64,
    payload: &[u8],
    reject: &Reject,
) -> Result<(), Error> {
    let reason = reject.reason.as_str();
    let m = metrics::get();
    m.rejects.with_label_values(&[stage, reason]).inc();
    let message = crate::redact::redact_str(&reject.message);
    let Some(dlq) = dlq else {
        tracing::warn!(topic, partition, offset, index = reject.index, reason, message = %message, "record rejected (no kafka.dlq_topic)");
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
            value: Some(message.as_ref()),
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
    )?;
    m.dlq.with_label_values(&[stage, reason]).inc();
    Ok(())
}
