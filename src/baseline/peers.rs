//! Peer groups: identities of the same role (the same workflow file across repositories, the
//! same Vault role prefix, the same service-account name or namespace pattern, the same AWS
//! role name), and what their members do, so a detector can judge a new behaviour against
//! the identity *and* its peers: new to the identity but usual among its peers (a release
//! train's first production deploy) is routine; new to both is the signal.
//!
//! An identity gets up to three candidate groups from its name, finest first (see
//! [`learned_keys`]); the detection layer may replace them with a group named in
//! `detectors/peers.toml`. The group used is the finest candidate with enough members, so a
//! monorepo's `deploy-billing.yml` falls back from its own name to all `deploy*` workflows.
//!
//! What is kept per group (saved with snapshots, so a restored engine judges exactly as one
//! that never stopped; rebuilt from the baselines when the grouping rules changed):
//! * its size;
//! * how many members hold each environment-tier combination (a release train's staging
//!   deployers that also deploy to production);
//! * how many members adopted each runner attribute and scope;
//! * how many members minted within each time-of-week window.

use dashmap::DashMap;
use serde::{Deserialize, Serialize};

use super::timeofweek::BINS;
use super::values::ValueSet;
use super::{Class, Day, MapHasher, Tier, hash_value};

/// Candidate groups per identity.
pub const LEVELS: usize = 3;

/// A peer group's id (the top 32 bits of its name's stable hash; collisions only merge two
/// groups' counts).
pub type GroupId = u32;

/// The id of a group name.
pub fn group_id(name: &str) -> GroupId {
    (hash_value(Class::Identity, name) >> 32) as GroupId | 1
}

/// Bits of an identity's environment-tier combination.
pub mod mask {
    /// Minted without naming an environment.
    pub const NONE: u8 = 1;
    /// Minted for an environment that is neither staging nor production.
    pub const OTHER: u8 = 2;
    /// Minted for staging.
    pub const STAGING: u8 = 4;
    /// Minted for production.
    pub const PRODUCTION: u8 = 8;

    /// The bit of a tier.
    pub fn of(tier: super::Tier) -> u8 {
        match tier {
            super::Tier::Other => OTHER,
            super::Tier::Staging => STAGING,
            super::Tier::Production => PRODUCTION,
        }
    }

    /// The highest tier of a combination without production, as a combination of its own
    /// (`STAGING` for staging + testing; `NONE` for a build job).
    pub fn highest(m: u8) -> u8 {
        [STAGING, OTHER, NONE]
            .into_iter()
            .find(|b| m & b != 0)
            .unwrap_or(0)
    }

    /// The combination as words (`staging+production`, `none`).
    pub fn describe(m: u8) -> String {
        let mut v = Vec::new();
        for (bit, name) in [
            (NONE, "no environment"),
            (OTHER, "other"),
            (STAGING, "staging"),
            (PRODUCTION, "production"),
        ] {
            if m & bit != 0 {
                v.push(name);
            }
        }
        if v.is_empty() {
            "nothing yet".into()
        } else {
            v.join(" + ")
        }
    }
}

/// Tokens that name an environment or a variant rather than a role; dropped from names.
const NOISE: &[&str] = &[
    "prod",
    "production",
    "prd",
    "live",
    "staging",
    "stage",
    "stg",
    "preprod",
    "uat",
    "dev",
    "development",
    "develop",
    "test",
    "testing",
    "qa",
    "sandbox",
    "sbx",
    "yml",
    "yaml",
];

/// The name's tokens that say what it is for: split on separators, lowercased, without
/// environment names and numbers.
fn role_tokens(name: &str) -> Vec<String> {
    name.split(['-', '_', '.', '/', ':', ' '])
        .map(str::to_ascii_lowercase)
        .filter(|t| !t.is_empty() && !NOISE.contains(&t.as_str()))
        .filter(|t| !t.bytes().all(|b| b.is_ascii_digit()))
        .collect()
}

