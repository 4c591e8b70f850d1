//! Ephemeral containers (`kubectl debug`): added to a running pod through the API's
//! `ephemeralcontainers` subresource, started once in the pod's sandbox (in the target
//! container's process namespace when one is named), never restarted, reported in
//! `ephemeralContainerStatuses` and counted in neither phase nor readiness. Upstream:
//! computePodActions' EphemeralContainersToStart, startSpec.getTargetID,
//! generateLinuxContainerConfig's TARGET pid namespace, and convertToAPIContainerStatuses over
//! the ephemeral list.

use super::observe::{CState, ContainerObs, PodObs};
use super::plan::{Plan, Start};
use super::status::{Context, nanos_time, terminated, waiting};
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
    EphemeralContainer, Pod,
};

/// The container an ephemeral container runs as (upstream converts the common part to a
/// `Container`). Ports, probes, lifecycle hooks and resources are left out: the API refuses them
/// on ephemeral containers, and the kubelet does not act on them.
pub fn as_container(ec: &EphemeralContainer) -> Container {
    Container {
        name: ec.name.clone(),
        image: ec.image.clone(),
        image_pull_policy: ec.image_pull_policy.clone(),
        command: ec.command.clone(),
        args: ec.args.clone(),
        working_dir: ec.working_dir.clone(),
        env: ec.env.clone(),
        env_from: ec.env_from.clone(),
        volume_mounts: ec.volume_mounts.clone(),
        volume_devices: ec.volume_devices.clone(),
        security_context: ec.security_context.clone(),
        termination_message_path: ec.termination_message_path.clone(),
        termination_message_policy: ec.termination_message_policy.clone(),
        stdin: ec.stdin,
        stdin_once: ec.stdin_once,
        tty: ec.tty,
        ..Default::default()
    }
}

/// The pod's ephemeral container named `name`.
pub fn find<'a>(pod: &'a Pod, name: &str) -> Option<&'a EphemeralContainer> {
    pod.spec.as_ref()?.ephemeral_containers.iter().flatten().find(|ec| ec.name == name)
}

/// Upstream's EphemeralContainersToStart, added to a plan: in a running pod (a ready sandbox
/// that is neither being replaced nor killed), every ephemeral container the runtime has no
/// instance of — in any sandbox — starts, even while init containers still run. One that ran
/// once is never started again, whatever its exit.
pub fn plan(p: &mut Plan, pod: &Pod, obs: &PodObs) {
    let running = obs.sandbox().is_some_and(|s| s.ready);
    if p.kill_pod || p.create_sandbox.is_some() || !running {
        return;
    }
    let Some(spec) = pod.spec.as_ref() else { return };
    p.start_ephemeral = spec
        .ephemeral_containers
        .iter()
        .flatten()
        .filter(|ec| obs.latest(&ec.name, None).is_none())
        // A first instance; the executor still counts up from log files left by an earlier one.
        .map(|ec| Start { name: ec.name.clone(), init: false, restart_count: 0, arm_backoff: None })
        .collect();
}

/// The runtime id of the container an ephemeral container targets (upstream's getTargetID: the
/// newest instance of `targetContainerName`, whatever its state); None without a target.
pub fn target_id(pod: &Pod, name: &str, obs: &PodObs) -> Result<Option<String>, String> {
    let Some(target) = find(pod, name).and_then(|ec| ec.target_container_name.as_deref()).filter(|t| !t.is_empty())
    else {
        return Ok(None);
    };
    match obs.latest(target, None) {
        Some(o) => Ok(Some(o.id.clone())),
        None => Err(format!("unable to find target container {target}")),
    }
}

