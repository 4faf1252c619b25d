//! The hygiene scenarios (`simulate --hygiene`): a second, smaller world beside the
//! organisation's services, with labelled positives and hard negatives for the five hygiene
//! findings (issue 20), in the real record formats.
//!
//! | finding | positives (labelled) | hard negatives (unlabelled traffic) |
//! |---|---|---|
//! | `dormant_reactivated` | an AppRole silent for 31+ days logs in from a network it never used | an AppRole retired and brought back by its owner, from its own network |
//! | `long_lived_credential` | an AppRole with hour-long tokens gets a 768 h one; an IAM user held to STS sessions calls S3 with its long-term key | AppRoles whose tokens always lived 768 h; an IAM user's planned key rotation |
//! | `human_bound_credential` | a person's Vault login (userpass, OIDC) or IAM key used from the runners' network | the same people from the office, and from a bastion two automation identities share |
//! | `new_trust` | a trust policy, a Vault auth role or a role binding changed by a principal that never changed trust; a new repository assuming a shared role through a wildcard trust | the organisation's Terraform, Vault configuration job and Argo CD announcing new repositories, roles and bindings; the new repositories then assuming their roles |
//! | `unapproved_ref` | a production deploy from a feature branch or a pull request | production deploys from every new release tag |
//!
//! Automation works from 10.77.0.0/16 (the runners), people from 172.20.0.0/16 (the office)
//! and 100.64.0.0/16 (a bastion), attackers from documentation ranges. Dormancy needs at
//! least 42 days (`--days 42`); with fewer, its scenarios are left out and counted as
//! skipped.

use super::*;
use crate::decode::Format;

/// The hygiene kinds, named like the detectors meant to catch them.
pub const HYGIENE_KINDS: [&str; 5] = [
    "dormant_reactivated",
    "long_lived_credential",
    "human_bound_credential",
    "new_trust",
    "unapproved_ref",
];

/// The account the hygiene world's roles live in (production) and its platform account.
const PROD: &str = "111111111111";
const PLATFORM: &str = "444444444444";
/// Days a dormant service stays silent.
const QUIET_DAYS: i64 = 31;

/// An answer-key line of a hygiene record.
pub(super) struct HLabel {
    pub(super) attack: u16,
    pub(super) kind: &'static str,
    pub(super) variant: &'static str,
    pub(super) event_id: String,
    pub(super) identity: String,
    pub(super) source: &'static str,
}

/// One hygiene record.
pub(super) struct HRec {
    pub(super) t: i64,
    pub(super) seq: u32,
    pub(super) format: Format,
    pub(super) line: String,
    pub(super) label: Option<HLabel>,
}

/// The hygiene world, planned in full.
pub(super) struct Hygiene {
    pub(super) recs: Vec<HRec>,
    /// Positives per kind, in [`HYGIENE_KINDS`] order.
    pub(super) by_kind: [u32; 5],
    pub(super) skipped: u32,
    pub(super) identities: u32,
    pub(super) identity_days: u64,
}

struct Plan<'a> {
    t0: i64,
    days: i64,
    rng: Rng,
    recs: Vec<HRec>,
    seq: u32,
    next_attack: u16,
    by_kind: [u32; 5],
    identities: u32,
    identity_days: u64,
    _sim: &'a Simulation,
}

/// A Vault token's facts for a login.
struct Login<'a> {
    role: &'a str,
    mount: &'a str,
    display: &'a str,
    role_key: &'a str,
    ttl: i64,
    env: Option<&'a str>,
    ip: &'a str,
}

impl<'a> Login<'a> {
    /// An AppRole login of a production role.
    fn approle(role: &'a str, ip: &'a str, ttl: i64) -> Login<'a> {
        Login {
            role,
            mount: "approle",
            display: "approle",
            role_key: "role_name",
            ttl,
            env: Some("production"),
            ip,
        }
    }
}

