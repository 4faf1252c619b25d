//! What the engine keeps and counts: its own runtime state saved beside the baselines
//! (clock, suppression, held alerts, news), snapshots and restores, housekeeping (forgetting),
//! the summary counters and metric handles, and the census for the gauges.

use super::*;

/// The engine's own state, saved with the baselines.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Runtime {
    pub(super) clock: i64,
    pub(super) seq: u64,
    pub(super) suppress: Vec<(SuppressKey, i64)>,
    pub(super) pending: Vec<((i64, u64), Pending)>,
    #[serde(default)]
    pub(super) news: Vec<News>,
    /// When housekeeping runs next: restored, so a restarted engine forgets on the same
    /// schedule as one that never stopped (regression: after `kill -9` and restore the state
    /// drifted from a clean run's).
    pub(super) next_prune: i64,
    /// Fingerprint of the peer grouping the saved peer counts were made with.
    pub(super) peer_rules: u64,
    /// Detector-private state, by detector name (`identity_flood`'s hourly counts).
    pub(super) detectors: Vec<(String, Vec<u8>)>,
}

/// The engine state as saved before detectors kept private state (read for compatibility:
/// a checkpoint or snapshot written by the previous version restores).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RuntimeV4 {
    clock: i64,
    seq: u64,
    suppress: Vec<(SuppressKey, i64)>,
    pending: Vec<((i64, u64), Pending)>,
    news: Vec<News>,
    next_prune: i64,
    peer_rules: u64,
}

impl From<RuntimeV4> for Runtime {
    fn from(r: RuntimeV4) -> Runtime {
        Runtime {
            clock: r.clock,
            seq: r.seq,
            suppress: r.suppress,
            pending: r.pending,
            news: r.news,
            next_prune: r.next_prune,
            peer_rules: r.peer_rules,
            detectors: Vec::new(),
        }
    }
}

/// Counters for the summary.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Mints and uses inspected.
    pub inspected: u64,
    /// Events that are neither mints nor uses.
    pub skipped: u64,
    /// Alerts emitted, by detector and severity.
    pub alerts: BTreeMap<(String, Severity), u64>,
    /// Alerts suppressed as repeats, by detector.
    pub suppressed: BTreeMap<String, u64>,
    /// Alerts dropped because the fleet adopted the value (rollouts), by detector.
    pub rollouts: BTreeMap<String, u64>,
    /// Alerts dropped because the identity moved to the new runner for good, by detector.
    pub replacements: BTreeMap<String, u64>,
    /// Findings dropped as routine among the identity's peers, by detector.
    pub peer_routine: BTreeMap<String, u64>,
    /// Findings on allowlisted identities.
    pub allowlisted: u64,
    /// Identities seen for the first time (not read back from the spill file).
    pub new_identities: u64,
}

impl Stats {
    /// Total alerts emitted.
    pub fn alerts_total(&self) -> u64 {
        self.alerts.values().sum()
    }

