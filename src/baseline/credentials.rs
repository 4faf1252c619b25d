//! Live credentials: each minted credential's fingerprint bound to what it was minted for.
//! A later presentation is checked against the binding: another environment, another network
//! for a cloud session key, or a second presentation of a single-use token.

use std::sync::atomic::{AtomicI64, Ordering};

use dashmap::DashMap;
use serde::{Deserialize, Serialize};

use super::MapHasher;
use super::bound::Bound;

/// What a credential was minted for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// Hash of the environment it was minted for.
    pub env: Option<u64>,
    /// Mint time (Unix seconds).
    pub minted: i64,
    /// Expiry (Unix seconds).
    pub expires: i64,
    /// Must be presented once only (OIDC `jti`).
    pub single_use: bool,
    /// Hash of the network it was minted from.
    pub net: Option<u64>,
    /// Hash of the identity that minted it (32 bits).
    pub identity: u32,
    /// Times a mint record carried this credential.
    pub presentations: u16,
    /// Native id of the first mint record (evidence for reuse).
    pub first_event: String,
}

/// Lifetime assumed for a credential whose mint record gives none.
pub const DEFAULT_TTL_SECS: i64 = 12 * 3600;

/// Bindings of live credentials.
#[derive(Debug, Default)]
pub struct Credentials {
    map: DashMap<u128, Binding, MapHasher>,
    /// Bindings other `run` instances made (`<group>-bindings`): judged against like the
    /// others, but not saved in snapshots (the topic is read again at start), so a
    /// checkpoint does not carry the whole organisation's credentials.
    remote: DashMap<u128, Binding, MapHasher>,
    next_sweep: AtomicI64,
    /// `[state] max_credentials`; what was forgotten before expiry to keep it.
    bound: Bound,
}

impl Credentials {
    /// The binding of a credential (a copy).
    pub fn get(&self, key: u128) -> Option<Binding> {
        self.get_ref(key).map(|b| b.clone())
    }

    /// Calls `f` with every binding.
    pub fn for_each(&self, mut f: impl FnMut(&Binding)) {
        for e in self.map.iter().chain(self.remote.iter()) {
            f(e.value());
        }
    }

