//! Pod sync as a pure plan: from the desired pod and what the runtime has, decide what to kill,
//! create and start, and when to look again. Mirrors upstream's computePodActions.

use super::observe::{CState, ContainerObs, PodObs};
use crate::backoff::Keyed;
use crate::cri::labels::{container_hash, hash_matches};
use crate::meta::is_sidecar;
use k8s_openapi::api::core::v1::{Container, Pod};
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    pub name: String,
    pub init: bool,
    pub restart_count: i32,
    /// Backoff key to arm because this start follows a failure (with the failure's time).
    pub arm_backoff: Option<(String, SystemTime)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kill {
    pub id: String,
    pub name: String,
    pub reason: String,
}

/// A container that is not started on purpose, with upstream's waiting reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub name: String,
    pub reason: String,
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Stop every container and the sandbox(es) first.
    pub kill_pod: bool,
    /// Create a new sandbox with this attempt number.
    pub create_sandbox: Option<u32>,
    pub kill: Vec<Kill>,
    /// Started in order: init containers (sidecars kept running, the next init container)
    /// first, one after another, then the app containers.
    pub start: Vec<Start>,
    /// Ephemeral containers to start, before `start` (upstream's EphemeralContainersToStart;
    /// see `pod/ephemeral.rs`).
    pub start_ephemeral: Vec<Start>,
    /// Dead containers and sandboxes no longer needed for status.
    pub remove_containers: Vec<String>,
    pub remove_sandboxes: Vec<String>,
    pub waiting: Vec<Waiting>,
    /// Sync again at this time (end of a backoff).
    pub retry_at: Option<SystemTime>,
}

impl Plan {
    pub fn is_noop(&self) -> bool {
        !self.kill_pod
            && self.create_sandbox.is_none()
            && self.kill.is_empty()
            && self.start.is_empty()
            && self.start_ephemeral.is_empty()
            && self.remove_containers.is_empty()
            && self.remove_sandboxes.is_empty()
    }
}

/// Upstream's restart backoff key.
pub fn backoff_key(pod: &Pod, c: &Container) -> String {
    let m = &pod.metadata;
    format!(
        "{}_{}_{}_{}_{:x}",
        m.name.as_deref().unwrap_or(""),
        m.namespace.as_deref().unwrap_or(""),
        m.uid.as_deref().unwrap_or(""),
        c.name,
        container_hash(c)
    )
}

fn restart_policy(pod: &Pod) -> &str {
    pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()).unwrap_or("Always")
}

fn next_restart_count(obs: &PodObs, name: &str) -> i32 {
    obs.containers.iter().filter(|c| c.name == name).map(|c| c.restart_count + 1).max().unwrap_or(0)
}

fn time_of(nanos: i64) -> SystemTime {
    crate::cri::nanos_to_time(nanos).unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Whether a running instance (by container ID) has passed its startup probe; asked only about
/// containers that have one.
pub type Started<'a> = &'a dyn Fn(&str) -> bool;

/// Computes the actions that bring the runtime to the desired pod, with no probe results at hand
/// (a sidecar with a startup probe counts as not started yet).
#[cfg(test)]
pub fn plan(pod: &Pod, obs: &PodObs, backoff: &Keyed, now: SystemTime) -> Plan {
    plan_probed(pod, obs, backoff, now, &|_| false)
}

/// Upstream's PodSandboxChanged: the pod needs a new sandbox when it has none, when its newest is
/// not ready, when more than one is ready, or when the ready one has no IP ("Sandbox for pod has
/// no IP address. Need to start a new one"; not for hostNetwork pods).
pub fn sandbox_changed(pod: &Pod, obs: &PodObs) -> bool {
    let Some(newest) = obs.sandbox() else { return true };
    let host_network = pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false);
    obs.sandboxes.iter().filter(|s| s.ready).count() > 1 || !newest.ready || (!host_network && newest.ip.is_none())
}

/// Computes the actions that bring the runtime to the desired pod (upstream's computePodActions);
/// `started` tells which running sidecars passed their startup probe.
pub fn plan_probed(pod: &Pod, obs: &PodObs, backoff: &Keyed, now: SystemTime, started: Started) -> Plan {
    let mut p = plan_containers(pod, obs, backoff, now, started);
    super::ephemeral::plan(&mut p, pod, obs);
    p
}

