//! The eviction manager (upstream pkg/kubelet/eviction): every monitoring interval it reads the
//! Summary, derives the signals (memory.available, nodefs/imagefs available and inodesFree,
//! pid.available), reports MemoryPressure / DiskPressure / PIDPressure (held for
//! `evictionPressureTransitionPeriod` after the signal clears), and when a threshold is met
//! (soft ones after their grace period) reclaims: node-level first for disk (dead containers,
//! unused images), then one pod per cycle, ranked as upstream. Pods over an emptyDir sizeLimit or
//! their ephemeral-storage limits are evicted too. Critical pods (static, mirror, system
//! priority) are never evicted.
//!
//! An evicted pod is killed by its worker with the eviction grace period (1 s for hard
//! thresholds, floored to the kubelet's 2 s minimum; `evictionMaxPodGracePeriod` for soft ones)
//! and ends Failed with reason `Evicted`, upstream's message, a DisruptionTarget condition and
//! an `Evicted` event; `kubelet_evictions{eviction_signal}` counts it.
//!
//! The kubelet only sets node conditions: the `node.kubernetes.io/*-pressure` NoSchedule taints
//! are added by the control plane's node lifecycle controller (TaintNodesByCondition), as
//! upstream. While a condition holds, admission rejects pods as upstream's eviction admit
//! handler: BestEffort pods under MemoryPressure alone (unless they tolerate the
//! memory-pressure taint), every non-critical pod under the other conditions.

pub mod rank;
pub mod state;
pub mod thresholds;

use crate::admission::{Handler, Rejection};
use crate::clock::DynClock;
use crate::cri::DynRuntime;
use crate::event_recorder::{Recorder, Type};
use crate::gc::ContainerGc;
use crate::gc::images::ImageGc;
use crate::metrics::Metrics;
use crate::pod::{Eviction, EvictionRequest};
use crate::stats::Provider;
use crate::status_manager::Statuses;
use k8s_openapi::api::core::v1::{Pod, Taint};
use kubelet_config::KubeletConfiguration;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;
pub use thresholds::ConfigError;
use thresholds::{Condition, Signal, Threshold};
use tokio::sync::{mpsc, oneshot};

/// Upstream's evictionMonitoringPeriod.
pub const MONITORING_INTERVAL: Duration = Duration::from_secs(10);
/// Hard evictions and local-storage violations (upstream immediateEvictionGracePeriodSeconds).
pub const IMMEDIATE_GRACE_SECS: i64 = 1;
/// How long to wait for an evicted pod's kill before the next cycle.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct Config {
    pub thresholds: Vec<Threshold>,
    pub pressure_transition_period: Duration,
    pub max_pod_grace_period: i64,
    pub monitoring_interval: Duration,
    /// `--root-dir`: the node filesystem, to tell whether images live on a filesystem of their own.
    pub root_dir: PathBuf,
}

impl Config {
    pub fn from_kubelet_config(cfg: &KubeletConfiguration, root_dir: PathBuf) -> Result<Config, ConfigError> {
        Ok(Config {
            thresholds: thresholds::from_config(cfg)?,
            pressure_transition_period: cfg.eviction_pressure_transition_period.to_std().unwrap_or_default(),
            max_pod_grace_period: i64::from(cfg.eviction_max_pod_grace_period),
            monitoring_interval: MONITORING_INTERVAL,
            root_dir,
        })
    }
}

/// The pressure conditions now: read by node status and admission.
#[derive(Debug, Clone, Default)]
pub struct Handle {
    conditions: Arc<RwLock<Vec<Condition>>>,
}

impl Handle {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn conditions(&self) -> Vec<Condition> {
        self.conditions.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn has(&self, c: Condition) -> bool {
        self.conditions().contains(&c)
    }

    fn set(&self, now: Vec<Condition>) {
        let mut c = self.conditions.write().unwrap_or_else(|p| p.into_inner());
        if *c != now {
            let names: Vec<&str> = now.iter().map(|c| c.as_str()).collect();
            tracing::info!(conditions = ?names, "eviction manager: node pressure conditions changed");
            *c = now;
        }
    }
}

/// Upstream's eviction admit handler.
impl Handler for Handle {
    fn admit(&self, pod: &Pod, _admitted: &[&Pod]) -> Result<(), Rejection> {
        let conditions = self.conditions();
        if conditions.is_empty() || rank::is_critical(pod) {
            return Ok(());
        }
        if conditions == [Condition::MemoryPressure] {
            if crate::cm::qos::qos_class(pod) != "BestEffort" {
                return Ok(());
            }
            let taint = Taint {
                key: "node.kubernetes.io/memory-pressure".into(),
                effect: "NoSchedule".into(),
                ..Default::default()
            };
            let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.as_ref());
            if tolerations.into_iter().flatten().any(|t| crate::admission::tolerates(t, &taint)) {
                return Ok(());
            }
        }
        let names: Vec<&str> = conditions.iter().map(|c| c.as_str()).collect();
        Err(Rejection { reason: "Evicted".into(), message: format!("The node had condition: [{}]. ", names.join(" ")) })
    }
}

/// What the manager works with.
pub struct Deps {
    pub stats: Provider,
    pub statuses: Statuses,
    pub runtime: DynRuntime,
    pub events: Recorder,
    pub metrics: Metrics,
    pub clock: DynClock,
    pub images: Option<ImageGc>,
    pub containers: Option<ContainerGc>,
    /// To the dispatcher, which hands each eviction to the pod's worker.
    pub evict: mpsc::Sender<EvictionRequest>,
}

