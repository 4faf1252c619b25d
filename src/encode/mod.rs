//! Alert encodings for SIEMs: the nhiwatch alert JSON, OCSF 1.8 Detection Finding, Elastic
//! Common Schema, ArcSight CEF and the Splunk HEC event envelope. An [`Encoder`] turns one
//! [`Alert`] into one record (no framing): sinks add newlines, syslog headers or batches.
//!
//! Every encoding is a pure function of the alert and the encoder's settings (host name,
//! HEC metadata), so a replay encodes the same alerts to the same bytes.

mod cef;
mod ecs;
mod hec;
mod ocsf;

use serde::{Deserialize, Serialize};

use crate::alert::Alert;
use crate::alert::Severity;

pub use cef::{escape_extension, escape_header};

/// The product version written into encodings that carry one.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How an alert is written.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// The nhiwatch alert (`schemas/alert.schema.json`).
    #[default]
    Json,
    /// OCSF 1.8 Detection Finding (class 2004).
    Ocsf,
    /// Elastic Common Schema document.
    Ecs,
    /// ArcSight Common Event Format (one line).
    Cef,
    /// Splunk HTTP Event Collector event envelope around the nhiwatch alert.
    Hec,
}

impl Encoding {
    /// Every encoding.
    pub const ALL: [Encoding; 5] = [
        Encoding::Json,
        Encoding::Ocsf,
        Encoding::Ecs,
        Encoding::Cef,
        Encoding::Hec,
    ];

    /// The name used in configs and on the command line.
    pub const fn as_str(self) -> &'static str {
        match self {
            Encoding::Json => "json",
            Encoding::Ocsf => "ocsf",
            Encoding::Ecs => "ecs",
            Encoding::Cef => "cef",
            Encoding::Hec => "hec",
        }
    }

    /// True when a record is a JSON document (so batches of them can be framed as JSON).
    pub const fn is_json(self) -> bool {
        !matches!(self, Encoding::Cef)
    }
}

/// Splunk HEC metadata of each event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HecFields {
    /// `source`.
    pub source: String,
    /// `sourcetype`.
    pub sourcetype: String,
    /// `index`, when the token's default index is not wanted.
    pub index: Option<String>,
}

impl Default for HecFields {
    fn default() -> Self {
        HecFields {
            source: "nhiwatch".into(),
            sourcetype: "nhiwatch:alert".into(),
            index: None,
        }
    }
}

/// Encodes alerts in one encoding.
#[derive(Clone, Debug)]
pub struct Encoder {
    encoding: Encoding,
    host: String,
    hec: HecFields,
}

impl Encoder {
    /// An encoder naming `host` as the reporting host (HEC `host`, CEF `dvchost`, ECS
    /// `observer.hostname`).
    pub fn new(encoding: Encoding, host: impl Into<String>) -> Encoder {
        Encoder {
            encoding,
            host: host.into(),
            hec: HecFields::default(),
        }
    }

    /// With HEC metadata.
    pub fn with_hec(mut self, hec: HecFields) -> Encoder {
        self.hec = hec;
        self
    }

    /// The encoding.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Appends one encoded alert to `out`, without a trailing newline.
    pub fn encode(&self, alert: &Alert, out: &mut Vec<u8>) {
        // Serializing plain values into a Vec cannot fail.
        match self.encoding {
            Encoding::Json => {
                let _ = serde_json::to_writer(&mut *out, alert);
            }
            Encoding::Ocsf => {
                let _ = serde_json::to_writer(&mut *out, &ocsf::finding(alert));
            }
            Encoding::Ecs => {
                let _ = serde_json::to_writer(&mut *out, &ecs::document(alert, &self.host));
            }
            Encoding::Cef => cef::write(alert, &self.host, out),
            Encoding::Hec => {
                let _ = serde_json::to_writer(&mut *out, &hec::event(alert, &self.host, &self.hec));
            }
        }
    }

