//! Detection: the [`Detector`] trait, the four detectors, and the [`Engine`] that runs them.
//!
//! For each mint or use, the engine derives the event's [`View`] once, lets every detector
//! inspect the identity's baseline *as it was before the event*, and only then learns from the
//! event, so an anomaly never hides itself. Findings become [`Alert`]s after the identity
//! allowlist and suppression (one alert per detector, identity and reason per window). A
//! finding about a value that may be a fleet-wide rollout (a new runner pool, a new policy) is
//! held for a grace period and dropped if enough identities adopt the value meanwhile.
//!
//! Everything reads time from events, so replaying the same input gives the same alerts.

mod cross_env_reuse;
mod dormant_reactivated;
mod first_seen;
pub mod glob;
mod held;
mod human_bound_credential;
#[cfg(test)]
mod hygiene_tests;
mod identity_flood;
pub mod inventory;
mod long_lived_credential;
mod new_runner;
mod new_trust;
mod off_hours_mint;
pub mod peers;
pub mod privileges;
pub mod report;
mod scope_escalation;
pub mod spec;
mod state;
#[cfg(test)]
mod tests;
mod unapproved_ref;
pub mod zones;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::alert::Alert;
use crate::baseline::{
    self, Baselines, Binding, Class, DEFAULT_TTL_SECS, Day, IdentityBaseline, LearnParams, View,
    hash_identity, hash_value,
};
use crate::event::{Action, Event, Outcome};
pub use crate::telemetry::Census;
use glob::GlobSet;
use peers::{PeerCx, PeerRules};
use privileges::Privileges;
pub use spec::{DetectorsConfig, Severity, Spec, SpecError};
use zones::Zones;

use held::*;
pub use held::{link_peers, prune_shared_interner};
use state::*;
pub use state::{Runtime, Stats};
pub use zones::{IdentityZone, TimeConfig};

/// What a detector concluded about one event.
#[derive(Clone, Debug)]
pub struct Finding {
    /// How bad.
    pub severity: Severity,
    /// Suppression key: the same (detector, identity, reason) alerts once per window.
    pub reason_key: u64,
    /// The reason, short.
    pub reason: String,
    /// One sentence for the analyst.
    pub summary: String,
    /// The facts behind it.
    pub evidence: Map<String, Value>,
    /// Hold the alert while the fleet may still adopt this value.
    pub defer: Option<Defer>,
    /// New to the identity but usual among its peers: routine for its role (dropped, or
    /// alerted with the `[peers] routine` severity).
    pub routine: bool,
}

/// A fleet-level judgement pending on a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Defer {
    /// The value (runner attribute, network, scope hash).
    pub value: u64,
    /// Identities that make it a rollout.
    pub min_identities: u32,
    /// Within this many days.
    pub window_days: u16,
    /// How long to wait, seconds.
    pub grace_secs: i64,
    /// Values of one family (runner ids; networks of one /8) that several identities get
    /// for the first time within the grace period are a rollout too, even when each got a
    /// different value (a pool of new runners). 0: judge the value alone.
    #[serde(default)]
    pub family: u64,
    /// A runner value new to an identity that already runs on others of its class (a runner
    /// id, hosted or self-hosted, a network): held this long (seconds; 0: not judged so) to
    /// see whether the identity's runners were replaced. Its later jobs all on values new to
    /// it, the new one among them, make a move (for runner ids only together with other
    /// identities getting new ones of the `family` at the same time: a fleet
    /// re-registration); a job back on a value it used before makes the new one an addition
    /// (what a rogue runner or a stolen credential is) and ends the wait.
    #[serde(default)]
    pub replace_secs: i64,
    /// What was replaced: the [`Class`] of the value (runner id, runner kind, network).
    #[serde(default)]
    pub replace_class: u8,
}

/// What a detector sees of one event.
pub struct Cx<'a> {
    /// The event.
    pub event: &'a Event,
    /// Facts derived from it.
    pub view: &'a View,
    /// The identity's baseline before this event.
    pub baseline: &'a IdentityBaseline,
    /// Whether the baseline passed this detector's learning period.
    pub armed: bool,
    /// Fleet, credentials and strings.
    pub state: &'a Baselines,
    /// The binding of the event's credential, when it was minted earlier.
    pub binding: Option<&'a Binding>,
    /// The identity's time zone.
    pub zone: &'a str,
    /// The identity's peer group, when the detector judges against peers.
    pub peers: Option<PeerCx<'a>>,
    /// The identity was never seen before (not read back from disk either).
    pub new_identity: bool,
}

