//! A pod's status as upstream computes it (pkg/kubelet/kubelet_pods.go and status/generate.go):
//! container states with upstream reasons, phase, and conditions.

use super::observe::{CState, ContainerObs, PodObs};
use crate::meta::is_sidecar;
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
                    // readiness probe a started one is ready. A running init container is not
                    // ready, a sidecar is like an app container (upstream's UpdatePodStatus).
                    let view = ctx.probes.get(&o.id);
                    let started = c.startup_probe.is_none() || view.is_some_and(|v| v.started);
                    let ready = c.readiness_probe.is_none() || view.is_some_and(|v| v.ready);
                    st.started = Some(started);
                    st.ready = (!init || is_sidecar(c)) && started && ready;
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
                    // A succeeded init container is ready; a stopped sidecar is not.
                    st.ready = init && !is_sidecar(c) && o.exit_code == 0;
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

/// Upstream's getPhase for a pod without sidecars (see [`phase_with_sidecars`]).
#[cfg(test)]
pub fn phase(
    restart_policy: &str,
    init: &[ContainerStatus],
    regular: &[ContainerStatus],
    pod_is_terminal: bool,
) -> &'static str {
    phase_with_sidecars(restart_policy, init, &[], regular, pod_is_terminal)
}

/// Upstream's getPhase: `init` are the regular init containers' statuses, `sidecars` the
/// sidecars'; `pod_is_terminal` as upstream's podIsTerminal (a deleted pod whose containers are
/// all stopped ends Succeeded when every one succeeded, else Failed). A sidecar running counts
/// as running (and as pending initialization until started); one that stopped counts for
/// nothing; one waiting without having run keeps the pod Pending.
pub fn phase_with_sidecars(
    restart_policy: &str,
    init: &[ContainerStatus],
    sidecars: &[ContainerStatus],
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
    for s in sidecars {
        if s.state.as_ref().is_some_and(|st| st.running.is_some()) {
            if s.started != Some(true) {
                pending_init += 1;
            }
            running += 1;
        } else if is_terminated(s).is_none() && last_terminated(s).is_none() {
            pending_init += 1;
            waiting += 1;
        }
    }
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

fn is_terminal_phase(phase: &str) -> bool {
    phase == "Succeeded" || phase == "Failed"
}

/// Computes the whole status. A terminal phase (in `ctx.previous` or the API's status) never
/// changes.
pub fn compute(pod: &Pod, obs: &PodObs, ctx: &Context) -> PodStatus {
    let spec = pod.spec.clone().unwrap_or_default();
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    let inits = spec.init_containers.as_deref().unwrap_or_default();
    let default_reason = if inits.is_empty() { "ContainerCreating" } else { "PodInitializing" };
    let init_statuses: Vec<_> = inits.iter().map(|c| container_status(c, obs, ctx, "PodInitializing", true)).collect();
    let statuses: Vec<_> =
        spec.containers.iter().map(|c| container_status(c, obs, ctx, default_reason, false)).collect();
    // Sidecars' statuses apart from the other init containers'.
    let of_kind = |sidecar: bool| -> Vec<ContainerStatus> {
        init_statuses.iter().zip(inits).filter(|(_, c)| is_sidecar(c) == sidecar).map(|(s, _)| s.clone()).collect()
    };
    let (sidecar_statuses, plain_inits) = (of_kind(true), of_kind(false));

    // Upstream's generateAPIPodStatus: the old status is the status manager's, else the API's
    // (after a kubelet restart); a terminal phase in either is never left.
    let api = pod.status.as_ref();
    let old = ctx.previous.or(api);
    fn terminal(s: Option<&PodStatus>) -> Option<&str> {
        s.and_then(|s| s.phase.as_deref()).filter(|p| is_terminal_phase(p))
    }
    let phase = match terminal(ctx.previous).or(terminal(api)) {
        Some(p) => p.to_string(),
        None => {
            phase_with_sidecars(policy, &plain_inits, &sidecar_statuses, &statuses, ctx.pod_is_terminal).to_string()
        }
    };

    // Upstream's GeneratePodReadyToStartContainersCondition: no new sandbox needed.
    let sandbox_ready = !super::plan::sandbox_changed(pod, obs);
    // Upstream's isInitContainerInitialized: a sidecar once started, another init container
    // once succeeded.
    let incomplete: Vec<_> = init_statuses
        .iter()
        .zip(inits)
        .filter(|(s, c)| match is_sidecar(c) {
            true => s.started != Some(true),
            false => is_terminated(s).is_none_or(|t| t.exit_code != 0),
        })
        .map(|(s, _)| s.name.clone())
        .collect();
    // Sidecars first, then the app containers (upstream's GenerateContainersReadyCondition).
    let unready: Vec<_> =
        sidecar_statuses.iter().chain(&statuses).filter(|s| !s.ready).map(|s| s.name.clone()).collect();
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

    // A terminal phase keeps the reason and message it ended with (Evicted, DeadlineExceeded,
    // …), from the old status or else the API's, as upstream; and the DisruptionTarget
    // condition, which is set once by the eviction and never recomputed.
    let (mut reason, mut message) =
        (None, blocker(&phase, (&init_statuses, &incomplete), &statuses, &spec.containers, obs, ctx));
    if is_terminal_phase(&phase) && old.and_then(|o| o.phase.as_deref()) == Some(phase.as_str()) {
        let nonempty = |v: Option<&String>| v.filter(|v| !v.is_empty()).cloned();
        let from_api = |f: fn(&PodStatus) -> Option<&String>| nonempty(api.and_then(f));
        reason = nonempty(old.and_then(|o| o.reason.as_ref())).or_else(|| from_api(|s| s.reason.as_ref()));
        message = nonempty(old.and_then(|o| o.message.as_ref())).or_else(|| from_api(|s| s.message.as_ref()));
    }
    if let Some(d) =
        old.and_then(|o| o.conditions.as_ref()).and_then(|c| c.iter().find(|c| c.type_ == "DisruptionTarget"))
    {
        conditions.push(d.clone());
    }
    PodStatus {
        reason,
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
/// `inits` are the init containers' statuses with the names of those not done yet.
fn blocker(
    phase: &str,
    (inits, incomplete): (&[ContainerStatus], &[String]),
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
    if !regular.iter().any(started)
        && let Some((i, s)) = inits.iter().enumerate().find(|(_, s)| incomplete.contains(&s.name))
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
