//! The lake and SQL over it: what `replay --lake` writes matches what it printed; the ten
//! investigation queries of `docs/investigations.md` return what the events say; day
//! partitions are pruned; the same query gives the same rows through the CLI, a real `psql`
//! and HTTP; the endpoints are read-only and need the password; `run` keeps every event
//! through a `kill -9`; a dead writer's staging file is recovered (torn tail cut).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::kafka::{Broker, free_port};
use crate::util::{self, prom};

const CONFIG: &str = "schemas/samples/simulated/nhiwatch.toml";
const WEEK: &str = "schemas/samples/simulated/week.jsonl.gz";
/// The tests' `now()`: the day after the sample week.
const NOW: &str = "TIMESTAMP '2026-04-01T00:00:00Z'";
const PASSWORD: &str = "lake-test-password-42";

/// A lake written by `replay` of the sample week, with what replay printed.
struct Lake {
    dir: tempfile::TempDir,
    alerts: Vec<Value>,
    events: Vec<Value>,
}

impl Lake {
    fn path(&self) -> PathBuf {
        self.dir.path().join("lake")
    }
}

fn replay_lake() -> Lake {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = dir.path().join("lake");
    let out = util::run(
        &[
            "--config",
            CONFIG,
            "replay",
            "--lake",
            lake.to_str().unwrap(),
            WEEK,
        ],
        None,
    );
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{summary}");
    assert!(summary.contains("lake: 16,996 events and"), "{summary}");
    let alerts = json_lines(&out.stdout);
    let out = util::run(
        &["--config", CONFIG, "replay", "--emit", "events", WEEK],
        None,
    );
    assert!(out.status.success());
    let events = json_lines(&out.stdout);
    assert_eq!(events.len(), 16_996);
    assert!(alerts.len() >= 5, "{}", alerts.len());
    Lake {
        dir,
        alerts,
        events,
    }
}

