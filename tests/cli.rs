//! `nhiwatch replay` and `check-config` as a user runs them: real files, stdin, gzip, the
//! rejects file, the summary and the exit status.

use std::io::Write;

use nhiwatch::event::Action;
use serde_json::Value;

use crate::util::{self, parse_events, run};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write_temp(dir: &tempfile::TempDir, name: &str, content: &[u8]) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, content).expect("write temp file");
    p.display().to_string()
}

fn rejects(path: &str) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("rejects file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("rejects line is JSON"))
        .collect()
}

#[test]
fn quickstart_sample_replays_cleanly() {
    let o = run(
        &[
            "replay",
            "--emit",
            "events",
            "schemas/samples/mixed/quickstart.jsonl",
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let events = parse_events(&o.stdout);
    assert_eq!(events.len(), 16);
    let err = stderr(&o);
    assert!(err.contains("15 records from 1 input"), "{err}");
    assert!(err.contains("events: 16"), "{err}");
    assert!(err.contains("rejects: 0"), "{err}");
    assert!(err.contains("records/s") || err.contains("/s"), "{err}");
}

#[test]
fn documents_arrays_delivery_files_gzip_and_stdin() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A pretty-printed JSON array of two documents.
    let a = std::fs::read_to_string(util::fixture("kubernetes/tokenrequest-kubelet.json"))
        .expect("fixture");
    let b = std::fs::read_to_string(util::fixture("vault/approle-login.json")).expect("fixture");
    let array = write_temp(&dir, "array.json", format!("[\n{a},\n{b}\n]\n").as_bytes());
    // Two pretty documents concatenated.
    let concat = write_temp(&dir, "concat.json", format!("{a}\n{b}").as_bytes());
    let o = run(
        &[
            "replay",
            "--emit",
            "events",
            &array,
            &concat,
            "schemas/samples/cloudtrail/delivery-file.json",
        ],
        None,
    );
    let ev = parse_events(&o.stdout);
    assert_eq!(ev.len(), 2 + 2 + 3, "{}", stderr(&o));
    assert!(o.status.success());

    // gzip, recognized by content, and stdin give the same events as the plain file.
    let plain = run(
        &[
            "replay",
            "--emit",
            "events",
            "schemas/samples/mixed/quickstart.jsonl",
        ],
        None,
    )
    .stdout;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&std::fs::read(util::fixture("mixed/quickstart.jsonl")).expect("fixture"))
        .expect("gzip");
    let gz_path = write_temp(&dir, "quickstart.log", &gz.finish().expect("gzip"));
    assert_eq!(
        run(&["replay", "--emit", "events", &gz_path], None).stdout,
        plain
    );
    let stdin = std::fs::read(util::fixture("mixed/quickstart.jsonl")).expect("fixture");
    assert_eq!(
        run(&["replay", "--emit", "events", "-"], Some(&stdin)).stdout,
        plain
    );

    // A directory stands for its files.
    let dir_out = run(
        &["replay", "--emit", "events", "schemas/samples/github"],
        None,
    );
    assert_eq!(
        parse_events(&dir_out.stdout).len(),
        3,
        "{}",
        stderr(&dir_out)
    );
}

#[test]
fn bad_lines_are_rejected_with_file_and_line_and_the_rest_is_processed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = std::fs::read_to_string(util::fixture("mixed/quickstart.jsonl")).expect("fixture");
    let first = good.lines().next().expect("a line");
    let input = [
        first,
        r#"{"jti":"broken","#,
        r#"{"hello":"world"}"#,
        r#"{"eventVersion":"1.08","eventTime":"2026-01-05T00:00:00Z","eventName":"GetObject","eventSource":"s3.amazonaws.com"}"#,
        "",
        r#"{"jti":"a","repository":"o/r","job_workflow_ref":"o/r/.github/workflows/x.yml@main","iat":0}"#,
        first,
    ]
    .join("\n");
    let path = write_temp(&dir, "mixed.jsonl", input.as_bytes());
    let rej_path = dir.path().join("rejects.jsonl").display().to_string();
    let o = run(
        &["replay", "--emit", "events", "--rejects", &rej_path, &path],
        None,
    );
    assert!(o.status.success(), "some records were good: {}", stderr(&o));
    assert_eq!(parse_events(&o.stdout).len(), 2);
    let r = rejects(&rej_path);
    let got: Vec<(u64, &str)> = r
        .iter()
        .map(|v| {
            (
                v["line"].as_u64().expect("line"),
                v["reason"].as_str().expect("reason"),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (2, "malformed_json"),
            (3, "unknown_format"),
            (4, "missing_field"),
            (6, "absurd_timestamp")
        ]
    );
    assert!(r.iter().all(|v| v["file"] == path.as_str()));
    assert_eq!(
        r[2]["record"].as_str().map(|s| s.contains("GetObject")),
        Some(true),
        "the record is kept"
    );
    let err = stderr(&o);
    assert!(err.contains("rejects: 4"), "{err}");
    assert!(
        err.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["malformed_json", "1"]),
        "{err}"
    );
    assert!(err.contains("line=2"), "warnings name the line: {err}");
}