    /// The binding of a credential, borrowed: the map cannot be written while it is held.
    pub fn get_ref(&self, key: u128) -> Option<dashmap::mapref::one::Ref<'_, u128, Binding>> {
        match self.map.get(&key) {
            Some(b) => Some(b),
            None if self.remote.is_empty() => None,
            None => self.remote.get(&key),
        }
    }

    /// Records a mint: a new binding, or one more presentation of a known credential. Past
    /// the bound, the expired bindings go first, then the tenth expiring soonest (a
    /// credential that lives longest is the one whose reuse matters longest).
    ///
    /// True when the binding is new (the credential's first mint).
    pub fn bind(&self, key: u128, binding: Binding) -> bool {
        let now = binding.minted;
        // Minted under another instance first: this presentation counts on its binding.
        let binding = match self.remote.remove(&key) {
            Some((_, mut theirs)) => {
                theirs.presentations = theirs.presentations.saturating_add(1);
                self.map.insert(key, theirs);
                self.bound.added();
                return false;
            }
            None => binding,
        };
        let len = match self.map.entry(key) {
            dashmap::Entry::Occupied(mut o) => {
                let b = o.get_mut();
                b.presentations = b.presentations.saturating_add(1);
                return false;
            }
            dashmap::Entry::Vacant(v) => {
                v.insert(binding);
                self.bound.added()
            }
        };
        let max = self.max();
        if len > max {
            self.map.retain(|_, b| b.expires >= now);
            let n = match self.map.len() {
                live if live > max => live - max * 9 / 10,
                _ => 0,
            };
            self.bound.forget(&self.map, n, |b| b.expires);
        }
        true
    }

    /// Sets the most bindings kept (`[state] max_credentials`).
    pub fn set_max(&self, max: usize) {
        self.bound.set_max(max);
    }

    /// The most bindings kept.
    pub fn max(&self) -> usize {
        self.bound
            .max(super::StateConfig::default().max_credentials)
    }

    /// Bindings forgotten before expiry to stay within the bound, since start.
    pub fn evicted(&self) -> u64 {
        self.bound.evicted()
    }

    /// Drops bindings expired for longer than `grace_secs`; runs at most once per hour of
    /// event time.
    pub fn sweep(&self, now: i64, grace_secs: i64) {
        if now < self.next_sweep.load(Ordering::Relaxed) {
            return;
        }
        self.next_sweep.store(now + 3600, Ordering::Relaxed);
        self.map.retain(|_, b| b.expires + grace_secs >= now);
        self.remote.retain(|_, b| b.expires + grace_secs >= now);
        self.bound.recount(&self.map);
    }

    /// When the next sweep runs (saved with snapshots, so a restored process sweeps on the
    /// same schedule as one that never stopped).
    pub fn next_sweep(&self) -> i64 {
        self.next_sweep.load(Ordering::Relaxed)
    }

    /// Restores the sweep schedule.
    pub fn set_next_sweep(&self, at: i64) {
        self.next_sweep.store(at, Ordering::Relaxed);
    }

    /// Number of live bindings.
    pub fn len(&self) -> usize {
        self.map.len() + self.remote.len()
    }

    /// True when none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty() && self.remote.is_empty()
    }

    /// Live bindings minted by an identity (for `baselines show`).
    pub fn count_for(&self, identity: u32) -> usize {
        self.map.iter().filter(|b| b.identity == identity).count()
    }

    /// Every binding, sorted by key (snapshots).
    pub fn export(&self) -> Vec<(u128, Binding)> {
        let mut v: Vec<(u128, Binding)> = self
            .map
            .iter()
            .map(|e| (*e.key(), e.value().clone()))
            .collect();
        v.sort_unstable_by_key(|(k, _)| *k);
        v
    }

    /// Adds bindings another context holds (a partition's, restored into an instance that
    /// judges its partitions together): for a credential both know, the earlier mint is
    /// kept with the larger presentation count. Merging the same bindings twice changes
    /// nothing.
    pub fn merge(&self, entries: Vec<(u128, Binding)>) {
        for (k, v) in entries {
            // A binding this table now holds as its own is no longer another instance's.
            if !self.remote.is_empty() {
                self.remote.remove(&k);
            }
            match self.map.entry(k) {
                dashmap::Entry::Vacant(e) => {
                    e.insert(v);
                }
                dashmap::Entry::Occupied(mut e) => {
                    let b = e.get_mut();
                    let presentations = b.presentations.max(v.presentations);
                    if (v.minted, &v.first_event) < (b.minted, &b.first_event) {
                        *b = v;
                    }
                    b.presentations = presentations;
                }
            }
        }
        self.bound.recount(&self.map);
    }

    /// Adds bindings other instances made (see `remote`): a credential this table binds
    /// already keeps its own; for one both instances sent, the earlier mint is kept with the
    /// larger presentation count. Past the bound, the tenth expiring soonest go.
    pub fn merge_remote(&self, entries: Vec<(u128, Binding)>) {
        for (k, v) in entries {
            if self.map.contains_key(&k) {
                continue;
            }
            match self.remote.entry(k) {
                dashmap::Entry::Vacant(e) => {
                    e.insert(v);
                }
                dashmap::Entry::Occupied(mut e) => {
                    let b = e.get_mut();
                    let presentations = b.presentations.max(v.presentations);
                    if (v.minted, &v.first_event) < (b.minted, &b.first_event) {
                        *b = v;
                    }
                    b.presentations = presentations;
                }
            }
        }
        let max = self.max();
        if self.remote.len() > max {
            let mut expiries: Vec<i64> = self.remote.iter().map(|b| b.expires).collect();
            let last = expiries.len() - 1;
            let cut = (expiries.len() - max * 9 / 10).min(last);
            let (_, nth, _) = expiries.select_nth_unstable(cut);
            let nth = *nth;
            self.remote.retain(|_, b| b.expires > nth);
        }
    }

    /// Keeps only the other instances' bindings `keep` says (those minted by identities this
    /// instance now holds are forgotten: processing their records makes them again).
    pub fn forget_remote(&self, keep: impl Fn(&Binding) -> bool) {
        self.remote.retain(|_, b| keep(b));
    }

    /// Restores bindings (snapshots).
    pub fn import(&self, entries: Vec<(u128, Binding)>) {
        for (k, v) in entries {
            self.map.insert(k, v);
        }
        self.bound.recount(&self.map);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(minted: i64, ttl: i64) -> Binding {
        Binding {
            env: None,
            minted,
            expires: minted + ttl,
            single_use: false,
            net: None,
            identity: 1,
            presentations: 1,
            first_event: String::new(),
        }
    }

    #[test]
    fn merging_keeps_the_first_mint_and_the_most_presentations() {
        let a = Credentials::default();
        a.bind(1, binding(100, 60));
        a.bind(1, binding(100, 60));
        let b = Credentials::default();
        b.bind(
            1,
            Binding {
                identity: 2,
                ..binding(50, 60)
            },
        );
        b.bind(2, binding(70, 60));
        a.merge(b.export());
        let one = a.get(1).unwrap();
        assert_eq!((one.minted, one.identity, one.presentations), (50, 2, 2));
        assert!(a.get(2).is_some());
        let once = a.export();
        a.merge(b.export());
        assert_eq!(a.export(), once, "merging the same again changes nothing");
    }

    #[test]
    fn another_instances_bindings_are_judged_against_but_not_saved() {
        let a = Credentials::default();
        a.bind(1, binding(100, 60));
        a.merge_remote(vec![
            (
                1,
                Binding {
                    identity: 9,
                    ..binding(50, 60)
                },
            ),
            (
                2,
                Binding {
                    identity: 9,
                    first_event: "mint-2".into(),
                    ..binding(70, 60)
                },
            ),
        ]);
        assert_eq!(
            a.get(1).map(|b| b.identity),
            Some(1),
            "its own binding wins"
        );
        assert_eq!(a.get(2).map(|b| b.identity), Some(9), "judged against");
        assert_eq!(a.len(), 2);
        assert_eq!(
            a.export().len(),
            1,
            "not saved: the topic is read again at start"
        );
        // Presented here: one more presentation of the other instance's binding, now saved.
        let presented = Binding {
            first_event: "presented-2".into(),
            ..binding(80, 60)
        };
        assert!(!a.bind(2, presented), "not a new credential");
        let two = a.get(2).expect("bound");
        assert_eq!((two.identity, two.presentations, two.minted), (9, 2, 70));
        assert_eq!(a.export().len(), 2);
        // Another instance's bindings of identities this instance now holds are forgotten
        // (it makes them again itself).
        a.merge_remote(vec![(3, binding(90, 60))]);
        assert!(a.get(3).is_some());
        a.forget_remote(|b| b.identity != 1);
        assert!(a.get(3).is_none());
    }

    #[test]
    fn past_the_bound_expired_bindings_go_first_then_the_ones_expiring_soonest() {
        let c = Credentials::default();
        c.set_max(1_000);
        // 600 short-lived credentials, expired by the time the long-lived ones come.
        for k in 0..600u128 {
            c.bind(k, binding(0, 60));
        }
        // 1,100 long-lived ones minted an hour later, each living a second longer.
        for k in 0..1_100u128 {
            c.bind(1_000 + k, binding(3_600, 86_400 + k as i64));
        }
        assert!(c.len() <= 1_000, "{}", c.len());
        assert!(
            (0..600u128).all(|k| c.get(k).is_none()),
            "expired ones first"
        );
        // The one living longest is kept; the first long-lived ones made room.
        assert!(c.get(2_099).is_some());
        assert!(c.get(1_000).is_none() && c.get(1_100).is_none() && c.get(1_101).is_some());
        // At the 1,001st live one, the tenth expiring soonest (101) made room; only those
        // are counted (expired ones are not live credentials).
        assert_eq!(c.evicted(), 101);
        assert_eq!(c.len(), 999);
    }
}
