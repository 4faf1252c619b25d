//! Fuzzes the decoders and the input framing on stable Rust (issue 22, item 2).
//!
//! A structure-aware mutational fuzzer, in process: each execution takes a seed record from the
//! corpus (`schemas/samples/` and, when present, `../shared/samples/`), applies one to four
//! mutations, some on the bytes (bit flips, interesting bytes, cuts, splices, repeats) and some
//! on the JSON tree (a field's value replaced by a value of another type, an absurd timestamp,
//! a 10 k-character string, `1e999`, a duplicate key, deep nesting, a planted secret), and runs
//! the target on the result. It is not coverage-guided: it trades guidance for speed (hundreds
//! of thousands of executions a second) and for mutations that know what the formats look like.
//!
//! What counts as a failure, besides a panic:
//! - a record that yields no result (every record is decoded or rejected, never dropped);
//! - an event outside `decode.min_time` .. the bound handed to the decoder;
//! - an event without an identity, or a reject without a message;
//! - a planted secret quoted in a reject message;
//! - for the framing: bytes read that differ from the input's length, or line numbers that go
//!   backwards or past the end.
//!
//! Every failing input is written to `--crashes DIR` (default `target/fuzz-crashes/`); inputs in
//! `tests/fuzz-regressions/<target>/` are run first on every start, so a crash that was fixed
//! stays fixed. The integration test `hostile::fuzz_regressions_stay_fixed` runs them too.
//!
//! ```text
//! cargo run --release --example fuzz -- --execs 10000000            # every target
//! cargo run --release --example fuzz -- --execs 100000 github vault # some
//! ```

use std::collections::BTreeMap;
use std::io::Write as _;
use std::ops::ControlFlow;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use nhiwatch::decode::{DecodeConfig, Decoded, Decoder, Format};
use nhiwatch::environment::{EnvResolver, EnvironmentsConfig};
use nhiwatch::fingerprint::Fingerprinter;
use nhiwatch::source::file::{Framed, frame};
use nhiwatch::time::Timestamp;

/// Secrets the mutator plants in string fields; none may be quoted in a reject message.
const SECRETS: &[&str] = &[
    "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJmdXp6LXBsYW50ZWQifQ.c2lnbmF0dXJlRlVaWlBMQU5URUQ",
    "AKIAFUZZPLANTED00001",
    "ASIAFUZZPLANTED00002",
    "ghp_FuzzPlantedGithubToken0123456789abcd",
    "glpat-FuzzPlantedGitlab01234",
    "hvs.CAESIFuzzPlantedVaultToken0123456789abcdefGh4KHGh2cy5",
];

const TARGETS: &[&str] = &[
    "github",
    "gitlab",
    "vault",
    "cloudtrail",
    "kubernetes",
    "canonical",
    "auto",
    "framing",
];

/// A value (raw JSON) the tree mutation puts in place of a field's value.
fn interesting_value(rng: &mut Rng, corpus_strings: &[String]) -> String {
    const FIXED: &[&str] = &[
        "null",
        "true",
        "false",
        "0",
        "-1",
        "1e999",
        "-1e999",
        "18446744073709551616",
        "-9223372036854775809",
        "1.5",
        "4294967296",
        "\"\"",
        "[]",
        "{}",
        "[null]",
        "{\"\":null}",
        "\"0001-01-01T00:00:00Z\"",
        "\"1969-12-31T23:59:59Z\"",
        "\"1970-01-01T00:00:00Z\"",
        "\"9999-12-31T23:59:59Z\"",
        "\"10000-01-01T00:00:00Z\"",
        "\"-000001-01-01T00:00:00Z\"",
        "\"2026-13-45T25:61:61Z\"",
        "\"2026-01-05T10:00:00.999999999999+99:99\"",
        "\"\\u0000\"",
        "\"a\\u0000b\"",
        "\"\\ud800\"",
        "\"\u{fffd}\u{1F600}é\"",
        "\"production\"",
        "\"refs/heads/main\"",
        "\"repo:a/b:environment:production\"",
        "\"self-hosted\"",
        "-62135596800",
        "253402300800",
        "1e18",
    ];
    match rng.below(30) {
        0 => format!("\"{}\"", "x".repeat(10_000)),
        1 => {
            let depth = deep(rng);
            format!("{}{}", "[".repeat(depth), "]".repeat(depth))
        }
        2..=5 => format!("\"{}\"", SECRETS[rng.below(SECRETS.len() as u64) as usize]),
        6..=11 if !corpus_strings.is_empty() => {
            let s = &corpus_strings[rng.below(corpus_strings.len() as u64) as usize];
            serde_json::to_string(s).unwrap_or_default()
        }
        _ => FIXED[rng.below(FIXED.len() as u64) as usize].to_string(),
    }
}