/// The sandbox, init and regular containers' part of the plan.
fn plan_containers(pod: &Pod, obs: &PodObs, backoff: &Keyed, now: SystemTime, started: Started) -> Plan {
    let mut p = Plan::default();
    let Some(spec) = pod.spec.as_ref() else { return p };
    let policy = restart_policy(pod);

    if sandbox_changed(pod, obs) {
        return new_sandbox(pod, obs, backoff, now);
    }
    let sandbox_id = obs.sandbox().map(|s| s.id.as_str());

    match init_actions(&mut p, pod, obs, sandbox_id, backoff, now, started) {
        Init::Done => {}
        Init::Failed => return p,
        Init::InProgress => {
            gc(&mut p, obs);
            return p;
        }
    }

    // Running app containers left as they are (upstream's keepCount).
    let mut keep = 0;
    for c in &spec.containers {
        // With no instance in this sandbox, the newest exit from an earlier sandbox decides
        // (restart policy and crash backoff), as upstream's ShouldContainerBeRestarted does.
        let latest =
            obs.latest(&c.name, sandbox_id).or_else(|| obs.latest(&c.name, None).filter(|o| o.state == CState::Exited));
        match latest {
            None => p.start.push(fresh_start(obs, c, false)),
            Some(o) if o.state == CState::Running => {
                if !hash_matches(o.hash, c) {
                    p.kill.push(Kill {
                        id: o.id.clone(),
                        name: c.name.clone(),
                        reason: "container spec changed".into(),
                    });
                    p.start.push(fresh_start(obs, c, false));
                } else {
                    keep += 1;
                }
            }
            Some(o) if o.state == CState::Exited => {
                let restart = policy == "Always" || (policy == "OnFailure" && o.exit_code != 0);
                if restart {
                    restart_after_failure(&mut p, pod, c, o, obs, backoff, now, false);
                }
            }
            Some(o) => {
                replace(&mut p, obs, c, o, false);
            }
        }
    }
    // Nothing of the app left running and none to start again (every app container done under
    // Never / OnFailure): the pod is killed, its sidecars with it, and no sidecar restarts
    // (upstream: keepCount == 0 and no container to start means KillPod, InitContainersToStart
    // cleared).
    let regular = |name: &str| spec.containers.iter().any(|c| c.name == name);
    let restarting = p.start.iter().any(|s| !s.init) || p.waiting.iter().any(|w| regular(&w.name));
    if keep == 0 && !restarting {
        p.kill_pod = obs.any_running();
        p.kill.clear();
        p.start.clear();
        p.waiting.clear();
        p.retry_at = None;
    }
    gc(&mut p, obs);
    p
}

/// A new sandbox (upstream's computePodActions when createPodSandbox): everything is killed, the
/// old init containers are purged (upstream's purgeInitContainers) and the pod starts over from
/// its first init container — unless nothing would run in it.
fn new_sandbox(pod: &Pod, obs: &PodObs, backoff: &Keyed, now: SystemTime) -> Plan {
    let mut p = Plan { kill_pod: obs.any_running(), ..Default::default() };
    let Some(spec) = pod.spec.as_ref() else { return p };
    let policy = restart_policy(pod);
    let inits = spec.init_containers.as_deref().unwrap_or_default();
    // A pod that has run and must not restart stays down.
    if !obs.sandboxes.is_empty() && policy == "Never" && !obs.containers.is_empty() {
        return p;
    }
    // Under OnFailure the app containers that succeeded are done.
    let to_start: Vec<&Container> = spec
        .containers
        .iter()
        .filter(|c| !(policy == "OnFailure" && obs.latest(&c.name, None).is_some_and(succeeded)))
        .collect();
    // Nothing to start and initialized before (an app container was created, in any sandbox):
    // no new sandbox (upstream's hasAnyRegularContainerCreated).
    let app_created = spec.containers.iter().any(|c| {
        obs.latest(&c.name, None).is_some_and(|o| matches!(o.state, CState::Created | CState::Running | CState::Exited))
    });
    if to_start.is_empty() && (inits.is_empty() || app_created) {
        return p;
    }
    let attempt = obs.sandboxes.iter().map(|s| s.attempt + 1).max().unwrap_or(0);
    p.create_sandbox = Some(attempt);
    for c in obs.containers.iter().filter(|c| inits.iter().any(|i| i.name == c.name)) {
        p.remove_containers.push(c.id.clone());
    }
    let init = !inits.is_empty();
    let first: Vec<&Container> = match inits.first() {
        Some(first_init) => vec![first_init],
        None => to_start,
    };
    for c in first {
        // A container that crashed in the old sandbox still honours its crash backoff; an
        // init container that succeeded there simply runs again in the new one.
        match obs.latest(&c.name, None) {
            Some(o) if o.state == CState::Exited && !(init && o.exit_code == 0) => {
                restart_after_failure(&mut p, pod, c, o, obs, backoff, now, init)
            }
            _ => p.start.push(fresh_start(obs, c, init)),
        }
    }
    p
}

