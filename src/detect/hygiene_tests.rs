//! The five hygiene findings on small, hand-made fleets: each test has the finding's positive
//! and the hard negative that looks most like it (a service its owner brought back, a planned
//! key rotation, a person working from the office or a shared bastion, a trust change by the
//! organisation's own Terraform, a new release tag).

use super::tests::{Feed, at};
use super::*;
use crate::event::{Credential, CredentialKind, Source};

/// A Vault AppRole login (a mint of a token living `ttl` seconds) from `ip`.
fn login(identity: &str, t: crate::time::Timestamp, ip: &str, ttl: u64) -> Event {
    let mut e = Event::new("", t, Source::Vault, "login", Action::Mint, identity);
    e.environment = Some("production".into());
    e.runner.ip = Some(ip.into());
    e.scopes = vec!["vault-policy:app-read".into()];
    e.ttl = Some(ttl);
    e
}

/// An AWS call with a key: `long_term` for an `AKIA…` key, to `service`.
fn aws_call(
    identity: &str,
    t: crate::time::Timestamp,
    ip: &str,
    key: &str,
    service: &str,
) -> Event {
    let mut e = Event::new(
        "",
        t,
        Source::Cloudtrail,
        "GetObject",
        Action::Use,
        identity,
    );
    e.runner.ip = Some(ip.into());
    e.context.resource = Some(service.into());
    let kind = if key.starts_with("AKIA") {
        CredentialKind::AwsLongTermKey
    } else {
        CredentialKind::AwsAccessKey
    };
    e.credential = Some(Credential {
        kind,
        fp: format!("{:032x}", crate::baseline::hash_value(Class::Scope, key)),
        single_use: false,
    });
    e
}

/// Hourly logins of `identity` from `ip` on days `[from, to)`.
fn hourly(f: &mut Feed, identity: &str, ip: &str, ttl: u64, days: std::ops::Range<i64>) {
    for d in days {
        for h in 0..24 {
            f.push(login(identity, at(d, h * 3600 + 60), ip, ttl));
        }
    }
}

#[test]
fn a_dormant_identity_back_from_a_new_network_alerts_and_one_back_as_before_does_not() {
    let mut f = Feed::new(&["dormant_reactivated"]);
    hourly(&mut f, "vault:approle/legacy", "10.1.0.5", 3600, 0..5);
    hourly(&mut f, "vault:approle/retired", "10.2.0.5", 3600, 0..5);
    hourly(&mut f, "vault:approle/busy", "10.3.0.5", 3600, 0..40);
    // Its owner brings the retired service back after 33 days, from its own network.
    hourly(&mut f, "vault:approle/retired", "10.2.0.7", 3600, 38..39);
    assert!(f.done().is_empty());
    assert_eq!(
        f.engine.stats.peer_routine.get("dormant_reactivated"),
        Some(&1)
    );
    // The legacy role logs in from outside after 35 days.
    f.push(login(
        "vault:approle/legacy",
        at(40, 3600),
        "203.0.113.9",
        3600,
    ));
    f.push(login(
        "vault:approle/legacy",
        at(40, 7200),
        "203.0.113.9",
        3600,
    ));
    let alerts = f.done();
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let a = &alerts[0];
    assert_eq!(a.identity, "vault:approle/legacy");
    assert!(a.reason.starts_with("back after 35 days"), "{}", a.reason);
    assert!(a.summary.contains("network 203.0.0.0/16"), "{}", a.summary);
    assert_eq!(a.evidence["dormant_days"], 35);
    // Unseen for less than `dormant_after`: not dormant.
    let mut g = Feed::new(&["dormant_reactivated"]);
    hourly(&mut g, "vault:approle/legacy", "10.1.0.5", 3600, 0..5);
    g.push(login(
        "vault:approle/legacy",
        at(30, 3600),
        "203.0.113.9",
        3600,
    ));
    assert!(g.done().is_empty());
}

