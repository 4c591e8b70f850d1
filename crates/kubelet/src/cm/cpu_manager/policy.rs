//! The static policy (upstream cpumanager/policy_static.go), pure over the [`State`]: Guaranteed
//! containers with an integer CPU request get exclusive CPUs taken from the shared pool (the
//! default set) by topology; the reserved CPUs are never handed out; init containers' CPUs are
//! reused by the containers after them.

use super::assign;
use super::state::State;
use crate::cm::qos;
use crate::cm::topology::CpuTopology;
use crate::cm::topology::bitmask::{self, BitMask};
use crate::cm::topology::cpuset::CpuSet;
use crate::cm::topology::hints::{AdmitError, TopologyHint};
use k8s_openapi::api::core::v1::{Container, Pod};
use std::collections::{BTreeMap, HashMap};

/// `cpuManagerPolicyOptions` the static policy acts on (StaticPolicyOptions).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    pub full_pcpus_only: bool,
    pub distribute_cpus_across_numa: bool,
    pub strict_cpu_reservation: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("unknown CPU Manager Policy option: {0:?}")]
    UnknownOption(String),
    #[error("CPU Manager Policy Alpha-level Options not enabled, but option {0:?} provided")]
    AlphaNotEnabled(String),
    #[error("CPU Manager Policy Beta-level Options not enabled, but option {0:?} provided")]
    BetaNotEnabled(String),
    #[error("bad value for option {0:?}: {1:?} is not a boolean")]
    BadValue(String, String),
    #[error("CPU Manager Policy option {0:?} is not supported by this kubelet yet")]
    NotImplemented(String),
    #[error("[cpumanager] unable to reserve the required amount of CPUs (size of {0} did not equal {1})")]
    Reserve(String, usize),
    #[error("[cpumanager] the static policy requires systemreserved.cpu + kubereserved.cpu to be greater than zero")]
    NoReservation,
    #[error("default cpuset cannot be empty")]
    EmptyDefault,
    #[error("not all reserved cpus: \"{0}\" are present in defaultCpuSet: \"{1}\"")]
    ReservedMissing(String, String),
    #[error("some of strictly reserved cpus: \"{0}\" are present in defaultCpuSet: \"{1}\"")]
    StrictReservedPresent(String, String),
    #[error("pod: {0}, container: {1} cpuset: \"{2}\" overlaps with default cpuset \"{3}\"")]
    Overlap(String, String, String, String),
    #[error("current set of available CPUs \"{0}\" doesn't match with CPUs in state \"{1}\"")]
    CpusChanged(String, String),
}

const ALPHA: &[&str] = &["align-by-socket", "distribute-cpus-across-cores"];
const BETA: &[&str] = &["strict-cpu-reservation", "distribute-cpus-across-numa", "prefer-align-cpus-by-uncorecache"];
const STABLE: &[&str] = &["full-pcpus-only"];

impl Options {
    /// NewStaticPolicyOptions with CheckPolicyOptionAvailable: alpha options need the
    /// CPUManagerPolicyAlphaOptions gate, beta ones CPUManagerPolicyBetaOptions (on by
    /// default); `full-pcpus-only` is GA. Values are Go booleans.
    pub fn parse(opts: &BTreeMap<String, String>, gate: impl Fn(&str) -> bool) -> Result<Options, Error> {
        let mut o = Options::default();
        for (name, value) in opts {
            let n = name.as_str();
            if !ALPHA.contains(&n) && !BETA.contains(&n) && !STABLE.contains(&n) {
                return Err(Error::UnknownOption(name.clone()));
            }
            if ALPHA.contains(&n) && !gate("CPUManagerPolicyAlphaOptions") {
                return Err(Error::AlphaNotEnabled(name.clone()));
            }
            if BETA.contains(&n) && !gate("CPUManagerPolicyBetaOptions") {
                return Err(Error::BetaNotEnabled(name.clone()));
            }
            let v = parse_go_bool(value).ok_or_else(|| Error::BadValue(name.clone(), value.clone()))?;
            match n {
                "full-pcpus-only" => o.full_pcpus_only = v,
                "distribute-cpus-across-numa" => o.distribute_cpus_across_numa = v,
                "strict-cpu-reservation" => o.strict_cpu_reservation = v,
                _ if v => return Err(Error::NotImplemented(name.clone())),
                _ => {}
            }
        }
        Ok(o)
    }
}