/// A detector: inspects events against baselines.
pub trait Detector: Send + Sync {
    /// Its name (the spec file's stem).
    fn name(&self) -> &'static str;
    /// Its specification.
    fn spec(&self) -> &Spec;
    /// The events of a baseline that count towards this detector's learning period.
    fn learned(&self, b: &IdentityBaseline) -> u32;
    /// The finding on this event, if any.
    fn inspect(&self, cx: &Cx<'_>) -> Option<Finding>;
    /// Learns detector-private state (the shared baselines learn in the engine).
    fn learn(&self, _cx: &Cx<'_>) {}
    /// Detector-private state to save with the engine's, if it keeps any that alerts depend
    /// on.
    fn save(&self) -> Option<Vec<u8>> {
        None
    }
    /// Restores what [`Detector::save`] gave; false when the bytes are not its state.
    fn load(&self, _bytes: &[u8]) -> bool {
        false
    }
    /// The finding on a trust change (`Action::Trust`: no baseline is learned from it), if
    /// any; it also learns from the change.
    fn inspect_trust(&self, _event: &Event) -> Option<Finding> {
        None
    }
    /// The detector's cross-identity state, when it keeps any (see
    /// [`Engine::share_context`]).
    fn shared_state(&self) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        None
    }
    /// Judges against another engine's detector's cross-identity state from now on.
    fn use_shared_state(&mut self, _state: Arc<dyn std::any::Any + Send + Sync>) {}
    /// Adds cross-identity state another engine saved ([`Detector::save`]) to this one's
    /// (see [`Engine::join_context`]); merging the same bytes twice changes nothing. False
    /// when the bytes are not its state.
    fn merge(&self, _bytes: &[u8]) -> bool {
        false
    }
}

/// Setting up detection failed.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A specification is invalid.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A time zone is unknown.
    #[error(transparent)]
    Zone(#[from] zones::ZoneError),
    /// An unknown detector was named.
    #[error("unknown detector {0:?} (known: {known})", known = NAMES.join(", "))]
    Unknown(String),
}

/// Every detector nhiwatch knows, in output order: the four behavioural detectors, the five
/// hygiene findings, the flood guard and the naive comparison rule.
pub const NAMES: [&str; 11] = [
    "off_hours_mint",
    "new_runner",
    "scope_escalation",
    "cross_env_reuse",
    "dormant_reactivated",
    "long_lived_credential",
    "human_bound_credential",
    "new_trust",
    "unapproved_ref",
    "identity_flood",
    "first_seen",
];

/// The hygiene findings (issue 20): posture and trust, not behaviour.
pub const HYGIENE: [&str; 5] = [
    "dormant_reactivated",
    "long_lived_credential",
    "human_bound_credential",
    "new_trust",
    "unapproved_ref",
];

/// Builds a detector from its specification.
fn build(name: &str, spec: Spec) -> Result<Box<dyn Detector>, SetupError> {
    Ok(match name {
        "off_hours_mint" => Box::new(off_hours_mint::OffHoursMint::new(spec)?),
        "new_runner" => Box::new(new_runner::NewRunner::new(spec)?),
        "scope_escalation" => Box::new(scope_escalation::ScopeEscalation::new(spec)?),
        "cross_env_reuse" => Box::new(cross_env_reuse::CrossEnvReuse::new(spec)?),
        "identity_flood" => Box::new(identity_flood::IdentityFlood::new(spec)?),
        "dormant_reactivated" => Box::new(dormant_reactivated::DormantReactivated::new(spec)?),
        "long_lived_credential" => Box::new(long_lived_credential::LongLivedCredential::new(spec)?),
        "human_bound_credential" => {
            Box::new(human_bound_credential::HumanBoundCredential::new(spec)?)
        }
        "new_trust" => Box::new(new_trust::NewTrust::new(spec)?),
        "unapproved_ref" => Box::new(unapproved_ref::UnapprovedRef::new(spec)?),
        "first_seen" => Box::new(first_seen::FirstSeen::new(spec)?),
        other => return Err(SetupError::Unknown(other.to_string())),
    })
}

/// Loads every specification (built-in, or overridden from `dir`).
pub fn load_specs(dir: Option<&Path>) -> Result<Vec<Spec>, SpecError> {
    NAMES
        .iter()
        .map(|n| Spec::parse(n, &spec::text_of(n, dir)?))
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct SuppressKey {
    detector: u8,
    identity: u64,
    reason: u64,
}

/// Runs the detectors over events, in event-time order, keeping all learned state.
pub struct Engine {
    detectors: Vec<Box<dyn Detector>>,
    allow: Vec<GlobSet>,
    privileges: Privileges,
    zones: Zones,
    peer_rules: PeerRules,
    learn: LearnParams,
    binding_grace_secs: i64,
    /// Identities a GitLab runner id serves that make it a shared runner (`new_runner`'s
    /// `shared_runner_identities`; 0 without that detector).
    shared_runner_ids: u32,
    /// Everything learned.
    pub state: Baselines,
    /// Identities kept in memory (`[state] max_identities`).
    max_identities: usize,
    clock: i64,
    seq: u64,
    suppress: HashMap<SuppressKey, i64>,
    pending: BTreeMap<(i64, u64), Pending>,
    by_value: HashMap<u64, Vec<(i64, u64)>>,
    /// Held runner changes that may be replacements, by identity (hashed).
    replacing: HashMap<u32, Vec<(i64, u64)>>,
    /// Identities that got fleet-new values, by family: cross-identity, so shared like the
    /// fleet context (see [`Engine::share_context`]).
    news: Arc<Mutex<Vec<News>>>,
    /// Judging against a context shared with other engines: interned texts are then not
    /// pruned by one engine's identities alone.
    shared: bool,
    /// Another engine's context is judged against (its sizes are counted there, not here).
    borrowed: bool,
    /// The values the last event may have rolled out (see [`Engine::rollout_values`]).
    rollout: (Day, Vec<u64>),
    /// New credential bindings to publish to other instances (`run` with shared bindings;
    /// `None`: not collected).
    outbox: Option<Vec<(u128, Binding)>>,
    next_prune: i64,
    /// Counters.
    pub stats: Stats,
    /// Metric handles, by detector index.
    counters: Vec<FindingCounters>,
}

impl Engine {
    /// An engine from its configuration sections (`[detectors]`, `[time]`). `only` names the
    /// detectors to run (overriding the configuration and the specifications' `enabled`).
    pub fn from_sections(
        detectors: &DetectorsConfig,
        time: &TimeConfig,
        bounds: &baseline::StateConfig,
        only: Option<&[String]>,
    ) -> Result<Engine, SetupError> {
        let dir = detectors.dir.as_deref();
        let specs = load_specs(dir)?;
        let privileges = Privileges::parse(&spec::text_of("privileges", dir)?)?;
        let peer_rules = PeerRules::parse(&spec::text_of("peers", dir)?)?;
        let zones = Zones::new(time)?;
        let wanted: Option<Vec<String>> = only
            .map(|o| o.to_vec())
            .or_else(|| detectors.enabled.clone());
        if let Some(w) = &wanted {
            for n in w {
                if !NAMES.contains(&n.as_str()) {
                    return Err(SetupError::Unknown(n.clone()));
                }
            }
        }
        let chosen: Vec<Spec> = specs
            .into_iter()
            .filter(|s| match &wanted {
                Some(w) => w.contains(&s.detector.name),
                None => s.detector.enabled,
            })
            .collect();
        let mut engine = Engine::new(chosen, privileges, zones, peer_rules)?;
        engine.set_bounds(bounds);
        Ok(engine)
    }

    /// Bounds the engine's state (`[state]`): identities in memory and spilled, credentials.
    pub fn set_bounds(&mut self, bounds: &baseline::StateConfig) {
        self.max_identities = bounds.max_identities.max(1);
        *self.state.spill() = baseline::Spill::new(bounds);
        self.state.credentials.set_max(bounds.max_credentials);
        self.state.fleet.set_max(bounds.max_fleet_values);
    }

    /// An engine with the built-in specifications of the given detectors, UTC, no mappings.
    pub fn with_defaults(names: &[&str]) -> Result<Engine, SetupError> {
        let specs = load_specs(None)?
            .into_iter()
            .filter(|s| names.contains(&s.detector.name.as_str()))
            .collect();
        Engine::new(
            specs,
            Privileges::parse(spec::EMBEDDED_PRIVILEGES)?,
            Zones::utc(),
            PeerRules::parse(spec::EMBEDDED_PEERS)?,
        )
    }

    fn new(
        specs: Vec<Spec>,
        privileges: Privileges,
        zones: Zones,
        peer_rules: PeerRules,
    ) -> Result<Engine, SetupError> {
        let mut learn = LearnParams::default();
        let mut binding_grace_secs = 3600;
        let mut shared_runner_ids = 0;
        let mut state = Baselines::new();
        // Peers are counted by the off-hours detector's time-of-week windows.
        let radius = specs
            .iter()
            .find(|s| s.detector.name == "off_hours_mint")
            .and_then(|s| s.thresholds.get("window_hours"))
            .and_then(|v| v.as_integer())
            .map_or(3, |r| r.clamp(0, 11) as u8);
        let mut peers = baseline::Peers::default();
        peers.set_radius(radius);
        state.peers = std::sync::Arc::new(peers);
        let days =
            |d: crate::units::Duration| (d.as_secs() / 86_400).clamp(1, u64::from(Day::MAX)) as u16;
        for s in &specs {
            match s.detector.name.as_str() {
                "off_hours_mint" => {
                    learn.mint_half_life_days =
                        (s.forgetting.half_life.as_secs() as f32 / 86_400.0).max(0.01)
                }
                "new_runner" => {
                    learn.runner_forget_days = days(s.forgetting.forget_after);
                    let t: new_runner::Thresholds = s.thresholds()?;
                    shared_runner_ids = t.shared_runner_identities;
                }
                "scope_escalation" => learn.scope_forget_days = days(s.forgetting.forget_after),
                "cross_env_reuse" => {
                    learn.env_forget_days = days(s.forgetting.forget_after);
                    let t: cross_env_reuse::Thresholds = s.thresholds()?;
                    binding_grace_secs = t.binding_grace.as_secs() as i64;
                }
                _ => {}
            }
        }
        let mut detectors = Vec::new();
        let mut allow = Vec::new();
        for name in NAMES {
            if let Some(s) = specs.iter().find(|s| s.detector.name == name) {
                allow.push(s.identity_allowlist());
                detectors.push(build(name, s.clone())?);
            }
        }
        let counters = detectors
            .iter()
            .map(|d| FindingCounters::new(d.name()))
            .collect();
        Ok(Engine {
            detectors,
            allow,
            privileges,
            zones,
            peer_rules,
            learn,
            binding_grace_secs,
            shared_runner_ids,
            state,
            max_identities: baseline::StateConfig::default().max_identities,
            clock: i64::MIN,
            seq: 0,
            suppress: HashMap::new(),
            pending: BTreeMap::new(),
            by_value: HashMap::new(),
            replacing: HashMap::new(),
            news: Arc::default(),
            shared: false,
            borrowed: false,
            rollout: (0, Vec::new()),
            outbox: None,
            next_prune: i64::MIN,
            stats: Stats::default(),
            counters,
        })
    }

    /// Names of the detectors that run.
    pub fn detector_names(&self) -> Vec<&'static str> {
        self.detectors.iter().map(|d| d.name()).collect()
    }

    /// The specifications of the detectors that run.
    pub fn specs(&self) -> Vec<&Spec> {
        self.detectors.iter().map(|d| d.spec()).collect()
    }

    /// The time zone used for an identity.
    pub fn zone_of(&self, identity: &str) -> &str {
        self.zones.name_for(identity)
    }

    /// The peer group an identity is judged with and its members, then every candidate
    /// group with its members, finest first.
    pub fn peer_groups(&self, b: &IdentityBaseline) -> ((String, u32), Vec<(String, u32)>) {
        let g = PeerCx::new(b.peers, &self.state.peers, self.peer_rules.min_peers).group();
        let mut all: Vec<(String, u32)> = Vec::new();
        for id in b.peers {
            let entry = (self.state.peers.name(id), self.state.peers.size(id));
            if !all.contains(&entry) {
                all.push(entry);
            }
        }
        ((self.state.peers.name(g.id), g.size), all)
    }

    /// The detectors whose learning period an identity has passed.
    pub fn armed(&self, b: &IdentityBaseline) -> Vec<&'static str> {
        self.detectors
            .iter()
            .filter(|d| is_armed(d.as_ref(), b))
            .map(|d| d.name())
            .collect()
    }