fn is_terminal(p: &Pod) -> bool {
    matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

fn pod_grace(p: &Pod) -> i64 {
    p.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(30)
}

/// Whether the image filesystem is not the node filesystem (different devices).
async fn dedicated_image_fs(runtime: &DynRuntime, root_dir: &std::path::Path) -> Option<bool> {
    use std::os::unix::fs::MetadataExt;
    let info = runtime.image_fs_info().await.ok()?;
    let mount = info.image_filesystems.first()?.fs_id.as_ref()?.mountpoint.clone();
    Some(std::fs::metadata(mount).ok()?.dev() != std::fs::metadata(root_dir).ok()?.dev())
}

struct Manager {
    cfg: Config,
    deps: Deps,
    handle: Handle,
    state: state::State,
    dedicated_image_fs: Option<bool>,
}

impl Manager {
    /// Asks the pod's worker to evict it; returns when to consider it cleaned up.
    async fn evict(&self, pod: &Pod, grace_secs: i64, message: String, signal: &str) -> Option<oneshot::Receiver<()>> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let name = crate::meta::pod_name(pod);
        tracing::warn!(pod = %name, signal, grace = grace_secs, "eviction manager: evicting pod: {message}");
        self.deps.events.pod(pod, None, Type::Warning, "Evicted", message.clone());
        let (tx, rx) = oneshot::channel();
        let req =
            EvictionRequest { uid, eviction: Eviction { reason: "Evicted", grace_secs, message, done: Some(tx) } };
        if self.deps.evict.send(req).await.is_err() {
            tracing::warn!(pod = %name, "eviction manager: the dispatcher is gone");
            return None;
        }
        self.deps.metrics.eviction(signal);
        Some(rx)
    }

    /// Node-level reclaim for a disk signal: every dead container but the newest of each, every
    /// unused image. True when the thresholds (with their minimum reclaim) are no longer met.
    async fn reclaim_node_level(&self) -> bool {
        if let Some(c) = &self.deps.containers
            && let Err(e) = c.collect(true).await
        {
            tracing::warn!(error = %e, "eviction manager: container GC failed");
        }
        if let Some(i) = &self.deps.images
            && let Err(e) = i.delete_unused().await
        {
            tracing::warn!(error = %e, "eviction manager: image GC failed");
        }
        let Ok(collected) = self.deps.stats.collect(false).await else { return false };
        let obs = thresholds::observe(&collected.summary);
        thresholds::met(&self.cfg.thresholds, &obs, true).is_empty()
    }

    /// One cycle; returns the evicted pod's cleanup signal when it evicted one.
    async fn synchronize(&mut self) -> Option<oneshot::Receiver<()>> {
        if self.dedicated_image_fs.is_none() {
            self.dedicated_image_fs = dedicated_image_fs(&self.deps.runtime, &self.cfg.root_dir).await;
        }
        let collected = match self.deps.stats.collect(false).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "eviction manager: failed to get summary stats");
                return None;
            }
        };
        let summary = collected.summary;
        let obs = thresholds::observe(&summary);
        let now = self.deps.clock.now();
        let step = self.state.step(&self.cfg.thresholds, &obs, self.cfg.pressure_transition_period, now);
        self.handle.set(step.conditions.clone());
        let stats = rank::stats_by_uid(&summary.pods);
        let mut active: Vec<Arc<Pod>> = self.deps.statuses.list().into_iter().filter(|p| !is_terminal(p)).collect();

        // Local storage limits first, as upstream.
        for p in active.iter().filter(|p| !rank::is_critical(p)) {
            let Some(s) = stats.get(p.metadata.uid.as_deref().unwrap_or_default()) else { continue };
            if let Some((message, signal)) = rank::local_storage_violation(p, s) {
                return self.evict(p, IMMEDIATE_GRACE_SECS, message, signal).await;
            }
        }
        let threshold = step.act_on.first()?;
        let signal: Signal = threshold.signal;
        let resource = signal.resource().as_str();
        tracing::info!(resource, signal = signal.as_str(), "eviction manager: attempting to reclaim");
        if signal.is_disk() && self.reclaim_node_level().await {
            tracing::info!(resource, "eviction manager: reclaimed enough without evicting pods");
            return None;
        }
        if active.is_empty() {
            tracing::warn!("eviction manager: thresholds are met, but no pods are active to evict");
            return None;
        }
        rank::rank(&mut active, signal, &stats, self.dedicated_image_fs.unwrap_or(false));
        let Some(p) = active.iter().find(|p| !rank::is_critical(p)) else {
            tracing::warn!("eviction manager: unable to evict any pods from the node (all critical)");
            return None;
        };
        let grace =
            if threshold.is_hard() { IMMEDIATE_GRACE_SECS } else { self.cfg.max_pod_grace_period.min(pod_grace(p)) };
        let message = rank::message(p, signal, &step.act_on, &obs, &stats);
        self.evict(p, grace, message, signal.as_str()).await
    }
}

/// Runs the manager: a cycle every monitoring interval; after an eviction, the next cycle waits
/// for the pod to be killed (up to 30 s).
pub async fn run(cfg: Config, deps: Deps, handle: Handle, token: tokio_util::sync::CancellationToken) {
    let interval = cfg.monitoring_interval;
    let mut m = Manager { cfg, deps, handle, state: state::State::default(), dedicated_image_fs: None };
    loop {
        if token.is_cancelled() {
            return;
        }
        match m.synchronize().await {
            Some(done) => {
                let waited = token.run_until_cancelled(tokio::time::timeout(CLEANUP_TIMEOUT, done)).await;
                if waited.is_some_and(|w| w.is_err()) {
                    tracing::warn!("eviction manager: timed out waiting for the evicted pod to be killed");
                }
            }
            None => {
                if token.run_until_cancelled(tokio::time::sleep(interval)).await.is_none() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
