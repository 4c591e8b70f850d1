//! A pod's status as upstream computes it (pkg/kubelet/kubelet_pods.go and status/generate.go):
//! container states with upstream reasons, phase, and conditions.

use super::observe::{CState, ContainerObs, PodObs};
pub(crate) use crate::meta::time;
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
    HostIP, Pod, PodCondition, PodIP, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::collections::HashMap;
use std::time::SystemTime;

/// Why a container is waiting, from the last sync (image errors, backoff, config errors).
pub type WaitingReasons = HashMap<String, (String, String)>;

pub use crate::prober::ProbeView;

/// Inputs besides the pod and the runtime state.
pub struct Context<'a> {
    /// Probe results by container ID.
    pub probes: &'a HashMap<String, ProbeView>,
    pub waiting: &'a WaitingReasons,
    pub previous: Option<&'a PodStatus>,
    pub host_ip: Option<&'a str>,
    /// "containerd" → container IDs are `containerd://<id>`.
    pub runtime_name: &'a str,
    pub now: SystemTime,
    /// The pod was deleted and nothing of it runs any more (upstream's podIsTerminal): its
    /// stopped containers will not restart, so the phase is Succeeded or Failed.
    pub pod_is_terminal: bool,
    /// The conditions in the API pod's status (readiness-gate conditions are written there by
    /// other actors).
    pub conditions: &'a [PodCondition],
}

pub(super) fn nanos_time(n: i64) -> Option<Time> {
    crate::cri::nanos_to_time(n).map(time)
}

pub(super) fn terminated(o: &ContainerObs, runtime: &str) -> ContainerStateTerminated {
    let reason = if !o.reason.is_empty() {
        o.reason.clone()
    } else if o.exit_code == 0 {
        "Completed".into()
    } else {
        "Error".into()
    };
    ContainerStateTerminated {
        exit_code: o.exit_code,
        reason: Some(reason),
        message: Some(o.message.clone()).filter(|m| !m.is_empty()),
        started_at: nanos_time(o.started_at),
        finished_at: nanos_time(o.finished_at),
        container_id: Some(format!("{runtime}://{}", o.id)),
        signal: None,
    }
}

pub(super) fn waiting(reason: &str, message: Option<&str>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_string()),
            message: message.filter(|m| !m.is_empty()).map(str::to_string),
        }),
        ..Default::default()
    }
}

fn container_status(c: &Container, obs: &PodObs, ctx: &Context, default_reason: &str, init: bool) -> ContainerStatus {
    let latest = obs.latest(&c.name, None);
    let previous = obs.previous(&c.name);
    let pending_reason = ctx.waiting.get(&c.name);
    let image = c.image.clone().unwrap_or_default();
    let mut st = ContainerStatus { name: c.name.clone(), image, ..Default::default() };
    let terminated_state =
        |o: &ContainerObs| ContainerState { terminated: Some(terminated(o, ctx.runtime_name)), ..Default::default() };
    match latest {
        Some(o) => {
            st.container_id = Some(format!("{}://{}", ctx.runtime_name, o.id));
            st.image_id = o.image_ref.clone();
            st.restart_count = o.restart_count;
            match (o.state, pending_reason) {
                (CState::Running, _) => {
                    st.state = Some(ContainerState {
                        running: Some(ContainerStateRunning { started_at: nanos_time(o.started_at) }),
                        ..Default::default()
                    });
                    st.last_state = previous.filter(|p| p.state == CState::Exited).map(terminated_state);
                    // Without a startup probe a running container has started; without a
                    // readiness probe a started one is ready.
                    let view = ctx.probes.get(&o.id);
                    let started = c.startup_probe.is_none() || view.is_some_and(|v| v.started);
                    let ready = c.readiness_probe.is_none() || view.is_some_and(|v| v.ready);
                    st.started = Some(started);
                    st.ready = !init && started && ready;
                }
                (CState::Exited, Some((reason, message))) => {
                    st.state = Some(waiting(reason, Some(message)));
                    st.last_state = Some(terminated_state(o));
                    st.started = Some(false);
                }
                (CState::Exited, None) => {
                    st.state = Some(terminated_state(o));
                    st.last_state = previous.filter(|p| p.state == CState::Exited).map(terminated_state);
                    st.started = Some(false);
                    st.ready = init && o.exit_code == 0;
                }
                (CState::Created, r) => {
                    let (reason, message) =
                        r.map(|(a, b)| (a.as_str(), Some(b.as_str()))).unwrap_or((default_reason, None));
                    st.state = Some(waiting(reason, message));
                    st.started = Some(false);
                }
                (CState::Unknown, _) => {
                    st.state = Some(ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            exit_code: 137,
                            reason: Some("ContainerStatusUnknown".into()),
                            message: Some("The container could not be located when the pod was terminated".into()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    });
                    st.started = Some(false);
                }
            }
        }
        None => {
            let (reason, message) =
                pending_reason.map(|(a, b)| (a.as_str(), Some(b.as_str()))).unwrap_or((default_reason, None));
            st.state = Some(waiting(reason, message));
            st.started = Some(false);
        }
    }
    st
}

