//! AWS CloudTrail records (single records; delivery files are split by the caller).
//!
//! * STS `AssumeRole`, `AssumeRoleWithWebIdentity`, `AssumeRoleWithSAML`, `GetSessionToken`,
//!   `GetFederationToken` (and `AssumeRoot`) are `mint`s of the session key in
//!   `responseElements.credentials.accessKeyId`. The identity is the principal that received it:
//!   the web-identity or SAML subject, otherwise the calling user or role (for an AWS service
//!   assuming a role on a workload's behalf, the role).
//! * Any call made with `userIdentity.accessKeyId` is a `use` of that key. An STS mint made with
//!   a key is therefore also a use of the caller's key, and yields two events.
//! * A successful IAM `CreateOpenIDConnectProvider`, or a `CreateRole` or
//!   `UpdateAssumeRolePolicy` whose trust policy admits a web identity, a SAML provider or
//!   another AWS principal (not only AWS services), is also a `trust` event for the provider
//!   or the role (`aws:<arn>`): `trust:` scopes name what the policy admits (providers, `sub`
//!   conditions, principals), `context.actor` made the change.
//! * A long-term key (`AKIA…`) is fingerprinted as `aws_long_term_key`, a session key as
//!   `aws_access_key`.
//! * Everything else (console sign-ins, AWS service events, calls without a key) is `other`.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::util::{Needle, Str, lenient_i64, nonblank, owned};
use super::{Ctx, Decoded, FormatError, parse_time};
use crate::event::{Action, CredentialKind, Event, Outcome, Source};
use crate::time::Timestamp;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record<'a> {
    #[serde(rename = "eventID", borrow)]
    event_id: Str<'a>,
    #[serde(borrow)]
    event_time: Str<'a>,
    #[serde(borrow)]
    event_name: Str<'a>,
    #[serde(borrow)]
    event_source: Str<'a>,
    #[serde(borrow)]
    aws_region: Option<Str<'a>>,
    #[serde(rename = "sourceIPAddress", borrow)]
    source_ip: Option<Str<'a>>,
    #[serde(borrow)]
    user_agent: Option<Str<'a>>,
    #[serde(borrow)]
    recipient_account_id: Option<Str<'a>>,
    #[serde(borrow)]
    error_code: Option<Str<'a>>,
    #[serde(borrow)]
    user_identity: Option<UserIdentity<'a>>,
    #[serde(borrow)]
    request_parameters: Option<&'a RawValue>,
    #[serde(borrow)]
    response_elements: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct UserIdentity<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Str<'a>>,
    #[serde(borrow)]
    principal_id: Option<Str<'a>>,
    #[serde(borrow)]
    arn: Option<Str<'a>>,
    #[serde(borrow)]
    account_id: Option<Str<'a>>,
    #[serde(borrow)]
    access_key_id: Option<Str<'a>>,
    #[serde(borrow)]
    user_name: Option<Str<'a>>,
    #[serde(borrow)]
    invoked_by: Option<Str<'a>>,
    #[serde(borrow)]
    identity_provider: Option<Str<'a>>,
    #[serde(borrow)]
    session_context: Option<SessionContext<'a>>,
    #[serde(borrow)]
    on_behalf_of: Option<OnBehalfOf<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SessionContext<'a> {
    #[serde(borrow)]
    session_issuer: Option<SessionIssuer<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SessionIssuer<'a> {
    #[serde(borrow)]
    arn: Option<Str<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OnBehalfOf<'a> {
    #[serde(borrow)]
    user_id: Option<Str<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct StsRequest<'a> {
    #[serde(borrow)]
    role_arn: Option<Str<'a>>,
    #[serde(borrow)]
    role_session_name: Option<Str<'a>>,
    #[serde(default, deserialize_with = "lenient_i64")]
    duration_seconds: Option<i64>,
    #[serde(borrow)]
    policy: Option<Str<'a>>,
    #[serde(borrow, default)]
    policy_arns: Option<Vec<PolicyArn<'a>>>,
    #[serde(borrow)]
    task_policy_arn: Option<PolicyArn<'a>>,
    #[serde(borrow)]
    name: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct PolicyArn<'a> {
    #[serde(borrow)]
    arn: Option<Str<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct StsResponse<'a> {
    #[serde(borrow)]
    credentials: Option<Credentials<'a>>,
    #[serde(borrow)]
    subject_from_web_identity_token: Option<Str<'a>>,
    #[serde(borrow)]
    provider: Option<Str<'a>>,
    #[serde(borrow)]
    subject: Option<Str<'a>>,
    #[serde(borrow)]
    issuer: Option<Str<'a>>,
    #[serde(borrow)]
    federated_user: Option<FederatedUser<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Credentials<'a> {
    #[serde(borrow)]
    access_key_id: Option<Str<'a>>,
    #[serde(borrow)]
    expiration: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct FederatedUser<'a> {
    #[serde(borrow)]
    arn: Option<Str<'a>>,
}

