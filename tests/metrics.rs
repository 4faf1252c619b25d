//! Metrics and dashboards against real parts: a `nhiwatch run` on a real broker fed the sample
//! week (and a few poison records), scraped by a real Prometheus; every PromQL expression in
//! `dashboards/*.json` must return data through Prometheus's HTTP API, the exposition must
//! pass `promtool check metrics`, and the README's metric table must list exactly the
//! families `/metrics` exports. Also `replay --metrics-addr` on a live stdin stream.

use std::collections::BTreeSet;
use std::io::{BufRead as _, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::kafka::{Setup, http_get, week};
use crate::util::kafka::{Broker, free_port};
use crate::util::prom::{self, Prometheus};
use crate::util::{self, KEY};

/// What Grafana substitutes in the dashboards' expressions, as the test evaluates them.
const SUBSTITUTIONS: &[(&str, &str)] = &[
    ("$__rate_interval", "2m"),
    ("$__interval", "15s"),
    ("$__range", "10m"),
    ("$detector", ".*"),
    ("$environment", ".*"),
];

/// Families exported only on some machines (the process collector's limit) or with some
/// configurations (a network sink's spool; `tests/sinks.rs` reads them from a run).
const OPTIONAL: &[&str] = &[
    "nhiwatch_process_virtual_memory_max_bytes",
    "nhiwatch_sink_spool_bytes",
    "nhiwatch_sink_dropped_total",
    "nhiwatch_lake_rows_total",
    "nhiwatch_lake_files_total",
    "nhiwatch_lake_bytes_total",
    "nhiwatch_lake_partitions_expired_total",
    "nhiwatch_query_requests_total",
    "nhiwatch_query_duration_seconds",
];

/// A query of a dashboard: where it is and what it says.
#[derive(Debug)]
struct Query {
    at: String,
    expr: String,
}

/// Every panel target and templating query of the dashboards, with the structure Grafana
/// needs checked on the way: a `datasource` variable, every panel and target on
/// `${datasource}`, unique panel ids.
fn dashboard_queries() -> (Vec<Query>, Vec<Query>) {
    let dir = util::root().join("dashboards");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("dashboards/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "an overview and a detection dashboard");
    let (mut exprs, mut vars) = (Vec::new(), Vec::new());
    for f in &files {
        let name = f
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let d: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(f).expect("read")).expect("JSON");
        assert!(
            d["uid"].as_str().is_some_and(|u| !u.is_empty()),
            "{name}: uid"
        );
        let templating = d["templating"]["list"].as_array().expect("templating");
        assert!(
            templating.iter().any(|v| v["name"] == "datasource"
                && v["type"] == "datasource"
                && v["query"] == "prometheus"),
            "{name}: a Prometheus `datasource` variable"
        );
        for v in templating.iter().filter(|v| v["type"] == "query") {
            assert_eq!(
                v["datasource"]["uid"], "${datasource}",
                "{name}: variable {}",
                v["name"]
            );
            vars.push(Query {
                at: format!("{name} variable {}", v["name"]),
                expr: v["definition"].as_str().expect("definition").to_string(),
            });
        }
        let mut ids = BTreeSet::new();
        for p in d["panels"].as_array().expect("panels") {
            assert!(
                ids.insert(p["id"].as_u64().expect("panel id")),
                "{name}: duplicate panel id"
            );
            if p["type"] == "row" {
                continue;
            }
            let title = p["title"].as_str().unwrap_or_default();
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{name}: {title}");
            let targets = p["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{name}: {title} has no query");
            for t in targets {
                assert_eq!(t["datasource"]["uid"], "${datasource}", "{name}: {title}");
                exprs.push(Query {
                    at: format!("{name} panel {title:?} {}", t["refId"]),
                    expr: t["expr"].as_str().expect("expr").to_string(),
                });
            }
        }
    }
    (exprs, vars)
}

/// The identifiers of an expression (metric names among them).
fn identifiers(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| t.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_'))
        .map(str::to_string)
        .collect()
}

fn substitute(expr: &str) -> String {
    let mut e = expr.to_string();
    for (from, to) in SUBSTITUTIONS {
        e = e.replace(from, to);
    }
    assert!(!e.contains('$'), "an unknown Grafana variable in {expr}");
    e
}

/// The metric families the README's metric table lists.
fn readme_metrics() -> BTreeSet<String> {
    let text = std::fs::read_to_string(util::root().join("README.md")).expect("README");
    let table = text
        .split("<!-- metrics-table:start -->")
        .nth(1)
        .and_then(|t| t.split("<!-- metrics-table:end -->").next())
        .expect("README has a metric table between metrics-table markers");
    table
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect()
}

fn promtool_check(exposition: &str) {
    let bin = prom::which("promtool").expect(
        "promtool is not installed: run ./scripts/test, which installs the Debian package `prometheus`",
    );
    let mut child = Command::new(bin)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(exposition.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {said}"
    );
}

fn wait_metrics(addr: &str, what: &str, done: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let (status, body) = http_get(addr, "/metrics");
        assert_eq!(status, 200);
        if done(&body) {
            return body;
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "waited for {what}:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn every_dashboard_query_returns_data_from_a_real_prometheus_scraping_a_run() {
    let (exprs, vars) = dashboard_queries();
    assert!(exprs.len() >= 30, "{} queries", exprs.len());
    let broker = Broker::start();
    let s = Setup::new(&broker, 2, "prom");
    let mut records = week();
    let poison = ["{\"truncated\": ", "42", "{\"kind\":\"Unknown\"}"];
    for (i, p) in poison.iter().enumerate() {
        records.insert(1000 * (i + 1), p.as_bytes().to_vec());
    }
    let expected = s.replay_ids(&records, 2);
    let addr = format!("127.0.0.1:{}", free_port());
    let mut nw = s.start(
        "a",
        &[
            "--metrics-addr",
            &addr,
            "--alerts-stdout",
            "-X",
            "statistics.interval.ms=1000",
        ],
    );
    nw.wait_for("nhiwatch run started", Duration::from_secs(60));
    let start = Instant::now();
    while http_get(&addr, "/readyz").0 != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never ready:\n{}",
            nw.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(http_get(&addr, "/healthz").0, 200);
    let prometheus = Prometheus::start(&addr);
    // A few scrapes before any record: counters have a zero to rise from.
    prometheus.wait_scrapes(3);
    broker.produce(&s.input, &records);
    let events = (records.len() - poison.len()) as f64;
    let body = wait_metrics(
        &addr,
        "every event detected and every alert delivered",
        |b| {
            prom::sum(b, "nhiwatch_detect_events_total", &[]) == events
                && prom::sum(b, "nhiwatch_sink_deliveries_total", &[("sink", "kafka")])
                    == expected.len() as f64
                && prom::sum(b, "nhiwatch_checkpoints_total", &[]) > 0.0
                && prom::sum(
                    b,
                    "nhiwatch_kafka_consumer_lag_records",
                    &[("stage", "detect")],
                ) == 0.0
                && b.contains("nhiwatch_kafka_consumer_lag_records{")
        },
    );
    prometheus.wait_scrapes(3);

    // What Prometheus stored agrees with what happened.
    let scalar = |expr: &str| -> f64 {
        let d = prometheus.query(expr);
        d["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{expr}: {d}"))
    };
    assert_eq!(scalar("sum(nhiwatch_alerts_total)"), expected.len() as f64);
    assert_eq!(scalar("sum(nhiwatch_detect_events_total)"), events);
    assert_eq!(
        scalar("sum(nhiwatch_records_rejected_total{stage=\"ingest\"})"),
        poison.len() as f64
    );
    assert_eq!(
        scalar("sum(nhiwatch_dlq_records_total)"),
        poison.len() as f64
    );
    assert_eq!(
        scalar("sum(nhiwatch_input_records_total)"),
        records.len() as f64
    );
    assert_eq!(
        scalar("sum(nhiwatch_alert_latency_seconds_count)"),
        expected.len() as f64
    );

    // Every dashboard query reads only nhiwatch's metrics (not `up` or Prometheus's
    // own scrape series), returns data, and at least one number in it.
    let scraped = prometheus.label_values("__name__", "{job=\"nhiwatch\"}");
    assert!(scraped.iter().any(|n| n == "up"), "{scraped:?}");
    let mut failures = Vec::new();
    for q in &exprs {
        for ident in identifiers(&q.expr) {
            if scraped.contains(&ident) && !ident.starts_with("nhiwatch_") {
                failures.push(format!(
                    "{}: reads {ident}, not a metric nhiwatch exports",
                    q.at
                ));
            }
        }
        let expr = substitute(&q.expr);
        let d = prometheus.query(&expr);
        let result = d["result"].as_array().cloned().unwrap_or_default();
        let numbers = result
            .iter()
            .filter_map(|r| r["value"][1].as_str())
            .filter(|v| !v.eq_ignore_ascii_case("nan"))
            .count();
        if result.is_empty() || numbers == 0 {
            failures.push(format!("{}: {expr} → {d}", q.at));
        }
    }
    for v in &vars {
        let inner = v
            .expr
            .strip_prefix("label_values(")
            .and_then(|e| e.strip_suffix(')'))
            .unwrap_or_else(|| panic!("{}: only label_values(metric, label) is used", v.at));
        let (metric, label) = inner.split_once(',').expect("label_values(metric, label)");
        if prometheus
            .label_values(label.trim(), metric.trim())
            .is_empty()
        {
            failures.push(format!("{}: {} → no values", v.at, v.expr));
        }
    }
    assert!(
        failures.is_empty(),
        "{} problems in {} dashboard queries (no data, or a metric nhiwatch does not export):\n{}",
        failures.len(),
        exprs.len() + vars.len(),
        failures.join("\n")
    );

    // The exposition is lint-clean, and the README documents exactly what it exports.
    promtool_check(&body);
    let exported: BTreeSet<String> = prom::families(&body).into_iter().collect();
    let mut documented = readme_metrics();
    // Exported only when the process has an address-space limit (not on this machine).
    for optional in OPTIONAL {
        if !exported.contains(*optional) {
            assert!(documented.remove(*optional), "{optional} is documented");
        }
    }
    assert_eq!(
        documented,
        exported,
        "README metric table vs /metrics: only in README {:?}, only exported {:?}",
        documented.difference(&exported).collect::<Vec<_>>(),
        exported.difference(&documented).collect::<Vec<_>>()
    );
    assert_eq!(nw.terminate(), Some(0));
}

#[test]
fn replay_serves_metrics_while_a_live_stdin_stream_runs() {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = util::bin()
        .args([
            "--config",
            util::fixture("simulated/nhiwatch.toml")
                .to_str()
                .expect("utf-8"),
            "replay",
            "--metrics-addr",
            &addr,
            "-",
        ])
        .env("NHIWATCH_FINGERPRINT_KEY", KEY)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("replay");
    let mut stdin = child.stdin.take().expect("stdin");
    let records = week();
    for r in &records {
        stdin.write_all(r).expect("write");
        stdin.write_all(b"\n").expect("write");
    }
    stdin.write_all(b"{\"truncated\": \n").expect("write");
    stdin.flush().expect("flush");
    // Alerts reach stdout while the stream is still open.
    let stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let body = wait_metrics(&addr, "the stream detected", |b| {
        prom::sum(b, "nhiwatch_detect_events_total", &[]) == records.len() as f64
            && prom::sum(b, "nhiwatch_identities", &[]) > 0.0
    });
    assert_eq!(http_get(&addr, "/readyz").0, 200);
    let delivered = prom::sum(
        &body,
        "nhiwatch_sink_deliveries_total",
        &[("sink", "stdout")],
    );
    assert!(delivered >= 5.0, "alerts handed to stdout: {delivered}");
    let mut lines = Vec::new();
    let until = Instant::now() + Duration::from_secs(30);
    while (lines.len() as f64) < delivered && Instant::now() < until {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            lines.push(l);
        }
    }
    assert_eq!(
        lines.len() as f64,
        delivered,
        "alerts counted as delivered are on stdout before the input ends"
    );
    assert_eq!(
        prom::sum(&body, "nhiwatch_input_records_total", &[("topic", "stdin")]),
        (records.len() + 1) as f64
    );
    assert_eq!(
        prom::sum(
            &body,
            "nhiwatch_records_rejected_total",
            &[("stage", "replay"), ("reason", "malformed_json")]
        ),
        1.0
    );
    assert_eq!(
        prom::sum(&body, "nhiwatch_alert_latency_seconds_count", &[]),
        delivered
    );
    promtool_check(&body);
    drop(stdin);
    let status = child.wait().expect("replay exits");
    assert!(status.success(), "{status}");
}

