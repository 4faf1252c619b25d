//! Simulated traffic in the real record formats, for tests and benchmarks: an organisation of
//! CI pipelines, Vault roles, AWS roles and Kubernetes service accounts that mint credentials
//! on their schedules and use them, written exactly as GitHub, GitLab, Vault, CloudTrail and
//! the Kubernetes API server write them.
//!
//! Deterministic: the same settings give byte-identical output. Credentials are coherent: a
//! use presents a credential its identity minted earlier, so fingerprints link mints and uses
//! as they would in production.

use std::fmt::Write as _;
use std::io::{self, Write};

use crate::decode::Format;
use crate::time::Timestamp;

/// What to simulate.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Random seed.
    pub seed: u64,
    /// Number of identities in the organisation.
    pub identities: u32,
    /// Time of the first record.
    pub start: Timestamp,
    /// Restrict to the identities that write this format.
    pub only: Option<Format>,
}

/// A simulated organisation and its clock.
#[derive(Clone, Debug)]
pub struct Simulation {
    settings: Settings,
    org: Vec<Identity>,
}

/// When an identity is active.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Schedule {
    /// Weekdays, 08:00–19:00 UTC (deploys on push).
    BusinessHours,
    /// Once a night around a fixed minute (cron).
    Nightly(u32),
    /// Any time (token refreshes, controllers).
    AroundTheClock,
}

#[derive(Clone, Debug)]
enum Kind {
    Github {
        repo: String,
        workflow: String,
        env: Option<&'static str>,
        hosted: bool,
    },
    Gitlab {
        project: String,
        env: &'static str,
        runner: u32,
        hosted: bool,
    },
    Vault {
        role: String,
        env: &'static str,
        app: String,
    },
    Aws {
        account: String,
        role: String,
        repo: String,
        env: &'static str,
    },
    K8s {
        ns: String,
        sa: String,
        node: u32,
    },
}

#[derive(Clone, Debug)]
struct Identity {
    kind: Kind,
    schedule: Schedule,
    /// Second octets of the networks this identity runs from.
    net: u8,
}

const ENVS: [&str; 3] = ["production", "staging", "development"];
const APPS: [&str; 12] = [
    "api",
    "web",
    "billing",
    "search",
    "auth",
    "payments",
    "ledger",
    "reports",
    "mailer",
    "gateway",
    "catalog",
    "inventory",
];
const ORGS: [&str; 3] = ["acme", "acme-platform", "acme-data"];

/// A small, fast, seedable generator (SplitMix64).
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 > 1.0 - p
    }
    fn uuid(&mut self) -> String {
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
    fn hex(&mut self, n: usize) -> String {
        let mut s = String::with_capacity(n);
        while s.len() < n {
            let _ = write!(s, "{:016x}", self.next());
        }
        s.truncate(n);
        s
    }
    fn upper(&mut self, n: usize) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        (0..n).map(|_| A[self.below(32) as usize] as char).collect()
    }
    fn b64(&mut self, n: usize) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        (0..n).map(|_| A[self.below(64) as usize] as char).collect()
    }
}

