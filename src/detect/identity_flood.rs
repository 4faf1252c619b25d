//! `identity_flood`: a burst of never-seen identities far above the usual rate.
//!
//! Whoever writes records chooses the identities they name; thousands of new identities an
//! hour, where a few a day is usual, is someone minting with forged or stolen claims at scale
//! or trying to push real identities out of memory (see `baseline::spill`). New identities are
//! counted per hour of event time; after `min_history_hours` of history, an hour that reaches
//! `min_new` and `factor` times the usual hourly rate (the mean of the last week's hours) is a
//! flood. It alerts once per flood (on the identity that tipped it), naming the counts and the
//! sources and owners most of the new identities came from; the flood ends with the first
//! hour back under the threshold. An identity read back from disk is not new.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Cx, Detector, Finding, Spec, SpecError, evidence};
use crate::baseline::IdentityBaseline;
use crate::event::Event;

/// Hours of history the usual rate is taken over.
const WEEK: usize = 7 * 24;
/// Owners tallied per hour (the rest are counted as "other").
const TALLY: usize = 256;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Thresholds {
    /// New identities in an hour below which nothing is a flood.
    min_new: u32,
    /// Times the usual hourly rate.
    factor: f64,
    /// Hours of history before anything is judged (an onboarding day is all new).
    min_history_hours: u32,
    /// Sources and owners named in the evidence.
    top: usize,
}

/// What the detector keeps (saved with the engine's state).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct FloodState {
    /// The current hour (Unix seconds / 3600); 0 before the first event.
    hour: i64,
    /// The first hour seen.
    first_hour: i64,
    /// New identities in each of the last hours, oldest first (at most a week).
    past: Vec<u32>,
    /// New identities this hour.
    now: u32,
    /// New identities this hour by source and by owner.
    sources: Vec<(String, u32)>,
    owners: Vec<(String, u32)>,
    /// New identities this hour whose owner was not tallied (the tally was full).
    untallied: u32,
    /// The flood was alerted (until an hour ends under the threshold).
    alerted: bool,
}

pub(super) struct IdentityFlood {
    spec: Spec,
    t: Thresholds,
    state: Mutex<FloodState>,
}

