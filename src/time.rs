//! Event time: a UTC instant with microsecond precision, and the parsers for the timestamp
//! spellings the supported formats use (RFC 3339 with or without fraction and offset, the
//! space-separated form some pipelines re-serialize to, Unix seconds in JWT claims, and the
//! `"Aug 1, 2024, 11:45:22 AM"` form CloudTrail uses for credential expiry).
//!
//! Hand-written rather than taken from a date crate because it sits on the per-record hot path
//! and only needs civil-calendar arithmetic in UTC.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const MICROS_PER_SECOND: i64 = 1_000_000;
const SECONDS_PER_DAY: i64 = 86_400;

/// A UTC instant, microseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

/// Why a timestamp string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid timestamp {value:?}: {why}")]
pub struct TimeError {
    /// The offending text (truncated to 64 bytes).
    pub value: String,
    /// What was wrong with it.
    pub why: &'static str,
}

impl TimeError {
    fn new(value: &str, why: &'static str) -> Self {
        let mut end = value.len().min(64);
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        TimeError {
            value: value[..end].to_string(),
            why,
        }
    }
}

impl Timestamp {
    /// From microseconds since the epoch.
    pub const fn from_micros(micros: i64) -> Self {
        Timestamp(micros)
    }

    /// From whole seconds since the epoch (JWT `iat`/`exp`). `None` when out of range.
    pub fn from_unix_seconds(secs: i64) -> Option<Self> {
        secs.checked_mul(MICROS_PER_SECOND).map(Timestamp)
    }

    /// Microseconds since the epoch.
    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// Whole seconds since the epoch (floor).
    pub const fn as_unix_seconds(self) -> i64 {
        self.0.div_euclid(MICROS_PER_SECOND)
    }

    /// The current wall-clock time. Only for housekeeping bounds, never for detection.
    pub fn now() -> Self {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(d.as_micros() as i64)
    }

    /// This instant plus a number of seconds (saturating).
    pub fn plus_seconds(self, secs: i64) -> Self {
        Timestamp(
            self.0
                .saturating_add(secs.saturating_mul(MICROS_PER_SECOND)),
        )
    }

