//! The pod lifecycle event generator: keeps the [`Cache`] of what the runtime runs, per pod,
//! that the pod workers read, and tells the dispatcher which pods changed. Two inputs:
//! - the relist: one ListPodSandbox and one ListContainers call, whatever the number of pods,
//!   every `relist_period` (1 s, upstream's), or at once when a worker waits for a view newer
//!   than its own change;
//! - runtime events ([`events`]: CRI GetContainerEvents), applied to the cache as they come, so
//!   an exit reaches its worker without waiting for a relist. While a stream is up the relist
//!   only backs it up, every `relist_period_with_events`.

mod cache;
pub mod containerd;
pub mod events;

pub use cache::{Applied, Cache, ContainerRecord, Event, EventKind, OwnChange, PodRecord, SandboxRecord, changed_pods};
pub use events::Feed;

use crate::cri::DynRuntime;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct Config {
    /// Relist period without runtime events (upstream: 1 s).
    pub relist_period: Duration,
    /// Relist period while runtime events arrive. The relist then only catches what events
    /// missed, and a worker that changed the runtime asks for a relist anyway. Upstream's
    /// Evented PLEG uses 5 min; 30 s keeps a missed event's delay well inside the 3 min PLEG
    /// health threshold (a healthy relist is what `/healthz` checks) and costs, at 5,000 pods,
    /// one list pair every 30 s.
    pub relist_period_with_events: Duration,
    /// Relist duration, interval and last-seen time are recorded here.
    pub metrics: crate::metrics::Metrics,
    /// The runtime's endpoint when it is containerd: without CRI container events, the PLEG
    /// subscribes to containerd's own task exits there ([`containerd`]).
    pub containerd_endpoint: Option<String>,
}

impl Config {
    pub fn new(metrics: crate::metrics::Metrics) -> Self {
        Self {
            relist_period: Duration::from_secs(1),
            relist_period_with_events: Duration::from_secs(30),
            metrics,
            containerd_endpoint: None,
        }
    }
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

/// Events queued between the event source and the PLEG (a relist in progress holds them).
const FEED_QUEUE: usize = 4096;

/// Runs the PLEG with the runtime's CRI container events, else containerd's own task exits (when
/// `containerd_endpoint` is set), else relisting every second. The event streams run in the
/// PLEG's own task: when `token` is cancelled they are closed and the PLEG ends after the relist
/// in flight.
pub async fn run(
    cfg: Config,
    runtime: DynRuntime,
    health: Health,
    cache: Cache,
    tx: mpsc::Sender<String>,
    token: CancellationToken,
) {
    let (feed_tx, feed_rx) = mpsc::channel(FEED_QUEUE);
    let (rt, native) = (runtime.clone(), cfg.containerd_endpoint.clone());
    let streams = async move {
        if events::cri(rt.clone(), feed_tx.clone()).await
            && let Some(endpoint) = native
        {
            containerd::run(endpoint, rt, feed_tx).await;
        }
    };
    // The first relist starts before the streams subscribe: until it ends the node is not ready.
    tokio::join!(
        run_with_feed(cfg, runtime, health, cache, tx, feed_rx, token.clone()),
        token.run_until_cancelled(streams)
    );
}

/// Runs the PLEG on `feed`'s events: relists into `cache` when due, when a worker asks or when
/// the feed goes up or down (events may have been missed), applies events in between, and sends
/// the UID of every changed pod. Ends when `token` is cancelled (after the relist in flight).
pub async fn run_with_feed(
    cfg: Config,
    runtime: DynRuntime,
    health: Health,
    cache: Cache,
    tx: mpsc::Sender<String>,
    mut feed: mpsc::Receiver<Feed>,
    token: CancellationToken,
) {
    let mut failing = false;
    let mut last_start: Option<std::time::Instant> = None;
    let mut streaming = false;
    let mut feed_open = true;
    loop {
        if token.is_cancelled() {
            return;
        }
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
        let period = if streaming { cfg.relist_period_with_events } else { cfg.relist_period };
        let now = tokio::time::Instant::now();
        let due = now + period;
        // Relists a worker asks for are spaced by the last relist's duration: under a burst of
        // pod starts the PLEG lists at most half the time, and each relist serves every waiter.
        let asked = now + start.elapsed();
        loop {
            let item = tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep_until(due) => break,
                _ = async {
                    tokio::time::sleep_until(asked).await;
                    cache.kicked().await
                } => break,
                item = feed.recv(), if feed_open => item,
            };
            match item {
                Some(Feed::Event(ev)) => match cache.apply(&ev) {
                    Applied::Changed(uid) => {
                        if tx.send(uid).await.is_err() {
                            return;
                        }
                    }
                    // The exit of an instance created since the last relist (its creator may
                    // already have seen a relist that listed it running, and the next one is
                    // 30 s away while events flow): relist soon, spaced like a worker's request.
                    // Created/started/removed are the worker's own doing: it records them in the
                    // cache itself (`Cache::record_own`) or waits for a relist after them.
                    Applied::Unknown if ev.kind == EventKind::Stopped => cache.ask_relist(),
                    Applied::Unknown | Applied::Unchanged => {}
                },
                // Events from now on: relist once to cover the time before, then rarely.
                Some(Feed::Up) => {
                    streaming = true;
                    break;
                }
                // Events may have been missed: relist now and every period until it is back.
                Some(Feed::Down) => {
                    streaming = false;
                    break;
                }
                Some(Feed::Unavailable) => streaming = false,
                None => {
                    feed_open = false;
                    if streaming {
                        streaming = false;
                        break;
                    }
                }
            }
        }
    }
}
