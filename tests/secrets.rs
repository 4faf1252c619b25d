//! No raw token, session token, client token or credential id ever appears in anything a replay
//! writes: events, the summary, logs (at debug level), or the rejects file, even for broken
//! records that carry secrets.

use crate::util::{self, run};

/// Secret values present in the fixtures (tokens, session tokens, client tokens, accessors,
/// access key ids, Kubernetes credential ids). OIDC `jti`s are not here: they are the records'
/// native ids and appear as the event `id` (a token id, not a bearer secret).
const SECRETS: &[&str] = &[
    // CloudTrail session tokens and access key ids.
    "IQoJb3JpZ2luX2VjEXAMPLESESSIONTOKENdoNotLeakMe",
    "FwoGZXIvYXdzEXAMPLECHAINEDSESSIONTOKENdoNotLeakMeEither",
    "IQoJb3JpZ2luX2VjEJENKINSSESSIONTOKENdoNotLeak",
    "SAMLSESSIONTOKENdoNotLeak",
    "LAMBDASESSIONTOKENdoNotLeak",
    "ASIAQNZGKIQY7EXAMPLE",
    "ASIAXCHAINEDKEY00001",
    "AKIAIOSFODNN7EXAMPLE",
    "ASIAJENKINSSESSION01",
    "ASIASAMLSESSION00001",
    "ASIALAMBDASESSION001",
    // Vault: raw token and accessor (log_raw), HMAC'd client tokens and accessors as written.
    "hvs.CAESIPq3YxnzRAWLOGSECRETnHf1GxbP8pUu2hVqQ9xJdK4nGh4KHGh2cy5yYXdMb2dUb2tlbjEyMzQ1Njc4OTA",
    "rawAccessorX7kP2mQ9vL4nR8tZ",
    "4b6d8f0a2c4e6a8c0e2a4c6e8a0c2e4a6c8e0a2c4e6a8c0e2a4c6e8a0c2e4a6c",
    "9c1e3a5c7e9a1c3e5a7c9e1a3c5e7a9c1e3a5c7e9a1c3e5a7c9e1a3c5e7a9c1e",
    "1a3c5e7a9c1e3a5c7e9a1c3e5a7c9e1a3c5e7a9c1e3a5c7e9a1c3e5a7c9e1a3c",
    "eyJhbGciOiJSUzI1NiIsImtpZCI6IkRVMmRfTHl4In0",
    // Kubernetes: an issued token (RequestResponse level) and credential ids.
    "eyJhbGciOiJSUzI1NiIsImtpZCI6Ik5VVlhSdkRfIn0",
    "UkVBTFNJR05BVFVSRWRvTm90TGVhaw",
    "8d4b2f6e-1c3a-4e5b-9f7d-0a2c4e6b8d1f",
    "2a3b4c5d-6e7f-4809-9a1b-2c3d4e5f6a7b",
    "1f2e3d4c-5b6a-4978-8a9b-0c1d2e3f4a5b",
];

fn fixture_files() -> Vec<String> {
    util::FORMAT_DIRS
        .iter()
        .chain(&["mixed"])
        .flat_map(|dir| util::fixture_dir(dir))
        .map(|p| p.display().to_string())
        .collect()
}