const MINTS: &[&str] = &[
    "AssumeRole",
    "AssumeRoleWithWebIdentity",
    "AssumeRoleWithSAML",
    "GetSessionToken",
    "GetFederationToken",
    "AssumeRoot",
];

static ROLE: Needle = Needle::new(":role/");
static GITHUB_ISSUER: Needle = Needle::new("token.actions.githubusercontent.com");
static GHES_ISSUER: Needle = Needle::new("/_services/token");
static OIDC_PROVIDER: Needle = Needle::new(":oidc-provider/");

/// At most this many actions of an inline session policy become scopes.
const MAX_POLICY_ACTIONS: usize = 32;

pub(crate) fn decode(obj: &str, ctx: &Ctx<'_>, out: &mut Vec<Decoded>) -> Result<(), FormatError> {
    let r: Record = serde_json::from_str(obj)?;
    let id = r.event_id.trim_ascii();
    if id.is_empty() {
        return Err(FormatError::Invalid("eventID", "empty".into()));
    }
    let time = parse_time("eventTime", &r.event_time)?;
    let name = r.event_name.trim_ascii();
    let service = r.event_source.trim_ascii();
    let ui = r.user_identity.unwrap_or_default();
    let caller = principal(&ui);
    let key = nonblank(&ui.access_key_id);
    let account = nonblank(&r.recipient_account_id).or(nonblank(&ui.account_id));

    let base = |action: Action, identity: String| {
        let mut e = Event::new(id, time, Source::Cloudtrail, name, action, identity);
        if let Some(code) = nonblank(&r.error_code) {
            e.outcome = Outcome::Failure;
            e.context.error = Some(code.to_string());
        }
        e.runner.ip = owned(&r.source_ip);
        e.runner.agent = owned(&r.user_agent);
        e.context.account = account.map(str::to_string);
        e.context.region = owned(&r.aws_region);
        e.context.operation = Some(name.to_string());
        e.context.resource = Some(service.to_string());
        e.context.actor = owned(&ui.arn);
        e
    };

    if let Some(key) = key {
        let mut e = base(Action::Use, caller.clone());
        e.environment = account.and_then(|a| ctx.env.aws_account(a));
        e.credential = ctx.fp.credential(key_kind(key), key, false);
        if let Some(role) = ui
            .session_context
            .as_ref()
            .and_then(|s| s.session_issuer.as_ref())
            .and_then(|i| nonblank(&i.arn))
            .filter(|arn| ROLE.is_in(arn))
        {
            e.scopes.push(cat!("aws-role:", role));
        }
        out.push(Ok(e));
    }

    if service == "sts.amazonaws.com" && MINTS.contains(&name) {
        let req: StsRequest = match r.request_parameters {
            Some(raw) => serde_json::from_str(raw.get()).map_err(|e| {
                FormatError::Invalid("requestParameters", super::sanitize_message(&e.to_string()))
            })?,
            None => StsRequest::default(),
        };
        let resp: StsResponse = match r.response_elements {
            Some(raw) => serde_json::from_str(raw.get()).map_err(|e| {
                FormatError::Invalid("responseElements", super::sanitize_message(&e.to_string()))
            })?,
            None => StsResponse::default(),
        };
        let role = nonblank(&req.role_arn);
        let identity = match name {
            "AssumeRoleWithWebIdentity" => {
                let provider = nonblank(&resp.provider)
                    .or(nonblank(&ui.identity_provider))
                    .unwrap_or("");
                match nonblank(&resp.subject_from_web_identity_token).or(nonblank(&ui.user_name)) {
                    Some(sub) => web_identity(provider, sub),
                    None => {
                        return Err(FormatError::Missing(
                            "responseElements.subjectFromWebIdentityToken",
                        ));
                    }
                }
            }
            "AssumeRoleWithSAML" => match nonblank(&resp.subject).or(nonblank(&ui.user_name)) {
                Some(sub) => cat!("saml:", sub),
                None => return Err(FormatError::Missing("responseElements.subject")),
            },
            // A service assuming a role acts for the workload that owns the role.
            _ if nonblank(&ui.kind) == Some("AWSService") && role.is_some() => {
                cat!("aws:", role.unwrap_or_default())
            }
            _ => caller.clone(),
        };
        let mut e = base(Action::Mint, identity);
        if name == "AssumeRoleWithWebIdentity" || name == "AssumeRoleWithSAML" {
            e.context.subject = owned(&resp.subject_from_web_identity_token)
                .or_else(|| owned(&resp.subject))
                .or_else(|| owned(&ui.user_name));
            e.context.actor = owned(&resp.provider)
                .or_else(|| owned(&resp.issuer))
                .or_else(|| owned(&ui.identity_provider));
        }
        // The credential belongs to the role's account (cross-account assumptions included).
        let env_account = role.and_then(account_of_arn).or(account);
        e.environment = env_account.and_then(|a| ctx.env.aws_account(a));
        if let Some(role) = role {
            e.scopes.push(cat!("aws-role:", role));
        }
        for p in req
            .policy_arns
            .iter()
            .flatten()
            .chain(req.task_policy_arn.iter())
        {
            if let Some(arn) = nonblank(&p.arn) {
                e.scopes.push(cat!("aws-policy:", arn));
            }
        }
        if let Some(policy) = nonblank(&req.policy) {
            session_policy_scopes(policy, &mut e.scopes);
        }
        e.ttl = match req.duration_seconds {
            Some(d) if d > 0 => u64::try_from(d).ok(),
            _ => resp
                .credentials
                .as_ref()
                .and_then(|c| nonblank(&c.expiration))
                .and_then(|x| {
                    Timestamp::parse_cloudtrail_expiration(x)
                        .or_else(|_| Timestamp::parse(x))
                        .ok()
                })
                .and_then(|exp| u64::try_from(exp.as_unix_seconds() - time.as_unix_seconds()).ok()),
        };
        e.credential = resp
            .credentials
            .as_ref()
            .and_then(|c| nonblank(&c.access_key_id))
            .and_then(|k| ctx.fp.credential(CredentialKind::AwsAccessKey, k, false));
        e.runner.name = owned(&req.role_session_name).or_else(|| owned(&req.name));
        if e.context.subject.is_none() {
            e.context.subject = resp.federated_user.as_ref().and_then(|f| owned(&f.arn));
        }
        out.push(Ok(e));
    } else if service == "iam.amazonaws.com"
        && TRUSTS.contains(&name)
        && nonblank(&r.error_code).is_none()
        && let Some((identity, scopes)) = trust_change(
            name,
            account.unwrap_or(""),
            r.request_parameters.map(RawValue::get),
            r.response_elements.map(RawValue::get),
        )
    {
        let mut e = base(Action::Trust, identity);
        e.environment = account.and_then(|a| ctx.env.aws_account(a));
        e.context.actor = Some(caller);
        e.scopes = scopes;
        out.push(Ok(e));
    } else if key.is_none() {
        let mut e = base(Action::Other, caller);
        e.environment = account.and_then(|a| ctx.env.aws_account(a));
        out.push(Ok(e));
    }
    Ok(())
}

