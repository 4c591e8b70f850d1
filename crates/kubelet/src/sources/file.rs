//! The static pod directory (`staticPodPath`): watched with inotify and rescanned every
//! `fileCheckFrequency` as a backstop. One Pod per file, YAML or JSON; hidden files are skipped.

use super::manifest::{self, ManifestError, Origin};
use super::{Snapshot, SourceKind};
use k8s_openapi::api::core::v1::Pod;
use notify::Watcher;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Debug, Clone)]
pub struct Config {
    pub dir: PathBuf,
    pub node_name: String,
    pub period: Duration,
}

/// Scan state kept between scans: first-seen times and the last error reported per file.
#[derive(Default)]
pub struct Scanner {
    seen: HashMap<String, String>,
    reported: HashMap<PathBuf, String>,
}

impl Scanner {
    /// Reads every manifest in `dir`. Bad files are reported (once per distinct error) and left out.
    pub fn scan(&mut self, dir: &Path, node_name: &str) -> Vec<Pod> {
        let mut paths: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot read static pod directory");
                }
                Vec::new()
            }
        };
        paths.sort();
        let mut pods = Vec::new();
        let mut names = HashSet::new();
        let mut errors = HashMap::new();
        for path in paths {
            let hidden = path.file_name().and_then(|n| n.to_str()).is_none_or(|n| n.starts_with('.'));
            if hidden || !path.is_file() {
                continue;
            }
            match self.read_one(&path, node_name) {
                Ok(pod) => {
                    let key = (pod.metadata.namespace.clone(), pod.metadata.name.clone());
                    if names.insert(key) {
                        pods.push(pod);
                    } else {
                        let name = pod.metadata.name.unwrap_or_default();
                        let origin = Origin { kind: SourceKind::File, location: path_str(&path) }.to_string();
                        errors.insert(path, ManifestError::Duplicate { origin, name }.to_string());
                    }
                }
                Err(e) => {
                    errors.insert(path, e.to_string());
                }
            }
        }
        for (path, msg) in &errors {
            if self.reported.get(path) != Some(msg) {
                tracing::error!(file = %path.display(), "invalid static pod manifest: {msg}");
            }
        }
        self.reported = errors;
        let live: HashSet<_> = pods.iter().filter_map(|p| p.metadata.uid.clone()).collect();
        self.seen.retain(|uid, _| live.contains(uid));
        pods
    }

    fn read_one(&mut self, path: &Path, node_name: &str) -> Result<Pod, ManifestError> {
        let origin = Origin { kind: SourceKind::File, location: path_str(path) };
        let read = |source| ManifestError::Read { origin: origin.to_string(), source };
        let meta = std::fs::metadata(path).map_err(read)?;
        if meta.len() as usize > manifest::MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge { origin: origin.to_string(), bytes: meta.len() });
        }
        let bytes = std::fs::read(path).map_err(read)?;
        let mut pods = manifest::decode(&bytes, &origin)?;
        let pod = pods.pop().ok_or_else(|| ManifestError::NoPod { origin: origin.to_string() })?;
        let uid = manifest::manifest_uid(&pod, &origin, node_name);
        let seen = self.seen.entry(uid).or_insert_with(now_rfc3339).clone();
        manifest::prepare(pod, &origin, node_name, &seen)
    }
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// Watches the directory and sends a snapshot whenever the set of pods changes.
pub async fn run(cfg: Config, tx: mpsc::Sender<Snapshot>) {
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        // Reading the directory is itself an (access) event: reacting to those would rescan
        // forever. Only changes count.
        if res.is_ok_and(|ev| !matches!(ev.kind, notify::EventKind::Access(_))) {
            let _ = ev_tx.send(());
        }
    })
    .map_err(|e| tracing::warn!(error = %e, "inotify unavailable; polling the static pod directory only"))
    .ok();
    let mut watching = false;
    let mut scanner = Scanner::default();
    let mut last: Option<Vec<Pod>> = None;
    loop {
        if !watching && let Some(w) = watcher.as_mut() {
            watching = w.watch(&cfg.dir, notify::RecursiveMode::NonRecursive).is_ok();
        }
        let pods = scanner.scan(&cfg.dir, &cfg.node_name);
        if last.as_ref() != Some(&pods) {
            last = Some(pods.clone());
            if tx.send(Snapshot { source: SourceKind::File, pods }).await.is_err() {
                return;
            }
        }
        tokio::select! {
            got = ev_rx.recv() => {
                if got.is_none() { watching = false; }
                // Rescan at once (pod start latency starts here); events queued meanwhile are
                // folded into this scan, and a file still being written triggers another.
                while ev_rx.try_recv().is_ok() {}
            }
            _ = tokio::time::sleep(cfg.period) => {
                // The directory may have been removed and recreated: watch it again.
                if let Some(w) = watcher.as_mut() && watching && !cfg.dir.exists() {
                    let _ = w.unwatch(&cfg.dir);
                    watching = false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_keeps_valid_pods_and_skips_bad_and_hidden_files() {
        let dir = tempfile::tempdir().unwrap();
        let good = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: good\nspec:\n  containers:\n  - name: c\n    image: busybox:1.36\n";
        std::fs::write(dir.path().join("good.yaml"), good).unwrap();
        std::fs::write(
            dir.path().join("bad.yaml"),
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: bad\nspec:\n  containers: []\n",
        )
        .unwrap();
        std::fs::write(dir.path().join(".hidden.yaml"), good.replace("good", "hidden")).unwrap();
        let mut s = Scanner::default();
        let pods = s.scan(dir.path(), "node");
        let names: Vec<_> = pods.iter().map(|p| p.metadata.name.clone().unwrap()).collect();
        assert_eq!(names, vec!["good-node"]);
        assert_eq!(s.reported.len(), 1);
        // The first-seen time survives a rescan, so the pod is unchanged.
        let again = s.scan(dir.path(), "node");
        assert_eq!(pods, again);
    }

    #[test]
    fn duplicate_pod_names_keep_the_first_file() {
        let dir = tempfile::tempdir().unwrap();
        let pod = |img: &str| {
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: dup\nspec:\n  containers:\n  - name: c\n    image: {img}\n"
            )
        };
        std::fs::write(dir.path().join("a.yaml"), pod("busybox:1")).unwrap();
        std::fs::write(dir.path().join("b.yaml"), pod("busybox:2")).unwrap();
        let mut s = Scanner::default();
        let pods = s.scan(dir.path(), "n");
        assert_eq!(pods.len(), 1);
        assert_eq!(pods[0].spec.as_ref().unwrap().containers[0].image.as_deref(), Some("busybox:1"));
        assert!(s.reported.values().any(|m| m.contains("already defined")));
    }
}