/// A nesting depth, log-uniform up to 2^17 (past serde_json's limit of 128 and the stack's).
fn deep(rng: &mut Rng) -> usize {
    let bits = rng.below(18);
    (1usize << bits) + rng.below(1 << bits) as usize
}

/// splitmix64: small, seedable, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
}

/// Paths (object keys and array indices) to every value in a JSON tree.
fn paths(v: &serde_json::Value, prefix: &mut Vec<PathStep>, out: &mut Vec<Vec<PathStep>>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, child) in m {
                prefix.push(PathStep::Key(k.clone()));
                out.push(prefix.clone());
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        serde_json::Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                prefix.push(PathStep::Index(i));
                out.push(prefix.clone());
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

#[derive(Clone)]
enum PathStep {
    Key(String),
    Index(usize),
}

fn at_path<'a>(
    v: &'a mut serde_json::Value,
    path: &[PathStep],
) -> Option<&'a mut serde_json::Value> {
    let mut cur = v;
    for step in path {
        cur = match step {
            PathStep::Key(k) => cur.as_object_mut()?.get_mut(k)?,
            PathStep::Index(i) => cur.as_array_mut()?.get_mut(*i)?,
        };
    }
    Some(cur)
}

const PLACEHOLDER: &str = "\u{1}FUZZ\u{1}";

/// One mutation of the JSON tree, serialised; `None` when the input is not JSON.
fn mutate_tree(input: &[u8], rng: &mut Rng, strings: &[String]) -> Option<Vec<u8>> {
    let mut v: serde_json::Value = serde_json::from_slice(input).ok()?;
    let mut all = Vec::new();
    paths(&v, &mut Vec::new(), &mut all);
    if all.is_empty() {
        return None;
    }
    let path = all[rng.below(all.len() as u64) as usize].clone();
    let choice = rng.below(6);
    let raw = interesting_value(rng, strings);
    match choice {
        // Remove the field.
        0 => {
            let (last, parent) = path.split_last()?;
            let parent = at_path(&mut v, parent)?;
            match (last, parent) {
                (PathStep::Key(k), serde_json::Value::Object(m)) => {
                    m.remove(k);
                }
                (PathStep::Index(i), serde_json::Value::Array(a)) => {
                    a.remove(*i);
                }
                _ => {}
            }
            serde_json::to_vec(&v).ok()
        }
        // Duplicate the field with another value (text level: serde_json maps cannot).
        1 => {
            let (PathStep::Key(k), parent) = path.split_last()? else {
                return None;
            };
            let parent = at_path(&mut v, parent)?;
            let serde_json::Value::Object(m) = parent else {
                return None;
            };
            let marker = format!("{PLACEHOLDER}dup");
            m.insert(marker.clone(), serde_json::Value::Null);
            let text = serde_json::to_string(&v).ok()?;
            let key = serde_json::to_string(k).ok()?;
            let from = format!("{}:null", serde_json::to_string(&marker).ok()?);
            Some(
                text.replacen(&from, &format!("{key}:{raw}"), 1)
                    .into_bytes(),
            )
        }
        // Wrap the value in deep nesting.
        2 => {
            let target = at_path(&mut v, &path)?;
            let inner = std::mem::take(target);
            *target = serde_json::Value::String(PLACEHOLDER.into());
            let depth = deep(rng);
            let text = serde_json::to_string(&v).ok()?;
            let nested = format!(
                "{}{}{}",
                "[".repeat(depth),
                serde_json::to_string(&inner).ok()?,
                "]".repeat(depth)
            );
            Some(replace_placeholder(&text, &nested))
        }
        // Replace the value with an interesting one.
        _ => {
            let target = at_path(&mut v, &path)?;
            *target = serde_json::Value::String(PLACEHOLDER.into());
            let text = serde_json::to_string(&v).ok()?;
            Some(replace_placeholder(&text, &raw))
        }
    }
}

fn replace_placeholder(text: &str, raw: &str) -> Vec<u8> {
    let quoted = serde_json::to_string(PLACEHOLDER).unwrap_or_default();
    text.replacen(&quoted, raw, 1).into_bytes()
}

