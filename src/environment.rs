//! Environment resolution: which deployment environment a record belongs to.
//!
//! Sources name environments differently (`prod`, `production`, GitLab's `deployment_tier`,
//! an AWS account id, a Vault path segment, a Kubernetes namespace). Detectors compare
//! environments across sources, so names are brought to one vocabulary:
//!
//! 1. user mappings from `nhiwatch.toml` win (AWS account → env, Vault path prefix → env,
//!    Kubernetes namespace → env, extra aliases);
//! 2. a whole name that is a known alias is replaced by its canonical name
//!    (`prod` → `production`, `stg` → `staging`, `qa` → `testing`);
//! 3. for names that are not environments by themselves (Vault paths, role names, namespaces),
//!    the name is split into tokens and an environment is inferred only when exactly one
//!    environment is named and no negation (`non-prod`) is present.
//!
//! Explicit environment names from CI claims are never token-split: `prod-eu` stays
//! `prod-eu`, because the user chose that name and two regions must stay distinguishable.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// `[environments]`: how source-specific names map to environments.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentsConfig {
    /// Extra aliases, name → canonical environment (`"live-eu" = "production"`). Built-in
    /// aliases map prod/prd/live → production, stage/stg/preprod/uat → staging,
    /// test/qa → testing, dev/develop → development.
    #[serde(default)]
    pub aliases: BTreeMap<String, String>,
    /// AWS account id → environment. Unmapped accounts use the account id as the environment.
    #[serde(default)]
    pub aws_accounts: BTreeMap<String, String>,
    /// Vault path prefix → environment (`"kv/data/payments/" = "production"`); the longest
    /// matching prefix wins. Unmapped paths use a segment that names an environment.
    #[serde(default)]
    pub vault_paths: BTreeMap<String, String>,
    /// Kubernetes namespace → environment; `"*"` is the default for unmapped namespaces whose
    /// name implies no environment.
    #[serde(default)]
    pub kubernetes_namespaces: BTreeMap<String, String>,
}

/// How critical an environment is: production > staging > everything else.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum Tier {
    /// Anything that is not staging or production.
    Other = 0,
    /// Staging and its aliases.
    Staging = 1,
    /// Production.
    Production = 2,
}

impl Tier {
    /// The tier of a (normalized) environment name.
    pub fn of(env: &str) -> Tier {
        match env {
            "production" => Tier::Production,
            "staging" => Tier::Staging,
            _ => {
                // `prod-eu`, `payments-production`: a production token among the name's.
                let mut tier = Tier::Other;
                for t in env.split(['-', '_', '.', '/', ':']) {
                    match t.to_ascii_lowercase().as_str() {
                        "non" | "not" | "no" => return Tier::Other,
                        "prod" | "production" | "prd" | "live" => tier = tier.max(Tier::Production),
                        "staging" | "stage" | "stg" | "preprod" | "uat" => {
                            tier = tier.max(Tier::Staging)
                        }
                        _ => {}
                    }
                }
                tier
            }
        }
    }

    /// From the stored byte.
    pub fn from_u8(v: u8) -> Tier {
        match v {
            2 => Tier::Production,
            1 => Tier::Staging,
            _ => Tier::Other,
        }
    }
}

impl EnvironmentsConfig {
    /// Checks that no name or environment is empty and that AWS accounts are account ids.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: String, message: String| ConfigError::Invalid { key, message };
        for (table, map) in [
            ("environments.aliases", &self.aliases),
            ("environments.aws_accounts", &self.aws_accounts),
            ("environments.vault_paths", &self.vault_paths),
            (
                "environments.kubernetes_namespaces",
                &self.kubernetes_namespaces,
            ),
        ] {
            for (k, v) in map {
                if k.trim().is_empty() || v.trim().is_empty() {
                    return Err(invalid(
                        format!("{table}.{k:?}"),
                        "names and environments must not be empty".into(),
                    ));
                }
            }
        }
        for account in self.aws_accounts.keys() {
            if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid(
                    format!("environments.aws_accounts.{account:?}"),
                    "an AWS account id is 12 digits".into(),
                ));
            }
        }
        Ok(())
    }
}

/// Built-in aliases: (alias, canonical name). Canonical names follow GitLab's deployment tiers.
const BUILTIN_ALIASES: &[(&str, &str)] = &[
    ("production", "production"),
    ("prod", "production"),
    ("prd", "production"),
    ("live", "production"),
    ("staging", "staging"),
    ("stage", "staging"),
    ("stg", "staging"),
    ("preprod", "staging"),
    ("pre-prod", "staging"),
    ("preproduction", "staging"),
    ("uat", "staging"),
    ("testing", "testing"),
    ("test", "testing"),
    ("qa", "testing"),
    ("development", "development"),
    ("dev", "development"),
    ("develop", "development"),
];

/// Tokens that negate an environment named next to them (`non-prod`, `not_production`).
const NEGATIONS: &[&str] = &["non", "not", "no"];

