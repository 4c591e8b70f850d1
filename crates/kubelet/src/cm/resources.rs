//! Resource arithmetic as upstream does it (pkg/kubelet/cm/helpers_linux.go,
//! pkg/api/v1/resource, pkg/kubelet/qos/policy.go, kuberuntime's calculateLinuxResources): pod
//! requests and limits, cpu shares and CFS quota, the pod cgroup's config and oom_score_adj.

use super::qos::qos_class;
use crate::meta::is_sidecar;
use k8s_openapi::api::core::v1::{Container, Pod, ResourceRequirements};
use kubelet_config::quantity::Quantity;
use std::collections::BTreeMap;

pub const MIN_SHARES: u64 = 2;
pub const MAX_SHARES: u64 = 262_144;
pub const SHARES_PER_CPU: u64 = 1024;
pub const MIN_QUOTA_PERIOD: i64 = 1000;
/// The CFS period in microseconds when nothing else is configured (100 ms).
pub const DEFAULT_CFS_PERIOD_US: u64 = 100_000;

pub const GUARANTEED_OOM_SCORE_ADJ: i64 = -997;
pub const BESTEFFORT_OOM_SCORE_ADJ: i64 = 1000;

/// Resource name → value in milli-units (millicores for cpu, milli-bytes for memory).
pub type ResourceList = BTreeMap<String, i128>;

/// A Kubernetes quantity in milli-units; unparsable text counts as 0 (validation reports it).
pub fn milli(q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity) -> i128 {
    Quantity::parse(q.0.trim()).map(|q| q.milli_value()).unwrap_or(0)
}

/// Whole units rounded up, like Go's `Quantity.Value()`.
pub fn units(milli: i128) -> i64 {
    let v = if milli >= 0 { (milli + 999) / 1000 } else { milli / 1000 };
    v.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

fn list(m: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>) -> ResourceList {
    m.into_iter().flatten().map(|(k, v)| (k.clone(), milli(v))).collect()
}

/// A container's limits.
pub fn container_limits(c: &Container) -> ResourceList {
    list(c.resources.as_ref().and_then(|r| r.limits.as_ref()))
}

/// A container's requests, defaulted from its limits as the API server does.
pub fn container_requests(c: &Container) -> ResourceList {
    requests_of(c.resources.as_ref())
}

fn requests_of(r: Option<&ResourceRequirements>) -> ResourceList {
    let mut out = list(r.and_then(|r| r.limits.as_ref()));
    out.extend(list(r.and_then(|r| r.requests.as_ref())));
    out
}

fn add(into: &mut ResourceList, from: &ResourceList) {
    for (k, v) in from {
        *into.entry(k.clone()).or_default() += v;
    }
}

fn max_into(into: &mut ResourceList, from: &ResourceList) {
    for (k, v) in from {
        let e = into.entry(k.clone()).or_default();
        *e = (*e).max(*v);
    }
}

/// Upstream's aggregation: regular containers (and sidecars) summed, the max with each init
/// container (plus the sidecars started before it).
fn aggregate(pod: &Pod, per: impl Fn(&Container) -> ResourceList) -> ResourceList {
    let Some(spec) = pod.spec.as_ref() else { return ResourceList::new() };
    let mut reqs = ResourceList::new();
    for c in &spec.containers {
        add(&mut reqs, &per(c));
    }
    let mut sidecars = ResourceList::new();
    let mut init_max = ResourceList::new();
    for c in spec.init_containers.iter().flatten() {
        let mut r = per(c);
        if is_sidecar(c) {
            add(&mut reqs, &r);
            add(&mut sidecars, &r);
            r = sidecars.clone();
        } else {
            add(&mut r, &sidecars);
        }
        max_into(&mut init_max, &r);
    }
    max_into(&mut reqs, &init_max);
    reqs
}

fn overhead(pod: &Pod) -> ResourceList {
    list(pod.spec.as_ref().and_then(|s| s.overhead.as_ref()))
}

/// Resources `spec.resources` may set (upstream's IsSupportedPodLevelResource).
fn pod_level_supported(name: &str) -> bool {
    name == "cpu" || name == "memory" || name.starts_with("hugepages-")
}

/// Pod-level resources override the containers' aggregate for the supported resources
/// (upstream's PodRequests / PodLimits with PodLevelResources); requests default to limits, as
/// the API server defaults them.
fn pod_level_override(into: &mut ResourceList, pod: &Pod, requests: bool) {
    let Some(r) = super::qos::pod_level(pod) else { return };
    let mut set = list(r.limits.as_ref());
    if requests {
        set.extend(list(r.requests.as_ref()));
    }
    for (k, v) in set.into_iter().filter(|(k, _)| pod_level_supported(k)) {
        into.insert(k, v);
    }
}

/// The pod's effective requests: containers, init containers (or the pod-level requests) and
/// `spec.overhead`.
pub fn pod_requests(pod: &Pod) -> ResourceList {
    let mut r = aggregate(pod, container_requests);
    pod_level_override(&mut r, pod, true);
    add(&mut r, &overhead(pod));
    r
}

/// The pod's effective limits (pod-level limits over the containers'); overhead is added to
/// the limits that exist.
pub fn pod_limits(pod: &Pod) -> ResourceList {
    let mut l = aggregate(pod, container_limits);
    pod_level_override(&mut l, pod, false);
    for (k, v) in overhead(pod) {
        if let Some(x) = l.get_mut(&k) {
            *x += v;
        }
    }
    l
}

pub fn milli_cpu_to_shares(milli_cpu: i64) -> u64 {
    if milli_cpu <= 0 {
        return MIN_SHARES;
    }
    let shares = (milli_cpu as u64).saturating_mul(SHARES_PER_CPU) / 1000;
    shares.clamp(MIN_SHARES, MAX_SHARES)
}

/// CFS quota for a cpu limit: 0 for none, else milli×period/1000 with a 1000 µs floor.
pub fn milli_cpu_to_quota(milli_cpu: i64, period_us: i64) -> i64 {
    if milli_cpu <= 0 {
        return 0;
    }
    (milli_cpu.saturating_mul(period_us) / 1000).max(MIN_QUOTA_PERIOD)
}

/// cgroup v2 `cpu.weight` for v1 shares (the runc/kubelet conversion).
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + ((shares.saturating_sub(2)) * 9999) / 262_142
}