#[test]
fn a_standing_credential_alerts_where_short_lived_ones_were_the_rule_but_not_a_rotation() {
    let mut f = Feed::new(&["long_lived_credential"]);
    hourly(&mut f, "vault:approle/short", "10.1.0.5", 3600, 0..3);
    // Standing tokens all along: the inventory's business, not a finding.
    hourly(
        &mut f,
        "vault:approle/standing",
        "10.1.0.6",
        2_764_800,
        0..4,
    );
    assert!(f.done().is_empty());
    f.push(login(
        "vault:approle/short",
        at(3, 600),
        "10.1.0.5",
        2_764_800,
    ));
    let alerts = f.done();
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0].reason, "standing credential: lifetime 32d");
    assert_eq!(alerts[0].evidence["longest_ttl_seconds"], 3600);

    // An IAM user that uses its key only to get sessions, then calls S3 with it.
    let user = "aws:arn:aws:iam::1:user/mfa";
    let svc = "aws:arn:aws:iam::1:user/svc";
    let mut f = Feed::new(&["long_lived_credential"]);
    for d in 0..4 {
        for h in [9, 11, 14] {
            f.push(aws_call(
                user,
                at(d, h * 3600),
                "172.20.0.9",
                "AKIAMFA",
                "sts.amazonaws.com",
            ));
            f.push(aws_call(
                user,
                at(d, h * 3600 + 60),
                "172.20.0.9",
                &format!("ASIA{d}{h}"),
                "s3.amazonaws.com",
            ));
            // A service user that always calls with its key, rotated on day 2.
            let key = if d < 2 { "AKIASVC1" } else { "AKIASVC2" };
            f.push(aws_call(
                svc,
                at(d, h * 3600 + 120),
                "10.90.0.4",
                key,
                "s3.amazonaws.com",
            ));
        }
    }
    assert!(f.done().is_empty());
    f.push(aws_call(
        user,
        at(4, 10 * 3600),
        "172.20.0.9",
        "AKIAMFA",
        "s3.amazonaws.com",
    ));
    let alerts = f.done();
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0].identity, user);
    assert_eq!(
        alerts[0].reason,
        "long-term access key where it used sessions"
    );
}

#[test]
fn a_persons_credential_alerts_on_the_runners_network_not_in_the_office_or_a_bastion() {
    let mut f = Feed::new(&["human_bound_credential"]);
    for i in 0..3 {
        hourly(
            &mut f,
            &format!("vault:approle/app{i}"),
            &format!("10.77.{i}.5"),
            3600,
            0..2,
        );
    }
    for i in 0..2 {
        hourly(
            &mut f,
            &format!("vault:approle/bastion{i}"),
            "100.64.1.1",
            3600,
            0..2,
        );
    }
    let person = "vault:userpass-alice";
    f.push(login(person, at(2, 9 * 3600), "172.20.3.4", 28_800));
    f.push(login(person, at(2, 10 * 3600), "100.64.1.9", 28_800));
    f.push(aws_call(
        "aws:arn:aws:iam::1:user/bob",
        at(2, 11 * 3600),
        "172.20.3.5",
        "AKIABOB",
        "s3.amazonaws.com",
    ));
    assert!(f.done().is_empty());
    f.push(login(person, at(2, 12 * 3600), "10.77.9.9", 28_800));
    f.push(aws_call(
        "aws:arn:aws:iam::1:user/bob",
        at(2, 13 * 3600),
        "10.77.8.8",
        "AKIABOB",
        "s3.amazonaws.com",
    ));
    let alerts = f.done();
    assert_eq!(alerts.len(), 2, "{alerts:#?}");
    assert_eq!(alerts[0].identity, person);
    assert_eq!(
        alerts[0].reason,
        "person's credential on automation network 10.77.0.0/16"
    );
    assert_eq!(alerts[0].evidence["automation_identities_on_network"], 3);
    assert_eq!(alerts[1].identity, "aws:arn:aws:iam::1:user/bob");
    // An automation identity on the same network is no finding.
    f.push(login(
        "vault:approle/app9",
        at(2, 14 * 3600),
        "10.77.9.9",
        3600,
    ));
    assert!(f.done().is_empty());
}