    /// Parses RFC 3339 (`2024-01-02T03:04:05.123456Z`, `+02:00` offsets), and the common
    /// variants: a space instead of `T`, no zone (taken as UTC), `+0200` offsets, up to nine
    /// fractional digits (kept to the microsecond).
    pub fn parse(s: &str) -> Result<Self, TimeError> {
        let b = s.as_bytes();
        if b.len() < 19 {
            return Err(TimeError::new(s, "too short for a date and time"));
        }
        let year = digits(b, 0, 4).ok_or_else(|| TimeError::new(s, "bad year"))?;
        if b[4] != b'-' || b[7] != b'-' {
            return Err(TimeError::new(s, "expected YYYY-MM-DD"));
        }
        let month = digits(b, 5, 2).ok_or_else(|| TimeError::new(s, "bad month"))?;
        let day = digits(b, 8, 2).ok_or_else(|| TimeError::new(s, "bad day"))?;
        if !(b[10] == b'T' || b[10] == b't' || b[10] == b' ') {
            return Err(TimeError::new(s, "expected 'T' between date and time"));
        }
        let hour = digits(b, 11, 2).ok_or_else(|| TimeError::new(s, "bad hour"))?;
        if b[13] != b':' || b[16] != b':' {
            return Err(TimeError::new(s, "expected HH:MM:SS"));
        }
        let minute = digits(b, 14, 2).ok_or_else(|| TimeError::new(s, "bad minute"))?;
        // Leap seconds (60) are folded into the next second, as most systems do.
        let second = digits(b, 17, 2).ok_or_else(|| TimeError::new(s, "bad second"))?;
        if !(1..=12).contains(&month)
            || day < 1
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 60
        {
            return Err(TimeError::new(s, "field out of range"));
        }
        let mut i = 19;
        let mut micros: i64 = 0;
        if i < b.len() && (b[i] == b'.' || b[i] == b',') {
            i += 1;
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                if i - start < 6 {
                    micros = micros * 10 + i64::from(b[i] - b'0');
                }
                i += 1;
            }
            let n = i - start;
            if n == 0 {
                return Err(TimeError::new(s, "empty fraction"));
            }
            for _ in n..6 {
                micros *= 10;
            }
        }
        let offset_secs: i64 = if i == b.len() {
            0
        } else {
            match b[i] {
                b'Z' | b'z' if i + 1 == b.len() => 0,
                b'+' | b'-' => {
                    let sign = if b[i] == b'-' { -1 } else { 1 };
                    let rest = &b[i + 1..];
                    let (h, m) = match rest.len() {
                        5 if rest[2] == b':' => (digits(rest, 0, 2), digits(rest, 3, 2)),
                        4 => (digits(rest, 0, 2), digits(rest, 2, 2)),
                        2 => (digits(rest, 0, 2), Some(0)),
                        _ => (None, None),
                    };
                    match (h, m) {
                        (Some(h), Some(m)) if h <= 23 && m <= 59 => sign * (h * 3600 + m * 60),
                        _ => return Err(TimeError::new(s, "bad zone offset")),
                    }
                }
                _ => return Err(TimeError::new(s, "unexpected text after the time")),
            }
        };
        let days = days_from_civil(year, month, day);
        let secs = days * SECONDS_PER_DAY + hour * 3600 + minute * 60 + second - offset_secs;
        Ok(Timestamp(secs * MICROS_PER_SECOND + micros))
    }

    /// Parses CloudTrail's credential expiry spelling, `Aug 1, 2024, 11:45:22 AM` (UTC).
    pub fn parse_cloudtrail_expiration(s: &str) -> Result<Self, TimeError> {
        let bad = || TimeError::new(s, "expected 'Mon D, YYYY, H:MM:SS AM'");
        let mut parts = s.split(", ");
        let (md, year, time) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), Some(c), None) => (a, b, c),
            _ => return Err(bad()),
        };
        let (mon, day) = md.split_once(' ').ok_or_else(bad)?;
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let month = MONTHS.iter().position(|m| *m == mon).ok_or_else(bad)? as i64 + 1;
        let day: i64 = day.parse().map_err(|_| bad())?;
        let year: i64 = year.parse().map_err(|_| bad())?;
        let (clock, ampm) = time.split_once(' ').ok_or_else(bad)?;
        let mut hms = clock.split(':');
        let (h, m, sec) = match (hms.next(), hms.next(), hms.next(), hms.next()) {
            (Some(h), Some(m), Some(sec), None) => (h, m, sec),
            _ => return Err(bad()),
        };
        let mut h: i64 = h.parse().map_err(|_| bad())?;
        let m: i64 = m.parse().map_err(|_| bad())?;
        let sec: i64 = sec.parse().map_err(|_| bad())?;
        if !(1..=12).contains(&h) || m > 59 || sec > 59 {
            return Err(bad());
        }
        match ampm {
            "AM" => h %= 12,
            "PM" => h = h % 12 + 12,
            _ => return Err(bad()),
        }
        if !(1..=9999).contains(&year) || day < 1 || day > days_in_month(year, month) {
            return Err(bad());
        }
        let days = days_from_civil(year, month, day);
        Ok(Timestamp(
            (days * SECONDS_PER_DAY + h * 3600 + m * 60 + sec) * MICROS_PER_SECOND,
        ))
    }

    /// The civil date and time of day in UTC: (year, month, day, hour, minute, second, micros).
    pub fn to_civil(self) -> (i64, i64, i64, i64, i64, i64, i64) {
        let secs = self.0.div_euclid(MICROS_PER_SECOND);
        let micros = self.0.rem_euclid(MICROS_PER_SECOND);
        let days = secs.div_euclid(SECONDS_PER_DAY);
        let sod = secs.rem_euclid(SECONDS_PER_DAY);
        let (y, m, d) = civil_from_days(days);
        (y, m, d, sod / 3600, sod % 3600 / 60, sod % 60, micros)
    }

    /// Writes RFC 3339 in UTC: no fraction when whole seconds, milliseconds when the
    /// microseconds are zero, microseconds otherwise.
    pub fn write_rfc3339(self, out: &mut String) {
        let (buf, len) = self.rfc3339_bytes();
        // Only ASCII digits and separators were written.
        out.push_str(std::str::from_utf8(&buf[..len]).unwrap_or_default());
    }

    /// RFC 3339 in UTC (as [`Timestamp::write_rfc3339`]) in a stack buffer: (bytes, length).
    pub fn rfc3339_bytes(self) -> ([u8; 27], usize) {
        let (y, mo, d, h, mi, s, us) = self.to_civil();
        let mut buf = [0u8; 27];
        put(&mut buf[0..4], y);
        buf[4] = b'-';
        put(&mut buf[5..7], mo);
        buf[7] = b'-';
        put(&mut buf[8..10], d);
        buf[10] = b'T';
        put(&mut buf[11..13], h);
        buf[13] = b':';
        put(&mut buf[14..16], mi);
        buf[16] = b':';
        put(&mut buf[17..19], s);
        let mut end = 19;
        if us != 0 {
            buf[19] = b'.';
            if us % 1000 == 0 {
                put(&mut buf[20..23], us / 1000);
                end = 23;
            } else {
                put(&mut buf[20..26], us);
                end = 26;
            }
        }
        buf[end] = b'Z';
        (buf, end + 1)
    }

    /// RFC 3339 in UTC as a new string.
    pub fn to_rfc3339(self) -> String {
        let mut s = String::with_capacity(27);
        self.write_rfc3339(&mut s);
        s
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = String::with_capacity(27);
        self.write_rfc3339(&mut buf);
        s.serialize_str(&buf)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Timestamp::parse(&s).map_err(serde::de::Error::custom)
    }
}

