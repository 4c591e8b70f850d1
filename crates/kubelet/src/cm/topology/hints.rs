//! The topology manager (upstream pkg/kubelet/cm/topologymanager): hint providers (the CPU and
//! memory managers; the device manager later) give NUMA affinity hints per resource, the policy
//! merges them into one hint per container (scope `container`) or per pod (scope `pod`) and
//! admits or refuses the pod (`TopologyAffinityError`); then every provider allocates with the
//! stored hint. It is the admit handler for all of them.

use super::bitmask::{self, BitMask};
use crate::admission::{Handler, Rejection};
use k8s_openapi::api::core::v1::{Container, Pod};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// A preference for a set of NUMA nodes; `affinity: None` is "any node".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TopologyHint {
    pub affinity: Option<BitMask>,
    pub preferred: bool,
}

impl TopologyHint {
    pub fn new(mask: BitMask, preferred: bool) -> Self {
        TopologyHint { affinity: Some(mask), preferred }
    }
}

/// A provider's hints by resource name. An empty map is "no preference"; `None` for a resource
/// is "any NUMA node is fine" (Go's nil list); `Some(vec![])` is "cannot be satisfied".
pub type Hints = BTreeMap<String, Option<Vec<TopologyHint>>>;

/// Why a provider could not allocate (upstream's admission.Error): `reason` is the pod's
/// rejection reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AdmitError {
    pub reason: String,
    pub message: String,
}

impl AdmitError {
    /// Any other failure: upstream's unexpectedAdmissionError.
    pub fn unexpected(err: impl std::fmt::Display) -> Self {
        AdmitError {
            reason: "UnexpectedAdmissionError".into(),
            message: format!("Allocate failed due to {err}, which is unexpected"),
        }
    }

    /// upstream's TopologyAffinityError.
    pub fn topology_affinity() -> Self {
        AdmitError {
            reason: "TopologyAffinityError".into(),
            message: "Resources cannot be allocated with Topology locality".into(),
        }
    }
}

impl From<AdmitError> for Rejection {
    fn from(e: AdmitError) -> Self {
        Rejection { reason: e.reason, message: e.message }
    }
}

/// What the topology manager asks of a resource manager (upstream's HintProvider).
pub trait HintProvider: Send + Sync {
    fn topology_hints(&self, pod: &Pod, container: &Container) -> Hints;
    fn pod_topology_hints(&self, pod: &Pod) -> Hints;
    /// Allocates the container's resources, reading its hint from the [`AffinityStore`].
    fn allocate(&self, pod: &Pod, container: &Container) -> Result<(), AdmitError>;
}

/// The merged hint per pod and container (upstream's Store), read by the providers.
#[derive(Debug, Default)]
pub struct AffinityStore(Mutex<HashMap<(String, String), TopologyHint>>);

impl AffinityStore {
    pub fn get(&self, pod_uid: &str, container: &str) -> TopologyHint {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&(pod_uid.to_string(), container.to_string())).copied().unwrap_or_default()
    }

    fn set(&self, pod_uid: &str, container: &str, hint: TopologyHint) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.insert((pod_uid.to_string(), container.to_string()), hint);
    }

    /// Forgets the hints of pods not in `keep`.
    pub fn retain_pods(&self, keep: &dyn Fn(&str) -> bool) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).retain(|(uid, _), _| keep(uid));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    None,
    BestEffort,
    Restricted,
    SingleNumaNode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Container,
    Pod,
}

/// Upstream's default (and minimum) for `max-allowable-numa-nodes`.
pub const DEFAULT_MAX_ALLOWABLE_NUMA_NODES: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub prefer_closest_numa: bool,
    pub max_allowable_numa_nodes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options { prefer_closest_numa: false, max_allowable_numa_nodes: DEFAULT_MAX_ALLOWABLE_NUMA_NODES }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown Topology Manager Policy option: {0:?}")]
    UnknownOption(String),
    #[error("Topology Manager Policy Beta-level Options not enabled, but option {0:?} provided")]
    BetaNotEnabled(String),
    #[error("bad value for option {0:?}: {1:?}")]
    BadValue(String, String),
    #[error(
        "the minimum value of \"max-allowable-numa-nodes\" should not be less than {DEFAULT_MAX_ALLOWABLE_NUMA_NODES}"
    )]
    MaxTooSmall,
    #[error("unsupported on machines with more than {0} NUMA Nodes")]
    TooManyNumaNodes(usize),
    #[error("unknown policy: {0:?}")]
    UnknownPolicy(String),
    #[error("unknown scope: {0:?}")]
    UnknownScope(String),
}

