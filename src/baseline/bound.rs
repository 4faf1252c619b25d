//! A bound on the entries of a shared map (credentials, fleet values): its maximum, a count
//! of the entries kept in step with inserts and removals (so the per-event check is one
//! atomic load, not a pass over the map's shards), what was forgotten to keep it, and the
//! forgetting itself.

use std::hash::Hash;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use dashmap::DashMap;

use super::MapHasher;

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Bound {
    /// Entries kept at most (0: the default given to [`Bound::max`]).
    max: AtomicUsize,
    /// Entries in the map.
    len: AtomicUsize,
    /// Entries forgotten to stay within `max`.
    evicted: AtomicU64,
}

impl Bound {
    /// Sets the most entries kept.
    pub fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Relaxed);
    }

    /// The most entries kept (`default` until one is set).
    pub fn max(&self, default: usize) -> usize {
        match self.max.load(Ordering::Relaxed) {
            0 => default,
            m => m,
        }
    }

    /// Entries forgotten to stay within the bound, since start.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Entries in the map.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Counts one new entry; returns the entries now in the map.
    pub fn added(&self) -> usize {
        self.len.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Counts the entries again (after a removal that did not go through [`Bound::forget`]).
    pub fn recount<K: Eq + Hash, V>(&self, map: &DashMap<K, V, MapHasher>) {
        self.len.store(map.len(), Ordering::Relaxed);
    }

    /// Forgets the `n` entries of `map` ranked lowest by `(rank, key)`: ties go by key, so
    /// every run over the same records forgets the same. Counted as evicted.
    pub fn forget<K, V, R>(&self, map: &DashMap<K, V, MapHasher>, n: usize, rank: impl Fn(&V) -> R)
    where
        K: Copy + Ord + Hash,
        R: Copy + Ord,
    {
        if n > 0 {
            let mut order: Vec<(R, K)> = map.iter().map(|e| (rank(e.value()), *e.key())).collect();
            if !order.is_empty() {
                let n = n.min(order.len());
                let (_, cut, _) = order.select_nth_unstable(n - 1);
                let cut = *cut;
                drop(order);
                let before = map.len();
                map.retain(|k, v| (rank(v), *k) > cut);
                self.evicted
                    .fetch_add((before - map.len()) as u64, Ordering::Relaxed);
            }
        }
        self.recount(map);
    }
}
