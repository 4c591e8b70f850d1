//! The volume kinds and what setting one up or tearing it down means. Each kind's rules live in
//! its own file; this is the dispatch and the on-disk layout
//! (`<root>/pods/<uid>/volumes/kubernetes.io~<plugin>/<name>`).

use super::mount::Mounter;
use super::ownership::Ownership;
use super::projected::Tokens;
use super::{CsiPlugin, NodeFacts, atomic_writer, configmap, csi, downward_api, empty_dir, host_path, projected};
use crate::api::DynApi;
use crate::api::objects::Objects;
use k8s_openapi::api::core::v1::{PersistentVolumeClaimVolumeSource, Pod, Volume};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

/// Why a volume could not be set up or torn down: the text of FailedMount / FailedUnMount.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("creating {}: {source}", path.display())]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("no source")]
    NoSource,
    #[error("persistentVolumeClaim, csi and ephemeral volumes need CSI support, which is not enabled")]
    CsiNotEnabled,
    #[error("{0} (a CSI volume, and CSI support is not enabled)")]
    CsiLeftover(#[source] empty_dir::Error),
    #[error("this volume type is not supported")]
    Unsupported,
    #[error(transparent)]
    EmptyDir(#[from] empty_dir::Error),
    #[error(transparent)]
    Files(#[from] atomic_writer::Error),
    #[error(transparent)]
    ConfigMap(#[from] configmap::Error),
    #[error(transparent)]
    DownwardApi(#[from] downward_api::Error),
    #[error(transparent)]
    Projected(#[from] projected::Error),
    #[error(transparent)]
    HostPath(#[from] host_path::Error),
    #[error(transparent)]
    Csi(#[from] csi::Error),
    #[error(transparent)]
    SubPath(#[from] super::subpath::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A volume's plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    EmptyDir,
    ConfigMap,
    Secret,
    Projected,
    DownwardApi,
    HostPath,
    /// persistentVolumeClaim, csi and generic ephemeral volumes: the CSI plugin's.
    Csi,
    /// Anything else (nfs, iscsi, …): refused with a clear message.
    Unsupported,
}

pub const CSI_DIR: &str = "kubernetes.io~csi";

impl Kind {
    pub fn of(v: &Volume) -> Kind {
        if v.empty_dir.is_some() {
            Kind::EmptyDir
        } else if v.config_map.is_some() {
            Kind::ConfigMap
        } else if v.secret.is_some() {
            Kind::Secret
        } else if v.projected.is_some() {
            Kind::Projected
        } else if v.downward_api.is_some() {
            Kind::DownwardApi
        } else if v.host_path.is_some() {
            Kind::HostPath
        } else if v.persistent_volume_claim.is_some() || v.csi.is_some() || v.ephemeral.is_some() {
            Kind::Csi
        } else {
            Kind::Unsupported
        }
    }

    /// The plugin's directory under `volumes/` (none for hostPath, which has nothing on disk).
    pub fn plugin_dir(self) -> Option<&'static str> {
        Some(match self {
            Kind::EmptyDir => "kubernetes.io~empty-dir",
            Kind::ConfigMap => "kubernetes.io~configmap",
            Kind::Secret => "kubernetes.io~secret",
            Kind::Projected => "kubernetes.io~projected",
            Kind::DownwardApi => "kubernetes.io~downward-api",
            Kind::Csi => CSI_DIR,
            Kind::HostPath | Kind::Unsupported => return None,
        })
    }

    pub fn from_plugin_dir(dir: &str) -> Kind {
        [Kind::EmptyDir, Kind::ConfigMap, Kind::Secret, Kind::Projected, Kind::DownwardApi, Kind::Csi]
            .into_iter()
            .find(|k| k.plugin_dir() == Some(dir))
            .unwrap_or(Kind::Unsupported)
    }

    /// Whether the content comes from the API or the pod and is rewritten on resync.
    pub fn refreshable(self) -> bool {
        matches!(self, Kind::ConfigMap | Kind::Secret | Kind::Projected | Kind::DownwardApi)
    }
}

/// What set-up and teardown need besides the pod.
pub struct Ctx<'a> {
    pub root: &'a Path,
    /// The API server, for serviceAccountToken projections.
    pub api: Option<&'a DynApi>,
    /// The node's reader of ConfigMaps and Secrets.
    pub objects: Option<&'a Objects>,
    pub tokens: &'a Tokens,
    pub node: &'a NodeFacts,
    pub csi: Option<&'a Arc<dyn CsiPlugin>>,
    pub mounter: &'a dyn Mounter,
    pub now: SystemTime,
}

/// `<root>/pods/<uid>`
pub fn pod_dir(root: &Path, uid: &str) -> PathBuf {
    root.join("pods").join(uid)
}

/// `<root>/pods/<uid>/volumes/<plugin>/<name>`
pub fn volume_dir(root: &Path, uid: &str, plugin_dir: &str, name: &str) -> PathBuf {
    pod_dir(root, uid).join("volumes").join(plugin_dir).join(name)
}

/// The pod's directories with upstream's restrictive modes: `pods/<uid>` and `volumes` 0750
/// (makePodDataDirs), so other users of the node cannot reach a pod's volumes.
pub fn make_pod_dirs(root: &Path, uid: &str) -> Result<()> {
    let dir = pod_dir(root, uid);
    for d in [dir.clone(), dir.join("volumes")] {
        let created = std::fs::DirBuilder::new().recursive(true).mode(0o750).create(&d);
        created.map_err(|source| Error::CreateDir { path: d.clone(), source })?;
        let mode = std::fs::metadata(&d).map(|m| m.permissions().mode() & 0o7777).unwrap_or(0);
        if mode != 0o750 {
            let _ = std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o750));
        }
    }
    Ok(())
}

fn make_plugin_dir(root: &Path, uid: &str, plugin_dir: &str) -> Result<()> {
    make_pod_dirs(root, uid)?;
    let d = pod_dir(root, uid).join("volumes").join(plugin_dir);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(&d)
        .map_err(|source| Error::CreateDir { path: d.clone(), source })
}

/// A pod's volume written with the AtomicWriter on a wrapped emptyDir. With an fsGroup, the new
/// emptyDir is given to it writable (the wrapped emptyDir's SetUpAt) and every write read-only
/// (the configMap/secret/projected/downwardAPI SetUpAt's setPerms, without change policy).
fn write_files(ctx: &Ctx, pod: &Pod, dir: &Path, memory: bool, payload: &atomic_writer::Payload) -> Result<()> {
    let size = if memory { empty_dir::memory_size(pod, None, ctx.node.allocatable_memory) } else { None };
    if empty_dir::set_up(ctx.mounter, dir, memory, size)? {
        empty_dir::apply_ownership(pod, dir, false);
    }
    let ownership = Ownership::of_pod(pod, true, false);
    atomic_writer::write(dir, payload, ctx.now, ownership.as_ref())?;
    Ok(())
}

/// Sets the volume up (or refreshes it) and returns the host path containers bind.
pub async fn set_up(ctx: &Ctx<'_>, pod: &Pod, v: &Volume) -> Result<PathBuf> {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let kind = Kind::of(v);
    if let Some(plugin) = kind.plugin_dir().filter(|_| kind != Kind::Csi) {
        make_plugin_dir(ctx.root, &uid, plugin)?;
    }
    let dir = kind.plugin_dir().map(|p| volume_dir(ctx.root, &uid, p, &v.name)).unwrap_or_default();
    match kind {
        Kind::EmptyDir => {
            let memory = empty_dir::is_memory(v);
            let limit = empty_dir::size_limit(v);
            let size = if memory { empty_dir::memory_size(pod, limit, ctx.node.allocatable_memory) } else { None };
            if empty_dir::set_up(ctx.mounter, &dir, memory, size)? {
                empty_dir::apply_ownership(pod, &dir, false);
            }
        }
        Kind::ConfigMap | Kind::Secret => {
            let (name, items, mode, optional, what) = match (&v.config_map, &v.secret) {
                (Some(c), _) => (c.name.clone(), c.items.clone(), c.default_mode, c.optional, "configmap"),
                (None, Some(s)) => {
                    (s.secret_name.clone().unwrap_or_default(), s.items.clone(), s.default_mode, s.optional, "secret")
                }
                _ => return Err(Error::NoSource),
            };
            let optional = optional.unwrap_or(false);
            let data = configmap::read(ctx.objects, &uid, what, &ns, &name, optional).await?;
            let mode = mode.unwrap_or(configmap::DEFAULT_MODE);
            let payload = configmap::payload(items.as_deref(), &data, mode, optional, what)?;
            // Secrets only ever live in memory.
            write_files(ctx, pod, &dir, kind == Kind::Secret, &payload)?;
        }
        Kind::DownwardApi => {
            let src = v.downward_api.as_ref().ok_or(Error::NoSource)?;
            let mode = src.default_mode.unwrap_or(configmap::DEFAULT_MODE);
            let payload = downward_api::payload(pod, src.items.as_deref().unwrap_or_default(), mode, ctx.node)?;
            write_files(ctx, pod, &dir, true, &payload)?;
        }
        Kind::Projected => {
            let src = v.projected.as_ref().ok_or(Error::NoSource)?;
            let payload = projected::payload(ctx.api, ctx.objects, ctx.tokens, pod, src, ctx.node, ctx.now).await?;
            write_files(ctx, pod, &dir, true, &payload)?;
        }
        Kind::HostPath => {
            let hp = v.host_path.as_ref().ok_or(Error::NoSource)?;
            host_path::check(&hp.path, hp.type_.as_deref())?;
            return Ok(PathBuf::from(&hp.path));
        }
        Kind::Csi => {
            let csi = ctx.csi.ok_or(Error::CsiNotEnabled)?;
            let mut vol = v.clone();
            if vol.ephemeral.take().is_some() {
                // A generic ephemeral volume is the claim `<pod>-<volume>` its controller made.
                let claim = format!("{}-{}", pod.metadata.name.as_deref().unwrap_or_default(), v.name);
                vol.persistent_volume_claim =
                    Some(PersistentVolumeClaimVolumeSource { claim_name: claim, read_only: None });
            }
            return Ok(csi.set_up(pod, &vol).await?);
        }
        Kind::Unsupported => return Err(Error::Unsupported),
    }
    Ok(dir)
}

/// Tears a volume directory down (its subPath binds were cleaned before).
pub async fn tear_down(ctx: &Ctx<'_>, uid: &str, kind: Kind, dir: &Path) -> Result<()> {
    match kind {
        Kind::HostPath => Ok(()),
        Kind::Csi => match ctx.csi {
            Some(csi) => Ok(csi.tear_down(uid, dir).await?),
            None => empty_dir::tear_down(ctx.mounter, dir).map_err(Error::CsiLeftover),
        },
        _ => Ok(empty_dir::tear_down(ctx.mounter, dir)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::fake::FakeApi;
    use k8s_openapi::api::core::v1::ConfigMap;
    use std::collections::BTreeMap;

    fn pod(volumes: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u1", "labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "i"}], "volumes": volumes}
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn config_maps_are_written_under_the_plugin_dir_with_restrictive_pod_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeApi::new();
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some("cfg".into());
        cm.metadata.namespace = Some("ns".into());
        cm.data = Some(BTreeMap::from([("color".into(), "blue".into())]));
        fake.put_config_map(cm);
        let api: DynApi = Arc::new(fake);
        let objects = Objects::new(api.clone());
        let tokens = Tokens::default();
        let node = NodeFacts::default();
        let mounter = super::super::mount::HostMounter;
        let ctx = Ctx {
            root: dir.path(),
            api: Some(&api),
            objects: Some(&objects),
            tokens: &tokens,
            node: &node,
            csi: None,
            mounter: &mounter,
            now: SystemTime::now(),
        };
        let p = pod(serde_json::json!([{"name": "config", "configMap": {"name": "cfg"}},
            {"name": "info", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
            {"name": "nfs", "nfs": {"server": "x", "path": "/"}},
            {"name": "claim", "persistentVolumeClaim": {"claimName": "c"}}]));
        let vols = p.spec.as_ref().unwrap().volumes.clone().unwrap();
        let path = set_up(&ctx, &p, &vols[0]).await.unwrap();
        assert_eq!(path, dir.path().join("pods/u1/volumes/kubernetes.io~configmap/config"));
        assert_eq!(std::fs::read_to_string(path.join("color")).unwrap(), "blue");
        let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(dir.path().join("pods/u1")), 0o750);
        assert_eq!(mode(dir.path().join("pods/u1/volumes")), 0o750);
        assert_eq!(mode(path.clone()), 0o777);
        assert_eq!(mode(path.join("color")), 0o644);
        assert_eq!(set_up(&ctx, &p, &vols[2]).await.unwrap_err().to_string(), "this volume type is not supported");
        assert!(set_up(&ctx, &p, &vols[3]).await.unwrap_err().to_string().contains("CSI support"));
        tear_down(&ctx, "u1", Kind::ConfigMap, &path).await.unwrap();
        assert!(!path.exists());
        assert_eq!(Kind::from_plugin_dir("kubernetes.io~downward-api"), Kind::DownwardApi);
        assert_eq!(Kind::of(&vols[1]), Kind::DownwardApi);
    }

    #[tokio::test]
    async fn fs_group_owns_empty_dirs_and_written_files_as_upstream() {
        use std::os::unix::fs::MetadataExt;
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return; // chown to another group needs root
        }
        let dir = tempfile::tempdir().unwrap();
        let tokens = Tokens::default();
        let node = NodeFacts::default();
        let mounter = super::super::mount::FakeMounter::new();
        let ctx = Ctx {
            root: dir.path(),
            api: None,
            objects: None,
            tokens: &tokens,
            node: &node,
            csi: None,
            mounter: &*mounter,
            now: SystemTime::now(),
        };
        let mut p = pod(serde_json::json!([{"name": "cache", "emptyDir": {}},
            {"name": "info", "downwardAPI": {"defaultMode": 0o600,
                "items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}}]));
        p.spec.as_mut().unwrap().security_context =
            Some(serde_json::from_value(serde_json::json!({"fsGroup": 2000})).unwrap());
        let vols = p.spec.as_ref().unwrap().volumes.clone().unwrap();
        let stat = |p: PathBuf| {
            let m = std::fs::metadata(p).unwrap();
            (m.gid(), m.mode() & 0o7777)
        };
        let cache = set_up(&ctx, &p, &vols[0]).await.unwrap();
        assert_eq!(stat(cache.clone()), (2000, 0o2777));
        // A file a container wrote later is left alone by a second set-up (upstream's ready file).
        std::fs::write(cache.join("mine"), "x").unwrap();
        std::fs::set_permissions(cache.join("mine"), std::fs::Permissions::from_mode(0o600)).unwrap();
        set_up(&ctx, &p, &vols[0]).await.unwrap();
        // The setgid directory gave it the group; the mode is its own (no group bits added).
        assert_eq!(stat(cache.join("mine")), (2000, 0o600));
        let info = set_up(&ctx, &p, &vols[1]).await.unwrap();
        assert_eq!(stat(info.clone()), (2000, 0o2777));
        // defaultMode 0600 plus group read; the timestamped directory setgid.
        assert_eq!(stat(info.join("labels")), (2000, 0o640));
        assert_eq!(stat(info.join(atomic_writer::DATA_DIR)), (2000, 0o2755));
    }
}
