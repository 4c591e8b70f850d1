//! The eviction manager's memory between cycles, as a pure step: which thresholds are met (and
//! since when, for soft grace periods), which node conditions hold (kept for the pressure
//! transition period after the signal clears), and which thresholds to act on now.
//! Time comes in as an argument; nothing here reads a clock.

use super::thresholds::{self, Condition, Observations, Signal, Threshold};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

#[derive(Debug, Default, Clone)]
pub struct State {
    /// When each met threshold was first seen met.
    first_observed: BTreeMap<(Signal, bool), SystemTime>,
    /// When each pressure condition was last seen.
    condition_last_observed: BTreeMap<Condition, SystemTime>,
    /// Thresholds met (grace period included) and not yet resolved by the minimum reclaim.
    met: Vec<Threshold>,
}

/// The outcome of one cycle.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Pressure conditions to report (observed within the transition period).
    pub conditions: Vec<Condition>,
    /// Thresholds to reclaim for, most urgent first (memory before the others).
    pub act_on: Vec<Threshold>,
}

impl State {
    /// One cycle of upstream's synchronize: thresholds met now, plus those met before whose
    /// minimum reclaim is not reached yet; conditions with the transition period; thresholds
    /// whose grace period has passed.
    pub fn step(
        &mut self,
        thresholds: &[Threshold],
        observations: &Observations,
        transition_period: Duration,
        now: SystemTime,
    ) -> Step {
        let mut current = thresholds::met(thresholds, observations, false);
        for t in thresholds::met(&self.met, observations, true) {
            if !current.contains(&t) {
                current.push(t);
            }
        }
        self.first_observed =
            current.iter().map(|t| (t.key(), *self.first_observed.get(&t.key()).unwrap_or(&now))).collect();
        for t in &current {
            self.condition_last_observed.insert(t.signal.condition(), now);
        }
        self.condition_last_observed.retain(|_, at| now.duration_since(*at).unwrap_or_default() < transition_period);
        let conditions: Vec<Condition> = self.condition_last_observed.keys().copied().collect();
        let mut act_on: Vec<Threshold> = current
            .into_iter()
            .filter(|t| {
                let since = self.first_observed.get(&t.key()).copied().unwrap_or(now);
                now.duration_since(since).unwrap_or_default() >= t.grace_period
            })
            .collect();
        // Memory first, as upstream's byEvictionPriority (the rest keep their order).
        act_on.sort_by_key(|t| t.signal != Signal::MemoryAvailable);
        self.met = act_on.clone();
        Step { conditions, act_on }
    }

    pub fn conditions(&self) -> Vec<Condition> {
        self.condition_last_observed.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eviction::thresholds::{Observation, Value};

    fn mem(value: i64, grace: u64, min_reclaim: Option<i64>) -> Threshold {
        Threshold {
            signal: Signal::MemoryAvailable,
            value: Value::Quantity(value),
            grace_period: Duration::from_secs(grace),
            min_reclaim: min_reclaim.map(Value::Quantity),
        }
    }

    fn available(signal: Signal, n: i64) -> Observations {
        Observations::from([(signal, Observation { available: n, capacity: 1000 })])
    }

    const PERIOD: Duration = Duration::from_secs(300);

    #[test]
    fn a_hard_threshold_acts_at_once_and_the_condition_outlives_it_by_the_transition_period() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let th = [mem(100, 0, None)];
        let mut s = State::default();
        let step = s.step(&th, &available(Signal::MemoryAvailable, 500), PERIOD, t0);
        assert_eq!(step, Step { conditions: vec![], act_on: vec![] });
        let step = s.step(&th, &available(Signal::MemoryAvailable, 50), PERIOD, t0 + Duration::from_secs(10));
        assert_eq!(step.conditions, vec![Condition::MemoryPressure]);
        assert_eq!(step.act_on, th.to_vec());
        // Resolved: nothing to act on, but the condition stays for the transition period.
        let step = s.step(&th, &available(Signal::MemoryAvailable, 500), PERIOD, t0 + Duration::from_secs(20));
        assert_eq!(step, Step { conditions: vec![Condition::MemoryPressure], act_on: vec![] });
        let step = s.step(&th, &available(Signal::MemoryAvailable, 500), PERIOD, t0 + Duration::from_secs(309));
        assert_eq!(step.conditions, vec![Condition::MemoryPressure]);
        let step = s.step(&th, &available(Signal::MemoryAvailable, 500), PERIOD, t0 + Duration::from_secs(310));
        assert!(step.conditions.is_empty());
    }

    #[test]
    fn a_soft_threshold_waits_for_its_grace_period_and_restarts_it_when_it_clears() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let th = [mem(100, 60, None)];
        let low = available(Signal::MemoryAvailable, 50);
        let mut s = State::default();
        let step = s.step(&th, &low, PERIOD, t0);
        assert_eq!(
            step.conditions,
            vec![Condition::MemoryPressure],
            "the condition does not wait for the grace period"
        );
        assert!(step.act_on.is_empty());
        assert!(s.step(&th, &low, PERIOD, t0 + Duration::from_secs(59)).act_on.is_empty());
        assert_eq!(s.step(&th, &low, PERIOD, t0 + Duration::from_secs(60)).act_on.len(), 1);
        // Clears, comes back: the grace period starts over.
        s.step(&th, &available(Signal::MemoryAvailable, 500), PERIOD, t0 + Duration::from_secs(70));
        assert!(s.step(&th, &low, PERIOD, t0 + Duration::from_secs(80)).act_on.is_empty());
        assert_eq!(s.step(&th, &low, PERIOD, t0 + Duration::from_secs(140)).act_on.len(), 1);
    }

    #[test]
    fn a_met_threshold_stays_until_the_minimum_reclaim_is_back() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let th = [mem(100, 0, Some(200))];
        let mut s = State::default();
        assert_eq!(s.step(&th, &available(Signal::MemoryAvailable, 50), PERIOD, t0).act_on.len(), 1);
        // Above the threshold but below threshold + minimum reclaim: still acting.
        assert_eq!(s.step(&th, &available(Signal::MemoryAvailable, 250), PERIOD, t0).act_on.len(), 1);
        assert!(s.step(&th, &available(Signal::MemoryAvailable, 300), PERIOD, t0).act_on.is_empty());
        // Without having been met, 250 does not start it.
        assert!(State::default().step(&th, &available(Signal::MemoryAvailable, 250), PERIOD, t0).act_on.is_empty());
    }

    #[test]
    fn memory_is_acted_on_before_disk_and_each_signal_has_its_condition() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let disk = Threshold {
            signal: Signal::NodeFsAvailable,
            value: Value::Percentage(0.1),
            grace_period: Duration::ZERO,
            min_reclaim: None,
        };
        let pid = Threshold { signal: Signal::PidAvailable, ..disk.clone() };
        let th = [disk.clone(), pid.clone(), mem(100, 0, None)];
        let mut obs = available(Signal::NodeFsAvailable, 10);
        obs.extend(available(Signal::MemoryAvailable, 10));
        obs.extend(available(Signal::PidAvailable, 10));
        let step = State::default().step(&th, &obs, PERIOD, t0);
        assert_eq!(step.act_on[0].signal, Signal::MemoryAvailable);
        assert_eq!(step.conditions, vec![Condition::MemoryPressure, Condition::DiskPressure, Condition::PIDPressure]);
    }
}