impl Simulation {
    /// Builds the organisation from the settings.
    pub fn new(settings: Settings) -> Self {
        let mut rng = Rng(settings.seed ^ 0x6E68_6977_6174_6368);
        let mut org = Vec::new();
        let mut i = 0u32;
        while org.len() < settings.identities.max(1) as usize {
            let app = APPS[(i as usize) % APPS.len()];
            let org_name = ORGS[(i as usize / APPS.len()) % ORGS.len()];
            let suffix = i / (APPS.len() * ORGS.len()) as u32;
            let name = if suffix == 0 {
                app.to_string()
            } else {
                format!("{app}-{suffix}")
            };
            let env = ENVS[rng.below(3) as usize];
            let schedule = match rng.below(10) {
                0..=4 => Schedule::BusinessHours,
                5..=7 => Schedule::Nightly(rng.below(60) as u32 + 60 * rng.below(4) as u32),
                _ => Schedule::AroundTheClock,
            };
            let kind = match i % 5 {
                0 => Kind::Github {
                    repo: format!("{org_name}/{name}"),
                    workflow: if schedule == Schedule::BusinessHours {
                        "deploy.yml"
                    } else {
                        "nightly.yml"
                    }
                    .into(),
                    env: if rng.chance(0.8) { Some(env) } else { None },
                    hosted: rng.chance(0.7),
                },
                1 => Kind::Gitlab {
                    project: format!("{org_name}/{name}"),
                    env,
                    runner: 100 + rng.below(40) as u32,
                    hosted: rng.chance(0.5),
                },
                2 => Kind::Vault {
                    role: format!("{name}-{}", short_env(env)),
                    env,
                    app: format!("{org_name}/{name}"),
                },
                3 => Kind::Aws {
                    account: format!("{:012}", 100_000_000_000u64 + rng.below(5) * 111_111_111),
                    role: format!("gha-{name}-deploy"),
                    repo: format!("{org_name}/{name}"),
                    env,
                },
                _ => Kind::K8s {
                    ns: format!("{name}-{}", short_env(env)),
                    sa: name.clone(),
                    node: rng.below(50) as u32,
                },
            };
            let keep = matches!(
                (settings.only, &kind),
                (None | Some(Format::Auto), _)
                    | (Some(Format::Github), Kind::Github { .. })
                    | (Some(Format::Gitlab), Kind::Gitlab { .. })
                    | (Some(Format::Vault), Kind::Vault { .. })
                    | (Some(Format::Cloudtrail), Kind::Aws { .. })
                    | (Some(Format::Kubernetes), Kind::K8s { .. })
            );
            if keep {
                org.push(Identity {
                    kind,
                    schedule,
                    net: 1 + rng.below(200) as u8,
                });
            }
            i += 1;
            if i > settings.identities.max(1) * 50 {
                break;
            }
        }
        Simulation { settings, org }
    }

    /// Writes `n` records as JSON lines; returns the number written.
    pub fn write(&self, n: u64, mut w: impl Write) -> io::Result<u64> {
        let mut line = String::with_capacity(4096);
        let mut generator = self.generator();
        for _ in 0..n {
            line.clear();
            generator.next_record(&mut line);
            line.push('\n');
            w.write_all(line.as_bytes())?;
        }
        w.flush()?;
        Ok(n)
    }

    /// `n` records as strings (for benches and tests).
    pub fn records(&self, n: usize) -> Vec<String> {
        let mut generator = self.generator();
        (0..n)
            .map(|_| {
                let mut s = String::with_capacity(1024);
                generator.next_record(&mut s);
                s
            })
            .collect()
    }

    fn generator(&self) -> Generator<'_> {
        Generator {
            sim: self,
            rng: Rng(self.settings.seed),
            now: self.settings.start.as_micros(),
            creds: vec![None; self.org.len()],
        }
    }
}

fn short_env(env: &str) -> &'static str {
    match env {
        "production" => "prod",
        "staging" => "stg",
        _ => "dev",
    }
}

struct Generator<'a> {
    sim: &'a Simulation,
    rng: Rng,
    now: i64,
    /// The last credential each identity minted (raw id), for its uses.
    creds: Vec<Option<String>>,
}

