//! Hostile input (issue 22, item 2): records an attacker shapes reach `replay` whole, and each
//! is decoded or rejected with a reason and counted; nothing crashes, memory stays bounded, and
//! no planted secret reaches any output. The fuzzer (`examples/fuzz.rs`, `scripts/fuzz`) keeps
//! its past findings in `tests/fuzz-regressions/`; they are run here too.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;

use serde_json::{Value, json};

use crate::util;

/// Secrets of the shapes the issue names, planted in hostile records.
const PLANTED: [&str; 5] = [
    "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJob3N0aWxlLXBsYW50ZWQifQ.SG9zdGlsZVNpZ25hdHVyZQ",
    "AKIAHOSTILEPLANTED01",
    "ghp_HostilePlantedGithubToken0123456789ab",
    "glpat-HostilePlantedGitlab0123",
    "hvs.CAESIHostilePlantedVaultToken0123456789abcdefGh4KHGh2cy5",
];

/// One record per fixture (compact JSON), by format directory; delivery files left out.
fn seeds() -> Vec<(&'static str, Value)> {
    let mut out = Vec::new();
    for dir in util::FORMAT_DIRS {
        for f in util::fixture_dir(dir) {
            let text = std::fs::read_to_string(&f).expect("fixture");
            if text.contains("\"Records\"") {
                // A delivery file holds several records: the count per line would vary.
                continue;
            }
            if f.extension().is_some_and(|x| x == "jsonl") {
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    out.push((dir, serde_json::from_str(line).expect("json line")));
                }
            } else {
                out.push((dir, serde_json::from_str(&text).expect("json")));
            }
        }
    }
    out
}

/// Every path to a value in a JSON tree (object keys and array indices).
fn paths(v: &Value, prefix: &mut Vec<Value>, out: &mut Vec<Vec<Value>>) {
    let children: Vec<(Value, &Value)> = match v {
        Value::Object(m) => m.iter().map(|(k, c)| (json!(k), c)).collect(),
        Value::Array(a) => a.iter().enumerate().map(|(i, c)| (json!(i), c)).collect(),
        _ => return,
    };
    for (step, child) in children {
        prefix.push(step);
        out.push(prefix.clone());
        paths(child, prefix, out);
        prefix.pop();
    }
}

fn at<'a>(v: &'a mut Value, path: &[Value]) -> &'a mut Value {
    path.iter().fold(v, |cur, step| match step {
        Value::String(k) => &mut cur[k.as_str()],
        Value::Number(i) => &mut cur[i.as_u64().expect("index") as usize],
        _ => unreachable!("paths are keys and indices"),
    })
}

