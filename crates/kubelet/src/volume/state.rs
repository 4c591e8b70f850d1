//! The volume manager's bookkeeping, free of I/O: the desired state (pods and their volumes),
//! the actual state (what is set up, with the host path), failures with their backoff, and
//! [`State::plan`] — which set-ups, refreshes and teardowns are due now. The reconciler in
//! `mod.rs` performs them and reports back through `finish_*`.

use super::plugins::Kind;
use crate::backoff::Exponential;
use k8s_openapi::api::core::v1::{Pod, Volume};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// (pod UID, volume name)
pub type Key = (String, String);

/// First retry after a failed operation; doubles up to [`MAX_BACKOFF`]. Upstream waits 500 ms
/// doubling to 2 min 2 s; we cap lower so a fixed object shows up in a running pod sooner.
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(500);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A volume that is set up.
#[derive(Debug, Clone, PartialEq)]
pub struct Mounted {
    pub kind: Kind,
    /// What teardown removes: `<pod>/volumes/<plugin>/<name>` (empty for hostPath).
    pub dir: PathBuf,
    /// What containers bind (the host path for hostPath).
    pub path: PathBuf,
    /// Last successful set-up or refresh; refreshable volumes are rewritten `resync` later.
    pub synced_at: SystemTime,
    /// Found on disk after a restart: counts as mounted; refreshed (set up again, idempotently)
    /// as soon as its pod is known.
    pub reconstructed: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub message: String,
    pub attempts: u32,
    pub retry_at: SystemTime,
}

impl Failure {
    fn next(prev: Option<&Failure>, message: String, now: SystemTime) -> Failure {
        let attempts = prev.map(|f| f.attempts + 1).unwrap_or(1);
        let delay = Exponential::new(INITIAL_BACKOFF, MAX_BACKOFF).nth(attempts);
        Failure { message, attempts, retry_at: now + delay }
    }
}

/// An operation the reconciler is to run.
#[derive(Debug, Clone)]
pub enum Op {
    SetUp { key: Key, pod: Box<Pod>, volume: Box<Volume> },
    TearDown { key: Key, kind: Kind, dir: PathBuf },
}

/// Whether a pod's volumes can be used.
#[derive(Debug, Clone, PartialEq)]
pub enum Readiness {
    /// Every volume is set up: name → host path.
    Ready(HashMap<String, PathBuf>),
    /// Some are not; `failed` when each of those has failed at least once (nothing to wait for
    /// but the retry at `retry_at`).
    Waiting { unmounted: Vec<String>, errors: Vec<String>, failed: bool, retry_at: Option<SystemTime> },
}

/// How a pod's teardown stands.
#[derive(Debug, Clone, PartialEq)]
pub enum Teardown {
    Done,
    Pending,
    Failed(Vec<String>),
}

#[derive(Default)]
pub struct State {
    /// Pods whose volumes are wanted, by UID.
    pub desired: BTreeMap<String, Pod>,
    /// Pods whose metadata changed since their volumes were written (downward API).
    pub refresh: BTreeSet<String>,
    pub actual: BTreeMap<Key, Mounted>,
    pub mount_failures: BTreeMap<Key, Failure>,
    pub unmount_failures: BTreeMap<Key, Failure>,
    pub running: BTreeSet<Key>,
    /// Pods whose volumes are to go; `true` for orphans (no worker), whose directory the
    /// manager removes itself once empty.
    pub removing: BTreeMap<String, bool>,
    /// The last pod object seen per UID (for events about it).
    pub known: BTreeMap<String, Pod>,
}

fn volumes(pod: &Pod) -> &[Volume] {
    pod.spec.as_ref().and_then(|s| s.volumes.as_deref()).unwrap_or_default()
}

fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

impl State {
    /// Wants the pod's volumes (a newer version replaces the older one).
    pub fn set_pod(&mut self, pod: &Pod) {
        let u = uid(pod);
        self.removing.remove(&u);
        if let Some(old) = self.desired.get(&u)
            && (old.metadata.labels != pod.metadata.labels || old.metadata.annotations != pod.metadata.annotations)
        {
            self.refresh.insert(u.clone());
        }
        self.known.insert(u.clone(), pod.clone());
        self.desired.insert(u, pod.clone());
    }

