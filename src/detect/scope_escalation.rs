//! `scope_escalation`: a mint with scopes beyond what the identity held, or a credential
//! lifetime far above its norm.
//!
//! A new scope escalates only when its privilege rank (`privileges.toml`) is above every scope
//! the identity held within `forget_after`; a newly seen scope of equal or lower rank is not
//! an escalation. A new non-admin scope that the fleet adopts at once (a policy rollout) is
//! judged at fleet level; a new admin scope always alerts.

use serde::Deserialize;
use serde_json::{Value, json};

use super::glob::GlobSet;
use super::peers::{Share, Verdict};
use super::privileges::Rank;
use super::{Cx, Defer, Detector, Finding, Spec, SpecError, evidence, tier_of};
use crate::baseline::{Class, IdentityBaseline, hash_value};
use crate::event::Action;
use crate::units::Duration;

/// `[thresholds]` of `scope_escalation.toml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    ttl_factor: f64,
    ttl_min_increase: Duration,
    fleet_min_identities: u32,
    fleet_window: Duration,
    fleet_grace: Duration,
}

pub(super) struct ScopeEscalation {
    spec: Spec,
    t: Thresholds,
    allow: GlobSet,
    forget_days: u16,
    fleet_days: u16,
    ttl_key: u64,
}

impl ScopeEscalation {
    pub(super) fn new(spec: Spec) -> Result<Self, SpecError> {
        let t: Thresholds = spec.thresholds()?;
        if t.ttl_factor < 1.0 {
            return Err(SpecError::Invalid {
                file: "scope_escalation.toml".into(),
                key: "thresholds.ttl_factor".into(),
                message: "must be at least 1".into(),
            });
        }
        if t.fleet_min_identities < 2
            || t.fleet_min_identities as usize > crate::baseline::fleet_slots()
        {
            return Err(SpecError::Invalid {
                file: "scope_escalation.toml".into(),
                key: "thresholds.fleet_min_identities".into(),
                message: format!("must be between 2 and {}", crate::baseline::fleet_slots()),
            });
        }
        Ok(ScopeEscalation {
            allow: GlobSet::new(&spec.allowlist.scopes),
            forget_days: (spec.forgetting.forget_after.as_secs() / 86_400).max(1) as u16,
            fleet_days: (t.fleet_window.as_secs() / 86_400).max(1) as u16,
            ttl_key: hash_value(Class::Scope, "ttl"),
            spec,
            t,
        })
    }
}

/// Seconds as the largest whole unit (`2d`, `36h`).
pub(super) fn human_secs(s: u64) -> String {
    match s {
        s if s >= 86_400 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

impl Detector for ScopeEscalation {
    fn name(&self) -> &'static str {
        "scope_escalation"
    }

    fn spec(&self) -> &Spec {
        &self.spec
    }

    fn learned(&self, b: &IdentityBaseline) -> u32 {
        b.mints
    }

    fn inspect(&self, cx: &Cx<'_>) -> Option<Finding> {
        if cx.event.action != Action::Mint || !cx.armed {
            return None;
        }
        let (v, b, e) = (cx.view, cx.baseline, cx.event);
        let since = v.day.saturating_sub(self.forget_days);
        let fleet_since = v.day.saturating_sub(self.fleet_days);
        let held = Rank::from_u8(b.max_rank(since));

        // Scopes beyond what was held, and audiences new to the identity whatever their
        // rank: a token for a new audience reaches a system the identity never reached.
        let mut news: Vec<New<'_>> = Vec::new();
        for (s, text) in v.scopes.iter().zip(&e.scopes) {
            let rank = Rank::from_u8(s.rank);
            let audience = text.starts_with("aud:");
            if (rank <= held && !audience)
                || b.scopes.seen_since(s.hash, since)
                || self.allow.matches(text)
            {
                continue;
            }
            let fleet = &cx.state.fleet;
            let others = fleet.identities_since(s.hash, fleet_since);
            // A value the fleet is adopting right now is a rollout, judged at fleet level.
            // An audience others have long used is judged by who takes it up: several
            // identities at once is a rollout (workloads start mounting a Vault token); one
            // alone is judged against its peers.
            let (rollout, key) = if audience {
                let key = crate::baseline::adoption_key(s.hash);
                (fleet.identities_since(key, v.day), key)
            } else {
                (others, s.hash)
            };
            if rank < Rank::Admin && rollout + 1 >= self.t.fleet_min_identities {
                continue;
            }
            news.push(New {
                hash: s.hash,
                key,
                text,
                rank,
                fleet: others,
                audience,
                defer: rank < Rank::Admin,
                peers: None,
            });
        }
        if !news.is_empty() {
            return Some(self.scope_finding(cx, held, since, news));
        }

        // A lifetime far above the norm.
        let ttl = e.ttl?;
        let max = u64::from(b.ttl_max);
        if b.ttl_n < 3 || max == 0 {
            return None;
        }
        if (ttl as f64) <= self.t.ttl_factor * max as f64
            || ttl < max + self.t.ttl_min_increase.as_secs()
        {
            return None;
        }
        let mut ev = evidence::base(b);
        ev.insert("held_rank".into(), json!(held.as_str()));
        ev.insert("held_scopes".into(), json!(held_scope_texts(cx, since)));
        ev.insert("ttl_seconds".into(), json!(ttl));
        ev.insert("longest_ttl_seconds".into(), json!(max));
        ev.insert("mints_with_ttl".into(), json!(b.ttl_n));
        let factor = ttl as f64 / max as f64;
        Some(Finding {
            severity: self.spec.severity_for(tier_of(v)),
            reason_key: self.ttl_key,
            reason: format!(
                "lifetime {} ({factor:.0}× the longest seen)",
                human_secs(ttl)
            ),
            summary: format!(
                "{} minted a credential valid for {}, {factor:.0} times the longest lifetime it had ({} over {} mints).",
                e.identity,
                human_secs(ttl),
                human_secs(max),
                b.ttl_n
            ),
            evidence: ev,
            defer: None,
            routine: false,
        })
    }
}

/// The scopes an identity held, with their ranks (evidence).
fn held_scope_texts(cx: &Cx<'_>, since: crate::baseline::Day) -> Vec<String> {
    let interner = &cx.state.interner;
    cx.baseline
        .scopes
        .recent(since)
        .take(12)
        .map(|x| {
            format!(
                "{} ({})",
                interner.text(x.hash),
                Rank::from_u8(x.aux).as_str()
            )
        })
        .collect()
}

/// A scope new to the identity.
struct New<'a> {
    hash: u64,
    /// The fleet value a rollout of it is counted by.
    key: u64,
    text: &'a str,
    rank: Rank,
    fleet: u32,
    audience: bool,
    /// May turn out to be a rollout.
    defer: bool,
    peers: Option<(Share, Verdict)>,
}