/// A record with `"planted"` (a secret) as its first key, compact.
fn with_planted(v: &Value, secret: &str) -> String {
    let text = serde_json::to_string(v).expect("json");
    format!(r#"{{"planted":"{secret}",{}"#, &text[1..])
}

/// Records that must each be rejected, with the reasons allowed for each.
fn must_reject(seeds: &[(&str, Value)]) -> Vec<(Vec<u8>, &'static [&'static str])> {
    const MALFORMED: &[&str] = &["malformed_json"];
    const TIME: &[&str] = &["absurd_timestamp", "invalid_field"];
    const INVALID: &[&str] = &["invalid_field"];
    let mut out: Vec<(Vec<u8>, &'static [&'static str])> = Vec::new();
    for (i, (_, v)) in seeds.iter().enumerate() {
        let text = with_planted(v, PLANTED[i % PLANTED.len()]);
        // Truncated after the planted secret, at a third and two thirds.
        for cut in [text.len() / 3, 2 * text.len() / 3] {
            let cut = (cut.max(80)..text.len()).find(|&c| text.is_char_boundary(c));
            out.push((text[..cut.expect("a cut")].into(), MALFORMED));
        }
        // Invalid UTF-8 inside a string, and a raw NUL byte.
        let mut bad = text.clone().into_bytes();
        bad.splice(12..12, [0xff, 0xfe]);
        out.push((bad, MALFORMED));
        out.push((
            text.replacen("\"planted\"", "\"pla\0nted\"", 1).into(),
            MALFORMED,
        ));
    }
    let deep = 100_000;
    out.push((
        format!("{}{}", "[".repeat(deep), "]".repeat(deep)).into(),
        &["not_an_object", "malformed_json"],
    ));
    out.push((
        format!(
            r#"{{"jti":"{}","a":{}{}}}"#,
            PLANTED[0],
            "[".repeat(deep),
            "]".repeat(deep)
        )
        .into(),
        &["malformed_json", "unknown_format", "invalid_field"],
    ));
    let github = seeds
        .iter()
        .find(|(d, v)| *d == "github" && v["repository"].is_string())
        .map(|(_, v)| v.clone())
        .expect("a github fixture");
    let kubernetes = seeds
        .iter()
        .find(|(_, v)| v["objectRef"]["subresource"] == "token")
        .map(|(_, v)| v.clone())
        .expect("a TokenRequest fixture");
    let vault = seeds
        .iter()
        .find(|(d, v)| *d == "vault" && v["type"] == "response")
        .map(|(_, v)| v.clone())
        .expect("a vault response fixture");
    let set = |v: &Value, path: &[&str], value: Value| {
        let mut v = v.clone();
        let path: Vec<Value> = path.iter().map(|s| json!(s)).collect();
        *at(&mut v, &path) = value;
        serde_json::to_vec(&v).expect("json")
    };
    // Numbers no decoder can hold.
    out.push((
        serde_json::to_string(&github)
            .expect("json")
            .replacen(&format!("\"iat\":{}", github["iat"]), "\"iat\":1e999", 1)
            .into(),
        &["malformed_json", "invalid_field"],
    ));
    // A duplicate key.
    let text = serde_json::to_string(&github).expect("json");
    out.push((
        format!(
            r#"{},"repository":"{}"}}"#,
            &text[..text.len() - 1],
            PLANTED[2]
        )
        .into(),
        INVALID,
    ));
    // Timestamps before 1970 and after 9999.
    out.push((set(&github, &["iat"], json!(-100)), TIME));
    out.push((set(&github, &["iat"], json!(253_402_300_800_i64)), TIME));
    out.push((set(&vault, &["time"], json!("1969-12-31T23:59:59Z")), TIME));
    out.push((set(&vault, &["time"], json!("10000-01-01T00:00:00Z")), TIME));
    out.push((
        set(
            &kubernetes,
            &["requestReceivedTimestamp"],
            json!("0001-01-01T00:00:00.000000Z"),
        ),
        TIME,
    ));
    out.push((
        set(
            &kubernetes,
            &["requestReceivedTimestamp"],
            json!("+10000-01-01T00:00:00Z"),
        ),
        TIME,
    ));
    // 10,000-character identities.
    let long = "r".repeat(10_000);
    let mut g = github.clone();
    for key in ["repository", "workflow_ref", "job_workflow_ref"] {
        let value = g[key].as_str().expect("string").replace("octo-repo", &long);
        g[key] = json!(value);
    }
    out.push((serde_json::to_vec(&g).expect("json"), INVALID));
    out.push((
        set(
            &kubernetes,
            &["user", "username"],
            json!(format!("system:serviceaccount:ns:{long}")),
        ),
        INVALID,
    ));
    out
}

/// Wrong types in every field of every format's fixtures.
fn wrong_types(seeds: &[(&str, Value)]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, (_, seed)) in seeds.iter().enumerate() {
        let mut all = Vec::new();
        paths(seed, &mut Vec::new(), &mut all);
        for path in all {
            let mut v = seed.clone();
            let original = at(&mut v, &path).clone();
            let secret = json!(PLANTED[i % PLANTED.len()]);
            let mut values = vec![json!(null), json!(true), json!(-1), json!([]), json!({})];
            if !original.is_string() {
                values.push(secret);
            } else {
                values.push(json!(4_294_967_296_u64));
            }
            for value in values {
                if value == original {
                    continue;
                }
                *at(&mut v, &path) = value;
                out.push(serde_json::to_string(&v).expect("json"));
            }
        }
    }
    out
}

fn gzip(path: &Path, parts: impl Iterator<Item = Vec<u8>>) {
    let f = std::fs::File::create(path).expect("create");
    let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    for p in parts {
        gz.write_all(&p).expect("gzip");
    }
    gz.finish().expect("gzip");
}

/// The reasons in the rejects file, by (file name, line).
fn rejects_by_line(text: &str) -> BTreeMap<(String, u64), Vec<String>> {
    let mut out: BTreeMap<(String, u64), Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        let r: Value = serde_json::from_str(line).expect("rejects file line");
        let file = Path::new(r["file"].as_str().expect("file"))
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        assert!(
            !r["message"].as_str().unwrap_or_default().is_empty(),
            "a reject without a message: {line}"
        );
        out.entry((file, r["line"].as_u64().expect("line")))
            .or_default()
            .push(r["reason"].as_str().expect("reason").to_string());
    }
    out
}

