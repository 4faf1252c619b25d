//! Checkpoints of one partition's detection state together with the input position it
//! includes: a local file (fast restart) and a compacted changelog topic (restart anywhere,
//! partition moves, lost disks).
//!
//! A checkpoint is a whole-partition snapshot, not a stream of per-key deltas: baselines,
//! fleet context, credential bindings and held alerts must be restored *as of the same
//! offset*, or a restart would learn some records twice. In the changelog it is split into
//! chunks under two alternating slots (`a/…`, `b/…`), each slot's `meta` written last, so a
//! crash halfway through writing one slot leaves the other, complete one to restore;
//! compaction keeps exactly the latest value of each key, so the topic holds at most two
//! snapshots per partition.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rdkafka::Message as _;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::producer::BaseRecord;
use serde::{Deserialize, Serialize};

use super::Error;
use super::client::{self, Producer, Role};
use crate::config::KafkaConfig;
use crate::telemetry::metrics::stage;

// Version 3: the snapshot body of version 3 (baselines with their production time of week).
// Version 4: the snapshot body of version 4 (held runner changes).
// Version 5: the alerts topic's end offsets at the checkpoint (`alerts_from`); a version-4
// checkpoint is still read (without them).
const MAGIC: &[u8; 8] = b"NHIWCKP5";
const MAGIC_V4: &[u8; 8] = b"NHIWCKP4";
/// Largest chunk of a snapshot in one changelog message (below the brokers' default 1 MiB
/// message limit, with room for the key and headers).
const CHUNK: usize = 512 << 10;
/// Key of the fence records a restore appends (compaction keeps only the last one).
const FENCE_KEY: &str = "fence";

/// Where one input of a repartitioned event came from; the high-water mark per origin
/// partition drops events the ingest stage produced twice (after a crash or a rebalance).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marks(pub Vec<(String, i32, i64, u32)>);

impl Marks {
    /// As a map for lookups.
    pub fn to_map(&self) -> HashMap<(String, i32), (i64, u32)> {
        self.0
            .iter()
            .map(|(t, p, o, i)| ((t.clone(), *p), (*o, *i)))
            .collect()
    }

    /// From a map, sorted so equal states encode equally.
    pub fn from_map(m: &HashMap<(String, i32), (i64, u32)>) -> Marks {
        let mut v: Vec<_> = m
            .iter()
            .map(|((t, p), (o, i))| (t.clone(), *p, *o, *i))
            .collect();
        v.sort();
        Marks(v)
    }
}

/// The input partition a detection state belongs to, and where its checkpoints go.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Src {
    /// The topic detection reads (`<group>-events`, or an input topic in direct mode).
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// The changelog partition holding its checkpoints (several sources may share one;
    /// their keys are prefixed with the source).
    pub changelog: i32,
}

impl Src {
    fn key(&self, rest: &str) -> String {
        format!("{}/{}/{rest}", self.topic, self.partition)
    }
}

impl std::fmt::Display for Src {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// One partition's checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The topic detection reads.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Increments with every checkpoint of this partition, whoever writes it.
    pub epoch: u64,
    /// The next events-topic offset to process: everything before it is in `engine`.
    pub next_offset: i64,
    /// Deduplication marks of the origins of repartitioned events.
    pub marks: Marks,
    /// The changelog partition's end offset right after this checkpoint was written there;
    /// equal to the end found at restore time means the local file is current.
    pub changelog_end: i64,
    /// The detection engine's snapshot ([`crate::detect::Engine::snapshot_bytes`]).
    pub engine: Vec<u8>,
    /// The end offset of every alerts-topic partition once the alerts before this checkpoint
    /// were delivered: a restore reads the alerts topic from here to learn which alerts of
    /// the records after the checkpoint were already sent, and does not send them twice.
    /// Empty without an alerts topic (and in version-4 checkpoints).
    pub alerts_from: Vec<(i32, i64)>,
}

/// A version-4 checkpoint: the same without `alerts_from`.
#[derive(Serialize, Deserialize)]
struct CheckpointV4 {
    topic: String,
    partition: i32,
    epoch: u64,
    next_offset: i64,
    marks: Marks,
    changelog_end: i64,
    engine: Vec<u8>,
}

