//! `unapproved_ref`: a production mint from a ref outside the identity's deploy refs (the
//! shapes of the refs it minted production credentials from, plus `deploy_refs`).

use serde::Deserialize;
use serde_json::json;

use super::glob::GlobSet;
use super::{Cx, Detector, Finding, Spec, SpecError, evidence};
use crate::baseline::{IdentityBaseline, Tier};
use crate::event::{Action, Outcome};

/// `[thresholds]` of `unapproved_ref.toml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Thresholds {
    deploy_refs: Vec<String>,
}

pub(super) struct UnapprovedRef {
    spec: Spec,
    approved: GlobSet,
}

impl UnapprovedRef {
    pub(super) fn new(spec: Spec) -> Result<Self, SpecError> {
        let t: Thresholds = spec.thresholds()?;
        Ok(UnapprovedRef {
            approved: GlobSet::new(&t.deploy_refs),
            spec,
        })
    }
}

impl Detector for UnapprovedRef {
    fn name(&self) -> &'static str {
        "unapproved_ref"
    }

    fn spec(&self) -> &Spec {
        &self.spec
    }

    fn learned(&self, b: &IdentityBaseline) -> u32 {
        b.prod_mints
    }

    fn inspect(&self, cx: &Cx<'_>) -> Option<Finding> {
        let (e, v, b) = (cx.event, cx.view, cx.baseline);
        if !cx.armed
            || e.action != Action::Mint
            || e.outcome != Outcome::Success
            || !matches!(v.env, Some((_, Tier::Production)))
        {
            return None;
        }
        let r = e.context.git_ref.as_deref()?;
        let hash = crate::baseline::ref_hash(r);
        if b.ref_seen(hash) == Some(true) || self.approved.matches(r) {
            return None;
        }
        let shape = crate::baseline::ref_shape(r);
        let interner = &cx.state.interner;
        let deploy: Vec<String> = b
            .refs
            .entries()
            .iter()
            .filter(|x| x.aux & 1 == 1)
            .map(|x| interner.text(x.hash))
            .collect();
        // Refs learned before the identity kept them (an older state) give no list to judge.
        if deploy.is_empty() {
            return None;
        }
        let mut ev = evidence::base(b);
        ev.insert("ref".into(), json!(r));
        ev.insert("ref_shape".into(), json!(shape));
        ev.insert("deploy_refs".into(), json!(deploy));
        ev.insert("production_mints".into(), json!(b.prod_mints));
        if let Some(p) = e.context.ref_protected {
            ev.insert("ref_protected".into(), json!(p));
        }
        Some(Finding {
            severity: self.spec.severity_for(Some(Tier::Production)),
            reason_key: hash,
            reason: format!("production mint from {shape}"),
            summary: format!(
                "{} minted a production credential from {r}, outside the refs it deploys from ({}).",
                e.identity,
                deploy.join(", ")
            ),
            evidence: ev,
            defer: None,
            routine: false,
        })
    }
}