/// One mutation of the bytes.
fn mutate_bytes(data: &mut Vec<u8>, rng: &mut Rng, other: &[u8]) {
    const BYTES: &[u8] = b"\0\x01\x7f\x80\xbf\xc0\xff\xfe{}[]\",:\\ \n\r\t0-.eE";
    if data.is_empty() {
        data.push(BYTES[rng.below(BYTES.len() as u64) as usize]);
        return;
    }
    let len = data.len() as u64;
    match rng.below(9) {
        0 => {
            let i = rng.below(len) as usize;
            data[i] ^= 1 << rng.below(8);
        }
        1 => {
            let i = rng.below(len) as usize;
            data[i] = BYTES[rng.below(BYTES.len() as u64) as usize];
        }
        2 => {
            let i = rng.below(len + 1) as usize;
            data.insert(i, BYTES[rng.below(BYTES.len() as u64) as usize]);
        }
        3 => {
            let a = rng.below(len) as usize;
            let b = (a + 1 + rng.below(64) as usize).min(data.len());
            data.drain(a..b);
        }
        4 => data.truncate(rng.below(len) as usize),
        5 if !other.is_empty() => {
            // Splice: our head, the other's tail.
            let a = rng.below(len) as usize;
            let b = rng.below(other.len() as u64) as usize;
            data.truncate(a);
            data.extend_from_slice(&other[b..]);
        }
        6 => {
            // Repeat a range.
            let a = rng.below(len) as usize;
            let b = (a + 1 + rng.below(256) as usize).min(data.len());
            let chunk = data[a..b].to_vec();
            let times = 1 + rng.below(64) as usize;
            for _ in 0..times {
                data.splice(b..b, chunk.iter().copied());
            }
        }
        7 => {
            // Invalid UTF-8 in the middle of a string.
            let i = rng.below(len) as usize;
            data.splice(i..i, [0xe2, 0x82].iter().copied());
        }
        _ => {
            // Two records on one line, or a record and garbage.
            data.push(if rng.chance(2) { b'\n' } else { b' ' });
            data.extend_from_slice(other);
        }
    }
}

/// The seed corpus: one entry per record (a line of a JSON-lines file, or a whole document).
fn corpus(root: &Path) -> Vec<Vec<u8>> {
    let mut files = Vec::new();
    for dir in [root.join("schemas/samples"), root.join("../shared/samples")] {
        collect(&dir, &mut files);
    }
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let Ok(bytes) = std::fs::read(&f) else {
            continue;
        };
        let name = f.to_string_lossy();
        if name.ends_with(".gz") {
            use std::io::Read as _;
            let mut text = Vec::new();
            let mut gz = flate2::read::MultiGzDecoder::new(&bytes[..]);
            if gz.read_to_end(&mut text).is_ok() {
                // The simulated week: a few hundred of its lines are plenty.
                out.extend(text.split(|&b| b == b'\n').take(400).map(<[u8]>::to_vec));
            }
        } else if name.ends_with(".jsonl") {
            out.extend(
                bytes
                    .split(|&b| b == b'\n')
                    .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
                    .map(<[u8]>::to_vec),
            );
        } else if name.ends_with(".json") {
            out.push(bytes);
        }
    }
    out
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Every string value in the corpus (for splicing real values into other fields).
fn corpus_strings(seeds: &[Vec<u8>]) -> Vec<String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::String(s) if s.len() < 200 => out.push(s.clone()),
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            serde_json::Value::Object(m) => m.values().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for s in seeds {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(s) {
            walk(&v, &mut out);
        }
    }
    out.sort();
    out.dedup();
    out
}

/// An empty array or an empty CloudTrail delivery file: no record to decode or reject.
fn holds_no_records(input: &[u8]) -> bool {
    match serde_json::from_slice::<serde_json::Value>(input) {
        Ok(serde_json::Value::Array(a)) => a.is_empty(),
        Ok(serde_json::Value::Object(m)) => m
            .get("Records")
            .and_then(|r| r.as_array())
            .is_some_and(Vec::is_empty),
        _ => false,
    }
}

/// What the harness decodes with: small limits so the fuzzer reaches them.
struct Harness {
    decoders: BTreeMap<&'static str, Decoder>,
    min_time: Timestamp,
    max_time: Timestamp,
    max_record: usize,
}

