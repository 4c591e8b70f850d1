//! The allocation manager (upstream pkg/kubelet/allocation) for in-place pod resize: which
//! resources each admitted pod's containers were given (allocated, checkpointed in
//! `allocated_pods_state`), which ones the runtime applied (actuated, `actuated_pods_state`), and
//! the resize conditions (PodResizePending with `Infeasible` / `Deferred`, PodResizeInProgress)
//! upstream's status manager keeps. The dispatcher admits pods and resizes through it
//! ([`Manager::add_pod`], [`Manager::handle_resize`], [`Manager::retry_pending`]); pod workers
//! run the allocated view of their pod ([`Manager::allocated_pod`]), record what they applied and
//! read the conditions for the status. Both checkpoints survive a kubelet restart, so a resize
//! caught in the middle is finished by the next kubelet.

pub mod decide;
pub mod state;

use crate::cm::Allocatable;
use decide::Decision;
use k8s_openapi::api::core::v1::{Container, Pod, PodCondition, ResourceRequirements};
use state::{PodResourceInfo, State};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

pub const POD_RESIZE_PENDING: &str = "PodResizePending";
pub const POD_RESIZE_IN_PROGRESS: &str = "PodResizeInProgress";

#[derive(Debug, Clone)]
pub struct Config {
    /// Where the checkpoints are (the root dir); None keeps them in memory (hollow nodes, tests).
    pub dir: Option<PathBuf>,
    /// What resizes are admitted against (the container manager's allocatable).
    pub allocatable: Allocatable,
    /// The InPlacePodLevelResourcesVerticalScaling gate (alpha, off).
    pub pod_level_resize: bool,
    /// The InPlacePodVerticalScalingAllocatedStatus gate (deprecated, off): container statuses
    /// report `allocatedResources`.
    pub allocated_status: bool,
}

impl Config {
    pub fn in_memory(allocatable: Allocatable) -> Self {
        Config { dir: None, allocatable, pod_level_resize: false, allocated_status: false }
    }
}

/// What [`Manager::handle_resize`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resized {
    /// The desired resources are the allocated ones.
    Unchanged,
    /// The resize was allocated and is now in progress.
    Allocated,
    /// Held pending (`Infeasible` / `Deferred`); `new` when the reason or message changed.
    Pending { reason: String, message: String, new: bool },
}

impl Resized {
    pub fn is_allocated(&self) -> bool {
        matches!(self, Resized::Allocated)
    }
}

#[derive(serde::Serialize)]
struct ContainerSummary<'a> {
    name: &'a str,
    resources: ResourceRequirements,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Summary<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    init_containers: Vec<ContainerSummary<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    containers: Vec<ContainerSummary<'a>>,
    generation: i64,
    #[serde(skip_serializing_if = "str::is_empty")]
    error: &'a str,
}

/// The resize events' message (upstream's podResizeMessage): `<prefix>: ` and the pod's
/// containers' resources with the generation (and an error) as JSON; prefixes `Pod resize
/// started`, `Pod resize completed`, `Pod resize error`, `Pod resize <reason>`.
pub fn event_message(prefix: &str, pod: &Pod, error: &str) -> String {
    fn summary(cs: Option<&Vec<Container>>) -> Vec<ContainerSummary<'_>> {
        cs.into_iter()
            .flatten()
            .map(|c| ContainerSummary { name: &c.name, resources: c.resources.clone().unwrap_or_default() })
            .collect()
    }
    let spec = pod.spec.as_ref();
    let s = Summary {
        init_containers: summary(spec.and_then(|s| s.init_containers.as_ref())),
        containers: summary(spec.map(|s| &s.containers)),
        generation: pod.metadata.generation.unwrap_or(0),
        error,
    };
    match serde_json::to_string(&s) {
        Ok(json) => format!("{prefix}: {json}"),
        Err(_) => prefix.to_string(),
    }
}

/// A condition the manager holds for a pod (type is the map key's).
#[derive(Debug, Clone, PartialEq)]
struct Held {
    reason: String,
    message: String,
    generation: Option<i64>,
    since: SystemTime,
}

#[derive(Debug, Default)]
struct Conditions {
    pending: Option<Held>,
    in_progress: Option<Held>,
}

struct Inner {
    cfg: Config,
    allocated: State,
    actuated: State,
    conditions: HashMap<String, Conditions>,
    /// Pods with a deferred resize, retried when pods go away or shrink.
    pending: Vec<String>,
}

/// The cloneable handle.
#[derive(Clone)]
pub struct Manager(Arc<Mutex<Inner>>);

fn uid(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or_default()
}