    /// Inspects and learns one event, appending alerts that are due.
    pub fn process(&mut self, event: &Event, out: &mut Vec<Alert>) {
        if !matches!(event.action, Action::Mint | Action::Use | Action::Trust) {
            self.stats.skipped += 1;
            return;
        }
        self.stats.inspected += 1;
        let secs = event.time.as_unix_seconds();
        if secs > self.clock {
            self.clock = secs;
            self.release(secs, out);
            self.prune(secs);
        }
        if event.action == Action::Trust {
            // Who may obtain the identity's credentials changed: judged by the detectors
            // that watch trust, never learned into the identity's baseline.
            for i in 0..self.detectors.len() {
                if let Some(f) = self.detectors[i].inspect_trust(event) {
                    self.emit(i, f, event, secs, &[], out);
                }
            }
            return;
        }
        let local = self.zones.local(&event.identity, event.time);
        let privileges = &self.privileges;
        let view = baseline::view(event, |s| privileges.rank(s) as u8, local);
        let binding = view.cred.and_then(|k| self.state.credentials.get_ref(k));
        // Values this identity has not shown yet today: only those change the fleet context.
        let mut fleet_news: smallvec::SmallVec<[u64; 8]> = smallvec::SmallVec::new();
        let zone = self.zones.name_for(&event.identity);
        let mut findings: smallvec::SmallVec<[(usize, Finding); 2]> = smallvec::SmallVec::new();
        // Values new to the identity (its peer groups count it as adopting them), and the
        // group's value for a member's first production mint (a peer-level rollout).
        let mut adopted: smallvec::SmallVec<[u64; 4]> = smallvec::SmallVec::new();
        // Scopes this identity takes up (counted fleet-wide under their adoption keys).
        let mut adoptions: smallvec::SmallVec<[u64; 2]> = smallvec::SmallVec::new();
        let mut transition: Option<[u64; baseline::peers::LEVELS]> = None;
        let mut old_runners: Vec<u64> = Vec::new();
        let mut new_identity = false;
        {
            let identities = &self.state.identities;
            let mut entry = match identities.get_mut(event.identity.as_str()) {
                Some(e) => e,
                None => {
                    let (b, fresh) = self.arrive(event, secs);
                    new_identity = fresh;
                    identities.insert(event.identity.as_str().into(), b);
                    match identities.get_mut(event.identity.as_str()) {
                        Some(e) => e,
                        None => return,
                    }
                }
            };
            let baseline: &mut IdentityBaseline = &mut entry;
            let peers = PeerCx::new(baseline.peers, &self.state.peers, self.peer_rules.min_peers);
            for (i, d) in self.detectors.iter().enumerate() {
                let cx = Cx {
                    event,
                    view: &view,
                    baseline,
                    armed: is_armed(d.as_ref(), baseline),
                    state: &self.state,
                    binding: binding.as_deref(),
                    zone,
                    peers: d.spec().peers.judge.then_some(peers),
                    new_identity,
                };
                if let Some(f) = d.inspect(&cx) {
                    findings.push((i, f));
                }
                d.learn(&cx);
            }
            if event.outcome == Outcome::Success {
                let today = |set: &baseline::ValueSet, h: u64| {
                    set.get(h).is_some_and(|e| e.last == view.day)
                };
                for a in &view.attrs {
                    if a.class != Class::RunnerKind && !today(&baseline.attrs, a.hash) {
                        fleet_news.push(a.hash);
                    }
                }
                if let Some(n) = &view.net
                    && !today(&baseline.nets, n.hash)
                {
                    fleet_news.push(n.hash);
                    fleet_news.extend(n.block_hash());
                }
                if event.action == Action::Mint {
                    let scope_since = view.day.saturating_sub(self.learn.scope_forget_days);
                    // Only an identity known before today takes a value up: a service
                    // onboarded today starts with its scopes (in a large organisation
                    // several a day), which is no rollout to anyone else.
                    let known_before = baseline::day_of_secs(baseline.first_seen) < view.day;
                    for s in &view.scopes {
                        if !today(&baseline.scopes, s.hash) {
                            fleet_news.push(s.hash);
                        }
                        if known_before && !baseline.scopes.seen_since(s.hash, scope_since) {
                            adoptions.push(baseline::adoption_key(s.hash));
                        }
                    }
                }
            }
            // The runner values of its class the identity ran on, for a runner change that
            // may be a replacement of them.
            if let Some(class) = findings.iter().find_map(|(_, f)| {
                f.defer
                    .filter(|d| d.replace_secs > 0)
                    .map(|d| d.replace_class)
            }) {
                // Values it took up since yesterday may be the replacement's other new ones
                // (its jobs spread over the new runners as they come).
                let since = view.day.saturating_sub(self.learn.runner_forget_days);
                let settled = view.day.saturating_sub(1);
                let (set, of_class) = if class == Class::Network as u8 {
                    (&baseline.nets, None)
                } else {
                    (&baseline.attrs, Some(class))
                };
                old_runners.extend(
                    set.recent(since)
                        .filter(|x| of_class.is_none_or(|c| x.aux == c) && x.first < settled)
                        .map(|x| x.hash),
                );
            }
            let mask_before = baseline.env_mask;
            baseline.learn(event, &view, &self.learn, &self.state.interner);
            // What a member does counts as usual for its peer groups only when it raised no
            // finding that day or the day before: an attack on one member (whose later
            // records of the same run look ordinary to the member itself) must not make the
            // same attack routine for the others. The time of week is the exception: a
            // mint whose only finding is its time still counts in its peers' windows, or
            // every member's first weekend of work would alert and none would ever make
            // weekend work routine for the others (one member's odd hour is a small share
            // of a group, which is all the windows ever judge).
            let quiet = view.day < baseline.peer_quiet_from;
            let only_time = findings
                .iter()
                .all(|(i, f)| f.routine || self.detectors[*i].name() == "off_hours_mint");
            if findings.iter().any(|(_, f)| !f.routine) {
                baseline.peer_quiet_from = view.day.saturating_add(2);
            }
            if event.outcome == Outcome::Success
                && event.action == Action::Mint
                && !quiet
                && only_time
            {
                let ids = baseline.peers;
                self.state
                    .peers
                    .count_windows(&ids, &mut baseline.peer_windows, view.tow_bin);
            }
            if event.outcome == Outcome::Success && view.day >= baseline.peer_quiet_from {
                for a in &view.attrs {
                    if baseline.attrs.mark_peer(a.hash) {
                        adopted.push(a.hash);
                    }
                }
                if event.action == Action::Mint {
                    for s in &view.scopes {
                        if baseline.scopes.mark_peer(s.hash) {
                            adopted.push(s.hash);
                        }
                    }
                }
            }
            if event.action == Action::Mint && event.outcome == Outcome::Success {
                let since = view.day.saturating_sub(self.learn.env_forget_days);
                let mask = baseline::peers::env_mask(&baseline.envs, baseline.noenv_last, since);
                if mask != mask_before {
                    self.state
                        .peers
                        .move_mask(&baseline.peers, mask_before, mask);
                    baseline.env_mask = mask;
                    use baseline::peers::mask::PRODUCTION;
                    if mask & PRODUCTION != 0 && mask_before & PRODUCTION == 0 {
                        let basis = baseline::peers::mask::highest(mask_before);
                        transition = Some(peers.transitions(basis, PRODUCTION));
                        // A first production deploy nobody found odd tells the group how
                        // long its members deploy elsewhere first (its release cycle).
                        if !findings.iter().any(|(_, f)| !f.routine) {
                            let days = baseline.days_known().ceil().min(f64::from(u16::MAX));
                            self.state
                                .peers
                                .record_first_release(&baseline.peers, days as u16);
                        }
                    }
                }
            }
            for v in &adopted {
                self.state.peers.adopt(&baseline.peers, *v, view.day);
            }
            if event.action == Action::Use
                && event.outcome == Outcome::Success
                && let (Some(b), Some((used_in, _))) = (&binding, view.env)
                && let Some(minted_for) = b.env
                && minted_for != used_in
            {
                baseline.learn_env_pair(
                    baseline::env_pair(minted_for, used_in),
                    view.day,
                    &self.learn,
                );
            }
        }
        drop(binding);
        self.stats.new_identities += u64::from(new_identity);
        if event.outcome == Outcome::Success {
            let who = hash_identity(&event.identity);
            let moves = transition.iter().flatten();
            let evicted = self.state.fleet.evicted();
            for v in fleet_news.iter().chain(moves).chain(&adoptions) {
                self.state.fleet.observe(*v, who, view.day);
            }
            forgotten(
                "fleet_values",
                self.state.fleet.evicted() - evicted,
                self.state.fleet.max(),
                "fleet values past state.max_fleet_values: the ones seen longest ago are forgotten (a rollout of one of them may alert per identity)",
            );
            if event.action == Action::Mint
                && let Some(key) = view.cred
            {
                let ttl = event
                    .ttl
                    .map_or(DEFAULT_TTL_SECS, |t| t.min(i64::MAX as u64) as i64);
                let evicted = self.state.credentials.evicted();
                let binding = Binding {
                    env: view.env.map(|e| e.0),
                    minted: secs,
                    expires: secs.saturating_add(ttl),
                    single_use: event.credential.as_ref().is_some_and(|c| c.single_use),
                    net: view.net.map(|n| n.hash),
                    identity: who,
                    presentations: 1,
                    first_event: event.id.clone(),
                };
                // Published to other instances (`run`), only when new.
                let copy = self.outbox.is_some().then(|| binding.clone());
                if self.state.credentials.bind(key, binding)
                    && let (Some(out), Some(b)) = (&mut self.outbox, copy)
                {
                    out.push((key, b));
                }
                forgotten(
                    "credentials",
                    self.state.credentials.evicted() - evicted,
                    self.state.credentials.max(),
                    "live credential bindings past state.max_credentials: the ones expiring soonest are forgotten",
                );
            }
            self.state.credentials.sweep(secs, self.binding_grace_secs);
        }
        if event.outcome == Outcome::Success && !self.replacing.is_empty() {
            self.watch_replacements(event, &view, secs);
        }
        for (i, f) in findings {
            self.emit(i, f, event, secs, &old_runners, out);
        }
        // Collected only when something may be held on them, here or (shared) elsewhere.
        if self.shared || !self.by_value.is_empty() {
            let mut values = std::mem::take(&mut self.rollout.1);
            values.clear();
            values.extend(
                view.attrs
                    .iter()
                    .map(|a| a.hash)
                    .chain(view.net.map(|n| n.hash))
                    .chain(view.scopes.iter().map(|s| s.hash))
                    .chain(transition.into_iter().flatten())
                    .chain(adoptions),
            );
            self.drop_rollouts(view.day, &values);
            self.rollout = (view.day, values);
        }
    }

