//! The terminated phase (upstream's SyncTerminatedPod): nothing of the pod runs any more. A
//! deleted pod's volumes are torn down, then its directory, cgroup and logs go and its status is
//! forgotten (the worker ends); a terminal pod's volumes are torn down.

use super::{Outcome, VOLUME_WAIT, Worker};
use crate::pod::error::{Error, Result};
use crate::pod::observe::PodObs;
use crate::pod::{executor, runtime_config};

impl Worker {
    /// A deleted pod, removed from the runtime: everything else it had goes.
    pub(super) async fn sync_terminated(&mut self) -> Result<Outcome> {
        let deps = self.cfg.deps.clone();
        let uid = self.pod.metadata.uid.clone().unwrap_or_default();
        // Volumes come off first; the pod directory goes only once nothing is mounted in it.
        // A failure stays on the pod (message, FailedUnMount event) and is retried.
        let torn_down = self.token.run_until_cancelled(deps.volumes.tear_down_pod(&self.pod, VOLUME_WAIT)).await;
        let Some(torn_down) = torn_down else { return Err(Error::Stopping) };
        if let Err(e) = torn_down {
            let e = Error::VolumeTeardown(e);
            self.cfg.statuses.set_message(&uid, e.to_string());
            return Err(e);
        }
        let pod_dir = runtime_config::pod_dir(&deps.node, &uid);
        crate::volume::mount::remove_unmounted(&pod_dir).map_err(Error::RemovePodDir)?;
        if let Some(cm) = &deps.node.cgroups {
            cm.remove_pod_cgroup_eventually(&uid);
        }
        let _ = std::fs::remove_dir_all(runtime_config::pod_log_dir(&deps.node, &self.pod));
        self.cfg.statuses.remove(&uid);
        deps.allocation.remove_pod(&uid);
        deps.metrics.pod_forgotten(&uid);
        tracing::info!(pod = %executor::pod_name(&self.pod), "pod terminated and removed");
        Ok(Outcome::Removed)
    }

    /// A finished pod's volumes are torn down once nothing runs (upstream does so for
    /// terminated pods); a failure is logged and tried again at the next sync.
    pub(super) async fn tear_down_terminal(&mut self, obs: &PodObs) {
        if !obs.any_running()
            && let Some(Err(e)) =
                self.token.run_until_cancelled(self.cfg.deps.volumes.tear_down_pod(&self.pod, VOLUME_WAIT)).await
        {
            tracing::warn!(pod = %executor::pod_name(&self.pod), "{e}");
        }
    }
}
