//! SIEM forwarding: every encoding of the sample week's alerts validated (OCSF against the
//! published schema files, ECS field rules, CEF parsed back by an independent parser, the HEC
//! envelope), syslog into a real rsyslog, HTTP into a receiver that fails or refuses, TLS
//! with a custom CA, and alerts spooled while the receiver is down delivered after a restart.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::util::kafka::{Broker, free_port};
use crate::util::ocsf::Ocsf;
use crate::util::receiver::{Certs, HttpReceiver, Plan, Rsyslog};
use crate::util::{self, prom};

/// Every detector, so the week gives alerts of every severity (the naive `first_seen`
/// rule adds volume: about 160 alerts in all).
const DETECTORS: &str = "off_hours_mint,new_runner,scope_escalation,cross_env_reuse,first_seen";

fn org_config() -> String {
    util::fixture("simulated/nhiwatch.toml")
        .to_string_lossy()
        .into_owned()
}

/// The sample week replayed with `--encoding enc`: output lines.
fn replay_lines(config: &str, enc: &str, extra: &[&str]) -> (Vec<String>, String) {
    let week = util::fixture("simulated/week.jsonl.gz");
    let mut args = vec![
        "--config",
        config,
        "replay",
        "--detectors",
        DETECTORS,
        "--encoding",
        enc,
    ];
    args.extend_from_slice(extra);
    let week = week.to_string_lossy().into_owned();
    args.push(&week);
    let out = util::run(&args, None);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "replay failed:\n{stderr}");
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    (lines, stderr)
}

/// The week's alerts as nhiwatch JSON, in output order.
fn alerts() -> Vec<Value> {
    let (lines, _) = replay_lines(&org_config(), "json", &[]);
    let v: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("alert JSON"))
        .collect();
    assert!(v.len() > 100, "expected the week's alerts, got {}", v.len());
    v
}

fn ms(rfc3339: &str) -> i64 {
    nhiwatch::time::Timestamp::parse(rfc3339)
        .expect("time")
        .as_micros()
        / 1000
}

/// The syslog severity an alert's severity maps to (RFC 5424: 2 crit … 6 info).
fn syslog_severity(a: &Value) -> u32 {
    match a["severity"].as_str().unwrap() {
        "critical" => 2,
        "high" => 3,
        "medium" => 4,
        "low" => 5,
        _ => 6,
    }
}

/// The `id` of each alert line, in order.
fn line_ids<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    lines
        .into_iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[test]
fn ocsf_findings_validate_against_the_published_detection_finding_class() {
    let Some(schema) = Ocsf::load() else { return };
    let alerts = alerts();
    let (lines, _) = replay_lines(&org_config(), "ocsf", &[]);
    assert_eq!(lines.len(), alerts.len());
    let mut severities = BTreeSet::new();
    for (line, a) in lines.iter().zip(&alerts) {
        let f: Value = serde_json::from_str(line).expect("OCSF JSON");
        let errors = schema.validate_event(&f, "detection_finding");
        assert!(errors.is_empty(), "{errors:#?}\n{line}");
        // Classification, and every sibling caption equal to its enum's caption.
        assert_eq!(f["class_uid"], 2004);
        assert_eq!(f["category_uid"], 2);
        assert_eq!(
            f["type_uid"].as_i64(),
            Some(f["class_uid"].as_i64().unwrap() * 100 + f["activity_id"].as_i64().unwrap())
        );
        for (id, name) in [
            ("activity_id", "activity_name"),
            ("severity_id", "severity"),
            ("status_id", "status"),
        ] {
            let caption = schema
                .caption("detection_finding", id, f[id].as_i64().expect(id))
                .unwrap_or_else(|| panic!("{id} {} has no caption", f[id]));
            assert_eq!(f[name].as_str(), Some(caption.as_str()), "{name}");
        }
        assert_eq!(f["status_id"], 1, "a new finding");
        let sev = a["severity"].as_str().unwrap();
        let want = ["info", "low", "medium", "high", "critical"]
            .iter()
            .position(|s| *s == sev)
            .unwrap()
            + 1;
        assert_eq!(f["severity_id"].as_u64(), Some(want as u64), "{sev}");
        severities.insert(sev.to_string());
        // The alert's facts are where an analyst looks for them.
        assert_eq!(f["finding_info"]["uid"], a["id"]);
        assert_eq!(f["metadata"]["uid"], a["id"]);
        assert_eq!(f["finding_info"]["analytic"]["name"], a["detector"]);
        assert_eq!(f["finding_info"]["title"], a["reason"]);
        assert_eq!(f["message"], a["summary"]);
        assert_eq!(
            f["time"].as_i64(),
            Some(ms(a["event_time"].as_str().unwrap()))
        );
        assert_eq!(f["actor"]["user"]["name"], a["identity"]);
        assert_eq!(f["evidences"][0]["data"], a["evidence"]);
        assert_eq!(f["metadata"]["product"]["name"], "nhiwatch");
        assert_eq!(f["metadata"]["version"], "1.8.0");
        assert_eq!(f["unmapped"]["nhiwatch"]["event_id"], a["event_id"]);
        if let Some(env) = a["environment"].as_str() {
            assert!(
                f["resources"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|r| r["type"] == "environment" && r["name"] == env)
            );
        }
    }
    assert!(severities.len() >= 3, "severities covered: {severities:?}");

    // The validator itself catches what it must: each mutation yields an error.
    let good: Value = serde_json::from_str(&lines[0]).unwrap();
    type Mutation = Box<dyn Fn(&mut Value)>;
    let mutations: Vec<(&str, Mutation)> = vec![
        (
            "required attribute missing",
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("finding_info");
            }),
        ),
        (
            "/severity_id: 7 is not one of",
            Box::new(|v| v["severity_id"] = 7.into()),
        ),
        (
            "/class_uid: 2003 is not one of",
            Box::new(|v| v["class_uid"] = 2003.into()),
        ),
        (
            "/analytic/type_id: 42 is not one of",
            Box::new(|v| v["finding_info"]["analytic"]["type_id"] = 42.into()),
        ),
        ("not an attribute", Box::new(|v| v["nhi_score"] = 1.into())),
        (
            "is not a long_t",
            Box::new(|v| v["time"] = "yesterday".into()),
        ),
        (
            "constraint at_least_one",
            Box::new(|v| v["evidences"] = serde_json::json!([{ "name": "x" }])),
        ),
        (
            "finding_info/uid: required",
            Box::new(|v| {
                v["finding_info"].as_object_mut().unwrap().remove("uid");
            }),
        ),
        (
            "does not match the ip_t pattern",
            Box::new(|v| {
                v["evidences"][0]["src_endpoint"] = serde_json::json!({ "ip": "build-7" })
            }),
        ),
    ];
    for (want, mutate) in mutations {
        let mut bad = good.clone();
        mutate(&mut bad);
        let errors = schema.validate_event(&bad, "detection_finding");
        assert!(
            errors.iter().any(|e| e.contains(want)),
            "mutation expected {want:?}, got {errors:?}"
        );
    }
}

