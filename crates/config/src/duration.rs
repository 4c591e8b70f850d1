//! Go-style durations (`metav1.Duration`): `"2m0s"`, `"1h30m"`, `"100ms"`, `"4h"`, `"0s"`.
//!
//! Parsing follows Go's `time.ParseDuration` (units `ns`, `us`/`µs`/`μs`, `ms`, `s`, `m`, `h`,
//! fractions and signs allowed, a bare `0` allowed, anything else needs a unit) and formatting
//! follows Go's `Duration.String` (`1h30m0s`, `1.5s`, `100ms`, `0s`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Errors from parsing a Go duration string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("invalid duration {0:?}")]
    Invalid(String),
    #[error("missing unit in duration {0:?}")]
    MissingUnit(String),
    #[error("unknown unit {unit:?} in duration {input:?}")]
    UnknownUnit { unit: String, input: String },
    #[error("duration {0:?} is out of range")]
    Overflow(String),
}

const NANOSECOND: u64 = 1;
const MICROSECOND: u64 = 1_000 * NANOSECOND;
const MILLISECOND: u64 = 1_000 * MICROSECOND;
const SECOND: u64 = 1_000 * MILLISECOND;
const MINUTE: u64 = 60 * SECOND;
const HOUR: u64 = 60 * MINUTE;

/// A signed span of time in nanoseconds, like Go's `time.Duration`. Negative values exist
/// (validation rejects them where upstream does), so this is not `std::time::Duration`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(i64);

impl Duration {
    pub const ZERO: Duration = Duration(0);

    pub const fn from_nanos(nanos: i64) -> Self {
        Duration(nanos)
    }
    pub const fn from_millis(millis: i64) -> Self {
        Duration(millis * MILLISECOND as i64)
    }
    pub const fn from_secs(secs: i64) -> Self {
        Duration(secs * SECOND as i64)
    }
    pub const fn from_mins(mins: i64) -> Self {
        Duration(mins * MINUTE as i64)
    }
    pub const fn from_hours(hours: i64) -> Self {
        Duration(hours * HOUR as i64)
    }
    pub const fn as_nanos(self) -> i64 {
        self.0
    }
    pub const fn as_millis(self) -> i64 {
        self.0 / MILLISECOND as i64
    }
    /// Whole seconds, truncated toward zero.
    pub const fn as_secs(self) -> i64 {
        self.0 / SECOND as i64
    }
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / SECOND as f64
    }
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }
    pub const fn is_negative(self) -> bool {
        self.0 < 0
    }
    /// The std duration, or `None` when negative.
    pub fn to_std(self) -> Option<std::time::Duration> {
        u64::try_from(self.0).ok().map(std::time::Duration::from_nanos)
    }
    /// Converts a std duration, saturating at Go's maximum (about 292 years).
    pub fn from_std(d: std::time::Duration) -> Self {
        Duration(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    }

    /// Parses a Go duration string such as `"1h30m"`, `"-1.5s"` or `"0"`.
    pub fn parse(input: &str) -> Result<Self, DurationError> {
        let invalid = || DurationError::Invalid(input.to_string());
        let overflow = || DurationError::Overflow(input.to_string());
        let mut s = input;
        let mut negative = false;
        if let Some(rest) = s.strip_prefix('-') {
            negative = true;
            s = rest;
        } else if let Some(rest) = s.strip_prefix('+') {
            s = rest;
        }
        if s == "0" {
            return Ok(Duration::ZERO);
        }
        if s.is_empty() {
            return Err(invalid());
        }
        let mut total: u64 = 0;
        while !s.is_empty() {
            let (whole, rest, had_whole) = leading_int(s).ok_or_else(overflow)?;
            s = rest;
            let mut frac = 0u64;
            let mut scale = 1f64;
            let mut had_frac = false;
            if let Some(rest) = s.strip_prefix('.') {
                let (f, sc, rest, digits) = leading_fraction(rest);
                frac = f;
                scale = sc;
                had_frac = digits;
                s = rest;
            }
            if !had_whole && !had_frac {
                return Err(invalid());
            }
            let unit_len = s.find(|c: char| c == '.' || c.is_ascii_digit()).unwrap_or(s.len());
            let (unit, rest) = s.split_at(unit_len);
            s = rest;
            if unit.is_empty() {
                return Err(DurationError::MissingUnit(input.to_string()));
            }
            let unit_nanos = match unit {
                "ns" => NANOSECOND,
                "us" | "\u{b5}s" | "\u{3bc}s" => MICROSECOND,
                "ms" => MILLISECOND,
                "s" => SECOND,
                "m" => MINUTE,
                "h" => HOUR,
                _ => {
                    return Err(DurationError::UnknownUnit { unit: unit.to_string(), input: input.to_string() });
                }
            };
            let mut part = whole.checked_mul(unit_nanos).ok_or_else(overflow)?;
            if frac > 0 {
                // Same float arithmetic as Go, so fractional results round identically.
                let extra = (frac as f64 * (unit_nanos as f64 / scale)) as u64;
                part = part.checked_add(extra).ok_or_else(overflow)?;
            }
            total = total.checked_add(part).ok_or_else(overflow)?;
            if total > i64::MAX as u64 + u64::from(negative) {
                return Err(overflow());
            }
        }
        if negative { Ok(Duration((total as i64).wrapping_neg())) } else { Ok(Duration(total as i64)) }
    }
}