/// Upstream's HasAnyRegularContainerStarted: running or terminated.
fn started(s: &ContainerStatus) -> bool {
    s.state.as_ref().is_some_and(|st| st.running.is_some() || st.terminated.is_some())
}

fn is_terminated(s: &ContainerStatus) -> Option<&ContainerStateTerminated> {
    s.state.as_ref().and_then(|s| s.terminated.as_ref())
}

fn last_terminated(s: &ContainerStatus) -> Option<&ContainerStateTerminated> {
    s.last_state.as_ref().and_then(|s| s.terminated.as_ref())
}

/// Upstream's getPhase; `pod_is_terminal` as upstream's podIsTerminal (a deleted pod whose
/// containers are all stopped ends Succeeded when every one succeeded, else Failed).
pub fn phase(
    restart_policy: &str,
    init: &[ContainerStatus],
    regular: &[ContainerStatus],
    pod_is_terminal: bool,
) -> &'static str {
    let mut pending_init = 0;
    let mut failed_init = 0;
    for s in init {
        let st = s.state.as_ref();
        if st.is_some_and(|s| s.running.is_some()) {
            pending_init += 1;
        } else if let Some(t) = is_terminated(s) {
            if t.exit_code != 0 {
                failed_init += 1;
            }
        } else if let Some(t) = last_terminated(s) {
            // Waiting to run again: a failure counts, an earlier success is neither.
            if t.exit_code != 0 {
                failed_init += 1;
            }
        } else {
            pending_init += 1;
        }
    }
    let regular_started = regular.iter().any(started);
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for s in regular {
        let st = s.state.as_ref();
        if st.is_some_and(|s| s.running.is_some()) {
            running += 1;
        } else if let Some(t) = is_terminated(s) {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else if last_terminated(s).is_some() {
            stopped += 1;
        } else {
            waiting += 1;
        }
    }
    if failed_init > 0 && restart_policy == "Never" {
        return "Failed";
    }
    // Init containers re-running in a new sandbox do not send a started pod back to Pending.
    if pending_init > 0 && !regular_started {
        return "Pending";
    }
    if waiting > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    if stopped > 0 {
        return match restart_policy {
            "Always" if !pod_is_terminal => "Running",
            _ if stopped == succeeded => "Succeeded",
            "Never" => "Failed",
            _ if pod_is_terminal => "Failed",
            _ => "Running",
        };
    }
    "Pending"
}

fn condition(type_: &str, ok: bool, reason: Option<&str>, message: Option<String>, ctx: &Context) -> PodCondition {
    condition_with(type_, ok, if ok { None } else { reason }, if ok { None } else { message }, ctx)
}

/// A condition with exactly the given reason and message (also on True).
fn condition_with(type_: &str, ok: bool, reason: Option<&str>, message: Option<String>, ctx: &Context) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    // Keep the transition time while the status stays the same.
    let prev = ctx
        .previous
        .and_then(|p| p.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == type_))
        .filter(|c| c.status == status)
        .and_then(|c| c.last_transition_time.clone());
    PodCondition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.map(str::to_string),
        message,
        last_transition_time: Some(prev.unwrap_or_else(|| time(ctx.now))),
        last_probe_time: None,
        observed_generation: None,
    }
}

