//! Pod sync as a pure plan: from the desired pod and what the runtime has, decide what to kill,
//! create and start, and when to look again. Mirrors upstream's computePodActions.

use super::observe::{CState, ContainerObs, PodObs};
use crate::backoff::Keyed;
use crate::cri::labels::container_hash;
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
    /// Started in order; init containers are one at a time, so at most one.
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

/// Computes the actions that bring the runtime to the desired pod.
pub fn plan(pod: &Pod, obs: &PodObs, backoff: &Keyed, now: SystemTime) -> Plan {
    let mut p = plan_containers(pod, obs, backoff, now);
    super::ephemeral::plan(&mut p, pod, obs);
    p
}

/// The sandbox, init and regular containers' part of the plan.
fn plan_containers(pod: &Pod, obs: &PodObs, backoff: &Keyed, now: SystemTime) -> Plan {
    let mut p = Plan::default();
    let Some(spec) = pod.spec.as_ref() else { return p };
    let policy = restart_policy(pod);
    let inits = spec.init_containers.as_deref().unwrap_or_default();

    let sandbox = obs.sandbox();
    let ready_sandboxes = obs.sandboxes.iter().filter(|s| s.ready).count();
    let need_sandbox = sandbox.is_none_or(|s| !s.ready) || ready_sandboxes > 1;
    if need_sandbox {
        // A pod that has run and must not restart stays down.
        if sandbox.is_some() && policy == "Never" && !obs.containers.is_empty() {
            p.kill_pod = obs.any_running();
            return p;
        }
        let first: Vec<&Container> = if let Some(first_init) = inits.first() {
            vec![first_init]
        } else {
            spec.containers
                .iter()
                .filter(|c| !(policy == "OnFailure" && obs.latest(&c.name, None).is_some_and(succeeded)))
                .collect()
        };
        if first.is_empty() {
            p.kill_pod = obs.any_running();
            return p;
        }
        p.kill_pod = obs.any_running();
        p.create_sandbox = Some(sandbox.map(|s| s.attempt + 1).unwrap_or(0));
        let init = !inits.is_empty();
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
        return p;
    }
    let sandbox_id = sandbox.map(|s| s.id.as_str());

    // Init containers, strictly one at a time, in order.
    for c in inits {
        match obs.latest(&c.name, sandbox_id) {
            None => {
                p.start.push(fresh_start(obs, c, true));
                gc(&mut p, obs);
                return p;
            }
            Some(o) if o.state == CState::Running => {
                gc(&mut p, obs);
                return p;
            }
            Some(o) if o.state == CState::Exited && o.exit_code == 0 => continue,
            Some(o) if o.state == CState::Exited => {
                if policy == "Never" {
                    // A failed init container fails the pod.
                    p.kill_pod = obs.any_running();
                    return p;
                }
                restart_after_failure(&mut p, pod, c, o, obs, backoff, now, true);
                gc(&mut p, obs);
                return p;
            }
            Some(o) => {
                // Created but never started, or unknown: replace it.
                replace(&mut p, obs, c, o, true);
                gc(&mut p, obs);
                return p;
            }
        }
    }

    for c in &spec.containers {
        // With no instance in this sandbox, the newest exit from an earlier sandbox decides
        // (restart policy and crash backoff), as upstream's ShouldContainerBeRestarted does.
        let latest =
            obs.latest(&c.name, sandbox_id).or_else(|| obs.latest(&c.name, None).filter(|o| o.state == CState::Exited));
        match latest {
            None => p.start.push(fresh_start(obs, c, false)),
            Some(o) if o.state == CState::Running => {
                if o.hash != container_hash(c) {
                    p.kill.push(Kill {
                        id: o.id.clone(),
                        name: c.name.clone(),
                        reason: "container spec changed".into(),
                    });
                    p.start.push(fresh_start(obs, c, false));
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
    gc(&mut p, obs);
    p
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