    /// The baseline of an identity not in memory: read back when it was spilled, else a new
    /// one (counted into its peer groups). Makes room first when memory is at its bound.
    fn arrive(&self, event: &Event, secs: i64) -> (IdentityBaseline, bool) {
        let m = crate::telemetry::metrics::get();
        if self.state.identities.len() >= self.max_identities {
            // A quarter at a time: each move costs a pass over the table and a rehash.
            let keep = self.max_identities - self.max_identities / 4;
            let before = self.state.spill().counts;
            let (lost, err) = self.state.evict(keep, &event.identity);
            let after = self.state.spill().counts;
            if before.spilled + before.dropped == 0 {
                tracing::warn!(
                    max_identities = self.max_identities,
                    "identities past state.max_identities: the least recently active move to disk from now on (logged at debug level after this)"
                );
            }
            tracing::debug!(
                spilled = after.spilled - before.spilled,
                dropped = after.dropped - before.dropped,
                in_memory = self.state.identities.len(),
                on_disk = self.state.spill().len(),
                "identities past state.max_identities: the least recently active moved to disk"
            );
            m.state_evicted
                .with_label_values(&["identities", "spilled"])
                .inc_by(after.spilled - before.spilled);
            m.state_evicted
                .with_label_values(&["identities", "dropped"])
                .inc_by(after.dropped - before.dropped);
            if let Some(e) = err {
                tracing::warn!(
                    error = %e,
                    identities = lost,
                    "identities could not be spilled to disk and are forgotten (state.spill_dir)"
                );
                m.errors.with_label_values(&["state", "spill_failed"]).inc();
            }
        }
        let (ids, names) = self.peer_rules.candidates(&event.identity);
        match self.state.reload(&event.identity) {
            Ok(Some(mut b)) => {
                // Still counted in its peer groups: it never left them.
                b.peers = ids;
                m.state_reloaded.inc();
                return (b, false);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "a spilled identity could not be read back; it starts afresh");
                m.errors
                    .with_label_values(&["state", "spill_unreadable"])
                    .inc();
            }
        }
        let mut b = IdentityBaseline::new(secs);
        b.peers = ids;
        self.state.peers.join(&ids, &names);
        (b, true)
    }

    fn emit(
        &mut self,
        i: usize,
        f: Finding,
        event: &Event,
        secs: i64,
        old_runners: &[u64],
        out: &mut Vec<Alert>,
    ) {
        let d = &self.detectors[i];
        let name = d.name();
        if self.allow[i].matches(&event.identity) {
            self.stats.allowlisted += 1;
            self.counters[i].allowlisted.inc();
            return;
        }
        let mut f = f;
        if f.routine {
            match d.spec().peers.routine_severity() {
                Some(severity) => f.severity = severity,
                None => {
                    *self.stats.peer_routine.entry(name.to_string()).or_default() += 1;
                    self.counters[i].peer_routine.inc();
                    return;
                }
            }
        }
        let key = SuppressKey {
            detector: i as u8,
            identity: hash_value(Class::Identity, &event.identity),
            reason: f.reason_key,
        };
        let window = d.spec().suppression.window.as_secs() as i64;
        if let Some(last) = self.suppress.get(&key)
            && secs >= *last
            && secs < last.saturating_add(window)
        {
            *self.stats.suppressed.entry(name.to_string()).or_default() += 1;
            self.counters[i].suppressed.inc();
            return;
        }
        self.suppress.insert(key, secs);
        let alert = Alert::new(name, f.severity, event, f.reason, f.summary, f.evidence);
        match f.defer {
            Some(defer) => {
                self.counters[i].held.inc();
                if defer.family != 0 {
                    lock(&self.news).push(News {
                        secs,
                        family: defer.family,
                        identity: hash_identity(&event.identity),
                    });
                }
                self.seq += 1;
                let replacing =
                    (defer.replace_secs > 0 && !old_runners.is_empty()).then(|| Replacing {
                        identity: hash_identity(&event.identity),
                        class: defer.replace_class,
                        since: secs,
                        old: old_runners.to_vec(),
                        old_seen: false,
                        waited: false,
                        again: false,
                    });
                let hold = if replacing.is_some() {
                    defer.grace_secs.max(defer.replace_secs)
                } else {
                    defer.grace_secs
                };
                let at = (secs.saturating_add(hold), self.seq);
                let p = Pending {
                    alert,
                    defer,
                    extended: false,
                    replacing,
                };
                self.index(at, &p);
                self.pending.insert(at, p);
            }
            None => {
                self.counters[i].alerted.inc();
                *self
                    .stats
                    .alerts
                    .entry((alert.detector.clone(), alert.severity))
                    .or_default() += 1;
                out.push(alert);
            }
        }
    }
}

