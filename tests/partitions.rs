//! `replay --partitions N` equals one partition: engines that each hold some of the
//! identities share their cross-identity context (fleet and peer context, credential
//! bindings), as designed in `docs/scale-out.md`, and decide as one engine would. Checked on
//! the shipped sample week and on a simulated organisation of 300 identities, where engines
//! that judge alone (`--isolated-partitions`, `run` with `kafka.share_context = false`) do differ,
//! so the comparison can fail.

use std::collections::BTreeSet;

use crate::util::{self, run};

fn ids(config: &str, input: &str, partitions: u32, isolated: bool) -> BTreeSet<String> {
    let n = partitions.to_string();
    let mut args = vec![
        "--config",
        config,
        "replay",
        "--progress",
        "never",
        "--partitions",
        &n,
        input,
    ];
    if isolated {
        args.push("--isolated-partitions");
    }
    let out = run(&args, None);
    assert!(
        out.status.success(),
        "replay --partitions {partitions}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    util::parse_alert_ids(&out.stdout)
}

#[test]
fn the_sample_week_alerts_the_same_from_one_three_or_six_partitions() {
    let config = util::fixture("simulated/nhiwatch.toml");
    let week = util::fixture("simulated/week.jsonl.gz");
    let (config, week) = (
        config.to_str().expect("utf-8"),
        week.to_str().expect("utf-8"),
    );
    let one = ids(config, week, 1, false);
    assert!(!one.is_empty());
    for n in [3, 6] {
        assert_eq!(ids(config, week, n, false), one, "{n} partitions");
    }
}

#[test]
fn a_simulated_organisation_alerts_the_same_from_one_three_or_six_partitions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("org.jsonl");
    let config = dir.path().join("org.toml");
    let (input, config) = (
        input.to_str().expect("utf-8"),
        config.to_str().expect("utf-8"),
    );
    let out = run(
        &[
            "simulate",
            "--identities",
            "300",
            "--days",
            "21",
            "--seed",
            "11",
            "-o",
            input,
            "--config-out",
            config,
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let one = ids(config, input, 1, false);
    assert!(one.len() > 50, "{} alerts", one.len());
    for n in [3, 6] {
        let shared = ids(config, input, n, false);
        let only_one: Vec<_> = one.difference(&shared).collect();
        let only_n: Vec<_> = shared.difference(&one).collect();
        assert!(
            only_one.is_empty() && only_n.is_empty(),
            "{n} partitions: {} alerts only with one ({only_one:?}), {} only with {n} ({only_n:?})",
            only_one.len(),
            only_n.len()
        );
        // Judged alone, the partitions see neither the fleet's rollouts nor credentials
        // presented by another identity than their minter.
        assert_ne!(ids(config, input, n, true), one, "{n} isolated partitions");
    }
}

/// The hygiene findings keep cross-identity state of their own (trust writers, roles and
/// their subjects, automation networks): shared like the fleet context, so an organisation
/// with the hygiene scenarios alerts the same from one or three partitions.
#[test]
fn the_hygiene_findings_alert_the_same_from_one_or_three_partitions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("hygiene.jsonl");
    let input = input.to_str().expect("utf-8");
    std::fs::write(input, util::hygiene_org(11)).expect("write");
    let config = util::fixture("simulated/nhiwatch.toml");
    let config = config.to_str().expect("utf-8");
    let one = ids(config, input, 1, false);
    assert_eq!(ids(config, input, 3, false), one, "3 partitions");
    // Judged alone, the partitions do not all know the organisation's trust writers and
    // automation networks, so the comparison above can fail.
    assert_ne!(ids(config, input, 3, true), one, "isolated partitions");
}
