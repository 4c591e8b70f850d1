use super::*;
use crate::eviction::thresholds::Condition;

fn pod(yaml: serde_json::Value) -> Pod {
    serde_json::from_value(yaml).unwrap()
}

fn best_effort() -> Pod {
    pod(serde_json::json!({
        "metadata": {"name": "be", "uid": "be", "annotations": {"kubernetes.io/config.source": "api"}},
        "spec": {"containers": [{"name": "app", "image": "x"}]}
    }))
}

fn burstable() -> Pod {
    pod(serde_json::json!({
        "metadata": {"name": "bu", "uid": "bu", "annotations": {"kubernetes.io/config.source": "api"}},
        "spec": {"containers": [{"name": "app", "image": "x", "resources": {"requests": {"memory": "10Mi"}}}]}
    }))
}

#[test]
fn memory_pressure_rejects_best_effort_pods_only() {
    let h = Handle::new();
    assert!(h.admit(&best_effort(), &[]).is_ok(), "no pressure, no rejection");
    h.set(vec![Condition::MemoryPressure]);
    assert_eq!(
        h.admit(&best_effort(), &[]),
        Err(Rejection { reason: "Evicted".into(), message: "The node had condition: [MemoryPressure]. ".into() })
    );
    assert!(h.admit(&burstable(), &[]).is_ok());
    // A BestEffort pod tolerating the memory-pressure taint is admitted.
    let mut tolerant = best_effort();
    tolerant.spec.as_mut().unwrap().tolerations = Some(vec![k8s_openapi::api::core::v1::Toleration {
        key: Some("node.kubernetes.io/memory-pressure".into()),
        operator: Some("Exists".into()),
        effect: Some("NoSchedule".into()),
        ..Default::default()
    }]);
    assert!(h.admit(&tolerant, &[]).is_ok());
}

#[test]
fn disk_pressure_rejects_every_pod_but_critical_ones() {
    let h = Handle::new();
    h.set(vec![Condition::MemoryPressure, Condition::DiskPressure]);
    assert_eq!(
        h.admit(&burstable(), &[]).unwrap_err().message,
        "The node had condition: [MemoryPressure DiskPressure]. "
    );
    let mut static_pod = burstable();
    static_pod.metadata.annotations = Some([("kubernetes.io/config.source".to_string(), "file".to_string())].into());
    assert!(h.admit(&static_pod, &[]).is_ok());
    assert!(h.has(Condition::DiskPressure));
}