/// How far initialization is.
enum Init {
    /// Every init container done (sidecars started): the app containers are planned.
    Done,
    /// An init container runs, waits or starts: nothing else yet.
    InProgress,
    /// An init container failed under restartPolicy Never: the pod is killed.
    Failed,
}

/// Upstream's computeInitContainerActions, over the instances of the current sandbox (the older
/// ones were purged with their sandbox). Walking back from the last init container, the last one
/// that ran decides what comes next: a succeeded init container, or a running sidecar once
/// started (its startup probe passed), lets the next one start; the last one done means the pod
/// is initialized. Sidecars that exited are restarted (with the crash backoff, whatever the pod's
/// restartPolicy), also once the app containers run; a failed init container restarts, or under
/// Never kills the pod. Starts are planned in the spec's order.
#[allow(clippy::too_many_arguments)]
fn init_actions(
    p: &mut Plan,
    pod: &Pod,
    obs: &PodObs,
    sandbox_id: Option<&str>,
    backoff: &Keyed,
    now: SystemTime,
    started: Started,
) -> Init {
    let Some(spec) = pod.spec.as_ref() else { return Init::Done };
    let inits = spec.init_containers.as_deref().unwrap_or_default();
    if inits.is_empty() {
        return Init::Done;
    }
    let never = restart_policy(pod) == "Never";
    // An app container created or running: the pod was initialized before, and only its
    // sidecars are kept running.
    let mut initialized = spec
        .containers
        .iter()
        .any(|c| obs.latest(&c.name, sandbox_id).is_some_and(|o| matches!(o.state, CState::Created | CState::Running)));
    // Whether a later init container already ran (so this one has been done).
    let mut later_ran = initialized;
    let first_start = p.start.len();
    let fail = |p: &mut Plan| {
        p.kill_pod = obs.any_running();
        p.start.truncate(first_start);
        Init::Failed
    };
    for (i, c) in inits.iter().enumerate().rev() {
        let sidecar = is_sidecar(c);
        let Some(o) = obs.latest(&c.name, sandbox_id) else {
            // A sidecar whose instance is gone, after the ones behind it ran: started again.
            if later_ran && sidecar {
                p.start.push(fresh_start(obs, c, true));
            }
            continue;
        };
        if later_ran && !sidecar {
            continue;
        }
        let next = inits.get(i + 1);
        match o.state {
            CState::Created => replace(p, obs, c, o, true),
            CState::Running if sidecar => {
                if c.startup_probe.is_none() || started(&o.id) {
                    match next {
                        None => initialized = true,
                        Some(next) if !later_ran => p.start.push(fresh_start(obs, next, true)),
                        Some(_) => {}
                    }
                    if !hash_matches(o.hash, c) {
                        p.kill.push(Kill {
                            id: o.id.clone(),
                            name: c.name.clone(),
                            reason: "init container definition changed".into(),
                        });
                        p.start.push(fresh_start(obs, c, true));
                    }
                }
            }
            // A regular init container running: wait for it.
            CState::Running => {}
            CState::Exited if sidecar => restart_after_failure(p, pod, c, o, obs, backoff, now, true),
            CState::Exited if o.exit_code != 0 => {
                if never {
                    return fail(p);
                }
                restart_after_failure(p, pod, c, o, obs, backoff, now, true);
            }
            CState::Exited => match next {
                None => initialized = true,
                Some(next) => p.start.push(fresh_start(obs, next, true)),
            },
            CState::Unknown => {
                if !sidecar && never {
                    return fail(p);
                }
                replace(p, obs, c, o, true);
            }
        }
        later_ran = true;
    }
    if !later_ran {
        p.start.push(fresh_start(obs, &inits[0], true));
    }
    // Found walking backwards; started in the spec's order.
    p.start[first_start..].reverse();
    if initialized { Init::Done } else { Init::InProgress }
}

