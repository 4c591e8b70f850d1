//! What the runtime has for one pod: its sandboxes and containers, read back from CRI labels
//! and annotations so that a restarted kubelet adopts what it finds. The lists come from the PLEG's
//! cache ([`from_record`]) or, without one, from the pod's own filtered lists ([`observe`]).

use crate::cri::labels;
use crate::cri::{DynRuntime, Result, api};
use crate::pleg::PodRecord;
use std::collections::HashMap;

/// A sandbox's primary IP and additional IPs.
pub type SandboxIps = (Option<String>, Vec<String>);

/// The IPs a PodSandboxStatus reports (an empty primary IP is none).
pub fn sandbox_ips(status: &api::PodSandboxStatus) -> SandboxIps {
    let net = status.network.clone().unwrap_or_default();
    (Some(net.ip).filter(|ip| !ip.is_empty()), net.additional_ips.into_iter().map(|i| i.ip).collect())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxObs {
    pub id: String,
    pub attempt: u32,
    pub ready: bool,
    pub created_at: i64,
    pub ip: Option<String>,
    pub additional_ips: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CState {
    Created,
    Running,
    Exited,
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerObs {
    pub id: String,
    pub name: String,
    pub sandbox_id: String,
    pub state: CState,
    pub hash: u32,
    pub restart_count: i32,
    pub init: bool,
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    pub image: String,
    pub image_ref: String,
}

/// One pod's runtime state, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodObs {
    pub sandboxes: Vec<SandboxObs>,
    pub containers: Vec<ContainerObs>,
}

impl PodObs {
    /// The newest sandbox.
    pub fn sandbox(&self) -> Option<&SandboxObs> {
        self.sandboxes.first()
    }

    /// Newest container named `name`, optionally only within `sandbox`.
    pub fn latest(&self, name: &str, sandbox: Option<&str>) -> Option<&ContainerObs> {
        self.containers.iter().find(|c| c.name == name && sandbox.is_none_or(|s| c.sandbox_id == s))
    }

    /// The instance before the newest one named `name`.
    pub fn previous(&self, name: &str) -> Option<&ContainerObs> {
        self.containers.iter().filter(|c| c.name == name).nth(1)
    }

    pub fn any_running(&self) -> bool {
        self.containers.iter().any(|c| c.state == CState::Running) || self.sandboxes.iter().any(|s| s.ready)
    }
}

fn cstate(v: i32) -> CState {
    match api::ContainerState::try_from(v) {
        Ok(api::ContainerState::ContainerCreated) => CState::Created,
        Ok(api::ContainerState::ContainerRunning) => CState::Running,
        Ok(api::ContainerState::ContainerExited) => CState::Exited,
        _ => CState::Unknown,
    }
}

/// Reads a pod's state with two label-filtered list calls (when no PLEG cache is at hand, or it
/// is not fresh in time). `cache` holds container details from earlier reads: a container whose
/// listed state has not changed is not asked about again.
pub async fn observe(
    runtime: &DynRuntime,
    uid: &str,
    cache: &mut HashMap<String, ContainerObs>,
    ip_cache: &mut HashMap<String, SandboxIps>,
) -> Result<PodObs> {
    let selector = HashMap::from([(labels::POD_UID.to_string(), uid.to_string())]);
    let sandboxes = runtime
        .list_pod_sandboxes(Some(api::PodSandboxFilter { label_selector: selector.clone(), ..Default::default() }))
        .await?;
    let containers =
        runtime.list_containers(Some(api::ContainerFilter { label_selector: selector, ..Default::default() })).await?;
    from_record(runtime, &PodRecord::from_lists(&sandboxes, &containers), cache, ip_cache).await
}

/// Reads a pod's state from what a list (the PLEG's relist or the pod's own) found: only
/// containers whose state changed since `cache` saw them are asked about (ContainerStatus), and
/// a ready sandbox's IPs once (PodSandboxStatus).
pub async fn from_record(
    runtime: &DynRuntime,
    record: &PodRecord,
    cache: &mut HashMap<String, ContainerObs>,
    ip_cache: &mut HashMap<String, SandboxIps>,
) -> Result<PodObs> {
    let mut obs = PodObs::default();
    for sb in &record.sandboxes {
        let (ip, additional_ips) = if sb.ready {
            match ip_cache.get(&sb.id) {
                Some(v) => v.clone(),
                None => {
                    let v = sandbox_ips(&runtime.pod_sandbox_status(&sb.id).await?);
                    ip_cache.insert(sb.id.clone(), v.clone());
                    v
                }
            }
        } else {
            (None, Vec::new())
        };
        obs.sandboxes.push(SandboxObs {
            attempt: sb.attempt,
            id: sb.id.clone(),
            ready: sb.ready,
            created_at: sb.created_at,
            ip,
            additional_ips,
        });
    }
    cache.retain(|id, _| record.containers.iter().any(|c| &c.id == id));
    ip_cache.retain(|id, _| obs.sandboxes.iter().any(|s| &s.id == id && s.ready));
    for c in &record.containers {
        let state = cstate(c.state);
        if let Some(cached) = cache.get(&c.id)
            && cached.state == state
        {
            obs.containers.push(cached.clone());
            continue;
        }
        let st = match runtime.container_status(&c.id).await {
            Ok(st) => st,
            // Removed between list and status: it is gone.
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        };
        let o = ContainerObs {
            id: c.id.clone(),
            name: c.name.clone(),
            sandbox_id: c.sandbox_id.clone(),
            state: cstate(st.state),
            hash: c.annotations.hash,
            restart_count: c.annotations.restart_count,
            init: c.annotations.init,
            created_at: st.created_at,
            started_at: st.started_at,
            finished_at: st.finished_at,
            exit_code: st.exit_code,
            // An exited container's message includes its termination message (upstream's
            // convertToKubeContainerStatus), read once: the result is cached by state.
            message: match cstate(st.state) {
                CState::Exited => super::termination_message::enrich(&st, &c.annotations).await,
                _ => st.message.clone(),
            },
            reason: st.reason,
            image: st.image.map(|i| i.image).unwrap_or_default(),
            image_ref: st.image_ref,
        };
        cache.insert(c.id.clone(), o.clone());
        obs.containers.push(o);
    }
    obs.sandboxes.sort_by_key(|s| std::cmp::Reverse(s.created_at));
    obs.containers.sort_by_key(|c| std::cmp::Reverse(c.created_at));
    Ok(obs)
}
