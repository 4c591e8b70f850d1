//! User namespaces (`hostUsers: false`; pkg/kubelet/userns, GetOrCreateUserNamespaceMappings and
//! Kubelet.HandlerSupportsUserNamespaces): before a sandbox is made for such a pod, its runtime
//! handler must say it supports user namespaces (CRI Status `runtime_handlers[].features`), or the
//! sandbox is not made, with upstream's messages. This kubelet does not allocate ID mappings
//! yet, so even a supporting handler is refused rather than the pod run in the host's user
//! namespace. Most such pods never get here: admission refuses them (`admission::runtime`).

use crate::cri::{CriError, Runtime};
use k8s_openapi::api::core::v1::Pod;

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Handler(#[from] crate::cri::HandlerError),
    #[error("RuntimeClass handler {0:?} does not support user namespaces")]
    Unsupported(String),
    #[error("user namespace ID mappings are not implemented by this kubelet (spec.hostUsers: false)")]
    MappingsNotImplemented,
    #[error(transparent)]
    Runtime(#[from] CriError),
}

/// Whether the pod asks for its own user namespace (`spec.hostUsers: false`).
pub fn wants_user_namespace(pod: &Pod) -> bool {
    pod.spec.as_ref().and_then(|s| s.host_users) == Some(false)
}

/// The sandbox-time check for `pod` on `handler` (nothing for pods in the host's namespace).
pub async fn check(pod: &Pod, handler: &str, runtime: &dyn Runtime) -> Result<(), super::error::Error> {
    if !wants_user_namespace(pod) {
        return Ok(());
    }
    let handlers = runtime.handlers().await.map_err(|e| super::error::Error::UserNamespace(e.into()))?;
    let err = match handlers.supports_user_namespaces(handler) {
        Ok(true) => Error::MappingsNotImplemented,
        Ok(false) => Error::Unsupported(handler.to_string()),
        Err(e) => e.into(),
    };
    Err(super::error::Error::UserNamespace(err))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cri::{RuntimeHandlers, api, fake::FakeRuntime};

    fn handler(name: &str, userns: bool) -> api::RuntimeHandler {
        api::RuntimeHandler {
            name: name.into(),
            features: Some(api::RuntimeHandlerFeatures { recursive_read_only_mounts: false, user_namespaces: userns }),
        }
    }

    fn pod(host_users: Option<bool>) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"hostUsers": host_users, "containers": [{"name": "c", "image": "i"}]}
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn a_pod_wanting_a_user_namespace_gets_no_sandbox_with_upstream_messages() {
        let rt = FakeRuntime::new();
        check(&pod(None), "", &rt).await.unwrap();
        check(&pod(Some(true)), "", &rt).await.unwrap();
        let msg = |e: super::super::error::Error| e.to_string();
        assert_eq!(
            msg(check(&pod(Some(false)), "", &rt).await.unwrap_err()),
            "failed to create pod sandbox: runtime handlers are not set"
        );
        rt.set_handlers(RuntimeHandlers { handlers: vec![handler("", false), handler("kata", true)], features: None });
        assert_eq!(
            msg(check(&pod(Some(false)), "", &rt).await.unwrap_err()),
            "failed to create pod sandbox: RuntimeClass handler \"\" does not support user namespaces"
        );
        assert_eq!(
            msg(check(&pod(Some(false)), "gone", &rt).await.unwrap_err()),
            "failed to create pod sandbox: the handler \"gone\" is not known"
        );
        assert!(msg(check(&pod(Some(false)), "kata", &rt).await.unwrap_err()).contains("not implemented"));
    }
}
