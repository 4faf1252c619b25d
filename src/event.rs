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
    /// The text of the native record this event came from, kept only when a decoder is asked
    /// to (the lake stores it, with secrets masked, for pivoting). Never serialized: secrets
    /// are masked where it is written, and the canonical form does not carry it.
    #[serde(skip)]
    pub record: Option<Box<str>>,
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
    /// A change to who may obtain the identity's credentials or what they grant: a role's
    /// trust policy or an OIDC provider (CloudTrail IAM), an auth role's bound claims
    /// (Vault), a role binding of a service account (Kubernetes). The identity is the one
    /// the change is about; `context.actor` made it; `scopes` name what it admits (`trust:`).
    Trust,
    /// Decoded and kept for context, but neither a mint nor a use: the request half of a
    /// login, a response to an ordinary request, a call made without an access key, a
    /// non-final audit stage, a human user's request.
    Other,
}

impl Action {
    /// Every variant, in a stable order.
    pub const ALL: [Action; 5] = [
        Action::Mint,
        Action::Use,
        Action::Job,
        Action::Trust,
        Action::Other,
    ];

    /// The snake_case name used in JSON and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::Mint => "mint",
            Action::Use => "use",
            Action::Job => "job",
            Action::Trust => "trust",
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

impl RunnerKind {
    /// The snake_case name, as serialized.
    pub const fn as_str(self) -> &'static str {
        match self {
            RunnerKind::Hosted => "hosted",
            RunnerKind::SelfHosted => "self_hosted",
        }
    }
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
    /// An AWS session key id (`ASIA…`, or any key id not known to be long-term).
    AwsAccessKey,
    /// An AWS long-term access key id (`AKIA…`: an IAM user's or the root's key, valid until
    /// someone rotates it).
    AwsLongTermKey,
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
            CredentialKind::AwsLongTermKey => "aws_long_term_key",
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
    /// The commit the pipeline ran (the `sha` claim): a release promotes the commit it
    /// deployed to staging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha: Option<String>,
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
            record: None,
        }
    }

    /// Removes blank optional strings and lowercases the fingerprint, so an event read from a
    /// producer's canonical JSON has the same shape as one nhiwatch decoded itself.
    pub fn tidy(&mut self) {
        fn blank(v: &mut Option<String>) {
            if v.as_deref().is_some_and(|s| s.trim_ascii().is_empty()) {
                *v = None;
            }
        }
        blank(&mut self.environment);
        let r = &mut self.runner;
        for v in [
            &mut r.id,
            &mut r.group,
            &mut r.name,
            &mut r.ip,
            &mut r.agent,
        ] {
            blank(v);
        }
        let c = &mut self.context;
        for v in [
            &mut c.repo,
            &mut c.git_ref,
            &mut c.sha,
            &mut c.workflow,
            &mut c.actor,
            &mut c.subject,
            &mut c.trigger,
            &mut c.namespace,
            &mut c.account,
            &mut c.region,
            &mut c.operation,
            &mut c.resource,
            &mut c.bound_to,
            &mut c.error,
        ] {
            blank(v);
        }
        self.scopes.retain(|s| !s.trim_ascii().is_empty());
        if let Some(cred) = &mut self.credential {
            cred.fp.make_ascii_lowercase();
        }
    }

    /// Visits every decoded string value that names or describes something (not the id, the
    /// credential fingerprint or the kept record text), with its field name and whether it is
    /// a name (identity, environment, kind, scope, runner), so that limits and masking apply
    /// to all of them alike.
    pub fn visit_values_mut(&mut self, mut f: impl FnMut(&'static str, bool, &mut String)) {
        f("identity", true, &mut self.identity);
        f("kind", true, &mut self.kind);
        for scope in &mut self.scopes {
            f("scope", true, scope);
        }
        let (r, c) = (&mut self.runner, &mut self.context);
        let optional = [
            ("environment", true, &mut self.environment),
            ("runner.id", true, &mut r.id),
            ("runner.group", true, &mut r.group),
            ("runner.name", true, &mut r.name),
            ("runner.ip", true, &mut r.ip),
            ("runner.agent", false, &mut r.agent),
            ("context.repo", false, &mut c.repo),
            ("context.git_ref", false, &mut c.git_ref),
            ("context.sha", false, &mut c.sha),
            ("context.workflow", false, &mut c.workflow),
            ("context.actor", false, &mut c.actor),
            ("context.subject", false, &mut c.subject),
            ("context.trigger", false, &mut c.trigger),
            ("context.namespace", false, &mut c.namespace),
            ("context.account", false, &mut c.account),
            ("context.region", false, &mut c.region),
            ("context.operation", false, &mut c.operation),
            ("context.resource", false, &mut c.resource),
            ("context.bound_to", false, &mut c.bound_to),
            ("context.error", false, &mut c.error),
        ];
        for (field, name, v) in optional {
            if let Some(v) = v {
                f(field, name, v);
            }
        }
    }

    /// Sorts and de-duplicates `scopes`, so equal scope sets compare equal.
    pub fn normalize_scopes(&mut self) {
        self.scopes.sort_unstable();
        self.scopes.dedup();
    }
}

