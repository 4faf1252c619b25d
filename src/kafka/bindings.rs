//! Credential bindings shared between instances through `<group>-bindings`.
//!
//! The partitions one instance holds judge together (one table of bindings), but a credential
//! minted under an identity another instance holds and presented under one of this instance's
//! would be judged against nothing. So every detect stage produces each *new* binding its
//! engines make (a credential's first mint: fingerprint → minted for, from, by, when, expiry,
//! single use) to the compacted `<group>-bindings` topic, keyed by fingerprint, and every
//! instance reads the whole topic (a plain consumer outside any group, from the beginning)
//! and merges what the other instances publish into its own table. Merging is idempotent, so a
//! binding published twice (a record processed again after a crash) or read again after a
//! restart changes nothing.
//!
//! The bound: a presentation judged before its mint's binding reached this instance (the
//! topic's lag: a produce linger and a fetch, tens of milliseconds) is judged against nothing,
//! as one instance judges a presentation whose mint record has not arrived yet.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers as _;
use rdkafka::{Message, Offset, TopicPartitionList};

use super::Error;
use super::client::{self, Role};
use crate::baseline::{Binding, Credentials};
use crate::config::KafkaConfig;
use crate::telemetry::metrics::{self, stage};

/// Header naming the instance that published a binding (its own are not merged back).
pub const INSTANCE: &str = "nhiwatch-instance";

/// How long bindings stay on the topic (`retention.ms`: a week; compaction keeps the latest
/// per fingerprint meanwhile): credentials are short-lived, and one whose binding is older
/// than this is past any lifetime nhiwatch assumes.
pub const RETENTION_MS: &str = "604800000";

/// The topic of a group.
pub fn topic(group: &str) -> String {
    format!("{group}-bindings")
}

/// The record key of a credential: its 128-bit fingerprint key, little-endian.
pub fn key(credential: u128) -> [u8; 16] {
    credential.to_le_bytes()
}

/// A binding as a record value.
pub fn encode(b: &Binding) -> Vec<u8> {
    postcard::to_stdvec(b).unwrap_or_default()
}

/// A record of the topic: the credential and its binding.
pub fn decode(key: &[u8], value: &[u8]) -> Result<(u128, Binding), String> {
    let key: [u8; 16] = key
        .try_into()
        .map_err(|_| format!("key of {} bytes, not 16", key.len()))?;
    let b = postcard::from_bytes(value).map_err(|e| format!("value: {e}"))?;
    Ok((u128::from_le_bytes(key), b))
}

/// Reads `<group>-bindings` until `stop`, merging the bindings other instances publish into
/// `table`. Runs on its own thread; errors are counted and logged, never fatal (a binding
/// not received is a presentation judged as one instance would judge it).
pub fn read(
    k: &KafkaConfig,
    group: &str,
    instance: &str,
    table: Arc<Credentials>,
    stop: &AtomicBool,
) -> Result<(), Error> {
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
    let mut batch: Vec<(u128, Binding)> = Vec::new();
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
                let own = msg.headers().is_some_and(|h| {
                    h.iter()
                        .any(|h| h.key == INSTANCE && h.value == Some(instance.as_bytes()))
                });
                if own {
                    continue;
                }
                match decode(
                    msg.key().unwrap_or_default(),
                    msg.payload().unwrap_or_default(),
                ) {
                    Ok(kb) => {
                        batch.push(kb);
                        m.bindings_received.inc();
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
                if !batch.is_empty() {
                    table.merge(std::mem::take(&mut batch));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binding_reads_back_as_written_and_a_bad_record_is_an_error_not_a_panic() {
        let b = Binding {
            env: Some(7),
            minted: 1_700_000_000,
            expires: 1_700_003_600,
            single_use: true,
            net: Some(9),
            identity: 42,
            presentations: 1,
            first_event: "evt-1".into(),
        };
        let (k, back) = decode(&key(u128::MAX - 5), &encode(&b)).expect("decodes");
        assert_eq!((k, back), (u128::MAX - 5, b));
        assert!(decode(b"short", &[]).unwrap_err().contains("16"));
        assert!(decode(&key(1), b"\xff\xff").is_err());
    }
}
