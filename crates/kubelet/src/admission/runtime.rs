//! What the runtime and the kubelet's mode can run: pods asking for more are refused at admission
//! rather than run weaker than their spec says.
//!
//! - `spec.runtimeClassName` on a kubelet without an API server: the RuntimeClass cannot be looked
//!   up (upstream runs such a pod on the default handler, silently; here it is refused).
//! - `spec.hostUsers: false` when the runtime cannot give the pod a user namespace: upstream
//!   fails the sandbox (GetOrCreateUserNamespaceMappings: "runtime handlers are not set",
//!   "RuntimeClass handler "" does not support user namespaces") and the pod waits in
//!   ContainerCreating for ever; here that is known at admission for the default handler (and for
//!   any handler when none supports user namespaces), with upstream's text as the cause. A pod
//!   with a RuntimeClass whose handler may support them goes on to the sandbox-time check.

use super::{Handler, Rejection};
use crate::cri::RuntimeHandlers;
use k8s_openapi::api::core::v1::Pod;

pub const RUNTIME_CLASS_REASON: &str = "RuntimeClassUnavailable";
pub const USER_NAMESPACES_REASON: &str = "UserNamespacesNotSupported";

/// The runtime's handlers (CRI Status at start-up) and whether RuntimeClasses can be looked up.
#[derive(Debug, Clone, Default)]
pub struct RuntimeSupport {
    pub handlers: RuntimeHandlers,
    pub api: bool,
}

fn pod_ref(pod: &Pod) -> String {
    let m = &pod.metadata;
    format!("{}/{}", m.namespace.as_deref().unwrap_or("default"), m.name.as_deref().unwrap_or_default())
}

impl Handler for RuntimeSupport {
    fn admit(&self, pod: &Pod, _admitted: &[&Pod]) -> Result<(), Rejection> {
        let spec = pod.spec.as_ref();
        let class = spec.and_then(|s| s.runtime_class_name.as_deref()).filter(|n| !n.is_empty());
        if let (Some(class), false) = (class, self.api) {
            return Err(Rejection {
                reason: RUNTIME_CLASS_REASON.into(),
                message: format!(
                    "pod {}: spec.runtimeClassName {class:?}: no API server to look the RuntimeClass up from (a kubelet without --kubeconfig runs only the runtime's default handler)",
                    pod_ref(pod)
                ),
            });
        }
        if spec.and_then(|s| s.host_users) != Some(false) {
            return Ok(());
        }
        let any_supports =
            self.handlers.handlers.iter().any(|h| h.features.as_ref().is_some_and(|f| f.user_namespaces));
        let cause = match (class, self.handlers.supports_user_namespaces("")) {
            (None, Ok(true)) => return Ok(()),
            (Some(_), _) if any_supports => return Ok(()),
            (_, Err(e)) => e.to_string(),
            (None, Ok(false)) => "RuntimeClass handler \"\" does not support user namespaces".to_string(),
            (Some(c), Ok(_)) => format!("no runtime handler supports user namespaces (spec.runtimeClassName {c:?})"),
        };
        Err(Rejection {
            reason: USER_NAMESPACES_REASON.into(),
            message: format!("pod {}: spec.hostUsers: false needs a user namespace: {cause}", pod_ref(pod)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cri::api;

    fn pod(spec: serde_json::Value) -> Pod {
        let mut spec = spec;
        spec["containers"] = serde_json::json!([{"name": "c", "image": "i"}]);
        serde_json::from_value(serde_json::json!({"metadata": {"name": "web", "namespace": "ns"}, "spec": spec}))
            .unwrap()
    }

    fn handlers(list: &[(&str, bool)]) -> RuntimeHandlers {
        let h = |(name, userns): &(&str, bool)| api::RuntimeHandler {
            name: name.to_string(),
            features: Some(api::RuntimeHandlerFeatures { recursive_read_only_mounts: false, user_namespaces: *userns }),
        };
        RuntimeHandlers { handlers: list.iter().map(h).collect(), features: None }
    }

    #[test]
    fn a_runtime_class_needs_an_api_server() {
        let standalone = RuntimeSupport::default();
        let p = pod(serde_json::json!({"runtimeClassName": "alt"}));
        let r = standalone.admit(&p, &[]).unwrap_err();
        assert_eq!(r.reason, "RuntimeClassUnavailable");
        assert!(r.message.starts_with("pod ns/web: spec.runtimeClassName \"alt\": no API server"), "{}", r.message);
        assert!(RuntimeSupport { api: true, ..Default::default() }.admit(&p, &[]).is_ok());
        assert!(standalone.admit(&pod(serde_json::json!({})), &[]).is_ok());
    }

    #[test]
    fn host_users_false_needs_a_handler_with_user_namespaces() {
        let p = pod(serde_json::json!({"hostUsers": false}));
        // containerd 1.6: no handlers at all.
        let r = RuntimeSupport { api: true, ..Default::default() }.admit(&p, &[]).unwrap_err();
        assert_eq!(r.reason, "UserNamespacesNotSupported");
        assert_eq!(r.message, "pod ns/web: spec.hostUsers: false needs a user namespace: runtime handlers are not set");
        let no = RuntimeSupport { api: true, handlers: handlers(&[("", false), ("runc", false)]) };
        assert!(
            no.admit(&p, &[])
                .unwrap_err()
                .message
                .ends_with("RuntimeClass handler \"\" does not support user namespaces")
        );
        let with_class = pod(serde_json::json!({"hostUsers": false, "runtimeClassName": "kata"}));
        assert!(no.admit(&with_class, &[]).is_err());
        let some = RuntimeSupport { api: true, handlers: handlers(&[("", false), ("kata", true)]) };
        assert!(some.admit(&p, &[]).is_err(), "the default handler has none");
        assert!(some.admit(&with_class, &[]).is_ok(), "left to the sandbox-time check");
        let all = RuntimeSupport { api: true, handlers: handlers(&[("", true)]) };
        assert!(all.admit(&p, &[]).is_ok());
        assert!(no.admit(&pod(serde_json::json!({"hostUsers": true})), &[]).is_ok());
    }
}