/// strconv.ParseBool.
fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// upstream's SMTAlignmentError, refused with reason `SMTAlignmentError`.
fn smt_error(requested: usize, per_core: usize, available: Option<usize>) -> AdmitError {
    let message = match available {
        Some(a) => format!(
            "SMT Alignment Error: not enough free physical CPUs: available physical CPUs = {a}, requested CPUs = {requested}, CPUs per core = {per_core}"
        ),
        None => format!("SMT Alignment Error: requested {requested} cpus not multiple cpus per core = {per_core}"),
    };
    AdmitError { reason: "SMTAlignmentError".into(), message }
}

#[derive(Debug)]
pub struct StaticPolicy {
    pub topology: CpuTopology,
    pub reserved: CpuSet,
    /// The reserved CPUs and their core siblings (reservedPhysicalCPUs).
    pub reserved_physical: CpuSet,
    pub options: Options,
    /// CPUs of a pod's finished init containers, reusable by its later containers.
    cpus_to_reuse: HashMap<String, CpuSet>,
}

impl StaticPolicy {
    /// NewStaticPolicy: `reserved_cpus` when given (reservedSystemCPUs), else `num_reserved`
    /// CPUs taken by topology from the lowest cores.
    pub fn new(
        topology: CpuTopology,
        num_reserved: usize,
        reserved_cpus: Option<CpuSet>,
        options: Options,
    ) -> Result<Self, Error> {
        let reserved = match reserved_cpus.filter(|r| !r.is_empty()) {
            Some(r) => r,
            None => {
                if num_reserved == 0 {
                    return Err(Error::NoReservation);
                }
                assign::take_packed(&topology, &topology.cpus(), num_reserved).unwrap_or_default()
            }
        };
        if reserved.len() != num_reserved {
            return Err(Error::Reserve(reserved.to_string(), num_reserved));
        }
        let reserved_physical = reserved
            .iter()
            .filter_map(|c| topology.core_of(c))
            .fold(CpuSet::new(), |acc, core| acc.union(&topology.details.cpus_in_cores(&[core])));
        tracing::info!(%reserved, %reserved_physical, ?options, "static CPU manager policy: reserved CPUs not available for exclusive assignment");
        Ok(StaticPolicy { topology, reserved, reserved_physical, options, cpus_to_reuse: HashMap::new() })
    }

    /// validateState: an empty state starts with every CPU (minus the reserved ones under
    /// strict-cpu-reservation) shared; a restored one must still fit the machine.
    pub fn start(&self, s: &mut State) -> Result<(), Error> {
        let mut all = self.topology.cpus();
        if self.options.strict_cpu_reservation {
            all = all.difference(&self.reserved);
        }
        if s.default_cpu_set.is_empty() {
            if !s.assignments.is_empty() {
                return Err(Error::EmptyDefault);
            }
            s.default_cpu_set = all;
            return Ok(());
        }
        let d = &s.default_cpu_set;
        if self.options.strict_cpu_reservation {
            let present = self.reserved.intersection(d);
            if !present.is_empty() {
                return Err(Error::StrictReservedPresent(present.to_string(), d.to_string()));
            }
        } else if !self.reserved.is_subset_of(d) {
            return Err(Error::ReservedMissing(self.reserved.to_string(), d.to_string()));
        }
        for (pod, containers) in &s.assignments {
            for (c, set) in containers {
                if !set.intersection(d).is_empty() {
                    return Err(Error::Overlap(pod.clone(), c.clone(), set.to_string(), d.to_string()));
                }
            }
        }
        let known = s.assignments.values().flat_map(|c| c.values()).fold(d.clone(), |acc, set| acc.union(set));
        if known != all {
            return Err(Error::CpusChanged(all.to_string(), known.to_string()));
        }
        Ok(())
    }

