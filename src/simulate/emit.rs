//! From planned records to the records themselves: the `Renderer` keeps per-service state
//! (addresses, runner ids, tokens) and writes each `Op` in its format with `render.rs`, with
//! the answer-key line for records an attack wrote.

use super::*;

/// A rendered record and, for attack records, its answer-key line.
pub(super) struct Rendered<'a> {
    pub(super) line: &'a str,
    pub(super) label: Option<LabelLine<'a>>,
}

/// Renders planned records.
pub(super) struct Renderer<'a> {
    pub(super) sim: &'a Simulation,
    pub(super) attacks: &'a [Attack],
    pub(super) line: String,
    pub(super) id: String,
    pub(super) identity: String,
}

impl<'a> Renderer<'a> {
    pub(super) fn new(sim: &'a Simulation, attacks: &'a [Attack]) -> Self {
        Renderer {
            sim,
            attacks,
            line: String::with_capacity(4096),
            id: String::with_capacity(64),
            identity: String::with_capacity(128),
        }
    }

    pub(super) fn render(&mut self, op: &Op) -> Rendered<'_> {
        let sim = self.sim;
        let s = &sim.services[op.svc as usize];
        let change = (op.attack & CHANGE != 0)
            .then(|| s.change.map(|(c, _)| c))
            .flatten();
        let attack = (op.attack > 0 && op.attack & CHANGE == 0)
            .then(|| &self.attacks[op.attack as usize - 1]);
        let variant = attack.map(|a| a.variant);
        let seed = sim.settings.seed;
        // The time too: a credential's uses share its run and number, not their ids.
        let mut rng = Rng::from(&[
            seed,
            5,
            u64::from(op.svc),
            op.run,
            u64::from(op.n),
            op.what as u64,
            op.t as u64,
        ]);
        self.line.clear();
        self.identity.clear();
        let t = Timestamp::from_micros(op.t * 1_000_000);
        let env = match op.env {
            _ if variant == Some(Variant::FirstProductionMint) => Env::Production,
            RunEnv::Production => Env::Production,
            _ => s.env,
        };
        // The environment the run names: none for CI jobs and environment-less schedules.
        let named = match op.env {
            RunEnv::None => None,
            RunEnv::Testing => Some("testing"),
            _ if s.kind == Kind::Ci && env != Env::Production => None,
            _ => Some(env.name()),
        };
        match op.what {
            What::GhClaims | What::Sts | What::AwsUse => {
                let job = if op.what == What::AwsUse {
                    op.n / 16
                } else {
                    op.n
                };
                let mut run_rng = Rng::from(&[seed, 6, u64::from(op.svc), op.run]);
                let run_id = 9_000_000_000 + run_rng.below(900_000_000);
                let mut sha = run_rng.hex(40);
                if op.sha_of != 0 {
                    // A promotion deploys the commit a staging run deployed.
                    let mut staged = Rng::from(&[seed, 6, u64::from(op.svc), op.sha_of]);
                    staged.below(900_000_000);
                    sha = staged.hex(40);
                }
                let mut job_rng = Rng::from(&[seed, 7, u64::from(op.svc), op.run, u64::from(job)]);
                let jti = job_rng.uuid();
                let key = format!("ASIA{}", job_rng.upper(16));
                let hosted = s.hosted
                    && variant != Some(Variant::SelfHostedRunner)
                    && !s.changed(Change::MovedToSelfHosted, op.base);
                let ip = match (variant, op.what) {
                    (Some(Variant::SelfHostedRunner), _) => {
                        attack.map(|a| a.ip.clone()).unwrap_or_default()
                    }
                    (Some(Variant::AwsKeyExfiltrated), What::AwsUse) => {
                        attack.map(|a| a.ip.clone()).unwrap_or_default()
                    }
                    _ => self.github_ip(op.svc, s, hosted, op.base, &mut job_rng),
                };
                let repo = s.repo.as_str();
                let workflow = s.workflow.as_str();
                // A CI job that deploys to production assumes the production deploy role.
                let role_name = match s.kind {
                    Kind::Nightly => format!("gha-{}-nightly", s.app),
                    Kind::Ci if env != Env::Production => format!("gha-{}-ci", s.app),
                    _ => format!("gha-{}-deploy", s.app),
                };
                let account = env.account();
                let own_role = format!("arn:aws:iam::{account}:role/{role_name}");
                let role = if variant == Some(Variant::AdminRoleAssumed) {
                    format!("arn:aws:iam::{account}:role/OrganizationAccountAccessRole")
                } else {
                    own_role
                };
                let session = format!("GitHubActions-{run_id}-{job}");
                match op.what {
                    What::GhClaims => {
                        // Half of a CI workflow's runs build pull requests.
                        let pull = s.kind == Kind::Ci && named.is_none() && run_rng.chance(0.5);
                        let (git_ref, protected) =
                            if variant == Some(Variant::UnprotectedProductionMint) {
                                (format!("refs/heads/fix-{}", &sha[..7]), false)
                            } else if pull {
                                (format!("refs/pull/{}/merge", run_id % 4000 + 1), false)
                            } else {
                                ("refs/heads/main".to_string(), true)
                            };
                        let event = match (s.kind, variant) {
                            (Kind::Nightly, Some(Variant::NightlyInDaytime)) => "workflow_dispatch",
                            (Kind::Nightly, _) => "schedule",
                            _ if pull => "pull_request",
                            _ => "push",
                        };
                        self.id.clear();
                        self.id.push_str(&jti);
                        github(
                            &GithubClaims {
                                jti: &jti,
                                repo,
                                workflow,
                                name: &workflow_name(workflow),
                                env: if s.kind == Kind::Nightly { None } else { named },
                                hosted,
                                git_ref: &git_ref,
                                protected,
                                event,
                                actor: if event == "push" {
                                    "dev-alice"
                                } else {
                                    "acme-bot"
                                },
                                run_id,
                                sha: &sha,
                                // A replayed token is the same token: same claims, same iat.
                                t: Timestamp::from_micros(op.base * 1_000_000),
                            },
                            &mut self.line,
                        );
                        self.identity
                            .push_str(&format!("github:{repo}/.github/workflows/{workflow}"));
                    }
                    What::Sts => {
                        let event_id = job_rng.uuid();
                        sts_mint(
                            &StsMint {
                                event_id: &event_id,
                                repo,
                                env: if s.kind == Kind::Nightly {
                                    Some(env.name())
                                } else {
                                    named
                                },
                                account,
                                role_arn: &role,
                                session: &session,
                                key: &key,
                                duration: 3600,
                                ip: &ip,
                                t,
                            },
                            &mut rng,
                            &mut self.line,
                        );
                        self.id.clear();
                        self.id.push_str(&event_id);
                        self.identity.push_str(&format!("github:{repo}"));
                    }
                    _ => {
                        let event_id = rng.uuid();
                        let shared = op.n % 16 == 15;
                        let exfil = variant == Some(Variant::AwsKeyExfiltrated);
                        let (recipient, bucket, name, object) = if shared {
                            (
                                AWS_ACCOUNTS[3].0,
                                "acme-shared-artifacts".to_string(),
                                "GetObject",
                                "toolchain/base-image.tar",
                            )
                        } else if exfil {
                            (
                                account,
                                format!("acme-{}-{}-data", s.app, env.short()),
                                "GetObject",
                                "exports/customers.csv",
                            )
                        } else if rng.chance(0.5) {
                            (
                                account,
                                format!("acme-{}-{}-artifacts", s.app, env.short()),
                                "PutObject",
                                "builds/app.tar.gz",
                            )
                        } else {
                            (
                                account,
                                format!("acme-{}-{}-artifacts", s.app, env.short()),
                                "GetObject",
                                "config/release.json",
                            )
                        };
                        aws_use(
                            &AwsUse {
                                event_id: &event_id,
                                account,
                                recipient,
                                role_arn: &role,
                                session: &session,
                                key: &key,
                                service: "s3.amazonaws.com",
                                name,
                                bucket: &bucket,
                                object,
                                ip: &ip,
                                t,
                            },
                            &mut rng,
                            &mut self.line,
                        );
                        self.id.clear();
                        self.id.push_str(&event_id);
                        self.identity.push_str(&format!("aws:{role}"));
                    }
                }
            }
            What::GlClaims | What::LoginReq | What::LoginResp | What::ReadReq | What::ReadResp => {
                let gitlab = s.kind == Kind::Gitlab;
                let mut run_rng = Rng::from(&[seed, 8, u64::from(op.svc), op.run]);
                let jti = run_rng.uuid();
                let login_id = run_rng.uuid();
                let accessor = format!("hmac-sha256:{}", run_rng.hex(64));
                let client_token = format!("hmac-sha256:{}", run_rng.hex(64));
                let pipeline = 1_200_000_000 + run_rng.below(100_000_000);
                let mut sha = run_rng.hex(40);
                if op.sha_of != 0 {
                    let mut staged = Rng::from(&[seed, 8, u64::from(op.svc), op.sha_of]);
                    staged.uuid();
                    staged.uuid();
                    staged.hex(64);
                    staged.hex(64);
                    staged.below(100_000_000);
                    sha = staged.hex(40);
                }
                let ip = match variant {
                    Some(Variant::UnknownGitlabRunner | Variant::AppRoleNewNetwork) => {
                        attack.map(|a| a.ip.clone()).unwrap_or_default()
                    }
                    _ if gitlab => self.gitlab_ip(s, &mut run_rng),
                    _ if s.changed(Change::NewSubnet, op.base) => {
                        format!(
                            "10.{}.{}.{}",
                            51 + s.host % 40,
                            s.host >> 8,
                            (s.host & 0xff).max(2)
                        )
                    }
                    _ => format!("10.50.{}.{}", s.host >> 8, (s.host & 0xff).max(2)),
                };
                let project = s.repo.as_str();
                // What the token is for: a pipeline's run names its environment (or none, for
                // a test schedule); an AppRole's name may name none.
                let (role, short) = match (gitlab, named) {
                    (true, Some(e)) if e == env.name() => {
                        (format!("{}-{e}", s.app), env.short().to_string())
                    }
                    (true, Some(e)) => (format!("{}-{e}", s.app), "test".to_string()),
                    (true, None) => (format!("{}-ci", s.app), "ci".to_string()),
                    (false, _) => (s.role(), env.short().to_string()),
                };
                let token_env = if gitlab {
                    named
                } else {
                    s.env_named.then_some(env.name())
                };
                let read = if gitlab || s.env_named {
                    format!("{}-{short}-read", s.app)
                } else {
                    format!("{}-read", s.app)
                };
                let mut policies: Vec<String> = vec!["default".into(), read];
                if !gitlab && op.base >= sim.rollout_at(op.svc, 0) {
                    policies.push("secret-rotation-write".into());
                }
                // The write policy is added to the pipeline's own role, not to its schedule's.
                if s.changed(Change::PolicyAdded, op.base) && (!gitlab || short == env.short()) {
                    policies.push(format!("{}-{}-rw", s.app, env.short()));
                }
                match variant {
                    Some(Variant::WritePolicyAdded) => {
                        policies.push(format!("{}-{}-rw", s.app, env.short()))
                    }
                    Some(Variant::AppRoleAdminPolicy) => policies.push("ops-admin".into()),
                    _ => {}
                }
                let policy_refs: Vec<&str> = policies.iter().map(String::as_str).collect();
                let display = if gitlab {
                    format!("jwt-{project}")
                } else {
                    "approle".to_string()
                };
                let entity = Rng::from(&[seed, 9, u64::from(op.svc)]).uuid();
                let tok = VaultToken {
                    accessor: &accessor,
                    client_token: &client_token,
                    display: &display,
                    policies: &policy_refs,
                    role_key: if gitlab { "role" } else { "role_name" },
                    role: &role,
                    env: token_env,
                    project: gitlab.then_some(project),
                    entity: &entity,
                    ttl: s.ttl,
                };
                let mount = if gitlab { "jwt" } else { "approle" };
                self.identity.push_str(&format!("vault:{mount}/{role}"));
                self.id.clear();
                match op.what {
                    What::GlClaims => {
                        let runner_id = match variant {
                            Some(Variant::UnknownGitlabRunner | Variant::RogueGitlabRunner) => {
                                attack.map_or(0, |a| a.runner_id)
                            }
                            _ if s.hosted => *run_rng.pick(&GITLAB_SAAS_RUNNERS),
                            _ if !s.runners.is_empty() => {
                                let ids = sim.gitlab_runners(op.svc, s, op.base);
                                *run_rng.pick(&ids)
                            }
                            _ if op.base >= sim.rollout_at(op.svc, 1) => {
                                200 + run_rng.below(2) as u32
                            }
                            _ => 100 + run_rng.below(3) as u32,
                        };
                        gitlab_claims(
                            &GitlabClaims {
                                jti: &jti,
                                project,
                                env: named,
                                runner_id,
                                hosted: s.hosted
                                    && !matches!(
                                        variant,
                                        Some(
                                            Variant::UnknownGitlabRunner
                                                | Variant::RogueGitlabRunner
                                        )
                                    ),
                                source: if op.run >> 63 == 1 {
                                    "schedule"
                                } else {
                                    "push"
                                },
                                pipeline,
                                sha: &sha,
                                t,
                            },
                            &mut self.line,
                        );
                        self.id.push_str(&jti);
                        self.identity.clear();
                        self.identity
                            .push_str(&format!("gitlab:{project}/.gitlab-ci.yml"));
                    }
                    What::LoginReq | What::LoginResp => {
                        vault_login(
                            t,
                            &login_id,
                            mount,
                            &ip,
                            &tok,
                            op.what == What::LoginResp,
                            &mut rng,
                            &mut self.line,
                        );
                        self.id.push_str(&login_id);
                    }
                    _ => {
                        let read_id = rng.uuid();
                        let path = if variant == Some(Variant::VaultTokenCrossEnv) {
                            format!("secret/data/production/{}/db", s.app)
                        } else if gitlab {
                            match named {
                                Some(e) => format!("secret/data/{e}/{}/config", s.app),
                                None => format!("secret/data/{}/ci/config", s.app),
                            }
                        } else if s.env_named {
                            format!("secret/data/{}/{}/db", env.name(), s.app)
                        } else {
                            format!("secret/data/{}/db", s.app)
                        };
                        vault_read(
                            t,
                            &read_id,
                            &path,
                            &ip,
                            &tok,
                            op.what == What::ReadResp,
                            &mut self.line,
                        );
                        self.id.push_str(&read_id);
                    }
                }
            }
            What::TokenReq | What::SaUse => {
                let ns = s.ns.as_str();
                let sa = s.sa.as_str();
                let pod_seed = op.base as u64;
                let mut pod_rng = Rng::from(&[seed, 10, u64::from(op.svc), pod_seed]);
                let pod = format!("{}-{}-{}", s.sa, pod_rng.hex(10), pod_rng.hex(5));
                let pod_uid = pod_rng.uuid();
                let (na, nb) = (pod_rng.range(0, 15), pod_rng.range(1, 254));
                let node = format!("ip-10-0-{na}-{nb}.eu-central-1.compute.internal");
                let node_ip = format!("10.0.{na}.{nb}");
                let pod_ip = format!("10.42.{}.{}", pod_rng.range(0, 255), pod_rng.range(2, 254));
                let jti = format!(
                    "JTI={}",
                    Rng::from(&[seed, 11, u64::from(op.svc), op.run]).uuid()
                );
                let audit_id = rng.uuid();
                self.identity.push_str(&format!("k8s:{ns}/{sa}"));
                let kubelet_for = (variant == Some(Variant::NewTokenAudience))
                    .then(|| attack.map_or("vault", |a| a.audience));
                self.id.clear();
                self.id.push_str(&audit_id);
                if op.what == What::TokenReq {
                    let requester_name;
                    let groups: [&str; 3];
                    let (requester, ip, agent) =
                        if variant == Some(Variant::UnexpectedTokenRequester) {
                            let who = attack.map_or("ci:deployer", |a| a.requester.as_str());
                            requester_name = format!("system:serviceaccount:{who}");
                            groups = ["system:serviceaccounts", "system:authenticated", ""];
                            (
                                &requester_name,
                                pod_ip.as_str(),
                                "kubectl/v1.31.2 (linux/amd64) kubernetes/4b8e819",
                            )
                        } else {
                            requester_name = format!("system:node:{node}");
                            groups = ["system:nodes", "system:authenticated", ""];
                            (&requester_name, node_ip.as_str(), KUBELET_AGENT)
                        };
                    let groups: Vec<&str> = groups.into_iter().filter(|g| !g.is_empty()).collect();
                    let extra = usize::from(op.n >> 12);
                    let audiences: &[&str] = if let Some(aud) = &kubelet_for {
                        std::slice::from_ref(aud)
                    } else if op.n & 0x100 != 0 {
                        &["vault"]
                    } else if extra > 0 && extra <= s.auds.len() {
                        std::slice::from_ref(&s.auds[extra - 1])
                    } else {
                        &[K8S_AUDIENCE]
                    };
                    token_request(
                        &TokenRequest {
                            audit_id: &audit_id,
                            ns,
                            sa,
                            requester,
                            requester_groups: &groups,
                            ip,
                            agent,
                            audiences,
                            expiration: if variant == Some(Variant::LongLivedToken) {
                                172_800
                            } else {
                                3607
                            },
                            pod: &pod,
                            pod_uid: &pod_uid,
                            jti: &jti,
                            t,
                        },
                        &mut self.line,
                    );
                } else {
                    const CALLS: [(&str, &str, bool); 4] = [
                        ("get", "configmaps", true),
                        ("get", "secrets", true),
                        ("list", "endpoints", false),
                        ("update", "leases", true),
                    ];
                    let (verb, resource, named) = *rng.pick(&CALLS);
                    sa_request(
                        &SaRequest {
                            audit_id: &audit_id,
                            ns,
                            sa,
                            jti: &jti,
                            node: &node,
                            pod: &pod,
                            ip: &pod_ip,
                            verb,
                            resource,
                            name: if named { sa } else { "" },
                            t,
                        },
                        &mut self.line,
                    );
                }
            }
        }
        let mut label = variant.map(|v| LabelLine {
            r#type: "attack_record",
            attack: op.attack,
            kind: v.kind(),
            variant: v.name(),
            event_id: &self.id,
            identity: &self.identity,
            time: t.to_rfc3339(),
            source: op.what.format().as_str(),
            expected: v.expected(op.what),
        });
        if let Some(c) = change {
            label = Some(LabelLine {
                r#type: "benign_change",
                attack: op.attack & !CHANGE,
                kind: c.detector(),
                variant: c.name(),
                event_id: &self.id,
                identity: &self.identity,
                time: t.to_rfc3339(),
                source: op.what.format().as_str(),
                expected: false,
            });
        }
        Rendered {
            line: &self.line,
            label,
        }
    }

    /// The address of a GitHub runner for a job started at `start`.
    pub(super) fn github_ip(
        &self,
        svc: u32,
        s: &Service,
        hosted: bool,
        start: i64,
        rng: &mut Rng,
    ) -> String {
        if hosted {
            hosted_ip(&GITHUB_BLOCKS, 1, rng)
        } else {
            let net = self.sim.params.gh_net;
            let second = if start >= self.sim.rollout_at(svc, 2) {
                net + 1
            } else {
                net
            };
            format!("10.{second}.{}.{}", s.host % 8, rng.range(10, 250))
        }
    }

    /// The address of a GitLab job.
    pub(super) fn gitlab_ip(&self, s: &Service, rng: &mut Rng) -> String {
        if s.hosted {
            hosted_ip(&GITLAB_BLOCKS, 2, rng)
        } else {
            format!("10.30.{}.{}", rng.range(0, 3), rng.range(10, 250))
        }
    }
}

/// The display name of a workflow file (`deploy.yml` → `Deploy`, `ci.yml` → `CI`).
pub(super) fn workflow_name(file: &str) -> String {
    let stem = file.trim_end_matches(".yml").trim_end_matches(".yaml");
    match stem {
        "ci" => "CI".to_string(),
        _ => {
            let mut name: String = stem.replace('-', " ");
            if let Some(f) = name.get_mut(..1) {
                f.make_ascii_uppercase();
            }
            name
        }
    }
}

/// An address in one of a hosted pool's /16 prefixes (the same prefixes in every simulation).
pub(super) fn hosted_ip(blocks: &[u8], pool: u64, rng: &mut Rng) -> String {
    let mut p = Rng::from(&[pool, rng.below(HOSTED_PREFIXES)]);
    let a = *p.pick(blocks);
    let b = p.below(256);
    format!("{a}.{b}.{}.{}", rng.range(0, 255), rng.range(1, 254))
}
