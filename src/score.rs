//! `nhiwatch score`: alerts measured against a simulation's answer key.
//!
//! An attack is *caught* when an alert names one of the records it wrote (by native event
//! id); it counts for its kind's recall when the alert comes from the detector of that kind
//! ("own"), and is also reported when any detector caught it. An alert is *true* when it
//! names a record an attack wrote, *false* otherwise; false alerts on a benign change the
//! simulation announced (a night hotfix, a service moved to new runners) are counted
//! separately, since they are the residual alerts a deployment should expect.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::BufRead;

use serde::{Deserialize, Serialize};

use crate::simulate::{ALL_KINDS, HYGIENE_KINDS};

/// A problem reading the answer key or the alerts.
#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    /// A line is not what it should be.
    #[error("{file} line {line}: {message}")]
    Line {
        /// Which input.
        file: &'static str,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// Reading failed.
    #[error("{file}: {source}")]
    Io {
        /// Which input.
        file: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// The answer key has no summary line (it was cut short).
    #[error("labels: no summary line; was the simulation interrupted?")]
    NoSummary,
}

/// One attack in the answer key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AttackInfo {
    /// Attack number.
    pub attack: u32,
    /// Kind (a detector name).
    pub kind: String,
    /// Variant.
    pub variant: String,
    /// Identities whose records the attack wrote and its detector is expected to flag.
    pub identities: BTreeSet<String>,
}

/// The answer key of a simulation (`nhiwatch simulate --labels`).
#[derive(Clone, Debug, Default)]
pub struct AnswerKey {
    /// Attacks by number.
    pub attacks: BTreeMap<u32, AttackInfo>,
    /// Attack numbers by event id.
    events: HashMap<String, Vec<u32>>,
    /// Event ids of records showing benign changes.
    benign: HashSet<String>,
    /// Identity-days simulated.
    pub identity_days: u64,
    /// Identities simulated.
    pub identities: u64,
    /// Records simulated.
    pub records: u64,
}

#[derive(Deserialize)]
struct KeyLine {
    r#type: String,
    #[serde(default)]
    attack: u32,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    variant: String,
    #[serde(default)]
    event_id: String,
    #[serde(default)]
    identity: String,
    #[serde(default)]
    expected: bool,
    #[serde(default)]
    identity_days: u64,
    #[serde(default)]
    identities: u64,
    #[serde(default)]
    records: u64,
}

impl AnswerKey {
    /// Reads an answer key.
    pub fn read(r: impl BufRead) -> Result<AnswerKey, ScoreError> {
        let mut key = AnswerKey::default();
        let mut summary = false;
        for (i, line) in r.lines().enumerate() {
            let line = line.map_err(|source| ScoreError::Io {
                file: "labels",
                source,
            })?;
            if line.trim().is_empty() {
                continue;
            }
            let l: KeyLine = serde_json::from_str(&line).map_err(|e| ScoreError::Line {
                file: "labels",
                line: i + 1,
                message: e.to_string(),
            })?;
            match l.r#type.as_str() {
                "attack_record" => {
                    if !ALL_KINDS.contains(&l.kind.as_str()) {
                        return Err(ScoreError::Line {
                            file: "labels",
                            line: i + 1,
                            message: format!("unknown attack kind {:?}", l.kind),
                        });
                    }
                    let a = key.attacks.entry(l.attack).or_insert_with(|| AttackInfo {
                        attack: l.attack,
                        kind: l.kind.clone(),
                        variant: l.variant.clone(),
                        identities: BTreeSet::new(),
                    });
                    if l.expected {
                        a.identities.insert(l.identity);
                    }
                    let ids = key.events.entry(l.event_id).or_default();
                    if !ids.contains(&l.attack) {
                        ids.push(l.attack);
                    }
                }
                "benign_change" => {
                    key.benign.insert(l.event_id);
                }
                "summary" => {
                    summary = true;
                    key.identity_days = l.identity_days;
                    key.identities = l.identities;
                    key.records = l.records;
                }
                other => {
                    return Err(ScoreError::Line {
                        file: "labels",
                        line: i + 1,
                        message: format!("unknown line type {other:?}"),
                    });
                }
            }
        }
        if !summary {
            return Err(ScoreError::NoSummary);
        }
        Ok(key)
    }
}

/// Recall of one attack kind.
#[derive(Clone, Debug, Default, Serialize)]
pub struct KindScore {
    /// The kind.
    pub kind: String,
    /// Attacks of this kind.
    pub attacks: u32,
    /// Caught by the detector of this kind.
    pub caught_own: u32,
    /// Caught by any detector.
    pub caught_any: u32,
    /// `caught_own / attacks` (1 when there were none).
    pub recall_own: f64,
    /// `caught_any / attacks`.
    pub recall_any: f64,
}

/// Alerts of one detector.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DetectorScore {
    /// Alerts.
    pub alerts: u64,
    /// On attack records.
    pub true_alerts: u64,
    /// Not on attack records.
    pub false_alerts: u64,
    /// False alerts on announced benign changes.
    pub false_on_benign_changes: u64,
}

