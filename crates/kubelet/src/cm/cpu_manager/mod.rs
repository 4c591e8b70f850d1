//! The CPU manager (upstream pkg/kubelet/cm/cpumanager): policy `none` (nothing pinned) or
//! `static` (`policy.rs`), its state checkpointed in `<root-dir>/cpu_manager_state`
//! (`state.rs`), a topology hint provider, the cpuset a container is created with
//! (`cpuset_for`, upstream's PreCreateContainer), and the reconcile loop that keeps every
//! running container's cpuset in step with the state through CRI UpdateContainerResources and
//! returns the CPUs of pods that are gone to the shared pool (reconcileState, removeStaleState).

pub mod assign;
pub mod policy;
pub mod state;

use crate::cm::topology::CpuTopology;
use crate::cm::topology::cpuset::CpuSet;
use crate::cm::topology::hints::{AdmitError, AffinityStore, HintProvider, Hints};
use crate::cri::{DynRuntime, api};
use k8s_openapi::api::core::v1::{Container, Pod};
use policy::StaticPolicy;
use state::State;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The KubeletConfiguration fields the CPU manager reads.
#[derive(Debug, Clone)]
pub struct Config {
    /// `none` or `static`.
    pub policy: String,
    pub options: BTreeMap<String, String>,
    /// reservedSystemCPUs.
    pub reserved_cpus: Option<CpuSet>,
    /// ceil(systemReserved.cpu + kubeReserved.cpu).
    pub num_reserved: usize,
    pub reconcile_period: Duration,
    /// `<root-dir>`: the state file is `<root-dir>/cpu_manager_state`.
    pub state_dir: PathBuf,
    pub feature_gates: BTreeMap<String, bool>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("start cpu manager error: {0}")]
    Policy(#[from] policy::Error),
    #[error(
        "start cpu manager error: could not restore state from checkpoint: {source}, please drain this node and delete the CPU manager checkpoint file {path:?} before restarting Kubelet"
    )]
    Restore { source: state::Error, path: PathBuf },
    #[error("start cpu manager error: {0}")]
    Store(state::Error),
}

/// Which pods are active (upstream's activePods): pods with a status, `true` unless terminal.
pub type ActivePods = Arc<dyn Fn() -> Vec<(Arc<Pod>, bool)> + Send + Sync>;

/// What a reconcile round saw: the active pods' UIDs, and the UIDs of pods with a status.
#[derive(Debug, Clone, Default)]
pub struct Activity {
    pub active: HashSet<String>,
    pub seen: HashSet<String>,
}

struct Inner {
    state: State,
    policy: Option<StaticPolicy>,
    /// The cpuset last written to each running container (lastUpdateState), by container ID.
    last_update: HashMap<String, CpuSet>,
    /// Pods allocated since the last reconcile that have no status yet: not stale.
    fresh: HashSet<String>,
}

pub struct CpuManager {
    policy_name: String,
    path: PathBuf,
    reconcile_period: Duration,
    store: Arc<AffinityStore>,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for CpuManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuManager").field("policy", &self.policy_name).finish()
    }
}

