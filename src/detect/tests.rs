//! The engine judged on small, hand-made fleets: each test is one shape of real traffic (a
//! release train, a build workflow that never named an environment, a runner re-registration
//! wave, projected tokens for a new audience, a pipeline whose nightly tests make the night
//! ordinary) and what the detectors must make of it, against the identity and its peers.

use super::*;
use crate::event::{RunnerKind, Source};
use crate::time::Timestamp;

/// Monday 2026-03-02, 00:00 UTC.
const T0: i64 = 1_772_409_600;

pub(super) fn at(day: i64, secs: i64) -> Timestamp {
    Timestamp::from_micros((T0 + day * 86_400 + secs) * 1_000_000)
}

fn weekday(day: i64) -> bool {
    day.rem_euclid(7) < 5
}

pub(super) struct Feed {
    pub(super) engine: Engine,
    out: Vec<Alert>,
    n: u64,
}

impl Feed {
    pub(super) fn new(detectors: &[&str]) -> Feed {
        Feed {
            engine: Engine::with_defaults(detectors).expect("engine"),
            out: Vec::new(),
            n: 0,
        }
    }

    pub(super) fn push(&mut self, mut e: Event) {
        self.n += 1;
        e.id = format!("e{}", self.n);
        self.engine.process(&e, &mut self.out);
    }

    pub(super) fn done(&mut self) -> Vec<Alert> {
        self.engine.flush(&mut self.out);
        std::mem::take(&mut self.out)
    }
}

/// A GitHub workflow's OIDC token.
pub(super) fn github(identity: &str, t: Timestamp, env: Option<&str>) -> Event {
    let mut e = Event::new(
        "",
        t,
        Source::GithubActions,
        "id_token",
        Action::Mint,
        identity,
    );
    e.environment = env.map(str::to_string);
    e.runner.kind = Some(RunnerKind::Hosted);
    e.scopes = vec!["aud:sts.amazonaws.com".into()];
    e
}

fn workflow(repo: usize, file: &str) -> String {
    format!("github:acme/r{repo}/.github/workflows/{file}")
}

/// `n` workflows named `file` deploying to `env` three times each weekday for `days` days.
fn office_days(f: &mut Feed, ids: &[String], days: std::ops::Range<i64>, env: Option<&str>) {
    for d in days.filter(|d| weekday(*d)) {
        for (i, id) in ids.iter().enumerate() {
            for h in [9, 12, 15] {
                f.push(github(id, at(d, h * 3600 + i as i64 * 60), env));
            }
        }
    }
}

#[test]
fn a_release_trains_first_production_deploy_is_routine_among_its_peers() {
    let mut f = Feed::new(&["cross_env_reuse"]);
    let ids: Vec<String> = (0..7).map(|i| workflow(i, "deploy.yml")).collect();
    office_days(&mut f, &ids, 0..8, Some("staging"));
    // Four of the seven promote to production after their first week, within an hour.
    for (i, id) in ids[..4].iter().enumerate() {
        f.push(github(
            id,
            at(8, 16 * 3600 + i as i64 * 600),
            Some("production"),
        ));
    }
    office_days(&mut f, &ids, 9..10, Some("staging"));
    // The sixth's first production deploy, the next day: routine for the group.
    f.push(github(&ids[5], at(9, 17 * 3600), Some("production")));
    assert!(f.done().is_empty());
    let s = &f.engine.stats;
    assert_eq!(s.peer_routine.get("cross_env_reuse"), Some(&2), "{s:?}");
    assert_eq!(s.rollouts.get("cross_env_reuse"), Some(&3), "{s:?}");

    // The seventh deployed to staging for three weeks, far longer than its peers did before
    // their first release: not on their train.
    office_days(&mut f, &ids, 10..22, Some("staging"));
    f.push(github(&ids[6], at(22, 11 * 3600), Some("production")));
    let alerts = f.done();
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert!(alerts[0].evidence["peer_share"].as_f64().unwrap_or(0.0) >= 0.5);
    // The longest first release recorded (the sixth's, after 9.3 days) is below the
    // fortnight a group's cycle is assumed to reach.
    assert_eq!(alerts[0].evidence["peer_release_cycle_days"], 15.0);
}

#[test]
fn a_build_workflow_that_never_named_an_environment_minting_for_production_is_raised() {
    let mut f = Feed::new(&["cross_env_reuse"]);
    let ci: Vec<String> = (0..5).map(|i| workflow(i, "ci.yml")).collect();
    office_days(&mut f, &ci, 0..9, None);
    f.push(github(&ci[2], at(9, 11 * 3600), Some("production")));
    let alerts = f.done();
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let a = &alerts[0];
    assert_eq!(a.reason, "first production mint");
    assert_eq!(a.severity, Severity::Critical);
    assert!(
        a.summary.contains("never named an environment"),
        "{}",
        a.summary
    );
    assert_eq!(a.evidence["peer_group"], "github workflows ci");
    assert_eq!(a.evidence["peers_judged"], 4);
    assert_eq!(a.evidence["peers_with"], 0);
}

