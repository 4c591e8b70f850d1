//! After a kubelet restart, the volumes still set up on disk become the actual state again
//! (upstream's reconstruction from the pods directory): `<root>/pods/<uid>/volumes/<plugin>/<name>`,
//! with `/proc/self/mountinfo` saying which are mounted. Nothing is mounted again: set-up is
//! idempotent and a reconstructed volume counts as mounted; teardown works on them as on any.

use super::mount::{self, MountInfo};
use std::path::{Path, PathBuf};

/// A volume directory found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub pod_uid: String,
    /// `kubernetes.io~empty-dir`, `kubernetes.io~secret`, …
    pub plugin_dir: String,
    pub name: String,
    pub dir: PathBuf,
    /// The filesystem type mounted exactly on the directory, if any.
    pub mounted: Option<String>,
}

fn entries(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<(String, PathBuf)> = rd
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    out.sort();
    out
}

/// Every `<root>/pods/*/volumes/*/*` directory, with what is mounted on it.
pub fn scan(root: &Path, mounts: &[MountInfo]) -> Vec<Found> {
    let mut out = Vec::new();
    for (uid, pod_dir) in entries(&root.join("pods")) {
        for (plugin_dir, plugin_path) in entries(&pod_dir.join("volumes")) {
            for (name, dir) in entries(&plugin_path) {
                let real = dir.canonicalize().unwrap_or(dir.clone());
                let mounted = mount::mount_at(mounts, &real).map(|m| m.fs_type.clone());
                out.push(Found { pod_uid: uid.clone(), plugin_dir: plugin_dir.clone(), name, dir, mounted });
            }
        }
    }
    out
}

/// Pod directories (UIDs) under `<root>/pods`.
pub fn pod_uids(root: &Path) -> Vec<String> {
    entries(&root.join("pods")).into_iter().map(|(u, _)| u).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_dirs_and_their_mounts_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        for p in [
            "pods/u1/volumes/kubernetes.io~empty-dir/cache",
            "pods/u1/volumes/kubernetes.io~secret/creds",
            "pods/u2/volumes/kubernetes.io~configmap/cfg",
            "pods/u3/containers/app",
        ] {
            std::fs::create_dir_all(root.join(p)).unwrap();
        }
        std::fs::write(root.join("pods/u1/volumes/kubernetes.io~empty-dir/not-a-dir"), "").unwrap();
        let secret = root.join("pods/u1/volumes/kubernetes.io~secret/creds");
        let mounts = vec![MountInfo {
            mount_point: secret.clone(),
            fs_type: "tmpfs".into(),
            source: "tmpfs".into(),
            super_options: "rw".into(),
        }];
        let found = scan(&root, &mounts);
        let names: Vec<(&str, &str, &str)> =
            found.iter().map(|f| (f.pod_uid.as_str(), f.plugin_dir.as_str(), f.name.as_str())).collect();
        assert_eq!(
            names,
            [
                ("u1", "kubernetes.io~empty-dir", "cache"),
                ("u1", "kubernetes.io~secret", "creds"),
                ("u2", "kubernetes.io~configmap", "cfg")
            ]
        );
        assert_eq!(found[1].mounted.as_deref(), Some("tmpfs"));
        assert_eq!(found[0].mounted, None);
        assert_eq!(pod_uids(&root), ["u1", "u2", "u3"]);
        assert!(scan(&root.join("nothing"), &[]).is_empty());
    }
}
