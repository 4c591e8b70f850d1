//! The memory manager (upstream pkg/kubelet/cm/memorymanager): policy `None` or `Static`. Under
//! Static, Guaranteed containers get their memory (and hugepages) reserved on the NUMA nodes of
//! the topology manager's hint, recorded in `<root-dir>/memory_manager_state` (`state.rs`), and
//! run with `cpuset.mems` set to those nodes. `reservedMemory` must add up, per resource, to
//! kube + system reserved + the hard eviction threshold, as upstream validates it.

pub mod state;

use crate::cm::qos;
use crate::cm::topology::CpuTopology;
use crate::cm::topology::bitmask::{self, BitMask};
use crate::cm::topology::hints::{AdmitError, AffinityStore, HintProvider, Hints, TopologyHint};
use k8s_openapi::api::core::v1::{Container, Pod};
use state::{Block, MemoryTable, NodeState, State};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Default)]
pub struct Config {
    /// `None` or `Static`.
    pub policy: String,
    /// reservedMemory: per NUMA node, bytes per resource (`memory`, `hugepages-<size>`).
    pub reserved_memory: Vec<(usize, BTreeMap<String, u64>)>,
    /// Node allocatable's reservation per memory resource: kube + system reserved + the hard
    /// eviction threshold (bytes).
    pub allocatable_reservation: BTreeMap<String, u64>,
    pub state_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the reserved memory configuration references a NUMA node {0} that does not exist on this machine")]
    UnknownNode(usize),
    #[error(
        "the total amount {reserved:?} of type {kind:?} is not equal to the value {allocatable:?} determined by Node Allocatable feature"
    )]
    Mismatch { reserved: String, kind: String, allocatable: String },
    #[error("[memorymanager] you should specify the system reserved memory")]
    NoSystemReserved,
    #[error("[memorymanager] the expected machine state is different from the real one")]
    MachineStateChanged,
    #[error(
        "start memory manager error: could not restore state from checkpoint: {source}, please drain this node and delete the memory manager checkpoint file {path:?} before restarting Kubelet"
    )]
    Restore { source: state::Error, path: PathBuf },
    #[error("start memory manager error: {0}")]
    Store(state::Error),
}

/// A quantity in bytes the way resource.Quantity prints it (`1Gi`, `512Mi`, `100`), for
/// upstream's mismatch message.
fn quantity(bytes: u64) -> String {
    for (suffix, unit) in
        [("Ei", 1u64 << 60), ("Pi", 1 << 50), ("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)]
    {
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{}{suffix}", bytes / unit);
        }
    }
    bytes.to_string()
}

/// `hugepages-2Mi` for 2 MiB pages (HugePageResourceName).
pub fn hugepage_resource(page_bytes: u64) -> String {
    format!("hugepages-{}", quantity(page_bytes))
}

struct Inner {
    state: State,
    fresh: HashSet<String>,
}

pub struct MemoryManager {
    policy: String,
    path: PathBuf,
    topology: CpuTopology,
    store: Arc<AffinityStore>,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for MemoryManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryManager").field("policy", &self.policy).finish()
    }
}

/// validateReservedMemory: every node exists and each memory resource's sum matches node
/// allocatable's reservation.
pub fn validate_reserved(cfg: &Config, nodes: &[usize]) -> Result<(), Error> {
    let mut total: BTreeMap<String, u64> = BTreeMap::new();
    for (node, limits) in &cfg.reserved_memory {
        if !nodes.contains(node) {
            return Err(Error::UnknownNode(*node));
        }
        for (kind, v) in limits {
            *total.entry(kind.clone()).or_default() += v;
        }
    }
    let kinds: std::collections::BTreeSet<&String> = total.keys().chain(cfg.allocatable_reservation.keys()).collect();
    for kind in kinds {
        let (reserved, allocatable) =
            (total.get(kind).copied().unwrap_or(0), cfg.allocatable_reservation.get(kind).copied().unwrap_or(0));
        if reserved != allocatable {
            return Err(Error::Mismatch {
                reserved: quantity(reserved),
                kind: kind.clone(),
                allocatable: quantity(allocatable),
            });
        }
    }
    Ok(())
}