#[test]
fn a_release_trains_first_release_is_a_rollout_not_five_alerts() {
    let mut f = Feed::new(&["cross_env_reuse"]);
    let ids: Vec<String> = (0..5).map(|i| workflow(i, "release.yml")).collect();
    office_days(&mut f, &ids, 0..9, Some("staging"));
    for (i, id) in ids.iter().enumerate() {
        f.push(github(
            id,
            at(9, 14 * 3600 + i as i64 * 600),
            Some("production"),
        ));
    }
    let alerts = f.done();
    assert!(alerts.is_empty(), "{alerts:#?}");
    let s = &f.engine.stats;
    let dropped = s.rollouts.get("cross_env_reuse").copied().unwrap_or(0)
        + s.peer_routine.get("cross_env_reuse").copied().unwrap_or(0);
    assert_eq!(dropped, 5, "{s:?}");

    // Alone, on another day, a staging-only deployer of another group still alerts.
    let mut g = Feed::new(&["cross_env_reuse"]);
    office_days(&mut g, &ids, 0..9, Some("staging"));
    g.push(github(&ids[3], at(9, 14 * 3600), Some("production")));
    let alerts = g.done();
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0].evidence["peers_with"], 0);
}

/// A kubelet's TokenRequest for a service account.
fn token(identity: &str, t: Timestamp, audience: &str) -> Event {
    let mut e = Event::new(
        "",
        t,
        Source::Kubernetes,
        "serviceaccounts/token",
        Action::Mint,
        identity,
    );
    e.environment = Some("production".into());
    e.runner.group = Some("system:nodes".into());
    e.scopes = vec![format!("aud:{audience}")];
    e.ttl = Some(3607);
    e
}

const API: &str = "https://kubernetes.default.svc.cluster.local";

fn kubelets(f: &mut Feed, sas: &[String], days: i64, sts: &[bool]) {
    for d in 0..days {
        for h in 0..24 {
            for (i, sa) in sas.iter().enumerate() {
                f.push(token(sa, at(d, h * 3600 + i as i64), API));
                if sts[i] {
                    f.push(token(
                        sa,
                        at(d, h * 3600 + i as i64 + 1),
                        "sts.amazonaws.com",
                    ));
                }
            }
        }
    }
}

#[test]
fn a_token_for_an_audience_the_account_never_had_is_an_escalation_even_from_a_kubelet() {
    let sas: Vec<String> = (0..4).map(|i| format!("k8s:app{i}-prod/app{i}")).collect();
    let mut f = Feed::new(&["scope_escalation"]);
    kubelets(&mut f, &sas, 10, &[false; 4]);
    f.push(token(&sas[0], at(10, 3600), "sts.amazonaws.com"));
    let alerts = f.done();
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0].reason, "new audience sts.amazonaws.com");
    assert_eq!(alerts[0].evidence["peers_with"], 0);

    // The same request, where every peer has long asked for that audience: routine.
    let mut f = Feed::new(&["scope_escalation"]);
    kubelets(&mut f, &sas, 10, &[false, true, true, true]);
    f.push(token(&sas[0], at(10, 3600), "sts.amazonaws.com"));
    let alerts = f.done();
    assert!(alerts.is_empty(), "{alerts:#?}");
    assert_eq!(
        f.engine.stats.peer_routine.get("scope_escalation"),
        Some(&1)
    );
}

#[test]
fn services_onboarded_the_same_day_do_not_make_an_audience_escalation_a_rollout() {
    let sas: Vec<String> = (0..8).map(|i| format!("k8s:app{i}-prod/app{i}")).collect();
    let fresh: Vec<String> = (0..3).map(|i| format!("k8s:new{i}-prod/new{i}")).collect();
    // Three new services start on day 10 with the STS audience, and an old account asks
    // for it the same day: only the old account took it up.
    let mut f = Feed::new(&["scope_escalation"]);
    kubelets(&mut f, &sas, 10, &[false; 8]);
    for (i, sa) in fresh.iter().enumerate() {
        f.push(token(sa, at(10, 600 + i as i64), API));
        f.push(token(sa, at(10, 601 + i as i64), "sts.amazonaws.com"));
    }
    f.push(token(&sas[0], at(10, 3600), "sts.amazonaws.com"));
    let alerts = f.done();
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0].identity, sas[0]);

    // Three old accounts taking it up the same day is a rollout.
    let mut f = Feed::new(&["scope_escalation"]);
    kubelets(&mut f, &sas, 10, &[false; 8]);
    for (i, sa) in sas[..3].iter().enumerate() {
        f.push(token(sa, at(10, 3600 + i as i64), "sts.amazonaws.com"));
    }
    let alerts = f.done();
    assert!(alerts.is_empty(), "{alerts:#?}");
}