impl From<CheckpointV4> for Checkpoint {
    fn from(c: CheckpointV4) -> Checkpoint {
        Checkpoint {
            topic: c.topic,
            partition: c.partition,
            epoch: c.epoch,
            next_offset: c.next_offset,
            marks: c.marks,
            changelog_end: c.changelog_end,
            engine: c.engine,
            alerts_from: Vec::new(),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Meta {
    epoch: u64,
    chunks: u32,
    len: u64,
    hash: u64,
}

/// The local checkpoint file of a partition.
pub fn local_path(dir: &Path, topic: &str, partition: i32) -> PathBuf {
    dir.join(format!("{topic}-{partition}.ckpt"))
}

/// Encodes a checkpoint (header, body, checksum).
fn encode(c: &Checkpoint) -> Result<Vec<u8>, Error> {
    let body = postcard::to_stdvec(c).map_err(|e| Error::State {
        partition: c.partition,
        message: format!("cannot encode checkpoint: {e}"),
    })?;
    Ok(body)
}

/// Decodes a checkpoint body of version 5, or of version 4 (the changelog's bodies carry no
/// version, so a body that is not a whole version-5 checkpoint is tried as version 4).
fn decode(partition: i32, bytes: &[u8]) -> Result<Checkpoint, Error> {
    postcard::from_bytes::<Checkpoint>(bytes)
        .or_else(|e| {
            postcard::from_bytes::<CheckpointV4>(bytes)
                .map(Checkpoint::from)
                .map_err(|_| e)
        })
        .map_err(|e| Error::State {
            partition,
            message: format!("corrupt checkpoint: {e}"),
        })
}

/// Writes the local checkpoint file atomically.
pub fn write_local(dir: &Path, c: &Checkpoint) -> Result<(), Error> {
    let body = encode(c)?;
    let hash = xxhash_rust::xxh3::xxh3_64(&body).to_le_bytes();
    let path = local_path(dir, &c.topic, c.partition);
    crate::baseline::snapshot::write_atomic(&path, &[MAGIC, &body, &hash]).map_err(|e| {
        Error::State {
            partition: c.partition,
            message: format!("cannot write {}: {e}", path.display()),
        }
    })
}

/// Every local checkpoint in `dir` (for `baselines show|list` on a `run` state directory).
pub fn read_dir(dir: &Path) -> Result<Vec<Checkpoint>, Error> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::State {
        partition: -1,
        message: format!("cannot list {}: {e}", dir.display()),
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "ckpt"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|path| {
            let bytes = std::fs::read(path).map_err(|e| Error::State {
                partition: -1,
                message: format!("cannot read {}: {e}", path.display()),
            })?;
            parse_file(path, -1, &bytes)
        })
        .collect()
}

/// Checks a checkpoint file's header and checksum and decodes it.
fn parse_file(path: &Path, partition: i32, bytes: &[u8]) -> Result<Checkpoint, Error> {
    let bad = |m: &str| Error::State {
        partition,
        message: format!("{}: {m}", path.display()),
    };
    if bytes.len() < MAGIC.len() + 8 || !(bytes.starts_with(MAGIC) || bytes.starts_with(MAGIC_V4)) {
        return Err(bad(
            "not an nhiwatch checkpoint (or from an incompatible version)",
        ));
    }
    let (body, hash) = bytes[MAGIC.len()..].split_at(bytes.len() - MAGIC.len() - 8);
    if xxhash_rust::xxh3::xxh3_64(body).to_le_bytes() != hash {
        return Err(bad("checksum mismatch (torn or damaged file)"));
    }
    decode(partition, body)
}

/// Reads the local checkpoint file, `None` when absent. A damaged file is an error the
/// caller logs before falling back to the changelog.
pub fn read_local(dir: &Path, topic: &str, partition: i32) -> Result<Option<Checkpoint>, Error> {
    let path = local_path(dir, topic, partition);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::State {
                partition,
                message: format!("cannot read {}: {e}", path.display()),
            });
        }
    };
    let c = parse_file(&path, partition, &bytes)?;
    if c.partition != partition || c.topic != topic {
        return Err(Error::State {
            partition,
            message: format!("{}: belongs to another partition", path.display()),
        });
    }
    Ok(Some(c))
}

