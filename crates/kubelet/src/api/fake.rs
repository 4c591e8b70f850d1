//! An in-memory API for unit tests: objects in maps, a resourceVersion counter, pod snapshots
//! pushed to watchers, and a record of every call.

use super::{Api, ApiError, Result};
use async_trait::async_trait;
use k8s_openapi::api::authentication::v1::{
    TokenRequest, TokenRequestStatus, TokenReview, TokenReviewStatus, UserInfo,
};
use k8s_openapi::api::authorization::v1::{SubjectAccessReview, SubjectAccessReviewStatus};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Event, Node, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Service,
};
use k8s_openapi::api::storage::v1::{CSIDriver, CSINode, VolumeAttachment};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::mpsc;

#[derive(Default)]
struct State {
    rv: u64,
    nodes: BTreeMap<String, Node>,
    leases: BTreeMap<String, Lease>,
    pods: BTreeMap<(String, String), Pod>,
    events: Vec<Event>,
    config_maps: BTreeMap<(String, String), ConfigMap>,
    secrets: BTreeMap<(String, String), Secret>,
    services: Vec<Service>,
    claims: BTreeMap<(String, String), PersistentVolumeClaim>,
    volumes: BTreeMap<String, PersistentVolume>,
    csi_drivers: BTreeMap<String, CSIDriver>,
    runtime_classes: BTreeMap<String, k8s_openapi::api::node::v1::RuntimeClass>,
    volume_attachments: BTreeMap<String, VolumeAttachment>,
    csi_nodes: BTreeMap<String, CSINode>,
    watchers: Vec<(String, mpsc::Sender<Vec<Pod>>)>,
    calls: Vec<String>,
    /// When set, every call fails (an unreachable API server).
    down: bool,
    /// Bearer tokens TokenReview knows: token → (user, groups).
    tokens: BTreeMap<String, (String, Vec<String>)>,
    /// SubjectAccessReview allows these (user, verb, subresource) triples; "*" matches anything.
    allowed: Vec<(String, String, String)>,
    /// TokenRequests answered: (namespace, service account, request).
    token_requests: Vec<(String, String, TokenRequest)>,
}

#[derive(Clone, Default)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
}

fn key(p: &Pod) -> (String, String) {
    (p.metadata.namespace.clone().unwrap_or_default(), p.metadata.name.clone().unwrap_or_default())
}

