//! The running pod's side of an in-place resize (upstream SyncPod's resize branch and the resize
//! parts of generateAPIPodStatus): what the allocation manager allocated is applied to the
//! running containers (`pod/resize.rs`), containers whose resizePolicy asks for it are
//! restarted by the plan, what each new container is created with is recorded as actuated, and
//! the status reports `resources` (what the runtime was given), `allocatedResources` (with its
//! gate) and the PodResizePending / PodResizeInProgress conditions.

use super::Worker;
use crate::event_recorder::Type::{Normal, Warning};
use crate::pod::observe::PodObs;
use crate::pod::{plan, resize};
use k8s_openapi::api::core::v1::{ContainerStatus, PodStatus, ResourceRequirements};

/// Upstream's kill message for a container restarted by a resize.
fn restart_reason(name: &str) -> String {
    format!("Container {name} resize requires restart")
}

impl Worker {
    /// Applies the allocated resources to the running containers; returns the resize plan so
    /// that the containers to restart join the sync's plan ([`Self::add_resize_restarts`]).
    pub(super) async fn resize(&mut self, obs: &PodObs) -> resize::Plan {
        let deps = self.cfg.deps.clone();
        let uid = self.pod.metadata.uid.clone().unwrap_or_default();
        let alloc = &deps.allocation;
        let p = resize::plan(&self.pod, obs, &|name| alloc.actuated(&uid, name));
        for name in &p.adopt {
            let c = resize::resizable(&self.pod).find(|c| &c.name == name);
            alloc.set_actuated(&uid, name, c.and_then(|c| c.resources.clone()).unwrap_or_default());
        }
        if p.containers.is_empty() {
            self.resize_completed();
            return p;
        }
        // Allocated and not actuated (also after a kubelet restart in the middle of a resize).
        alloc.set_in_progress(&self.pod, deps.clock.now());
        if p.in_place().next().is_some() {
            match resize::actuate(&deps, &self.pod, &p).await {
                Ok(()) if p.restarts().next().is_none() => self.resize_completed(),
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(pod = %crate::pod::executor::pod_name(&self.pod), "resize: {e}");
                    alloc.set_resize_error(&self.pod, e.to_string(), deps.clock.now());
                    let msg = crate::allocation::event_message("Pod resize error", &self.pod, &e.to_string());
                    deps.events.pod(&self.pod, None, Warning, "ResizeError", msg);
                }
            }
        }
        p
    }

    /// Everything allocated is actuated: PodResizeInProgress goes, with a ResizeCompleted event
    /// when one was in progress.
    fn resize_completed(&self) {
        let uid = self.pod.metadata.uid.clone().unwrap_or_default();
        let alloc = &self.cfg.deps.allocation;
        if alloc.conditions(&uid).iter().any(|c| c.type_ == crate::allocation::POD_RESIZE_IN_PROGRESS) {
            alloc.clear_in_progress(&uid);
            let msg = crate::allocation::event_message("Pod resize completed", &self.pod, "");
            self.cfg.deps.events.pod(&self.pod, None, Normal, "ResizeCompleted", msg);
        }
    }

    /// Containers whose resizePolicy says RestartContainer for a changed resource are killed
    /// and started again with the new resources (a new instance: restartCount grows).
    pub(super) fn add_resize_restarts(&self, p: &mut plan::Plan, r: &resize::Plan, obs: &PodObs) {
        for c in r.restarts() {
            if p.kill.iter().any(|k| k.id == c.id) || p.kill_pod || p.create_sandbox.is_some() {
                continue;
            }
            let init = !self.pod.spec.as_ref().is_some_and(|s| s.containers.iter().any(|x| x.name == c.name));
            p.kill.push(plan::Kill { id: c.id.clone(), name: c.name.clone(), reason: restart_reason(&c.name) });
            let restart_count = obs.containers.iter().filter(|o| o.name == c.name).map(|o| o.restart_count + 1).max();
            p.start.push(plan::Start {
                name: c.name.clone(),
                init,
                restart_count: restart_count.unwrap_or(0),
                arm_backoff: None,
            });
        }
    }

    /// What the started containers were created with is what the runtime has.
    pub(super) fn record_started(&self, p: &plan::Plan) {
        let uid = self.pod.metadata.uid.clone().unwrap_or_default();
        for s in &p.start {
            if let Some(c) = resize::resizable(&self.pod).find(|c| c.name == s.name) {
                self.cfg.deps.allocation.set_actuated(&uid, &c.name, c.resources.clone().unwrap_or_default());
            }
        }
    }

    /// The resize parts of the status: conditions first (as upstream appends them before the
    /// pod's own), then each running container's `resources` and (gated) `allocatedResources`.
    pub(super) fn resize_status(&self, st: &mut PodStatus) {
        let uid = self.pod.metadata.uid.clone().unwrap_or_default();
        let alloc = &self.cfg.deps.allocation;
        let mut conditions = alloc.conditions(&uid);
        if !conditions.is_empty() {
            conditions.extend(st.conditions.take().unwrap_or_default());
            st.conditions = Some(conditions);
        }
        let allocated_status = alloc.allocated_status();
        let fill = |cs: &mut ContainerStatus| {
            let Some(c) = resize::resizable(&self.pod).find(|c| c.name == cs.name) else { return };
            let allocated = c.resources.clone().unwrap_or_default();
            if allocated_status {
                cs.allocated_resources = allocated.requests.clone().filter(|r| !r.is_empty());
            }
            let running = cs.state.as_ref().is_some_and(|s| s.running.is_some());
            let applied = alloc.actuated(&uid, &c.name).unwrap_or(allocated);
            let has_any = |r: &ResourceRequirements| {
                r.requests.as_ref().is_some_and(|m| !m.is_empty()) || r.limits.as_ref().is_some_and(|m| !m.is_empty())
            };
            if running && has_any(&applied) {
                cs.resources = Some(ResourceRequirements { claims: None, ..applied });
            }
        };
        st.container_statuses.iter_mut().flatten().for_each(fill);
        st.init_container_statuses.iter_mut().flatten().for_each(fill);
    }
}