/// Resolves environment names; built once from configuration, shared read-only.
#[derive(Clone, Debug)]
pub struct EnvResolver {
    /// (alias in lowercase, canonical name); user aliases first so they win. A short list
    /// scanned without allocating beats hashing a lowercased copy on the per-event path.
    aliases: Vec<(String, String)>,
    aws_accounts: HashMap<String, String>,
    /// (prefix, env), longest prefix first.
    vault_paths: Vec<(String, String)>,
    k8s_namespaces: HashMap<String, String>,
    k8s_default: Option<String>,
    /// Environment names that may be metric label values: the canonical names of the
    /// aliases and every environment the configuration maps to.
    vocabulary: Vec<String>,
}

impl Default for EnvResolver {
    fn default() -> Self {
        EnvResolver::new(&EnvironmentsConfig::default())
    }
}

impl EnvResolver {
    /// Builds a resolver from the `[environments]` section.
    pub fn new(cfg: &EnvironmentsConfig) -> Self {
        let mut aliases: Vec<(String, String)> = cfg
            .aliases
            .iter()
            .map(|(a, c)| (a.to_ascii_lowercase(), c.clone()))
            .collect();
        aliases.extend(
            BUILTIN_ALIASES
                .iter()
                .map(|(a, c)| ((*a).to_string(), (*c).to_string())),
        );
        let mut vault_paths: Vec<(String, String)> = cfg
            .vault_paths
            .iter()
            .map(|(p, e)| (p.trim_start_matches('/').to_string(), e.clone()))
            .collect();
        vault_paths.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        let mut k8s_namespaces = cfg
            .kubernetes_namespaces
            .clone()
            .into_iter()
            .collect::<HashMap<_, _>>();
        let k8s_default = k8s_namespaces.remove("*");
        let mut vocabulary: Vec<String> = aliases
            .iter()
            .map(|(_, c)| c.clone())
            .chain(cfg.aws_accounts.values().cloned())
            .chain(cfg.vault_paths.values().cloned())
            .chain(cfg.kubernetes_namespaces.values().cloned())
            .collect();
        vocabulary.sort_unstable();
        vocabulary.dedup();
        EnvResolver {
            vocabulary,
            aliases,
            aws_accounts: cfg.aws_accounts.clone().into_iter().collect(),
            vault_paths,
            k8s_namespaces,
            k8s_default,
        }
    }

