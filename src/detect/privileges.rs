//! The privilege ranking of scopes (`detectors/privileges.toml`): first matching rule wins.
//! Ranks are memoized per scope, since the same few scopes recur on every mint.

use dashmap::DashMap;
use serde::Deserialize;

use super::glob::Glob;
use super::spec::SpecError;
use crate::baseline::{Class, MapHasher, hash_value};

/// A privilege rank.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rank {
    /// Grants nothing of note.
    None = 0,
    /// Reads.
    Read = 1,
    /// Changes things.
    Write = 2,
    /// Controls access or everything.
    Admin = 3,
}

impl Rank {
    /// From the stored byte.
    pub fn from_u8(v: u8) -> Rank {
        match v {
            3 => Rank::Admin,
            2 => Rank::Write,
            1 => Rank::Read,
            _ => Rank::None,
        }
    }

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Rank::None => "none",
            Rank::Read => "read",
            Rank::Write => "write",
            Rank::Admin => "admin",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    default: Rank,
    #[serde(default)]
    rule: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    pattern: String,
    rank: Rank,
}

/// The ranking.
#[derive(Debug)]
pub struct Privileges {
    rules: Vec<(Glob, Rank)>,
    default: Rank,
    memo: DashMap<u64, u8, MapHasher>,
}

impl Privileges {
    /// Parses `privileges.toml`.
    pub fn parse(text: &str) -> Result<Privileges, SpecError> {
        let f: File = toml::from_str(text).map_err(|e| SpecError::Parse {
            file: "privileges.toml".into(),
            message: e.to_string(),
        })?;
        Ok(Privileges {
            rules: f
                .rule
                .into_iter()
                .map(|r| (Glob::new(&r.pattern), r.rank))
                .collect(),
            default: f.default,
            memo: DashMap::default(),
        })
    }

    /// The rank of a scope.
    pub fn rank(&self, scope: &str) -> Rank {
        let key = hash_value(Class::Scope, scope);
        if let Some(r) = self.memo.get(&key) {
            return Rank::from_u8(*r);
        }
        let rank = self
            .rules
            .iter()
            .find(|(g, _)| g.matches(scope))
            .map_or(self.default, |(_, r)| *r);
        self.memo.insert(key, rank as u8);
        rank
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_ranking_orders_typical_scopes() {
        let p = Privileges::parse(super::super::spec::EMBEDDED_PRIVILEGES).expect("parses");
        for (scope, rank) in [
            ("vault-policy:default", Rank::Read),
            ("vault-policy:admin", Rank::Admin),
            ("vault-policy:payments-read-prod", Rank::Read),
            ("vault-policy:deploy-production", Rank::Write),
            ("aws-action:*", Rank::Admin),
            ("aws-action:s3:*", Rank::Write),
            ("aws-action:s3:GetObject", Rank::Read),
            ("aws-action:ecs:UpdateService", Rank::Write),
            ("aws-action:iam:CreateUser", Rank::Admin),
            (
                "aws-policy:arn:aws:iam::aws:policy/AdministratorAccess",
                Rank::Admin,
            ),
            (
                "aws-policy:arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess",
                Rank::Read,
            ),
            (
                "aws-role:arn:aws:iam::1:role/OrganizationAccountAccessRole",
                Rank::Admin,
            ),
            ("aws-role:arn:aws:iam::1:role/gha-api-deploy", Rank::Write),
            (
                "aud:https://kubernetes.default.svc.cluster.local",
                Rank::Write,
            ),
            ("aud:vault", Rank::Read),
            ("something:else", Rank::Read),
        ] {
            assert_eq!(p.rank(scope), rank, "{scope}");
            assert_eq!(p.rank(scope), rank, "{scope} (memoized)");
        }
    }
}
