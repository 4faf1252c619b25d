//! `new_runner`: a credential minted or used from a runner the identity has not used.
//!
//! Judged on stable attributes only (see `baseline::view`): hosted or self-hosted, GitLab
//! runner id, Kubernetes token requester group, named source, network prefix. A value the
//! fleet already shares is not news; one that is new to the whole fleet is held for
//! `fleet_grace` and dropped if the fleet adopts it (a runner-pool rollout, a subnet
//! migration). A runner id is judged by itself: a project's job on a runner id nobody used
//! alerts unless that runner reaches the rollout threshold, or the project's runners were
//! replaced: its later jobs run on the new id again and never on an old one, while other
//! projects get new runner ids too (a re-registered fleet). A new runner kind or network
//! that the identity keeps using while it never goes back to the old one is a move, not
//! news (the engine judges it; see [`super::Defer::replace_secs`]). Identities whose networks churn (cloud-hosted runners get a new /16
//! nearly every job) are only alerted on a network outside the public /8 blocks they run in
//! that no other identity has used.
//!
//! Each new value is also judged against the identity's peers: one most of its peers use (a
//! workflow moving to the self-hosted runners its sibling workflows run on) is routine; one
//! none of them uses raises the severity.

use std::net::IpAddr;

use serde::Deserialize;
use serde_json::{Value, json};

use super::glob::GlobSet;
use super::peers::{Share, Verdict};
use super::{Cx, Defer, Detector, Finding, Spec, SpecError, evidence, tier_of};
use crate::baseline::{Class, IdentityBaseline, attr_text};
use crate::event::Action;
use crate::units::Duration;

/// `[thresholds]` of `new_runner.toml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    fleet_min_identities: u32,
    fleet_window: Duration,
    fleet_grace: Duration,
    churn_min_networks: u32,
    /// How long a runner id new to an identity that runs on others is held to see whether
    /// its runners were replaced (a re-registered fleet) or one was added.
    #[serde(default = "default_replacement_window")]
    replacement_window: Duration,
    /// Identities (the one judged included) a GitLab runner id serves that make it a shared
    /// runner: a group or instance runner, which an administrator registers, rather than a
    /// runner registered into one project (what a rogue runner is).
    #[serde(default = "default_shared_runner_identities")]
    pub(super) shared_runner_identities: u32,
}

fn default_shared_runner_identities() -> u32 {
    2
}

fn default_replacement_window() -> Duration {
    Duration::from_secs(12 * 3600)
}

/// The family of GitLab runner ids: several identities moving to new ones at once is what a
/// fleet re-registration looks like (judged with each identity's own later jobs).
const RUNNER_ID_FAMILY: u64 = 0x5255_4e4e_4552_4944;

/// An IP network (`10.0.0.0/8`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cidr {
    addr: IpAddr,
    len: u8,
}

impl Cidr {
    pub(crate) fn parse(s: &str) -> Option<Cidr> {
        let (a, l) = s.split_once('/').unwrap_or((s, ""));
        let addr: IpAddr = a.trim().parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = if l.is_empty() {
            max
        } else {
            l.trim().parse().ok()?
        };
        (len <= max).then_some(Cidr { addr, len })
    }

    pub(crate) fn contains(&self, ip: &str) -> bool {
        let Ok(ip) = ip.trim_ascii().parse::<IpAddr>() else {
            return false;
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => {
                let mask = if self.len == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(self.len))
                };
                u32::from(n) & mask == u32::from(i) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(i)) => {
                let mask = if self.len == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(self.len))
                };
                u128::from(n) & mask == u128::from(i) & mask
            }
            _ => false,
        }
    }
}