#[test]
fn the_metrics_endpoint_bounds_request_heads_time_and_connections() {
    use std::io::Read;
    use std::net::TcpStream;
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = util::bin()
        .args(["replay", "--metrics-addr", &addr, "-"])
        .env("NHIWATCH_FINGERPRINT_KEY", KEY)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("replay");
    let stdin = child.stdin.take().expect("stdin");
    let start = Instant::now();
    while TcpStream::connect(&addr).is_err() {
        assert!(start.elapsed() < Duration::from_secs(60), "no endpoint");
        std::thread::sleep(Duration::from_millis(100));
    }
    let answer = |send: &[u8]| prom::raw(&addr, send);
    // A request line without an end is refused at 8 KiB, not buffered.
    let got = answer(&vec![b'a'; 1 << 20]);
    assert!(got.starts_with("HTTP/1.1 431"), "{got}");
    // 32 connections that send nothing hold every place: the next is refused at once …
    let idle: Vec<TcpStream> = (0..32)
        .map(|_| TcpStream::connect(&addr).expect("connect"))
        .collect();
    // (On a loaded machine the server may take a moment to count them all: ask again for
    // up to 3 s, well inside their 5 s.)
    let asked = Instant::now();
    let got = loop {
        std::thread::sleep(Duration::from_millis(100));
        let got = answer(b"GET /metrics HTTP/1.1\r\n\r\n");
        if got.starts_with("HTTP/1.1 503") || asked.elapsed() > Duration::from_secs(3) {
            break got;
        }
    };
    assert!(got.starts_with("HTTP/1.1 503"), "{got}");
    // … and each is answered 408 when its 5 s are up, which frees its place.
    let started = Instant::now();
    let mut first = idle.into_iter().next().expect("one");
    let mut got = String::new();
    let _ = first.read_to_string(&mut got);
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(started.elapsed() < Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    let got = answer(b"GET /healthz HTTP/1.1\r\n\r\n");
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    drop(stdin);
    let status = child.wait().expect("replay exits");
    assert!(status.success(), "{status}");
}

#[test]
fn metric_names_are_defined_in_one_file() {
    let src = util::root().join("src");
    let mut offenders = Vec::new();
    visit(&src, &mut |path, text| {
        if path.ends_with("telemetry/metrics.rs") {
            return;
        }
        for (i, line) in text.lines().enumerate() {
            if line.contains("\"nhiwatch_") {
                offenders.push(format!("{}:{}: {}", path.display(), i + 1, line.trim()));
            }
        }
    });
    assert!(
        offenders.is_empty(),
        "metric names outside src/telemetry/metrics.rs:\n{}",
        offenders.join("\n")
    );
}

fn visit(dir: &Path, f: &mut dyn FnMut(&Path, &str)) {
    for e in std::fs::read_dir(dir).expect("read_dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            visit(&p, f);
        } else if p.extension().is_some_and(|e| e == "rs") {
            f(&p, &std::fs::read_to_string(&p).expect("read"));
        }
    }
}