/// How the node runs CFS and how much memory it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub cpu_cfs_quota: bool,
    pub cpu_cfs_period_us: u64,
    pub pod_pids_limit: i64,
    pub memory_capacity: i64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { cpu_cfs_quota: true, cpu_cfs_period_us: DEFAULT_CFS_PERIOD_US, pod_pids_limit: -1, memory_capacity: 0 }
    }
}

/// What a cgroup is set to; `None` leaves the kernel's value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupConfig {
    pub cpu_shares: Option<u64>,
    /// −1 means unlimited.
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    /// Bytes.
    pub memory: Option<i64>,
    pub pids: Option<i64>,
    /// Page size in bytes → limit in bytes.
    pub hugepages: BTreeMap<u64, i64>,
}

/// Page size in bytes of a `hugepages-<size>` resource name.
pub fn hugepage_size(resource: &str) -> Option<u64> {
    let size = resource.strip_prefix("hugepages-")?;
    let q = Quantity::parse(size).ok()?;
    u64::try_from(q.value()).ok().filter(|s| *s > 0)
}

/// `2MB`, `1GB`: the page-size spelling of the hugetlb cgroup files and the CRI.
pub fn hugepage_size_name(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let (mut v, mut i) = (bytes, 0);
    while v >= 1024 && v.is_multiple_of(1024) && i < UNITS.len() - 1 {
        v /= 1024;
        i += 1;
    }
    format!("{v}{}", UNITS[i])
}

fn hugepages(l: &ResourceList) -> BTreeMap<u64, i64> {
    l.iter().filter_map(|(k, v)| Some((hugepage_size(k)?, units(*v)))).collect()
}

