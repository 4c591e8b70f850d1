//! The terminating phase (upstream's SyncTerminatingPod): what runs is stopped. A deleted pod's
//! containers are stopped with its grace period and the pod is removed from the runtime; a
//! terminal pod's (Succeeded, Failed, evicted) are stopped and kept.

use super::Worker;
use crate::pod::error::Result;
use crate::pod::executor;
use crate::pod::observe::PodObs;

impl Worker {
    /// A deleted pod: every container stopped, then its containers and sandboxes removed.
    pub(super) async fn sync_terminating(&mut self, obs: &PodObs) -> Result<()> {
        if obs.sandboxes.is_empty() && obs.containers.is_empty() {
            return Ok(());
        }
        let deps = self.cfg.deps.clone();
        tracing::info!(pod = %executor::pod_name(&self.pod), "terminating pod");
        let killed = executor::kill_pod(&deps, &self.pod, obs).await;
        self.changed_runtime();
        killed?;
        let after = self.observe_after_change().await?;
        for c in &after.containers {
            tracing::info!(pod = %executor::pod_name(&self.pod), container = %c.name, exit_code = c.exit_code, "container stopped");
        }
        // The deleted pod's last status: its stopped containers and a terminal phase (upstream's
        // SyncTerminatingPod), sent to the API before the object is deleted.
        self.publish_status(&after);
        let removed = executor::remove_pod(&deps, &self.pod, &after).await;
        // A pod put back with the same UID must not see what was just removed.
        self.changed_runtime();
        removed
    }

    /// A terminal pod: what still runs is stopped (an eviction with its own grace period,
    /// upstream's gracePeriodOverride) and the status published again. Returns the pod's state.
    pub(super) async fn stop_terminal(&mut self, obs: PodObs) -> Result<PodObs> {
        if !obs.any_running() {
            return Ok(obs);
        }
        let mut pod = self.pod.clone();
        if let Some(grace) = self.killed.as_ref().and_then(|k| k.grace_secs) {
            pod.metadata.deletion_grace_period_seconds = Some(grace);
        }
        let killed = executor::kill_pod(&self.cfg.deps, &pod, &obs).await;
        self.changed_runtime();
        killed?;
        let obs = self.observe().await?;
        self.publish(&obs);
        Ok(obs)
    }
}
