//! Probe results that survive a kubelet restart: per pod, which container instances were ready
//! and had passed their startup probe, in `<root>/pods/<uid>/probe-state.json` (written atomically
//! when a result flips). After a restart [`super::PodProbes`] starts each instance's probes from these
//! results instead of "not ready", so a restart does not flip Ready pods to NotReady (upstream
//! starts every readiness probe over, taking ready pods out of their Services until it passes).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What is kept per container instance (keyed by runtime container id).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    pub ready: bool,
    pub started: bool,
}

pub type States = BTreeMap<String, Saved>;

pub fn path(pod_dir: &Path) -> PathBuf {
    pod_dir.join("probe-state.json")
}

/// The saved states, or none when the file is missing or unreadable (probes then start over).
pub fn load(pod_dir: &Path) -> States {
    let p = path(pod_dir);
    match std::fs::read(&p) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(file = %p.display(), error = %e, "ignoring unreadable probe checkpoint");
            States::new()
        }),
        Err(_) => States::new(),
    }
}

/// Writes the states (temp file + rename, mode 0600). Nothing is written when the pod directory
/// is gone (the pod is being removed).
pub fn save(pod_dir: &Path, states: &States) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if !pod_dir.is_dir() {
        return Ok(());
    }
    let p = path(pod_dir);
    let tmp = p.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(&tmp)?;
    f.write_all(&serde_json::to_vec(states).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing_or_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).is_empty());
        let mut s = States::new();
        s.insert("c1".into(), Saved { ready: true, started: true });
        s.insert("c2".into(), Saved { ready: false, started: true });
        save(dir.path(), &s).unwrap();
        assert_eq!(load(dir.path()), s);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(path(dir.path())).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::write(path(dir.path()), b"{not json").unwrap();
        assert!(load(dir.path()).is_empty());
        // A removed pod directory is not recreated.
        let gone = dir.path().join("gone");
        save(&gone, &s).unwrap();
        assert!(!gone.exists());
    }
}
