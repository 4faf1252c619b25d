//! `new_trust`: someone new changed who may obtain an identity's credentials, or a subject
//! never trusted for an AWS role assumed it.
//!
//! Trust changes (`trust` events) are judged by who made them: the principals seen changing
//! trust (per source) and the `writers` globs make routine changes; anyone else's change
//! alerts, unless everything it admits is `announced`. A web-identity or SAML mint of a role
//! by a subject that never assumed it, while `min_subjects` others had, alerts unless a trust
//! change within `announce_window` admitted the subject. Everything is judged only after
//! `learning.min_days` of history. The writers, roles and admissions are saved with the
//! engine's state.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::glob::{Glob, GlobSet};
use super::state::forget_oldest_eighth;
use super::{Cx, Detector, Finding, Spec, SpecError, tier_of};
use crate::baseline::{Class, Day, IdentityBaseline, day_of_secs, hash_identity, hash_value};
use crate::environment::Tier;
use crate::event::{Action, Event, Outcome};
use crate::units::Duration;

/// Subjects remembered per role.
const PER_ROLE: usize = 64;
/// Roles, writers and admissions remembered (each map), the oldest forgotten first.
const MAX_ENTRIES: usize = 65_536;
/// Admitted patterns remembered per identity.
const PER_ADMISSION: usize = 32;

/// `[thresholds]` of `new_trust.toml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Thresholds {
    announce_window: Duration,
    min_subjects: u32,
    writers: Vec<String>,
    announced: Vec<String>,
}

/// What the detector keeps (saved with the engine's state).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct TrustState {
    /// The first day of history seen (0: none yet).
    first_day: Day,
    /// Writers of trust changes (hash of source and actor) and the last day they wrote one.
    writers: HashMap<u64, Day>,
    /// Roles assumed by subject (hash of `aws:<role arn>`): the day first assumed, and the
    /// subjects (identity hashes) that did.
    roles: HashMap<u64, (Day, Vec<u32>)>,
    /// Patterns admitted by trust changes, by the identity changed: (pattern, day).
    admitted: HashMap<u64, Vec<(String, Day)>>,
}

pub(super) struct NewTrust {
    spec: Spec,
    t: Thresholds,
    writers: GlobSet,
    announced: GlobSet,
    window: Day,
    state: Arc<Mutex<TrustState>>,
    /// The first day of history is set (a cache of `state.first_day != 0`).
    started: AtomicBool,
}