/// A GitLab pipeline's ID token from a self-hosted runner.
fn pipeline(project: usize, t: Timestamp, runner: u32) -> Event {
    let mut e = Event::new(
        "",
        t,
        Source::GitlabCi,
        "id_token",
        Action::Mint,
        format!("gitlab:acme/p{project}/.gitlab-ci.yml"),
    );
    e.environment = Some("staging".into());
    e.runner.kind = Some(RunnerKind::SelfHosted);
    e.runner.id = Some(runner.to_string());
    e.runner.ip = Some(format!("10.30.0.{}", 10 + project));
    e
}

#[test]
fn a_runner_nobody_registered_alerts_even_while_other_runners_are_registered() {
    let mut f = Feed::new(&["new_runner"]);
    for d in 0..6 {
        for p in 0..4 {
            for (k, h) in [9, 12, 15].iter().enumerate() {
                f.push(pipeline(p, at(d, h * 3600 + p as i64), 100 + k as u32));
            }
        }
    }
    // The same hour: three projects pick up newly registered runners, one a rogue runner.
    for p in 1..4 {
        f.push(pipeline(p, at(6, 10 * 3600 + p as i64), 500 + p as u32));
    }
    f.push(pipeline(0, at(6, 10 * 3600 + 30), 999));
    let alerts = f.done();
    assert!(
        alerts
            .iter()
            .any(|a| a.identity.contains("/p0/") && a.reason == "runner id 999"),
        "{alerts:#?}"
    );
}

#[test]
fn a_night_production_deploy_is_judged_on_production_mints_when_nightly_tests_fill_the_night() {
    let mut f = Feed::new(&["off_hours_mint"]);
    let id = "gitlab:acme/p/.gitlab-ci.yml";
    let mint = |t, env: Option<&str>| {
        let mut e = pipeline(0, t, 100);
        e.identity = id.into();
        e.environment = env.map(str::to_string);
        e
    };
    for d in 0..14 {
        // The nightly schedule: tests, no environment.
        f.push(mint(at(d, 2 * 3600 + 60), None));
        if weekday(d) {
            for h in [10, 13, 16] {
                f.push(mint(at(d, h * 3600), Some("production")));
            }
        }
    }
    f.push(mint(at(15, 2 * 3600 + 1800), Some("production")));
    let alerts = f.done();
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0].evidence["judged_on"], "production mints");
    // A nightly test run at the same time is ordinary.
    f.push(mint(at(16, 2 * 3600 + 1800), None));
    let alerts = f.done();
    assert!(alerts.is_empty(), "{alerts:#?}");
}

#[test]
fn a_time_of_week_never_watched_is_no_evidence() {
    // Around the clock every four hours from Sunday 20:00; its first Saturday night is not
    // off-hours: no Saturday night was ever watched.
    let mut f = Feed::new(&["off_hours_mint"]);
    let id = "vault:approle/reports";
    let mut t = T0 - 4 * 3600;
    while t < T0 + 5 * 86_400 + 8 * 3600 {
        let mut e = Event::new(
            "",
            Timestamp::from_micros(t * 1_000_000),
            Source::Vault,
            "login",
            Action::Mint,
            id,
        );
        e.environment = Some("production".into());
        f.push(e);
        t += 4 * 3600;
    }
    let alerts = f.done();
    assert!(alerts.is_empty(), "{alerts:#?}");
}

#[test]
fn a_restored_engine_judges_peers_exactly_as_one_that_never_stopped() {
    let ids: Vec<String> = (0..5).map(|i| workflow(i, "release.yml")).collect();
    let mut events = Vec::new();
    {
        let mut capture = |e: Event| events.push(e);
        for d in (0..9).filter(|d| weekday(*d)) {
            for (i, id) in ids.iter().enumerate() {
                for h in [9, 12, 15] {
                    capture(github(id, at(d, h * 3600 + i as i64 * 60), Some("staging")));
                }
            }
        }
        for (i, id) in ids.iter().enumerate() {
            capture(github(id, at(9 + i as i64, 14 * 3600), Some("production")));
        }
    }
    let run = |split: Option<usize>| {
        let mut f = Feed::new(&["cross_env_reuse", "off_hours_mint", "new_runner"]);
        for (i, e) in events.iter().enumerate() {
            if Some(i) == split {
                let bytes = f.engine.snapshot_bytes().expect("snapshot");
                let mut g = Feed::new(&["cross_env_reuse", "off_hours_mint", "new_runner"]);
                g.engine.restore_bytes(&bytes).expect("restore");
                g.n = f.n;
                g.out = std::mem::take(&mut f.out);
                f = g;
            }
            f.push(e.clone());
        }
        let alerts: Vec<String> = f.done().into_iter().map(|a| a.id).collect();
        (alerts, f.engine.state.peers.export())
    };
    let whole = run(None);
    assert!(
        !whole.0.is_empty(),
        "the later members' first production mints alert"
    );
    for split in [events.len() / 2, events.len() - 3] {
        assert_eq!(run(Some(split)), whole, "restored at event {split}");
    }
}