impl FakeApi {
    /// A node patch as a JSON merge, enough for tests (lists are replaced whole).
    fn merge_node(&self, call: &str, name: &str, patch: &serde_json::Value) -> Result<Node> {
        let mut s = self.enter(call)?;
        let rv = s.rv;
        let n = s.nodes.get_mut(name).ok_or(ApiError::NotFound)?;
        let mut v = serde_json::to_value(&*n).map_err(|e| ApiError::Other(e.to_string()))?;
        json_merge(&mut v, patch);
        let mut merged: Node = serde_json::from_value(v).map_err(|e| ApiError::Other(e.to_string()))?;
        merged.metadata.resource_version = Some(rv.to_string());
        *n = merged.clone();
        Ok(merged)
    }

    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn enter(&self, call: &str) -> Result<MutexGuard<'_, State>> {
        let mut s = self.lock();
        s.calls.push(call.to_string());
        if s.down {
            return Err(ApiError::Other("connection refused".into()));
        }
        s.rv += 1;
        Ok(s)
    }

    pub fn set_down(&self, down: bool) {
        self.lock().down = down;
    }

    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    pub fn node(&self, name: &str) -> Option<Node> {
        self.lock().nodes.get(name).cloned()
    }

    pub fn delete_node(&self, name: &str) {
        self.lock().nodes.remove(name);
    }

    pub fn lease(&self, name: &str) -> Option<Lease> {
        self.lock().leases.get(name).cloned()
    }

    pub fn pod(&self, ns: &str, name: &str) -> Option<Pod> {
        self.lock().pods.get(&(ns.to_string(), name.to_string())).cloned()
    }

    pub fn events(&self) -> Vec<Event> {
        self.lock().events.clone()
    }

    pub fn put_config_map(&self, cm: ConfigMap) {
        let k = (cm.metadata.namespace.clone().unwrap_or_default(), cm.metadata.name.clone().unwrap_or_default());
        self.lock().config_maps.insert(k, cm);
    }

    pub fn put_secret(&self, s: Secret) {
        let k = (s.metadata.namespace.clone().unwrap_or_default(), s.metadata.name.clone().unwrap_or_default());
        self.lock().secrets.insert(k, s);
    }

    pub fn put_service(&self, s: Service) {
        self.lock().services.push(s);
    }

    pub fn put_persistent_volume_claim(&self, c: PersistentVolumeClaim) {
        let k = (c.metadata.namespace.clone().unwrap_or_default(), c.metadata.name.clone().unwrap_or_default());
        self.lock().claims.insert(k, c);
    }

    pub fn put_persistent_volume(&self, v: PersistentVolume) {
        self.lock().volumes.insert(v.metadata.name.clone().unwrap_or_default(), v);
    }

    pub fn put_csi_driver(&self, d: CSIDriver) {
        self.lock().csi_drivers.insert(d.metadata.name.clone().unwrap_or_default(), d);
    }

    pub fn put_runtime_class(&self, rc: k8s_openapi::api::node::v1::RuntimeClass) {
        self.lock().runtime_classes.insert(rc.metadata.name.clone().unwrap_or_default(), rc);
    }

    pub fn put_volume_attachment(&self, a: VolumeAttachment) {
        self.lock().volume_attachments.insert(a.metadata.name.clone().unwrap_or_default(), a);
    }

    pub fn csi_node(&self, name: &str) -> Option<CSINode> {
        self.lock().csi_nodes.get(name).cloned()
    }

    /// Creates or replaces a pod as a user would, notifying watchers.
    pub fn put_pod(&self, mut pod: Pod) {
        let mut s = self.lock();
        s.rv += 1;
        pod.metadata.resource_version = Some(s.rv.to_string());
        s.pods.insert(key(&pod), pod);
        Self::notify(&mut s);
    }

    /// Makes TokenReview accept `token` as `user` in `groups`.
    pub fn add_token(&self, token: &str, user: &str, groups: &[&str]) {
        self.lock().tokens.insert(token.into(), (user.into(), groups.iter().map(|g| g.to_string()).collect()));
    }

    /// Makes SubjectAccessReview allow `user` to `verb` nodes/`subresource` ("*" for any).
    pub fn allow(&self, user: &str, verb: &str, subresource: &str) {
        self.lock().allowed.push((user.into(), verb.into(), subresource.into()));
    }

    /// The TokenRequests made so far: (namespace, service account, request).
    pub fn token_requests(&self) -> Vec<(String, String, TokenRequest)> {
        self.lock().token_requests.clone()
    }

    /// Removes a pod object outright (e.g. someone deleted a mirror pod with grace 0).
    pub fn remove_pod(&self, ns: &str, name: &str) {
        let mut s = self.lock();
        s.pods.remove(&(ns.to_string(), name.to_string()));
        Self::notify(&mut s);
    }

    fn notify(s: &mut State) {
        let pods: Vec<Pod> = s.pods.values().cloned().collect();
        s.watchers.retain(|(node, tx)| {
            let mine = pods
                .iter()
                .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node.as_str()))
                .cloned()
                .collect();
            tx.try_send(mine).is_ok() || !tx.is_closed()
        });
    }
}

#[async_trait]
impl Api for FakeApi {
    async fn get_node(&self, name: &str) -> Result<Option<Node>> {
        Ok(self.enter("get_node")?.nodes.get(name).cloned())
    }

    async fn create_node(&self, node: &Node) -> Result<Node> {
        let mut s = self.enter("create_node")?;
        let name = node.metadata.name.clone().unwrap_or_default();
        if s.nodes.contains_key(&name) {
            return Err(ApiError::Conflict(format!("nodes {name:?} already exists")));
        }
        let mut n = node.clone();
        n.metadata.resource_version = Some(s.rv.to_string());
        n.metadata.uid = Some(format!("node-uid-{}", s.rv));
        s.nodes.insert(name, n.clone());
        Ok(n)
    }

    async fn patch_node_status(&self, name: &str, patch: &serde_json::Value) -> Result<Node> {
        self.merge_node("patch_node_status", name, patch)
    }

    async fn patch_node(&self, name: &str, patch: &serde_json::Value) -> Result<Node> {
        self.merge_node("patch_node", name, patch)
    }

    async fn get_lease(&self, name: &str) -> Result<Option<Lease>> {
        Ok(self.enter("get_lease")?.leases.get(name).cloned())
    }

    async fn create_lease(&self, lease: &Lease) -> Result<Lease> {
        let mut s = self.enter("create_lease")?;
        let name = lease.metadata.name.clone().unwrap_or_default();
        if s.leases.contains_key(&name) {
            return Err(ApiError::Conflict("already exists".into()));
        }
        let mut l = lease.clone();
        l.metadata.resource_version = Some(s.rv.to_string());
        s.leases.insert(name, l.clone());
        Ok(l)
    }