#[test]
fn rejects_in_pretty_documents_point_at_the_element_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = "[\n  {\"jti\": \"x\", \"repository\": \"o/r\", \"job_workflow_ref\": \"o/r/.github/workflows/a.yml@main\", \"iat\": 1767610800},\n\n  {\n    \"jti\": \"y\",\n    \"repository\": \"o/r\"\n  },\n  42\n]\n";
    let path = write_temp(&dir, "pretty.json", text.as_bytes());
    let rej_path = dir.path().join("rejects.jsonl").display().to_string();
    let o = run(
        &["replay", "--emit", "events", "--rejects", &rej_path, &path],
        None,
    );
    assert_eq!(parse_events(&o.stdout).len(), 1);
    let r = rejects(&rej_path);
    assert_eq!(r.len(), 2);
    assert_eq!(
        (r[0]["line"].as_u64(), r[0]["index"].as_u64()),
        (Some(4), Some(1))
    );
    assert_eq!(r[0]["reason"], "missing_field");
    assert_eq!(
        (r[1]["line"].as_u64(), r[1]["index"].as_u64()),
        (Some(8), Some(2))
    );
    assert_eq!(r[1]["reason"], "not_an_object");
}

#[test]
fn exit_status_is_non_zero_only_when_nothing_could_be_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = write_temp(&dir, "bad.jsonl", b"nope\n{\"hello\":1}\n");
    let o = run(&["replay", "--emit", "events", &bad], None);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let missing = dir.path().join("missing.jsonl").display().to_string();
    let o = run(&["replay", "--emit", "events", &missing], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("missing.jsonl"), "{}", stderr(&o));
    let o = run(
        &[
            "replay",
            "--emit",
            "events",
            &missing,
            "schemas/samples/github/environment-deploy.json",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(0));
    assert!(
        stderr(&o).contains("unreadable inputs: 1"),
        "{}",
        stderr(&o)
    );
    let empty = write_temp(&dir, "empty.jsonl", b"\n\n");
    assert_eq!(
        run(&["replay", "--emit", "events", &empty], None)
            .status
            .code(),
        Some(0)
    );
}

#[test]
fn format_override_and_emit_none() {
    let o = run(
        &[
            "replay",
            "--emit",
            "events",
            "--format",
            "vault",
            "schemas/samples/github/environment-deploy.json",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("format_mismatch"), "{}", stderr(&o));
    let o = run(
        &[
            "replay",
            "--emit",
            "events",
            "--format",
            "cloudtrail",
            "schemas/samples/cloudtrail/delivery-file.json",
        ],
        None,
    );
    assert_eq!(parse_events(&o.stdout).len(), 3);
    let o = run(
        &[
            "replay",
            "--emit",
            "none",
            "schemas/samples/mixed/quickstart.jsonl",
        ],
        None,
    );
    assert!(o.stdout.is_empty());
    assert!(stderr(&o).contains("events: 16"));
}

#[test]
fn output_file_and_env_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("events.jsonl");
    let o = util::bin()
        .args([
            "replay",
            "--emit",
            "events",
            "schemas/samples/vault/kv-read.jsonl",
        ])
        .env("NHIWATCH_OUTPUT", &out)
        .output()
        .expect("run");
    assert!(o.status.success());
    assert!(o.stdout.is_empty());
    let events = parse_events(&std::fs::read(&out).expect("output file"));
    assert_eq!(events.iter().filter(|e| e.action == Action::Use).count(), 1);
}

#[test]
fn fingerprints_are_stable_across_runs_with_a_key_and_differ_without() {
    let a = run(
        &[
            "replay",
            "--emit",
            "events",
            "schemas/samples/vault/kv-read.jsonl",
        ],
        None,
    )
    .stdout;
    let b = run(
        &[
            "replay",
            "--emit",
            "events",
            "schemas/samples/vault/kv-read.jsonl",
        ],
        None,
    )
    .stdout;
    assert_eq!(a, b);
    let c = util::bin()
        .args([
            "replay",
            "--emit",
            "events",
            "schemas/samples/vault/kv-read.jsonl",
        ])
        .env_remove("NHIWATCH_FINGERPRINT_KEY")
        .output()
        .expect("run");
    assert_ne!(a, c.stdout, "a random per-process key");
    assert!(String::from_utf8_lossy(&c.stderr).contains("no fingerprint key configured"));
}

