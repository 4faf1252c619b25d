//! Fleet-wide context: for each runner attribute, network and scope, which identities used it
//! recently. A value that appears across many identities at once is a rollout (a new runner
//! pool, a subnet migration, a policy granted to every service) and is judged once at fleet
//! level instead of being flagged once per identity.

use dashmap::DashMap;
use serde::{Deserialize, Serialize};

use super::bound::Bound;
use super::{Day, MapHasher};

/// The fleet key under which identities *taking up* a value are counted (as opposed to
/// using it): a value many identities have long used is rolled out to more of them when
/// several take it up at once.
pub fn adoption_key(value: u64) -> u64 {
    value.rotate_left(29) ^ 0x6164_6f70_7469_6f6e
}

/// Distinct identities remembered per value. Fleet thresholds must not exceed it.
pub const SLOTS: usize = 12;

/// Who used a value recently.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetEntry {
    /// Day first seen anywhere.
    pub first: Day,
    /// Day last seen anywhere.
    pub last: Day,
    /// Identities that used it (32-bit identity hash, last day), most recent kept.
    recent: Vec<(u32, Day)>,
}

impl FleetEntry {
    /// Identities that used the value since `since`.
    pub fn identities_since(&self, since: Day) -> u32 {
        self.recent.iter().filter(|(_, d)| *d >= since).count() as u32
    }
}

/// Fleet-wide value usage.
#[derive(Debug, Default)]
pub struct Fleet {
    values: DashMap<u64, FleetEntry, MapHasher>,
    /// `[state] max_fleet_values`; what was forgotten early to keep it.
    bound: Bound,
}

impl Fleet {
    /// Records that `identity` used `value` on `day`. Past the bound, the tenth of the values
    /// seen longest ago are forgotten first (ties by value, so every run forgets the same).
    pub fn observe(&self, value: u64, identity: u32, day: Day) {
        let max = self.max();
        if self.bound.len() >= max && !self.values.contains_key(&value) {
            let n = self.values.len().saturating_sub(max - max / 10);
            self.bound.forget(&self.values, n, |e| e.last);
        }
        let mut e = self.values.entry(value).or_insert_with(|| {
            self.bound.added();
            FleetEntry {
                first: day,
                last: day,
                recent: Vec::new(),
            }
        });
        e.last = e.last.max(day);
        if let Some(slot) = e.recent.iter_mut().find(|(id, _)| *id == identity) {
            slot.1 = slot.1.max(day);
        } else if e.recent.len() < SLOTS {
            e.recent.push((identity, day));
        } else if let Some(oldest) = e.recent.iter_mut().min_by_key(|(_, d)| *d) {
            *oldest = (identity, day);
        }
    }

    /// Sets the most values kept (`[state] max_fleet_values`).
    pub fn set_max(&self, max: usize) {
        self.bound.set_max(max);
    }

    /// The most values kept.
    pub fn max(&self) -> usize {
        self.bound
            .max(super::StateConfig::default().max_fleet_values)
    }

    /// Values forgotten early to stay within the bound, since start.
    pub fn evicted(&self) -> u64 {
        self.bound.evicted()
    }

    /// Identities that used `value` since `since`.
    pub fn identities_since(&self, value: u64, since: Day) -> u32 {
        self.values
            .get(&value)
            .map_or(0, |e| e.identities_since(since))
    }

    /// First day the value was seen anywhere.
    pub fn first_seen(&self, value: u64) -> Option<Day> {
        self.values.get(&value).map(|e| e.first)
    }

    /// Number of values tracked.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True when nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Drops values unseen since `before`.
    pub fn forget(&self, before: Day) {
        self.values.retain(|_, e| e.last >= before);
        self.bound.recount(&self.values);
    }

    /// Every entry, sorted by value (snapshots).
    pub fn export(&self) -> Vec<(u64, FleetEntry)> {
        let mut v: Vec<(u64, FleetEntry)> = self
            .values
            .iter()
            .map(|e| (*e.key(), e.value().clone()))
            .collect();
        v.sort_unstable_by_key(|(k, _)| *k);
        v
    }

