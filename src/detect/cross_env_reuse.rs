//! `cross_env_reuse`: a credential presented where it was not minted for.
//!
//! Credentials are bound at mint to the environment and network they were minted for
//! (`baseline::Credentials`). On a later presentation this detector alerts when:
//! * the credential is used in another environment, and the identity's credentials do not
//!   routinely cross between that pair of environments (learned);
//! * an AWS session key is used from a network other than the one that minted it;
//! * a single-use token (OIDC `jti`) is presented a second time;
//!
//! and on mints when an identity that only ever minted for other environments, or never named
//! an environment at all, mints for production, or mints for production from an unprotected
//! branch.
//!
//! A first production mint is judged against the identity's peers too: among the peers whose
//! environments include the identity's, the share that also mint for production. Usual among
//! them (a release train's first production deploy, when its sibling workflows promote to
//! production too) is routine; done by none of them (a CI workflow minting for production
//! where no CI workflow ever does) is raised. In between, the finding is held for
//! `peer_grace`, and dropped if `peer_rollout` members of the group make the same move
//! meanwhile (the first release of a release train).

use serde::Deserialize;
use serde_json::json;

use super::new_runner::{Cidr, cidrs};
use super::peers::Verdict;
use super::{Cx, Defer, Detector, Finding, Spec, SpecError, evidence, tier_of};
use crate::baseline::peers::mask;
use crate::baseline::{Class, IdentityBaseline, Tier, env_pair, hash_value};
use crate::event::{Action, CredentialKind};
use crate::time::Timestamp;
use crate::units::Duration;

/// `[thresholds]` of `cross_env_reuse.toml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    unprotected_history: u32,
    /// How long bindings outlive their credential (read by the engine).
    pub binding_grace: Duration,
    /// How long a first production mint is held while the peer group may make the same
    /// move.
    peer_grace: Duration,
    /// Members of a group (the identity included) whose first production mints within a day
    /// make a rollout.
    peer_rollout: u32,
    /// A first production mint is routine among peers only this soon after the identity
    /// was first seen (and within the group's learned release cycle): a member that deployed
    /// elsewhere for longer than its peers do before their first release is not on their
    /// train.
    peer_first_release: Duration,
    /// The shortest release cycle assumed while the group's members are still making their
    /// first releases (a release train promotes at least fortnightly).
    peer_release_min: Duration,
    /// A first production mint of a commit the identity deployed elsewhere within this long
    /// is a promotion, routine ("0s": judge it like any first production mint).
    #[serde(default = "fortnight")]
    promotion_window: Duration,
}

fn fortnight() -> Duration {
    Duration::from_secs(14 * 86_400)
}

/// The fleet value that says a workflow of repository `repo` promoted a staged commit.
fn promotion_key(repo: &str) -> u64 {
    hash_value(Class::Scope, &format!("promotion:{repo}"))
}

/// The repository of a GitHub workflow or repository identity (`github:acme/api/...`).
fn repository_of(identity: &str) -> Option<&str> {
    let rest = identity.strip_prefix("github:")?;
    Some(rest.split_once("/.github/").map_or(rest, |(r, _)| r))
}

pub(super) struct CrossEnvReuse {
    spec: Spec,
    t: Thresholds,
    nets: Vec<Cidr>,
    forget_days: u16,
    first_prod_key: u64,
    unprotected_key: u64,
}

impl CrossEnvReuse {
    pub(super) fn new(spec: Spec) -> Result<Self, SpecError> {
        let t: Thresholds = spec.thresholds()?;
        if t.peer_rollout < 2 || t.peer_rollout as usize > crate::baseline::fleet_slots() {
            return Err(SpecError::Invalid {
                file: "cross_env_reuse.toml".into(),
                key: "thresholds.peer_rollout".into(),
                message: format!("must be between 2 and {}", crate::baseline::fleet_slots()),
            });
        }
        Ok(CrossEnvReuse {
            nets: cidrs(&spec)?,
            forget_days: (spec.forgetting.forget_after.as_secs() / 86_400).max(1) as u16,
            first_prod_key: hash_value(Class::Scope, "first-production-mint"),
            unprotected_key: hash_value(Class::Scope, "unprotected-production-mint"),
            spec,
            t,
        })
    }

