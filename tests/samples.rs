//! Every public third-party record under `../shared/samples/` (CloudTrail from Stratus Red Team,
//! Kubernetes audit from Falco and audit2rbac, GitHub OIDC claims, Panther rule-test records):
//! nothing crashes, every record is decoded or rejected with a specific reason, and STS records
//! become mints with the right credential fingerprint and role scope. Skips with a message when
//! `../shared/samples` is absent. Also the simulated week this repository ships as the
//! quickstart's input: it matches the simulator and its alerts catch every attack kind.

use std::collections::BTreeMap;
use std::path::Path;

use nhiwatch::decode::{Decoded, RejectReason};
use nhiwatch::event::{Action, CredentialKind, Source};
use serde_json::Value;

use crate::util::{self, fp};

const STS_MINTS: [&str; 5] = [
    "AssumeRole",
    "AssumeRoleWithWebIdentity",
    "AssumeRoleWithSAML",
    "GetSessionToken",
    "GetFederationToken",
];

fn files(dir: &Path, ext: &str) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .expect("readable samples dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

fn decode_value(v: &Value) -> Vec<Decoded> {
    let mut out = Vec::new();
    util::decoder().decode(serde_json::to_string(v).expect("json").as_bytes(), &mut out);
    out
}

fn tally(results: &[Decoded], counts: &mut BTreeMap<String, usize>) {
    for r in results {
        let key = match r {
            Ok(e) => format!("event {} {}", e.source.as_str(), e.action.as_str()),
            Err(rej) => format!("reject {}", rej.reason),
        };
        *counts.entry(key).or_default() += 1;
    }
}

#[test]
fn stratus_red_team_cloudtrail_decodes_and_sts_calls_are_mints() {
    let Some(root) = util::shared_samples() else {
        return;
    };
    let mut counts = BTreeMap::new();
    let mut records = 0;
    let mut mints_checked = 0;
    let mut refused = 0;
    for f in files(&root.join("cloudtrail-stratus-red-team"), "json") {
        let raw: Vec<Value> =
            serde_json::from_str(&std::fs::read_to_string(&f).expect("file")).expect("array");
        for rec in &raw {
            records += 1;
            let out = decode_value(rec);
            tally(&out, &mut counts);
            for r in &out {
                if let Err(rej) = r {
                    panic!("{}: record {} rejected: {rej}", f.display(), rec["eventID"]);
                }
            }
            let name = rec["eventName"].as_str().unwrap_or_default();
            let sts = rec["eventSource"] == "sts.amazonaws.com" && STS_MINTS.contains(&name);
            let key = rec["responseElements"]["credentials"]["accessKeyId"].as_str();
            if let (true, Some(key)) = (sts, key) {
                let mint = out
                    .iter()
                    .flatten()
                    .find(|e| e.action == Action::Mint)
                    .unwrap_or_else(|| panic!("{name} {} is not a mint", rec["eventID"]));
                assert_eq!(mint.id, rec["eventID"].as_str().unwrap_or_default());
                assert_eq!(
                    mint.credential.as_ref().map(|c| c.fp.clone()),
                    Some(fp(CredentialKind::AwsAccessKey, key)),
                    "{name}: fingerprint of the new session key"
                );
                if let Some(role) = rec["requestParameters"]["roleArn"].as_str() {
                    assert!(
                        mint.scopes.contains(&format!("aws-role:{role}")),
                        "{:?}",
                        mint.scopes
                    );
                }
                if let Some(secs) = rec["requestParameters"]["durationSeconds"].as_u64() {
                    assert_eq!(mint.ttl, Some(secs));
                }
                assert!(
                    !serde_json::to_string(mint).expect("json").contains(key),
                    "raw access key id in the event"
                );
                mints_checked += 1;
            }
            if sts && rec.get("errorCode").is_some() {
                let mint = out
                    .iter()
                    .flatten()
                    .find(|e| e.action == Action::Mint)
                    .expect("failed mint");
                assert_eq!(mint.outcome, nhiwatch::event::Outcome::Failure);
                assert_eq!(mint.credential, None);
                refused += 1;
            }
            // Any other call made with a key is a use of it.
            if let Some(k) = rec["userIdentity"]["accessKeyId"]
                .as_str()
                .filter(|k| !k.is_empty())
            {
                assert!(
                    out.iter().flatten().any(|e| e.action == Action::Use
                        && e.credential.as_ref().map(|c| c.fp.clone())
                            == Some(fp(
                                if k.starts_with("AKIA") {
                                    CredentialKind::AwsLongTermKey
                                } else {
                                    CredentialKind::AwsAccessKey
                                },
                                k
                            ))),
                    "{name} with key is not a use"
                );
            }
        }
    }
    eprintln!(
        "stratus: {records} records -> {counts:?}; {mints_checked} STS mints and {refused} refused ones checked"
    );
    assert_eq!(records, 310);
    assert_eq!(
        (mints_checked, refused),
        (9, 4),
        "the STS calls in the Stratus detonations"
    );
}

#[test]
fn kubernetes_audit_samples_decode() {
    let Some(root) = util::shared_samples() else {
        return;
    };
    let decoder = util::decoder();
    let mut counts = BTreeMap::new();
    let mut files_seen = 0;
    for f in files(&root.join("kubernetes-falco"), "json")
        .into_iter()
        .chain([root.join("kubernetes-audit2rbac/demo.log")])
    {
        files_seen += 1;
        let results = util::decode_file_with(&decoder, &f);
        tally(&results, &mut counts);
        for (bytes, line) in nhiwatch::source::file::read_records(&f, 1 << 30).expect("read") {
            let v: Value = serde_json::from_slice(&bytes).expect("json record");
            let mut out = Vec::new();
            decoder.decode(&bytes, &mut out);
            for r in &out {
                match r {
                    Ok(e) => assert_eq!(e.source, Source::Kubernetes),
                    Err(rej) => {
                        // Only records without an audit event's shape may be unknown.
                        assert!(
                            v.get("auditID").is_none(),
                            "{}:{line}: audit event rejected: {rej}",
                            f.display()
                        );
                        assert_eq!(rej.reason, RejectReason::UnknownFormat);
                    }
                }
            }
            // Service-account requests are uses, everything else is context.
            if let Some(user) = v["user"]["username"].as_str()
                && v["stage"] == "ResponseComplete"
            {
                let e = out[0].as_ref().expect("decoded");
                let expect = if user.starts_with("system:serviceaccount:") {
                    Action::Use
                } else {
                    Action::Other
                };
                assert_eq!(e.action, expect, "{}:{line} user {user}", f.display());
            }
        }
    }
    eprintln!("kubernetes: {files_seen} files -> {counts:?}");
    assert_eq!(
        counts.get("reject unknown_format").copied().unwrap_or(0),
        1,
        "{counts:?}"
    );
    assert!(counts.get("event kubernetes use").copied().unwrap_or(0) >= 10);
}

#[test]
fn github_oidc_claim_samples_are_mints() {
    let Some(root) = util::shared_samples() else {
        return;
    };
    for f in files(&root.join("github-oidc-claims"), "json") {
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(&f).expect("file")).expect("json");
        let claims = v.get("payload").unwrap_or(&v);
        let out = decode_value(&v);
        assert_eq!(out.len(), 1, "{}", f.display());
        let e = out[0]
            .as_ref()
            .unwrap_or_else(|r| panic!("{}: {r}", f.display()));
        let jti = claims["jti"].as_str().expect("jti");
        assert_eq!(e.action, Action::Mint);
        assert_eq!(e.source, Source::GithubActions);
        assert_eq!(e.id, jti);
        assert_eq!(
            e.credential.as_ref().map(|c| c.fp.clone()),
            Some(fp(CredentialKind::OidcJti, jti))
        );
        let repo = claims["repository"].as_str().expect("repository");
        assert!(
            e.identity.starts_with(&format!("github:{repo}")),
            "{} for {}",
            e.identity,
            f.display()
        );
        assert!(
            !e.identity.contains('@'),
            "identity must not carry the ref: {}",
            e.identity
        );
        assert_eq!(
            e.time.as_unix_seconds(),
            claims["iat"].as_i64().expect("iat")
        );
    }
}