#[test]
fn check_config_names_the_bad_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = write_temp(
        &dir,
        "good.toml",
        b"[environments.aws_accounts]\n\"111122223333\" = \"production\"\n[environments.vault_paths]\n\"kv/data/prod/\" = \"production\"\n",
    );
    let o = run(&["--config", &good, "check-config"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&["--config", "nhiwatch.example.toml", "check-config"], None);
    assert!(
        o.status.success(),
        "the shipped example must stay valid: {}",
        stderr(&o)
    );
    let bad = write_temp(
        &dir,
        "bad.toml",
        b"[environments.aws_accounts]\n\"1234\" = \"production\"\n",
    );
    let o = run(&["--config", &bad, "check-config"], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("environments.aws_accounts.\"1234\""),
        "{}",
        stderr(&o)
    );
    let typo = write_temp(&dir, "typo.toml", b"[decode]\nmax_record_byte = 5\n");
    let o = run(&["--config", &typo, "check-config"], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("max_record_byte"), "{}", stderr(&o));
    // A mapping applied by replay.
    let o = run(
        &[
            "--config",
            &good,
            "replay",
            "--emit",
            "events",
            "schemas/samples/cloudtrail/assume-role-with-web-identity.json",
        ],
        None,
    );
    assert_eq!(
        parse_events(&o.stdout)[0].environment.as_deref(),
        Some("production")
    );
}

#[test]
fn run_configuration_is_validated_before_touching_kafka() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str)] = &[
        (
            "[kafka]\nbootstrap_servers = \"127.0.0.1:1\"\n[[kafka.topics]]\nname = \"a\"\n[kafka.consumer_options]\n\"sesion.timeout.ms\" = \"6000\"\n",
            "kafka.consumer_options.\"sesion.timeout.ms\"",
        ),
        (
            "[kafka]\nbootstrap_servers = \"127.0.0.1:1\"\n[[kafka.topics]]\nname = \"a\"\n[kafka.options]\n\"enable.auto.commit\" = \"true\"\n",
            "kafka.options.\"enable.auto.commit\"",
        ),
        (
            "[kafka]\nbootstrap_servers = \"127.0.0.1:1\"\nalerts_topic = \"a\"\n[[kafka.topics]]\nname = \"a\"\n",
            "kafka.alerts_topic",
        ),
        (
            "[kafka]\nbootstrap_servers = \"127.0.0.1:1\"\ngroup_id = \"has space\"\n[[kafka.topics]]\nname = \"a\"\n",
            "kafka.group_id",
        ),
        (
            "[kafka]\n[[kafka.topics]]\nname = \"a\"\n",
            "kafka.bootstrap_servers",
        ),
        (
            "[kafka]\nbootstrap_servers = \"127.0.0.1:1\"\npartitions = 0\n[[kafka.topics]]\nname = \"a\"\n",
            "kafka.partitions",
        ),
    ];
    for (i, (text, key)) in cases.iter().enumerate() {
        let path = write_temp(&dir, &format!("c{i}.toml"), text.as_bytes());
        for cmd in ["check-config", "run"] {
            let out = util::run(&["--config", &path, cmd], None);
            assert_eq!(out.status.code(), Some(2), "{cmd} {text}: {}", stderr(&out));
            assert!(stderr(&out).contains(key), "{cmd} {text}: {}", stderr(&out));
        }
    }
    // Flags: a topic's format is checked, and a run without topics says how to give one.
    let out = util::run(
        &[
            "run",
            "--bootstrap-servers",
            "127.0.0.1:1",
            "--topic",
            "x=vaultt",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown format \"vaultt\""),
        "{}",
        stderr(&out)
    );
    let out = util::run(&["run", "--bootstrap-servers", "127.0.0.1:1"], None);
    assert!(
        stderr(&out).contains("--topic NAME[=FORMAT]"),
        "{}",
        stderr(&out)
    );
    // The shipped example is valid.
    let out = util::run(&["--config", "nhiwatch.example.toml", "check-config"], None);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Regression: `simulate --start` is documented as the first day, but a bare date was refused
/// ("too short for a date and time").
#[test]
fn simulate_start_takes_a_date() {
    let args = |start: &str| {
        run(
            &[
                "simulate",
                "--identities",
                "20",
                "--days",
                "2",
                "--records",
                "200",
                "--start",
                start,
            ],
            None,
        )
    };
    let date = args("2026-01-05");
    assert!(date.status.success(), "{}", stderr(&date));
    let midnight = args("2026-01-05T00:00:00Z");
    assert!(midnight.status.success(), "{}", stderr(&midnight));
    assert_eq!(
        date.stdout, midnight.stdout,
        "a date means its midnight UTC"
    );
    let text = String::from_utf8_lossy(&date.stdout);
    assert!(text.lines().count() == 200, "{text}");
    assert!(text.contains("2026-01-05"), "{text}");
    let bad = args("2026-13-05");
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("--start"), "{}", stderr(&bad));
}

