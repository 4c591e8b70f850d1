//! The resource managers a node runs beside its cgroups (upstream's container manager wiring in
//! NewContainerManager / Start): the topology manager with the CPU manager as hint provider (the
//! memory and device managers join it the same way). `start` reads the machine's topology from
//! sysfs, restores the checkpoints and refuses to start on a bad configuration or state.

use super::cpu_manager::{self, ActivePods, CpuManager};
use super::memory_manager::{self, MemoryManager};
use super::topology::hints::{self, AffinityStore, NumaInfo, TopologyManager};
use super::topology::{self, CpuTopology, cpuset::CpuSet};
use crate::cri::DynRuntime;
use kubelet_config::KubeletConfiguration;
use kubelet_config::eviction::{ThresholdValue, parse_threshold};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct Config {
    pub cpu_manager_policy: String,
    pub cpu_manager_policy_options: BTreeMap<String, String>,
    pub cpu_manager_reconcile_period: Duration,
    pub reserved_system_cpus: String,
    /// systemReserved.cpu + kubeReserved.cpu, millicores.
    pub reserved_cpu_milli: i64,
    pub topology_manager_policy: String,
    pub topology_manager_scope: String,
    pub topology_manager_policy_options: BTreeMap<String, String>,
    pub feature_gates: BTreeMap<String, bool>,
    pub memory_manager_policy: String,
    /// reservedMemory: (NUMA node, bytes per resource).
    pub reserved_memory: Vec<(usize, BTreeMap<String, u64>)>,
    /// kube + system reserved + evictionHard memory.available (and hugepages), bytes; a
    /// percentage threshold is resolved against the machine's memory at start.
    pub allocatable_reservation: BTreeMap<String, u64>,
    /// evictionHard memory.available as a fraction of capacity, when given as a percentage.
    pub eviction_memory_fraction: f64,
    /// `<root-dir>`, where the state files are (the composition sets it).
    pub state_dir: PathBuf,
    /// `/sys`.
    pub sys: PathBuf,
}

impl Config {
    pub fn from_kubelet(cfg: &KubeletConfiguration) -> Config {
        let reserved: i64 = [&cfg.system_reserved, &cfg.kube_reserved]
            .into_iter()
            .filter_map(|m| m.get("cpu"))
            .map(|q| q.milli_value() as i64)
            .sum();
        let mut allocatable_reservation: BTreeMap<String, u64> = BTreeMap::new();
        for map in [&cfg.system_reserved, &cfg.kube_reserved] {
            for (k, q) in map {
                if k == "memory" || k.starts_with("hugepages-") {
                    *allocatable_reservation.entry(k.clone()).or_default() += q.value().max(0) as u64;
                }
            }
        }
        let mut eviction_memory_fraction = 0.0;
        match cfg
            .eviction_hard
            .get("memory.available")
            .and_then(|v| parse_threshold("memory.available", v).ok().flatten())
        {
            Some(ThresholdValue::Quantity(q)) => {
                *allocatable_reservation.entry("memory".into()).or_default() += q.value().max(0) as u64
            }
            Some(ThresholdValue::Percentage(p)) => eviction_memory_fraction = f64::from(p),
            None => {}
        }
        let reserved_memory = cfg
            .reserved_memory
            .iter()
            .map(|r| {
                (
                    r.numa_node.max(0) as usize,
                    r.limits.iter().map(|(k, q)| (k.clone(), q.value().max(0) as u64)).collect(),
                )
            })
            .collect();
        Config {
            memory_manager_policy: cfg.memory_manager_policy.clone(),
            reserved_memory,
            allocatable_reservation,
            eviction_memory_fraction,
            cpu_manager_policy: cfg.cpu_manager_policy.clone(),
            cpu_manager_policy_options: cfg.cpu_manager_policy_options.clone(),
            cpu_manager_reconcile_period: cfg.cpu_manager_reconcile_period.to_std().unwrap_or(Duration::from_secs(10)),
            reserved_system_cpus: cfg.reserved_system_cpus.clone(),
            reserved_cpu_milli: reserved,
            topology_manager_policy: cfg.topology_manager_policy.clone(),
            topology_manager_scope: cfg.topology_manager_scope.clone(),
            topology_manager_policy_options: cfg.topology_manager_policy_options.clone(),
            feature_gates: cfg.feature_gates.clone(),
            state_dir: PathBuf::from("/var/lib/kubelet"),
            sys: PathBuf::from("/sys"),
        }
    }