/// A trust change of `identity` by `actor`, admitting `admits`.
fn trust(identity: &str, t: crate::time::Timestamp, actor: &str, admits: &[&str]) -> Event {
    let mut e = Event::new(
        "",
        t,
        Source::Cloudtrail,
        "UpdateAssumeRolePolicy",
        Action::Trust,
        identity,
    );
    e.context.actor = Some(actor.into());
    e.scopes = admits.iter().map(|s| format!("trust:sub:{s}")).collect();
    e.environment = Some("production".into());
    e
}

/// A web-identity mint of `role` by the repository `repo`.
fn assume(repo: &str, t: crate::time::Timestamp, role: &str) -> Event {
    let mut e = super::tests::sts(repo, t, "production");
    e.scopes = vec![format!("aws-role:arn:aws:iam::1:role/{role}")];
    e.context.subject = Some(format!("repo:{repo}:environment:production"));
    e.ttl = Some(3600);
    e
}

#[test]
fn trust_changed_by_a_new_writer_or_assumed_through_a_wildcard_alerts_announced_ones_do_not() {
    let tf = "aws:arn:aws:iam::4:role/terraform";
    let role = |r: &str| format!("aws:arn:aws:iam::1:role/{r}");
    let mut f = Feed::new(&["new_trust"]);
    f.push(trust(
        &role("shared"),
        at(0, 3600),
        tf,
        &["repo:acme/svc-*"],
    ));
    f.push(trust(
        &role("deploy"),
        at(0, 3700),
        tf,
        &["repo:acme/a:*", "repo:acme/b:*"],
    ));
    for d in 0..10 {
        for r in ["acme/a", "acme/b"] {
            f.push(assume(r, at(d, 10 * 3600), "deploy"));
        }
        f.push(assume("acme/svc-1", at(d, 11 * 3600), "shared"));
    }
    // Terraform announces a new repository; it assumes the role the next day.
    f.push(trust(
        &role("deploy"),
        at(10, 9 * 3600),
        tf,
        &["repo:acme/a:*", "repo:acme/b:*", "repo:acme/c:*"],
    ));
    f.push(assume("acme/c", at(11, 10 * 3600), "deploy"));
    assert!(f.done().is_empty());
    // A deploy role rewrites the trust; a repository nobody announced assumes the shared
    // role through its wildcard (admitted 16 days ago).
    f.push(trust(
        &role("deploy"),
        at(12, 9 * 3600),
        "aws:arn:aws:iam::1:role/app-deploy",
        &["repo:evil/tools:*"],
    ));
    f.push(assume("acme/svc-evil", at(16, 10 * 3600), "shared"));
    let alerts = f.done();
    assert_eq!(alerts.len(), 2, "{alerts:#?}");
    assert_eq!(alerts[0].identity, role("deploy"));
    assert!(
        alerts[0].reason.contains("never changed trust before"),
        "{}",
        alerts[0].reason
    );
    assert_eq!(
        alerts[0].evidence["admits"][0],
        "trust:sub:repo:evil/tools:*"
    );
    assert_eq!(alerts[1].identity, "github:acme/svc-evil");
    assert_eq!(alerts[1].evidence["subjects_trusted_before"], 1);

    // What it learned survives a snapshot: Terraform stays a known writer.
    let bytes = f.engine.snapshot_bytes().expect("snapshot");
    let mut g = Feed::new(&["new_trust"]);
    g.engine.restore_bytes(&bytes).expect("restore");
    g.push(trust(
        &role("deploy"),
        at(20, 9 * 3600),
        tf,
        &["repo:acme/d:*"],
    ));
    assert!(g.done().is_empty());
}