/// The three candidate group names of an identity, finest first, learned from its name.
pub fn learned_keys(identity: &str) -> [String; LEVELS] {
    let same = |k: String| [k.clone(), k.clone(), k];
    let (system, rest) = identity.split_once(':').unwrap_or(("other", identity));
    match system {
        "github" => {
            if let Some((_, file)) = rest.split_once("/.github/workflows/") {
                let t = role_tokens(file);
                let first = t.first().cloned().unwrap_or_default();
                [
                    format!("github workflows {}", t.join("-")),
                    format!("github workflows {first}*"),
                    "github workflows".into(),
                ]
            } else if let Some((_, name)) = rest.split_once(':') {
                let t = role_tokens(name);
                let first = t.first().cloned().unwrap_or_default();
                [
                    format!("github workflows named {}", t.join(" ")),
                    format!("github workflows {first}*"),
                    "github workflows".into(),
                ]
            } else {
                same("github repositories".into())
            }
        }
        "gitlab" => {
            let (project, config) = rest.rsplit_once('/').unwrap_or((rest, ""));
            let group = project.split('/').next().unwrap_or(project);
            let fine = if config.is_empty() || config == ".gitlab-ci.yml" {
                format!("gitlab pipelines in {group}")
            } else {
                format!("gitlab pipelines defined by {config}")
            };
            [
                fine,
                format!("gitlab pipelines in {group}"),
                "gitlab pipelines".into(),
            ]
        }
        "vault" => {
            let (mount, role) = rest.split_once('/').unwrap_or((rest, ""));
            let t = role_tokens(role);
            match t.first() {
                Some(first) => [
                    format!("vault {mount} roles {}", t.join("-")),
                    format!("vault {mount} roles {first}*"),
                    format!("vault {mount} roles"),
                ],
                None => same(format!("vault {mount} roles")),
            }
        }
        "k8s" => {
            let (ns, sa) = rest.split_once('/').unwrap_or((rest, ""));
            let s = role_tokens(sa);
            let n = role_tokens(ns);
            [
                format!("kubernetes service accounts {}", s.join("-")),
                format!("kubernetes namespaces {}", n.join("-")),
                "kubernetes service accounts".into(),
            ]
        }
        "aws" => {
            let (kind, name) = rest
                .rsplit_once(":role/")
                .map(|(_, n)| ("roles", n))
                .or_else(|| rest.rsplit_once(":user/").map(|(_, n)| ("users", n)))
                .unwrap_or(("principals", ""));
            let name = name.rsplit('/').next().unwrap_or(name);
            let t = role_tokens(name);
            let shape = match (t.first(), t.last()) {
                (Some(f), Some(l)) if t.len() > 2 => format!("{f}-*-{l}"),
                (Some(f), _) => format!("{f}*"),
                _ => String::new(),
            };
            [
                format!("aws {kind} named {}", t.join("-")),
                format!("aws {kind} {shape}"),
                format!("aws {kind}"),
            ]
        }
        other => same(format!("{other} identities")),
    }
}

/// The environment-tier combination of an identity: the tiers of the environments it minted
/// for since `since`, and whether it minted without one since then.
pub fn env_mask(envs: &ValueSet, noenv_last: Day, since: Day) -> u8 {
    let mut m = 0;
    for e in envs.recent(since) {
        m |= mask::of(Tier::from_u8(e.aux));
    }
    if noenv_last != 0 && noenv_last >= since {
        m |= mask::NONE;
    }
    m
}

/// One group's counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    size: u32,
    /// Members by environment-tier combination.
    masks: [u32; 16],
    /// Members that minted within each time-of-week window (`bin ± radius`, same day type).
    windows: Vec<u16>,
    /// Members that minted at a weekend at all.
    weekend: u32,
    /// The longest a member deployed elsewhere before its first production mint, days
    /// (members whose first production mint raised no finding): the group's release cycle.
    first_release: u16,
}

