//! Local time for the time-of-week model: the organisation's time zone, or an identity's own
//! (`[time]` in nhiwatch.toml), with daylight-saving time from the bundled tz database, so a
//! job scheduled at 02:30 local time stays at 02:30 across a DST change.

use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use serde::Deserialize;

use super::glob::Glob;
use crate::baseline::MapHasher;
use crate::time::Timestamp;

/// `[time]`: the time zone schedules are judged in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeConfig {
    /// The organisation's time zone (IANA name, e.g. `Europe/Berlin`); `UTC` by default.
    /// Jobs scheduled in local time keep their hour across daylight-saving changes.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// Identities in another time zone, first matching pattern wins.
    #[serde(default)]
    pub identities: Vec<IdentityZone>,
}

impl Default for TimeConfig {
    fn default() -> Self {
        TimeConfig {
            timezone: default_timezone(),
            identities: Vec::new(),
        }
    }
}

fn default_timezone() -> String {
    "UTC".into()
}

/// `[[time.identities]]`: a time zone for identities matching a pattern.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityZone {
    /// Identity glob (`github:acme-us/*`).
    pub pattern: String,
    /// IANA time-zone name.
    pub timezone: String,
}

/// Resolves identities to time zones and converts instants to local time.
#[derive(Debug)]
pub struct Zones {
    default: Zone,
    rules: Vec<(Glob, Zone)>,
    memo: DashMap<u64, usize, MapHasher>,
}

#[derive(Debug)]
struct Zone {
    name: String,
    tz: Option<jiff::tz::TimeZone>,
    /// The offset of the last quarter-hour asked for: `quarter << 24 | (offset + 2^23)`
    /// (0 when empty). Offsets change on quarter-hour boundaries, and events come in time
    /// order, so almost every lookup is a hit.
    last: AtomicU64,
}

impl Zone {
    fn new(name: String, tz: Option<jiff::tz::TimeZone>) -> Zone {
        Zone {
            name,
            tz,
            last: AtomicU64::new(0),
        }
    }

    fn offset(&self, t: Timestamp) -> i32 {
        let Some(tz) = &self.tz else {
            return 0;
        };
        let quarter = t.as_unix_seconds().div_euclid(900);
        let cached = self.last.load(Ordering::Relaxed);
        if cached != 0 && (cached >> 24) as i64 == quarter {
            return (cached & 0xff_ffff) as i32 - (1 << 23);
        }
        let offset = jiff::Timestamp::from_microsecond(t.as_micros())
            .map(|ts| tz.to_offset(ts).seconds())
            .unwrap_or(0);
        if (0..1 << 39).contains(&quarter) {
            self.last.store(
                (quarter as u64) << 24 | (offset + (1 << 23)) as u64,
                Ordering::Relaxed,
            );
        }
        offset
    }
}

/// A time-zone problem in the configuration.
#[derive(Debug, thiserror::Error)]
#[error("invalid config: `{key}`: unknown time zone {name:?}")]
pub struct ZoneError {
    /// The key.
    pub key: String,
    /// The name given.
    pub name: String,
}

fn zone(name: &str, key: &str) -> Result<Zone, ZoneError> {
    if name.eq_ignore_ascii_case("utc") {
        return Ok(Zone::new("UTC".into(), None));
    }
    jiff::tz::TimeZone::get(name)
        .map(|tz| Zone::new(name.to_string(), Some(tz)))
        .map_err(|_| ZoneError {
            key: key.to_string(),
            name: name.to_string(),
        })
}

impl Zones {
    /// From `[time]`.
    pub fn new(cfg: &TimeConfig) -> Result<Zones, ZoneError> {
        let default = zone(&cfg.timezone, "time.timezone")?;
        let mut rules = Vec::new();
        for (i, r) in cfg.identities.iter().enumerate() {
            rules.push((
                Glob::new(&r.pattern),
                zone(&r.timezone, &format!("time.identities[{i}].timezone"))?,
            ));
        }
        Ok(Zones {
            default,
            rules,
            memo: DashMap::default(),
        })
    }

    /// UTC everywhere.
    pub fn utc() -> Zones {
        Zones {
            default: Zone::new("UTC".into(), None),
            rules: Vec::new(),
            memo: DashMap::default(),
        }
    }

    fn pick(&self, identity: &str) -> &Zone {
        if self.rules.is_empty() {
            return &self.default;
        }
        let key = crate::baseline::hash_value(crate::baseline::Class::Identity, identity);
        let i = *self.memo.entry(key).or_insert_with(|| {
            self.rules
                .iter()
                .position(|(g, _)| g.matches(identity))
                .map_or(usize::MAX, |i| i)
        });
        self.rules.get(i).map_or(&self.default, |(_, z)| z)
    }

    /// The time-zone name used for an identity.
    pub fn name_for(&self, identity: &str) -> &str {
        &self.pick(identity).name
    }

    /// (weekday with 0 = Monday, hour, minute, offset from UTC in seconds) of `t` for an
    /// identity.
    pub fn local(&self, identity: &str, t: Timestamp) -> (u8, u8, u8, i32) {
        let offset = self.pick(identity).offset(t);
        let local = t.as_unix_seconds() + i64::from(offset);
        let days = local.div_euclid(86_400);
        let sod = local.rem_euclid(86_400);
        // 1970-01-01 was a Thursday.
        let weekday = (days + 3).rem_euclid(7) as u8;
        (weekday, (sod / 3600) as u8, (sod % 3600 / 60) as u8, offset)
    }
}

#[cfg(test)]
mod tests {
    use super::IdentityZone;
    use super::*;

    #[test]
    fn local_time_follows_daylight_saving() {
        let cfg = TimeConfig {
            timezone: "Europe/Berlin".into(),
            identities: vec![IdentityZone {
                pattern: "github:us-org/*".into(),
                timezone: "America/New_York".into(),
            }],
        };
        let z = Zones::new(&cfg).expect("zones");
        // 2026-03-28 is a Saturday; Berlin is UTC+1 before 2026-03-29 01:00 UTC, UTC+2 after.
        let before = Timestamp::parse("2026-03-28T01:30:00Z").expect("t");
        let after = Timestamp::parse("2026-03-30T00:30:00Z").expect("t");
        assert_eq!(z.local("vault:x", before), (5, 2, 30, 3600));
        assert_eq!(
            z.local("vault:x", after),
            (0, 2, 30, 7200),
            "02:30 local on both days"
        );
        assert_eq!(
            z.local("github:us-org/api", before).1,
            21,
            "New York, previous evening"
        );
        assert_eq!(z.name_for("github:us-org/api"), "America/New_York");
        assert_eq!(Zones::utc().local("x", before), (5, 1, 30, 0));
        let bad = TimeConfig {
            timezone: "Mars/Olympus".into(),
            identities: vec![],
        };
        assert!(
            Zones::new(&bad)
                .unwrap_err()
                .to_string()
                .contains("time.timezone")
        );
    }
}
