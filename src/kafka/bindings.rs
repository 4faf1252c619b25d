//! Credential bindings shared between instances through `<group>-bindings`.
//!
//! The partitions one instance holds judge together (one table of bindings), but a credential
//! minted under an identity another instance holds and presented under one of this instance's
//! would be judged against nothing. So every detect stage publishes each *new* binding its
//! engines make (a credential's first mint: fingerprint → minted for, from, by, when, expiry,
//! single use) to the `<group>-bindings` topic, in batches ([`Batch`]: at most [`BATCH_AGE`]
//! old or [`BATCH_LEN`] long, keyed by the instance), and every instance reads the whole topic
//! (a plain consumer outside any group, from the beginning) and merges what the other
//! instances publish into its own table. Merging is idempotent, so a binding published twice
//! (a record processed again after a crash) or read again after a restart changes nothing.
//! Batches, not a record per binding: a binding is ~60 bytes and a third of the events mint
//! one, and a record each cost three instances a quarter of their throughput here.
//!
//! The bound: a presentation judged before its mint's binding reached this instance (the
//! batch's age, a produce linger and a fetch: some tens of milliseconds) is judged against
//! nothing, as one instance judges a presentation whose mint record has not arrived yet.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use super::Error;
use super::client::{self, Role};
use crate::baseline::{Binding, Credentials};
use crate::config::KafkaConfig;
use crate::telemetry::metrics::{self, stage};

/// How long bindings stay on the topic (`retention.ms`: a week): credentials are short-lived,
/// and one whose binding is older than this is past any lifetime nhiwatch assumes.
pub const RETENTION_MS: &str = "604800000";

/// A batch is sent once its first binding is this old …
pub const BATCH_AGE: Duration = Duration::from_millis(20);
/// … or once it holds this many.
pub const BATCH_LEN: usize = 256;

/// Bindings waiting to be published.
#[derive(Default)]
pub struct Batch {
    items: Vec<(u128, Binding)>,
    since: Option<std::time::Instant>,
}

impl Batch {
    /// Adds bindings.
    pub fn extend(&mut self, new: &mut Vec<(u128, Binding)>) {
        if new.is_empty() {
            return;
        }
        self.since.get_or_insert_with(std::time::Instant::now);
        self.items.append(new);
    }

    /// The batch's record value and size when it is due (or `now`), emptying it.
    pub fn take(&mut self, now: bool) -> Option<(Vec<u8>, usize)> {
        let due =
            self.items.len() >= BATCH_LEN || self.since.is_some_and(|t| t.elapsed() >= BATCH_AGE);
        if self.items.is_empty() || !(now || due) {
            return None;
        }
        self.since = None;
        let n = self.items.len();
        let value = encode(&self.items);
        self.items.clear();
        Some((value, n))
    }
}

/// The topic of a group.
pub fn topic(group: &str) -> String {
    format!("{group}-bindings")
}

/// A batch of bindings as a record value.
pub fn encode(items: &[(u128, Binding)]) -> Vec<u8> {
    postcard::to_stdvec(items).unwrap_or_default()
}

/// A record's bindings.
pub fn decode(value: &[u8]) -> Result<Vec<(u128, Binding)>, String> {
    postcard::from_bytes(value).map_err(|e| e.to_string())
}

/// Reads `<group>-bindings` until `stop`, merging the bindings other instances publish into
/// `table`, but for those minted by identities of the partitions `held` here. Runs on its own thread; errors are counted and logged, never fatal (a binding
/// not received is a presentation judged as one instance would judge it).
pub fn read(
    k: &KafkaConfig,
    group: &str,
    instance: &str,
    table: Arc<Credentials>,
    held: &std::sync::RwLock<Vec<i32>>,
    stop: &AtomicBool,
) -> Result<(), Error> {
    let partitions = k.partitions.max(1);
    let topic = topic(group);
    let consumer: BaseConsumer =
        client::client_config(k, Role::Restore, &format!("{group}-bindings"))
            // A binding should reach the other instances before the presentations that follow
            // its mint: do not wait on a fetch held open.
            .set("fetch.wait.max.ms", "10")
            .create()
            .map_err(|e| Error::Client {
                what: "bindings consumer",
                message: e.to_string(),
            })?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..k.partitions.max(1) as i32 {
        tpl.add_partition_offset(&topic, p, Offset::Beginning)
            .map_err(|e| Error::Setup(format!("{topic}/{p}: {e}")))?;
    }
    consumer.assign(&tpl).map_err(|e| Error::Client {
        what: "bindings consumer",
        message: e.to_string(),
    })?;
    let m = metrics::get();
    let mut warned = super::Throttle::default();
    while !stop.load(Ordering::Relaxed) {
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(e)) => {
                m.error(stage::DETECT, "bindings_consumer");
                if let Some(unsaid) = warned.due() {
                    tracing::warn!(error = %e, unsaid, "bindings consumer error (retrying)");
                }
            }
            Some(Ok(msg)) => {
                // This instance's own are in its table already.
                if msg.key() == Some(instance.as_bytes()) {
                    continue;
                }
                match decode(msg.payload().unwrap_or_default()) {
                    Ok(mut items) => {
                        // Bindings of identities this instance holds are its own to make
                        // (a record of theirs processed again makes them again).
                        {
                            let held = held.read().unwrap_or_else(|e| e.into_inner());
                            items.retain(|(_, b)| {
                                !held.contains(&((b.identity % partitions) as i32))
                            });
                        }
                        m.bindings_received.inc_by(items.len() as u64);
                        table.merge_remote(items);
                    }
                    Err(e) => {
                        m.error(stage::DETECT, "bad_binding");
                        tracing::warn!(
                            topic = %topic,
                            partition = msg.partition(),
                            offset = msg.offset(),
                            error = %e,
                            "unreadable record on the bindings topic; skipped"
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(minted: i64) -> Binding {
        Binding {
            env: Some(7),
            minted,
            expires: minted + 3600,
            single_use: true,
            net: Some(9),
            identity: 42,
            presentations: 1,
            first_event: "evt-1".into(),
        }
    }

    #[test]
    fn a_batch_goes_when_due_and_reads_back_as_written() {
        let mut b = Batch::default();
        assert!(b.take(true).is_none(), "nothing to send");
        b.extend(&mut vec![(u128::MAX - 5, binding(1)), (3, binding(2))]);
        assert!(b.take(false).is_none(), "neither full nor old yet");
        std::thread::sleep(BATCH_AGE);
        let (value, n) = b.take(false).expect("old enough");
        assert_eq!(n, 2);
        assert_eq!(
            decode(&value).expect("decodes"),
            vec![(u128::MAX - 5, binding(1)), (3, binding(2))]
        );
        assert!(b.take(true).is_none(), "emptied");
        let mut many: Vec<(u128, Binding)> =
            (0..BATCH_LEN as u128).map(|k| (k, binding(0))).collect();
        b.extend(&mut many);
        assert_eq!(b.take(false).map(|(_, n)| n), Some(BATCH_LEN), "full");
        assert!(
            decode(b"\xff\xff\xff").is_err(),
            "a bad record is an error, not a panic"
        );
    }
}
