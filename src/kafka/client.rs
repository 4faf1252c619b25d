//! Kafka clients built from `[kafka]`: the user's librdkafka options first, then the settings
//! at-least-once delivery depends on, which the user cannot override (`config::MANAGED_OPTIONS`
//! rejects them at start). Also the admin step that creates the internal topics, and the
//! producer context that counts failed deliveries so a checkpoint never commits past a lost
//! message.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{DeliveryResult, ProducerContext, ThreadedProducer};

use super::Error;
use crate::config::KafkaConfig;
use crate::telemetry::metrics;

/// How often librdkafka reports statistics (consumer lag, producer queue, retries) unless
/// `statistics.interval.ms` is set.
pub const STATISTICS_INTERVAL_MS: &str = "5000";

/// Which client a configuration is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Consumer in the group (manual commits).
    Consumer,
    /// The one producer for events, alerts, dead letters and the changelog.
    Producer,
    /// Topic administration.
    Admin,
    /// A consumer outside any group that reads one changelog partition.
    Restore,
}

/// A librdkafka configuration for `role`.
pub fn client_config(k: &KafkaConfig, role: Role, group: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (name, value) in &k.options {
        c.set(name, value);
    }
    c.set(
        "bootstrap.servers",
        k.bootstrap_servers.as_deref().unwrap_or_default(),
    );
    c.set("client.id", format!("nhiwatch-{group}"));
    let specific = match role {
        Role::Consumer | Role::Restore => &k.consumer_options,
        Role::Producer => &k.producer_options,
        Role::Admin => &std::collections::BTreeMap::new(),
    };
    for (name, value) in specific {
        c.set(name, value);
    }
    if matches!(role, Role::Consumer | Role::Producer)
        && !k.options.contains_key("statistics.interval.ms")
        && !specific.contains_key("statistics.interval.ms")
    {
        // Consumer lag, producer queue and retries come from librdkafka's statistics.
        c.set("statistics.interval.ms", STATISTICS_INTERVAL_MS);
    }
    if matches!(role, Role::Admin | Role::Restore) {
        // These clients have no statistics handler: librdkafka's default would log every
        // report (a `statistics.interval.ms` in `kafka.options` applies to all clients).
        c.set("statistics.interval.ms", "0");
    }
    match role {
        Role::Consumer => {
            // Alerts should not wait on a fetch held open for librdkafka's default 500 ms by
            // brokers that do not answer a long poll as soon as data arrives (Tansu).
            if !k.options.contains_key("fetch.wait.max.ms")
                && !k.consumer_options.contains_key("fetch.wait.max.ms")
            {
                c.set("fetch.wait.max.ms", "25");
            }
            c.set("group.id", group)
                .set("enable.auto.commit", "false")
                .set("enable.auto.offset.store", "false")
                .set("auto.offset.reset", "earliest");
        }
        Role::Restore => {
            c.set("group.id", group)
                .set("enable.auto.commit", "false")
                .set("enable.auto.offset.store", "false")
                .set("auto.offset.reset", "earliest");
        }
        Role::Producer => {
            // Order per partition is what the deduplication of repartitioned events relies
            // on; idempotence keeps it through retries.
            c.set("enable.idempotence", "true");
            if !k.options.contains_key("linger.ms") && !k.producer_options.contains_key("linger.ms")
            {
                c.set("linger.ms", "5");
            }
        }
        Role::Admin => {}
    }
    c
}

/// Counts failed deliveries (a checkpoint compares the count before and after flushing), and
/// for the alert producer, alert deliveries and their latency: an alert is sent with its
/// record's arrival time (Unix microseconds) as the delivery opaque; other messages with 0.
#[derive(Clone)]
pub struct Deliveries {
    failed: Arc<AtomicU64>,
    stage: &'static str,
    alerts: bool,
}

impl Deliveries {
    /// A context for the producer of `stage`; `alerts`: it writes the alerts topic, so its
    /// statistics are the Kafka sink's.
    pub fn new(stage: &'static str, alerts: bool) -> Self {
        Deliveries {
            failed: Arc::default(),
            stage,
            alerts,
        }
    }

