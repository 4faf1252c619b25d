//! The order in which the partitions one instance judges together are processed.
//!
//! Their engines share one context and one clock (see [`Engine::join_context`]), so the order
//! of events *across* partitions matters as it does in one engine: a rollout seen before a
//! held alert's deadline drops it, after it the alert goes out. The consumer, though, hands
//! over whole fetches of one partition at a time (a backlog of one partition can run days of
//! event time ahead of another's). Records are therefore buffered per partition and taken in
//! the order ingest produced them (its arrival stamp, then the input offset): the smallest
//! head goes next once every partition held here has a record buffered, or once it has
//! waited `kafka.merge_wait_ms` (200 ms by default; a partition with nothing to read must not
//! hold the others back). This is Kafka Streams' `max.task.idle.ms`, for the same reason.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::message::OwnedMessage;

use super::Key;

/// Records buffered in production order.
pub(super) struct Merge {
    queues: HashMap<Key, VecDeque<Buffered>>,
    /// Partitions assigned to this instance (a record of each is waited for).
    owned: Vec<Key>,
    len: usize,
    /// How long the next record waits for a partition that has nothing buffered.
    wait: Duration,
}

struct Buffered {
    order: (u64, i64, u32, i32),
    at: Instant,
    msg: OwnedMessage,
}

impl Merge {
    /// An empty buffer whose records wait at most `wait` for a quiet partition.
    pub(super) fn new(wait: Duration) -> Merge {
        Merge {
            queues: HashMap::new(),
            owned: Vec::new(),
            len: 0,
            wait,
        }
    }

    /// Buffers a record.
    pub(super) fn push(&mut self, msg: OwnedMessage) {
        let (origin, arrival) = super::origin_of(&msg);
        let (offset, index) = origin.map_or((msg.offset(), 0), |o| (o.2, o.3));
        let order = (arrival, offset, index, msg.partition());
        let key = (msg.topic().to_string(), msg.partition());
        self.queues.entry(key).or_default().push_back(Buffered {
            order,
            at: Instant::now(),
            msg,
        });
        self.len += 1;
    }

    /// Records buffered.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Partitions assigned (added to those held).
    pub(super) fn assigned(&mut self, keys: &[Key]) {
        for k in keys {
            if !self.owned.contains(k) {
                self.owned.push(k.clone());
            }
        }
    }

    /// Partitions revoked or lost: no longer waited for, and what was buffered of them is
    /// dropped (their new owner reads it).
    pub(super) fn revoked(&mut self, keys: &[Key]) {
        self.owned.retain(|k| !keys.contains(k));
        for k in keys {
            self.purge(k);
        }
    }

    /// Drops what is buffered of a partition (it is read again from an earlier offset).
    pub(super) fn purge(&mut self, key: &Key) {
        if let Some(q) = self.queues.remove(key) {
            self.len -= q.len();
        }
    }

    /// The next record to process, if one is due.
    pub(super) fn pop(&mut self) -> Option<OwnedMessage> {
        let mut best: Option<(&Key, &Buffered)> = None;
        let mut all = true;
        for k in &self.owned {
            match self.queues.get(k).and_then(|q| q.front()) {
                Some(b) => {
                    if best.is_none_or(|(_, x)| b.order < x.order) {
                        best = Some((k, b));
                    }
                }
                None => all = false,
            }
        }
        // Records of a partition not (or no longer) listed as assigned: taken as they come.
        if best.is_none() {
            best = self
                .queues
                .iter()
                .filter_map(|(k, q)| q.front().map(|b| (k, b)))
                .min_by_key(|(_, b)| b.order);
        }
        let (key, b) = best?;
        if !all && b.at.elapsed() < self.wait {
            return None;
        }
        let key = key.clone();
        let q = self.queues.get_mut(&key)?;
        let b = q.pop_front()?;
        if q.is_empty() {
            self.queues.remove(&key);
        }
        self.len -= 1;
        Some(b.msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::Timestamp;
    use rdkafka::message::{Header, OwnedHeaders};

    fn msg(partition: i32, offset: i64, arrival: u64) -> OwnedMessage {
        let arrival = arrival.to_string();
        let origin = format!("in/0/{offset}/0");
        let h = OwnedHeaders::new()
            .insert(Header {
                key: crate::kafka::headers::ARRIVAL,
                value: Some(arrival.as_str()),
            })
            .insert(Header {
                key: crate::kafka::headers::ORIGIN,
                value: Some(origin.as_str()),
            });
        OwnedMessage::new(
            Some(b"{}".to_vec()),
            None,
            "events".into(),
            Timestamp::NotAvailable,
            partition,
            offset,
            Some(h),
        )
    }

    fn key(p: i32) -> Key {
        ("events".to_string(), p)
    }

    #[test]
    fn records_of_several_partitions_come_out_in_the_order_ingest_produced_them() {
        const WAIT: Duration = Duration::from_millis(200);
        let mut m = Merge::new(WAIT);
        m.assigned(&[key(0), key(1)]);
        // Partition 0's whole backlog is fetched before partition 1's.
        m.push(msg(0, 0, 10));
        m.push(msg(0, 2, 30));
        m.push(msg(0, 3, 40));
        assert!(m.pop().is_none(), "partition 1 has nothing yet: wait");
        m.push(msg(1, 1, 20));
        m.push(msg(1, 4, 50));
        let order: Vec<(i32, i64)> = std::iter::from_fn(|| m.pop())
            .map(|x| (x.partition(), x.offset()))
            .collect();
        assert_eq!(order, [(0, 0), (1, 1), (0, 2), (0, 3)]);
        assert_eq!(m.len(), 1, "partition 1's last waits for partition 0");
        std::thread::sleep(WAIT);
        assert_eq!(m.pop().map(|x| x.offset()), Some(4), "not for ever");
        // A revoked partition is no longer waited for, and its records go.
        m.push(msg(0, 5, 60));
        m.push(msg(1, 6, 70));
        m.revoked(&[key(0)]);
        assert_eq!(m.pop().map(|x| x.offset()), Some(6));
        assert_eq!(m.len(), 0);
    }
}
