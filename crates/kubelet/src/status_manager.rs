//! The status manager: the newest status of every pod the kubelet runs. Pod workers write it;
//! the server's `/pods` and (with an API server) the status sync read it. Readers can wait for
//! changes through a version counter.

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use tokio::sync::watch;

#[derive(Clone)]
pub struct Statuses {
    pods: Arc<RwLock<BTreeMap<String, Pod>>>,
    version: Arc<watch::Sender<u64>>,
}

impl Default for Statuses {
    fn default() -> Self {
        Self { pods: Default::default(), version: Arc::new(watch::channel(0).0) }
    }
}

impl Statuses {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a pod's status; returns whether it changed.
    pub fn set(&self, pod: &Pod, status: PodStatus) -> bool {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let mut map = self.pods.write().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = map.get_mut(&uid)
            && existing.metadata == pod.metadata
            && existing.status.as_ref() == Some(&status)
        {
            return false;
        }
        let mut p = Pod { metadata: pod.metadata.clone(), spec: pod.spec.clone(), status: Some(status) };
        p.metadata.managed_fields = None;
        map.insert(uid, p);
        drop(map);
        self.version.send_modify(|v| *v += 1);
        true
    }

    /// Replaces the message of a pod's current status (progress while its worker is busy).
    pub fn set_message(&self, uid: &str, message: String) {
        let mut map = self.pods.write().unwrap_or_else(|p| p.into_inner());
        let Some(st) = map.get_mut(uid).and_then(|p| p.status.as_mut()) else { return };
        if st.message.as_deref() == Some(message.as_str()) {
            return;
        }
        st.message = Some(message);
        drop(map);
        self.version.send_modify(|v| *v += 1);
    }

    pub fn remove(&self, uid: &str) {
        if self.pods.write().unwrap_or_else(|p| p.into_inner()).remove(uid).is_some() {
            self.version.send_modify(|v| *v += 1);
        }
    }

    pub fn get(&self, uid: &str) -> Option<PodStatus> {
        self.pods.read().unwrap_or_else(|p| p.into_inner()).get(uid).and_then(|p| p.status.clone())
    }

    /// Whether the pod's phase is Succeeded or Failed (terminal pods hold no resources).
    pub fn is_terminal(&self, uid: &str) -> bool {
        let map = self.pods.read().unwrap_or_else(|p| p.into_inner());
        map.get(uid)
            .and_then(|p| p.status.as_ref())
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == "Succeeded" || p == "Failed")
    }

    /// How many pods' statuses satisfy `f`, without copying them.
    pub fn count(&self, f: impl Fn(&PodStatus) -> bool) -> usize {
        let map = self.pods.read().unwrap_or_else(|p| p.into_inner());
        map.values().filter(|p| p.status.as_ref().is_some_and(&f)).count()
    }

    /// Every pod with its status, ordered by UID.
    pub fn list(&self) -> Vec<Pod> {
        self.pods.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// The pod named `name` in `namespace`, with its status.
    pub fn find(&self, namespace: &str, name: &str) -> Option<Pod> {
        let map = self.pods.read().unwrap_or_else(|p| p.into_inner());
        map.values()
            .find(|p| {
                p.metadata.name.as_deref() == Some(name)
                    && p.metadata.namespace.as_deref().unwrap_or("default") == namespace
            })
            .cloned()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }
}
