//! Writing records exactly as the five systems write them (key order included, since real
//! producers' key order matters to format detection), plus the small deterministic random
//! generator the simulation draws from.

use std::fmt::Write as _;

use crate::time::Timestamp;

/// A small, fast, seedable generator (SplitMix64).
#[derive(Clone, Debug)]
pub(crate) struct Rng(pub u64);

impl Rng {
    /// A generator seeded from several values (deterministic, order-sensitive).
    pub(crate) fn from(parts: &[u64]) -> Rng {
        let mut r = Rng(0x6e68_6977_6174_6368);
        for p in parts {
            r.0 ^= p.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            r.next();
        }
        r
    }
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }
    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub(crate) fn uuid(&mut self) -> String {
        let a = self.next();
        let b = self.next();
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | (b >> 48) & 0x3fff,
            b & 0xffff_ffff_ffff
        )
    }
    pub(crate) fn hex(&mut self, n: usize) -> String {
        let mut s = String::with_capacity(n + 16);
        while s.len() < n {
            let _ = write!(s, "{:016x}", self.next());
        }
        s.truncate(n);
        s
    }
    pub(crate) fn upper(&mut self, n: usize) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        (0..n).map(|_| A[self.below(32) as usize] as char).collect()
    }
    pub(crate) fn b64(&mut self, n: usize) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        (0..n).map(|_| A[self.below(64) as usize] as char).collect()
    }
}

/// A tiny JSON object writer that keeps key order.
pub(crate) struct Obj<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Obj<'a> {
    pub(crate) fn new(out: &'a mut String) -> Self {
        out.push('{');
        Obj { out, first: true }
    }
    fn key(&mut self, k: &str) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        push_str(self.out, k);
        self.out.push(':');
    }
    pub(crate) fn str(&mut self, k: &str, v: &str) {
        self.key(k);
        push_str(self.out, v);
    }
    pub(crate) fn num(&mut self, k: &str, v: i64) {
        self.key(k);
        let _ = write!(self.out, "{v}");
    }
    pub(crate) fn bool(&mut self, k: &str, v: bool) {
        self.key(k);
        self.out.push_str(if v { "true" } else { "false" });
    }
    pub(crate) fn raw(&mut self, k: &str, json: &str) {
        self.key(k);
        self.out.push_str(json);
    }
    pub(crate) fn strs(&mut self, k: &str, items: &[&str]) {
        self.key(k);
        self.out.push('[');
        for (i, s) in items.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            push_str(self.out, s);
        }
        self.out.push(']');
    }
    pub(crate) fn obj(&mut self, k: &str, f: impl FnOnce(&mut Obj<'_>)) {
        self.key(k);
        let mut inner = Obj::new(self.out);
        f(&mut inner);
        inner.end();
    }
    pub(crate) fn end(self) {
        self.out.push('}');
    }
}

fn push_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// GitHub Actions OIDC claims.
pub(crate) struct GithubClaims<'a> {
    pub jti: &'a str,
    pub repo: &'a str,
    pub workflow: &'a str,
    /// The workflow's display name (`Deploy`).
    pub name: &'a str,
    pub env: Option<&'a str>,
    pub hosted: bool,
    pub git_ref: &'a str,
    pub protected: bool,
    pub event: &'a str,
    pub actor: &'a str,
    pub run_id: u64,
    pub sha: &'a str,
    pub t: Timestamp,
}

