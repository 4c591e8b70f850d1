//! The status manager: the newest status of every pod the kubelet runs. Pod workers write it;
//! the server's `/pods` and (with an API server) [`sync`], which sends it to the API server,
//! read it. Readers get `Arc`s
//! (a status is never copied to be read), can wait for changes through a version counter, and
//! ask for what changed since the version they last saw ([`Statuses::changes`]): a change
//! costs a reader the changed pods, not every pod.

pub mod sync;

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use tokio::sync::watch;

/// Removals remembered for readers that have not asked yet; a reader further behind is told
/// to start over ([`Changes::full`]).
const REMOVALS_KEPT: usize = 1024;

#[derive(Clone)]
pub struct Statuses {
    inner: Arc<RwLock<Inner>>,
    version: Arc<watch::Sender<u64>>,
}

struct Entry {
    pod: Arc<Pod>,
    /// The version that last changed it.
    seq: u64,
}

#[derive(Default)]
struct Inner {
    pods: BTreeMap<String, Entry>,
    /// The pods present, by the version that last changed them.
    changed: BTreeMap<u64, String>,
    /// Pods removed (as they were last set), by the version that removed them, and the
    /// versions by UID.
    removals: BTreeMap<u64, Arc<Pod>>,
    removed: HashMap<String, u64>,
    /// The current version: bumped by every change.
    seq: u64,
    /// Removals up to this version have been forgotten.
    floor: u64,
}

/// What changed since a version: see [`Statuses::changes`].
#[derive(Debug, Clone, Default)]
pub struct Changes {
    /// The version these changes bring a reader to: pass it as `since` next time.
    pub version: u64,
    /// The pods whose status (or object) changed, by UID; every pod when `full`.
    pub updated: Vec<Arc<Pod>>,
    /// The pods removed, as they were last set (their final statuses), by UID.
    pub removed: Vec<Arc<Pod>>,
    /// `since` is older than the removals remembered: `updated` holds every pod, and any pod
    /// the reader knows that is not among them was removed.
    pub full: bool,
}

impl Default for Statuses {
    fn default() -> Self {
        Self { inner: Default::default(), version: Arc::new(watch::channel(0).0) }
    }
}

impl Inner {
    /// Records that `uid` (present) changed: a new version.
    fn touch(&mut self, uid: &str) -> u64 {
        self.seq += 1;
        let seq = self.seq;
        if let Some(e) = self.pods.get_mut(uid) {
            self.changed.remove(&e.seq);
            e.seq = seq;
        }
        if let Some(old) = self.removed.remove(uid) {
            self.removals.remove(&old);
        }
        self.changed.insert(seq, uid.to_string());
        seq
    }
}

impl Statuses {
    pub fn new() -> Self {
        Self::default()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a pod's status; returns whether it changed.
    pub fn set(&self, pod: &Pod, status: PodStatus) -> bool {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let mut inner = self.write();
        if let Some(existing) = inner.pods.get(&uid)
            && existing.pod.metadata == pod.metadata
            && existing.pod.status.as_ref() == Some(&status)
        {
            return false;
        }
        let mut p = Pod { metadata: pod.metadata.clone(), spec: pod.spec.clone(), status: Some(status) };
        p.metadata.managed_fields = None;
        match inner.pods.get_mut(&uid) {
            Some(e) => e.pod = Arc::new(p),
            None => {
                inner.pods.insert(uid.clone(), Entry { pod: Arc::new(p), seq: 0 });
            }
        }
        let seq = inner.touch(&uid);
        self.version.send_replace(seq);
        true
    }

    /// Replaces the message of a pod's current status (progress while its worker is busy).
    pub fn set_message(&self, uid: &str, message: String) {
        let mut inner = self.write();
        let Some(e) = inner.pods.get_mut(uid) else { return };
        let Some(st) = e.pod.status.as_ref() else { return };
        if st.message.as_deref() == Some(message.as_str()) {
            return;
        }
        if let Some(st) = Arc::make_mut(&mut e.pod).status.as_mut() {
            st.message = Some(message);
        }
        let seq = inner.touch(uid);
        self.version.send_replace(seq);
    }

    pub fn remove(&self, uid: &str) {
        let mut inner = self.write();
        let Some(e) = inner.pods.remove(uid) else { return };
        inner.changed.remove(&e.seq);
        inner.seq += 1;
        let seq = inner.seq;
        inner.removals.insert(seq, e.pod);
        inner.removed.insert(uid.to_string(), seq);
        while inner.removals.len() > REMOVALS_KEPT {
            let Some((old, gone)) = inner.removals.pop_first() else { break };
            inner.removed.remove(gone.metadata.uid.as_deref().unwrap_or_default());
            inner.floor = old;
        }
        self.version.send_replace(seq);
    }

    pub fn get(&self, uid: &str) -> Option<PodStatus> {
        self.read().pods.get(uid).and_then(|e| e.pod.status.clone())
    }

    /// Whether the pod's phase is Succeeded or Failed (terminal pods hold no resources).
    pub fn is_terminal(&self, uid: &str) -> bool {
        self.read()
            .pods
            .get(uid)
            .and_then(|e| e.pod.status.as_ref())
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == "Succeeded" || p == "Failed")
    }