    /// Adds what another context saw (a partition's, restored into an instance that judges
    /// its partitions together): the identities of both, most recent kept, first day the
    /// earliest and last day the latest. Merging the same entries twice changes nothing.
    pub fn merge(&self, entries: Vec<(u64, FleetEntry)>) {
        for (k, v) in entries {
            match self.values.entry(k) {
                dashmap::Entry::Vacant(e) => {
                    e.insert(v);
                }
                dashmap::Entry::Occupied(mut e) => {
                    let e = e.get_mut();
                    e.first = e.first.min(v.first);
                    e.last = e.last.max(v.last);
                    for (id, day) in v.recent {
                        if let Some(slot) = e.recent.iter_mut().find(|(i, _)| *i == id) {
                            slot.1 = slot.1.max(day);
                        } else {
                            e.recent.push((id, day));
                        }
                    }
                    if e.recent.len() > SLOTS {
                        // Most recent first; ties by identity, so every merge keeps the same.
                        e.recent
                            .sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                        e.recent.truncate(SLOTS);
                    }
                }
            }
        }
        self.bound.recount(&self.values);
    }

    /// Restores entries (snapshots).
    pub fn import(&self, entries: Vec<(u64, FleetEntry)>) {
        for (k, v) in entries {
            self.values.insert(k, v);
        }
        self.bound.recount(&self.values);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_distinct_recent_identities() {
        let f = Fleet::default();
        f.observe(7, 1, 10);
        f.observe(7, 1, 11);
        f.observe(7, 2, 11);
        assert_eq!(f.identities_since(7, 10), 2);
        assert_eq!(f.identities_since(7, 12), 0);
        for id in 3..40 {
            f.observe(7, id, 20);
        }
        assert_eq!(f.identities_since(7, 20), SLOTS as u32, "bounded");
        assert_eq!(f.first_seen(7), Some(10));
        f.forget(21);
        assert!(f.is_empty());
    }

    #[test]
    fn merging_adds_the_other_identities_once() {
        let a = Fleet::default();
        a.observe(7, 1, 10);
        a.observe(7, 2, 12);
        let b = Fleet::default();
        b.observe(7, 2, 14);
        b.observe(7, 3, 9);
        b.observe(8, 3, 9);
        a.merge(b.export());
        assert_eq!(a.identities_since(7, 0), 3);
        assert_eq!(
            a.identities_since(7, 13),
            1,
            "identity 2's latest day is kept"
        );
        assert_eq!(
            a.first_seen(7),
            Some(10),
            "the earlier first day (b's is 14)"
        );
        assert_eq!(a.first_seen(8), Some(9));
        let once = a.export();
        a.merge(b.export());
        assert_eq!(a.export(), once, "merging the same again changes nothing");
        for id in 10..30 {
            b.observe(7, id, 20);
        }
        a.merge(b.export());
        assert_eq!(a.identities_since(7, 0), SLOTS as u32, "bounded");
        assert_eq!(
            a.identities_since(7, 20),
            SLOTS as u32,
            "the most recent kept"
        );
    }

    #[test]
    fn past_the_bound_the_values_seen_longest_ago_are_forgotten() {
        let f = Fleet::default();
        f.set_max(100);
        for v in 0..100u64 {
            f.observe(v, 1, 10 + (v / 10) as Day);
        }
        f.observe(5, 2, 30); // seen again: kept, though first among the oldest
        f.observe(1_000, 1, 30);
        assert_eq!(f.len(), 91, "ten of 100 forgotten for the new one");
        assert_eq!(f.evicted(), 10);
        assert_eq!(f.identities_since(5, 30), 1);
        assert_eq!(f.first_seen(0), None, "the oldest went");
        assert_eq!(f.first_seen(10), None);
        assert_eq!(f.first_seen(11), Some(11));
        assert_eq!(f.first_seen(1_000), Some(30));
    }
}