pub(crate) fn github(c: &GithubClaims<'_>, out: &mut String) {
    let iat = c.t.as_unix_seconds();
    let owner = c.repo.split('/').next().unwrap_or(c.repo);
    let sub = match c.env {
        Some(e) => format!("repo:{}:environment:{e}", c.repo),
        None => format!("repo:{}:ref:{}", c.repo, c.git_ref),
    };
    let wref = format!("{}/.github/workflows/{}@{}", c.repo, c.workflow, c.git_ref);
    let mut o = Obj::new(out);
    o.str("jti", c.jti);
    o.str("sub", &sub);
    if let Some(e) = c.env {
        o.str("environment", e);
    }
    o.str("aud", "sts.amazonaws.com");
    o.str("ref", c.git_ref);
    o.str("sha", c.sha);
    o.str("repository", c.repo);
    o.str("repository_owner", owner);
    o.str("actor_id", "1097221");
    o.str("repository_visibility", "private");
    o.str(
        "repository_id",
        &(10_000_000 + c.run_id % 9_000_000).to_string(),
    );
    o.str("repository_owner_id", "7654321");
    o.str("run_id", &c.run_id.to_string());
    o.str("run_number", &(c.run_id % 5000 + 1).to_string());
    o.str("run_attempt", "1");
    o.str(
        "runner_environment",
        if c.hosted {
            "github-hosted"
        } else {
            "self-hosted"
        },
    );
    o.str("actor", c.actor);
    o.str("workflow", c.name);
    o.str("head_ref", "");
    o.str("base_ref", "");
    o.str("event_name", c.event);
    o.str("ref_type", "branch");
    o.str("ref_protected", if c.protected { "true" } else { "false" });
    o.str("workflow_ref", &wref);
    o.str("workflow_sha", c.sha);
    o.str("job_workflow_ref", &wref);
    o.str("job_workflow_sha", c.sha);
    o.str("iss", "https://token.actions.githubusercontent.com");
    o.num("nbf", iat - 300);
    o.num("exp", iat + 300);
    o.num("iat", iat);
    o.end();
}

/// GitLab CI ID token claims.
pub(crate) struct GitlabClaims<'a> {
    pub jti: &'a str,
    pub project: &'a str,
    /// `None` for a job that names no environment.
    pub env: Option<&'a str>,
    pub runner_id: u32,
    pub hosted: bool,
    pub source: &'a str,
    pub pipeline: u64,
    pub sha: &'a str,
    pub t: Timestamp,
}

pub(crate) fn gitlab_claims(c: &GitlabClaims<'_>, out: &mut String) {
    let iat = c.t.as_unix_seconds();
    let ns = c.project.split('/').next().unwrap_or(c.project);
    let mut o = Obj::new(out);
    o.str("namespace_id", "4242");
    o.str("namespace_path", ns);
    o.str("project_id", &(1000 + c.pipeline % 9000).to_string());
    o.str("project_path", c.project);
    o.str("user_id", "77");
    o.str("user_login", "release-bot");
    o.str("user_email", "release-bot@acme.example");
    o.str("user_access_level", "maintainer");
    o.str("pipeline_id", &c.pipeline.to_string());
    o.str("pipeline_source", c.source);
    o.str("job_id", &(c.pipeline * 7 % 10_000_000).to_string());
    o.str("ref", "main");
    o.str("ref_type", "branch");
    o.str("ref_path", "refs/heads/main");
    o.str("ref_protected", "true");
    if let Some(env) = c.env {
        o.str("environment", env);
        o.str("environment_protected", "true");
        o.str("deployment_tier", env);
        o.str("environment_action", "start");
    }
    o.num("runner_id", i64::from(c.runner_id));
    o.str(
        "runner_environment",
        if c.hosted {
            "gitlab-hosted"
        } else {
            "self-hosted"
        },
    );
    o.str("sha", c.sha);
    o.str("project_visibility", "private");
    o.str(
        "ci_config_ref_uri",
        &format!(
            "gitlab.acme.example/{}//.gitlab-ci.yml@refs/heads/main",
            c.project
        ),
    );
    o.str("ci_config_sha", c.sha);
    o.str("jti", c.jti);
    o.str("iss", "https://gitlab.acme.example");
    o.num("iat", iat);
    o.num("nbf", iat - 5);
    o.num("exp", iat + 3600);
    o.str(
        "sub",
        &format!("project_path:{}:ref_type:branch:ref:main", c.project),
    );
    o.str("aud", "https://vault.acme.example");
    o.end();
}

/// The token side of a Vault audit entry.
pub(crate) struct VaultToken<'a> {
    pub accessor: &'a str,
    pub client_token: &'a str,
    pub display: &'a str,
    pub policies: &'a [&'a str],
    pub role_key: &'a str,
    pub role: &'a str,
    pub env: Option<&'a str>,
    pub project: Option<&'a str>,
    pub entity: &'a str,
    pub ttl: i64,
}

