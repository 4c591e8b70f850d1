//! fsGroup volume ownership (pkg/volume/volume_linux.go, VolumeOwnership.ChangePermissions): a
//! volume's files are given the pod's `securityContext.fsGroup` as their group, group read (and,
//! for writable volumes, write) bits, and directories also group search and setgid so that what
//! containers create inherits the group.
//!
//! Who asks for it, as upstream: emptyDir on its first set-up (no policy: always recursive), the
//! AtomicWriter-written kinds (configMap, secret, projected, downwardAPI: read-only, on every
//! write, over the whole volume), and CSI volumes whose driver policy allows it (with the pod's
//! `fsGroupChangePolicy`). `OnRootMismatch` skips the walk when the root directory already has
//! the group, the bits and setgid.

use k8s_openapi::api::core::v1::Pod;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Group read-write, upstream's rwMask.
const RW: u32 = 0o660;
/// Group read, upstream's roMask.
const RO: u32 = 0o440;
/// Search bits added to directories, upstream's execMask.
const EXEC: u32 = 0o110;
const SETGID: u32 = 0o2000;

/// `fsGroupChangePolicy: OnRootMismatch`.
pub const ON_ROOT_MISMATCH: &str = "OnRootMismatch";

#[derive(Debug, thiserror::Error)]
#[error("setting the ownership of {}: {source}", path.display())]
pub struct Error {
    pub path: PathBuf,
    pub source: io::Error,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a volume's files are given to the pod's fsGroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ownership {
    pub gid: u32,
    /// The volume is read-only for the pod (the AtomicWriter kinds, read-only CSI): group read
    /// only, no group write.
    pub read_only: bool,
    /// `fsGroupChangePolicy: OnRootMismatch`.
    pub on_root_mismatch: bool,
}

impl Ownership {
    /// The pod's fsGroup, if any (operation_generator's MounterArgs.FsGroup). `with_policy`: the
    /// plugin honours `fsGroupChangePolicy` (only CSI does; emptyDir and the AtomicWriter kinds
    /// pass no policy upstream, so they always walk).
    pub fn of_pod(pod: &Pod, read_only: bool, with_policy: bool) -> Option<Ownership> {
        let sc = pod.spec.as_ref()?.security_context.as_ref()?;
        let gid = u32::try_from(sc.fs_group?).ok()?;
        let on_root_mismatch = with_policy && sc.fs_group_change_policy.as_deref() == Some(ON_ROOT_MISMATCH);
        Some(Ownership { gid, read_only, on_root_mismatch })
    }

    /// The bits every file gets (`roMask` or `rwMask`).
    pub fn file_bits(&self) -> u32 {
        if self.read_only { RO } else { RW }
    }

    /// Changes the volume at `root` (ChangePermissions): unless `OnRootMismatch` finds the root
    /// already right, every entry below and then the root itself. Returns whether it walked.
    /// A failed chown or chmod of one entry is logged and the walk goes on (changeFilePermission);
    /// an entry that cannot be listed or stat'ed ends it with an error.
    pub fn apply(&self, root: &Path) -> Result<bool> {
        if self.on_root_mismatch && !self.root_mismatches(root) {
            tracing::debug!(path = %root.display(), "volume root already owned by fsGroup: not changing ownership");
            return Ok(false);
        }
        let meta = std::fs::symlink_metadata(root).map_err(|source| Error { path: root.to_path_buf(), source })?;
        self.walk(root, &meta)?;
        Ok(true)
    }

    /// requiresPermissionChange: the root's group is not the fsGroup, or it is not a directory,
    /// or it lacks one of the wanted bits (group rw(x) or r(x)) or setgid. Unreadable → change.
    fn root_mismatches(&self, root: &Path) -> bool {
        let Ok(meta) = std::fs::metadata(root) else { return true };
        if meta.gid() != self.gid || !meta.is_dir() {
            return true;
        }
        let want = self.file_bits() | EXEC;
        let mode = meta.mode();
        mode & want != want || mode & SETGID == 0
    }

    /// walkDeep: children first (unsorted), the directory itself last; symlinks not followed.
    fn walk(&self, path: &Path, meta: &std::fs::Metadata) -> Result<()> {
        if meta.is_dir() {
            let err = |source| Error { path: path.to_path_buf(), source };
            for entry in std::fs::read_dir(path).map_err(err)? {
                let entry = entry.map_err(err)?;
                let child = entry.path();
                let child_meta =
                    std::fs::symlink_metadata(&child).map_err(|source| Error { path: child.clone(), source })?;
                self.walk(&child, &child_meta)?;
            }
        }
        self.change_file(path, meta);
        Ok(())
    }

    /// changeFilePermission: the group of the entry itself (lchown, so a symlink's own group),
    /// then, except for symlinks (whose chmod would change their target), its mode plus the bits.
    fn change_file(&self, path: &Path, meta: &std::fs::Metadata) {
        if let Err(e) = std::os::unix::fs::lchown(path, None, Some(self.gid)) {
            tracing::warn!(path = %path.display(), error = %e, "lchown failed");
        }
        if meta.file_type().is_symlink() {
            return;
        }
        let mut bits = self.file_bits();
        if meta.is_dir() {
            bits |= SETGID | EXEC;
        }
        let mode = (meta.mode() & 0o7777) | bits;
        if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
            tracing::warn!(path = %path.display(), error = %e, "chmod failed");
        }
    }
}