#[test]
fn panther_rule_test_records_decode_or_are_rejected_with_a_reason() {
    let Some(root) = util::shared_samples() else {
        return;
    };
    let mut report = BTreeMap::new();
    for f in files(&root.join("panther-rule-tests"), "jsonl") {
        let name = f
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let mut counts = BTreeMap::new();
        for (i, line) in std::fs::read_to_string(&f)
            .expect("file")
            .lines()
            .enumerate()
        {
            let wrapper: Value = serde_json::from_str(line).expect("json line");
            let log = &wrapper["log"];
            let out = decode_value(log);
            assert!(
                !out.is_empty(),
                "{name}:{}: nothing decoded or rejected",
                i + 1
            );
            tally(&out, &mut counts);
            let complete_cloudtrail = ["eventID", "eventTime", "eventSource", "eventName"]
                .iter()
                .all(|k| {
                    log.get(k).is_some_and(|v| {
                        v.as_str()
                            .is_some_and(|s| s.len() >= 10 || *k != "eventTime")
                    })
                });
            let complete_k8s = log.get("auditID").is_some()
                && log["apiVersion"]
                    .as_str()
                    .is_some_and(|v| v.starts_with("audit.k8s.io"))
                && (log.get("requestReceivedTimestamp").is_some()
                    || log.get("stageTimestamp").is_some());
            for r in &out {
                match r {
                    Ok(_) => {}
                    Err(rej) if complete_cloudtrail || complete_k8s => {
                        panic!("{name}:{}: complete record rejected: {rej}", i + 1)
                    }
                    Err(rej) if rej.reason == RejectReason::UnknownFormat => {
                        // Only records of other systems (GitHub audit, GKE, AKS, resource
                        // snapshots) may be unknown.
                        let cloudtrail_keys =
                            ["eventID", "eventTime", "eventSource", "userIdentity"];
                        assert!(
                            !cloudtrail_keys.iter().any(|k| log.get(k).is_some())
                                && log.get("auditID").is_none(),
                            "{name}:{}: recognizable record called unknown",
                            i + 1
                        );
                    }
                    Err(rej) => assert!(
                        matches!(
                            rej.reason,
                            RejectReason::MissingField
                                | RejectReason::InvalidField
                                | RejectReason::AbsurdTimestamp
                        ),
                        "{name}:{}: {rej}",
                        i + 1
                    ),
                }
            }
        }
        report.insert(name, counts);
    }
    for (name, counts) in &report {
        eprintln!("panther {name}: {counts:?}");
    }
    let ct = &report["AWS_CloudTrail.tests.jsonl"];
    assert!(
        ct.get("event cloudtrail mint").copied().unwrap_or(0) >= 5,
        "{ct:?}"
    );
    let gh = &report["GitHub_Audit.tests.jsonl"];
    assert_eq!(
        gh.keys().collect::<Vec<_>>(),
        ["reject unknown_format"],
        "GitHub audit logs are not OIDC claims"
    );
}