#[test]
fn logs_are_json_lines_with_log_format_json_and_levels_follow_rust_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("in.jsonl");
    let good = week().into_iter().next().expect("a record");
    let mut text = good.clone();
    text.extend_from_slice(b"\n{\"truncated\": \n");
    std::fs::write(&input, text).expect("input");
    let input = input.to_str().expect("utf-8");

    let json = util::run(&["--log-format", "json", "replay", input], None);
    assert!(json.status.success());
    let stderr = String::from_utf8_lossy(&json.stderr);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let reject = lines
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("record rejected"))
        })
        .unwrap_or_else(|| panic!("no reject log line in:\n{stderr}"));
    assert_eq!(reject["level"], "WARN");
    assert_eq!(reject["reason"], "malformed_json");
    assert_eq!(reject["line"], 2);
    assert_eq!(reject["file"], input);
    assert!(reject["timestamp"].is_string(), "{reject}");

    // The default is human-readable (no JSON lines), and RUST_LOG=error silences warnings.
    let human = util::run(&["replay", input], None);
    let stderr = String::from_utf8_lossy(&human.stderr);
    assert!(stderr.lines().all(|l| !l.starts_with('{')), "{stderr}");
    assert!(
        stderr.contains("WARN") && stderr.contains("record rejected"),
        "{stderr}"
    );
    let quiet = util::bin()
        .args(["replay", input])
        .env("RUST_LOG", "error")
        .output()
        .expect("replay");
    let stderr = String::from_utf8_lossy(&quiet.stderr);
    assert!(!stderr.contains("record rejected"), "{stderr}");
    assert!(
        stderr.contains("rejects: 1"),
        "the summary still counts it: {stderr}"
    );
}