impl NewTrust {
    pub(super) fn new(spec: Spec) -> Result<Self, SpecError> {
        let t: Thresholds = spec.thresholds()?;
        if t.min_subjects == 0 {
            return Err(SpecError::Invalid {
                file: "new_trust.toml".into(),
                key: "thresholds.min_subjects".into(),
                message: "must be at least 1".into(),
            });
        }
        Ok(NewTrust {
            writers: GlobSet::new(&t.writers),
            announced: GlobSet::new(&t.announced),
            window: (t.announce_window.as_secs() / 86_400).max(1) as Day,
            spec,
            t,
            state: Arc::default(),
            started: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, TrustState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn armed(&self, s: &TrustState, day: Day) -> bool {
        s.first_day > 0 && f64::from(day - s.first_day.min(day)) >= self.spec.learning.min_days
    }
}

/// The admitted value of a `trust:` scope (`trust:sub:repo:acme/*` → `repo:acme/*`).
fn admitted_value(scope: &str) -> &str {
    let rest = scope.strip_prefix("trust:").unwrap_or(scope);
    match rest.split_once(':') {
        Some((_, v)) => v,
        None => rest,
    }
}

/// The key of an assumed role: the hash of its identity (`aws:<arn>`), as a trust change of
/// the role names it, without building the text (every web-identity mint asks for it).
fn role_key(arn: &str) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::with_seed(Class::Identity as u64);
    h.update(b"aws:");
    h.update(arn.as_bytes());
    h.digest()
}

/// A role assumed by a subject (web identity or SAML) that succeeded.
fn web_identity_mint(e: &Event) -> bool {
    e.action == Action::Mint
        && e.outcome == Outcome::Success
        && matches!(
            e.kind.as_str(),
            "AssumeRoleWithWebIdentity" | "AssumeRoleWithSAML"
        )
}

fn severity_tier(e: &Event) -> Option<Tier> {
    e.environment.as_deref().map(Tier::of)
}

impl Detector for NewTrust {
    fn name(&self) -> &'static str {
        "new_trust"
    }

    fn spec(&self) -> &Spec {
        &self.spec
    }

    fn learned(&self, b: &IdentityBaseline) -> u32 {
        b.events
    }

    fn inspect(&self, cx: &Cx<'_>) -> Option<Finding> {
        let (e, v) = (cx.event, cx.view);
        if !web_identity_mint(e) {
            return None;
        }
        let role = e.scopes.iter().find_map(|s| s.strip_prefix("aws-role:"))?;
        let key = role_key(role);
        let who = hash_identity(&e.identity);
        let s = self.lock();
        if !self.armed(&s, v.day) {
            return None;
        }
        let (first, subjects) = s.roles.get(&key)?;
        if subjects.contains(&who)
            || (subjects.len() as u32) < self.t.min_subjects
            || f64::from(v.day - (*first).min(v.day)) < self.spec.learning.min_days
        {
            return None;
        }
        let subject = e.context.subject.as_deref().unwrap_or(&e.identity);
        let since = v.day.saturating_sub(self.window);
        let admitted = s.admitted.get(&key).is_some_and(|a| {
            a.iter()
                .any(|(p, d)| *d >= since && Glob::new(admitted_value(p)).matches(subject))
        });
        if admitted || self.announced.matches(subject) {
            return None;
        }
        let mut ev = super::evidence::base(cx.baseline);
        ev.insert("role".into(), json!(role));
        ev.insert("subject".into(), json!(subject));
        ev.insert("subjects_trusted_before".into(), json!(subjects.len()));
        if let Some(i) = &e.context.actor {
            ev.insert("issuer".into(), json!(i));
        }
        Some(Finding {
            severity: self.spec.severity_for(tier_of(v)),
            reason_key: key,
            reason: format!("first assumption of {role} by a subject never trusted for it"),
            summary: format!(
                "{subject} assumed {role}, which {} other subject(s) assumed before; no trust change in the last {} days admitted it (a wildcard trust policy admits it).",
                subjects.len(),
                self.window
            ),
            evidence: ev,
            defer: None,
            routine: false,
        })
    }

    fn learn(&self, cx: &Cx<'_>) {
        let (e, v) = (cx.event, cx.view);
        let web_identity = web_identity_mint(e);
        // Of the other events only the first day of history is wanted.
        if !web_identity && self.started.load(Ordering::Relaxed) {
            return;
        }
        let mut s = self.lock();
        if s.first_day == 0 {
            s.first_day = v.day.max(1);
        }
        self.started.store(true, Ordering::Relaxed);
        if !web_identity {
            return;
        }
        let Some(role) = e.scopes.iter().find_map(|s| s.strip_prefix("aws-role:")) else {
            return;
        };
        let key = role_key(role);
        forget_oldest_eighth(&mut s.roles, key, MAX_ENTRIES, |r| r.0);
        let who = hash_identity(&e.identity);
        let entry = s.roles.entry(key).or_insert((v.day, Vec::new()));
        if !entry.1.contains(&who) && entry.1.len() < PER_ROLE {
            entry.1.push(who);
        }
    }

    fn inspect_trust(&self, e: &Event) -> Option<Finding> {
        if e.outcome != Outcome::Success {
            return None;
        }
        let day = day_of_secs(e.time.as_unix_seconds());
        let actor = e.context.actor.as_deref().unwrap_or("(unknown)");
        let writer = hash_value(Class::Identity, &format!("{}:{actor}", e.source.as_str()));
        let mut s = self.lock();
        if s.first_day == 0 {
            s.first_day = day.max(1);
        }
        self.started.store(true, Ordering::Relaxed);
        let armed = self.armed(&s, day);
        let known = s.writers.contains_key(&writer) || self.writers.matches(actor);
        let writers = s
            .writers
            .len()
            .saturating_sub(usize::from(s.writers.contains_key(&writer)));
        // Learn: the writer, and what the change admits for the identity.
        forget_oldest_eighth(&mut s.writers, writer, MAX_ENTRIES, |d| *d);
        s.writers.insert(writer, day);
        let key = hash_value(Class::Identity, &e.identity);
        forget_oldest_eighth(&mut s.admitted, key, MAX_ENTRIES, |a| {
            a.last().map_or(0, |x| x.1)
        });
        let adm = s.admitted.entry(key).or_default();
        for sc in &e.scopes {
            adm.retain(|(p, _)| p != sc);
            adm.push((sc.clone(), day));
        }
        if adm.len() > PER_ADMISSION {
            let extra = adm.len() - PER_ADMISSION;
            adm.drain(..extra);
        }
        drop(s);
        if !armed || known {
            return None;
        }
        let admits: Vec<&str> = e.scopes.iter().map(String::as_str).collect();
        if !admits.is_empty()
            && admits
                .iter()
                .all(|sc| self.announced.matches(admitted_value(sc)))
        {
            return None;
        }
        let mut ev = serde_json::Map::new();
        ev.insert("actor".into(), json!(actor));
        ev.insert("change".into(), json!(e.kind));
        ev.insert("admits".into(), json!(admits));
        ev.insert("known_writers".into(), json!(writers));
        if let Some(ip) = &e.runner.ip {
            ev.insert("source_address".into(), json!(ip));
        }
        Some(Finding {
            severity: self.spec.severity_for(severity_tier(e)),
            reason_key: writer,
            reason: format!("trust changed by {actor}, who never changed trust before"),
            summary: format!(
                "{actor} changed who may obtain {}'s credentials ({}{}); it never changed trust before, and {writers} other principal(s) did.",
                e.identity,
                e.kind,
                if admits.is_empty() {
                    String::new()
                } else {
                    format!(": admits {}", admits.join(", "))
                }
            ),
            evidence: ev,
            defer: None,
            routine: false,
        })
    }

    fn shared_state(&self) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        Some(self.state.clone())
    }

