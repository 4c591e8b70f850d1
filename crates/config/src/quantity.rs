//! A minimal Kubernetes resource quantity (`resource.Quantity`): `"100Mi"`, `"1Gi"`, `"200m"`,
//! `"1.5"`, `"1e3"`. The value is kept as milli-units (`i128`, rounded up like Go's
//! `MilliValue`) next to the original text, which is what gets serialized back.
//!
//! Percentages such as `"10%"` are not quantities; eviction thresholds parse them separately.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Errors from parsing a quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("quantity {0:?} must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")]
    Format(String),
    #[error("unknown quantity suffix {suffix:?} in {input:?}")]
    Suffix { suffix: String, input: String },
    #[error("quantity {0:?} is out of range")]
    Range(String),
}

/// A parsed quantity. Equality and ordering compare the value, not the spelling.
#[derive(Debug, Clone)]
pub struct Quantity {
    text: String,
    milli: i128,
}

/// Largest number of significant digits accepted; beyond this `i128` arithmetic could overflow.
const MAX_DIGITS: usize = 30;

impl Quantity {
    /// Parses Kubernetes quantity syntax: `<sign><digits>[.<digits>]<suffix>` where the suffix is
    /// a binary SI suffix (`Ki` … `Ei`), a decimal SI suffix (`n u m "" k M G T P E`) or a decimal
    /// exponent (`e3`, `E-2`).
    pub fn parse(input: &str) -> Result<Self, QuantityError> {
        let format = || QuantityError::Format(input.to_string());
        let range = || QuantityError::Range(input.to_string());
        let (negative, body) = match input.as_bytes().first() {
            Some(b'-') => (true, &input[1..]),
            Some(b'+') => (false, &input[1..]),
            Some(_) => (false, input),
            None => return Err(format()),
        };
        let number_len = body.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(body.len());
        let (number, suffix) = body.split_at(number_len);
        let (whole, frac) = match number.split_once('.') {
            Some((w, f)) => (w, f),
            None => (number, ""),
        };
        if frac.contains('.') || (whole.is_empty() && frac.is_empty()) {
            return Err(format());
        }
        // mantissa = digits of whole+frac; value = mantissa * 10^(-frac.len()) * multiplier
        let digits = format!("{whole}{frac}");
        let digits = digits.trim_start_matches('0');
        if digits.len() > MAX_DIGITS {
            return Err(range());
        }
        let mantissa: i128 = if digits.is_empty() { 0 } else { digits.parse().map_err(|_| format())? };
        let (binary_power, decimal_exp) = parse_suffix(suffix).ok_or_else(|| {
            if suffix.starts_with(['e', 'E']) && suffix.len() > 1 {
                format()
            } else {
                QuantityError::Suffix { suffix: suffix.to_string(), input: input.to_string() }
            }
        })?;
        // milli = mantissa * 1024^binary_power * 10^(decimal_exp + 3 - frac.len())
        let mut value = mantissa.checked_mul(1i128 << (10 * binary_power)).ok_or_else(range)?;
        let exp10 = decimal_exp + 3 - frac.len() as i64;
        if exp10 >= 0 {
            let factor = u32::try_from(exp10).ok().and_then(|e| 10i128.checked_pow(e)).ok_or_else(range)?;
            value = value.checked_mul(factor).ok_or_else(range)?;
        } else {
            // Round up (toward +infinity on the magnitude before the sign), like Go's MilliValue.
            value = match u32::try_from(-exp10).ok().and_then(|e| 10i128.checked_pow(e)) {
                Some(divisor) => (value + divisor - 1) / divisor,
                None => i128::from(value > 0),
            };
        }
        let milli = if negative { -value } else { value };
        Ok(Quantity { text: input.to_string(), milli })
    }

    /// A quantity from a whole number of units, spelled as that number.
    pub fn from_units(units: i64) -> Self {
        Quantity { text: units.to_string(), milli: i128::from(units) * 1000 }
    }

    /// The value in thousandths of a unit (millicores for cpu), rounded up.
    pub fn milli_value(&self) -> i128 {
        self.milli
    }

    /// The value in whole units (bytes for memory), rounded up like Go's `Value`.
    pub fn value(&self) -> i128 {
        if self.milli >= 0 { (self.milli + 999) / 1000 } else { self.milli / 1000 }
    }

    /// The text this quantity was parsed from.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn is_zero(&self) -> bool {
        self.milli == 0
    }

    pub fn is_negative(&self) -> bool {
        self.milli < 0
    }
}