    /// The shared pool minus the reserved CPUs (GetAvailableCPUs).
    pub fn available(&self, s: &State) -> CpuSet {
        s.default_cpu_set.difference(&self.reserved)
    }

    /// CPUs no exclusive allocation may take (GetAllocatableCPUs' complement).
    pub fn allocatable(&self) -> CpuSet {
        self.topology.cpus().difference(&self.reserved)
    }

    /// guaranteedCPUs: the integer CPU request of a Guaranteed pod's container, else 0.
    pub fn guaranteed_cpus(pod: &Pod, c: &Container) -> usize {
        if qos::qos_class(pod) != "Guaranteed" {
            return 0;
        }
        let Some(q) = c.resources.as_ref().and_then(|r| r.requests.as_ref()).and_then(|r| r.get("cpu")) else {
            return 0;
        };
        let Ok(q) = kubelet_config::quantity::Quantity::parse(&q.0) else { return 0 };
        let milli = q.milli_value();
        if milli <= 0 || milli % 1000 != 0 { 0 } else { (milli / 1000) as usize }
    }

    fn is_restartable_init(c: &Container) -> bool {
        c.restart_policy.as_deref() == Some("Always")
    }

    /// podGuaranteedCPUs: max(init containers in sequence, app containers + sidecars).
    pub fn pod_guaranteed_cpus(pod: &Pod) -> usize {
        let Some(spec) = pod.spec.as_ref() else { return 0 };
        let (mut init, mut sidecars) = (0, 0);
        for c in spec.init_containers.iter().flatten() {
            let n = Self::guaranteed_cpus(pod, c);
            if Self::is_restartable_init(c) {
                sidecars += n;
            } else if sidecars + n > init {
                init = sidecars + n;
            }
        }
        let app: usize = spec.containers.iter().map(|c| Self::guaranteed_cpus(pod, c)).sum();
        init.max(app + sidecars)
    }