/// Computes the whole status. A terminal phase in `ctx.previous` never changes.
pub fn compute(pod: &Pod, obs: &PodObs, ctx: &Context) -> PodStatus {
    let spec = pod.spec.clone().unwrap_or_default();
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    let inits = spec.init_containers.as_deref().unwrap_or_default();
    let default_reason = if inits.is_empty() { "ContainerCreating" } else { "PodInitializing" };
    let init_statuses: Vec<_> = inits.iter().map(|c| container_status(c, obs, ctx, "PodInitializing", true)).collect();
    let statuses: Vec<_> =
        spec.containers.iter().map(|c| container_status(c, obs, ctx, default_reason, false)).collect();

    let prev_phase = ctx.previous.and_then(|p| p.phase.as_deref());
    let phase = match prev_phase {
        Some(p @ ("Succeeded" | "Failed")) => p.to_string(),
        _ => phase(policy, &init_statuses, &statuses, ctx.pod_is_terminal).to_string(),
    };

    let sandbox_ready = obs.sandbox().is_some_and(|s| s.ready);
    let incomplete: Vec<_> = init_statuses
        .iter()
        .filter(|s| is_terminated(s).is_none_or(|t| t.exit_code != 0))
        .map(|s| s.name.clone())
        .collect();
    let unready: Vec<_> = statuses.iter().filter(|s| !s.ready).map(|s| s.name.clone()).collect();
    let completed = phase == "Succeeded";
    let failed = phase == "Failed";
    let (ready_reason, ready_message) = if completed {
        ("PodCompleted", None)
    } else if failed {
        ("PodFailed", None)
    } else {
        ("ContainersNotReady", Some(format!("containers with unready status: [{}]", unready.join(" "))))
    };
    let ready = unready.is_empty() && !completed && !failed;
    let initialized = incomplete.is_empty() || completed || statuses.iter().any(started);
    let initialized_cond = if completed {
        condition_with("Initialized", true, Some("PodCompleted"), None, ctx)
    } else {
        condition(
            "Initialized",
            initialized,
            Some("ContainersNotInitialized"),
            Some(format!("containers with incomplete status: [{}]", incomplete.join(" "))),
            ctx,
        )
    };
    // Upstream's GeneratePodReadyCondition: with every container ready, the readiness gates.
    let pod_ready = match ready.then(|| unready_gates(&spec, ctx.conditions)).flatten() {
        Some(m) => condition("Ready", false, Some("ReadinessGatesNotReady"), Some(m), ctx),
        None => condition("Ready", ready, Some(ready_reason), ready_message.clone(), ctx),
    };
    let mut conditions = vec![
        condition("PodReadyToStartContainers", sandbox_ready, None, None, ctx),
        initialized_cond,
        pod_ready,
        condition("ContainersReady", ready, Some(ready_reason), ready_message, ctx),
    ];
    if spec.node_name.is_some() {
        conditions.push(condition("PodScheduled", true, None, None, ctx));
    }

    let host_network = spec.host_network.unwrap_or(false);
    let sandbox = obs.sandboxes.iter().find(|s| s.ready);
    let mut ips: Vec<String> = if host_network {
        ctx.host_ip.map(|h| vec![h.to_string()]).unwrap_or_default()
    } else {
        sandbox.map(|s| s.ip.iter().cloned().chain(s.additional_ips.iter().cloned()).collect()).unwrap_or_default()
    };
    // Keep the last known IPs of a pod whose sandbox is gone (upstream keeps them too).
    if ips.is_empty()
        && let Some(prev) = ctx.previous.and_then(|p| p.pod_ips.as_ref())
    {
        ips = prev.iter().map(|p| p.ip.clone()).collect();
    }

    let message = blocker(&phase, &init_statuses, &statuses, &spec.containers, obs, ctx);
    PodStatus {
        message,
        phase: Some(phase),
        conditions: Some(conditions),
        host_ip: ctx.host_ip.map(str::to_string),
        host_ips: ctx.host_ip.map(|h| vec![HostIP { ip: h.to_string() }]),
        pod_ip: ips.first().cloned(),
        pod_ips: (!ips.is_empty()).then(|| ips.iter().map(|ip| PodIP { ip: ip.clone() }).collect()),
        // After a kubelet restart there is no previous status: the oldest sandbox's creation
        // is the closest record of when the pod was first started.
        start_time: ctx
            .previous
            .and_then(|p| p.start_time.clone())
            .or_else(|| obs.sandboxes.iter().map(|s| s.created_at).filter(|t| *t > 0).min().and_then(nanos_time))
            .or_else(|| Some(time(ctx.now))),
        qos_class: Some(crate::cm::qos::qos_class(pod).into()),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        container_statuses: Some(statuses),
        ephemeral_container_statuses: super::ephemeral::statuses(pod, obs, ctx),
        ..Default::default()
    }
}