#[test]
fn the_hostile_corpus_is_rejected_with_reasons_and_leaks_no_planted_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seeds = seeds();
    assert!(seeds.len() >= 20, "{} fixtures", seeds.len());

    let broken = must_reject(&seeds);
    let broken_path = dir.path().join("broken.jsonl");
    let mut f = std::fs::File::create(&broken_path).expect("create");
    for (line, _) in &broken {
        f.write_all(line).expect("write");
        f.write_all(b"\n").expect("write");
    }
    drop(f);

    let wrong = wrong_types(&seeds);
    let wrong_path = dir.path().join("wrong-types.jsonl");
    std::fs::write(&wrong_path, wrong.join("\n") + "\n").expect("write");

    // One 50 MB line: a token's claims whose repository name is 50 MB long.
    let github = &seeds
        .iter()
        .find(|(d, v)| *d == "github" && v["repository"].is_string())
        .expect("github")
        .1;
    let mut huge = github.clone();
    huge["repository"] = json!(format!("octo-org/{}", "x".repeat(50 << 20)));
    let huge_path = dir.path().join("huge-line.jsonl");
    std::fs::write(&huge_path, serde_json::to_vec(&huge).expect("json")).expect("write");

    // Two gzip bombs of 256 MiB each: a JSON array (a document, parsed whole) and one line.
    let chunk = |byte: u8| vec![byte; 1 << 20];
    let array_bomb = dir.path().join("array-bomb.json.gz");
    gzip(
        &array_bomb,
        std::iter::once(b"[{\"jti\":\"".to_vec()).chain((0..256).map(|_| chunk(b'a'))),
    );
    let line_bomb = dir.path().join("line-bomb.jsonl.gz");
    gzip(
        &line_bomb,
        std::iter::once(b"{\"jti\":\"".to_vec()).chain((0..256).map(|_| chunk(b'b'))),
    );
    assert!(std::fs::metadata(&array_bomb).expect("bomb").len() < (4 << 20));

    let config = dir.path().join("nhiwatch.toml");
    std::fs::write(&config, "[decode]\nmax_record_bytes = 67108864\n").expect("config");
    let rejects = dir.path().join("rejects.jsonl");
    let lake = dir.path().join("lake");
    let paths = [
        &broken_path,
        &wrong_path,
        &huge_path,
        &array_bomb,
        &line_bomb,
    ];
    let mut args = vec![
        "replay".to_string(),
        "--config".into(),
        config.display().to_string(),
        "--emit".into(),
        "alerts".into(),
        "--rejects".into(),
        rejects.display().to_string(),
        "--lake".into(),
        lake.display().to_string(),
    ];
    args.extend(paths.iter().map(|p| p.display().to_string()));
    let o = util::bin()
        .args(&args)
        .env("RUST_LOG", "debug")
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(0), "{}", tail(&stderr));

    // Every record is counted: the summary's records are every line and document written.
    let records = broken.len() + wrong.len() + 3;
    let summary = stderr
        .lines()
        .find(|l| l.starts_with("nhiwatch replay:"))
        .unwrap_or_else(|| panic!("no summary in {}", tail(&stderr)));
    assert!(
        summary.starts_with(&format!(
            "nhiwatch replay: {} records",
            nhiwatch::replay::thousands(records as u64)
        )),
        "{summary} (expected {records} records)"
    );
    let rejected = std::fs::read_to_string(&rejects).expect("rejects file");
    let by_line = rejects_by_line(&rejected);
    let counted = stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("rejects: "))
        .and_then(|n| n.replace(',', "").parse::<usize>().ok())
        .expect("a rejects count in the summary");
    assert_eq!(counted, rejected.lines().count(), "summary against file");

    // Each broken record is rejected, for one of the reasons that fit it.
    for (i, (line, allowed)) in broken.iter().enumerate() {
        let got = by_line
            .get(&("broken.jsonl".to_string(), i as u64 + 1))
            .unwrap_or_else(|| {
                let line = String::from_utf8_lossy(line);
                panic!("line {} was not rejected: {}", i + 1, head(&line))
            });
        assert!(
            got.iter().all(|r| allowed.contains(&r.as_str())),
            "line {}: {got:?}, expected one of {allowed:?}: {}",
            i + 1,
            head(&String::from_utf8_lossy(line))
        );
    }
    for (file, reasons) in [
        ("huge-line.jsonl", &["invalid_field"][..]),
        ("array-bomb.json.gz", &["too_large"][..]),
        ("line-bomb.jsonl.gz", &["too_large"][..]),
    ] {
        let got = by_line.get(&(file.to_string(), 1)).unwrap_or_else(|| {
            let others: Vec<_> = by_line
                .iter()
                .filter(|((f, _), _)| !f.starts_with("broken") && !f.starts_with("wrong"))
                .collect();
            panic!("{file} was not rejected: {others:?}\n{}", tail(&stderr))
        });
        assert_eq!(got, reasons, "{file}");
    }
    // The wrong types are each decoded or rejected; some of them are rejected.
    let wrong_rejected = by_line
        .keys()
        .filter(|(f, _)| f == "wrong-types.jsonl")
        .count();
    assert!(
        wrong_rejected > wrong.len() / 10 && wrong_rejected < wrong.len(),
        "{wrong_rejected} of {} wrong-type records rejected",
        wrong.len()
    );

    // Memory stayed bounded: a 50 MB line, and bombs that expand to 256 MiB each.
    let peak = stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("peak memory: "))
        .expect("peak memory in the summary");
    let mib: f64 = peak
        .strip_suffix(" MiB")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("peak memory {peak:?} is not in MiB"));
    assert!(mib < 512.0, "peak memory {mib} MiB");
    eprintln!(
        "{summary}; {} rejected; {wrong_rejected} of {} wrong-type records rejected; peak memory {mib} MiB",
        rejected.lines().count(),
        wrong.len()
    );

    // No planted secret anywhere: the alerts, the logs at debug level, the rejects file (record
    // text included) and every column of the lake.
    let mut lake_text = String::new();
    for table in ["events", "alerts"] {
        let q = util::run(
            &[
                "query",
                "--lake",
                lake.to_str().expect("utf-8"),
                "--format",
                "csv",
                &format!("SELECT * FROM {table}"),
            ],
            None,
        );
        assert!(q.status.success(), "{}", String::from_utf8_lossy(&q.stderr));
        lake_text.push_str(&String::from_utf8_lossy(&q.stdout));
    }
    assert!(
        lake_text.lines().count() > 100,
        "the lake holds the decoded records"
    );
    let planted_in_inputs = std::fs::read_to_string(&wrong_path).expect("read");
    for secret in PLANTED {
        assert!(
            planted_in_inputs.contains(secret),
            "{secret} is not planted"
        );
        for (what, text) in [
            ("stdout", &stdout),
            ("stderr", &stderr),
            ("rejects file", &rejected),
            ("lake", &lake_text),
        ] {
            if let Some(i) = text.find(secret) {
                let from = text[..i].rfind('\n').map_or(0, |n| n + 1);
                panic!("{secret} leaked into the {what}: {}", head(&text[from..]));
            }
        }
    }
}

