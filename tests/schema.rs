//! `schemas/event.schema.json` describes the canonical JSON exactly: every decoded event
//! validates, a fully populated event validates (so the schema covers every field), and
//! events that break the contract do not.

use std::path::Path;

use nhiwatch::event::{Context, Credential, CredentialKind, Event, Runner, RunnerKind};
use nhiwatch::simulate::{Settings, Simulation};
use nhiwatch::time::Timestamp;
use serde_json::{Value, json};

use crate::util;

fn validator() -> jsonschema::Validator {
    let text = std::fs::read_to_string(util::root().join("schemas/event.schema.json"))
        .expect("schema file");
    let schema: Value = serde_json::from_str(&text).expect("schema is JSON");
    jsonschema::validator_for(&schema).expect("schema compiles")
}

fn errors(v: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    v.iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

fn as_json(e: &Event) -> Value {
    let mut buf = Vec::new();
    e.write_json(&mut buf);
    serde_json::from_slice(&buf).expect("output is JSON")
}

fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable dir").flatten() {
        let p = entry.path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn every_decoded_event_satisfies_the_schema() {
    let v = validator();
    let decoder = util::decoder();
    let mut events: Vec<Event> = Vec::new();
    let mut files = Vec::new();
    walk(&util::root().join("schemas/samples"), &mut files);
    if let Some(shared) = util::shared_samples() {
        walk(&shared, &mut files);
    }
    for f in &files {
        if f.extension()
            .is_some_and(|e| e == "json" || e == "jsonl" || e == "log")
        {
            events.extend(
                util::decode_file_with(&decoder, f)
                    .into_iter()
                    .filter_map(Result::ok),
            );
        }
    }
    let sim = Simulation::new(Settings {
        seed: 3,
        identities: 100,
        days: 9,
        ..Settings::default()
    })
    .expect("settings");
    // Every fifth record of two days: all five formats, attacks included.
    for r in sim.records(40_000).into_iter().step_by(5) {
        let mut out = Vec::new();
        decoder.decode(r.as_bytes(), &mut out);
        events.extend(out.into_iter().filter_map(Result::ok));
    }
    assert!(events.len() > 3000, "decoded {}", events.len());
    let mut failures = Vec::new();
    for e in &events {
        let errs = errors(&v, &as_json(e));
        if !errs.is_empty() {
            failures.push(format!("{}: {errs:?}", e.id));
        }
    }
    assert!(
        failures.is_empty(),
        "{} events violate the schema: {:#?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
}

fn full_event() -> Event {
    let mut e = Event::new(
        "id-1",
        Timestamp::from_micros(1_767_610_800_123_456),
        nhiwatch::event::Source::Custom,
        "kind",
        nhiwatch::event::Action::Job,
        "x:y",
    );
    e.outcome = nhiwatch::event::Outcome::Failure;
    e.environment = Some("production".into());
    e.runner = Runner {
        kind: Some(RunnerKind::SelfHosted),
        id: Some("1".into()),
        group: Some("g".into()),
        name: Some("n".into()),
        ip: Some("10.0.0.1".into()),
        agent: Some("a".into()),
    };
    e.scopes = vec!["aud:x".into(), "vault-policy:y".into()];
    e.ttl = Some(60);
    e.credential = Some(Credential {
        kind: CredentialKind::OidcJti,
        fp: "0123456789abcdef0123456789abcdef".into(),
        single_use: true,
    });
    e.context = Context {
        repo: Some("r".into()),
        git_ref: Some("main".into()),
        ref_protected: Some(true),
        sha: Some("9fceb02d0ae598e95dc970b74767f19372d61af8".into()),
        workflow: Some("w".into()),
        actor: Some("a".into()),
        subject: Some("s".into()),
        trigger: Some("push".into()),
        namespace: Some("n".into()),
        account: Some("1".into()),
        region: Some("r".into()),
        operation: Some("o".into()),
        resource: Some("x".into()),
        bound_to: Some("Pod/p".into()),
        error: Some("e".into()),
    };
    e
}

#[test]
fn a_fully_populated_event_satisfies_the_schema() {
    let v = validator();
    let errs = errors(&v, &as_json(&full_event()));
    assert!(errs.is_empty(), "{errs:?}");
}

#[test]
fn the_schema_refuses_what_nhiwatch_never_writes() {
    let v = validator();
    let good = as_json(&full_event());
    type Mutation = Box<dyn Fn(&mut Value)>;
    let mutations: Vec<(&str, Mutation)> = vec![
        (
            "unknown top-level field",
            Box::new(|e| {
                e["colour"] = json!("blue");
            }),
        ),
        (
            "null instead of absent",
            Box::new(|e| {
                e["environment"] = Value::Null;
            }),
        ),
        (
            "unknown action",
            Box::new(|e| {
                e["action"] = json!("steal");
            }),
        ),
        (
            "time with an offset",
            Box::new(|e| {
                e["time"] = json!("2026-01-05T12:00:00+01:00");
            }),
        ),
        (
            "raw access key as fingerprint",
            Box::new(|e| {
                e["credential"]["fp"] = json!("ASIAQNZGKIQY7EXAMPLE");
            }),
        ),
        (
            "single_use false is omitted, not written",
            Box::new(|e| {
                e["credential"]["single_use"] = json!(false);
            }),
        ),
        (
            "duplicate scopes",
            Box::new(|e| {
                e["scopes"] = json!(["aud:x", "aud:x"]);
            }),
        ),
        (
            "unprefixed scope",
            Box::new(|e| {
                e["scopes"] = json!(["admin"]);
            }),
        ),
        (
            "empty runner object",
            Box::new(|e| {
                e["runner"] = json!({});
            }),
        ),
        (
            "unknown context field",
            Box::new(|e| {
                e["context"]["token"] = json!("x");
            }),
        ),
        (
            "negative ttl",
            Box::new(|e| {
                e["ttl"] = json!(-1);
            }),
        ),
        (
            "missing identity",
            Box::new(|e| {
                e.as_object_mut().map(|o| o.remove("identity"));
            }),
        ),
    ];
    for (what, mutate) in mutations {
        let mut bad = good.clone();
        mutate(&mut bad);
        assert!(!errors(&v, &bad).is_empty(), "schema accepted: {what}");
    }
}

fn alert_validator() -> jsonschema::Validator {
    let text = std::fs::read_to_string(util::root().join("schemas/alert.schema.json"))
        .expect("alert schema file");
    let schema: Value = serde_json::from_str(&text).expect("schema is JSON");
    jsonschema::validator_for(&schema).expect("schema compiles")
}

/// Every alert of every detector on a simulated organisation (all attack variants injected)
/// satisfies `schemas/alert.schema.json`, and the schema rejects alerts that break it.
#[test]
fn every_alert_satisfies_the_alert_schema() {
    let v = alert_validator();
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = dir.path().join("sim.jsonl").display().to_string();
    let o = util::run(
        &[
            "simulate",
            "--seed",
            "9",
            "--identities",
            "160",
            "--days",
            "18",
            "--attacks",
            "48",
            "-o",
            &sim,
        ],
        None,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The hygiene findings, on an organisation with the hygiene scenarios.
    let hyg = dir.path().join("hygiene.jsonl").display().to_string();
    std::fs::write(&hyg, util::hygiene_org(9)).expect("write");
    let mut alerts: Vec<Value> = Vec::new();
    for (detectors, input) in [
        (
            "off_hours_mint,new_runner,scope_escalation,cross_env_reuse",
            &sim,
        ),
        ("first_seen", &sim),
        (
            "dormant_reactivated,long_lived_credential,human_bound_credential,new_trust,unapproved_ref",
            &hyg,
        ),
    ] {
        let o = util::run(
            &[
                "--config",
                "schemas/samples/simulated/nhiwatch.toml",
                "replay",
                "--progress",
                "never",
                "--detectors",
                detectors,
                input,
            ],
            None,
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        alerts.extend(
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).expect("alert is JSON")),
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    for a in &alerts {
        let errs = errors(&v, a);
        assert!(errs.is_empty(), "{errs:?}\n{a}");
        let ev = &a["evidence"];
        let shape = match a["detector"].as_str() {
            Some("cross_env_reuse") if ev.get("presentations").is_some() => "reuse: replay",
            Some("cross_env_reuse") if ev.get("ref").is_some() => "reuse: unprotected",
            Some("cross_env_reuse") if ev.get("known_environments").is_some() => "reuse: first",
            Some("cross_env_reuse") if ev.get("used_from").is_some() => "reuse: network",
            Some("cross_env_reuse") => "reuse: environment",
            Some("scope_escalation") if ev.get("ttl_seconds").is_some() => "scope: ttl",
            Some("scope_escalation") => "scope: rank",
            Some("long_lived_credential") if ev.get("ttl_seconds").is_some() => "standing: ttl",
            Some("long_lived_credential") => "standing: key",
            Some("new_trust") if ev.get("actor").is_some() => "trust: change",
            Some("new_trust") => "trust: role",
            Some(d) => d,
            None => "?",
        };
        seen.insert(shape.to_string());
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        [
            "dormant_reactivated",
            "first_seen",
            "human_bound_credential",
            "new_runner",
            "off_hours_mint",
            "reuse: environment",
            "reuse: first",
            "reuse: network",
            "reuse: replay",
            "reuse: unprotected",
            "scope: rank",
            "scope: ttl",
            "standing: key",
            "standing: ttl",
            "trust: change",
            "trust: role",
            "unapproved_ref"
        ],
        "every shape of alert is covered"
    );

    let good = alerts[0].clone();
    for (what, bad) in [
        ("no summary", {
            let mut b = good.clone();
            b.as_object_mut().map(|o| o.remove("summary"));
            b
        }),
        ("unknown severity", {
            let mut b = good.clone();
            b["severity"] = json!("urgent");
            b
        }),
        ("unknown field", {
            let mut b = good.clone();
            b["token"] = json!("s.abc");
            b
        }),
        ("offset time", {
            let mut b = good.clone();
            b["event_time"] = json!("2026-03-30T11:00:00+02:00");
            b
        }),
        ("raw credential", {
            let mut b = good.clone();
            b["credential"] = json!("ASIAEXAMPLEKEY");
            b
        }),
        ("no baseline facts", {
            let mut b = good.clone();
            b["evidence"] = json!({});
            b
        }),
    ] {
        assert!(!errors(&v, &bad).is_empty(), "{what} must not validate");
    }
}
