//! `dormant_reactivated`: an identity unseen for `dormant_after` mints or uses a credential
//! again from somewhere it never worked from, or with a credential older than its silence.
//!
//! A retired service brought back by its owner returns as it was (its runners, networks and
//! refs, credentials minted after the return): counted as routine, not alerted. Anything new
//! in the return (a network, runner attribute or ref the identity never showed; a credential
//! minted before it went quiet or never seen minted) alerts.

use serde::Deserialize;
use serde_json::json;

use super::{Cx, Detector, Finding, Spec, SpecError, evidence, tier_of};
use crate::baseline::{Class, IdentityBaseline, hash_value};
use crate::event::{Action, CredentialKind, Outcome};
use crate::time::Timestamp;
use crate::units::Duration;

/// `[thresholds]` of `dormant_reactivated.toml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Thresholds {
    dormant_after: Duration,
}

pub(super) struct DormantReactivated {
    spec: Spec,
    after: i64,
}

impl DormantReactivated {
    pub(super) fn new(spec: Spec) -> Result<Self, SpecError> {
        let t: Thresholds = spec.thresholds()?;
        if t.dormant_after.as_secs() < 86_400 {
            return Err(SpecError::Invalid {
                file: "dormant_reactivated.toml".into(),
                key: "thresholds.dormant_after".into(),
                message: "must be at least a day".into(),
            });
        }
        Ok(DormantReactivated {
            after: t.dormant_after.as_secs() as i64,
            spec,
        })
    }
}

impl Detector for DormantReactivated {
    fn name(&self) -> &'static str {
        "dormant_reactivated"
    }

    fn spec(&self) -> &Spec {
        &self.spec
    }

    fn learned(&self, b: &IdentityBaseline) -> u32 {
        b.events
    }

    fn inspect(&self, cx: &Cx<'_>) -> Option<Finding> {
        let (e, v, b) = (cx.event, cx.view, cx.baseline);
        if !cx.armed || cx.new_identity || e.outcome != Outcome::Success {
            return None;
        }
        let quiet = v.secs - b.last_seen;
        if quiet < self.after {
            return None;
        }
        // What is new in the return.
        let mut new: Vec<String> = Vec::new();
        let interner = &cx.state.interner;
        for a in &v.attrs {
            if b.attrs.get(a.hash).is_none() {
                new.push(format!(
                    "{} {}",
                    a.class.label(),
                    crate::baseline::attr_text(e, a)
                ));
            }
        }
        if let Some(n) = &v.net
            && b.nets.get(n.hash).is_none()
        {
            new.push(format!("network {}", n.text()));
        }
        if e.action == Action::Mint
            && let Some(r) = e.context.git_ref.as_deref()
            && !b.refs.entries().is_empty()
            && b.refs.get(crate::baseline::ref_hash(r)).is_none()
        {
            let known: Vec<String> = b
                .refs
                .entries()
                .iter()
                .map(|x| interner.text(x.hash))
                .collect();
            new.push(format!(
                "ref {} (it minted from {})",
                crate::baseline::ref_shape(r),
                known.join(", ")
            ));
        }
        if e.action == Action::Use
            && let Some(c) = &e.credential
            && c.kind != CredentialKind::AwsLongTermKey
        {
            match cx.binding {
                Some(bind) if bind.minted <= b.last_seen => new.push(format!(
                    "a credential minted {} before it went quiet",
                    Timestamp::from_micros(bind.minted * 1_000_000)
                )),
                None => new.push("a credential never seen minted".to_string()),
                _ => {}
            }
        }
        let days = quiet / 86_400;
        let routine = new.is_empty();
        if routine {
            new.push("the runners, networks and refs it used before".to_string());
        }
        let mut ev = evidence::base(b);
        ev.insert("dormant_days".into(), json!(days));
        ev.insert("new_in_return".into(), json!(new));
        Some(Finding {
            severity: self.spec.severity_for(tier_of(v)),
            reason_key: hash_value(Class::Scope, "dormant"),
            reason: format!("back after {days} days, with {}", new[0]),
            summary: format!(
                "{} was unseen for {days} days (last seen {}) and came back with {}.",
                e.identity,
                Timestamp::from_micros(b.last_seen * 1_000_000),
                new.join("; ")
            ),
            evidence: ev,
            defer: None,
            routine,
        })
    }
}
