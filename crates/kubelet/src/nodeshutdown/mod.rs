//! Graceful node shutdown (upstream's pkg/kubelet/nodeshutdown, Linux): the manager holds a
//! logind delay inhibitor lock; on `PrepareForShutdown(true)` it marks the node as shutting down
//! (node status NotReady, new pods refused), kills the active pods group by group from the
//! lowest priority up, each group within its budget, and releases the lock so the shutdown goes
//! on. `PrepareForShutdown(false)` (the shutdown was cancelled) takes the lock again and the node
//! is no longer shutting down. Pods are killed through the dispatcher like evictions
//! (`pod::EvictionRequest`): Failed, reason `Terminated`, with the DisruptionTarget condition.
//! Off when `shutdownGracePeriod` is 0 and there is no by-priority list, as upstream.
//!
//! A kubelet that is itself stopped (SIGTERM) kills no pod: it only drops its lock by exiting.

pub mod groups;
pub mod logind;
mod state;
#[cfg(test)]
mod tests;

use crate::admission::{Handler, Rejection};
use crate::clock::DynClock;
use crate::event_recorder::{Recorder, Type};
use crate::metrics::Metrics;
use crate::pod::{Eviction, EvictionRequest};
use crate::status_manager::Statuses;
use futures::StreamExt;
use groups::Period;
use k8s_openapi::api::core::v1::Pod;
use kubelet_config::KubeletConfiguration;
use logind::{Connect, InhibitLock, Logind};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// The status reason and message of a pod killed for the shutdown (upstream's nodeShutdownReason
/// and nodeShutdownMessage).
pub const REASON: &str = "Terminated";
pub const MESSAGE: &str = "Pod was terminated in response to imminent node shutdown.";
/// Admission's refusal while shutting down (nodeShutdownNotAdmittedReason / Message).
pub const NOT_ADMITTED_REASON: &str = "NodeShutdown";
pub const NOT_ADMITTED_MESSAGE: &str = "Pod was rejected as the node is shutting down.";
/// The node's Ready condition error while shutting down (ShutdownStatus).
pub const NOT_READY: &str = "node is shutting down";
/// Upstream's dbusReconnectPeriod.
const RECONNECT: Duration = Duration::from_secs(1);
/// Upstream's localStorageStateFile, in the root directory.
pub const STATE_FILE: &str = "graceful_node_shutdown_state";

#[derive(Debug, Clone)]
pub struct Config {
    pub node_name: String,
    /// The priority groups, sorted from low to high (never empty: no groups, no manager).
    pub periods: Vec<Period>,
    /// `<root-dir>/graceful_node_shutdown_state`.
    pub state_file: PathBuf,
    /// Where the logind drop-in goes (upstream: /etc/systemd/logind.conf.d).
    pub logind_conf_dir: PathBuf,
}

impl Config {
    /// None when the configuration asks for no graceful shutdown (upstream's managerStub).
    pub fn from_kubelet_config(
        cfg: &KubeletConfiguration,
        node_name: &str,
        root_dir: &std::path::Path,
    ) -> Option<Self> {
        let gate = |name: &str| cfg.feature_gates.get(name).copied().unwrap_or(true);
        if !gate("GracefulNodeShutdown") {
            return None;
        }
        let by_priority: Vec<Period> = if gate("GracefulNodeShutdownBasedOnPodPriority") {
            cfg.shutdown_grace_period_by_pod_priority
                .iter()
                .map(|p| Period { priority: p.priority, grace_secs: p.shutdown_grace_period_seconds })
                .collect()
        } else {
            Vec::new()
        };
        let std = |d: kubelet_config::Duration| d.to_std().unwrap_or_default();
        let periods =
            groups::periods(std(cfg.shutdown_grace_period), std(cfg.shutdown_grace_period_critical_pods), &by_priority);
        (!periods.is_empty()).then(|| Self {
            node_name: node_name.to_string(),
            periods,
            state_file: root_dir.join(STATE_FILE),
            logind_conf_dir: PathBuf::from(logind::LOGIND_CONF_DIR),
        })
    }
}