fn slot(epoch: u64) -> char {
    if epoch.is_multiple_of(2) { 'a' } else { 'b' }
}

/// Queues a checkpoint into the changelog partition (chunks first, `meta` last). The caller
/// flushes the producer and checks deliveries before relying on it.
pub fn send_changelog(
    producer: &Producer,
    topic: &str,
    src: &Src,
    c: &Checkpoint,
) -> Result<(), Error> {
    let body = encode(c)?;
    let s = slot(c.epoch);
    let chunks: Vec<&[u8]> = if body.is_empty() {
        vec![&body[..]]
    } else {
        body.chunks(CHUNK).collect()
    };
    for (i, chunk) in chunks.iter().enumerate() {
        let mut value = Vec::with_capacity(chunk.len() + 8);
        value.extend_from_slice(&c.epoch.to_le_bytes());
        value.extend_from_slice(chunk);
        let key = src.key(&format!("{s}/{i}"));
        super::send(
            producer,
            BaseRecord::to(topic)
                .partition(src.changelog)
                .key(key.as_bytes())
                .payload(&value),
        )?;
    }
    let meta = postcard::to_stdvec(&Meta {
        epoch: c.epoch,
        chunks: chunks.len() as u32,
        len: body.len() as u64,
        hash: xxhash_rust::xxh3::xxh3_64(&body),
    })
    .map_err(|e| Error::State {
        partition: c.partition,
        message: e.to_string(),
    })?;
    let key = src.key(&format!("{s}/meta"));
    super::send(
        producer,
        BaseRecord::to(topic)
            .partition(src.changelog)
            .key(key.as_bytes())
            .payload(&meta),
    )
}

/// A consumer outside the group's assignment, for changelog end offsets (created once per
/// stage) and for reading a changelog partition during a restore.
pub fn restore_client(k: &KafkaConfig, group: &str) -> Result<BaseConsumer, Error> {
    client::client_config(k, Role::Restore, &format!("{group}-restore"))
        .create()
        .map_err(|e| Error::Client {
            what: "restore consumer",
            message: e.to_string(),
        })
}

/// The end offset (high watermark) of a partition: of the changelog, or of the alerts topic.
pub fn end_offset(
    c: &BaseConsumer,
    topic: &str,
    partition: i32,
    timeout: Duration,
) -> Result<i64, Error> {
    let (_, high) =
        c.fetch_watermarks(topic, partition, timeout)
            .map_err(|e| Error::Unavailable {
                message: format!("{topic}/{partition}: {e}"),
            })?;
    Ok(high)
}

/// The end offset of every partition of `topic` (`partitions` of them).
pub fn topic_ends(
    c: &BaseConsumer,
    topic: &str,
    partitions: i32,
    timeout: Duration,
) -> Result<Vec<(i32, i64)>, Error> {
    (0..partitions)
        .map(|p| Ok((p, end_offset(c, topic, p, timeout)?)))
        .collect()
}