impl Options {
    /// `topologyManagerPolicyOptions` (upstream NewPolicyOptions with CheckPolicyOptionAvailable:
    /// `prefer-closest-numa-nodes` is GA, `max-allowable-numa-nodes` beta, behind
    /// TopologyManagerPolicyBetaOptions, on by default).
    pub fn parse(opts: &BTreeMap<String, String>, gate: impl Fn(&str) -> bool) -> Result<Options, ConfigError> {
        let mut o = Options::default();
        for (name, value) in opts {
            let bad = || ConfigError::BadValue(name.clone(), value.clone());
            if name == "max-allowable-numa-nodes" && !gate("TopologyManagerPolicyBetaOptions") {
                return Err(ConfigError::BetaNotEnabled(name.clone()));
            }
            match name.as_str() {
                "prefer-closest-numa-nodes" => o.prefer_closest_numa = go_bool(value).ok_or_else(bad)?,
                "max-allowable-numa-nodes" => {
                    o.max_allowable_numa_nodes = value.parse().map_err(|_| bad())?;
                    if o.max_allowable_numa_nodes < DEFAULT_MAX_ALLOWABLE_NUMA_NODES {
                        return Err(ConfigError::MaxTooSmall);
                    }
                }
                _ => return Err(ConfigError::UnknownOption(name.clone())),
            }
        }
        Ok(o)
    }
}

/// strconv.ParseBool.
fn go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

impl Policy {
    pub fn parse(name: &str) -> Result<Policy, ConfigError> {
        Ok(match name {
            "none" | "" => Policy::None,
            "best-effort" => Policy::BestEffort,
            "restricted" => Policy::Restricted,
            "single-numa-node" => Policy::SingleNumaNode,
            _ => return Err(ConfigError::UnknownPolicy(name.into())),
        })
    }
}

/// NUMA nodes and their distances (`node<N>/distance`), for merging.
#[derive(Debug, Clone, Default)]
pub struct NumaInfo {
    pub nodes: Vec<usize>,
    pub distances: BTreeMap<usize, Vec<u64>>,
}

impl NumaInfo {
    fn default_affinity(&self) -> BitMask {
        BitMask::of(&self.nodes)
    }

    /// Mean distance over every ordered pair of nodes in the mask (CalculateAverageFor).
    fn average_distance(&self, mask: BitMask) -> f64 {
        let bits = mask.bits();
        if bits.is_empty() {
            return 0.0;
        }
        let mut sum = 0.0;
        for a in &bits {
            for b in &bits {
                sum += self.distances.get(a).and_then(|d| d.get(*b)).copied().unwrap_or(0) as f64;
            }
        }
        sum / (bits.len() * bits.len()) as f64
    }
}

pub struct TopologyManager {
    pub policy: Policy,
    pub scope: Scope,
    pub options: Options,
    pub numa: NumaInfo,
    pub store: Arc<AffinityStore>,
    pub providers: Vec<Arc<dyn HintProvider>>,
}

impl TopologyManager {
    /// Refuses machines with more NUMA nodes than allowed (upstream NewManager).
    pub fn new(
        policy: Policy,
        scope: Scope,
        options: Options,
        numa: NumaInfo,
        store: Arc<AffinityStore>,
    ) -> Result<Self, ConfigError> {
        if numa.nodes.len() > options.max_allowable_numa_nodes {
            return Err(ConfigError::TooManyNumaNodes(options.max_allowable_numa_nodes));
        }
        Ok(TopologyManager { policy, scope, options, numa, store, providers: Vec::new() })
    }

    pub fn add_provider(&mut self, p: Arc<dyn HintProvider>) {
        self.providers.push(p);
    }