impl ScopeEscalation {
    fn scope_finding(
        &self,
        cx: &Cx<'_>,
        held: Rank,
        since: crate::baseline::Day,
        mut news: Vec<New<'_>>,
    ) -> Finding {
        let (v, b, e) = (cx.view, cx.baseline, cx.event);
        // The peers: a scope most of them hold is routine for the role.
        let group = cx.peers.map(|p| p.group());
        if let Some(g) = &group {
            for n in &mut news {
                let share = g.value(n.hash, since);
                n.peers = Some((share, g.verdict(&share, self.spec.peers.routine_share)));
            }
        }
        let routine = news
            .iter()
            .all(|n| n.peers.is_some_and(|(_, v)| v == Verdict::Routine));
        if !routine {
            news.retain(|n| !n.peers.is_some_and(|(_, v)| v == Verdict::Routine));
        }
        // The most privileged new scope speaks for the finding.
        news.sort_by_key(|n| std::cmp::Reverse((n.rank, !n.audience)));
        let top = &news[0];
        let held_scopes = held_scope_texts(cx, since);
        let mut ev = evidence::base(b);
        ev.insert("held_rank".into(), json!(held.as_str()));
        ev.insert("held_scopes".into(), json!(held_scopes));
        let mut severity = self.spec.severity_for(tier_of(v));
        if top.rank == Rank::Admin || top.peers.is_some_and(|(_, v)| v == Verdict::NewToPeers) {
            severity = severity.raised();
        }
        ev.insert(
            "new_scopes".into(),
            Value::Array(
                news.iter()
                    .map(|n| {
                        let mut x = json!({"scope": n.text, "rank": n.rank.as_str(), "fleet_identities": n.fleet});
                        if let (Some((share, _)), Value::Object(m)) = (n.peers, &mut x) {
                            m.insert("peers_with".into(), json!(share.with));
                        }
                        x
                    })
                    .collect(),
            ),
        );
        let held_text = if held_scopes.is_empty() {
            "none".to_string()
        } else {
            held_scopes.join(", ")
        };
        let mut summary = if top.audience && top.rank <= held {
            format!(
                "{} minted a credential for audience {}, which it never asked for; it held: {held_text}.",
                e.identity,
                top.text.trim_start_matches("aud:")
            )
        } else {
            format!(
                "{} minted a credential with {} ({}), beyond the {} scopes it held: {held_text}.",
                e.identity,
                top.text,
                top.rank.as_str(),
                held.as_str(),
            )
        };
        if let (Some(g), Some((share, _))) = (&group, top.peers) {
            let what = format!("hold {}", top.text);
            ev.extend(g.evidence(&share, &what));
            summary.push_str(&g.sentence(&share, &what));
        }
        // Only a value the fleet may still be adopting can turn out to be a rollout.
        let defer = (!routine && news.iter().all(|n| n.defer)).then(|| Defer {
            family: 0,
            replace_secs: 0,
            replace_class: 0,
            value: top.key,
            min_identities: self.t.fleet_min_identities,
            // Taking up an audience is a rollout when several do it the same day.
            window_days: if top.audience { 0 } else { self.fleet_days },
            grace_secs: self.t.fleet_grace.as_secs() as i64,
        });
        let reason = if top.audience && top.rank <= held {
            format!("new audience {}", top.text.trim_start_matches("aud:"))
        } else {
            format!("new {} scope {}", top.rank.as_str(), top.text)
        };
        Finding {
            severity,
            reason_key: top.hash,
            reason,
            summary,
            evidence: ev,
            defer,
            routine,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_durations() {
        assert_eq!(super::human_secs(3600), "1h");
        assert_eq!(super::human_secs(31_536_000), "365d");
        assert_eq!(super::human_secs(3607), "3607s");
        assert_eq!(super::human_secs(900), "15m");
    }
}
