//! Volumes: the volume manager (desired state, actual state, reconciler) and the volume plugins.
//!
//! Pod workers hand the manager their pods ([`VolumeManager::wait_ready`] before containers are
//! created, [`VolumeManager::tear_down_pod`] once they are gone); the reconciler task sets volumes
//! up, rewrites configMap/secret/projected/downwardAPI volumes every `resync` (and at once when a
//! pod's labels or annotations change), retries failures with backoff and reports them as
//! `FailedMount` / `FailedUnMount` events. The bookkeeping is [`state::State`]; each plugin is its
//! own file. After a restart the volumes on disk are the actual state again ([`reconstruct`]).

pub mod atomic_writer;
pub mod configmap;
pub mod csi;
pub mod downward_api;
pub mod empty_dir;
pub mod host_path;
pub mod mount;
pub mod ownership;
pub mod plugins;
pub mod projected;
pub mod reconstruct;
pub mod secret;
pub mod state;
pub mod subpath;

use crate::api::DynApi;
use crate::api::objects::Objects;
use crate::clock::DynClock;
use crate::event_recorder::{Recorder, Type};
use crate::meta::pod_name;
use k8s_openapi::api::core::v1::{Pod, Volume};
use mount::DynMounter;
use plugins::{Ctx, Kind};
use state::{Op, Readiness, State, Teardown};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};
use tokio::sync::{Notify, watch};

/// What the CSI plugin does for the manager (implemented by `csi::CsiVolumes`): set up a
/// persistentVolumeClaim/csi volume and return the directory containers bind, tear one down.
/// Errors are the user-facing FailedMount / FailedUnMount messages.
#[async_trait::async_trait]
pub trait CsiPlugin: Send + Sync + 'static {
    async fn set_up(&self, pod: &Pod, volume: &Volume) -> csi::Result<PathBuf>;
    async fn tear_down(&self, pod_uid: &str, volume_dir: &Path) -> csi::Result<()>;
}