impl Harness {
    fn new() -> Self {
        let cfg = DecodeConfig {
            max_record_bytes: 256 << 10,
            ..DecodeConfig::default()
        };
        let fp = Fingerprinter::new(b"nhiwatch-fuzz-key-0123456789abcdef").expect("key");
        let env = EnvResolver::new(&EnvironmentsConfig::default());
        let mut decoders = BTreeMap::new();
        for (name, format) in [
            ("github", Format::Github),
            ("gitlab", Format::Gitlab),
            ("vault", Format::Vault),
            ("cloudtrail", Format::Cloudtrail),
            ("kubernetes", Format::Kubernetes),
            ("canonical", Format::Canonical),
            ("auto", Format::Auto),
        ] {
            decoders.insert(name, Decoder::new(&cfg, fp.clone(), env.clone(), format));
        }
        Harness {
            decoders,
            min_time: cfg.min_time,
            // A fixed bound: executions must be reproducible.
            max_time: Timestamp::parse("2030-01-01T00:00:00Z").expect("time"),
            max_record: cfg.max_record_bytes,
        }
    }

    /// Runs one target on one input; `Err` says what went wrong.
    fn run(&self, target: &str, input: &[u8]) -> Result<(), String> {
        if target == "framing" {
            return self.run_framing(input);
        }
        let decoder = &self.decoders[target];
        let mut out = Vec::new();
        let n = decoder.decode_with_bound(input, self.max_time, &mut out);
        self.check(input, n, &out)
    }