/// Four projects on two runner managers each for a week, three jobs a weekday, taking turns.
fn gitlab_week(f: &mut Feed, projects: std::ops::Range<usize>) {
    for d in 0..7 {
        for p in projects.clone() {
            for (k, h) in [9, 12, 15].iter().enumerate() {
                let runner = 100 + 2 * p as u32 + (k as u32 % 2);
                f.push(pipeline(p, at(d, h * 3600 + p as i64 * 60), runner));
            }
        }
    }
}

/// Day 7: projects `wave` move to re-registered managers (old id + 1000), five jobs each.
fn re_registered(f: &mut Feed, wave: std::ops::Range<usize>) {
    for p in wave {
        for (k, h) in [9, 11, 13, 15, 17].iter().enumerate() {
            let runner = 1100 + 2 * p as u32 + (k as u32 % 2);
            f.push(pipeline(p, at(7, h * 3600 + p as i64 * 60), runner));
        }
    }
}

fn runner_alerts(alerts: &[Alert]) -> Vec<String> {
    alerts
        .iter()
        .filter(|a| a.detector == "new_runner")
        .map(|a| format!("{} {}", a.identity, a.reason))
        .collect()
}

#[test]
fn a_re_registered_runner_fleet_is_a_replacement_not_an_alert_per_project() {
    // Each new manager serves one project, so no single runner id reaches the rollout
    // threshold: only the projects moving off their old managers together tell.
    let mut f = Feed::new(&["new_runner"]);
    gitlab_week(&mut f, 0..4);
    re_registered(&mut f, 0..4);
    let alerts = f.done();
    assert_eq!(runner_alerts(&alerts), Vec::<String>::new());
    // One held alert per project and new id, each dropped as a move.
    assert_eq!(f.engine.stats.replacements.get("new_runner"), Some(&8));
}

#[test]
fn a_runner_added_beside_the_ones_a_project_keeps_using_alerts_during_a_re_registration() {
    let mut f = Feed::new(&["new_runner"]);
    gitlab_week(&mut f, 0..5);
    // Four projects are re-registered; the fifth keeps its managers and gets one job on a
    // runner nobody registered; one re-registered project also runs a single job on another.
    re_registered(&mut f, 0..4);
    f.push(pipeline(4, at(7, 10 * 3600), 999));
    for (k, h) in [12, 14].iter().enumerate() {
        f.push(pipeline(4, at(7, h * 3600), 108 + k as u32));
    }
    f.push(pipeline(0, at(7, 12 * 3600 + 30 * 60), 998));
    let alerts = runner_alerts(&f.done());
    assert_eq!(
        alerts,
        vec![
            "gitlab:acme/p4/.gitlab-ci.yml runner id 999".to_string(),
            "gitlab:acme/p0/.gitlab-ci.yml runner id 998".to_string(),
        ],
        "only the added runners alert"
    );
}

#[test]
fn a_runner_that_serves_a_second_project_is_a_shared_runner_not_a_rogue_one() {
    // A group runner is registered: two projects take jobs on it two hours apart, while
    // they keep running on their own managers too (an addition, not a replacement). Neither
    // is alerted: a runner serving several projects is registered by an administrator. A
    // runner only one project ever uses still alerts.
    let mut f = Feed::new(&["new_runner"]);
    gitlab_week(&mut f, 0..4);
    f.push(pipeline(1, at(7, 10 * 3600), 300));
    f.push(pipeline(2, at(7, 12 * 3600), 300));
    f.push(pipeline(0, at(7, 11 * 3600), 999));
    for p in 0..4 {
        for h in [14, 16] {
            f.push(pipeline(
                p,
                at(7, h * 3600 + p as i64 * 60),
                100 + 2 * p as u32,
            ));
        }
    }
    let alerts = runner_alerts(&f.done());
    assert_eq!(
        alerts,
        vec!["gitlab:acme/p0/.gitlab-ci.yml runner id 999".to_string()],
        "only the runner one project uses alerts"
    );
}

#[test]
fn a_project_alone_moving_to_new_runner_ids_still_alerts() {
    // One project's managers change while no other project's do: no fleet re-registration,
    // and a lone project taking all its jobs to runners nobody else knows is what a
    // hijacked pipeline looks like.
    let mut f = Feed::new(&["new_runner"]);
    gitlab_week(&mut f, 0..4);
    re_registered(&mut f, 0..1);
    let alerts = runner_alerts(&f.done());
    assert!(!alerts.is_empty(), "{alerts:?}");
    assert!(alerts.iter().all(|a| a.contains("/p0/")), "{alerts:?}");
}

