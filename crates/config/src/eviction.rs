//! Eviction threshold syntax (pkg/kubelet/eviction/helpers.go): signal names and values that
//! are either a quantity (`100Mi`) or a percentage (`10%`). Used by validation and by the
//! eviction manager.

use crate::duration::Duration;
use crate::quantity::Quantity;

/// Errors in one eviction statement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ThresholdError {
    #[error("unsupported eviction signal {0:?}")]
    UnknownSignal(String),
    #[error("percentage must be between 0% and 100%")]
    PercentageRange,
    #[error("must be a percentage or a quantity")]
    Syntax,
    #[error("must be positive")]
    NotPositive,
    #[error("must not be negative")]
    Negative,
    #[error("must be a duration: {0}")]
    Duration(String),
}

/// Every signal the kubelet knows.
pub const SIGNALS: &[&str] = &[
    "memory.available",
    "allocatableMemory.available",
    "nodefs.available",
    "nodefs.inodesFree",
    "imagefs.available",
    "imagefs.inodesFree",
    "containerfs.available",
    "containerfs.inodesFree",
    "pid.available",
];

/// A threshold value: an absolute quantity or a fraction (0.0..=1.0) of capacity.
#[derive(Debug, Clone, PartialEq)]
pub enum ThresholdValue {
    Quantity(Quantity),
    Percentage(f32),
}

fn check_signal(signal: &str) -> Result<(), ThresholdError> {
    if SIGNALS.contains(&signal) { Ok(()) } else { Err(ThresholdError::UnknownSignal(signal.to_string())) }
}

fn parse_percentage(value: &str) -> Result<f32, ThresholdError> {
    let number = value.trim_end_matches('%');
    number.parse::<f32>().map(|p| p / 100.0).map_err(|_| ThresholdError::Syntax)
}

/// Parses an `evictionHard`/`evictionSoft` entry. `Ok(None)` means the threshold is disabled
/// (`0%` or `100%`), as upstream.
pub fn parse_threshold(signal: &str, value: &str) -> Result<Option<ThresholdValue>, ThresholdError> {
    check_signal(signal)?;
    if value.ends_with('%') {
        if value == "0%" || value == "100%" {
            return Ok(None);
        }
        let p = parse_percentage(value)?;
        if !(0.0..=1.0).contains(&p) {
            return Err(ThresholdError::PercentageRange);
        }
        return Ok(Some(ThresholdValue::Percentage(p)));
    }
    let q = Quantity::parse(value).map_err(|_| ThresholdError::Syntax)?;
    if q.is_negative() || q.is_zero() {
        return Err(ThresholdError::NotPositive);
    }
    Ok(Some(ThresholdValue::Quantity(q)))
}

/// Parses an `evictionMinimumReclaim` entry.
pub fn parse_minimum_reclaim(signal: &str, value: &str) -> Result<ThresholdValue, ThresholdError> {
    check_signal(signal)?;
    if value.ends_with('%') {
        let p = parse_percentage(value)?;
        if p <= 0.0 {
            return Err(ThresholdError::NotPositive);
        }
        return Ok(ThresholdValue::Percentage(p));
    }
    let q = Quantity::parse(value).map_err(|_| ThresholdError::Syntax)?;
    if q.is_negative() {
        return Err(ThresholdError::Negative);
    }
    Ok(ThresholdValue::Quantity(q))
}

/// Parses an `evictionSoftGracePeriod` entry.
pub fn parse_grace_period(signal: &str, value: &str) -> Result<Duration, ThresholdError> {
    check_signal(signal)?;
    let d = Duration::parse(value).map_err(|e| ThresholdError::Duration(e.to_string()))?;
    if d.is_negative() {
        return Err(ThresholdError::Negative);
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_are_quantities_or_percentages() {
        assert_eq!(
            parse_threshold("memory.available", "100Mi").unwrap(),
            Some(ThresholdValue::Quantity(Quantity::parse("100Mi").unwrap()))
        );
        assert_eq!(parse_threshold("nodefs.available", "10%").unwrap(), Some(ThresholdValue::Percentage(0.1)));
        assert_eq!(parse_threshold("nodefs.available", "0%").unwrap(), None);
        assert_eq!(parse_threshold("nodefs.available", "100%").unwrap(), None);
    }

    #[test]
    fn bad_thresholds_are_rejected() {
        assert_eq!(parse_threshold("memory.free", "1Gi"), Err(ThresholdError::UnknownSignal("memory.free".into())));
        assert_eq!(parse_threshold("nodefs.available", "150%"), Err(ThresholdError::PercentageRange));
        assert_eq!(parse_threshold("nodefs.available", "-5%"), Err(ThresholdError::PercentageRange));
        assert_eq!(parse_threshold("memory.available", "0"), Err(ThresholdError::NotPositive));
        assert_eq!(parse_threshold("memory.available", "lots"), Err(ThresholdError::Syntax));
    }

    #[test]
    fn reclaim_and_grace_period_rules() {
        assert!(parse_minimum_reclaim("memory.available", "0").is_ok());
        assert_eq!(parse_minimum_reclaim("memory.available", "0%"), Err(ThresholdError::NotPositive));
        assert_eq!(parse_minimum_reclaim("memory.available", "-1"), Err(ThresholdError::Negative));
        assert_eq!(parse_grace_period("memory.available", "1m30s").unwrap(), Duration::from_secs(90));
        assert!(parse_grace_period("memory.available", "90").is_err());
        assert_eq!(parse_grace_period("memory.available", "-1s"), Err(ThresholdError::Negative));
    }
}