    fn needs_topology(&self) -> bool {
        self.cpu_manager_policy == "static"
            || self.topology_manager_policy != "none"
            || self.memory_manager_policy == "Static"
    }
}

impl Default for Config {
    /// Upstream's defaults: policies none, nothing reserved.
    fn default() -> Self {
        Config::from_kubelet(&KubeletConfiguration::default())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Topology(#[from] topology::Error),
    #[error(transparent)]
    Cpu(#[from] cpu_manager::Error),
    #[error("start topology manager error: {0}")]
    TopologyManager(#[from] hints::ConfigError),
    #[error(transparent)]
    Memory(#[from] memory_manager::Error),
    #[error("reservedSystemCPUs: {0}")]
    ReservedCpus(#[from] topology::cpuset::ParseError),
}

/// The started managers: the topology manager is the admit handler; the CPU manager gives
/// containers their cpusets and runs the reconcile loop.
pub struct ResourceManagers {
    pub cpu: Arc<CpuManager>,
    pub memory: Arc<MemoryManager>,
    pub topology: Arc<TopologyManager>,
}

impl std::fmt::Debug for ResourceManagers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResourceManagers").field("cpu", &self.cpu).finish()
    }
}

pub fn start(cfg: &Config) -> Result<ResourceManagers, Error> {
    let topo = if cfg.needs_topology() { CpuTopology::discover(&cfg.sys)? } else { CpuTopology::default() };
    start_with(cfg, topo)
}

/// `start` on a given topology (tests use fake sysfs trees).
pub fn start_with(cfg: &Config, topo: CpuTopology) -> Result<ResourceManagers, Error> {
    let reserved_cpus = CpuSet::parse(&cfg.reserved_system_cpus)?;
    // With reservedSystemCPUs the reservation is that many CPUs (upstream's kubelet server
    // overrides systemReserved.cpu with the count and drops kubeReserved.cpu).
    let num_reserved = if reserved_cpus.is_empty() {
        (cfg.reserved_cpu_milli.max(0) as u64).div_ceil(1000) as usize
    } else {
        reserved_cpus.len()
    };
    let store = Arc::new(AffinityStore::default());
    let policy = hints::Policy::parse(&cfg.topology_manager_policy)?;
    let scope = match cfg.topology_manager_scope.as_str() {
        "pod" => hints::Scope::Pod,
        "container" | "" => hints::Scope::Container,
        other => return Err(hints::ConfigError::UnknownScope(other.into()).into()),
    };
    let gate = |g: &str| kubelet_config::features::enabled(&cfg.feature_gates, g);
    let options = hints::Options::parse(&cfg.topology_manager_policy_options, gate)?;
    let numa =
        NumaInfo { nodes: topo.details.numa_nodes().into_iter().collect(), distances: topo.numa_distances.clone() };
    let mut manager = TopologyManager::new(policy, scope, options, numa, store.clone())?;
    let cpu_cfg = cpu_manager::Config {
        policy: cfg.cpu_manager_policy.clone(),
        options: cfg.cpu_manager_policy_options.clone(),
        reserved_cpus: Some(reserved_cpus).filter(|r| !r.is_empty()),
        num_reserved,
        reconcile_period: cfg.cpu_manager_reconcile_period,
        state_dir: cfg.state_dir.clone(),
        feature_gates: cfg.feature_gates.clone(),
    };
    let mut allocatable_reservation = cfg.allocatable_reservation.clone();
    if cfg.eviction_memory_fraction > 0.0 {
        let capacity: u64 = topo.numa_memory.values().sum();
        *allocatable_reservation.entry("memory".into()).or_default() +=
            (cfg.eviction_memory_fraction * capacity as f64) as u64;
    }
    let mem_cfg = memory_manager::Config {
        policy: cfg.memory_manager_policy.clone(),
        reserved_memory: cfg.reserved_memory.clone(),
        allocatable_reservation,
        state_dir: cfg.state_dir.clone(),
    };
    let memory = Arc::new(MemoryManager::start(&mem_cfg, topo.clone(), store.clone())?);
    let cpu = Arc::new(CpuManager::start(&cpu_cfg, topo, store)?);
    manager.add_provider(cpu.clone());
    manager.add_provider(memory.clone());
    Ok(ResourceManagers { cpu, memory, topology: Arc::new(manager) })
}

impl ResourceManagers {
    /// The reconcile loop every cpuManagerReconcilePeriod: the CPU manager's reconcileState,
    /// then the memory manager's stale state with the same view of the active pods.
    pub async fn run(self: Arc<Self>, runtime: DynRuntime, active_pods: ActivePods, token: CancellationToken) {
        if !self.cpu.is_static() && !self.memory_static() {
            return;
        }
        let period = self.cpu.reconcile_period();
        loop {
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
            }
            if let Some(seen) = self.cpu.reconcile(&runtime, &active_pods).await {
                self.memory.remove_stale(&seen.active, &seen.seen);
            }
        }
    }

    fn memory_static(&self) -> bool {
        !self.memory.state().machine.is_empty()
    }

    /// The container's `cpuset.mems` under the Static memory policy.
    pub fn container_mems(&self, pod_uid: &str, container: &str) -> Option<String> {
        self.memory.numa_nodes_for(pod_uid, container)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::Handler;
    use crate::cm::cpu_manager::policy::tests::{container, pod};
    use crate::cm::topology::fake::FakeSys;

    fn cfg(dir: &std::path::Path, policy: &str, reserved: &str) -> Config {
        Config {
            cpu_manager_policy: "static".into(),
            reserved_system_cpus: reserved.into(),
            topology_manager_policy: policy.into(),
            state_dir: dir.to_path_buf(),
            ..Config::default()
        }
    }

    #[test]
    fn the_topology_manager_admits_and_the_cpu_manager_pins() {
        let dir = tempfile::tempdir().unwrap();
        let topo = CpuTopology::discover(FakeSys::two_cpus().path()).unwrap();
        let m = start_with(&cfg(dir.path(), "none", "0"), topo).unwrap();
        let g = pod("g", vec![], vec![container("c", "1", "100Mi", true)]);
        m.topology.admit(&g, &[]).unwrap();
        assert_eq!(m.cpu.cpuset_for("g", "c").unwrap().to_string(), "1");
        assert_eq!(m.cpu.cpuset_for("be", "c").unwrap().to_string(), "0");
        let h = pod("h", vec![], vec![container("c", "1", "100Mi", true)]);
        let r = m.topology.admit(&h, &[]).unwrap_err();
        assert_eq!(r.reason, "UnexpectedAdmissionError");
        assert_eq!(
            r.message,
            "Allocate failed due to not enough cpus available to satisfy request: requested=1, available=0, which is unexpected"
        );
    }

    #[test]
    fn single_numa_node_refuses_a_pod_spanning_nodes() {
        let dir = tempfile::tempdir().unwrap();
        let topo = CpuTopology::discover(FakeSys::dual_socket_ht().path()).unwrap();
        let m = start_with(&cfg(dir.path(), "single-numa-node", ""), topo).unwrap_err();
        // The static policy needs a reservation.
        assert!(m.to_string().contains("requires systemreserved.cpu + kubereserved.cpu"), "{m}");
        let topo = CpuTopology::discover(FakeSys::dual_socket_ht().path()).unwrap();
        let m = start_with(&cfg(dir.path(), "single-numa-node", "0"), topo).unwrap();
        let fits = pod("a", vec![], vec![container("c", "5", "100Mi", true)]);
        m.topology.admit(&fits, &[]).unwrap();
        let a = m.cpu.cpuset_for("a", "c").unwrap();
        // Both nodes can hold 5; equally narrow, the lower mask wins: node 0 without CPU 0.
        assert_eq!(a.to_string(), "2,4,6,8,10");
        let spans = pod("b", vec![], vec![container("c", "7", "100Mi", true)]);
        let r = m.topology.admit(&spans, &[]).unwrap_err();
        assert_eq!(r.reason, "TopologyAffinityError");
    }
}
