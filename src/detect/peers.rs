//! Peer groups as the detectors use them: the groups named in `detectors/peers.toml`, the
//! group an identity is judged with, and the judgement of a behaviour against its peers
//! (routine, new to the peers, or neither), with the evidence that goes into the alert.
//! The counts themselves live with the baselines (`baseline::peers`).

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::glob::GlobSet;
use super::spec::SpecError;
use crate::baseline::peers::{GroupId, LEVELS, Peers, group_id, learned_keys};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    min_peers: u32,
    #[serde(default)]
    group: Vec<GroupRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupRule {
    name: String,
    identities: Vec<String>,
}

/// How identities are grouped (`detectors/peers.toml`).
#[derive(Clone, Debug)]
pub struct PeerRules {
    /// Other members a group needs before it judges (and before a learned group is used).
    pub min_peers: u32,
    groups: Vec<(String, GlobSet)>,
}

impl Default for PeerRules {
    fn default() -> Self {
        PeerRules {
            min_peers: 3,
            groups: Vec::new(),
        }
    }
}

impl PeerRules {
    /// Parses `peers.toml`.
    pub fn parse(text: &str) -> Result<PeerRules, SpecError> {
        let f: File = toml::from_str(text).map_err(|e| SpecError::Parse {
            file: "peers.toml".into(),
            message: e.to_string(),
        })?;
        if f.min_peers == 0 {
            return Err(SpecError::Invalid {
                file: "peers.toml".into(),
                key: "min_peers".into(),
                message: "must be at least 1".into(),
            });
        }
        let mut groups = Vec::new();
        for (i, g) in f.group.into_iter().enumerate() {
            if g.name.trim().is_empty() || g.identities.is_empty() {
                return Err(SpecError::Invalid {
                    file: "peers.toml".into(),
                    key: format!("group[{i}]"),
                    message: "needs a name and at least one identity pattern".into(),
                });
            }
            groups.push((g.name, GlobSet::new(&g.identities)));
        }
        Ok(PeerRules {
            min_peers: f.min_peers,
            groups,
        })
    }

    /// A stable fingerprint of the rules (snapshots record which rules their peer counts
    /// were made with).
    pub fn fingerprint(&self) -> u64 {
        let mut text = format!("min_peers={}", self.min_peers);
        for (name, globs) in &self.groups {
            text.push_str(&format!("\n{name}={globs:?}"));
        }
        xxhash_rust::xxh3::xxh3_64(text.as_bytes())
    }

    /// The candidate groups of an identity, finest first: a named group that matches it, or
    /// the ones learned from its name.
    pub fn candidates(&self, identity: &str) -> ([GroupId; LEVELS], [String; LEVELS]) {
        let names = match self.groups.iter().find(|(_, g)| g.matches(identity)) {
            Some((name, _)) => {
                let n = format!("{name} (peers.toml)");
                [n.clone(), n.clone(), n]
            }
            None => learned_keys(identity),
        };
        (names.clone().map(|n| group_id(&n)), names)
    }
}

/// How a detector's finding compares with the identity's peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Too few peers to say.
    Unknown,
    /// At least `routine_share` of the peers already do it: routine for the role.
    Routine,
    /// No peer does it: raised one level.
    NewToPeers,
    /// Some peers do it.
    Some,
}

/// An identity's candidate groups, as a detector sees them; the group is chosen (and its
/// counts read) only when a detector asks, which is only when it has a finding.
#[derive(Clone, Copy)]
pub struct PeerCx<'a> {
    ids: [GroupId; LEVELS],
    state: &'a Peers,
    min_peers: u32,
}

/// The group an identity is judged with.
#[derive(Clone, Copy)]
pub struct PeerGroup<'a> {
    /// The group.
    pub id: GroupId,
    /// Its members, the identity included.
    pub size: u32,
    state: &'a Peers,
    min_peers: u32,
}

/// What peers do about one behaviour.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Share {
    /// Peers it was judged among.
    pub peers: u32,
    /// Of those, the ones that do it.
    pub with: u32,
}

impl Share {
    /// The verdict for a routine threshold.
    pub fn verdict(&self, min_peers: u32, routine_share: f64) -> Verdict {
        if self.peers < min_peers {
            Verdict::Unknown
        } else if f64::from(self.with) >= routine_share * f64::from(self.peers) {
            Verdict::Routine
        } else if self.with == 0 {
            Verdict::NewToPeers
        } else {
            Verdict::Some
        }
    }

    /// `with / peers` (0 without peers).
    pub fn ratio(&self) -> f64 {
        if self.peers == 0 {
            0.0
        } else {
            f64::from(self.with) / f64::from(self.peers)
        }
    }
}

impl<'a> PeerCx<'a> {
    /// An identity's candidate groups.
    pub fn new(ids: [GroupId; LEVELS], state: &'a Peers, min_peers: u32) -> Self {
        PeerCx {
            ids,
            state,
            min_peers,
        }
    }

