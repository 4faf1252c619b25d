//! Organisation archetypes (`nhiwatch simulate --profile`): fleets that differ the way real
//! ones do, so detection quality can be measured on organisations nobody tuned against.
//!
//! `classic` is the organisation the detectors were first built on (continuous deployment,
//! one environment per deploy workflow, Europe/Berlin office hours); its output is fixed for a
//! seed and is what the shipped sample week was written with. Every other profile is an
//! archetype whose *parameters are drawn from the seed* within the archetype's ranges (time
//! zone, office hours, schedules, the mix of services, promotion cadence, runner fleets,
//! rollout sizes and timing), so no two seeds share a hand-set constant and a detector cannot
//! be tuned to one organisation's numbers.
//!
//! Profiles are split for honest scoring (see `scripts/quality`): the detectors are tuned on
//! [`Profile::TUNING`] and their quality is reported on [`Profile::REPORT`], which are never
//! used to tune.

use super::render::Rng;

/// An organisation archetype.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Profile {
    /// Continuous deployment, one environment per deploy workflow, Europe/Berlin: the
    /// organisation the detectors were first built on (and the shipped sample week).
    #[default]
    Classic,
    /// Release trains: deploy workflows and pipelines deploy to staging several times a day
    /// and promote to production on a weekly or fortnightly cadence; CI workflows that never
    /// name an environment.
    ReleaseTrain,
    /// A few monorepos holding dozens of workflows each (`deploy-<service>.yml`, `ci.yml`,
    /// nightly end-to-end suites).
    Monorepo,
    /// Mostly self-hosted runners: a GitLab runner fleet that grows during the run, scheduled
    /// pipelines at night beside production deploys by day, self-hosted GitHub runners.
    SelfHosted,
    /// Kubernetes-heavy: many namespaces and service accounts, projected tokens for several
    /// audiences (API server, Vault, AWS STS via IRSA).
    Kubernetes,
    /// Vault-heavy: many AppRoles with long-lived tokens, roles that name no environment,
    /// GitLab pipelines logging in with JWT.
    Vault,
    /// A small organisation (about 40 identities) where fleet-level judgement has little to
    /// go on.
    Small,
    /// A large organisation (2,000 identities and more) of every kind of service.
    Large,
}

impl Profile {
    /// Every profile.
    pub const ALL: [Profile; 8] = [
        Profile::Classic,
        Profile::ReleaseTrain,
        Profile::Monorepo,
        Profile::SelfHosted,
        Profile::Kubernetes,
        Profile::Vault,
        Profile::Small,
        Profile::Large,
    ];

    /// The profiles the detectors are tuned on.
    pub const TUNING: [Profile; 2] = [Profile::Classic, Profile::ReleaseTrain];

    /// The profiles quality is reported on; never used to tune.
    pub const REPORT: [Profile; 6] = [
        Profile::Monorepo,
        Profile::SelfHosted,
        Profile::Kubernetes,
        Profile::Vault,
        Profile::Small,
        Profile::Large,
    ];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Classic => "classic",
            Profile::ReleaseTrain => "release-train",
            Profile::Monorepo => "monorepo",
            Profile::SelfHosted => "self-hosted",
            Profile::Kubernetes => "kubernetes",
            Profile::Vault => "vault",
            Profile::Small => "small",
            Profile::Large => "large",
        }
    }

    /// Identities simulated when `--identities` is not given.
    pub fn default_identities(self) -> u32 {
        match self {
            Profile::Classic => 200,
            Profile::Small => 40,
            Profile::Large => 2000,
            _ => 300,
        }
    }
}

/// Time zones an organisation's office hours may follow (with and without daylight saving,
/// both hemispheres).
const ZONES: [&str; 10] = [
    "Europe/Berlin",
    "Europe/London",
    "America/New_York",
    "America/Chicago",
    "America/Los_Angeles",
    "America/Sao_Paulo",
    "Asia/Tokyo",
    "Asia/Kolkata",
    "Asia/Singapore",
    "Australia/Sydney",
];

/// Names of Kubernetes service accounts beside a workload's own.
const SA_ROLES: [&str; 6] = [
    "worker",
    "migrator",
    "cron",
    "exporter",
    "sync",
    "admin-api",
];

