//! When an identity mints: decayed counts by local time of week, pooled into two day types
//! (weekday, weekend) × 24 hours.
//!
//! Pooling weekdays together means a nightly cron seen on four weekdays is already normal on
//! the fifth, and a business-hours pipeline is still abnormal on a Saturday. The counts are
//! learned from data, so any regular machine schedule (nightly jobs, around-the-clock token
//! refreshes, weekly backups) becomes normal; nothing assumes office hours. Counts decay with a
//! half-life so a changed schedule is relearned.
//!
//! Beside the counts, the hours of each day type that have passed since the first mint
//! (decayed the same way) are the model's exposure: an identity first seen on a Monday has
//! not yet been watched on a weekend, so on its first Saturday "no weekend mints" is no
//! evidence, while after three quiet weekends it is. Exposure splits time by UTC day type.

use serde::{Deserialize, Serialize};

use super::Day;

/// Bins: `day_type * 24 + hour`, day type 0 = Monday–Friday, 1 = Saturday–Sunday.
pub const BINS: usize = 48;

/// The bin of a local time: weekday 0 = Monday.
pub fn bin(weekday: u8, hour: u8) -> u8 {
    let weekend = u8::from(weekday >= 5);
    weekend * 24 + hour.min(23)
}

/// Decayed mint counts by time of week.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimeOfWeek {
    /// `[day type][hour]` (serde handles arrays up to 32 long).
    bins: [[f32; 24]; 2],
    total: f32,
    /// Hours watched by day type since the first mint, decayed to `day`.
    exposure: [f32; 2],
    /// Unix seconds up to which `exposure` counts (0 before the first mint).
    watched_to: i64,
    /// The day the counts are decayed to.
    day: Day,
}

impl Default for TimeOfWeek {
    fn default() -> Self {
        TimeOfWeek {
            bins: [[0.0; 24]; 2],
            total: 0.0,
            exposure: [0.0; 2],
            watched_to: 0,
            day: 0,
        }
    }
}

/// Day type (0 weekday, 1 weekend) of a UTC day number since the Unix epoch.
fn day_type(unix_day: i64) -> usize {
    // 1970-01-01 was a Thursday.
    usize::from((unix_day + 3).rem_euclid(7) >= 5)
}

/// Decayed hours by day type between `from` and `to` (Unix seconds) as of baseline day `now`.
fn hours_between(from: i64, to: i64, now: Day, half_life_days: f32) -> [f64; 2] {
    let mut out = [0.0f64; 2];
    if to <= from || from <= 0 {
        return out;
    }
    // Older hours weigh nothing after enough half-lives.
    let from = from.max(to - (half_life_days.max(1.0) * 12.0) as i64 * 86_400);
    let mut t = from;
    while t < to {
        let unix_day = t.div_euclid(86_400);
        let next = ((unix_day + 1) * 86_400).min(to);
        let age = super::day_of(crate::time::Timestamp::from_micros(t * 1_000_000));
        let w = f64::from(decay_factor(age, now, half_life_days));
        out[day_type(unix_day)] += (next - t) as f64 / 3600.0 * w;
        t = next;
    }
    out
}

fn decay_factor(from: Day, to: Day, half_life_days: f32) -> f32 {
    if to <= from || half_life_days <= 0.0 {
        1.0
    } else {
        (-std::f32::consts::LN_2 * f32::from(to - from) / half_life_days).exp()
    }
}

impl TimeOfWeek {
    /// Adds one mint in `bin` on `day` at `secs` (Unix seconds), decaying older counts first.
    pub fn add(&mut self, bin: u8, day: Day, secs: i64, half_life_days: f32) {
        let exposure = self.exposure_at(day, secs, half_life_days);
        let f = decay_factor(self.day, day, half_life_days);
        if f < 1.0 {
            for b in self.bins.iter_mut().flatten() {
                *b *= f;
            }
            self.total *= f;
        }
        self.exposure = [exposure[0] as f32, exposure[1] as f32];
        self.watched_to = self.watched_to.max(secs);
        self.day = self.day.max(day);
        if usize::from(bin) < BINS {
            self.bins[usize::from(bin / 24)][usize::from(bin % 24)] += 1.0;
            self.total += 1.0;
        }
    }

    /// Decayed mints in the hours `bin ± radius` of the same day type, and in total, as of
    /// `day`: the counts a probability model weighs.
    pub fn window(&self, bin: u8, radius: u8, day: Day, half_life_days: f32) -> (f64, f64) {
        let f = f64::from(decay_factor(self.day, day, half_life_days));
        let row = &self.bins[usize::from(bin / 24).min(1)];
        let hour = i32::from(bin % 24);
        let mut k = 0.0f64;
        for d in -i32::from(radius)..=i32::from(radius) {
            let h = (hour + d).rem_euclid(24) as usize;
            k += f64::from(row[h]);
        }
        (k * f, f64::from(self.total) * f)
    }

    /// Decayed hours watched by day type as of `day` / `secs` (weekday, weekend).
    pub fn exposure_at(&self, day: Day, secs: i64, half_life_days: f32) -> [f64; 2] {
        let f = f64::from(decay_factor(self.day, day, half_life_days));
        let more = hours_between(self.watched_to, secs, day.max(self.day), half_life_days);
        [
            f64::from(self.exposure[0]) * f + more[0],
            f64::from(self.exposure[1]) * f + more[1],
        ]
    }

    /// Decayed total.
    pub fn total(&self) -> f32 {
        self.total
    }