    async fn replace_lease(&self, lease: &Lease) -> Result<Lease> {
        let mut s = self.enter("replace_lease")?;
        let name = lease.metadata.name.clone().unwrap_or_default();
        let current = s.leases.get(&name).ok_or(ApiError::NotFound)?;
        if current.metadata.resource_version != lease.metadata.resource_version {
            return Err(ApiError::Conflict("stale resourceVersion".into()));
        }
        let mut l = lease.clone();
        l.metadata.resource_version = Some(s.rv.to_string());
        s.leases.insert(name, l.clone());
        Ok(l)
    }

    fn watch_node_pods(&self, node: &str) -> mpsc::Receiver<Vec<Pod>> {
        let (tx, rx) = mpsc::channel(64);
        let mut s = self.lock();
        let mine: Vec<Pod> = s
            .pods
            .values()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
            .cloned()
            .collect();
        let _ = tx.try_send(mine);
        s.watchers.push((node.to_string(), tx));
        rx
    }

    async fn get_pod(&self, namespace: &str, name: &str) -> Result<Option<Pod>> {
        Ok(self.enter("get_pod")?.pods.get(&(namespace.to_string(), name.to_string())).cloned())
    }

    async fn create_pod(&self, pod: &Pod) -> Result<Pod> {
        let mut s = self.enter("create_pod")?;
        if s.pods.contains_key(&key(pod)) {
            return Err(ApiError::Conflict("already exists".into()));
        }
        let mut p = pod.clone();
        p.metadata.resource_version = Some(s.rv.to_string());
        p.metadata.uid = p.metadata.uid.or_else(|| Some(format!("api-uid-{}", s.rv)));
        s.pods.insert(key(&p), p.clone());
        Self::notify(&mut s);
        Ok(p)
    }

    async fn patch_pod_status(&self, namespace: &str, name: &str, patch: &serde_json::Value) -> Result<Pod> {
        let mut s = self.enter("patch_pod_status")?;
        let rv = s.rv;
        let p = s.pods.get_mut(&(namespace.to_string(), name.to_string())).ok_or(ApiError::NotFound)?;
        let mut v = serde_json::to_value(&*p).map_err(|e| ApiError::Other(e.to_string()))?;
        // As kube-apiserver: a strategic merge patch, the UID in it a precondition, only the status kept.
        let (want, have) = (patch.pointer("/metadata/uid"), v.pointer("/metadata/uid"));
        if let Some(want) = want
            && Some(want) != have
        {
            return Err(ApiError::Conflict(format!(
                "Precondition failed: UID in precondition: {}, UID in object meta: {}",
                want.as_str().unwrap_or_default(),
                have.and_then(|h| h.as_str()).unwrap_or_default()
            )));
        }
        if let Some(p) = patch.get("status") {
            let mut status = v.get("status").cloned().unwrap_or(serde_json::Value::Null);
            strategic_patch::apply(&mut status, p);
            v["status"] = status;
        }
        let mut merged: Pod = serde_json::from_value(v).map_err(|e| ApiError::Other(e.to_string()))?;
        merged.metadata.resource_version = Some(rv.to_string());
        *p = merged.clone();
        Self::notify(&mut s);
        Ok(merged)
    }

    async fn delete_pod(&self, namespace: &str, name: &str, _grace_secs: i64, uid: Option<&str>) -> Result<()> {
        let mut s = self.enter("delete_pod")?;
        let k = (namespace.to_string(), name.to_string());
        if let Some(p) = s.pods.get(&k)
            && uid.is_none_or(|u| p.metadata.uid.as_deref() == Some(u))
        {
            s.pods.remove(&k);
            Self::notify(&mut s);
        }
        Ok(())
    }

    async fn create_event(&self, event: &Event) -> Result<()> {
        self.enter("create_event")?.events.push(event.clone());
        Ok(())
    }

    async fn get_config_map(&self, namespace: &str, name: &str) -> Result<Option<ConfigMap>> {
        Ok(self.enter("get_config_map")?.config_maps.get(&(namespace.to_string(), name.to_string())).cloned())
    }

    async fn get_secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>> {
        Ok(self.enter("get_secret")?.secrets.get(&(namespace.to_string(), name.to_string())).cloned())
    }

    async fn list_services(&self, namespace: &str) -> Result<Vec<Service>> {
        let s = self.enter("list_services")?;
        Ok(s.services.iter().filter(|x| x.metadata.namespace.as_deref() == Some(namespace)).cloned().collect())
    }

    async fn get_persistent_volume_claim(&self, namespace: &str, name: &str) -> Result<Option<PersistentVolumeClaim>> {
        Ok(self.enter("get_persistent_volume_claim")?.claims.get(&(namespace.to_string(), name.to_string())).cloned())
    }