/// IAM calls that can change who may obtain a role's credentials.
const TRUSTS: &[&str] = &[
    "CreateOpenIDConnectProvider",
    "CreateRole",
    "UpdateAssumeRolePolicy",
];

/// At most this many `trust:` scopes from one policy.
const MAX_TRUST_SCOPES: usize = 32;

/// Long-term access keys (an IAM user's or the root's) begin `AKIA`; session keys `ASIA`.
fn key_kind(key: &str) -> CredentialKind {
    if key.starts_with("AKIA") {
        CredentialKind::AwsLongTermKey
    } else {
        CredentialKind::AwsAccessKey
    }
}

/// The identity a trust change is about and what it admits; `None` when it admits only AWS
/// services (an EC2 or Lambda role) or the record does not say.
fn trust_change(
    name: &str,
    account: &str,
    request: Option<&str>,
    response: Option<&str>,
) -> Option<(String, Vec<String>)> {
    use serde_json::Value;
    let req: Value = serde_json::from_str(request?).ok()?;
    let resp: Value = response
        .and_then(|r| serde_json::from_str(r).ok())
        .unwrap_or(Value::Null);
    fn text<'v>(v: &'v serde_json::Value, k: &str) -> Option<&'v str> {
        v.get(k).and_then(serde_json::Value::as_str).map(str::trim)
    }
    if name == "CreateOpenIDConnectProvider" {
        let arn = text(&resp, "openIDConnectProviderArn")
            .map(str::to_string)
            .or_else(|| {
                let url = text(&req, "url")?;
                let host = url.trim_start_matches("https://").trim_end_matches('/');
                Some(format!("arn:aws:iam::{account}:oidc-provider/{host}"))
            })?;
        let mut scopes = vec![cat!("trust:federated:", &arn)];
        if let Some(Value::Array(ids)) = req.get("clientIDList") {
            for id in ids.iter().filter_map(Value::as_str).take(MAX_TRUST_SCOPES) {
                scopes.push(cat!("trust:aud:", id));
            }
        }
        scopes.sort();
        scopes.dedup();
        return Some((cat!("aws:", &arn), scopes));
    }
    let role = text(&req, "roleName").filter(|r| !r.is_empty())?;
    let arn = resp
        .get("role")
        .and_then(|r| text(r, "arn"))
        .map(str::to_string)
        .unwrap_or_else(|| {
            let path = text(&req, "path").unwrap_or("/");
            format!("arn:aws:iam::{account}:role{path}{role}")
        });
    let doc = text(&req, "assumeRolePolicyDocument").or(text(&req, "policyDocument"))?;
    let scopes = trust_scopes(doc);
    (!scopes.is_empty()).then(|| (cat!("aws:", &arn), scopes))
}

