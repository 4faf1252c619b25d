//! `off_hours_mint`: a mint at a time of week improbable for this identity.
//!
//! The identity's mints by local time of week (see `baseline::timeofweek`) give, for the new
//! mint's hour ± `window_hours`, k decayed mints out of n. The share p of mints falling in that
//! window gets a Beta prior worth `prior_mints` mints spread evenly over the week (so the prior
//! mean is the window's share of the week), and the posterior is
//! Beta(k + α·w, n − k + α·(1 − w)). The mint is off-hours when p < `max_probability` with
//! posterior probability at least `confidence`. Short histories keep the posterior wide, so
//! an identity with few mints never fires, and a schedule seen every night is never
//! "off-hours", whatever the office hours are.

use serde::Deserialize;
use serde_json::json;
use statrs::distribution::{Beta, ContinuousCDF};

use super::{Cx, Detector, Finding, Spec, SpecError, evidence, tier_of};
use crate::baseline::{Class, IdentityBaseline, hash_value};
use crate::event::Action;

/// `[thresholds]` of `off_hours_mint.toml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    window_hours: u8,
    max_probability: f64,
    confidence: f64,
    prior_mints: f64,
    very_improbable: f64,
}

pub(super) struct OffHoursMint {
    spec: Spec,
    t: Thresholds,
    half_life_days: f32,
    reason_key: u64,
}

impl OffHoursMint {
    pub(super) fn new(spec: Spec) -> Result<Self, SpecError> {
        let t: Thresholds = spec.thresholds()?;
        let bad = |key: &str, message: &str| SpecError::Invalid {
            file: "off_hours_mint.toml".into(),
            key: format!("thresholds.{key}"),
            message: message.into(),
        };
        if t.window_hours > 11 {
            return Err(bad("window_hours", "must be at most 11"));
        }
        if !(0.0 < t.max_probability && t.max_probability < 1.0) {
            return Err(bad("max_probability", "must be between 0 and 1"));
        }
        if !(0.5 <= t.confidence && t.confidence < 1.0) {
            return Err(bad("confidence", "must be in [0.5, 1)"));
        }
        if t.prior_mints <= 0.0 {
            return Err(bad("prior_mints", "must be positive"));
        }
        Ok(OffHoursMint {
            half_life_days: (spec.forgetting.half_life.as_secs() as f32 / 86_400.0).max(0.01),
            spec,
            t,
            reason_key: hash_value(Class::Scope, "off-hours"),
        })
    }
}

const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

impl Detector for OffHoursMint {
    fn name(&self) -> &'static str {
        "off_hours_mint"
    }

    fn spec(&self) -> &Spec {
        &self.spec
    }

    fn learned(&self, b: &IdentityBaseline) -> u32 {
        b.mints
    }

    fn inspect(&self, cx: &Cx<'_>) -> Option<Finding> {
        if cx.event.action != Action::Mint || !cx.armed {
            return None;
        }
        let v = cx.view;
        let (k, n) =
            cx.baseline
                .tow
                .window(v.tow_bin, self.t.window_hours, v.day, self.half_life_days);
        if n <= 0.0 {
            return None;
        }
        // The window's share of the week: its hours, on weekdays (5/7) or weekends (2/7).
        let weekend = usize::from(v.tow_bin / 24 != 0);
        let days = if weekend == 1 { 2.0 } else { 5.0 };
        let w = f64::from(2 * self.t.window_hours + 1) / 24.0 * days / 7.0;
        // Mints only speak for the day type in proportion to how long it was watched: with
        // no weekend watched yet, weekday mints say nothing about a Saturday.
        let exposure = cx
            .baseline
            .tow
            .exposure_at(v.day, v.secs, self.half_life_days);
        let watched = exposure[0] + exposure[1];
        let n = if watched > 0.0 {
            n * (exposure[weekend] / watched / (days / 7.0)).min(1.0)
        } else {
            n
        };
        let k = k.min(n);
        let a = k + self.t.prior_mints * w;
        let b = (n - k).max(0.0) + self.t.prior_mints * (1.0 - w);
        let mean = a / (a + b);
        // Cheap exit for the common case (plenty of mints at this time of week): once a ≥ 1,
        // a posterior whose mean is twice the threshold puts at most 39 % of its mass below
        // it (Beta(1, 24) at 0.02), less than any allowed confidence. Smaller a (almost no
        // mints in the window) is rare and gets the exact test.
        if a >= 1.0 && mean >= 2.0 * self.t.max_probability {
            return None;
        }
        let beta = Beta::new(a, b).ok()?;
        let below = beta.cdf(self.t.max_probability);
        if below < self.t.confidence {
            return None;
        }
        let upper = beta.inverse_cdf(0.9);
        let mut severity = self.spec.severity_for(tier_of(v));
        if mean < self.t.very_improbable {
            severity = severity.raised();
        }
        let (weekday, hour, minute, _) = v.local;
        let when = format!(
            "{} {hour:02}:{minute:02}",
            WEEKDAYS[usize::from(weekday.min(6))]
        );
        let usual = cx.baseline.tow.describe();
        let env = cx
            .event
            .environment
            .as_deref()
            .map(|e| format!(" {e}"))
            .unwrap_or_default();
        let summary = format!(
            "{} minted a{env} credential on {when} ({}), a time it rarely mints: {k:.1} of its {n:.0} recent mints fall within {} h of it (estimated probability {:.2} %); it usually mints {usual}.",
            cx.event.identity,
            cx.zone,
            self.t.window_hours,
            mean * 100.0
        );
        let mut ev = evidence::base(cx.baseline);
        ev.insert("local_time".into(), json!(when));
        ev.insert("timezone".into(), json!(cx.zone));
        ev.insert("window_hours".into(), json!(self.t.window_hours));
        ev.insert("mints_in_window".into(), json!((k * 100.0).round() / 100.0));
        ev.insert("mints_weighted".into(), json!((n * 100.0).round() / 100.0));
        ev.insert("probability".into(), json!(mean));
        ev.insert("probability_90th_percentile".into(), json!(upper));
        ev.insert("probability_below_threshold".into(), json!(below));
        ev.insert("threshold".into(), json!(self.t.max_probability));
        ev.insert("usual_hours".into(), json!(usual));
        Some(Finding {
            severity,
            reason_key: self.reason_key,
            reason: format!("mint on {when} ({})", cx.zone),
            summary,
            evidence: ev,
            defer: None,
        })
    }
}