/// With a token (`run.metrics_token_file`), `/metrics` answers 401 without it or with a wrong
/// one, the health probes stay open, a real Prometheus scrapes with `credentials_file`, and one
/// without the token sees the target down. A token shorter than 16 characters is refused at
/// start, named by its variable, never echoed.
#[test]
fn the_metrics_endpoint_asks_for_its_token_and_prometheus_scrapes_with_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "metrics-token-0123456789abcdef";
    let token_file = dir.path().join("metrics.token");
    std::fs::write(&token_file, format!("{token}\n")).expect("token");
    let config = dir.path().join("nhiwatch.toml");
    std::fs::write(
        &config,
        format!("[run]\nmetrics_token_file = \"{}\"\n", token_file.display()),
    )
    .expect("config");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = util::bin()
        .args([
            "--config",
            config.to_str().expect("utf-8"),
            "replay",
            "--metrics-addr",
            &addr,
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("replay");
    let start = Instant::now();
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no metrics endpoint"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let get = |auth: Option<&str>| {
        let header = auth
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        prom::raw(
            &addr,
            format!("GET /metrics HTTP/1.0\r\nHost: x\r\n{header}\r\n").as_bytes(),
        )
    };
    let denied = get(None);
    assert!(denied.starts_with("HTTP/1.1 401"), "{denied}");
    assert!(denied.contains("WWW-Authenticate: Bearer"), "{denied}");
    assert!(!denied.contains("nhiwatch_"), "{denied}");
    let wrong = get(Some("Bearer metrics-token-0123456789abcdeX"));
    assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");
    let basic = get(Some(&format!("Basic {token}")));
    assert!(basic.starts_with("HTTP/1.1 401"), "{basic}");
    let ok = get(Some(&format!("Bearer {token}")));
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(ok.contains("nhiwatch_detect_events_total"), "{ok}");
    assert_eq!(http_get(&addr, "/healthz").0, 200);

    let prom = Prometheus::start_jobs(&[
        (
            "with_token",
            &addr,
            &format!(
                "    authorization:\n      type: Bearer\n      credentials_file: {}\n",
                token_file.display()
            ),
        ),
        ("without_token", &addr, ""),
    ]);
    let up = |job: &str| {
        prom.query(&format!("up{{job=\"{job}\"}}"))["result"]
            .as_array()
            .and_then(|r| r.first())
            .and_then(|r| r["value"][1].as_str().map(str::to_string))
    };
    let start = Instant::now();
    while up("with_token").is_none() || up("without_token").is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no scrape recorded:\n{}",
            prom.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(up("with_token").as_deref(), Some("1"), "{}", prom.log());
    assert_eq!(up("without_token").as_deref(), Some("0"), "{}", prom.log());
    let scraped = prom.query("nhiwatch_detect_events_total")["result"].clone();
    assert!(
        scraped.as_array().is_some_and(|a| !a.is_empty()),
        "nothing scraped with the token: {scraped}"
    );
    drop(child.stdin.take());
    let _ = child.wait();

    // A short token is refused at start, by name.
    let o = util::bin()
        .args(["replay", "--metrics-addr", "127.0.0.1:0", "-"])
        .env(
            nhiwatch::telemetry::server::METRICS_TOKEN_ENV,
            "short-secret",
        )
        .stdin(Stdio::null())
        .output()
        .expect("replay");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("NHIWATCH_METRICS_TOKEN"), "{stderr}");
    assert!(!stderr.contains("short-secret"), "{stderr}");
}