/// The resources a resizable container keeps in the allocation (upstream's allocationFromPod:
/// regular containers and sidecars).
fn allocation_of(pod: &Pod, pod_level_resize: bool) -> PodResourceInfo {
    let mut info = PodResourceInfo::default();
    let Some(spec) = pod.spec.as_ref() else { return info };
    if pod_level_resize {
        info.pod_level = spec.resources.clone();
    }
    let resizable =
        spec.init_containers.iter().flatten().filter(|c| crate::meta::is_sidecar(c)).chain(&spec.containers);
    for c in resizable {
        info.containers.insert(c.name.clone(), c.resources.clone().unwrap_or_default());
    }
    info
}

/// `pod` with the allocation's resources (upstream's updatePodFromAllocation); whether any
/// differed.
fn with_allocation(pod: &Pod, info: &PodResourceInfo, pod_level_resize: bool) -> (Pod, bool) {
    let mut out = pod.clone();
    let mut changed = false;
    let Some(spec) = out.spec.as_mut() else { return (out, false) };
    if pod_level_resize && spec.resources != info.pod_level {
        spec.resources = info.pod_level.clone();
        changed = true;
    }
    let apply = |c: &mut Container, changed: &mut bool| {
        if let Some(r) = info.containers.get(&c.name) {
            let now = c.resources.clone().unwrap_or_default();
            if &now != r {
                c.resources = Some(r.clone());
                *changed = true;
            }
        }
    };
    for c in spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten()) {
        apply(c, &mut changed);
    }
    (out, changed)
}

