//! The AppArmor admit handler (upstream's lifecycle.appArmorAdmitHandler over
//! pkg/security/apparmor's validator): a pending pod that asks for a profile other than
//! Unconfined is refused with reason `AppArmor` when the host cannot enforce AppArmor, and a
//! Localhost profile must name one.

use super::{Handler, Rejection};
use k8s_openapi::api::core::v1::{AppArmorProfile, Container, Pod};

/// Where the kernel says whether AppArmor is enabled (runc's apparmor.IsEnabled).
const ENABLED_PATH: &str = "/sys/module/apparmor/parameters/enabled";

/// The host's AppArmor support, checked once at start as upstream's validator does (enabling or
/// disabling AppArmor needs a kubelet restart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Why the host cannot enforce profiles; None when it can.
    unavailable: Option<String>,
}

impl Host {
    /// Reads the kernel's switch: enabled when it starts with `Y`.
    pub fn detect() -> Self {
        let enabled = std::fs::read_to_string(ENABLED_PATH).is_ok_and(|s| s.starts_with('Y'));
        if enabled { Self::enabled() } else { Self::disabled() }
    }

    pub fn enabled() -> Self {
        Self { unavailable: None }
    }

    pub fn disabled() -> Self {
        Self { unavailable: Some("AppArmor is not enabled on the host".into()) }
    }

    /// Upstream's Validator.Validate: nothing to check unless a profile is required; then the
    /// host must support AppArmor and every Localhost profile must be named.
    pub fn validate(&self, pod: &Pod) -> Result<(), String> {
        if !required(pod) {
            return Ok(());
        }
        if let Some(why) = &self.unavailable {
            return Err(why.clone());
        }
        for c in containers(pod) {
            if let Some(p) = profile_of(pod, c)
                && p.type_ == "Localhost"
                && p.localhost_profile.as_deref().is_none_or(|n| n.trim().is_empty())
            {
                // Upstream prints the profile struct with %q; the name is what matters.
                let name = p.localhost_profile.unwrap_or_default();
                return Err(format!("invalid empty AppArmor profile name: {name:?}"));
            }
        }
        Ok(())
    }
}

impl Handler for Host {
    fn admit(&self, pod: &Pod, _: &[&Pod]) -> Result<(), Rejection> {
        // A pod already running or finished is not checked again.
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
        if phase != "Pending" {
            return Ok(());
        }
        self.validate(pod)
            .map_err(|why| Rejection { reason: "AppArmor".into(), message: format!("Cannot enforce AppArmor: {why}") })
    }
}

/// The deprecated per-container annotation's prefix.
pub const ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";

/// The deprecated annotation as a profile (upstream's getProfileFromPodAnnotations):
/// `runtime/default`, `unconfined`, `localhost/<name>`; anything else is ignored.
fn from_annotation(pod: &Pod, container: &str) -> Option<AppArmorProfile> {
    let value = pod.metadata.annotations.as_ref()?.get(&format!("{ANNOTATION_PREFIX}{container}"))?;
    let (type_, localhost_profile) = match value.as_str() {
        "runtime/default" => ("RuntimeDefault", None),
        "unconfined" => ("Unconfined", None),
        v => ("Localhost", Some(v.strip_prefix("localhost/")?.to_string())),
    };
    Some(AppArmorProfile { type_: type_.into(), localhost_profile })
}

/// Upstream's apparmor.GetProfile: the container's field, else the deprecated annotation (static
/// pods may not have had it synced to the field), else the pod's field.
pub fn profile_of(pod: &Pod, c: &Container) -> Option<AppArmorProfile> {
    c.security_context
        .as_ref()
        .and_then(|s| s.app_armor_profile.clone())
        .or_else(|| from_annotation(pod, &c.name))
        .or_else(|| pod.spec.as_ref()?.security_context.as_ref()?.app_armor_profile.clone())
}

/// Init and regular containers (ephemeral ones carry no profile of their own in the kubelet's
/// CRI config).
fn containers(pod: &Pod) -> impl Iterator<Item = &Container> {
    let spec = pod.spec.as_ref();
    let init = spec.and_then(|s| s.init_containers.as_deref()).unwrap_or_default();
    let regular = spec.map(|s| &s.containers[..]).unwrap_or_default();
    init.iter().chain(regular)
}

/// Upstream's isRequired: a pod-level or container-level profile other than Unconfined, or a
/// deprecated annotation other than `unconfined`. (Upstream looks at the first such annotation in
/// Go's random map order; any one here, so the answer does not vary.)
fn required(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    let confined = |p: Option<&AppArmorProfile>| p.is_some_and(|p| p.type_ != "Unconfined");
    if confined(spec.and_then(|s| s.security_context.as_ref()).and_then(|s| s.app_armor_profile.as_ref())) {
        return true;
    }
    let ephemeral = spec.and_then(|s| s.ephemeral_containers.as_deref()).unwrap_or_default();
    if containers(pod)
        .map(|c| c.security_context.as_ref())
        .chain(ephemeral.iter().map(|c| c.security_context.as_ref()))
        .any(|sc| confined(sc.and_then(|s| s.app_armor_profile.as_ref())))
    {
        return true;
    }
    pod.metadata.annotations.iter().flatten().any(|(k, v)| k.starts_with(ANNOTATION_PREFIX) && v != "unconfined")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "annotations": json["annotations"]},
            "spec": {"securityContext": json["pod"], "containers": [{"name": "c", "image": "i", "securityContext": json["container"]}]},
            "status": json["status"]
        }))
        .unwrap()
    }

    #[test]
    fn a_profile_on_a_host_without_apparmor_is_refused_with_upstreams_reason() {
        let host = Host::disabled();
        for asks in [
            serde_json::json!({"pod": {"appArmorProfile": {"type": "RuntimeDefault"}}}),
            serde_json::json!({"container": {"appArmorProfile": {"type": "Localhost", "localhostProfile": "x"}}}),
            serde_json::json!({"annotations": {"container.apparmor.security.beta.kubernetes.io/c": "runtime/default"}}),
        ] {
            let r = host.admit(&pod(asks.clone()), &[]).unwrap_err();
            assert_eq!(r.reason, "AppArmor", "{asks}");
            assert_eq!(r.message, "Cannot enforce AppArmor: AppArmor is not enabled on the host");
        }
        // Unconfined (field or annotation) and nothing at all need no AppArmor.
        for fine in [
            serde_json::json!({}),
            serde_json::json!({"pod": {"appArmorProfile": {"type": "Unconfined"}}}),
            serde_json::json!({"annotations": {"container.apparmor.security.beta.kubernetes.io/c": "unconfined"}}),
        ] {
            assert!(host.admit(&pod(fine.clone()), &[]).is_ok(), "{fine}");
        }
        // A running pod is not checked again.
        let running = pod(
            serde_json::json!({"pod": {"appArmorProfile": {"type": "RuntimeDefault"}}, "status": {"phase": "Running"}}),
        );
        assert!(host.admit(&running, &[]).is_ok());
    }

    #[test]
    fn with_apparmor_an_empty_localhost_profile_is_refused() {
        let host = Host::enabled();
        assert!(
            host.admit(&pod(serde_json::json!({"pod": {"appArmorProfile": {"type": "RuntimeDefault"}}})), &[]).is_ok()
        );
        let empty =
            pod(serde_json::json!({"container": {"appArmorProfile": {"type": "Localhost", "localhostProfile": " "}}}));
        assert!(
            host.admit(&empty, &[])
                .unwrap_err()
                .message
                .starts_with("Cannot enforce AppArmor: invalid empty AppArmor profile name")
        );
    }
}