/// The fuzzer's past findings (`tests/fuzz-regressions/<target>/`), through the library as the
/// fuzzer runs them: each input decodes or is rejected with a message that quotes no secret
/// (the decoder's own message, before any masking of outputs), and framed lines only go
/// forward. `scripts/test` also runs the fuzzer itself briefly, regressions first.
#[test]
fn fuzz_regressions_stay_fixed() {
    use nhiwatch::decode::{DecodeConfig, Decoder, Format};
    use nhiwatch::source::file::{Framed, frame};
    let cfg = DecodeConfig::default();
    let fp = nhiwatch::fingerprint::Fingerprinter::new(util::KEY.as_bytes()).expect("key");
    let env = nhiwatch::environment::EnvResolver::new(&Default::default());
    let decoder = |format| Decoder::new(&cfg, fp.clone(), env.clone(), format);
    let quotes_a_secret = |m: &str| {
        ["FuzzPlanted", "hvs.", "ghp_", "glpat-"]
            .iter()
            .any(|s| m.contains(s))
    };
    let root = util::root().join("tests/fuzz-regressions");
    let mut n = 0;
    for target in std::fs::read_dir(&root).expect("regressions").flatten() {
        let name = target.file_name().to_string_lossy().into_owned();
        for input in std::fs::read_dir(target.path())
            .expect("target dir")
            .flatten()
        {
            n += 1;
            let path = input.path();
            let bytes = std::fs::read(&path).expect("read");
            let mut out = Vec::new();
            if name == "framing" {
                let d = decoder(Format::Auto);
                let mut last = 0;
                frame(&bytes[..], 4096, |fr| {
                    let line = match fr {
                        Framed::Record { bytes, line, .. } => {
                            d.decode(bytes, &mut out);
                            line
                        }
                        Framed::Oversize { line, .. } | Framed::Unparseable { line, .. } => line,
                    };
                    assert!(line >= last, "{}: line {line} after {last}", path.display());
                    last = line;
                    std::ops::ControlFlow::Continue(())
                })
                .expect("frame");
            } else {
                let format: Format = serde_json::from_value(json!(name)).expect("a format");
                decoder(format).decode(&bytes, &mut out);
            }
            for r in out.iter().filter_map(|r| r.as_ref().err()) {
                assert!(
                    !quotes_a_secret(&r.message),
                    "{}: {}",
                    path.display(),
                    r.message
                );
            }
        }
    }
    assert!(n >= 5, "{n} regression inputs");
}

fn head(s: &str) -> &str {
    let mut end = s.len().min(300);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn tail(s: &str) -> &str {
    let mut start = s.len().saturating_sub(3000);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}
