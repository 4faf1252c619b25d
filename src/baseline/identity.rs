//! One identity's baseline and how it learns from an event.

use serde::{Deserialize, Serialize};

use super::peers::{GroupId, LEVELS};
use super::timeofweek::TimeOfWeek;
use super::values::ValueSet;
use super::{Day, Interner, Tier, View, attr_text};
use crate::event::{Action, Event, Outcome};

/// How much to remember and for how long; set from the detectors' specifications.
#[derive(Clone, Debug, PartialEq)]
pub struct LearnParams {
    /// Half-life of the time-of-week counts, in days.
    pub mint_half_life_days: f32,
    /// Runner attributes and networks unseen this long are forgotten.
    pub runner_forget_days: u16,
    /// Scopes and TTLs unseen this long are forgotten.
    pub scope_forget_days: u16,
    /// Environments and environment pairs unseen this long are forgotten.
    pub env_forget_days: u16,
}

impl Default for LearnParams {
    fn default() -> Self {
        LearnParams {
            mint_half_life_days: 21.0,
            runner_forget_days: 45,
            scope_forget_days: 45,
            env_forget_days: 90,
        }
    }
}

const CAP_ATTRS: usize = 16;
const CAP_NETS: usize = 32;
const CAP_SCOPES: usize = 32;
const CAP_ENVS: usize = 8;
const CAP_PAIRS: usize = 8;
const CAP_REFS: usize = 8;
/// Commits remembered per identity as staged.
pub const CAP_STAGED: usize = 8;

/// What nhiwatch believes about one identity.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IdentityBaseline {
    /// First event time (Unix seconds).
    pub first_seen: i64,
    /// Last event time (Unix seconds).
    pub last_seen: i64,
    /// Events learned (successful mints and uses).
    pub events: u32,
    /// Successful mints learned.
    pub mints: u32,
    /// Successful uses learned.
    pub uses: u32,
    /// Refused mints and uses seen (inspected, never learned).
    pub failures: u32,
    /// When it mints.
    pub tow: TimeOfWeek,
    /// Stable runner attributes (kind, runner id, requester group, named sources).
    pub attrs: ValueSet,
    /// Networks it came from.
    pub nets: ValueSet,
    /// Events that carried a network address.
    pub net_obs: u32,
    /// Scopes held (aux: privilege rank).
    pub scopes: ValueSet,
    /// Environments minted for (aux: tier).
    pub envs: ValueSet,
    /// (minted-for, presented-in) environment pairs of its credentials' uses.
    pub env_pairs: ValueSet,
    /// Longest credential lifetime seen, seconds.
    pub ttl_max: u32,
    /// Mints with a lifetime.
    pub ttl_n: u32,
    /// Mints for production.
    pub prod_mints: u32,
    /// Mints for production from an unprotected ref.
    pub prod_unprotected: u32,
    /// The last day it minted without naming an environment (0: never). "No environment"
    /// is a state, not a blank: a build job that never deployed anywhere minting for
    /// production is judged like a staging deployer doing so.
    pub noenv_last: Day,
    /// When it mints for production, kept once it mints for production and for something
    /// else too (a pipeline that deploys to production by day and runs tests at night).
    pub prod_tow: Option<Box<TimeOfWeek>>,
    /// The shapes of the git refs it minted from ([`ref_shape`]; aux 1: for production).
    #[serde(default)]
    pub refs: ValueSet,
    /// Uses of long-term keys (`AKIA…`) for anything but getting a session from STS: an
    /// identity that otherwise works with short-lived sessions using one is a standing
    /// credential in automation.
    #[serde(default)]
    pub long_term_uses: u32,
    /// The commits it deployed to a non-production environment, latest last: a hash of the
    /// `sha` (high 48 bits) and the day (low 16), at most [`CAP_STAGED`].
    #[serde(default)]
    pub staged: Vec<u64>,
    /// Its candidate peer groups, finest first (set by the engine; not stored, recomputed
    /// when a snapshot is restored).
    #[serde(skip)]
    pub peers: [GroupId; LEVELS],
    /// Its environment-tier combination as its peer groups count it.
    pub env_mask: u8,
    /// The time-of-week windows (bits 0–47) and weekends (bit 48) its peer groups count it
    /// in.
    pub peer_windows: u64,
    /// What it does counts for its peer groups from this day on (it raised a finding the
    /// day before).
    pub peer_quiet_from: Day,
}

impl IdentityBaseline {
    /// A baseline starting at `secs`.
    pub fn new(secs: i64) -> Self {
        IdentityBaseline {
            first_seen: secs,
            last_seen: secs,
            ..Default::default()
        }
    }

