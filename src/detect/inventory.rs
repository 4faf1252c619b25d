//! The inventory of non-human identities (`nhiwatch inventory`): one row per identity with a
//! baseline — what it is, who owns it, where it deploys, what it may do, how long its
//! credentials live, where it runs, when it was seen — and a **risk tier** with the reasons
//! that put it there. Built from the same baselines as `baselines show` (a state directory
//! of `replay --state` or `run --state-dir`).
//!
//! Tiers (each reason is listed on the row):
//! - **1**: reaches production *and* holds a write or admin scope *and* either a long-lived
//!   credential (longer than [`LONG_LIVED_SECS`]), production mints from unprotected refs, or
//!   a self-hosted runner;
//! - **2**: reaches production with a write or admin scope, or holds a write or admin scope
//!   with a long-lived credential;
//! - **3**: everything else.

use serde::Serialize;

use super::Engine;
use super::report::Report;
use crate::time::Timestamp;

/// A credential that lives longer than this (seconds) counts as long-lived: four hours,
/// beyond what a CI job needs and beyond a kubelet-projected token's hour (3,607 s).
pub const LONG_LIVED_SECS: u32 = 4 * 3600;

/// One identity's row.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// The identity, as in alerts.
    pub identity: String,
    /// What it is: `workflow`, `repository`, `gitlab pipeline`, `vault role`,
    /// `kubernetes service account`, `aws role`, `iam user`, or the identity's scheme.
    pub kind: String,
    /// Where its records come from: `github`, `gitlab`, `vault`, `k8s`, `aws`.
    pub source: String,
    /// Who owns it, as far as its name says: organisation/repository, group/project,
    /// namespace, account.
    pub owner: String,
    /// The environments it minted for, production tier first.
    pub environments: Vec<String>,
    /// It reached an environment of the production tier.
    pub production: bool,
    /// The highest privilege rank among its scopes: `none`, `read`, `write`, `admin`.
    pub highest_rank: String,
    /// Distinct scopes seen.
    pub scopes: usize,
    /// The longest credential lifetime seen, seconds (0: none stated).
    pub longest_ttl_s: u32,
    /// Runner kinds it ran on (`hosted`, `self-hosted`).
    pub runner_kinds: Vec<String>,
    /// First and last event.
    pub first_seen: Timestamp,
    /// Last event.
    pub last_seen: Timestamp,
    /// Days from the first to the last event, at least 1.
    pub days_seen: u32,
    /// Credential mints.
    pub mints: u32,
    /// Credential uses.
    pub uses: u32,
    /// Mints per day seen.
    pub mints_per_day: f64,
    /// Uses per day seen.
    pub uses_per_day: f64,
    /// Production mints from refs outside the protected set.
    pub unprotected_production_mints: u32,
    /// Its peer group and the group's size.
    pub peer_group: String,
    /// Identities in the peer group.
    pub peer_group_size: u32,
    /// Days between its last event and the newest event of the inventory.
    pub idle_days: u32,
    /// 1 (highest risk) to 3.
    pub tier: u8,
    /// Why it has that tier.
    pub reasons: Vec<String>,
}

/// The scheme, kind and owner an identity's name tells.
pub fn classify(identity: &str) -> (String, String, String) {
    let (scheme, rest) = identity.split_once(':').unwrap_or(("", identity));
    let parts: Vec<&str> = rest.split('/').collect();
    let first_two = || parts.iter().take(2).copied().collect::<Vec<_>>().join("/");
    let (kind, owner) = match scheme {
        "github" if rest.contains("/.github/workflows/") => ("workflow", first_two()),
        "github" => ("repository", first_two()),
        "gitlab" => {
            // group[/subgroup…]/project/.gitlab-ci.yml: the owner is the project path.
            let path = rest.split("/.gitlab-ci").next().unwrap_or(rest);
            ("gitlab pipeline", path.to_string())
        }
        "vault" => ("vault role", rest.to_string()),
        "k8s" => ("kubernetes service account", parts[0].to_string()),
        "aws" => {
            // arn:aws:iam::<account>:role/<name> or :user/<name>
            let fields: Vec<&str> = rest.split(':').collect();
            let account = fields.get(4).copied().unwrap_or_default().to_string();
            let what = fields.get(5).copied().unwrap_or_default();
            let kind = if what.starts_with("user/") {
                "iam user"
            } else {
                "aws role"
            };
            (kind, account)
        }
        _ => ("identity", String::new()),
    };
    (scheme.to_string(), kind.to_string(), owner)
}