/// Why a pod's volumes could not be torn down.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The FailedUnMount message of each volume, joined by "; ".
    #[error("{}", .0.join("; "))]
    TearDown(Vec<String>),
    #[error("timed out waiting for the volumes to be torn down")]
    TearDownTimedOut,
    #[error(transparent)]
    SubPath(#[from] subpath::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Node facts the downward API and memory-backed volumes need.
#[derive(Debug, Clone, Default)]
pub struct NodeFacts {
    pub name: String,
    /// Allocatable cpu (millicores) and memory (bytes): the defaults of resourceFieldRef limits
    /// and the size of a tmpfs whose pod has no memory limit.
    pub allocatable_cpu_milli: Option<i64>,
    pub allocatable_memory: Option<i64>,
}

impl NodeFacts {
    /// The defaults of resourceFieldRef limits.
    pub fn allocatable(&self) -> crate::downward::Allocatable {
        crate::downward::Allocatable { cpu_milli: self.allocatable_cpu_milli, memory: self.allocatable_memory }
    }
}

pub struct Config {
    pub root_dir: PathBuf,
    pub node: NodeFacts,
    /// The API server, for serviceAccountToken projections.
    pub api: Option<DynApi>,
    /// The node's reader of ConfigMaps and Secrets (shared with env and imagePullSecrets).
    pub objects: Option<Objects>,
    pub events: Recorder,
    pub clock: DynClock,
    /// How often API-backed volumes are rewritten (syncFrequency).
    pub resync: Duration,
    pub csi: Option<Arc<dyn CsiPlugin>>,
    /// Mounts tmpfs and subPath binds ([`mount::HostMounter`] on a node).
    pub mounter: DynMounter,
}

impl Config {
    /// A manager without API server, events or CSI (static pods, tests).
    pub fn new(root_dir: PathBuf, clock: DynClock) -> Self {
        Self {
            root_dir,
            node: NodeFacts::default(),
            api: None,
            objects: None,
            events: Recorder::disabled(),
            clock,
            resync: Duration::from_secs(60),
            csi: None,
            mounter: mount::host(),
        }
    }
}

/// A pod's volumes, set up: name → host path.
#[derive(Debug, Clone, Default)]
pub struct PodVolumes(HashMap<String, PathBuf>);

impl PodVolumes {
    pub fn from_map(m: HashMap<String, PathBuf>) -> Self {
        Self(m)
    }

    pub fn host_path(&self, name: &str) -> Option<&Path> {
        self.0.get(name).map(PathBuf::as_path)
    }
}

/// Why a pod's containers cannot start yet.
#[derive(Debug, Clone, PartialEq)]
pub struct NotReady {
    /// "Unable to attach or mount volumes: unmounted volumes=[…]: …", naming each volume's error.
    pub message: String,
    /// When a failed volume is retried next.
    pub retry_at: Option<SystemTime>,
}

/// An emptyDir in use, for the eviction manager (usage against `sizeLimit`).
#[derive(Debug, Clone, PartialEq)]
pub struct EmptyDirVolume {
    pub pod_uid: String,
    pub namespace: String,
    pub pod_name: String,
    pub volume: String,
    pub path: PathBuf,
    pub size_limit: Option<i64>,
    pub memory: bool,
}

struct Inner {
    cfg: Config,
    state: Mutex<State>,
    wake: Notify,
    version: watch::Sender<u64>,
    tokens: projected::Tokens,
}

/// The volume manager's handle.
#[derive(Clone)]
pub struct VolumeManager {
    inner: Arc<Inner>,
}

impl VolumeManager {
    /// The handle and the reconciler task to spawn. What is set up on disk is reconstructed
    /// first.
    pub fn new(cfg: Config) -> (Self, Reconciler) {
        let mut st = State::default();
        let mounts = cfg.mounter.mounts().unwrap_or_default();
        let now = cfg.clock.now();
        for f in reconstruct::scan(&cfg.root_dir, &mounts) {
            let kind = Kind::from_plugin_dir(&f.plugin_dir);
            let path = if kind == Kind::Csi { f.dir.join("mount") } else { f.dir.clone() };
            tracing::info!(pod_uid = %f.pod_uid, volume = %f.name, plugin = %f.plugin_dir, mounted = ?f.mounted, "reconstructed volume");
            let m = state::Mounted { kind, dir: f.dir, path, synced_at: now, reconstructed: true };
            st.actual.insert((f.pod_uid, f.name), m);
        }
        let inner = Arc::new(Inner {
            cfg,
            state: Mutex::new(st),
            wake: Notify::new(),
            version: watch::channel(0).0,
            tokens: projected::Tokens::default(),
        });
        (Self { inner: inner.clone() }, Reconciler(inner))
    }

    /// [`VolumeManager::new`] with the reconciler spawned on the current runtime.
    pub fn spawn(cfg: Config) -> Self {
        let (m, reconciler) = Self::new(cfg);
        tokio::spawn(reconciler.run(tokio_util::sync::CancellationToken::new()));
        m
    }

    /// The mounter the manager's plugins use, for the subPath binds the pod side prepares
    /// ([`subpath::prepare_with`]) and the pod directory's removal.
    pub fn mounter(&self) -> &DynMounter {
        &self.inner.cfg.mounter
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wants the pod's volumes (a newer version of the pod refreshes its downward API files).
    pub fn set_pod(&self, pod: &Pod) {
        self.lock().set_pod(pod);
        self.inner.wake.notify_one();
    }

    /// Waits (at most `timeout`) until every volume of the pod is set up. Returns early when
    /// each missing one has failed: the message names the volumes and their errors.
    pub async fn wait_ready(&self, pod: &Pod, timeout: Duration) -> Result<PodVolumes, NotReady> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if let Err(e) = plugins::make_pod_dirs(&self.inner.cfg.root_dir, &uid) {
            return Err(NotReady { message: format!("Unable to attach or mount volumes: {e}"), retry_at: None });
        }
        let mut rx = self.inner.version.subscribe();
        self.set_pod(pod);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let readiness = self.lock().readiness(pod);
            let (unmounted, errors, failed, retry_at) = match readiness {
                Readiness::Ready(paths) => return Ok(PodVolumes(paths)),
                Readiness::Waiting { unmounted, errors, failed, retry_at } => (unmounted, errors, failed, retry_at),
            };
            let message = |tail: &str| {
                format!("Unable to attach or mount volumes: unmounted volumes=[{}]: {tail}", unmounted.join(" "))
            };
            if failed {
                return Err(NotReady { message: message(&errors.join("; ")), retry_at });
            }
            if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
                let tail =
                    if errors.is_empty() { "timed out waiting for the condition".into() } else { errors.join("; ") };
                return Err(NotReady { message: message(&tail), retry_at });
            }
        }
    }

    /// Tears the pod's volumes down (after its containers are gone) and waits at most
    /// `timeout`. An error names each volume that could not be torn down; the manager keeps
    /// retrying with backoff, and calling again waits again.
    pub async fn tear_down_pod(&self, pod: &Pod, timeout: Duration) -> Result<()> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let mut rx = self.inner.version.subscribe();
        {
            let mut st = self.lock();
            st.known.entry(uid.clone()).or_insert_with(|| pod.clone());
            st.remove_pod(&uid, false);
        }
        self.inner.wake.notify_one();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let status = self.lock().teardown(&uid);
            match status {
                Teardown::Done => {
                    // hostPath volumes have no directory but may have subPath binds.
                    let pod_dir = plugins::pod_dir(&self.inner.cfg.root_dir, &uid);
                    subpath::clean(&*self.inner.cfg.mounter, &pod_dir, None)?;
                    self.inner.tokens.forget_pod(&uid);
                    self.lock().forget(&uid);
                    return Ok(());
                }
                Teardown::Failed(errors) => return Err(Error::TearDown(errors)),
                Teardown::Pending => {}
            }
            if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
                return Err(Error::TearDownTimedOut);
            }
        }
    }

    /// Housekeeping: pods with volumes or a directory on disk that no worker knows (deleted
    /// while the kubelet was down) are torn down and their directories removed.
    pub fn cleanup_orphans(&self, known: &HashSet<String>) {
        let root = &self.inner.cfg.root_dir;
        let on_disk = reconstruct::pod_uids(root);
        let mut empty = Vec::new();
        {
            let mut st = self.lock();
            let with_volumes: HashSet<String> = st.actual.keys().map(|k| k.0.clone()).collect();
            for uid in with_volumes.iter().chain(on_disk.iter()) {
                if known.contains(uid) || st.desired.contains_key(uid) || st.removing.contains_key(uid) {
                    continue;
                }
                tracing::info!(pod_uid = %uid, "removing the volumes and directory of a pod no worker knows");
                st.remove_pod(uid, true);
                if !with_volumes.contains(uid) {
                    empty.push(uid.clone());
                }
            }
        }
        for uid in empty {
            remove_orphan_dir(&self.inner, &uid);
        }
        self.inner.wake.notify_one();
    }

    /// The emptyDir volumes of running pods with their limits, for the eviction manager.
    pub fn empty_dirs(&self) -> Vec<EmptyDirVolume> {
        let st = self.lock();
        let mut out = Vec::new();
        for ((uid, name), m) in &st.actual {
            let Some(pod) = st.desired.get(uid).filter(|_| m.kind == Kind::EmptyDir) else { continue };
            let Some(v) =
                pod.spec.as_ref().and_then(|s| s.volumes.as_ref()).and_then(|v| v.iter().find(|v| &v.name == name))
            else {
                continue;
            };
            out.push(EmptyDirVolume {
                pod_uid: uid.clone(),
                namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                pod_name: pod.metadata.name.clone().unwrap_or_default(),
                volume: name.clone(),
                path: m.path.clone(),
                size_limit: empty_dir::size_limit(v),
                memory: empty_dir::is_memory(v),
            });
        }
        out
    }
}