/// Everything `nhiwatch score` measures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Score {
    /// Recall per attack kind, in [`ALL_KINDS`] order.
    pub kinds: Vec<KindScore>,
    /// Alerts read.
    pub alerts: u64,
    /// Alerts on attack records.
    pub true_alerts: u64,
    /// Alerts on other records.
    pub false_alerts: u64,
    /// False alerts on records showing an announced benign change.
    pub false_on_benign_changes: u64,
    /// `true_alerts / alerts` (1 when there were none).
    pub precision: f64,
    /// Identity-days of the simulation.
    pub identity_days: u64,
    /// False alerts per 1,000 identity-days.
    pub false_per_1000_identity_days: f64,
    /// Per detector.
    pub detectors: BTreeMap<String, DetectorScore>,
    /// Attacks no alert of their own kind caught.
    pub missed: Vec<AttackInfo>,
}

#[derive(Deserialize)]
struct AlertLine {
    detector: String,
    event_id: String,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 1.0 } else { a as f64 / b as f64 }
}

/// Scores alerts (JSON lines as `replay` writes them) against an answer key.
pub fn score(alerts: impl BufRead, key: &AnswerKey) -> Result<Score, ScoreError> {
    let mut s = Score {
        identity_days: key.identity_days,
        ..Score::default()
    };
    let mut own: HashSet<u32> = HashSet::new();
    let mut any: HashSet<u32> = HashSet::new();
    for (i, line) in alerts.lines().enumerate() {
        let line = line.map_err(|source| ScoreError::Io {
            file: "alerts",
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let a: AlertLine = serde_json::from_str(&line).map_err(|e| ScoreError::Line {
            file: "alerts",
            line: i + 1,
            message: e.to_string(),
        })?;
        s.alerts += 1;
        let d = s.detectors.entry(a.detector.clone()).or_default();
        d.alerts += 1;
        match key.events.get(&a.event_id) {
            Some(attacks) => {
                s.true_alerts += 1;
                d.true_alerts += 1;
                for n in attacks {
                    any.insert(*n);
                    if key.attacks.get(n).is_some_and(|x| x.kind == a.detector) {
                        own.insert(*n);
                    }
                }
            }
            None => {
                s.false_alerts += 1;
                d.false_alerts += 1;
                if key.benign.contains(&a.event_id) {
                    s.false_on_benign_changes += 1;
                    d.false_on_benign_changes += 1;
                }
            }
        }
    }
    for kind in ALL_KINDS {
        let of_kind: Vec<&AttackInfo> = key.attacks.values().filter(|a| a.kind == kind).collect();
        let caught_own = of_kind.iter().filter(|a| own.contains(&a.attack)).count() as u64;
        let caught_any = of_kind.iter().filter(|a| any.contains(&a.attack)).count() as u64;
        let n = of_kind.len() as u64;
        s.kinds.push(KindScore {
            kind: kind.to_string(),
            attacks: n as u32,
            caught_own: caught_own as u32,
            caught_any: caught_any as u32,
            recall_own: ratio(caught_own, n),
            recall_any: ratio(caught_any, n),
        });
    }
    s.missed = key
        .attacks
        .values()
        .filter(|a| !own.contains(&a.attack))
        .cloned()
        .collect();
    s.precision = ratio(s.true_alerts, s.alerts);
    s.false_per_1000_identity_days = if key.identity_days == 0 {
        0.0
    } else {
        s.false_alerts as f64 * 1000.0 / key.identity_days as f64
    };
    Ok(s)
}

impl Score {
    /// Adds another run's score (several seeds scored as one).
    pub fn merge(&mut self, o: &Score) {
        if self.kinds.is_empty() {
            self.kinds = o.kinds.clone();
        } else {
            for (k, x) in self.kinds.iter_mut().zip(&o.kinds) {
                k.attacks += x.attacks;
                k.caught_own += x.caught_own;
                k.caught_any += x.caught_any;
                k.recall_own = ratio(u64::from(k.caught_own), u64::from(k.attacks));
                k.recall_any = ratio(u64::from(k.caught_any), u64::from(k.attacks));
            }
        }
        self.alerts += o.alerts;
        self.true_alerts += o.true_alerts;
        self.false_alerts += o.false_alerts;
        self.false_on_benign_changes += o.false_on_benign_changes;
        self.identity_days += o.identity_days;
        for (name, d) in &o.detectors {
            let e = self.detectors.entry(name.clone()).or_default();
            e.alerts += d.alerts;
            e.true_alerts += d.true_alerts;
            e.false_alerts += d.false_alerts;
            e.false_on_benign_changes += d.false_on_benign_changes;
        }
        self.missed.extend(o.missed.iter().cloned());
        self.precision = ratio(self.true_alerts, self.alerts);
        self.false_per_1000_identity_days = if self.identity_days == 0 {
            0.0
        } else {
            self.false_alerts as f64 * 1000.0 / self.identity_days as f64
        };
    }

    /// The smallest recall over the kinds that had attacks (own detector).
    pub fn min_recall(&self) -> f64 {
        self.kinds
            .iter()
            .filter(|k| k.attacks > 0)
            .map(|k| k.recall_own)
            .fold(1.0, f64::min)
    }

    /// A plain-text report.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<22} {:>7} {:>12} {:>8} {:>12} {:>8}",
            "attack kind", "attacks", "caught (own)", "recall", "caught (any)", "recall"
        );
        // The hygiene kinds only when the simulation had them (`simulate --hygiene`).
        for k in self
            .kinds
            .iter()
            .filter(|k| k.attacks > 0 || !HYGIENE_KINDS.contains(&k.kind.as_str()))
        {
            let _ = writeln!(
                out,
                "{:<22} {:>7} {:>12} {:>8.3} {:>12} {:>8.3}",
                k.kind, k.attacks, k.caught_own, k.recall_own, k.caught_any, k.recall_any
            );
        }
        let _ = writeln!(
            out,
            "alerts {}: true {}, false {} ({} on announced benign changes); precision {:.3}; {:.2} false alerts per 1,000 identity-days ({} identity-days)",
            self.alerts,
            self.true_alerts,
            self.false_alerts,
            self.false_on_benign_changes,
            self.precision,
            self.false_per_1000_identity_days,
            self.identity_days
        );
        for (name, d) in &self.detectors {
            let _ = writeln!(
                out,
                "  {name:<22} {:>6} alerts: {} true, {} false ({} on benign changes)",
                d.alerts, d.true_alerts, d.false_alerts, d.false_on_benign_changes
            );
        }
        for m in self.missed.iter().take(10) {
            let _ = writeln!(
                out,
                "missed: attack {} ({} / {}) on {}",
                m.attack,
                m.kind,
                m.variant,
                m.identities.iter().cloned().collect::<Vec<_>>().join(", ")
            );
        }
        if self.missed.len() > 10 {
            let _ = writeln!(out, "missed: … and {} more", self.missed.len() - 10);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = r#"{"type":"attack_record","attack":1,"kind":"new_runner","variant":"v","event_id":"e1","identity":"i1","time":"t","source":"vault","expected":true}
{"type":"attack_record","attack":1,"kind":"new_runner","variant":"v","event_id":"e2","identity":"i1","time":"t","source":"vault","expected":false}
{"type":"attack_record","attack":2,"kind":"off_hours_mint","variant":"w","event_id":"e3","identity":"i2","time":"t","source":"github","expected":true}
{"type":"benign_change","attack":9,"kind":"new_runner","variant":"new_subnet","event_id":"b1","identity":"i3","time":"t","source":"vault","expected":false}
{"type":"summary","identity_days":2000,"identities":100,"records":5}
"#;

    #[test]
    fn scores_recall_precision_and_rates() {
        let key = AnswerKey::read(KEY.as_bytes()).expect("key");
        let alerts = r#"{"detector":"new_runner","event_id":"e2"}
{"detector":"cross_env_reuse","event_id":"e3"}
{"detector":"new_runner","event_id":"b1"}
{"detector":"off_hours_mint","event_id":"zz"}
"#;
        let s = score(alerts.as_bytes(), &key).expect("score");
        assert_eq!((s.alerts, s.true_alerts, s.false_alerts), (4, 2, 2));
        assert_eq!(s.false_on_benign_changes, 1);
        assert!((s.precision - 0.5).abs() < 1e-9);
        assert!((s.false_per_1000_identity_days - 1.0).abs() < 1e-9);
        let nr = &s.kinds[1];
        assert_eq!((nr.attacks, nr.caught_own, nr.caught_any), (1, 1, 1));
        let oh = &s.kinds[0];
        assert_eq!((oh.attacks, oh.caught_own, oh.caught_any), (1, 0, 1));
        assert_eq!(s.min_recall(), 0.0);
        assert_eq!(s.missed.len(), 1);
        assert!(
            s.render()
                .contains("missed: attack 2 (off_hours_mint / w) on i2")
        );
    }

    #[test]
    fn bad_lines_say_where() {
        let err = AnswerKey::read("{\"type\":\"summary\"}\nnot json\n".as_bytes()).unwrap_err();
        assert!(err.to_string().starts_with("labels line 2:"), "{err}");
        let err = AnswerKey::read("{\"type\":\"attack_record\"}\n".as_bytes()).unwrap_err();
        assert!(err.to_string().contains("unknown attack kind"), "{err}");
        assert!(matches!(
            AnswerKey::read("".as_bytes()),
            Err(ScoreError::NoSummary)
        ));
        let key = AnswerKey::read(KEY.as_bytes()).expect("key");
        let err = score("{\"detector\":1}\n".as_bytes(), &key).unwrap_err();
        assert!(err.to_string().starts_with("alerts line 1:"), "{err}");
    }
}
