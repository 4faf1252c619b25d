//! Alerts held for a grace period: a finding about a value the fleet or the identity's peers
//! may still adopt (a runner pool, a policy) waits, and is dropped if they do, or if the
//! identity moved to a new runner for good; the fleet news and rollout values that decide it,
//! and the context engines of a partitioned replay share.

use super::*;

/// The fleet news, whether or not another engine sharing them panicked while holding them
/// (the list stays consistent: every change is a single push or retain).
pub(super) fn lock(news: &Mutex<Vec<News>>) -> MutexGuard<'_, Vec<News>> {
    news.lock().unwrap_or_else(|e| e.into_inner())
}

/// Records of an identity this soon after a held runner change belong to the same job.
pub(super) const LATER_JOB_SECS: i64 = 600;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Pending {
    /// As JSON inside the snapshot: the alert has optional fields and free-form evidence,
    /// which a non-self-describing format like postcard cannot read back (regression: a
    /// checkpoint taken while an alert was held could not be restored).
    #[serde(with = "alert_json")]
    pub(super) alert: Alert,
    pub(super) defer: Defer,
    /// Held once more because another identity took up the value meanwhile.
    pub(super) extended: bool,
    /// Whether the identity's runners are being replaced (see [`Defer::replace_secs`]).
    #[serde(default)]
    pub(super) replacing: Option<Replacing>,
}

/// What a held runner change has shown since it was held.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(super) struct Replacing {
    /// The identity (hashed).
    pub(super) identity: u32,
    /// The class of the values replaced.
    #[serde(default)]
    pub(super) class: u8,
    /// When the new runner was first used.
    pub(super) since: i64,
    /// The values of that class it used before.
    pub(super) old: Vec<u64>,
    /// A later job ran on a runner it used before.
    pub(super) old_seen: bool,
    /// Held once more because no later job came.
    pub(super) waited: bool,
    /// A later job ran on the new runner again (a runner that replaced others keeps taking
    /// the identity's jobs; one that ran a single job did not replace anything).
    #[serde(default)]
    pub(super) again: bool,
}

pub(super) mod alert_json {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::alert::Alert;

    pub fn serialize<S: Serializer>(a: &Alert, s: S) -> Result<S::Ok, S::Error> {
        let text = serde_json::to_string(a).map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Alert, D::Error> {
        let text = String::deserialize(d)?;
        serde_json::from_str(&text).map_err(serde::de::Error::custom)
    }
}

/// An identity getting a fleet-new value of a family (see [`Defer::family`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct News {
    pub(super) secs: i64,
    pub(super) family: u64,
    pub(super) identity: u32,
}

impl Engine {
    /// The day and the values the last processed event may have rolled out: an engine that
    /// shares its context with others passes them on, so their held alerts on those values
    /// are dropped at the same event as one engine's would be ([`Engine::drop_rollouts`]).
    pub fn rollout_values(&self) -> (Day, &[u64]) {
        (self.rollout.0, &self.rollout.1)
    }
}

impl Engine {
    /// Advances the engine's clock to an event another engine processes: held alerts due by
    /// then are released and housekeeping runs, as in one engine that saw every event.
    pub fn advance(&mut self, secs: i64, out: &mut Vec<Alert>) {
        if secs > self.clock {
            self.clock = secs;
            self.release(secs, out);
            self.prune(secs);
        }
    }
}

impl Engine {
    /// Judges against `other`'s cross-identity context from now on (fleet context, credential
    /// bindings, value texts, fleet news, the detectors' own cross-identity state): engines
    /// that each hold some of the identities then decide as one engine holding all of them
    /// would, given the same events in the same order, every engine
    /// [advanced](Engine::advance) to each event and each event's
    /// [rollouts](Engine::rollout_values) passed to the others. Peer groups count members:
    /// each engine keeps counting its own, and [`link_peers`] over all of them makes every
    /// read add them up. Call before any event is processed.
    pub fn share_context(&mut self, other: &mut Engine) {
        self.state.fleet = other.state.fleet.clone();
        self.state.credentials = other.state.credentials.clone();
        self.state.interner = other.state.interner.clone();
        self.news = other.news.clone();
        // Detectors that keep cross-identity state of their own (trust writers, automation
        // networks) judge against the other engine's too.
        for d in self.detectors.iter_mut() {
            if let Some(state) = other
                .detectors
                .iter()
                .find(|o| o.name() == d.name())
                .and_then(|o| o.shared_state())
            {
                d.use_shared_state(state);
            }
        }
        self.shared = true;
        self.borrowed = true;
        other.shared = true;
    }
}