/// An organisation's parameters (drawn from the seed, except for `classic`).
#[derive(Clone, Debug)]
pub(crate) struct Params {
    /// Weights of service kinds: GitHub deploy, GitHub nightly, GitLab pipeline, Vault
    /// AppRole, Kubernetes workload, GitHub CI workflow.
    pub mix: [u32; 6],
    /// Weights of a single-environment deploy's environment: production, staging, development.
    pub envs: [u32; 3],
    /// Share of GitHub workflows on GitHub-hosted runners.
    pub gh_hosted: f64,
    /// Share of GitLab projects on GitLab's SaaS runners.
    pub gl_hosted: f64,
    /// Share of deploy workflows and pipelines that are release trains.
    pub trains: f64,
    /// A release day shared by the whole organisation (weekday, 0 = Monday), else each train
    /// picks its own.
    pub release_day: Option<u8>,
    /// Promotion every 7 days, or every 14 with this probability.
    pub fortnightly: f64,
    /// Local hour promotions start at.
    pub release_hour: u32,
    /// Monorepos holding deploy workflows (`deploy-<service>.yml`); 0 for a repository per
    /// service.
    pub monorepos: u32,
    /// Share of deploy workflows that live in a monorepo.
    pub mono_share: f64,
    /// Share of deploy repositories that also have a CI workflow (besides CI-only services).
    pub ci_beside_deploy: f64,
    /// Share of CI workflows that assume an AWS role (build caches).
    pub ci_aws: f64,
    /// Share of GitLab projects with a nightly schedule.
    pub gl_scheduled: f64,
    /// Share of schedules whose pipelines name no environment (the rest run as `testing`).
    pub sched_noenv: f64,
    /// GitLab self-hosted runner managers in the fleet at the start (0: the classic pool).
    pub runner_managers: u32,
    /// Runner managers a self-hosted project's jobs may run on.
    pub runners_per_project: (u32, u32),
    /// Runner managers registered during the run, each adopted by a share of the projects.
    pub registrations: u32,
    /// Service accounts per Kubernetes namespace.
    pub sas_per_ns: (u32, u32),
    /// Share of service accounts whose pods also mount a Vault-audience token.
    pub aud_vault: f64,
    /// Share of service accounts with an IRSA token (audience `sts.amazonaws.com`).
    pub aud_sts: f64,
    /// Kubernetes replicas.
    pub replicas: (u8, u8),
    /// AppRole token lifetimes to choose from, seconds.
    pub approle_ttls: Vec<i64>,
    /// Share of AppRoles whose name and metadata name their environment.
    pub role_env_named: f64,
    /// Local hour office hours start.
    pub office_start: u32,
    /// The local hour (0–4) most nightly schedules start around; schedules run in UTC.
    pub cron_hour: u32,
    /// Share of services onboarded during the run.
    pub onboard: f64,
    /// Share of eligible services a fleet change reaches, and how many hours it takes to
    /// reach them all.
    pub rollout_share: f64,
    /// Hours over which a rollout reaches its services.
    pub rollout_spread_hours: u32,
    /// Which fleet changes happen: AppRole policy, GitLab runner replacement, self-hosted
    /// subnet move, Kubernetes audience.
    pub rollouts: [bool; 4],
    /// When each happens, as a share of the simulated days.
    pub rollout_at: [f64; 4],
    /// Scale of the benign-change rates.
    pub changes: f64,
    /// Time zone of office hours.
    pub timezone: &'static str,
    /// The second octet of the self-hosted GitHub runners' network (10.x.0.0/16).
    pub gh_net: u8,
}

