//! The allocation checkpoints (upstream pkg/kubelet/allocation/state, checkpointmanager): per pod
//! UID the resources of each container (and the pod-level resources), kept in memory and written
//! atomically to `<root-dir>/allocated_pods_state` / `actuated_pods_state` after every change, in
//! upstream's (1.34/1.35, unversioned "V1") format:
//! `{"data":"{\"entries\":{\"<uid>\":{\"ContainerResources\":{…},\"PodLevelResources\":…}}}","checksum":N}`
//! where the checksum is FNV-32a over what Go's DeepHashObject prints for the data string. A file
//! whose checksum or JSON is wrong is refused with the path and a way out, as upstream refuses to
//! start (it asks to drain the node and delete the file).

use k8s_openapi::api::core::v1::ResourceRequirements;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const ALLOCATED_PODS_STATE: &str = "allocated_pods_state";
pub const ACTUATED_PODS_STATE: &str = "actuated_pods_state";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "could not restore state from checkpoint {path}: {why}; drain this node and delete the pod allocation checkpoint file before restarting the kubelet"
    )]
    Corrupt { path: PathBuf, why: String },
    #[error("failed to write checkpoint {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

pub type Result<T> = std::result::Result<T, Error>;

/// One pod's resources (upstream's PodResourceInfo; Go field names, no JSON tags).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PodResourceInfo {
    #[serde(rename = "ContainerResources", default)]
    pub containers: BTreeMap<String, ResourceRequirements>,
    #[serde(rename = "PodLevelResources", default)]
    pub pod_level: Option<ResourceRequirements>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Entries {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    entries: BTreeMap<String, PodResourceInfo>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Checkpoint {
    data: String,
    checksum: u64,
}

/// upstream's checksum.New over a string: FNV-32a of spew's `%#v`, which is `(string)` and the
/// string itself.
pub fn checksum(data: &str) -> u64 {
    u64::from(crate::cri::labels::fnv32a(&[b"(string)", data.as_bytes()]))
}

/// One checkpointed map of pod UID → resources; `path` None keeps it in memory only (tests,
/// hollow nodes).
#[derive(Debug, Default)]
pub struct State {
    pods: BTreeMap<String, PodResourceInfo>,
    path: Option<PathBuf>,
}

impl State {
    pub fn in_memory() -> Self {
        State::default()
    }

    /// Reads `<dir>/<name>`; a missing file is an empty state.
    pub fn load(dir: &Path, name: &str) -> Result<Self> {
        let path = dir.join(name);
        let corrupt = |why: String| Error::Corrupt { path: path.clone(), why };
        let pods = match std::fs::read(&path) {
            Ok(bytes) => {
                let cp: Checkpoint = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
                if checksum(&cp.data) != cp.checksum {
                    return Err(corrupt("checkpoint is corrupted (checksum mismatch)".into()));
                }
                let e: Entries = serde_json::from_str(&cp.data).map_err(|e| corrupt(e.to_string()))?;
                e.entries
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(corrupt(e.to_string())),
        };
        Ok(State { pods, path: Some(path) })
    }

    pub fn get(&self, uid: &str) -> Option<&PodResourceInfo> {
        self.pods.get(uid)
    }

    pub fn container(&self, uid: &str, name: &str) -> Option<&ResourceRequirements> {
        self.pods.get(uid)?.containers.get(name)
    }

    pub fn uids(&self) -> impl Iterator<Item = &String> {
        self.pods.keys()
    }

    pub fn set_pod(&mut self, uid: &str, info: PodResourceInfo) -> Result<()> {
        if self.pods.get(uid) == Some(&info) {
            return Ok(());
        }
        self.pods.insert(uid.to_string(), info);
        self.store()
    }

    pub fn set_container(&mut self, uid: &str, name: &str, r: ResourceRequirements) -> Result<()> {
        let pod = self.pods.entry(uid.to_string()).or_default();
        if pod.containers.get(name) == Some(&r) {
            return Ok(());
        }
        pod.containers.insert(name.to_string(), r);
        self.store()
    }

    pub fn set_pod_level(&mut self, uid: &str, r: Option<ResourceRequirements>) -> Result<()> {
        let pod = self.pods.entry(uid.to_string()).or_default();
        if pod.pod_level == r {
            return Ok(());
        }
        pod.pod_level = r;
        self.store()
    }

    pub fn remove(&mut self, uid: &str) -> Result<()> {
        if self.pods.remove(uid).is_some() {
            self.store()?;
        }
        Ok(())
    }

    /// Writes the file atomically (a temporary file renamed over it).
    fn store(&self) -> Result<()> {
        let Some(path) = &self.path else { return Ok(()) };
        let data = serde_json::to_string(&Entries { entries: self.pods.clone() }).unwrap_or_default();
        let cp = Checkpoint { checksum: checksum(&data), data };
        let bytes = serde_json::to_vec(&cp).unwrap_or_default();
        let write = |source| Error::Write { path: path.clone(), source };
        let tmp = path.with_extension("tmp");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(write)?;
        }
        std::fs::write(&tmp, bytes).map_err(write)?;
        std::fs::rename(&tmp, path).map_err(write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(cpu: &str) -> ResourceRequirements {
        serde_json::from_value(serde_json::json!({"requests": {"cpu": cpu}, "limits": {"cpu": cpu}})).unwrap()
    }

    #[test]
    fn checkpoint_round_trips_in_upstreams_format() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = State::load(dir.path(), ALLOCATED_PODS_STATE).unwrap();
        s.set_container("u1", "app", req("100m")).unwrap();
        let raw: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(ALLOCATED_PODS_STATE)).unwrap()).unwrap();
        let data = raw["data"].as_str().unwrap();
        assert_eq!(raw["checksum"].as_u64().unwrap(), checksum(data));
        let inner: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!(inner["entries"]["u1"]["ContainerResources"]["app"]["limits"]["cpu"], "100m");
        assert!(inner["entries"]["u1"]["PodLevelResources"].is_null());
        let again = State::load(dir.path(), ALLOCATED_PODS_STATE).unwrap();
        assert_eq!(again.container("u1", "app"), Some(&req("100m")));
    }

    #[test]
    fn a_corrupt_checkpoint_is_refused_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ACTUATED_PODS_STATE);
        std::fs::write(&path, r#"{"data":"{\"entries\":{}}","checksum":1}"#).unwrap();
        let e = State::load(dir.path(), ACTUATED_PODS_STATE).unwrap_err().to_string();
        assert!(e.contains("actuated_pods_state") && e.contains("checksum mismatch"), "{e}");
        std::fs::write(&path, "not json").unwrap();
        assert!(State::load(dir.path(), ACTUATED_PODS_STATE).is_err());
    }

    #[test]
    fn checksum_is_fnv32a_of_the_spewed_string() {
        // DeepHashObject of a Go string hashes "(string)" followed by the string.
        assert_eq!(checksum(""), u64::from(crate::cri::labels::fnv32a(&[b"(string)"])));
    }
}
