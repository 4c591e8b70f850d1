//! CSI volumes (pkg/volume/csi): PVC → PV → CSI driver, NodeStage/NodePublish on set-up and
//! NodeUnpublish/NodeUnstage on tear-down, drivers registered through `<root-dir>/plugins_registry`.
//!
//! [`CsiVolumes`] is what the volume manager calls; [`watcher::run`] fills the [`Drivers`] it
//! reads. Every step leaves a `vol_data.json` behind before it asks the driver for anything, so a
//! kubelet restarted at any point can still tear the volume down, and set-up of a volume that is
//! already published does nothing.

pub mod client;
pub mod drivers;
pub mod paths;
pub mod proto;
mod resolve;
pub mod watcher;

pub use client::VolumeStats;
pub use drivers::{Driver, Drivers};

use super::mount::DynMounter;
use crate::api::DynApi;
use client::Node;
use k8s_openapi::api::core::v1::{Pod, Volume};
use paths::VolData;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Why a CSI volume could not be set up or torn down, or a driver registered: the FailedMount /
/// FailedUnMount message, naming the claim, volume and driver.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Client(#[from] client::Error),
    /// `what` says what was asked ("getting PVC ns/claim").
    #[error("{what}: {source}")]
    Api { what: String, source: crate::api::ApiError },
    /// A claim, PV, CSIDriver or VolumeAttachment that does not allow the volume (yet); the
    /// message names the object and why.
    #[error("{0}")]
    Resolve(String),
    /// A plugin that cannot be registered; the message names the plugin and why.
    #[error("{0}")]
    Registration(String),
    #[error("{what}: {source}")]
    Context { what: String, source: Box<Error> },
    #[error("driver name {0} not found in the list of registered CSI drivers")]
    NoDriver(String),
    #[error("pod has no UID")]
    NoUid,
    #[error("{what} {}: {source}", path.display())]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("encoding vol_data.json: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("{}: {source}", path.display())]
    Decode { path: PathBuf, source: serde_json::Error },
    #[error("{}: driverName and volumeHandle must be set", .0.display())]
    IncompleteRecord(PathBuf),
    #[error("{} is mounted but has no {}: cannot tell which CSI driver to ask", .0.display(), paths::VOL_DATA_FILE)]
    NoRecord(PathBuf),
    #[error("{} is still mounted after {after}", path.display())]
    StillMounted { path: PathBuf, after: &'static str },
    #[error("CSINode {0}: still conflicting after 5 attempts")]
    Conflicting(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    fn context(self, what: impl std::fmt::Display) -> Error {
        Error::Context { what: what.to_string(), source: Box::new(self) }
    }
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io { what, path: path.to_path_buf(), source }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub root_dir: PathBuf,
    pub node_name: String,
}

/// The CSI volume plugin: set-up and tear-down of CSI volumes of pods. Cloneable.
#[derive(Clone)]
pub struct CsiVolumes {
    cfg: Arc<Config>,
    api: Option<DynApi>,
    drivers: Drivers,
    /// One lock per volume (driver + handle): stage/unstage decisions see a stable set of users.
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    /// Tells whether the driver's targets are mounted (the driver mounts them, not the kubelet).
    mounter: DynMounter,
}

impl CsiVolumes {
    pub fn new(cfg: Config, api: Option<DynApi>, drivers: Drivers) -> Self {
        Self { cfg: Arc::new(cfg), api, drivers, locks: Default::default(), mounter: super::mount::host() }
    }

    /// Reads mount points through `mounter` (the volume manager's) instead of the host's.
    pub fn with_mounter(mut self, mounter: DynMounter) -> Self {
        self.mounter = mounter;
        self
    }

    /// Whether `path` is a mount point (a path behind a symlink is resolved first).
    fn is_mount_point(&self, path: &Path) -> bool {
        let real = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        self.mounter.mounts().is_ok_and(|all| super::mount::mount_at(&all, &real).is_some())
    }

    pub fn drivers(&self) -> &Drivers {
        &self.drivers
    }

    /// Whether a `pods/<uid>/volumes/<plugin dir>` belongs to this plugin (`kubernetes.io~csi`).
    pub fn is_csi_dir(plugin_dir_name: &str) -> bool {
        plugin_dir_name == paths::POD_PLUGIN_DIR
    }

    async fn lock(&self, driver: &str, handle: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let m = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(format!("{driver}^{handle}")).or_default().clone()
        };
        m.lock_owned().await
    }

    async fn node(&self, driver: &str) -> Result<Node> {
        let d = self.drivers.get(driver).ok_or_else(|| Error::NoDriver(driver.to_string()))?;
        Ok(Node::connect(driver, &d.endpoint).await?)
    }

    /// Sets up a pod's `persistentVolumeClaim` (bound to a CSI PV) or inline `csi` volume and
    /// returns the directory to bind into containers (`.../kubernetes.io~csi/<name>/mount`).
    /// Errors are FailedMount messages naming the claim, volume and driver; a volume waiting for
    /// its VolumeAttachment is an error too (the caller retries).
    pub async fn set_up(&self, pod: &Pod, volume: &Volume) -> Result<PathBuf> {
        let r = resolve::resolve(self.api.as_ref(), &self.cfg.node_name, pod, volume).await?;
        let uid = pod.metadata.uid.as_deref().filter(|u| !u.is_empty()).ok_or(Error::NoUid)?;
        let target = paths::target_path(&self.cfg.root_dir, uid, &r.spec_name);
        let vol_dir = paths::pod_volume_dir(&self.cfg.root_dir, uid, &r.spec_name);
        let record = VolData {
            driver_name: r.driver.clone(),
            volume_handle: r.request.volume_id.clone(),
            spec_vol_id: r.spec_name.clone(),
            node_name: self.cfg.node_name.clone(),
            attachment_id: r.attachment_id.clone(),
            lifecycle_mode: r.lifecycle.to_string(),
        };
        let fs_group = pod.spec.as_ref().and_then(|s| s.security_context.as_ref()).and_then(|s| s.fs_group);
        // getFSGroupPolicy (checked first, as upstream's SetUpAt; here only for pods with an
        // fsGroup, as the API server always defaults the field and only test stores leave it out).
        let policy = match fs_group {
            Some(_) => Some(fs_group_policy(&r.fs_group)?),
            None => None,
        };
        let _guard = self.lock(&r.driver, &r.request.volume_id).await;
        // Published before (a restarted kubelet, a repeated call): nothing to publish; the
        // fsGroup is applied again, as upstream's SetUp after a restart does.
        if self.is_mount_point(&target)
            && VolData::load(&vol_dir).ok().flatten().is_some_and(|d| same_volume(&d, &record))
        {
            if let Some(policy) = &policy {
                let node = self.node(&r.driver).await.map_err(|e| e.context(&r.what))?;
                let caps = node.capabilities().await?;
                apply_fs_group(pod, &r, policy, caps, &target)?;
            }
            return Ok(target);
        }
        let node = self.node(&r.driver).await.map_err(|e| e.context(&r.what))?;
        let caps = node.capabilities().await?;
        let mut r = r;
        // A driver with VOLUME_MOUNT_GROUP is handed the fsGroup in NodeStage/NodePublish.
        if let (Some(gid), true) = (fs_group, caps.volume_mount_group)
            && let Some(proto::csi::volume_capability::AccessType::Mount(m)) = &mut r.request.capability.access_type
        {
            m.volume_mount_group = gid.to_string();
        }
        // The record first: whatever the driver does next can be undone by tear_down.
        std::fs::create_dir_all(&vol_dir).map_err(io_err("creating", &vol_dir))?;
        record.save(&vol_dir)?;
        let staging = if !record.is_ephemeral() && caps.stage_unstage {
            let global = paths::global_dir(&self.cfg.root_dir, &r.driver, &r.request.volume_id);
            let staging = global.join(paths::GLOBAL_MOUNT_DIR);
            if !self.is_mount_point(&staging) {
                std::fs::create_dir_all(&staging).map_err(io_err("creating", &staging))?;
                VolData {
                    driver_name: r.driver.clone(),
                    volume_handle: r.request.volume_id.clone(),
                    ..Default::default()
                }
                .save(&global)?;
                node.stage(&r.request, &staging).await.map_err(|e| Error::from(e).context(&r.what))?;
            }
            Some(staging)
        } else {
            None
        };
        node.publish(&r.request, staging.as_deref(), &target, r.readonly)
            .await
            .map_err(|e| Error::from(e).context(&r.what))?;
        tracing::info!(volume = %r.spec_name, pod_uid = %uid, driver = %r.driver, target = %target.display(), "CSI volume published");
        if let Some(policy) = &policy {
            apply_fs_group(pod, &r, policy, caps, &target)?;
        }
        Ok(target)
    }

    /// Tears down a pod's CSI volume from its `vol_data.json`: NodeUnpublishVolume, then
    /// NodeUnstageVolume once no other pod on the node publishes the volume, then the
    /// directories. `volume_dir` is `pods/<uid>/volumes/kubernetes.io~csi/<name>` or its `mount`.
    /// Idempotent; after an error (or a restart) calling it again finishes the job.
    pub async fn tear_down(&self, pod_uid: &str, volume_dir: &Path) -> Result<()> {
        let dir = match volume_dir.file_name() {
            Some(n) if n == paths::MOUNT_DIR && !volume_dir.join(paths::VOL_DATA_FILE).exists() => {
                volume_dir.parent().unwrap_or(volume_dir)
            }
            _ => volume_dir,
        };
        let target = dir.join(paths::MOUNT_DIR);
        let Some(data) = VolData::load(dir)? else {
            if self.is_mount_point(&target) {
                return Err(Error::NoRecord(target));
            }
            remove_dir(&target)?;
            return remove_dir(dir);
        };
        let handle = data.volume_handle.clone();
        let _guard = self.lock(&data.driver_name, &handle).await;
        let node =
            self.node(&data.driver_name).await.map_err(|e| e.context(format!("unmounting {}", target.display())))?;
        node.unpublish(&handle, &target).await?;
        if self.is_mount_point(&target) {
            return Err(Error::StillMounted { path: target, after: "NodeUnpublishVolume" });
        }
        remove_dir(&target)?;
        tracing::info!(pod_uid, driver = %data.driver_name, target = %target.display(), "CSI volume unpublished");
        if !data.is_ephemeral() {
            let global = paths::global_dir(&self.cfg.root_dir, &data.driver_name, &handle);
            if global.exists() && !self.published_elsewhere(&data, dir) {
                let staging = global.join(paths::GLOBAL_MOUNT_DIR);
                if node.capabilities().await?.stage_unstage {
                    node.unstage(&handle, &staging).await?;
                    if self.is_mount_point(&staging) {
                        return Err(Error::StillMounted { path: staging, after: "NodeUnstageVolume" });
                    }
                }
                remove_dir(&staging)?;
                remove_file(&global.join(paths::VOL_DATA_FILE))?;
                remove_dir(&global)?;
                tracing::info!(driver = %data.driver_name, staging = %staging.display(), "CSI volume unstaged");
            }
        }
        remove_file(&dir.join(paths::VOL_DATA_FILE))?;
        remove_dir(dir)
    }

    /// NodeGetVolumeStats of a published volume, when the driver has GET_VOLUME_STATS
    /// (`Ok(None)` otherwise). `volume_dir` as for [`CsiVolumes::tear_down`].
    pub async fn volume_stats(&self, volume_dir: &Path) -> Result<Option<VolumeStats>> {
        let dir =
            if volume_dir.ends_with(paths::MOUNT_DIR) { volume_dir.parent().unwrap_or(volume_dir) } else { volume_dir };
        let Some(data) = VolData::load(dir)? else { return Ok(None) };
        let node = self.node(&data.driver_name).await?;
        let caps = node.capabilities().await?;
        if !caps.volume_stats {
            return Ok(None);
        }
        let staging = paths::staging_path(&self.cfg.root_dir, &data.driver_name, &data.volume_handle);
        let staging = (caps.stage_unstage && !data.is_ephemeral()).then_some(staging.as_path());
        Ok(node.volume_stats(&data.volume_handle, &dir.join(paths::MOUNT_DIR), staging).await.map(Some)?)
    }

    /// Whether another pod volume directory on this node records the same volume.
    fn published_elsewhere(&self, data: &VolData, except: &Path) -> bool {
        let Ok(pods) = std::fs::read_dir(self.cfg.root_dir.join("pods")) else { return false };
        pods.flatten().any(|pod| {
            let Ok(vols) = std::fs::read_dir(pod.path().join("volumes").join(paths::POD_PLUGIN_DIR)) else {
                return false;
            };
            vols.flatten().filter(|v| v.path() != except).any(|v| {
                VolData::load(&v.path()).ok().flatten().is_some_and(|d| {
                    d.driver_name == data.driver_name && d.volume_handle == data.volume_handle && !d.is_ephemeral()
                })
            })
        })
    }
}