    /// Mints held for a day type (0 weekdays, 1 weekends), decayed as of the last mint.
    pub fn day_type_total(&self, day_type: usize) -> f32 {
        self.bins[day_type.min(1)].iter().sum()
    }

    /// The count held in one bin (decayed as of the last mint).
    pub fn bin_count(&self, bin: u8) -> f32 {
        let b = usize::from(bin).min(BINS - 1);
        self.bins[b / 24][b % 24]
    }

    /// The bins holding the most mass, strongest first (for evidence).
    pub fn busiest(&self, n: usize) -> Vec<(u8, f32)> {
        let mut v: Vec<(u8, f32)> = self
            .bins
            .iter()
            .flatten()
            .enumerate()
            .filter(|(_, c)| **c >= 0.5)
            .map(|(i, c)| (i as u8, *c))
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }

    /// A compact description of when the identity mints (`weekdays 08–18h, weekends 02h`).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (day_type, name) in [(0usize, "weekdays"), (1, "weekends")] {
            let row = &self.bins[day_type];
            let sum: f32 = row.iter().sum();
            if self.total <= 0.0 || sum < 0.02 * self.total {
                continue;
            }
            // Hours holding at least 2 % of this day type's mints, as ranges.
            let active: Vec<bool> = row.iter().map(|c| *c >= 0.02 * sum && *c >= 0.5).collect();
            let mut ranges = Vec::new();
            let mut h = 0;
            while h < 24 {
                if active[h] {
                    let start = h;
                    while h < 24 && active[h] {
                        h += 1;
                    }
                    ranges.push(if h - start == 1 {
                        format!("{start:02}h")
                    } else {
                        format!("{start:02}–{:02}h", h - 1)
                    });
                } else {
                    h += 1;
                }
            }
            if ranges.len() > 4 {
                parts.push(format!("{name} around the clock"));
            } else if !ranges.is_empty() {
                parts.push(format!("{name} {}", ranges.join(", ")));
            }
        }
        if parts.is_empty() {
            "no mints yet".into()
        } else {
            parts.join("; ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_pool_weekdays_and_wrap_midnight() {
        let mut t = TimeOfWeek::default();
        // A nightly job at 02h, Monday to Thursday.
        for weekday in 0..4 {
            t.add(bin(weekday, 2), 100 + Day::from(weekday), 0, 30.0);
        }
        let (k, n) = t.window(bin(4, 2), 2, 104, 30.0);
        assert!((k - n).abs() < 1e-6, "Friday 02h is in the learned window");
        assert!(k > 3.5);
        let (k, _) = t.window(bin(4, 0), 2, 104, 30.0);
        assert!(k > 3.5, "00h ± 2 wraps back to 22h and reaches 02h: {k}");
        let (k, _) = t.window(bin(4, 23), 2, 104, 30.0);
        assert!(k < 1e-6, "23h ± 2 ends at 01h: {k}");
        let (k, _) = t.window(bin(5, 2), 2, 104, 30.0);
        assert!(k < 1e-6, "weekends are another day type: {k}");
    }

    #[test]
    fn decay_halves_with_the_half_life() {
        let mut t = TimeOfWeek::default();
        t.add(bin(0, 9), 0, 0, 10.0);
        let (k, n) = t.window(bin(0, 9), 0, 10, 10.0);
        assert!((k - 0.5).abs() < 1e-3 && (n - 0.5).abs() < 1e-3, "{k} {n}");
        t.add(bin(0, 9), 20, 0, 10.0);
        assert!((t.total() - 1.25).abs() < 1e-3, "{}", t.total());
    }

    #[test]
    fn exposure_counts_hours_by_day_type() {
        use crate::time::Timestamp;
        let secs = |s: &str| Timestamp::parse(s).expect("t").as_unix_seconds();
        let day = |s: &str| super::super::day_of(Timestamp::parse(s).expect("t"));
        let mut t = TimeOfWeek::default();
        // First mint Monday 2026-03-23 12:00; nothing is watched before it.
        t.add(
            bin(0, 12),
            day("2026-03-23T12:00:00Z"),
            secs("2026-03-23T12:00:00Z"),
            1e6,
        );
        let e = t.exposure_at(
            day("2026-03-23T12:00:00Z"),
            secs("2026-03-23T12:00:00Z"),
            1e6,
        );
        assert_eq!(e, [0.0, 0.0]);
        // By Saturday 06:00: 4.5 weekdays, 6 weekend hours.
        let sat = "2026-03-28T06:00:00Z";
        let e = t.exposure_at(day(sat), secs(sat), 1e6);
        assert!(
            (e[0] - 108.0).abs() < 0.01 && (e[1] - 6.0).abs() < 0.01,
            "{e:?}"
        );
        // Learning more keeps the count.
        t.add(
            bin(4, 9),
            day("2026-03-27T09:00:00Z"),
            secs("2026-03-27T09:00:00Z"),
            1e6,
        );
        let e = t.exposure_at(day(sat), secs(sat), 1e6);
        assert!(
            (e[0] - 108.0).abs() < 0.01 && (e[1] - 6.0).abs() < 0.01,
            "{e:?}"
        );
    }

    #[test]
    fn describes_schedules() {
        let mut t = TimeOfWeek::default();
        for d in 0..20 {
            for h in 9..18 {
                t.add(bin((d % 5) as u8, h), d, 0, 60.0);
            }
        }
        assert_eq!(t.describe(), "weekdays 09–17h");
        let mut n = TimeOfWeek::default();
        for d in 0..14 {
            n.add(bin((d % 7) as u8, 2), d, 0, 60.0);
        }
        assert_eq!(n.describe(), "weekdays 02h; weekends 02h");
    }
}
