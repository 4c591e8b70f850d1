//! The CPU manager's state and its checkpoint `<root-dir>/cpu_manager_state` (upstream
//! cpumanager/state: the v2 CPUManagerCheckpoint). The file is Go's JSON of
//! `{policyName, defaultCpuSet, entries (omitted when empty), checksum}`; the checksum is
//! checkpointmanager's: FNV-32a over go-spew's `%#v` rendering of the checkpoint struct with the
//! checksum field 0 (`checksum.New`, `hash.DeepHashObject`) — not over the JSON — so a file a Go
//! kubelet wrote verifies here and ours verifies there. A checksum of 0 is accepted unchecked,
//! as upstream does for old files.

use crate::cm::topology::cpuset::CpuSet;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const STATE_FILE: &str = "cpu_manager_state";

/// Exclusive CPUs by pod UID and container name.
pub type Assignments = BTreeMap<String, BTreeMap<String, CpuSet>>;

/// The assignments and the shared pool (upstream's stateMemory).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    pub default_cpu_set: CpuSet,
    pub assignments: Assignments,
}

impl State {
    pub fn get(&self, pod: &str, container: &str) -> Option<&CpuSet> {
        self.assignments.get(pod).and_then(|c| c.get(container))
    }

    /// The container's exclusive CPUs, or the shared pool (GetCPUSetOrDefault).
    pub fn cpu_set_or_default(&self, pod: &str, container: &str) -> CpuSet {
        self.get(pod, container).cloned().unwrap_or_else(|| self.default_cpu_set.clone())
    }

    pub fn set(&mut self, pod: &str, container: &str, cpus: CpuSet) {
        self.assignments.entry(pod.to_string()).or_default().insert(container.to_string(), cpus);
    }

    pub fn delete(&mut self, pod: &str, container: &str) {
        if let Some(c) = self.assignments.get_mut(pod) {
            c.remove(container);
            if c.is_empty() {
                self.assignments.remove(pod);
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configured policy {configured:?} differs from state checkpoint policy {found:?}")]
    PolicyChanged { configured: String, found: String },
    #[error("could not parse default cpu set {0:?}: {1}")]
    DefaultSet(String, String),
    #[error("could not parse cpuset {cpus:?} for container {container:?} in pod {pod:?}: {why}")]
    Entry { cpus: String, container: String, pod: String, why: String },
    /// upstream's ErrCorruptCheckpoint.
    #[error("checkpoint is corrupted")]
    Corrupt,
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// The file as Go writes it.
#[derive(Debug, Serialize, Deserialize)]
struct Checkpoint {
    #[serde(rename = "policyName", default)]
    policy_name: String,
    #[serde(rename = "defaultCpuSet", alias = "defaultCPUSet", default)]
    default_cpu_set: String,
    #[serde(rename = "entries", default, skip_serializing_if = "BTreeMap::is_empty")]
    entries: BTreeMap<String, BTreeMap<String, String>>,
    #[serde(rename = "checksum", default)]
    checksum: u64,
}

/// FNV-32a, the hash behind checkpointmanager's checksum.
pub fn fnv32a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(*b)).wrapping_mul(0x0100_0193))
}

/// go-spew's `%#v` of a `map[string]string` or nested string map, keys sorted, no types
/// inside (spew prints the type only at the top of a map): `map[a:1 b:2]`.
pub fn spew_string_map<'a>(entries: impl Iterator<Item = (&'a String, String)>) -> String {
    let items: Vec<String> = entries.map(|(k, v)| format!("{k}:{v}")).collect();
    format!("map[{}]", items.join(" "))
}

impl Checkpoint {
    /// `checksum.New(cp)` with the checksum field zeroed: spew's
    /// `(*state.CPUManagerCheckpoint){PolicyName:(string)… DefaultCPUSet:(string)… Entries:(map[string]map[string]string)map[…] Checksum:(checksum.Checksum)0}`.
    fn compute_checksum(&self) -> u64 {
        let entries = spew_string_map(
            self.entries.iter().map(|(pod, c)| (pod, spew_string_map(c.iter().map(|(n, v)| (n, v.clone()))))),
        );
        let text = format!(
            "(*state.CPUManagerCheckpoint){{PolicyName:(string){} DefaultCPUSet:(string){} Entries:(map[string]map[string]string){} Checksum:(checksum.Checksum)0}}",
            self.policy_name, self.default_cpu_set, entries
        );
        u64::from(fnv32a(text.as_bytes()))
    }
}

