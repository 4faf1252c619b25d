//! HashiCorp Vault audit device entries (JSON lines, one per request and one per response; the
//! two halves share `request.id`, the native id).
//!
//! * A `response` that carries `response.auth` issued a token: a `mint` (logins on
//!   `auth/<mount>/login`, `auth/token/create*`). The token's accessor is the credential.
//! * A `request` made with a token (`auth.accessor`) is a `use` of that token.
//! * The response to a successful write of an auth role (`auth/<mount>/role/<name>`,
//!   operation `create` or `update`) is a `trust` event for `vault:<mount>/<name>`: who may log
//!   in to it changed. `context.actor` is the writer's identity; the bound claims, subjects,
//!   service accounts and networks the write names become `trust:` scopes, except values Vault
//!   HMAC'd (the audit device's default for request data).
//! * Everything else is kept as `other`: the request half of a login, the response half of an
//!   ordinary request (its request half was the use), token renewals, failed logins.
//!
//! Vault HMACs tokens and (by default) accessors before writing them; nhiwatch fingerprints the
//! accessor string as written, which is consistent between the mint and every use. The
//! `client_token` fields are never read.

use serde::Deserialize;

use super::util::{
    Needle, Str, first_owned, lenient_i64, lookup, nonblank, owned, string_list, string_list_map,
    string_map,
};
use super::{Ctx, Decoded, FormatError, parse_time};
use crate::event::{Action, CredentialKind, Event, Outcome, Source};

#[derive(Deserialize)]
struct Entry<'a> {
    #[serde(borrow)]
    time: Str<'a>,
    #[serde(rename = "type", borrow)]
    kind: Str<'a>,
    #[serde(borrow)]
    auth: Option<Auth<'a>>,
    #[serde(borrow)]
    request: Request<'a>,
    #[serde(borrow)]
    response: Option<Response<'a>>,
    #[serde(borrow)]
    error: Option<Str<'a>>,
}

#[derive(Deserialize, Default)]
struct Auth<'a> {
    #[serde(borrow)]
    accessor: Option<Str<'a>>,
    #[serde(borrow)]
    display_name: Option<Str<'a>>,
    #[serde(borrow, default, deserialize_with = "string_list")]
    policies: Vec<Str<'a>>,
    #[serde(borrow, default, deserialize_with = "string_list")]
    token_policies: Vec<Str<'a>>,
    #[serde(borrow, default, deserialize_with = "string_list")]
    identity_policies: Vec<Str<'a>>,
    #[serde(borrow, default, deserialize_with = "string_map")]
    metadata: Vec<(Str<'a>, Str<'a>)>,
    #[serde(borrow)]
    entity_id: Option<Str<'a>>,
    #[serde(default, deserialize_with = "lenient_i64")]
    token_ttl: Option<i64>,
}

#[derive(Deserialize)]
struct Request<'a> {
    #[serde(borrow)]
    id: Str<'a>,
    #[serde(borrow)]
    operation: Option<Str<'a>>,
    #[serde(borrow)]
    path: Option<Str<'a>>,
    #[serde(borrow)]
    mount_point: Option<Str<'a>>,
    #[serde(borrow)]
    client_token_accessor: Option<Str<'a>>,
    #[serde(borrow)]
    namespace: Option<Namespace<'a>>,
    #[serde(borrow)]
    remote_address: Option<Str<'a>>,
    #[serde(borrow, default, deserialize_with = "string_list_map")]
    headers: Vec<(Str<'a>, Vec<Str<'a>>)>,
    #[serde(borrow)]
    data: Option<&'a serde_json::value::RawValue>,
}

#[derive(Deserialize)]
struct Namespace<'a> {
    #[serde(borrow)]
    path: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct Response<'a> {
    #[serde(borrow)]
    auth: Option<Auth<'a>>,
}

static LOGIN: Needle = Needle::new("/login");

/// Metadata keys that name the environment a token was issued for (claim mappings).
const ENV_KEYS: &[&str] = &["environment", "env", "deployment_tier", "tier"];

