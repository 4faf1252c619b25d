//! Baselines: what nhiwatch has learned about each non-human identity, about the fleet as a
//! whole, and about live credentials.
//!
//! * Per identity ([`IdentityBaseline`], in a `DashMap` keyed by identity so readers such as
//!   `baselines show` and snapshots see it live): when it mints (by local time of week), the
//!   stable attributes of the runners it uses (hosted or self-hosted, runner id or requester
//!   group, network prefix; never ephemeral runner names), the scopes it holds with their
//!   privilege rank, its credential lifetimes, the environments it mints for and the
//!   environments its credentials are presented in.
//! * Fleet-wide ([`Fleet`]): how many identities used a runner attribute, a network or a scope
//!   recently, so a value rolled out across the fleet is judged once at fleet level.
//! * Credentials ([`Credentials`]): each minted credential's fingerprint bound to the
//!   environment and network it was minted for, its expiry, and whether it is single-use.
//!
//! Values are kept as stable 64-bit hashes; an [`Interner`] maps them back to text for
//! evidence and `baselines show`. Baselines are updated in event-time order and only after the
//! detectors have inspected the event ("inspect, then learn").

mod bound;
mod credentials;
mod fleet;
mod identity;
pub mod peers;
pub mod snapshot;
pub mod spill;
pub mod timeofweek;
mod values;

use std::net::IpAddr;
use std::sync::Arc;

use xxhash_rust::xxh3::xxh3_64_with_seed;

use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

pub use credentials::{Binding, Credentials, DEFAULT_TTL_SECS};
pub use fleet::{Fleet, adoption_key};
pub use identity::{IdentityBaseline, LearnParams, direct_long_term_use, ref_hash, ref_shape};
pub use peers::Peers;
pub use spill::{Spill, SpillCounts, StateConfig};
pub use values::{Entry, ValueSet};

use crate::event::Event;
use crate::time::Timestamp;

/// Distinct identities the fleet context remembers per value (fleet thresholds cannot be
/// higher).
pub fn fleet_slots() -> usize {
    fleet::SLOTS
}

/// Days since 2000-01-01 UTC: the unit baselines count time in.
pub type Day = u16;

const EPOCH_2000: i64 = 946_684_800;

/// The baseline day of an instant.
pub fn day_of(t: Timestamp) -> Day {
    day_of_secs(t.as_unix_seconds())
}

/// [`day_of`] a Unix time in seconds (as baselines and held alerts keep it).
pub fn day_of_secs(secs: i64) -> Day {
    (secs.saturating_sub(EPOCH_2000).max(0) / 86_400).min(i64::from(Day::MAX)) as Day
}

/// The map hasher for in-memory tables (randomized per process).
pub type MapHasher = foldhash::fast::RandomState;

/// A stable hash of a value of a class (XXH3, seeded by the class): identical across
/// processes, platforms and versions, because snapshots store it.
pub fn hash_value(class: Class, value: &str) -> u64 {
    xxh3_64_with_seed(value.as_bytes(), class as u64)
}

/// A stable 32-bit hash of an identity, for fleet bookkeeping.
pub fn hash_identity(identity: &str) -> u32 {
    (hash_value(Class::Identity, identity) >> 32) as u32
}

/// What kind of value a hash stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum Class {
    /// Hosted or self-hosted.
    RunnerKind = 1,
    /// A stable runner id (GitLab `runner_id`).
    RunnerId = 2,
    /// A stable requester group (Kubernetes token requesters).
    RunnerGroup = 3,
    /// A source that is a name, not an address (`lambda.amazonaws.com`).
    Service = 4,
    /// A network prefix (IPv4 /16, IPv6 /48).
    Network = 5,
    /// A scope.
    Scope = 6,
    /// An environment.
    Environment = 7,
    /// A (minted-for, presented-in) environment pair.
    EnvPair = 8,
    /// An identity.
    Identity = 9,
}

impl Class {
    /// The label used in evidence.
    pub fn label(self) -> &'static str {
        match self {
            Class::RunnerKind => "runner kind",
            Class::RunnerId => "runner id",
            Class::RunnerGroup => "requester",
            Class::Service => "source",
            Class::Network => "network",
            Class::Scope => "scope",
            Class::Environment => "environment",
            Class::EnvPair => "environment pair",
            Class::Identity => "identity",
        }
    }

    /// The label of a runner attribute stored in a value set, whose `aux` is its class.
    pub fn runner_label(aux: u8) -> &'static str {
        match aux {
            1 => Class::RunnerKind.label(),
            2 => Class::RunnerId.label(),
            3 => Class::RunnerGroup.label(),
            4 => Class::Service.label(),
            _ => "runner",
        }
    }
}