/// The tier of a row and the reasons for it.
pub fn tier(r: &Row) -> (u8, Vec<String>) {
    let privileged = matches!(r.highest_rank.as_str(), "write" | "admin");
    let long_lived = r.longest_ttl_s > LONG_LIVED_SECS;
    let self_hosted = r.runner_kinds.iter().any(|k| k == "self-hosted");
    let unprotected = r.unprotected_production_mints > 0;
    let mut reasons = Vec::new();
    if r.production {
        reasons.push("reaches production".to_string());
    }
    if privileged {
        reasons.push(format!("{} scope", r.highest_rank));
    }
    if long_lived {
        reasons.push(format!("credentials live up to {} s", r.longest_ttl_s));
    }
    if unprotected {
        reasons.push(format!(
            "{} production mint(s) from unprotected refs",
            r.unprotected_production_mints
        ));
    }
    if self_hosted {
        reasons.push("runs on self-hosted runners".to_string());
    }
    let tier = if r.production && privileged && (long_lived || unprotected || self_hosted) {
        1
    } else if privileged && (r.production || long_lived) {
        2
    } else {
        3
    };
    (tier, reasons)
}

fn row(r: &Report) -> Row {
    let (source, kind, owner) = classify(&r.identity);
    let mut environments: Vec<(bool, String)> = r
        .environments
        .iter()
        .map(|v| (v.kind.contains("production"), v.value.clone()))
        .collect();
    environments.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    environments.dedup();
    let production = r.production_mints.0 > 0 || environments.iter().any(|(p, _)| *p);
    let mut runner_kinds: Vec<String> = r
        .runners
        .iter()
        .filter(|v| v.kind == crate::baseline::Class::RunnerKind.label())
        .map(|v| v.value.clone())
        .filter(|v| !v.is_empty())
        .collect();
    runner_kinds.sort();
    runner_kinds.dedup();
    let span = r.last_seen.as_micros() - r.first_seen.as_micros();
    let days_seen = (span / 86_400_000_000 + 1).max(1) as u32;
    let mut row = Row {
        identity: r.identity.clone(),
        kind,
        source,
        owner,
        environments: environments.into_iter().map(|(_, e)| e).collect(),
        production,
        highest_rank: r.highest_rank.to_string(),
        scopes: r.scopes.len(),
        longest_ttl_s: r.longest_ttl,
        runner_kinds,
        first_seen: r.first_seen,
        last_seen: r.last_seen,
        days_seen,
        mints: r.mints,
        uses: r.uses,
        mints_per_day: round1(f64::from(r.mints) / f64::from(days_seen)),
        uses_per_day: round1(f64::from(r.uses) / f64::from(days_seen)),
        unprotected_production_mints: r.production_mints.1,
        peer_group: r.peer_group.clone(),
        peer_group_size: r.peer_group_size,
        idle_days: 0,
        tier: 3,
        reasons: Vec::new(),
    };
    (row.tier, row.reasons) = tier(&row);
    row
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Every identity of `engines` (in memory or spilled), one row each, most at risk first
/// (tier, then most mints). Idle days count from the newest event among them: the data's
/// own clock, so an inventory of last quarter's records reads the same today.
pub fn rows(engines: &[&Engine]) -> Vec<Row> {
    let mut rows: Vec<Row> = engines
        .iter()
        .flat_map(|e| super::report::all(e).iter().map(row).collect::<Vec<_>>())
        .collect();
    let newest = rows
        .iter()
        .map(|r| r.last_seen.as_micros())
        .max()
        .unwrap_or(0);
    for r in &mut rows {
        r.idle_days = ((newest - r.last_seen.as_micros()) / 86_400_000_000) as u32;
    }
    rows.sort_by(|a, b| {
        a.tier
            .cmp(&b.tier)
            .then(b.mints.cmp(&a.mints))
            .then(a.identity.cmp(&b.identity))
    });
    rows
}

/// Which rows to keep (`--environment`, `--tier`, `--source`, `--stale-days`).
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Rows whose environments include this one (case-insensitive).
    pub environment: Option<String>,
    /// Rows of this tier or a riskier one.
    pub tier: Option<u8>,
    /// Rows of this source (`github`, `gitlab`, `vault`, `k8s`, `aws`).
    pub source: Option<String>,
    /// Rows idle for at least this many days.
    pub stale_days: Option<u32>,
}

