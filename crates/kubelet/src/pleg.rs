//! The pod lifecycle event generator: relists the runtime's sandboxes and containers every
//! period, diffs against the previous relist, and tells the dispatcher which pods changed.
//! One ListPodSandbox and one ListContainers call per relist, whatever the number of pods.

use crate::cri::labels::POD_UID;
use crate::cri::{DynRuntime, api};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Debug, Clone)]
pub struct Config {
    pub relist_period: Duration,
    /// Relist duration, interval and last-seen time are recorded here.
    pub metrics: crate::metrics::Metrics,
}

/// When the last relist succeeded (unix seconds), for health checks.
#[derive(Clone, Default)]
pub struct Health(Arc<AtomicI64>);

impl Health {
    pub fn last_relist_secs(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Healthy if a relist succeeded within `threshold` (upstream: 3 minutes).
    pub fn healthy(&self, threshold: Duration) -> bool {
        let now = chrono::Utc::now().timestamp();
        now - self.last_relist_secs() <= threshold.as_secs() as i64
    }
}

type Snapshot = HashMap<String, (String, i32)>;

/// Pods whose sandboxes or containers changed between two relists.
pub fn changed_pods(old: &Snapshot, new: &Snapshot) -> HashSet<String> {
    let mut out = HashSet::new();
    for (id, (uid, state)) in new {
        if old.get(id).is_none_or(|(_, s)| s != state) {
            out.insert(uid.clone());
        }
    }
    for (id, (uid, _)) in old {
        if !new.contains_key(id) {
            out.insert(uid.clone());
        }
    }
    out
}

async fn relist(runtime: &DynRuntime) -> crate::cri::Result<Snapshot> {
    let (sandboxes, containers) = tokio::try_join!(runtime.list_pod_sandboxes(None), runtime.list_containers(None))?;
    let mut snap = HashMap::with_capacity(sandboxes.len() + containers.len());
    for s in sandboxes {
        if let Some(uid) = s.labels.get(POD_UID) {
            snap.insert(s.id, (uid.clone(), s.state + 100));
        }
    }
    for c in containers {
        if let Some(uid) = c.labels.get(POD_UID) {
            snap.insert(c.id, (uid.clone(), c.state));
        }
    }
    Ok(snap)
}

/// Runs the relist loop, sending the UID of every changed pod.
pub async fn run(cfg: Config, runtime: DynRuntime, health: Health, tx: mpsc::Sender<String>) {
    let mut last: Snapshot = HashMap::new();
    let mut failing = false;
    let mut last_start: Option<std::time::Instant> = None;
    loop {
        let start = std::time::Instant::now();
        let interval = last_start.map(|l| start - l);
        last_start = Some(start);
        let result = relist(&runtime).await;
        cfg.metrics.pleg_relist(start.elapsed(), interval, chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
        match result {
            Ok(snap) => {
                if failing {
                    tracing::info!("runtime relist recovered");
                    failing = false;
                }
                health.0.store(chrono::Utc::now().timestamp(), Ordering::Relaxed);
                for uid in changed_pods(&last, &snap) {
                    if tx.send(uid).await.is_err() {
                        return;
                    }
                }
                last = snap;
            }
            Err(e) if !failing => {
                tracing::warn!(error = %e, "runtime relist failed");
                failing = true;
            }
            Err(_) => {}
        }
        tokio::time::sleep(cfg.relist_period).await;
    }
}

/// The exited-state value, for readers of the snapshot.
pub const EXITED: i32 = api::ContainerState::ContainerExited as i32;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_and_removals_are_reported_once_per_pod() {
        let old: Snapshot = HashMap::from([
            ("c1".into(), ("a".into(), 1)),
            ("c2".into(), ("b".into(), 1)),
            ("c3".into(), ("c".into(), 1)),
        ]);
        let new: Snapshot = HashMap::from([
            ("c1".into(), ("a".into(), 1)),
            ("c2".into(), ("b".into(), EXITED)),
            ("c4".into(), ("d".into(), 0)),
        ]);
        let mut got: Vec<_> = changed_pods(&old, &new).into_iter().collect();
        got.sort();
        assert_eq!(got, vec!["b", "c", "d"]);
    }
}