    fn use_shared_state(&mut self, state: Arc<dyn std::any::Any + Send + Sync>) {
        if let Ok(state) = state.downcast::<Mutex<TrustState>>() {
            self.state = state;
            self.started.store(false, Ordering::Relaxed);
        }
    }

    fn save(&self) -> Option<Vec<u8>> {
        let s = self.lock();
        let mut writers: Vec<_> = s.writers.iter().map(|(k, v)| (*k, *v)).collect();
        writers.sort_unstable();
        let mut roles: Vec<_> = s.roles.iter().map(|(k, v)| (*k, v.clone())).collect();
        roles.sort_unstable_by_key(|(k, _)| *k);
        let mut admitted: Vec<_> = s.admitted.iter().map(|(k, v)| (*k, v.clone())).collect();
        admitted.sort_unstable_by_key(|(k, _)| *k);
        postcard::to_stdvec(&(s.first_day, writers, roles, admitted)).ok()
    }

    fn load(&self, bytes: &[u8]) -> bool {
        match postcard::from_bytes::<Saved>(bytes) {
            Ok((first_day, w, r, a)) => {
                self.started.store(first_day != 0, Ordering::Relaxed);
                *self.lock() = TrustState {
                    first_day,
                    writers: w.into_iter().collect(),
                    roles: r.into_iter().collect(),
                    admitted: a.into_iter().collect(),
                };
                true
            }
            Err(_) => false,
        }
    }

    fn merge(&self, bytes: &[u8]) -> bool {
        let Ok((first_day, w, r, a)) = postcard::from_bytes::<Saved>(bytes) else {
            return false;
        };
        let mut s = self.lock();
        if first_day != 0 {
            s.first_day = if s.first_day == 0 {
                first_day
            } else {
                s.first_day.min(first_day)
            };
            self.started.store(true, Ordering::Relaxed);
        }
        for (k, day) in w {
            forget_oldest_eighth(&mut s.writers, k, MAX_ENTRIES, |d| *d);
            let e = s.writers.entry(k).or_insert(day);
            *e = (*e).max(day);
        }
        for (k, (day, subjects)) in r {
            forget_oldest_eighth(&mut s.roles, k, MAX_ENTRIES, |r| r.0);
            let e = s.roles.entry(k).or_insert((day, Vec::new()));
            e.0 = e.0.min(day);
            for who in subjects {
                if !e.1.contains(&who) && e.1.len() < PER_ROLE {
                    e.1.push(who);
                }
            }
        }
        for (k, patterns) in a {
            forget_oldest_eighth(&mut s.admitted, k, MAX_ENTRIES, |a| {
                a.last().map_or(0, |x| x.1)
            });
            let adm = s.admitted.entry(k).or_default();
            for (p, day) in patterns {
                match adm.iter_mut().find(|(q, _)| *q == p) {
                    Some(x) => x.1 = x.1.max(day),
                    None => adm.push((p, day)),
                }
            }
            // Past the bound, the ones admitted longest ago go (the order learned is kept, so
            // merging what this state already holds changes nothing).
            while adm.len() > PER_ADMISSION {
                if let Some(i) = (0..adm.len()).min_by_key(|i| adm[*i].1) {
                    adm.remove(i);
                }
            }
        }
        true
    }
}

/// What [`NewTrust`] saves: first day, writers, roles, admissions.
type Saved = (
    Day,
    Vec<(u64, Day)>,
    Vec<(u64, (Day, Vec<u32>))>,
    Vec<(u64, Vec<(String, Day)>)>,
);