    /// No longer wants the pod's volumes: they are torn down.
    pub fn remove_pod(&mut self, uid: &str, orphan: bool) {
        self.desired.remove(uid);
        self.refresh.remove(uid);
        self.mount_failures.retain(|k, _| k.0 != uid);
        self.removing.entry(uid.to_string()).or_insert(orphan);
    }

    /// The operations due at `now`, marked running.
    pub fn plan(&mut self, now: SystemTime, resync: Duration) -> Vec<Op> {
        let mut ops = Vec::new();
        for (u, pod) in &self.desired {
            let refresh = self.refresh.contains(u);
            for v in volumes(pod) {
                let key = (u.clone(), v.name.clone());
                if self.running.contains(&key) || self.mount_failures.get(&key).is_some_and(|f| f.retry_at > now) {
                    continue;
                }
                let due = match self.actual.get(&key) {
                    None => true,
                    Some(m) => m.reconstructed || (m.kind.refreshable() && (refresh || m.synced_at + resync <= now)),
                };
                if due {
                    ops.push(Op::SetUp { key, pod: Box::new(pod.clone()), volume: Box::new(v.clone()) });
                }
            }
        }
        self.refresh.clear();
        for (key, m) in &self.actual {
            if !self.removing.contains_key(&key.0) || self.desired.contains_key(&key.0) || self.running.contains(key) {
                continue;
            }
            if self.unmount_failures.get(key).is_some_and(|f| f.retry_at > now) {
                continue;
            }
            ops.push(Op::TearDown { key: key.clone(), kind: m.kind, dir: m.dir.clone() });
        }
        for op in &ops {
            let key = match op {
                Op::SetUp { key, .. } | Op::TearDown { key, .. } => key,
            };
            self.running.insert(key.clone());
        }
        ops
    }

    /// When the reconciler must look again at the latest (retries and refreshes).
    pub fn next_due(&self, resync: Duration) -> Option<SystemTime> {
        let retries = self.mount_failures.values().chain(self.unmount_failures.values()).map(|f| f.retry_at);
        let refreshes = self
            .actual
            .iter()
            .filter(|(k, m)| m.kind.refreshable() && self.desired.contains_key(&k.0))
            .map(|(_, m)| m.synced_at + resync);
        retries.chain(refreshes).min()
    }

    /// Records a set-up's result (a failure by its message, which readiness reports). A failure
    /// of a volume already set up (a refresh) keeps it.
    pub fn finish_set_up(
        &mut self,
        key: &Key,
        kind: Kind,
        result: Result<(PathBuf, PathBuf), &dyn std::fmt::Display>,
        now: SystemTime,
    ) {
        self.running.remove(key);
        match result {
            Ok((dir, path)) => {
                self.mount_failures.remove(key);
                // A reconstructed CSI volume is named by its PV; the set-up found its directory.
                self.actual.retain(|k, m| {
                    !(k.0 == key.0 && k != key && m.reconstructed && !dir.as_os_str().is_empty() && m.dir == dir)
                });
                self.actual.insert(key.clone(), Mounted { kind, dir, path, synced_at: now, reconstructed: false });
            }
            Err(e) => {
                let f = Failure::next(self.mount_failures.get(key), e.to_string(), now);
                self.mount_failures.insert(key.clone(), f);
            }
        }
    }

    /// Records a teardown's result.
    pub fn finish_tear_down(&mut self, key: &Key, result: Result<(), &dyn std::fmt::Display>, now: SystemTime) {
        self.running.remove(key);
        match result {
            Ok(()) => {
                self.actual.remove(key);
                self.unmount_failures.remove(key);
            }
            Err(e) => {
                let f = Failure::next(self.unmount_failures.get(key), e.to_string(), now);
                self.unmount_failures.insert(key.clone(), f);
            }
        }
    }

