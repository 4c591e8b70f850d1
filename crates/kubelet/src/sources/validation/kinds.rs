//! What each kind of container may carry, as upstream's validateInitContainers and
//! validateContainers: `restartPolicy` only on init containers and only `Always` (a sidecar);
//! lifecycle hooks and probes on an init container only when it is a sidecar.

use super::Errors;
use k8s_openapi::api::core::v1::PodSpec;

/// Why an init container that is not a sidecar may not carry a field (upstream's Forbidden text).
const NOT_A_SIDECAR: &str = "may not be set for init containers without restartPolicy=Always";

pub(super) fn validate(errs: &mut Errors, spec: &PodSpec) {
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        let path = format!("spec.initContainers[{i}]");
        match c.restart_policy.as_deref() {
            Some("Always") => continue,
            Some(other) => errs.add(format!("{path}.restartPolicy"), other, "supported values: \"Always\""),
            None => {}
        }
        let set = [
            ("lifecycle", c.lifecycle.is_some()),
            ("livenessProbe", c.liveness_probe.is_some()),
            ("readinessProbe", c.readiness_probe.is_some()),
            ("startupProbe", c.startup_probe.is_some()),
        ];
        for (field, _) in set.into_iter().filter(|(_, is_set)| *is_set) {
            errs.add(format!("{path}.{field}"), "", NOT_A_SIDECAR);
        }
    }
    for (i, c) in spec.containers.iter().enumerate() {
        if let Some(policy) = &c.restart_policy {
            errs.add(format!("spec.containers[{i}].restartPolicy"), policy, "may not be set for non-init containers");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::validate_pod;
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "web-n1", "namespace": "default"}, "spec": spec})).unwrap()
    }

    #[test]
    fn probes_and_hooks_only_on_sidecars_and_restart_policy_only_always_on_init_containers() {
        let probe = json!({"exec": {"command": ["true"]}});
        let ok = pod(json!({
            "initContainers": [{"name": "side", "image": "b", "restartPolicy": "Always",
                                "startupProbe": probe, "readinessProbe": probe, "livenessProbe": probe}],
            "containers": [{"name": "app", "image": "b"}],
        }));
        assert!(validate_pod(&ok, "web").is_empty(), "{}", validate_pod(&ok, "web"));
        let bad = pod(json!({
            "initContainers": [
                {"name": "setup", "image": "b", "readinessProbe": probe},
                {"name": "other", "image": "b", "restartPolicy": "OnFailure"},
            ],
            "containers": [{"name": "app", "image": "b", "restartPolicy": "Always"}],
        }));
        assert_eq!(
            validate_pod(&bad, "web").to_string(),
            "spec.initContainers[0].readinessProbe: \"\": may not be set for init containers without restartPolicy=Always; \
             spec.initContainers[1].restartPolicy: \"OnFailure\": supported values: \"Always\"; \
             spec.containers[0].restartPolicy: \"Always\": may not be set for non-init containers"
        );
    }
}