/// Reads the checkpoint: `Ok(None)` when there is none; the state when it verifies and was
/// written by the same policy.
pub fn load(path: &Path, policy: &str) -> Result<Option<State>, Error> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(Error::Io { path: path.to_path_buf(), source }),
    };
    let cp: Checkpoint = serde_json::from_slice(&bytes)?;
    if cp.checksum != 0 && cp.checksum != cp.compute_checksum() {
        return Err(Error::Corrupt);
    }
    if cp.policy_name != policy {
        return Err(Error::PolicyChanged { configured: policy.into(), found: cp.policy_name });
    }
    let default_cpu_set =
        CpuSet::parse(&cp.default_cpu_set).map_err(|e| Error::DefaultSet(cp.default_cpu_set.clone(), e.why))?;
    let mut state = State { default_cpu_set, assignments: BTreeMap::new() };
    for (pod, containers) in &cp.entries {
        for (container, cpus) in containers {
            let set = CpuSet::parse(cpus).map_err(|e| Error::Entry {
                cpus: cpus.clone(),
                container: container.clone(),
                pod: pod.clone(),
                why: e.why,
            })?;
            state.set(pod, container, set);
        }
    }
    Ok(Some(state))
}

/// The file's bytes for a state (MarshalCheckpoint).
pub fn encode(policy: &str, state: &State) -> Vec<u8> {
    let mut cp = Checkpoint {
        policy_name: policy.to_string(),
        default_cpu_set: state.default_cpu_set.to_string(),
        entries: state
            .assignments
            .iter()
            .map(|(pod, c)| (pod.clone(), c.iter().map(|(n, s)| (n.clone(), s.to_string())).collect()))
            .collect(),
        checksum: 0,
    };
    cp.checksum = cp.compute_checksum();
    serde_json::to_vec(&cp).unwrap_or_default()
}

/// Writes the checkpoint atomically (a temporary file renamed over it, as upstream's file store).
pub fn store(path: &Path, policy: &str, state: &State) -> Result<(), Error> {
    write_atomic(path, &encode(policy, state))
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(policy: &str, default: &str, entries: &[(&str, &str, &str)], checksum: u64) -> Checkpoint {
        let mut e: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for (p, c, s) in entries {
            e.entry(p.to_string()).or_default().insert(c.to_string(), s.to_string());
        }
        Checkpoint { policy_name: policy.into(), default_cpu_set: default.into(), entries: e, checksum }
    }

    #[test]
    fn checksums_match_upstreams_test_checkpoints() {
        // From upstream's state_checkpoint_test.go ("Restore default cpu set", "Restore valid
        // checkpoint").
        assert_eq!(cp("none", "4-6", &[], 0).compute_checksum(), 354655845);
        let two = cp("none", "1-3", &[("pod", "container1", "4-6"), ("pod", "container2", "1-3")], 0);
        assert_eq!(two.compute_checksum(), 3610638499);
    }

    #[test]
    fn a_go_kubelets_file_loads_and_ours_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        std::fs::write(
            &path,
            r#"{"policyName":"none","defaultCPUSet":"1-3","entries":{"pod":{"container1":"4-6","container2":"1-3"}},"checksum":3610638499}"#,
        )
        .unwrap();
        let state = load(&path, "none").unwrap().unwrap();
        assert_eq!(state.get("pod", "container1").unwrap().to_string(), "4-6");
        assert_eq!(state.default_cpu_set.to_string(), "1-3");
        store(&path, "none", &state).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            r#"{"policyName":"none","defaultCpuSet":"1-3","entries":{"pod":{"container1":"4-6","container2":"1-3"}},"checksum":3610638499}"#
        );
        assert_eq!(load(&path, "none").unwrap(), Some(state));
    }

    #[test]
    fn a_tampered_file_a_changed_policy_and_bad_json_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        std::fs::write(&path, r#"{"policyName":"static","defaultCpuSet":"0-1","checksum":1}"#).unwrap();
        assert_eq!(load(&path, "static").unwrap_err().to_string(), "checkpoint is corrupted");
        let state = State { default_cpu_set: CpuSet::of([0, 1]), ..Default::default() };
        store(&path, "none", &state).unwrap();
        assert_eq!(
            load(&path, "static").unwrap_err().to_string(),
            r#"configured policy "static" differs from state checkpoint policy "none""#
        );
        std::fs::write(&path, "{").unwrap();
        assert!(matches!(load(&path, "static"), Err(Error::Json(_))));
        assert!(load(&dir.path().join("absent"), "static").unwrap().is_none());
    }
}
