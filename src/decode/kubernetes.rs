//! Kubernetes API server audit events (`audit.k8s.io/v1` `Event`, one per line).
//!
//! * `create` on `serviceaccounts/token` (TokenRequest) is a `mint` of a token for that service
//!   account. The requester (usually a kubelet, `system:node:<name>`) is the runner; audiences
//!   and `expirationSeconds` come from `requestObject` when the audit level records it; the
//!   token's credential id comes from the `authentication.kubernetes.io/issued-credential-id`
//!   annotation (Kubernetes 1.29+).
//! * A request by `system:serviceaccount:<ns>:<name>` is a `use` of that account's token; the
//!   credential is `user.extra["authentication.kubernetes.io/credential-id"]` when present.
//! * Requests by other users (people, controllers authenticated by certificate) and the
//!   non-final stages of a request (`RequestReceived`, `ResponseStarted`) are `other`, so a
//!   request logged at several stages is counted once.
//!
//! * A successful `create`, `update` or `patch` of a `rolebindings` or `clusterrolebindings`
//!   object whose `requestObject` (audit level `Request` or higher) binds service accounts is
//!   also a `trust` event for each of them: the account gains what the role grants
//!   (`trust:role:<kind>/<name>`, `trust:binding:<binding>`), `context.actor` made the change.
//!
//! `responseObject` (which holds the issued token at `RequestResponse` level) is never read.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::util::{
    Str, first_owned, lenient_i64, lookup, nonblank, owned, string_list, string_list_map,
    string_map,
};
use super::{Ctx, Decoded, FormatError, parse_time};
use crate::event::{Action, CredentialKind, Event, Outcome, Source};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuditEvent<'a> {
    #[serde(rename = "auditID", borrow)]
    audit_id: Str<'a>,
    #[serde(borrow)]
    stage: Option<Str<'a>>,
    #[serde(rename = "requestURI", borrow)]
    request_uri: Option<Str<'a>>,
    #[serde(borrow)]
    verb: Option<Str<'a>>,
    #[serde(borrow)]
    user: Option<UserInfo<'a>>,
    #[serde(
        rename = "sourceIPs",
        borrow,
        default,
        deserialize_with = "string_list"
    )]
    source_ips: Vec<Str<'a>>,
    #[serde(borrow)]
    user_agent: Option<Str<'a>>,
    #[serde(borrow)]
    object_ref: Option<ObjectRef<'a>>,
    response_status: Option<Status<'a>>,
    #[serde(borrow)]
    request_object: Option<&'a RawValue>,
    #[serde(borrow)]
    request_received_timestamp: Option<Str<'a>>,
    #[serde(borrow)]
    stage_timestamp: Option<Str<'a>>,
    /// `audit.k8s.io/v1beta1` and older logs.
    #[serde(borrow)]
    timestamp: Option<Str<'a>>,
    #[serde(borrow)]
    metadata: Option<Metadata<'a>>,
    #[serde(borrow, default, deserialize_with = "string_map")]
    annotations: Vec<(Str<'a>, Str<'a>)>,
}

#[derive(Deserialize, Default)]
struct UserInfo<'a> {
    #[serde(borrow)]
    username: Option<Str<'a>>,
    #[serde(borrow, default, deserialize_with = "string_list_map")]
    extra: Vec<(Str<'a>, Vec<Str<'a>>)>,
}

#[derive(Deserialize)]
struct ObjectRef<'a> {
    #[serde(borrow)]
    resource: Option<Str<'a>>,
    #[serde(borrow)]
    subresource: Option<Str<'a>>,
    #[serde(borrow)]
    namespace: Option<Str<'a>>,
    #[serde(borrow)]
    name: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct Status<'a> {
    #[serde(default, deserialize_with = "lenient_i64")]
    code: Option<i64>,
    #[serde(borrow)]
    reason: Option<Str<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Metadata<'a> {
    #[serde(borrow)]
    creation_timestamp: Option<Str<'a>>,
}

#[derive(Deserialize, Default)]
struct TokenRequest<'a> {
    #[serde(borrow)]
    spec: Option<TokenRequestSpec<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenRequestSpec<'a> {
    #[serde(borrow, default, deserialize_with = "string_list")]
    audiences: Vec<Str<'a>>,
    #[serde(default, deserialize_with = "lenient_i64")]
    expiration_seconds: Option<i64>,
    #[serde(borrow)]
    bound_object_ref: Option<BoundObjectRef<'a>>,
}

