//! The canonical event: what every decoder produces and every later stage (baselines,
//! detectors, lake, SQL) consumes. One event is one thing a non-human identity did with a
//! credential: minted it, used it, ran a job, or something else worth keeping for context.
//!
//! The JSON form of this struct is the "canonical" input format as well as the `--emit events`
//! output, and `schemas/event.schema.json` describes it exactly. Absent optional fields are
//! omitted rather than written as `null`.

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// One normalized event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// The native id of the record that produced this event: the JWT `jti`, Vault
    /// `request.id`, CloudTrail `eventID`, Kubernetes `auditID`. Analysts pivot on it.
    pub id: String,
    /// Event time (UTC). Detectors read time only from here.
    pub time: Timestamp,
    /// Which system wrote the record.
    pub source: Source,
    /// The native type of the record, e.g. `AssumeRoleWithWebIdentity`, `auth/jwt/login`,
    /// `serviceaccounts/token`, `id_token`.
    pub kind: String,
    /// What happened to a credential.
    pub action: Action,
    /// Whether the operation succeeded (a refused login is still worth baselining).
    pub outcome: Outcome,
    /// The non-human identity: for CI the pipeline definition in its repository, for clouds the
    /// role or user, for Kubernetes the service account. Prefixed by system, e.g.
    /// `github:acme/api/.github/workflows/deploy.yml`, `aws:arn:aws:iam::1:role/deploy`.
    pub identity: String,
    /// The environment the credential was minted for (mints) or presented in (uses), after
    /// user mappings and alias normalization (`prod` → `production`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// Where the identity ran.
    #[serde(default, skip_serializing_if = "Runner::is_empty")]
    pub runner: Runner,
    /// Scopes the credential carries, prefixed by kind (`aud:`, `vault-policy:`, `aws-role:`,
    /// `aws-policy:`, `aws-action:`), sorted and de-duplicated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// Lifetime of the credential in seconds, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
    /// The credential minted or presented, as a keyed fingerprint (never the raw id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<Credential>,
    /// Where the event came from in the delivery pipeline and what it touched.
    #[serde(default, skip_serializing_if = "Context::is_empty")]
    pub context: Context,
}

/// The system that wrote the original record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// GitHub Actions OIDC token claims.
    GithubActions,
    /// GitLab CI `id_token` claims.
    GitlabCi,
    /// HashiCorp Vault audit device.
    Vault,
    /// AWS CloudTrail.
    Cloudtrail,
    /// Kubernetes API server audit log.
    Kubernetes,
    /// A producer that normalizes by itself and declares no system above.
    Custom,
}

impl Source {
    /// Every variant, in a stable order (for summaries and metric label sets).
    pub const ALL: [Source; 6] = [
        Source::GithubActions,
        Source::GitlabCi,
        Source::Vault,
        Source::Cloudtrail,
        Source::Kubernetes,
        Source::Custom,
    ];

    /// The snake_case name used in JSON and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Source::GithubActions => "github_actions",
            Source::GitlabCi => "gitlab_ci",
            Source::Vault => "vault",
            Source::Cloudtrail => "cloudtrail",
            Source::Kubernetes => "kubernetes",
            Source::Custom => "custom",
        }
    }
}

/// What happened to a credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A credential was issued to the identity.
    Mint,
    /// A credential was presented to do something.
    Use,
    /// A CI job ran without a credential event of its own (producers of canonical events).
    Job,
    /// Decoded and kept for context, but neither a mint nor a use: the request half of a
    /// login, a response to an ordinary request, a call made without an access key, a
    /// non-final audit stage, a human user's request.
    Other,
}

impl Action {
    /// Every variant, in a stable order.
    pub const ALL: [Action; 4] = [Action::Mint, Action::Use, Action::Job, Action::Other];

    /// The snake_case name used in JSON and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::Mint => "mint",
            Action::Use => "use",
            Action::Job => "job",
            Action::Other => "other",
        }
    }
}

/// Whether the operation succeeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It succeeded (or the record carries no failure).
    #[default]
    Success,
    /// The system refused or failed it; `context.error` says why.
    Failure,
}

/// Where the identity ran. Detectors judge novelty on the stable attributes (`kind`, `id`,
/// `group`, the network of `ip`), never on `name`, which is often ephemeral.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Runner {
    /// Hosted by the CI vendor or self-hosted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<RunnerKind>,
    /// A stable runner id: GitLab `runner_id`, the Kubernetes token requester, a node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// A stable group the runner belongs to (e.g. `system:nodes` for kubelets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// An ephemeral name (pod name, session name). Kept for investigation only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The source address as the record gives it (may be a hostname or a service name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// The client user agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