/// Leading decimal integer: value, the rest, and whether any digit was consumed.
fn leading_int(s: &str) -> Option<(u64, &str, bool)> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let mut value: u64 = 0;
    for b in s[..end].bytes() {
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        if value > 1 << 63 {
            return None;
        }
    }
    Some((value, &s[end..], end > 0))
}

/// Leading fraction digits: value, scale (10^digits kept), the rest, and whether any digit
/// was consumed. Digits that would overflow are consumed but ignored, as in Go.
fn leading_fraction(s: &str) -> (u64, f64, &str, bool) {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let mut value: u64 = 0;
    let mut scale = 1f64;
    let mut overflowed = false;
    for b in s[..end].bytes() {
        if overflowed {
            continue;
        }
        match value.checked_mul(10).and_then(|v| v.checked_add(u64::from(b - b'0'))) {
            Some(v) if v <= 1 << 63 => {
                value = v;
                scale *= 10.0;
            }
            _ => overflowed = true,
        }
    }
    (value, scale, &s[end..], end > 0)
}

/// Writes `value / 10^precision` with trailing fractional zeros (and a bare point) dropped.
fn push_fraction(out: &mut String, value: u64, precision: u32) {
    let divisor = 10u64.pow(precision);
    out.push_str(&(value / divisor).to_string());
    let frac = value % divisor;
    if frac != 0 {
        let digits = format!("{frac:0width$}", width = precision as usize);
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        if self.0 < 0 {
            out.push('-');
        }
        let u = self.0.unsigned_abs();
        if u == 0 {
            return f.write_str("0s");
        }
        if u < SECOND {
            let (precision, unit) = if u < MICROSECOND {
                (0, "ns")
            } else if u < MILLISECOND {
                (3, "\u{b5}s")
            } else {
                (6, "ms")
            };
            push_fraction(&mut out, u, precision);
            out.push_str(unit);
        } else {
            let hours = u / HOUR;
            let minutes = (u % HOUR) / MINUTE;
            let rest = u % MINUTE;
            if hours > 0 {
                out.push_str(&format!("{hours}h{minutes}m"));
            } else if minutes > 0 {
                out.push_str(&format!("{minutes}m"));
            }
            push_fraction(&mut out, rest, 9);
            out.push('s');
        }
        f.write_str(&out)
    }
}

impl FromStr for Duration {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Duration::parse(s)
    }
}