#[derive(Deserialize)]
struct BoundObjectRef<'a> {
    #[serde(borrow)]
    kind: Option<Str<'a>>,
    #[serde(borrow)]
    name: Option<Str<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Binding<'a> {
    #[serde(borrow, default)]
    subjects: Option<Vec<Subject<'a>>>,
    #[serde(borrow)]
    role_ref: Option<RoleRef<'a>>,
}

#[derive(Deserialize)]
struct Subject<'a> {
    #[serde(borrow)]
    kind: Option<Str<'a>>,
    #[serde(borrow)]
    name: Option<Str<'a>>,
    #[serde(borrow)]
    namespace: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct RoleRef<'a> {
    #[serde(borrow)]
    kind: Option<Str<'a>>,
    #[serde(borrow)]
    name: Option<Str<'a>>,
}

/// At most this many service accounts of one binding become trust events.
const MAX_BOUND_ACCOUNTS: usize = 32;

const ISSUED_CREDENTIAL_ID: &str = "authentication.kubernetes.io/issued-credential-id";
const CREDENTIAL_ID: &str = "authentication.kubernetes.io/credential-id";
const POD_NAME: &str = "authentication.kubernetes.io/pod-name";
const NODE_NAME: &str = "authentication.kubernetes.io/node-name";
const SA_PREFIX: &str = "system:serviceaccount:";