impl Event {
    /// Appends the canonical JSON of this event to `out`: the same bytes `serde_json` writes
    /// for the derived `Serialize` (a test keeps them equal), several times faster, because
    /// field names are copied as literals instead of going through the serializer.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"id\":");
        json_str(out, &self.id);
        out.extend_from_slice(b",\"time\":\"");
        let (t, n) = self.time.rfc3339_bytes();
        out.extend_from_slice(&t[..n]);
        out.extend_from_slice(b"\",\"source\":\"");
        out.extend_from_slice(self.source.as_str().as_bytes());
        out.extend_from_slice(b"\",\"kind\":");
        json_str(out, &self.kind);
        out.extend_from_slice(b",\"action\":\"");
        out.extend_from_slice(self.action.as_str().as_bytes());
        out.extend_from_slice(match self.outcome {
            Outcome::Success => b"\",\"outcome\":\"success\",\"identity\":".as_slice(),
            Outcome::Failure => b"\",\"outcome\":\"failure\",\"identity\":".as_slice(),
        });
        json_str(out, &self.identity);
        if let Some(env) = &self.environment {
            out.extend_from_slice(b",\"environment\":");
            json_str(out, env);
        }
        if !self.runner.is_empty() {
            out.extend_from_slice(b",\"runner\":{");
            let mut first = true;
            let r = &self.runner;
            if let Some(kind) = r.kind {
                field(out, &mut first, "kind");
                out.extend_from_slice(match kind {
                    RunnerKind::Hosted => b"\"hosted\"".as_slice(),
                    RunnerKind::SelfHosted => b"\"self_hosted\"".as_slice(),
                });
            }
            opt_field(out, &mut first, "id", &r.id);
            opt_field(out, &mut first, "group", &r.group);
            opt_field(out, &mut first, "name", &r.name);
            opt_field(out, &mut first, "ip", &r.ip);
            opt_field(out, &mut first, "agent", &r.agent);
            out.push(b'}');
        }
        if !self.scopes.is_empty() {
            out.extend_from_slice(b",\"scopes\":[");
            for (i, s) in self.scopes.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                json_str(out, s);
            }
            out.push(b']');
        }
        if let Some(ttl) = self.ttl {
            out.extend_from_slice(b",\"ttl\":");
            out.extend_from_slice(itoa::Buffer::new().format(ttl).as_bytes());
        }
        if let Some(c) = &self.credential {
            out.extend_from_slice(b",\"credential\":{\"kind\":\"");
            out.extend_from_slice(c.kind.as_str().as_bytes());
            out.extend_from_slice(b"\",\"fp\":");
            json_str(out, &c.fp);
            if c.single_use {
                out.extend_from_slice(b",\"single_use\":true");
            }
            out.push(b'}');
        }
        if !self.context.is_empty() {
            let c = &self.context;
            out.extend_from_slice(b",\"context\":{");
            let mut first = true;
            opt_field(out, &mut first, "repo", &c.repo);
            opt_field(out, &mut first, "ref", &c.git_ref);
            if let Some(p) = c.ref_protected {
                field(out, &mut first, "ref_protected");
                out.extend_from_slice(if p { b"true" } else { b"false" });
            }
            opt_field(out, &mut first, "sha", &c.sha);
            opt_field(out, &mut first, "workflow", &c.workflow);
            opt_field(out, &mut first, "actor", &c.actor);
            opt_field(out, &mut first, "subject", &c.subject);
            opt_field(out, &mut first, "trigger", &c.trigger);
            opt_field(out, &mut first, "namespace", &c.namespace);
            opt_field(out, &mut first, "account", &c.account);
            opt_field(out, &mut first, "region", &c.region);
            opt_field(out, &mut first, "operation", &c.operation);
            opt_field(out, &mut first, "resource", &c.resource);
            opt_field(out, &mut first, "bound_to", &c.bound_to);
            opt_field(out, &mut first, "error", &c.error);
            out.push(b'}');
        }
        out.push(b'}');
    }
}

