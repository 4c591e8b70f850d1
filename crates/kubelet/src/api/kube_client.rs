//! The real Kubernetes API through kube-rs, with the `kubeAPIQPS`/`kubeAPIBurst` budget.

use super::rate::TokenBucket;
use super::{Api, ApiError, LEASE_NAMESPACE, Result};
use async_trait::async_trait;
use futures::StreamExt;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenReview};
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Event, Node, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Service,
};
use k8s_openapi::api::storage::v1::{CSIDriver, CSINode, VolumeAttachment};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::mpsc;

#[derive(Clone)]
pub struct KubeApi {
    client: kube::Client,
    bucket: Arc<TokenBucket>,
}

fn map_err(e: kube::Error) -> ApiError {
    match &e {
        kube::Error::Api(s) if s.code == 404 => ApiError::NotFound,
        kube::Error::Api(s) if s.code == 409 => ApiError::Conflict(s.message.clone()),
        _ => ApiError::Other(e.to_string()),
    }
}

fn opt<T>(r: std::result::Result<T, kube::Error>) -> Result<Option<T>> {
    match r.map_err(map_err) {
        Ok(v) => Ok(Some(v)),
        Err(ApiError::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A kubeconfig that cannot be read or used. kube's errors repeat their own cause in their
/// message, so the binary's `{:#}` would print it twice: the kube error is kept as data (`cause`)
/// and in this message, not as the source, and the message stays what it always was.
#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    #[error("--kubeconfig {}: {cause}", path.display())]
    Read { path: PathBuf, cause: kube::config::KubeconfigError },
    #[error("--kubeconfig {}: {cause}", path.display())]
    Client { path: PathBuf, cause: kube::Error },
}

impl KubeApi {
    /// A client from a kubeconfig file (as `--kubeconfig`).
    pub async fn from_kubeconfig(path: &Path, qps: f64, burst: u32) -> std::result::Result<Self, KubeconfigError> {
        let read = |cause| KubeconfigError::Read { path: path.to_path_buf(), cause };
        let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(read)?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(read)?;
        let client = kube::Client::try_from(config)
            .map_err(|cause| KubeconfigError::Client { path: path.to_path_buf(), cause })?;
        Ok(Self { client, bucket: Arc::new(TokenBucket::new(qps, burst)) })
    }

    /// A client made elsewhere (the rotating client certificate's, `certificate::start`).
    pub fn from_client(client: kube::Client, qps: f64, burst: u32) -> Self {
        Self { client, bucket: Arc::new(TokenBucket::new(qps, burst)) }
    }

    fn nodes(&self) -> kube::Api<Node> {
        kube::Api::all(self.client.clone())
    }

    fn leases(&self) -> kube::Api<Lease> {
        kube::Api::namespaced(self.client.clone(), LEASE_NAMESPACE)
    }

    fn pods(&self, ns: &str) -> kube::Api<Pod> {
        kube::Api::namespaced(self.client.clone(), ns)
    }
}

#[async_trait]
impl Api for KubeApi {
    async fn get_node(&self, name: &str) -> Result<Option<Node>> {
        self.bucket.acquire().await;
        opt(self.nodes().get(name).await)
    }

    async fn create_node(&self, node: &Node) -> Result<Node> {
        self.bucket.acquire().await;
        self.nodes().create(&PostParams::default(), node).await.map_err(map_err)
    }

    async fn patch_node_status(&self, name: &str, patch: &serde_json::Value) -> Result<Node> {
        self.bucket.acquire().await;
        self.nodes().patch_status(name, &PatchParams::default(), &Patch::Strategic(patch)).await.map_err(map_err)
    }

    async fn patch_node(&self, name: &str, patch: &serde_json::Value) -> Result<Node> {
        self.bucket.acquire().await;
        self.nodes().patch(name, &PatchParams::default(), &Patch::Strategic(patch)).await.map_err(map_err)
    }

    async fn get_lease(&self, name: &str) -> Result<Option<Lease>> {
        self.bucket.acquire().await;
        opt(self.leases().get(name).await)
    }

    async fn create_lease(&self, lease: &Lease) -> Result<Lease> {
        self.bucket.acquire().await;
        self.leases().create(&PostParams::default(), lease).await.map_err(map_err)
    }

    async fn replace_lease(&self, lease: &Lease) -> Result<Lease> {
        self.bucket.acquire().await;
        let name = lease.metadata.name.clone().unwrap_or_default();
        self.leases().replace(&name, &PostParams::default(), lease).await.map_err(map_err)
    }

    fn watch_node_pods(&self, node: &str) -> mpsc::Receiver<Vec<Pod>> {
        let (tx, rx) = mpsc::channel(4);
        let api: kube::Api<Pod> = kube::Api::all(self.client.clone());
        let cfg = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
        tokio::spawn(async move {
            let mut stream = watcher(api, cfg).default_backoff().boxed();
            let mut pods: BTreeMap<String, Pod> = BTreeMap::new();
            let mut initial: Option<BTreeMap<String, Pod>> = None;
            let mut synced = false;
            while let Some(ev) = stream.next().await {
                let changed = match ev {
                    Ok(watcher::Event::Init) => {
                        initial = Some(BTreeMap::new());
                        false
                    }
                    Ok(watcher::Event::InitApply(p)) => {
                        if let Some(m) = initial.as_mut() {
                            m.insert(p.metadata.uid.clone().unwrap_or_default(), p);
                        }
                        false
                    }
                    Ok(watcher::Event::InitDone) => {
                        pods = initial.take().unwrap_or_default();
                        synced = true;
                        true
                    }
                    Ok(watcher::Event::Apply(p)) => {
                        pods.insert(p.metadata.uid.clone().unwrap_or_default(), p);
                        true
                    }
                    Ok(watcher::Event::Delete(p)) => {
                        pods.remove(p.metadata.uid.as_deref().unwrap_or_default());
                        true
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "pod watch failed; retrying");
                        false
                    }
                };
                if changed && synced && tx.send(pods.values().cloned().collect()).await.is_err() {
                    return;
                }
            }
        });
        rx
    }

    async fn get_pod(&self, namespace: &str, name: &str) -> Result<Option<Pod>> {
        self.bucket.acquire().await;
        opt(self.pods(namespace).get(name).await)
    }

    async fn create_pod(&self, pod: &Pod) -> Result<Pod> {
        self.bucket.acquire().await;
        let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        self.pods(&ns).create(&PostParams::default(), pod).await.map_err(map_err)
    }

    async fn patch_pod_status(&self, namespace: &str, name: &str, patch: &serde_json::Value) -> Result<Pod> {
        self.bucket.acquire().await;
        self.pods(namespace)
            .patch_status(name, &PatchParams::default(), &Patch::Strategic(patch))
            .await
            .map_err(map_err)
    }

    async fn delete_pod(&self, namespace: &str, name: &str, grace_secs: i64, uid: Option<&str>) -> Result<()> {
        self.bucket.acquire().await;
        let dp = DeleteParams {
            grace_period_seconds: Some(grace_secs.max(0) as u32),
            preconditions: uid.map(|u| Preconditions { uid: Some(u.to_string()), resource_version: None }),
            ..Default::default()
        };
        match self.pods(namespace).delete(name, &dp).await.map_err(map_err) {
            Ok(_) | Err(ApiError::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn create_event(&self, event: &Event) -> Result<()> {
        self.bucket.acquire().await;
        let ns = event.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let api: kube::Api<Event> = kube::Api::namespaced(self.client.clone(), &ns);
        api.create(&PostParams::default(), event).await.map(drop).map_err(map_err)
    }

    async fn get_config_map(&self, namespace: &str, name: &str) -> Result<Option<ConfigMap>> {
        self.bucket.acquire().await;
        opt(kube::Api::<ConfigMap>::namespaced(self.client.clone(), namespace).get(name).await)
    }

    async fn get_secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>> {
        self.bucket.acquire().await;
        opt(kube::Api::<Secret>::namespaced(self.client.clone(), namespace).get(name).await)
    }

    async fn list_services(&self, namespace: &str) -> Result<Vec<Service>> {
        self.bucket.acquire().await;
        let api = kube::Api::<Service>::namespaced(self.client.clone(), namespace);
        api.list(&Default::default()).await.map(|l| l.items).map_err(map_err)
    }

    async fn get_persistent_volume_claim(&self, namespace: &str, name: &str) -> Result<Option<PersistentVolumeClaim>> {
        self.bucket.acquire().await;
        opt(kube::Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), namespace).get(name).await)
    }

    async fn get_persistent_volume(&self, name: &str) -> Result<Option<PersistentVolume>> {
        self.bucket.acquire().await;
        opt(kube::Api::<PersistentVolume>::all(self.client.clone()).get(name).await)
    }

    async fn get_csi_driver(&self, name: &str) -> Result<Option<CSIDriver>> {
        self.bucket.acquire().await;
        opt(kube::Api::<CSIDriver>::all(self.client.clone()).get(name).await)
    }

    async fn get_runtime_class(&self, name: &str) -> Result<Option<k8s_openapi::api::node::v1::RuntimeClass>> {
        self.bucket.acquire().await;
        opt(kube::Api::<k8s_openapi::api::node::v1::RuntimeClass>::all(self.client.clone()).get(name).await)
    }

    async fn get_volume_attachment(&self, name: &str) -> Result<Option<VolumeAttachment>> {
        self.bucket.acquire().await;
        opt(kube::Api::<VolumeAttachment>::all(self.client.clone()).get(name).await)
    }

    async fn get_csi_node(&self, name: &str) -> Result<Option<CSINode>> {
        self.bucket.acquire().await;
        opt(kube::Api::<CSINode>::all(self.client.clone()).get(name).await)
    }

    async fn create_csi_node(&self, csi_node: &CSINode) -> Result<CSINode> {
        self.bucket.acquire().await;
        kube::Api::<CSINode>::all(self.client.clone()).create(&PostParams::default(), csi_node).await.map_err(map_err)
    }

    async fn replace_csi_node(&self, csi_node: &CSINode) -> Result<CSINode> {
        self.bucket.acquire().await;
        let name = csi_node.metadata.name.clone().unwrap_or_default();
        kube::Api::<CSINode>::all(self.client.clone())
            .replace(&name, &PostParams::default(), csi_node)
            .await
            .map_err(map_err)
    }

    async fn create_token_review(&self, review: &TokenReview) -> Result<TokenReview> {
        self.bucket.acquire().await;
        kube::Api::<TokenReview>::all(self.client.clone()).create(&PostParams::default(), review).await.map_err(map_err)
    }

    async fn create_subject_access_review(&self, review: &SubjectAccessReview) -> Result<SubjectAccessReview> {
        self.bucket.acquire().await;
        kube::Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), review)
            .await
            .map_err(map_err)
    }

    async fn create_token(
        &self,
        namespace: &str,
        service_account: &str,
        request: &TokenRequest,
    ) -> Result<TokenRequest> {
        self.bucket.acquire().await;
        kube::Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(self.client.clone(), namespace)
            .create_token_request(service_account, &PostParams::default(), request)
            .await
            .map_err(map_err)
    }
}
