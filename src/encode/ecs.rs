//! Elastic Common Schema document (ECS 8.11 field set). The alert is an `event.kind: alert`
//! in the `iam` category; the detector is the rule; the identity is `user.name` (ECS has no
//! separate field for machine identities); what ECS has no field for is under `nhiwatch.*`,
//! the custom-field namespace ECS recommends.

use serde_json::{Map, Value, json};

use super::{VERSION, runner_host, runner_ip, runner_label};
use crate::alert::Alert;
use crate::alert::Severity;

/// The ECS version the document follows.
pub const ECS_VERSION: &str = "8.11.0";

/// ECS `event.severity` (numeric, source-defined) and `event.risk_score` (0–100).
fn severity_numbers(s: Severity) -> (u8, f64) {
    match s {
        Severity::Info => (1, 10.0),
        Severity::Low => (2, 21.0),
        Severity::Medium => (3, 47.0),
        Severity::High => (4, 73.0),
        Severity::Critical => (5, 99.0),
    }
}

/// The ECS document of an alert.
pub(super) fn document(a: &Alert, host: &str) -> Value {
    let (severity, risk) = severity_numbers(a.severity);
    let mut v = json!({
        "@timestamp": a.event_time.to_rfc3339(),
        "message": a.summary,
        "ecs": { "version": ECS_VERSION },
        "event": {
            "kind": "alert",
            "category": ["iam"],
            "type": ["info"],
            "id": a.id,
            "action": a.action.as_str(),
            "provider": a.source.as_str(),
            "dataset": "nhiwatch.alert",
            "module": "nhiwatch",
            "severity": severity,
            "risk_score": risk,
            "reason": a.reason,
        },
        "rule": {
            "id": a.detector,
            "name": a.detector,
            "ruleset": "nhiwatch",
            "category": "non-human identity anomaly",
        },
        "user": { "name": a.identity, "id": a.identity },
        "observer": {
            "vendor": "nhiwatch",
            "product": "nhiwatch",
            "version": VERSION,
            "type": "ids",
            "hostname": host,
        },
        "related": { "user": [a.identity] },
        "nhiwatch": {
            "severity": a.severity.as_str(),
            "event_id": a.event_id,
            "evidence": Value::Object(a.evidence.clone()),
        },
    });
    let mut labels = Map::new();
    if let Some(env) = &a.environment {
        labels.insert("environment".into(), env.as_str().into());
        v["nhiwatch"]["environment"] = env.as_str().into();
    }
    if let Some(c) = &a.credential {
        v["nhiwatch"]["credential"] = c.as_str().into();
    }
    if let Some(r) = runner_label(a) {
        labels.insert("runner".into(), r.clone().into());
        v["nhiwatch"]["runner"] = serde_json::to_value(&a.runner).unwrap_or(Value::Null);
    }
    if !labels.is_empty() {
        v["labels"] = Value::Object(labels);
    }
    if let Some(ip) = runner_ip(a) {
        v["source"] = json!({ "ip": ip.to_string() });
        v["related"]["ip"] = json!([ip.to_string()]);
    } else if let Some(h) = runner_host(a) {
        v["source"] = json!({ "address": h, "domain": h });
        v["related"]["hosts"] = json!([h]);
    }
    if let Some(agent) = &a.runner.agent {
        v["user_agent"] = json!({ "original": agent });
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_fields() {
        let a = crate::encode::tests::sample();
        let v = document(&a, "det-1");
        assert_eq!(v["@timestamp"], "2026-03-30T11:26:04.250Z");
        assert_eq!(v["event"]["kind"], "alert");
        assert_eq!(v["event"]["severity"], 5);
        assert_eq!(v["source"]["ip"], "10.0.2.124");
        assert_eq!(v["labels"]["environment"], "production");
        assert_eq!(v["observer"]["hostname"], "det-1");
    }
}