/// Parses the `networks` allowlist of a specification.
pub(super) fn cidrs(spec: &Spec) -> Result<Vec<Cidr>, SpecError> {
    spec.allowlist
        .networks
        .iter()
        .map(|n| {
            Cidr::parse(n).ok_or_else(|| SpecError::Invalid {
                file: format!("{}.toml", spec.detector.name),
                key: "allowlist.networks".into(),
                message: format!("{n:?} is not a network (CIDR)"),
            })
        })
        .collect()
}

pub(super) struct NewRunner {
    spec: Spec,
    t: Thresholds,
    nets: Vec<Cidr>,
    runners: GlobSet,
    forget_days: u16,
    fleet_days: u16,
}

impl NewRunner {
    pub(super) fn new(spec: Spec) -> Result<Self, SpecError> {
        let t: Thresholds = spec.thresholds()?;
        if t.fleet_min_identities < 2
            || t.fleet_min_identities as usize > crate::baseline::fleet_slots()
        {
            return Err(SpecError::Invalid {
                file: "new_runner.toml".into(),
                key: "thresholds.fleet_min_identities".into(),
                message: format!("must be between 2 and {}", crate::baseline::fleet_slots()),
            });
        }
        if t.shared_runner_identities < 2 || t.shared_runner_identities > t.fleet_min_identities {
            return Err(SpecError::Invalid {
                file: "new_runner.toml".into(),
                key: "thresholds.shared_runner_identities".into(),
                message: format!(
                    "must be between 2 and fleet_min_identities ({})",
                    t.fleet_min_identities
                ),
            });
        }
        Ok(NewRunner {
            nets: cidrs(&spec)?,
            runners: GlobSet::new(&spec.allowlist.runners),
            forget_days: (spec.forgetting.forget_after.as_secs() / 86_400).max(1) as u16,
            fleet_days: (t.fleet_window.as_secs() / 86_400).max(1) as u16,
            spec,
            t,
        })
    }
}

struct Novel {
    class: Class,
    text: String,
    hash: u64,
    fleet: u32,
    defer: Option<u32>,
    family: u64,
    /// A runner id new to an identity that runs on other runner ids.
    replace: bool,
    peers: Option<(Share, Verdict)>,
}