#[async_trait::async_trait]
impl super::CsiPlugin for CsiVolumes {
    async fn set_up(&self, pod: &Pod, volume: &Volume) -> Result<PathBuf> {
        CsiVolumes::set_up(self, pod, volume).await
    }

    async fn tear_down(&self, pod_uid: &str, volume_dir: &Path) -> Result<()> {
        CsiVolumes::tear_down(self, pod_uid, volume_dir).await
    }
}

/// getFSGroupPolicy: no CSIDriver object → ReadWriteOnceWithFSType; an object without a policy
/// is an error.
fn fs_group_policy(facts: &resolve::FsGroupFacts) -> Result<String> {
    match facts.policy.as_deref() {
        None => Ok(POLICY_RWO_WITH_FS_TYPE.to_string()),
        Some("") => Err(Error::Resolve(
            "kubernetes.io/csi: mounter.SetupAt failed to check fsGroup policy: kubernetes.io/csi: expected valid fsGroupPolicy, received nil value or empty string".into(),
        )),
        Some(p) => Ok(p.to_string()),
    }
}

const POLICY_RWO_WITH_FS_TYPE: &str = "ReadWriteOnceWithFSType";

/// supportsFSGroup: whether the kubelet gives the volume to the pod's fsGroup. Never for
/// `None` or read-only volumes; always for `File`; otherwise (ReadWriteOnceWithFSType) only with
/// an fsType and, for PVs, a ReadWriteOnce access mode (inline volumes are ReadWriteOnce).
fn kubelet_applies_fs_group(facts: &resolve::FsGroupFacts, policy: &str, readonly: bool) -> bool {
    if policy == "None" || readonly {
        return false;
    }
    if policy == "File" {
        return true;
    }
    if facts.fs_type.is_empty() {
        return false;
    }
    match &facts.access_modes {
        Some(modes) => modes.iter().any(|m| m == "ReadWriteOnce"),
        None => true,
    }
}

