//! When things happen: each service's day planned as records to write (`Op`s) — pipeline
//! runs, deploys on a release train, AppRole logins and reads, the benign changes — in event
//! time, before any record is rendered.

use super::*;

/// What one planned record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum What {
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
    pub(super) fn format(self) -> Format {
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
pub(super) const CHANGE: u16 = 0x8000;

/// One planned record: enough to render it later, deterministically.
#[derive(Clone, Copy, Debug)]
pub(super) struct Op {
    /// When it is written (Unix seconds).
    pub(super) t: i64,
    pub(super) svc: u32,
    pub(super) what: What,
    /// Sub-index (job, use, replica).
    pub(super) n: u16,
    /// 1-based attack number, 0 for normal traffic; with [`CHANGE`] set, the record shows the
    /// benign change of the service.
    pub(super) attack: u16,
    /// The run or credential it belongs to (a seed).
    pub(super) run: u64,
    /// The run's start (Unix seconds), or a pod seed for Kubernetes.
    pub(super) base: i64,
    /// The environment the run deploys to.
    pub(super) env: RunEnv,
    /// A release train's promotion deploys the commit of this earlier run (0: its own).
    pub(super) sha_of: u64,
}

impl Op {
    pub(super) fn key(&self) -> (i64, u32, What, u16, u64) {
        (self.t, self.svc, self.what, self.n, self.run)
    }
}

impl Simulation {
    /// Plans one service's ordinary traffic for day `d`.
    pub(super) fn plan_day(
        &self,
        svc: u32,
        s: &Service,
        d: u32,
        st: &mut SvcState,
        buf: &mut Vec<Op>,
    ) {
        let mut rng = Rng::from(&[self.settings.seed, 3, u64::from(svc), u64::from(d)]);
        let day = self.t0 + i64::from(d) * 86_400;
        let is_weekday = weekday(day) < 5;
        match s.kind {
            Kind::Deploy => {
                if is_weekday {
                    let runs = rng.range(u64::from(s.runs.0), u64::from(s.runs.1));
                    let mut staged: Vec<(i64, u64)> = Vec::new();
                    for _ in 0..runs {
                        let t = self.local(d, self.office(&mut rng));
                        let run = rng.next();
                        staged.push((t, run));
                        self.plan_github_run(svc, s, t, run, 0, RunEnv::Own, buf, &mut rng);
                    }
                    if let Some(train) = &s.train
                        && self.promotes(train, d)
                    {
                        // The promotion: after the morning's staging runs, in the afternoon,
                        // of the last commit staging got.
                        let t = self.local(d, train.secs + rng.below(5400) as u32);
                        let run = rng.next();
                        let from = buf.len();
                        self.plan_github_run(svc, s, t, run, 0, RunEnv::Production, buf, &mut rng);
                        promotes_commit_of(buf, from, staged_before(&staged, t, st.staged));
                    }
                    if let Some((_, run)) = staged.iter().max_by_key(|(t, _)| *t) {
                        st.staged = *run;
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
                    let mut staged: Vec<(i64, u64)> = Vec::new();
                    for _ in 0..runs {
                        let t = self.local(d, self.office(&mut rng));
                        let run = rng.next() & !(1 << 63);
                        staged.push((t, run));
                        plan_pipeline(svc, t, run, 0, RunEnv::Own, buf, &mut rng);
                    }
                    if let Some(train) = &s.train
                        && self.promotes(train, d)
                    {
                        let t = self.local(d, train.secs + rng.below(5400) as u32);
                        let run = rng.next() & !(1 << 63);
                        let from = buf.len();
                        plan_pipeline(svc, t, run, 0, RunEnv::Production, buf, &mut rng);
                        promotes_commit_of(buf, from, staged_before(&staged, t, st.staged));
                    }
                    if let Some((_, run)) = staged.iter().max_by_key(|(t, _)| *t) {
                        st.staged = *run;
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
}

impl Simulation {
    /// A GitHub workflow run: per job an OIDC token, an STS exchange and a few API calls.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn plan_github_run(
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
}

impl Simulation {
    /// Plans the first run that shows a service's benign change (later runs show it too).
    pub(super) fn plan_change(&self, svc: u32, s: &Service, t: i64, buf: &mut Vec<Op>) {
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
}

#[allow(clippy::too_many_arguments)]
pub(super) fn push(
    buf: &mut Vec<Op>,
    t: i64,
    svc: u32,
    what: What,
    n: u16,
    attack: u16,
    run: u64,
    base: i64,
) {
    buf.push(Op {
        t,
        svc,
        what,
        n,
        attack,
        run,
        base,
        env: RunEnv::Own,
        sha_of: 0,
    });
}

/// Marks the ops pushed since `from` as deploying the commit of run `of` (0: their own).
fn promotes_commit_of(buf: &mut [Op], from: usize, of: u64) {
    for op in &mut buf[from..] {
        op.sha_of = of;
    }
}

/// The run whose commit a promotion at `t` deploys: the day's last staging run before it,
/// else the last one of an earlier day (0: none yet).
fn staged_before(day: &[(i64, u64)], t: i64, earlier: u64) -> u64 {
    day.iter()
        .filter(|(ts, _)| *ts < t)
        .max_by_key(|(ts, _)| *ts)
        .map_or(earlier, |(_, run)| *run)
}

/// Sets the environment of the ops pushed since `from`.
pub(super) fn deploys_to(buf: &mut [Op], from: usize, env: RunEnv) {
    if env != RunEnv::Own {
        for op in &mut buf[from..] {
            op.env = env;
        }
    }
}

/// A GitLab pipeline: its ID token, a Vault JWT login with it, and secret reads.
#[allow(clippy::too_many_arguments)]
pub(super) fn plan_pipeline(
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
pub(super) fn plan_approle_login(
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
pub(super) struct SvcState {
    /// AppRole: the next login.
    pub(super) next: i64,
    /// Release trains: the last run that deployed to staging (its commit is what a
    /// promotion deploys when no staging run came earlier that day).
    pub(super) staged: u64,
}