impl Detector for NewRunner {
    fn name(&self) -> &'static str {
        "new_runner"
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
        let (v, b, e) = (cx.view, cx.baseline, cx.event);
        let since = v.day.saturating_sub(self.forget_days);
        let fleet_since = v.day.saturating_sub(self.fleet_days);
        let fleet = &cx.state.fleet;
        let min = self.t.fleet_min_identities;
        let mut novel: Vec<Novel> = Vec::new();
        for a in &v.attrs {
            if b.attrs.seen_since(a.hash, since) {
                continue;
            }
            match a.class {
                // Hosted ↔ self-hosted: only news when the identity has a known kind.
                Class::RunnerKind => {
                    if b.attrs
                        .recent(since)
                        .any(|x| x.aux == Class::RunnerKind as u8)
                    {
                        // Never a fleet rollout (every identity has a kind); held only to see
                        // whether the identity moved for good.
                        novel.push(Novel {
                            class: a.class,
                            text: attr_text(e, a),
                            hash: a.hash,
                            fleet: 0,
                            defer: Some(u32::MAX),
                            family: 0,
                            replace: true,
                            peers: None,
                        });
                    }
                }
                _ => {
                    let text = attr_text(e, a);
                    if self.runners.matches(&text) {
                        continue;
                    }
                    // A GitLab runner id that serves other pipelines too is a shared runner
                    // (group or instance), registered by an administrator: a fleet value
                    // from the second identity on. A runner registered into one project
                    // serves that project alone.
                    let needed = if a.class == Class::RunnerId {
                        self.t.shared_runner_identities
                    } else {
                        min
                    };
                    let others = fleet.identities_since(a.hash, fleet_since);
                    if others + 1 >= needed {
                        continue;
                    }
                    let replace = a.class == Class::RunnerId
                        && b.attrs
                            .recent(since)
                            .any(|x| x.aux == Class::RunnerId as u8);
                    novel.push(Novel {
                        class: a.class,
                        text,
                        hash: a.hash,
                        fleet: others,
                        defer: Some(min),
                        family: if replace { RUNNER_ID_FAMILY } else { 0 },
                        replace,
                        peers: None,
                    });
                }
            }
        }
        if let (Some(net), Some(ip)) = (&v.net, e.runner.ip.as_deref())
            && !b.nets.seen_since(net.hash, since)
            && !self.nets.iter().any(|c| c.contains(ip))
        {
            // An identity on cloud-hosted runners gets a new /16 nearly every job. Its new
            // network is news only outside the public /8 blocks it or the fleet's churning
            // runners already use, and only if no other identity used it; a steady
            // identity's new network is news unless enough identities use it to call it a
            // rollout.
            let churning = b.nets.count_recent(since) as u32 >= self.t.churn_min_networks;
            let block = net.block();
            let known_block = block != 0
                && (b.nets.recent(since).any(|x| x.aux == block)
                    || net
                        .block_hash()
                        .is_some_and(|h| fleet.identities_since(h, fleet_since) >= 2));
            let needed = if churning { 2 } else { min };
            let others = fleet.identities_since(net.hash, fleet_since);
            if !(churning && known_block)
                && others + 1 < needed
                && (b.net_obs > 0 || !b.attrs.entries().is_empty())
            {
                // A rollout is still several identities adopting it, whatever the churn:
                // one run's mint and calls (two identities) do not make one.
                novel.push(Novel {
                    class: Class::Network,
                    text: net.text(),
                    hash: net.hash,
                    fleet: others,
                    defer: Some(min),
                    family: net.family(),
                    // A move within the address space it runs in (private to private, or
                    // within one public /8), not churn.
                    replace: !churning && b.nets.recent(since).any(|x| x.aux == block),
                    peers: None,
                });
            }
        }
        if novel.is_empty() {
            return None;
        }
        // The peers: a runner attribute most of them use is routine for the role. Networks
        // are judged at fleet level only (peers of one role often run in different ones).
        let group = cx.peers.map(|p| p.group());
        let mut routine = Vec::new();
        if let Some(g) = &group {
            for n in &mut novel {
                if n.class != Class::Network {
                    let share = g.value(n.hash, since);
                    n.peers = Some((share, g.verdict(&share, self.spec.peers.routine_share)));
                }
            }
            let (r, rest): (Vec<Novel>, Vec<Novel>) = novel
                .into_iter()
                .partition(|n| n.peers.is_some_and(|(_, v)| v == Verdict::Routine));
            routine = r;
            novel = rest;
        }
        let all_routine = novel.is_empty();
        if all_routine {
            novel = routine;
        }
        let mut severity = self.spec.severity_for(tier_of(v));
        if novel.len() > 1
            || novel
                .iter()
                .any(|n| n.class == Class::RunnerKind || n.class == Class::RunnerGroup)
            || novel
                .iter()
                .any(|n| n.peers.is_some_and(|(_, v)| v == Verdict::NewToPeers))
        {
            severity = severity.raised();
        }
        let interner = &cx.state.interner;
        let known_runners: Vec<String> = b
            .attrs
            .recent(since)
            .take(8)
            .map(|x| format!("{} {}", Class::runner_label(x.aux), interner.text(x.hash)))
            .collect();
        let known_networks: Vec<String> = b
            .nets
            .recent(since)
            .take(8)
            .map(|x| interner.text(x.hash))
            .collect();
        let verb = if e.action == Action::Mint {
            "minted"
        } else {
            "used"
        };
        let news: Vec<String> = novel
            .iter()
            .map(|n| format!("{} {}", n.class.label(), n.text))
            .collect();
        let mut known = known_runners.clone();
        known.extend(known_networks.iter().map(|n| format!("network {n}")));
        let summary = format!(
            "{} {verb} a credential from {}, which it has not used in the last {} days; it ran from {}.",
            e.identity,
            news.join(" and "),
            self.forget_days,
            if known.is_empty() {
                "nothing recorded yet".to_string()
            } else {
                known.join(", ")
            }
        );
        let mut ev = evidence::base(b);
        ev.insert(
            "new".into(),
            Value::Array(
                novel
                    .iter()
                    .map(|n| {
                        let mut x = json!({"kind": n.class.label(), "value": n.text, "fleet_identities": n.fleet});
                        if let (Some((share, _)), Value::Object(m)) = (n.peers, &mut x) {
                            m.insert("peers_with".into(), json!(share.with));
                        }
                        x
                    })
                    .collect(),
            ),
        );
        let mut summary = summary;
        if let (Some(g), Some((share, _))) = (&group, novel.iter().find_map(|n| n.peers)) {
            let what = format!("use {} {}", novel[0].class.label(), novel[0].text);
            ev.extend(g.evidence(&share, &what));
            summary.push_str(&g.sentence(&share, &what));
        }
        ev.insert("known_runners".into(), json!(known_runners));
        ev.insert("known_networks".into(), json!(known_networks));
        ev.insert("network_observations".into(), json!(b.net_obs));
        // Hold the alert for a fleet judgement only when every new value could be a rollout,
        // and to see whether the identity moved for good only when one value is new.
        let replace = novel.len() == 1 && novel[0].replace;
        let defer = if !all_routine
            && novel.iter().all(|n| n.defer.is_some())
            && (replace || novel.iter().all(|n| n.class != Class::RunnerKind))
        {
            novel.first().and_then(|n| {
                n.defer.map(|m| Defer {
                    // A runner id's family only counts together with a replacement.
                    family: if n.class == Class::RunnerId && !replace {
                        0
                    } else {
                        n.family
                    },
                    value: n.hash,
                    min_identities: m,
                    window_days: self.fleet_days,
                    grace_secs: self.t.fleet_grace.as_secs() as i64,
                    replace_secs: if replace {
                        self.t.replacement_window.as_secs() as i64
                    } else {
                        0
                    },
                    replace_class: n.class as u8,
                })
            })
        } else {
            None
        };
        Some(Finding {
            severity,
            reason_key: novel[0].hash,
            reason: news.join(", "),
            summary,
            evidence: ev,
            defer,
            routine: all_routine,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_contain_addresses() {
        let c = Cidr::parse("10.20.0.0/16").expect("cidr");
        assert!(c.contains("10.20.3.4"));
        assert!(!c.contains("10.21.3.4"));
        assert!(!c.contains("not-an-ip"));
        assert!(
            Cidr::parse("192.0.2.1")
                .expect("host")
                .contains("192.0.2.1")
        );
        assert!(
            Cidr::parse("2001:db8::/32")
                .expect("v6")
                .contains("2001:db8:1::1")
        );
        assert!(Cidr::parse("0.0.0.0/0").expect("all").contains("8.8.8.8"));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
    }

    #[test]
    fn a_shared_runner_threshold_above_the_rollout_threshold_is_refused() {
        let text = crate::detect::spec::text_of("new_runner", None).expect("embedded");
        assert!(
            text.contains("shared_runner_identities = 2 "),
            "the key is in the spec"
        );
        for (bad, ok) in [("1", false), ("4", false), ("2", true), ("3", true)] {
            let t = text.replace(
                "shared_runner_identities = 2 ",
                &format!("shared_runner_identities = {bad} "),
            );
            let r = NewRunner::new(Spec::parse("new_runner", &t).expect("parses"));
            assert_eq!(r.is_ok(), ok, "shared_runner_identities = {bad}");
            if let Err(e) = r {
                let e = e.to_string();
                assert!(e.contains("thresholds.shared_runner_identities"), "{e}");
            }
        }
    }
}
