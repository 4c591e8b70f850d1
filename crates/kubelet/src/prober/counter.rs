//! Threshold counting: a probe's result only flips after `successThreshold` consecutive
//! successes or `failureThreshold` consecutive failures.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    success_threshold: u32,
    failure_threshold: u32,
    successes: u32,
    failures: u32,
    state: bool,
}

impl Counter {
    /// `initial` is the state before any probe ran (liveness: true; readiness, startup: false).
    pub fn new(success_threshold: i32, failure_threshold: i32, initial: bool) -> Self {
        Self {
            success_threshold: success_threshold.max(1) as u32,
            failure_threshold: failure_threshold.max(1) as u32,
            successes: 0,
            failures: 0,
            state: initial,
        }
    }

    pub fn state(&self) -> bool {
        self.state
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Records one result; returns the new state when it changed.
    pub fn observe(&mut self, ok: bool) -> Option<bool> {
        if ok {
            self.successes += 1;
            self.failures = 0;
            if !self.state && self.successes >= self.success_threshold {
                self.state = true;
                return Some(true);
            }
        } else {
            self.failures += 1;
            self.successes = 0;
            if self.state && self.failures >= self.failure_threshold {
                self.state = false;
                return Some(false);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_fails_only_after_failure_threshold_consecutive_failures() {
        let mut c = Counter::new(1, 3, true);
        assert_eq!(c.observe(false), None);
        assert_eq!(c.observe(false), None);
        assert_eq!(c.observe(true), None, "a success resets the failure count");
        assert_eq!(c.observe(false), None);
        assert_eq!(c.observe(false), None);
        assert_eq!(c.observe(false), Some(false));
        assert_eq!(c.observe(false), None, "reported once");
    }

    #[test]
    fn readiness_needs_success_threshold_and_flips_both_ways() {
        let mut c = Counter::new(2, 1, false);
        assert_eq!(c.observe(true), None);
        assert_eq!(c.observe(true), Some(true));
        assert_eq!(c.observe(false), Some(false));
        assert_eq!(c.observe(true), None);
        assert_eq!(c.observe(false), None);
        assert_eq!(c.observe(true), None);
        assert_eq!(c.observe(true), Some(true));
    }

    #[test]
    fn zero_thresholds_behave_as_one() {
        let mut c = Counter::new(0, 0, false);
        assert_eq!(c.observe(true), Some(true));
        assert_eq!(c.observe(false), Some(false));
    }
}