impl From<std::time::Duration> for Duration {
    fn from(d: std::time::Duration) -> Self {
        Duration::from_std(d)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    /// Only strings, like `metav1.Duration`: `syncFrequency: 60` is an error upstream too.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Duration::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// For `logging.flushFrequency` (`TimeOrMetaDuration`): a duration string or an integer
/// number of nanoseconds.
pub(crate) fn string_or_nanos<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Nanos(i64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Nanos(n) => Ok(Duration(n)),
        Raw::Text(s) => Duration::parse(&s).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Duration {
        Duration::parse(s).unwrap()
    }

    #[test]
    fn parses_go_duration_strings() {
        assert_eq!(d("2m0s"), Duration::from_mins(2));
        assert_eq!(d("1h30m"), Duration::from_mins(90));
        assert_eq!(d("100ms"), Duration::from_millis(100));
        assert_eq!(d("4h"), Duration::from_hours(4));
        assert_eq!(d("0s"), Duration::ZERO);
        assert_eq!(d("0"), Duration::ZERO);
        assert_eq!(d("1m30s"), Duration::from_secs(90));
        assert_eq!(d("1.5h"), Duration::from_mins(90));
        assert_eq!(d(".5s"), Duration::from_millis(500));
        assert_eq!(d("1.s"), Duration::from_secs(1));
        assert_eq!(d("-1.5s"), Duration::from_millis(-1500));
        assert_eq!(d("+3s"), Duration::from_secs(3));
        assert_eq!(d("1us"), Duration::from_nanos(1000));
        assert_eq!(d("1µs"), Duration::from_nanos(1000));
        assert_eq!(d("1μs"), Duration::from_nanos(1000));
        assert_eq!(d("1h1m1s1ms1us1ns"), Duration::from_nanos(3_661_001_001_001));
    }

    #[test]
    fn rejects_what_go_rejects() {
        for bad in ["", "1", "s", ".s", "1x", "1.2.3s", "-", "1 s", " 1s", "9223372036854775808ns"] {
            assert!(Duration::parse(bad).is_err(), "{bad:?} should fail");
        }
        assert_eq!(Duration::parse("10"), Err(DurationError::MissingUnit("10".into())));
        assert!(matches!(Duration::parse("3d"), Err(DurationError::UnknownUnit { .. })));
    }

    #[test]
    fn formats_like_go() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(1), "1ns"),
            (Duration::from_nanos(1_100), "1.1µs"),
            (Duration::from_millis(100), "100ms"),
            (Duration::from_micros_for_test(2_200), "2.2ms"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_mins(2), "2m0s"),
            (Duration::from_mins(90), "1h30m0s"),
            (Duration::from_hours(4), "4h0m0s"),
            (Duration::from_millis(-1500), "-1.5s"),
            (Duration::from_nanos(i64::MIN), "-2562047h47m16.854775808s"),
        ];
        for (dur, text) in cases {
            assert_eq!(dur.to_string(), text);
        }
    }

    impl Duration {
        fn from_micros_for_test(us: i64) -> Self {
            Duration(us * 1000)
        }
    }

    #[test]
    fn duration_round_trips_through_text() {
        for s in ["2m0s", "1h30m0s", "100ms", "4h0m0s", "0s", "1.5s", "-3m7s", "1ns", "2.5µs"] {
            assert_eq!(d(s).to_string(), s);
            assert_eq!(d(&d(s).to_string()), d(s));
        }
        for s in ["1h30m", "4h", "90s", "1.5h"] {
            assert_eq!(d(&d(s).to_string()), d(s));
        }
    }

    #[test]
    fn serde_uses_go_strings() {
        let v: Duration = serde_yaml::from_str("1m30s").unwrap();
        assert_eq!(v, Duration::from_secs(90));
        assert_eq!(serde_json::to_string(&v).unwrap(), "\"1m30s\"");
        assert!(serde_yaml::from_str::<Duration>("60").is_err());
    }

    #[test]
    fn flush_frequency_accepts_nanoseconds_or_text() {
        #[derive(Deserialize)]
        struct T {
            #[serde(deserialize_with = "string_or_nanos")]
            f: Duration,
        }
        let t: T = serde_yaml::from_str("f: 5000000000").unwrap();
        assert_eq!(t.f, Duration::from_secs(5));
        let t: T = serde_yaml::from_str("f: 5s").unwrap();
        assert_eq!(t.f, Duration::from_secs(5));
    }

    #[test]
    fn std_conversion_rejects_negative() {
        assert_eq!(Duration::from_secs(2).to_std(), Some(std::time::Duration::from_secs(2)));
        assert_eq!(Duration::from_secs(-2).to_std(), None);
    }
}