    /// The `environment` label of a metric for an environment name. Names are open-ended
    /// (an unmapped AWS account id is an environment), so only the vocabulary the
    /// configuration knows appears as itself; any other name is reduced to its tier
    /// (`production`, `staging`, `other`), and no environment is `none`.
    pub fn metric_label<'a>(&'a self, env: Option<&str>) -> &'a str {
        let Some(env) = env else {
            return "none";
        };
        if let Some(v) = self.vocabulary.iter().find(|v| v.as_str() == env) {
            return v;
        }
        match Tier::of(env) {
            Tier::Production => "production",
            Tier::Staging => "staging",
            Tier::Other => "other",
        }
    }

    /// Every value [`EnvResolver::metric_label`] can return.
    pub fn metric_labels(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.vocabulary.iter().map(String::as_str).collect();
        v.extend(["production", "staging", "other", "none"]);
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The canonical name of an alias (case-insensitive), if it is one.
    pub fn alias(&self, name: &str) -> Option<&str> {
        self.aliases
            .iter()
            .find(|(a, _)| a.len() == name.len() && a.eq_ignore_ascii_case(name))
            .map(|(_, c)| c.as_str())
    }

    /// An explicit environment name (a CI `environment` claim): its canonical name when it is
    /// an alias, otherwise the name itself, trimmed. `None` for empty names.
    pub fn normalize(&self, name: &str) -> Option<String> {
        let name = name.trim_ascii();
        if name.is_empty() {
            return None;
        }
        Some(match self.alias(name) {
            Some(c) => c.to_string(),
            None => name.to_string(),
        })
    }

    /// Infers an environment from a name that is not one by itself (a role, a namespace, a
    /// path segment): the whole name as an alias, else exactly one alias among its tokens and
    /// no negation.
    pub fn infer(&self, name: &str) -> Option<String> {
        if let Some(c) = self.alias(name) {
            return Some(c.to_string());
        }
        let mut found: Option<&str> = None;
        for token in name.split(['-', '_', '.', '/', ':', ' ']) {
            if token.is_empty() {
                continue;
            }
            if NEGATIONS.iter().any(|n| n.eq_ignore_ascii_case(token)) {
                return None;
            }
            if let Some(c) = self.alias(token) {
                match found {
                    Some(prev) if prev != c => return None,
                    _ => found = Some(c),
                }
            }
        }
        found.map(str::to_string)
    }

    /// The environment of an AWS account: the user's mapping, else the account id itself.
    pub fn aws_account(&self, account: &str) -> Option<String> {
        let account = account.trim_ascii();
        if account.is_empty() {
            return None;
        }
        Some(
            self.aws_accounts
                .get(account)
                .cloned()
                .unwrap_or_else(|| account.to_string()),
        )
    }

    /// The environment a Vault path belongs to: the longest configured prefix, else the first
    /// path segment that names an environment (`secret/data/production/db` → `production`).
    pub fn vault_path(&self, path: &str) -> Option<String> {
        let path = path.trim_start_matches('/');
        for (prefix, env) in &self.vault_paths {
            if path.starts_with(prefix.as_str()) {
                return Some(env.clone());
            }
        }
        path.split('/')
            .filter(|s| !s.is_empty())
            .find_map(|seg| self.infer(seg))
    }

    /// The environment of a Kubernetes namespace: the user's mapping, else an environment the
    /// name implies, else the configured `"*"` default.
    pub fn k8s_namespace(&self, ns: &str) -> Option<String> {
        if let Some(env) = self.k8s_namespaces.get(ns) {
            return Some(env.clone());
        }
        self.infer(ns).or_else(|| self.k8s_default.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver() -> EnvResolver {
        let mut cfg = EnvironmentsConfig::default();
        cfg.aliases.insert("Live-EU".into(), "production".into());
        cfg.aws_accounts
            .insert("111122223333".into(), "production".into());
        cfg.vault_paths
            .insert("kv/teams/payments/".into(), "production".into());
        cfg.vault_paths.insert("kv/teams/".into(), "staging".into());
        cfg.kubernetes_namespaces
            .insert("payments".into(), "production".into());
        EnvResolver::new(&cfg)
    }

    #[test]
    fn explicit_names_normalize_only_whole_aliases() {
        let r = resolver();
        assert_eq!(r.normalize("prod").as_deref(), Some("production"));
        assert_eq!(r.normalize("PROD").as_deref(), Some("production"));
        assert_eq!(r.normalize("live-eu").as_deref(), Some("production"));
        assert_eq!(r.normalize("prod-eu").as_deref(), Some("prod-eu"));
        assert_eq!(r.normalize("  "), None);
    }

    #[test]
    fn inference_needs_one_unnegated_environment() {
        let r = resolver();
        assert_eq!(r.infer("deploy-staging").as_deref(), Some("staging"));
        assert_eq!(r.infer("payments_prod").as_deref(), Some("production"));
        assert_eq!(r.infer("pre-prod").as_deref(), Some("staging"));
        assert_eq!(r.infer("non-prod"), None);
        assert_eq!(r.infer("dev-to-prod"), None);
        assert_eq!(r.infer("payments"), None);
    }

    #[test]
    fn vault_paths_prefer_the_longest_mapping_then_segments() {
        let r = resolver();
        assert_eq!(
            r.vault_path("kv/teams/payments/db").as_deref(),
            Some("production")
        );
        assert_eq!(
            r.vault_path("/kv/teams/search/db").as_deref(),
            Some("staging")
        );
        assert_eq!(
            r.vault_path("secret/data/production/db").as_deref(),
            Some("production")
        );
        assert_eq!(
            r.vault_path("auth/jwt-stg/login").as_deref(),
            Some("staging")
        );
        assert_eq!(r.vault_path("secret/data/app/db"), None);
    }

    #[test]
    fn accounts_and_namespaces() {
        let r = resolver();
        assert_eq!(r.aws_account("111122223333").as_deref(), Some("production"));
        assert_eq!(
            r.aws_account("444455556666").as_deref(),
            Some("444455556666")
        );
        assert_eq!(r.k8s_namespace("payments").as_deref(), Some("production"));
        assert_eq!(
            r.k8s_namespace("search-staging").as_deref(),
            Some("staging")
        );
        assert_eq!(r.k8s_namespace("search"), None);
        let mut cfg = EnvironmentsConfig::default();
        cfg.kubernetes_namespaces
            .insert("*".into(), "development".into());
        assert_eq!(
            EnvResolver::new(&cfg).k8s_namespace("search").as_deref(),
            Some("development")
        );
    }

    #[test]
    fn metric_labels_stay_within_a_closed_vocabulary() {
        let mut cfg = EnvironmentsConfig::default();
        cfg.aws_accounts
            .insert("111122223333".into(), "payments-prod".into());
        let r = EnvResolver::new(&cfg);
        assert_eq!(r.metric_label(Some("production")), "production");
        assert_eq!(r.metric_label(Some("testing")), "testing");
        // A configured target is its own label; an unmapped account id is not.
        assert_eq!(r.metric_label(Some("payments-prod")), "payments-prod");
        assert_eq!(r.metric_label(Some("444455556666")), "other");
        assert_eq!(r.metric_label(Some("prod-eu")), "production");
        assert_eq!(r.metric_label(Some("uat-2")), "staging");
        assert_eq!(r.metric_label(None), "none");
        assert_eq!(
            r.metric_labels(),
            [
                "development",
                "none",
                "other",
                "payments-prod",
                "production",
                "staging",
                "testing"
            ]
        );
    }
}
