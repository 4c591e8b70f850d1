//! Per-key exponential backoff (CrashLoopBackOff per container, ImagePullBackOff per pod and
//! image), with upstream's semantics (client-go flowcontrol.Backoff as the kubelet uses it): the
//! first failure restarts at once and arms `initial`; each further failure doubles the delay up
//! to `max`; a failure more than `2 × max` after the entry's last update (the last retry itself,
//! upstream's `lastUpdate`, not the failure before it) starts over at `initial`, and an entry not
//! updated for `2 × max` is forgotten.

use super::Exponential;
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, Copy)]
struct Entry {
    backoff: Duration,
    /// When the entry was last armed: the time of the retry it allowed (upstream's `lastUpdate`,
    /// the clock's now in Next).
    last_update: SystemTime,
}

#[derive(Debug, Clone)]
pub struct Keyed {
    delay: Exponential,
    entries: HashMap<String, Entry>,
}

impl Keyed {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self { delay: Exponential::new(initial, max), entries: HashMap::new() }
    }

    /// Container restarts: 10 s doubling to 300 s.
    pub fn container_restart() -> Self {
        Self::new(Duration::from_secs(10), Duration::from_secs(300))
    }

    /// Image pulls: 10 s doubling to 300 s.
    pub fn image_pull() -> Self {
        Self::new(Duration::from_secs(10), Duration::from_secs(300))
    }

    fn expired(&self, e: &Entry, event: SystemTime) -> bool {
        event.duration_since(e.last_update).unwrap_or_default() > self.delay.max * 2
    }

    /// Records a retry made at `now` after a failure at `event` and arms the next delay
    /// (upstream's Next: the entry starts over when `event` is more than `2 × max` after the
    /// entry's last update; the update is stamped `now`).
    pub fn next(&mut self, key: &str, event: SystemTime, now: SystemTime) {
        let backoff = match self.entries.get(key) {
            Some(e) if !self.expired(e, event) => self.delay.after(e.backoff),
            _ => self.delay.initial,
        };
        self.entries.insert(key.to_string(), Entry { backoff, last_update: now });
    }

    /// If `key` is still backing off at `now` for a failure at `event`, the time it may retry.
    pub fn in_backoff_until(&self, key: &str, event: SystemTime, now: SystemTime) -> Option<SystemTime> {
        let e = self.entries.get(key)?;
        if self.expired(e, event) {
            return None;
        }
        let until = event + e.backoff;
        (now < until).then_some(until)
    }

    /// If `key` is still backing off at `now` since its last recorded failure, the retry time.
    pub fn in_backoff_since_last(&self, key: &str, now: SystemTime) -> Option<SystemTime> {
        let last = self.entries.get(key)?.last_update;
        self.in_backoff_until(key, last, now)
    }

    /// The delay currently armed for `key`.
    pub fn current(&self, key: &str) -> Option<Duration> {
        self.entries.get(key).map(|e| e.backoff)
    }

    /// Drops entries idle for more than `2 × max` (called from time to time).
    pub fn gc(&mut self, now: SystemTime) {
        let max2 = self.delay.max * 2;
        self.entries.retain(|_, e| now.duration_since(e.last_update).unwrap_or_default() <= max2);
    }

    pub fn reset(&mut self, key: &str) {
        self.entries.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + s)
    }

    #[test]
    fn backoff_doubles_until_cap() {
        let mut b = Keyed::container_restart();
        let mut delays = Vec::new();
        let mut at = 0;
        for _ in 0..8 {
            b.next("k", t(at), t(at));
            delays.push(b.current("k").unwrap().as_secs());
            at += b.current("k").unwrap().as_secs() + 1;
        }
        assert_eq!(delays, vec![10, 20, 40, 80, 160, 300, 300, 300]);
    }

    #[test]
    fn first_failure_is_not_in_backoff_then_waits_the_armed_delay() {
        let mut b = Keyed::container_restart();
        assert_eq!(b.in_backoff_until("k", t(0), t(0)), None);
        b.next("k", t(0), t(0));
        // Second crash at t=5: must wait 10 s from that exit.
        assert_eq!(b.in_backoff_until("k", t(5), t(6)), Some(t(15)));
        assert_eq!(b.in_backoff_until("k", t(5), t(15)), None);
    }

    #[test]
    fn backoff_resets_after_ten_minutes_without_failure() {
        let mut b = Keyed::container_restart();
        b.next("k", t(0), t(0));
        b.next("k", t(20), t(20));
        assert_eq!(b.current("k").unwrap().as_secs(), 20);
        b.next("k", t(20 + 601), t(20 + 601));
        assert_eq!(b.current("k").unwrap().as_secs(), 10);
        assert_eq!(b.in_backoff_until("k", t(2000), t(2001)), None);
        b.gc(t(5000));
        assert_eq!(b.current("k"), None);
    }

    #[test]
    fn the_reset_window_counts_from_the_restart_not_from_the_failure_before_it() {
        // Restarted at 400 after a crash at 100 (a long wait); the next crash at 900 is 800 s
        // after that crash but only 500 s after the restart: the delay doubles, as upstream's
        // lastUpdate has it.
        let mut b = Keyed::container_restart();
        b.next("k", t(0), t(0));
        b.next("k", t(100), t(400));
        b.next("k", t(900), t(900));
        assert_eq!(b.current("k").unwrap().as_secs(), 40);
        // And a failure at 900 is still backing off: 40 s from its exit.
        assert_eq!(b.in_backoff_until("k", t(900), t(901)), Some(t(940)));
        // gc counts from the last update too.
        b.gc(t(900 + 600));
        assert_eq!(b.current("k").unwrap().as_secs(), 40);
        b.gc(t(900 + 601));
        assert_eq!(b.current("k"), None);
    }
}