    /// Days between the first and the last event.
    pub fn days_known(&self) -> f64 {
        (self.last_seen - self.first_seen).max(0) as f64 / 86_400.0
    }

    /// The highest privilege rank among scopes seen since `since`.
    pub fn max_rank(&self, since: Day) -> u8 {
        self.scopes.recent(since).map(|e| e.aux).max().unwrap_or(0)
    }

    /// Heap bytes held (memory accounting).
    pub fn heap_bytes(&self) -> usize {
        self.attrs.heap_bytes()
            + self.nets.heap_bytes()
            + self.scopes.heap_bytes()
            + self.envs.heap_bytes()
            + self.env_pairs.heap_bytes()
            + self.refs.heap_bytes()
            + self.staged.capacity() * 8
            + self
                .prod_tow
                .as_ref()
                .map_or(0, |_| std::mem::size_of::<TimeOfWeek>())
    }

    /// Learns from an event (after every detector inspected it). Refused operations are
    /// counted but not learned: an attacker's failed attempts must not become normal.
    pub fn learn(&mut self, event: &Event, view: &View, p: &LearnParams, interner: &Interner) {
        self.first_seen = self.first_seen.min(view.secs);
        self.last_seen = self.last_seen.max(view.secs);
        if event.outcome == Outcome::Failure {
            self.failures = self.failures.saturating_add(1);
            return;
        }
        self.events = self.events.saturating_add(1);
        let day = view.day;
        let runner_horizon = day.saturating_sub(p.runner_forget_days);
        for a in &view.attrs {
            if self
                .attrs
                .observe(a.hash, day, a.class as u8, CAP_ATTRS, runner_horizon)
            {
                interner.intern(a.hash, &attr_text(event, a));
            }
        }
        if let Some(net) = &view.net {
            self.net_obs = self.net_obs.saturating_add(1);
            if self
                .nets
                .observe(net.hash, day, net.block(), CAP_NETS, runner_horizon)
            {
                interner.intern(net.hash, &net.text());
            }
        }
        match event.action {
            Action::Mint => {
                let production = matches!(view.env, Some((_, Tier::Production)));
                // A production time of week once it mints for production and for something
                // else: a copy of the whole one when production was all it did until now.
                if self.prod_tow.is_none() && self.mints > 0 {
                    if production && self.prod_mints < self.mints {
                        self.prod_tow = Some(Box::default());
                    } else if !production && self.prod_mints == self.mints {
                        self.prod_tow = Some(Box::new(self.tow.clone()));
                    }
                }
                if production && let Some(t) = &mut self.prod_tow {
                    t.add(view.tow_bin, day, view.secs, p.mint_half_life_days);
                }
                if view.env.is_none() {
                    self.noenv_last = day.max(1);
                }
                self.mints = self.mints.saturating_add(1);
                self.tow
                    .add(view.tow_bin, day, view.secs, p.mint_half_life_days);
                let scope_horizon = day.saturating_sub(p.scope_forget_days);
                for (s, text) in view.scopes.iter().zip(&event.scopes) {
                    if self
                        .scopes
                        .observe(s.hash, day, s.rank, CAP_SCOPES, scope_horizon)
                    {
                        interner.intern(s.hash, text);
                    }
                }
                if let Some(ttl) = event.ttl {
                    self.ttl_max = self.ttl_max.max(u32::try_from(ttl).unwrap_or(u32::MAX));
                    self.ttl_n = self.ttl_n.saturating_add(1);
                }
                if let Some(r) = event.context.git_ref.as_deref() {
                    let production = u8::from(production);
                    let hash = ref_hash(r);
                    let horizon = day.saturating_sub(p.env_forget_days);
                    let known = self.refs.get(hash).map_or(0, |e| e.aux);
                    if self
                        .refs
                        .observe(hash, day, known | production, CAP_REFS, horizon)
                    {
                        interner.intern(hash, &ref_shape(r));
                    }
                }
                if let (Some((_, tier)), Some(sha)) = (view.env, event.context.sha.as_deref())
                    && tier != Tier::Production
                {
                    let h = staged_hash(sha);
                    self.staged.retain(|x| x & !0xffff != h);
                    if self.staged.len() >= CAP_STAGED {
                        self.staged.remove(0);
                    }
                    self.staged.push(h | u64::from(day));
                }
                if let (Some((env, tier)), Some(name)) = (view.env, event.environment.as_deref()) {
                    let horizon = day.saturating_sub(p.env_forget_days);
                    if self.envs.observe(env, day, tier as u8, CAP_ENVS, horizon) {
                        interner.intern(env, name);
                    }
                    if tier == Tier::Production {
                        self.prod_mints = self.prod_mints.saturating_add(1);
                        if event.context.ref_protected == Some(false) {
                            self.prod_unprotected = self.prod_unprotected.saturating_add(1);
                        }
                    }
                }
            }
            Action::Use => {
                self.uses = self.uses.saturating_add(1);
                if direct_long_term_use(event) {
                    self.long_term_uses = self.long_term_uses.saturating_add(1);
                }
            }
            Action::Job | Action::Trust | Action::Other => {}
        }
    }