/// Whether the node is shutting down: read by node status (Ready) and admission.
#[derive(Clone, Debug)]
pub struct Handle {
    tx: Arc<watch::Sender<bool>>,
}

impl Default for Handle {
    fn default() -> Self {
        Self::new()
    }
}

impl Handle {
    pub fn new() -> Self {
        Self { tx: Arc::new(watch::channel(false).0) }
    }

    /// Upstream's ShutdownStatus: the Ready condition's error while shutting down.
    pub fn status(&self) -> Option<&'static str> {
        self.shutting_down().then_some(NOT_READY)
    }

    pub fn shutting_down(&self) -> bool {
        *self.tx.borrow()
    }

    /// Changes of the state (node status reports them at once, as upstream's syncNodeStatus).
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.tx.subscribe()
    }

    fn set(&self, shutting_down: bool) {
        self.tx.send_replace(shutting_down);
    }
}

/// Upstream's managerImpl.Admit: every pod is refused while the node shuts down.
impl Handler for Handle {
    fn admit(&self, _pod: &Pod, _admitted: &[&Pod]) -> Result<(), Rejection> {
        if self.shutting_down() {
            return Err(Rejection { reason: NOT_ADMITTED_REASON.into(), message: NOT_ADMITTED_MESSAGE.into() });
        }
        Ok(())
    }
}

/// What the manager works with.
pub struct Deps {
    pub logind: Arc<dyn Connect>,
    pub statuses: Statuses,
    /// To the dispatcher, which hands each kill to the pod's worker.
    pub kill: mpsc::Sender<EvictionRequest>,
    pub events: Recorder,
    pub metrics: Metrics,
    pub clock: DynClock,
}

/// A connection with the lock taken and the signal watched (upstream's start()).
struct Session {
    logind: Box<dyn Logind>,
    lock: Option<InhibitLock>,
    events: futures::stream::BoxStream<'static, bool>,
}

impl Session {
    async fn start(cfg: &Config, deps: &Deps) -> Result<Session, String> {
        let logind = deps.logind.connect().await.map_err(|e| e.to_string())?;
        let current = logind.inhibit_delay_max().await.map_err(|e| e.to_string())?;
        // As upstream: when logind's InhibitDelayMaxSec is below what the groups need, write the
        // drop-in, reload logind and read it again.
        let requested = groups::requested(&cfg.periods);
        if requested > current {
            logind::override_inhibit_delay(&cfg.logind_conf_dir, requested)
                .map_err(|e| format!("unable to override inhibit delay by shutdown manager: {e}"))?;
            logind.reload_logind_conf().await.map_err(|e| e.to_string())?;
            let updated = logind.inhibit_delay_max().await.map_err(|e| e.to_string())?;
            if requested > updated {
                let go = kubelet_config::duration::Duration::from_std;
                return Err(format!(
                    "node shutdown manager was unable to update logind InhibitDelayMaxSec to {} (ShutdownGracePeriod), current value of InhibitDelayMaxSec ({}) is less than requested ShutdownGracePeriod",
                    go(requested),
                    go(updated)
                ));
            }
        }
        let lock = logind.inhibit_shutdown().await.map_err(|e| e.to_string())?;
        // Without the signal the lock is dropped (released) with the error, as upstream.
        let events = logind.monitor_shutdown().await.map_err(|e| e.to_string())?;
        Ok(Session { logind, lock: Some(lock), events })
    }
}