impl Generator<'_> {
    fn next_record(&mut self, out: &mut String) {
        // Advance the clock by 0–4 s and pick an identity active now.
        self.now += self.rng.below(4_000_000) as i64;
        let t = Timestamp::from_micros(self.now);
        let (_, _, _, hour, minute, _, _) = t.to_civil();
        let dow = (t.as_unix_seconds().div_euclid(86_400) + 3).rem_euclid(7); // 0 = Monday
        let minute_of_day = (hour * 60 + minute) as u32;
        let n = self.sim.org.len();
        let mut idx = self.rng.below(n as u64) as usize;
        for _ in 0..n {
            let active = match self.sim.org[idx].schedule {
                Schedule::BusinessHours => dow < 5 && (8..19).contains(&hour),
                Schedule::Nightly(m) => minute_of_day.abs_diff(m) <= 20,
                Schedule::AroundTheClock => true,
            };
            if active {
                break;
            }
            idx = (idx + 1) % n;
        }
        // If nobody is scheduled now, an around-the-clock identity is picked by the scan above
        // or, failing that, whoever it stopped at: the stream never stalls.
        let id = self.sim.org[idx].clone();
        let mint = self.creds[idx].is_none() || self.rng.chance(0.3);
        match &id.kind {
            Kind::Github { .. } => self.github(&id, t, out),
            Kind::Gitlab { .. } => self.gitlab(&id, t, out),
            Kind::Vault { .. } if mint => self.vault_login(idx, &id, t, out),
            Kind::Vault { .. } => self.vault_use(idx, &id, t, out),
            Kind::Aws { .. } if mint => self.aws_mint(idx, &id, t, out),
            Kind::Aws { .. } => self.aws_use(idx, &id, t, out),
            Kind::K8s { .. } if mint => self.k8s_mint(idx, &id, t, out),
            Kind::K8s { .. } => self.k8s_use(idx, &id, t, out),
        }
    }

    fn ip(&mut self, id: &Identity) -> String {
        format!(
            "10.{}.{}.{}",
            id.net,
            self.rng.below(4),
            2 + self.rng.below(250)
        )
    }

    fn github(&mut self, id: &Identity, t: Timestamp, out: &mut String) {
        let Kind::Github {
            repo,
            workflow,
            env,
            hosted,
        } = &id.kind
        else {
            return;
        };
        let r = &mut self.rng;
        let iat = t.as_unix_seconds();
        let owner = repo.split('/').next().unwrap_or(repo);
        let sha = r.hex(40);
        let sub = match env {
            Some(e) => format!("repo:{repo}:environment:{e}"),
            None => format!("repo:{repo}:ref:refs/heads/main"),
        };
        let event = if id.schedule == Schedule::BusinessHours {
            "push"
        } else {
            "schedule"
        };
        let wref = format!("{repo}/.github/workflows/{workflow}@refs/heads/main");
        let mut o = Obj::new(out);
        o.str("jti", &r.uuid());
        o.str("sub", &sub);
        if let Some(e) = env {
            o.str("environment", e);
        }
        o.str("aud", "sts.amazonaws.com");
        o.str("ref", "refs/heads/main");
        o.str("sha", &sha);
        o.str("repository", repo);
        o.str("repository_owner", owner);
        o.str("actor_id", &(1000 + r.below(90_000)).to_string());
        o.str("repository_visibility", "private");
        o.str(
            "repository_id",
            &(10_000_000 + r.below(90_000_000)).to_string(),
        );
        o.str("repository_owner_id", "7654321");
        o.str(
            "run_id",
            &(9_000_000_000 + r.below(999_999_999)).to_string(),
        );
        o.str("run_number", &(1 + r.below(5000)).to_string());
        o.str("run_attempt", "1");
        o.str(
            "runner_environment",
            if *hosted {
                "github-hosted"
            } else {
                "self-hosted"
            },
        );
        o.str(
            "actor",
            if event == "push" {
                "octocat"
            } else {
                "github-actions[bot]"
            },
        );
        o.str(
            "workflow",
            if event == "push" { "Deploy" } else { "Nightly" },
        );
        o.str("head_ref", "");
        o.str("base_ref", "");
        o.str("event_name", event);
        o.str("ref_type", "branch");
        o.str("ref_protected", "true");
        o.str("workflow_ref", &wref);
        o.str("workflow_sha", &sha);
        o.str("job_workflow_ref", &wref);
        o.str("job_workflow_sha", &sha);
        o.str("iss", "https://token.actions.githubusercontent.com");
        o.num("nbf", iat - 300);
        o.num("exp", iat + 300);
        o.num("iat", iat);
        o.end();
    }

    fn gitlab(&mut self, id: &Identity, t: Timestamp, out: &mut String) {
        let Kind::Gitlab {
            project,
            env,
            runner,
            hosted,
        } = &id.kind
        else {
            return;
        };
        let r = &mut self.rng;
        let iat = t.as_unix_seconds();
        let ns = project.split('/').next().unwrap_or(project);
        let sha = r.hex(40);
        let source = if id.schedule == Schedule::BusinessHours {
            "push"
        } else {
            "schedule"
        };
        let mut o = Obj::new(out);
        o.str("namespace_id", "4242");
        o.str("namespace_path", ns);
        o.str("project_id", &(1000 + r.below(9000)).to_string());
        o.str("project_path", project);
        o.str("user_id", "77");
        o.str("user_login", "release-bot");
        o.str("user_email", "release-bot@acme.example");
        o.str("user_access_level", "maintainer");
        o.str("pipeline_id", &(500_000 + r.below(500_000)).to_string());
        o.str("pipeline_source", source);
        o.str("job_id", &(9_000_000 + r.below(1_000_000)).to_string());
        o.str("ref", "main");
        o.str("ref_type", "branch");
        o.str("ref_path", "refs/heads/main");
        o.str("ref_protected", "true");
        o.str("environment", env);
        o.str("environment_protected", "true");
        o.str("deployment_tier", env);
        o.str("environment_action", "start");
        o.num("runner_id", i64::from(*runner));
        o.str(
            "runner_environment",
            if *hosted {
                "gitlab-hosted"
            } else {
                "self-hosted"
            },
        );
        o.str("sha", &sha);
        o.str("project_visibility", "private");
        o.str(
            "ci_config_ref_uri",
            &format!("gitlab.acme.example/{project}//.gitlab-ci.yml@refs/heads/main"),
        );
        o.str("ci_config_sha", &sha);
        o.str("jti", &r.uuid());
        o.str("iss", "https://gitlab.acme.example");
        o.num("iat", iat);
        o.num("nbf", iat - 5);
        o.num("exp", iat + 3600);
        o.str(
            "sub",
            &format!("project_path:{project}:ref_type:branch:ref:main"),
        );
        o.str("aud", "https://vault.acme.example");
        o.end();
    }

    fn vault_auth(
        &mut self,
        o: &mut Obj<'_>,
        key: &str,
        id: &Identity,
        accessor: &str,
        t: Timestamp,
    ) {
        let Kind::Vault { role, app, env } = &id.kind else {
            return;
        };
        let token = format!("hmac-sha256:{}", self.rng.hex(64));
        o.obj(key, |a| {
            a.str("client_token", &token);
            a.str("accessor", accessor);
            a.str("display_name", &format!("jwt-{app}"));
            a.strs("policies", &["default", role]);
            a.strs("token_policies", &["default", role]);
            a.obj("metadata", |m| {
                m.str("role", role);
                m.str("project_path", app);
                m.str("environment", env);
            });
            a.str("entity_id", "5f0f8d0c-6c4a-4b7e-9a8b-1c2d3e4f5a6b");
            a.str("token_type", "service");
            a.num("token_ttl", 3600);
            a.str(
                "token_issue_time",
                &Timestamp::from_micros(t.as_micros() - t.as_micros() % 1_000_000).to_rfc3339(),
            );
        });
    }

    fn vault_login(&mut self, idx: usize, id: &Identity, t: Timestamp, out: &mut String) {
        let accessor = format!("hmac-sha256:{}", self.rng.hex(64));
        self.creds[idx] = Some(accessor.clone());
        let req_id = self.rng.uuid();
        let ip = self.ip(id);
        let jwt = format!("hmac-sha256:{}", self.rng.hex(64));
        let mut o = Obj::new(out);
        o.str("time", &t.to_rfc3339());
        o.str("type", "response");
        o.obj("auth", |a| a.str("token_type", "default"));
        o.obj("request", |q| {
            q.str("id", &req_id);
            q.str("operation", "update");
            q.str("mount_point", "auth/jwt/");
            q.str("mount_type", "jwt");
            q.str("mount_accessor", "auth_jwt_4f1a9e2c");
            q.str("mount_running_version", "v0.21.1+builtin");
            q.str("mount_class", "auth");
            q.obj("namespace", |n| n.str("id", "root"));
            q.str("path", "auth/jwt/login");
            q.obj("data", |d| {
                d.str("jwt", &jwt);
                d.str("role", "hmac-sha256:9a4c3b1f0e2d");
            });
            q.str("remote_address", &ip);
            q.num("remote_port", 40_000 + (t.as_micros() % 20_000));
        });
        let mut resp_auth = String::new();
        {
            let mut ra = Obj::new(&mut resp_auth);
            self.vault_auth(&mut ra, "auth", id, &accessor, t);
            ra.str("mount_type", "jwt");
            ra.str("mount_accessor", "auth_jwt_4f1a9e2c");
            ra.end();
        }
        o.raw("response", &resp_auth);
        o.end();
    }

    fn vault_use(&mut self, idx: usize, id: &Identity, t: Timestamp, out: &mut String) {
        let Kind::Vault { env, app, .. } = &id.kind else {
            return;
        };
        let accessor = self.creds[idx].clone().unwrap_or_default();
        let req_id = self.rng.uuid();
        let ip = self.ip(id);
        let leaf = *self.rng.pick(&["db", "api-key", "tls", "smtp"]);
        let path = format!("secret/data/{env}/{app}/{leaf}");
        let token = format!("hmac-sha256:{}", self.rng.hex(64));
        let mut o = Obj::new(out);
        o.str("time", &t.to_rfc3339());
        o.str("type", "request");
        self.vault_auth(&mut o, "auth", id, &accessor, t);
        o.obj("request", |q| {
            q.str("id", &req_id);
            q.str("client_id", "5f0f8d0c-6c4a-4b7e-9a8b-1c2d3e4f5a6b");
            q.str("operation", "read");
            q.str("mount_point", "secret/");
            q.str("mount_type", "kv");
            q.str("mount_accessor", "kv_8c2e61a0");
            q.str("mount_running_version", "v0.20.0+builtin");
            q.str("mount_class", "secret");
            q.str("client_token", &token);
            q.str("client_token_accessor", &accessor);
            q.obj("namespace", |n| n.str("id", "root"));
            q.str("path", &path);
            q.str("remote_address", &ip);
            q.num("remote_port", 40_000 + (t.as_micros() % 20_000));
        });
        o.end();
    }

    fn aws_common(o: &mut Obj<'_>, t: Timestamp) {
        o.str("eventVersion", "1.08");
        let _ = t;
    }

    fn aws_mint(&mut self, idx: usize, id: &Identity, t: Timestamp, out: &mut String) {
        let Kind::Aws {
            account,
            role,
            repo,
            env,
        } = &id.kind
        else {
            return;
        };
        let key = format!("ASIA{}", self.rng.upper(16));
        self.creds[idx] = Some(key.clone());
        let provider =
            format!("arn:aws:iam::{account}:oidc-provider/token.actions.githubusercontent.com");
        let sub = format!("repo:{repo}:environment:{env}");
        let role_arn = format!("arn:aws:iam::{account}:role/{role}");
        let role_id = format!("AROA{}", self.rng.upper(17));
        let exp = t.plus_seconds(3600).to_civil();
        let months = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let (h12, ampm) = match exp.3 {
            0 => (12, "AM"),
            h if h < 12 => (h, "AM"),
            12 => (12, "PM"),
            h => (h - 12, "PM"),
        };
        let expiration = format!(
            "{} {}, {}, {}:{:02}:{:02} {ampm}",
            months[(exp.1 - 1) as usize],
            exp.2,
            exp.0,
            h12,
            exp.4,
            exp.5
        );
        let token = format!("IQoJb3JpZ2luX2VjE{}", self.rng.b64(300));
        let ip = format!(
            "4.{}.{}.{}",
            148 + id.net % 8,
            self.rng.below(256),
            self.rng.below(256)
        );
        let event_id = self.rng.uuid();
        let request_id = self.rng.uuid();
        let mut o = Obj::new(out);
        Self::aws_common(&mut o, t);
        o.obj("userIdentity", |u| {
            u.str("type", "WebIdentityUser");
            u.str(
                "principalId",
                &format!("{provider}:sts.amazonaws.com:{sub}"),
            );
            u.str("userName", &sub);
            u.str("identityProvider", &provider);
        });
        o.str("eventTime", &t.to_rfc3339());
        o.str("eventSource", "sts.amazonaws.com");
        o.str("eventName", "AssumeRoleWithWebIdentity");
        o.str("awsRegion", "us-east-1");
        o.str("sourceIPAddress", &ip);
        o.str(
            "userAgent",
            "aws-sdk-js/3.600.0 ua/2.0 os/linux#6.5.0 lang/js md/nodejs#20.15.0 api/sts#3.600.0",
        );
        o.obj("requestParameters", |p| {
            p.str("roleArn", &role_arn);
            p.str("roleSessionName", "GitHubActions");
            p.num("durationSeconds", 3600);
        });
        o.obj("responseElements", |p| {
            p.obj("credentials", |c| {
                c.str("accessKeyId", &key);
                c.str("sessionToken", &token);
                c.str("expiration", &expiration);
            });
            p.str("subjectFromWebIdentityToken", &sub);
            p.obj("assumedRoleUser", |a| {
                a.str("assumedRoleId", &format!("{role_id}:GitHubActions"));
                a.str(
                    "arn",
                    &format!("arn:aws:sts::{account}:assumed-role/{role}/GitHubActions"),
                );
            });
            p.str("provider", &provider);
            p.str("audience", "sts.amazonaws.com");
        });
        o.str("requestID", &request_id);
        o.str("eventID", &event_id);
        o.bool("readOnly", true);
        o.str("eventType", "AwsApiCall");
        o.bool("managementEvent", true);
        o.str("recipientAccountId", account);
        o.str("eventCategory", "Management");
        o.end();
    }

    fn aws_use(&mut self, idx: usize, id: &Identity, t: Timestamp, out: &mut String) {
        let Kind::Aws {
            account,
            role,
            repo,
            ..
        } = &id.kind
        else {
            return;
        };
        let key = self.creds[idx].clone().unwrap_or_default();
        let (source, name, read_only) = *self.rng.pick(&[
            ("s3.amazonaws.com", "PutObject", false),
            ("s3.amazonaws.com", "GetObject", true),
            ("ecr.amazonaws.com", "PutImage", false),
            ("ecs.amazonaws.com", "UpdateService", false),
            (
                "lambda.amazonaws.com",
                "UpdateFunctionCode20150331v2",
                false,
            ),
        ]);
        let ip = format!(
            "4.{}.{}.{}",
            148 + id.net % 8,
            self.rng.below(256),
            self.rng.below(256)
        );
        let event_id = self.rng.uuid();
        let request_id = self.rng.uuid();
        let role_id = format!("AROA{}", self.rng.upper(17));
        let build = self.rng.below(100_000);
        let mut o = Obj::new(out);
        Self::aws_common(&mut o, t);
        o.obj("userIdentity", |u| {
            u.str("type", "AssumedRole");
            u.str("principalId", &format!("{role_id}:GitHubActions"));
            u.str(
                "arn",
                &format!("arn:aws:sts::{account}:assumed-role/{role}/GitHubActions"),
            );
            u.str("accountId", account);
            u.str("accessKeyId", &key);
            u.obj("sessionContext", |s| {
                s.obj("sessionIssuer", |i| {
                    i.str("type", "Role");
                    i.str("principalId", &role_id);
                    i.str("arn", &format!("arn:aws:iam::{account}:role/{role}"));
                    i.str("accountId", account);
                    i.str("userName", role);
                });
                s.obj("attributes", |a| {
                    a.str("creationDate", &t.to_rfc3339());
                    a.str("mfaAuthenticated", "false");
                });
            });
        });
        o.str("eventTime", &t.to_rfc3339());
        o.str("eventSource", source);
        o.str("eventName", name);
        o.str("awsRegion", "us-east-1");
        o.str("sourceIPAddress", &ip);
        o.str("userAgent", "aws-cli/2.17.0 md/awscrt#0.20.11 ua/2.0 os/linux#6.5.0 md/arch#x86_64 lang/python#3.11.8");
        o.obj("requestParameters", |p| {
            p.str("bucketName", "acme-artifacts");
            p.str("key", &format!("{repo}/build-{build}.tar.gz"));
        });
        o.raw("responseElements", "null");
        o.str("requestID", &request_id);
        o.str("eventID", &event_id);
        o.bool("readOnly", read_only);
        o.str("eventType", "AwsApiCall");
        o.bool("managementEvent", false);
        o.str("recipientAccountId", account);
        o.str("eventCategory", "Data");
        o.end();
    }

    fn k8s_mint(&mut self, idx: usize, id: &Identity, t: Timestamp, out: &mut String) {
        let Kind::K8s { ns, sa, node } = &id.kind else {
            return;
        };
        let jti = format!("JTI={}", self.rng.uuid());
        self.creds[idx] = Some(jti.clone());
        let audit_id = self.rng.uuid();
        let pod = format!("{sa}-{}-{}", self.rng.hex(10), self.rng.hex(5));
        let pod_uid = self.rng.uuid();
        let node_ip = format!("10.0.{}.{}", node / 250, 10 + node % 240);
        let ts = t.to_rfc3339();
        let mut o = Obj::new(out);
        o.str("kind", "Event");
        o.str("apiVersion", "audit.k8s.io/v1");
        o.str("level", "Request");
        o.str("auditID", &audit_id);
        o.str("stage", "ResponseComplete");
        o.str(
            "requestURI",
            &format!("/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token"),
        );
        o.str("verb", "create");
        o.obj("user", |u| {
            u.str(
                "username",
                &format!(
                    "system:node:ip-10-0-{}-{}.ec2.internal",
                    node / 250,
                    10 + node % 240
                ),
            );
            u.strs("groups", &["system:nodes", "system:authenticated"]);
        });
        o.strs("sourceIPs", &[&node_ip]);
        o.str(
            "userAgent",
            "kubelet/v1.30.2 (linux/amd64) kubernetes/3968350",
        );
        o.obj("objectRef", |r| {
            r.str("resource", "serviceaccounts");
            r.str("namespace", ns);
            r.str("name", sa);
            r.str("apiVersion", "v1");
            r.str("subresource", "token");
        });
        o.obj("responseStatus", |s| {
            s.raw("metadata", "{}");
            s.num("code", 201);
        });
        o.obj("requestObject", |r| {
            r.str("kind", "TokenRequest");
            r.str("apiVersion", "authentication.k8s.io/v1");
            r.raw("metadata", r#"{"creationTimestamp":null}"#);
            r.obj("spec", |s| {
                s.strs(
                    "audiences",
                    &["https://kubernetes.default.svc.cluster.local"],
                );
                s.num("expirationSeconds", 3607);
                s.obj("boundObjectRef", |b| {
                    b.str("kind", "Pod");
                    b.str("apiVersion", "v1");
                    b.str("name", &pod);
                    b.str("uid", &pod_uid);
                });
            });
            r.raw("status", r#"{"token":"","expirationTimestamp":null}"#);
        });
        o.str("requestReceivedTimestamp", &ts);
        o.str("stageTimestamp", &ts);
        o.obj("annotations", |a| {
            a.str("authorization.k8s.io/decision", "allow");
            a.str("authorization.k8s.io/reason", "");
            a.str("authentication.kubernetes.io/issued-credential-id", &jti);
        });
        o.end();
    }

    fn k8s_use(&mut self, idx: usize, id: &Identity, t: Timestamp, out: &mut String) {
        let Kind::K8s { ns, sa, node } = &id.kind else {
            return;
        };
        let jti = self.creds[idx].clone().unwrap_or_default();
        let audit_id = self.rng.uuid();
        let (verb, resource, name) = *self.rng.pick(&[
            ("get", "configmaps", "app-config"),
            ("list", "pods", ""),
            ("get", "secrets", "app-tls"),
            ("watch", "endpoints", ""),
        ]);
        let uri = if name.is_empty() {
            format!("/api/v1/namespaces/{ns}/{resource}?limit=500")
        } else {
            format!("/api/v1/namespaces/{ns}/{resource}/{name}")
        };
        let pod = format!("{sa}-{}-{}", self.rng.hex(10), self.rng.hex(5));
        let ip = format!("10.42.{}.{}", node, 2 + self.rng.below(250));
        let ts = t.to_rfc3339();
        let uid = self.rng.uuid();
        let node_name = format!("ip-10-0-{}-{}.ec2.internal", node / 250, 10 + node % 240);
        let mut o = Obj::new(out);
        o.str("kind", "Event");
        o.str("apiVersion", "audit.k8s.io/v1");
        o.str("level", "Metadata");
        o.str("auditID", &audit_id);
        o.str("stage", "ResponseComplete");
        o.str("requestURI", &uri);
        o.str("verb", verb);
        o.obj("user", |u| {
            u.str("username", &format!("system:serviceaccount:{ns}:{sa}"));
            u.str("uid", &uid);
            u.strs(
                "groups",
                &[
                    "system:serviceaccounts",
                    &format!("system:serviceaccounts:{ns}"),
                    "system:authenticated",
                ],
            );
            u.obj("extra", |x| {
                x.strs("authentication.kubernetes.io/credential-id", &[&jti]);
                x.strs("authentication.kubernetes.io/node-name", &[&node_name]);
                x.strs("authentication.kubernetes.io/pod-name", &[&pod]);
            });
        });
        o.strs("sourceIPs", &[&ip]);
        o.str("userAgent", "app/v1.4.2 (linux/amd64) kubernetes/client-go");
        o.obj("objectRef", |r| {
            r.str("resource", resource);
            r.str("namespace", ns);
            if !name.is_empty() {
                r.str("name", name);
            }
            r.str("apiVersion", "v1");
        });
        o.obj("responseStatus", |s| {
            s.raw("metadata", "{}");
            s.num("code", 200);
        });
        o.str("requestReceivedTimestamp", &ts);
        o.str("stageTimestamp", &ts);
        o.obj("annotations", |a| {
            a.str("authorization.k8s.io/decision", "allow");
            a.str("authorization.k8s.io/reason", &format!("RBAC: allowed by RoleBinding \"{sa}\" of Role \"{sa}\" to ServiceAccount \"{sa}/{ns}\""));
        });
        o.end();
    }
}

/// A tiny JSON object writer that keeps key order (real producers' order matters to sniffing).
struct Obj<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Obj<'a> {
    fn new(out: &'a mut String) -> Self {
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
    fn str(&mut self, k: &str, v: &str) {
        self.key(k);
        push_str(self.out, v);
    }
    fn num(&mut self, k: &str, v: i64) {
        self.key(k);
        let _ = write!(self.out, "{v}");
    }
    fn bool(&mut self, k: &str, v: bool) {
        self.key(k);
        self.out.push_str(if v { "true" } else { "false" });
    }
    fn raw(&mut self, k: &str, json: &str) {
        self.key(k);
        self.out.push_str(json);
    }
    fn strs(&mut self, k: &str, items: &[&str]) {
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
    fn obj(&mut self, k: &str, f: impl FnOnce(&mut Obj<'_>)) {
        self.key(k);
        let mut inner = Obj::new(self.out);
        f(&mut inner);
        inner.end();
    }
    fn end(self) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sim(only: Option<Format>) -> Simulation {
        Simulation::new(Settings {
            seed: 7,
            identities: 50,
            start: Timestamp::parse("2026-01-05T00:00:00Z").unwrap(),
            only,
        })
    }

    #[test]
    fn records_are_valid_json_and_deterministic() {
        let a = sim(None).records(500);
        let b = sim(None).records(500);
        assert_eq!(a, b);
        for r in &a {
            serde_json::from_str::<serde_json::Value>(r).unwrap_or_else(|e| panic!("{e}: {r}"));
        }
        let mean = a.iter().map(String::len).sum::<usize>() / a.len();
        assert!((600..=1400).contains(&mean), "mean record size {mean}");
    }

    #[test]
    fn a_format_filter_keeps_only_that_format() {
        for r in sim(Some(Format::Kubernetes)).records(50) {
            assert!(r.starts_with(r#"{"kind":"Event""#), "{r}");
        }
    }
}
