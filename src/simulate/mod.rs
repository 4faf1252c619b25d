//! `nhiwatch simulate`: a synthetic organisation's credential traffic in the five real record
//! formats, with injected attacks and an answer key, to measure what the detectors catch and
//! what they cost in false alerts.
//!
//! `--profile` picks the organisation's archetype ([`Profile`]): `classic`, described below
//! and fixed for a seed, or one of seven others whose parameters are drawn from the seed
//! (see `profile.rs`): release trains that deploy to staging all week and promote to
//! production on a cadence, CI workflows that name no environment and build whenever people
//! push (weekends included), monorepos with dozens of workflows, self-hosted GitLab runner
//! fleets that grow during the run, pipelines that run tests on a nightly schedule beside
//! production deploys by day, Kubernetes accounts with projected tokens for several
//! audiences, Vault AppRoles with long-lived tokens and roles that name no environment, small
//! and large organisations, all in a time zone of their own.
//!
//! The `classic` organisation runs five kinds of service, each behaving the way its real
//! counterpart does:
//!
//! | service | identities | behaviour |
//! |---|---|---|
//! | GitHub deploy workflow | workflow (OIDC claims), repository (STS web identity), AWS role (API calls) | runs on weekday pushes in office hours (local time), on GitHub-hosted runners (a new address from a pool of cloud prefixes every job) or self-hosted ones; pulls artifacts from a shared account |
//! | GitHub nightly workflow | same three | a UTC cron with a job matrix, every night (so it moves an hour in local time at a DST change) |
//! | GitLab pipeline | pipeline (ID token), Vault JWT role (login, reads) | pushes in office hours, some with a nightly schedule; runner managers (self-hosted) or GitLab's SaaS runners |
//! | Vault AppRole | the role | logs in about hourly around the clock, reads its secrets every 30 minutes |
//! | Kubernetes workload | the service account | kubelets refresh each replica's token every 48 minutes; pods call the API every 30 minutes; pods move to new nodes (new names) daily |
//!
//! and the fleet changes the way real fleets do: the GitLab runner managers are replaced, the
//! self-hosted GitHub runners move to a new subnet, a Vault policy is added to every AppRole,
//! workloads start requesting tokens for a new audience, a daylight-saving change moves every
//! office-hours schedule against UTC, and some services are onboarded mid-run.
//!
//! Attacks of four kinds (sixteen variants in `classic`, twenty in the other profiles, see
//! [`Variant`]) are injected into services that have a history; every record an attack writes is listed in the answer key with its native
//! id (`--labels`), so `nhiwatch score` can compute recall and precision.
//!
//! Output is deterministic for a seed and sorted by time; nothing depends on the wall clock.

mod profile;
mod render;

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};

use serde::Serialize;

use crate::decode::Format;
use crate::time::Timestamp;
use profile::Params;
pub use profile::Profile;
use render::*;

/// The default first day: Monday 2026-03-23, the week Europe changes to summer time.
pub const DEFAULT_START: &str = "2026-03-23T00:00:00Z";
/// The organisation's default time zone (office hours follow it, cron schedules follow UTC).
pub const DEFAULT_TIMEZONE: &str = "Europe/Berlin";

/// The AWS accounts of the simulated organisation and the environments they hold.
pub const AWS_ACCOUNTS: [(&str, &str); 4] = [
    ("111111111111", "production"),
    ("222222222222", "staging"),
    ("333333333333", "development"),
    ("444444444444", "shared-services"),
];

/// What to simulate.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Random seed: the same settings give byte-identical output.
    pub seed: u64,
    /// Approximate number of identities (services are added until it is reached).
    pub identities: u32,
    /// Number of days.
    pub days: u32,
    /// The first day (its UTC date is the organisation's first local date).
    pub start: Timestamp,
    /// The organisation's time zone (IANA name); `None` for the profile's own (drawn from
    /// the seed, `Europe/Berlin` for `classic`).
    pub timezone: Option<String>,
    /// The organisation's archetype.
    pub profile: Profile,
    /// Attacks to inject; `None` for one per 100 identity-days (at least 5).
    pub attacks: Option<u32>,
    /// Write only the records of this format (the organisation is the same).
    pub only: Option<Format>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            seed: 1,
            identities: 200,
            days: 14,
            start: Timestamp::parse(DEFAULT_START).unwrap_or(Timestamp::from_micros(0)),
            timezone: None,
            profile: Profile::Classic,
            attacks: None,
            only: None,
        }
    }
}

/// The settings are unusable.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// Unknown time zone.
    #[error("unknown time zone {0:?}")]
    Zone(String),
    /// Out of range.
    #[error("{0}")]
    Range(&'static str),
}

/// The four attack kinds, named like the detectors meant to catch them.
pub const KINDS: [&str; 4] = [
    "off_hours_mint",
    "new_runner",
    "scope_escalation",
    "cross_env_reuse",
];

/// An injected attack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    /// A GitHub deploy workflow run in the middle of a weekday night.
    DeployAtNight,
    /// A GitLab pipeline without a schedule running at a weekend night (its Vault role logs in).
    PipelineAtWeekendNight,
    /// A nightly workflow dispatched in the afternoon.
    NightlyInDaytime,
    /// A workflow that always ran on GitHub-hosted runners runs on a self-hosted one, from an
    /// outside network.
    SelfHostedRunner,
    /// A GitLab pipeline on a runner id nobody registered, logging in to Vault from outside.
    UnknownGitlabRunner,
    /// An AppRole secret id used from a network the role never came from.
    AppRoleNewNetwork,
    /// A service account's token requested by another service account instead of a kubelet.
    UnexpectedTokenRequester,
    /// An AppRole login that carries an admin policy.
    AppRoleAdminPolicy,
    /// A deploy workflow assuming the organisation's admin role.
    AdminRoleAssumed,
    /// A service-account token requested with a two-day lifetime.
    LongLivedToken,
    /// A GitLab pipeline's Vault role logging in with a write policy it never had.
    WritePolicyAdded,
    /// A non-production Vault token reading a production secret.
    VaultTokenCrossEnv,
    /// An AWS session key minted on a CI runner used from outside an hour or more later.
    AwsKeyExfiltrated,
    /// A single-use OIDC token presented a second time.
    OidcTokenReplayed,
    /// A pipeline that only deployed to non-production minting for production.
    FirstProductionMint,
    /// A production deploy minted from an unprotected branch.
    UnprotectedProductionMint,
    /// A CI workflow that never named an environment minting a production token.
    CiProductionMint,
    /// A pipeline that deploys to production by day and runs a schedule at night deploying
    /// to production at night, near its schedule.
    ScheduledNightDeploy,
    /// A kubelet requesting a service-account token for an audience the account never had.
    NewTokenAudience,
    /// A job on a GitLab runner nobody registered, inside the runner fleet's own network.
    RogueGitlabRunner,
}

impl Variant {
    /// Every variant, grouped by kind.
    pub const ALL: [Variant; 20] = [
        Variant::DeployAtNight,
        Variant::PipelineAtWeekendNight,
        Variant::NightlyInDaytime,
        Variant::ScheduledNightDeploy,
        Variant::SelfHostedRunner,
        Variant::UnknownGitlabRunner,
        Variant::AppRoleNewNetwork,
        Variant::UnexpectedTokenRequester,
        Variant::RogueGitlabRunner,
        Variant::AppRoleAdminPolicy,
        Variant::AdminRoleAssumed,
        Variant::LongLivedToken,
        Variant::WritePolicyAdded,
        Variant::NewTokenAudience,
        Variant::VaultTokenCrossEnv,
        Variant::AwsKeyExfiltrated,
        Variant::OidcTokenReplayed,
        Variant::FirstProductionMint,
        Variant::UnprotectedProductionMint,
        Variant::CiProductionMint,
    ];

    /// The variants of the `classic` organisation (its attack plan is fixed for a seed).
    pub const CLASSIC: [Variant; 16] = [
        Variant::DeployAtNight,
        Variant::PipelineAtWeekendNight,
        Variant::NightlyInDaytime,
        Variant::SelfHostedRunner,
        Variant::UnknownGitlabRunner,
        Variant::AppRoleNewNetwork,
        Variant::UnexpectedTokenRequester,
        Variant::AppRoleAdminPolicy,
        Variant::AdminRoleAssumed,
        Variant::LongLivedToken,
        Variant::WritePolicyAdded,
        Variant::VaultTokenCrossEnv,
        Variant::AwsKeyExfiltrated,
        Variant::OidcTokenReplayed,
        Variant::FirstProductionMint,
        Variant::UnprotectedProductionMint,
    ];

