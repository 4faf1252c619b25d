//! `first_seen`: the naive rule, for comparison only. After the learning period, any value of
//! hour of day (UTC), runner (kind, id, group, name, address), scope or environment the
//! identity has not shown before alerts. It keeps its own raw value sets: it is meant to show
//! what judging ephemeral names, address churn, rollouts and schedules naively costs.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use serde_json::json;
use xxhash_rust::xxh3::xxh3_64;

use super::{Cx, Detector, Finding, Spec, SpecError, evidence, tier_of};
use crate::baseline::{IdentityBaseline, hash_value};

pub(super) struct FirstSeen {
    spec: Spec,
    seen: Mutex<HashMap<u64, HashSet<u64>>>,
}

impl FirstSeen {
    pub(super) fn new(spec: Spec) -> Result<Self, SpecError> {
        Ok(FirstSeen {
            spec,
            seen: Mutex::new(HashMap::new()),
        })
    }

    fn values(cx: &Cx<'_>) -> Vec<(String, u64)> {
        let e = cx.event;
        let mut v = vec![(
            format!("hour {:02}", (cx.view.secs.rem_euclid(86_400)) / 3600),
            0,
        )];
        let r = &e.runner;
        for (label, val) in [
            (
                "runner kind",
                r.kind
                    .map(|k| crate::baseline::runner_kind_text(k).to_string()),
            ),
            ("runner id", r.id.clone()),
            ("runner group", r.group.clone()),
            ("runner name", r.name.clone()),
            ("address", r.ip.clone()),
            ("environment", e.environment.clone()),
        ] {
            if let Some(val) = val {
                v.push((format!("{label} {val}"), 0));
            }
        }
        for s in &e.scopes {
            v.push((format!("scope {s}"), 0));
        }
        for (text, h) in &mut v {
            *h = xxh3_64(text.as_bytes());
        }
        v
    }
}

impl Detector for FirstSeen {
    fn name(&self) -> &'static str {
        "first_seen"
    }

    fn spec(&self) -> &Spec {
        &self.spec
    }

    fn learned(&self, b: &IdentityBaseline) -> u32 {
        b.events
    }

    fn inspect(&self, cx: &Cx<'_>) -> Option<Finding> {
        if !cx.armed {
            return None;
        }
        let id = hash_value(crate::baseline::Class::Identity, &cx.event.identity);
        let seen = self.seen.lock().ok()?;
        let known = seen.get(&id);
        let new: Vec<String> = Self::values(cx)
            .into_iter()
            .filter(|(_, h)| !known.is_some_and(|k| k.contains(h)))
            .map(|(t, _)| t)
            .collect();
        let first = new.first()?.clone();
        let mut ev = evidence::base(cx.baseline);
        ev.insert("never_seen".into(), json!(new));
        Some(Finding {
            severity: self.spec.severity_for(tier_of(cx.view)),
            reason_key: xxh3_64(first.as_bytes()),
            reason: format!("first {first}"),
            summary: format!(
                "{} showed {} for the first time.",
                cx.event.identity,
                new.join(", ")
            ),
            evidence: ev,
            defer: None,
            routine: false,
        })
    }

    fn save(&self) -> Option<Vec<u8>> {
        // Sorted, so the same state saves to the same bytes.
        let seen = self.seen.lock().ok()?;
        let mut v: Vec<(u64, Vec<u64>)> = seen
            .iter()
            .map(|(k, s)| {
                let mut s: Vec<u64> = s.iter().copied().collect();
                s.sort_unstable();
                (*k, s)
            })
            .collect();
        v.sort_unstable_by_key(|(k, _)| *k);
        postcard::to_stdvec(&v).ok()
    }

    fn load(&self, bytes: &[u8]) -> bool {
        let Ok(v) = postcard::from_bytes::<Vec<(u64, Vec<u64>)>>(bytes) else {
            return false;
        };
        if let Ok(mut seen) = self.seen.lock() {
            *seen = v
                .into_iter()
                .map(|(k, s)| (k, s.into_iter().collect()))
                .collect();
        }
        true
    }

    fn learn(&self, cx: &Cx<'_>) {
        let id = hash_value(crate::baseline::Class::Identity, &cx.event.identity);
        if let Ok(mut seen) = self.seen.lock() {
            seen.entry(id)
                .or_default()
                .extend(Self::values(cx).into_iter().map(|(_, h)| h));
        }
    }
}
