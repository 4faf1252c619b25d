//! Detector specifications: one TOML file per detector in `detectors/` (learning period,
//! forgetting, thresholds, severity, allowlists, suppression window) and the privilege
//! ranking of scopes (`detectors/privileges.toml`). The binary embeds the shipped files as its
//! defaults, so it runs with none on disk; a directory named in the configuration overrides
//! them file by file. Every file is validated at start, and errors name the file and key.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::glob::GlobSet;
pub use crate::alert::Severity;
use crate::units::Duration;

/// The shipped specifications, embedded.
pub const EMBEDDED: &[(&str, &str)] = &[
    (
        "off_hours_mint",
        include_str!("../../detectors/off_hours_mint.toml"),
    ),
    (
        "new_runner",
        include_str!("../../detectors/new_runner.toml"),
    ),
    (
        "scope_escalation",
        include_str!("../../detectors/scope_escalation.toml"),
    ),
    (
        "cross_env_reuse",
        include_str!("../../detectors/cross_env_reuse.toml"),
    ),
    (
        "dormant_reactivated",
        include_str!("../../detectors/dormant_reactivated.toml"),
    ),
    (
        "long_lived_credential",
        include_str!("../../detectors/long_lived_credential.toml"),
    ),
    (
        "human_bound_credential",
        include_str!("../../detectors/human_bound_credential.toml"),
    ),
    ("new_trust", include_str!("../../detectors/new_trust.toml")),
    (
        "unapproved_ref",
        include_str!("../../detectors/unapproved_ref.toml"),
    ),
    (
        "first_seen",
        include_str!("../../detectors/first_seen.toml"),
    ),
    (
        "identity_flood",
        include_str!("../../detectors/identity_flood.toml"),
    ),
];

/// The shipped privilege ranking, embedded.
pub const EMBEDDED_PRIVILEGES: &str = include_str!("../../detectors/privileges.toml");

/// The shipped peer grouping, embedded.
pub const EMBEDDED_PEERS: &str = include_str!("../../detectors/peers.toml");

/// `[detectors]`: detector specifications.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorsConfig {
    /// A directory whose `<detector>.toml`, `privileges.toml` and `peers.toml` override the
    /// built-in ones, file by file.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Detectors to run, overriding each specification's `enabled`.
    #[serde(default)]
    pub enabled: Option<Vec<String>>,
}

/// A detector's specification.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Name and switch.
    pub detector: Meta,
    /// When an identity's baseline is trusted.
    pub learning: Learning,
    /// How fast history fades.
    pub forgetting: Forgetting,
    /// Detector-specific thresholds (validated by the detector).
    #[serde(default)]
    pub thresholds: toml::Table,
    /// Severity by the environment's criticality.
    pub severity: SeverityMap,
    /// Repeat alerts.
    pub suppression: Suppression,
    /// What never alerts.
    #[serde(default)]
    pub allowlist: Allowlist,
    /// How findings are judged against the identity's peer group.
    #[serde(default)]
    pub peers: PeerJudgement,
}

/// `[peers]`: judging a finding against the identity's peer group (`peers.toml`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerJudgement {
    /// Judge against peers at all.
    #[serde(default = "yes")]
    pub judge: bool,
    /// A behaviour at least this share of the peers show is routine for the role.
    #[serde(default = "half")]
    pub routine_share: f64,
    /// What a routine finding becomes: `"drop"` (not alerted; counted as `peer_routine`) or
    /// a severity to alert with.
    #[serde(default = "drop_routine")]
    pub routine: String,
}

impl Default for PeerJudgement {
    fn default() -> Self {
        PeerJudgement {
            judge: true,
            routine_share: half(),
            routine: drop_routine(),
        }
    }
}

fn half() -> f64 {
    0.5
}

fn drop_routine() -> String {
    "drop".into()
}

impl PeerJudgement {
    /// The severity a routine finding is alerted with, or `None` to drop it.
    pub fn routine_severity(&self) -> Option<Severity> {
        Severity::ALL
            .into_iter()
            .find(|s| s.as_str() == self.routine)
    }
}

/// Name and switch.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    /// Must equal the file name.
    pub name: String,
    /// Whether it runs by default.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// One line for `nhiwatch detectors`.
    #[serde(default)]
    pub description: String,
}

fn yes() -> bool {
    true
}

/// When an identity's baseline is trusted enough to alert on.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Learning {
    /// Events (of the kind the detector learns from) before it is armed.
    pub min_events: u32,
    /// Days between the first and the latest event before it is armed.
    pub min_days: f64,
}

/// How fast history fades.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Forgetting {
    /// Counts halve after this long.
    pub half_life: Duration,
    /// Values unseen this long are forgotten.
    pub forget_after: Duration,
}

/// Severity by environment criticality.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeverityMap {
    /// Production.
    pub production: Severity,
    /// Staging.
    pub staging: Severity,
    /// Every other environment, and none.
    pub other: Severity,
}