/// The ids (the `nhiwatch-alert-id` header) of the alerts on `topic` from the offsets in
/// `from` to the end as of now: what was sent after a checkpoint, so a restore does not send
/// it again. Reads to each partition's end offset and then until the topic has been quiet
/// for a moment (some Kafka-protocol brokers report the end per record batch, see
/// [`read_changelog`]).
pub fn sent_alert_ids(
    k: &KafkaConfig,
    group: &str,
    topic: &str,
    from: &[(i32, i64)],
    timeout: Duration,
) -> Result<HashSet<String>, Error> {
    let mut ids = HashSet::new();
    if from.is_empty() {
        return Ok(ids);
    }
    let c = restore_client(k, group)?;
    let client_error = |e: rdkafka::error::KafkaError| Error::Client {
        what: "alerts reader",
        message: e.to_string(),
    };
    let mut tpl = TopicPartitionList::new();
    let mut left: HashMap<i32, i64> = HashMap::new();
    for &(p, offset) in from {
        let end = end_offset(&c, topic, p, timeout)?;
        if end > offset {
            tpl.add_partition_offset(topic, p, rdkafka::Offset::Offset(offset))
                .map_err(client_error)?;
            left.insert(p, end);
        }
    }
    if left.is_empty() {
        return Ok(ids);
    }
    c.assign(&tpl).map_err(client_error)?;
    const QUIET: Duration = Duration::from_millis(300);
    let deadline = std::time::Instant::now() + timeout;
    let mut quiet_since: Option<std::time::Instant> = None;
    loop {
        if std::time::Instant::now() > deadline {
            return Err(Error::Unavailable {
                message: format!(
                    "alerts topic {topic}: {} partition(s) not read to their end before the timeout",
                    left.len()
                ),
            });
        }
        match c.poll(Duration::from_millis(100)) {
            None => {
                if left.is_empty() {
                    let since = *quiet_since.get_or_insert_with(std::time::Instant::now);
                    if since.elapsed() >= QUIET {
                        break;
                    }
                }
            }
            // The client reconnects by itself (a broker restarting, say); the deadline
            // bounds the wait.
            Some(Err(e)) => tracing::debug!(error = %e, topic, "alerts topic read: retrying"),
            Some(Ok(m)) => {
                quiet_since = None;
                if left
                    .get(&m.partition())
                    .is_some_and(|end| m.offset() + 1 >= *end)
                {
                    left.remove(&m.partition());
                }
                if let Some(h) = m.headers() {
                    use rdkafka::message::Headers as _;
                    for h in h.iter() {
                        if h.key == super::headers::ALERT_ID
                            && let Some(v) = h.value.and_then(|v| std::str::from_utf8(v).ok())
                        {
                            ids.insert(v.to_string());
                        }
                    }
                }
            }
        }
    }
    Ok(ids)
}