fn vault_auth(o: &mut Obj<'_>, key: &str, tok: &VaultToken<'_>) {
    o.obj(key, |a| {
        a.str("client_token", tok.client_token);
        a.str("accessor", tok.accessor);
        a.str("display_name", tok.display);
        a.strs("policies", tok.policies);
        a.strs("token_policies", tok.policies);
        a.obj("metadata", |m| {
            m.str(tok.role_key, tok.role);
            if let Some(p) = tok.project {
                m.str("project_path", p);
            }
            if let Some(env) = tok.env {
                m.str("environment", env);
            }
        });
        a.str("entity_id", tok.entity);
        a.str("token_type", "service");
        a.num("token_ttl", tok.ttl);
    });
}

/// A Vault login: the request half (when `response` is false) or the response that issued
/// the token.
#[allow(clippy::too_many_arguments)]
pub(crate) fn vault_login(
    t: Timestamp,
    request_id: &str,
    mount: &str,
    ip: &str,
    tok: &VaultToken<'_>,
    response: bool,
    rng: &mut Rng,
    out: &mut String,
) {
    let jwt = format!("hmac-sha256:{}", rng.hex(64));
    let mut o = Obj::new(out);
    o.str("time", &t.to_rfc3339());
    o.str("type", if response { "response" } else { "request" });
    o.obj("auth", |a| a.str("token_type", "default"));
    o.obj("request", |q| {
        q.str("id", request_id);
        q.str("operation", "update");
        q.str("mount_point", &format!("auth/{mount}/"));
        q.str("mount_type", mount);
        q.obj("namespace", |n| n.str("id", "root"));
        q.str("path", &format!("auth/{mount}/login"));
        q.obj("data", |d| {
            d.str(
                if mount == "approle" {
                    "secret_id"
                } else {
                    "jwt"
                },
                &jwt,
            );
            d.str(
                if mount == "approle" {
                    "role_id"
                } else {
                    "role"
                },
                "hmac-sha256:9a4c3b1f0e2d",
            );
        });
        q.str("remote_address", ip);
        q.num("remote_port", 40_000 + (t.as_micros() % 20_000));
    });
    if response {
        o.obj("response", |r| {
            vault_auth(r, "auth", tok);
            r.str("mount_type", mount);
        });
    }
    o.end();
}

/// A Vault read made with a token: the request (a use) or its response.
pub(crate) fn vault_read(
    t: Timestamp,
    request_id: &str,
    path: &str,
    ip: &str,
    tok: &VaultToken<'_>,
    response: bool,
    out: &mut String,
) {
    let mut o = Obj::new(out);
    o.str("time", &t.to_rfc3339());
    o.str("type", if response { "response" } else { "request" });
    vault_auth(&mut o, "auth", tok);
    o.obj("request", |q| {
        q.str("id", request_id);
        q.str("operation", "read");
        q.str("mount_point", "secret/");
        q.str("mount_type", "kv");
        q.str("client_token", tok.client_token);
        q.str("client_token_accessor", tok.accessor);
        q.obj("namespace", |n| n.str("id", "root"));
        q.str("path", path);
        q.str("remote_address", ip);
        q.num("remote_port", 40_000 + (t.as_micros() % 20_000));
    });
    if response {
        o.raw("response", r#"{"mount_type":"kv","data":{"data":{"value":"hmac-sha256:5d7f9b1d3f5b7d9f1b3d5f7b9d1f3b5d7f9b1d3f5b7d9f1b3d5f7b9d1f3b5d7f"}}}"#);
    }
    o.end();
}

fn expiration_text(t: Timestamp) -> String {
    let (y, m, d, h, mi, s, _) = t.to_civil();
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (h12, ampm) = match h {
        0 => (12, "AM"),
        h if h < 12 => (h, "AM"),
        12 => (12, "PM"),
        h => (h - 12, "PM"),
    };
    format!(
        "{} {d}, {y}, {h12}:{mi:02}:{s:02} {ampm}",
        MONTHS[(m - 1) as usize]
    )
}

/// An STS AssumeRoleWithWebIdentity by a GitHub workflow.
pub(crate) struct StsMint<'a> {
    pub event_id: &'a str,
    pub repo: &'a str,
    /// The job's environment; `None` for a job that names none (its subject is its ref).
    pub env: Option<&'a str>,
    pub account: &'a str,
    pub role_arn: &'a str,
    pub session: &'a str,
    pub key: &'a str,
    pub duration: i64,
    pub ip: &'a str,
    pub t: Timestamp,
}