fn json_lines(b: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(b)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

/// `nhiwatch query --lake LAKE --format json SQL`, rows as JSON objects.
fn query(lake: &Path, sql: &str) -> Vec<Value> {
    json_lines(query_text(lake, "json", sql).as_bytes())
}

fn query_text(lake: &Path, format: &str, sql: &str) -> String {
    let out = util::run(
        &[
            "query",
            "--lake",
            lake.to_str().unwrap(),
            "--format",
            format,
            "--",
            sql,
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{sql}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

pub(crate) fn count(lake: &Path, sql: &str) -> i64 {
    let rows = query(lake, sql);
    rows[0]
        .as_object()
        .and_then(|o| o.values().next())
        .and_then(Value::as_i64)
        .unwrap_or_else(|| panic!("{sql}: {rows:?}"))
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("")
}

/// A list column of a JSON row, as strings.
fn strs<'a>(v: &'a Value, k: &str) -> Vec<&'a str> {
    v[k].as_array()
        .unwrap_or_else(|| panic!("no list {k}: {v}"))
        .iter()
        .map(|x| x.as_str().unwrap_or_else(|| panic!("{k}: {v}")))
        .collect()
}

/// Event time as Unix seconds.
fn secs(t: &str) -> i64 {
    nhiwatch::time::Timestamp::parse(t)
        .unwrap_or_else(|e| panic!("{t}: {e}"))
        .as_unix_seconds()
}

#[test]
fn replay_lake_holds_what_replay_printed() {
    let lake = replay_lake();
    let root = lake.path();
    assert_eq!(count(&root, "SELECT count(*) FROM events"), 16_996);
    // Per source and action, as the events replay printed.
    let mut want: BTreeMap<(String, String), i64> = BTreeMap::new();
    for e in &lake.events {
        *want
            .entry((s(e, "source").into(), s(e, "action").into()))
            .or_default() += 1;
    }
    let got: BTreeMap<(String, String), i64> = query(
        &root,
        "SELECT source, action, count(*) AS n FROM events GROUP BY source, action",
    )
    .iter()
    .map(|r| {
        (
            (s(r, "source").into(), s(r, "action").into()),
            r["n"].as_i64().unwrap(),
        )
    })
    .collect();
    assert_eq!(got, want);
    // Every alert, field for field.
    let rows = query(
        &root,
        "SELECT id, detector, severity, identity, event_id, environment, credential, \
         CAST(time AS VARCHAR) AS t FROM alerts ORDER BY id",
    );
    assert_eq!(rows.len(), lake.alerts.len());
    let by_id: BTreeMap<&str, &Value> = lake.alerts.iter().map(|a| (s(a, "id"), a)).collect();
    for r in &rows {
        let a = by_id[s(r, "id")];
        for k in [
            "detector",
            "severity",
            "identity",
            "event_id",
            "environment",
            "credential",
        ] {
            assert_eq!(
                r.get(k).and_then(Value::as_str),
                a[k].as_str(),
                "{k} of {r}"
            );
        }
        assert_eq!(secs(s(r, "t")), secs(s(a, "event_time")), "{r}");
    }
    // Spot checks of events: every 337th, all typed columns against the printed event.
    for e in lake.events.iter().step_by(337) {
        let id = s(e, "id");
        let sql = format!(
            "SELECT identity, CAST(time AS VARCHAR) AS t, action, kind, environment, runner_ip, \
             runner_id, credential, ttl, array_to_string(scopes, ',') AS scopes, day, source \
             FROM events WHERE id = '{id}' AND source = '{}' AND identity = '{}'",
            s(e, "source"),
            s(e, "identity")
        );
        let r = query(&root, &sql);
        assert!(!r.is_empty(), "{id} not in the lake");
        let r = &r[0];
        assert_eq!(secs(s(r, "t")), secs(s(e, "time")));
        assert_eq!(s(r, "day"), &s(e, "time")[..10]);
        for (col, want) in [
            ("action", e["action"].as_str()),
            ("kind", e["kind"].as_str()),
            ("environment", e["environment"].as_str()),
            ("runner_ip", e["runner"]["ip"].as_str()),
            ("runner_id", e["runner"]["id"].as_str()),
            ("credential", e["credential"]["fp"].as_str()),
        ] {
            assert_eq!(r.get(col).and_then(Value::as_str), want, "{col} of {id}");
        }
        assert_eq!(r.get("ttl").and_then(Value::as_u64), e["ttl"].as_u64());
        let scopes: Vec<&str> = e["scopes"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        assert_eq!(s(r, "scopes"), scopes.join(","), "scopes of {id}");
    }
    // The native record is kept for each event, secrets masked: no JWT, no Vault token.
    assert_eq!(
        count(&root, "SELECT count(*) FROM events WHERE record IS NULL"),
        0
    );
    assert_eq!(
        count(
            &root,
            "SELECT count(*) FROM events WHERE record LIKE '%eyJ%' OR record LIKE '%hvs.%'"
        ),
        0
    );
    assert!(
        count(
            &root,
            "SELECT count(*) FROM events WHERE record LIKE '%[redacted]%'"
        ) > 1000
    );
    // It is that event's own record: the native id is in it (JWT ids are masked, so CI
    // tokens are left out), also for CloudTrail records that came in delivery files.
    assert_eq!(
        count(
            &root,
            "SELECT count(*) FROM events WHERE source IN ('vault', 'cloudtrail', 'kubernetes') \
             AND strpos(record, id) = 0"
        ),
        0
    );
    // The baselines of every identity the detectors learned.
    let learned: BTreeSet<&str> = lake
        .events
        .iter()
        .filter(|e| matches!(s(e, "action"), "mint" | "use"))
        .map(|e| s(e, "identity"))
        .collect();
    let rows = query(&root, "SELECT identity, events, armed FROM baselines");
    let got: BTreeSet<&str> = rows.iter().map(|r| s(r, "identity")).collect();
    assert_eq!(got, learned);
    assert!(rows.iter().all(|r| r["events"].as_i64().unwrap_or(0) > 0));
    // Partitioned by day and source.
    assert!(root.join("events/day=2026-03-30/source=vault").is_dir());
    assert!(root.join("alerts/day=2026-03-30").is_dir());
    assert!(
        !root.join("_staging").read_dir().unwrap().any(|_| true),
        "nothing left staged"
    );
}

/// The ten queries of `docs/investigations.md`, by name, with the tests' `now()`.
fn investigation_queries() -> Vec<(String, String)> {
    util::investigations::queries()
        .into_iter()
        .map(|(name, sql)| (name, sql.replace("now()", NOW)))
        .collect()
}

#[test]
fn investigation_queries_return_what_the_events_say() {
    let lake = replay_lake();
    let root = lake.path();
    let queries = investigation_queries();
    assert_eq!(queries.len(), 10, "ten investigation queries");
    let now = secs("2026-04-01T00:00:00Z");
    let week_start = secs("2026-03-30T00:00:00Z");
    let ev = &lake.events;
    let cred = |e: &Value| e["credential"]["fp"].as_str().map(str::to_string);
    for (name, sql) in &queries {
        let rows = query(&root, sql);
        assert!(!rows.is_empty(), "{name} returned nothing");
        match name.as_str() {
            "identity_mints" => {
                let want: Vec<i64> = ev
                    .iter()
                    .filter(|e| {
                        s(e, "identity") == "gitlab:acme-platform/api/.gitlab-ci.yml"
                            && s(e, "action") == "mint"
                            && secs(s(e, "time")) >= now - 7 * 86_400
                    })
                    .map(|e| secs(s(e, "time")))
                    .collect();
                let got: Vec<i64> = rows.iter().map(|r| secs(s(r, "time"))).collect();
                let mut sorted = want.clone();
                sorted.sort();
                assert_eq!(got, sorted, "{name}");
            }
            "multi_environment_credentials" => {
                let mut envs: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
                for e in ev {
                    if let (Some(c), Some(env)) = (cred(e), e["environment"].as_str()) {
                        envs.entry(c).or_default().insert(env);
                    }
                }
                let want: BTreeSet<&str> = envs
                    .iter()
                    .filter(|(_, v)| v.len() > 1)
                    .map(|(k, _)| k.as_str())
                    .collect();
                let got: BTreeSet<&str> = rows.iter().map(|r| s(r, "credential")).collect();
                assert_eq!(got, want, "{name}");
                for r in &rows {
                    let envs = &envs[s(r, "credential")];
                    assert_eq!(r["environments"].as_u64(), Some(envs.len() as u64), "{r}");
                    let want: Vec<&str> = envs.iter().copied().collect();
                    assert_eq!(strs(r, "environment_list"), want, "{r}");
                }
                let n: Vec<u64> = rows
                    .iter()
                    .map(|r| r["environments"].as_u64().unwrap())
                    .collect();
                assert!(n.windows(2).all(|w| w[0] >= w[1]), "{name}: ordered");
            }
            "top_alerted_identities" => {
                let mut want: BTreeMap<&str, i64> = BTreeMap::new();
                for a in &lake.alerts {
                    if secs(s(a, "event_time")) >= week_start {
                        *want.entry(s(a, "identity")).or_default() += 1;
                    }
                }
                let got: BTreeMap<&str, i64> = rows
                    .iter()
                    .map(|r| (s(r, "identity"), r["alerts"].as_i64().unwrap()))
                    .collect();
                assert_eq!(got, want, "{name}");
                let counts: Vec<i64> = rows.iter().map(|r| r["alerts"].as_i64().unwrap()).collect();
                assert!(counts.windows(2).all(|w| w[0] >= w[1]), "{name}: ordered");
            }
            "alert_timeline" => {
                let a = lake
                    .alerts
                    .iter()
                    .find(|a| s(a, "id") == "a-e7c9304e574141c3bc236b7a7c73e76f")
                    .expect("the alert of the example");
                let t = secs(s(a, "event_time"));
                let want = ev
                    .iter()
                    .filter(|e| {
                        s(e, "identity") == s(a, "identity")
                            && (secs(s(e, "time")) - t).abs() <= 3600
                    })
                    .count();
                assert_eq!(rows.len(), want, "{name}");
                assert!(
                    rows.iter().any(|r| s(r, "id") == s(a, "event_id")),
                    "{name}"
                );
            }
            "new_runners" => {
                let mut first: BTreeMap<&str, i64> = BTreeMap::new();
                let mut used: BTreeMap<&str, (i64, BTreeSet<&str>)> = BTreeMap::new();
                for e in ev {
                    if !matches!(s(e, "action"), "mint" | "use") {
                        continue;
                    }
                    let r = e["runner"]["id"].as_str().or(e["runner"]["group"].as_str());
                    if let Some(r) = r {
                        let t = secs(s(e, "time"));
                        let f = first.entry(r).or_insert(t);
                        *f = (*f).min(t);
                        let u = used.entry(r).or_default();
                        u.0 += 1;
                        u.1.insert(s(e, "identity"));
                    }
                }
                let want: BTreeSet<&str> = first
                    .iter()
                    .filter(|(_, t)| **t >= week_start)
                    .map(|(r, _)| *r)
                    .collect();
                let got: BTreeSet<&str> = rows.iter().map(|r| s(r, "runner")).collect();
                assert_eq!(got, want, "{name}");
                for r in &rows {
                    let (events, identities) = &used[s(r, "runner")];
                    assert_eq!(r["events"].as_i64(), Some(*events), "{r}");
                    let want: Vec<&str> = identities.iter().copied().collect();
                    assert_eq!(strs(r, "identities"), want, "{r}");
                }
            }
            "credential_trail" => {
                let want = ev
                    .iter()
                    .filter(|e| cred(e).as_deref() == Some("ff9fb64319d11f468b158cae2f5aece5"))
                    .count();
                assert_eq!(rows.len(), want, "{name}");
            }
            "unprotected_production_mints" => {
                let want = ev
                    .iter()
                    .filter(|e| {
                        s(e, "action") == "mint"
                            && e["environment"] == "production"
                            && e["context"]["ref_protected"] == false
                    })
                    .count() as i64;
                let got: i64 = rows.iter().map(|r| r["mints"].as_i64().unwrap()).sum();
                assert_eq!(got, want, "{name}");
            }
            "new_scopes" => {
                let mut first: BTreeMap<(&str, &str), i64> = BTreeMap::new();
                for e in ev.iter().filter(|e| s(e, "action") == "mint") {
                    for sc in e["scopes"].as_array().into_iter().flatten() {
                        let t = secs(s(e, "time"));
                        let f = first
                            .entry((s(e, "identity"), sc.as_str().unwrap()))
                            .or_insert(t);
                        *f = (*f).min(t);
                    }
                }
                let want: BTreeSet<(&str, &str)> = first
                    .iter()
                    .filter(|(_, t)| **t >= now - 7 * 86_400)
                    .map(|(k, _)| *k)
                    .collect();
                let got: BTreeSet<(&str, &str)> = rows
                    .iter()
                    .map(|r| (s(r, "identity"), s(r, "scope")))
                    .collect();
                assert_eq!(got, want, "{name}");
            }
            "off_hours_mints" => {
                let mut want: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
                for e in ev
                    .iter()
                    .filter(|e| s(e, "action") == "mint" && secs(s(e, "time")) >= now - 7 * 86_400)
                {
                    let hour: u32 = s(e, "time")[11..13].parse().unwrap();
                    let w = want.entry(s(e, "identity")).or_default();
                    w.1 += 1;
                    if !(7..19).contains(&hour) {
                        w.0 += 1;
                    }
                }
                want.retain(|_, v| v.0 > 0);
                let got: BTreeMap<&str, (i64, i64)> = rows
                    .iter()
                    .map(|r| {
                        (
                            s(r, "identity"),
                            (
                                r["off_hours"].as_i64().unwrap(),
                                r["mints"].as_i64().unwrap(),
                            ),
                        )
                    })
                    .collect();
                assert_eq!(got, want, "{name}");
            }
            "alerts_with_baseline" => {
                let want = lake
                    .alerts
                    .iter()
                    .filter(|a| s(a, "event_time") >= "2026-03-30")
                    .count();
                assert_eq!(rows.len(), want, "{name}");
                assert!(
                    rows.iter()
                        .all(|r| r.get("first_seen").is_some_and(|v| !v.is_null())),
                    "{name}: every alerted identity has a baseline"
                );
            }
            other => panic!("no check for query {other}"),
        }
    }
}

#[test]
fn day_partitions_are_pruned_before_files_are_opened() {
    let lake = replay_lake();
    let root = lake.path();
    let plan = query_text(
        &root,
        "csv",
        "EXPLAIN SELECT count(*) FROM events WHERE day = '2026-03-30' AND action = 'mint'",
    );
    assert!(plan.contains("day=2026-03-30"), "{plan}");
    for other in ["day=2026-03-29", "day=2026-03-31", "day=2026-03-23"] {
        assert!(!plan.contains(other), "{other} should be pruned:\n{plan}");
    }
    // Without the filter, other days are scanned (the plan lists files from the first day).
    let plan = query_text(
        &root,
        "csv",
        "EXPLAIN SELECT count(*) FROM events WHERE action = 'mint'",
    );
    assert!(plan.contains("day=2026-03-23"), "{plan}");
    // And the pruned query still counts right.
    let want = lake
        .events
        .iter()
        .filter(|e| s(e, "time").starts_with("2026-03-30") && s(e, "action") == "mint")
        .count() as i64;
    assert_eq!(
        count(
            &root,
            "SELECT count(*) FROM events WHERE day = '2026-03-30' AND action = 'mint'"
        ),
        want
    );
}

#[test]
fn results_are_capped_and_slow_queries_stopped_on_both_endpoints() {
    let lake = replay_lake();
    let root = lake.path();
    let server = serve_with(
        &root,
        lake.dir.path(),
        "max_result_bytes = 1048576\nquery_timeout = \"2s\"\n",
    );
    // Wide rows: whole native records, tens of MB in all; the endpoint keeps about 1 MiB.
    let (status, head, body) = http(
        server.http,
        Some(&bearer()),
        "/query?format=csv",
        "SELECT record FROM events",
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(head.contains("X-Nhiwatch-Truncated: true"), "{head}");
    assert!(
        head.contains("X-Nhiwatch-Truncated-By: max_result_bytes"),
        "{head}"
    );
    let rows = csv_rows(&String::from_utf8_lossy(&body)).len() - 1;
    let total = count(&root, "SELECT count(*) FROM events") as usize;
    assert!(rows > 0 && rows < total, "{rows} of {total} rows");
    assert!(body.len() < 8 << 20, "{} bytes sent", body.len());
    // A join of every event with every other runs for minutes: stopped at the timeout.
    let started = Instant::now();
    let (status, _, body) = http(
        server.http,
        Some(&bearer()),
        "/query",
        "SELECT count(*) FROM events a JOIN events b ON a.identity <> b.identity",
    );
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("sql.query_timeout"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(30));
    // The endpoint still answers.
    let (status, _, _) = http(server.http, Some(&bearer()), "/query", "SELECT 1");
    assert_eq!(status, 200);

    // The PostgreSQL wire has no "truncated": the query fails once its rows pass the cap,
    // naming it, and the connection's next query runs.
    let (ok, out, err) = psql(server.pg, PASSWORD, "SELECT record FROM events");
    assert!(!ok, "psql got the whole result: {} bytes", out.len());
    assert!(err.contains("sql.max_result_bytes"), "{err}");
    let (ok, out, err) = psql(
        server.pg,
        PASSWORD,
        "SELECT count(*) FROM events a JOIN events b ON a.identity <> b.identity",
    );
    assert!(!ok, "{out}");
    assert!(err.contains("sql.query_timeout"), "{err}");
    let (ok, out, err) = psql(server.pg, PASSWORD, "SELECT count(*) AS n FROM alerts");
    assert!(ok, "{err}");
    assert!(out.starts_with("n\n"), "{out}");
    assert!(started.elapsed() < Duration::from_secs(60));
}

/// A self-signed certificate for 127.0.0.1 and its key, by the `openssl` tool.
fn self_signed(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

#[test]
fn with_a_certificate_both_endpoints_serve_tls_only() {
    let lake = replay_lake();
    let root = lake.path();
    let (cert, key) = self_signed(lake.dir.path());
    let server = serve_with(
        &root,
        lake.dir.path(),
        &format!("tls_cert = {:?}\ntls_key = {:?}\n", cert, key),
    );
    let alerts = count(&root, "SELECT count(*) FROM alerts");
    let sql = "SELECT count(*) AS n FROM alerts";
    // psql checking the certificate and the address it names.
    let root_cert = cert.to_str().unwrap();
    let (ok, out, err) = psql_with(
        server.pg,
        PASSWORD,
        sql,
        &[("PGSSLMODE", "verify-full"), ("PGSSLROOTCERT", root_cert)],
    );
    assert!(ok, "{err}");
    assert_eq!(out, format!("n\n{alerts}\n"));
    // In the clear: refused before the password is asked for, saying why.
    let (ok, _, err) = psql_with(server.pg, PASSWORD, sql, &[("PGSSLMODE", "disable")]);
    assert!(!ok);
    assert!(err.contains("TLS connections only"), "{err}");
    // HTTPS with the certificate checked (curl); plain HTTP gets no answer.
    let out = Command::new("curl")
        .args(["-sS", "--fail-with-body", "--cacert", root_cert])
        .args(["-H", &format!("Authorization: {}", bearer())])
        .args(["--data-binary", sql])
        .arg(format!(
            "https://127.0.0.1:{}/query?format=csv",
            server.http
        ))
        .output()
        .expect("curl");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{body} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(body, format!("n\n{alerts}\n"));
    let mut c = std::net::TcpStream::connect(("127.0.0.1", server.http)).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let request = format!(
        "POST /query HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Length: {}\r\n\r\n{sql}",
        bearer(),
        sql.len()
    );
    let _ = c.write_all(request.as_bytes());
    let mut raw = Vec::new();
    let _ = c.read_to_end(&mut raw);
    assert!(
        !raw.starts_with(b"HTTP/"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
}

#[test]
fn the_lake_is_read_only_and_errors_name_the_problem() {
    let lake = replay_lake();
    let root = lake.path();
    for sql in [
        "CREATE TABLE x AS SELECT 1",
        "INSERT INTO alerts SELECT * FROM alerts",
        "COPY alerts TO '/tmp/x.parquet'",
        "DROP TABLE events",
    ] {
        let out = util::run(&["query", "--lake", root.to_str().unwrap(), sql], None);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{sql}: {err}");
        assert!(
            err.contains("read-only") || err.contains("not supported"),
            "{sql}: {err}"
        );
    }
    let out = util::run(
        &[
            "query",
            "--lake",
            root.to_str().unwrap(),
            "SELECT nosuch FROM events",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nosuch"));
    let count_after = count(&root, "SELECT count(*) FROM alerts");
    assert_eq!(
        count_after as usize,
        lake.alerts.len(),
        "nothing was written"
    );
}

/// Rows of CSV text (quotes as RFC 4180).
fn csv_rows(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => row.push(std::mem::take(&mut field)),
            ('\n', false) => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            ('\r', false) => {}
            (c, _) => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}

struct Server {
    child: Child,
    pg: u16,
    http: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(lake: &Path, dir: &Path) -> Server {
    serve_with(lake, dir, "")
}

/// `query --serve` with `extra` keys in its `[sql]` section.
fn serve_with(lake: &Path, dir: &Path, extra: &str) -> Server {
    let config = dir.join("sql.toml");
    std::fs::write(
        &config,
        format!("[sql]\npassword = \"{PASSWORD}\"\n{extra}"),
    )
    .unwrap();
    let (pg, http) = (free_port(), free_port());
    let log = std::fs::File::create(dir.join("serve.log")).unwrap();
    let child = util::bin()
        .args([
            "--config",
            config.to_str().unwrap(),
            "query",
            "--serve",
            "--lake",
        ])
        .arg(lake)
        .args(["--pg-listen", &format!("127.0.0.1:{pg}")])
        .args(["--http-listen", &format!("127.0.0.1:{http}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn query --serve");
    let server = Server { child, pg, http };
    let start = Instant::now();
    for port in [pg, http] {
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(60), "listener {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    server
}

/// `psql --csv -c SQL`; (success, stdout, stderr).
fn psql(port: u16, password: &str, sql: &str) -> (bool, String, String) {
    psql_with(port, password, sql, &[])
}

/// [`psql`] with more libpq variables (`PGSSLMODE`, …).
fn psql_with(port: u16, password: &str, sql: &str, env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new("psql")
        .args([
            "-X",
            "--csv",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "nhiwatch",
            "-d",
            "nhiwatch",
            "-c",
            sql,
        ])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .env("PGSSLMODE", "prefer")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("psql (Debian postgresql-client)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An HTTP request to the SQL endpoint: (status, headers, body).
fn http(port: u16, auth: Option<&str>, target: &str, body: &str) -> (u16, String, Vec<u8>) {
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(60))).ok();
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    write!(
        c,
        "POST {target} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    c.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head, raw[split + 4..].to_vec())
}

fn bearer() -> String {
    format!("Bearer {PASSWORD}")
}

#[test]
fn cli_psql_and_http_return_the_same_rows() {
    let lake = replay_lake();
    let root = lake.path();
    let server = serve(&root, lake.dir.path());
    for sql in [
        "SELECT id, detector, severity, severity_rank, identity, CAST(time AS VARCHAR) AS t \
         FROM alerts ORDER BY id",
        "SELECT source, action, count(*) AS n FROM events GROUP BY source, action \
         ORDER BY source, action",
        "SELECT identity, events, highest_rank FROM baselines ORDER BY identity",
    ] {
        let cli = csv_rows(&query_text(&root, "csv", sql));
        let (ok, pg, err) = psql(server.pg, PASSWORD, sql);
        assert!(ok, "psql {sql}: {err}");
        let pg = csv_rows(&pg);
        let (status, _, body) = http(server.http, Some(&bearer()), "/query?format=csv", sql);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let web = csv_rows(&String::from_utf8(body).unwrap());
        assert!(cli.len() > 2, "{sql}: {cli:?}");
        assert_eq!(cli, pg, "CLI and psql differ for {sql}");
        assert_eq!(cli, web, "CLI and HTTP differ for {sql}");
    }
    // JSON and Arrow IPC from HTTP carry the same rows.
    let sql = "SELECT id, severity_rank FROM alerts ORDER BY id";
    let (status, head, body) = http(server.http, Some(&bearer()), "/query?format=json", sql);
    assert_eq!(status, 200);
    assert!(head.contains("X-Nhiwatch-Rows: "), "{head}");
    let rows: Vec<Value> = serde_json::from_slice(&body).unwrap();
    assert_eq!(rows.len(), lake.alerts.len());
    let (status, head, body) = http(server.http, Some(&bearer()), "/query?format=arrow", sql);
    assert_eq!(status, 200);
    assert!(
        head.contains("application/vnd.apache.arrow.stream"),
        "{head}"
    );
    let reader =
        datafusion::arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(body), None)
            .unwrap();
    let n: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(n, lake.alerts.len());
    // Basic auth works too; a wrong or missing password does not.
    let basic = format!("Basic {}", b64(format!("nhiwatch:{PASSWORD}").as_bytes()));
    assert_eq!(http(server.http, Some(&basic), "/query", sql).0, 200);
    assert_eq!(http(server.http, None, "/query", sql).0, 401);
    assert_eq!(
        http(server.http, Some("Bearer wrong"), "/query", sql).0,
        401
    );
    let (ok, _, err) = psql(server.pg, "wrong", "SELECT 1");
    assert!(!ok, "a wrong password must be refused");
    assert!(
        err.contains("password") || err.contains("authentication"),
        "{err}"
    );
    // Read-only on both.
    for sql in [
        "CREATE TABLE x (a INT)",
        "INSERT INTO alerts SELECT * FROM alerts",
        "DROP TABLE events",
    ] {
        let (ok, _, err) = psql(server.pg, PASSWORD, sql);
        assert!(!ok, "psql accepted {sql}");
        assert!(err.contains("read-only"), "{sql}: {err}");
        let (status, _, body) = http(server.http, Some(&bearer()), "/query", sql);
        assert_eq!(status, 403, "{sql}: {}", String::from_utf8_lossy(&body));
    }
    // A request head without an end is refused at 16 KiB, not buffered.
    let got = prom::raw(&format!("127.0.0.1:{}", server.http), &vec![b'a'; 1 << 20]);
    assert!(got.starts_with("HTTP/1.1 431"), "{got}");
    // Nor through EXPLAIN ANALYZE (which runs its statement), nor by changing the session's
    // DataFusion settings (one session serves every client).
    let written = lake.dir.path().join("written.csv");
    for sql in [
        format!(
            "EXPLAIN ANALYZE COPY (SELECT id FROM alerts) TO '{}'",
            written.display()
        ),
        "EXPLAIN ANALYZE INSERT INTO alerts SELECT * FROM alerts".to_string(),
        "EXPLAIN COPY alerts TO '/tmp/nhiwatch-explain-copy.parquet'".to_string(),
        "SET datafusion.runtime.memory_limit = '100G'".to_string(),
        "SET datafusion.execution.batch_size = 1".to_string(),
        "RESET datafusion.runtime.memory_limit".to_string(),
    ] {
        let (ok, _, err) = psql(server.pg, PASSWORD, &sql);
        assert!(!ok, "psql accepted {sql}");
        assert!(err.contains("read-only"), "{sql}: {err}");
        let (status, _, body) = http(server.http, Some(&bearer()), "/query", &sql);
        assert_eq!(status, 403, "{sql}: {}", String::from_utf8_lossy(&body));
    }
    assert!(
        !written.exists(),
        "EXPLAIN ANALYZE COPY wrote {}",
        written.display()
    );
    // Reads still explain, and psql's session chatter still works.
    let (ok, out, err) = psql(server.pg, PASSWORD, "EXPLAIN SELECT count(*) FROM alerts");
    assert!(ok && out.contains("plan"), "{out}{err}");
    let (ok, _, err) = psql(server.pg, PASSWORD, "SET application_name = 'grafana'");
    assert!(ok, "{err}");
    let (ok, out, _) = psql(server.pg, PASSWORD, "SELECT count(*) AS n FROM alerts");
    assert!(ok);
    assert_eq!(csv_rows(&out)[1][0], lake.alerts.len().to_string());
    // psql's own catalog queries work (`\dt` lists the tables).
    let (ok, out, err) = psql(server.pg, PASSWORD, "\\dt");
    assert!(ok, "{err}");
    for t in ["events", "alerts", "baselines"] {
        assert!(out.contains(t), "\\dt: {out}");
    }
    // Every query of the SQL dashboard, as Grafana expands it, returns rows.
    dashboard_queries_return_rows(&server, &lake);
}

/// The single number a `SELECT count(*) AS n …` returns over HTTP (JSON).
fn http_count(server: &Server, sql: &str) -> i64 {
    let (status, _, body) = http(server.http, Some(&bearer()), "/query?format=json", sql);
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 200, "{sql}: {text}");
    let rows: Vec<Value> = serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{text}: {e}"));
    rows[0]["n"]
        .as_i64()
        .unwrap_or_else(|| panic!("{sql}: {text}"))
}

/// Regression: DataFusion's memory is unbounded by default, and one query grouping 3.8
/// million credentials with `array_agg(DISTINCT …)` took a process to 24 GB. With
/// `sql.memory_limit` such a query fails with an error naming the key, and the endpoint (in
/// `run`, the process that also runs the detectors) goes on answering.
#[test]
fn a_query_over_the_memory_limit_fails_and_the_endpoint_keeps_serving() {
    let lake = replay_lake();
    let root = lake.path();
    let server = serve_with(&root, lake.dir.path(), "memory_limit = 16777216\n");
    // The build side of this hash join is every record (19 MB of JSON): more than 16 MiB.
    let join = "SELECT count(*) AS n FROM events a JOIN events b ON a.record = b.record";
    let (status, _, body) = http(server.http, Some(&bearer()), "/query?format=json", join);
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("sql.memory_limit (16777216 bytes)"), "{text}");
    let (ok, _, err) = psql(server.pg, PASSWORD, join);
    assert!(!ok);
    assert!(err.contains("Resources exhausted"), "{err}");
    assert_eq!(
        http_count(&server, "SELECT count(*) AS n FROM events"),
        lake.events.len() as i64
    );
    let (ok, out, err) = psql(server.pg, PASSWORD, "SELECT count(*) AS n FROM alerts");
    assert!(ok, "{err}");
    assert_eq!(csv_rows(&out)[1][0], lake.alerts.len().to_string(), "{out}");
}

/// The PostgreSQL endpoint serves 16 connections at once; the 17th is told so (FATAL 53300,
/// as PostgreSQL says it), and a freed place is taken again.
#[test]
fn the_postgresql_endpoint_refuses_connections_past_its_limit_by_name() {
    let lake = replay_lake();
    let server = serve(&lake.path(), lake.dir.path());
    // Each held connection asks for TLS and gets the server's `N`: then it was accepted and
    // holds a place (connected alone, it might still wait in the listen queue).
    let held: Vec<std::net::TcpStream> = (0..16)
        .map(|_| {
            use std::io::{Read as _, Write as _};
            let mut c = std::net::TcpStream::connect(("127.0.0.1", server.pg)).expect("connect");
            c.set_read_timeout(Some(Duration::from_secs(30)))
                .expect("timeout");
            c.write_all(&[0, 0, 0, 8, 4, 210, 22, 47])
                .expect("SSLRequest");
            let mut answer = [0u8; 1];
            c.read_exact(&mut answer)
                .expect("an answer to the SSLRequest");
            assert_eq!(&answer, b"N");
            c
        })
        .collect();
    let (ok, _, err) = psql(server.pg, PASSWORD, "SELECT 1");
    assert!(!ok, "a 17th connection was served: {err}");
    assert!(err.contains("too many clients"), "{err}");
    drop(held);
    let start = Instant::now();
    loop {
        let (ok, out, err) = psql(server.pg, PASSWORD, "SELECT 1 AS one");
        if ok {
            assert_eq!(csv_rows(&out)[1][0], "1", "{out}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{err}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Regressions: the queries of docs/investigations.md start with `-- name: …`, which the
/// command line took for an option, and most return lists, which `--format csv` refused.
#[test]
fn query_takes_sql_that_starts_with_a_comment_and_writes_lists_as_csv() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("lake");
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let lake = root.to_str().unwrap();
    let out = util::run(&["replay", "--lake", lake, empty.to_str().unwrap()], None);
    assert!(out.status.success());
    let sql = "-- name: lists\nSELECT make_array('read', 'write') AS scopes, \
               (SELECT count(*) FROM events) AS events";
    let out = util::run(&["query", "--lake", lake, "--format", "csv", sql], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "scopes,events\n\"[read, write]\",0\n"
    );
}

/// Regression: DataFusion caches a table's file listing for the life of a session unless told
/// not to, so an endpoint that had answered once (`run` serving the lake it writes, or
/// `query --serve`) never saw a file rolled after that, and failed on files retention removed.
#[test]
fn a_serving_endpoint_sees_files_rolled_and_removed_after_its_first_query() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("lake");
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let out = util::run(
        &[
            "replay",
            "--lake",
            root.to_str().unwrap(),
            empty.to_str().unwrap(),
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = serve(&root, dir.path());
    // A fresh lake answers (no table directory yet), with nothing.
    let events = "SELECT count(*) AS n FROM events";
    let alerts = "SELECT count(*) AS n FROM alerts";
    assert_eq!(http_count(&server, events), 0);
    let (ok, out, err) = psql(server.pg, PASSWORD, alerts);
    assert!(ok, "{err}");
    assert_eq!(csv_rows(&out)[1][0], "0");
    // Other writers fill the lake while the endpoint runs: once into tables it has not seen
    // yet, once more into tables it has listed.
    let mut raised = 0;
    for round in 1..=2 {
        let out = util::run(
            &[
                "--config",
                CONFIG,
                "replay",
                "--lake",
                root.to_str().unwrap(),
                WEEK,
            ],
            None,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        raised += json_lines(&out.stdout).len();
        assert_eq!(
            http_count(&server, events),
            16_996 * round,
            "round {round}: rows rolled after the endpoint's last query"
        );
        let (ok, out, err) = psql(server.pg, PASSWORD, alerts);
        assert!(ok, "{err}");
        assert_eq!(csv_rows(&out)[1][0], raised.to_string(), "round {round}");
    }
    // Retention removes every day of the week: the endpoint answers with what is left.
    let later = nhiwatch::time::Timestamp::parse("2026-06-01T00:00:00Z").unwrap();
    let removed = nhiwatch::lake::writer::expire(&root, "1d".parse().unwrap(), later).unwrap();
    assert!(removed >= 9, "{removed}");
    assert_eq!(
        http_count(&server, events),
        0,
        "files removed after a query"
    );
    let (ok, out, err) = psql(server.pg, PASSWORD, alerts);
    assert!(ok, "{err}");
    assert_eq!(csv_rows(&out)[1][0], "0");
}

fn b64(data: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = c
            .iter()
            .enumerate()
            .fold(0u32, |a, (i, b)| a | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn dashboard_queries_return_rows(server: &Server, lake: &Lake) {
    let path = util::root().join("dashboards/sql/nhiwatch-investigation.json");
    let d: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let identity = s(&lake.alerts[0], "identity").to_string();
    let expand = |sql: &str| {
        let mut out = sql.to_string();
        while let Some(i) = out.find("$__timeFilter(") {
            let end = i + out[i..].find(')').unwrap();
            let col = out[i + 14..end].to_string();
            out.replace_range(
                i..=end,
                &format!("{col} BETWEEN '2026-03-23T00:00:00Z' AND '2026-04-01T00:00:00Z'"),
            );
        }
        out.replace("$identity", &identity)
    };
    let mut n = 0;
    let vars = d["templating"]["list"].as_array().unwrap();
    let panels = d["panels"].as_array().unwrap();
    let sqls = vars
        .iter()
        .filter(|v| v["type"] == "query")
        .map(|v| v["query"].as_str().unwrap().to_string())
        .chain(panels.iter().flat_map(|p| {
            p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| t["rawSql"].as_str().unwrap().to_string())
        }));
    for sql in sqls {
        let sql = expand(&sql);
        let (ok, out, err) = psql(server.pg, PASSWORD, &sql);
        assert!(ok, "{sql}: {err}");
        assert!(csv_rows(&out).len() > 1, "no rows: {sql}");
        n += 1;
    }
    assert!(n >= 3, "{n} dashboard queries");
}

#[test]
fn a_dead_writers_staging_file_is_recovered_and_its_torn_tail_cut() {
    use nhiwatch::lake::{LakeConfig, Writer};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("lake");
    let events: Vec<nhiwatch::event::Event> = {
        let out = util::run(
            &["--config", CONFIG, "replay", "--emit", "events", WEEK],
            None,
        );
        util::parse_events(&out.stdout)
    };
    let cfg = LakeConfig::default();
    let mut w = Writer::open(&root, &cfg, "test").unwrap();
    for e in &events[..10_000] {
        w.event(e).unwrap();
    }
    w.sync().unwrap();
    // Rows after the sync and an unfinished batch: what a crash loses or tears.
    for e in &events[10_000..10_100] {
        w.event(e).unwrap();
    }
    drop(w);
    let staged: Vec<PathBuf> = std::fs::read_dir(root.join("_staging"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!staged.is_empty());
    // Nothing is visible yet: rows become Parquet when their part rolls.
    assert_eq!(count(&root, "SELECT count(*) FROM events"), 0);
    // Tear the tail of one staging file (a crash in the middle of a write).
    let victim = &staged[0];
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(victim)
        .unwrap();
    f.write_all(&[0xff, 0xff, 0xff, 0xff, 0x10, 0, 0, 0, 1, 2, 3])
        .unwrap();
    drop(f);
    let mut w = Writer::open(&root, &cfg, "test").unwrap();
    let recovered = w.written();
    assert_eq!(recovered.events, 10_000, "{recovered:?}");
    w.close().unwrap();
    assert_eq!(count(&root, "SELECT count(*) FROM events"), 10_000);
    assert_eq!(
        count(
            &root,
            "SELECT count(DISTINCT id || source || identity) FROM events"
        ),
        10_000
    );
    assert!(
        std::fs::read_dir(root.join("_staging"))
            .unwrap()
            .next()
            .is_none()
    );
}

#[test]
fn a_full_disk_under_the_lake_loses_no_row_and_the_writer_goes_on_when_space_returns() {
    use nhiwatch::lake::{LakeConfig, Writer};
    let dir = tempfile::tempdir().unwrap();
    let disk = crate::kafka::Tmpfs::mount(dir.path().join("disk"), "24m");
    let root = disk.0.join("lake");
    let events: Vec<nhiwatch::event::Event> = {
        let out = util::run(
            &["--config", CONFIG, "replay", "--emit", "events", WEEK],
            None,
        );
        util::parse_events(&out.stdout)
    };
    let total = events.len();
    assert!(total > 15_000, "{total}");
    let cfg = LakeConfig::default();
    let mut w = Writer::open(&root, &cfg, "test").unwrap();
    let (mut refused, mut full_syncs) = (0, 0);
    let mut write = |w: &mut Writer, from: usize, to: usize| {
        for e in &events[from..to] {
            if let Err(err) = w.event(e) {
                assert!(err.is_disk_full(), "{err}");
                refused += 1;
            }
        }
    };
    write(&mut w, 0, 5_000);
    w.sync().unwrap();
    // Twice: the disk fills mid-stream, rows keep coming, syncs fail, space returns.
    let mut at = 5_000;
    for step in [4_000, 4_000] {
        let filler = disk.fill();
        write(&mut w, at, at + step);
        at += step;
        // Retried while the disk stays full, as `run` does every 2 s.
        for _ in 0..2 {
            let err = w.sync().expect_err("a sync on a full disk");
            assert!(err.is_disk_full(), "{err}");
            full_syncs += 1;
            write(&mut w, at, at + 500);
            at += 500;
        }
        std::fs::remove_file(filler).unwrap();
        w.sync().unwrap();
    }
    write(&mut w, at, total);
    w.close().unwrap();
    // Rows are staged at syncs and per 8,192 rows of a part, so these mostly met the full
    // disk in `sync`; an `event` that did kept its row too.
    assert_eq!(full_syncs, 4, "{refused} events refused");
    // Every row once: nothing lost to the failed writes, nothing written twice.
    assert_eq!(count(&root, "SELECT count(*) FROM events"), total as i64);
    assert_eq!(
        count(
            &root,
            "SELECT count(*) FROM (SELECT DISTINCT id, source, identity, time FROM events)"
        ),
        count(&root, "SELECT count(*) FROM events")
    );
    let staged: Vec<_> = std::fs::read_dir(root.join("_staging")).unwrap().collect();
    assert!(staged.is_empty(), "{staged:?}");
}

#[test]
fn retention_removes_old_days_only() {
    let lake = replay_lake();
    let root = lake.path();
    let days_before = std::fs::read_dir(root.join("events")).unwrap().count();
    assert_eq!(days_before, 9);
    let now = nhiwatch::time::Timestamp::parse("2026-04-01T12:00:00Z").unwrap();
    let removed = nhiwatch::lake::writer::expire(&root, "3d".parse().unwrap(), now).unwrap();
    // Kept: 2026-03-29 onwards (3 days before the 1st of April, 12:00).
    let left: BTreeSet<String> = std::fs::read_dir(root.join("events"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        left,
        ["day=2026-03-29", "day=2026-03-30", "day=2026-03-31"]
            .into_iter()
            .map(String::from)
            .collect()
    );
    assert!(removed >= 6, "{removed}");
    let want = lake
        .events
        .iter()
        .filter(|e| s(e, "time") >= "2026-03-29")
        .count() as i64;
    assert_eq!(count(&root, "SELECT count(*) FROM events"), want);
}

/// `run` as an analyst meets it: it serves the lake it writes, and rows become queryable
/// within `lake.roll_interval` while it keeps running, including after the input goes quiet.
#[test]
fn run_serves_its_lake_over_sql_while_it_streams() {
    let broker = Broker::start();
    let setup = crate::kafka::Setup::new(&broker, 1, "lakesql");
    let records = crate::kafka::week();
    let want_alerts = setup.replay_ids(&records, 1).len() as i64;
    let half = records.len() / 2;
    // Events the first half and the whole week decode to (a record can make 0, 1 or 2).
    let events_of = |recs: &[Vec<u8>]| -> i64 {
        let out = util::run(
            &["--config", CONFIG, "replay", "--emit", "events", "-"],
            Some(&recs.join(&b'\n')),
        );
        json_lines(&out.stdout).len() as i64
    };
    let (first, all) = (events_of(&records[..half]), events_of(&records));
    assert!(0 < first && first < all, "{first} {all}");
    let (pg, http_port) = (free_port(), free_port());
    let mut config = std::fs::read_to_string(&setup.config).unwrap();
    config.push_str(&format!(
        "\n[lake]\nroll_interval = \"1s\"\n\n[sql]\npg_listen = \"127.0.0.1:{pg}\"\n\
         http_listen = \"127.0.0.1:{http_port}\"\npassword = \"{PASSWORD}\"\n"
    ));
    std::fs::write(&setup.config, config).unwrap();
    let lake = setup.path("lake");
    broker.produce(&setup.input, &records[..half]);
    let mut run = setup.start("a", &["--lake", lake.to_str().unwrap()]);
    run.wait_for("nhiwatch run started", Duration::from_secs(30));
    let wait_count = |sql: &str, want: i64| {
        let start = Instant::now();
        loop {
            let (status, _, body) = http(http_port, Some(&bearer()), "/query?format=json", sql);
            let n = (status == 200)
                .then(|| serde_json::from_slice::<Vec<Value>>(&body).ok())
                .flatten()
                .and_then(|rows| rows.first().and_then(|r| r["n"].as_i64()));
            if n == Some(want) {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(90) {
                return Err(format!(
                    "{sql}: {n:?} (HTTP {status}: {}), want {want}",
                    String::from_utf8_lossy(&body)
                ));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    // The first half, then nothing more: its rows must still roll and show.
    let events = "SELECT count(*) AS n FROM events";
    if let Err(m) = wait_count(events, first) {
        panic!("{m}\n{}", run.log());
    }
    assert!(run.running(), "{}", run.log());
    broker.produce(&setup.input, &records[half..]);
    for (sql, want) in [
        (events, all),
        ("SELECT count(*) AS n FROM alerts", want_alerts),
    ] {
        if let Err(m) = wait_count(sql, want) {
            panic!("{m}\n{}", run.log());
        }
    }
    // The same through the PostgreSQL wire, and a pivot an analyst makes from an alert.
    let (ok, out, err) = psql(
        pg,
        PASSWORD,
        "SELECT count(*) AS n FROM events e JOIN alerts a ON e.id = a.event_id",
    );
    assert!(ok, "{err}");
    assert!(
        csv_rows(&out)[1][0].parse::<i64>().unwrap() >= want_alerts,
        "{out}"
    );
    assert_eq!(run.terminate(), Some(0));
}

#[test]
fn run_keeps_every_event_in_the_lake_through_a_kill() {
    let broker = Broker::start();
    let setup = crate::kafka::Setup::new(&broker, 1, "lake");
    let records = crate::kafka::week();
    let want_ids = setup.replay_ids(&records, 1);
    let lake = setup.path("lake");
    broker.produce(&setup.input, &records);
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut a = setup.start(
        "a",
        &["--lake", lake.to_str().unwrap(), "--metrics-addr", &metrics],
    );
    a.wait_for("nhiwatch run started", Duration::from_secs(30));
    let start = Instant::now();
    loop {
        let (_, body) = prom::http(&metrics, "GET", "/metrics", None);
        if prom::sum(&body, "nhiwatch_detect_events_total", &[]) as usize >= records.len()
            && prom::sum(&body, "nhiwatch_checkpoints_total", &[]) >= 1.0
        {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "{}", a.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    // Past the next commit of both stages, then a crash: no clean close, nothing rolled.
    std::thread::sleep(Duration::from_secs(3));
    a.kill9();
    assert_eq!(
        count(&lake, "SELECT count(*) FROM events"),
        0,
        "all still staged"
    );
    // The next writer to open the lake converts what the dead one staged.
    let empty = setup.path("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let out = util::run(
        &[
            "replay",
            "--emit",
            "events",
            "--lake",
            lake.to_str().unwrap(),
            empty.to_str().unwrap(),
        ],
        None,
    );
    assert!(out.status.success() || out.status.code() == Some(1));
    assert_eq!(
        count(
            &lake,
            "SELECT count(DISTINCT id || '/' || source || '/' || identity) FROM events"
        ),
        records.len() as i64,
        "every event of every committed record"
    );
    let got: BTreeSet<String> = query(&lake, "SELECT DISTINCT id FROM alerts")
        .iter()
        .map(|r| s(r, "id").to_string())
        .collect();
    assert_eq!(got, want_ids, "the alerts run raised are in the lake");
}

/// Each PostgreSQL connection has its own session: a time zone one client sets (not a
/// `datafusion.*` setting, so allowed) must not change how another client's query runs.
#[test]
fn a_setting_one_postgresql_client_makes_does_not_reach_another() {
    let lake = replay_lake();
    let server = serve(&lake.path(), lake.dir.path());
    let zone = |sql: &str| {
        let (ok, out, err) = psql(server.pg, PASSWORD, sql);
        assert!(ok, "{sql}: {err}");
        out
    };
    let before = zone("SELECT arrow_typeof(now()) AS t");
    assert!(!before.contains("Tokyo"), "{before}");
    zone("SET TIME ZONE 'Asia/Tokyo'");
    let after = zone("SELECT arrow_typeof(now()) AS t");
    assert_eq!(
        after, before,
        "another client's SET TIME ZONE reached this one"
    );
}

#[test]
fn the_identities_table_holds_the_inventory_over_sql_and_psql() {
    let lake = replay_lake();
    let root = lake.path();
    // The same replay with a state directory, for `nhiwatch inventory`.
    let state = lake.dir.path().join("state");
    let out = util::run(
        &[
            "--config",
            CONFIG,
            "replay",
            "--emit",
            "none",
            "--state",
            state.to_str().unwrap(),
            WEEK,
        ],
        None,
    );
    assert!(out.status.success());
    let out = util::run(
        &[
            "--config",
            CONFIG,
            "inventory",
            "--json",
            "--state",
            state.to_str().unwrap(),
        ],
        None,
    );
    assert!(out.status.success());
    let inventory: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let identities = count(&root, "SELECT count(*) FROM identities");
    assert_eq!(identities as usize, inventory.len());
    assert_eq!(identities, count(&root, "SELECT count(*) FROM baselines"));
    for tier in 1..=3u64 {
        let cli = inventory.iter().filter(|r| r["tier"] == tier).count() as i64;
        let sql = count(
            &root,
            &format!("SELECT count(*) FROM identities WHERE tier = {tier}"),
        );
        assert_eq!(sql, cli, "tier {tier}");
    }
    // Through psql, as an investigator would ask it.
    let server = serve(&root, lake.dir.path());
    let (ok, out, err) = psql(
        server.pg,
        PASSWORD,
        "SELECT identity, kind, owner FROM identities WHERE tier = 1 AND array_has(environments, 'production') ORDER BY identity",
    );
    assert!(ok, "{err}");
    let rows = csv_rows(&out);
    let want: Vec<&Value> = inventory.iter().filter(|r| r["tier"] == 1).collect();
    assert_eq!(rows.len(), want.len() + 1, "{out}");
    assert_eq!(rows[0], vec!["identity", "kind", "owner"]);
    assert_eq!(rows[1][0], want[0]["identity"].as_str().unwrap());
    assert_eq!(rows[1][1], "kubernetes service account");
}