/// Broken copies of secret-bearing records: each is cut off just after its secrets, so it
/// cannot be parsed and goes to the rejects file.
fn broken_records() -> String {
    let mut lines = Vec::new();
    for rel in [
        "cloudtrail/assume-role-with-web-identity.json",
        "cloudtrail/assume-role-chained.json",
        "cloudtrail/get-session-token.json",
        "vault/raw-log.jsonl",
        "vault/kv-read.jsonl",
        "kubernetes/tokenrequest-kubelet.json",
        "kubernetes/serviceaccount-request.json",
    ] {
        let text = std::fs::read_to_string(util::fixture(rel)).expect("fixture");
        for doc in text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect::<Vec<_>>()
            .iter()
            .take(1)
        {
            // Compact pretty documents onto one line first.
            let compact = if doc.trim() == "{" {
                let v: serde_json::Value = serde_json::from_str(&text).expect("json");
                serde_json::to_string(&v).expect("json")
            } else {
                doc.clone()
            };
            lines.push(compact[..compact.len() - 12].to_string());
        }
    }
    // A record whose secret sits in a field of the wrong type, to exercise error messages.
    lines.push(r#"{"eventVersion":"1.08","eventID":"e","eventTime":"2026-01-05T00:00:00Z","eventName":"AssumeRole","eventSource":"sts.amazonaws.com","requestParameters":{"durationSeconds":"ASIAQNZGKIQY7EXAMPLE"}}"#.to_string());
    lines.join("\n") + "\n"
}

#[test]
fn no_secret_reaches_any_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broken = dir.path().join("broken.jsonl");
    std::fs::write(&broken, broken_records()).expect("write");
    let rejects = dir.path().join("rejects.jsonl");
    let state = dir.path().join("state");
    // The inputs really hold the secrets (the test would otherwise prove nothing).
    let mut inputs = String::new();
    for f in fixture_files() {
        inputs.push_str(&std::fs::read_to_string(f).expect("fixture"));
    }
    for secret in SECRETS {
        assert!(inputs.contains(secret), "{secret} is not in the fixtures");
    }
    for emit in ["events", "alerts"] {
        let mut args = vec![
            "replay".to_string(),
            "--emit".into(),
            emit.into(),
            "--rejects".into(),
            rejects.display().to_string(),
        ];
        if emit == "alerts" {
            args.extend(["--state".into(), state.display().to_string()]);
        }
        args.extend(fixture_files());
        args.push(broken.display().to_string());
        // Twice, so tokens are presented again and alert, with their evidence.
        args.extend(fixture_files());
        let o = util::bin()
            .args(&args)
            .env("RUST_LOG", "debug")
            .output()
            .expect("run");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let stdout = String::from_utf8_lossy(&o.stdout);
        let stderr = String::from_utf8_lossy(&o.stderr);
        let rejected = std::fs::read_to_string(&rejects).expect("rejects file");
        let expected = if emit == "events" { 40 } else { 3 };
        assert!(
            stdout.lines().count() >= expected,
            "{emit} were written:\n{stderr}"
        );
        assert!(
            rejected.lines().count() >= 8,
            "broken records were rejected: {rejected}"
        );
        assert!(rejected.contains("[redacted]"), "{rejected}");
        // The saved baselines and engine state hold no secret either.
        let snapshot = std::fs::read(state.join("baselines.snapshot")).unwrap_or_default();
        let snapshot = String::from_utf8_lossy(&snapshot);
        for secret in SECRETS {
            for (what, text) in [
                (emit, &*stdout),
                ("stderr", &*stderr),
                ("rejects file", &*rejected),
                ("snapshot", &*snapshot),
            ] {
                assert!(!text.contains(secret), "{secret} leaked into the {what}");
            }
        }
    }
}

/// Tokens of other platforms, a private key and a URL password, as a compromised pipeline
/// might write them into the claims it mints with or into records nhiwatch rejects.
const PLANTED: &[&str] = &[
    "ghp_PLANTEDgithubPAT0123456789abcdefghij",
    "github_pat_11PLANTED0123456789_abcdefghijklmnopqrstuvwxyz",
    "glpat-PLANTEDgitlab0123456",
    "xoxb-12345678-PLANTEDslack",
    "PLANTEDbearerValue0123456789",
    "MIIEvQIBADANPLANTEDprivateKEY",
    "PLANTEDurlPassword",
];

/// A numeric password (masked like a string one).
const PLANTED_NUMBER: u64 = 314_159_265_358;