pub(crate) fn sts_mint(m: &StsMint<'_>, rng: &mut Rng, out: &mut String) {
    let provider = format!(
        "arn:aws:iam::{}:oidc-provider/token.actions.githubusercontent.com",
        m.account
    );
    let sub = match m.env {
        Some(env) => format!("repo:{}:environment:{env}", m.repo),
        None => format!("repo:{}:ref:refs/heads/main", m.repo),
    };
    let token = format!("IQoJb3JpZ2luX2VjE{}", rng.b64(280));
    let role_id = format!("AROA{}", rng.upper(17));
    let role_name = m.role_arn.rsplit('/').next().unwrap_or(m.role_arn);
    let request_id = rng.uuid();
    let mut o = Obj::new(out);
    o.str("eventVersion", "1.08");
    o.obj("userIdentity", |u| {
        u.str("type", "WebIdentityUser");
        u.str(
            "principalId",
            &format!("{provider}:sts.amazonaws.com:{sub}"),
        );
        u.str("userName", &sub);
        u.str("identityProvider", &provider);
    });
    o.str("eventTime", &m.t.to_rfc3339());
    o.str("eventSource", "sts.amazonaws.com");
    o.str("eventName", "AssumeRoleWithWebIdentity");
    o.str("awsRegion", "eu-central-1");
    o.str("sourceIPAddress", m.ip);
    o.str(
        "userAgent",
        "aws-sdk-js/3.600.0 ua/2.0 os/linux#6.5.0 lang/js md/nodejs#20.15.0 api/sts#3.600.0",
    );
    o.obj("requestParameters", |p| {
        p.str("roleArn", m.role_arn);
        p.str("roleSessionName", m.session);
        p.num("durationSeconds", m.duration);
    });
    o.obj("responseElements", |p| {
        p.obj("credentials", |c| {
            c.str("accessKeyId", m.key);
            c.str("sessionToken", &token);
            c.str("expiration", &expiration_text(m.t.plus_seconds(m.duration)));
        });
        p.str("subjectFromWebIdentityToken", &sub);
        p.obj("assumedRoleUser", |a| {
            a.str("assumedRoleId", &format!("{role_id}:{}", m.session));
            a.str(
                "arn",
                &format!(
                    "arn:aws:sts::{}:assumed-role/{role_name}/{}",
                    m.account, m.session
                ),
            );
        });
        p.str("provider", &provider);
        p.str("audience", "sts.amazonaws.com");
    });
    o.str("requestID", &request_id);
    o.str("eventID", m.event_id);
    o.bool("readOnly", true);
    o.str("eventType", "AwsApiCall");
    o.bool("managementEvent", true);
    o.str("recipientAccountId", m.account);
    o.str("eventCategory", "Management");
    o.end();
}

/// An AWS API call made with a session key.
pub(crate) struct AwsUse<'a> {
    pub event_id: &'a str,
    pub account: &'a str,
    pub recipient: &'a str,
    pub role_arn: &'a str,
    pub session: &'a str,
    pub key: &'a str,
    pub service: &'a str,
    pub name: &'a str,
    pub bucket: &'a str,
    pub object: &'a str,
    pub ip: &'a str,
    pub t: Timestamp,
}