impl CpuManager {
    /// NewManager + Start: builds the policy, restores (or creates) the checkpoint and
    /// validates it against the machine. Any failure stops the kubelet with upstream's text.
    pub fn start(cfg: &Config, topology: CpuTopology, store: Arc<AffinityStore>) -> Result<CpuManager, Error> {
        let gate = |g: &str| kubelet_config::features::enabled(&cfg.feature_gates, g);
        let policy = match cfg.policy.as_str() {
            "static" => {
                let options = policy::Options::parse(&cfg.options, gate)?;
                Some(StaticPolicy::new(topology, cfg.num_reserved, cfg.reserved_cpus.clone(), options)?)
            }
            _ => None,
        };
        let path = cfg.state_dir.join(state::STATE_FILE);
        let mut st = match state::load(&path, &cfg.policy) {
            Ok(s) => s.unwrap_or_default(),
            Err(source) => return Err(Error::Restore { source, path }),
        };
        if let Some(p) = &policy {
            p.start(&mut st)?;
        }
        state::store(&path, &cfg.policy, &st).map_err(Error::Store)?;
        tracing::info!(policy = %cfg.policy, default_cpu_set = %st.default_cpu_set, "CPU manager started");
        Ok(CpuManager {
            policy_name: cfg.policy.clone(),
            path,
            reconcile_period: cfg.reconcile_period,
            store,
            inner: Mutex::new(Inner { state: st, policy, last_update: HashMap::new(), fresh: HashSet::new() }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn save(&self, inner: &Inner) {
        if let Err(e) = state::store(&self.path, &self.policy_name, &inner.state) {
            tracing::error!(error = %e, "cannot write the CPU manager checkpoint");
        }
    }

    pub fn is_static(&self) -> bool {
        self.lock().policy.is_some()
    }

    pub fn state(&self) -> State {
        self.lock().state.clone()
    }

    /// The cpuset a container is created with (GetCPUAffinity): its exclusive CPUs, else the
    /// shared pool; None under the none policy.
    pub fn cpuset_for(&self, pod_uid: &str, container: &str) -> Option<CpuSet> {
        let inner = self.lock();
        inner.policy.as_ref()?;
        Some(inner.state.cpu_set_or_default(pod_uid, container)).filter(|s| !s.is_empty())
    }

    /// Releases the CPUs of containers whose pod is not active (removeStaleState).
    fn remove_stale(&self, inner: &mut Inner, active: &HashSet<String>) {
        let stale: Vec<(String, String)> = inner
            .state
            .assignments
            .iter()
            .filter(|(pod, _)| !active.contains(*pod) && !inner.fresh.contains(*pod))
            .flat_map(|(pod, c)| c.keys().map(move |n| (pod.clone(), n.clone())))
            .collect();
        if stale.is_empty() {
            return;
        }
        for (pod, container) in &stale {
            tracing::info!(pod_uid = %pod, %container, "releasing the CPUs of a container that is gone");
            StaticPolicy::remove_container(&mut inner.state, pod, container);
        }
        let gone: HashSet<&String> = stale.iter().map(|(p, _)| p).collect();
        self.store.retain_pods(&|uid| !gone.contains(&uid.to_string()));
        self.save(inner);
    }

    /// One reconcile round: stale assignments released, then every running container of an
    /// active pod updated whose cpuset differs from the one last written. Returns the active
    /// pods and those with a status (for the memory manager's stale state).
    pub async fn reconcile(&self, runtime: &DynRuntime, active_pods: &ActivePods) -> Option<Activity> {
        let running = match runtime.list_containers(None).await {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(error = %e, "resource managers reconcile: cannot list containers");
                return None;
            }
        };
        let running: Vec<(String, String, String)> = running
            .into_iter()
            .filter(|c| c.state == api::ContainerState::ContainerRunning as i32)
            .filter_map(|c| {
                let uid = c.labels.get(crate::cri::labels::POD_UID)?.clone();
                let name = c.labels.get(crate::cri::labels::CONTAINER_NAME)?.clone();
                Some((c.id, uid, name))
            })
            .collect();
        let pods = active_pods();
        let seen: HashSet<String> = pods.iter().filter_map(|(p, _)| p.metadata.uid.clone()).collect();
        let mut active: HashSet<String> =
            pods.iter().filter(|(_, a)| *a).filter_map(|(p, _)| p.metadata.uid.clone()).collect();
        // A pod with no status yet (the kubelet just restarted) is active while it runs.
        active.extend(running.iter().filter(|(_, uid, _)| !seen.contains(uid)).map(|(_, uid, _)| uid.clone()));
        let activity = Activity { active: active.clone(), seen: seen.clone() };
        if !self.is_static() {
            return Some(activity);
        }
        let updates: Vec<(String, CpuSet)> = {
            let mut inner = self.lock();
            inner.fresh.retain(|uid| !seen.contains(uid));
            self.remove_stale(&mut inner, &active);
            let ids: HashSet<&String> = running.iter().map(|(id, _, _)| id).collect();
            inner.last_update.retain(|id, _| ids.contains(id));
            running
                .iter()
                .filter(|(_, uid, _)| active.contains(uid))
                .filter_map(|(id, uid, name)| {
                    let set = inner.state.cpu_set_or_default(uid, name);
                    (!set.is_empty() && inner.last_update.get(id) != Some(&set)).then(|| (id.clone(), set))
                })
                .collect()
        };
        for (id, set) in updates {
            let resources = api::LinuxContainerResources { cpuset_cpus: set.to_string(), ..Default::default() };
            match runtime.update_container_resources(&id, resources).await {
                Ok(()) => {
                    tracing::info!(container_id = %id, cpuset = %set, "CPU manager: updated container cpuset");
                    self.lock().last_update.insert(id, set);
                }
                Err(e) => tracing::warn!(container_id = %id, error = %e, "CPU manager: cannot update container cpuset"),
            }
        }
        Some(activity)
    }

    pub fn reconcile_period(&self) -> Duration {
        self.reconcile_period.max(Duration::from_millis(100))
    }

    /// Records a container started with `set`, so the reconcile loop does not write it again.
    pub fn container_started(&self, container_id: &str, set: &CpuSet) {
        self.lock().last_update.insert(container_id.to_string(), set.clone());
    }
}

impl HintProvider for CpuManager {
    fn topology_hints(&self, pod: &Pod, c: &Container) -> Hints {
        let inner = self.lock();
        let Some(p) = &inner.policy else { return Hints::new() };
        match p.container_hints(&inner.state, pod, c) {
            Some(h) => Hints::from([("cpu".to_string(), Some(h))]),
            None => Hints::new(),
        }
    }

    fn pod_topology_hints(&self, pod: &Pod) -> Hints {
        let inner = self.lock();
        let Some(p) = &inner.policy else { return Hints::new() };
        match p.pod_hints(&inner.state, pod) {
            Some(h) => Hints::from([("cpu".to_string(), Some(h))]),
            None => Hints::new(),
        }
    }

    fn allocate(&self, pod: &Pod, c: &Container) -> Result<(), AdmitError> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let hint = self.store.get(&uid, &c.name);
        let mut guard = self.lock();
        let inner = &mut *guard;
        let Some(p) = inner.policy.as_mut() else { return Ok(()) };
        let before = inner.state.clone();
        p.allocate(&mut inner.state, pod, c, hint)?;
        if inner.state != before {
            inner.fresh.insert(uid);
            self.save(inner);
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "manager_tests.rs"]
mod tests;