/// Reads the latest complete checkpoint from a changelog partition. Returns `None` when the
/// partition holds none.
///
/// How far to read is not taken from the partition's high watermark: some Kafka-protocol
/// brokers report it per record batch rather than per record (Tansu 0.6 does), which would
/// stop the read before the last `meta`. Instead a *fence* record with a unique value is
/// appended first, and the partition is read until that record: everything written before
/// the restore began is then known to be read.
pub fn read_changelog(
    k: &KafkaConfig,
    group: &str,
    producer: &Producer,
    deliveries: &super::client::Deliveries,
    topic: &str,
    src: &Src,
    timeout: Duration,
) -> Result<Option<Checkpoint>, Error> {
    let partition = src.changelog;
    let fence = format!(
        "{}-{}-{}",
        std::process::id(),
        src,
        crate::time::Timestamp::now().as_micros()
    );
    let fence_key = src.key(FENCE_KEY);
    let prefix = src.key("");
    super::send(
        producer,
        BaseRecord::to(topic)
            .partition(partition)
            .key(fence_key.as_bytes())
            .payload(fence.as_bytes()),
    )?;
    super::flush(producer, deliveries, deliveries.failed(), timeout)?;
    let c = restore_client(k, group)?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, rdkafka::Offset::Beginning)
        .map_err(|e| Error::Client {
            what: "restore consumer",
            message: e.to_string(),
        })?;
    c.assign(&tpl).map_err(|e| Error::Client {
        what: "restore consumer",
        message: e.to_string(),
    })?;
    let mut latest: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    let deadline = std::time::Instant::now() + timeout;
    let mut read = 0u64;
    loop {
        if std::time::Instant::now() > deadline {
            return Err(Error::Unavailable {
                message: format!(
                    "changelog {topic}/{partition}: {read} records read, fence not reached before the timeout"
                ),
            });
        }
        match c.poll(Duration::from_millis(200)) {
            None => {}
            // As above: retried until the deadline.
            Some(Err(e)) => {
                tracing::debug!(error = %e, topic, partition, "changelog read: retrying")
            }
            Some(Ok(m)) => {
                read += 1;
                let Some(key) = m.key() else { continue };
                let value = m.payload().unwrap_or_default();
                if key == fence_key.as_bytes() {
                    if value == fence.as_bytes() {
                        break;
                    }
                    continue;
                }
                // Other sources sharing this changelog partition are not ours.
                if let Some(rest) = key.strip_prefix(prefix.as_bytes()) {
                    latest.insert(rest.to_vec(), value.to_vec());
                }
            }
        }
    }
    let mut best: Option<Checkpoint> = None;
    for s in ['a', 'b'] {
        let Some(meta) = latest.get(format!("{s}/meta").as_bytes()) else {
            continue;
        };
        let Ok(meta) = postcard::from_bytes::<Meta>(meta) else {
            crate::telemetry::metrics::get().error(stage::STATE, "changelog_slot_unusable");
            tracing::warn!(topic, partition, slot = %s, "unreadable changelog meta; ignoring the slot");
            continue;
        };
        let mut body = Vec::with_capacity(meta.len as usize);
        let mut whole = true;
        for i in 0..meta.chunks {
            match latest.get(format!("{s}/{i}").as_bytes()) {
                Some(v) if v.len() >= 8 && v[..8] == meta.epoch.to_le_bytes() => {
                    body.extend_from_slice(&v[8..])
                }
                _ => {
                    whole = false;
                    break;
                }
            }
        }
        if !whole || body.len() as u64 != meta.len || xxhash_rust::xxh3::xxh3_64(&body) != meta.hash
        {
            crate::telemetry::metrics::get().error(stage::STATE, "changelog_slot_unusable");
            tracing::warn!(topic, partition, slot = %s, epoch = meta.epoch, "incomplete or damaged changelog snapshot (checksum); using the other slot");
            continue;
        }
        let cp = match decode(src.partition, &body) {
            Ok(cp) => cp,
            Err(e) => {
                crate::telemetry::metrics::get().error(stage::STATE, "changelog_slot_unusable");
                tracing::warn!(topic, partition, slot = %s, epoch = meta.epoch, error = %e, "undecodable changelog snapshot; using the other slot");
                continue;
            }
        };
        if best.as_ref().is_none_or(|b| cp.epoch > b.epoch) {
            best = Some(cp);
        }
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(alerts_from: Vec<(i32, i64)>) -> Checkpoint {
        Checkpoint {
            topic: "g-events".into(),
            partition: 2,
            epoch: 7,
            next_offset: 1234,
            marks: Marks(vec![("in".into(), 0, 99, 1)]),
            changelog_end: 55,
            engine: vec![1, 2, 3, 4, 5],
            alerts_from,
        }
    }

    #[test]
    fn a_checkpoint_keeps_the_alerts_offsets_and_a_version_4_one_is_still_read() {
        let c = sample(vec![(0, 10), (1, 0), (2, 31)]);
        let back = decode(2, &encode(&c).unwrap()).unwrap();
        assert_eq!(back.alerts_from, vec![(0, 10), (1, 0), (2, 31)]);
        assert_eq!((back.epoch, back.next_offset), (7, 1234));
        // The body a version-4 changelog record or local file holds.
        let v4 = CheckpointV4 {
            topic: c.topic.clone(),
            partition: c.partition,
            epoch: c.epoch,
            next_offset: c.next_offset,
            marks: c.marks.clone(),
            changelog_end: c.changelog_end,
            engine: c.engine.clone(),
        };
        let body = postcard::to_stdvec(&v4).unwrap();
        let back = decode(2, &body).unwrap();
        assert!(back.alerts_from.is_empty());
        assert_eq!(back.engine, c.engine);
        assert_eq!(back.marks, c.marks);
        // And as a local file with the version-4 header.
        let dir = tempfile::tempdir().unwrap();
        let hash = xxhash_rust::xxh3::xxh3_64(&body).to_le_bytes();
        let path = local_path(dir.path(), &c.topic, c.partition);
        std::fs::write(&path, [&MAGIC_V4[..], &body, &hash].concat()).unwrap();
        let read = read_local(dir.path(), &c.topic, c.partition)
            .unwrap()
            .unwrap();
        assert_eq!(read.next_offset, 1234);
        // A damaged body is still refused.
        assert!(decode(2, &body[..body.len() - 3]).is_err());
    }
}