impl Manager {
    /// Loads both checkpoints; a corrupt one is an error (the kubelet does not start).
    pub fn new(cfg: Config) -> state::Result<Self> {
        let (allocated, actuated) = match &cfg.dir {
            Some(dir) => {
                (State::load(dir, state::ALLOCATED_PODS_STATE)?, State::load(dir, state::ACTUATED_PODS_STATE)?)
            }
            None => (State::in_memory(), State::in_memory()),
        };
        let inner = Inner { cfg, allocated, actuated, conditions: HashMap::new(), pending: Vec::new() };
        Ok(Manager(Arc::new(Mutex::new(inner))))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The pod as the kubelet runs it: its spec with the allocated resources (the desired ones
    /// until an allocation is recorded).
    pub fn allocated_pod(&self, pod: &Pod) -> Pod {
        let inner = self.lock();
        match inner.allocated.get(uid(pod)) {
            Some(info) => with_allocation(pod, info, inner.cfg.pod_level_resize).0,
            None => pod.clone(),
        }
    }

    /// Records an admitted pod's allocation (upstream's AddPod after admission). A pod with an
    /// allocation already (a kubelet restart) keeps it: the checkpoint is the source of truth.
    pub fn add_pod(&self, pod: &Pod) {
        let mut inner = self.lock();
        if inner.allocated.get(uid(pod)).is_some() {
            return;
        }
        let info = allocation_of(pod, inner.cfg.pod_level_resize);
        if let Err(e) = inner.allocated.set_pod(uid(pod), info) {
            tracing::error!(pod_uid = %uid(pod), error = %e, "cannot checkpoint the pod's allocation");
        }
    }

    /// Evaluates a pod whose desired resources may differ from its allocation
    /// (handlePodResourcesResize): `others` are the other admitted pods, as allocated. Allocates
    /// and marks the resize in progress, or holds it pending with upstream's reason and message.
    pub fn handle_resize(&self, pod: &Pod, others: &[Pod], now: SystemTime) -> Resized {
        let mut inner = self.lock();
        let id = uid(pod).to_string();
        let gate = inner.cfg.pod_level_resize;
        let Some(info) = inner.allocated.get(&id).cloned() else { return Resized::Unchanged };
        let (allocated, differs) = with_allocation(pod, &info, gate);
        let desired_pod_level = pod.spec.as_ref().and_then(|s| s.resources.clone());
        let pod_level_differs = allocated.spec.as_ref().and_then(|s| s.resources.clone()) != desired_pod_level;
        if !differs && !pod_level_differs {
            inner.conditions.entry(id.clone()).or_default().pending = None;
            inner.pending.retain(|u| u != &id);
            return Resized::Unchanged;
        }
        let generation = pod.metadata.generation;
        let refs: Vec<&Pod> = others.iter().filter(|p| uid(p) != id).collect();
        match decide::decide(pod, pod_level_differs && !gate, &refs, &inner.cfg.allocatable) {
            Decision::Allocate => {
                if let Err(e) = inner.allocated.set_pod(&id, allocation_of(pod, gate)) {
                    tracing::error!(pod_uid = %id, error = %e, "cannot checkpoint the pod's allocation");
                    return Resized::Unchanged;
                }
                let c = inner.conditions.entry(id.clone()).or_default();
                c.pending = None;
                c.in_progress = Some(Held { reason: String::new(), message: String::new(), generation, since: now });
                inner.pending.retain(|u| u != &id);
                Resized::Allocated
            }
            Decision::Pending { reason, message } => {
                let deferred = reason == decide::DEFERRED;
                let c = inner.conditions.entry(id.clone()).or_default();
                let same = c.pending.as_ref().is_some_and(|h| h.reason == reason && h.message == message);
                if !same {
                    c.pending = Some(Held { reason: reason.clone(), message: message.clone(), generation, since: now });
                } else if let Some(h) = c.pending.as_mut() {
                    h.generation = generation;
                }
                if deferred && !inner.pending.contains(&id) {
                    inner.pending.push(id);
                } else if !deferred {
                    inner.pending.retain(|u| u != &id);
                }
                Resized::Pending { reason, message, new: !same }
            }
        }
    }

    /// Whether container statuses report `allocatedResources`.
    pub fn allocated_status(&self) -> bool {
        self.lock().cfg.allocated_status
    }

    /// The pods whose resize is deferred, to evaluate again (upstream retries them when pods
    /// are removed or resized, and periodically).
    pub fn pending(&self) -> Vec<String> {
        self.lock().pending.clone()
    }

    /// What the runtime was given for a container, if recorded.
    pub fn actuated(&self, pod_uid: &str, container: &str) -> Option<ResourceRequirements> {
        self.lock().actuated.container(pod_uid, container).cloned()
    }

    /// Records what the runtime was given for a container (at creation and after a resize).
    pub fn set_actuated(&self, pod_uid: &str, container: &str, r: ResourceRequirements) {
        if let Err(e) = self.lock().actuated.set_container(pod_uid, container, r) {
            tracing::error!(pod_uid = %pod_uid, container, error = %e, "cannot checkpoint actuated resources");
        }
    }

    /// A resize being actuated failed: PodResizeInProgress says so (reason `Error`).
    pub fn set_resize_error(&self, pod: &Pod, message: String, now: SystemTime) {
        let mut inner = self.lock();
        let c = inner.conditions.entry(uid(pod).to_string()).or_default();
        let since = c.in_progress.as_ref().map_or(now, |h| h.since);
        c.in_progress = Some(Held { reason: "Error".into(), message, generation: pod.metadata.generation, since });
    }

    /// Marks a resize in progress (allocated, not yet actuated), as found after a restart.
    pub fn set_in_progress(&self, pod: &Pod, now: SystemTime) {
        let mut inner = self.lock();
        let c = inner.conditions.entry(uid(pod).to_string()).or_default();
        if c.in_progress.is_none() {
            c.in_progress = Some(Held {
                reason: String::new(),
                message: String::new(),
                generation: pod.metadata.generation,
                since: now,
            });
        }
    }

    /// Everything allocated is actuated: the resize is done.
    pub fn clear_in_progress(&self, pod_uid: &str) {
        if let Some(c) = self.lock().conditions.get_mut(pod_uid) {
            c.in_progress = None;
        }
    }

    /// The resize conditions for the pod's status, PodResizePending before PodResizeInProgress.
    pub fn conditions(&self, pod_uid: &str) -> Vec<PodCondition> {
        let inner = self.lock();
        let Some(c) = inner.conditions.get(pod_uid) else { return Vec::new() };
        let make = |kind: &str, h: &Held| PodCondition {
            type_: kind.into(),
            status: "True".into(),
            reason: (!h.reason.is_empty()).then(|| h.reason.clone()),
            message: (!h.message.is_empty()).then(|| h.message.clone()),
            observed_generation: h.generation,
            last_probe_time: Some(crate::meta::time(h.since)),
            last_transition_time: Some(crate::meta::time(h.since)),
        };
        let pending = c.pending.as_ref().map(|h| make(POD_RESIZE_PENDING, h));
        let progress = c.in_progress.as_ref().map(|h| make(POD_RESIZE_IN_PROGRESS, h));
        pending.into_iter().chain(progress).collect()
    }

    /// Forgets a pod (removed from the node): its checkpoints and conditions.
    pub fn remove_pod(&self, pod_uid: &str) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        inner.conditions.remove(pod_uid);
        inner.pending.retain(|u| u != pod_uid);
        for s in [&mut inner.allocated, &mut inner.actuated] {
            if let Err(e) = s.remove(pod_uid) {
                tracing::warn!(pod_uid = %pod_uid, error = %e, "cannot remove the pod from a checkpoint");
            }
        }
    }

    /// Removes the state of pods not in `keep` (upstream's RemoveOrphanedPods).
    pub fn remove_orphans(&self, keep: &std::collections::HashSet<String>) {
        let gone: Vec<String> = {
            let inner = self.lock();
            inner.allocated.uids().chain(inner.actuated.uids()).filter(|u| !keep.contains(*u)).cloned().collect()
        };
        for u in gone {
            self.remove_pod(&u);
        }
    }
}

#[cfg(test)]
mod tests;