impl Engine {
    /// Joins `host`'s cross-identity context after this engine was restored on its own (a
    /// partition assigned to an instance whose partitions judge together): what this
    /// engine's snapshot held of the fleet, the credential bindings, the value texts, the
    /// fleet news and the detectors' own cross-identity state is merged into the host's,
    /// then this engine judges against the host's ([`Engine::share_context`]). Merging is
    /// idempotent: a snapshot holds the context its instance shared when it was taken, so
    /// two snapshots of one instance hold much the same, and the same entry merged twice
    /// counts once. Peer groups count members, which do not merge so: each engine keeps
    /// counting its own, and [`link_peers`] makes every count read add them up (call it over
    /// every engine judging together, after any joins or leaves).
    pub fn join_context(&mut self, host: &mut Engine) {
        host.state.fleet.merge(self.state.fleet.export());
        host.state
            .credentials
            .merge(self.state.credentials.export());
        // A fresh host (the instance's root) sweeps expired bindings on the partitions'
        // schedule, as one engine that never stopped would.
        if host.state.credentials.next_sweep() == 0 {
            host.state
                .credentials
                .set_next_sweep(self.state.credentials.next_sweep());
        }
        for (h, t) in self.state.interner.export() {
            host.state.interner.intern(h, &t);
        }
        {
            // The host's news in their order, then those it lacks (none when both were saved
            // by one instance).
            let mine = lock(&self.news).clone();
            let mut theirs = lock(&host.news);
            for n in mine {
                if !theirs.contains(&n) {
                    theirs.push(n);
                }
            }
        }
        // Detectors whose state is about one partition's identities only (the flood guard's
        // count of newcomers) keep their own.
        for d in self.detectors.iter().filter(|d| d.shared_state().is_some()) {
            if let (Some(bytes), Some(h)) = (
                d.save(),
                host.detectors.iter().find(|h| h.name() == d.name()),
            ) && !h.merge(&bytes)
            {
                tracing::warn!(
                    detector = d.name(),
                    "a partition's detector state could not be merged; it is not shared"
                );
            }
        }
        self.share_context(host);
    }
}

/// Forgets value texts none of `engines` (which share one context) refers to any more: the
/// shared form of the daily pruning an engine on its own does.
pub fn prune_shared_interner(engines: &[&Engine]) {
    let states: Vec<&Baselines> = engines.iter().map(|e| &e.state).collect();
    Baselines::prune_shared_interner(&states);
}

impl Engine {
    /// Whether the shared context's sizes are counted with this engine's in its census (one
    /// of the engines sharing a context counts them).
    pub fn count_context(&mut self, yes: bool) {
        self.borrowed = !yes;
    }
}

/// Makes `engines` (which judge together: [`Engine::join_context`]) read their peer groups'
/// counts summed over all of them; each keeps counting its own members (what its snapshot
/// saves, so a restore counts nobody twice). An engine alone reads its own again.
pub fn link_peers(engines: &[&Engine]) {
    let all: Vec<Arc<baseline::peers::Peers>> =
        engines.iter().map(|e| e.state.peers.clone()).collect();
    for e in engines {
        e.state.peers.set_siblings(all.clone());
    }
}

impl Engine {
    /// Judges credentials against `other`'s bindings from now on (only them: the `run`
    /// instances each judge their own partitions together and share their bindings with all
    /// others through `<group>-bindings`).
    pub fn share_bindings(&mut self, other: &Engine) {
        self.state.credentials = other.state.credentials.clone();
    }
}

impl Engine {
    /// Collects the credential bindings this engine makes from now on (a credential's first
    /// mint), for [`Engine::take_bindings`].
    pub fn collect_bindings(&mut self) {
        self.outbox.get_or_insert_with(Vec::new);
    }

    /// Moves the bindings collected since the last call to `out`.
    pub fn take_bindings(&mut self, out: &mut Vec<(u128, Binding)>) {
        if let Some(b) = &mut self.outbox {
            out.append(b);
        }
    }
}

impl Engine {
    /// Whether this engine and `other` judge against one shared context.
    pub fn judges_with(&self, other: &Engine) -> bool {
        Arc::ptr_eq(&self.state.fleet, &other.state.fleet)
    }
}