/// ECS values allowed for `event.kind`, and the `event.type`s allowed with each category
/// used (ECS 8.11 "Event Categorization Fields").
const ECS_KINDS: [&str; 8] = [
    "alert",
    "asset",
    "enrichment",
    "event",
    "metric",
    "state",
    "pipeline_error",
    "signal",
];
const ECS_IAM_TYPES: [&str; 7] = [
    "admin", "change", "creation", "deletion", "group", "info", "user",
];

fn no_nulls_or_dotted_keys(v: &Value, at: &str) {
    match v {
        Value::Null => panic!("{at}: null in an ECS document"),
        Value::Object(m) => {
            for (k, x) in m {
                // `@timestamp` is the one top-level field with a non-word character.
                assert!(!k.contains('.'), "{at}/{k}: dotted key instead of nesting");
                no_nulls_or_dotted_keys(x, &format!("{at}/{k}"));
            }
        }
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, x)| no_nulls_or_dotted_keys(x, &format!("{at}[{i}]"))),
        _ => {}
    }
}

#[test]
fn ecs_documents_follow_the_field_rules() {
    let alerts = alerts();
    let (lines, _) = replay_lines(&org_config(), "ecs", &[]);
    assert_eq!(lines.len(), alerts.len());
    for (line, a) in lines.iter().zip(&alerts) {
        let d: Value = serde_json::from_str(line).expect("ECS JSON");
        no_nulls_or_dotted_keys(&d, "");
        assert_eq!(
            ms(d["@timestamp"].as_str().expect("@timestamp")),
            ms(a["event_time"].as_str().unwrap())
        );
        assert_eq!(d["ecs"]["version"], "8.11.0");
        let kind = d["event"]["kind"].as_str().unwrap();
        assert!(ECS_KINDS.contains(&kind));
        assert_eq!(kind, "alert");
        assert_eq!(d["event"]["category"], serde_json::json!(["iam"]));
        for t in d["event"]["type"]
            .as_array()
            .expect("event.type is an array")
        {
            assert!(ECS_IAM_TYPES.contains(&t.as_str().unwrap()), "{t}");
        }
        assert!(d["event"]["severity"].is_u64(), "event.severity is a long");
        let risk = d["event"]["risk_score"].as_f64().expect("risk_score float");
        assert!((0.0..=100.0).contains(&risk));
        assert_eq!(d["event"]["id"], a["id"]);
        assert_eq!(d["event"]["reason"], a["reason"]);
        assert_eq!(d["message"], a["summary"]);
        assert_eq!(d["rule"]["name"], a["detector"]);
        assert_eq!(d["user"]["name"], a["identity"]);
        assert_eq!(d["related"]["user"][0], a["identity"]);
        assert_eq!(d["nhiwatch"]["evidence"], a["evidence"]);
        if let Some(ip) = d["source"]["ip"].as_str() {
            ip.parse::<std::net::IpAddr>().expect("source.ip is an IP");
            assert_eq!(a["runner"]["ip"].as_str(), Some(ip));
        }
        for (_, v) in d["labels"].as_object().into_iter().flatten() {
            assert!(v.is_string(), "labels are keywords");
        }
        assert_eq!(
            d["labels"]["environment"].as_str(),
            a["environment"].as_str()
        );
    }
}