    fn finding(
        &self,
        cx: &Cx<'_>,
        key: u64,
        reason: String,
        summary: String,
        extra: serde_json::Value,
    ) -> Finding {
        let mut ev = evidence::base(cx.baseline);
        if let serde_json::Value::Object(m) = extra {
            ev.extend(m);
        }
        Finding {
            severity: self.spec.severity_for(tier_of(cx.view)),
            reason_key: key,
            reason,
            summary,
            evidence: ev,
            defer: None,
            routine: false,
        }
    }
}

fn fp8(cx: &Cx<'_>) -> String {
    cx.event
        .credential
        .as_ref()
        .map(|c| c.fp.chars().take(8).collect())
        .unwrap_or_default()
}

impl CrossEnvReuse {
    /// What makes this production mint a promotion, if anything.
    fn promotion(&self, cx: &Cx<'_>) -> Option<String> {
        let window = (self.t.promotion_window.as_secs() / 86_400) as u16;
        if self.t.promotion_window.as_secs() == 0 {
            return None;
        }
        let (e, v) = (cx.event, cx.view);
        if let Some(sha) = e.context.sha.as_deref()
            && let Some(day) = cx.baseline.staged_on(sha)
            && v.day.saturating_sub(day) <= window
        {
            return Some(format!(
                "commit {} deployed elsewhere {} day(s) before",
                &sha[..sha.len().min(12)],
                v.day.saturating_sub(day)
            ));
        }
        let repo = repository_of(&e.identity)?;
        (e.context.sha.is_none()
            && !e.identity.contains("/.github/")
            && cx.state.fleet.identities_since(promotion_key(repo), v.day) > 0)
            .then(|| format!("a workflow of {repo} promoted a staged commit today"))
    }
}

