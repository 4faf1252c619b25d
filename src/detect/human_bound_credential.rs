//! `human_bound_credential`: a person's credential used by automation.
//!
//! An identity bound to a person (`human_identities` globs: Vault logins by OIDC, userpass,
//! LDAP and the like, AWS IAM users, SSO and SAML sessions) minting or presenting a credential
//! from an automation network: one of `runner_networks`, or a network from which at least
//! `automation_identities` other (non-human) identities worked within `network_window`. The
//! networks are learned from every successful event of a non-human identity and saved with the
//! engine's state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::glob::GlobSet;
use super::new_runner::Cidr;
use super::{Cx, Detector, Finding, Spec, SpecError, evidence, tier_of};
use crate::baseline::{Day, IdentityBaseline, hash_identity};
use crate::event::Outcome;
use crate::units::Duration;

/// Identities remembered per network (enough to pass any sensible threshold).
const PER_NETWORK: usize = 8;
/// Networks remembered; the ones seen longest ago are forgotten first.
const MAX_NETWORKS: usize = 65_536;

/// `[thresholds]` of `human_bound_credential.toml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Thresholds {
    automation_identities: u32,
    network_window: Duration,
    runner_networks: Vec<String>,
    human_identities: Vec<String>,
}

/// Non-human identities seen on one network.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Seen {
    /// (identity hash, last day), most recent last.
    ids: Vec<(u32, Day)>,
    last: Day,
}

pub(super) struct HumanBoundCredential {
    spec: Spec,
    t: Thresholds,
    humans: GlobSet,
    /// The literal beginnings of `human_identities` (lowercase): an identity that starts
    /// with none of them is not a person's, without matching every pattern.
    prefixes: Vec<String>,
    runners: Vec<Cidr>,
    expected: Vec<Cidr>,
    window: Day,
    nets: Arc<Mutex<HashMap<u64, Seen>>>,
}