/// What a trust policy admits besides AWS services: `trust:federated:<provider>`,
/// `trust:sub:<pattern>` (conditions on a token's subject), `trust:aws:<principal>`.
fn trust_scopes(doc: &str) -> Vec<String> {
    use serde_json::Value;
    let decoded;
    let doc = if doc.starts_with('%') {
        decoded = percent_decode(doc);
        decoded.as_str()
    } else {
        doc
    };
    let Ok(policy) = serde_json::from_str::<Value>(doc) else {
        return Vec::new();
    };
    let statements = match policy.get("Statement") {
        Some(Value::Array(s)) => s.iter().collect::<Vec<_>>(),
        Some(s @ Value::Object(_)) => vec![s],
        _ => return Vec::new(),
    };
    let list = |v: &Value| -> Vec<String> {
        match v {
            Value::String(s) => vec![s.clone()],
            Value::Array(a) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        }
    };
    let mut out = Vec::new();
    for st in statements {
        if st.get("Effect").and_then(Value::as_str) != Some("Allow") {
            continue;
        }
        match st.get("Principal") {
            Some(Value::String(s)) if s == "*" => out.push("trust:aws:*".to_string()),
            Some(Value::Object(p)) => {
                for f in p.get("Federated").map(list).unwrap_or_default() {
                    out.push(cat!("trust:federated:", &f));
                }
                for a in p.get("AWS").map(list).unwrap_or_default() {
                    out.push(cat!("trust:aws:", &a));
                }
            }
            _ => {}
        }
        if let Some(Value::Object(ops)) = st.get("Condition") {
            for cond in ops.values() {
                let Value::Object(keys) = cond else { continue };
                for (k, v) in keys {
                    if k.ends_with(":sub") {
                        for p in list(v) {
                            out.push(cat!("trust:sub:", &p));
                        }
                    }
                }
            }
        }
    }
    // Only AWS services admitted: no trust of anyone's identity changed.
    if !out.iter().any(|s| !s.starts_with("trust:sub:")) {
        return Vec::new();
    }
    out.sort();
    out.dedup();
    out.truncate(MAX_TRUST_SCOPES);
    out
}

