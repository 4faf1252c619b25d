//! OCSF 1.8 Detection Finding (class 2004, category 2 Findings), checked attribute by
//! attribute against the published schema by `tests/encode.rs`.
//!
//! Mapping: the alert id is `finding_info.uid` and `metadata.uid`; the detector is the
//! analytic (type Behavioral: baselines, not signatures); the identity is the actor's user
//! (type Service: a machine identity); the environment and the credential fingerprint are
//! affected resources; the baseline facts are the evidence's `data`; fields OCSF has no place
//! for (native record id, source system, action) stay under `unmapped.nhiwatch`.

use serde_json::{Map, Value, json};

use super::{VERSION, runner_host, runner_ip, runner_label, severity_rank};
use crate::alert::Alert;
use crate::alert::Severity;

const CLASS_UID: u32 = 2004;
const CATEGORY_UID: u32 = 2;
/// Activity 1: Create.
const ACTIVITY_CREATE: u32 = 1;
/// Status 1: New (nobody has triaged it yet).
const STATUS_NEW: u32 = 1;
/// Analytic type 2: Behavioral.
const ANALYTIC_BEHAVIORAL: u32 = 2;
/// User type 4: Service.
const USER_SERVICE: u32 = 4;

fn severity_caption(s: Severity) -> &'static str {
    match s {
        Severity::Info => "Informational",
        Severity::Low => "Low",
        Severity::Medium => "Medium",
        Severity::High => "High",
        Severity::Critical => "Critical",
    }
}

/// The Detection Finding of an alert.
pub(super) fn finding(a: &Alert) -> Value {
    let time = a.event_time.as_micros() / 1000;
    let user = json!({
        "name": a.identity,
        "uid": a.identity,
        "type_id": USER_SERVICE,
        "type": "Service",
    });
    let mut endpoint = Map::new();
    if let Some(ip) = runner_ip(a) {
        endpoint.insert("ip".into(), ip.to_string().into());
    }
    if let Some(h) = runner_host(a) {
        endpoint.insert("hostname".into(), h.into());
    }
    if let Some(r) = runner_label(a) {
        endpoint.insert("uid".into(), r.into());
    }
    if let Some(n) = &a.runner.name {
        endpoint.insert("name".into(), n.as_str().into());
    }
    let mut evidence = Map::new();
    evidence.insert("actor".into(), json!({ "user": user }));
    if !endpoint.is_empty() {
        evidence.insert("src_endpoint".into(), Value::Object(endpoint));
    }
    evidence.insert("data".into(), Value::Object(a.evidence.clone()));
    evidence.insert("name".into(), "baseline".into());
    evidence.insert("uid".into(), a.event_id.as_str().into());

    let mut resources = Vec::new();
    if let Some(env) = &a.environment {
        resources.push(json!({ "type": "environment", "name": env, "uid": env }));
    }
    if let Some(c) = &a.credential {
        resources.push(json!({ "type": "credential", "uid": c }));
    }

    let mut actor = json!({ "user": user });
    if let Some(agent) = &a.runner.agent {
        actor["app_name"] = agent.as_str().into();
    }
    let mut v = json!({
        "class_uid": CLASS_UID,
        "class_name": "Detection Finding",
        "category_uid": CATEGORY_UID,
        "category_name": "Findings",
        "activity_id": ACTIVITY_CREATE,
        "activity_name": "Create",
        "type_uid": CLASS_UID * 100 + ACTIVITY_CREATE,
        "type_name": "Detection Finding: Create",
        "time": time,
        "start_time": time,
        "end_time": time,
        "severity_id": severity_rank(a.severity),
        "severity": severity_caption(a.severity),
        "status_id": STATUS_NEW,
        "status": "New",
        "is_alert": true,
        "message": a.summary,
        "metadata": {
            "version": "1.8.0",
            "uid": a.id,
            "event_code": a.detector,
            "log_name": "alerts",
            "original_time": a.event_time.to_rfc3339(),
            "product": {
                "name": "nhiwatch",
                "vendor_name": "nhiwatch",
                "version": VERSION,
            },
        },
        "finding_info": {
            "uid": a.id,
            "title": a.reason,
            "desc": a.summary,
            "analytic": {
                "uid": a.detector,
                "name": a.detector,
                "type_id": ANALYTIC_BEHAVIORAL,
                "type": "Behavioral",
            },
            "data_sources": [a.source.as_str()],
            "types": ["non-human identity anomaly"],
            "first_seen_time": time,
            "last_seen_time": time,
        },
        "actor": actor,
        "evidences": [Value::Object(evidence)],
        "unmapped": {
            "nhiwatch": {
                "detector": a.detector,
                "event_id": a.event_id,
                "source": a.source.as_str(),
                "action": a.action.as_str(),
            }
        },
    });
    if !resources.is_empty() {
        v["resources"] = Value::Array(resources);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_and_severity() {
        let a = crate::encode::tests::sample();
        let v = finding(&a);
        assert_eq!(v["class_uid"], 2004);
        assert_eq!(v["type_uid"], 200401);
        assert_eq!(v["severity_id"], 5);
        assert_eq!(v["time"], 1_774_869_964_250_i64);
        assert_eq!(v["finding_info"]["uid"], a.id.as_str());
        assert_eq!(v["resources"][0]["name"], "production");
        assert_eq!(v["evidences"][0]["src_endpoint"]["ip"], "10.0.2.124");
    }
}