impl Engine {
    /// Whether the engine judges against a context shared with other engines.
    pub fn shares_context(&self) -> bool {
        self.shared
    }
}

impl Engine {
    /// Whether the shared context this engine judges against is counted with another engine
    /// (sizes in summaries and metrics are counted once, with the engine that owns it).
    pub fn borrows_context(&self) -> bool {
        self.borrowed
    }
}

impl Engine {
    /// Releases every held alert (end of input).
    pub fn flush(&mut self, out: &mut Vec<Alert>) {
        self.release(i64::MAX, out);
    }
}

impl Engine {
    /// A later job of an identity whose runner change is held: on runners new to it only
    /// (a replacement goes on), or back on one it used before (the new runner was added:
    /// judged as an ordinary fleet hold from now on).
    pub(super) fn watch_replacements(&mut self, event: &Event, view: &View, secs: i64) {
        let who = hash_identity(&event.identity);
        let Some(keys) = self.replacing.get(&who) else {
            return;
        };
        let mut rekey = Vec::new();
        for k in keys {
            let Some(p) = self.pending.get_mut(k) else {
                continue;
            };
            let Some(r) = &mut p.replacing else { continue };
            let ids: smallvec::SmallVec<[u64; 4]> = if r.class == Class::Network as u8 {
                view.net.iter().map(|n| n.hash).collect()
            } else {
                view.attrs
                    .iter()
                    .filter(|a| a.class as u8 == r.class)
                    .map(|a| a.hash)
                    .collect()
            };
            if ids.is_empty() {
                continue;
            }
            // The same job's other records are not a later job.
            if secs < r.since.saturating_add(LATER_JOB_SECS) || r.old_seen {
                continue;
            }
            if ids.iter().any(|h| r.old.contains(h)) {
                r.old_seen = true;
                let at = r.since.saturating_add(p.defer.grace_secs).max(secs);
                if at < k.0 {
                    rekey.push((*k, (at, k.1)));
                }
            } else {
                r.again |= ids.contains(&p.defer.value);
            }
        }
        for (from, to) in rekey {
            if let Some(p) = self.pending.remove(&from) {
                self.unindex(&from, &p);
                self.index(to, &p);
                self.pending.insert(to, p);
            }
        }
    }
}

impl Engine {
    pub(super) fn index(&mut self, k: (i64, u64), p: &Pending) {
        self.by_value.entry(p.defer.value).or_default().push(k);
        if let Some(r) = &p.replacing {
            self.replacing.entry(r.identity).or_default().push(k);
        }
    }
}

impl Engine {
    pub(super) fn unindex(&mut self, k: &(i64, u64), p: &Pending) {
        if let Some(v) = self.by_value.get_mut(&p.defer.value) {
            v.retain(|x| x != k);
            if v.is_empty() {
                self.by_value.remove(&p.defer.value);
            }
        }
        if let Some(r) = &p.replacing
            && let Some(v) = self.replacing.get_mut(&r.identity)
        {
            v.retain(|x| x != k);
            if v.is_empty() {
                self.replacing.remove(&r.identity);
            }
        }
    }
}