/// `%XX` sequences decoded (IAM policy documents are sometimes logged URL-encoded).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or(""), 16)
        {
            out.push(v);
            i += 3;
        } else {
            out.push(if b[i] == b'+' { b' ' } else { b[i] });
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The stable principal behind a `userIdentity`: roles rather than their sessions.
fn principal(ui: &UserIdentity<'_>) -> String {
    let arn = nonblank(&ui.arn);
    match nonblank(&ui.kind) {
        Some("AssumedRole") => {
            let issuer = ui
                .session_context
                .as_ref()
                .and_then(|s| s.session_issuer.as_ref())
                .and_then(|i| nonblank(&i.arn));
            match (issuer, arn) {
                (Some(issuer), _) => cat!("aws:", issuer),
                (None, Some(arn)) => cat!("aws:", role_of_session_arn(arn)),
                (None, None) => fallback(ui),
            }
        }
        Some("WebIdentityUser") => match nonblank(&ui.user_name) {
            Some(sub) => web_identity(nonblank(&ui.identity_provider).unwrap_or(""), sub),
            None => fallback(ui),
        },
        Some("SAMLUser") => match nonblank(&ui.user_name) {
            Some(sub) => cat!("saml:", sub),
            None => fallback(ui),
        },
        Some("AWSService") => match nonblank(&ui.invoked_by) {
            Some(svc) => cat!("aws-service:", svc),
            None => fallback(ui),
        },
        Some("IdentityCenterUser") => {
            match ui.on_behalf_of.as_ref().and_then(|o| nonblank(&o.user_id)) {
                Some(user) => cat!("sso:", user),
                None => fallback(ui),
            }
        }
        _ => match arn {
            Some(arn) => cat!("aws:", arn),
            None => fallback(ui),
        },
    }
}

fn fallback(ui: &UserIdentity<'_>) -> String {
    if let Some(arn) = nonblank(&ui.arn) {
        cat!("aws:", arn)
    } else if let Some(p) = nonblank(&ui.principal_id) {
        cat!("aws:principal/", p)
    } else if let Some(a) = nonblank(&ui.account_id) {
        cat!("aws:account/", a)
    } else {
        "aws:unknown".to_string()
    }
}

/// `arn:aws:sts::1:assumed-role/NAME/SESSION` → `arn:aws:iam::1:role/NAME`.
fn role_of_session_arn(arn: &str) -> String {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some(_), Some(_), Some(account), Some(res)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return arn.to_string();
    };
    match res
        .strip_prefix("assumed-role/")
        .and_then(|r| r.split('/').next())
    {
        Some(role) if !role.is_empty() => {
            cat!("arn:", partition, ":iam::", account, ":role/", role)
        }
        _ => arn.to_string(),
    }
}