    /// Failed deliveries so far.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Acquire)
    }
}

impl ClientContext for Deliveries {
    fn stats(&self, statistics: rdkafka::Statistics) {
        if self.alerts {
            metrics::get().producer_stats(&statistics);
        }
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, arrival: usize) {
        let m = metrics::get();
        match result {
            Ok(_) => {
                if arrival != 0 {
                    m.sink_deliveries.with_label_values(&["kafka"]).inc();
                    metrics::observe_alert_latency(arrival as u64);
                }
            }
            Err((e, msg)) => {
                use rdkafka::Message as _;
                self.failed.fetch_add(1, Ordering::AcqRel);
                if arrival != 0 {
                    m.sink_failures.with_label_values(&["kafka"]).inc();
                }
                m.error(self.stage, "delivery");
                tracing::error!(topic = msg.topic(), partition = msg.partition(), error = %e, "kafka delivery failed");
            }
        }
    }
}

/// The shared producer.
pub type Producer = ThreadedProducer<Deliveries>;

/// Creates the producer of `stage` (`alerts`: it writes the alerts topic).
pub fn producer(
    k: &KafkaConfig,
    group: &str,
    stage: &'static str,
    alerts: bool,
) -> Result<(Producer, Deliveries), Error> {
    let ctx = Deliveries::new(stage, alerts);
    let p = client_config(k, Role::Producer, group)
        .create_with_context(ctx.clone())
        .map_err(|e| Error::Client {
            what: "producer",
            message: e.to_string(),
        })?;
    Ok((p, ctx))
}

/// A topic nhiwatch creates when it is missing.
pub struct Wanted<'a> {
    /// Name.
    pub name: &'a str,
    /// Partitions.
    pub partitions: i32,
    /// Compacted (the changelog) or deleted by age.
    pub compact: bool,
    /// An existing topic must have exactly `partitions` (state is partitioned by it).
    pub check: bool,
    /// Records are deleted after this long (`retention.ms`; the broker's default without).
    pub retention_ms: Option<&'a str>,
}

/// Creates the topics that do not exist yet; fails when the cluster cannot be reached or a
/// topic cannot be created. Existing topics are left as they are, but the partition count of
/// an internal topic must match: state is partitioned by it.
pub fn ensure_topics(
    k: &KafkaConfig,
    wanted: &[Wanted<'_>],
    timeout: Duration,
) -> Result<(), Error> {
    let admin: AdminClient<DefaultClientContext> = client_config(k, Role::Admin, "admin")
        .create()
        .map_err(|e| Error::Client {
            what: "admin client",
            message: e.to_string(),
        })?;
    let meta = admin
        .inner()
        .fetch_metadata(None, timeout)
        .map_err(|e| Error::Unavailable {
            message: e.to_string(),
        })?;
    let existing: std::collections::HashMap<&str, usize> = meta
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| (t.name(), t.partitions().len()))
        .collect();
    let mut create = Vec::new();
    let repl = i32::from(k.replication_factor);
    for w in wanted {
        match existing.get(w.name) {
            Some(&n) => {
                if w.check && n as i32 != w.partitions {
                    return Err(Error::Partitions {
                        topic: w.name.to_string(),
                        found: n,
                        expected: w.partitions,
                    });
                }
            }
            None => {
                let mut t =
                    NewTopic::new(w.name, w.partitions.max(1), TopicReplication::Fixed(repl));
                if w.compact {
                    t = t.set("cleanup.policy", "compact");
                }
                if let Some(ms) = w.retention_ms {
                    t = t.set("retention.ms", ms);
                }
                create.push(t);
            }
        }
    }
    if create.is_empty() {
        return Ok(());
    }
    let opts = AdminOptions::new().operation_timeout(Some(timeout));
    let results =
        futures_executor::block_on(admin.create_topics(create.iter(), &opts)).map_err(|e| {
            Error::Unavailable {
                message: e.to_string(),
            }
        })?;
    for r in results {
        match r {
            Ok(name) => tracing::info!(topic = name, "topic created"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(Error::Client {
                    what: "topic creation",
                    message: format!("{name}: {code}"),
                });
            }
        }
    }
    Ok(())
}