/// A stable runner attribute of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr {
    /// What it is.
    pub class: Class,
    /// Its stable hash.
    pub hash: u64,
}

/// A scope of an event with its privilege rank.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScopeRef {
    /// Stable hash of the scope string.
    pub hash: u64,
    /// Privilege rank (0 none … 3 admin).
    pub rank: u8,
}

pub use crate::environment::Tier;

/// A network prefix parsed from a source address: IPv4 /16, IPv6 /48.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Net {
    /// Stable hash of the prefix (class [`Class::Network`]).
    pub hash: u64,
    addr: IpAddr,
}

impl Net {
    /// The prefix as text (`10.20.0.0/16`, `2001:db8:1::/48`).
    pub fn text(&self) -> String {
        match self.addr {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                format!("{}.{}.0.0/16", o[0], o[1])
            }
            IpAddr::V6(v6) => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
            }
        }
    }
}

impl Net {
    /// The public /8 block of an IPv4 network (its first octet), or 0 for private, shared
    /// and IPv6 space. Cloud-hosted runners get a new /16 per job but stay in their
    /// provider's blocks; a private network says nothing like that.
    pub fn block(&self) -> u8 {
        match self.addr {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                let private = o[0] == 10
                    || (o[0] == 172 && (16..32).contains(&o[1]))
                    || (o[0] == 192 && o[1] == 168)
                    || (o[0] == 100 && (64..128).contains(&o[1]))
                    || o[0] == 127
                    || o[0] == 0;
                if private { 0 } else { o[0] }
            }
            IpAddr::V6(_) => 0,
        }
    }

    /// A stable hash of the network's neighbourhood (the IPv4 /8, the IPv6 /16), private
    /// space included: a migration from 10.20.0.0/16 to 10.21.0.0/16 stays in one family.
    pub fn family(&self) -> u64 {
        let bytes = match self.addr {
            IpAddr::V4(v4) => [4, v4.octets()[0], 0],
            IpAddr::V6(v6) => {
                let o = v6.octets();
                [6, o[0], o[1]]
            }
        };
        xxh3_64_with_seed(&bytes, Class::Network as u64 + 100)
    }

    /// A stable hash of the public /8 block, for fleet context (`None` for private space).
    pub fn block_hash(&self) -> Option<u64> {
        let b = self.block();
        (b != 0).then(|| xxh3_64_with_seed(&[8, b], Class::Network as u64))
    }
}

/// The network prefix of an address; `None` for names and malformed addresses.
pub fn network_of(ip: &str) -> Option<Net> {
    let addr = ip.trim_ascii().parse::<IpAddr>().ok()?;
    let hash = match addr {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            xxh3_64_with_seed(&[4, o[0], o[1]], Class::Network as u64)
        }
        IpAddr::V6(v6) => {
            let o = v6.octets();
            xxh3_64_with_seed(
                &[6, o[0], o[1], o[2], o[3], o[4], o[5]],
                Class::Network as u64,
            )
        }
    };
    Some(Net { hash, addr })
}

/// Facts derived once per event and shared by every detector and by learning.
#[derive(Clone, Debug)]
pub struct View {
    /// Event time in Unix seconds.
    pub secs: i64,
    /// Baseline day.
    pub day: Day,
    /// Local time-of-week bin (see [`timeofweek::bin`]).
    pub tow_bin: u8,
    /// Local weekday (0 = Monday), hour and minute, and the offset from UTC in seconds.
    pub local: (u8, u8, u8, i32),
    /// The environment's hash and tier.
    pub env: Option<(u64, Tier)>,
    /// Stable runner attributes.
    pub attrs: SmallVec<[Attr; 3]>,
    /// The network the event came from.
    pub net: Option<Net>,
    /// Scopes with their ranks.
    pub scopes: SmallVec<[ScopeRef; 4]>,
    /// The credential fingerprint as a key.
    pub cred: Option<u128>,
}

/// A credential fingerprint (hex) as a 128-bit key; `None` when not hex.
pub fn cred_key(fp: &str) -> Option<u128> {
    let hex = fp.get(..32.min(fp.len()))?;
    u128::from_str_radix(hex, 16).ok()
}

/// Maps stable hashes back to the text they were made from.
#[derive(Debug, Default)]
pub struct Interner {
    map: DashMap<u64, Box<str>, MapHasher>,
}