impl MemoryManager {
    pub fn start(cfg: &Config, topology: CpuTopology, store: Arc<AffinityStore>) -> Result<MemoryManager, Error> {
        let path = cfg.state_dir.join(state::STATE_FILE);
        let mut st = match state::load(&path, &cfg.policy) {
            Ok(s) => s.unwrap_or_default(),
            Err(source) => return Err(Error::Restore { source, path }),
        };
        if cfg.policy == "Static" {
            let nodes: Vec<usize> = topology.details.numa_nodes().into_iter().collect();
            validate_reserved(cfg, &nodes)?;
            let reserved_total: u64 = cfg.reserved_memory.iter().filter_map(|(_, l)| l.get("memory")).sum();
            if reserved_total == 0 {
                return Err(Error::NoSystemReserved);
            }
            let fresh = initial_machine_state(cfg, &topology);
            if st.machine.is_empty() && st.assignments.is_empty() {
                st.machine = fresh;
            } else {
                let mut expected = fresh;
                for containers in st.assignments.values() {
                    for blocks in containers.values() {
                        for b in blocks {
                            reserve(&mut expected, b);
                        }
                    }
                }
                if expected != st.machine {
                    return Err(Error::MachineStateChanged);
                }
            }
        }
        state::store(&path, &cfg.policy, &st).map_err(Error::Store)?;
        Ok(MemoryManager {
            policy: cfg.policy.clone(),
            path,
            topology,
            store,
            inner: Mutex::new(Inner { state: st, fresh: HashSet::new() }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_static(&self) -> bool {
        self.policy == "Static"
    }

    pub fn state(&self) -> State {
        self.lock().state.clone()
    }

    fn save(&self, st: &State) {
        if let Err(e) = state::store(&self.path, &self.policy, st) {
            tracing::error!(error = %e, "cannot write the memory manager checkpoint");
        }
    }

    /// The container's `cpuset.mems` (GetMemoryNUMANodes): the nodes of its blocks.
    pub fn numa_nodes_for(&self, pod_uid: &str, container: &str) -> Option<String> {
        let inner = self.lock();
        let blocks = inner.state.assignments.get(pod_uid)?.get(container)?;
        let nodes: std::collections::BTreeSet<usize> = blocks.iter().flat_map(|b| b.numa_affinity.clone()).collect();
        (!nodes.is_empty()).then(|| nodes.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(","))
    }

    /// Releases the memory of pods that are neither active nor freshly allocated.
    pub fn remove_stale(&self, active: &HashSet<String>, seen: &HashSet<String>) {
        let mut inner = self.lock();
        inner.fresh.retain(|u| !seen.contains(u));
        let stale: Vec<String> = inner
            .state
            .assignments
            .keys()
            .filter(|u| !active.contains(*u) && !inner.fresh.contains(*u))
            .cloned()
            .collect();
        if stale.is_empty() {
            return;
        }
        for uid in stale {
            if let Some(containers) = inner.state.assignments.remove(&uid) {
                for blocks in containers.values() {
                    for b in blocks {
                        release(&mut inner.state.machine, b);
                    }
                }
                tracing::info!(pod_uid = %uid, "released the memory of a pod that is gone");
            }
        }
        self.save(&inner.state);
    }

    fn requested(pod: &Pod, c: &Container) -> BTreeMap<String, u64> {
        if qos::qos_class(pod) != "Guaranteed" {
            return BTreeMap::new();
        }
        let reqs = c.resources.as_ref().and_then(|r| r.requests.clone()).unwrap_or_default();
        reqs.iter()
            .filter(|(k, _)| *k == "memory" || k.starts_with("hugepages-"))
            .filter_map(|(k, q)| {
                let v = kubelet_config::quantity::Quantity::parse(&q.0).ok()?.value();
                (v > 0).then(|| (k.clone(), v as u64))
            })
            .collect()
    }

    fn nodes(&self) -> Vec<usize> {
        self.topology.details.numa_nodes().into_iter().collect()
    }

    fn sum(st: &State, mask: BitMask, kind: &str, f: impl Fn(&MemoryTable) -> u64) -> u64 {
        mask.bits().iter().filter_map(|n| st.machine.get(n)?.memory_map.get(kind)).map(f).sum()
    }

    /// calculateHints: every mask with enough free memory of each resource, preferred when as
    /// narrow as the narrowest that could ever hold it. Masks cutting across an existing
    /// multi-node group are skipped.
    fn hints_for(&self, st: &State, requested: &BTreeMap<String, u64>) -> Hints {
        let nodes = self.nodes();
        let mut out = Hints::new();
        for (kind, size) in requested {
            let mut min = nodes.len() as u32;
            let mut hints = Vec::new();
            bitmask::iterate(&nodes, |mask| {
                if Self::sum(st, mask, kind, |t| t.allocatable) >= *size && mask.count() < min {
                    min = mask.count();
                }
                // isAffinityViolatingNUMAAllocations: a multi-node mask may not take a node used
                // alone or in another group; single-node masks always may.
                let bits = mask.bits();
                let violates = bits.len() > 1
                    && bits.iter().any(|n| {
                        st.machine.get(n).is_some_and(|s| s.assignments > 0 && (s.cells.len() == 1 || s.cells != bits))
                    });
                if !violates && Self::sum(st, mask, kind, |t| t.free) >= *size {
                    hints.push(TopologyHint::new(mask, false));
                }
            });
            for h in &mut hints {
                h.preferred = h.affinity.is_some_and(|m| m.count() == min);
            }
            out.insert(kind.clone(), Some(hints));
        }
        out
    }

    fn existing_hints(st: &State, uid: &str, containers: &[&str]) -> Option<Hints> {
        let pod = st.assignments.get(uid)?;
        let mut out = Hints::new();
        for c in containers {
            for b in pod.get(*c).into_iter().flatten() {
                out.insert(b.kind.clone(), Some(vec![TopologyHint::new(BitMask::of(&b.numa_affinity), true)]));
            }
        }
        (!out.is_empty()).then_some(out)
    }
}

/// A fresh machine state: per node, memory (MemTotal) and each hugepage size, minus
/// reservedMemory (initializeMachineState).
fn initial_machine_state(cfg: &Config, topology: &CpuTopology) -> state::MachineState {
    let reserved = |node: usize, kind: &str| {
        cfg.reserved_memory.iter().filter(|(n, _)| *n == node).filter_map(|(_, l)| l.get(kind)).sum::<u64>()
    };
    let mut machine = state::MachineState::new();
    for node in topology.details.numa_nodes() {
        let mut map = BTreeMap::new();
        let mut table = |kind: String, total: u64| {
            let system_reserved = reserved(node, &kind);
            let allocatable = total.saturating_sub(system_reserved);
            map.insert(kind, MemoryTable { total, system_reserved, allocatable, reserved: 0, free: allocatable });
        };
        table("memory".into(), topology.numa_memory.get(&node).copied().unwrap_or(0));
        for (page, pages) in topology.numa_hugepages.get(&node).into_iter().flatten() {
            table(hugepage_resource(*page), page * pages);
        }
        machine.insert(node, NodeState { assignments: 0, memory_map: map, cells: vec![node] });
    }
    machine
}

/// Reserves a block on its nodes, filling them in order (the Allocate bookkeeping).
fn reserve(machine: &mut state::MachineState, b: &Block) {
    let mut left = b.size;
    for n in &b.numa_affinity {
        let Some(node) = machine.get_mut(n) else { continue };
        node.assignments += 1;
        node.cells = b.numa_affinity.clone();
        if let Some(t) = node.memory_map.get_mut(&b.kind) {
            let take = t.free.min(left);
            t.free -= take;
            t.reserved += take;
            left -= take;
        }
    }
}

/// RemoveContainer's bookkeeping.
fn release(machine: &mut state::MachineState, b: &Block) {
    let mut left = b.size;
    for n in &b.numa_affinity {
        let Some(node) = machine.get_mut(n) else { continue };
        node.assignments -= 1;
        if node.assignments == 0 {
            node.cells = vec![*n];
        }
        if let Some(t) = node.memory_map.get_mut(&b.kind) {
            let give = t.reserved.min(left);
            t.reserved -= give;
            t.free += give;
            left -= give;
        }
    }
}

impl HintProvider for MemoryManager {
    fn topology_hints(&self, pod: &Pod, c: &Container) -> Hints {
        if !self.is_static() {
            return Hints::new();
        }
        let requested = Self::requested(pod, c);
        if requested.is_empty() {
            return Hints::new();
        }
        let inner = self.lock();
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        Self::existing_hints(&inner.state, uid, &[&c.name]).unwrap_or_else(|| self.hints_for(&inner.state, &requested))
    }

    fn pod_topology_hints(&self, pod: &Pod) -> Hints {
        if !self.is_static() {
            return Hints::new();
        }
        let Some(spec) = pod.spec.as_ref() else { return Hints::new() };
        // The pod's request: max(init containers, sum of app containers), per resource.
        let mut requested: BTreeMap<String, u64> = BTreeMap::new();
        for c in &spec.containers {
            for (k, v) in Self::requested(pod, c) {
                *requested.entry(k).or_default() += v;
            }
        }
        for c in spec.init_containers.iter().flatten() {
            for (k, v) in Self::requested(pod, c) {
                let e = requested.entry(k).or_default();
                *e = (*e).max(v);
            }
        }
        if requested.is_empty() {
            return Hints::new();
        }
        let inner = self.lock();
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let names: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
        Self::existing_hints(&inner.state, uid, &names).unwrap_or_else(|| self.hints_for(&inner.state, &requested))
    }

    fn allocate(&self, pod: &Pod, c: &Container) -> Result<(), AdmitError> {
        if !self.is_static() {
            return Ok(());
        }
        let requested = Self::requested(pod, c);
        if requested.is_empty() {
            return Ok(());
        }
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let hint = self.store.get(&uid, &c.name);
        let mut inner = self.lock();
        if inner.state.assignments.get(&uid).is_some_and(|p| p.contains_key(&c.name)) {
            return Ok(());
        }
        // Without an affinity: the narrowest preferred hint (getDefaultHint); a hint that
        // cannot hold the request is widened to the narrowest one that can.
        let hints = self.hints_for(&inner.state, &requested);
        let fits =
            |mask: BitMask| requested.iter().all(|(k, size)| Self::sum(&inner.state, mask, k, |t| t.free) >= *size);
        let candidates: Vec<BitMask> = hints
            .get("memory")
            .or_else(|| hints.values().next())
            .cloned()
            .flatten()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|h| h.affinity)
            .filter(|m| fits(*m))
            .collect();
        let mask = match hint.affinity {
            Some(m) if fits(m) => m,
            Some(m) => candidates.iter().copied().filter(|c| c.0 & m.0 == m.0).min_by_key(|c| (c.count(), c.0)).ok_or_else(
                || AdmitError::unexpected("[memorymanager] failed to find NUMA nodes to extend the current topology hint"),
            )?,
            None => candidates.iter().copied().min_by_key(|c| (c.count(), c.0)).ok_or_else(|| {
                AdmitError::unexpected(
                    "[memorymanager] failed to get the default NUMA affinity, no NUMA nodes with enough memory is available",
                )
            })?,
        };
        let mut blocks = Vec::new();
        for (kind, size) in &requested {
            let b = Block { numa_affinity: mask.bits(), kind: kind.clone(), size: *size };
            reserve(&mut inner.state.machine, &b);
            blocks.push(b);
        }
        tracing::info!(pod_uid = %uid, container = %c.name, numa = ?mask.bits(), "allocated memory");
        inner.state.assignments.entry(uid.clone()).or_default().insert(c.name.clone(), blocks);
        inner.fresh.insert(uid);
        self.save(&inner.state);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