pub(crate) fn aws_use(u: &AwsUse<'_>, rng: &mut Rng, out: &mut String) {
    let role_name = u.role_arn.rsplit('/').next().unwrap_or(u.role_arn);
    let role_id = format!("AROA{}", rng.upper(17));
    let request_id = rng.uuid();
    let mut o = Obj::new(out);
    o.str("eventVersion", "1.09");
    o.obj("userIdentity", |i| {
        i.str("type", "AssumedRole");
        i.str("principalId", &format!("{role_id}:{}", u.session));
        i.str(
            "arn",
            &format!(
                "arn:aws:sts::{}:assumed-role/{role_name}/{}",
                u.account, u.session
            ),
        );
        i.str("accountId", u.account);
        i.str("accessKeyId", u.key);
        i.obj("sessionContext", |s| {
            s.obj("sessionIssuer", |x| {
                x.str("type", "Role");
                x.str("principalId", &role_id);
                x.str("arn", u.role_arn);
                x.str("accountId", u.account);
                x.str("userName", role_name);
            });
            s.obj("attributes", |a| {
                a.str("creationDate", &u.t.to_rfc3339());
                a.str("mfaAuthenticated", "false");
            });
        });
    });
    o.str("eventTime", &u.t.to_rfc3339());
    o.str("eventSource", u.service);
    o.str("eventName", u.name);
    o.str("awsRegion", "eu-central-1");
    o.str("sourceIPAddress", u.ip);
    o.str(
        "userAgent",
        "aws-cli/2.17.0 md/awscrt#0.20.11 ua/2.0 os/linux#6.5.0 md/arch#x86_64 lang/python#3.11.8",
    );
    o.obj("requestParameters", |p| {
        p.str("bucketName", u.bucket);
        p.str("key", u.object);
    });
    o.raw("responseElements", "null");
    o.str("requestID", &request_id);
    o.str("eventID", u.event_id);
    o.bool("readOnly", u.name.starts_with("Get"));
    o.str("eventType", "AwsApiCall");
    o.bool("managementEvent", false);
    o.str("recipientAccountId", u.recipient);
    o.str("eventCategory", "Data");
    o.end();
}

/// A TokenRequest audit event.
pub(crate) struct TokenRequest<'a> {
    pub audit_id: &'a str,
    pub ns: &'a str,
    pub sa: &'a str,
    pub requester: &'a str,
    pub requester_groups: &'a [&'a str],
    pub ip: &'a str,
    pub agent: &'a str,
    pub audiences: &'a [&'a str],
    pub expiration: i64,
    pub pod: &'a str,
    pub pod_uid: &'a str,
    pub jti: &'a str,
    pub t: Timestamp,
}

