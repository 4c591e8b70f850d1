//! One probe of one container instance: a tokio task (no OS thread), so hundreds of probed
//! containers cost hundreds of small tasks. It reports only when the thresholded result flips.

use super::counter::Counter;
use super::handlers::{self, Target};
use super::{Kind, Update};
use k8s_openapi::api::core::v1::Probe;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, watch};

pub struct Spec {
    /// prober_probe_total and prober_probe_duration_seconds are recorded here.
    pub metrics: crate::metrics::Metrics,
    /// The probed container's pod, for the metrics' labels.
    pub pod: crate::cri::labels::PodRef,
    pub kind: Kind,
    pub probe: Probe,
    pub container: String,
    pub target: Target,
    /// When the container started: `initialDelaySeconds` counts from there.
    pub started_at: SystemTime,
    pub now: SystemTime,
    /// The thresholded result to start from (restored after a kubelet restart); None: liveness
    /// passing, readiness and startup failing.
    pub initial: Option<bool>,
}

/// Runs the probe until it is aborted (the container went away) or has nothing more to say.
/// `gate` holds liveness and readiness back until the startup probe succeeded.
pub async fn run(spec: Spec, tx: mpsc::UnboundedSender<Update>, gate: Option<watch::Receiver<bool>>) {
    let spawned = tokio::time::Instant::now();
    if let Some(mut gate) = gate
        && gate.wait_for(|started| *started).await.is_err()
    {
        return;
    }
    let p = &spec.probe;
    let initial_delay = Duration::from_secs(p.initial_delay_seconds.unwrap_or(0).max(0) as u64);
    // Counted from the container's start, the wait for the startup probe included.
    let since_start = spec.now.duration_since(spec.started_at).unwrap_or_default() + spawned.elapsed();
    tokio::time::sleep(initial_delay.saturating_sub(since_start)).await;
    let period = Duration::from_secs(p.period_seconds.unwrap_or(10).max(1) as u64);
    // Liveness starts out passing; readiness and startup start out failing.
    let initial = spec.initial.unwrap_or(spec.kind == Kind::Liveness);
    let success_threshold = if spec.kind == Kind::Readiness { p.success_threshold.unwrap_or(1) } else { 1 };
    let failure_threshold = p.failure_threshold.unwrap_or(3);
    let mut counter = Counter::new(success_threshold, failure_threshold, initial);
    let mut last_message = String::new();
    let target = crate::metrics::ProbeTarget {
        probe_type: spec.kind.title(),
        container: spec.container.clone(),
        pod: spec.pod.name.clone(),
        namespace: spec.pod.namespace.clone(),
        pod_uid: spec.pod.uid.clone(),
    };
    // The probe's series go when this task ends or is aborted (its container instance is gone).
    let _series = ProbeSeries(spec.metrics.clone(), target.clone());
    loop {
        let probe_start = std::time::Instant::now();
        let out = handlers::probe(p, &spec.target).await;
        spec.metrics.probe(&target, if out.ok { "successful" } else { "failed" }, probe_start.elapsed());
        if !out.ok {
            tracing::debug!(container = %spec.container, probe = ?spec.kind, failures = counter.failures() + 1, "probe failed: {}", out.message);
        }
        let flipped = counter.observe(out.ok);
        // A failing readiness probe also reports a changed reason, for the pod's blocker message.
        let message_changed = spec.kind == Kind::Readiness && !out.ok && out.message != last_message;
        // A startup probe that used up its failureThreshold fails for good.
        let startup_failed = spec.kind == Kind::Startup && counter.failures() >= failure_threshold.max(1) as u32;
        let report = match spec.kind {
            Kind::Startup => flipped.is_some() || startup_failed,
            _ => flipped.is_some() || message_changed,
        };
        if !out.ok {
            last_message = out.message.clone();
        }
        if report {
            let update = Update {
                container_id: spec.target.container_id.clone(),
                container: spec.container.clone(),
                kind: spec.kind,
                ok: counter.state(),
                message: out.message,
            };
            if tx.send(update).is_err() {
                return;
            }
        }
        // Done: startup succeeded or failed for good, or liveness failed (the container is killed
        // and its next instance gets new probes).
        let done = match spec.kind {
            Kind::Startup => counter.state() || startup_failed,
            Kind::Liveness => !counter.state(),
            Kind::Readiness => false,
        };
        if done {
            return;
        }
        tokio::time::sleep(period).await;
    }
}

/// Removes a probe's metric series when dropped.
struct ProbeSeries(crate::metrics::Metrics, crate::metrics::ProbeTarget);

impl Drop for ProbeSeries {
    fn drop(&mut self) {
        self.0.probe_removed(&self.1);
    }
}