impl Filter {
    /// Whether `r` passes.
    pub fn keeps(&self, r: &Row) -> bool {
        self.environment
            .as_ref()
            .is_none_or(|e| r.environments.iter().any(|x| x.eq_ignore_ascii_case(e)))
            && self.tier.is_none_or(|t| r.tier <= t)
            && self.source.as_ref().is_none_or(|s| r.source == *s)
            && self.stale_days.is_none_or(|d| r.idle_days >= d)
    }
}

/// The columns of the table and the CSV, in order.
pub const COLUMNS: &[&str] = &[
    "tier",
    "identity",
    "kind",
    "owner",
    "environments",
    "highest_rank",
    "longest_ttl_s",
    "runner_kinds",
    "first_seen",
    "last_seen",
    "idle_days",
    "mints_per_day",
    "uses_per_day",
    "peer_group",
    "reasons",
];

fn cells(r: &Row) -> Vec<String> {
    vec![
        r.tier.to_string(),
        r.identity.clone(),
        r.kind.clone(),
        r.owner.clone(),
        r.environments.join(" "),
        r.highest_rank.clone(),
        r.longest_ttl_s.to_string(),
        r.runner_kinds.join(" "),
        r.first_seen.to_rfc3339(),
        r.last_seen.to_rfc3339(),
        r.idle_days.to_string(),
        r.mints_per_day.to_string(),
        r.uses_per_day.to_string(),
        if r.peer_group.is_empty() {
            String::new()
        } else {
            format!("{} ({})", r.peer_group, r.peer_group_size)
        },
        r.reasons.join("; "),
    ]
}

/// The rows as CSV (RFC 4180 quoting), with a header.
pub fn csv(rows: &[Row]) -> String {
    let quote = |c: &str| {
        if c.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", c.replace('"', "\"\""))
        } else {
            c.to_string()
        }
    };
    let mut out = COLUMNS.join(",");
    out.push('\n');
    for r in rows {
        let line: Vec<String> = cells(r).iter().map(|c| quote(c)).collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    out
}