    /// The attack kind (a detector name).
    pub fn kind(self) -> &'static str {
        use Variant::*;
        match self {
            DeployAtNight | PipelineAtWeekendNight | NightlyInDaytime | ScheduledNightDeploy => {
                KINDS[0]
            }
            SelfHostedRunner
            | UnknownGitlabRunner
            | AppRoleNewNetwork
            | UnexpectedTokenRequester
            | RogueGitlabRunner => KINDS[1],
            AppRoleAdminPolicy | AdminRoleAssumed | LongLivedToken | WritePolicyAdded
            | NewTokenAudience => KINDS[2],
            _ => KINDS[3],
        }
    }

    /// A snake_case name for the answer key.
    pub fn name(self) -> &'static str {
        use Variant::*;
        match self {
            DeployAtNight => "deploy_at_night",
            PipelineAtWeekendNight => "pipeline_at_weekend_night",
            NightlyInDaytime => "nightly_in_daytime",
            SelfHostedRunner => "self_hosted_runner",
            UnknownGitlabRunner => "unknown_gitlab_runner",
            AppRoleNewNetwork => "approle_new_network",
            UnexpectedTokenRequester => "unexpected_token_requester",
            AppRoleAdminPolicy => "approle_admin_policy",
            AdminRoleAssumed => "admin_role_assumed",
            LongLivedToken => "long_lived_token",
            WritePolicyAdded => "write_policy_added",
            VaultTokenCrossEnv => "vault_token_cross_env",
            AwsKeyExfiltrated => "aws_key_exfiltrated",
            OidcTokenReplayed => "oidc_token_replayed",
            FirstProductionMint => "first_production_mint",
            UnprotectedProductionMint => "unprotected_production_mint",
            CiProductionMint => "ci_production_mint",
            ScheduledNightDeploy => "scheduled_night_deploy",
            NewTokenAudience => "new_token_audience",
            RogueGitlabRunner => "rogue_gitlab_runner",
        }
    }

    fn fits(self, s: &Service) -> bool {
        use Variant::*;
        match self {
            DeployAtNight | AdminRoleAssumed | AwsKeyExfiltrated => s.kind == Kind::Deploy,
            PipelineAtWeekendNight => s.kind == Kind::Gitlab && !s.scheduled,
            NightlyInDaytime => s.kind == Kind::Nightly,
            SelfHostedRunner => s.kind == Kind::Deploy && s.hosted,
            UnknownGitlabRunner | WritePolicyAdded => s.kind == Kind::Gitlab,
            AppRoleNewNetwork | AppRoleAdminPolicy => s.kind == Kind::AppRole,
            UnexpectedTokenRequester | LongLivedToken | NewTokenAudience => s.kind == Kind::K8s,
            VaultTokenCrossEnv => {
                s.kind == Kind::AppRole && s.env != Env::Production && s.env_named
            }
            OidcTokenReplayed => matches!(s.kind, Kind::Deploy | Kind::Nightly | Kind::Ci),
            FirstProductionMint => {
                matches!(s.kind, Kind::Deploy | Kind::Gitlab)
                    && s.env != Env::Production
                    && s.train.is_none()
            }
            UnprotectedProductionMint => {
                s.kind == Kind::Deploy && (s.env == Env::Production || s.train.is_some())
            }
            CiProductionMint => s.kind == Kind::Ci,
            ScheduledNightDeploy => {
                s.kind == Kind::Gitlab
                    && s.scheduled
                    && s.sched != Sched::Own
                    && s.env == Env::Production
                    && s.train.is_none()
            }
            RogueGitlabRunner => s.kind == Kind::Gitlab && !s.hosted && !s.runners.is_empty(),
        }
    }

    /// Whether the attack happens on a weekday (office-hours services), a weekend, or any day.
    fn days(self, s: &Service) -> Days {
        match self {
            Variant::PipelineAtWeekendNight => Days::Weekend,
            _ if matches!(
                s.kind,
                Kind::Deploy | Kind::Gitlab | Kind::Nightly | Kind::Ci
            ) =>
            {
                Days::Weekday
            }
            _ => Days::Any,
        }
    }

    /// Local seconds of day of the attack.
    fn local_secs(self, rng: &mut Rng) -> u32 {
        match self {
            Variant::DeployAtNight | Variant::ScheduledNightDeploy => {
                rng.range(3600, 4 * 3600 + 1800) as u32
            }
            Variant::PipelineAtWeekendNight => rng.range(1800, 5 * 3600) as u32,
            Variant::NightlyInDaytime => rng.range(12 * 3600, 16 * 3600) as u32,
            _ => rng.range(9 * 3600 + 1800, 16 * 3600) as u32,
        }
    }

    /// The records of the attack that its own detector is expected to alert on.
    fn expected(self, what: What) -> bool {
        use Variant::*;
        use What::*;
        match self {
            DeployAtNight | NightlyInDaytime => matches!(what, GhClaims | Sts),
            PipelineAtWeekendNight => matches!(what, GlClaims | LoginResp),
            SelfHostedRunner => matches!(what, GhClaims | Sts | AwsUse),
            UnknownGitlabRunner => matches!(what, GlClaims | LoginResp | ReadReq),
            RogueGitlabRunner => what == GlClaims,
            ScheduledNightDeploy => matches!(what, GlClaims | LoginResp),
            NewTokenAudience => what == TokenReq,
            CiProductionMint => what == GhClaims,
            AppRoleNewNetwork => matches!(what, LoginResp | ReadReq),
            UnexpectedTokenRequester | LongLivedToken => what == TokenReq,
            AppRoleAdminPolicy | WritePolicyAdded => what == LoginResp,
            AdminRoleAssumed => what == Sts,
            VaultTokenCrossEnv => what == ReadReq,
            AwsKeyExfiltrated => what == AwsUse,
            OidcTokenReplayed | UnprotectedProductionMint => what == GhClaims,
            FirstProductionMint => matches!(what, GhClaims | GlClaims),
        }
    }

    /// Needs enough mints of the service's main identity that the time-of-week model is armed.
    fn needs_schedule(self) -> bool {
        self.kind() == KINDS[0]
    }
}

/// A benign change to one service that the detectors are expected to flag all the same: the
/// residual false alerts every deployment sees. Listed in the answer key as `benign_change`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Change {
    /// An on-call engineer deploys a hotfix late at night (once).
    NightHotfix,
    /// A workflow moves from GitHub-hosted to self-hosted runners (for good).
    MovedToSelfHosted,
    /// A pipeline's Vault role is given a write policy (for good).
    PolicyAdded,
    /// An AppRole's application moves to a new subnet (for good).
    NewSubnet,
}

impl Change {
    /// The detector expected to flag it.
    pub fn detector(self) -> &'static str {
        match self {
            Change::NightHotfix => KINDS[0],
            Change::MovedToSelfHosted | Change::NewSubnet => KINDS[1],
            Change::PolicyAdded => KINDS[2],
        }
    }

    /// A snake_case name for the answer key.
    pub fn name(self) -> &'static str {
        match self {
            Change::NightHotfix => "night_hotfix",
            Change::MovedToSelfHosted => "moved_to_self_hosted",
            Change::PolicyAdded => "policy_added",
            Change::NewSubnet => "new_subnet",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Days {
    Weekday,
    Weekend,
    Any,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Deploy,
    Nightly,
    Gitlab,
    AppRole,
    K8s,
    /// A GitHub CI workflow: builds and tests on pushes and pull requests, names no
    /// environment.
    Ci,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Env {
    Production,
    Staging,
    Development,
}

impl Env {
    fn name(self) -> &'static str {
        match self {
            Env::Production => "production",
            Env::Staging => "staging",
            Env::Development => "development",
        }
    }
    fn short(self) -> &'static str {
        match self {
            Env::Production => "prod",
            Env::Staging => "staging",
            Env::Development => "dev",
        }
    }
    fn account(self) -> &'static str {
        match self {
            Env::Production => AWS_ACCOUNTS[0].0,
            Env::Staging => AWS_ACCOUNTS[1].0,
            Env::Development => AWS_ACCOUNTS[2].0,
        }
    }
}

/// The environment one run deploys to (`Op::env`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
enum RunEnv {
    /// The service's own.
    #[default]
    Own,
    Production,
    /// No environment named (a build or test job).
    None,
    Testing,
}

/// What a GitLab project's scheduled pipelines deploy to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sched {
    /// The project's own environment (`classic`).
    Own,
    /// Nothing: test suites that name no environment.
    NoEnv,
    /// The `testing` environment.
    Testing,
}

/// A release train: staging several times a day, production on a cadence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Train {
    /// Promotion weekday (0 = Monday).
    weekday: u8,
    /// Every 7 or 14 days.
    every: u8,
    /// Which week of a fortnight.
    phase: u8,
    /// Local seconds of day promotions start at.
    secs: u32,
}

/// One service of the organisation.
#[derive(Clone, Debug)]
struct Service {
    kind: Kind,
    app: String,
    env: Env,
    /// GitHub: the workflow file and its repository.
    workflow: String,
    repo: String,
    /// Deploys to staging and promotes to production on a cadence.
    train: Option<Train>,
    /// GitLab: what scheduled pipelines deploy to.
    sched: Sched,
    /// GitLab: the self-hosted runner managers its jobs run on (empty: the `classic` pool).
    runners: Vec<u32>,
    /// Kubernetes: namespace, service account, and audiences beside the API server's.
    ns: String,
    sa: String,
    auds: Vec<&'static str>,
    /// Vault: token lifetime, and whether the role names its environment.
    ttl: i64,
    env_named: bool,
    /// A CI workflow assumes an AWS role.
    aws: bool,
    /// Vendor-hosted runners (GitHub, GitLab).
    hosted: bool,
    /// The day it starts (onboarding).
    start_day: u32,
    /// Runs per weekday (office-hours services).
    runs: (u8, u8),
    /// Cron time, seconds after UTC midnight (nightly workflows, GitLab schedules).
    cron: u32,
    /// A GitLab project that also has a nightly schedule.
    scheduled: bool,
    /// Jobs of a nightly matrix.
    jobs: u8,
    /// Deploys pull artifacts from the shared-services account.
    shared_reads: bool,
    /// Kubernetes replicas.
    replicas: u8,
    /// Seconds: phase of around-the-clock cycles, and daily pod restart time (UTC).
    phase: u32,
    restart: u32,
    /// A host number for stable addresses.
    host: u16,
    /// A benign change and when it happens (Unix seconds).
    change: Option<(Change, i64)>,
}

