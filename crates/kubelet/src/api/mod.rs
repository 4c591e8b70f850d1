//! The Kubernetes API, seen through the calls the kubelet makes. [`kube_client`] speaks the real
//! API through kube-rs; [`fake`] is an in-memory API for unit tests; [`objects`] is the node's one
//! reader of ConfigMaps, Secrets and Services.

pub mod fake;
pub mod kube_client;
pub mod objects;
pub mod rate;

use async_trait::async_trait;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenReview};
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Event, Node, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Service,
};
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::api::storage::v1::{CSIDriver, CSINode, VolumeAttachment};
use std::sync::Arc;
use tokio::sync::mpsc;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

/// The namespace of node leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

#[async_trait]
pub trait Api: Send + Sync + 'static {
    async fn get_node(&self, name: &str) -> Result<Option<Node>>;
    async fn create_node(&self, node: &Node) -> Result<Node>;
    /// Strategic merge patch of the node's status subresource.
    async fn patch_node_status(&self, name: &str, patch: &serde_json::Value) -> Result<Node>;
    /// A strategic merge patch of the Node itself (its annotations).
    async fn patch_node(&self, name: &str, patch: &serde_json::Value) -> Result<Node>;

    async fn get_lease(&self, name: &str) -> Result<Option<Lease>>;
    async fn create_lease(&self, lease: &Lease) -> Result<Lease>;
    /// Replaces the lease; fails with Conflict on a stale resourceVersion.
    async fn replace_lease(&self, lease: &Lease) -> Result<Lease>;

    /// Full snapshots of the pods bound to `node`, sent whenever they change (watch-backed).
    fn watch_node_pods(&self, node: &str) -> mpsc::Receiver<Vec<Pod>>;
    async fn get_pod(&self, namespace: &str, name: &str) -> Result<Option<Pod>>;
    async fn create_pod(&self, pod: &Pod) -> Result<Pod>;
    /// Strategic merge patch of the pod's status subresource (`metadata.uid` in the patch is a
    /// precondition: a different pod under the name answers Conflict).
    async fn patch_pod_status(&self, namespace: &str, name: &str, patch: &serde_json::Value) -> Result<Pod>;
    /// Deletes with the grace period; `uid` is a precondition when given.
    async fn delete_pod(&self, namespace: &str, name: &str, grace_secs: i64, uid: Option<&str>) -> Result<()>;

    async fn create_event(&self, event: &Event) -> Result<()>;
    async fn get_config_map(&self, namespace: &str, name: &str) -> Result<Option<ConfigMap>>;
    async fn get_secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>>;
    /// Services of a namespace (for service link environment variables).
    async fn list_services(&self, namespace: &str) -> Result<Vec<Service>>;

    /// Volumes: a pod's claim, its bound volume, the CSI driver's object and the attachment the
    /// attach/detach controller reports.
    async fn get_persistent_volume_claim(&self, namespace: &str, name: &str) -> Result<Option<PersistentVolumeClaim>>;
    async fn get_persistent_volume(&self, name: &str) -> Result<Option<PersistentVolume>>;
    async fn get_csi_driver(&self, name: &str) -> Result<Option<CSIDriver>>;
    /// A node.k8s.io/v1 RuntimeClass (its `handler` is the pod's CRI runtime handler).
    async fn get_runtime_class(&self, name: &str) -> Result<Option<RuntimeClass>>;
    async fn get_volume_attachment(&self, name: &str) -> Result<Option<VolumeAttachment>>;
    /// The node's CSINode (the drivers registered on it).
    async fn get_csi_node(&self, name: &str) -> Result<Option<CSINode>>;
    async fn create_csi_node(&self, csi_node: &CSINode) -> Result<CSINode>;
    /// Replaces the CSINode; fails with Conflict on a stale resourceVersion.
    async fn replace_csi_node(&self, csi_node: &CSINode) -> Result<CSINode>;

    /// Asks the API server who a bearer token belongs to (the server's webhook authentication).
    async fn create_token_review(&self, review: &TokenReview) -> Result<TokenReview>;
    /// Asks the API server whether a user may do something (the server's webhook authorization).
    async fn create_subject_access_review(&self, review: &SubjectAccessReview) -> Result<SubjectAccessReview>;
    /// TokenRequest on `serviceaccounts/{name}/token`: a token bound to a pod, for projected
    /// serviceAccountToken volumes.
    async fn create_token(
        &self,
        namespace: &str,
        service_account: &str,
        request: &TokenRequest,
    ) -> Result<TokenRequest>;
}

pub type DynApi = Arc<dyn Api>;
