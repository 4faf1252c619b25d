//! Format detection per record: a fast guess from the first key of the object (or a few
//! distinctive keys of JWT claims), and an exact classification by the top-level keys when
//! the guess fails, so a misleading guess costs time, never correctness.

use super::*;

/// The decoder's best guess at a record's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Guess {
    Delivery,
    Format(Format),
    JwtDocument,
    Unknown,
}

pub(super) fn guess_name(g: Guess) -> &'static str {
    match g {
        Guess::Delivery => "a CloudTrail delivery file",
        Guess::Format(Format::Github) => "GitHub Actions claims",
        Guess::Format(Format::Gitlab) => "GitLab CI claims",
        Guess::Format(Format::Vault) => "a Vault audit entry",
        Guess::Format(Format::Cloudtrail) => "a CloudTrail record",
        Guess::Format(Format::Kubernetes) => "a Kubernetes audit event",
        Guess::Format(Format::Canonical) => "a canonical event",
        Guess::Format(Format::Auto) | Guess::Unknown => "no known format",
        Guess::JwtDocument => "a decoded JWT document",
    }
}

pub(super) fn skip_ws(b: &[u8], mut i: usize) -> usize {
    // A UTF-8 byte order mark is tolerated at the start of a record.
    if b[i..].starts_with(&[0xEF, 0xBB, 0xBF]) {
        i += 3;
    }
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\r' | b'\n') {
        i += 1;
    }
    i
}

/// The first key of an object, if it has no escapes.
pub(super) fn first_key(obj: &[u8]) -> Option<&[u8]> {
    let i = skip_ws(obj, 1);
    if obj.get(i) != Some(&b'"') {
        return None;
    }
    let rest = &obj[i + 1..];
    let end = memchr::memchr2(b'"', b'\\', rest)?;
    (rest[end] == b'"').then(|| &rest[..end])
}

pub(super) fn has_top_level_records(obj: &str) -> bool {
    first_key(obj.as_bytes()) == Some(b"Records".as_slice())
        || (obj.contains("\"Records\"") && matches!(classify(obj), Guess::Delivery))
}

/// A fast guess from the first key, or from distinctive keys anywhere in the record.
pub(super) fn sniff(obj: &[u8]) -> Guess {
    if let Some(key) = first_key(obj) {
        match key {
            b"Records" => return Guess::Delivery,
            b"eventVersion" | b"eventID" | b"eventTime" | b"eventSource" | b"eventName"
            | b"awsRegion" | b"userIdentity" => return Guess::Format(Format::Cloudtrail),
            b"kind" | b"apiVersion" | b"auditID" | b"level" => {
                return Guess::Format(Format::Kubernetes);
            }
            b"time" | b"type" | b"auth" | b"request" => return Guess::Format(Format::Vault),
            b"id" => return Guess::Format(Format::Canonical),
            b"namespace_id" | b"namespace_path" | b"project_id" | b"project_path" => {
                return Guess::Format(Format::Gitlab);
            }
            b"header" | b"payload" => return Guess::JwtDocument,
            _ => {}
        }
    }
    static KEYS: [(util::Needle, Guess); 7] = [
        (
            util::Needle::new("\"workflow_ref\""),
            Guess::Format(Format::Github),
        ),
        (
            util::Needle::new("\"project_path\""),
            Guess::Format(Format::Gitlab),
        ),
        (
            util::Needle::new("\"eventSource\""),
            Guess::Format(Format::Cloudtrail),
        ),
        (
            util::Needle::new("\"auditID\""),
            Guess::Format(Format::Kubernetes),
        ),
        (
            util::Needle::new("\"request\""),
            Guess::Format(Format::Vault),
        ),
        (
            util::Needle::new("\"identity\""),
            Guess::Format(Format::Canonical),
        ),
        (util::Needle::new("\"Records\""), Guess::Delivery),
    ];
    // `"workflow_ref"` also matches inside `"job_workflow_ref"`.
    let text = std::str::from_utf8(obj).unwrap_or_default();
    KEYS.iter()
        .find(|(needle, _)| needle.is_in(text))
        .map_or(Guess::Unknown, |(_, g)| *g)
}

