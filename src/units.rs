//! Units of configuration values: spans of time written as `90s`, `15m`, `24h`, `7d`, `2w`.
//! A primitive: it depends on nothing else in the crate.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// A span of time written as `90s`, `15m`, `24h`, `7d` or `2w` in the config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(u64);

impl Duration {
    /// From seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Duration(secs)
    }

    /// In seconds.
    pub const fn as_secs(self) -> u64 {
        self.0
    }
}

impl FromStr for Duration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let split = s
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| format!("{s:?} has no unit (s, m, h, d, w)"))?;
        let (num, unit) = s.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{s:?} does not start with a number"))?;
        let mult = match unit.trim() {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 604_800,
            other => return Err(format!("unknown unit {other:?} in {s:?} (s, m, h, d, w)")),
        };
        n.checked_mul(mult)
            .map(Duration)
            .ok_or_else(|| format!("{s:?} is too long"))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        for (unit, n) in [("w", 604_800), ("d", 86_400), ("h", 3600), ("m", 60)] {
            if s != 0 && s.is_multiple_of(n) {
                return write!(f, "{}{unit}", s / n);
            }
        }
        write!(f, "{s}s")
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print() {
        for (s, secs) in [
            ("90s", 90),
            ("15m", 900),
            ("24h", 86_400),
            ("7d", 604_800),
            ("2w", 1_209_600),
        ] {
            let d: Duration = s.parse().unwrap();
            assert_eq!(d.as_secs(), secs);
        }
        assert_eq!(Duration::from_secs(86_400).to_string(), "1d");
        assert_eq!(Duration::from_secs(90).to_string(), "90s");
        assert!("10".parse::<Duration>().is_err());
        assert!("10y".parse::<Duration>().is_err());
    }
}
