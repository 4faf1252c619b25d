//! Detection quality, measured the way `scripts/quality` does it, on one fixed seed: the
//! simulator writes an organisation's traffic with injected attacks and an answer key, the
//! binary replays it, and `score` holds the detectors to the targets (recall ≥ 0.95 for every
//! attack kind, precision ≥ 0.9) and shows what the naive first-seen rule costs on the same
//! data.

use std::path::Path;

use serde_json::Value;

use crate::util::run;

const CONFIG: &str = "schemas/samples/simulated/nhiwatch.toml";

fn ok(o: &std::process::Output, what: &str) {
    assert!(
        o.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Simulates (seed 5: 200 identities, 21 days) into `dir`; returns (records, labels).
fn simulate(dir: &Path) -> (String, String) {
    let records = dir.join("sim.jsonl").display().to_string();
    let labels = dir.join("labels.jsonl").display().to_string();
    let o = run(
        &[
            "simulate",
            "--seed",
            "5",
            "--identities",
            "200",
            "--days",
            "21",
            "-o",
            &records,
            "--labels",
            &labels,
        ],
        None,
    );
    ok(&o, "simulate");
    (records, labels)
}

fn replay(dir: &Path, records: &str, detectors: Option<&str>, name: &str) -> String {
    let alerts = dir.join(name).display().to_string();
    let mut args = vec![
        "--config",
        CONFIG,
        "replay",
        "--progress",
        "never",
        "--output",
        &alerts,
    ];
    if let Some(d) = detectors {
        args.extend(["--detectors", d]);
    }
    args.push(records);
    let o = run(&args, None);
    ok(&o, "replay");
    alerts
}

fn score(alerts: &str, labels: &str, extra: &[&str]) -> (std::process::Output, Value) {
    let mut args = vec!["score", "--json", "--alerts", alerts, "--labels", labels];
    args.extend(extra);
    let o = run(&args, None);
    let v = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    (o, v)
}

#[test]
fn detectors_meet_the_targets_and_the_naive_rule_does_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (records, labels) = simulate(dir.path());

    let alerts = replay(dir.path(), &records, None, "alerts.jsonl");
    let (o, s) = score(
        &alerts,
        &labels,
        &["--min-recall", "0.95", "--min-precision", "0.9"],
    );
    assert!(
        o.status.success(),
        "below target: {}",
        serde_json::to_string_pretty(&s).unwrap_or_default()
    );
    let kinds = s["kinds"].as_array().expect("kinds");
    assert_eq!(kinds.len(), 4);
    for k in kinds {
        assert!(
            k["attacks"].as_u64().unwrap_or(0) >= 8,
            "too few attacks to measure: {k}"
        );
        assert!(k["recall_own"].as_f64().unwrap_or(0.0) >= 0.95, "{k}");
    }
    assert!(s["precision"].as_f64().unwrap_or(0.0) >= 0.9, "{s}");
    assert!(
        s["false_per_1000_identity_days"].as_f64().unwrap_or(9e9) < 2.0,
        "{s}"
    );
    // Every false alert here is on a benign change the simulator announced.
    assert_eq!(s["false_alerts"], s["false_on_benign_changes"], "{s}");

    // The same data through the naive rule: it catches things, and buries them.
    let naive = replay(dir.path(), &records, Some("first_seen"), "naive.jsonl");
    let (o, n) = score(&naive, &labels, &["--min-precision", "0.9"]);
    assert_eq!(o.status.code(), Some(2), "the naive rule misses the bar");
    assert!(n["precision"].as_f64().unwrap_or(1.0) < 0.1, "{n}");
    assert!(
        n["false_per_1000_identity_days"].as_f64().unwrap_or(0.0) > 100.0,
        "{n}"
    );
    assert!(
        n["false_alerts"].as_u64().unwrap_or(0) > 50 * s["alerts"].as_u64().unwrap_or(1),
        "naive {} false alerts vs {} alerts",
        n["false_alerts"],
        s["alerts"]
    );
}

#[test]
fn score_reads_several_runs_and_says_where_input_is_bad() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = |n: &str| dir.path().join(n).display().to_string();
    std::fs::write(
        p("l.jsonl"),
        "{\"type\":\"attack_record\",\"attack\":1,\"kind\":\"new_runner\",\"variant\":\"v\",\"event_id\":\"e1\",\"identity\":\"i\",\"expected\":true}\n{\"type\":\"summary\",\"identity_days\":1000}\n",
    )
    .expect("write");
    std::fs::write(
        p("a.jsonl"),
        "{\"detector\":\"new_runner\",\"event_id\":\"e1\"}\n{\"detector\":\"new_runner\",\"event_id\":\"x\"}\n",
    )
    .expect("write");
    let (o, s) = score(
        &p("a.jsonl"),
        &p("l.jsonl"),
        &["--alerts", &p("a.jsonl"), "--labels", &p("l.jsonl")],
    );
    assert!(o.status.success());
    assert_eq!(s["alerts"], 4);
    assert_eq!(s["identity_days"], 2000);
    assert_eq!(s["kinds"][1]["attacks"], 2);
    assert_eq!(s["false_per_1000_identity_days"], 1.0);

    std::fs::write(p("bad.jsonl"), "{\"detector\":\"new_runner\"}\n").expect("write");
    let (o, _) = score(&p("bad.jsonl"), &p("l.jsonl"), &[]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("alerts line 1") && err.contains("event_id"),
        "{err}"
    );

    let (o, _) = score(&p("a.jsonl"), &p("l.jsonl"), &["--alerts", &p("a.jsonl")]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("in pairs"));
}