impl Service {
    /// A service with the `classic` organisation's defaults.
    fn new(kind: Kind, app: String, env: Env) -> Service {
        Service {
            kind,
            workflow: match kind {
                Kind::Nightly => "nightly.yml",
                Kind::Ci => "ci.yml",
                _ => "deploy.yml",
            }
            .to_string(),
            repo: if kind == Kind::Gitlab {
                format!("acme-platform/{app}")
            } else {
                format!("acme/{app}")
            },
            train: None,
            sched: Sched::Own,
            runners: Vec::new(),
            ns: format!("{app}-{}", env.short()),
            sa: app.clone(),
            auds: Vec::new(),
            ttl: if kind == Kind::Gitlab { 900 } else { 3600 },
            env_named: true,
            aws: matches!(kind, Kind::Deploy | Kind::Nightly),
            app,
            env,
            hosted: false,
            start_day: 0,
            runs: (2, 3),
            cron: 0,
            scheduled: false,
            jobs: 2,
            shared_reads: false,
            replicas: 1,
            phase: 0,
            restart: 0,
            host: 0,
            change: None,
        }
    }

    /// The identities the service's records name (services of one repository share its
    /// identity).
    fn identities(&self) -> Vec<String> {
        let role = |env: Env, name: &str| format!("aws:arn:aws:iam::{}:role/{name}", env.account());
        let mut v = Vec::new();
        match self.kind {
            Kind::Deploy | Kind::Nightly | Kind::Ci => {
                v.push(format!(
                    "github:{}/.github/workflows/{}",
                    self.repo, self.workflow
                ));
                if self.aws {
                    v.push(format!("github:{}", self.repo));
                    let name = match self.kind {
                        Kind::Nightly => format!("gha-{}-nightly", self.app),
                        Kind::Ci => format!("gha-{}-ci", self.app),
                        _ => format!("gha-{}-deploy", self.app),
                    };
                    v.push(role(self.env, &name));
                    if self.train.is_some() {
                        v.push(role(Env::Production, &name));
                    }
                }
            }
            Kind::Gitlab => {
                v.push(format!("gitlab:{}/.gitlab-ci.yml", self.repo));
                v.push(format!("vault:jwt/{}-{}", self.app, self.env.name()));
                if self.train.is_some() {
                    v.push(format!("vault:jwt/{}-production", self.app));
                }
                match (self.scheduled, self.sched) {
                    (true, Sched::NoEnv) => v.push(format!("vault:jwt/{}-ci", self.app)),
                    (true, Sched::Testing) => v.push(format!("vault:jwt/{}-testing", self.app)),
                    _ => {}
                }
            }
            Kind::AppRole => v.push(format!("vault:approle/{}", self.role())),
            Kind::K8s => v.push(format!("k8s:{}/{}", self.ns, self.sa)),
        }
        v
    }

    /// An AppRole's role name: `<app>-<environment>`, or just the application's name when
    /// the organisation does not name environments in roles.
    fn role(&self) -> String {
        if self.env_named {
            format!("{}-{}", self.app, self.env.name())
        } else {
            self.app.clone()
        }
    }

    /// Whether the service's change is in effect for a run started at `t`.
    fn changed(&self, change: Change, t: i64) -> bool {
        self.change.is_some_and(|(c, at)| c == change && t >= at)
    }
}

/// What one planned record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum What {
    GhClaims,
    Sts,
    AwsUse,
    GlClaims,
    LoginReq,
    LoginResp,
    ReadReq,
    ReadResp,
    TokenReq,
    SaUse,
}

impl What {
    fn format(self) -> Format {
        match self {
            What::GhClaims => Format::Github,
            What::Sts | What::AwsUse => Format::Cloudtrail,
            What::GlClaims => Format::Gitlab,
            What::LoginReq | What::LoginResp | What::ReadReq | What::ReadResp => Format::Vault,
            What::TokenReq | What::SaUse => Format::Kubernetes,
        }
    }
}

/// `Op::attack` flag: the record shows a benign change, not an attack.
const CHANGE: u16 = 0x8000;

/// One planned record: enough to render it later, deterministically.
#[derive(Clone, Copy, Debug)]
struct Op {
    /// When it is written (Unix seconds).
    t: i64,
    svc: u32,
    what: What,
    /// Sub-index (job, use, replica).
    n: u16,
    /// 1-based attack number, 0 for normal traffic; with [`CHANGE`] set, the record shows the
    /// benign change of the service.
    attack: u16,
    /// The run or credential it belongs to (a seed).
    run: u64,
    /// The run's start (Unix seconds), or a pod seed for Kubernetes.
    base: i64,
    /// The environment the run deploys to.
    env: RunEnv,
}

impl Op {
    fn key(&self) -> (i64, u32, What, u16, u64) {
        (self.t, self.svc, self.what, self.n, self.run)
    }
}

/// An attack as planned.
#[derive(Clone, Debug)]
struct Attack {
    variant: Variant,
    svc: u32,
    /// `namespace:name` of the service account behind an unexpected token request.
    requester: String,
    t: i64,
    ip: String,
    runner_id: u32,
    /// The audience of a token requested for an audience the account never had.
    audience: &'static str,
}

/// Fleet changes, as Unix seconds (`i64::MAX` when outside the simulated days).
#[derive(Clone, Copy, Debug)]
struct Rollouts {
    /// AppRoles get the `secret-rotation-write` policy.
    policy: i64,
    /// GitLab's self-hosted runner managers 100–102 are replaced by 200–201.
    gitlab_runners: i64,
    /// Self-hosted GitHub runners move from 10.20.0.0/16 to 10.21.0.0/16.
    subnet: i64,
    /// Workloads also request tokens for the `vault` audience.
    audience: i64,
}

/// What a simulation wrote.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    /// The organisation's archetype.
    pub profile: &'static str,
    /// Seed.
    pub seed: u64,
    /// First instant.
    pub start: String,
    /// Days simulated.
    pub days: u32,
    /// Time zone of office hours.
    pub timezone: String,
    /// Services.
    pub services: u32,
    /// Identities (distinct: services of one repository share its identity).
    pub identities: u32,
    /// Sum over identities of the days each existed.
    pub identity_days: u64,
    /// Records written.
    pub records: u64,
    /// Attacks injected.
    pub attacks: u32,
    /// Attacks that found no suitable service and were left out.
    pub attacks_skipped: u32,
    /// Attacks per kind, in [`KINDS`] order.
    pub attacks_by_kind: [u32; 4],
    /// Benign changes to single services (see [`Change`]).
    pub benign_changes: u32,
}

/// The answer-key line for one record an attack wrote.
#[derive(Clone, Debug, Serialize)]
struct LabelLine<'a> {
    r#type: &'static str,
    attack: u16,
    kind: &'static str,
    variant: &'static str,
    event_id: &'a str,
    identity: &'a str,
    time: String,
    source: &'static str,
    /// The variant's own detector is expected to alert on this record.
    expected: bool,
}

/// A simulated organisation.
#[derive(Debug)]
pub struct Simulation {
    settings: Settings,
    params: Params,
    tz: jiff::tz::TimeZone,
    /// UTC midnight of the first day.
    t0: i64,
    services: Vec<Service>,
    rollouts: Rollouts,
    /// GitLab runner managers registered during the run: (when, runner id).
    registrations: Vec<(i64, u32)>,
}

const APPS: [&str; 40] = [
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
    "orders",
    "checkout",
    "pricing",
    "profile",
    "notify",
    "media",
    "export",
    "import",
    "audit",
    "metrics",
    "scheduler",
    "invoices",
    "tax",
    "shipping",
    "returns",
    "reviews",
    "loyalty",
    "support",
    "chat",
    "feeds",
    "ranking",
    "fraud",
    "identity",
    "sessions",
    "uploads",
    "thumbnails",
    "geo",
    "partners",
];

/// Public /8 blocks GitHub-hosted runners come from (a cloud provider's); each job gets an
/// address in one of [`HOSTED_PREFIXES`] /16s of them.
const GITHUB_BLOCKS: [u8; 8] = [4, 13, 20, 40, 51, 52, 104, 191];
/// Public /8 blocks of GitLab's SaaS runners.
const GITLAB_BLOCKS: [u8; 2] = [34, 35];
/// /16 prefixes per hosted-runner pool.
const HOSTED_PREFIXES: u64 = 48;
const GITLAB_SAAS_RUNNERS: [u32; 4] = [12_270_807, 12_270_831, 12_270_852, 12_270_859];
/// First octets attackers come from (VPS providers); never a range the organisation uses.
const ATTACKER_FIRST: [u8; 24] = [
    5, 31, 37, 45, 46, 62, 77, 78, 80, 82, 85, 89, 91, 92, 94, 95, 141, 146, 151, 158, 176, 185,
    193, 212,
];
const K8S_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";
const KUBELET_AGENT: &str = "kubelet/v1.31.2 (linux/amd64) kubernetes/4b8e819";