    fn check(&self, input: &[u8], n: usize, out: &[Decoded]) -> Result<(), String> {
        // JSON's whitespace: a form feed (which `is_ascii_whitespace` counts) is not blank.
        let blank = input
            .iter()
            .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'));
        if blank && n != 0 {
            return Err(format!("{n} records counted in blank input"));
        }
        if !blank && n == 0 && !holds_no_records(input) {
            return Err(format!("no record counted in {} bytes", input.len()));
        }
        if out.len() < n.min(1) {
            return Err(format!("{n} records gave {} results", out.len()));
        }
        for r in out {
            match r {
                Ok(e) => {
                    if e.time < self.min_time || e.time > self.max_time {
                        return Err(format!("event time {} out of bounds", e.time));
                    }
                    if e.identity.is_empty() {
                        return Err("event without an identity".into());
                    }
                }
                Err(rej) => {
                    if rej.message.is_empty() {
                        return Err(format!("{} reject without a message", rej.reason));
                    }
                    if let Some(s) = SECRETS.iter().find(|s| rej.message.contains(*s)) {
                        return Err(format!(
                            "reject message quotes a planted secret {s}: {} {:?}",
                            rej.reason, rej.message
                        ));
                    }
                    if rej.offset > input.len() || rej.offset + rej.len > input.len() {
                        return Err(format!(
                            "reject span {}+{} outside the {}-byte input",
                            rej.offset,
                            rej.len,
                            input.len()
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn run_framing(&self, input: &[u8]) -> Result<(), String> {
        let decoder = &self.decoders["auto"];
        // A small limit, so lines and documents over it are common.
        let max_record = 4096.min(self.max_record);
        let total_lines = 1 + memchr::memchr_iter(b'\n', input).count() as u64;
        let mut last_line = 0;
        let mut problem = None;
        let mut out = Vec::new();
        let read = frame(input, max_record, |fr| {
            let line = match fr {
                Framed::Record { bytes, line, .. } => {
                    out.clear();
                    let n = decoder.decode_with_bound(bytes, self.max_time, &mut out);
                    if let Err(e) = self.check(bytes, n, &out) {
                        problem = Some(format!("line {line}: {e}"));
                    }
                    line
                }
                Framed::Oversize { line, .. } | Framed::Unparseable { line, .. } => line,
            };
            if line < last_line || line > total_lines {
                problem = Some(format!(
                    "line {line} after line {last_line} (input has {total_lines} lines)"
                ));
            }
            last_line = line;
            if problem.is_some() {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        if let Some(p) = problem {
            return Err(p);
        }
        match read {
            Ok(n) if n != input.len() as u64 => {
                // A document read no further than the limit stops early, by design.
                if n as usize > input.len() {
                    Err(format!("read {n} bytes of a {}-byte input", input.len()))
                } else {
                    Ok(())
                }
            }
            Ok(_) => Ok(()),
            Err(e) => Err(format!("framing failed on in-memory input: {e}")),
        }
    }
}

struct Args {
    execs: u64,
    seed: u64,
    crashes: PathBuf,
    targets: Vec<String>,
}

fn args() -> Args {
    let mut a = Args {
        execs: 100_000,
        seed: 1,
        crashes: PathBuf::from("target/fuzz-crashes"),
        targets: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .unwrap_or_else(|| usage(&format!("{name} needs a value")))
        };
        match arg.as_str() {
            "--execs" => {
                a.execs = value("--execs")
                    .parse()
                    .unwrap_or_else(|_| usage("--execs needs a number"))
            }
            "--seed" => {
                a.seed = value("--seed")
                    .parse()
                    .unwrap_or_else(|_| usage("--seed needs a number"))
            }
            "--crashes" => a.crashes = PathBuf::from(value("--crashes")),
            "-h" | "--help" => usage(""),
            t if TARGETS.contains(&t) => a.targets.push(t.to_string()),
            other => usage(&format!("unknown target or option {other:?}")),
        }
    }
    if a.targets.is_empty() {
        a.targets = TARGETS.iter().map(|t| t.to_string()).collect();
    }
    a
}

fn usage(problem: &str) -> ! {
    if !problem.is_empty() {
        eprintln!("fuzz: {problem}");
    }
    eprintln!(
        "usage: fuzz [--execs N] [--seed S] [--crashes DIR] [TARGET...]\ntargets: {}",
        TARGETS.join(" ")
    );
    std::process::exit(2);
}

fn main() {
    let a = args();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let seeds = corpus(&root);
    assert!(!seeds.is_empty(), "no seed corpus under {}", root.display());
    let strings = corpus_strings(&seeds);
    let harness = Harness::new();

    // Panics are caught per execution and reported with the input; the default hook would
    // print each one.
    let last_panic: Arc<Mutex<Option<String>>> = Arc::default();
    {
        let last_panic = last_panic.clone();
        std::panic::set_hook(Box::new(move |info| {
            let at = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            *last_panic.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(format!("panic{at}: {msg}"));
        }));
    }
    let exec = |target: &str, input: &[u8]| -> Result<(), String> {
        match catch_unwind(AssertUnwindSafe(|| harness.run(target, input))) {
            Ok(r) => r,
            Err(_) => Err(last_panic
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .unwrap_or_else(|| "panic".into())),
        }
    };

    let mut failures = 0u64;
    let mut save = |target: &str, input: &[u8], why: &str| {
        failures += 1;
        let dir = a.crashes.join(target);
        let _ = std::fs::create_dir_all(&dir);
        let name = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(input));
        let path = dir.join(&name);
        let _ = std::fs::write(&path, input);
        let _ = std::fs::write(dir.join(format!("{name}.why")), why);
        eprintln!("fuzz: {target}: {why} (input saved to {})", path.display());
    };

    for target in &a.targets {
        // Regressions first: every input a past run found.
        let mut regressions = Vec::new();
        collect(
            &root.join("tests/fuzz-regressions").join(target),
            &mut regressions,
        );
        regressions.sort();
        for p in &regressions {
            let input = std::fs::read(p).unwrap_or_default();
            if let Err(why) = exec(target, &input) {
                save(
                    target,
                    &input,
                    &format!("regression {}: {why}", p.display()),
                );
            }
        }

        let mut rng = Rng(a.seed ^ xxhash_rust::xxh3::xxh3_64(target.as_bytes()));
        let started = Instant::now();
        let mut bytes = 0u64;
        let mut found = 0u64;
        for i in 0..a.execs {
            let seed = &seeds[rng.below(seeds.len() as u64) as usize];
            let other = &seeds[rng.below(seeds.len() as u64) as usize];
            let mut input = seed.clone();
            if target == "framing" && rng.chance(2) {
                // Several records, as a file holds them: lines or pretty documents.
                for _ in 0..rng.below(4) {
                    input.push(b'\n');
                    input.extend_from_slice(&seeds[rng.below(seeds.len() as u64) as usize]);
                }
            }
            // The unmutated seed now and then, then one to four mutations.
            if i % 64 != 0 {
                for _ in 0..1 + rng.below(4) {
                    let tree = rng.chance(2);
                    if let Some(m) = tree
                        .then(|| mutate_tree(&input, &mut rng, &strings))
                        .flatten()
                    {
                        input = m;
                        continue;
                    }
                    mutate_bytes(&mut input, &mut rng, other);
                }
            }
            bytes += input.len() as u64;
            if let Err(why) = exec(target, &input) {
                found += 1;
                save(target, &input, &why);
                if found >= 20 {
                    eprintln!("fuzz: {target}: 20 failures, moving on");
                    break;
                }
            }
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{target:<11} {:>11} executions  {:>8.1} s  {:>9.0} exec/s  {:>7.1} MB  {} regressions  {} failures",
            a.execs,
            secs,
            a.execs as f64 / secs.max(1e-9),
            bytes as f64 / 1e6,
            regressions.len(),
            found
        );
        let _ = std::io::stdout().flush();
    }
    if failures > 0 {
        eprintln!("fuzz: {failures} failing inputs");
        std::process::exit(1);
    }
}