/// Why the pod's readiness gates hold it back (upstream's messages, joined by ", "), None when
/// every gate's condition is True.
fn unready_gates(spec: &PodSpec, conditions: &[PodCondition]) -> Option<String> {
    let unready: Vec<String> = spec
        .readiness_gates
        .iter()
        .flatten()
        .filter_map(|g| match conditions.iter().find(|c| c.type_ == g.condition_type) {
            None => {
                Some(format!("corresponding condition of pod readiness gate {:?} does not exist.", g.condition_type))
            }
            Some(c) if c.status != "True" => Some(format!(
                "the status of pod readiness gate {:?} is not \"True\", but {}",
                g.condition_type, c.status
            )),
            Some(_) => None,
        })
        .collect();
    (!unready.is_empty()).then(|| unready.join(", "))
}

/// The one thing keeping a non-terminal pod from being Running and ready, in words (upstream
/// leaves this to guesswork: k/k #83471).
fn blocker(
    phase: &str,
    inits: &[ContainerStatus],
    regular: &[ContainerStatus],
    specs: &[Container],
    obs: &PodObs,
    ctx: &Context,
) -> Option<String> {
    if phase == "Succeeded" || phase == "Failed" {
        return None;
    }
    let waiting = |s: &ContainerStatus| s.state.as_ref().and_then(|st| st.waiting.clone());
    let describe = |s: &ContainerStatus, what: &str| -> Option<String> {
        let w = waiting(s)?;
        let reason = w.reason.unwrap_or_default();
        let msg = w.message.unwrap_or_default();
        Some(match reason.as_str() {
            "CrashLoopBackOff" => {
                let delay = msg.strip_prefix("back-off ").and_then(|m| m.split_whitespace().next()).unwrap_or("");
                format!("back-off {delay} restarting failed {what} {}", s.name)
            }
            "ErrImagePull" | "ImagePullBackOff" | "ErrImageNeverPull" | "InvalidImageName" => {
                format!("{reason} for {what} {}: {msg}", s.name)
            }
            "ContainerCreating" | "PodInitializing" if msg.is_empty() => return None,
            _ if msg.is_empty() => format!("{what} {} is waiting: {reason}", s.name),
            _ => format!("{what} {} is waiting: {reason}: {msg}", s.name),
        })
    };
    let done = |s: &ContainerStatus| is_terminated(s).is_some_and(|t| t.exit_code == 0);
    if !regular.iter().any(started)
        && let Some((i, s)) = inits.iter().enumerate().find(|(_, s)| !done(s))
    {
        return describe(s, "init container")
            .or_else(|| Some(format!("waiting for init container {} ({}/{})", s.name, i + 1, inits.len())));
    }
    for s in regular {
        if let Some(d) = describe(s, "container") {
            return Some(d);
        }
    }
    for s in regular {
        if s.state.as_ref().is_some_and(|st| st.running.is_some()) && !s.ready {
            let id = s.container_id.as_deref().and_then(|c| c.split("://").nth(1)).unwrap_or_default();
            let view = ctx.probes.get(id);
            let has_startup = specs.iter().any(|c| c.name == s.name && c.startup_probe.is_some());
            return Some(match view {
                Some(v) if !v.started => format!("startup probe of container {} not passing yet", s.name),
                None if has_startup => format!("startup probe of container {} not passing yet", s.name),
                Some(v) if !v.readiness_message.is_empty() => {
                    format!("readiness probe failing: {}", v.readiness_message)
                }
                _ => format!("readiness probe of container {} not passing yet", s.name),
            });
        }
    }
    if let Some(s) = regular.iter().find(|s| waiting(s).is_some()) {
        return Some(match obs.sandbox() {
            Some(sb) if sb.ready => format!("creating container {}", s.name),
            _ => "creating pod sandbox".to_string(),
        });
    }
    None
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