    fn update_cpus_to_reuse(&mut self, pod: &Pod, c: &Container, set: &CpuSet) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        self.cpus_to_reuse.retain(|k, _| *k == uid);
        let reuse = self.cpus_to_reuse.entry(uid).or_default();
        let spec = pod.spec.as_ref();
        let init = spec.and_then(|s| s.init_containers.as_ref()).and_then(|i| i.iter().find(|x| x.name == c.name));
        match init {
            Some(i) if !Self::is_restartable_init(i) => *reuse = reuse.union(set),
            _ => *reuse = reuse.difference(set),
        }
    }

    fn take(&self, available: &CpuSet, n: usize) -> Result<CpuSet, assign::Error> {
        if self.options.distribute_cpus_across_numa {
            let group = if self.options.full_pcpus_only { self.topology.cpus_per_core() } else { 1 };
            return assign::take_distributed(&self.topology, available, n, group);
        }
        assign::take_packed(&self.topology, available, n)
    }

    /// Allocate: exclusive CPUs for the container, aligned to `hint` first when it has one.
    pub fn allocate(&mut self, s: &mut State, pod: &Pod, c: &Container, hint: TopologyHint) -> Result<(), AdmitError> {
        let n = Self::guaranteed_cpus(pod, c);
        if n == 0 {
            return Ok(());
        }
        let per_core = self.topology.cpus_per_core().max(1);
        if self.options.full_pcpus_only {
            if !n.is_multiple_of(per_core) {
                return Err(smt_error(n, per_core, None));
            }
            let physical = s.default_cpu_set.difference(&self.reserved_physical).len();
            if n > physical {
                return Err(smt_error(n, per_core, Some(physical)));
            }
        }
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if let Some(set) = s.get(&uid, &c.name).cloned() {
            self.update_cpus_to_reuse(pod, c, &set);
            return Ok(());
        }
        let reusable = self.cpus_to_reuse.get(&uid).cloned().unwrap_or_default();
        let allocatable = self.available(s).union(&reusable);
        let mut result = CpuSet::new();
        if let Some(mask) = hint.affinity {
            let aligned = allocatable.intersection(&self.topology.details.cpus_in_numa_nodes(&mask.bits()));
            let k = n.min(aligned.len());
            result = self.take(&aligned, k).map_err(AdmitError::unexpected)?;
        }
        let rest = self.take(&allocatable.difference(&result), n - result.len()).map_err(AdmitError::unexpected)?;
        result = result.union(&rest);
        s.default_cpu_set = s.default_cpu_set.difference(&result);
        tracing::info!(pod_uid = %uid, container = %c.name, cpus = %result, "allocated exclusive CPUs");
        s.set(&uid, &c.name, result.clone());
        self.update_cpus_to_reuse(pod, c, &result);
        Ok(())
    }

    /// RemoveContainer: its CPUs go back to the shared pool unless a sibling still holds them.
    pub fn remove_container(s: &mut State, pod: &str, container: &str) {
        let in_use = s
            .assignments
            .get(pod)
            .map(|c| c.iter().filter(|(n, _)| *n != container).fold(CpuSet::new(), |a, (_, set)| a.union(set)))
            .unwrap_or_default();
        if let Some(set) = s.get(pod, container).cloned() {
            s.delete(pod, container);
            s.default_cpu_set = s.default_cpu_set.union(&set.difference(&in_use));
        }
    }

    /// generateCPUTopologyHints: every NUMA mask with enough available (plus reusable) CPUs,
    /// preferred when as narrow as the narrowest that could hold the request at all.
    pub fn generate_hints(&self, available: &CpuSet, reusable: &CpuSet, request: usize) -> Vec<TopologyHint> {
        let d = &self.topology.details;
        let nodes: Vec<usize> = d.numa_nodes().into_iter().collect();
        let mut min = nodes.len() as u32;
        let mut hints = Vec::new();
        bitmask::iterate(&nodes, |mask: BitMask| {
            let bits = mask.bits();
            if d.cpus_in_numa_nodes(&bits).len() >= request && mask.count() < min {
                min = mask.count();
            }
            let numa_of = |cpu: usize| d.0.get(&cpu).map(|i| i.numa).unwrap_or(usize::MAX);
            if reusable.iter().any(|c| !mask.is_set(numa_of(c))) {
                return;
            }
            let matching = reusable.len() + available.iter().filter(|c| mask.is_set(numa_of(*c))).count();
            if matching >= request {
                hints.push(TopologyHint::new(mask, false));
            }
        });
        for h in &mut hints {
            h.preferred = h.affinity.is_some_and(|m| m.count() == min);
        }
        hints
    }

    /// GetTopologyHints for a container.
    pub fn container_hints(&self, s: &State, pod: &Pod, c: &Container) -> Option<Vec<TopologyHint>> {
        let requested = Self::guaranteed_cpus(pod, c);
        if requested == 0 {
            return None;
        }
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        if let Some(allocated) = s.get(uid, &c.name) {
            if allocated.len() != requested {
                return Some(Vec::new());
            }
            return Some(self.generate_hints(allocated, &CpuSet::new(), requested));
        }
        let reusable = self.cpus_to_reuse.get(uid).cloned().unwrap_or_default();
        Some(self.generate_hints(&self.available(s), &reusable, requested))
    }

    /// GetPodTopologyHints.
    pub fn pod_hints(&self, s: &State, pod: &Pod) -> Option<Vec<TopologyHint>> {
        let requested = Self::pod_guaranteed_cpus(pod);
        if requested == 0 {
            return None;
        }
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let mut assigned = CpuSet::new();
        let spec = pod.spec.as_ref()?;
        for c in spec.init_containers.iter().flatten().chain(spec.containers.iter()) {
            if let Some(allocated) = s.get(uid, &c.name) {
                if allocated.len() != Self::guaranteed_cpus(pod, c) {
                    return Some(Vec::new());
                }
                assigned = assigned.union(allocated);
            }
        }
        if assigned.len() == requested {
            return Some(self.generate_hints(&assigned, &CpuSet::new(), requested));
        }
        let reusable = self.cpus_to_reuse.get(uid).cloned().unwrap_or_default().union(&assigned);
        Some(self.generate_hints(&self.available(s), &reusable, requested))
    }
}

#[cfg(test)]
#[path = "policy_tests.rs"]
pub(crate) mod tests;
