//! API defaulting for pods that do not come through an API server (static pods), as upstream's
//! SetDefaults_Pod / SetDefaults_Container do for the fields the kubelet reads.

use k8s_openapi::api::core::v1::{Container, Pod};

/// The pull policy upstream defaults to: `Always` for `:latest` or no tag, else `IfNotPresent`.
pub fn default_pull_policy(image: &str) -> &'static str {
    let (name, tag) = crate::images::split_reference(image);
    let _ = name;
    match tag {
        crate::images::Tag::Digest(_) => "IfNotPresent",
        crate::images::Tag::Tag(t) if t != "latest" => "IfNotPresent",
        _ => "Always",
    }
}

fn container(c: &mut Container) {
    if c.image_pull_policy.is_none()
        && let Some(img) = c.image.as_deref()
    {
        c.image_pull_policy = Some(default_pull_policy(img).into());
    }
    c.termination_message_path.get_or_insert_with(|| "/dev/termination-log".into());
    c.termination_message_policy.get_or_insert_with(|| "File".into());
    for p in c.ports.iter_mut().flatten() {
        p.protocol.get_or_insert_with(|| "TCP".into());
    }
}

pub fn apply(pod: &mut Pod) {
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.restart_policy.get_or_insert_with(|| "Always".into());
    spec.dns_policy.get_or_insert_with(|| "ClusterFirst".into());
    spec.termination_grace_period_seconds.get_or_insert(30);
    spec.scheduler_name.get_or_insert_with(|| "default-scheduler".into());
    spec.enable_service_links.get_or_insert(true);
    for c in spec.init_containers.iter_mut().flatten().chain(spec.containers.iter_mut()) {
        container(c);
    }
    // SetDefaults_EphemeralContainer: the container defaults on the common part.
    for ec in spec.ephemeral_containers.iter_mut().flatten() {
        if ec.image_pull_policy.is_none()
            && let Some(img) = ec.image.as_deref()
        {
            ec.image_pull_policy = Some(default_pull_policy(img).into());
        }
        ec.termination_message_path.get_or_insert_with(|| "/dev/termination-log".into());
        ec.termination_message_policy.get_or_insert_with(|| "File".into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_policy_defaults_follow_the_tag() {
        assert_eq!(default_pull_policy("busybox"), "Always");
        assert_eq!(default_pull_policy("busybox:latest"), "Always");
        assert_eq!(default_pull_policy("busybox:1.36"), "IfNotPresent");
        assert_eq!(default_pull_policy("127.0.0.1:5000/busybox"), "Always");
        assert_eq!(default_pull_policy("127.0.0.1:5000/busybox:1.36"), "IfNotPresent");
        assert_eq!(default_pull_policy("busybox@sha256:abcd"), "IfNotPresent");
    }
}