impl Plan<'_> {
    fn push(&mut self, t: i64, format: Format, line: String, label: Option<HLabel>) {
        if t < self.t0 || t >= self.t0 + self.days * 86_400 {
            return;
        }
        self.seq += 1;
        self.recs.push(HRec {
            t,
            seq: self.seq,
            format,
            line,
            label,
        });
    }

    /// A new attack number and its label for a record.
    fn attack(&mut self, kind: usize, variant: &'static str) -> u16 {
        self.next_attack += 1;
        self.by_kind[kind] += 1;
        let _ = variant;
        self.next_attack
    }

    fn label(
        &self,
        attack: u16,
        kind: usize,
        variant: &'static str,
        id: &str,
        identity: &str,
        source: &'static str,
    ) -> Option<HLabel> {
        Some(HLabel {
            attack,
            kind: HYGIENE_KINDS[kind],
            variant,
            event_id: id.to_string(),
            identity: identity.to_string(),
            source,
        })
    }

    fn identity(&mut self, from_day: i64, to_day: i64) {
        self.identities += 1;
        self.identity_days += (to_day.min(self.days) - from_day.max(0)).max(0) as u64;
    }

    /// A Vault login (response) and a read with its token (request) five minutes later;
    /// returns the two record ids.
    fn vault_login_and_read(
        &mut self,
        t: i64,
        l: &Login<'_>,
        labels: Option<(u16, usize, &'static str)>,
    ) {
        let mut rng = Rng::from(&[self.rng.next(), t as u64]);
        let accessor = format!("hmac-sha256:{}", rng.hex(64));
        let client = format!("hmac-sha256:{}", rng.hex(64));
        let entity = rng.uuid();
        let policies = [l.role];
        let tok = VaultToken {
            accessor: &accessor,
            client_token: &client,
            display: l.display,
            policies: &policies,
            role_key: l.role_key,
            role: l.role,
            env: l.env,
            project: None,
            entity: &entity,
            ttl: l.ttl,
        };
        let identity = if l.role_key.is_empty() {
            format!("vault:{}", l.display)
        } else {
            format!("vault:{}/{}", l.mount, l.role)
        };
        let id = rng.uuid();
        let mut line = String::new();
        vault_login(
            Timestamp::from_micros(t * 1_000_000),
            &id,
            l.mount,
            l.ip,
            &tok,
            true,
            &mut rng,
            &mut line,
        );
        let lab = labels.and_then(|(a, k, v)| self.label(a, k, v, &id, &identity, "vault"));
        self.push(t, Format::Vault, line, lab);
        let t2 = t + 300;
        let id2 = rng.uuid();
        let mut line = String::new();
        vault_read(
            Timestamp::from_micros(t2 * 1_000_000),
            &id2,
            &format!("secret/data/{}/config", l.role),
            l.ip,
            &tok,
            false,
            &mut line,
        );
        let lab = labels.and_then(|(a, k, v)| self.label(a, k, v, &id2, &identity, "vault"));
        self.push(t2, Format::Vault, line, lab);
    }

    /// Hourly logins (with jitter) around the clock on days `[from, to)`.
    fn approle_hourly(&mut self, role: &str, ip: &str, ttl: i64, from: i64, to: i64) {
        for d in from.max(0)..to.min(self.days) {
            for h in 0..24 {
                let t = self.t0 + d * 86_400 + h * 3600 + self.rng.range(0, 900) as i64;
                self.vault_login_and_read(t, &Login::approle(role, ip, ttl), None);
            }
        }
    }

    /// A CloudTrail call by an IAM user with its long-term key (`sts` `GetSessionToken`
    /// mints a session too); returns the event id.
    #[allow(clippy::too_many_arguments)]
    fn iam_user_call(
        &mut self,
        t: i64,
        user: &str,
        key: &str,
        service: &str,
        name: &str,
        session_key: Option<&str>,
        ip: &str,
        label: Option<(u16, usize, &'static str)>,
    ) -> String {
        let mut rng = Rng::from(&[self.rng.next(), t as u64, 3]);
        let id = rng.uuid();
        let ts = Timestamp::from_micros(t * 1_000_000);
        let mut line = String::new();
        let mut o = Obj::new(&mut line);
        o.str("eventVersion", "1.09");
        o.obj("userIdentity", |i| {
            i.str("type", "IAMUser");
            i.str("principalId", &format!("AIDA{}", rng.upper(17)));
            i.str("arn", &format!("arn:aws:iam::{PROD}:user/{user}"));
            i.str("accountId", PROD);
            i.str("accessKeyId", key);
            i.str("userName", user);
        });
        o.str("eventTime", &ts.to_rfc3339());
        o.str("eventSource", service);
        o.str("eventName", name);
        o.str("awsRegion", "eu-central-1");
        o.str("sourceIPAddress", ip);
        o.str("userAgent", "aws-cli/2.17.0 ua/2.0 os/linux#6.5.0");
        match session_key {
            Some(k) => {
                o.obj("requestParameters", |p| p.num("durationSeconds", 3600));
                o.obj("responseElements", |p| {
                    p.obj("credentials", |c| {
                        c.str("accessKeyId", k);
                        c.str("expiration", &ts.plus_seconds(3600).to_rfc3339());
                    });
                });
            }
            None => {
                o.obj("requestParameters", |p| {
                    p.str("bucketName", "acme-hyg-artifacts");
                    p.str("key", "build/latest.tar.gz");
                });
                o.raw("responseElements", "null");
            }
        }
        o.str("requestID", &rng.uuid());
        o.str("eventID", &id);
        o.str("eventType", "AwsApiCall");
        o.str("recipientAccountId", PROD);
        o.end();
        let identity = format!("aws:arn:aws:iam::{PROD}:user/{user}");
        let lab = label.and_then(|(a, k, v)| self.label(a, k, v, &id, &identity, "cloudtrail"));
        self.push(t, Format::Cloudtrail, line, lab);
        id
    }

    /// An S3 read with a session key (an `AssumedRole` or a federated session).
    fn session_use(&mut self, t: i64, role_arn: &str, key: &str, ip: &str) {
        let mut rng = Rng::from(&[self.rng.next(), t as u64, 4]);
        let id = rng.uuid();
        let mut line = String::new();
        aws_use(
            &AwsUse {
                event_id: &id,
                account: PROD,
                recipient: PROD,
                role_arn,
                session: "hyg",
                key,
                service: "s3.amazonaws.com",
                name: "GetObject",
                bucket: "acme-hyg-artifacts",
                object: "build/latest.tar.gz",
                ip,
                t: Timestamp::from_micros(t * 1_000_000),
            },
            &mut rng,
            &mut line,
        );
        self.push(t, Format::Cloudtrail, line, None);
    }

    /// A trust-policy change in CloudTrail, made with a session of `caller_role`.
    #[allow(clippy::too_many_arguments)]
    fn trust_policy(
        &mut self,
        t: i64,
        caller_role: &str,
        role: &str,
        subs: &[String],
        create: bool,
        ip: &str,
        label: Option<(u16, usize, &'static str)>,
    ) {
        let mut rng = Rng::from(&[self.rng.next(), t as u64, 5]);
        let id = rng.uuid();
        let ts = Timestamp::from_micros(t * 1_000_000);
        let provider =
            format!("arn:aws:iam::{PROD}:oidc-provider/token.actions.githubusercontent.com");
        let policy = serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow",
                "Principal": {"Federated": provider},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {
                    "StringEquals": {"token.actions.githubusercontent.com:aud": "sts.amazonaws.com"},
                    "StringLike": {"token.actions.githubusercontent.com:sub": subs},
                }
            }]
        })
        .to_string();
        let caller_name = caller_role.rsplit('/').next().unwrap_or(caller_role);
        let caller_account = caller_role
            .split(':')
            .nth(4)
            .unwrap_or(PLATFORM)
            .to_string();
        let key = format!("ASIA{}", rng.upper(16));
        let mut line = String::new();
        let mut o = Obj::new(&mut line);
        o.str("eventVersion", "1.09");
        o.obj("userIdentity", |i| {
            i.str("type", "AssumedRole");
            i.str(
                "arn",
                &format!("arn:aws:sts::{caller_account}:assumed-role/{caller_name}/apply"),
            );
            i.str("accountId", &caller_account);
            i.str("accessKeyId", &key);
            i.obj("sessionContext", |s| {
                s.obj("sessionIssuer", |x| {
                    x.str("type", "Role");
                    x.str("arn", caller_role);
                    x.str("accountId", &caller_account);
                    x.str("userName", caller_name);
                });
            });
        });
        o.str("eventTime", &ts.to_rfc3339());
        o.str("eventSource", "iam.amazonaws.com");
        o.str(
            "eventName",
            if create {
                "CreateRole"
            } else {
                "UpdateAssumeRolePolicy"
            },
        );
        o.str("awsRegion", "us-east-1");
        o.str("sourceIPAddress", ip);
        o.str("userAgent", "APN/1.0 HashiCorp/1.0 Terraform/1.9.5");
        o.obj("requestParameters", |p| {
            p.str("roleName", role);
            if create {
                p.str("assumeRolePolicyDocument", &policy);
            } else {
                p.str("policyDocument", &policy);
            }
        });
        if create {
            o.obj("responseElements", |p| {
                p.obj("role", |r| {
                    r.str("arn", &format!("arn:aws:iam::{PROD}:role/{role}"));
                    r.str("roleName", role);
                });
            });
        } else {
            o.raw("responseElements", "null");
        }
        o.str("requestID", &rng.uuid());
        o.str("eventID", &id);
        o.str("eventType", "AwsApiCall");
        o.str("recipientAccountId", PROD);
        o.end();
        let identity = format!("aws:arn:aws:iam::{PROD}:role/{role}");
        let lab = label.and_then(|(a, k, v)| self.label(a, k, v, &id, &identity, "cloudtrail"));
        self.push(t, Format::Cloudtrail, line, lab);
    }

    /// A GitHub workflow assuming `role` by web identity (STS record only).
    fn web_identity_mint(
        &mut self,
        t: i64,
        repo: &str,
        role: &str,
        label: Option<(u16, usize, &'static str)>,
    ) {
        let mut rng = Rng::from(&[self.rng.next(), t as u64, 6]);
        let id = rng.uuid();
        let key = format!("ASIA{}", rng.upper(16));
        let ip = format!("10.77.{}.{}", rng.range(100, 200), rng.range(2, 250));
        let role_arn = format!("arn:aws:iam::{PROD}:role/{role}");
        let mut line = String::new();
        sts_mint(
            &StsMint {
                event_id: &id,
                repo,
                env: Some("production"),
                account: PROD,
                role_arn: &role_arn,
                session: &format!("GitHubActions-{}", rng.range(1, 1 << 30)),
                key: &key,
                duration: 3600,
                ip: &ip,
                t: Timestamp::from_micros(t * 1_000_000),
            },
            &mut rng,
            &mut line,
        );
        let identity = format!("github:{repo}");
        let lab = label.and_then(|(a, k, v)| self.label(a, k, v, &id, &identity, "cloudtrail"));
        self.push(t, Format::Cloudtrail, line, lab);
    }

    /// A Vault auth role write (the response half), by a token of `writer` (`mount/role`).
    fn vault_role_write(
        &mut self,
        t: i64,
        writer: (&str, &str),
        role: &str,
        project: &str,
        ip: &str,
        label: Option<(u16, usize, &'static str)>,
    ) {
        let mut rng = Rng::from(&[self.rng.next(), t as u64, 7]);
        let id = rng.uuid();
        let ts = Timestamp::from_micros(t * 1_000_000);
        let (mount, wrole) = writer;
        let mut line = String::new();
        let mut o = Obj::new(&mut line);
        o.str("time", &ts.to_rfc3339());
        o.str("type", "response");
        o.obj("auth", |a| {
            a.str("client_token", &format!("hmac-sha256:{}", rng.hex(64)));
            a.str("accessor", &format!("hmac-sha256:{}", rng.hex(64)));
            a.str("display_name", &format!("{mount}-{wrole}"));
            a.strs("policies", &["default", wrole]);
            a.obj("metadata", |m| m.str("role_name", wrole));
            a.str("entity_id", &rng.uuid());
            a.str("token_type", "service");
        });
        o.obj("request", |q| {
            q.str("id", &id);
            q.str("operation", "update");
            q.str("mount_point", "auth/jwt/");
            q.str("mount_type", "jwt");
            q.obj("namespace", |n| n.str("id", "root"));
            q.str("path", &format!("auth/jwt/role/{role}"));
            q.raw(
                "data",
                &serde_json::json!({
                    "role_type": "jwt",
                    "user_claim": "sub",
                    "bound_audiences": "https://vault.acme.example",
                    "bound_claims": {"project_path": [project]},
                    "token_policies": [role],
                })
                .to_string(),
            );
            q.str("remote_address", ip);
        });
        o.raw("response", r#"{"mount_type":"jwt"}"#);
        o.end();
        let identity = format!("vault:jwt/{role}");
        let lab = label.and_then(|(a, k, v)| self.label(a, k, v, &id, &identity, "vault"));
        self.push(t, Format::Vault, line, lab);
    }

    /// A RoleBinding created in `ns` for service account `sa` by `user`.
    #[allow(clippy::too_many_arguments)]
    fn role_binding(
        &mut self,
        t: i64,
        user: &str,
        ns: &str,
        sa: &str,
        cluster_role: &str,
        ip: &str,
        label: Option<(u16, usize, &'static str)>,
    ) {
        let mut rng = Rng::from(&[self.rng.next(), t as u64, 8]);
        let id = rng.uuid();
        let ts = Timestamp::from_micros(t * 1_000_000).to_rfc3339();
        let name = format!("{sa}-{cluster_role}");
        let mut line = String::new();
        let mut o = Obj::new(&mut line);
        o.str("kind", "Event");
        o.str("apiVersion", "audit.k8s.io/v1");
        o.str("level", "Request");
        o.str("auditID", &id);
        o.str("stage", "ResponseComplete");
        o.str(
            "requestURI",
            &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings"),
        );
        o.str("verb", "create");
        o.obj("user", |u| {
            u.str("username", user);
            u.strs(
                "groups",
                &["system:serviceaccounts", "system:authenticated"],
            );
        });
        o.strs("sourceIPs", &[ip]);
        o.str("userAgent", "argocd-application-controller/v2.12.3");
        o.obj("objectRef", |r| {
            r.str("resource", "rolebindings");
            r.str("namespace", ns);
            r.str("name", &name);
            r.str("apiGroup", "rbac.authorization.k8s.io");
            r.str("apiVersion", "v1");
        });
        o.obj("responseStatus", |s| s.num("code", 201));
        o.raw(
            "requestObject",
            &serde_json::json!({
                "kind": "RoleBinding",
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "metadata": {"name": name, "namespace": ns},
                "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}],
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role},
            })
            .to_string(),
        );
        o.str("requestReceivedTimestamp", &ts);
        o.str("stageTimestamp", &ts);
        o.end();
        let identity = format!("k8s:{ns}/{sa}");
        let lab = label.and_then(|(a, k, v)| self.label(a, k, v, &id, &identity, "kubernetes"));
        self.push(t, Format::Kubernetes, line, lab);
    }

    /// A GitHub deploy workflow's OIDC claims.
    #[allow(clippy::too_many_arguments)]
    fn deploy(
        &mut self,
        t: i64,
        repo: &str,
        env: &str,
        git_ref: &str,
        protected: bool,
        event: &str,
        label: Option<(u16, usize, &'static str)>,
    ) {
        let mut rng = Rng::from(&[self.rng.next(), t as u64, 9]);
        let jti = rng.uuid();
        let sha = rng.hex(40);
        let mut line = String::new();
        github(
            &GithubClaims {
                jti: &jti,
                repo,
                workflow: "release.yml",
                name: "Release",
                env: Some(env),
                hosted: true,
                git_ref,
                protected,
                event,
                actor: "release-bot",
                run_id: rng.range(1, 1 << 32),
                sha: &sha,
                t: Timestamp::from_micros(t * 1_000_000),
            },
            &mut line,
        );
        let identity = format!("github:{repo}/.github/workflows/release.yml");
        let lab =
            label.and_then(|(a, k, v)| self.label(a, k, v, &jti, &identity, "github_actions"));
        self.push(t, Format::Github, line, lab);
    }

    /// A weekday office-hours instant of day `d` (UTC 08–16), or `None` on a weekend.
    fn office(&mut self, d: i64) -> Option<i64> {
        let t = self.t0 + d * 86_400;
        // 1970-01-01 was a Thursday: (days + 3) % 7 is the weekday, Monday = 0.
        let weekday = ((t / 86_400) + 3).rem_euclid(7);
        (weekday < 5).then(|| t + 8 * 3600 + self.rng.range(0, 8 * 3600) as i64)
    }
}

impl Simulation {
    /// Plans the hygiene world: `n` positives and `n` hard negatives of each finding.
    pub(super) fn plan_hygiene(&self) -> Hygiene {
        let days = i64::from(self.settings.days);
        let (ids, _) = self.identity_count();
        let n = (ids / 50).clamp(4, 24) as i64;
        let mut p = Plan {
            t0: self.t0,
            days,
            rng: Rng::from(&[self.settings.seed, 0x0048_7967_6965_6e65]),
            recs: Vec::new(),
            seq: 0,
            next_attack: 0,
            by_kind: [0; 5],
            identities: 0,
            identity_days: 0,
            _sim: self,
        };
        let mut skipped = 0;
        let runner = |rng: &mut Rng, k: i64| format!("10.77.{}.{}", k % 200, rng.range(2, 250));
        let office = |rng: &mut Rng| format!("172.20.{}.{}", rng.range(0, 40), rng.range(2, 250));
        let outside = |k: i64| format!("198.51.100.{}", 10 + k % 200);
        // A weekday (people and deploys work on weekdays) from `lo` on.
        let t0 = self.t0;
        let attack_day = |rng: &mut Rng, lo: i64| -> i64 {
            let hi = (days - 1).max(lo + 1);
            let mut d = rng.range(lo as u64, hi as u64) as i64;
            while ((t0 / 86_400 + d) + 3).rem_euclid(7) >= 5 {
                d = if d + 1 < days { d + 1 } else { d - 3 };
            }
            d
        };

        // The runners' network: AppRoles that log in hourly (their tokens live an hour,
        // or 768 hours for the standing ones: a hard negative of long_lived_credential).
        for k in 0..(2 * n + 2) {
            let ip = runner(&mut p.rng, k);
            let ttl = if k % 3 == 2 { 2_764_800 } else { 3600 };
            p.approle_hourly(&format!("hyg-app-{k}"), &ip, ttl, 0, days);
            p.identity(0, days);
        }
        // A bastion two automation identities share (below the three that make a network
        // automation's).
        for k in 0..2 {
            let ip = format!("100.64.1.{}", 10 + k);
            p.approle_hourly(&format!("hyg-bastion-{k}"), &ip, 3600, 0, days);
            p.identity(0, days);
        }

        // dormant_reactivated.
        for k in 0..n {
            if days < 8 + QUIET_DAYS + 3 {
                skipped += 2;
                continue;
            }
            let ip = runner(&mut p.rng, 120 + k);
            let quiet_from = 8 + k % 3;
            let back = quiet_from
                + QUIET_DAYS
                + p.rng
                    .range(0, (days - quiet_from - QUIET_DAYS - 2).max(0) as u64)
                    as i64;
            // Retired, and brought back by its owner from its own network.
            let role = format!("hyg-retired-{k}");
            p.approle_hourly(&role, &ip, 3600, 0, quiet_from);
            p.approle_hourly(&role, &ip, 3600, back, days);
            p.identity(0, days);
            // Gone quiet, and its role logs in from outside.
            let role = format!("hyg-legacy-{k}");
            let ip = runner(&mut p.rng, 140 + k);
            p.approle_hourly(&role, &ip, 3600, 0, quiet_from);
            let a = p.attack(0, "dormant_from_outside");
            let t = p.t0 + back * 86_400 + p.rng.range(3600, 80_000) as i64;
            p.vault_login_and_read(
                t,
                &Login::approle(&role, &outside(k), 3600),
                Some((a, 0, "dormant_from_outside")),
            );
            p.identity(0, quiet_from);
        }

        // long_lived_credential: a 768 h token for an AppRole of hour-long ones.
        for k in 0..n {
            let role = format!("hyg-short-{k}");
            let ip = runner(&mut p.rng, 60 + k);
            p.approle_hourly(&role, &ip, 3600, 0, days);
            p.identity(0, days);
            if k % 2 == 0 {
                let a = p.attack(1, "standing_vault_token");
                let d = attack_day(&mut p.rng, 4);
                let t = p.t0 + d * 86_400 + p.rng.range(0, 86_000) as i64;
                p.vault_login_and_read(
                    t,
                    &Login::approle(&role, &ip, 2_764_800),
                    Some((a, 1, "standing_vault_token")),
                );
            }
        }
        // IAM users: held to STS sessions from the office (one calls S3 with its long-term
        // key: a positive), and service users that always call with theirs and rotate it
        // (from the legacy data centre: a hard negative).
        for k in 0..n {
            let user = format!("hyg-mfa-{k}");
            let key = format!("AKIAHYGMFA{:010}", k);
            let attack_at = (k % 2 == 1).then(|| attack_day(&mut p.rng, 5));
            let a = attack_at.map(|_| p.attack(1, "long_term_key_direct"));
            for d in 0..days {
                let Some(t) = p.office(d) else { continue };
                let ip = office(&mut p.rng);
                let session = format!("ASIAHYG{:013}", p.rng.range(0, 1 << 40));
                p.iam_user_call(
                    t,
                    &user,
                    &key,
                    "sts.amazonaws.com",
                    "GetSessionToken",
                    Some(&session),
                    &ip,
                    None,
                );
                let arn = format!("arn:aws:iam::{PROD}:user/{user}");
                for u in 0..3 {
                    p.session_use(t + 60 + u * 600, &arn, &session, &ip);
                }
                if attack_at == Some(d) {
                    let a = a.unwrap_or(0);
                    p.iam_user_call(
                        t + 3000,
                        &user,
                        &key,
                        "s3.amazonaws.com",
                        "GetObject",
                        None,
                        &ip,
                        Some((a, 1, "long_term_key_direct")),
                    );
                }
            }
            p.identity(0, days);
            let user = format!("hyg-svc-{k}");
            let ip = format!("10.90.{}.{}", k, 20 + k);
            for d in 0..days {
                let key = format!("AKIAHYGSVC{:04}{:06}", k, d * 2 / days);
                for h in [2, 8, 14, 20] {
                    let t = p.t0 + d * 86_400 + h * 3600 + p.rng.range(0, 1200) as i64;
                    p.iam_user_call(
                        t,
                        &user,
                        &key,
                        "s3.amazonaws.com",
                        "GetObject",
                        None,
                        &ip,
                        None,
                    );
                }
            }
            p.identity(0, days);
        }

        // human_bound_credential: people log in to Vault (userpass, OIDC) and call AWS with
        // their keys from the office and the bastion; some of their credentials end up on a
        // runner.
        for k in 0..(2 * n) {
            let positive = k % 2 == 0;
            let attack_at = positive.then(|| attack_day(&mut p.rng, 3));
            let a = attack_at.map(|_| p.attack(2, "person_on_runner"));
            let kind = k % 3;
            let name = format!("eng{k}");
            let display = match kind {
                0 => format!("userpass-{name}"),
                1 => format!("oidc-{name}@acme.example"),
                _ => String::new(),
            };
            let oidc_role = format!("team-{k}");
            let user = format!("hyg-dev-{k}");
            let key = format!("AKIAHYGDEV{:010}", k);
            for d in 0..days {
                let Some(t) = p.office(d) else { continue };
                let on_runner = attack_at == Some(d);
                let ip = if on_runner {
                    runner(&mut p.rng, k)
                } else if d % 5 == 4 {
                    format!("100.64.1.{}", 10 + k % 2)
                } else {
                    office(&mut p.rng)
                };
                let label = if on_runner {
                    a.map(|a| (a, 2, "person_on_runner"))
                } else {
                    None
                };
                match kind {
                    0 | 1 => {
                        let (mount, role_key, role) = if kind == 0 {
                            ("userpass", "", "")
                        } else {
                            ("oidc", "role", oidc_role.as_str())
                        };
                        p.vault_login_and_read(
                            t,
                            &Login {
                                role,
                                mount,
                                display: &display,
                                role_key,
                                ttl: 28_800,
                                env: None,
                                ip: &ip,
                            },
                            label,
                        );
                    }
                    _ => {
                        p.iam_user_call(
                            t,
                            &user,
                            &key,
                            "s3.amazonaws.com",
                            "GetObject",
                            None,
                            &ip,
                            label,
                        );
                    }
                }
            }
            p.identity(0, days);
        }

        // new_trust: Terraform (the platform account's apply role), the Vault configuration
        // job and Argo CD announce new repositories, roles and bindings every few days; the
        // new repositories then assume their roles.
        let terraform = format!("arn:aws:iam::{PLATFORM}:role/hyg-terraform-apply");
        let tf_ip = "10.77.250.10";
        // Three shared roles (few repositories, so the world's own do not outweigh the
        // organisation's in the peer group of all repositories).
        let shared = 3;
        let mut repos: Vec<Vec<(String, i64)>> = Vec::new();
        for r in 0..shared {
            let role = format!("hyg-shared-deploy-{r}");
            let list: Vec<(String, i64)> = (0..2)
                .map(|j| (format!("acme-hyg/svc-{r}-{j}"), 0))
                .collect();
            // The first role trusts a wildcard: every repository named like its services.
            let subs: Vec<String> = if r == 0 {
                vec![format!("repo:acme-hyg/svc-{r}-*")]
            } else {
                list.iter().map(|(x, _)| format!("repo:{x}:*")).collect()
            };
            p.trust_policy(
                p.t0 + 3600 + r * 60,
                &terraform,
                &role,
                &subs,
                true,
                tf_ip,
                None,
            );
            repos.push(list);
        }
        let mut announce = 2;
        let mut j = 2;
        while announce < days - 1 {
            // The wildcard role needs no announcement: every repository named like its
            // services is admitted already.
            {
                let r = 1 + j % (shared - 1);
                let repo = format!("acme-hyg/svc-{r}-{j}");
                let role = format!("hyg-shared-deploy-{r}");
                repos[r as usize].push((repo, announce + 1));
                let subs: Vec<String> = repos[r as usize]
                    .iter()
                    .map(|(x, _)| format!("repo:{x}:*"))
                    .collect();
                let t = p.t0 + announce * 86_400 + 10 * 3600 + r * 120;
                p.trust_policy(t, &terraform, &role, &subs, false, tf_ip, None);
                p.vault_role_write(
                    t + 600,
                    ("approle", "hyg-vault-config"),
                    &format!("deploy-svc-{r}-{j}"),
                    &format!("acme-hyg/svc-{r}-{j}"),
                    "10.77.250.11",
                    None,
                );
                p.role_binding(
                    t + 900,
                    "system:serviceaccount:argocd:argocd-application-controller",
                    &format!("svc-{r}-{j}"),
                    "app",
                    "view",
                    "10.77.250.12",
                    None,
                );
            }
            j += 1;
            announce += 3;
        }
        // Every admitted repository deploys once a weekday from the day after it was admitted.
        for (r, list) in repos.iter().enumerate() {
            let role = format!("hyg-shared-deploy-{r}");
            for (repo, from) in list {
                let from = *from;
                for d in from..days {
                    if let Some(t) = p.office(d) {
                        p.web_identity_mint(t, repo, &role, None);
                    }
                }
                p.identity(from, days);
            }
        }
        p.identity(0, days);
        // The positives: changes by principals that never changed trust, and a repository
        // that assumes the wildcard role without being announced.
        for k in 0..n {
            // A wildcard's admission on day 0 counts as an announcement for two weeks.
            let d = attack_day(&mut p.rng, if k % 4 == 3 { 16 } else { 9 });
            let Some(t) = p.office(d).or_else(|| p.office(d - 2)).filter(|_| d < days) else {
                skipped += 1;
                continue;
            };
            match k % 4 {
                0 => {
                    let a = p.attack(3, "trust_policy_by_a_deploy_role");
                    let caller = format!("arn:aws:iam::{PROD}:role/hyg-app-{k}-deploy");
                    let subs = vec![format!("repo:outside-{k}/tools:*")];
                    p.trust_policy(
                        t,
                        &caller,
                        &format!("hyg-shared-deploy-{}", k % shared),
                        &subs,
                        false,
                        &outside(k),
                        Some((a, 3, "trust_policy_by_a_deploy_role")),
                    );
                }
                1 => {
                    let a = p.attack(3, "vault_role_by_a_pipeline");
                    let ip = runner(&mut p.rng, k);
                    p.vault_role_write(
                        t,
                        ("jwt", &format!("hyg-pipeline-{k}")),
                        &format!("deploy-prod-{k}"),
                        &format!("outside-{k}/tools"),
                        &ip,
                        Some((a, 3, "vault_role_by_a_pipeline")),
                    );
                }
                2 => {
                    let a = p.attack(3, "cluster_admin_binding");
                    let ip = runner(&mut p.rng, k);
                    p.role_binding(
                        t,
                        &format!("system:serviceaccount:svc-{k}:app"),
                        &format!("svc-{k}"),
                        "app",
                        "cluster-admin",
                        &ip,
                        Some((a, 3, "cluster_admin_binding")),
                    );
                }
                _ => {
                    let a = p.attack(3, "wildcard_trust_assumed");
                    p.web_identity_mint(
                        t,
                        &format!("acme-hyg/svc-0-x{k}"),
                        "hyg-shared-deploy-0",
                        Some((a, 3, "wildcard_trust_assumed")),
                    );
                    p.identity(d, d + 1);
                }
            }
        }

        // unapproved_ref: deploy workflows releasing to production from main or from release
        // tags (a new tag every week); one deploys from a feature branch or a pull request.
        for k in 0..(2 * n) {
            let repo = format!("acme-hyg/web-{k}");
            let tags = (k / 2) % 2 == 1;
            let attack_at = (k % 2 == 0).then(|| attack_day(&mut p.rng, 6));
            let a = attack_at.map(|_| p.attack(4, "production_from_unapproved_ref"));
            for d in 0..days {
                let Some(t) = p.office(d) else { continue };
                if attack_at == Some(d) {
                    let r = if k % 4 == 2 {
                        format!("refs/pull/{}/merge", 100 + k)
                    } else {
                        format!("refs/heads/feature/login-{k}")
                    };
                    p.deploy(
                        t,
                        &repo,
                        "production",
                        &r,
                        false,
                        "workflow_dispatch",
                        a.map(|a| (a, 4, "production_from_unapproved_ref")),
                    );
                    continue;
                }
                let r = if tags {
                    format!("refs/tags/v1.{}.{}", d / 7, d % 7)
                } else {
                    "refs/heads/main".to_string()
                };
                p.deploy(t, &repo, "production", &r, true, "push", None);
                // Staging deploys from feature branches are routine.
                if d % 3 == 0 {
                    p.deploy(
                        t + 1800,
                        &repo,
                        "staging",
                        &format!("refs/heads/feature/f{d}"),
                        false,
                        "push",
                        None,
                    );
                }
            }
            p.identity(0, days);
        }

        p.recs.sort_by_key(|r| (r.t, r.seq));
        Hygiene {
            recs: p.recs,
            by_kind: p.by_kind,
            skipped,
            identities: p.identities,
            identity_days: p.identity_days,
        }
    }
}