/// Exact classification from the top-level keys (slow path). Records that are not valid JSON
/// are `Unknown`; [`classify_checked`] tells them apart.
pub(super) fn classify(obj: &str) -> Guess {
    classify_checked(obj).unwrap_or(Guess::Unknown)
}

/// As [`classify`], returning the parse error of records that are not valid JSON or that repeat
/// a distinctive key.
pub(super) fn classify_checked(obj: &str) -> Result<Guess, serde_json::Error> {
    #[derive(Deserialize)]
    struct Probe<'a> {
        #[serde(rename = "Records")]
        records: Option<Vec<IgnoredAny>>,
        #[serde(rename = "eventVersion")]
        event_version: Option<IgnoredAny>,
        #[serde(rename = "eventSource")]
        event_source: Option<IgnoredAny>,
        #[serde(rename = "eventName")]
        event_name: Option<IgnoredAny>,
        #[serde(rename = "eventID")]
        event_id: Option<IgnoredAny>,
        #[serde(rename = "eventTime")]
        event_time: Option<IgnoredAny>,
        #[serde(rename = "userIdentity")]
        user_identity: Option<IgnoredAny>,
        #[serde(rename = "auditID")]
        audit_id: Option<IgnoredAny>,
        verb: Option<IgnoredAny>,
        #[serde(rename = "requestURI")]
        request_uri: Option<IgnoredAny>,
        #[serde(rename = "objectRef")]
        object_ref: Option<IgnoredAny>,
        #[serde(rename = "apiVersion", borrow)]
        api_version: Option<Str<'a>>,
        job_workflow_ref: Option<IgnoredAny>,
        workflow_ref: Option<IgnoredAny>,
        jti: Option<IgnoredAny>,
        #[serde(borrow)]
        iss: Option<Str<'a>>,
        repository: Option<IgnoredAny>,
        project_path: Option<IgnoredAny>,
        ci_config_ref_uri: Option<IgnoredAny>,
        pipeline_source: Option<IgnoredAny>,
        #[serde(rename = "type", borrow)]
        kind: Option<Str<'a>>,
        request: Option<IgnoredAny>,
        payload: Option<IgnoredAny>,
        identity: Option<IgnoredAny>,
        action: Option<IgnoredAny>,
        source: Option<IgnoredAny>,
    }
    // A duplicate key makes the probe fail: [`classify`] calls such records unknown, the slow
    // path rejects them with the probe's message. A key of another format's that holds
    // another type (`"type": 5`) only means the record is of no known format.
    let p = match serde_json::from_str::<Probe>(obj) {
        Ok(p) => p,
        Err(e) if e.is_syntax() || e.is_eof() || e.to_string().starts_with("duplicate field") => {
            return Err(e);
        }
        Err(_) => return Ok(Guess::Unknown),
    };
    Ok(if p.records.is_some() {
        Guess::Delivery
    } else if p.event_version.is_some()
        || p.event_source.is_some()
        || (p.event_name.is_some()
            && (p.event_id.is_some() || p.event_time.is_some() || p.user_identity.is_some()))
    {
        Guess::Format(Format::Cloudtrail)
    } else if p.audit_id.is_some()
        || (p.verb.is_some() && (p.request_uri.is_some() || p.object_ref.is_some()))
        || p.api_version
            .as_deref()
            .is_some_and(|v| v.starts_with("audit.k8s.io/"))
    {
        Guess::Format(Format::Kubernetes)
    } else if p.job_workflow_ref.is_some()
        || p.workflow_ref.is_some()
        || (p.repository.is_some()
            && (p.jti.is_some()
                || p.iss
                    .as_deref()
                    .is_some_and(|i| i.contains("token.actions.githubusercontent.com"))))
    {
        Guess::Format(Format::Github)
    } else if p.project_path.is_some()
        && (p.ci_config_ref_uri.is_some() || p.pipeline_source.is_some() || p.iss.is_some())
    {
        Guess::Format(Format::Gitlab)
    } else if p.payload.is_some() {
        Guess::JwtDocument
    } else if p.request.is_some()
        && p.kind
            .as_deref()
            .is_some_and(|t| t == "request" || t == "response")
    {
        Guess::Format(Format::Vault)
    } else if p.identity.is_some() && p.action.is_some() && p.source.is_some() {
        Guess::Format(Format::Canonical)
    } else {
        Guess::Unknown
    })
}