    /// The finest candidate in which a behaviour is judged among at least `min_peers`
    /// comparable peers (`share` says how many there are in a group), else the coarsest.
    pub fn group_for(&self, share: impl Fn(&PeerGroup<'a>) -> Share) -> (PeerGroup<'a>, Share) {
        let mut last = None;
        for id in self.ids {
            let g = PeerGroup {
                id,
                size: self.state.size(id),
                state: self.state,
                min_peers: self.min_peers,
            };
            if g.size < self.min_peers + 1 && id != self.ids[LEVELS - 1] {
                continue;
            }
            let s = share(&g);
            if s.peers >= self.min_peers {
                return (g, s);
            }
            last = Some((g, s));
        }
        last.unwrap_or_else(|| {
            let g = self.group();
            let s = share(&g);
            (g, s)
        })
    }

    /// A member's move (see [`PeerGroup::transition`]) in every candidate group, whichever
    /// a detector judged it with.
    pub fn transitions(&self, from: u8, to: u8) -> [u64; LEVELS] {
        self.ids.map(|id| transition_value(id, from, to))
    }

    /// The finest candidate with at least `min_peers` other members.
    pub fn group(&self) -> PeerGroup<'a> {
        let id = self.state.choose(&self.ids, self.min_peers + 1);
        PeerGroup {
            id,
            size: self.state.size(id),
            state: self.state,
            min_peers: self.min_peers,
        }
    }
}

impl PeerGroup<'_> {
    /// Other members.
    pub fn others(&self) -> u32 {
        self.size.saturating_sub(1)
    }

    /// The verdict on a share, for a routine threshold.
    pub fn verdict(&self, share: &Share, routine_share: f64) -> Verdict {
        share.verdict(self.min_peers, routine_share)
    }

    /// Peers that adopted a value seen since `since` (the identity has not).
    pub fn value(&self, value: u64, since: crate::baseline::Day) -> Share {
        Share {
            peers: self.others(),
            with: self
                .state
                .adopters(self.id, value, since)
                .min(self.others()),
        }
    }

    /// Among the peers whose environments include the identity's (`own`, what the group
    /// counts it with), those that also mint for `with`.
    pub fn envs(&self, own: u8, with: u8) -> Share {
        let (peers, with) = self.state.mask_share(self.id, own, with);
        Share { peers, with }
    }

    /// Peers that minted within the time-of-week window centred on `bin` (`own`: the
    /// identity itself did).
    pub fn window(&self, bin: u8, own: bool) -> Share {
        let n = self.state.in_window(self.id, bin);
        Share {
            peers: self.others(),
            with: n.saturating_sub(u32::from(own)).min(self.others()),
        }
    }

    /// Peers that minted at a weekend (the identity has not).
    pub fn weekends(&self) -> Share {
        Share {
            peers: self.others(),
            with: self.state.at_weekends(self.id).min(self.others()),
        }
    }

    /// The longest a member deployed elsewhere before its first production mint, days.
    pub fn first_release_days(&self) -> u16 {
        self.state.first_release(self.id)
    }

    /// The value of a member's move from environments `from` to including `to`: when
    /// enough members make the same move at once (a release train's first release), it is
    /// a rollout, judged like one.
    pub fn transition(&self, from: u8, to: u8) -> u64 {
        transition_value(self.id, from, to)
    }

    /// The evidence an alert carries about the peers.
    pub fn evidence(&self, share: &Share, what: &str) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("peer_group".into(), json!(self.state.name(self.id)));
        m.insert("peer_group_size".into(), json!(self.size));
        m.insert("peers_judged".into(), json!(share.peers));
        m.insert("peers_with".into(), json!(share.with));
        m.insert(
            "peer_share".into(),
            json!((share.ratio() * 1000.0).round() / 1000.0),
        );
        m.insert("peer_behaviour".into(), json!(what));
        m
    }

    /// A sentence for the summary.
    pub fn sentence(&self, share: &Share, what: &str) -> String {
        if share.peers == 0 {
            return format!(
                " It has no peers to compare with yet ({}).",
                self.state.name(self.id)
            );
        }
        format!(
            " {} of its {} peers ({}) {what}.",
            share.with,
            share.peers,
            self.state.name(self.id)
        )
    }
}

fn transition_value(group: GroupId, from: u8, to: u8) -> u64 {
    crate::baseline::hash_value(
        crate::baseline::Class::EnvPair,
        &format!("peer-transition {group:08x} {from} {to}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_groups_win_and_errors_name_the_key() {
        let r = PeerRules::parse(
            "min_peers = 2\n[[group]]\nname = \"deployers\"\nidentities = [\"github:*/deploy*.yml\"]\n",
        )
        .expect("parse");
        let (ids, names) = r.candidates("github:a/b/.github/workflows/deploy-x.yml");
        assert_eq!(names[0], "deployers (peers.toml)");
        assert_eq!(ids[0], ids[2]);
        let (_, names) = r.candidates("github:a/b/.github/workflows/ci.yml");
        assert_eq!(names[0], "github workflows ci");
        let e = PeerRules::parse("min_peers = 0\n").unwrap_err().to_string();
        assert!(e.contains("peers.toml") && e.contains("min_peers"), "{e}");
        let e = PeerRules::parse("min_peers = 3\n[[group]]\nname = \"x\"\nidentities = []\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("group[0]"), "{e}");
        assert!(PeerRules::parse(crate::detect::spec::EMBEDDED_PEERS).is_ok());
    }

    #[test]
    fn verdicts() {
        let s = |peers, with| Share { peers, with };
        assert_eq!(s(2, 2).verdict(3, 0.5), Verdict::Unknown);
        assert_eq!(s(4, 2).verdict(3, 0.5), Verdict::Routine);
        assert_eq!(s(4, 1).verdict(3, 0.5), Verdict::Some);
        assert_eq!(s(4, 0).verdict(3, 0.5), Verdict::NewToPeers);
    }
}
