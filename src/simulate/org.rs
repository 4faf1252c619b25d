//! The organisation: its services (what kind, which environments, schedules, release trains,
//! runners), the fleet changes that roll over it, and the fixed world it lives in (apps,
//! address blocks, GitLab's SaaS runners, Kubernetes agents).

use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Days {
    Weekday,
    Weekend,
    Any,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
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
pub(super) enum Env {
    Production,
    Staging,
    Development,
}

impl Env {
    pub(super) fn name(self) -> &'static str {
        match self {
            Env::Production => "production",
            Env::Staging => "staging",
            Env::Development => "development",
        }
    }
    pub(super) fn short(self) -> &'static str {
        match self {
            Env::Production => "prod",
            Env::Staging => "staging",
            Env::Development => "dev",
        }
    }
    pub(super) fn account(self) -> &'static str {
        match self {
            Env::Production => AWS_ACCOUNTS[0].0,
            Env::Staging => AWS_ACCOUNTS[1].0,
            Env::Development => AWS_ACCOUNTS[2].0,
        }
    }
}

/// The environment one run deploys to (`Op::env`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub(super) enum RunEnv {
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
pub(super) enum Sched {
    /// The project's own environment (`classic`).
    Own,
    /// Nothing: test suites that name no environment.
    NoEnv,
    /// The `testing` environment.
    Testing,
}

/// A release train: staging several times a day, production on a cadence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Train {
    /// Promotion weekday (0 = Monday).
    pub(super) weekday: u8,
    /// Every 7 or 14 days.
    pub(super) every: u8,
    /// Which week of a fortnight.
    pub(super) phase: u8,
    /// Local seconds of day promotions start at.
    pub(super) secs: u32,
}

/// One service of the organisation.
#[derive(Clone, Debug)]
pub(super) struct Service {
    pub(super) kind: Kind,
    pub(super) app: String,
    pub(super) env: Env,
    /// GitHub: the workflow file and its repository.
    pub(super) workflow: String,
    pub(super) repo: String,
    /// Deploys to staging and promotes to production on a cadence.
    pub(super) train: Option<Train>,
    /// GitLab: what scheduled pipelines deploy to.
    pub(super) sched: Sched,
    /// GitLab: the self-hosted runner managers its jobs run on (empty: the `classic` pool).
    pub(super) runners: Vec<u32>,
    /// Kubernetes: namespace, service account, and audiences beside the API server's.
    pub(super) ns: String,
    pub(super) sa: String,
    pub(super) auds: Vec<&'static str>,
    /// Vault: token lifetime, and whether the role names its environment.
    pub(super) ttl: i64,
    pub(super) env_named: bool,
    /// A CI workflow assumes an AWS role.
    pub(super) aws: bool,
    /// Vendor-hosted runners (GitHub, GitLab).
    pub(super) hosted: bool,
    /// The day it starts (onboarding).
    pub(super) start_day: u32,
    /// Runs per weekday (office-hours services).
    pub(super) runs: (u8, u8),
    /// Cron time, seconds after UTC midnight (nightly workflows, GitLab schedules).
    pub(super) cron: u32,
    /// A GitLab project that also has a nightly schedule.
    pub(super) scheduled: bool,
    /// Jobs of a nightly matrix.
    pub(super) jobs: u8,
    /// Deploys pull artifacts from the shared-services account.
    pub(super) shared_reads: bool,
    /// Kubernetes replicas.
    pub(super) replicas: u8,
    /// Seconds: phase of around-the-clock cycles, and daily pod restart time (UTC).
    pub(super) phase: u32,
    pub(super) restart: u32,
    /// A host number for stable addresses.
    pub(super) host: u16,
    /// A benign change and when it happens (Unix seconds).
    pub(super) change: Option<(Change, i64)>,
}