impl Runner {
    /// True when nothing is known about the runner.
    pub fn is_empty(&self) -> bool {
        self.kind.is_none()
            && self.id.is_none()
            && self.group.is_none()
            && self.name.is_none()
            && self.ip.is_none()
            && self.agent.is_none()
    }
}

/// Vendor-hosted or self-hosted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunnerKind {
    /// Run by the CI vendor (`github-hosted`, `gitlab-hosted`).
    Hosted,
    /// Run on the user's own machines.
    SelfHosted,
}

/// A credential, identified by a keyed fingerprint of its id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    /// What kind of credential id was fingerprinted.
    pub kind: CredentialKind,
    /// HMAC-SHA-256 of the id under the deployment's key, first 128 bits in hex.
    pub fp: String,
    /// The credential must be presented only once (OIDC tokens, by their `jti`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub single_use: bool,
}

/// What kind of credential id a fingerprint was made from. Part of the keyed hash input, so
/// equal ids of different kinds never collide.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// A JWT id (`jti`) of a CI OIDC token.
    OidcJti,
    /// A Vault token accessor (as the audit device wrote it, usually HMAC'd by Vault).
    VaultAccessor,
    /// An AWS access key id (`AKIA…` long-term, `ASIA…` session).
    AwsAccessKey,
    /// A Kubernetes service-account token credential id (`JTI=…`).
    K8sCredentialId,
    /// A credential of a producer of canonical events.
    Custom,
}

impl CredentialKind {
    /// The snake_case name, also the domain separator in the fingerprint.
    pub const fn as_str(self) -> &'static str {
        match self {
            CredentialKind::OidcJti => "oidc_jti",
            CredentialKind::VaultAccessor => "vault_accessor",
            CredentialKind::AwsAccessKey => "aws_access_key",
            CredentialKind::K8sCredentialId => "k8s_credential_id",
            CredentialKind::Custom => "custom",
        }
    }
}

/// Delivery and request context, for investigation and for some detectors (protected refs).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Context {
    /// The source repository or project (`acme/api`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// The git ref the pipeline ran for.
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    /// Whether that ref is protected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ref_protected: Option<bool>,
    /// The workflow or pipeline file that actually ran (e.g. a reusable workflow), with ref.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// The human or bot that triggered the run, or the caller of an API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// The token subject (`sub`) or the principal string the record names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// What triggered the run (`push`, `schedule`, `merge_request_event`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// Kubernetes namespace or Vault namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Cloud account id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Cloud region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The operation performed (Vault `operation`, CloudTrail `eventName`, Kubernetes verb).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    /// What was touched (Vault path, CloudTrail service, Kubernetes request URI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// The object a minted token is bound to (`Pod/web-7d9f`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound_to: Option<String>,
    /// The error the system reported, for failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Context {
    /// True when no context field is set.
    pub fn is_empty(&self) -> bool {
        *self == Context::default()
    }
}

impl Event {
    /// A minimal event; decoders fill in the rest.
    pub fn new(
        id: impl Into<String>,
        time: Timestamp,
        source: Source,
        kind: impl Into<String>,
        action: Action,
        identity: impl Into<String>,
    ) -> Self {
        Event {
            id: id.into(),
            time,
            source,
            kind: kind.into(),
            action,
            outcome: Outcome::Success,
            identity: identity.into(),
            environment: None,
            runner: Runner::default(),
            scopes: Vec::new(),
            ttl: None,
            credential: None,
            context: Context::default(),
        }
    }

    /// Sorts and de-duplicates `scopes`, so equal scope sets compare equal.
    pub fn normalize_scopes(&mut self) {
        self.scopes.sort_unstable();
        self.scopes.dedup();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_is_lossless_and_omits_absent_fields() {
        let mut e = Event::new(
            "abc",
            Timestamp::from_micros(1_700_000_000_000_000),
            Source::Vault,
            "auth/jwt/login",
            Action::Mint,
            "vault:jwt/deploy",
        );
        e.context.git_ref = Some("main".into());
        e.credential = Some(Credential {
            kind: CredentialKind::VaultAccessor,
            fp: "00".repeat(16),
            single_use: false,
        });
        let json = serde_json::to_string(&e).unwrap();
        assert!(!json.contains("null"), "{json}");
        assert!(!json.contains("single_use"), "{json}");
        assert!(json.contains(r#""context":{"ref":"main"}"#), "{json}");
        let back: Event = serde_json::from_str(&json).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn canonical_form_refuses_unknown_fields() {
        let json = r#"{"id":"1","time":"2024-01-01T00:00:00Z","source":"custom","kind":"k",
            "action":"use","outcome":"success","identity":"x","colour":"blue"}"#;
        let err = serde_json::from_str::<Event>(json).unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
    }
}