#[test]
fn a_service_moving_subnet_for_good_is_no_alert_but_a_login_from_a_new_subnet_beside_it_is() {
    let job = |p: usize, t: Timestamp, ip: &str| {
        let mut e = pipeline(p, t, 100);
        e.runner.ip = Some(ip.to_string());
        e
    };
    let mut f = Feed::new(&["new_runner"]);
    for d in 0..7 {
        for h in [9, 12, 15] {
            f.push(job(0, at(d, h * 3600), "10.30.0.10"));
            f.push(job(1, at(d, h * 3600 + 60), "10.40.0.10"));
        }
    }
    for h in [9, 12, 15, 18] {
        // p0 moves to a new subnet for good; p1's credential is used once from another
        // subnet while its own jobs go on from the old one.
        f.push(job(0, at(7, h * 3600), "10.31.0.10"));
        f.push(job(1, at(7, h * 3600 + 60), "10.40.0.10"));
    }
    f.push(job(1, at(7, 10 * 3600), "10.77.3.4"));
    let alerts = runner_alerts(&f.done());
    assert_eq!(
        alerts,
        vec!["gitlab:acme/p1/.gitlab-ci.yml network 10.77.0.0/16".to_string()]
    );
}

#[test]
fn a_restored_engine_judges_a_held_runner_change_as_one_that_never_stopped() {
    let mut events = Vec::new();
    // The traffic of the test above, recorded.
    let mut rec = Feed::new(&["new_runner"]);
    let mut capture = |e: Event| {
        events.push(e.clone());
        rec.push(e);
    };
    for d in 0..7 {
        for p in 0..5 {
            for (k, h) in [9, 12, 15].iter().enumerate() {
                capture(pipeline(
                    p,
                    at(d, h * 3600 + p as i64 * 60),
                    100 + 2 * p as u32 + (k as u32 % 2),
                ));
            }
        }
    }
    for p in 0..4 {
        for (k, h) in [9, 11, 13, 15, 17].iter().enumerate() {
            capture(pipeline(
                p,
                at(7, h * 3600 + p as i64 * 60),
                1100 + 2 * p as u32 + (k as u32 % 2),
            ));
        }
    }
    capture(pipeline(4, at(7, 10 * 3600), 999));
    capture(pipeline(4, at(7, 12 * 3600), 108));
    let whole = runner_alerts(&rec.done());
    assert_eq!(
        whole,
        vec!["gitlab:acme/p4/.gitlab-ci.yml runner id 999".to_string()]
    );
    // Restored in the middle of the holds: the same verdicts.
    let first_new = events
        .iter()
        .position(|e| e.runner.id.as_deref() == Some("1100"))
        .expect("wave");
    for split in [first_new + 3, events.len() - 2] {
        let mut f = Feed::new(&["new_runner"]);
        for (i, e) in events.iter().enumerate() {
            if i == split {
                let bytes = f.engine.snapshot_bytes().expect("snapshot");
                let mut g = Feed::new(&["new_runner"]);
                g.engine.restore_bytes(&bytes).expect("restore");
                g.n = f.n;
                g.out = std::mem::take(&mut f.out);
                f = g;
            }
            f.push(e.clone());
        }
        assert_eq!(runner_alerts(&f.done()), whole, "restored at event {split}");
    }
}

#[test]
fn weekend_work_some_peers_do_becomes_routine_but_a_weekend_night_does_not() {
    let ids: Vec<String> = (0..8).map(|i| workflow(i, "ci.yml")).collect();
    let mut f = Feed::new(&["off_hours_mint"]);
    // Builds on pushes 10–21 h, weekdays, for three weeks.
    let office = |f: &mut Feed, days: std::ops::Range<i64>| {
        for d in days.filter(|d| weekday(*d)) {
            for (i, id) in ids.iter().enumerate() {
                for h in [10, 13, 16, 19, 21] {
                    f.push(github(id, at(d, h * 3600 + i as i64 * 60), None));
                }
            }
        }
    };
    office(&mut f, 0..19);
    // A first weekend of work: three members build on Saturday around noon.
    for (i, id) in ids.iter().take(3).enumerate() {
        f.push(github(id, at(19, 12 * 3600 + i as i64 * 600), None));
    }
    office(&mut f, 21..26);
    // The next weekend another member does; and another builds at 00:40 on Sunday, just
    // past its latest weekday hour.
    f.push(github(&ids[5], at(26, 13 * 3600), None));
    f.push(github(&ids[6], at(27, 40 * 60), None));
    let alerts: Vec<String> = f
        .done()
        .into_iter()
        .map(|a| format!("{} {}", a.identity, a.reason))
        .collect();
    assert!(
        !alerts.iter().any(|a| a.contains("/r5/")),
        "weekend work three of its seven peers did is routine: {alerts:#?}"
    );
    assert!(
        alerts
            .iter()
            .any(|a| a.contains("/r6/") && a.contains("Sun 00:40")),
        "a weekend night is not weekend work: {alerts:#?}"
    );
}