/// Repeat alerts of one (detector, identity, reason).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Suppression {
    /// At most one alert per window.
    pub window: Duration,
}

/// What never alerts.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allowlist {
    /// Identity globs.
    #[serde(default)]
    pub identities: Vec<String>,
    /// Networks (CIDR) never treated as new (new_runner, cross_env_reuse).
    #[serde(default)]
    pub networks: Vec<String>,
    /// Scope globs never treated as escalations (scope_escalation).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Runner id, requester and source globs never treated as new (new_runner).
    #[serde(default)]
    pub runners: Vec<String>,
}

impl Spec {
    /// Parses a specification file's text; `name` is the file stem.
    pub fn parse(name: &str, text: &str) -> Result<Spec, SpecError> {
        let spec: Spec = toml::from_str(text).map_err(|e| SpecError::Parse {
            file: format!("{name}.toml"),
            message: e.to_string(),
        })?;
        if spec.detector.name != name {
            return Err(SpecError::Invalid {
                file: format!("{name}.toml"),
                key: "detector.name".into(),
                message: format!("is {:?}; it must equal the file name", spec.detector.name),
            });
        }
        if !(0.0 < spec.peers.routine_share && spec.peers.routine_share <= 1.0) {
            return Err(SpecError::Invalid {
                file: format!("{name}.toml"),
                key: "peers.routine_share".into(),
                message: "must be in (0, 1]".into(),
            });
        }
        if spec.peers.routine != "drop" && spec.peers.routine_severity().is_none() {
            return Err(SpecError::Invalid {
                file: format!("{name}.toml"),
                key: "peers.routine".into(),
                message: format!(
                    "is {:?}; it must be \"drop\" or a severity (info, low, medium, high, critical)",
                    spec.peers.routine
                ),
            });
        }
        if spec.learning.min_days < 0.0 {
            return Err(SpecError::Invalid {
                file: format!("{name}.toml"),
                key: "learning.min_days".into(),
                message: "must not be negative".into(),
            });
        }
        Ok(spec)
    }

    /// Parses the `[thresholds]` table into a detector's own type.
    pub fn thresholds<T: for<'de> Deserialize<'de>>(&self) -> Result<T, SpecError> {
        toml::Value::Table(self.thresholds.clone())
            .try_into()
            .map_err(|e: toml::de::Error| SpecError::Invalid {
                file: format!("{}.toml", self.detector.name),
                key: "thresholds".into(),
                message: e.to_string(),
            })
    }

    /// Severity for an environment tier.
    pub fn severity_for(&self, tier: Option<crate::baseline::Tier>) -> Severity {
        match tier {
            Some(crate::baseline::Tier::Production) => self.severity.production,
            Some(crate::baseline::Tier::Staging) => self.severity.staging,
            _ => self.severity.other,
        }
    }

    /// The compiled identity allowlist.
    pub fn identity_allowlist(&self) -> GlobSet {
        GlobSet::new(&self.allowlist.identities)
    }
}

/// A specification problem.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Not valid TOML for the schema.
    #[error("detectors/{file}: {message}")]
    Parse {
        /// The file.
        file: String,
        /// The parser's message.
        message: String,
    },
    /// A value is unusable.
    #[error("detectors/{file}: `{key}`: {message}")]
    Invalid {
        /// The file.
        file: String,
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// An override directory could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The text of a specification: `dir/<name>.toml` when present, else the embedded default.
pub fn text_of(name: &str, dir: Option<&Path>) -> Result<String, SpecError> {
    if let Some(dir) = dir {
        let path = dir.join(format!("{name}.toml"));
        match std::fs::read_to_string(&path) {
            Ok(t) => return Ok(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(SpecError::Read { path, source }),
        }
    }
    EMBEDDED
        .iter()
        .chain(
            [
                ("privileges", EMBEDDED_PRIVILEGES),
                ("peers", EMBEDDED_PEERS),
            ]
            .iter(),
        )
        .find(|(n, _)| *n == name)
        .map(|(_, t)| (*t).to_string())
        .ok_or_else(|| SpecError::Invalid {
            file: format!("{name}.toml"),
            key: "detector.name".into(),
            message: "no such detector".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_specs_parse_and_name_themselves() {
        for (name, text) in EMBEDDED {
            let spec = Spec::parse(name, text).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(spec.detector.name, *name);
        }
    }

    #[test]
    fn errors_name_the_file_and_key() {
        let e = Spec::parse("new_runner", "[detector]\nname = \"other\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("new_runner.toml"), "{e}");
        let text = EMBEDDED[0]
            .1
            .replace("[learning]", "[learning]\nmin_evnts = 3");
        let e = Spec::parse("off_hours_mint", &text)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("min_evnts") && e.contains("off_hours_mint.toml"),
            "{e}"
        );
    }
}