/// The account id in an ARN (`arn:aws:iam::123456789012:role/x`).
fn account_of_arn(arn: &str) -> Option<&str> {
    arn.split(':').nth(4).filter(|a| !a.is_empty())
}

/// The identity of a web-identity subject: CI subjects map to the CI identity's repository,
/// service-account subjects to the service account, anything else to provider and subject.
fn web_identity(provider: &str, sub: &str) -> String {
    if (GITHUB_ISSUER.is_in(provider) || GHES_ISSUER.is_in(provider))
        && let Some(rest) = sub.strip_prefix("repo:")
    {
        let repo = rest.split(':').next().unwrap_or(rest);
        return cat!("github:", repo);
    }
    if let Some(rest) = sub.strip_prefix("project_path:") {
        let project = rest.split(':').next().unwrap_or(rest);
        return cat!("gitlab:", project);
    }
    if let Some(rest) = sub.strip_prefix("system:serviceaccount:")
        && let Some((ns, sa)) = rest.split_once(':')
    {
        return cat!("k8s:", ns, "/", sa);
    }
    let host = match OIDC_PROVIDER.find(provider) {
        Some(i) => &provider[i + ":oidc-provider/".len()..],
        None => provider,
    }
    .trim_start_matches("https://");
    if host.is_empty() {
        cat!("oidc:", sub)
    } else {
        cat!("oidc:", host, ":", sub)
    }
}