/// The kubelet's part of fsGroup after NodePublish (csiMountMgr.SetUpAt): unless the driver
/// applies it (VOLUME_MOUNT_GROUP), the ownership walk with the pod's fsGroupChangePolicy.
fn apply_fs_group(
    pod: &Pod,
    r: &resolve::Resolved,
    policy: &str,
    caps: client::NodeCapabilities,
    target: &Path,
) -> Result<()> {
    if caps.volume_mount_group || !kubelet_applies_fs_group(&r.fs_group, policy, r.readonly) {
        return Ok(());
    }
    let Some(o) = super::ownership::Ownership::of_pod(pod, r.readonly, true) else { return Ok(()) };
    o.apply(target).map_err(|e| Error::Resolve(format!("applyFSGroup failed for vol {}: {e}", r.request.volume_id)))?;
    Ok(())
}

fn same_volume(a: &VolData, b: &VolData) -> bool {
    a.driver_name == b.driver_name && a.volume_handle == b.volume_handle
}

/// Removes an empty directory; a missing one is fine. Never recursive: a volume directory that
/// is not empty may still hold the user's data.
fn remove_dir(p: &Path) -> Result<()> {
    match std::fs::remove_dir(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("removing", p)(e)),
    }
}

fn remove_file(p: &Path) -> Result<()> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("removing", p)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::mount::{FakeMounter, Mounter};

    fn facts(policy: Option<&str>, fs_type: &str, modes: Option<&[&str]>) -> resolve::FsGroupFacts {
        resolve::FsGroupFacts {
            policy: policy.map(Into::into),
            fs_type: fs_type.into(),
            access_modes: modes.map(|m| m.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn the_driver_policy_decides_whether_the_kubelet_applies_the_fs_group() {
        let rwo = Some(&["ReadWriteOnce"][..]);
        // No CSIDriver: ReadWriteOnceWithFSType, which needs an fsType and RWO.
        let p = fs_group_policy(&facts(None, "ext4", rwo)).unwrap();
        let p = p.as_str();
        assert_eq!(p, "ReadWriteOnceWithFSType");
        assert!(kubelet_applies_fs_group(&facts(None, "ext4", rwo), p, false));
        assert!(!kubelet_applies_fs_group(&facts(None, "", rwo), p, false), "no fsType");
        assert!(!kubelet_applies_fs_group(&facts(None, "ext4", Some(&["ReadWriteMany"])), p, false));
        assert!(!kubelet_applies_fs_group(&facts(None, "ext4", Some(&[])), p, false));
        assert!(kubelet_applies_fs_group(&facts(None, "ext4", None), p, false), "inline volumes are RWO");
        assert!(!kubelet_applies_fs_group(&facts(None, "ext4", rwo), p, true), "read-only");
        // File: always (unless read-only); None: never.
        assert!(kubelet_applies_fs_group(&facts(Some("File"), "", Some(&["ReadWriteMany"])), "File", false));
        assert!(!kubelet_applies_fs_group(&facts(Some("None"), "ext4", rwo), "None", false));
        // A CSIDriver object without a policy is refused, as upstream.
        let e = fs_group_policy(&facts(Some(""), "ext4", rwo)).unwrap_err().to_string();
        assert!(e.contains("expected valid fsGroupPolicy, received nil value or empty string"), "{e}");
    }

    #[tokio::test]
    async fn a_target_the_mounter_shows_mounted_is_not_removed_without_its_record() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let vol_dir = paths::pod_volume_dir(&root, "u1", "pv1");
        let target = vol_dir.join(paths::MOUNT_DIR);
        std::fs::create_dir_all(&target).unwrap();
        let fake = FakeMounter::new();
        fake.mount_tmpfs(&target, None).unwrap();
        let cfg = Config { root_dir: root.clone(), node_name: "n".into() };
        let vols = CsiVolumes::new(cfg, None, Drivers::new()).with_mounter(fake.clone());

        let e = vols.tear_down("u1", &vol_dir).await.unwrap_err();
        let want =
            format!("{} is mounted but has no vol_data.json: cannot tell which CSI driver to ask", target.display());
        assert_eq!(e.to_string(), want);
        assert!(target.is_dir(), "nothing removed while mounted");

        fake.unmount(&target).unwrap();
        vols.tear_down("u1", &vol_dir).await.unwrap();
        assert!(!vol_dir.exists());
    }
}