    pub fn readiness(&self, pod: &Pod) -> Readiness {
        let u = uid(pod);
        let mut paths = HashMap::new();
        let (mut unmounted, mut errors, mut failed, mut retry_at) = (Vec::new(), Vec::new(), true, None::<SystemTime>);
        for v in volumes(pod) {
            let key = (u.clone(), v.name.clone());
            if let Some(m) = self.actual.get(&key) {
                paths.insert(v.name.clone(), m.path.clone());
                continue;
            }
            unmounted.push(v.name.clone());
            match self.mount_failures.get(&key) {
                Some(f) if !self.running.contains(&key) => {
                    errors.push(format!("MountVolume.SetUp failed for volume {:?} : {}", v.name, f.message));
                    retry_at = Some(retry_at.map_or(f.retry_at, |r| r.min(f.retry_at)));
                }
                _ => failed = false,
            }
        }
        if unmounted.is_empty() {
            Readiness::Ready(paths)
        } else {
            Readiness::Waiting { unmounted, errors, failed, retry_at }
        }
    }

    pub fn teardown(&self, uid: &str) -> Teardown {
        let left: Vec<&Key> = self.actual.keys().filter(|k| k.0 == uid).collect();
        if left.is_empty() && !self.running.iter().any(|k| k.0 == uid) {
            return Teardown::Done;
        }
        let mut errors = Vec::new();
        for k in &left {
            match self.unmount_failures.get(*k) {
                Some(f) if !self.running.contains(*k) => {
                    errors.push(format!("UnmountVolume.TearDown failed for volume {:?} : {}", k.1, f.message))
                }
                _ => return Teardown::Pending,
            }
        }
        Teardown::Failed(errors)
    }