fn weekday(t: i64) -> u32 {
    // 1970-01-01 was a Thursday; 0 = Monday.
    (t.div_euclid(86_400) + 3).rem_euclid(7) as u32
}

/// Office-hours local time of day for a push: mostly 08–19 with a lunch dip, sometimes early
/// evening.
fn office_secs(rng: &mut Rng) -> u32 {
    const W: [u32; 11] = [3, 7, 9, 9, 8, 4, 7, 9, 8, 6, 3];
    let hour = if rng.chance(0.03) {
        19
    } else {
        let total: u32 = W.iter().sum();
        let mut x = rng.below(u64::from(total)) as u32;
        let mut h = 8;
        for w in W {
            if x < w {
                break;
            }
            x -= w;
            h += 1;
        }
        h
    };
    hour * 3600 + rng.below(3600) as u32
}

/// The services of the `classic` organisation (its draws are fixed: the shipped sample week
/// is written from them).
fn classic_services(settings: &Settings) -> Vec<Service> {
    let days = settings.days;
    let mut rng = Rng::from(&[settings.seed, 1]);
    let mut services = Vec::new();
    let mut identities = 0u32;
    let mut i = 0usize;
    while identities < settings.identities {
        let x = rng.below(100);
        let kind = match x {
            0..22 => Kind::Deploy,
            22..30 => Kind::Nightly,
            30..52 => Kind::Gitlab,
            52..74 => Kind::AppRole,
            _ => Kind::K8s,
        };
        let base = APPS[i % APPS.len()];
        let app = if i < APPS.len() {
            base.to_string()
        } else {
            format!("{base}-{}", i / APPS.len() + 1)
        };
        let env = match (kind, rng.below(10)) {
            (Kind::Nightly, 0..5) => Env::Development,
            (Kind::Nightly, _) => Env::Staging,
            (_, 0..5) => Env::Production,
            (_, 5..8) => Env::Staging,
            _ => Env::Development,
        };
        // About one service in eight is onboarded during the run.
        let start_day = if days >= 4 && rng.chance(0.12) {
            rng.range(1, u64::from(days * 2 / 3).max(1)) as u32
        } else {
            0
        };
        let lo = rng.range(2, 4) as u8;
        let mut s = Service::new(kind, app, env);
        s.hosted = match kind {
            Kind::Deploy | Kind::Nightly => rng.chance(0.7),
            Kind::Gitlab => rng.chance(0.3),
            _ => false,
        };
        s.start_day = start_day;
        s.runs = (lo, lo + rng.range(1, 4) as u8);
        s.cron = rng.range(0, 4 * 3600 + 3599) as u32;
        s.scheduled = kind == Kind::Gitlab && rng.chance(0.3);
        s.jobs = rng.range(2, 4) as u8;
        s.shared_reads = rng.chance(0.5);
        s.replicas = rng.range(1, 3) as u8;
        s.phase = rng.below(3600) as u32;
        s.restart = rng.below(86_400) as u32;
        s.host = rng.below(65_536) as u16;
        identities += match kind {
            Kind::Deploy | Kind::Nightly => 3,
            Kind::Gitlab => 2,
            _ => 1,
        };
        services.push(s);
        i += 1;
    }
    services
}

impl Simulation {
    /// Builds the organisation.
    pub fn new(mut settings: Settings) -> Result<Self, SettingsError> {
        if settings.days == 0 || settings.days > 3660 {
            return Err(SettingsError::Range("--days must be between 1 and 3660"));
        }
        if settings.identities == 0 || settings.identities > 10_000_000 {
            return Err(SettingsError::Range(
                "--identities must be between 1 and 10,000,000",
            ));
        }
        let params = Params::draw(settings.profile, settings.seed);
        let zone = settings
            .timezone
            .clone()
            .unwrap_or_else(|| params.timezone.to_string());
        let tz = jiff::tz::TimeZone::get(&zone).map_err(|_| SettingsError::Zone(zone.clone()))?;
        settings.timezone = Some(zone);
        let t0 = settings.start.as_unix_seconds().div_euclid(86_400) * 86_400;
        let days = settings.days;
        let services = if settings.profile == Profile::Classic {
            classic_services(&settings)
        } else {
            profile::services(&params, &settings, &tz, t0)
        };
        let mut sim = Simulation {
            tz,
            t0,
            services,
            rollouts: Rollouts {
                policy: i64::MAX,
                gitlab_runners: i64::MAX,
                subnet: i64::MAX,
                audience: i64::MAX,
            },
            registrations: Vec::new(),
            params,
            settings,
        };
        // Fleet changes happen after every service has a baseline.
        let at = |sim: &Simulation, frac: f64, secs: u32, weekday_only: bool| -> i64 {
            let mut d = ((f64::from(days) * frac) as u32).max(4);
            while weekday_only && weekday(sim.t0 + i64::from(d) * 86_400) >= 5 {
                d += 1;
            }
            if d >= days {
                i64::MAX
            } else {
                sim.local(d, secs)
            }
        };
        let [p, g, s, a] = sim.params.rollouts;
        let when = sim.params.rollout_at;
        let office = sim.params.office_start.saturating_sub(8) * 3600;
        let off = |on: bool, t: i64| if on { t } else { i64::MAX };
        sim.rollouts = Rollouts {
            policy: off(p, at(&sim, when[0], 10 * 3600 + office, false)),
            gitlab_runners: off(g, at(&sim, when[1], 9 * 3600 + office, true)),
            subnet: off(s, at(&sim, when[2], 9 * 3600 + office, true)),
            audience: off(a, at(&sim, when[3], 11 * 3600 + office, false)),
        };
        // Runner managers registered during the run, on weekday mornings.
        let mut rng = Rng::from(&[sim.settings.seed, 42]);
        for k in 0..sim.params.registrations {
            let frac = 0.3 + 0.5 * rng.unit();
            let secs = (9 + rng.below(6) as u32) * 3600 + office;
            let t = at(&sim, frac, secs, true);
            if t != i64::MAX {
                sim.registrations
                    .push((t, 100 + sim.params.runner_managers + k));
            }
        }
        // Benign changes: a night hotfix for one deploy workflow in twenty, a lasting change
        // for one service in thirty-three, per four weeks.
        let mut rng = Rng::from(&[sim.settings.seed, 12]);
        let scale = f64::from(days) / 28.0 * sim.params.changes;
        if days >= 7 {
            for i in 0..sim.services.len() {
                let s = &sim.services[i];
                let change = match s.kind {
                    Kind::Deploy if rng.chance(0.05 * scale) => Change::NightHotfix,
                    Kind::Deploy if s.hosted && rng.chance(0.03 * scale) => {
                        Change::MovedToSelfHosted
                    }
                    Kind::Gitlab if rng.chance(0.03 * scale) => Change::PolicyAdded,
                    Kind::AppRole if rng.chance(0.03 * scale) => Change::NewSubnet,
                    _ => continue,
                };
                let mut d = rng.range(u64::from(s.start_day + 5), u64::from(days - 1)) as u32;
                if d + 1 >= days {
                    continue;
                }
                while change != Change::NewSubnet
                    && weekday(sim.t0 + i64::from(d) * 86_400) >= 5
                    && d + 2 < days
                {
                    d += 1;
                }
                let secs = if change == Change::NightHotfix {
                    (rng.range(21 * 3600 + 1800, 25 * 3600 + 1800) % 86_400) as u32
                } else {
                    sim.office(&mut rng)
                };
                // After midnight belongs to the next day.
                let d = if change == Change::NightHotfix && secs < 12 * 3600 {
                    d + 1
                } else {
                    d
                };
                let t = sim.local(d, secs);
                sim.services[i].change = Some((change, t));
            }
        }
        Ok(sim)
    }

    /// When fleet change `which` (0 policy, 1 GitLab runners, 2 subnet, 3 audience) reaches a
    /// service: a share of the services, over a few hours (`classic`: all at once).
    fn rollout_at(&self, svc: u32, which: u64) -> i64 {
        let base = match which {
            0 => self.rollouts.policy,
            1 => self.rollouts.gitlab_runners,
            2 => self.rollouts.subnet,
            _ => self.rollouts.audience,
        };
        let p = &self.params;
        if base == i64::MAX || (p.rollout_share >= 1.0 && p.rollout_spread_hours == 0) {
            return base;
        }
        let mut r = Rng::from(&[self.settings.seed, 43, which, u64::from(svc)]);
        if !r.chance(p.rollout_share) {
            return i64::MAX;
        }
        base + r.below(u64::from(p.rollout_spread_hours) * 3600 + 1) as i64
    }