/// The pod cgroup's config (upstream ResourceConfigForPod, plus podPidsLimit).
pub fn pod_cgroup_config(pod: &Pod, policy: &Policy) -> CgroupConfig {
    let reqs = pod_requests(pod);
    let limits = pod_limits(pod);
    let spec = pod.spec.as_ref();
    let all = || spec.into_iter().flat_map(|s| s.init_containers.iter().flatten().chain(s.containers.iter()));
    // With pod-level resources a pod-level limit declares the resource (ResourceConfigForPod).
    let pod_level_limits = super::qos::pod_level(pod).map(|r| list(r.limits.as_ref())).unwrap_or_default();
    let declared = |name: &str| {
        pod_level_limits.get(name).is_some_and(|v| *v != 0)
            || all().all(|c| container_limits(c).get(name).is_some_and(|v| *v != 0))
    };
    let (cpu_limits_declared, memory_limits_declared) = (declared("cpu"), declared("memory"));
    let cpu_request = reqs.get("cpu").copied().unwrap_or(0);
    let cpu_limit = limits.get("cpu").copied().unwrap_or(0);
    let memory_limit = units(limits.get("memory").copied().unwrap_or(0));
    let shares = milli_cpu_to_shares(cpu_request as i64);
    let period = policy.cpu_cfs_period_us;
    let quota = if policy.cpu_cfs_quota { milli_cpu_to_quota(cpu_limit as i64, period as i64) } else { -1 };
    let mut cfg = CgroupConfig::default();
    match qos_class(pod) {
        "Guaranteed" => {
            cfg.cpu_shares = Some(shares);
            cfg.cpu_quota = Some(quota);
            cfg.cpu_period = Some(period);
            cfg.memory = Some(memory_limit);
        }
        "Burstable" => {
            cfg.cpu_shares = Some(shares);
            if cpu_limits_declared {
                cfg.cpu_quota = Some(quota);
                cfg.cpu_period = Some(period);
            }
            if memory_limits_declared {
                cfg.memory = Some(memory_limit);
            }
        }
        _ => cfg.cpu_shares = Some(MIN_SHARES),
    }
    cfg.hugepages = hugepages(&limits);
    if policy.pod_pids_limit > 0 {
        cfg.pids = Some(policy.pod_pids_limit);
    }
    cfg
}

fn is_node_critical(pod: &Pod) -> bool {
    pod.spec.as_ref().and_then(|s| s.priority_class_name.as_deref()) == Some("system-node-critical")
}

/// oom_score_adj of a container (upstream GetContainerOOMScoreAdjust).
pub fn oom_score_adj(pod: &Pod, c: &Container, memory_capacity: i64) -> i64 {
    if is_node_critical(pod) {
        return GUARANTEED_OOM_SCORE_ADJ;
    }
    match qos_class(pod) {
        "Guaranteed" => return GUARANTEED_OOM_SCORE_ADJ,
        "BestEffort" => return BESTEFFORT_OOM_SCORE_ADJ,
        _ => {}
    }
    let request = units(container_requests(c).get("memory").copied().unwrap_or(0)).max(0) as i128;
    let capacity = i128::from(memory_capacity.max(1));
    let adj = (1000 - (1000 * request) / capacity) as i64;
    if adj < 1000 + GUARANTEED_OOM_SCORE_ADJ {
        1000 + GUARANTEED_OOM_SCORE_ADJ
    } else if adj == BESTEFFORT_OOM_SCORE_ADJ {
        adj - 1
    } else {
        adj
    }
}

/// The container's CRI resources (kuberuntime's generateLinuxContainerResources).
pub fn container_resources(pod: &Pod, c: &Container, policy: &Policy) -> crate::cri::api::LinuxContainerResources {
    let res = c.resources.as_ref();
    let limits = container_limits(c);
    let explicit_cpu_request = res.and_then(|r| r.requests.as_ref()).and_then(|m| m.get("cpu")).map(milli);
    let cpu_limit = limits.get("cpu").copied();
    // A missing request defaults to the limit.
    let shares = match (explicit_cpu_request, cpu_limit) {
        (None, Some(l)) => milli_cpu_to_shares(l as i64),
        (r, _) => milli_cpu_to_shares(r.unwrap_or(0) as i64),
    };
    let mut out = crate::cri::api::LinuxContainerResources {
        cpu_shares: shares as i64,
        memory_limit_in_bytes: units(limits.get("memory").copied().unwrap_or(0)).max(0),
        oom_score_adj: oom_score_adj(pod, c, policy.memory_capacity),
        ..Default::default()
    };
    if policy.cpu_cfs_quota {
        let period = policy.cpu_cfs_period_us as i64;
        out.cpu_period = period;
        out.cpu_quota = milli_cpu_to_quota(cpu_limit.unwrap_or(0) as i64, period);
    }
    out.hugepage_limits = hugepages(&limits)
        .into_iter()
        .map(|(size, limit)| crate::cri::api::HugepageLimit {
            page_size: hugepage_size_name(size),
            limit: limit.max(0) as u64,
        })
        .collect();
    out
}

#[cfg(test)]
#[path = "resources_tests.rs"]
mod tests;