impl Params {
    /// The parameters of a profile for a seed.
    pub fn draw(profile: Profile, seed: u64) -> Params {
        let mut r = Rng::from(&[seed, 40, profile as u64]);
        let between = |r: &mut Rng, lo: f64, hi: f64| lo + (hi - lo) * r.unit();
        let mut p = Params {
            mix: [22, 8, 22, 22, 26, 0],
            envs: [5, 3, 2],
            gh_hosted: 0.7,
            gl_hosted: 0.3,
            trains: 0.0,
            release_day: None,
            fortnightly: 0.0,
            release_hour: 14,
            monorepos: 0,
            mono_share: 0.0,
            ci_beside_deploy: 0.0,
            ci_aws: 0.0,
            gl_scheduled: 0.3,
            sched_noenv: 0.0,
            runner_managers: 0,
            runners_per_project: (3, 3),
            registrations: 0,
            sas_per_ns: (1, 1),
            aud_vault: 0.0,
            aud_sts: 0.0,
            replicas: (1, 3),
            approle_ttls: vec![3600],
            role_env_named: 1.0,
            office_start: 8,
            cron_hour: 0,
            onboard: 0.12,
            rollout_share: 1.0,
            rollout_spread_hours: 0,
            rollouts: [true; 4],
            rollout_at: [0.55, 0.6, 0.7, 0.5],
            changes: 1.0,
            timezone: "Europe/Berlin",
            gh_net: 20,
        };
        if profile == Profile::Classic {
            return p;
        }
        // What every archetype draws.
        p.timezone = *r.pick(&ZONES);
        p.office_start = r.range(7, 10) as u32;
        p.cron_hour = r.range(0, 4) as u32;
        p.gh_hosted = between(&mut r, 0.5, 0.9);
        p.gl_hosted = between(&mut r, 0.1, 0.5);
        p.trains = between(&mut r, 0.0, 0.35);
        p.release_day = r.chance(0.5).then(|| r.range(0, 3) as u8);
        p.fortnightly = between(&mut r, 0.0, 0.4);
        p.release_hour = r.range(9, 16) as u32;
        p.ci_beside_deploy = between(&mut r, 0.2, 0.7);
        p.ci_aws = between(&mut r, 0.2, 0.8);
        p.gl_scheduled = between(&mut r, 0.2, 0.6);
        p.sched_noenv = between(&mut r, 0.3, 1.0);
        p.runner_managers = r.range(3, 8) as u32;
        let lo = r.range(1, 2) as u32;
        p.runners_per_project = (lo, lo + r.range(0, 2) as u32);
        p.registrations = r.range(0, 2) as u32;
        p.sas_per_ns = (1, r.range(1, 3) as u32);
        p.aud_vault = between(&mut r, 0.0, 0.3);
        p.aud_sts = between(&mut r, 0.0, 0.3);
        p.replicas = (1, r.range(2, 4) as u8);
        p.approle_ttls = vec![*r.pick(&[1800, 3600, 7200]), *r.pick(&[3600, 14_400])];
        p.role_env_named = between(&mut r, 0.6, 1.0);
        p.onboard = between(&mut r, 0.05, 0.2);
        p.rollout_share = between(&mut r, 0.5, 1.0);
        p.rollout_spread_hours = r.range(0, 6) as u32;
        p.rollouts = [r.chance(0.7), r.chance(0.6), r.chance(0.6), r.chance(0.7)];
        for f in &mut p.rollout_at {
            *f = between(&mut r, 0.3, 0.8);
        }
        p.changes = between(&mut r, 0.5, 1.5);
        p.gh_net = r.range(16, 99) as u8;
        let w = |r: &mut Rng, lo: u64, hi: u64| r.range(lo, hi) as u32;
        p.mix = [
            w(&mut r, 15, 25),
            w(&mut r, 4, 10),
            w(&mut r, 12, 25),
            w(&mut r, 12, 25),
            w(&mut r, 15, 30),
            w(&mut r, 5, 15),
        ];
        p.envs = [w(&mut r, 3, 6), w(&mut r, 2, 4), w(&mut r, 1, 3)];
        // What sets each archetype apart.
        match profile {
            Profile::Classic => {}
            Profile::ReleaseTrain => {
                p.trains = between(&mut r, 0.6, 0.9);
                p.mix[0] = w(&mut r, 25, 35);
                p.mix[5] = w(&mut r, 10, 20);
                p.ci_beside_deploy = between(&mut r, 0.5, 0.9);
            }
            Profile::Monorepo => {
                p.monorepos = r.range(1, 3) as u32;
                p.mono_share = between(&mut r, 0.6, 0.95);
                p.mix[0] = w(&mut r, 30, 40);
                p.mix[1] = w(&mut r, 8, 14);
                p.mix[5] = w(&mut r, 3, 8);
                p.trains = between(&mut r, 0.0, 0.6);
            }
            Profile::SelfHosted => {
                p.gh_hosted = between(&mut r, 0.05, 0.25);
                p.gl_hosted = between(&mut r, 0.0, 0.1);
                p.mix[2] = w(&mut r, 30, 40);
                p.gl_scheduled = between(&mut r, 0.4, 0.7);
                p.runner_managers = r.range(6, 30) as u32;
                let lo = r.range(1, 3) as u32;
                p.runners_per_project = (lo, lo + r.range(1, 3) as u32);
                p.registrations = r.range(1, 3) as u32;
                p.rollouts[1] = r.chance(0.5);
                p.rollouts[2] = true;
            }
            Profile::Kubernetes => {
                p.mix[4] = w(&mut r, 45, 60);
                p.sas_per_ns = (1, r.range(2, 4) as u32);
                p.aud_vault = between(&mut r, 0.1, 0.4);
                p.aud_sts = between(&mut r, 0.1, 0.5);
                p.replicas = (1, r.range(3, 6) as u8);
                p.rollouts[3] = true;
            }
            Profile::Vault => {
                p.mix[3] = w(&mut r, 35, 45);
                p.mix[2] = w(&mut r, 20, 30);
                p.approle_ttls = vec![
                    *r.pick(&[14_400, 28_800]),
                    86_400,
                    *r.pick(&[86_400 * 7, 86_400 * 32]),
                ];
                p.role_env_named = between(&mut r, 0.4, 0.8);
                p.rollouts[0] = true;
            }
            Profile::Small => {
                p.rollout_share = between(&mut r, 0.6, 1.0);
            }
            Profile::Large => {
                p.monorepos = r.range(0, 3) as u32;
                p.mono_share = between(&mut r, 0.1, 0.4);
                p.trains = between(&mut r, 0.1, 0.5);
            }
        }
        p
    }
}

