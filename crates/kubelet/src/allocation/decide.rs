//! Whether a resize can be allocated now (upstream's podResizesAdmitHandler, the resize branch of
//! canAdmitPod and the node-resources predicate): pure. Infeasible when it can never fit — a
//! static pod, a pod-level resize with InPlacePodLevelResourcesVerticalScaling off, or more cpu
//! or memory than the node's allocatable (`Node didn't have enough capacity: memory, requested:
//! N, capacity: M`, memory checked first); Deferred when it does not fit next to the other pods
//! now (the predicate's `Node didn't have enough resource: …` message).

use crate::cm::Allocatable;
use crate::cm::admission::{admit, requested};
use k8s_openapi::api::core::v1::Pod;

pub const INFEASIBLE: &str = "Infeasible";
pub const DEFERRED: &str = "Deferred";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allocate,
    Pending { reason: String, message: String },
}

fn pending(reason: &str, message: impl Into<String>) -> Decision {
    Decision::Pending { reason: reason.into(), message: message.into() }
}

fn is_static(pod: &Pod) -> bool {
    let source = pod.metadata.annotations.as_ref().and_then(|a| a.get("kubernetes.io/config.source"));
    source.is_some_and(|s| s != "api")
}

/// `pod` is the desired pod; `others` the other admitted pods with their allocated resources.
pub fn decide(pod: &Pod, pod_level_refused: bool, others: &[&Pod], allocatable: &Allocatable) -> Decision {
    // IsInPlacePodVerticalScalingAllowed.
    if is_static(pod) {
        return pending(INFEASIBLE, "In-place resize of static pods is not supported");
    }
    // IsInPlacePodLevelResourcesVerticalScalingAllowed.
    if pod_level_refused {
        return pending(INFEASIBLE, "InPlacePodLevelResourcesVerticalScaling is disabled");
    }
    let (cpu, memory) = requested(pod);
    if memory > allocatable.memory {
        let msg = format!("memory, requested: {memory}, capacity: {}", allocatable.memory);
        return pending(INFEASIBLE, format!("Node didn't have enough capacity: {msg}"));
    }
    if cpu > allocatable.cpu_milli {
        let msg = format!("cpu, requested: {cpu}, capacity: {}", allocatable.cpu_milli);
        return pending(INFEASIBLE, format!("Node didn't have enough capacity: {msg}"));
    }
    match admit(pod, others, allocatable, i64::MAX) {
        Ok(()) => Decision::Allocate,
        Err(r) => pending(DEFERRED, r.message),
    }
}