    /// The policy's merge of the providers' hints and whether it admits (policy*.Merge).
    pub fn merge(&self, providers: &[Hints]) -> (TopologyHint, bool) {
        let mut filtered = filter_provider_hints(providers);
        let default = self.numa.default_affinity();
        match self.policy {
            Policy::None => (TopologyHint::default(), true),
            Policy::BestEffort => (self.merge_filtered(&filtered), true),
            Policy::Restricted => {
                let hint = self.merge_filtered(&filtered);
                (hint, hint.preferred)
            }
            Policy::SingleNumaNode => {
                filtered = filter_single_numa(filtered);
                let mut hint = self.merge_filtered(&filtered);
                if hint.affinity == Some(default) {
                    hint.affinity = None;
                }
                (hint, hint.preferred)
            }
        }
    }

    /// mergeFilteredHints / HintMerger.Merge: the best of every cross-provider permutation.
    fn merge_filtered(&self, filtered: &[Vec<TopologyHint>]) -> TopologyHint {
        let default = self.numa.default_affinity();
        let best_count = filtered
            .iter()
            .map(|hints| hints.iter().filter_map(|h| h.affinity).map(|m| m.count()).min().unwrap_or(0))
            .max()
            .unwrap_or(0);
        let mut best: Option<TopologyHint> = None;
        iterate_permutations(filtered, &mut |perm| {
            let mut mask = default;
            let mut preferred = true;
            for h in perm {
                mask = mask.and(h.affinity.unwrap_or(default));
                preferred &= h.preferred;
            }
            best = self.better(best, TopologyHint::new(mask, preferred), best_count);
        });
        best.unwrap_or(TopologyHint::new(default, false))
    }

    /// compareNumaAffinityMasks: the narrower mask (IsNarrowerThan), or with
    /// prefer-closest-numa-nodes (not under single-numa-node) among equally wide ones the one
    /// with less average distance (NUMAInfo.Closest); ties keep the current hint.
    fn fitter(&self, current: TopologyHint, candidate: TopologyHint) -> TopologyHint {
        let (cur, cand) = (current.affinity.unwrap_or_default(), candidate.affinity.unwrap_or_default());
        if cur == cand {
            return current;
        }
        let best =
            if self.policy != Policy::SingleNumaNode && self.options.prefer_closest_numa && cur.count() == cand.count()
            {
                let (dc, dn) = (self.numa.average_distance(cur), self.numa.average_distance(cand));
                if dc == dn {
                    if cur.0 < cand.0 { cur } else { cand }
                } else if dc < dn {
                    cur
                } else {
                    cand
                }
            } else if cand.is_narrower_than(cur) {
                cand
            } else {
                cur
            };
        if best == cur { current } else { candidate }
    }

    /// HintMerger.compare: preferred beats non-preferred; two preferred hints, the fitter; two
    /// non-preferred hints, the one whose width comes closest to (not above) `best_count`, the
    /// largest of the providers' narrowest widths (maxOfMinAffinityCounts).
    fn better(&self, current: Option<TopologyHint>, candidate: TopologyHint, best_count: u32) -> Option<TopologyHint> {
        let cand_n = candidate.affinity.unwrap_or_default().count();
        if cand_n == 0 {
            return current;
        }
        let Some(cur) = current else { return Some(candidate) };
        let cur_n = cur.affinity.unwrap_or_default().count();
        Some(match (cur.preferred, candidate.preferred) {
            (false, true) => candidate,
            (true, false) => cur,
            (true, true) => self.fitter(cur, candidate),
            (false, false) => {
                if cur_n > best_count {
                    self.fitter(cur, candidate)
                } else if cur_n == best_count {
                    if cand_n != best_count { cur } else { self.fitter(cur, candidate) }
                } else if cand_n > best_count {
                    cur
                } else if cand_n == best_count || cand_n > cur_n {
                    candidate
                } else if cand_n < cur_n {
                    cur
                } else {
                    self.fitter(cur, candidate)
                }
            }
        })
    }

    fn container_hints(&self, pod: &Pod, c: &Container) -> (TopologyHint, bool) {
        let hints: Vec<Hints> = self.providers.iter().map(|p| p.topology_hints(pod, c)).collect();
        self.merge(&hints)
    }

    fn allocate(&self, pod: &Pod, c: &Container) -> Result<(), AdmitError> {
        self.providers.iter().try_for_each(|p| p.allocate(pod, c))
    }