/// A production deploy of `identity` from `git_ref`.
fn deploy(identity: &str, t: crate::time::Timestamp, env: &str, git_ref: &str) -> Event {
    let mut e = super::tests::github(identity, t, Some(env));
    e.context.git_ref = Some(git_ref.into());
    e.context.ref_protected =
        Some(git_ref.starts_with("refs/tags") || git_ref == "refs/heads/main");
    e
}

#[test]
fn a_production_mint_from_a_ref_outside_its_deploy_refs_alerts_but_a_new_release_tag_does_not() {
    let id = "github:acme/web/.github/workflows/release.yml";
    let mut f = Feed::new(&["unapproved_ref"]);
    for d in 0..5 {
        f.push(deploy(
            id,
            at(d, 10 * 3600),
            "production",
            &format!("refs/tags/v1.{d}.0"),
        ));
        f.push(deploy(
            id,
            at(d, 12 * 3600),
            "staging",
            &format!("refs/heads/feature/f{d}"),
        ));
    }
    f.push(deploy(
        id,
        at(5, 10 * 3600),
        "production",
        "refs/tags/v2.0.13",
    ));
    assert!(f.done().is_empty());
    f.push(deploy(
        id,
        at(5, 14 * 3600),
        "production",
        "refs/heads/feature/f3",
    ));
    f.push(deploy(
        id,
        at(6, 14 * 3600),
        "production",
        "refs/pull/77/merge",
    ));
    let alerts = f.done();
    assert_eq!(alerts.len(), 2, "{alerts:#?}");
    assert_eq!(
        alerts[0].reason,
        "production mint from refs/heads/feature/f#"
    );
    assert_eq!(alerts[0].evidence["deploy_refs"][0], "refs/tags/v#.#.#");
    assert_eq!(alerts[1].reason, "production mint from refs/pull/#/merge");
}

#[test]
fn a_partition_joining_another_adds_its_automation_networks_and_merging_twice_changes_nothing() {
    // Two partitions each saw some of the automation identities on 10.77.0.0/16: neither
    // reaches three alone; joined (as one instance holding both judges them), they do.
    let mut a = Feed::new(&["human_bound_credential"]);
    let mut b = Feed::new(&["human_bound_credential"]);
    for i in 0..2 {
        hourly(
            &mut a,
            &format!("vault:approle/app{i}"),
            &format!("10.77.{i}.5"),
            3600,
            0..2,
        );
    }
    hourly(&mut b, "vault:approle/app2", "10.77.2.5", 3600, 0..2);
    let person = "vault:userpass-alice";
    let mut alone = Feed::new(&["human_bound_credential"]);
    alone
        .engine
        .restore_bytes(&a.engine.snapshot_bytes().expect("snapshot"))
        .expect("restore");
    alone.push(login(person, at(2, 12 * 3600), "10.77.9.9", 28_800));
    assert!(
        alone.done().is_empty(),
        "two automation identities are not enough"
    );
    // Merging a state into itself (two snapshots of one instance) changes nothing.
    let before = a.engine.runtime();
    b.engine.join_context(&mut a.engine);
    a.engine.join_context(&mut b.engine);
    let saved = |f: &Feed| format!("{:?}", f.engine.runtime());
    assert_ne!(
        saved(&a),
        format!("{before:?}"),
        "b's network identity was added"
    );
    let once = saved(&a);
    let mut c = Feed::new(&["human_bound_credential"]);
    c.engine
        .restore_bytes(&a.engine.snapshot_bytes().expect("snapshot"))
        .expect("restore");
    c.engine.join_context(&mut a.engine);
    assert_eq!(saved(&a), once, "merged twice, counted once");
    a.push(login(person, at(2, 12 * 3600), "10.77.9.9", 28_800));
    let alerts = a.done();
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0].evidence["automation_identities_on_network"], 3);
}
