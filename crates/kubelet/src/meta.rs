//! Small helpers over Kubernetes objects that every room uses: a pod's `namespace/name` for logs
//! and messages, `meta/v1` `Time` from a `SystemTime`, and whether an init container is a sidecar.

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use std::time::SystemTime;

/// `namespace/name`, as the kubelet names a pod in logs (upstream `klog.KObj`).
pub fn pod_name(pod: &Pod) -> String {
    format!("{}/{}", pod.metadata.namespace.as_deref().unwrap_or(""), pod.metadata.name.as_deref().unwrap_or(""))
}

/// `t` as an API timestamp (times before the epoch become the epoch).
pub fn time(t: SystemTime) -> Time {
    let nanos = t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i128).unwrap_or(0);
    Time(Timestamp::from_nanosecond(nanos).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// A sidecar: an init container with `restartPolicy: Always` (upstream's
/// IsRestartableInitContainer). It keeps running beside the app containers.
pub fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// Whether the pod has a sidecar (upstream's HasRestartableInitContainer).
pub fn has_sidecar(pod: &Pod) -> bool {
    pod.spec.as_ref().and_then(|s| s.init_containers.as_ref()).is_some_and(|i| i.iter().any(is_sidecar))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn pod_name_is_namespace_slash_name() {
        let mut pod = Pod::default();
        pod.metadata.name = Some("web".into());
        pod.metadata.namespace = Some("default".into());
        assert_eq!(pod_name(&pod), "default/web");
        assert_eq!(pod_name(&Pod::default()), "/");
    }

    #[test]
    fn time_keeps_nanoseconds_and_floors_at_the_epoch() {
        let t = time(UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789));
        assert_eq!(t.0.as_nanosecond(), 1_700_000_000_123_456_789);
        assert_eq!(time(UNIX_EPOCH - Duration::from_secs(5)).0, Timestamp::UNIX_EPOCH);
    }
}