pub(crate) fn decode(obj: &str, ctx: &Ctx<'_>, out: &mut Vec<Decoded>) -> Result<(), FormatError> {
    let entry: Entry = serde_json::from_str(obj)?;
    let time = parse_time("time", &entry.time)?;
    let req = &entry.request;
    let id = req.id.trim_ascii();
    if id.is_empty() {
        return Err(FormatError::Invalid("request.id", "empty".into()));
    }
    let path = nonblank(&req.path).unwrap_or("");
    let error = nonblank(&entry.error);
    let mount = mount_name(path, nonblank(&req.mount_point));

    let issued = entry
        .response
        .as_ref()
        .and_then(|r| r.auth.as_ref())
        .filter(|a| nonblank(&a.accessor).is_some());
    let presented = entry
        .auth
        .as_ref()
        .and_then(|a| nonblank(&a.accessor))
        .or(nonblank(&req.client_token_accessor));

    let (kind, action, auth): (&str, Action, Option<&Auth>) = match &*entry.kind {
        "response" if issued.is_some() && path.starts_with("auth/token/renew") => {
            ("renew", Action::Other, issued)
        }
        "response" if issued.is_some() => (
            if path.starts_with("auth/token/create") {
                "token_create"
            } else if is_login(path) {
                "login"
            } else {
                "mint"
            },
            Action::Mint,
            issued,
        ),
        // A refused login is a failed mint: worth baselining, and it has no token.
        "response" if is_login(path) && error.is_some() => ("login", Action::Mint, None),
        "response" if error.is_none() && role_write(path, nonblank(&req.operation)).is_some() => {
            ("role_write", Action::Trust, entry.auth.as_ref())
        }
        "response" => ("response", Action::Other, entry.auth.as_ref()),
        "request" if presented.is_some() => ("request", Action::Use, entry.auth.as_ref()),
        "request" if is_login(path) => ("login_request", Action::Other, None),
        "request" => ("request", Action::Other, entry.auth.as_ref()),
        other => (other, Action::Other, entry.auth.as_ref()),
    };
    let kind = if kind.is_empty() { "unknown" } else { kind };

    if action == Action::Trust
        && let Some((role_mount, role)) = role_write(path, nonblank(&req.operation))
    {
        let mut e = Event::new(
            id,
            time,
            Source::Vault,
            kind,
            action,
            cat!("vault:", role_mount, "/", role),
        );
        e.context.actor = Some(identity(auth, mount));
        e.scopes = req.data.map(|d| bound_scopes(d.get())).unwrap_or_default();
        e.environment = ctx.env.infer(role);
        e.runner.ip = owned(&req.remote_address);
        e.runner.agent = lookup(&req.headers, "user-agent").and_then(|v| first_owned(v));
        e.context.operation = owned(&req.operation);
        e.context.resource = Some(path.to_string());
        e.context.namespace = req.namespace.as_ref().and_then(|n| owned(&n.path));
        out.push(Ok(e));
        return Ok(());
    }
    let mut e = Event::new(id, time, Source::Vault, kind, action, identity(auth, mount));
    if error.is_some() {
        e.outcome = Outcome::Failure;
        e.context.error = error.map(str::to_string);
    }
    if let Some(a) = auth {
        e.scopes = a
            .policies
            .iter()
            .chain(&a.token_policies)
            .chain(&a.identity_policies)
            .filter(|p| !p.trim_ascii().is_empty())
            .map(|p| cat!("vault-policy:", p.trim_ascii()))
            .collect();
        e.ttl = a
            .token_ttl
            .filter(|t| *t > 0)
            .and_then(|t| u64::try_from(t).ok());
        e.context.repo = ["project_path", "repository"]
            .iter()
            .find_map(|k| lookup(&a.metadata, k))
            .map(|v| v.to_string());
    }
    e.environment = match action {
        Action::Mint => auth
            .and_then(|a| mint_environment(ctx, a))
            .or_else(|| ctx.env.vault_path(path)),
        _ => ctx.env.vault_path(path),
    };
    e.credential = match action {
        Action::Mint => auth
            .and_then(|a| nonblank(&a.accessor))
            .and_then(|acc| ctx.fp.credential(CredentialKind::VaultAccessor, acc, false)),
        Action::Use => {
            presented.and_then(|acc| ctx.fp.credential(CredentialKind::VaultAccessor, acc, false))
        }
        _ => None,
    };
    e.runner.ip = owned(&req.remote_address);
    e.runner.agent = lookup(&req.headers, "user-agent").and_then(|v| first_owned(v));
    e.context.operation = owned(&req.operation);
    if !path.is_empty() {
        e.context.resource = Some(path.to_string());
    }
    e.context.namespace = req.namespace.as_ref().and_then(|n| owned(&n.path));
    out.push(Ok(e));
    Ok(())
}

/// The mount and role of a write to `auth/<mount...>/role/<name>` (`create` or `update`).
fn role_write<'p>(path: &'p str, operation: Option<&str>) -> Option<(&'p str, &'p str)> {
    if !matches!(operation, Some("create" | "update")) {
        return None;
    }
    let rest = path.strip_prefix("auth/")?;
    let (mount, role) = rest.rsplit_once("/role/")?;
    (!mount.is_empty() && !role.is_empty() && !role.contains('/')).then_some((mount, role))
}

/// Request-data keys of a role write that say who may log in.
const BOUND_KEYS: &[&str] = &[
    "bound_claims",
    "bound_subject",
    "bound_audiences",
    "bound_service_account_names",
    "bound_service_account_namespaces",
    "bound_cidrs",
    "token_bound_cidrs",
    "bound_iam_principal_arn",
    "user_claim",
];

/// At most this many `trust:` scopes from one role write.
const MAX_BOUND_SCOPES: usize = 32;