impl HumanBoundCredential {
    pub(super) fn new(spec: Spec) -> Result<Self, SpecError> {
        let t: Thresholds = spec.thresholds()?;
        if !(1..=PER_NETWORK as u32).contains(&t.automation_identities) {
            return Err(SpecError::Invalid {
                file: "human_bound_credential.toml".into(),
                key: "thresholds.automation_identities".into(),
                message: format!("must be between 1 and {PER_NETWORK}"),
            });
        }
        let runners = t
            .runner_networks
            .iter()
            .map(|n| {
                Cidr::parse(n).ok_or_else(|| SpecError::Invalid {
                    file: "human_bound_credential.toml".into(),
                    key: "thresholds.runner_networks".into(),
                    message: format!("{n:?} is not a network (CIDR)"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let prefixes = t
            .human_identities
            .iter()
            .map(|p| {
                let end = p.find(['*', '?', '\\']).unwrap_or(p.len());
                p[..end].to_ascii_lowercase()
            })
            .collect();
        Ok(HumanBoundCredential {
            humans: GlobSet::new(&t.human_identities),
            prefixes,
            expected: super::new_runner::cidrs(&spec)?,
            window: (t.network_window.as_secs() / 86_400).max(1) as Day,
            runners,
            spec,
            t,
            nets: Arc::default(),
        })
    }

    fn is_human(&self, identity: &str) -> bool {
        self.prefixes.iter().any(|p| {
            identity
                .get(..p.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(p))
        }) && self.humans.matches(identity)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Seen>> {
        self.nets.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Detector for HumanBoundCredential {
    fn name(&self) -> &'static str {
        "human_bound_credential"
    }

    fn spec(&self) -> &Spec {
        &self.spec
    }

    fn learned(&self, b: &IdentityBaseline) -> u32 {
        b.events
    }

    fn inspect(&self, cx: &Cx<'_>) -> Option<Finding> {
        let (e, v) = (cx.event, cx.view);
        if e.outcome != Outcome::Success || !self.is_human(&e.identity) {
            return None;
        }
        let ip = e.runner.ip.as_deref()?;
        if self.expected.iter().any(|c| c.contains(ip)) {
            return None;
        }
        let listed = self.runners.iter().any(|c| c.contains(ip));
        let net = v.net.as_ref();
        let others = net.map_or(0, |n| {
            let since = v.day.saturating_sub(self.window);
            self.lock()
                .get(&n.hash)
                .map_or(0, |s| s.ids.iter().filter(|(_, d)| *d >= since).count())
        });
        if !listed && others < self.t.automation_identities as usize {
            return None;
        }
        let where_ = net.map_or_else(|| ip.to_string(), |n| n.text());
        let mut ev = evidence::base(cx.baseline);
        ev.insert("network".into(), json!(where_));
        ev.insert("automation_identities_on_network".into(), json!(others));
        ev.insert("listed_runner_network".into(), json!(listed));
        Some(Finding {
            severity: self.spec.severity_for(tier_of(v)),
            reason_key: net.map_or(0, |n| n.hash),
            reason: format!("person's credential on automation network {where_}"),
            summary: format!(
                "{}, a credential bound to a person, was used from {where_}, {}.",
                e.identity,
                if listed {
                    "a listed runner network".to_string()
                } else {
                    format!("where {others} pipeline and workload identities work")
                }
            ),
            evidence: ev,
            defer: None,
            routine: false,
        })
    }

    fn learn(&self, cx: &Cx<'_>) {
        let (e, v) = (cx.event, cx.view);
        let Some(n) = &v.net else { return };
        // Once per identity, network and day is enough (the baseline says whether today's
        // was counted already).
        if e.outcome != Outcome::Success
            || cx
                .baseline
                .nets
                .get(n.hash)
                .is_some_and(|x| x.last == v.day)
            || self.is_human(&e.identity)
        {
            return;
        }
        let who = hash_identity(&e.identity);
        let mut nets = self.lock();
        super::state::forget_oldest_eighth(&mut nets, n.hash, MAX_NETWORKS, |s| s.last);
        let s = nets.entry(n.hash).or_default();
        s.last = s.last.max(v.day);
        match s.ids.iter_mut().find(|(id, _)| *id == who) {
            Some(x) => x.1 = x.1.max(v.day),
            None => {
                if s.ids.len() == PER_NETWORK {
                    s.ids.sort_by_key(|(_, d)| *d);
                    s.ids.remove(0);
                }
                s.ids.push((who, v.day));
            }
        }
    }

    fn shared_state(&self) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        Some(self.nets.clone())
    }

    fn use_shared_state(&mut self, state: Arc<dyn std::any::Any + Send + Sync>) {
        if let Ok(nets) = state.downcast::<Mutex<HashMap<u64, Seen>>>() {
            self.nets = nets;
        }
    }

    fn save(&self) -> Option<Vec<u8>> {
        let mut v: Vec<(u64, Seen)> = self.lock().iter().map(|(k, s)| (*k, s.clone())).collect();
        v.sort_by_key(|(k, _)| *k);
        postcard::to_stdvec(&v).ok()
    }

    fn load(&self, bytes: &[u8]) -> bool {
        match postcard::from_bytes::<Vec<(u64, Seen)>>(bytes) {
            Ok(v) => {
                *self.lock() = v.into_iter().collect();
                true
            }
            Err(_) => false,
        }
    }

    fn merge(&self, bytes: &[u8]) -> bool {
        let Ok(v) = postcard::from_bytes::<Vec<(u64, Seen)>>(bytes) else {
            return false;
        };
        let mut nets = self.lock();
        for (k, seen) in v {
            super::state::forget_oldest_eighth(&mut nets, k, MAX_NETWORKS, |s| s.last);
            let s = nets.entry(k).or_default();
            s.last = s.last.max(seen.last);
            for (who, day) in seen.ids {
                match s.ids.iter_mut().find(|(id, _)| *id == who) {
                    Some(x) => x.1 = x.1.max(day),
                    None => s.ids.push((who, day)),
                }
            }
            // Past the bound, the ones seen longest ago go (the order learned is kept, so
            // merging what this state already holds changes nothing).
            while s.ids.len() > PER_NETWORK {
                if let Some(i) = (0..s.ids.len()).min_by_key(|i| (s.ids[*i].1, s.ids[*i].0)) {
                    s.ids.remove(i);
                }
            }
        }
        true
    }
}