pub(crate) fn decode(obj: &str, ctx: &Ctx<'_>, out: &mut Vec<Decoded>) -> Result<(), FormatError> {
    let a: AuditEvent = serde_json::from_str(obj)?;
    let id = a.audit_id.trim_ascii();
    if id.is_empty() {
        return Err(FormatError::Invalid("auditID", "empty".into()));
    }
    let (field, ts) = [
        ("requestReceivedTimestamp", &a.request_received_timestamp),
        ("timestamp", &a.timestamp),
        (
            "metadata.creationTimestamp",
            &a.metadata
                .as_ref()
                .and_then(|m| m.creation_timestamp.clone()),
        ),
        ("stageTimestamp", &a.stage_timestamp),
    ]
    .into_iter()
    .find_map(|(f, v)| nonblank(v).map(|s| (f, s.to_string())))
    .ok_or(FormatError::Missing("requestReceivedTimestamp"))?;
    let time = parse_time(field, &ts)?;

    let user = a.user.unwrap_or_default();
    let username = nonblank(&user.username).unwrap_or("system:anonymous");
    let verb = nonblank(&a.verb).unwrap_or("");
    let obj_ref = a.object_ref.as_ref();
    let resource = obj_ref.and_then(|o| nonblank(&o.resource)).unwrap_or("");
    let subresource = obj_ref.and_then(|o| nonblank(&o.subresource));
    let namespace = obj_ref.and_then(|o| nonblank(&o.namespace));
    let kind = match subresource {
        _ if verb.is_empty() => "unknown".to_string(),
        Some(sub) => cat!(verb, " ", resource, "/", sub),
        None if resource.is_empty() => verb.to_string(),
        None => cat!(verb, " ", resource),
    };
    let final_stage = matches!(
        nonblank(&a.stage),
        None | Some("ResponseComplete") | Some("Panic")
    );
    let failed = a
        .response_status
        .as_ref()
        .and_then(|s| s.code)
        .is_some_and(|c| c >= 400);
    let error = if failed {
        a.response_status
            .as_ref()
            .map(|s| match (&s.reason, s.code) {
                (Some(r), Some(c)) if !r.trim_ascii().is_empty() => {
                    format!("{c} {}", r.trim_ascii())
                }
                (_, Some(c)) => c.to_string(),
                _ => "failed".to_string(),
            })
    } else {
        None
    };
    let requester_sa = username
        .strip_prefix(SA_PREFIX)
        .and_then(|r| r.split_once(':'));

    let base = |action: Action, identity: String| {
        let mut e = Event::new(id, time, Source::Kubernetes, kind.clone(), action, identity);
        if failed {
            e.outcome = Outcome::Failure;
            e.context.error = error.clone();
        }
        e.runner.ip = first_owned(&a.source_ips);
        e.runner.agent = owned(&a.user_agent);
        e.context.operation = (!verb.is_empty()).then(|| verb.to_string());
        e.context.resource = owned(&a.request_uri);
        e.context.namespace = namespace.map(str::to_string);
        e.context.actor = Some(username.to_string());
        e
    };

    if !final_stage {
        out.push(Ok(base(Action::Other, user_identity(username))));
        return Ok(());
    }

    // The requester presented its own token, whatever it asked for.
    if let Some((ns, sa)) = requester_sa {
        let mut e = base(Action::Use, cat!("k8s:", ns, "/", sa));
        e.environment = ctx.env.k8s_namespace(namespace.unwrap_or(ns));
        e.credential = lookup(&user.extra, CREDENTIAL_ID)
            .and_then(|v| v.first())
            .and_then(|c| ctx.fp.credential(CredentialKind::K8sCredentialId, c, false));
        e.runner.name = lookup(&user.extra, POD_NAME).and_then(|v| first_owned(v));
        e.runner.id = lookup(&user.extra, NODE_NAME).and_then(|v| first_owned(v));
        out.push(Ok(e));
    }

    if verb == "create" && resource == "serviceaccounts" && subresource == Some("token") {
        let ns = namespace.ok_or(FormatError::Missing("objectRef.namespace"))?;
        let sa = obj_ref
            .and_then(|o| nonblank(&o.name))
            .ok_or(FormatError::Missing("objectRef.name"))?;
        let mut e = base(Action::Mint, cat!("k8s:", ns, "/", sa));
        e.environment = ctx.env.k8s_namespace(ns);
        e.runner.id = Some(username.to_string());
        e.runner.group = Some(if username.starts_with("system:node:") {
            "system:nodes".to_string()
        } else {
            username.to_string()
        });
        let tr: TokenRequest = match a.request_object {
            Some(raw) => serde_json::from_str(raw.get()).map_err(|e| {
                FormatError::Invalid("requestObject", super::sanitize_message(&e.to_string()))
            })?,
            None => TokenRequest::default(),
        };
        if let Some(spec) = tr.spec {
            e.scopes = spec
                .audiences
                .iter()
                .filter(|a| !a.trim_ascii().is_empty())
                .map(|a| cat!("aud:", a.trim_ascii()))
                .collect();
            e.ttl = spec
                .expiration_seconds
                .filter(|s| *s > 0)
                .and_then(|s| u64::try_from(s).ok());
            e.context.bound_to =
                spec.bound_object_ref
                    .and_then(|b| match (nonblank(&b.kind), nonblank(&b.name)) {
                        (Some(k), Some(n)) => Some(cat!(k, "/", n)),
                        (None, Some(n)) => Some(n.to_string()),
                        _ => None,
                    });
        }
        e.credential = lookup(&a.annotations, ISSUED_CREDENTIAL_ID)
            .and_then(|c| ctx.fp.credential(CredentialKind::K8sCredentialId, c, false));
        out.push(Ok(e));
    } else if matches!(resource, "rolebindings" | "clusterrolebindings")
        && matches!(verb, "create" | "update" | "patch")
        && !failed
        && let Some(raw) = a.request_object
    {
        let b: Binding = serde_json::from_str(raw.get()).map_err(|e| {
            FormatError::Invalid("requestObject", super::sanitize_message(&e.to_string()))
        })?;
        let binding = obj_ref.and_then(|o| nonblank(&o.name)).unwrap_or("");
        let role = b
            .role_ref
            .as_ref()
            .map(|r| {
                cat!(
                    nonblank(&r.kind).unwrap_or("ClusterRole"),
                    "/",
                    nonblank(&r.name).unwrap_or("")
                )
            })
            .unwrap_or_default();
        let mut bound = 0;
        for s in b.subjects.iter().flatten() {
            if nonblank(&s.kind) != Some("ServiceAccount") || bound == MAX_BOUND_ACCOUNTS {
                continue;
            }
            let (Some(name), Some(ns)) = (nonblank(&s.name), nonblank(&s.namespace).or(namespace))
            else {
                continue;
            };
            bound += 1;
            let mut e = base(Action::Trust, cat!("k8s:", ns, "/", name));
            e.environment = ctx.env.k8s_namespace(ns);
            if !role.is_empty() {
                e.scopes.push(cat!("trust:role:", role));
            }
            if !binding.is_empty() {
                e.scopes.push(cat!(
                    "trust:binding:",
                    namespace.unwrap_or(""),
                    "/",
                    binding
                ));
            }
            e.scopes.sort();
            out.push(Ok(e));
        }
        if bound == 0 && requester_sa.is_none() {
            let mut e = base(Action::Other, user_identity(username));
            e.environment = namespace.and_then(|ns| ctx.env.k8s_namespace(ns));
            out.push(Ok(e));
        }
    } else if requester_sa.is_none() {
        let mut e = base(Action::Other, user_identity(username));
        e.environment = namespace.and_then(|ns| ctx.env.k8s_namespace(ns));
        out.push(Ok(e));
    }
    Ok(())
}

fn user_identity(username: &str) -> String {
    match username
        .strip_prefix(SA_PREFIX)
        .and_then(|r| r.split_once(':'))
    {
        Some((ns, sa)) => cat!("k8s:", ns, "/", sa),
        None => cat!("k8s-user:", username),
    }
}