    /// Forgets a pod whose volumes are all gone.
    pub fn forget(&mut self, uid: &str) {
        self.removing.remove(uid);
        self.known.remove(uid);
        self.unmount_failures.retain(|k, _| k.0 != uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, vols: &[&str]) -> Pod {
        let volumes: Vec<serde_json::Value> =
            vols.iter().map(|n| serde_json::json!({"name": n, "configMap": {"name": n}})).collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "uid": uid, "labels": {"a": "1"}},
            "spec": {"containers": [], "volumes": volumes}
        }))
        .unwrap()
    }

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
    }

    const RESYNC: Duration = Duration::from_secs(60);

    fn keys(ops: &[Op]) -> Vec<(&'static str, String)> {
        ops.iter()
            .map(|o| match o {
                Op::SetUp { key, .. } => ("up", key.1.clone()),
                Op::TearDown { key, .. } => ("down", key.1.clone()),
            })
            .collect()
    }

    fn ok(s: &mut State, key: &Key, now: SystemTime) {
        let dir = PathBuf::from(format!("/v/{}", key.1));
        s.finish_set_up(key, Kind::ConfigMap, Ok((dir.clone(), dir)), now);
    }

    #[test]
    fn volumes_are_set_up_once_then_refreshed_every_resync() {
        let mut s = State::default();
        let p = pod("u1", &["a", "b"]);
        s.set_pod(&p);
        assert_eq!(keys(&s.plan(t(0), RESYNC)), [("up", "a".into()), ("up", "b".into())]);
        assert!(s.plan(t(0), RESYNC).is_empty(), "running ops are not planned twice");
        assert!(matches!(s.readiness(&p), Readiness::Waiting { failed: false, .. }));
        let (a, b) = (("u1".to_string(), "a".to_string()), ("u1".to_string(), "b".to_string()));
        ok(&mut s, &a, t(1));
        ok(&mut s, &b, t(1));
        match s.readiness(&p) {
            Readiness::Ready(paths) => assert_eq!(paths["a"], PathBuf::from("/v/a")),
            other => panic!("{other:?}"),
        }
        assert!(s.plan(t(30), RESYNC).is_empty());
        assert_eq!(s.next_due(RESYNC), Some(t(61)));
        assert_eq!(keys(&s.plan(t(61), RESYNC)).len(), 2);
        ok(&mut s, &a, t(61));
        ok(&mut s, &b, t(61));
        // Changed labels rewrite at once (downward API).
        let mut relabeled = p.clone();
        relabeled.metadata.labels = Some([("a".to_string(), "2".to_string())].into());
        s.set_pod(&relabeled);
        assert_eq!(keys(&s.plan(t(62), RESYNC)).len(), 2);
    }

    #[test]
    fn failures_back_off_and_are_reported_then_succeed() {
        let mut s = State::default();
        let p = pod("u1", &["a"]);
        s.set_pod(&p);
        let a = ("u1".to_string(), "a".to_string());
        s.plan(t(0), RESYNC);
        s.finish_set_up(&a, Kind::ConfigMap, Err(&"configmap \"a\" not found"), t(0));
        match s.readiness(&p) {
            Readiness::Waiting { unmounted, errors, failed, retry_at } => {
                assert_eq!(unmounted, ["a"]);
                assert_eq!(errors, ["MountVolume.SetUp failed for volume \"a\" : configmap \"a\" not found"]);
                assert!(failed);
                assert_eq!(retry_at, Some(t(0) + Duration::from_millis(500)));
            }
            other => panic!("{other:?}"),
        }
        assert!(s.plan(t(0), RESYNC).is_empty(), "backing off");
        let mut now = t(1);
        let mut delays = Vec::new();
        for _ in 0..8 {
            assert_eq!(s.plan(now, RESYNC).len(), 1);
            s.finish_set_up(&a, Kind::ConfigMap, Err(&"still"), now);
            let next = s.mount_failures[&a].retry_at;
            delays.push(next.duration_since(now).unwrap().as_millis());
            now = next;
        }
        assert_eq!(delays, [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
        s.plan(now, RESYNC);
        ok(&mut s, &a, now);
        assert!(matches!(s.readiness(&p), Readiness::Ready(_)));
        // A failing refresh keeps the volume.
        s.plan(now + RESYNC, RESYNC);
        s.finish_set_up(&a, Kind::ConfigMap, Err(&"api down"), now + RESYNC);
        assert!(matches!(s.readiness(&p), Readiness::Ready(_)));
    }

    #[test]
    fn removed_pods_are_torn_down_and_failures_reported() {
        let mut s = State::default();
        let p = pod("u1", &["a"]);
        s.set_pod(&p);
        let a = ("u1".to_string(), "a".to_string());
        s.plan(t(0), RESYNC);
        ok(&mut s, &a, t(0));
        assert_eq!(s.teardown("u1"), Teardown::Pending);
        s.remove_pod("u1", false);
        assert_eq!(keys(&s.plan(t(1), RESYNC)), [("down", "a".into())]);
        assert_eq!(s.teardown("u1"), Teardown::Pending);
        s.finish_tear_down(&a, Err(&"device or resource busy"), t(1));
        assert_eq!(
            s.teardown("u1"),
            Teardown::Failed(vec!["UnmountVolume.TearDown failed for volume \"a\" : device or resource busy".into()])
        );
        assert!(s.plan(t(1), RESYNC).is_empty(), "backing off");
        assert_eq!(keys(&s.plan(t(2), RESYNC)), [("down", "a".into())]);
        s.finish_tear_down(&a, Ok(()), t(2));
        assert_eq!(s.teardown("u1"), Teardown::Done);
    }

    #[test]
    fn reconstructed_volumes_count_as_mounted_and_are_refreshed_not_remounted() {
        let mut s = State::default();
        let a = ("u1".to_string(), "a".to_string());
        let dir = PathBuf::from("/v/a");
        s.actual.insert(
            a.clone(),
            Mounted { kind: Kind::ConfigMap, dir: dir.clone(), path: dir, synced_at: t(0), reconstructed: true },
        );
        // Nothing happens to them before their pod is known or removed.
        assert!(s.plan(t(0), RESYNC).is_empty());
        let p = pod("u1", &["a"]);
        s.set_pod(&p);
        assert!(matches!(s.readiness(&p), Readiness::Ready(_)));
        assert_eq!(keys(&s.plan(t(1), RESYNC)), [("up", "a".into())]);
        ok(&mut s, &a, t(1));
        assert!(!s.actual[&a].reconstructed);
        // An orphan's volumes go.
        let b = ("u2".to_string(), "x".to_string());
        s.actual.insert(
            b.clone(),
            Mounted {
                kind: Kind::EmptyDir,
                dir: "/v/x".into(),
                path: "/v/x".into(),
                synced_at: t(0),
                reconstructed: true,
            },
        );
        s.remove_pod("u2", true);
        assert_eq!(keys(&s.plan(t(2), RESYNC)), [("down", "x".into())]);
    }
}