impl Interner {
    /// Remembers `text` for `hash`.
    pub fn intern(&self, hash: u64, text: &str) {
        if !self.map.contains_key(&hash) {
            self.map.insert(hash, text.into());
        }
    }

    /// The text of a hash, when known.
    pub fn lookup(&self, hash: u64) -> Option<String> {
        self.map.get(&hash).map(|t| t.to_string())
    }

    /// The text of a hash, or its hex when unknown.
    pub fn text(&self, hash: u64) -> String {
        self.map
            .get(&hash)
            .map(|t| t.to_string())
            .unwrap_or_else(|| format!("#{hash:016x}"))
    }

    /// Number of strings held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Forgets the texts of hashes not in `live`.
    pub fn retain(&self, live: &std::collections::HashSet<u64, MapHasher>) {
        self.map.retain(|h, _| live.contains(h));
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Every (hash, text), sorted by hash (snapshots).
    pub fn export(&self) -> Vec<(u64, String)> {
        let mut v: Vec<(u64, String)> = self
            .map
            .iter()
            .map(|e| (*e.key(), e.value().to_string()))
            .collect();
        v.sort_unstable_by_key(|(h, _)| *h);
        v
    }
}

/// All learned state. The cross-identity parts (fleet and peer context, credential bindings
/// and the texts of hashed values) are behind `Arc`s so that several engines, each with its own
/// identities, can judge against one shared context (`replay --partitions N`; see
/// `docs/scale-out.md`).
#[derive(Debug, Default)]
pub struct Baselines {
    /// Per-identity baselines.
    pub identities: DashMap<Box<str>, IdentityBaseline, MapHasher>,
    /// Fleet-wide context.
    pub fleet: Arc<Fleet>,
    /// Peer groups and what their members do.
    pub peers: Arc<Peers>,
    /// Live credential bindings.
    pub credentials: Arc<Credentials>,
    /// Text of hashed values.
    pub interner: Arc<Interner>,
    /// Identities out of memory (see [`spill`]).
    pub spill: std::sync::Mutex<Spill>,
}

impl Baselines {
    /// An empty state.
    pub fn new() -> Self {
        Baselines::default()
    }

    /// Forgets interned texts that no identity baseline and no live credential refers to any
    /// more (values every identity has forgotten), so a long run does not keep the text of
    /// every runner id and network it ever saw.
    pub fn prune_interner(&self) {
        Baselines::prune_shared_interner(&[self]);
    }

    /// [`Baselines::prune_interner`] for states that share one interner and one table of
    /// credential bindings (the partitions an instance judges together): a text is kept
    /// while any of them refers to it.
    pub fn prune_shared_interner(states: &[&Baselines]) {
        let Some(first) = states.first() else {
            return;
        };
        let mut live = std::collections::HashSet::with_capacity_and_hasher(
            first.interner.len(),
            MapHasher::default(),
        );
        for st in states {
            for e in st.identities.iter() {
                let b = e.value();
                for set in [&b.attrs, &b.nets, &b.scopes, &b.envs, &b.refs] {
                    live.extend(set.entries().iter().map(|x| x.hash));
                }
            }
        }
        first
            .credentials
            .for_each(|b| live.extend(b.env.into_iter().chain(b.net)));
        first.interner.retain(&live);
    }

    /// An empty state bounded by `[state]`.
    pub fn bounded(cfg: &StateConfig) -> Self {
        let b = Baselines {
            spill: std::sync::Mutex::new(Spill::new(cfg)),
            ..Baselines::default()
        };
        b.credentials.set_max(cfg.max_credentials);
        b.fleet.set_max(cfg.max_fleet_values);
        b
    }

    /// The spill store, locked (a poisoned lock is still usable: the store is a cache).
    pub fn spill(&self) -> std::sync::MutexGuard<'_, Spill> {
        self.spill.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The texts of the hashed values a baseline refers to (kept with it when it is spilled).
    pub fn texts_of(&self, b: &IdentityBaseline) -> Vec<(u64, String)> {
        [&b.attrs, &b.nets, &b.scopes, &b.envs]
            .into_iter()
            .flat_map(|set| set.entries().iter().map(|x| x.hash))
            .filter_map(|h| self.interner.lookup(h).map(|t| (h, t)))
            .collect()
    }

