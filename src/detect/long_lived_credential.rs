//! `long_lived_credential`: a standing credential where the identity used short-lived ones.
//!
//! A mint whose lifetime is above the threshold for its source by an identity whose earlier
//! credentials all stayed within it; or a long-term AWS key (`AKIA…`) presented by an identity
//! that until now presented only session keys. An identity that always held long-lived
//! credentials is no change (the inventory lists it); a planned rotation of a standing key is
//! none either.

use serde::Deserialize;
use serde_json::json;

use super::scope_escalation::human_secs;
use super::{Cx, Detector, Finding, Spec, SpecError, evidence, tier_of};
use crate::baseline::{Class, IdentityBaseline, hash_value};
use crate::event::{Action, Outcome, Source};
use crate::units::Duration;

/// `[thresholds]` of `long_lived_credential.toml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Thresholds {
    vault: Duration,
    kubernetes: Duration,
    cloudtrail: Duration,
    other: Duration,
    long_term_keys: bool,
}

pub(super) struct LongLivedCredential {
    spec: Spec,
    t: Thresholds,
}

impl LongLivedCredential {
    pub(super) fn new(spec: Spec) -> Result<Self, SpecError> {
        let t: Thresholds = spec.thresholds()?;
        for (k, d) in [
            ("vault", t.vault),
            ("kubernetes", t.kubernetes),
            ("cloudtrail", t.cloudtrail),
            ("other", t.other),
        ] {
            if d.as_secs() < 60 {
                return Err(SpecError::Invalid {
                    file: "long_lived_credential.toml".into(),
                    key: format!("thresholds.{k}"),
                    message: "must be at least a minute".into(),
                });
            }
        }
        Ok(LongLivedCredential { spec, t })
    }

    fn limit(&self, source: Source) -> u64 {
        match source {
            Source::Vault => self.t.vault,
            Source::Kubernetes => self.t.kubernetes,
            Source::Cloudtrail => self.t.cloudtrail,
            _ => self.t.other,
        }
        .as_secs()
    }
}

impl Detector for LongLivedCredential {
    fn name(&self) -> &'static str {
        "long_lived_credential"
    }

    fn spec(&self) -> &Spec {
        &self.spec
    }

    fn learned(&self, b: &IdentityBaseline) -> u32 {
        b.ttl_n.max(b.uses)
    }

    fn inspect(&self, cx: &Cx<'_>) -> Option<Finding> {
        let (e, v, b) = (cx.event, cx.view, cx.baseline);
        if !cx.armed || e.outcome != Outcome::Success {
            return None;
        }
        let mut ev = evidence::base(b);
        let (key, reason, summary) = match e.action {
            Action::Mint => {
                let ttl = e.ttl?;
                let limit = self.limit(e.source);
                let max = u64::from(b.ttl_max);
                if ttl <= limit || max > limit || b.ttl_n < self.spec.learning.min_events {
                    return None;
                }
                ev.insert("ttl_seconds".into(), json!(ttl));
                ev.insert("threshold_seconds".into(), json!(limit));
                ev.insert("longest_ttl_seconds".into(), json!(max));
                ev.insert("mints_with_ttl".into(), json!(b.ttl_n));
                (
                    "ttl",
                    format!("standing credential: lifetime {}", human_secs(ttl)),
                    format!(
                        "{} minted a credential valid for {}, above the {} line for {}; its {} earlier credentials lived at most {}.",
                        e.identity,
                        human_secs(ttl),
                        human_secs(limit),
                        e.source.as_str(),
                        b.ttl_n,
                        human_secs(max)
                    ),
                )
            }
            Action::Use if self.t.long_term_keys => {
                let sessions = b.uses.saturating_sub(b.long_term_uses);
                if !crate::baseline::direct_long_term_use(e)
                    || b.long_term_uses > 0
                    || sessions < self.spec.learning.min_events
                {
                    return None;
                }
                ev.insert("session_key_uses".into(), json!(sessions));
                (
                    "long_term_key",
                    "long-term access key where it used sessions".to_string(),
                    format!(
                        "{} called {} with its long-term access key (AKIA…) after {sessions} uses of keys that were short-lived sessions or only got them.",
                        e.identity,
                        e.context.resource.as_deref().unwrap_or("AWS")
                    ),
                )
            }
            _ => return None,
        };
        Some(Finding {
            severity: self.spec.severity_for(tier_of(v)),
            reason_key: hash_value(Class::Scope, key),
            reason,
            summary,
            evidence: ev,
            defer: None,
            routine: false,
        })
    }
}
