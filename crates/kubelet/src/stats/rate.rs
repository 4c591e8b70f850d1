//! CPU usage in nano-cores needs two samples of the cumulative counter: the previous sample is
//! kept per container (and per pod, and for the node), and dropped once its owner is gone.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

/// A cumulative CPU counter read at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuSample {
    pub timestamp_nanos: i64,
    pub usage_nanos: u64,
}

/// Nano-cores used between two samples; None when time did not advance or the counter went
/// back (a new container instance with the same key).
pub fn nano_cores(prev: CpuSample, cur: CpuSample) -> Option<u64> {
    let dt = cur.timestamp_nanos.checked_sub(prev.timestamp_nanos).filter(|d| *d > 0)? as u128;
    let du = cur.usage_nanos.checked_sub(prev.usage_nanos)? as u128;
    u64::try_from(du * 1_000_000_000 / dt).ok()
}

/// At most this many keys are remembered.
const MAX_KEYS: usize = 20_000;

#[derive(Debug, Default)]
pub struct CpuRates {
    /// key → (last sample, rate computed when it was taken)
    last: Mutex<HashMap<String, (CpuSample, Option<u64>)>>,
}

impl CpuRates {
    /// The rate at `cur`, from the previous sample of `key`; remembers `cur`. A repeated sample
    /// (the runtime served a cached figure) gives the rate computed when it was new.
    pub fn observe(&self, key: &str, cur: CpuSample) -> Option<u64> {
        let mut m = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let rate = match m.get(key) {
            Some((prev, rate)) if prev.timestamp_nanos == cur.timestamp_nanos => return *rate,
            Some((prev, _)) if prev.timestamp_nanos > cur.timestamp_nanos => return None,
            Some((prev, _)) => nano_cores(*prev, cur),
            None => None,
        };
        if m.len() >= MAX_KEYS && !m.contains_key(key) {
            return rate;
        }
        m.insert(key.to_string(), (cur, rate));
        rate
    }

    /// Forgets every key not in `live`.
    pub fn retain(&self, live: &HashSet<String>) {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).retain(|k, _| live.contains(k));
    }

    pub fn len(&self) -> usize {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    #[test]
    fn half_a_core_over_two_seconds() {
        let a = CpuSample { timestamp_nanos: 10 * S, usage_nanos: 5 * S as u64 };
        let b = CpuSample { timestamp_nanos: 12 * S, usage_nanos: 6 * S as u64 };
        assert_eq!(nano_cores(a, b), Some(500_000_000));
        assert_eq!(nano_cores(b, a), None, "time went back");
        let reset = CpuSample { timestamp_nanos: 13 * S, usage_nanos: 1 };
        assert_eq!(nano_cores(b, reset), None, "counter went back");
    }

    #[test]
    fn rates_need_two_samples_and_forget_gone_keys() {
        let r = CpuRates::default();
        let s = |t: i64, u: u64| CpuSample { timestamp_nanos: t * S, usage_nanos: u };
        assert_eq!(r.observe("c1", s(1, 0)), None);
        assert_eq!(r.observe("c1", s(2, 2_000_000_000)), Some(2_000_000_000));
        // The same sample again: the same answer, not "no time passed".
        assert_eq!(r.observe("c1", s(2, 2_000_000_000)), Some(2_000_000_000));
        assert_eq!(r.observe("c2", s(2, 0)), None);
        r.retain(&HashSet::from(["c2".to_string()]));
        assert_eq!(r.len(), 1);
        assert_eq!(r.observe("c1", s(3, 3_000_000_000)), None, "forgotten");
    }
}