    /// Moves the least recently active identities out of memory until `keep` are left,
    /// never `except` (the identity being processed). Ties in last activity go by a stable
    /// hash of the key, so two runs over the same records evict the same identities. Returns
    /// the identities that could not be spilled (forgotten), with the first error.
    pub fn evict(&self, keep: usize, except: &str) -> (u64, Option<std::io::Error>) {
        let n = self.identities.len().saturating_sub(keep);
        if n == 0 {
            return (0, None);
        }
        let mut order: Vec<i64> = self
            .identities
            .iter()
            .filter(|e| e.key().as_ref() != except)
            .map(|e| e.value().last_seen)
            .collect();
        if order.is_empty() {
            return (0, None);
        }
        let n = n.min(order.len());
        let (_, cut, _) = order.select_nth_unstable(n - 1);
        let cut = *cut;
        let below = order.iter().filter(|t| **t < cut).count();
        drop(order);
        let mut leaving: Vec<Box<str>> = Vec::with_capacity(n);
        let mut ties: Vec<(u64, Box<str>)> = Vec::new();
        for e in self.identities.iter() {
            let t = e.value().last_seen;
            if t > cut || e.key().as_ref() == except {
                continue;
            }
            if t < cut {
                leaving.push(e.key().clone());
            } else {
                ties.push((hash_value(Class::Identity, e.key()), e.key().clone()));
            }
        }
        ties.sort_unstable();
        leaving.extend(ties.into_iter().take(n - below).map(|(_, k)| k));
        leaving.sort_unstable();
        let mut spill = self.spill();
        let mut lost = 0;
        let mut first = None;
        for key in leaving {
            if let Some((key, b)) = self.identities.remove(&key)
                && let Err(e) = spill.put(&key, &b, self.texts_of(&b))
            {
                lost += 1;
                first.get_or_insert(e);
            }
        }
        // The removals leave tombstones that would make the next inserts grow the table to
        // twice the bound (its buckets hold the baselines inline); rehash it to fit instead.
        self.identities.shrink_to_fit();
        (lost, first)
    }

    /// Reads a spilled identity back (its texts interned again); `Ok(None)` when it is not
    /// spilled. The caller puts it back in memory.
    pub fn reload(&self, key: &str) -> std::io::Result<Option<IdentityBaseline>> {
        let mut spill = self.spill();
        if spill.is_empty() {
            return Ok(None);
        }
        Ok(spill.take(key)?.map(|(b, texts)| {
            for (h, t) in texts {
                self.interner.intern(h, &t);
            }
            b
        }))
    }

    /// Approximate bytes held per identity baseline (struct, key and heap), for reports.
    pub fn identity_bytes(&self) -> usize {
        self.identities
            .iter()
            .map(|e| baseline_bytes(e.key(), e.value()))
            .sum()
    }
}

/// Approximate bytes of one identity's baseline: key, struct, heap and the map entry.
pub fn baseline_bytes(key: &str, b: &IdentityBaseline) -> usize {
    key.len() + std::mem::size_of::<IdentityBaseline>() + b.heap_bytes() + 48
}

/// Builds the [`View`] of an event. `rank` gives a scope's privilege rank; `local` is the
/// event time in the identity's time zone as (weekday, hour, minute, offset seconds).
pub fn view(event: &Event, rank: impl Fn(&str) -> u8, local: (u8, u8, u8, i32)) -> View {
    let mut attrs = SmallVec::new();
    let r = &event.runner;
    if let Some(kind) = r.kind {
        attrs.push(Attr {
            class: Class::RunnerKind,
            hash: hash_value(Class::RunnerKind, runner_kind_text(kind)),
        });
    }
    // Runner ids are stable only where the system assigns them (GitLab); Kubernetes node
    // names and pod names churn with autoscaling, so requesters are judged by group.
    if event.source == crate::event::Source::GitlabCi
        && let Some(id) = &r.id
    {
        attrs.push(Attr {
            class: Class::RunnerId,
            hash: hash_value(Class::RunnerId, id),
        });
    }
    if let Some(group) = &r.group {
        attrs.push(Attr {
            class: Class::RunnerGroup,
            hash: hash_value(Class::RunnerGroup, group),
        });
    }
    let mut net = None;
    if let Some(ip) = &r.ip {
        match network_of(ip) {
            Some(n) => net = Some(n),
            None => {
                let name = ip.trim_ascii();
                if !name.is_empty() {
                    attrs.push(Attr {
                        class: Class::Service,
                        hash: hash_value(Class::Service, name),
                    });
                }
            }
        }
    }
    let scopes = event
        .scopes
        .iter()
        .map(|s| ScopeRef {
            hash: hash_value(Class::Scope, s),
            rank: rank(s),
        })
        .collect();
    let env = event
        .environment
        .as_deref()
        .map(|e| (hash_value(Class::Environment, e), Tier::of(e)));
    let (weekday, hour, _, _) = local;
    View {
        secs: event.time.as_unix_seconds(),
        day: day_of(event.time),
        tow_bin: timeofweek::bin(weekday, hour),
        local,
        env,
        attrs,
        net,
        scopes,
        cred: event.credential.as_ref().and_then(|c| cred_key(&c.fp)),
    }
}

/// The text of a runner kind as baselines record it.
pub fn runner_kind_text(kind: crate::event::RunnerKind) -> &'static str {
    match kind {
        crate::event::RunnerKind::Hosted => "hosted",
        crate::event::RunnerKind::SelfHosted => "self-hosted",
    }
}