#[test]
fn an_identity_pushed_out_of_memory_is_judged_against_its_own_baseline_when_it_returns() {
    let mut f = Feed::new(&["off_hours_mint"]);
    let spill_dir = tempfile::tempdir().expect("dir");
    f.engine.set_bounds(&baseline::StateConfig {
        max_identities: 100,
        spill_dir: Some(spill_dir.path().to_path_buf()),
        ..Default::default()
    });
    let target = workflow(0, "deploy.yml");
    office_days(
        &mut f,
        std::slice::from_ref(&target),
        0..14,
        Some("staging"),
    );
    let mints = f
        .engine
        .state
        .identities
        .get(target.as_str())
        .expect("b")
        .mints;
    // A thousand identities nobody saw before push it out of memory.
    for i in 0..1000 {
        f.push(github(
            &format!("github:flood/r{i}/.github/workflows/ci.yml"),
            at(14, 10 * 3600 + i),
            None,
        ));
    }
    assert!(f.engine.state.identities.len() <= 100);
    assert!(!f.engine.state.identities.contains_key(target.as_str()));
    assert!(
        f.engine.state.spill().contains(&target),
        "spilled, not forgotten"
    );
    // Back at 03:00 on a weekday, an hour it never minted at: judged as itself, not as new.
    f.push(github(&target, at(15, 3 * 3600), Some("staging")));
    let b = f
        .engine
        .state
        .identities
        .get(target.as_str())
        .expect("back in memory")
        .clone();
    assert_eq!(b.mints, mints + 1, "its history came back with it");
    let alerts = f.done();
    let mine: Vec<&Alert> = alerts.iter().filter(|a| a.identity == target).collect();
    assert_eq!(mine.len(), 1, "{alerts:?}");
    assert_eq!(mine[0].detector, "off_hours_mint");
    assert_eq!(f.engine.state.spill().counts.reloaded, 1);
    // A snapshot holds every identity, spilled or not; a restored engine spills again.
    let bytes = f.engine.snapshot_bytes().expect("snapshot");
    let mut g = Engine::with_defaults(&["off_hours_mint"]).expect("engine");
    g.set_bounds(&baseline::StateConfig {
        max_identities: 100,
        spill_dir: Some(spill_dir.path().to_path_buf()),
        ..Default::default()
    });
    g.restore_bytes(&bytes).expect("restore");
    let total = |e: &Engine| e.state.identities.len() + e.state.spill().len();
    assert_eq!(total(&g), 1001);
    assert_eq!(total(&f.engine), 1001);
    assert!(g.state.identities.len() <= 100);
    assert_eq!(g.snapshot_bytes().expect("again"), bytes);
}

/// `n` never-seen identities of `owner` minting within hour `h` of `day`.
fn newcomers(f: &mut Feed, owner: &str, n: usize, day: i64, h: i64) {
    for i in 0..n {
        let id = format!("github:{owner}/r{day}-{h}-{i}/.github/workflows/ci.yml");
        let mut e = github(&id, at(day, h * 3600 + (i as i64 * 3600) / n as i64), None);
        e.context.repo = Some(format!("{owner}/r{i}"));
        f.push(e);
    }
}

#[test]
fn a_burst_of_never_seen_identities_alerts_once_per_flood_and_not_while_onboarding() {
    let mut f = Feed::new(&["identity_flood"]);
    // Onboarding: 600 identities in the first hour is no flood (no history yet).
    newcomers(&mut f, "acme", 600, 0, 9);
    // Two days of the same identities minting, and a few new ones a day.
    for d in 0..3 {
        for h in 10..18 {
            for i in 0..20 {
                f.push(github(
                    &format!("github:acme/r0-9-{i}/.github/workflows/ci.yml"),
                    at(d, h * 3600 + i),
                    None,
                ));
            }
        }
        newcomers(&mut f, "acme", 3, d, 12);
    }
    assert!(
        f.done().is_empty(),
        "onboarding and a few a day are no flood"
    );
    // 700 new identities within an hour, mostly of one owner.
    newcomers(&mut f, "mallory", 650, 3, 2);
    newcomers(&mut f, "acme", 50, 3, 2);
    let alerts = f.done();
    assert_eq!(alerts.len(), 1, "once per flood: {alerts:?}");
    let a = &alerts[0];
    assert_eq!(a.detector, "identity_flood");
    assert_eq!(a.evidence["new_identities_this_hour"], 500);
    assert_eq!(a.evidence["top_owners"][0]["name"], "mallory");
    assert_eq!(a.evidence["top_sources"][0]["name"], "github_actions");
    // Still flooding the next hour: no second alert. A quiet hour ends it; a new flood alerts.
    newcomers(&mut f, "mallory", 600, 3, 3);
    assert!(f.done().is_empty());
    newcomers(&mut f, "acme", 2, 3, 4);
    newcomers(&mut f, "mallory", 100, 3, 5);
    assert!(f.done().is_empty(), "100 an hour is under min_new");
    newcomers(&mut f, "eve", 900, 3, 6);
    let again = f.done();
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0].evidence["top_owners"][0]["name"], "eve");
    // Its hourly counts survive a restore.
    let bytes = f.engine.snapshot_bytes().expect("snapshot");
    let mut g = Engine::with_defaults(&["identity_flood"]).expect("engine");
    g.restore_bytes(&bytes).expect("restore");
    assert_eq!(g.snapshot_bytes().expect("again"), bytes);
}