/// Scopes from an inline session policy: each allowed action (capped), or a marker when the
/// policy cannot be read (CloudTrail truncates long ones).
fn session_policy_scopes(policy: &str, scopes: &mut Vec<String>) {
    let parsed: Result<serde_json::Value, _> = serde_json::from_str(policy);
    let Ok(doc) = parsed else {
        scopes.push("aws-session-policy:unparsed".into());
        return;
    };
    let statements = match doc.get("Statement") {
        Some(serde_json::Value::Array(a)) => a.iter().collect::<Vec<_>>(),
        Some(s @ serde_json::Value::Object(_)) => vec![s],
        _ => Vec::new(),
    };
    let mut n = 0;
    for st in statements {
        if st.get("Effect").and_then(|e| e.as_str()) != Some("Allow") {
            continue;
        }
        let actions: Vec<&str> = match st.get("Action") {
            Some(serde_json::Value::String(a)) => vec![a.as_str()],
            Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_str()).collect(),
            _ => Vec::new(),
        };
        for a in actions {
            if n == MAX_POLICY_ACTIONS {
                scopes.push("aws-session-policy:truncated".into());
                return;
            }
            scopes.push(cat!("aws-action:", a));
            n += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_policies_name_what_they_admit() {
        let doc = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow",
            "Principal":{"Federated":"arn:aws:iam::1:oidc-provider/token.actions.githubusercontent.com"},
            "Action":"sts:AssumeRoleWithWebIdentity",
            "Condition":{"StringLike":{"token.actions.githubusercontent.com:sub":["repo:acme/api:*","repo:acme/web:ref:refs/heads/main"]},
                         "StringEquals":{"token.actions.githubusercontent.com:aud":"sts.amazonaws.com"}}}]}"#;
        assert_eq!(
            trust_scopes(doc),
            [
                "trust:federated:arn:aws:iam::1:oidc-provider/token.actions.githubusercontent.com",
                "trust:sub:repo:acme/api:*",
                "trust:sub:repo:acme/web:ref:refs/heads/main",
            ]
        );
        let ec2 = r#"{"Statement":{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}}"#;
        assert!(trust_scopes(ec2).is_empty());
        let other =
            r#"{"Statement":{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::999:root"}}}"#;
        assert_eq!(trust_scopes(other), ["trust:aws:arn:aws:iam::999:root"]);
        let encoded =
            "%7B%22Statement%22%3A%7B%22Effect%22%3A%22Allow%22%2C%22Principal%22%3A%22*%22%7D%7D";
        assert_eq!(trust_scopes(encoded), ["trust:aws:*"]);
        let (id, scopes) = trust_change(
            "UpdateAssumeRolePolicy",
            "1",
            Some(&serde_json::json!({"roleName": "deploy", "policyDocument": other}).to_string()),
            None,
        )
        .expect("a trust change");
        assert_eq!(id, "aws:arn:aws:iam::1:role/deploy");
        assert_eq!(scopes, ["trust:aws:arn:aws:iam::999:root"]);
        let (id, scopes) = trust_change(
            "CreateOpenIDConnectProvider",
            "1",
            Some(r#"{"url":"https://gitlab.example.com","clientIDList":["https://gitlab.example.com"]}"#),
            Some(r#"{"openIDConnectProviderArn":"arn:aws:iam::1:oidc-provider/gitlab.example.com"}"#),
        )
        .expect("a provider");
        assert_eq!(id, "aws:arn:aws:iam::1:oidc-provider/gitlab.example.com");
        assert_eq!(scopes.len(), 2);
        assert_eq!(
            key_kind("AKIAIOSFODNN7EXAMPLE"),
            CredentialKind::AwsLongTermKey
        );
        assert_eq!(
            key_kind("ASIAIOSFODNN7EXAMPLE"),
            CredentialKind::AwsAccessKey
        );
    }

    #[test]
    fn session_arns_map_to_their_role() {
        assert_eq!(
            role_of_session_arn("arn:aws:sts::123456789012:assumed-role/deploy/GitHubActions"),
            "arn:aws:iam::123456789012:role/deploy"
        );
        assert_eq!(role_of_session_arn("not-an-arn"), "not-an-arn");
        assert_eq!(
            account_of_arn("arn:aws:iam::123456789012:role/x"),
            Some("123456789012")
        );
    }

    #[test]
    fn web_identity_subjects_map_to_ci_and_k8s_identities() {
        assert_eq!(
            web_identity(
                "token.actions.githubusercontent.com",
                "repo:acme/api:environment:prod"
            ),
            "github:acme/api"
        );
        assert_eq!(
            web_identity(
                "arn:aws:iam::1:oidc-provider/gitlab.com",
                "project_path:acme/api:ref_type:branch:ref:main"
            ),
            "gitlab:acme/api"
        );
        assert_eq!(
            web_identity(
                "arn:aws:iam::1:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/X",
                "system:serviceaccount:ci:builder"
            ),
            "k8s:ci/builder"
        );
        assert_eq!(
            web_identity("arn:aws:iam::1:oidc-provider/auth.example.com", "svc-42"),
            "oidc:auth.example.com:svc-42"
        );
    }

    #[test]
    fn session_policies_become_action_scopes() {
        let mut s = Vec::new();
        session_policy_scopes(
            r#"{"Statement":[{"Effect":"Allow","Action":["s3:GetObject","s3:List*"]},{"Effect":"Deny","Action":"*"}]}"#,
            &mut s,
        );
        assert_eq!(s, ["aws-action:s3:GetObject", "aws-action:s3:List*"]);
        let mut s = Vec::new();
        session_policy_scopes(
            r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"*"}}"#,
            &mut s,
        );
        assert_eq!(s, ["aws-action:*"]);
        let mut s = Vec::new();
        session_policy_scopes(r#"{"Statement":[{"Effect":"Al"#, &mut s);
        assert_eq!(s, ["aws-session-policy:unparsed"]);
    }
}