/// `status.ephemeralContainerStatuses`, as upstream's convertToAPIContainerStatuses computes
/// them for the ephemeral list: sorted by name, never ready and without `started`; a container
/// not started yet waits (ContainerCreating, or PodInitializing in a pod with init containers, or
/// the reason its start failed with); a terminated one stays terminated, also once the runtime no
/// longer has it. None when the pod has no ephemeral containers.
pub fn statuses(pod: &Pod, obs: &PodObs, ctx: &Context) -> Option<Vec<ContainerStatus>> {
    let spec = pod.spec.as_ref()?;
    let ecs = spec.ephemeral_containers.as_deref().filter(|e| !e.is_empty())?;
    let has_init = spec.init_containers.as_ref().is_some_and(|i| !i.is_empty());
    let default_reason = if has_init { "PodInitializing" } else { "ContainerCreating" };
    let previous = ctx.previous.and_then(|p| p.ephemeral_container_statuses.as_deref()).unwrap_or_default();
    let mut out: Vec<ContainerStatus> = ecs
        .iter()
        .map(|ec| {
            let old = previous.iter().find(|s| s.name == ec.name);
            status_of(pod, ec, old, obs, ctx, default_reason)
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Some(out)
}

fn status_of(
    pod: &Pod,
    ec: &EphemeralContainer,
    old: Option<&ContainerStatus>,
    obs: &PodObs,
    ctx: &Context,
    default_reason: &str,
) -> ContainerStatus {
    let mut st = ContainerStatus {
        name: ec.name.clone(),
        image: ec.image.clone().unwrap_or_default(),
        state: Some(waiting(default_reason, None)),
        ..Default::default()
    };
    // A terminated status is kept as it was; otherwise the old counts are the defaults.
    if let Some(old) = old {
        if old.state.as_ref().is_some_and(|s| s.terminated.is_some()) {
            st = old.clone();
        } else {
            st.restart_count = old.restart_count;
            st.last_state = old.last_state.clone();
        }
    }
    let latest = obs.latest(&ec.name, None);
    if let Some(o) = latest {
        let was_running = old.and_then(|s| s.state.as_ref()).is_some_and(|s| s.running.is_some());
        st = ContainerStatus {
            name: ec.name.clone(),
            image: ec.image.clone().unwrap_or_default(),
            image_id: o.image_ref.clone(),
            container_id: Some(format!("{}://{}", ctx.runtime_name, o.id)),
            restart_count: o.restart_count,
            state: Some(instance_state(o, was_running, ctx.runtime_name)),
            last_state: obs.previous(&ec.name).map(|p| instance_state(p, false, ctx.runtime_name)),
            ..Default::default()
        };
        if o.state == CState::Unknown && was_running {
            st.restart_count = old.map_or(0, |s| s.restart_count) + 1;
        }
    }
    // A container the next sync would start again waits with the reason its start failed
    // (upstream: ShouldContainerBeRestarted and the reason cache).
    if would_start_again(pod, latest)
        && let Some((reason, message)) = ctx.waiting.get(&ec.name)
    {
        if st.state.as_ref().is_some_and(|s| s.terminated.is_some()) {
            st.last_state = st.state.take();
        }
        st.state = Some(waiting(reason, Some(message)));
    }
    st
}

/// One instance's state, as upstream's convertContainerStatus: a created (or unreadable)
/// instance waits with no reason; one that was running and can no longer be found ended with
/// ContainerStatusUnknown.
fn instance_state(o: &ContainerObs, was_running: bool, runtime: &str) -> ContainerState {
    match o.state {
        CState::Running => ContainerState {
            running: Some(ContainerStateRunning { started_at: nanos_time(o.started_at) }),
            ..Default::default()
        },
        CState::Exited => ContainerState { terminated: Some(terminated(o, runtime)), ..Default::default() },
        CState::Unknown if was_running => ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: 137,
                reason: Some("ContainerStatusUnknown".into()),
                message: Some("The container could not be located when the pod was terminated".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        CState::Created | CState::Unknown => {
            ContainerState { waiting: Some(ContainerStateWaiting::default()), ..Default::default() }
        }
    }
}

/// Upstream's ShouldContainerBeRestarted for an ephemeral container's newest instance.
fn would_start_again(pod: &Pod, latest: Option<&ContainerObs>) -> bool {
    if pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let Some(o) = latest else { return true };
    match o.state {
        CState::Running => false,
        CState::Unknown | CState::Created => true,
        CState::Exited => {
            let policy = pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()).unwrap_or("Always");
            !(policy == "Never" || (policy == "OnFailure" && o.exit_code == 0))
        }
    }
}

#[cfg(test)]
#[path = "ephemeral_tests.rs"]
mod tests;