/// What peer groups hold.
#[derive(Debug, Default)]
pub struct Peers {
    groups: DashMap<GroupId, Group, MapHasher>,
    names: DashMap<GroupId, Box<str>, MapHasher>,
    /// (group, value) → members that adopted it, and the last day one did.
    values: DashMap<u64, (u32, Day), MapHasher>,
    /// Half-width of a time-of-week window, hours (the off-hours detector's).
    radius: u8,
    /// The peer counts of other partitions judged together with this one (see
    /// [`Peers::set_siblings`]): every count read is the sum over this one and them.
    siblings: std::sync::RwLock<Vec<std::sync::Arc<Peers>>>,
}

/// The bit of a member's window record that says it is counted among weekend minters.
const WEEKEND_BIT: u64 = 1 << 48;

/// The key of a value in a group.
fn value_key(group: GroupId, value: u64) -> u64 {
    value.rotate_left(17) ^ u64::from(group).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

impl Peers {
    /// Sets the half-width of the time-of-week windows members are counted in.
    pub fn set_radius(&mut self, radius: u8) {
        self.radius = radius;
    }

    /// Registers a new identity in its candidate groups (with no environment yet).
    pub fn join(&self, ids: &[GroupId; LEVELS], names: &[String; LEVELS]) {
        for (i, (id, name)) in ids.iter().zip(names).enumerate() {
            if ids[..i].contains(id) {
                continue;
            }
            {
                let mut g = self.groups.entry(*id).or_default();
                g.size += 1;
                g.masks[0] += 1;
            }
            if !self.names.contains_key(id) {
                self.names.insert(*id, name.as_str().into());
            }
        }
    }

    /// Judges with the members other partitions count (the partitions one instance holds
    /// judge together): each keeps counting its own members, which is what its snapshot
    /// saves, and every read adds theirs up. Replaces any earlier list; `self` is skipped.
    pub fn set_siblings(self: &std::sync::Arc<Self>, siblings: Vec<std::sync::Arc<Peers>>) {
        let others = siblings
            .into_iter()
            .filter(|s| !std::sync::Arc::ptr_eq(s, self))
            .collect();
        *self.siblings.write().unwrap_or_else(|e| e.into_inner()) = others;
    }

    /// Calls `f` with this partition's counts and each sibling's.
    fn each(&self, mut f: impl FnMut(&Peers)) {
        f(self);
        let siblings = self.siblings.read().unwrap_or_else(|e| e.into_inner());
        for s in siblings.iter() {
            f(s);
        }
    }

    /// Whether any sibling is linked (reads then sum over partitions).
    fn linked(&self) -> bool {
        !self
            .siblings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// Members of a group.
    pub fn size(&self, id: GroupId) -> u32 {
        if !self.linked() {
            return self.groups.get(&id).map_or(0, |g| g.size);
        }
        let mut n = 0;
        self.each(|p| n += p.groups.get(&id).map_or(0, |g| g.size));
        n
    }

    /// The name of a group.
    pub fn name(&self, id: GroupId) -> String {
        let mut name = None;
        self.each(|p| {
            if name.is_none() {
                name = p.names.get(&id).map(|n| n.to_string());
            }
        });
        name.unwrap_or_else(|| format!("#{id:08x}"))
    }

    /// The finest candidate group with at least `min_size` members (else the coarsest).
    pub fn choose(&self, ids: &[GroupId; LEVELS], min_size: u32) -> GroupId {
        ids.iter()
            .copied()
            .find(|id| self.size(*id) >= min_size)
            .unwrap_or(ids[LEVELS - 1])
    }

    /// Moves a member from one environment-tier combination to another.
    pub fn move_mask(&self, ids: &[GroupId; LEVELS], from: u8, to: u8) {
        if from == to {
            return;
        }
        for_each_distinct(ids, |id| {
            let mut g = self.groups.entry(id).or_default();
            let m = &mut g.masks;
            m[usize::from(from & 15)] = m[usize::from(from & 15)].saturating_sub(1);
            m[usize::from(to & 15)] += 1;
        });
    }

    /// Members (other than one holding `own`) whose combination includes `own`, and of those
    /// the ones whose combination also includes `with`.
    pub fn mask_share(&self, id: GroupId, own: u8, with: u8) -> (u32, u32) {
        let mut masks: Option<[u32; 16]> = None;
        self.each(|p| {
            if let Some(g) = p.groups.get(&id) {
                let t = masks.get_or_insert([0; 16]);
                for (a, b) in t.iter_mut().zip(g.masks) {
                    *a += b;
                }
            }
        });
        let Some(masks) = masks else {
            return (0, 0);
        };
        let (mut a, mut b) = (0u32, 0u32);
        for (m, n) in masks.iter().enumerate() {
            let m = m as u8;
            if m & own == own {
                a += n;
                if m & with == with {
                    b += n;
                }
            }
        }
        // The identity itself holds `own` and not `with`.
        (a.saturating_sub(1), b)
    }

    /// Records that a member adopted a value on `day`.
    pub fn adopt(&self, ids: &[GroupId; LEVELS], value: u64, day: Day) {
        for_each_distinct(ids, |id| {
            let mut e = self.values.entry(value_key(id, value)).or_insert((0, day));
            e.0 += 1;
            e.1 = e.1.max(day);
        });
    }

    /// Members of a group that adopted a value (and were last joined by one on or after
    /// `since`).
    pub fn adopters(&self, id: GroupId, value: u64, since: Day) -> u32 {
        let key = value_key(id, value);
        let (mut n, mut last) = (0u32, None::<Day>);
        self.each(|p| {
            if let Some(e) = p.values.get(&key) {
                n += e.0;
                last = Some(last.map_or(e.1, |l| l.max(e.1)));
            }
        });
        match last {
            Some(l) if l >= since => n.min(self.size(id)),
            _ => 0,
        }
    }

    /// Counts a member in the time-of-week windows that contain `bin` (and among those
    /// that mint at weekends), once each: `counted` is the member's record of where it is
    /// counted already (bits 0–47 windows, bit 48 weekends).
    pub fn count_windows(&self, ids: &[GroupId; LEVELS], counted: &mut u64, bin: u8) {
        let r = i32::from(self.radius);
        let day_type = i32::from(bin / 24);
        let hour = i32::from(bin % 24);
        let mut newly = 0u64;
        for d in -r..=r {
            let w = day_type * 24 + (hour + d).rem_euclid(24);
            newly |= 1 << w;
        }
        if bin >= 24 {
            newly |= WEEKEND_BIT;
        }
        newly &= !*counted;
        if newly == 0 {
            return;
        }
        *counted |= newly;
        self.add_windows(ids, newly);
    }

    /// Counts a restored member in the windows it was counted in (after a rebuild).
    pub fn rebuild_windows(&self, ids: &[GroupId; LEVELS], counted: u64) {
        if counted != 0 {
            self.add_windows(ids, counted);
        }
    }

    fn add_windows(&self, ids: &[GroupId; LEVELS], bits: u64) {
        for_each_distinct(ids, |id| {
            let mut g = self.groups.entry(id).or_default();
            if g.windows.is_empty() {
                g.windows = vec![0; BINS];
            }
            for w in 0..BINS {
                if bits & (1 << w) != 0 {
                    g.windows[w] = g.windows[w].saturating_add(1);
                }
            }
            if bits & WEEKEND_BIT != 0 {
                g.weekend += 1;
            }
        });
    }

    /// Records how many days a member deployed elsewhere before its first production mint.
    pub fn record_first_release(&self, ids: &[GroupId; LEVELS], days: u16) {
        for_each_distinct(ids, |id| {
            let mut g = self.groups.entry(id).or_default();
            g.first_release = g.first_release.max(days);
        });
    }

    /// The longest a member of the group deployed elsewhere before its first production mint
    /// (0: none recorded).
    pub fn first_release(&self, id: GroupId) -> u16 {
        let mut days = 0;
        self.each(|p| days = days.max(p.groups.get(&id).map_or(0, |g| g.first_release)));
        days
    }

    /// Members of a group that minted at a weekend.
    pub fn at_weekends(&self, id: GroupId) -> u32 {
        let (mut n, mut size) = (0, 0);
        self.each(|p| {
            if let Some(g) = p.groups.get(&id) {
                n += g.weekend;
                size += g.size;
            }
        });
        n.min(size)
    }

    /// Members of a group that minted within the window centred on `bin`.
    pub fn in_window(&self, id: GroupId, bin: u8) -> u32 {
        let (mut n, mut size) = (0u32, 0);
        self.each(|p| {
            if let Some(g) = p.groups.get(&id) {
                n += u32::from(g.windows.get(usize::from(bin)).copied().unwrap_or(0));
                size += g.size;
            }
        });
        n.min(size)
    }

    /// (group, value) adoptions tracked.
    pub fn values_len(&self) -> usize {
        self.values.len()
    }

    /// Groups tracked.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// True when no group is tracked.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Approximate heap bytes held (memory accounting).
    pub fn heap_bytes(&self) -> usize {
        let groups: usize = self
            .groups
            .iter()
            .map(|g| 96 + g.windows.capacity() * 2)
            .sum();
        let names: usize = self.names.iter().map(|n| 32 + n.len()).sum();
        groups + names + self.values.len() * 32
    }

    /// Drops adopted values no member was last seen adopting since `before`.
    pub fn forget(&self, before: Day) {
        if !self.linked() {
            self.values.retain(|_, e| e.1 >= before);
            return;
        }
        // Judged together, an adoption is kept while any partition saw one recently, as one
        // partition holding every member would.
        let siblings = self.siblings.read().unwrap_or_else(|e| e.into_inner());
        self.values.retain(|k, e| {
            e.1 >= before
                || siblings
                    .iter()
                    .any(|s| s.values.get(k).is_some_and(|o| o.1 >= before))
        });
    }

    /// Every group, name and adopted value, sorted (snapshots).
    pub fn export(&self) -> Export {
        let mut groups: Vec<(GroupId, Group)> = self
            .groups
            .iter()
            .map(|e| (*e.key(), e.value().clone()))
            .collect();
        groups.sort_unstable_by_key(|(k, _)| *k);
        let mut names: Vec<(GroupId, String)> = self
            .names
            .iter()
            .map(|e| (*e.key(), e.value().to_string()))
            .collect();
        names.sort_unstable();
        let mut values: Vec<(u64, (u32, Day))> =
            self.values.iter().map(|e| (*e.key(), *e.value())).collect();
        values.sort_unstable_by_key(|(k, _)| *k);
        Export {
            groups,
            names,
            values,
        }
    }

    /// Restores what [`Peers::export`] saved.
    pub fn import(&self, e: Export) {
        self.clear();
        for (k, g) in e.groups {
            self.groups.insert(k, g);
        }
        for (k, n) in e.names {
            self.names.insert(k, n.into_boxed_str());
        }
        for (k, v) in e.values {
            self.values.insert(k, v);
        }
    }

    /// Forgets everything (before a rebuild).
    pub fn clear(&self) {
        self.groups.clear();
        self.names.clear();
        self.values.clear();
    }
}

/// What a snapshot keeps of the peer groups.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Export {
    groups: Vec<(GroupId, Group)>,
    names: Vec<(GroupId, String)>,
    values: Vec<(u64, (u32, Day))>,
}

fn for_each_distinct(ids: &[GroupId; LEVELS], mut f: impl FnMut(GroupId)) {
    for (i, id) in ids.iter().enumerate() {
        if *id != 0 && !ids[..i].contains(id) {
            f(*id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_give_roles() {
        let k = learned_keys("github:acme/api/.github/workflows/deploy.yml");
        assert_eq!(k[0], "github workflows deploy");
        assert_eq!(
            learned_keys("github:acme/platform/.github/workflows/deploy-billing-prod.yml")[1],
            "github workflows deploy*"
        );
        assert_eq!(
            learned_keys("gitlab:acme-data/etl/.gitlab-ci.yml")[0],
            "gitlab pipelines in acme-data"
        );
        assert_eq!(
            learned_keys("vault:approle/billing-production")[0],
            "vault approle roles billing"
        );
        assert_eq!(
            learned_keys("vault:jwt/ci-deploy-api-2-staging")[1],
            "vault jwt roles ci*"
        );
        let k = learned_keys("k8s:payments-prod/payments-worker");
        assert_eq!(k[0], "kubernetes service accounts payments-worker");
        assert_eq!(k[1], "kubernetes namespaces payments");
        let k = learned_keys("aws:arn:aws:iam::111111111111:role/gha-billing-deploy");
        assert_eq!(k[0], "aws roles named gha-billing-deploy");
        assert_eq!(k[1], "aws roles gha-*-deploy");
        assert_eq!(learned_keys("github:acme/api")[0], "github repositories");
        assert_eq!(learned_keys("custom:x")[2], "custom identities");
    }

    #[test]
    fn groups_count_members_masks_values_and_windows() {
        let p = {
            let mut p = Peers::default();
            p.set_radius(3);
            p
        };
        let names = learned_keys("github:a/x/.github/workflows/deploy.yml");
        let ids = names.clone().map(|n| group_id(&n));
        for _ in 0..4 {
            p.join(&ids, &names);
        }
        assert_eq!(p.size(ids[0]), 4);
        assert_eq!(p.choose(&ids, 5), ids[2], "too small: the coarsest");
        assert_eq!(p.choose(&ids, 4), ids[0]);
        // Three staging deployers, two of which also deploy to production.
        for to in [
            mask::STAGING,
            mask::STAGING | mask::PRODUCTION,
            mask::STAGING | mask::PRODUCTION,
            mask::NONE,
        ] {
            p.move_mask(&ids, 0, to);
        }
        assert_eq!(
            p.mask_share(ids[0], mask::STAGING, mask::PRODUCTION),
            (2, 2),
            "the asking member is one of the three staging deployers"
        );
        assert_eq!(p.mask_share(ids[0], mask::NONE, mask::PRODUCTION), (0, 0));
        p.adopt(&ids, 42, 10);
        p.adopt(&ids, 42, 12);
        assert_eq!(p.adopters(ids[0], 42, 11), 2);
        assert_eq!(p.adopters(ids[0], 42, 13), 0);
        // A member's mint on weekdays at 02h counts it in the windows 23h … 05h.
        let mut counted = 0u64;
        p.count_windows(&ids, &mut counted, 2);
        assert_eq!(p.in_window(ids[0], 2), 1);
        assert_eq!(p.in_window(ids[0], 5), 1);
        assert_eq!(p.in_window(ids[0], 23), 1);
        assert_eq!(p.in_window(ids[0], 6), 0);
        assert_eq!(p.in_window(ids[0], 26), 0, "weekends are another day type");
        // Once per window: a mint at 04h adds the windows 06h and 07h only.
        p.count_windows(&ids, &mut counted, 4);
        assert_eq!(p.in_window(ids[0], 2), 1);
        assert_eq!(p.in_window(ids[0], 7), 1);
        assert_eq!(p.at_weekends(ids[0]), 0);
        p.count_windows(&ids, &mut counted, 24 + 10);
        assert_eq!(p.at_weekends(ids[0]), 1);
        // A restore counts the same.
        let q = Peers::default();
        q.join(&ids, &names);
        q.rebuild_windows(&ids, counted);
        assert_eq!(q.in_window(ids[0], 7), 1);
        assert_eq!(q.at_weekends(ids[0]), 1);
    }
}