fn remove_orphan_dir(inner: &Inner, uid: &str) {
    let dir = plugins::pod_dir(&inner.cfg.root_dir, uid);
    let m = &*inner.cfg.mounter;
    let result = subpath::clean(m, &dir, None).and_then(|()| Ok(mount::remove_unmounted_with(m, &dir)?));
    match result {
        Ok(()) => {
            inner.tokens.forget_pod(uid);
            inner.state.lock().unwrap_or_else(|p| p.into_inner()).forget(uid);
        }
        Err(e) => tracing::warn!(pod_uid = %uid, error = %e, "cannot remove orphaned pod directory yet"),
    }
}

async fn execute(inner: Arc<Inner>, op: Op) {
    let cfg = &inner.cfg;
    let ctx = Ctx {
        root: &cfg.root_dir,
        api: cfg.api.as_ref(),
        objects: cfg.objects.as_ref(),
        tokens: &inner.tokens,
        node: &cfg.node,
        csi: cfg.csi.as_ref(),
        mounter: &*cfg.mounter,
        now: cfg.clock.now(),
    };
    match op {
        Op::SetUp { key, pod, volume } => {
            let kind = Kind::of(&volume);
            let result = plugins::set_up(&ctx, &pod, &volume).await.map(|path| {
                let dir = match kind {
                    Kind::HostPath => PathBuf::new(),
                    Kind::Csi => path.parent().map(Path::to_path_buf).unwrap_or_default(),
                    _ => path.clone(),
                };
                (dir, path)
            });
            let first = !inner.state.lock().unwrap_or_else(|p| p.into_inner()).actual.contains_key(&key);
            match &result {
                Ok(_) if first => tracing::info!(pod = %pod_name(&pod), volume = %key.1, "volume set up"),
                Ok(_) => tracing::debug!(pod = %pod_name(&pod), volume = %key.1, "volume refreshed"),
                Err(e) => {
                    let msg = format!("MountVolume.SetUp failed for volume {:?} : {e}", key.1);
                    tracing::warn!(pod = %pod_name(&pod), volume = %key.1, "{msg}");
                    cfg.events.pod(&pod, None, Type::Warning, "FailedMount", msg);
                }
            }
            let result = result.as_ref().map(Clone::clone).map_err(|e| e as &dyn std::fmt::Display);
            inner.state.lock().unwrap_or_else(|p| p.into_inner()).finish_set_up(&key, kind, result, cfg.clock.now());
        }
        Op::TearDown { key, kind, dir } => {
            let pod_dir = plugins::pod_dir(&cfg.root_dir, &key.0);
            let result = match subpath::clean(ctx.mounter, &pod_dir, Some(&key.1)) {
                Ok(()) => plugins::tear_down(&ctx, &key.0, kind, &dir).await,
                Err(e) => Err(e.into()),
            };
            let (pod, orphan_done) = {
                let mut st = inner.state.lock().unwrap_or_else(|p| p.into_inner());
                st.finish_tear_down(
                    &key,
                    result.as_ref().copied().map_err(|e| e as &dyn std::fmt::Display),
                    cfg.clock.now(),
                );
                let done = st.removing.get(&key.0) == Some(&true) && st.teardown(&key.0) == Teardown::Done;
                (st.known.get(&key.0).cloned(), done)
            };
            match result {
                Ok(()) => tracing::info!(pod_uid = %key.0, volume = %key.1, "volume torn down"),
                Err(e) => {
                    let msg = format!("UnmountVolume.TearDown failed for volume {:?} : {e}", key.1);
                    tracing::warn!(pod_uid = %key.0, volume = %key.1, "{msg}");
                    if let Some(pod) = &pod {
                        cfg.events.pod(pod, None, Type::Warning, "FailedUnMount", msg);
                    }
                }
            }
            if orphan_done {
                remove_orphan_dir(&inner, &key.0);
            }
        }
    }
    inner.version.send_modify(|v| *v += 1);
    inner.wake.notify_one();
}

