//! emptyDir (pkg/volume/emptydir): a 0777 directory under the pod, or a tmpfs for
//! `medium: Memory`. Secret, projected and downwardAPI volumes are a Memory emptyDir underneath,
//! configMap a disk one (upstream's "wrapped" volumes). Set-up is idempotent: a tmpfs already
//! mounted there is kept, so a restarted kubelet never mounts twice.

use super::mount::{self, Mounter};
use crate::cm::resources;
use k8s_openapi::api::core::v1::{Pod, Volume};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const PERM: u32 = 0o777;

/// Whether the emptyDir is memory-backed.
pub fn is_memory(v: &Volume) -> bool {
    v.empty_dir.as_ref().and_then(|e| e.medium.as_deref()) == Some("Memory")
}

/// `sizeLimit` in bytes, if set and valid.
pub fn size_limit(v: &Volume) -> Option<i64> {
    v.empty_dir.as_ref()?.size_limit.as_ref().map(|q| resources::units(resources::milli(q))).filter(|s| *s > 0)
}

/// The tmpfs size for a memory-backed volume (upstream calculateEmptyDirMemorySize): node
/// allocatable memory, lowered to the pod's memory limit (its cgroup's), lowered to the volume's
/// sizeLimit. None when nothing is known (the kernel default, half of RAM).
pub fn memory_size(pod: &Pod, size_limit: Option<i64>, allocatable_memory: Option<i64>) -> Option<i64> {
    let mut size = allocatable_memory.filter(|m| *m > 0);
    let pod_limit = resources::pod_cgroup_config(pod, &crate::cm::default_policy()).memory.filter(|m| *m > 0);
    if let Some(l) = pod_limit
        && size.is_none_or(|s| l <= s)
    {
        size = Some(l);
    }
    if let Some(l) = size_limit
        && size.is_none_or(|s| l <= s)
    {
        size = Some(l);
    }
    size
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("creating {}: {source}", dir.display())]
    Create { dir: PathBuf, source: io::Error },
    #[error("{}: {source}", dir.display())]
    Stat { dir: PathBuf, source: io::Error },
    #[error("setting the mode of {}: {source}", dir.display())]
    Chmod { dir: PathBuf, source: io::Error },
    #[error("mounting tmpfs on {}: {source}", dir.display())]
    MountTmpfs { dir: PathBuf, source: io::Error },
    #[error("unmounting {}: {source}", dir.display())]
    Unmount { dir: PathBuf, source: io::Error },
    #[error(transparent)]
    Mount(#[from] mount::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Creates the directory with mode 0777 (whatever the umask), as upstream's setupDir.
pub fn setup_dir(dir: &Path) -> Result<()> {
    let at = || dir.to_path_buf();
    std::fs::create_dir_all(dir).map_err(|source| Error::Create { dir: at(), source })?;
    let meta = std::fs::symlink_metadata(dir).map_err(|source| Error::Stat { dir: at(), source })?;
    if meta.permissions().mode() & 0o777 != PERM {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(PERM))
            .map_err(|source| Error::Chmod { dir: at(), source })?;
    }
    Ok(())
}

/// Sets up the directory, mounting a tmpfs of `size` bytes on it for memory media unless one is
/// already mounted there. A directory this call created is removed again when the mount fails.
/// Returns whether the volume is new (the directory created, or the tmpfs mounted, now): what
/// upstream's ready file tells, so fsGroup ownership is applied once, not after every restart.
pub fn set_up(m: &dyn Mounter, dir: &Path, memory: bool, size: Option<i64>) -> Result<bool> {
    let existed = std::fs::symlink_metadata(dir).is_ok();
    setup_dir(dir)?;
    if !memory {
        return Ok(!existed);
    }
    let all = mount::mounts(m)?;
    let real = dir.canonicalize().map_err(|source| Error::Stat { dir: dir.to_path_buf(), source })?;
    if mount::mount_at(&all, &real).is_some_and(|m| m.fs_type == "tmpfs") {
        return Ok(false);
    }
    tracing::debug!(dir = %dir.display(), size, "mounting tmpfs");
    m.mount_tmpfs(&real, size).map_err(|source| {
        if !existed {
            let _ = std::fs::remove_dir(dir);
        }
        Error::MountTmpfs { dir: dir.to_path_buf(), source }
    })?;
    Ok(true)
}

/// Gives a new emptyDir to the pod's fsGroup (upstream's emptyDir SetUpAt: no change policy, and
/// a failure is only logged).
pub fn apply_ownership(pod: &Pod, dir: &Path, read_only: bool) {
    let Some(o) = super::ownership::Ownership::of_pod(pod, read_only, false) else { return };
    if let Err(e) = o.apply(dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "setting the volume's fsGroup ownership failed");
    }
}

/// Tears a volume directory down: unmounts what is mounted on it (a tmpfs), then removes it,
/// refusing while anything else is mounted below.
pub fn tear_down(m: &dyn Mounter, dir: &Path) -> Result<()> {
    if std::fs::symlink_metadata(dir).is_err() {
        return Ok(());
    }
    let real = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let all = mount::mounts(m)?;
    // Stacked mounts come off one at a time.
    for _ in 0..mount::mounts_under(&all, &real).iter().filter(|m| m.mount_point == real).count() {
        m.unmount(&real).map_err(|source| Error::Unmount { dir: dir.to_path_buf(), source })?;
    }
    Ok(mount::remove_unmounted_with(m, dir)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(limits: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "uid": "u"},
            "spec": {"containers": [{"name": "c", "image": "i", "resources": {"limits": limits}}]}
        }))
        .unwrap()
    }

    #[test]
    fn memory_size_is_the_smallest_of_allocatable_pod_limit_and_size_limit() {
        let mi = 1 << 20;
        let unlimited = pod(serde_json::json!({}));
        assert_eq!(memory_size(&unlimited, None, Some(1000 * mi)), Some(1000 * mi));
        assert_eq!(memory_size(&unlimited, Some(64 * mi), Some(1000 * mi)), Some(64 * mi));
        assert_eq!(memory_size(&unlimited, None, None), None);
        let limited = pod(serde_json::json!({"memory": "128Mi"}));
        assert_eq!(memory_size(&limited, None, Some(1000 * mi)), Some(128 * mi));
        assert_eq!(memory_size(&limited, Some(64 * mi), Some(1000 * mi)), Some(64 * mi));
        // A sizeLimit above the pod's limit does not raise it.
        assert_eq!(memory_size(&limited, Some(512 * mi), Some(1000 * mi)), Some(128 * mi));
    }

    #[test]
    fn a_disk_empty_dir_is_world_writable_and_torn_down() {
        let dir = tempfile::tempdir().unwrap();
        let v = dir.path().join("pods/u/volumes/kubernetes.io~empty-dir/cache");
        set_up(&mount::HostMounter, &v, false, None).unwrap();
        assert_eq!(std::fs::metadata(&v).unwrap().permissions().mode() & 0o777, 0o777);
        std::fs::write(v.join("f"), "x").unwrap();
        set_up(&mount::HostMounter, &v, false, None).unwrap();
        assert!(v.join("f").exists(), "set-up again keeps the content");
        tear_down(&mount::HostMounter, &v).unwrap();
        assert!(!v.exists());
    }

    #[test]
    fn size_limit_reads_the_quantity() {
        let v: Volume = serde_json::from_value(
            serde_json::json!({"name": "v", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}),
        )
        .unwrap();
        assert!(is_memory(&v));
        assert_eq!(size_limit(&v), Some(64 << 20));
    }
}