#[test]
fn engine_state_saved_before_detectors_kept_their_own_still_restores() {
    let mut f = Feed::new(&["off_hours_mint", "identity_flood"]);
    let ids: Vec<String> = (0..3).map(|i| workflow(i, "deploy.yml")).collect();
    office_days(&mut f, &ids, 0..3, Some("staging"));
    // The previous layout: the engine state without detector-private state.
    let old = RuntimeV4::default();
    let bytes = baseline::snapshot::encode(&f.engine.state, &old).expect("encode");
    let mut g = Engine::with_defaults(&["off_hours_mint", "identity_flood"]).expect("engine");
    g.restore_bytes(&bytes)
        .expect("a checkpoint of the previous layout restores");
    assert_eq!(g.state.identities.len(), 3);
    assert_eq!(
        g.state.identities.get(ids[0].as_str()).expect("b").mints,
        f.engine
            .state
            .identities
            .get(ids[0].as_str())
            .expect("b")
            .mints
    );
    // Bytes that are neither layout are refused.
    assert!(g.restore_bytes(&bytes[..bytes.len() / 2]).is_err());
}

/// `github()` with the commit the run deployed.
fn github_at(identity: &str, t: Timestamp, env: &str, sha: &str) -> Event {
    let mut e = github(identity, t, Some(env));
    e.context.sha = Some(sha.into());
    e
}

/// The repository's web-identity mint that follows a workflow's token (no commit in it).
pub(super) fn sts(repo: &str, t: Timestamp, env: &str) -> Event {
    let mut e = Event::new(
        "",
        t,
        Source::Cloudtrail,
        "AssumeRoleWithWebIdentity",
        Action::Mint,
        format!("github:{repo}"),
    );
    e.environment = Some(env.into());
    e.scopes = vec![format!("aws-role:arn:aws:iam::1:role/{repo}")];
    e
}

#[test]
fn a_first_production_deploy_of_a_staged_commit_is_a_promotion_and_a_new_commit_is_not() {
    // Three staging-only deployers whose peers never release: a first production mint is
    // new to the group and alerts, unless it promotes a commit the identity staged.
    let ids: Vec<String> = (0..3).map(|i| workflow(i, "deploy.yml")).collect();
    let repos: Vec<String> = (0..3).map(|i| format!("acme/r{i}")).collect();
    let mut f = Feed::new(&["cross_env_reuse"]);
    for d in (0..9).filter(|d| weekday(*d)) {
        for (i, id) in ids.iter().enumerate() {
            let t = at(d, 10 * 3600 + i as i64 * 60);
            f.push(github_at(id, t, "staging", &format!("c{d}{i}")));
            f.push(sts(
                &repos[i],
                at(d, 10 * 3600 + i as i64 * 60 + 5),
                "staging",
            ));
        }
    }
    assert!(f.done().is_empty());
    // The first promotes Thursday's staged commit (workflow, then its repository's role).
    f.push(github_at(&ids[0], at(9, 15 * 3600), "production", "c30"));
    f.push(sts(&repos[0], at(9, 15 * 3600 + 5), "production"));
    assert!(f.done().is_empty());
    assert_eq!(
        f.engine.stats.peer_routine.get("cross_env_reuse"),
        Some(&2),
        "{:?}",
        f.engine.stats
    );
    // The second deploys a commit it never staged: alerted, workflow and repository alike.
    f.push(github_at(&ids[1], at(9, 16 * 3600), "production", "f00d"));
    f.push(sts(&repos[1], at(9, 16 * 3600 + 5), "production"));
    let alerts = f.done();
    assert_eq!(alerts.len(), 2, "{alerts:#?}");
    assert!(alerts.iter().all(|a| a.reason == "first production mint"));

    // With the rule off (`promotion_window = "0s"`), the promotion alerts too.
    let mut spec = load_specs(None)
        .unwrap()
        .into_iter()
        .find(|s| s.detector.name == "cross_env_reuse")
        .unwrap();
    spec.thresholds
        .insert("promotion_window".into(), toml::Value::String("0s".into()));
    let mut g = Feed {
        engine: Engine::new(
            vec![spec],
            Privileges::parse(spec::EMBEDDED_PRIVILEGES).unwrap(),
            Zones::utc(),
            PeerRules::parse(spec::EMBEDDED_PEERS).unwrap(),
        )
        .unwrap(),
        out: Vec::new(),
        n: 0,
    };
    for d in (0..9).filter(|d| weekday(*d)) {
        for (i, id) in ids.iter().enumerate() {
            g.push(github_at(
                id,
                at(d, 10 * 3600 + i as i64 * 60),
                "staging",
                &format!("c{d}{i}"),
            ));
        }
    }
    g.push(github_at(&ids[0], at(9, 15 * 3600), "production", "c30"));
    assert_eq!(g.done().len(), 1);
}