/// The rows as an aligned text table (the long columns last), with tier counts at the end.
pub fn table(rows: &[Row]) -> String {
    let shown = [
        "tier",
        "kind",
        "environments",
        "highest_rank",
        "longest_ttl_s",
        "idle_days",
        "mints_per_day",
        "identity",
        "reasons",
    ];
    let index: Vec<usize> = shown
        .iter()
        .map(|c| COLUMNS.iter().position(|x| x == c).unwrap_or(0))
        .collect();
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let c = cells(r);
            index.iter().map(|&i| c[i].clone()).collect()
        })
        .collect();
    let mut width: Vec<usize> = shown.iter().map(|c| c.len()).collect();
    for line in &body {
        for (w, c) in width.iter_mut().zip(line) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let last = shown.len() - 1;
    let mut push = |cols: &[String]| {
        for (i, c) in cols.iter().enumerate() {
            if i == last {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  ", w = width[i]));
            }
        }
        out.push('\n');
    };
    push(&shown.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    for line in &body {
        push(line);
    }
    let count = |t: u8| rows.iter().filter(|r| r.tier == t).count();
    out.push_str(&format!(
        "\n{} identities: tier 1 {}, tier 2 {}, tier 3 {}\n",
        rows.len(),
        count(1),
        count(2),
        count(3)
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Row {
        Row {
            identity: "github:acme/api/.github/workflows/deploy.yml".into(),
            kind: "workflow".into(),
            source: "github".into(),
            owner: "acme/api".into(),
            environments: vec!["production".into()],
            production: true,
            highest_rank: "write".into(),
            scopes: 1,
            longest_ttl_s: 900,
            runner_kinds: vec!["hosted".into()],
            first_seen: Timestamp::from_micros(0),
            last_seen: Timestamp::from_micros(0),
            days_seen: 1,
            mints: 1,
            uses: 0,
            mints_per_day: 1.0,
            uses_per_day: 0.0,
            unprotected_production_mints: 0,
            peer_group: String::new(),
            peer_group_size: 0,
            idle_days: 0,
            tier: 3,
            reasons: Vec::new(),
        }
    }

    #[test]
    fn names_say_kind_and_owner() {
        let c = |i: &str| {
            let (s, k, o) = classify(i);
            format!("{s}|{k}|{o}")
        };
        assert_eq!(
            c("github:acme/api/.github/workflows/deploy.yml"),
            "github|workflow|acme/api"
        );
        assert_eq!(
            c("github:acme/inventory"),
            "github|repository|acme/inventory"
        );
        assert_eq!(
            c("gitlab:acme-platform/sub/profile/.gitlab-ci.yml"),
            "gitlab|gitlab pipeline|acme-platform/sub/profile"
        );
        assert_eq!(
            c("k8s:auth-prod/auth"),
            "k8s|kubernetes service account|auth-prod"
        );
        assert_eq!(
            c("aws:arn:aws:iam::333333333333:role/gha-deploy"),
            "aws|aws role|333333333333"
        );
        assert_eq!(
            c("aws:arn:aws:iam::333333333333:user/ci-bot"),
            "aws|iam user|333333333333"
        );
        assert_eq!(c("vault:approle"), "vault|vault role|approle");
    }

    #[test]
    fn tier_one_needs_production_privilege_and_one_more_exposure() {
        let r = base();
        assert_eq!(tier(&r).0, 2, "production + write only");
        for (what, r) in [
            (
                "long-lived",
                Row {
                    longest_ttl_s: 86_400,
                    ..base()
                },
            ),
            (
                "self-hosted",
                Row {
                    runner_kinds: vec!["self-hosted".into()],
                    ..base()
                },
            ),
            (
                "unprotected",
                Row {
                    unprotected_production_mints: 2,
                    ..base()
                },
            ),
        ] {
            let (t, reasons) = tier(&r);
            assert_eq!(t, 1, "{what}: {reasons:?}");
            assert_eq!(reasons.len(), 3, "{what}: {reasons:?}");
        }
        let read = Row {
            highest_rank: "read".into(),
            longest_ttl_s: 86_400,
            ..base()
        };
        assert_eq!(tier(&read).0, 3, "production with read scopes only");
        let staging = Row {
            production: false,
            environments: vec![],
            longest_ttl_s: 86_400,
            ..base()
        };
        assert_eq!(
            tier(&staging).0,
            2,
            "write scope with a day-long credential"
        );
        let quiet = Row {
            production: false,
            environments: vec![],
            ..base()
        };
        assert_eq!(tier(&quiet).0, 3);
    }

    #[test]
    fn filters_and_csv_quoting() {
        let f = Filter {
            environment: Some("PRODUCTION".into()),
            tier: Some(2),
            source: Some("github".into()),
            stale_days: None,
        };
        let mut r = base();
        r.tier = 2;
        assert!(f.keeps(&r));
        r.tier = 3;
        assert!(!f.keeps(&r));
        let stale = Filter {
            stale_days: Some(30),
            ..Filter::default()
        };
        r.idle_days = 29;
        assert!(!stale.keeps(&r));
        r.idle_days = 30;
        assert!(stale.keeps(&r));
        r.reasons = vec!["a, b".into(), "c \"d\"".into()];
        let text = csv(&[r]);
        let line = text.lines().nth(1).unwrap();
        assert!(line.ends_with("\"a, b; c \"\"d\"\"\""), "{line}");
        assert_eq!(text.lines().next().unwrap(), COLUMNS.join(","));
    }
}