/// Counts and logs `n` entries of a `[state]` bound forgotten to keep it.
fn forgotten(bound: &str, n: u64, max: usize, what: &str) {
    if n > 0 {
        crate::telemetry::metrics::get()
            .state_evicted
            .with_label_values(&[bound, "dropped"])
            .inc_by(n);
        tracing::warn!(forgotten = n, max, "{what}");
    }
}

fn is_armed(d: &dyn Detector, b: &IdentityBaseline) -> bool {
    let l = &d.spec().learning;
    d.learned(b) >= l.min_events && b.days_known() >= l.min_days
}

/// Evidence helpers shared by the detectors.
pub(crate) mod evidence {
    use serde_json::{Map, Value, json};

    use crate::baseline::IdentityBaseline;
    use crate::time::Timestamp;

    /// The baseline facts every alert carries.
    pub fn base(b: &IdentityBaseline) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert(
            "first_seen".into(),
            json!(Timestamp::from_micros(b.first_seen * 1_000_000)),
        );
        m.insert(
            "last_seen".into(),
            json!(Timestamp::from_micros(b.last_seen * 1_000_000)),
        );
        m.insert(
            "days_known".into(),
            json!((b.days_known() * 10.0).round() / 10.0),
        );
        m.insert("events".into(), json!(b.events));
        m.insert("mints".into(), json!(b.mints));
        m.insert("uses".into(), json!(b.uses));
        m
    }
}

/// Severity raised one level for production-critical variants.
pub(crate) fn tier_of(view: &View) -> Option<baseline::Tier> {
    view.env.map(|(_, t)| t)
}