#[test]
fn inventory_lists_every_identity_with_its_tier_and_filters_and_exports() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let state = state.to_str().unwrap();
    let config = "schemas/samples/simulated/nhiwatch.toml";
    let week = "schemas/samples/simulated/week.jsonl.gz";
    let out = run(
        &["--config", config, "replay", "--state", state, week],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let inventory = |extra: &[&str]| -> std::process::Output {
        let mut args = vec!["--config", config, "inventory", "--state", state];
        args.extend_from_slice(extra);
        let out = run(&args, None);
        assert!(out.status.success(), "{extra:?}: {}", stderr(&out));
        out
    };
    let json = |extra: &[&str]| -> Vec<Value> {
        let mut args = vec!["--json"];
        args.extend_from_slice(extra);
        serde_json::from_slice(&inventory(&args).stdout).expect("json")
    };
    let all = json(&[]);
    // Straight from the records, the same rows as from the state the replay left.
    let direct = run(&["--config", config, "inventory", "--json", week], None);
    assert!(direct.status.success(), "{}", stderr(&direct));
    let direct: Vec<Value> = serde_json::from_slice(&direct.stdout).expect("json");
    assert_eq!(direct, all);
    // And a file of nothing but bad records is an error that says so.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "not a record\n").unwrap();
    let out = run(&["inventory", bad.to_str().unwrap()], None);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("rejects: 1"), "{}", stderr(&out));
    assert!(stderr(&out).contains("could be read"), "{}", stderr(&out));
    // One row per identity with a baseline.
    let list = run(
        &[
            "--config",
            config,
            "baselines",
            "list",
            "--state",
            state,
            "--limit",
            "100000",
        ],
        None,
    );
    let listed = String::from_utf8_lossy(&list.stdout).lines().count() - 1;
    assert_eq!(all.len(), listed);
    let tiers: Vec<u64> = all.iter().map(|r| r["tier"].as_u64().unwrap()).collect();
    assert!(
        tiers.windows(2).all(|w| w[0] <= w[1]),
        "riskiest first: {tiers:?}"
    );
    assert!(tiers.contains(&1) && tiers.contains(&3), "{tiers:?}");
    for r in &all {
        let reasons: Vec<&str> = r["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        if r["tier"] == 1 {
            assert!(reasons.contains(&"reaches production"), "{r}");
            assert!(reasons.len() >= 3, "{r}");
        }
        assert!(!r["kind"].as_str().unwrap().is_empty(), "{r}");
    }
    // The one kubelet token that lives two days is tier 1; its hour-long siblings are not.
    let row = |id: &str| all.iter().find(|r| r["identity"] == id).unwrap();
    assert_eq!(row("k8s:gateway-prod/gateway")["tier"], 1);
    assert_eq!(row("k8s:gateway-prod/gateway")["owner"], "gateway-prod");
    assert_eq!(row("k8s:auth-prod/auth")["tier"], 2);
    // Filters.
    let t1 = json(&["--tier", "1"]);
    assert!(!t1.is_empty() && t1.iter().all(|r| r["tier"] == 1));
    let k8s = json(&["--source", "k8s"]);
    assert!(
        !k8s.is_empty()
            && k8s
                .iter()
                .all(|r| r["kind"] == "kubernetes service account")
    );
    let prod = json(&["--environment", "production"]);
    assert!(prod.len() < all.len());
    assert!(prod.iter().all(|r| {
        r["environments"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "production")
    }));
    let stale = json(&["--stale-days", "3"]);
    assert!(stale.iter().all(|r| r["idle_days"].as_u64().unwrap() >= 3));
    // CSV: the header, then one line per row.
    let csv = String::from_utf8(inventory(&["--csv"]).stdout).unwrap();
    assert!(
        csv.starts_with("tier,identity,kind,owner,environments,"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), all.len() + 1);
    // The table ends with the tier counts.
    let table = String::from_utf8(inventory(&[]).stdout).unwrap();
    let t = |n: u64| tiers.iter().filter(|&&x| x == n).count();
    assert!(
        table.ends_with(&format!(
            "{} identities: tier 1 {}, tier 2 {}, tier 3 {}\n",
            all.len(),
            t(1),
            t(2),
            t(3)
        )),
        "{table}"
    );
}
