//! Alerts: one JSON object per alert (`schemas/alert.schema.json`) that explains itself: what
//! happened in one sentence, the native id of the record to pivot on, and the baseline facts
//! behind the judgement.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::event::{Action, Event, Runner, Source};
use crate::time::Timestamp;

/// How bad an alert is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// For the record.
    Info,
    /// Worth a look.
    Low,
    /// Investigate.
    Medium,
    /// Investigate now.
    High,
    /// Likely compromise of something critical.
    Critical,
}

impl Severity {
    /// Every level, lowest first.
    pub const ALL: [Severity; 5] = [
        Severity::Info,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    /// The snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// One level up (critical stays critical).
    pub fn raised(self) -> Severity {
        match self {
            Severity::Info => Severity::Low,
            Severity::Low => Severity::Medium,
            Severity::Medium => Severity::High,
            Severity::High | Severity::Critical => Severity::Critical,
        }
    }
}

/// One alert.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alert {
    /// Stable id: a hash of the detector, the identity and the triggering record, so a record
    /// processed twice yields the same id and downstream can deduplicate.
    pub id: String,
    /// The detector that fired.
    pub detector: String,
    /// How bad it is.
    pub severity: Severity,
    /// The identity.
    pub identity: String,
    /// Native id of the triggering record (JWT `jti`, Vault `request.id`, CloudTrail
    /// `eventID`, Kubernetes `auditID`).
    pub event_id: String,
    /// Time of the triggering record.
    pub event_time: Timestamp,
    /// The system that wrote the record.
    pub source: Source,
    /// What the record did.
    pub action: Action,
    /// The environment of the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// One sentence an analyst reads.
    pub summary: String,
    /// The reason, short (what was new or improbable).
    pub reason: String,
    /// The baseline facts behind the judgement.
    pub evidence: serde_json::Map<String, serde_json::Value>,
    /// The credential involved (fingerprint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    /// Where the record came from.
    #[serde(default, skip_serializing_if = "Runner::is_empty")]
    pub runner: Runner,
}

impl Alert {
    /// The stable id of an alert of `detector` on `event`.
    pub fn id_for(detector: &str, event: &Event) -> String {
        let mut h = Sha256::new();
        for part in [
            detector,
            &event.identity,
            &event.id,
            event.action.as_str(),
            &event.kind,
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        let digest = h.finalize();
        let mut id = String::with_capacity(34);
        id.push_str("a-");
        for b in &digest[..16] {
            id.push_str(&format!("{b:02x}"));
        }
        id
    }

    /// An alert on `event`.
    pub fn new(
        detector: &str,
        severity: Severity,
        event: &Event,
        reason: String,
        summary: String,
        evidence: serde_json::Map<String, serde_json::Value>,
    ) -> Alert {
        Alert {
            id: Alert::id_for(detector, event),
            detector: detector.to_string(),
            severity,
            identity: event.identity.clone(),
            event_id: event.id.clone(),
            event_time: event.time,
            source: event.source,
            action: event.action,
            environment: event.environment.clone(),
            summary,
            reason,
            evidence,
            credential: event.credential.as_ref().map(|c| c.fp.clone()),
            runner: event.runner.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;

    #[test]
    fn ids_are_stable_and_distinguish_detector_and_record() {
        let t = Timestamp::from_micros(1_767_610_800_000_000);
        let e = Event::new("r-1", t, Source::Vault, "request", Action::Use, "vault:x");
        let a = Alert::id_for("new_runner", &e);
        assert_eq!(a, Alert::id_for("new_runner", &e.clone()));
        assert!(a.starts_with("a-") && a.len() == 34, "{a}");
        assert_ne!(a, Alert::id_for("cross_env_reuse", &e));
        let mut other = e.clone();
        other.id = "r-2".into();
        assert_ne!(a, Alert::id_for("new_runner", &other));
        let mut mint = e;
        mint.action = Action::Mint;
        assert_ne!(
            a,
            Alert::id_for("new_runner", &mint),
            "a request and its response share ids"
        );
    }
}