    /// One encoded alert as a new buffer.
    pub fn to_vec(&self, alert: &Alert) -> Vec<u8> {
        let mut v = Vec::with_capacity(1024);
        self.encode(alert, &mut v);
        v
    }
}

/// This machine's host name (`/proc/sys/kernel/hostname`, `$HOSTNAME`), or `localhost`.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The runner address as an IP when it is one (records may carry host or service names).
fn runner_ip(alert: &Alert) -> Option<std::net::IpAddr> {
    alert.runner.ip.as_deref().and_then(|s| s.parse().ok())
}

/// The runner address when it is a name, not an IP.
fn runner_host(alert: &Alert) -> Option<&str> {
    match (&alert.runner.ip, runner_ip(alert)) {
        (Some(h), None) => Some(h.as_str()),
        _ => None,
    }
}

/// The most specific stable description of the runner: id, else group, else kind.
fn runner_label(alert: &Alert) -> Option<String> {
    let r = &alert.runner;
    r.id.clone()
        .or_else(|| r.group.clone())
        .or_else(|| r.kind.map(|k| k.as_str().to_string()))
}

/// Numeric severities of the encodings that want one.
fn severity_rank(s: Severity) -> u8 {
    match s {
        Severity::Info => 1,
        Severity::Low => 2,
        Severity::Medium => 3,
        Severity::High => 4,
        Severity::Critical => 5,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::event::{Action, Runner, RunnerKind, Source};
    use crate::time::Timestamp;

    /// An alert with every optional field set and awkward characters in the free text.
    pub(crate) fn sample() -> Alert {
        let mut evidence = serde_json::Map::new();
        evidence.insert("mints".into(), 18.into());
        evidence.insert("known_environments".into(), serde_json::json!(["staging"]));
        Alert {
            id: "a-78b809dcbfc03cf1eaa21f35b09bb1d5".into(),
            detector: "cross_env_reuse".into(),
            severity: Severity::Critical,
            identity: "gitlab:acme|platform/search=ci\\x".into(),
            event_id: "a6e3ce4b-31be-4fd4-86b9-da2a110d9af2".into(),
            event_time: Timestamp::parse("2026-03-30T11:26:04.25Z").unwrap(),
            source: Source::GitlabCi,
            action: Action::Mint,
            environment: Some("production".into()),
            summary: "minted a production credential = first time;\nonly staging before".into(),
            reason: "first production mint | new".into(),
            evidence,
            credential: Some("03d9c19af92ac704c472fa668b7988de".into()),
            runner: Runner {
                kind: Some(RunnerKind::SelfHosted),
                id: Some("12270807".into()),
                group: None,
                name: Some("runner-abc".into()),
                ip: Some("10.0.2.124".into()),
                agent: Some("gitlab-runner 17.2".into()),
            },
        }
    }

    #[test]
    fn every_encoding_is_one_line_and_json_ones_parse() {
        let a = sample();
        for enc in Encoding::ALL {
            let out = Encoder::new(enc, "det-1").to_vec(&a);
            assert!(!out.contains(&b'\n'), "{enc:?} wrote a newline");
            if enc.is_json() {
                let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
                assert!(v.is_object(), "{enc:?}");
            } else {
                assert!(out.starts_with(b"CEF:0|"));
            }
        }
        let json = Encoder::new(Encoding::Json, "h").to_vec(&a);
        let back: Alert = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn runner_address_is_split_into_ip_or_host() {
        let mut a = sample();
        assert_eq!(
            runner_ip(&a).map(|i| i.to_string()).as_deref(),
            Some("10.0.2.124")
        );
        assert_eq!(runner_host(&a), None);
        a.runner.ip = Some("build-7.internal".into());
        assert_eq!(runner_ip(&a), None);
        assert_eq!(runner_host(&a), Some("build-7.internal"));
        assert_eq!(runner_label(&a).as_deref(), Some("12270807"));
        a.runner.id = None;
        assert_eq!(runner_label(&a).as_deref(), Some("self_hosted"));
    }
}