impl Engine {
    pub(super) fn release(&mut self, now: i64, out: &mut Vec<Alert>) {
        while let Some(entry) = self.pending.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (at, p) = entry.remove_entry();
            self.unindex(&at, &p);
            // A runner change: the identity's later jobs ran on new runners only (for runner
            // ids: while other identities moved to new ones too): its runners were replaced.
            if let Some(r) = &p.replacing
                && r.again
                && !r.old_seen
                && (r.class != Class::RunnerId as u8
                    || self.family_news(p.defer.family, r.since - p.defer.grace_secs, at.0)
                        >= p.defer.min_identities)
            {
                self.count_dropped(&p.alert.detector, true);
                continue;
            }
            // No later job on it yet to tell a replacement from an addition: wait once more.
            if let Some(r) = &p.replacing
                && !r.again
                && !r.old_seen
                && !r.waited
            {
                let next = (at.0.saturating_add(p.defer.replace_secs), at.1);
                let mut p = p;
                if let Some(r) = &mut p.replacing {
                    r.waited = true;
                }
                self.index(next, &p);
                self.pending.insert(next, p);
                continue;
            }
            // A runner id that now serves other pipelines too is a shared runner.
            if self.shared_runner_min(&p).is_some() {
                let since = baseline::day_of_secs(at.0).saturating_sub(p.defer.window_days);
                if self.state.fleet.identities_since(p.defer.value, since) >= self.adoption_min(&p)
                {
                    self.count_dropped(&p.alert.detector, false);
                    continue;
                }
            }
            // Another identity took the value up meanwhile: a rollout may be under way that
            // reaches the threshold only slowly (a re-registered runner its projects pick up
            // as their pipelines run). Hold it once more.
            if !p.extended {
                let day = baseline::day_of_secs(at.0);
                let since = day.saturating_sub(p.defer.window_days);
                if self.state.fleet.identities_since(p.defer.value, since) >= 2 {
                    let next = (at.0.saturating_add(p.defer.grace_secs), at.1);
                    let p = Pending {
                        extended: true,
                        ..p
                    };
                    self.index(next, &p);
                    self.pending.insert(next, p);
                    continue;
                }
            }
            // A runner id's family counts only together with a replacement (above).
            if p.defer.family != 0
                && p.replacing
                    .as_ref()
                    .is_none_or(|r| r.class != Class::RunnerId as u8)
            {
                // Identities that got new values of this family around the same time.
                let from = at.0.saturating_sub(p.defer.grace_secs.saturating_mul(2));
                if self.family_news(p.defer.family, from, at.0) >= p.defer.min_identities {
                    self.count_dropped(&p.alert.detector, false);
                    continue;
                }
            }
            *self
                .stats
                .alerts
                .entry((p.alert.detector.clone(), p.alert.severity))
                .or_default() += 1;
            if let Some(c) = self.counters_of(&p.alert.detector) {
                c.released.inc();
            }
            out.push(p.alert);
        }
    }
}

impl Engine {
    /// Identities that must use a held alert's value for it to be the fleet's: a GitLab
    /// runner id is the fleet's once it serves `shared_runner_identities` identities (a
    /// group or instance runner), anything else at the detector's rollout threshold.
    fn adoption_min(&self, p: &Pending) -> u32 {
        self.shared_runner_min(p)
            .map_or(p.defer.min_identities, |s| s.min(p.defer.min_identities))
    }

    /// `shared_runner_identities` when the held alert is on a GitLab runner id.
    fn shared_runner_min(&self, p: &Pending) -> Option<u32> {
        (self.shared_runner_ids != 0 && p.defer.replace_class == Class::RunnerId as u8)
            .then_some(self.shared_runner_ids)
    }

    /// Distinct identities that got new values of a family between two times.
    pub(super) fn family_news(&self, family: u64, from: i64, to: i64) -> u32 {
        let mut who: Vec<u32> = lock(&self.news)
            .iter()
            .filter(|n| n.family == family && n.secs >= from && n.secs <= to)
            .map(|n| n.identity)
            .collect();
        who.sort_unstable();
        who.dedup();
        who.len() as u32
    }
}

impl Engine {
    /// Drops held alerts on values the fleet (or a peer group) has now adopted: this
    /// engine's event's values, or (shared context) another engine's.
    pub fn drop_rollouts(&mut self, day: Day, values: &[u64]) {
        if self.by_value.is_empty() {
            return;
        }
        let mut adopted = Vec::new();
        for &v in values {
            if let Some(keys) = self.by_value.get(&v) {
                for k in keys {
                    if let Some(p) = self.pending.get(k) {
                        let since = day.saturating_sub(p.defer.window_days);
                        if self.state.fleet.identities_since(v, since) >= self.adoption_min(p) {
                            adopted.push(*k);
                        }
                    }
                }
            }
        }
        for k in adopted {
            if let Some(p) = self.pending.remove(&k) {
                self.unindex(&k, &p);
                self.count_dropped(&p.alert.detector, false);
            }
        }
    }
}

impl Engine {
    /// Counts a held alert dropped: as a fleet rollout, or as the identity's move to its new
    /// runner for good.
    pub(super) fn count_dropped(&mut self, detector: &str, replaced: bool) {
        let by = if replaced {
            &mut self.stats.replacements
        } else {
            &mut self.stats.rollouts
        };
        *by.entry(detector.to_string()).or_default() += 1;
        if let Some(c) = self.counters_of(detector) {
            if replaced {
                c.replacement.inc()
            } else {
                c.rollout.inc()
            }
        }
    }
}

impl Engine {
    /// Alerts held in their fleet grace period, not yet released.
    pub fn held(&self) -> usize {
        self.pending.len()
    }
}
