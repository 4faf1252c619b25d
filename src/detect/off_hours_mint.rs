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

use super::peers::Verdict;
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
    /// A weekend mint at one of the identity's weekday working hours is routine when at
    /// least this share of its peers mint at weekends (people who work some weekends).
    weekend_peer_share: f64,
    /// A time of week at which the identity minted at least this many times (decayed) is
    /// never off-hours, however small a share of its mints that is (a nightly job of a busy
    /// identity shared by many workflows).
    min_window_mints: f64,
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
        if t.min_window_mints <= 0.0 {
            return Err(bad("min_window_mints", "must be positive"));
        }
        if !(0.0 < t.weekend_peer_share && t.weekend_peer_share <= 1.0) {
            return Err(bad("weekend_peer_share", "must be in (0, 1]"));
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
        let b = cx.baseline;
        // Judged on all its mints, and for a production mint also on its production mints
        // alone once it mints for production and for something else too: a pipeline whose
        // nightly tests make the night ordinary for it still deploys only by day.
        let (odd, production) = match self.judge(&b.tow, v) {
            Some(o) => (o, false),
            None => {
                let prod = match (v.env, &b.prod_tow) {
                    (Some((_, crate::baseline::Tier::Production)), Some(t)) => t,
                    _ => return None,
                };
                (self.judge(prod, v)?, true)
            }
        };
        let Odd {
            k,
            n,
            mean,
            below,
            upper,
        } = odd;
        let mut severity = self.spec.severity_for(tier_of(v));
        if mean < self.t.very_improbable {
            severity = severity.raised();
        }
        let (weekday, hour, minute, _) = v.local;
        let when = format!(
            "{} {hour:02}:{minute:02}",
            WEEKDAYS[usize::from(weekday.min(6))]
        );
        let usual = if production {
            b.prod_tow
                .as_ref()
                .map(|t| t.describe())
                .unwrap_or_default()
        } else {
            b.tow.describe()
        };
        let env = cx
            .event
            .environment
            .as_deref()
            .map(|e| format!(" {e}"))
            .unwrap_or_default();
        let what = if production {
            "production mints"
        } else {
            "mints"
        };
        let mut summary = format!(
            "{} minted a{env} credential on {when} ({}), a time it rarely mints{}: {k:.1} of its {n:.0} recent {what} fall within {} h of it (estimated probability {:.2} %); it usually mints{} {usual}.",
            cx.event.identity,
            cx.zone,
            if production { " for production" } else { "" },
            self.t.window_hours,
            mean * 100.0,
            if production { " for production" } else { "" },
        );
        let mut ev = evidence::base(cx.baseline);
        ev.insert("local_time".into(), json!(when));
        ev.insert("timezone".into(), json!(cx.zone));
        ev.insert("window_hours".into(), json!(self.t.window_hours));
        ev.insert("judged_on".into(), json!(what));
        ev.insert("mints_in_window".into(), json!((k * 100.0).round() / 100.0));
        ev.insert("mints_weighted".into(), json!((n * 100.0).round() / 100.0));
        ev.insert("probability".into(), json!(mean));
        ev.insert("probability_90th_percentile".into(), json!(upper));
        ev.insert("probability_below_threshold".into(), json!(below));
        ev.insert("threshold".into(), json!(self.t.max_probability));
        ev.insert("usual_hours".into(), json!(usual));
        // The peers. A weekend mint at an hour the identity works on weekdays is routine
        // when most of its peers work at weekends too (builds people trigger when they work
        // at a weekend); any other time of week is routine when most peers mint within the
        // same window. Peers are counted by all their mints, so a production-only judgement
        // is not compared with them.
        let mut routine = false;
        if let Some(p) = cx.peers
            && !production
        {
            let g = p.group();
            // The weekday hours next to this one, against all weekday mints (both decayed
            // alike): narrower than the judging window, so that a weekend night at the edge of
            // its weekday evening hours is not taken for weekend work.
            let (k_weekday, n_all) = b.tow.window(
                v.tow_bin % 24,
                self.t.window_hours.min(USUAL_HOUR_RADIUS),
                v.day,
                self.half_life_days,
            );
            let total = f64::from(b.tow.total());
            let weekday_share = if total > 0.0 {
                f64::from(b.tow.day_type_total(0)) / total
            } else {
                0.0
            };
            let usual_hour = n_all > 0.0 && k_weekday >= WORKING_HOUR_SHARE * weekday_share * n_all;
            let weekend_work = v.tow_bin >= 24 && usual_hour;
            let (share, what) = if weekend_work {
                (
                    g.weekends(),
                    format!("minted at weekends (it mints at {hour:02}h on weekdays)"),
                )
            } else {
                (
                    g.window(v.tow_bin, false),
                    format!(
                        "minted within {} h of {} {hour:02}h",
                        self.t.window_hours,
                        if v.tow_bin / 24 == 0 {
                            "weekdays"
                        } else {
                            "weekends"
                        }
                    ),
                )
            };
            ev.extend(g.evidence(&share, &what));
            summary.push_str(&g.sentence(&share, &what));
            let routine_share = if weekend_work {
                self.t.weekend_peer_share
            } else {
                self.spec.peers.routine_share
            };
            match g.verdict(&share, routine_share) {
                // An hour of the day peers mint at does not make the identity's own schedule
                // less strict (a nightly job dispatched at noon, where some nightly jobs run at
                // noon); peers working weekends do make its weekend work routine.
                Verdict::Routine if weekend_work => routine = true,
                Verdict::NewToPeers => severity = severity.raised(),
                _ => {}
            }
        }
        Some(Finding {
            severity,
            reason_key: self.reason_key,
            reason: format!("mint on {when} ({})", cx.zone),
            summary,
            evidence: ev,
            defer: None,
            routine,
        })
    }
}