/// The text behind an attribute of an event (for interning and evidence).
pub fn attr_text(event: &Event, a: &Attr) -> String {
    let r = &event.runner;
    match a.class {
        Class::RunnerKind => r.kind.map(runner_kind_text).unwrap_or_default().to_string(),
        Class::RunnerId => r.id.clone().unwrap_or_default(),
        Class::RunnerGroup => r.group.clone().unwrap_or_default(),
        Class::Service => r.ip.as_deref().unwrap_or_default().trim_ascii().to_string(),
        _ => String::new(),
    }
}

/// The hash of a (minted-for, presented-in) environment pair.
pub fn env_pair(minted: u64, presented: u64) -> u64 {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&minted.to_le_bytes());
    b[8..].copy_from_slice(&presented.to_le_bytes());
    xxh3_64_with_seed(&b, Class::EnvPair as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interner_keeps_only_texts_something_refers_to() {
        let state = Baselines::new();
        let mut b = IdentityBaseline::new(0);
        b.nets.observe(1, 10, 0, 8, 0);
        b.scopes.observe(2, 10, 1, 8, 0);
        state.identities.insert("ci:a".into(), b);
        state.credentials.bind(
            7,
            credentials::Binding {
                env: Some(3),
                minted: 0,
                expires: 3600,
                single_use: false,
                net: None,
                identity: 1,
                presentations: 1,
                first_event: "e".into(),
            },
        );
        for (h, t) in [
            (1, "10.20.0.0/16"),
            (2, "policy"),
            (3, "staging"),
            (4, "gone"),
        ] {
            state.interner.intern(h, t);
        }
        state.prune_interner();
        assert_eq!(state.interner.len(), 3);
        assert_eq!(state.interner.text(2), "policy");
        assert_eq!(state.interner.text(3), "staging");
        assert_eq!(state.interner.text(4), "#0000000000000004");
    }

    #[test]
    fn networks_are_prefixes() {
        let a = network_of("10.20.30.40").expect("v4");
        assert_eq!(a.text(), "10.20.0.0/16");
        assert_eq!(a.hash, network_of("10.20.99.1").expect("v4").hash);
        assert_ne!(a.hash, network_of("10.21.30.40").expect("v4").hash);
        assert_eq!(
            network_of("2001:db8:1:2::5").expect("v6").text(),
            "2001:db8:1::/48"
        );
        assert!(network_of("lambda.amazonaws.com").is_none());
        assert_eq!(network_of("20.57.1.2").expect("v4").block(), 20);
        assert_eq!(network_of("10.57.1.2").expect("v4").block(), 0);
        assert_eq!(network_of("172.20.1.2").expect("v4").block(), 0);
        assert_eq!(network_of("172.64.1.2").expect("v4").block(), 172);
        assert!(
            network_of("255.090.254.5").is_none(),
            "leading zeros are not an address"
        );
    }

    #[test]
    fn tiers_and_days() {
        assert_eq!(Tier::of("production"), Tier::Production);
        assert_eq!(Tier::of("prod-eu"), Tier::Production);
        assert_eq!(Tier::of("non-prod"), Tier::Other);
        assert_eq!(Tier::of("staging"), Tier::Staging);
        assert_eq!(Tier::of("111122223333"), Tier::Other);
        assert_eq!(
            day_of(Timestamp::parse("2000-01-02T00:00:00Z").expect("t")),
            1
        );
        assert_eq!(
            cred_key("00112233445566778899aabbccddeeff"),
            Some(0x0011_2233_4455_6677_8899_aabb_ccdd_eeff)
        );
        assert_eq!(cred_key("zz"), None);
    }

    #[test]
    fn hashes_are_stable_and_class_separated() {
        assert_eq!(hash_value(Class::Scope, "a"), hash_value(Class::Scope, "a"));
        assert_ne!(
            hash_value(Class::Scope, "a"),
            hash_value(Class::RunnerId, "a")
        );
    }
}