    async fn get_persistent_volume(&self, name: &str) -> Result<Option<PersistentVolume>> {
        Ok(self.enter("get_persistent_volume")?.volumes.get(name).cloned())
    }

    async fn get_csi_driver(&self, name: &str) -> Result<Option<CSIDriver>> {
        Ok(self.enter("get_csi_driver")?.csi_drivers.get(name).cloned())
    }

    async fn get_runtime_class(&self, name: &str) -> Result<Option<k8s_openapi::api::node::v1::RuntimeClass>> {
        Ok(self.enter("get_runtime_class")?.runtime_classes.get(name).cloned())
    }

    async fn get_volume_attachment(&self, name: &str) -> Result<Option<VolumeAttachment>> {
        Ok(self.enter("get_volume_attachment")?.volume_attachments.get(name).cloned())
    }

    async fn get_csi_node(&self, name: &str) -> Result<Option<CSINode>> {
        Ok(self.enter("get_csi_node")?.csi_nodes.get(name).cloned())
    }

    async fn create_csi_node(&self, csi_node: &CSINode) -> Result<CSINode> {
        let mut s = self.enter("create_csi_node")?;
        let name = csi_node.metadata.name.clone().unwrap_or_default();
        if s.csi_nodes.contains_key(&name) {
            return Err(ApiError::Conflict(format!("csinodes {name:?} already exists")));
        }
        let mut n = csi_node.clone();
        n.metadata.resource_version = Some(s.rv.to_string());
        s.csi_nodes.insert(name, n.clone());
        Ok(n)
    }

    async fn replace_csi_node(&self, csi_node: &CSINode) -> Result<CSINode> {
        let mut s = self.enter("replace_csi_node")?;
        let name = csi_node.metadata.name.clone().unwrap_or_default();
        let current = s.csi_nodes.get(&name).ok_or(ApiError::NotFound)?;
        if current.metadata.resource_version != csi_node.metadata.resource_version {
            return Err(ApiError::Conflict("stale resourceVersion".into()));
        }
        let mut n = csi_node.clone();
        n.metadata.resource_version = Some(s.rv.to_string());
        s.csi_nodes.insert(name, n.clone());
        Ok(n)
    }

    async fn create_token_review(&self, review: &TokenReview) -> Result<TokenReview> {
        let s = self.enter("create_token_review")?;
        let token = review.spec.token.clone();
        let mut out = review.clone();
        out.status = Some(match s.tokens.get(&token) {
            Some((user, groups)) => TokenReviewStatus {
                authenticated: Some(true),
                user: Some(UserInfo {
                    username: Some(user.clone()),
                    groups: Some(groups.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            None => TokenReviewStatus {
                authenticated: Some(false),
                error: Some("invalid token".into()),
                ..Default::default()
            },
        });
        Ok(out)
    }

    async fn create_subject_access_review(&self, review: &SubjectAccessReview) -> Result<SubjectAccessReview> {
        let s = self.enter("create_subject_access_review")?;
        let user = review.spec.user.clone().unwrap_or_default();
        let attrs = review.spec.resource_attributes.clone().unwrap_or_default();
        let verb = attrs.verb.unwrap_or_default();
        let sub = attrs.subresource.unwrap_or_default();
        let m = |want: &str, got: &str| want == "*" || want == got;
        let allowed = s.allowed.iter().any(|(u, v, r)| m(u, &user) && m(v, &verb) && m(r, &sub));
        let mut out = review.clone();
        out.status = Some(SubjectAccessReviewStatus { allowed, ..Default::default() });
        Ok(out)
    }

    async fn create_token(
        &self,
        namespace: &str,
        service_account: &str,
        request: &TokenRequest,
    ) -> Result<TokenRequest> {
        let mut s = self.enter("create_token")?;
        let secs = request.spec.as_ref().and_then(|s| s.expiration_seconds).unwrap_or(3600);
        let exp = std::time::SystemTime::now() + std::time::Duration::from_secs(secs.max(0) as u64);
        let n = s.token_requests.len();
        let mut out = request.clone();
        out.status = Some(TokenRequestStatus {
            token: Some(format!("eyJhbGciOiJub25lIn0.eyJzdWIiOiJzYSJ9.{namespace}-{service_account}-{n}")),
            expiration_timestamp: Some(crate::meta::time(exp)),
        });
        s.token_requests.push((namespace.to_string(), service_account.to_string(), request.clone()));
        Ok(out)
    }
}

/// RFC 7386 JSON merge patch.
pub fn json_merge(target: &mut serde_json::Value, patch: &serde_json::Value) {
    match (target, patch) {
        (serde_json::Value::Object(t), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    json_merge(t.entry(k.clone()).or_insert(serde_json::Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}