    /// The GitLab runner managers a self-hosted project's job started at `t` may run on.
    fn gitlab_runners(&self, svc: u32, s: &Service, t: i64) -> Vec<u32> {
        // A replacement moves every manager to a new id (re-registration).
        let replaced = t >= self.rollout_at(svc, 1);
        let mut ids: Vec<u32> = s
            .runners
            .iter()
            .map(|id| if replaced { id + 1000 } else { *id })
            .collect();
        for (k, (at, id)) in self.registrations.iter().enumerate() {
            let mut r = Rng::from(&[self.settings.seed, 44, k as u64, u64::from(svc)]);
            if t >= *at && r.chance(0.6) {
                ids.push(*id);
            }
        }
        ids
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The organisation's time zone (given, or the profile's).
    pub fn timezone(&self) -> &str {
        self.settings
            .timezone
            .as_deref()
            .unwrap_or(DEFAULT_TIMEZONE)
    }

    /// The configuration a deployment in this organisation would have: its time zone and
    /// its AWS accounts by environment (`simulate --config-out`).
    pub fn config_toml(&self) -> String {
        let mut s = format!(
            "# The configuration of the organisation `nhiwatch simulate --profile {} --seed {}` writes:\n# its time zone (office hours follow it; schedules run in UTC) and its AWS accounts.\n\n[time]\ntimezone = \"{}\"\n\n[environments.aws_accounts]\n",
            self.settings.profile.name(),
            self.settings.seed,
            self.timezone()
        );
        for (account, env) in AWS_ACCOUNTS {
            s.push_str(&format!("\"{account}\" = \"{env}\"\n"));
        }
        s
    }

    /// Whether `day0 + secs` (UTC) is at night in the organisation's time zone (22–06h).
    fn local_night(&self, day0: i64, secs: u32) -> bool {
        let Ok(ts) = jiff::Timestamp::from_second(day0 + i64::from(secs)) else {
            return false;
        };
        let hour = self.tz.to_datetime(ts).hour();
        !(6..22).contains(&hour)
    }

    /// Unix seconds of a local time of day on simulated day `d`.
    fn local(&self, d: u32, secs: u32) -> i64 {
        let day = self.t0 + i64::from(d) * 86_400;
        let (y, m, dd, ..) = Timestamp::from_micros(day * 1_000_000).to_civil();
        let dt = jiff::civil::DateTime::new(
            y as i16,
            m as i8,
            dd as i8,
            (secs / 3600) as i8,
            (secs / 60 % 60) as i8,
            (secs % 60) as i8,
            0,
        );
        dt.ok()
            .and_then(|dt| self.tz.to_ambiguous_timestamp(dt).compatible().ok())
            .map_or(day + i64::from(secs), |t| t.as_second())
    }

    fn identity_count(&self) -> (u32, u64) {
        let days = self.settings.days;
        let mut first: HashMap<String, u32> = HashMap::new();
        for s in &self.services {
            for name in s.identities() {
                let e = first.entry(name).or_insert(s.start_day);
                *e = (*e).min(s.start_day);
            }
        }
        let identity_days = first
            .values()
            .map(|d| u64::from(days - (*d).min(days)))
            .sum();
        (first.len() as u32, identity_days)
    }