fn put(dst: &mut [u8], mut v: i64) {
    for slot in dst.iter_mut().rev() {
        *slot = b'0' + (v.rem_euclid(10)) as u8;
        v /= 10;
    }
}

fn digits(b: &[u8], at: usize, n: usize) -> Option<i64> {
    let mut v = 0i64;
    for &c in b.get(at..at + n)? {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + i64::from(c - b'0');
    }
    Some(v)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(y) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub(crate) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date of a day count since 1970-01-01.
pub(crate) fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc3339_variants_to_the_same_instant() {
        let a = Timestamp::parse("2024-02-29T23:59:58Z").unwrap();
        assert_eq!(a.as_unix_seconds(), 1_709_251_198);
        assert_eq!(Timestamp::parse("2024-02-29 23:59:58").unwrap(), a);
        assert_eq!(Timestamp::parse("2024-03-01T01:59:58+02:00").unwrap(), a);
        assert_eq!(Timestamp::parse("2024-02-29T20:59:58-0300").unwrap(), a);
        let f = Timestamp::parse("2024-02-29T23:59:58.123456789Z").unwrap();
        assert_eq!(f.as_micros() - a.as_micros(), 123_456);
        let g = Timestamp::parse("2024-06-02 19:41:40.000000000").unwrap();
        assert_eq!(g.to_rfc3339(), "2024-06-02T19:41:40Z");
    }

    #[test]
    fn rejects_impossible_dates_and_junk() {
        for bad in [
            "2023-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01",
            "2024-01-01T00:00:00Zjunk",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00+2:00",
            "yesterday at noon",
            "2024-01-01T00:00:00+99:00",
        ] {
            assert!(Timestamp::parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn formats_with_the_shortest_exact_fraction() {
        let t = Timestamp::from_micros(1_700_000_000_000_000);
        assert_eq!(t.to_rfc3339(), "2023-11-14T22:13:20Z");
        assert_eq!(
            Timestamp::from_micros(1_700_000_000_120_000).to_rfc3339(),
            "2023-11-14T22:13:20.120Z"
        );
        assert_eq!(
            Timestamp::from_micros(1_700_000_000_000_001).to_rfc3339(),
            "2023-11-14T22:13:20.000001Z"
        );
        for s in ["1999-12-31T23:59:59.5Z", "2038-01-19T03:14:08.000007Z"] {
            let t = Timestamp::parse(s).unwrap();
            assert_eq!(Timestamp::parse(&t.to_rfc3339()).unwrap(), t);
        }
    }

    #[test]
    fn civil_round_trip_over_four_centuries() {
        for z in (-200_000..200_000).step_by(37) {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
    }

    #[test]
    fn parses_cloudtrail_expiration() {
        let t = Timestamp::parse_cloudtrail_expiration("Aug 1, 2024, 11:45:22 AM").unwrap();
        assert_eq!(t.to_rfc3339(), "2024-08-01T11:45:22Z");
        let t = Timestamp::parse_cloudtrail_expiration("Nov 30, 2024, 8:43:17 PM").unwrap();
        assert_eq!(t.to_rfc3339(), "2024-11-30T20:43:17Z");
        let t = Timestamp::parse_cloudtrail_expiration("Jan 5, 2024, 12:00:01 AM").unwrap();
        assert_eq!(t.to_rfc3339(), "2024-01-05T00:00:01Z");
        assert!(Timestamp::parse_cloudtrail_expiration("2024-08-01T11:45:22Z").is_err());
    }
}