/// Events processed by engines that each hold some of the identities (by identity hash, as
/// partitions do), judging together or apart, restored from their snapshots before event
/// `split` (and joined again, as a `run` instance joins the partitions it is assigned).
fn by_partition(
    events: &[Event],
    engines: usize,
    together: bool,
    split: Option<usize>,
) -> Vec<String> {
    const DETECTORS: [&str; 3] = ["cross_env_reuse", "off_hours_mint", "new_runner"];
    let fresh = || -> Vec<Engine> {
        (0..engines)
            .map(|_| Engine::with_defaults(&DETECTORS).expect("engine"))
            .collect()
    };
    let link = |e: &mut Vec<Engine>, join: bool| {
        if !together {
            return;
        }
        let (first, rest) = e.split_at_mut(1);
        for x in rest {
            if join {
                x.join_context(&mut first[0]);
            } else {
                x.share_context(&mut first[0]);
            }
        }
        link_peers(&e.iter().collect::<Vec<_>>());
    };
    let mut es = fresh();
    link(&mut es, false);
    let mut out = Vec::new();
    for (i, e) in events.iter().enumerate() {
        if Some(i) == split {
            let saved: Vec<Vec<u8>> = es
                .iter()
                .map(|e| e.snapshot_bytes().expect("snapshot"))
                .collect();
            es = fresh();
            for (e, bytes) in es.iter_mut().zip(&saved) {
                e.restore_bytes(bytes).expect("restore");
            }
            link(&mut es, true);
        }
        let at = baseline::hash_identity(&e.identity) as usize % engines;
        if together {
            for x in es.iter_mut() {
                x.advance(e.time.as_unix_seconds(), &mut out);
            }
        }
        es[at].process(e, &mut out);
        if together {
            let (day, values) = es[at].rollout_values();
            let values = values.to_vec();
            for (j, x) in es.iter_mut().enumerate() {
                if j != at {
                    x.drop_rollouts(day, &values);
                }
            }
        }
    }
    for x in es.iter_mut() {
        x.flush(&mut out);
    }
    let mut ids: Vec<String> = out.into_iter().map(|a| a.id).collect();
    ids.sort();
    ids
}

#[test]
fn partitions_judging_together_alert_as_one_engine_even_after_a_restore() {
    // A release train of eight workflows (their first production deploys are routine only
    // among their peers), a fleet-wide runner move, and a runner one workflow alone takes.
    let ids: Vec<String> = (0..8).map(|i| workflow(i, "release.yml")).collect();
    let mut events = Vec::new();
    for d in (0..16).filter(|d| weekday(*d)) {
        for (i, id) in ids.iter().enumerate() {
            for h in [9, 12, 15] {
                let mut e = github(id, at(d, h * 3600 + i as i64 * 60), Some("staging"));
                e.runner.name = Some(if d < 10 { "pool-a" } else { "pool-b" }.into());
                if d == 15 && i == 3 && h == 15 {
                    e.runner.name = Some("rogue".into());
                }
                events.push(e);
            }
        }
    }
    for (i, id) in ids.iter().enumerate() {
        events.push(github(id, at(16 + i as i64, 14 * 3600), Some("production")));
    }
    for (i, e) in events.iter_mut().enumerate() {
        e.id = format!("e{i}");
    }
    let one = by_partition(&events, 1, false, None);
    assert!(
        !one.is_empty(),
        "the first production deploys and the rogue runner alert"
    );
    assert_ne!(
        by_partition(&events, 3, false, None),
        one,
        "judged apart, three partitions see smaller groups and fleets (or this proves nothing)"
    );
    assert_eq!(by_partition(&events, 3, true, None), one, "judged together");
    for split in [events.len() / 3, events.len() - 5] {
        assert_eq!(
            by_partition(&events, 3, true, Some(split)),
            one,
            "restored and joined before event {split}"
        );
    }
}

#[test]
fn value_texts_shared_by_engines_are_kept_while_any_of_them_refers_to_them() {
    let mut a = Feed::new(&["new_runner"]);
    let mut b = Feed::new(&["new_runner"]);
    b.engine.share_context(&mut a.engine);
    a.push(pipeline(1, at(0, 9 * 3600), 1111));
    b.push(pipeline(2, at(0, 9 * 3600), 2222));
    let texts = |f: &Feed| -> Vec<String> {
        f.engine
            .state
            .interner
            .export()
            .into_iter()
            .map(|(_, t)| t)
            .collect()
    };
    let both = texts(&a);
    assert!(both.iter().any(|t| t == "1111") && both.iter().any(|t| t == "2222"));
    prune_shared_interner(&[&a.engine, &b.engine]);
    assert_eq!(
        texts(&a),
        both,
        "every text is still referred to by one engine"
    );
    // Pruned by one engine's identities alone, the other's go.
    a.engine.state.prune_interner();
    assert!(!texts(&a).iter().any(|t| t == "2222"));
}