/// A first start (or a start with no failure to back off from).
fn fresh_start(obs: &PodObs, c: &Container, init: bool) -> Start {
    Start { name: c.name.clone(), init, restart_count: next_restart_count(obs, &c.name), arm_backoff: None }
}

/// Replaces an instance that was created but never started (removed) or is in an unknown state
/// (killed) with a new one.
fn replace(p: &mut Plan, obs: &PodObs, c: &Container, o: &ContainerObs, init: bool) {
    if o.state == CState::Unknown {
        p.kill.push(Kill { id: o.id.clone(), name: c.name.clone(), reason: "container state unknown".into() });
    } else {
        p.remove_containers.push(o.id.clone());
    }
    p.start.push(fresh_start(obs, c, init));
}

fn succeeded(o: &ContainerObs) -> bool {
    o.state == CState::Exited && o.exit_code == 0
}

#[allow(clippy::too_many_arguments)]
fn restart_after_failure(
    p: &mut Plan,
    pod: &Pod,
    c: &Container,
    o: &ContainerObs,
    obs: &PodObs,
    backoff: &Keyed,
    now: SystemTime,
    init: bool,
) {
    let key = backoff_key(pod, c);
    let finished = time_of(o.finished_at);
    if let Some(until) = backoff.in_backoff_until(&key, finished, now) {
        let delay = backoff.current(&key).unwrap_or(Duration::from_secs(10));
        let m = &pod.metadata;
        p.waiting.push(Waiting {
            name: c.name.clone(),
            reason: "CrashLoopBackOff".into(),
            message: format!(
                "back-off {} restarting failed container={} pod={}_{}({})",
                go_duration(delay),
                c.name,
                m.name.as_deref().unwrap_or(""),
                m.namespace.as_deref().unwrap_or(""),
                m.uid.as_deref().unwrap_or("")
            ),
        });
        p.retry_at = Some(p.retry_at.map_or(until, |t| t.min(until)));
        return;
    }
    p.start.push(Start {
        name: c.name.clone(),
        init,
        restart_count: next_restart_count(obs, &c.name),
        arm_backoff: Some((key, finished)),
    });
}

/// Keeps the two newest instances of each container (current state and lastState, with their
/// logs) and removes older dead ones,
/// and old sandboxes that hold nothing still needed.
fn gc(p: &mut Plan, obs: &PodObs) {
    let mut keep_sandboxes = std::collections::HashSet::new();
    if let Some(s) = obs.sandbox() {
        keep_sandboxes.insert(s.id.clone());
    }
    // Newest first: the first of each name is kept, as is the one before it (lastState).
    let mut kept: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for c in &obs.containers {
        let n = kept.entry(c.name.as_str()).or_insert(0);
        *n += 1;
        if *n <= 2 || c.state != CState::Exited {
            keep_sandboxes.insert(c.sandbox_id.clone());
        } else if !p.remove_containers.contains(&c.id) {
            p.remove_containers.push(c.id.clone());
        }
    }
    for s in &obs.sandboxes {
        if !s.ready && !keep_sandboxes.contains(&s.id) {
            p.remove_sandboxes.push(s.id.clone());
        }
    }
}

/// Formats a duration as Go does for whole seconds ("10s", "1m20s", "5m0s").
pub fn go_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{}h{}m{}s", s / 3600, (s % 3600) / 60, s % 60)
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