    /// Plans the attacks: days, variants, services (chosen among those with enough history
    /// on that day), times and attacker addresses.
    fn plan_attacks(&self) -> (Vec<Attack>, u32) {
        let days = self.settings.days;
        let (_, identity_days) = self.identity_count();
        let first = (days * 2 / 3).min(8);
        // One attack per 100 identity-days; outside `classic`, at most three a day on
        // average: independent compromises are rare events, and dozens a day in a large
        // organisation would look like the coordinated rollouts the fleet judgement drops.
        let per_day = if self.settings.profile == Profile::Classic {
            u64::MAX
        } else {
            3 * u64::from(days.saturating_sub(first + 1).max(1))
        };
        let wanted = self
            .settings
            .attacks
            .unwrap_or_else(|| (identity_days / 100).min(per_day).max(5) as u32);
        let mut rng = Rng::from(&[self.settings.seed, 2]);
        if days < 4 || first + 1 >= days {
            return (Vec::new(), wanted);
        }
        // Variants in a shuffled order that cycles through the kinds.
        let mut order: Vec<Variant> = Vec::new();
        let variants: &[Variant] = if self.settings.profile == Profile::Classic {
            &Variant::CLASSIC
        } else {
            &Variant::ALL
        };
        let by_kind: Vec<Vec<Variant>> = KINDS
            .iter()
            .map(|k| {
                variants
                    .iter()
                    .copied()
                    .filter(|v| v.kind() == *k)
                    .collect()
            })
            .collect();
        // Within a kind the variants take turns, from a random one.
        let mut cursors: Vec<usize> = (0..4)
            .map(|k| rng.below(by_kind[k].len() as u64) as usize)
            .collect();
        let mut kinds: Vec<usize> = (0..4).collect();
        while order.len() < wanted as usize {
            for i in (1..kinds.len()).rev() {
                kinds.swap(i, rng.below(i as u64 + 1) as usize);
            }
            for &k in &kinds {
                let vs = &by_kind[k];
                order.push(vs[cursors[k] % vs.len()]);
                cursors[k] += 1;
            }
        }
        order.truncate(wanted as usize);
        let mut used_services: HashSet<u32> = HashSet::new();
        let mut used_nets: HashSet<(u8, u8)> = HashSet::new();
        let mut attacks = Vec::new();
        let mut skipped = 0;
        let n = self.services.len() as u64;
        for variant in order {
            let mut day = rng.range(u64::from(first), u64::from(days - 2)) as u32;
            let offset = rng.below(n);
            let mut chosen = None;
            'search: for _ in 0..4 {
                for j in 0..n {
                    let svc = ((offset + j) % n) as u32;
                    let s = &self.services[svc as usize];
                    if used_services.contains(&svc) || !variant.fits(s) {
                        continue;
                    }
                    // A workflow that moved to self-hosted runners can't be moved there, and a
                    // role given a write policy can't be given it again.
                    if (variant == Variant::SelfHostedRunner
                        && s.change
                            .is_some_and(|(c, _)| c == Change::MovedToSelfHosted))
                        || (variant == Variant::WritePolicyAdded
                            && s.change.is_some_and(|(c, _)| c == Change::PolicyAdded))
                    {
                        continue;
                    }
                    // The day: the requested one, moved to the right kind of day.
                    // The requested day or the nearest later (else earlier) one of the right
                    // kind on which the service has enough history.
                    let fits = |d: u32| {
                        let wd = weekday(self.t0 + i64::from(d) * 86_400);
                        let kind_of_day = match variant.days(s) {
                            Days::Weekday => wd < 5,
                            Days::Weekend => wd >= 5,
                            Days::Any => true,
                        };
                        kind_of_day && d >= s.start_day && self.enough_history(s, d, variant)
                    };
                    let Some(d) = (day..=days - 2)
                        .chain((first..day).rev())
                        .find(|d| fits(*d))
                    else {
                        continue;
                    };
                    chosen = Some((svc, d));
                    break 'search;
                }
                day = (day + 1).min(days - 2);
            }
            let Some((svc, d)) = chosen else {
                skipped += 1;
                continue;
            };
            used_services.insert(svc);
            let ip = loop {
                let net = (*rng.pick(&ATTACKER_FIRST), rng.range(1, 254) as u8);
                if used_nets.insert(net) {
                    break format!(
                        "{}.{}.{}.{}",
                        net.0,
                        net.1,
                        rng.range(1, 254),
                        rng.range(2, 250)
                    );
                }
            };
            let s = &self.services[svc as usize];
            let mut secs = variant.local_secs(&mut rng);
            if !matches!(
                variant,
                Variant::DeployAtNight
                    | Variant::PipelineAtWeekendNight
                    | Variant::NightlyInDaytime
                    | Variant::ScheduledNightDeploy
            ) {
                secs += self.params.office_start.saturating_sub(8) * 3600;
            }
            let day0 = self.t0 + i64::from(d) * 86_400;
            // Attacks hidden in an ordinary run of a nightly workflow happen at its hour.
            let t = if s.kind == Kind::Nightly && variant != Variant::NightlyInDaytime {
                day0 + i64::from(s.cron) + rng.below(600) as i64
            } else if variant == Variant::ScheduledNightDeploy
                && self.local_night(day0, s.cron + 5400)
            {
                // Close to the schedule the pipeline runs at night, which that schedule makes
                // look ordinary for the pipeline as a whole.
                day0 + i64::from(s.cron) + rng.range(1800, 5400) as i64
            } else if variant == Variant::NightlyInDaytime
                && self.settings.profile != Profile::Classic
            {
                // Half a day away from its schedule.
                day0 + i64::from(s.cron) + rng.range(10 * 3600, 14 * 3600) as i64
            } else {
                self.local(d, secs)
            };
            // The requester of an unexpected token request: another workload's account.
            let requester = loop {
                let other = &self.services[rng.below(n) as usize];
                if other.kind == Kind::K8s && other.app != s.app {
                    break format!("{}:{}", other.ns, other.sa);
                }
                if !self
                    .services
                    .iter()
                    .any(|o| o.kind == Kind::K8s && o.app != s.app)
                {
                    break "ci:deployer".to_string();
                }
            };
            let runner_id = 900_000 + rng.below(99_999) as u32;
            // An audience the account never asked for.
            let audience = ["sts.amazonaws.com", "vault", "https://kms.acme.internal"]
                .into_iter()
                .find(|a| !s.auds.contains(a) && (*a != "vault" || t < self.rollout_at(svc, 3)))
                .unwrap_or("https://kms.acme.internal");
            attacks.push(Attack {
                variant,
                svc,
                requester,
                t,
                ip,
                runner_id,
                audience,
            });
        }
        attacks.sort_by_key(|a| a.t);
        (attacks, skipped)
    }

    /// Whether the service's main identity has, by day `d`, comfortably more history than the
    /// variant's detector needs to be armed (`off_hours_mint`: 20 mints over 5 days; the
    /// others: 5 to 10 events over 3 days).
    fn enough_history(&self, s: &Service, d: u32, v: Variant) -> bool {
        // Office-hours services start on their first weekday.
        let mut first = s.start_day;
        while matches!(s.kind, Kind::Deploy | Kind::Gitlab | Kind::Ci)
            && weekday(self.t0 + i64::from(first) * 86_400) >= 5
        {
            first += 1;
        }
        let active = d.saturating_sub(first);
        let weekdays = (first..d)
            .filter(|x| weekday(self.t0 + i64::from(*x) * 86_400) < 5)
            .count() as u32;
        let runs = (u32::from(s.runs.0) + u32::from(s.runs.1)) / 2;
        let mints = match s.kind {
            Kind::Deploy | Kind::Gitlab | Kind::Ci => weekdays * runs,
            Kind::Nightly => active * u32::from(s.jobs),
            Kind::AppRole => match s.ttl {
                t if t <= 7200 => active * 23,
                t if t < 86_400 => active * (86_400 / (t / 2)) as u32,
                t => active * (86_400 / (t / 4).min(2 * 86_400)).max(1) as u32 / 2,
            },
            Kind::K8s => active * 29 * u32::from(s.replicas) * (1 + s.auds.len() as u32),
        };
        if v == Variant::PipelineAtWeekendNight {
            // Quiet weekends are evidence only once a weekend has been watched.
            active >= 8 && mints >= 26
        } else if v.needs_schedule() {
            active >= 6 && mints >= 26
        } else {
            active >= 4 && mints >= 10
        }
    }

    /// Writes the records (JSON lines, sorted by time) and, when asked, the answer key;
    /// stops after `limit` records when given.
    pub fn run(
        &self,
        out: &mut dyn Write,
        mut labels: Option<&mut dyn Write>,
        limit: Option<u64>,
    ) -> io::Result<Summary> {
        let limit = limit.unwrap_or(u64::MAX);
        let mut written = 0u64;
        let mut sink = |rec: &Rendered<'_>| -> io::Result<bool> {
            out.write_all(rec.line.as_bytes())?;
            out.write_all(b"\n")?;
            if let (Some(l), Some(label)) = (labels.as_deref_mut(), &rec.label) {
                serde_json::to_writer(&mut *l, label)?;
                l.write_all(b"\n")?;
            }
            written += 1;
            Ok(written < limit)
        };
        let summary = self.generate(&mut sink)?;
        {
            if let Some(l) = labels {
                #[derive(Serialize)]
                struct Line<'a> {
                    r#type: &'static str,
                    #[serde(flatten)]
                    summary: &'a Summary,
                }
                serde_json::to_writer(
                    &mut *l,
                    &Line {
                        r#type: "summary",
                        summary: &summary,
                    },
                )?;
                l.write_all(b"\n")?;
                l.flush()?;
            }
            out.flush()?;
            Ok(summary)
        }
    }

    /// The first `n` records (for benchmarks and tests).
    pub fn records(&self, n: usize) -> Vec<String> {
        let mut v = Vec::with_capacity(n.min(1 << 16));
        let _ = self.generate(&mut |rec: &Rendered<'_>| {
            v.push(rec.line.to_string());
            Ok(v.len() < n)
        });
        v
    }

    /// Plans day by day and hands each rendered record to `sink` in time order; `sink`
    /// returns false to stop.
    fn generate(
        &self,
        sink: &mut dyn FnMut(&Rendered<'_>) -> io::Result<bool>,
    ) -> io::Result<Summary> {
        let days = self.settings.days;
        let (attacks, skipped) = self.plan_attacks();
        let (identities, identity_days) = self.identity_count();
        let mut summary = Summary {
            seed: self.settings.seed,
            start: Timestamp::from_micros(self.t0 * 1_000_000).to_rfc3339(),
            days,
            timezone: self.timezone().to_string(),
            profile: self.settings.profile.name(),
            services: self.services.len() as u32,
            identities,
            identity_days,
            attacks: attacks.len() as u32,
            attacks_skipped: skipped,
            benign_changes: self
                .services
                .iter()
                .filter(|s| {
                    s.change
                        .is_some_and(|(_, t)| t < self.t0 + i64::from(days) * 86_400)
                })
                .count() as u32,
            ..Summary::default()
        };
        for a in &attacks {
            let k = KINDS
                .iter()
                .position(|k| *k == a.variant.kind())
                .unwrap_or(0);
            summary.attacks_by_kind[k] += 1;
        }
        let end = self.t0 + i64::from(days) * 86_400;
        let mut state: Vec<SvcState> = self.services.iter().map(|_| SvcState::default()).collect();
        let mut buf: Vec<Op> = Vec::new();
        let mut r = Renderer::new(self, &attacks);
        let mut next_attack = 0;
        for d in 0..days {
            for (i, s) in self.services.iter().enumerate() {
                if d >= s.start_day {
                    self.plan_day(i as u32, s, d, &mut state[i], &mut buf);
                }
            }
            let day_end = self.t0 + i64::from(d + 1) * 86_400;
            while next_attack < attacks.len() && attacks[next_attack].t < day_end {
                self.plan_attack(next_attack, &attacks[next_attack], &mut buf);
                next_attack += 1;
            }
            for (i, s) in self.services.iter().enumerate() {
                if let Some((_, t)) = s.change
                    && (day_end - 86_400..day_end).contains(&t)
                {
                    self.plan_change(i as u32, s, t, &mut buf);
                }
            }
            // Plans for later local dates never reach more than 14 hours back.
            let bound = if d + 1 == days {
                end
            } else {
                day_end - 14 * 3600
            };
            if !self.flush(&mut buf, bound, end, &mut r, sink, &mut summary)? {
                return Ok(summary);
            }
        }
        Ok(summary)
    }

    fn flush(
        &self,
        buf: &mut Vec<Op>,
        bound: i64,
        end: i64,
        r: &mut Renderer<'_>,
        sink: &mut dyn FnMut(&Rendered<'_>) -> io::Result<bool>,
        summary: &mut Summary,
    ) -> io::Result<bool> {
        buf.sort_unstable_by_key(Op::key);
        let cut = buf.partition_point(|op| op.t < bound);
        for op in buf.drain(..cut) {
            if op.t < self.t0 || op.t >= end {
                continue;
            }
            if let Some(f) = self.settings.only
                && f != Format::Auto
                && f != op.what.format()
            {
                continue;
            }
            let rec = r.render(&op);
            summary.records += 1;
            if !sink(&rec)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Office-hours local seconds of day, shifted to the organisation's office start.
    fn office(&self, rng: &mut Rng) -> u32 {
        let shift = self.params.office_start.saturating_sub(8) * 3600;
        (office_secs(rng) + shift).min(86_399)
    }

    /// Whether simulated day `d` is a promotion day of a release train.
    fn promotes(&self, train: &Train, d: u32) -> bool {
        let day = self.t0 + i64::from(d) * 86_400;
        weekday(day) == u32::from(train.weekday)
            && (train.every <= 7 || (d / 7) % 2 == u32::from(train.phase))
    }

    /// Plans one service's ordinary traffic for day `d`.
    fn plan_day(&self, svc: u32, s: &Service, d: u32, st: &mut SvcState, buf: &mut Vec<Op>) {
        let mut rng = Rng::from(&[self.settings.seed, 3, u64::from(svc), u64::from(d)]);
        let day = self.t0 + i64::from(d) * 86_400;
        let is_weekday = weekday(day) < 5;
        match s.kind {
            Kind::Deploy => {
                if is_weekday {
                    let runs = rng.range(u64::from(s.runs.0), u64::from(s.runs.1));
                    for _ in 0..runs {
                        let t = self.local(d, self.office(&mut rng));
                        self.plan_github_run(svc, s, t, rng.next(), 0, RunEnv::Own, buf, &mut rng);
                    }
                    if let Some(train) = &s.train
                        && self.promotes(train, d)
                    {
                        // The promotion: after the morning's staging runs, in the afternoon.
                        let t = self.local(d, train.secs + rng.below(5400) as u32);
                        let run = rng.next();
                        self.plan_github_run(svc, s, t, run, 0, RunEnv::Production, buf, &mut rng);
                    }
                }
            }
            Kind::Nightly => {
                // GitHub starts scheduled workflows a few minutes late.
                let t = day + i64::from(s.cron) + rng.below(600) as i64;
                self.plan_github_run(svc, s, t, rng.next(), 0, RunEnv::Own, buf, &mut rng);
            }
            Kind::Ci => {
                // Pushes and pull requests in office hours; now and then someone at a weekend.
                let runs = if is_weekday {
                    rng.range(u64::from(s.runs.0), u64::from(s.runs.1))
                } else {
                    u64::from(rng.chance(0.25))
                };
                for _ in 0..runs {
                    let t = self.local(d, self.office(&mut rng));
                    self.plan_github_run(svc, s, t, rng.next(), 0, RunEnv::None, buf, &mut rng);
                }
            }
            Kind::Gitlab => {
                if is_weekday {
                    let runs = rng.range(u64::from(s.runs.0), u64::from(s.runs.1));
                    for _ in 0..runs {
                        let t = self.local(d, self.office(&mut rng));
                        let run = rng.next() & !(1 << 63);
                        plan_pipeline(svc, t, run, 0, RunEnv::Own, buf, &mut rng);
                    }
                    if let Some(train) = &s.train
                        && self.promotes(train, d)
                    {
                        let t = self.local(d, train.secs + rng.below(5400) as u32);
                        let run = rng.next() & !(1 << 63);
                        plan_pipeline(svc, t, run, 0, RunEnv::Production, buf, &mut rng);
                    }
                }
                if s.scheduled {
                    let t = day + i64::from(s.cron) + rng.below(120) as i64;
                    let env = match s.sched {
                        Sched::Own => RunEnv::Own,
                        Sched::NoEnv => RunEnv::None,
                        Sched::Testing => RunEnv::Testing,
                    };
                    plan_pipeline(svc, t, rng.next() | 1 << 63, 0, env, buf, &mut rng);
                }
            }
            Kind::AppRole => {
                if st.next == 0 {
                    st.next = day + i64::from(s.phase);
                }
                // Short-lived tokens: a login about every hour; long-lived ones are logged in
                // for less often and read with until the next login.
                let (every, reads) = match s.ttl {
                    t if t <= 7200 => (3600, 2),
                    t if t < 86_400 => (t / 2, (t / 2 / 1800) as u16),
                    t => ((t / 4).min(2 * 86_400), 48),
                };
                while st.next < day + 86_400 {
                    let t = st.next;
                    plan_approle_login(svc, t, rng.next(), 0, reads, buf, &mut rng);
                    st.next = t + every + rng.range(0, 180) as i64 - 90;
                }
            }
            Kind::K8s => {
                // Each replica's pod restarts daily on a new node (new names, same groups).
                let restart = day + i64::from(s.restart);
                let vault_from = self.rollout_at(svc, 3);
                for rep in 0..u16::from(s.replicas) {
                    let mut t = restart + i64::from(rep) * 40;
                    let pod = rng.next();
                    let stop = restart + 86_400;
                    let mut token = rng.next();
                    let mut next_token = t;
                    let mut next_use = t + rng.range(5, 60) as i64;
                    while t < stop {
                        if next_token <= next_use {
                            t = next_token;
                            if t >= stop {
                                break;
                            }
                            token = rng.next();
                            push(buf, t, svc, What::TokenReq, rep, 0, token, pod as i64);
                            if t >= vault_from {
                                push(
                                    buf,
                                    t + 1,
                                    svc,
                                    What::TokenReq,
                                    rep | 0x100,
                                    0,
                                    rng.next(),
                                    pod as i64,
                                );
                            }
                            // Projected tokens for the pod's other audiences (IRSA, Vault).
                            for k in 0..s.auds.len() as u16 {
                                let seed = Rng::from(&[token, u64::from(k)]).next();
                                push(
                                    buf,
                                    t + 2 + i64::from(k),
                                    svc,
                                    What::TokenReq,
                                    rep | ((k + 1) << 12),
                                    0,
                                    seed,
                                    pod as i64,
                                );
                            }
                            next_token = t + 2880 + rng.range(0, 60) as i64 - 30;
                        } else {
                            t = next_use;
                            if t >= stop {
                                break;
                            }
                            push(buf, t, svc, What::SaUse, rep, 0, token, pod as i64);
                            next_use = t + 1800 + rng.range(0, 120) as i64 - 60;
                        }
                    }
                }
            }
        }
    }

    /// A GitHub workflow run: per job an OIDC token, an STS exchange and a few API calls.
    #[allow(clippy::too_many_arguments)]
    fn plan_github_run(
        &self,
        svc: u32,
        s: &Service,
        t: i64,
        run: u64,
        attack: u16,
        env: RunEnv,
        buf: &mut Vec<Op>,
        rng: &mut Rng,
    ) {
        let from = buf.len();
        let jobs = if s.kind == Kind::Nightly {
            u16::from(s.jobs)
        } else {
            1
        };
        for job in 0..jobs {
            let tj = t + i64::from(job) * rng.range(3, 30) as i64;
            push(buf, tj, svc, What::GhClaims, job, attack, run, tj);
            if !s.aws && env != RunEnv::Production {
                continue;
            }
            let ts = tj + rng.range(2, 15) as i64;
            push(buf, ts, svc, What::Sts, job, attack, run, tj);
            if s.shared_reads {
                push(
                    buf,
                    ts + rng.range(5, 30) as i64,
                    svc,
                    What::AwsUse,
                    job * 16 + 15,
                    attack,
                    run,
                    tj,
                );
            }
            for u in 0..rng.range(2, 4) as u16 {
                push(
                    buf,
                    ts + rng.range(30, 600) as i64,
                    svc,
                    What::AwsUse,
                    job * 16 + u,
                    attack,
                    run,
                    tj,
                );
            }
        }
        deploys_to(buf, from, env);
    }

    /// Plans the first run that shows a service's benign change (later runs show it too).
    fn plan_change(&self, svc: u32, s: &Service, t: i64, buf: &mut Vec<Op>) {
        let mut rng = Rng::from(&[self.settings.seed, 13, u64::from(svc)]);
        let run = rng.next() & !(1 << 63);
        let id = CHANGE | (svc as u16 & 0x7fff);
        // A release train's hotfix goes to production.
        let env = if s.train.is_some() {
            RunEnv::Production
        } else {
            RunEnv::Own
        };
        match s.kind {
            Kind::Deploy | Kind::Nightly | Kind::Ci => {
                self.plan_github_run(svc, s, t, run, id, env, buf, &mut rng)
            }
            Kind::Gitlab => plan_pipeline(svc, t, run, id, env, buf, &mut rng),
            Kind::AppRole => plan_approle_login(svc, t, run, id, 2, buf, &mut rng),
            Kind::K8s => {}
        }
    }

    /// Plans the records of one attack.
    fn plan_attack(&self, idx: usize, a: &Attack, buf: &mut Vec<Op>) {
        let s = &self.services[a.svc as usize];
        let id = idx as u16 + 1;
        let mut rng = Rng::from(&[self.settings.seed, 4, idx as u64]);
        let run = rng.next();
        let svc = a.svc;
        // A release train's attacks ride on a production run where production is the point.
        let own = RunEnv::Own;
        let prod = if s.train.is_some() {
            RunEnv::Production
        } else {
            own
        };
        use Variant::*;
        match a.variant {
            DeployAtNight | NightlyInDaytime | SelfHostedRunner | AdminRoleAssumed => {
                self.plan_github_run(svc, s, a.t, run, id, own, buf, &mut rng)
            }
            UnprotectedProductionMint => {
                self.plan_github_run(svc, s, a.t, run, id, prod, buf, &mut rng)
            }
            FirstProductionMint if s.kind == Kind::Deploy => {
                self.plan_github_run(svc, s, a.t, run, id, own, buf, &mut rng)
            }
            CiProductionMint => {
                self.plan_github_run(svc, s, a.t, run, id, RunEnv::Production, buf, &mut rng)
            }
            PipelineAtWeekendNight
            | UnknownGitlabRunner
            | WritePolicyAdded
            | FirstProductionMint
            | RogueGitlabRunner => {
                plan_pipeline(svc, a.t, run & !(1 << 63), id, own, buf, &mut rng)
            }
            ScheduledNightDeploy => plan_pipeline(
                svc,
                a.t,
                run & !(1 << 63),
                id,
                RunEnv::Production,
                buf,
                &mut rng,
            ),
            AwsKeyExfiltrated => {
                // An ordinary run; its session key reappears from outside while it is still
                // valid (sessions last an hour; AWS refuses an expired key).
                self.plan_github_run(svc, s, a.t, run, 0, own, buf, &mut rng);
                let later = a.t + rng.range(15 * 60, 50 * 60) as i64;
                for u in 0..rng.range(1, 3) as u16 {
                    push(
                        buf,
                        later + i64::from(u) * 40,
                        svc,
                        What::AwsUse,
                        u,
                        id,
                        run,
                        a.t,
                    );
                }
            }
            OidcTokenReplayed => {
                let env = if s.kind == Kind::Ci {
                    RunEnv::None
                } else {
                    own
                };
                self.plan_github_run(svc, s, a.t, run, 0, env, buf, &mut rng);
                let later = a.t + rng.range(600, 2400) as i64;
                let from = buf.len();
                push(buf, later, svc, What::GhClaims, 0, id, run, a.t);
                deploys_to(buf, from, env);
            }
            AppRoleNewNetwork | AppRoleAdminPolicy => {
                plan_approle_login(svc, a.t, run, id, 2, buf, &mut rng)
            }
            VaultTokenCrossEnv => {
                // An ordinary login whose token then reads a production secret.
                plan_approle_login(svc, a.t, run, 0, 1, buf, &mut rng);
                let tr = a.t + rng.range(120, 900) as i64;
                push(buf, tr, svc, What::ReadReq, 7, id, run, a.t);
                push(buf, tr, svc, What::ReadResp, 7, id, run, a.t);
            }
            UnexpectedTokenRequester | LongLivedToken | NewTokenAudience => {
                push(
                    buf,
                    a.t,
                    svc,
                    What::TokenReq,
                    0x200,
                    id,
                    run,
                    rng.next() as i64,
                );
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn push(buf: &mut Vec<Op>, t: i64, svc: u32, what: What, n: u16, attack: u16, run: u64, base: i64) {
    buf.push(Op {
        t,
        svc,
        what,
        n,
        attack,
        run,
        base,
        env: RunEnv::Own,
    });
}

/// Sets the environment of the ops pushed since `from`.
fn deploys_to(buf: &mut [Op], from: usize, env: RunEnv) {
    if env != RunEnv::Own {
        for op in &mut buf[from..] {
            op.env = env;
        }
    }
}

/// A GitLab pipeline: its ID token, a Vault JWT login with it, and secret reads.
#[allow(clippy::too_many_arguments)]
fn plan_pipeline(
    svc: u32,
    t: i64,
    run: u64,
    attack: u16,
    env: RunEnv,
    buf: &mut Vec<Op>,
    rng: &mut Rng,
) {
    let from = buf.len();
    push(buf, t, svc, What::GlClaims, 0, attack, run, t);
    let tl = t + rng.range(1, 5) as i64;
    push(buf, tl, svc, What::LoginReq, 0, attack, run, t);
    push(buf, tl, svc, What::LoginResp, 0, attack, run, t);
    for i in 0..rng.range(1, 3) as u16 {
        let tr = tl + rng.range(2, 90) as i64;
        push(buf, tr, svc, What::ReadReq, i, attack, run, t);
        push(buf, tr, svc, What::ReadResp, i, attack, run, t);
    }
    deploys_to(buf, from, env);
}

/// An AppRole login and the reads its token makes (every 30 minutes).
fn plan_approle_login(
    svc: u32,
    t: i64,
    run: u64,
    attack: u16,
    reads: u16,
    buf: &mut Vec<Op>,
    rng: &mut Rng,
) {
    push(buf, t, svc, What::LoginReq, 0, attack, run, t);
    push(buf, t, svc, What::LoginResp, 0, attack, run, t);
    for i in 0..reads {
        let tr = t + 30 + i64::from(i) * 1800 + rng.range(0, 60) as i64;
        push(buf, tr, svc, What::ReadReq, i, attack, run, t);
        push(buf, tr, svc, What::ReadResp, i, attack, run, t);
    }
}

#[derive(Clone, Debug, Default)]
struct SvcState {
    /// AppRole: the next login.
    next: i64,
}

/// A rendered record and, for attack records, its answer-key line.
struct Rendered<'a> {
    line: &'a str,
    label: Option<LabelLine<'a>>,
}

/// Renders planned records.
struct Renderer<'a> {
    sim: &'a Simulation,
    attacks: &'a [Attack],
    line: String,
    id: String,
    identity: String,
}

impl<'a> Renderer<'a> {
    fn new(sim: &'a Simulation, attacks: &'a [Attack]) -> Self {
        Renderer {
            sim,
            attacks,
            line: String::with_capacity(4096),
            id: String::with_capacity(64),
            identity: String::with_capacity(128),
        }
    }

    fn render(&mut self, op: &Op) -> Rendered<'_> {
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
                let sha = run_rng.hex(40);
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
                let sha = run_rng.hex(40);
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
    fn github_ip(&self, svc: u32, s: &Service, hosted: bool, start: i64, rng: &mut Rng) -> String {
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
    fn gitlab_ip(&self, s: &Service, rng: &mut Rng) -> String {
        if s.hosted {
            hosted_ip(&GITLAB_BLOCKS, 2, rng)
        } else {
            format!("10.30.{}.{}", rng.range(0, 3), rng.range(10, 250))
        }
    }
}

/// The display name of a workflow file (`deploy.yml` → `Deploy`, `ci.yml` → `CI`).
fn workflow_name(file: &str) -> String {
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
fn hosted_ip(blocks: &[u8], pool: u64, rng: &mut Rng) -> String {
    let mut p = Rng::from(&[pool, rng.below(HOSTED_PREFIXES)]);
    let a = *p.pick(blocks);
    let b = p.below(256);
    format!("{a}.{b}.{}.{}", rng.range(0, 255), rng.range(1, 254))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Settings {
        Settings {
            seed: 3,
            identities: 40,
            days: 10,
            ..Settings::default()
        }
    }

    #[test]
    fn output_is_deterministic_and_time_ordered() {
        let sim = Simulation::new(small()).expect("sim");
        let mut a = Vec::new();
        let mut la = Vec::new();
        let summary = sim.run(&mut a, Some(&mut la), None).expect("run");
        let mut b = Vec::new();
        let mut lb = Vec::new();
        Simulation::new(small())
            .expect("sim")
            .run(&mut b, Some(&mut lb), None)
            .expect("run");
        assert_eq!(a, b);
        assert_eq!(la, lb);
        assert!(summary.records > 10_000, "{summary:?}");
        assert!(summary.attacks >= 5, "{summary:?}");
        assert_eq!(summary.attacks_skipped, 0, "{summary:?}");
        let mut last = String::new();
        let mut ordered = 0;
        for line in String::from_utf8(a).expect("utf8").lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("json");
            let t = ["time", "eventTime", "requestReceivedTimestamp"]
                .iter()
                .find_map(|k| v[*k].as_str().map(str::to_string))
                .or_else(|| {
                    v["iat"]
                        .as_i64()
                        .map(|s| Timestamp::from_micros(s * 1_000_000).to_rfc3339())
                })
                .expect("time");
            if t >= last {
                ordered += 1;
            }
            last = t;
        }
        // Only replayed tokens carry their original (earlier) time.
        assert!(ordered as u64 + u64::from(summary.attacks) >= summary.records);
    }

    #[test]
    fn every_variant_fits_some_service_and_labels_list_attack_records() {
        let sim = Simulation::new(Settings {
            seed: 11,
            identities: 400,
            days: 21,
            attacks: Some(48),
            ..Settings::default()
        })
        .expect("sim");
        let (attacks, skipped) = sim.plan_attacks();
        assert_eq!(skipped, 0);
        let variants: HashSet<Variant> = attacks.iter().map(|a| a.variant).collect();
        assert_eq!(variants.len(), Variant::CLASSIC.len(), "{variants:?}");
        let services: HashSet<u32> = attacks.iter().map(|a| a.svc).collect();
        assert_eq!(services.len(), attacks.len(), "one attack per service");
    }

    #[test]
    fn native_record_ids_are_unique() {
        let sim = Simulation::new(Settings {
            seed: 11,
            identities: 200,
            days: 14,
            attacks: Some(32),
            ..Settings::default()
        })
        .expect("sim");
        let (attacks, _) = sim.plan_attacks();
        assert!(
            attacks
                .iter()
                .any(|a| a.variant == Variant::AwsKeyExfiltrated)
        );
        let mut out = Vec::new();
        sim.run(&mut out, None, None).expect("run");
        let text = String::from_utf8(out).expect("utf8");
        let value = |line: &str, key: &str| {
            line.split_once(key)
                .and_then(|(_, rest)| rest.split('"').next())
                .map(str::to_string)
        };
        // CloudTrail eventID, Kubernetes auditID per stage, Vault request.id per entry type.
        let mut seen = HashSet::new();
        let mut checked = 0;
        for line in text.lines() {
            let key = if let Some(id) = value(line, "\"eventID\":\"") {
                id
            } else if let Some(id) = value(line, "\"auditID\":\"") {
                format!("{id}/{}", value(line, "\"stage\":\"").unwrap_or_default())
            } else if line.contains("\"type\":\"re") {
                let kind = value(line, "\"type\":\"").unwrap_or_default();
                let id = value(line, "\"id\":\"").expect("vault request id");
                format!("{id}/{kind}")
            } else {
                continue;
            };
            checked += 1;
            assert!(seen.insert(key.clone()), "{key} appears twice");
        }
        assert!(checked > 100_000, "{checked}");
    }

    #[test]
    fn office_hours_are_office_hours() {
        let mut rng = Rng(5);
        for _ in 0..10_000 {
            let s = office_secs(&mut rng);
            assert!((8 * 3600..20 * 3600).contains(&s));
        }
    }

    #[test]
    fn local_time_follows_the_zone() {
        let sim = Simulation::new(small()).expect("sim");
        // 2026-03-23 09:00 in Berlin is 08:00 UTC; a week later (summer time) 07:00 UTC.
        assert_eq!(sim.local(0, 9 * 3600) % 86_400, 8 * 3600);
        assert_eq!(sim.local(7, 9 * 3600) % 86_400, 7 * 3600);
    }
}
