//! RuntimeClass (pkg/kubelet/runtimeclass, Manager.LookupRuntimeHandler): a pod's
//! `spec.runtimeClassName` → the node.k8s.io/v1 RuntimeClass's `handler`, the CRI runtime handler
//! its sandbox is made with. No name is the runtime's default handler (`""`).
//!
//! Upstream looks it up when the sandbox is made, so a missing RuntimeClass leaves the pod
//! waiting in ContainerCreating with a FailedCreatePodSandBox event, retried; so does this. A
//! standalone kubelet (no API server) cannot look anything up: upstream then ignores the field and
//! runs the default handler; here such a pod is refused at admission instead (see
//! `admission::runtime`), as a pod must never run weaker than its spec says.

use crate::api::{ApiError, DynApi};
use k8s_openapi::api::core::v1::Pod;

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The API's NotFound text for the object.
    #[error("runtimeclass.node.k8s.io {0:?} not found")]
    NotFound(String),
    #[error("failed to lookup RuntimeClass {name}: {source}")]
    Lookup { name: String, source: ApiError },
    #[error("spec.runtimeClassName {0:?}: no API server to look the RuntimeClass up from")]
    NoApi(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The pod's `spec.runtimeClassName`, if set and not empty.
pub fn name_of(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref()?.runtime_class_name.as_deref().filter(|n| !n.is_empty())
}

/// Looks RuntimeClasses up in the API (a direct GET per sandbox: sandboxes are rare).
#[derive(Clone, Default)]
pub struct RuntimeClasses {
    api: Option<DynApi>,
}

impl RuntimeClasses {
    pub fn new(api: Option<DynApi>) -> Self {
        Self { api }
    }

    /// The runtime handler for `pod` (LookupRuntimeHandler).
    pub async fn handler(&self, pod: &Pod) -> Result<String> {
        let Some(name) = name_of(pod) else { return Ok(String::new()) };
        let api = self.api.as_ref().ok_or_else(|| Error::NoApi(name.to_string()))?;
        match api.get_runtime_class(name).await {
            Ok(Some(rc)) => Ok(rc.handler),
            Ok(None) | Err(ApiError::NotFound) => Err(Error::NotFound(name.to_string())),
            Err(source) => Err(Error::Lookup { name: name.to_string(), source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::fake::FakeApi;
    use k8s_openapi::api::node::v1::RuntimeClass;
    use std::sync::Arc;

    fn pod(class: Option<&str>) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"runtimeClassName": class, "containers": [{"name": "c", "image": "i"}]}
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn the_class_resolves_to_its_handler_and_a_missing_one_is_not_found() {
        let fake = FakeApi::new();
        let mut rc = RuntimeClass { handler: "runc-alt".into(), ..Default::default() };
        rc.metadata.name = Some("alt".into());
        fake.put_runtime_class(rc);
        let classes = RuntimeClasses::new(Some(Arc::new(fake)));
        assert_eq!(classes.handler(&pod(None)).await.unwrap(), "");
        assert_eq!(classes.handler(&pod(Some(""))).await.unwrap(), "");
        assert_eq!(classes.handler(&pod(Some("alt"))).await.unwrap(), "runc-alt");
        let e = classes.handler(&pod(Some("gone"))).await.unwrap_err();
        assert_eq!(e.to_string(), "runtimeclass.node.k8s.io \"gone\" not found");
        let standalone = RuntimeClasses::new(None);
        assert_eq!(standalone.handler(&pod(None)).await.unwrap(), "");
        assert!(matches!(standalone.handler(&pod(Some("alt"))).await, Err(Error::NoApi(_))));
    }
}