/// Repositories that hold many services' deploy workflows.
const MONOREPOS: [&str; 3] = ["platform", "services", "core"];
/// GitLab groups projects live in.
const GITLAB_GROUPS: [&str; 4] = ["acme-platform", "acme-data", "acme-web", "acme-infra"];

/// Seconds after UTC midnight of a local time of day (for schedules, which run in UTC).
fn utc_secs(local: u32, offset: i32) -> u32 {
    (i64::from(local) - i64::from(offset)).rem_euclid(86_400) as u32
}

/// The services of an archetype's organisation, until it has `settings.identities`
/// identities.
pub(super) fn services(
    p: &Params,
    settings: &super::Settings,
    tz: &jiff::tz::TimeZone,
    t0: i64,
) -> Vec<super::Service> {
    use super::{APPS, Env, Kind, Sched, Service, Train};
    let days = settings.days;
    let mut r = Rng::from(&[settings.seed, 21, settings.profile as u64]);
    let offset = jiff::Timestamp::from_second(t0)
        .map(|t| tz.to_offset(t).seconds())
        .unwrap_or(0);
    let pick_weighted = |r: &mut Rng, w: &[u32]| -> usize {
        let total: u32 = w.iter().sum();
        let mut x = r.below(u64::from(total.max(1))) as u32;
        for (i, wi) in w.iter().enumerate() {
            if x < *wi {
                return i;
            }
            x -= wi;
        }
        w.len() - 1
    };
    // Schedules mostly run at night, local time (around the organisation's hour); some at
    // midday.
    let cron = |r: &mut Rng| -> u32 {
        let local = if r.chance(0.8) {
            (p.cron_hour + r.below(3) as u32 + 23) % 24 * 3600 + r.below(3600) as u32
        } else {
            (12 + r.below(3) as u32) * 3600 + r.below(3600) as u32
        };
        utc_secs(local, offset)
    };
    let groups = &GITLAB_GROUPS[..r.range(1, GITLAB_GROUPS.len() as u64) as usize];
    let monorepos: Vec<String> = MONOREPOS[..(p.monorepos as usize).min(MONOREPOS.len())]
        .iter()
        .map(|m| format!("acme/{m}"))
        .collect();
    let mut names: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut services: Vec<Service> = Vec::new();
    let mut add = |s: Service, names: &mut std::collections::HashSet<String>| {
        names.extend(s.identities());
        services.push(s);
    };
    // Each monorepo has its CI workflow and a nightly end-to-end suite.
    for (k, repo) in monorepos.iter().enumerate() {
        let app = MONOREPOS[k].to_string();
        let mut ci = Service::new(Kind::Ci, app.clone(), Env::Development);
        ci.repo = repo.clone();
        ci.hosted = r.chance(p.gh_hosted);
        ci.runs = (8, 20);
        ci.aws = r.chance(p.ci_aws);
        ci.host = r.below(65_536) as u16;
        add(ci, &mut names);
        let mut e2e = Service::new(Kind::Nightly, app, Env::Staging);
        e2e.repo = repo.clone();
        e2e.workflow = "e2e-nightly.yml".into();
        e2e.hosted = r.chance(p.gh_hosted);
        e2e.cron = cron(&mut r);
        e2e.jobs = r.range(2, 6) as u8;
        e2e.host = r.below(65_536) as u16;
        add(e2e, &mut names);
    }
    let mut i = 0usize;
    while names.len() < settings.identities as usize {
        let kind = [
            Kind::Deploy,
            Kind::Nightly,
            Kind::Gitlab,
            Kind::AppRole,
            Kind::K8s,
            Kind::Ci,
        ][pick_weighted(&mut r, &p.mix)];
        let base = APPS[i % APPS.len()];
        let app = if i < APPS.len() {
            base.to_string()
        } else {
            format!("{base}-{}", i / APPS.len() + 1)
        };
        i += 1;
        let env = [Env::Production, Env::Staging, Env::Development][pick_weighted(&mut r, &p.envs)];
        let start_day = if days >= 4 && r.chance(p.onboard) {
            r.range(1, u64::from(days * 2 / 3).max(1)) as u32
        } else {
            0
        };
        let train = |r: &mut Rng| Train {
            weekday: p.release_day.unwrap_or_else(|| r.range(0, 4) as u8),
            every: if r.chance(p.fortnightly) { 14 } else { 7 },
            phase: r.below(2) as u8,
            secs: p.release_hour * 3600 + r.below(3600) as u32,
        };
        let mut s = Service::new(kind, app.clone(), env);
        s.start_day = start_day;
        let lo = r.range(2, 4) as u8;
        s.runs = (lo, lo + r.range(1, 3) as u8);
        s.cron = cron(&mut r);
        s.jobs = r.range(2, 4) as u8;
        s.shared_reads = r.chance(0.5);
        s.replicas = r.range(u64::from(p.replicas.0), u64::from(p.replicas.1)) as u8;
        s.phase = r.below(3600) as u32;
        s.restart = r.below(86_400) as u32;
        s.host = r.below(65_536) as u16;
        match kind {
            Kind::Deploy => {
                if r.chance(p.trains) {
                    s.env = Env::Staging;
                    s.train = Some(train(&mut r));
                }
                s.hosted = r.chance(p.gh_hosted);
                let mono = !monorepos.is_empty() && r.chance(p.mono_share);
                if mono {
                    s.repo = r.pick(&monorepos).clone();
                    s.workflow = format!("deploy-{app}.yml");
                } else if r.chance(0.25) {
                    s.workflow = "release.yml".into();
                }
                let ci = !mono && r.chance(p.ci_beside_deploy);
                let (repo, hosted, host) = (s.repo.clone(), s.hosted, s.host);
                add(s, &mut names);
                if ci {
                    let mut c = Service::new(Kind::Ci, app, Env::Development);
                    c.repo = repo;
                    c.hosted = hosted;
                    c.host = host;
                    c.start_day = start_day;
                    c.runs = (4, 4 + r.range(2, 8) as u8);
                    c.aws = r.chance(p.ci_aws);
                    add(c, &mut names);
                }
                continue;
            }
            Kind::Nightly => {
                s.env = if r.chance(0.5) {
                    Env::Development
                } else {
                    Env::Staging
                };
                s.hosted = r.chance(p.gh_hosted);
            }
            Kind::Ci => {
                s.env = Env::Development;
                s.hosted = r.chance(p.gh_hosted);
                s.runs = (4, 4 + r.range(2, 8) as u8);
                s.aws = r.chance(p.ci_aws);
            }
            Kind::Gitlab => {
                s.repo = format!("{}/{app}", r.pick(groups));
                if r.chance(p.trains) {
                    s.env = Env::Staging;
                    s.train = Some(train(&mut r));
                }
                s.hosted = r.chance(p.gl_hosted);
                s.scheduled = r.chance(p.gl_scheduled);
                s.sched = if r.chance(p.sched_noenv) {
                    Sched::NoEnv
                } else {
                    Sched::Testing
                };
                if !s.hosted && p.runner_managers > 0 {
                    let n = r.range(
                        u64::from(p.runners_per_project.0),
                        u64::from(p.runners_per_project.1),
                    );
                    while (s.runners.len() as u64) < n.min(u64::from(p.runner_managers)) {
                        let id = 100 + r.below(u64::from(p.runner_managers)) as u32;
                        if !s.runners.contains(&id) {
                            s.runners.push(id);
                        }
                    }
                }
            }
            Kind::AppRole => {
                s.env_named = r.chance(p.role_env_named);
                s.ttl = *r.pick(&p.approle_ttls);
            }
            Kind::K8s => {
                // A namespace holds the workload's account and sometimes a few more.
                let n = r.range(u64::from(p.sas_per_ns.0), u64::from(p.sas_per_ns.1));
                let first = (r.below(SA_ROLES.len() as u64)) as usize;
                for j in 0..n as usize {
                    let mut k = s.clone();
                    if j > 0 {
                        k.sa = format!("{app}-{}", SA_ROLES[(first + j) % SA_ROLES.len()]);
                        k.phase = r.below(3600) as u32;
                        k.restart = r.below(86_400) as u32;
                    }
                    if r.chance(p.aud_sts) {
                        k.auds.push("sts.amazonaws.com");
                    }
                    if r.chance(p.aud_vault) {
                        k.auds.push("vault");
                    }
                    add(k, &mut names);
                }
                continue;
            }
        }
        add(s, &mut names);
    }
    services
}
