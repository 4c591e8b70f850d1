//! QoS class as upstream computes it (pkg/apis/core/helper/qos; the container manager places pods
//! in QoS cgroup tiers by it, eviction and status read it): only cpu and memory count,
//! zero quantities are ignored, init containers included.

use k8s_openapi::api::core::v1::{Pod, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

/// The PodLevelResources feature gate (beta and on by default in 1.34/1.35). Like upstream's
/// global feature gate it is process-wide: the composition sets it once from `featureGates`.
static POD_LEVEL_RESOURCES: AtomicBool = AtomicBool::new(true);

pub fn set_pod_level_resources(on: bool) {
    POD_LEVEL_RESOURCES.store(on, Ordering::Relaxed);
}

pub fn pod_level_resources_enabled() -> bool {
    POD_LEVEL_RESOURCES.load(Ordering::Relaxed)
}

/// `spec.resources` when the gate is on and it sets any cpu or memory request or limit
/// (upstream's IsPodLevelResourcesSet: only the supported resources count).
pub fn pod_level(pod: &Pod) -> Option<&ResourceRequirements> {
    if !pod_level_resources_enabled() {
        return None;
    }
    let r = pod.spec.as_ref()?.resources.as_ref()?;
    let set = |m: Option<&BTreeMap<String, Quantity>>| {
        m.is_some_and(|m| m.keys().any(|k| k == "cpu" || k == "memory" || k.starts_with("hugepages-")))
    };
    (set(r.requests.as_ref()) || set(r.limits.as_ref())).then_some(r)
}

/// QoS from pod-level resources (upstream's ComputePodQOS with `spec.resources` set): requests
/// (defaulted from limits, as the API server does) and limits of cpu and memory; Guaranteed
/// needs both limits and requests equal to them.
fn pod_level_qos(r: &ResourceRequirements) -> &'static str {
    let pick = |m: Option<&BTreeMap<String, Quantity>>| -> BTreeMap<&'static str, String> {
        ["cpu", "memory"]
            .into_iter()
            .filter_map(|n| m.and_then(|m| m.get(n)).filter(|q| nonzero(q)).map(|q| (n, q.0.clone())))
            .collect()
    };
    let limits = pick(r.limits.as_ref());
    let mut requests = limits.clone();
    requests.extend(pick(r.requests.as_ref()));
    if requests.is_empty() && limits.is_empty() {
        "BestEffort"
    } else if limits.len() == 2 && requests == limits {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

fn nonzero(q: &Quantity) -> bool {
    let s = q.0.trim();
    !s.is_empty() && s.trim_start_matches(['0', '.']).chars().next().is_some_and(|c| c.is_ascii_digit())
}

pub fn qos_class(pod: &Pod) -> &'static str {
    let Some(spec) = pod.spec.as_ref() else { return "BestEffort" };
    if let Some(r) = pod_level(pod) {
        return pod_level_qos(r);
    }
    let mut requests: BTreeMap<&str, ()> = BTreeMap::new();
    let mut limits: BTreeMap<&str, ()> = BTreeMap::new();
    let mut guaranteed = true;
    for c in spec.init_containers.iter().flatten().chain(spec.containers.iter()) {
        let res = c.resources.as_ref();
        let req = res.and_then(|r| r.requests.as_ref());
        let lim = res.and_then(|r| r.limits.as_ref());
        let mut c_limits = 0;
        for name in ["cpu", "memory"] {
            let r = req.and_then(|m| m.get(name)).filter(|q| nonzero(q));
            let l = lim.and_then(|m| m.get(name)).filter(|q| nonzero(q));
            if r.is_some() {
                requests.insert(name, ());
            }
            if let Some(l) = l {
                limits.insert(name, ());
                c_limits += 1;
                // Requests default to limits; an explicit different request breaks Guaranteed.
                if r.is_some_and(|r| r.0 != l.0) {
                    guaranteed = false;
                }
            }
        }
        if c_limits < 2 {
            guaranteed = false;
        }
    }
    if requests.is_empty() && limits.is_empty() {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(res: &[(&str, &str, &str)]) -> Pod {
        let containers: Vec<serde_json::Value> = res
            .iter()
            .enumerate()
            .map(|(i, (kind, cpu, mem))| {
                let mut m = serde_json::Map::new();
                if !cpu.is_empty() {
                    m.insert("cpu".into(), (*cpu).into());
                }
                if !mem.is_empty() {
                    m.insert("memory".into(), (*mem).into());
                }
                serde_json::json!({"name": format!("c{i}"), "image": "x", "resources": {*kind: m}})
            })
            .collect();
        serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}, "spec": {"containers": containers}}))
            .unwrap()
    }

    #[test]
    fn classes_follow_requests_and_limits() {
        assert_eq!(qos_class(&pod(&[("limits", "", "")])), "BestEffort");
        assert_eq!(qos_class(&pod(&[("limits", "1", "1Gi")])), "Guaranteed");
        assert_eq!(qos_class(&pod(&[("limits", "1", "")])), "Burstable");
        assert_eq!(qos_class(&pod(&[("requests", "100m", "")])), "Burstable");
        assert_eq!(qos_class(&pod(&[("limits", "1", "1Gi"), ("requests", "1", "")])), "Burstable");
        assert_eq!(qos_class(&pod(&[("requests", "0", "0")])), "BestEffort");
    }

    #[test]
    fn pod_level_resources_decide_the_class() {
        let with = |res: serde_json::Value| {
            let mut p = pod(&[("requests", "100m", "")]);
            p.spec.as_mut().unwrap().resources = Some(serde_json::from_value(res).unwrap());
            qos_class(&p)
        };
        assert_eq!(with(serde_json::json!({"limits": {"cpu": "1", "memory": "1Gi"}})), "Guaranteed");
        assert_eq!(with(serde_json::json!({"limits": {"cpu": "1"}})), "Burstable");
        assert_eq!(
            with(serde_json::json!({"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m"}})),
            "Burstable"
        );
        // Without cpu or memory at the pod level the containers decide.
        assert_eq!(with(serde_json::json!({})), "Burstable");
    }
}