/// Runs the manager until the token is cancelled. A first connection that fails leaves the
/// manager off (upstream logs the error and the kubelet runs on); a connection lost later is
/// made again every second.
pub async fn run(cfg: Config, deps: Deps, handle: Handle, token: CancellationToken) {
    tracing::info!(periods = ?cfg.periods, "creating node shutdown manager");
    state::set_metrics(&cfg.state_file, &deps.metrics);
    let mut first = true;
    loop {
        match Session::start(&cfg, &deps).await {
            Ok(session) => {
                first = false;
                tracing::info!("node shutdown manager: inhibitor lock taken, watching for shutdown");
                if watch(&cfg, &deps, &handle, session, &token).await.is_none() {
                    return;
                }
                tracing::info!("node shutdown manager: lost the system bus; reconnecting");
            }
            Err(e) if first => {
                tracing::error!(error = %e, "failed to start node shutdown manager");
                return;
            }
            Err(e) => tracing::error!(error = %e, "unable to watch the node for shutdown events"),
        }
        if token.run_until_cancelled(tokio::time::sleep(RECONNECT)).await.is_none() {
            return;
        }
    }
}

/// Watches one connection's signals; None once the token is cancelled (the lock is dropped with
/// the session, as a stopping kubelet's descriptor closes).
async fn watch(cfg: &Config, deps: &Deps, handle: &Handle, mut s: Session, token: &CancellationToken) -> Option<()> {
    loop {
        let ev = token.run_until_cancelled(s.events.next()).await?;
        let Some(shutting_down) = ev else { return Some(()) };
        tracing::info!(shutting_down, "node shutdown manager detected a shutdown event");
        let message = if shutting_down {
            "Shutdown manager detected shutdown event"
        } else {
            "Shutdown manager detected shutdown cancellation"
        };
        deps.events.node(&cfg.node_name, Type::Normal, "NodeShutdown", message);
        handle.set(shutting_down);
        if shutting_down {
            token.run_until_cancelled(kill_pods(cfg, deps)).await?;
            s.lock = None;
            tracing::info!("node shutdown manager: pods handled, inhibitor lock released; the node will shut down");
        } else {
            // Cancelled: take the lock again (the old one, if still held, goes after).
            match s.logind.inhibit_shutdown().await {
                Ok(lock) => s.lock = Some(lock),
                Err(e) => tracing::error!(error = %e, "node shutdown manager: could not take the inhibitor lock again"),
            }
        }
    }
}

fn is_active(p: &Pod) -> bool {
    !matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

/// Upstream's processShutdownEvent: each group from the lowest priority, its pods killed
/// together with the group's grace period (or their own when shorter), waiting for them at most
/// the group's budget; groups without pods take no time. The start and end go to the state file
/// and the metrics.
async fn kill_pods(cfg: &Config, deps: &Deps) {
    let start = deps.clock.now();
    state::store(&cfg.state_file, &deps.metrics, start, None);
    let active = deps.statuses.list().into_iter().filter(|p| is_active(p));
    for group in groups::group(&cfg.periods, active) {
        if group.pods.is_empty() {
            continue;
        }
        let mut done = Vec::new();
        for pod in &group.pods {
            let grace_secs = groups::pod_grace(pod, group.period.grace_secs);
            let name = crate::meta::pod_name(pod);
            tracing::info!(pod = %name, grace = grace_secs, priority = group.period.priority, "shutdown manager killing pod");
            let (tx, rx) = tokio::sync::oneshot::channel();
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            let eviction = Eviction { reason: REASON, grace_secs, message: MESSAGE.into(), done: Some(tx) };
            if deps.kill.send(EvictionRequest { uid, eviction }).await.is_err() {
                tracing::warn!(pod = %name, "shutdown manager: the dispatcher is gone");
                continue;
            }
            done.push(rx);
        }
        let budget = Duration::from_secs(group.period.grace_secs.max(0) as u64);
        let all = futures::future::join_all(done);
        if tokio::time::timeout(budget, all).await.is_err() {
            tracing::info!(
                grace = group.period.grace_secs,
                priority = group.period.priority,
                "shutdown manager pod killing time out"
            );
        }
    }
    state::store(&cfg.state_file, &deps.metrics, start, Some(deps.clock.now()));
}