#[test]
fn planted_platform_tokens_reach_neither_rejects_nor_logs_nor_the_lake() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("planted.jsonl");
    let rejects = dir.path().join("rejects.jsonl");
    let lake = dir.path().join("lake");
    let p = PLANTED;
    // A valid GitHub token's claims carrying secrets in fields nhiwatch does not read (kept
    // in the lake's `record` column), …
    let claims: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(util::fixture("github/environment-deploy.json")).expect("fixture"),
    )
    .expect("json");
    let mut good = claims.clone();
    good["note"] = format!("{} {} {}", p[0], p[1], p[2]).into();
    good["headers"] = format!("Authorization: Bearer {}", p[4]).into();
    good["clone_url"] = format!("https://ci:{}@git.example.com/x.git", p[6]).into();
    good["Deploy_Password"] = PLANTED_NUMBER.into();
    good["nested"] = format!(r#"{{"slack_token":"{}"}}"#, p[3]).into();
    // … a record of the wrong shape whose secret lands in the reject's message, …
    let mut wrong = claims.clone();
    wrong["iat"] = p[0].into();
    // … and a broken record longer than the rejects file keeps, with a private key across
    // the cut.
    let pad = "x".repeat((64 << 10) - 40);
    let long = format!(
        r#"{{"jti":"j","pad":"{pad}","key":"-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----","#,
        p[5]
    );
    let text = format!(
        "{}\n{}\n{long}\n",
        serde_json::to_string(&good).expect("json"),
        serde_json::to_string(&wrong).expect("json")
    );
    let number = PLANTED_NUMBER.to_string();
    for secret in p.iter().chain([&number.as_str()]) {
        assert!(text.contains(secret), "{secret} is not planted");
    }
    std::fs::write(&input, &text).expect("input");
    let o = util::bin()
        .args([
            "replay",
            "--format",
            "github",
            "--emit",
            "events",
            "--rejects",
            rejects.to_str().expect("utf-8"),
            "--lake",
            lake.to_str().expect("utf-8"),
            input.to_str().expect("utf-8"),
        ])
        .env("RUST_LOG", "debug")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let rejected = std::fs::read_to_string(&rejects).expect("rejects file");
    assert_eq!(rejected.lines().count(), 2, "{rejected}");
    // The rejects file and every file of the lake are the owner's alone.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fn files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(dir).expect("dir").flatten() {
                let p = e.path();
                if p.is_dir() {
                    files(&p, out);
                } else {
                    out.push(p);
                }
            }
        }
        let mut all = vec![rejects.clone()];
        files(&lake, &mut all);
        assert!(all.len() >= 2, "{all:?}");
        for f in &all {
            let mode = std::fs::metadata(f).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", f.display());
        }
    }
    assert!(rejected.contains("\"record_truncated\":true"), "{rejected}");
    let q = util::run(
        &[
            "query",
            "--lake",
            lake.to_str().expect("utf-8"),
            "--format",
            "csv",
            "SELECT record FROM events",
        ],
        None,
    );
    let records = String::from_utf8_lossy(&q.stdout);
    assert!(
        records.contains("octo-org/octo-repo"),
        "{records}{}",
        String::from_utf8_lossy(&q.stderr)
    );
    for secret in p.iter().chain([&number.as_str()]) {
        for (what, out) in [
            ("stdout", String::from_utf8_lossy(&o.stdout)),
            ("stderr", stderr.clone()),
            ("rejects file", rejected.clone().into()),
            ("lake", records.clone()),
        ] {
            assert!(
                !out.contains(secret),
                "{secret} leaked into the {what}:\n{out}"
            );
        }
    }
}

#[test]
fn quickstart_output_holds_fingerprints_not_ids() {
    let o = run(
        &[
            "replay",
            "--emit",
            "events",
            "schemas/samples/mixed/quickstart.jsonl",
        ],
        None,
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains(&util::fp(
        nhiwatch::event::CredentialKind::AwsAccessKey,
        "ASIAQNZGKIQY7EXAMPLE"
    )));
    assert!(!out.contains("ASIAQNZGKIQY7EXAMPLE"));
}