/// The shipped simulated week is exactly what the simulator writes for its documented
/// command, so it can be regenerated and never drifts from the code.
#[test]
fn simulated_week_matches_the_simulator() {
    use std::io::Read;
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("week.jsonl");
    let labels = dir.path().join("labels.jsonl");
    let o = util::run(
        &[
            "simulate",
            "--seed",
            "1",
            "--identities",
            "36",
            "--days",
            "9",
            "-o",
            &out.display().to_string(),
            "--labels",
            &labels.display().to_string(),
        ],
        None,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut shipped = String::new();
    flate2::read::GzDecoder::new(
        std::fs::File::open(util::fixture("simulated/week.jsonl.gz")).expect("shipped week"),
    )
    .read_to_string(&mut shipped)
    .expect("gzip");
    let fresh = std::fs::read_to_string(&out).expect("fresh");
    assert!(
        shipped == fresh,
        "schemas/samples/simulated/week.jsonl.gz is stale: regenerate it with the command in schemas/samples/simulated/README.md"
    );
    assert_eq!(
        std::fs::read_to_string(util::fixture("simulated/week.labels.jsonl")).expect("labels"),
        std::fs::read_to_string(&labels).expect("fresh labels"),
        "week.labels.jsonl is stale"
    );
}

/// The quickstart's command prints real alerts on the shipped week: every attack kind is
/// caught by its own detector.
#[test]
fn quickstart_week_prints_alerts_that_catch_every_attack_kind() {
    let o = util::run(
        &[
            "--config",
            "schemas/samples/simulated/nhiwatch.toml",
            "replay",
            "schemas/samples/simulated/week.jsonl.gz",
        ],
        None,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let alerts: Vec<Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("alert JSON"))
        .collect();
    assert!(alerts.len() >= 5, "{alerts:?}");
    let labels =
        std::fs::read_to_string(util::fixture("simulated/week.labels.jsonl")).expect("labels");
    let mut kinds: BTreeMap<String, bool> = BTreeMap::new();
    for l in labels.lines() {
        let v: Value = serde_json::from_str(l).expect("label");
        if v["type"] == "attack_record" {
            let kind = v["kind"].as_str().unwrap_or_default().to_string();
            let caught = alerts
                .iter()
                .any(|a| a["event_id"] == v["event_id"] && a["detector"] == v["kind"]);
            *kinds.entry(kind).or_default() |= caught;
        }
    }
    assert_eq!(kinds.len(), 4, "all four kinds are in the week: {kinds:?}");
    assert!(kinds.values().all(|c| *c), "{kinds:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("alerts: "), "{err}");
}

/// Regression: housekeeping schedules (the engine's daily prune, the hourly credential sweep)
/// were not saved with snapshots, so an engine restored mid-stream forgot on another schedule
/// and its state drifted from one that never stopped.
#[test]
fn a_snapshot_restored_mid_stream_continues_exactly_like_an_engine_that_never_stopped() {
    let cfg = nhiwatch::config::Config::load(Some(&util::fixture("simulated/nhiwatch.toml")))
        .expect("config");
    let events: Vec<nhiwatch::event::Event> =
        util::decode_file_with(&util::decoder(), &util::fixture("simulated/week.jsonl.gz"))
            .into_iter()
            .filter_map(Result::ok)
            .collect();
    assert!(events.len() > 10_000);
    let engine = || cfg.engine(None).expect("engine");
    let (mut whole, mut first) = (engine(), engine());
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let cut = events.len() * 3 / 7;
    for e in &events[..cut] {
        whole.process(e, &mut a);
        first.process(e, &mut b);
    }
    assert!(first.held() > 0, "the cut must fall while an alert is held");
    let mut second = engine();
    second
        .restore_bytes(&first.snapshot_bytes().expect("encode"))
        .expect("restore");
    for e in &events[cut..] {
        whole.process(e, &mut a);
        second.process(e, &mut b);
    }
    assert_eq!(a, b, "alerts");
    assert!(
        whole.snapshot_bytes().expect("encode") == second.snapshot_bytes().expect("encode"),
        "state after a restore differs from uninterrupted state"
    );
}