pub(crate) fn token_request(r: &TokenRequest<'_>, out: &mut String) {
    let ts = r.t.to_rfc3339();
    let mut o = Obj::new(out);
    o.str("kind", "Event");
    o.str("apiVersion", "audit.k8s.io/v1");
    o.str("level", "Request");
    o.str("auditID", r.audit_id);
    o.str("stage", "ResponseComplete");
    o.str(
        "requestURI",
        &format!("/api/v1/namespaces/{}/serviceaccounts/{}/token", r.ns, r.sa),
    );
    o.str("verb", "create");
    o.obj("user", |u| {
        u.str("username", r.requester);
        u.strs("groups", r.requester_groups);
    });
    o.strs("sourceIPs", &[r.ip]);
    o.str("userAgent", r.agent);
    o.obj("objectRef", |x| {
        x.str("resource", "serviceaccounts");
        x.str("namespace", r.ns);
        x.str("name", r.sa);
        x.str("apiVersion", "v1");
        x.str("subresource", "token");
    });
    o.obj("responseStatus", |s| {
        s.raw("metadata", "{}");
        s.num("code", 201);
    });
    o.obj("requestObject", |x| {
        x.str("kind", "TokenRequest");
        x.str("apiVersion", "authentication.k8s.io/v1");
        x.raw("metadata", r#"{"creationTimestamp":null}"#);
        x.obj("spec", |s| {
            s.strs("audiences", r.audiences);
            s.num("expirationSeconds", r.expiration);
            s.obj("boundObjectRef", |b| {
                b.str("kind", "Pod");
                b.str("apiVersion", "v1");
                b.str("name", r.pod);
                b.str("uid", r.pod_uid);
            });
        });
        x.raw("status", r#"{"token":"","expirationTimestamp":null}"#);
    });
    o.str("requestReceivedTimestamp", &ts);
    o.str("stageTimestamp", &ts);
    o.obj("annotations", |a| {
        a.str("authorization.k8s.io/decision", "allow");
        a.str("authorization.k8s.io/reason", "");
        a.str("authentication.kubernetes.io/issued-credential-id", r.jti);
    });
    o.end();
}

/// A request by a service account with its token.
pub(crate) struct SaRequest<'a> {
    pub audit_id: &'a str,
    pub ns: &'a str,
    pub sa: &'a str,
    pub jti: &'a str,
    pub node: &'a str,
    pub pod: &'a str,
    pub ip: &'a str,
    pub verb: &'a str,
    pub resource: &'a str,
    pub name: &'a str,
    pub t: Timestamp,
}

pub(crate) fn sa_request(r: &SaRequest<'_>, out: &mut String) {
    let uri = if r.name.is_empty() {
        format!("/api/v1/namespaces/{}/{}?limit=500", r.ns, r.resource)
    } else {
        format!("/api/v1/namespaces/{}/{}/{}", r.ns, r.resource, r.name)
    };
    let ts = r.t.to_rfc3339();
    let mut o = Obj::new(out);
    o.str("kind", "Event");
    o.str("apiVersion", "audit.k8s.io/v1");
    o.str("level", "Metadata");
    o.str("auditID", r.audit_id);
    o.str("stage", "ResponseComplete");
    o.str("requestURI", &uri);
    o.str("verb", r.verb);
    o.obj("user", |u| {
        u.str(
            "username",
            &format!("system:serviceaccount:{}:{}", r.ns, r.sa),
        );
        u.strs(
            "groups",
            &[
                "system:serviceaccounts",
                &format!("system:serviceaccounts:{}", r.ns),
                "system:authenticated",
            ],
        );
        u.obj("extra", |x| {
            x.strs("authentication.kubernetes.io/credential-id", &[r.jti]);
            x.strs("authentication.kubernetes.io/node-name", &[r.node]);
            x.strs("authentication.kubernetes.io/pod-name", &[r.pod]);
        });
    });
    o.strs("sourceIPs", &[r.ip]);
    o.str("userAgent", "app/v1.4.2 (linux/amd64) kubernetes/client-go");
    o.obj("objectRef", |x| {
        x.str("resource", r.resource);
        x.str("namespace", r.ns);
        if !r.name.is_empty() {
            x.str("name", r.name);
        }
        x.str("apiVersion", "v1");
    });
    o.obj("responseStatus", |s| {
        s.raw("metadata", "{}");
        s.num("code", 200);
    });
    o.str("requestReceivedTimestamp", &ts);
    o.str("stageTimestamp", &ts);
    o.obj("annotations", |a| {
        a.str("authorization.k8s.io/decision", "allow");
        a.str(
            "authorization.k8s.io/reason",
            &format!("RBAC: allowed by RoleBinding \"{0}\" of Role \"{0}\" to ServiceAccount \"{0}/{1}\"", r.sa, r.ns),
        );
    });
    o.end();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic_and_spread() {
        let mut a = Rng::from(&[1, 2, 3]);
        let mut b = Rng::from(&[1, 2, 3]);
        assert_eq!(a.next(), b.next());
        assert_ne!(Rng::from(&[1, 2, 4]).next(), Rng::from(&[1, 2, 3]).next());
        let mut r = Rng(7);
        let hits = (0..10_000).filter(|_| r.chance(0.25)).count();
        assert!((2300..2700).contains(&hits), "{hits}");
        assert!(r.uuid().len() == 36);
    }

    #[test]
    fn expiration_matches_cloudtrail_spelling() {
        let t = Timestamp::parse("2026-01-05T23:05:09Z").expect("t");
        assert_eq!(expiration_text(t), "Jan 5, 2026, 11:05:09 PM");
        assert_eq!(
            Timestamp::parse_cloudtrail_expiration(&expiration_text(t)).expect("parses"),
            t
        );
    }
}
