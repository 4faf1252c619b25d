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

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::message::OwnedMessage;

use super::Key;

/// Records buffered in production order.
pub(super) struct Merge {
    /// One queue per partition records were read from, and whether it is assigned to this
    /// instance (a record of each assigned one is waited for). A handful of partitions: a
    /// list, found without building a key for every record.
    queues: Vec<Queue>,
    len: usize,
    /// How long the next record waits for a partition that has nothing buffered.
    wait: Duration,
}

struct Queue {
    key: Key,
    owned: bool,
    records: VecDeque<Buffered>,
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
            queues: Vec::new(),
            len: 0,
            wait,
        }
    }

    /// The index of a partition's queue, made (not assigned) when it has none.
    fn index(&mut self, topic: &str, partition: i32) -> usize {
        match self
            .queues
            .iter()
            .position(|q| q.key.1 == partition && q.key.0 == topic)
        {
            Some(i) => i,
            None => {
                self.queues.push(Queue {
                    key: (topic.to_string(), partition),
                    owned: false,
                    records: VecDeque::new(),
                });
                self.queues.len() - 1
            }
        }
    }

    /// Buffers a record.
    pub(super) fn push(&mut self, msg: OwnedMessage) {
        let (origin, arrival) = super::origin_of(&msg);
        let (offset, index) = origin.map_or((msg.offset(), 0), |o| (o.2, o.3));
        let order = (arrival, offset, index, msg.partition());
        let i = self.index(msg.topic(), msg.partition());
        self.queues[i].records.push_back(Buffered {
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
            let i = self.index(&k.0, k.1);
            self.queues[i].owned = true;
        }
    }

    /// Partitions revoked or lost: no longer waited for, and what was buffered of them is
    /// dropped (their new owner reads it).
    pub(super) fn revoked(&mut self, keys: &[Key]) {
        for q in self.queues.iter_mut().filter(|q| keys.contains(&q.key)) {
            q.owned = false;
        }
        for k in keys {
            self.purge(k);
        }
    }

    /// Drops what is buffered of a partition and forgets it (it is read again from an
    /// earlier offset, or not by this instance).
    pub(super) fn purge(&mut self, key: &Key) {
        if let Some(i) = self.queues.iter().position(|q| q.key == *key) {
            let q = self.queues.swap_remove(i);
            self.len -= q.records.len();
            if q.owned {
                // Still assigned (a seek): waited for again.
                self.queues.push(Queue {
                    records: VecDeque::new(),
                    ..q
                });
            }
        }
    }

    /// The next record to process, if one is due.
    pub(super) fn pop(&mut self) -> Option<OwnedMessage> {
        let head = |q: &Queue| q.records.front().map(|b| b.order);
        // The smallest head of the assigned partitions (of any, when none of them has one:
        // records of a partition not or no longer assigned are taken as they come).
        let best = |owned: bool| {
            (0..self.queues.len())
                .filter(|i| !owned || self.queues[*i].owned)
                .filter_map(|i| head(&self.queues[i]).map(|o| (o, i)))
                .min()
                .map(|(_, i)| i)
        };
        let i = best(true).or_else(|| best(false))?;
        let all = self
            .queues
            .iter()
            .all(|q| !q.owned || !q.records.is_empty());
        let q = &mut self.queues[i];
        if !all && q.records.front()?.at.elapsed() < self.wait {
            return None;
        }
        let b = q.records.pop_front()?;
        if q.records.is_empty() && !q.owned {
            self.queues.swap_remove(i);
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