/// A CEF line parsed by the specification, independently of the encoder: header fields
/// split at unescaped pipes, extension keys at `key=` after a space, values unescaped.
fn parse_cef(line: &str) -> (Vec<String>, Vec<(String, String)>) {
    let mut header = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars();
    while header.len() < 7 {
        match chars.next().expect("seven header fields") {
            '\\' => match chars.next() {
                Some(c @ ('\\' | '|')) => cur.push(c),
                other => panic!("bad header escape {other:?} in {line}"),
            },
            '|' => header.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    let ext: String = chars.collect();
    // Split at unescaped `=`: the key is the last word before it.
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut raw = String::new();
    let mut it = ext.chars().peekable();
    let mut key: Option<String> = None;
    while let Some(c) = it.next() {
        match c {
            '\\' => {
                raw.push(c);
                raw.push(it.next().expect("escape"));
            }
            '=' => {
                let (value, next_key) = match raw.rfind(' ') {
                    Some(i) if key.is_some() => (raw[..i].to_string(), raw[i + 1..].to_string()),
                    _ => (String::new(), raw.clone()),
                };
                if let Some(k) = key.take() {
                    pairs.push((k, value));
                }
                key = Some(next_key);
                raw.clear();
            }
            c => raw.push(c),
        }
    }
    if let Some(k) = key {
        pairs.push((k, raw));
    }
    let unescape = |v: &str| {
        let mut out = String::new();
        let mut it = v.chars();
        while let Some(c) = it.next() {
            if c == '\\' {
                match it.next() {
                    Some('n') => out.push('\n'),
                    Some('r') => out.push('\r'),
                    Some(c @ ('\\' | '=')) => out.push(c),
                    other => panic!("bad extension escape {other:?} in {v}"),
                }
            } else {
                out.push(c);
            }
        }
        out
    };
    (
        header,
        pairs.into_iter().map(|(k, v)| (k, unescape(&v))).collect(),
    )
}

/// Checks a CEF line against the alert it encodes.
fn check_cef(line: &str, a: &Value) {
    let (h, ext) = parse_cef(line);
    let get = |k: &str| {
        ext.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(h[0], "CEF:0");
    assert_eq!(h[1], "nhiwatch");
    assert_eq!(h[2], "nhiwatch");
    assert_eq!(h[4], a["detector"].as_str().unwrap());
    assert_eq!(h[5], a["reason"].as_str().unwrap().replace('\n', " "));
    let sev: u8 = h[6].parse().expect("numeric severity");
    let want = match a["severity"].as_str().unwrap() {
        "info" => 1,
        "low" => 3,
        "medium" => 5,
        "high" => 8,
        _ => 10,
    };
    assert_eq!(sev, want);
    assert_eq!(get("externalId"), a["id"].as_str());
    assert_eq!(get("msg"), a["summary"].as_str());
    assert_eq!(get("suser"), a["identity"].as_str());
    assert_eq!(get("cat"), a["source"].as_str());
    assert_eq!(get("act"), a["action"].as_str());
    assert_eq!(
        get("rt").map(|v| v.parse::<i64>().unwrap()),
        Some(ms(a["event_time"].as_str().unwrap()))
    );
    assert_eq!(get("cs2Label"), Some("eventId"));
    assert_eq!(get("cs2"), a["event_id"].as_str());
    assert_eq!(get("cs1"), a["environment"].as_str());
    assert_eq!(get("cs3"), a["credential"].as_str());
    let evidence: Value = serde_json::from_str(get("cs6").expect("cs6")).expect("cs6 is JSON");
    assert_eq!(evidence, a["evidence"]);
    if let Some(ip) = a["runner"]["ip"].as_str() {
        let key = if ip.parse::<std::net::IpAddr>().is_ok() {
            "src"
        } else {
            "shost"
        };
        assert_eq!(get(key), Some(ip));
    }
}

#[test]
fn cef_lines_parse_back_to_the_alerts_including_awkward_characters() {
    let alerts = alerts();
    let (lines, _) = replay_lines(&org_config(), "cef", &[]);
    assert_eq!(lines.len(), alerts.len());
    for (line, a) in lines.iter().zip(&alerts) {
        check_cef(line, a);
    }
    // Characters CEF must escape, in every field that can hold them.
    let mut a: nhiwatch::alert::Alert = serde_json::from_value(alerts[0].clone()).unwrap();
    a.identity = r"svc|deploy=prod\team".into();
    a.summary = "line one = first\nline two | second\r\nwindows\\path".into();
    a.reason = r"new | odd\reason = yes".into();
    a.detector = "cross_env_reuse".into();
    let line = nhiwatch::encode::Encoder::new(nhiwatch::encode::Encoding::Cef, "h").to_vec(&a);
    let line = String::from_utf8(line).unwrap();
    assert!(!line.contains('\n') && !line.contains('\r'), "{line}");
    check_cef(&line, &serde_json::to_value(&a).unwrap());
}

#[test]
fn hec_events_wrap_the_alert_in_the_collector_envelope() {
    let alerts = alerts();
    let (lines, _) = replay_lines(&org_config(), "hec", &[]);
    assert_eq!(lines.len(), alerts.len());
    for (line, a) in lines.iter().zip(&alerts) {
        let e: Value = serde_json::from_str(line).expect("HEC JSON");
        let keys: BTreeSet<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            BTreeSet::from(["time", "host", "source", "sourcetype", "event", "fields"])
        );
        let t = e["time"].as_f64().expect("time is epoch seconds");
        assert_eq!(
            (t * 1000.0).round() as i64,
            ms(a["event_time"].as_str().unwrap())
        );
        assert!(e["host"].as_str().is_some_and(|h| !h.is_empty()));
        assert_eq!(e["source"], "nhiwatch");
        assert_eq!(e["sourcetype"], "nhiwatch:alert");
        assert_eq!(&e["event"], a, "event is the alert itself");
        for (k, v) in e["fields"].as_object().unwrap() {
            assert!(v.is_string(), "indexed field {k} must be a string");
        }
        assert_eq!(e["fields"]["detector"], a["detector"]);
    }
}

/// A config with the organisation's settings plus `extra` (sinks), in `dir`.
fn config_with(dir: &Path, extra: &str) -> String {
    config_draining(dir, extra, "20s")
}

/// As [`config_with`], with shutdown waiting `drain` for undelivered alerts.
fn config_draining(dir: &Path, extra: &str, drain: &str) -> String {
    let org = std::fs::read_to_string(util::fixture("simulated/nhiwatch.toml")).expect("org");
    let path = dir.join("nhiwatch.toml");
    std::fs::write(
        &path,
        format!(
            "{org}\n[delivery]\nspool_dir = \"{}\"\nhostname = \"nhiwatch-test\"\ndrain_timeout = \"{drain}\"\n\n{extra}",
            dir.join("spool").display()
        ),
    )
    .expect("config");
    path.to_string_lossy().into_owned()
}

#[test]
fn cef_over_rfc5424_tcp_reaches_rsyslog_field_for_field() {
    let dir = tempfile::tempdir().unwrap();
    let Some(rsyslog) = Rsyslog::start(dir.path()) else {
        panic!("rsyslogd is not installed (scripts/test installs the Debian rsyslog package)");
    };
    let alerts = alerts();
    let config = config_with(
        dir.path(),
        &format!(
            "[[sinks]]\nname = \"siem\"\ntype = \"syslog\"\naddress = \"{}\"\nfacility = \"local4\"\n",
            rsyslog.addr
        ),
    );
    let started = nhiwatch::time::Timestamp::now();
    let (_, stderr) = replay_lines(&config, "json", &["--sinks"]);
    assert!(
        stderr.contains(&format!(
            "sink siem: {} alerts routed, 0 left spooled",
            alerts.len()
        )),
        "{stderr}"
    );
    let lines = rsyslog.wait_lines(alerts.len(), Duration::from_secs(30));
    assert_eq!(lines.len(), alerts.len(), "one message per alert");
    for (line, a) in lines.iter().zip(&alerts) {
        let f: Vec<&str> = line.splitn(9, '|').collect();
        assert_eq!(f.len(), 9, "{line}");
        assert_eq!(
            f[0],
            (20 * 8 + syslog_severity(a)).to_string(),
            "PRI = local4 * 8 + severity"
        );
        assert_eq!(f[1], "1", "RFC 5424 version");
        let ts = nhiwatch::time::Timestamp::parse(f[2]).expect("TIMESTAMP");
        assert!(
            ts.as_micros() >= started.as_micros() - 1_000_000
                && ts.as_micros() <= nhiwatch::time::Timestamp::now().as_micros()
        );
        assert_eq!(f[3], "nhiwatch-test");
        assert_eq!(f[4], "nhiwatch");
        assert!(f[5].parse::<u32>().is_ok(), "PROCID {}", f[5]);
        assert_eq!(f[6], a["detector"].as_str().unwrap(), "MSGID");
        assert_eq!(f[7], "-", "no structured data");
        // The whole CEF message, split on the right frame boundaries.
        check_cef(f[8], a);
    }
}

#[test]
fn http_receiver_failing_first_gets_every_alert_once_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let alerts = alerts();
    // The fifth alert's record is refused (400) whenever it is in a request.
    let refused_id = alerts[4]["id"].as_str().unwrap().to_string();
    let receiver = HttpReceiver::start(
        0,
        Plan {
            fail_first: 3,
            refuse_containing: Some(refused_id.clone()),
        },
        None,
    );
    let config = config_with(
        dir.path(),
        &format!(
            r#"[[sinks]]
name = "splunk"
type = "http"
url = "http://{}/services/collector/event"
encoding = "hec"
token_env = "NHIWATCH_TEST_HEC_TOKEN"
gzip = true
batch_max_records = 40
retry_initial_ms = 50
retry_max_ms = 200
"#,
            receiver.addr
        ),
    );
    let week = util::fixture("simulated/week.jsonl.gz");
    let out = util::bin()
        .env("NHIWATCH_TEST_HEC_TOKEN", "0f6e-secret-hec-token")
        .args([
            "--config",
            &config,
            "replay",
            "--detectors",
            DETECTORS,
            "--emit",
            "none",
            "--sinks",
        ])
        .arg(&week)
        .output()
        .expect("replay");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "sink splunk: {} alerts routed, 0 left spooled",
            alerts.len()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("delivery failed; retrying"), "{stderr}");
    assert!(
        stderr.contains("HTTP 503"),
        "the status is logged: {stderr}"
    );
    assert!(
        stderr.contains("receiver refused an alert; set aside"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("0f6e-secret-hec-token"),
        "the token must never be logged"
    );
    let reqs = receiver.requests();
    assert!(reqs[..3].iter().all(|r| r.status == 503));
    for r in &reqs {
        assert_eq!(r.path, "/services/collector/event");
        assert_eq!(
            r.headers.get("authorization").map(String::as_str),
            Some("Splunk 0f6e-secret-hec-token")
        );
        assert_eq!(
            r.headers.get("content-encoding").map(String::as_str),
            Some("gzip")
        );
        assert!(r.wire_bytes < r.body.len(), "gzip made the body smaller");
    }
    let got: Vec<String> = receiver
        .accepted_lines()
        .iter()
        .map(|l| {
            let e: Value = serde_json::from_str(l).expect("HEC event");
            e["event"]["id"].as_str().unwrap().to_string()
        })
        .collect();
    let want: Vec<String> = alerts
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .filter(|id| *id != refused_id)
        .collect();
    assert_eq!(got, want, "every alert but the refused one, once, in order");
    // The refused record is kept, not lost.
    let rejected =
        std::fs::read_to_string(dir.path().join("spool/splunk/rejected.jsonl")).expect("rejected");
    assert_eq!(rejected.lines().count(), 1);
    assert!(rejected.contains(&refused_id) && rejected.contains("HTTP 400"));
}

#[test]
fn https_with_a_custom_ca_is_verified() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(dir.path());
    let receiver = HttpReceiver::start(0, Plan::default(), Some(certs.acceptor()));
    let port = receiver.addr.rsplit(':').next().unwrap().to_string();
    let sink = |name: &str, ca: Option<&Path>| {
        format!(
            "[[sinks]]\nname = \"{name}\"\ntype = \"http\"\nurl = \"https://localhost:{port}/hook\"\nframing = \"json_array\"\nencoding = \"ocsf\"\nretry_initial_ms = 50\nmin_severity = \"high\"\n{}",
            ca.map(|c| format!("ca_file = \"{}\"\n", c.display()))
                .unwrap_or_default()
        )
    };
    let alerts = alerts();
    let high: Vec<&Value> = alerts
        .iter()
        .filter(|a| matches!(a["severity"].as_str(), Some("high" | "critical")))
        .collect();
    assert!(!high.is_empty());
    let config = config_draining(
        dir.path(),
        &format!(
            "{}\n{}",
            sink("trusted", Some(&certs.ca)),
            sink("untrusted", None)
        ),
        "3s",
    );
    let (_, stderr) = replay_lines(&config, "json", &["--sinks", "--emit", "none"]);
    assert!(
        stderr.contains(&format!(
            "sink trusted: {} alerts routed, 0 left spooled",
            high.len()
        )),
        "{stderr}"
    );
    // Without the CA the server's certificate is not trusted: nothing goes, all stays spooled.
    assert!(
        stderr.contains(&format!(
            "sink untrusted: {n} alerts routed, {n} left spooled",
            n = high.len()
        )),
        "{stderr}"
    );
    let reqs = receiver.requests();
    let ids: Vec<String> = reqs
        .iter()
        .flat_map(|r| {
            let v: Value = serde_json::from_slice(&r.body).expect("JSON array body");
            v.as_array()
                .unwrap()
                .iter()
                .map(|f| f["finding_info"]["uid"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    let want: Vec<String> = high
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ids, want,
        "only high and critical alerts, routed by min_severity"
    );
}

#[test]
fn alerts_spooled_while_the_receiver_is_down_are_delivered_after_a_restart() {
    let broker = Broker::start();
    let s = crate::kafka::Setup::new(&broker, 1, "spool");
    // The receiver stays down for a whole 100,000-record stream: a simulated organisation of
    // 300 identities over two weeks.
    let sim = s.path("org.jsonl");
    let out = util::run(
        &[
            "simulate",
            "--identities",
            "300",
            "--days",
            "14",
            "--seed",
            "7",
            "--records",
            "100000",
            "-o",
            sim.to_str().unwrap(),
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records: Vec<Vec<u8>> = std::fs::read_to_string(&sim)
        .unwrap()
        .lines()
        .map(|l| l.as_bytes().to_vec())
        .collect();
    assert_eq!(records.len(), 100_000);
    let port = free_port();
    // The receiver is down: nothing listens on its port yet.
    let want = siem_sink_and_replay(&s, port, "", &records);
    assert!(want.len() > 100, "{}", want.len());

    broker.produce(&s.input, &records);
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let mut first = s.start("a", &["--metrics-addr", &metrics_addr]);
    first.wait_for("nhiwatch run started", Duration::from_secs(30));
    // Everything is detected and spooled; the receiver is still down.
    let start = std::time::Instant::now();
    loop {
        let (_, body) = prom::http(&metrics_addr, "GET", "/metrics", None);
        let spooled = prom::sum(&body, "nhiwatch_sink_queued_records", &[("sink", "siem")]);
        if spooled as usize == want.len() {
            assert!(prom::sum(&body, "nhiwatch_sink_failures_total", &[("sink", "siem")]) >= 1.0);
            assert_eq!(
                prom::sum(&body, "nhiwatch_sink_deliveries_total", &[("sink", "siem")]),
                0.0
            );
            assert!(prom::sum(&body, "nhiwatch_sink_spool_bytes", &[("sink", "siem")]) > 0.0);
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "spooled {spooled} of {}:\n{}",
            want.len(),
            first.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = first.log.clone();
    assert_eq!(first.terminate(), Some(0));
    let log = std::fs::read_to_string(log).unwrap();
    assert!(
        log.contains("alerts not delivered before shutdown stay spooled"),
        "{log}"
    );

    // Restart, still without a receiver; then the receiver comes up.
    let mut second = s.start("a", &[]);
    second.wait_for(
        "undelivered alerts from a previous run",
        Duration::from_secs(60),
    );
    std::thread::sleep(Duration::from_secs(1));
    let receiver = HttpReceiver::start(port, Plan::default(), None);
    let lines = receiver.wait_lines(want.len(), Duration::from_secs(60));
    // A moment more, to see any duplicate.
    std::thread::sleep(Duration::from_secs(2));
    let lines = if receiver.accepted_lines().len() > lines.len() {
        receiver.accepted_lines()
    } else {
        lines
    };
    let got = line_ids(lines.iter().map(String::as_str));
    assert_eq!(
        got, want,
        "every alert exactly once, in order, after the outage and restart"
    );
    eprintln!(
        "{} records; {} alerts spooled while the receiver was down, delivered once, in order",
        records.len(),
        want.len()
    );
    assert_eq!(second.terminate(), Some(0));
}

/// Reads octet-counted syslog frames (`LEN SP MSG`) from a stream until `n` arrived.
fn read_frames(mut s: impl std::io::Read, n: usize) -> Vec<String> {
    let mut data = Vec::new();
    let mut buf = [0u8; 65536];
    let mut frames = Vec::new();
    while frames.len() < n {
        let got = s.read(&mut buf).expect("read frames");
        assert!(got > 0, "stream closed after {} frames", frames.len());
        data.extend_from_slice(&buf[..got]);
        while let Some(sp) = data.iter().position(|&b| b == b' ') {
            let len: usize = std::str::from_utf8(&data[..sp])
                .expect("ascii length")
                .parse()
                .expect("octet count");
            if data.len() < sp + 1 + len {
                break;
            }
            frames.push(String::from_utf8(data[sp + 1..sp + 1 + len].to_vec()).expect("utf-8"));
            data.drain(..sp + 1 + len);
        }
    }
    assert!(data.is_empty(), "bytes after the last frame");
    frames
}

/// Checks an RFC 5424 message (`<PRI>1 TS HOST APP PROCID MSGID - MSG`) against its alert
/// and returns MSG.
fn rfc5424_msg<'a>(m: &'a str, a: &Value, facility: u32) -> &'a str {
    let parts: Vec<&str> = m.splitn(8, ' ').collect();
    assert_eq!(
        parts[0],
        format!("<{}>1", facility * 8 + syslog_severity(a)),
        "{m}"
    );
    nhiwatch::time::Timestamp::parse(parts[1]).expect("TIMESTAMP");
    assert_eq!(parts[2], "nhiwatch-test");
    assert_eq!(parts[5], a["detector"].as_str().unwrap());
    assert_eq!(parts[6], "-");
    parts[7]
}

#[test]
fn syslog_over_tls_with_a_custom_ca_and_over_udp() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(dir.path());
    let alerts = alerts();
    let tls = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tls_addr = tls.local_addr().unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_addr = udp.local_addr().unwrap();
    let n = alerts.len();
    // UDP gets the high and critical ones only: a burst of a few keeps well inside the
    // socket's receive buffer (UDP drops what does not fit; that is not under test).
    let high: Vec<Value> = alerts
        .iter()
        .filter(|a| matches!(a["severity"].as_str(), Some("high" | "critical")))
        .cloned()
        .collect();
    let n_udp = high.len();
    let acceptor = certs.acceptor();
    let tls_frames = std::thread::spawn(move || {
        let (conn, _) = tls.accept().expect("accept");
        let s = acceptor.accept(conn).expect("TLS handshake");
        read_frames(s, n)
    });
    let udp_frames = std::thread::spawn(move || {
        udp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = vec![0u8; 65536];
        (0..n_udp)
            .map(|_| {
                let got = udp.recv(&mut buf).expect("datagram");
                String::from_utf8(buf[..got].to_vec()).expect("utf-8")
            })
            .collect::<Vec<_>>()
    });
    let config = config_with(
        dir.path(),
        &format!(
            "[[sinks]]\nname = \"qradar\"\ntype = \"syslog\"\naddress = \"localhost:{}\"\nprotocol = \"tls\"\nca_file = \"{}\"\nfacility = \"auth\"\n\n[[sinks]]\nname = \"udp\"\ntype = \"syslog\"\naddress = \"{udp_addr}\"\nprotocol = \"udp\"\nencoding = \"json\"\nmin_severity = \"high\"\n",
            tls_addr.port(),
            certs.ca.display()
        ),
    );
    let (_, stderr) = replay_lines(&config, "json", &["--sinks", "--emit", "none"]);
    assert!(
        stderr.contains(&format!("sink qradar: {n} alerts routed, 0 left spooled")),
        "{stderr}"
    );
    let frames = tls_frames.join().expect("TLS receiver");
    for (m, a) in frames.iter().zip(&alerts) {
        check_cef(rfc5424_msg(m, a, 4), a);
    }
    // One message per datagram, the alert JSON as MSG (UDP on loopback does not drop here).
    let datagrams = udp_frames.join().expect("UDP receiver");
    assert_eq!(datagrams.len(), high.len());
    for (m, a) in datagrams.iter().zip(&high) {
        let msg: Value = serde_json::from_str(rfc5424_msg(m, a, 20)).expect("JSON MSG");
        assert_eq!(&msg, a);
    }
}

#[test]
fn replay_sinks_without_sinks_or_spool_directory_is_a_clear_error() {
    let week = util::fixture("simulated/week.jsonl.gz");
    let week = week.to_str().unwrap();
    let out = util::run(&["replay", "--sinks", week], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--sinks: the config has no [[sinks]]"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A network sink with nowhere to spool is named by its key.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        "[[sinks]]\ntype = \"syslog\"\naddress = \"127.0.0.1:514\"\n",
    )
    .unwrap();
    let out = util::run(
        &[
            "--config",
            config.to_str().unwrap(),
            "replay",
            "--sinks",
            week,
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sinks[0].type") && err.contains("delivery.spool_dir"),
        "{err}"
    );
}

/// The disk under the spool fills up mid-stream while the SIEM receiver is down: the process
/// stops with an error that names the spool and the cause, having committed nothing past its
/// last checkpoint; started again once there is space, every alert reaches the receiver
/// (sinks are at least once: alerts spooled after the last checkpoint may come twice).
#[test]
fn a_full_disk_under_the_spool_pauses_consumption_and_no_alert_is_lost_when_space_returns() {
    let broker = Broker::start();
    let s = crate::kafka::Setup::new(&broker, 1, "spoolfull");
    let records = crate::kafka::week();
    let disk = crate::kafka::Tmpfs::mount(s.path("disk"), "64m");
    let spool = disk.0.join("spool");
    let port = free_port();
    let spool_dir = format!("spool_dir = {:?}", spool.to_str().unwrap());
    let want: BTreeSet<String> = siem_sink_and_replay(&s, port, &spool_dir, &records)
        .into_iter()
        .collect();
    assert!(want.len() > 100, "{}", want.len());

    let addr = format!("127.0.0.1:{}", free_port());
    let mut second = s.start("a", &["--metrics-addr", &addr]);
    second.wait_for("nhiwatch run started", Duration::from_secs(30));
    // The receiver is down throughout: every alert goes to the spool, whose disk fills.
    disk.drill(&mut second, &addr, "sink", &broker, &s.input, &records);
    let log = second.log();
    assert!(
        log.contains("No space left on device") && log.contains(spool.to_str().unwrap()),
        "the error names the spool and the cause:\n{log}"
    );
    let receiver = HttpReceiver::start(port, Plan::default(), None);
    let start = std::time::Instant::now();
    let got = loop {
        let got: BTreeSet<String> = line_ids(receiver.accepted_lines().iter().map(String::as_str))
            .into_iter()
            .collect();
        if got.is_superset(&want) {
            break got;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{} of {} alerts delivered, missing {:?}:\n{}",
            got.intersection(&want).count(),
            want.len(),
            want.difference(&got).collect::<Vec<_>>(),
            second.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    std::thread::sleep(Duration::from_secs(2));
    let lines = receiver.accepted_lines().len();
    eprintln!(
        "{} alerts, {lines} deliveries ({} twice: at least once)",
        want.len(),
        lines - want.len()
    );
    assert_eq!(got, want, "no alert lost, none invented");
    assert_eq!(second.terminate(), Some(0));
    drop(disk);
}

#[test]
fn a_spool_on_a_full_disk_keeps_records_in_memory_in_order_and_writes_them_when_space_returns() {
    use nhiwatch::sink::spool::{Error, Spool, WhenFull};
    let dir = tempfile::tempdir().unwrap();
    let disk = crate::kafka::Tmpfs::mount(dir.path().join("disk"), "4m");
    let at = disk.0.join("spool");
    let (spool, _) = Spool::open(&at, 64 << 20, WhenFull::Block).unwrap();
    let record = |i: usize| format!("{i:06}-{}", "x".repeat(1000)).into_bytes();
    for i in 0..100 {
        spool.append(i as u64, &record(i)).unwrap();
    }
    spool.sync().unwrap();
    let filler = disk.fill();
    let mut deferred = 0;
    for i in 100..400 {
        match spool.append(i as u64, &record(i)) {
            Ok(_) => {}
            Err(Error::Deferred { .. }) => deferred += 1,
            Err(e) => panic!("record {i}: {e}"),
        }
    }
    assert!(deferred > 0, "the disk never filled");
    assert_eq!(
        spool.len(),
        400,
        "every record is held, on disk or in memory"
    );
    assert!(matches!(spool.sync(), Err(Error::Deferred { .. })));
    std::fs::remove_file(filler).unwrap();
    spool.sync().unwrap();
    drop(spool);
    // What is on disk, read by a new process: every record once, in order.
    let (spool, opened) = Spool::open(&at, 64 << 20, WhenFull::Block).unwrap();
    assert_eq!(opened.records, 400);
    assert_eq!(opened.torn_bytes, 0);
    let got = spool.peek(1000, 64 << 20, Duration::from_secs(1)).unwrap();
    let want: Vec<Vec<u8>> = (0..400).map(record).collect();
    assert_eq!(
        got.iter().map(|r| r.payload.clone()).collect::<Vec<_>>(),
        want
    );
    assert!(got.iter().enumerate().all(|(i, r)| r.arrival == i as u64));
    drop(disk);
}

/// Adds an HTTP SIEM sink on `port` (quick retries, `delivery_extra` in `[delivery]`) and
/// the detectors of [`DETECTORS`] to the setup's configuration; returns the alert ids a
/// replay of `records` writes, in order (one partition: one order).
fn siem_sink_and_replay(
    s: &crate::kafka::Setup,
    port: u16,
    delivery_extra: &str,
    records: &[Vec<u8>],
) -> Vec<String> {
    let detectors = DETECTORS
        .split(',')
        .map(|d| format!("\"{d}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let mut text = std::fs::read_to_string(&s.config).unwrap();
    text.push_str(&format!(
        r#"
[detectors]
enabled = [{detectors}]

[delivery]
drain_timeout = "2s"
{delivery_extra}

[[sinks]]
name = "siem"
type = "http"
url = "http://127.0.0.1:{port}/hook"
retry_initial_ms = 100
retry_max_ms = 500
"#
    ));
    std::fs::write(&s.config, text).unwrap();
    let input = s.path("input.jsonl");
    std::fs::write(&input, records.join(&b'\n')).unwrap();
    let out = util::run(
        &[
            "--config",
            s.config.to_str().unwrap(),
            "replay",
            "--hold",
            input.to_str().unwrap(),
        ],
        None,
    );
    assert!(out.status.success());
    line_ids(String::from_utf8_lossy(&out.stdout).lines())
}
