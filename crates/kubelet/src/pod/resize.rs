//! In-place resize of a running pod (upstream kuberuntime's computePodResizeAction and
//! doPodResizeAction). `plan` is pure: each running container (regular or sidecar) whose
//! allocated cpu/memory requests or limits differ from what the runtime was given (the
//! allocation manager's actuated record) is either updated in place or — when its `resizePolicy`
//! says `RestartContainer` for a changed resource — restarted with the new resources.
//! `actuate` performs the in-place part in upstream's order: the pod cgroup's limits grow before
//! the containers' (and shrink after them), a pod memory limit below the pod's current usage is
//! refused, then CRI UpdateContainerResources per container, each recorded as actuated.

use super::executor::Deps;
use super::observe::{CState, PodObs};
use crate::cm::resources::{self, CgroupConfig, milli};
use k8s_openapi::api::core::v1::{Container, Pod, ResourceRequirements};

/// One running container to resize.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerResize {
    pub id: String,
    pub name: String,
    /// Its resizePolicy wants a restart for a changed resource.
    pub restart: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub containers: Vec<ContainerResize>,
    /// Running containers with no actuated record (created before this kubelet kept one): their
    /// allocated resources are taken as applied. Upstream would call UpdateContainerResources
    /// (or restart them for RestartContainer); we leave containers of an upgraded node alone.
    pub adopt: Vec<String>,
}

impl Plan {
    pub fn in_place(&self) -> impl Iterator<Item = &ContainerResize> {
        self.containers.iter().filter(|c| !c.restart)
    }
    pub fn restarts(&self) -> impl Iterator<Item = &ContainerResize> {
        self.containers.iter().filter(|c| c.restart)
    }
}

/// The containers a resize applies to: regular containers and sidecars.
pub fn resizable(pod: &Pod) -> impl Iterator<Item = &Container> {
    let spec = pod.spec.as_ref();
    let sidecars =
        spec.into_iter().flat_map(|s| s.init_containers.iter().flatten()).filter(|c| crate::meta::is_sidecar(c));
    spec.into_iter().flat_map(|s| s.containers.iter()).chain(sidecars)
}

/// (request, limit) in milli-units of `resource` (a missing request defaults to the limit).
fn values(r: &ResourceRequirements, resource: &str) -> (i128, i128) {
    let limit = r.limits.as_ref().and_then(|m| m.get(resource)).map(milli).unwrap_or(0);
    let request = r.requests.as_ref().and_then(|m| m.get(resource)).map(milli).unwrap_or(limit);
    (request, limit)
}

/// The resources (cpu, memory) whose request or limit differ.
pub fn changed(want: &ResourceRequirements, have: &ResourceRequirements) -> Vec<&'static str> {
    ["cpu", "memory"].into_iter().filter(|r| values(want, r) != values(have, r)).collect()
}

/// The container's resizePolicy for a resource (NotRequired unless it says RestartContainer).
fn restart_policy<'a>(c: &'a Container, resource: &str) -> &'a str {
    c.resize_policy.iter().flatten().find(|p| p.resource_name == resource).map_or("NotRequired", |p| &p.restart_policy)
}

/// What the running containers need (computePodResizeAction), against `actuated` records.
pub fn plan(pod: &Pod, obs: &PodObs, actuated: &dyn Fn(&str) -> Option<ResourceRequirements>) -> Plan {
    let mut p = Plan::default();
    let sandbox = obs.sandbox().map(|s| s.id.as_str());
    for c in resizable(pod) {
        let Some(o) = obs.latest(&c.name, sandbox).filter(|o| o.state == CState::Running) else { continue };
        let want = c.resources.clone().unwrap_or_default();
        let Some(have) = actuated(&c.name) else {
            p.adopt.push(c.name.clone());
            continue;
        };
        let changed = changed(&want, &have);
        if changed.is_empty() {
            continue;
        }
        let restart = changed.iter().any(|r| restart_policy(c, r) == "RestartContainer");
        p.containers.push(ContainerResize { id: o.id.clone(), name: c.name.clone(), restart });
    }
    p
}

/// The pod as the runtime has it: containers with their actuated resources where recorded.
pub fn actuated_pod(pod: &Pod, actuated: &dyn Fn(&str) -> Option<ResourceRequirements>) -> Pod {
    let mut out = pod.clone();
    if let Some(spec) = out.spec.as_mut() {
        for c in spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten()) {
            if let Some(r) = actuated(&c.name) {
                c.resources = Some(r);
            }
        }
    }
    out
}

/// Each limit at the larger of the two configs: what the pod cgroup holds while containers
/// change (grow before, shrink after).
pub fn grown(old: &CgroupConfig, new: &CgroupConfig) -> CgroupConfig {
    let unlimited_max = |a: Option<i64>, b: Option<i64>| match (a, b) {
        (Some(a), Some(b)) if a <= 0 || b <= 0 => Some(-1),
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => b.or(a),
    };
    CgroupConfig {
        cpu_shares: new.cpu_shares.max(old.cpu_shares),
        cpu_quota: unlimited_max(old.cpu_quota, new.cpu_quota),
        cpu_period: new.cpu_period,
        memory: unlimited_max(old.memory, new.memory),
        pids: new.pids,
        hugepages: new.hugepages.clone(),
    }
}

/// Why an in-place resize could not be applied (PodResizeInProgress reason `Error`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("aborting attempt to set pod memory limit less than current memory usage for pod {0}")]
    MemoryBelowUsage(String),
    #[error("failed to set the pod cgroup: {0}")]
    Cgroup(#[from] crate::cm::Error),
    #[error("failed to update resources of container {name}: {source}")]
    Update { name: String, source: crate::cri::CriError },
}

/// Applies the in-place part of `p` (doPodResizeAction) to the allocated `pod`, recording each
/// container's new resources as actuated.
pub async fn actuate(deps: &Deps, pod: &Pod, p: &Plan) -> Result<(), Error> {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let alloc = &deps.allocation;
    let actuated = |name: &str| alloc.actuated(&uid, name);
    let policy = deps.node.resource_policy();
    let cm = deps.node.cgroups.as_ref().filter(|cm| cm.pod_cgroup(pod).is_some());
    if let Some(cm) = cm {
        let old = resources::pod_cgroup_config(&actuated_pod(pod, &actuated), &policy);
        let new = resources::pod_cgroup_config(pod, &policy);
        if let (Some(o), Some(n)) = (old.memory, new.memory)
            && n > 0
            && (o <= 0 || n < o)
            && cm.pod_memory_usage(pod).is_some_and(|used| used > n)
        {
            return Err(Error::MemoryBelowUsage(super::executor::pod_name(pod)));
        }
        if let Some(name) = cm.pod_cgroup(pod) {
            cm.apply(&name, &grown(&old, &new))?;
        }
    }
    for r in p.in_place() {
        let Some(c) = resizable(pod).find(|c| c.name == r.name) else { continue };
        let linux = resources::container_resources(pod, c, &policy);
        deps.runtime
            .update_container_resources(&r.id, linux)
            .await
            .map_err(|source| Error::Update { name: r.name.clone(), source })?;
        alloc.set_actuated(&uid, &c.name, c.resources.clone().unwrap_or_default());
        tracing::info!(pod = %super::executor::pod_name(pod), container = %c.name, "resized in place");
    }
    if let Some(cm) = cm {
        cm.ensure_pod_cgroup(pod)?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "resize_tests.rs"]
mod tests;