    /// Adds another engine's counters (a partitioned replay).
    pub fn merge(&mut self, o: &Stats) {
        self.inspected += o.inspected;
        self.skipped += o.skipped;
        for (k, v) in &o.alerts {
            *self.alerts.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.suppressed {
            *self.suppressed.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.rollouts {
            *self.rollouts.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.replacements {
            *self.replacements.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.peer_routine {
            *self.peer_routine.entry(k.clone()).or_default() += v;
        }
        self.allowlisted += o.allowlisted;
        self.new_identities += o.new_identities;
    }

    /// Alerts emitted by one detector.
    pub fn alerts_of(&self, detector: &str) -> u64 {
        self.alerts
            .iter()
            .filter(|((d, _), _)| d == detector)
            .map(|(_, n)| n)
            .sum()
    }
}

/// Handles of `nhiwatch_detector_findings_total` and `nhiwatch_detector_held_total` for one
/// detector, resolved once.
pub(super) struct FindingCounters {
    pub(super) alerted: prometheus::IntCounter,
    pub(super) held: prometheus::IntCounter,
    pub(super) suppressed: prometheus::IntCounter,
    pub(super) allowlisted: prometheus::IntCounter,
    pub(super) peer_routine: prometheus::IntCounter,
    pub(super) released: prometheus::IntCounter,
    pub(super) rollout: prometheus::IntCounter,
    pub(super) replacement: prometheus::IntCounter,
}

impl FindingCounters {
    pub(super) fn new(detector: &str) -> Self {
        let m = crate::telemetry::metrics::get();
        let f = |o: &str| m.findings.with_label_values(&[detector, o]);
        let h = |o: &str| m.held_outcomes.with_label_values(&[detector, o]);
        FindingCounters {
            alerted: f("alerted"),
            held: f("held"),
            suppressed: f("suppressed"),
            allowlisted: f("allowlisted"),
            peer_routine: f("peer_routine"),
            released: h("released"),
            rollout: h("fleet_rollout"),
            replacement: h("runner_replacement"),
        }
    }
}

impl Engine {
    pub(super) fn counters_of(&self, detector: &str) -> Option<&FindingCounters> {
        self.detectors
            .iter()
            .position(|d| d.name() == detector)
            .map(|i| &self.counters[i])
    }
}

impl Engine {
    /// Forgets suppression records older than every window, once a day of event time.
    pub(super) fn prune(&mut self, now: i64) {
        if now < self.next_prune {
            return;
        }
        self.next_prune = now + 86_400;
        let longest = self
            .detectors
            .iter()
            .map(|d| d.spec().suppression.window.as_secs() as i64)
            .max()
            .unwrap_or(0);
        self.suppress.retain(|_, t| t.saturating_add(longest) > now);
        // News matter for two grace periods; none is longer than the fleet window.
        lock(&self.news).retain(|n| n.secs.saturating_add(8 * 86_400) > now);
        let horizon = baseline::day_of_secs(now).saturating_sub(
            self.learn
                .runner_forget_days
                .max(self.learn.scope_forget_days),
        );
        self.state.fleet.forget(horizon);
        self.state.peers.forget(horizon);
        if !self.shared {
            self.state.prune_interner();
        }
    }
}

impl Engine {
    /// The engine state to save with the baselines.
    pub fn runtime(&self) -> Runtime {
        let mut suppress: Vec<(SuppressKey, i64)> =
            self.suppress.iter().map(|(k, v)| (*k, *v)).collect();
        suppress.sort_unstable_by_key(|(k, _)| (k.detector, k.identity, k.reason));
        Runtime {
            clock: self.clock,
            seq: self.seq,
            suppress,
            pending: self.pending.iter().map(|(k, p)| (*k, p.clone())).collect(),
            news: lock(&self.news).clone(),
            next_prune: self.next_prune,
            peer_rules: self.peer_rules.fingerprint(),
            detectors: self
                .detectors
                .iter()
                .filter_map(|d| d.save().map(|b| (d.name().to_string(), b)))
                .collect(),
        }
    }
}

impl Engine {
    /// Counts every identity into its peer groups again, from its baseline (after restoring
    /// a snapshot taken with other grouping rules).
    pub(super) fn rebuild_peers(&mut self) {
        let peers = &self.state.peers;
        peers.clear();
        let day = baseline::day_of_secs(self.clock.max(0));
        let runner_since = day.saturating_sub(self.learn.runner_forget_days);
        let scope_since = day.saturating_sub(self.learn.scope_forget_days);
        let env_since = day.saturating_sub(self.learn.env_forget_days);
        for mut e in self.state.identities.iter_mut() {
            let (ids, names) = self.peer_rules.candidates(e.key());
            let b = e.value_mut();
            b.peers = ids;
            peers.join(&ids, &names);
            b.env_mask = baseline::peers::env_mask(&b.envs, b.noenv_last, env_since);
            peers.move_mask(&ids, 0, b.env_mask);
            for x in b.attrs.recent(runner_since).filter(|x| x.peer) {
                peers.adopt(&ids, x.hash, x.last);
            }
            for x in b.scopes.recent(scope_since).filter(|x| x.peer) {
                peers.adopt(&ids, x.hash, x.last);
            }
            peers.rebuild_windows(&ids, b.peer_windows);
        }
    }
}

impl Engine {
    /// Restores engine state saved by [`Engine::runtime`].
    pub fn restore(&mut self, rt: Runtime) {
        self.clock = rt.clock;
        self.seq = rt.seq;
        for (name, bytes) in &rt.detectors {
            if let Some(d) = self.detectors.iter().find(|d| d.name() == name)
                && !d.load(bytes)
            {
                tracing::warn!(detector = %name, "saved detector state unreadable; it starts afresh");
            }
        }
        self.suppress = rt.suppress.into_iter().collect();
        *lock(&self.news) = rt.news;
        self.next_prune = rt.next_prune;
        self.by_value.clear();
        self.replacing.clear();
        self.pending.clear();
        for (k, p) in rt.pending {
            self.index(k, &p);
            self.pending.insert(k, p);
        }
        if rt.peer_rules == self.peer_rules.fingerprint() {
            for mut e in self.state.identities.iter_mut() {
                let (ids, _) = self.peer_rules.candidates(e.key());
                e.value_mut().peers = ids;
            }
        } else {
            // The grouping changed: count the identities into the new groups.
            self.rebuild_peers();
        }
        // A snapshot holds every identity; what is past the bound goes back to disk.
        if self.state.identities.len() > self.max_identities {
            let (lost, err) = self.state.evict(self.max_identities, "");
            if let Some(e) = err {
                tracing::warn!(error = %e, identities = lost, "restored identities could not be spilled and are forgotten");
            }
        }
    }
}

impl Engine {
    /// Saves baselines and engine state to `dir`.
    pub fn save(&self, dir: &Path) -> Result<std::path::PathBuf, baseline::snapshot::Error> {
        baseline::snapshot::save(dir, &self.state, &self.runtime())
    }
}

impl Engine {
    /// Calls `f` with every identity's baseline, in memory or spilled to disk.
    pub fn each_identity(&self, mut f: impl FnMut(&str, &IdentityBaseline)) {
        for e in self.state.identities.iter() {
            f(e.key(), e.value());
        }
        self.state.spill().for_each(|k, b, _| f(&k, &b));
    }

    /// Identities in memory and spilled.
    pub fn identity_count(&self) -> usize {
        self.state.identities.len() + self.state.spill().len()
    }
}

impl Engine {
    /// Counts what the engine holds, for the metrics: one pass over the identities.
    pub fn census(&self) -> Census {
        let (spilled, spill_capacity) = {
            let s = self.state.spill();
            (s.len(), s.capacity())
        };
        let mut armed = vec![0u64; self.detectors.len()];
        let mut bytes = 0usize;
        for e in self.state.identities.iter() {
            bytes += baseline::baseline_bytes(e.key(), e.value());
            for (i, d) in self.detectors.iter().enumerate() {
                armed[i] += u64::from(is_armed(d.as_ref(), e.value()));
            }
        }
        Census {
            identities: self.state.identities.len() as u64,
            armed: self
                .detectors
                .iter()
                .zip(armed)
                .map(|(d, n)| (d.name(), n))
                .collect(),
            baseline_bytes: if self.borrowed {
                bytes as u64
            } else {
                (bytes + self.state.peers.heap_bytes()) as u64
            },
            credentials: if self.borrowed {
                0
            } else {
                self.state.credentials.len() as u64
            },
            held: self.pending.len() as u64,
            spilled: spilled as u64,
            max: [
                self.max_identities as u64,
                spill_capacity as u64,
                if self.borrowed {
                    0
                } else {
                    self.state.credentials.max() as u64
                },
                if self.borrowed {
                    0
                } else {
                    self.state.fleet.max() as u64
                },
            ],
            fleet_values: if self.borrowed {
                0
            } else {
                self.state.fleet.len() as u64
            },
        }
    }
}

impl Engine {
    /// Baselines and engine state as bytes (a checkpoint's body).
    pub fn snapshot_bytes(&self) -> Result<Vec<u8>, postcard::Error> {
        baseline::snapshot::encode(&self.state, &self.runtime())
    }
}

impl Engine {
    /// Restores baselines and engine state from [`Engine::snapshot_bytes`] output; the engine
    /// should be fresh.
    pub fn restore_bytes(&mut self, bytes: &[u8]) -> Result<(), postcard::Error> {
        let rt = match baseline::snapshot::decode::<Runtime>(bytes, &self.state) {
            Ok(rt) => rt,
            Err(e) => match baseline::snapshot::decode::<RuntimeV4>(bytes, &self.state) {
                Ok(old) => old.into(),
                Err(_) => return Err(e),
            },
        };
        self.restore(rt);
        Ok(())
    }
}

impl Engine {
    /// Loads baselines and engine state from `dir`; false when there is no snapshot yet.
    pub fn load(&mut self, dir: &Path) -> Result<bool, baseline::snapshot::Error> {
        let loaded = match baseline::snapshot::load::<Runtime>(dir, &self.state) {
            Err(e @ baseline::snapshot::Error::Format { .. }) => {
                match baseline::snapshot::load::<RuntimeV4>(dir, &self.state) {
                    Ok(old) => old.map(Runtime::from),
                    Err(_) => return Err(e),
                }
            }
            other => other?,
        };
        match loaded {
            Some(rt) => {
                self.restore(rt);
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// Makes room for `key` in a map of detector state bounded to `max` entries: when it is full
/// and `key` is new, the eighth of the entries seen longest ago (by `last`) are forgotten.
pub(super) fn forget_oldest_eighth<V>(
    map: &mut std::collections::HashMap<u64, V>,
    key: u64,
    max: usize,
    last: impl Fn(&V) -> crate::baseline::Day,
) {
    if map.len() >= max && !map.contains_key(&key) {
        let mut days: Vec<crate::baseline::Day> = map.values().map(&last).collect();
        let cut = days.len() / 8;
        let (_, nth, _) = days.select_nth_unstable(cut);
        let nth = *nth;
        map.retain(|_, v| last(v) > nth);
    }
}
