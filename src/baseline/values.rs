//! A small set of observed values (runner attributes, networks, scopes, environments) with
//! first and last day seen and a count, kept as a sorted-by-nothing `Vec` of hashes: per
//! identity these sets hold a handful of entries, where a linear scan beats any map and costs
//! 16 bytes an entry. Values unseen for `forget_after` days are dropped; when the set is full
//! the least recently seen entry makes room.

use serde::{Deserialize, Serialize};

use super::Day;

/// One observed value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Stable hash of the value (see [`super::hash_value`]).
    pub hash: u64,
    /// Day first seen.
    pub first: Day,
    /// Day last seen.
    pub last: Day,
    /// Times seen (saturating).
    pub count: u16,
    /// Per-set extra (a scope's privilege rank, an environment's tier).
    pub aux: u8,
    /// Counted among its peer groups' adopters (on a use that raised no finding).
    pub peer: bool,
}

/// A bounded set of observed values.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValueSet {
    entries: Vec<Entry>,
}

impl ValueSet {
    /// The entry for a value, if present and not forgotten.
    pub fn get(&self, hash: u64) -> Option<&Entry> {
        self.entries.iter().find(|e| e.hash == hash)
    }

    /// Whether the value was seen on or after `since`.
    pub fn seen_since(&self, hash: u64, since: Day) -> bool {
        self.get(hash).is_some_and(|e| e.last >= since)
    }

    /// Entries seen on or after `since`.
    pub fn recent(&self, since: Day) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(move |e| e.last >= since)
    }

    /// Number of entries seen on or after `since`.
    pub fn count_recent(&self, since: Day) -> usize {
        self.recent(since).count()
    }

    /// All entries.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Records a sighting. Returns true when the value was new (or forgotten).
    pub fn observe(
        &mut self,
        hash: u64,
        day: Day,
        aux: u8,
        cap: usize,
        forget_before: Day,
    ) -> bool {
        if let Some(e) = self.entries.iter_mut().find(|e| e.hash == hash) {
            let was_forgotten = e.last < forget_before;
            if was_forgotten {
                e.first = day;
                e.count = 0;
            }
            e.last = e.last.max(day);
            e.count = e.count.saturating_add(1);
            e.aux = aux;
            return was_forgotten;
        }
        if self.entries.len() >= cap {
            self.entries.retain(|e| e.last >= forget_before);
        }
        if self.entries.len() >= cap
            && let Some(oldest) = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| (e.last, e.count))
                .map(|(i, _)| i)
        {
            self.entries.swap_remove(oldest);
        }
        self.entries.push(Entry {
            hash,
            first: day,
            last: day,
            count: 1,
            aux,
            peer: false,
        });
        true
    }

    /// Marks a value as counted by the peer groups; true the first time.
    pub fn mark_peer(&mut self, hash: u64) -> bool {
        match self.entries.iter_mut().find(|e| e.hash == hash) {
            Some(e) if !e.peer => {
                e.peer = true;
                true
            }
            _ => false,
        }
    }

    /// Drops entries last seen before `forget_before`.
    pub fn forget(&mut self, forget_before: Day) {
        self.entries.retain(|e| e.last >= forget_before);
    }

    /// Heap bytes held (for memory accounting).
    pub fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Entry>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observe_counts_forgets_and_evicts_the_least_recent() {
        let mut s = ValueSet::default();
        assert!(s.observe(1, 10, 0, 3, 0));
        assert!(!s.observe(1, 11, 0, 3, 0));
        assert_eq!(
            s.get(1).map(|e| (e.first, e.last, e.count)),
            Some((10, 11, 2))
        );
        assert!(s.observe(2, 12, 0, 3, 0));
        assert!(s.observe(3, 13, 0, 3, 0));
        // Full: the least recently seen (value 1, day 11) makes room.
        assert!(s.observe(4, 14, 0, 3, 0));
        assert!(s.get(1).is_none());
        assert_eq!(s.entries().len(), 3);
        // A value unseen since before the forgetting horizon counts as new again.
        assert!(s.observe(2, 40, 0, 3, 30));
        assert_eq!(s.get(2).map(|e| (e.first, e.count)), Some((40, 1)));
        assert!(s.seen_since(2, 35));
        assert!(!s.seen_since(3, 35));
        s.forget(35);
        assert_eq!(s.entries().len(), 1);
    }
}
