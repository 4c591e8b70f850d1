//! The few feature gates that change how the configuration is defaulted or validated, with
//! their upstream defaults (Kubernetes 1.33/1.34). Other gate names are carried through
//! untouched; this crate does not reject unknown gates.

use std::collections::BTreeMap;

/// (gate, default) for the gates that defaulting and validation consult.
pub const KNOWN_GATES: &[(&str, bool)] = &[
    ("CPUManagerPolicyAlphaOptions", false),
    ("CPUManagerPolicyBetaOptions", true),
    ("CustomCPUCFSQuotaPeriod", false),
    ("GracefulNodeShutdown", true),
    ("GracefulNodeShutdownBasedOnPodPriority", true),
    ("ImageMaximumGCAge", true),
    ("InPlacePodLevelResourcesVerticalScaling", false),
    ("InPlacePodVerticalScaling", true),
    ("InPlacePodVerticalScalingAllocatedStatus", false),
    ("KubeletCrashLoopBackOffMax", false),
    ("KubeletEnsureSecretPulledImages", false),
    // Beta (on) since 1.34: the pod resources API's Get.
    ("KubeletPodResourcesGet", true),
    ("KubeletTracing", true),
    ("MemoryQoS", false),
    ("NodeLogQuery", false),
    ("NodeSwap", true),
    ("PodLevelResources", true),
    ("RotateKubeletServerCertificate", true),
    ("TopologyManagerPolicyAlphaOptions", false),
    ("TopologyManagerPolicyBetaOptions", true),
];

/// Whether `gate` is on, given the configured gates: an explicit setting wins, otherwise the
/// upstream default, otherwise off.
pub fn enabled(gates: &BTreeMap<String, bool>, gate: &str) -> bool {
    gates
        .get(gate)
        .copied()
        .unwrap_or_else(|| KNOWN_GATES.iter().find(|(name, _)| *name == gate).is_some_and(|(_, on)| *on))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_setting_beats_the_default() {
        let mut gates = BTreeMap::new();
        assert!(enabled(&gates, "NodeSwap"));
        assert!(!enabled(&gates, "MemoryQoS"));
        assert!(!enabled(&gates, "SomethingUnknown"));
        gates.insert("NodeSwap".to_string(), false);
        gates.insert("MemoryQoS".to_string(), true);
        assert!(!enabled(&gates, "NodeSwap"));
        assert!(enabled(&gates, "MemoryQoS"));
    }
}