/// The uid the projected token files are given (util.FsUserFrom): the effective runAsUser of the
/// pod's init and regular containers (the container's, else the pod's) when every one of them
/// has one and they are all the same; None otherwise.
pub fn fs_user(pod: &Pod) -> Option<u32> {
    let spec = pod.spec.as_ref()?;
    let pod_user = spec.security_context.as_ref().and_then(|s| s.run_as_user);
    let mut user = None;
    for c in spec.init_containers.iter().flatten().chain(&spec.containers) {
        let u = c.security_context.as_ref().and_then(|s| s.run_as_user).or(pod_user)?;
        if user.is_some_and(|prev| prev != u) {
            return None;
        }
        user = Some(u);
    }
    user.and_then(|u| u32::try_from(u).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    fn set_mode(p: &Path, m: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    }

    /// A gid this test may chown to: the process's own group when not root.
    fn test_gid() -> u32 {
        // SAFETY: getegid has no preconditions.
        let own = unsafe { libc::getegid() };
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 { 2000 } else { own }
    }

    fn pod(sc: serde_json::Value, containers: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "uid": "u"},
            "spec": {"securityContext": sc, "containers": containers}
        }))
        .unwrap()
    }

    #[test]
    fn a_writable_volume_gets_group_rw_and_setgid_directories() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("vol");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/f"), "x").unwrap();
        std::os::unix::fs::symlink("sub/f", root.join("link")).unwrap();
        set_mode(&root, 0o777);
        set_mode(&root.join("sub"), 0o700);
        set_mode(&root.join("sub/f"), 0o600);
        let gid = test_gid();
        let o = Ownership { gid, read_only: false, on_root_mismatch: false };
        assert!(o.apply(&root).unwrap());
        assert_eq!(mode(&root), 0o2777);
        assert_eq!(mode(&root.join("sub")), 0o2770);
        assert_eq!(mode(&root.join("sub/f")), 0o660);
        for p in [&root, &root.join("sub"), &root.join("sub/f"), &root.join("link")] {
            assert_eq!(std::fs::symlink_metadata(p).unwrap().gid(), gid, "{}", p.display());
        }
    }

    #[test]
    fn a_read_only_volume_gets_group_read_only_and_keeps_the_file_modes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("vol");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("token"), "t").unwrap();
        set_mode(&root, 0o755);
        set_mode(&root.join("token"), 0o600);
        let o = Ownership { gid: test_gid(), read_only: true, on_root_mismatch: false };
        o.apply(&root).unwrap();
        assert_eq!(mode(&root), 0o2755);
        assert_eq!(mode(&root.join("token")), 0o640, "0600 becomes 0640, as upstream's projected tokens");
    }

    #[test]
    fn on_root_mismatch_skips_a_root_that_already_matches() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("vol");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("f"), "x").unwrap();
        set_mode(&root.join("f"), 0o600);
        let gid = test_gid();
        let o = Ownership { gid, read_only: false, on_root_mismatch: true };
        // The root lacks setgid: everything changes.
        set_mode(&root, 0o770);
        assert!(o.apply(&root).unwrap());
        assert_eq!(mode(&root.join("f")), 0o660);
        // Now the root matches: a file changed behind the kubelet's back stays as it is.
        set_mode(&root.join("f"), 0o600);
        assert!(!o.apply(&root).unwrap());
        assert_eq!(mode(&root.join("f")), 0o600);
        // Missing group write on the root is a mismatch again.
        set_mode(&root, 0o2750);
        assert!(o.apply(&root).unwrap());
        assert_eq!(mode(&root.join("f")), 0o660);
        // Without the policy the walk always happens.
        let always = Ownership { on_root_mismatch: false, ..o };
        set_mode(&root.join("f"), 0o600);
        assert!(always.apply(&root).unwrap());
        assert_eq!(mode(&root.join("f")), 0o660);
    }

    #[test]
    fn the_pod_gives_the_group_and_only_policy_aware_plugins_the_policy() {
        let p = pod(
            serde_json::json!({"fsGroup": 2000, "fsGroupChangePolicy": "OnRootMismatch"}),
            serde_json::json!([{"name": "c", "image": "i"}]),
        );
        assert_eq!(
            Ownership::of_pod(&p, false, true),
            Some(Ownership { gid: 2000, read_only: false, on_root_mismatch: true })
        );
        assert!(!Ownership::of_pod(&p, true, false).unwrap().on_root_mismatch);
        let none = pod(serde_json::json!({}), serde_json::json!([{"name": "c", "image": "i"}]));
        assert_eq!(Ownership::of_pod(&none, false, true), None);
    }

    #[test]
    fn fs_user_is_the_one_run_as_user_every_container_shares() {
        let same = pod(
            serde_json::json!({"runAsUser": 1000}),
            serde_json::json!([{"name": "a", "image": "i"}, {"name": "b", "image": "i", "securityContext": {"runAsUser": 1000}}]),
        );
        assert_eq!(fs_user(&same), Some(1000));
        let differ = pod(
            serde_json::json!({"runAsUser": 1000}),
            serde_json::json!([{"name": "a", "image": "i"}, {"name": "b", "image": "i", "securityContext": {"runAsUser": 7}}]),
        );
        assert_eq!(fs_user(&differ), None);
        let unset = pod(
            serde_json::json!({}),
            serde_json::json!([{"name": "a", "image": "i", "securityContext": {"runAsUser": 1000}}, {"name": "b", "image": "i"}]),
        );
        assert_eq!(fs_user(&unset), None);
    }
}