/// Returns (power of 1024, power of 10) for a suffix.
fn parse_suffix(suffix: &str) -> Option<(u32, i64)> {
    let binary = match suffix {
        "Ki" => Some(1),
        "Mi" => Some(2),
        "Gi" => Some(3),
        "Ti" => Some(4),
        "Pi" => Some(5),
        "Ei" => Some(6),
        _ => None,
    };
    if let Some(p) = binary {
        return Some((p, 0));
    }
    let decimal = match suffix {
        "n" => Some(-9),
        "u" => Some(-6),
        "m" => Some(-3),
        "" => Some(0),
        "k" => Some(3),
        "M" => Some(6),
        "G" => Some(9),
        "T" => Some(12),
        "P" => Some(15),
        "E" => Some(18),
        _ => None,
    };
    if let Some(e) = decimal {
        return Some((0, e));
    }
    let exponent = suffix.strip_prefix(['e', 'E'])?;
    let digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    exponent.parse::<i64>().ok().map(|e| (0, e))
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.milli == other.milli
    }
}
impl Eq for Quantity {}
impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.milli.cmp(&other.milli)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Quantity {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Quantity::parse(s)
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    /// Accepts a string or a plain YAML/JSON number (`cpu: 2`), as the upstream decoder does.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = deserializer.deserialize_any(crate::scalar::ScalarText)?;
        Quantity::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap()
    }

    #[test]
    fn binary_suffixes_are_powers_of_1024() {
        assert_eq!(q("100Mi").value(), 100 * 1024 * 1024);
        assert_eq!(q("1Gi").value(), 1 << 30);
        assert_eq!(q("1Ki").value(), 1024);
        assert_eq!(q("1Ei").value(), 1 << 60);
        assert_eq!(q("1.5Gi").value(), 3 << 29);
    }

    #[test]
    fn decimal_suffixes_and_exponents() {
        assert_eq!(q("200m").milli_value(), 200);
        assert_eq!(q("1.5").milli_value(), 1500);
        assert_eq!(q("2").milli_value(), 2000);
        assert_eq!(q("1k").value(), 1000);
        assert_eq!(q("1M").value(), 1_000_000);
        assert_eq!(q("1G").value(), 1_000_000_000);
        assert_eq!(q("1E").value(), 1_000_000_000_000_000_000);
        assert_eq!(q("1e3").value(), 1000);
        assert_eq!(q("1E3").value(), 1000);
        assert_eq!(q("1e-3").milli_value(), 1);
        assert_eq!(q("-1").milli_value(), -1000);
        assert_eq!(q("+5").value(), 5);
        assert_eq!(q(".5").milli_value(), 500);
        assert_eq!(q("0").milli_value(), 0);
    }

    #[test]
    fn sub_milli_values_round_up() {
        assert_eq!(q("1n").milli_value(), 1);
        assert_eq!(q("1u").milli_value(), 1);
        assert_eq!(q("1500u").milli_value(), 2);
        assert_eq!(q("100m").value(), 1);
        assert_eq!(q("1e-30").milli_value(), 1);
    }

    #[test]
    fn rejects_non_quantities() {
        for bad in ["", "10%", "Mi", "1 Mi", "1.2.3", ".", "1Mb", "1e", "abc", "1ee3", "--1", " 1"] {
            assert!(Quantity::parse(bad).is_err(), "{bad:?} should fail");
        }
        assert!(Quantity::parse("1000000000000000000000000000000000Ei").is_err());
    }

    #[test]
    fn keeps_original_text_and_compares_by_value() {
        let a = q("1Gi");
        assert_eq!(a.to_string(), "1Gi");
        assert_eq!(serde_json::to_string(&a).unwrap(), "\"1Gi\"");
        assert_eq!(a, q("1024Mi"));
        assert!(q("500m") < q("1"));
    }

    #[test]
    fn deserializes_from_strings_and_numbers() {
        let m: std::collections::BTreeMap<String, Quantity> =
            serde_yaml::from_str("cpu: 2\nmemory: 4Gi\nx: 0.5\n").unwrap();
        assert_eq!(m["cpu"].milli_value(), 2000);
        assert_eq!(m["cpu"].as_str(), "2");
        assert_eq!(m["memory"].value(), 4 << 30);
        assert_eq!(m["x"].milli_value(), 500);
        assert!(serde_yaml::from_str::<Quantity>("10%").is_err());
    }
}
