//! The pod lifecycle event generator: relists the runtime's sandboxes and containers every
//! period, keeps what it found in the [`Cache`] the pod workers read, and tells the dispatcher
//! which pods changed. One ListPodSandbox and one ListContainers call per relist, whatever the
//! number of pods.

mod cache;

pub use cache::{Applied, Cache, ContainerRecord, Event, EventKind, PodRecord, SandboxRecord, changed_pods};

use crate::cri::DynRuntime;
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

/// Relists once: lists every sandbox and container, stores them in the cache and returns the
/// pods that changed.
async fn relist(runtime: &DynRuntime, cache: &Cache) -> crate::cri::Result<Vec<String>> {
    let n = cache.begin_relist();
    let (sandboxes, containers) = tokio::try_join!(runtime.list_pod_sandboxes(None), runtime.list_containers(None))?;
    Ok(cache.finish_relist(n, PodRecord::group(&sandboxes, &containers)))
}

/// Runs the relist loop: every period, or at once when a worker waits for a fresh view of its
/// pod, relists into `cache` and sends the UID of every changed pod.
pub async fn run(cfg: Config, runtime: DynRuntime, health: Health, cache: Cache, tx: mpsc::Sender<String>) {
    let mut failing = false;
    let mut last_start: Option<std::time::Instant> = None;
    loop {
        let start = std::time::Instant::now();
        let interval = last_start.map(|l| start - l);
        last_start = Some(start);
        let result = relist(&runtime, &cache).await;
        cfg.metrics.pleg_relist(start.elapsed(), interval, chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
        match result {
            Ok(changed) => {
                if failing {
                    tracing::info!("runtime relist recovered");
                    failing = false;
                }
                health.0.store(chrono::Utc::now().timestamp(), Ordering::Relaxed);
                for uid in changed {
                    if tx.send(uid).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) if !failing => {
                tracing::warn!(error = %e, "runtime relist failed");
                failing = true;
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(cfg.relist_period) => {}
            _ = cache.kicked() => {}
        }
    }
}
