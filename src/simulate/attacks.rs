//! The answer key's side of the simulation: the attack kinds and variants, the benign
//! changes the detectors are expected to flag all the same, and how attacks are chosen,
//! placed on services with enough history, and planned as records.

use super::*;

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

    pub(super) fn fits(self, s: &Service) -> bool {
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
    pub(super) fn days(self, s: &Service) -> Days {
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
    pub(super) fn local_secs(self, rng: &mut Rng) -> u32 {
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
    pub(super) fn expected(self, what: What) -> bool {
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
    pub(super) fn needs_schedule(self) -> bool {
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

/// An attack as planned.
#[derive(Clone, Debug)]
pub(super) struct Attack {
    pub(super) variant: Variant,
    pub(super) svc: u32,
    /// `namespace:name` of the service account behind an unexpected token request.
    pub(super) requester: String,
    pub(super) t: i64,
    pub(super) ip: String,
    pub(super) runner_id: u32,
    /// The audience of a token requested for an audience the account never had.
    pub(super) audience: &'static str,
}

impl Simulation {
    /// Plans the attacks: days, variants, services (chosen among those with enough history
    /// on that day), times and attacker addresses.
    pub(super) fn plan_attacks(&self) -> (Vec<Attack>, u32) {
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
}

impl Simulation {
    /// Whether the service's main identity has, by day `d`, comfortably more history than the
    /// variant's detector needs to be armed (`off_hours_mint`: 20 mints over 5 days; the
    /// others: 5 to 10 events over 3 days).
    pub(super) fn enough_history(&self, s: &Service, d: u32, v: Variant) -> bool {
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
}

impl Simulation {
    /// Plans the records of one attack.
    pub(super) fn plan_attack(&self, idx: usize, a: &Attack, buf: &mut Vec<Op>) {
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