    /// The day the identity last deployed commit `sha` to a non-production environment.
    pub fn staged_on(&self, sha: &str) -> Option<Day> {
        let h = staged_hash(sha);
        self.staged
            .iter()
            .rev()
            .find(|x| *x & !0xffff == h)
            .map(|x| (*x & 0xffff) as Day)
    }

    /// Whether the identity minted from a ref of this shape, and whether for production.
    pub fn ref_seen(&self, hash: u64) -> Option<bool> {
        self.refs.get(hash).map(|e| e.aux & 1 == 1)
    }

    /// Records that a credential minted for one environment was presented in another.
    pub fn learn_env_pair(&mut self, pair: u64, day: Day, p: &LearnParams) {
        let horizon = day.saturating_sub(p.env_forget_days);
        self.env_pairs.observe(pair, day, 0, CAP_PAIRS, horizon);
    }
}

/// A long-term key (`AKIA…`) used directly, not only to get a session from STS (what an
/// IAM user held to MFA-backed sessions does with it).
pub fn direct_long_term_use(event: &Event) -> bool {
    event.action == Action::Use
        && event
            .credential
            .as_ref()
            .is_some_and(|c| c.kind == crate::event::CredentialKind::AwsLongTermKey)
        && event.context.resource.as_deref() != Some("sts.amazonaws.com")
}

/// A commit's hash as kept in [`IdentityBaseline::staged`] (low 16 bits clear).
fn staged_hash(sha: &str) -> u64 {
    let sha = sha.trim();
    // Commit ids are lowercase hex as the claims carry them; fold the odd one without
    // allocating for the rest.
    let h = if sha.bytes().any(|b| b.is_ascii_uppercase()) {
        super::hash_value(super::Class::Scope, &sha.to_ascii_lowercase())
    } else {
        super::hash_value(super::Class::Scope, sha)
    };
    h & !0xffff
}

/// The shape of a git ref: runs of digits become `#`, so every release tag (`refs/tags/v1.4.2`
/// → `refs/tags/v#.#.#`), release branch or pull request number has one shape, and a branch
/// nobody deployed from has its own.
pub fn ref_shape(r: &str) -> String {
    let mut out = String::with_capacity(r.len());
    let mut digits = false;
    for c in r.trim().chars() {
        if c.is_ascii_digit() {
            if !digits {
                out.push('#');
            }
            digits = true;
        } else {
            out.push(c);
            digits = false;
        }
    }
    out
}

/// The stable hash of a ref's shape, and the shape.
/// The stable hash of a ref's shape: the hash of `ref:` and [`ref_shape`], computed without
/// building the text (every mint with a ref asks for it).
pub fn ref_hash(r: &str) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::with_seed(super::Class::Scope as u64);
    h.update(b"ref:");
    let mut rest = r.trim().as_bytes();
    while !rest.is_empty() {
        let lit = rest
            .iter()
            .position(u8::is_ascii_digit)
            .unwrap_or(rest.len());
        h.update(&rest[..lit]);
        rest = &rest[lit..];
        let digits = rest
            .iter()
            .position(|b| !b.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits > 0 {
            h.update(b"#");
            rest = &rest[digits..];
        }
    }
    h.digest()
}

#[cfg(test)]
mod ref_tests {
    use super::*;

    #[test]
    fn ref_shapes_fold_numbers() {
        assert_eq!(ref_shape("refs/tags/v1.4.2"), "refs/tags/v#.#.#");
        assert_eq!(ref_shape("refs/tags/v10.0.13"), "refs/tags/v#.#.#");
        assert_eq!(ref_shape("refs/pull/123/merge"), "refs/pull/#/merge");
        assert_eq!(ref_shape("refs/heads/main"), "refs/heads/main");
        assert_ne!(
            ref_shape("refs/heads/fix-login"),
            ref_shape("refs/heads/main")
        );
        // The hash is the shape's, without building it.
        for r in [
            "refs/tags/v1.4.2",
            " refs/pull/12/merge ",
            "main",
            "7",
            "",
            "r\u{e9}f-42x",
        ] {
            let shape = format!("ref:{}", ref_shape(r));
            assert_eq!(
                ref_hash(r),
                crate::baseline::hash_value(crate::baseline::Class::Scope, &shape),
                "{r:?}"
            );
        }
    }
}