impl IdentityFlood {
    pub(super) fn new(spec: Spec) -> Result<Self, SpecError> {
        let t: Thresholds = spec.thresholds()?;
        let invalid = |key: &str, message: &str| SpecError::Invalid {
            file: "identity_flood.toml".into(),
            key: format!("thresholds.{key}"),
            message: message.into(),
        };
        if t.min_new == 0 {
            return Err(invalid("min_new", "must be at least 1"));
        }
        if !(t.factor >= 1.0 && t.factor.is_finite()) {
            return Err(invalid("factor", "must be a number of at least 1"));
        }
        if t.min_history_hours as usize > WEEK {
            return Err(invalid("min_history_hours", "must be at most 168 (a week)"));
        }
        Ok(IdentityFlood {
            spec,
            t,
            state: Mutex::new(FloodState::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FloodState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Who a new identity belongs to: the repository owner, namespace or account its record
/// names, else the first part of its name.
fn owner(e: &Event) -> String {
    let c = &e.context;
    if let Some(repo) = &c.repo {
        return repo.split('/').next().unwrap_or(repo).to_string();
    }
    if let Some(ns) = c.namespace.as_ref().or(c.account.as_ref()) {
        return ns.clone();
    }
    e.identity
        .split(['/', ':'])
        .find(|s| !s.is_empty())
        .unwrap_or("")
        .to_string()
}

fn tally(list: &mut Vec<(String, u32)>, key: &str) -> bool {
    if let Some(x) = list.iter_mut().find(|(k, _)| k == key) {
        x.1 += 1;
        return true;
    }
    if list.len() < TALLY {
        list.push((key.to_string(), 1));
        return true;
    }
    false
}

fn top(list: &[(String, u32)], n: usize) -> serde_json::Value {
    let mut v: Vec<&(String, u32)> = list.iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    json!(
        v.into_iter()
            .take(n)
            .map(|(k, c)| json!({"name": k, "new_identities": c}))
            .collect::<Vec<_>>()
    )
}

impl FloodState {
    /// Moves the clock to `hour`, closing the hours passed.
    fn advance(&mut self, hour: i64, threshold: impl Fn(&FloodState) -> f64) {
        if self.hour == 0 {
            self.hour = hour;
            self.first_hour = hour;
            return;
        }
        if hour <= self.hour {
            return;
        }
        // The hour that ends: a flood is over once an hour ends under its threshold.
        if f64::from(self.now) < threshold(self) {
            self.alerted = false;
        }
        let gap = (hour - self.hour).min(WEEK as i64) as usize;
        self.past.push(self.now);
        self.past.extend(std::iter::repeat_n(0, gap - 1));
        if self.past.len() > WEEK {
            self.past.drain(..self.past.len() - WEEK);
        }
        self.hour = hour;
        self.now = 0;
        self.sources.clear();
        self.owners.clear();
        self.untallied = 0;
    }

    /// The usual new identities per hour.
    fn usual(&self) -> f64 {
        if self.past.is_empty() {
            return 0.0;
        }
        self.past.iter().map(|&n| f64::from(n)).sum::<f64>() / self.past.len() as f64
    }
}

impl Detector for IdentityFlood {
    fn name(&self) -> &'static str {
        "identity_flood"
    }

    fn spec(&self) -> &Spec {
        &self.spec
    }

    fn learned(&self, b: &IdentityBaseline) -> u32 {
        b.events
    }

    fn inspect(&self, cx: &Cx<'_>) -> Option<Finding> {
        let t = &self.t;
        let threshold = |s: &FloodState| f64::from(t.min_new).max(t.factor * s.usual().max(1.0));
        let mut s = self.lock();
        s.advance(cx.view.secs.div_euclid(3600), threshold);
        if !cx.new_identity {
            return None;
        }
        s.now += 1;
        let source = cx.event.source.as_str();
        tally(&mut s.sources, source);
        if !tally(&mut s.owners, &owner(cx.event)) {
            s.untallied += 1;
        }
        let history = (s.hour - s.first_hour) as u32;
        if s.alerted || history < t.min_history_hours || f64::from(s.now) < threshold(&s) {
            return None;
        }
        s.alerted = true;
        let usual = s.usual();
        let mut ev = evidence::base(cx.baseline);
        ev.insert("new_identities_this_hour".into(), json!(s.now));
        ev.insert(
            "usual_per_hour".into(),
            json!((usual * 100.0).round() / 100.0),
        );
        ev.insert("history_hours".into(), json!(history));
        ev.insert("factor".into(), json!(t.factor));
        ev.insert("min_new".into(), json!(t.min_new));
        ev.insert("top_sources".into(), top(&s.sources, t.top));
        ev.insert("top_owners".into(), top(&s.owners, t.top));
        if s.untallied > 0 {
            ev.insert("owners_not_tallied".into(), json!(s.untallied));
        }
        Some(Finding {
            severity: self.spec.severity_for(None),
            reason_key: 1,
            reason: "burst of never-seen identities".into(),
            summary: format!(
                "{} never-seen identities within the hour (usually {:.1} an hour, {} hours of history): records naming new identities at this rate are forged or stolen claims at scale, or an attempt to push real identities out of memory.",
                s.now, usual, history
            ),
            evidence: ev,
            defer: None,
            routine: false,
        })
    }

    fn save(&self) -> Option<Vec<u8>> {
        postcard::to_stdvec(&*self.lock()).ok()
    }

    fn load(&self, bytes: &[u8]) -> bool {
        match postcard::from_bytes::<FloodState>(bytes) {
            Ok(s) => {
                *self.lock() = s;
                true
            }
            Err(_) => false,
        }
    }
}