    /// How many pods' statuses satisfy `f`, without copying them.
    pub fn count(&self, f: impl Fn(&PodStatus) -> bool) -> usize {
        self.read().pods.values().filter(|e| e.pod.status.as_ref().is_some_and(&f)).count()
    }

    /// Every pod with its status, ordered by UID.
    pub fn list(&self) -> Vec<Arc<Pod>> {
        self.read().pods.values().map(|e| e.pod.clone()).collect()
    }

    /// What changed after version `since` (0: everything), ordered by UID.
    pub fn changes(&self, since: u64) -> Changes {
        let inner = self.read();
        let full = since < inner.floor;
        let mut updated: Vec<Arc<Pod>> = if full {
            inner.pods.values().map(|e| e.pod.clone()).collect()
        } else {
            inner.changed.range(since + 1..).filter_map(|(_, uid)| inner.pods.get(uid)).map(|e| e.pod.clone()).collect()
        };
        updated.sort_by(|a, b| a.metadata.uid.cmp(&b.metadata.uid));
        let mut removed: Vec<Arc<Pod>> =
            if full { Vec::new() } else { inner.removals.range(since + 1..).map(|(_, pod)| pod.clone()).collect() };
        removed.sort_by(|a, b| a.metadata.uid.cmp(&b.metadata.uid));
        Changes { version: inner.seq, updated, removed, full }
    }

    /// The pod named `name` in `namespace`, with its status.
    pub fn find(&self, namespace: &str, name: &str) -> Option<Arc<Pod>> {
        self.read()
            .pods
            .values()
            .find(|e| {
                e.pod.metadata.name.as_deref() == Some(name)
                    && e.pod.metadata.namespace.as_deref().unwrap_or("default") == namespace
            })
            .map(|e| e.pod.clone())
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.uid = Some(uid.into());
        p.metadata.name = Some(uid.into());
        p
    }

    fn phase(p: &str) -> PodStatus {
        PodStatus { phase: Some(p.into()), ..Default::default() }
    }

    fn uids(c: &Changes) -> Vec<&str> {
        c.updated.iter().map(|p| p.metadata.uid.as_deref().unwrap_or_default()).collect()
    }

    #[test]
    fn only_changed_pods_are_handed_out_and_shared_not_copied() {
        let s = Statuses::new();
        for uid in ["a", "b", "c"] {
            s.set(&pod(uid), phase("Pending"));
        }
        let first = s.changes(0);
        assert_eq!(uids(&first), ["a", "b", "c"]);
        assert!(first.removed.is_empty() && !first.full);

        // b changes, c is set to what it already has: only b is handed out.
        assert!(s.set(&pod("b"), phase("Running")));
        assert!(!s.set(&pod("c"), phase("Pending")));
        let next = s.changes(first.version);
        assert_eq!(uids(&next), ["b"]);
        let listed = s.list();
        assert!(Arc::ptr_eq(&next.updated[0], &listed[1]), "readers share the stored pod");
        assert!(Arc::ptr_eq(&first.updated[0], &listed[0]), "an unchanged pod is the same Arc");

        // A message change and a removal.
        s.set_message("a", "pulling".into());
        s.remove("c");
        let last = s.changes(next.version);
        assert_eq!(uids(&last), ["a"]);
        assert_eq!(last.updated[0].status.as_ref().unwrap().message.as_deref(), Some("pulling"));
        let removed: Vec<&str> = last.removed.iter().map(|p| p.metadata.uid.as_deref().unwrap_or_default()).collect();
        assert_eq!(removed, ["c"]);
        assert_eq!(first.updated[0].status.as_ref().unwrap().message, None, "a handed-out Arc never changes");

        let none = s.changes(last.version);
        assert!(none.updated.is_empty() && none.removed.is_empty());
        assert_eq!(none.version, last.version);
    }

    #[test]
    fn a_pod_removed_and_set_again_is_updated_not_removed() {
        let s = Statuses::new();
        s.set(&pod("a"), phase("Running"));
        let v = s.changes(0).version;
        s.remove("a");
        s.set(&pod("a"), phase("Pending"));
        let c = s.changes(v);
        assert_eq!(uids(&c), ["a"]);
        assert!(c.removed.is_empty());
    }

    #[test]
    fn a_reader_behind_the_remembered_removals_starts_over() {
        let s = Statuses::new();
        s.set(&pod("keep"), phase("Running"));
        let v = s.changes(0).version;
        for i in 0..=REMOVALS_KEPT {
            let uid = format!("gone-{i}");
            s.set(&pod(&uid), phase("Running"));
            s.remove(&uid);
        }
        let c = s.changes(v);
        assert!(c.full);
        assert_eq!(uids(&c), ["keep"]);
        assert!(!s.changes(c.version).full);
    }
}