    /// scope.Admit: container scope merges per container, pod scope once for the pod; the none
    /// policy only allocates.
    pub fn admit_pod(&self, pod: &Pod) -> Result<(), AdmitError> {
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let spec = pod.spec.as_ref();
        let containers: Vec<&Container> =
            spec.map(|s| s.init_containers.iter().flatten().chain(s.containers.iter()).collect()).unwrap_or_default();
        if self.policy == Policy::None {
            return containers.iter().try_for_each(|c| self.allocate(pod, c));
        }
        let pod_hint = match self.scope {
            Scope::Pod => {
                let hints: Vec<Hints> = self.providers.iter().map(|p| p.pod_topology_hints(pod)).collect();
                let (hint, admit) = self.merge(&hints);
                if !admit {
                    return Err(AdmitError::topology_affinity());
                }
                Some(hint)
            }
            Scope::Container => None,
        };
        for c in containers {
            let hint = match pod_hint {
                Some(h) => h,
                None => {
                    let (hint, admit) = self.container_hints(pod, c);
                    if !admit {
                        return Err(AdmitError::topology_affinity());
                    }
                    hint
                }
            };
            tracing::debug!(pod_uid = %uid, container = %c.name, affinity = ?hint.affinity, "topology hint");
            self.store.set(uid, &c.name, hint);
            self.allocate(pod, c)?;
        }
        Ok(())
    }
}

impl Handler for TopologyManager {
    fn admit(&self, pod: &Pod, _admitted: &[&Pod]) -> Result<(), Rejection> {
        self.admit_pod(pod).map_err(Rejection::from)
    }
}

/// filterProvidersHints: one list per provider and resource; "no preference" becomes a single
/// preferred any-node hint, "cannot satisfy" a single non-preferred one.
fn filter_provider_hints(providers: &[Hints]) -> Vec<Vec<TopologyHint>> {
    let mut out = Vec::new();
    for hints in providers {
        if hints.is_empty() {
            out.push(vec![TopologyHint { affinity: None, preferred: true }]);
            continue;
        }
        for list in hints.values() {
            match list {
                None => out.push(vec![TopologyHint { affinity: None, preferred: true }]),
                Some(l) if l.is_empty() => out.push(vec![TopologyHint { affinity: None, preferred: false }]),
                Some(l) => out.push(l.clone()),
            }
        }
    }
    out
}

/// filterSingleNumaHints: only preferred hints for any node or for exactly one node.
fn filter_single_numa(all: Vec<Vec<TopologyHint>>) -> Vec<Vec<TopologyHint>> {
    all.into_iter()
        .map(|hints| hints.into_iter().filter(|h| h.preferred && h.affinity.is_none_or(|m| m.count() == 1)).collect())
        .collect()
}

/// Every way of picking one hint from each list (iterateAllProviderTopologyHints).
fn iterate_permutations(lists: &[Vec<TopologyHint>], f: &mut dyn FnMut(&[TopologyHint])) {
    fn go(lists: &[Vec<TopologyHint>], i: usize, acc: &mut Vec<TopologyHint>, f: &mut dyn FnMut(&[TopologyHint])) {
        if i == lists.len() {
            f(acc);
            return;
        }
        for h in &lists[i] {
            acc.push(*h);
            go(lists, i + 1, acc, f);
            acc.pop();
        }
    }
    go(lists, 0, &mut Vec::new(), f);
}

/// Every NUMA mask whose CPUs (`in_mask`) can hold `request`, preferred when as narrow as the
/// narrowest that could ever hold it (the hint generation the CPU and memory managers share).
pub fn generate_hints(
    nodes: &[usize],
    request: u64,
    capacity_of: impl Fn(BitMask) -> u64,
    available_in: impl Fn(BitMask) -> u64,
) -> Vec<TopologyHint> {
    let mut min_size = nodes.len() as u32;
    let mut hints = Vec::new();
    bitmask::iterate(nodes, |mask| {
        if capacity_of(mask) >= request && mask.count() < min_size {
            min_size = mask.count();
        }
        if available_in(mask) >= request {
            hints.push(TopologyHint::new(mask, false));
        }
    });
    for h in &mut hints {
        h.preferred = h.affinity.is_some_and(|m| m.count() == min_size);
    }
    hints
}

#[cfg(test)]
#[path = "hints_tests.rs"]
mod tests;
