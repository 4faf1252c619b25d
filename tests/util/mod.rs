//! Shared test helpers: fixtures, a decoder with a fixed key, running the binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use nhiwatch::config::{DecodeConfig, EnvironmentsConfig};
use nhiwatch::decode::{Decoded, Decoder, Format, Reject};
use nhiwatch::environment::EnvResolver;
use nhiwatch::event::{CredentialKind, Event};
use nhiwatch::fingerprint::Fingerprinter;

/// The fingerprint key every test uses (also passed to the binary).
pub const KEY: &str = "nhiwatch-test-key-0123456789";

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fixture under `schemas/samples/`.
pub fn fixture(rel: &str) -> PathBuf {
    root().join("schemas/samples").join(rel)
}

/// The fixture directories of the input formats, one per decoder.
pub const FORMAT_DIRS: [&str; 6] = [
    "github",
    "gitlab",
    "vault",
    "cloudtrail",
    "kubernetes",
    "canonical",
];

/// The files of a fixture directory, sorted.
pub fn fixture_dir(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixture(dir))
        .expect("fixture dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    files
}

/// `../shared/samples`, or `None` (with a message) when this checkout has no `../shared`.
pub fn shared_samples() -> Option<PathBuf> {
    let p = root().join("../shared/samples");
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!(
            "skipping: {} is absent (a clone outside the workplace)",
            p.display()
        );
        None
    }
}

/// A decoder with the test key and optional environment mappings.
pub fn decoder_with(env: EnvironmentsConfig, format: Format) -> Decoder {
    Decoder::new(
        &DecodeConfig::default(),
        Fingerprinter::new(KEY.as_bytes()).expect("test key"),
        EnvResolver::new(&env),
        format,
    )
}

/// A decoder with the test key and no mappings.
pub fn decoder() -> Decoder {
    decoder_with(EnvironmentsConfig::default(), Format::Auto)
}

/// The fingerprint nhiwatch must produce for a raw id under the test key.
pub fn fp(kind: CredentialKind, raw: &str) -> String {
    Fingerprinter::new(KEY.as_bytes())
        .expect("test key")
        .fingerprint(kind, raw)
}

/// Decodes every framed record of a fixture file.
pub fn decode_file_with(decoder: &Decoder, path: &Path) -> Vec<Decoded> {
    let mut out = Vec::new();
    for (bytes, _line) in
        nhiwatch::source::file::read_records(path, 1 << 30).expect("readable fixture")
    {
        decoder.decode(&bytes, &mut out);
    }
    out
}

/// Decodes a fixture and returns its events, failing on any reject.
pub fn events(rel: &str) -> Vec<Event> {
    decode_file_with(&decoder(), &fixture(rel))
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("{rel}: unexpected reject: {e}")))
        .collect()
}

/// Decodes a fixture that must yield exactly one event.
pub fn one(rel: &str) -> Event {
    let mut ev = events(rel);
    assert_eq!(ev.len(), 1, "{rel}: expected one event, got {ev:#?}");
    ev.remove(0)
}

/// Decodes a string, returning all results.
pub fn decode_str(text: &str) -> Vec<Decoded> {
    let mut out = Vec::new();
    decoder().decode(text.as_bytes(), &mut out);
    out
}

/// Decodes a string that must be rejected once; returns the reject.
pub fn reject(text: &str) -> Reject {
    let out = decode_str(text);
    assert_eq!(
        out.len(),
        1,
        "expected one result for {text:?}, got {out:?}"
    );
    match out.into_iter().next() {
        Some(Err(r)) => r,
        other => panic!("expected a reject for {text:?}, got {other:?}"),
    }
}

/// The `nhiwatch` binary built for this test run.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nhiwatch"));
    c.env("NHIWATCH_FINGERPRINT_KEY", KEY)
        .env_remove("NHIWATCH_CONFIG")
        .env_remove("RUST_LOG")
        .current_dir(root());
    c
}

/// Runs the binary with arguments and optional stdin.
pub fn run(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut c = bin();
    c.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn nhiwatch");
    let Some(input) = stdin else {
        return child.wait_with_output().expect("nhiwatch output");
    };
    // Stdin is written beside the reading of stdout: a process that prints while it reads
    // (replay) fills the stdout pipe and stops reading, and writing all of the input first
    // would wait for it forever.
    let mut si = child.stdin.take().expect("stdin");
    std::thread::scope(|s| {
        s.spawn(move || {
            use std::io::Write;
            // A process that exits before reading everything closes the pipe: its status
            // and output tell the test what happened.
            let _ = si.write_all(input);
        });
        child.wait_with_output().expect("nhiwatch output")
    })
}

/// Parses JSON lines of output into events.
pub fn parse_events(stdout: &[u8]) -> Vec<Event> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad output line {l}: {e}")))
        .collect()
}
pub mod flood;
pub mod investigations;
pub mod kafka;
pub mod ocsf;
pub mod prom;
pub mod receiver;

/// The `id` of every alert in JSON-lines output.
pub fn parse_alert_ids(stdout: &[u8]) -> std::collections::BTreeSet<String> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad alert line {l}: {e}"));
            v["id"].as_str().expect("alert id").to_string()
        })
        .collect()
}

/// A small organisation with the hygiene scenarios (`simulate --identities 40 --days 42
/// --hygiene`, the least that has every finding's scenarios), its records as JSON lines.
pub fn hygiene_org(seed: u32) -> Vec<u8> {
    let seed = seed.to_string();
    let out = run(
        &[
            "simulate",
            "--identities",
            "40",
            "--days",
            "42",
            "--hygiene",
            "--seed",
            &seed,
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