impl Service {
    /// A service with the `classic` organisation's defaults.
    pub(super) fn new(kind: Kind, app: String, env: Env) -> Service {
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
    pub(super) fn identities(&self) -> Vec<String> {
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
    pub(super) fn role(&self) -> String {
        if self.env_named {
            format!("{}-{}", self.app, self.env.name())
        } else {
            self.app.clone()
        }
    }

    /// Whether the service's change is in effect for a run started at `t`.
    pub(super) fn changed(&self, change: Change, t: i64) -> bool {
        self.change.is_some_and(|(c, at)| c == change && t >= at)
    }
}

/// Fleet changes, as Unix seconds (`i64::MAX` when outside the simulated days).
#[derive(Clone, Copy, Debug)]
pub(super) struct Rollouts {
    /// AppRoles get the `secret-rotation-write` policy.
    pub(super) policy: i64,
    /// GitLab's self-hosted runner managers 100–102 are replaced by 200–201.
    pub(super) gitlab_runners: i64,
    /// Self-hosted GitHub runners move from 10.20.0.0/16 to 10.21.0.0/16.
    pub(super) subnet: i64,
    /// Workloads also request tokens for the `vault` audience.
    pub(super) audience: i64,
}

pub(super) const APPS: [&str; 40] = [
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
pub(super) const GITHUB_BLOCKS: [u8; 8] = [4, 13, 20, 40, 51, 52, 104, 191];
/// Public /8 blocks of GitLab's SaaS runners.
pub(super) const GITLAB_BLOCKS: [u8; 2] = [34, 35];
/// /16 prefixes per hosted-runner pool.
pub(super) const HOSTED_PREFIXES: u64 = 48;
pub(super) const GITLAB_SAAS_RUNNERS: [u32; 4] = [12_270_807, 12_270_831, 12_270_852, 12_270_859];
/// First octets attackers come from (VPS providers); never a range the organisation uses.
pub(super) const ATTACKER_FIRST: [u8; 24] = [
    5, 31, 37, 45, 46, 62, 77, 78, 80, 82, 85, 89, 91, 92, 94, 95, 141, 146, 151, 158, 176, 185,
    193, 212,
];
pub(super) const K8S_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";
pub(super) const KUBELET_AGENT: &str = "kubelet/v1.31.2 (linux/amd64) kubernetes/4b8e819";

pub(super) fn weekday(t: i64) -> u32 {
    // 1970-01-01 was a Thursday; 0 = Monday.
    (t.div_euclid(86_400) + 3).rem_euclid(7) as u32
}

/// Office-hours local time of day for a push: mostly 08–19 with a lunch dip, sometimes early
/// evening.
pub(super) fn office_secs(rng: &mut Rng) -> u32 {
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
pub(super) fn classic_services(settings: &Settings) -> Vec<Service> {
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
    /// When fleet change `which` (0 policy, 1 GitLab runners, 2 subnet, 3 audience) reaches a
    /// service: a share of the services, over a few hours (`classic`: all at once).
    pub(super) fn rollout_at(&self, svc: u32, which: u64) -> i64 {
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
}

impl Simulation {
    /// The GitLab runner managers a self-hosted project's job started at `t` may run on.
    pub(super) fn gitlab_runners(&self, svc: u32, s: &Service, t: i64) -> Vec<u32> {
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
}

impl Simulation {
    /// Whether `day0 + secs` (UTC) is at night in the organisation's time zone (22–06h).
    pub(super) fn local_night(&self, day0: i64, secs: u32) -> bool {
        let Ok(ts) = jiff::Timestamp::from_second(day0 + i64::from(secs)) else {
            return false;
        };
        let hour = self.tz.to_datetime(ts).hour();
        !(6..22).contains(&hour)
    }
}

impl Simulation {
    /// Unix seconds of a local time of day on simulated day `d`.
    pub(super) fn local(&self, d: u32, secs: u32) -> i64 {
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
}

impl Simulation {
    /// Office-hours local seconds of day, shifted to the organisation's office start.
    pub(super) fn office(&self, rng: &mut Rng) -> u32 {
        let shift = self.params.office_start.saturating_sub(8) * 3600;
        (office_secs(rng) + shift).min(86_399)
    }
}

impl Simulation {
    /// Whether simulated day `d` is a promotion day of a release train.
    pub(super) fn promotes(&self, train: &Train, d: u32) -> bool {
        let day = self.t0 + i64::from(d) * 86_400;
        weekday(day) == u32::from(train.weekday)
            && (train.every <= 7 || (d / 7) % 2 == u32::from(train.phase))
    }
}
