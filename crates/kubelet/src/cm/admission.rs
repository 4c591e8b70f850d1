//! Resource-fit admission (upstream lifecycle predicate + scheduler noderesources Fits): a pod is
//! admitted when one more pod fits under maxPods and its cpu and memory requests fit what the
//! running pods leave of allocatable. Pure; the caller rejects the pod (phase Failed, the
//! reason and message below: `OutOfcpu`, `OutOfmemory` or `OutOfpods`) without touching the
//! running ones.

use super::Allocatable;
use super::resources::{pod_requests, units};
use crate::admission::{Handler, Rejection};
use k8s_openapi::api::core::v1::Pod;

/// The resource-fit admit handler: `allocatable` (unbounded without a container manager) and
/// `maxPods`.
#[derive(Debug, Clone, Copy)]
pub struct ResourceFit {
    pub allocatable: Allocatable,
    pub max_pods: i64,
}

impl ResourceFit {
    /// No container manager: only maxPods binds.
    pub fn unbounded(max_pods: i64) -> Self {
        let allocatable = Allocatable { cpu_milli: i64::MAX / 4, memory: i64::MAX / 4, pids: i64::MAX / 4 };
        Self { allocatable, max_pods }
    }
}

impl Handler for ResourceFit {
    fn admit(&self, pod: &Pod, admitted: &[&Pod]) -> Result<(), Rejection> {
        admit(pod, admitted, &self.allocatable, self.max_pods)
    }
}

fn insufficient(resource: &str, requested: i64, used: i64, capacity: i64) -> Rejection {
    Rejection {
        reason: format!("OutOf{resource}"),
        message: format!(
            "Node didn't have enough resource: {resource}, requested: {requested}, used: {used}, capacity: {capacity}"
        ),
    }
}

/// cpu in millicores and memory in bytes that `pod` requests (containers, init containers,
/// overhead).
pub fn requested(pod: &Pod) -> (i64, i64) {
    let r = pod_requests(pod);
    let cpu = r.get("cpu").copied().unwrap_or(0).clamp(0, i64::MAX as i128) as i64;
    (cpu, units(r.get("memory").copied().unwrap_or(0)).max(0))
}

/// Admits `pod` onto a node already running `running` (the admitted, non-terminal pods, not
/// including `pod`). The first failing check wins, in upstream's order: pods, cpu, memory.
pub fn admit(pod: &Pod, running: &[&Pod], allocatable: &Allocatable, max_pods: i64) -> Result<(), Rejection> {
    let used_pods = running.len() as i64;
    if used_pods + 1 > max_pods {
        return Err(insufficient("pods", 1, used_pods, max_pods));
    }
    let (cpu, memory) = requested(pod);
    if cpu == 0 && memory == 0 {
        return Ok(());
    }
    let (used_cpu, used_memory) = running
        .iter()
        .map(|p| requested(p))
        .fold((0i64, 0i64), |(a, b), (c, m)| (a.saturating_add(c), b.saturating_add(m)));
    if cpu > 0 && cpu > allocatable.cpu_milli - used_cpu {
        return Err(insufficient("cpu", cpu, used_cpu, allocatable.cpu_milli));
    }
    if memory > 0 && memory > allocatable.memory - used_memory {
        return Err(insufficient("memory", memory, used_memory, allocatable.memory));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, cpu: &str, memory: &str) -> Pod {
        let mut req = serde_json::Map::new();
        if !cpu.is_empty() {
            req.insert("cpu".into(), cpu.into());
        }
        if !memory.is_empty() {
            req.insert("memory".into(), memory.into());
        }
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "uid": name},
            "spec": {"containers": [{"name": "c", "image": "x", "resources": {"requests": req}}]}
        }))
        .unwrap()
    }

    fn refs(pods: &[Pod]) -> Vec<&Pod> {
        pods.iter().collect()
    }

    const ALLOC: Allocatable = Allocatable { cpu_milli: 2000, memory: 1 << 30, pids: 1000 };

    #[test]
    fn a_pod_that_fits_is_admitted() {
        let running = vec![pod("a", "500m", "256Mi")];
        assert_eq!(admit(&pod("b", "1", "512Mi"), &refs(&running), &ALLOC, 110), Ok(()));
        assert_eq!(admit(&pod("be", "", ""), &refs(&running), &ALLOC, 110), Ok(()));
        // Exactly the rest fits.
        assert_eq!(admit(&pod("c", "1500m", "768Mi"), &refs(&running), &ALLOC, 110), Ok(()));
    }

    #[test]
    fn memory_that_does_not_fit_is_out_of_memory() {
        let running = vec![pod("a", "100m", "768Mi")];
        let r = admit(&pod("big", "100m", "512Mi"), &refs(&running), &ALLOC, 110).unwrap_err();
        assert_eq!(r.reason, "OutOfmemory");
        assert_eq!(
            r.message,
            format!(
                "Node didn't have enough resource: memory, requested: {}, used: {}, capacity: {}",
                512 << 20,
                768 << 20,
                1 << 30
            )
        );
    }

    #[test]
    fn cpu_is_checked_before_memory_and_in_millicores() {
        let running = vec![pod("a", "1500m", "")];
        let r = admit(&pod("big", "600m", "2Gi"), &refs(&running), &ALLOC, 110).unwrap_err();
        assert_eq!(r.reason, "OutOfcpu");
        assert_eq!(r.message, "Node didn't have enough resource: cpu, requested: 600, used: 1500, capacity: 2000");
    }

    #[test]
    fn max_pods_is_out_of_pods_even_for_best_effort() {
        let running = vec![pod("a", "", ""), pod("b", "", "")];
        let r = admit(&pod("c", "", ""), &refs(&running), &ALLOC, 2).unwrap_err();
        assert_eq!(r.reason, "OutOfpods");
        assert_eq!(r.message, "Node didn't have enough resource: pods, requested: 1, used: 2, capacity: 2");
    }

    #[test]
    fn limits_default_requests_and_overhead_counts() {
        let p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "g", "uid": "g"},
            "spec": {
                "overhead": {"memory": "100Mi"},
                "containers": [{"name": "c", "image": "x", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]
            }
        }))
        .unwrap();
        assert_eq!(requested(&p), (1000, (1 << 30) + (100 << 20)));
        assert_eq!(admit(&p, &[], &ALLOC, 110).unwrap_err().reason, "OutOfmemory");
    }
}