/// An improbable time of week, with the numbers behind it.
struct Odd {
    k: f64,
    n: f64,
    mean: f64,
    below: f64,
    upper: f64,
}

impl OffHoursMint {
    /// The Beta test of a mint's time of week against a time-of-week model.
    fn judge(
        &self,
        tow: &crate::baseline::timeofweek::TimeOfWeek,
        v: &crate::baseline::View,
    ) -> Option<Odd> {
        let (k, n) = tow.window(v.tow_bin, self.t.window_hours, v.day, self.half_life_days);
        if n <= 0.0 {
            return None;
        }
        // The window's share of the week: its hours, on weekdays (5/7) or weekends (2/7).
        let weekend = usize::from(v.tow_bin / 24 != 0);
        let days = if weekend == 1 { 2.0 } else { 5.0 };
        let w = f64::from(2 * self.t.window_hours + 1) / 24.0 * days / 7.0;
        // Mints only speak for the day type in proportion to how long it was watched: with
        // no weekend watched yet, weekday mints say nothing about a Saturday. Until a whole
        // day of the type was watched, some of its hours never were: no evidence (an
        // around-the-clock identity first seen on a Sunday evening is not off-hours on its
        // first Saturday night).
        let exposure = tow.exposure_at(v.day, v.secs, self.half_life_days);
        if exposure[weekend] < MIN_EXPOSURE_HOURS {
            return None;
        }
        let watched = exposure[0] + exposure[1];
        let n = if watched > 0.0 {
            n * (exposure[weekend] / watched / (days / 7.0)).min(1.0)
        } else {
            n
        };
        let k = k.min(n);
        if k >= self.t.min_window_mints {
            return None;
        }
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
        Some(Odd {
            k,
            n,
            mean,
            below,
            upper: beta.inverse_cdf(0.9),
        })
    }
}

/// Share of its weekday mints an hour's window must hold to be one of the identity's
/// working hours.
const WORKING_HOUR_SHARE: f64 = 0.05;

/// Hours either side of a weekend mint's hour that tell whether it is a weekday working hour.
const USUAL_HOUR_RADIUS: u8 = 1;

/// Hours of a day type that must have been watched before its quiet hours are evidence.
const MIN_EXPOSURE_HOURS: f64 = 24.0;