impl Detector for CrossEnvReuse {
    fn name(&self) -> &'static str {
        "cross_env_reuse"
    }

    fn spec(&self) -> &Spec {
        &self.spec
    }

    /// Mints and uses: an AWS role's sessions are minted under the CI identity that assumed
    /// it, so the role itself only ever presents credentials.
    fn learned(&self, b: &IdentityBaseline) -> u32 {
        b.mints.saturating_add(b.uses)
    }

    fn learn(&self, cx: &Cx<'_>) {
        // A workflow's production mint of a staged commit: its repository's web-identity
        // mint that follows is part of the same promotion.
        let (e, v) = (cx.event, cx.view);
        if e.action == Action::Mint
            && e.outcome == crate::event::Outcome::Success
            && matches!(v.env, Some((_, Tier::Production)))
            && let (Some(sha), Some(repo)) = (e.context.sha.as_deref(), repository_of(&e.identity))
            && cx.baseline.staged_on(sha).is_some()
        {
            cx.state.fleet.observe(
                promotion_key(repo),
                crate::baseline::hash_identity(&e.identity),
                v.day,
            );
        }
    }

    fn inspect(&self, cx: &Cx<'_>) -> Option<Finding> {
        let (v, b, e) = (cx.view, cx.baseline, cx.event);
        let interner = &cx.state.interner;
        let since = v.day.saturating_sub(self.forget_days);
        match e.action {
            Action::Mint => {
                // The same single-use token presented again.
                if let (Some(bind), Some(cred)) = (cx.binding, &e.credential)
                    && bind.single_use
                    && cred.single_use
                {
                    let first = Timestamp::from_micros(bind.minted.saturating_mul(1_000_000));
                    return Some(self.finding(
                        cx,
                        v.cred.map_or(0, |k| k as u64),
                        format!("single-use token {} presented again", fp8(cx)),
                        format!(
                            "{} presented single-use token {} (credential {}) a second time; it was first presented at {first} in record {}.",
                            e.identity, e.id, fp8(cx), bind.first_event
                        ),
                        json!({"first_presented": first, "first_event_id": bind.first_event, "presentations": bind.presentations + 1}),
                    ));
                }
                let (env, tier) = v.env?;
                if tier != Tier::Production {
                    return None;
                }
                let env_name = e.environment.as_deref().unwrap_or("production");
                // Production from an unprotected branch, unless that is this identity's norm.
                if e.context.ref_protected == Some(false)
                    && b.prod_unprotected < self.t.unprotected_history
                {
                    let git_ref = e.context.git_ref.as_deref().unwrap_or("an unprotected ref");
                    return Some(self.finding(
                        cx,
                        self.unprotected_key,
                        format!("{env_name} mint from unprotected {git_ref}"),
                        format!(
                            "{} minted a {env_name} credential from {git_ref}, which is not protected; it did so {} times before in {} {env_name} mints.",
                            e.identity, b.prod_unprotected, b.prod_mints
                        ),
                        json!({"ref": git_ref, "ref_protected": false, "production_mints": b.prod_mints, "unprotected_production_mints": b.prod_unprotected}),
                    ));
                }
                // A first production mint by an identity that only minted elsewhere, or that
                // never named an environment.
                if cx.armed
                    && b.mints >= self.spec.learning.min_events
                    && !b.envs.seen_since(env, since)
                {
                    let known: Vec<(String, Tier)> = b
                        .envs
                        .recent(since)
                        .map(|x| (interner.text(x.hash), Tier::from_u8(x.aux)))
                        .collect();
                    let elsewhere =
                        !known.is_empty() && known.iter().all(|(_, t)| *t != Tier::Production);
                    let unnamed = known.is_empty() && b.noenv_last != 0 && b.noenv_last >= since;
                    if !(elsewhere || unnamed) {
                        return None;
                    }
                    let mut names: Vec<String> = known.into_iter().map(|(n, _)| n).collect();
                    if b.noenv_last != 0 && b.noenv_last >= since {
                        names.push("no environment".into());
                    }
                    let history = if unnamed {
                        "it never named an environment".to_string()
                    } else {
                        format!("it minted only for {}", names.join(", "))
                    };
                    let mut f = self.finding(
                        cx,
                        self.first_prod_key,
                        format!("first {env_name} mint"),
                        format!(
                            "{} minted a {env_name} credential for the first time; in {} mints over {:.0} days {history}.",
                            e.identity,
                            b.mints,
                            b.days_known(),
                        ),
                        json!({"known_environments": names, "environments": mask::describe(b.env_mask)}),
                    );
                    // A promotion: the commit went to another environment first (a release
                    // train), or, for the repository's web-identity mint, a workflow of the
                    // same repository promoted one today. An attacker's run brings a commit
                    // of its own.
                    if let Some(promoted) = self.promotion(cx) {
                        f.evidence.insert("promotion".into(), json!(promoted));
                        f.summary
                            .push_str(&format!(" It is a promotion: {promoted}."));
                        f.routine = true;
                        return Some(f);
                    }
                    if let Some(p) = cx.peers {
                        // Peers are compared on the highest tier the identity deploys to
                        // (staging, else another environment, else none): a release train
                        // that also runs tests in `testing` is still a staging deployer. The
                        // finest group with enough such peers judges.
                        let basis = mask::highest(b.env_mask);
                        let (g, share) = p.group_for(|g| g.envs(basis, mask::PRODUCTION));
                        let what = format!(
                            "of those minting for {} also mint for production",
                            mask::describe(basis)
                        );
                        f.evidence.extend(g.evidence(&share, &what));
                        f.summary.push_str(&g.sentence(&share, &what));
                        // Routine only within the group's release cycle: the longest its
                        // members deployed elsewhere before their first production deploy
                        // (a day of slack), at least `peer_release_min` (more members are
                        // still to make their first release: a fortnight) and at most
                        // `peer_first_release`.
                        let cap = self.t.peer_first_release.as_secs() as f64 / 86_400.0;
                        let floor = self.t.peer_release_min.as_secs() as f64 / 86_400.0;
                        let cycle = match g.first_release_days() {
                            0 => cap,
                            d => (f64::from(d) + 1.0).clamp(floor.min(cap), cap),
                        };
                        let mut verdict = g.verdict(&share, self.spec.peers.routine_share);
                        f.evidence.insert(
                            "peer_release_cycle_days".into(),
                            json!((cycle * 10.0).round() / 10.0),
                        );
                        if verdict == Verdict::Routine && b.days_known() > cycle {
                            verdict = Verdict::Some;
                        }
                        match verdict {
                            Verdict::Routine => f.routine = true,
                            Verdict::Unknown => {}
                            v => {
                                if v == Verdict::NewToPeers {
                                    f.severity = f.severity.raised();
                                }
                                f.defer = Some(Defer {
                                    value: g.transition(basis, mask::PRODUCTION),
                                    min_identities: self.t.peer_rollout,
                                    window_days: 1,
                                    grace_secs: self.t.peer_grace.as_secs() as i64,
                                    family: 0,
                                    replace_secs: 0,
                                    replace_class: 0,
                                });
                            }
                        }
                    }
                    return Some(f);
                }
                None
            }
            Action::Use => {
                let bind = cx.binding?;
                // An AWS session key presented from another network than it was minted from.
                if e.credential
                    .as_ref()
                    .is_some_and(|c| c.kind == CredentialKind::AwsAccessKey)
                    && let (Some(minted_from), Some(net), Some(ip)) =
                        (bind.net, &v.net, e.runner.ip.as_deref())
                    && minted_from != net.hash
                    && !self.nets.iter().any(|c| c.contains(ip))
                {
                    let from = interner.text(minted_from);
                    let to = net.text();
                    return Some(self.finding(
                        cx,
                        v.cred.map_or(0, |k| k as u64),
                        format!("session key used from {to}, minted from {from}"),
                        format!(
                            "{} used AWS session key {} from network {to} ({ip}); the key was minted from {from} at {} for this identity's runner.",
                            e.identity,
                            fp8(cx),
                            Timestamp::from_micros(bind.minted.saturating_mul(1_000_000))
                        ),
                        json!({"minted_from": from, "used_from": to, "minted_at": Timestamp::from_micros(bind.minted.saturating_mul(1_000_000)), "mint_event_id": bind.first_event}),
                    ));
                }
                // Presented in another environment than it was minted for.
                let (Some(minted_for), Some((used_in, _))) = (bind.env, v.env) else {
                    return None;
                };
                if minted_for == used_in
                    || !cx.armed
                    || b.env_pairs.seen_since(env_pair(minted_for, used_in), since)
                {
                    return None;
                }
                let m = interner.text(minted_for);
                let u = e
                    .environment
                    .clone()
                    .unwrap_or_else(|| interner.text(used_in));
                Some(self.finding(
                    cx,
                    v.cred.map_or(0, |k| k as u64),
                    format!("credential minted for {m} presented in {u}"),
                    format!(
                        "{} presented a credential minted for {m} (credential {}, minted at {}) in {u}{}; its credentials have not crossed from {m} to {u} before.",
                        e.identity,
                        fp8(cx),
                        Timestamp::from_micros(bind.minted.saturating_mul(1_000_000)),
                        e.context.resource.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
                    ),
                    json!({"minted_for": m, "presented_in": u, "minted_at": Timestamp::from_micros(bind.minted.saturating_mul(1_000_000)), "mint_event_id": bind.first_event}),
                ))
            }
            _ => None,
        }
    }
}