/// `trust:<key>:<value>` for each bound value of a role write that Vault did not HMAC.
fn bound_scopes(data: &str) -> Vec<String> {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(data) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut push = |key: &str, v: &serde_json::Value| {
        if let Some(s) = v.as_str().map(str::trim)
            && !s.is_empty()
            && !s.starts_with("hmac-")
            && out.len() < MAX_BOUND_SCOPES
        {
            out.push(cat!("trust:", key, ":", s));
        }
    };
    for key in BOUND_KEYS {
        match map.get(*key) {
            Some(serde_json::Value::Array(items)) => items.iter().for_each(|v| push(key, v)),
            Some(serde_json::Value::Object(claims)) => {
                for (claim, v) in claims {
                    let k = cat!(key, ".", claim);
                    match v {
                        serde_json::Value::Array(items) => items.iter().for_each(|v| push(&k, v)),
                        v => push(&k, v),
                    }
                }
            }
            Some(v) => push(key, v),
            None => {}
        }
    }
    out.sort();
    out.dedup();
    out
}

/// `auth/<mount...>/login[/<name>]`.
fn is_login(path: &str) -> bool {
    path.starts_with("auth/") && path.split('/').skip(2).any(|s| s == "login")
}

/// The auth mount a login or request went to, without `auth/` (`jwt`, `ci/gitlab`).
fn mount_name<'p>(path: &'p str, mount_point: Option<&'p str>) -> &'p str {
    if let Some(rest) = path.strip_prefix("auth/")
        && let Some(i) = LOGIN.find(rest)
    {
        return &rest[..i];
    }
    mount_point
        .map(|m| m.trim_start_matches("auth/").trim_end_matches('/'))
        .filter(|m| !m.is_empty())
        .unwrap_or("token")
}

/// The token's identity: its role on its auth method when the method records one (JWT, OIDC,
/// AppRole, Kubernetes), else its display name, else its entity.
fn identity(auth: Option<&Auth<'_>>, mount: &str) -> String {
    let Some(a) = auth else {
        return cat!("vault:", mount);
    };
    let display = nonblank(&a.display_name);
    let method = display
        .map(|d| d.split('-').next().unwrap_or(d))
        .filter(|m| !m.is_empty())
        .unwrap_or(mount);
    let role = ["role", "role_name"]
        .iter()
        .find_map(|k| lookup(&a.metadata, k))
        .map(|r| r.trim_ascii())
        .filter(|r| !r.is_empty());
    match (role, display, nonblank(&a.entity_id)) {
        (Some(role), _, _) => cat!("vault:", method, "/", role),
        (None, Some(d), _) => cat!("vault:", d),
        (None, None, Some(entity)) => cat!("vault:entity/", entity),
        (None, None, None) => cat!("vault:", mount),
    }
}

/// The environment a token was issued for: an environment claim mapped into metadata, the
/// role's name, or the policies it carries (when they name exactly one environment).
fn mint_environment(ctx: &Ctx<'_>, a: &Auth<'_>) -> Option<String> {
    for key in ENV_KEYS {
        if let Some(v) = lookup(&a.metadata, key) {
            let v = v.trim_ascii();
            if !v.is_empty() && !v.eq_ignore_ascii_case("other") {
                return ctx.env.normalize(v);
            }
        }
    }
    if let Some(role) = ["role", "role_name"]
        .iter()
        .find_map(|k| lookup(&a.metadata, k))
        && let Some(env) = ctx.env.infer(role)
    {
        return Some(env);
    }
    let mut found: Option<String> = None;
    for p in a.policies.iter().chain(&a.token_policies) {
        if let Some(env) = ctx.env.infer(p) {
            match &found {
                Some(prev) if *prev != env => return None,
                _ => found = Some(env),
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_paths_and_mounts() {
        assert!(is_login("auth/jwt/login"));
        assert!(is_login("auth/userpass/login/alice"));
        assert!(is_login("auth/ci/gitlab/login"));
        assert!(!is_login("auth/token/lookup-self"));
        assert!(!is_login("secret/data/login"));
        assert_eq!(mount_name("auth/ci/gitlab/login", None), "ci/gitlab");
        assert_eq!(mount_name("secret/data/x", Some("secret/")), "secret");
        assert_eq!(mount_name("sys/health", None), "token");
    }

    #[test]
    fn role_writes_and_their_bound_values() {
        assert_eq!(
            role_write("auth/jwt/role/deploy", Some("update")),
            Some(("jwt", "deploy"))
        );
        assert_eq!(
            role_write("auth/ci/gitlab/role/deploy", Some("create")),
            Some(("ci/gitlab", "deploy"))
        );
        assert_eq!(role_write("auth/jwt/role/deploy", Some("read")), None);
        assert_eq!(
            role_write("auth/approle/role/x/secret-id", Some("update")),
            None
        );
        assert_eq!(role_write("secret/data/role/x", Some("update")), None);
        let scopes = bound_scopes(
            r#"{"bound_claims":{"project_path":["acme/api","acme/web"],"ref":"hmac-sha256:ab"},
                "bound_audiences":"https://vault","policies":["deploy"],"user_claim":"sub"}"#,
        );
        assert_eq!(
            scopes,
            [
                "trust:bound_audiences:https://vault",
                "trust:bound_claims.project_path:acme/api",
                "trust:bound_claims.project_path:acme/web",
                "trust:user_claim:sub",
            ]
        );
    }
}