/// The volume manager's reconciler task.
pub struct Reconciler(Arc<Inner>);

impl Reconciler {
    /// Runs what [`State::plan`] says is due, then sleeps until the next retry or refresh, or
    /// until woken. Once `token` is cancelled it starts nothing new and waits for the set-ups and
    /// teardowns in flight (aborted with it when the node's bound runs out).
    pub async fn run(self, token: tokio_util::sync::CancellationToken) {
        let mut ops = tokio::task::JoinSet::new();
        token.run_until_cancelled(run(self.0, &mut ops)).await;
        while ops.join_next().await.is_some() {}
    }
}

async fn run(inner: Arc<Inner>, running: &mut tokio::task::JoinSet<()>) {
    let resync = inner.cfg.resync.max(Duration::from_secs(1));
    loop {
        while running.try_join_next().is_some() {}
        let now = inner.cfg.clock.now();
        let (ops, next) = {
            let mut st = inner.state.lock().unwrap_or_else(|p| p.into_inner());
            let ops = st.plan(now, resync);
            (ops, st.next_due(resync))
        };
        for op in ops {
            running.spawn(execute(inner.clone(), op));
        }
        let wait = next
            .map(|t| t.duration_since(now).unwrap_or_default())
            .unwrap_or(resync)
            .clamp(Duration::from_millis(100), resync);
        tokio::select! {
            _ = inner.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod mount_tests;
#[cfg(test)]
mod tests;