fn field(out: &mut Vec<u8>, first: &mut bool, name: &str) {
    if !*first {
        out.push(b',');
    }
    *first = false;
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

fn opt_field(out: &mut Vec<u8>, first: &mut bool, name: &str, value: &Option<String>) {
    if let Some(v) = value {
        field(out, first, name);
        json_str(out, v);
    }
}

/// Writes a JSON string with serde_json's escaping (quote, backslash, control characters).
/// Eight bytes are checked at a time; most strings need no escaping at all.
pub fn json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    // Almost every string needs no escaping: check that with vectorized scans and copy it.
    if memchr::memchr2(b'"', b'\\', bytes).is_none()
        && !bytes.iter().fold(false, |acc, &b| acc | (b < 0x20))
    {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if i + 8 <= bytes.len() {
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[i..i + 8]);
            if !needs_escape(u64::from_le_bytes(word)) {
                i += 8;
                continue;
            }
        }
        let b = bytes[i];
        if b >= 0x20 && b != b'"' && b != b'\\' {
            i += 1;
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            _ => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 15)]);
            }
        }
        i += 1;
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// True when any of the eight bytes is a control character, a quote or a backslash
/// (the classic "has byte less than" and "has zero byte" bit tricks; exact as a boolean).
#[inline]
fn needs_escape(w: u64) -> bool {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let control = w.wrapping_sub(LO * 0x20) & !w & HI;
    let q = w ^ (LO * u64::from(b'"'));
    let quote = q.wrapping_sub(LO) & !q & HI;
    let b = w ^ (LO * u64::from(b'\\'));
    let backslash = b.wrapping_sub(LO) & !b & HI;
    (control | quote | backslash) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_escaping_matches_serde_for_every_byte_position() {
        let specials = ['"', '\\', '\n', '\u{1}', '\u{1f}', 'é', '😀', 'a', '\u{7f}'];
        for len in 0..20 {
            for (k, c) in specials.iter().enumerate() {
                for pos in 0..len.max(1) {
                    let mut s: String = (0..len)
                        .map(|i| {
                            if i == pos {
                                *c
                            } else {
                                (b'a' + (i % 26) as u8) as char
                            }
                        })
                        .collect();
                    if k % 2 == 0 {
                        s.push(specials[(k + 1) % specials.len()]);
                    }
                    let mut fast = Vec::new();
                    json_str(&mut fast, &s);
                    assert_eq!(
                        String::from_utf8(fast).unwrap(),
                        serde_json::to_string(&s).unwrap()
                    );
                }
            }
        }
    }

    #[test]
    fn fast_writer_matches_serde_byte_for_byte() {
        let mut e = Event::new(
            "id-\"quoted\"\\",
            Timestamp::from_micros(1_700_000_000_123_456),
            Source::Kubernetes,
            "create serviceaccounts/token",
            Action::Mint,
            "k8s:ns/sa\u{7}\u{1f}é😀\n\t\r\u{8}\u{c}/",
        );
        let check = |e: &Event| {
            let mut fast = Vec::new();
            e.write_json(&mut fast);
            assert_eq!(
                String::from_utf8(fast).unwrap(),
                serde_json::to_string(e).unwrap()
            );
        };
        check(&e);
        e.outcome = Outcome::Failure;
        e.environment = Some("production".into());
        e.runner = Runner {
            kind: Some(RunnerKind::SelfHosted),
            id: Some("42".into()),
            group: None,
            name: Some("pod-1".into()),
            ip: Some("10.0.0.1".into()),
            agent: Some("kubelet/1.30".into()),
        };
        check(&e);
        e.scopes = vec!["aud:a".into(), "aud:\"b\"".into()];
        e.ttl = Some(3607);
        e.credential = Some(Credential {
            kind: CredentialKind::K8sCredentialId,
            fp: "ab".repeat(16),
            single_use: true,
        });
        check(&e);
        e.context = Context {
            repo: Some("acme/api".into()),
            git_ref: Some("main".into()),
            ref_protected: Some(false),
            sha: Some("0123abc".into()),
            workflow: Some("w".into()),
            actor: Some("a".into()),
            subject: Some("s".into()),
            trigger: Some("push".into()),
            namespace: Some("n".into()),
            account: Some("1".into()),
            region: Some("r".into()),
            operation: Some("o".into()),
            resource: Some("x".into()),
            bound_to: Some("Pod/p".into()),
            error: Some("403 Forbidden".into()),
        };
        check(&e);
        e.runner = Runner {
            group: Some("system:nodes".into()),
            ..Runner::default()
        };
        e.context = Context {
            ref_protected: Some(true),
            ..Context::default()
        };
        check(&e);
    }

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
