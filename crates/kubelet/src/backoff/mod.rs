//! One exponential backoff: a delay that starts at `initial` and doubles up to `max`. The rooms
//! that retry (pod worker, CrashLoopBackOff table, runtime connection, volume reconciler, CSI
//! plugin watcher, PLEG event stream) each keep their own `initial`/`max` and use this to step.
//! [`Keyed`] is the per-key table over it (container restarts, image pulls).

mod keyed;

pub use keyed::Keyed;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exponential {
    pub initial: Duration,
    pub max: Duration,
}

impl Exponential {
    pub const fn new(initial: Duration, max: Duration) -> Self {
        Self { initial, max }
    }

    /// The delay after `prev`: twice `prev`, at least `initial`, at most `max`.
    pub fn after(&self, prev: Duration) -> Duration {
        prev.saturating_mul(2).max(self.initial).min(self.max)
    }

    /// The delay before retry number `n` (1-based): `initial × 2^(n-1)`, at most `max`.
    pub fn nth(&self, n: u32) -> Duration {
        let shift = n.saturating_sub(1).min(16);
        self.initial.saturating_mul(1 << shift).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_doubles_until_cap_and_starts_at_initial() {
        let b = Exponential::new(Duration::from_secs(1), Duration::from_secs(30));
        let mut d = Duration::ZERO;
        let mut seen = Vec::new();
        for _ in 0..7 {
            d = b.after(d);
            seen.push(d.as_secs());
        }
        assert_eq!(seen, vec![1, 2, 4, 8, 16, 30, 30]);
    }

    #[test]
    fn nth_matches_stepping_with_after() {
        let b = Exponential::new(Duration::from_millis(500), Duration::from_secs(30));
        let mut d = b.initial;
        for n in 1..40 {
            assert_eq!(b.nth(n), d, "retry {n}");
            d = b.after(d);
        }
    }
}
