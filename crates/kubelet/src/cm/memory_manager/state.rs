//! The memory manager's state and `<root-dir>/memory_manager_state` (upstream
//! memorymanager/state, the MemoryManagerCheckpoint most kubelets write: policyName,
//! machineState, entries, checksum). The checksum is checkpointmanager's: FNV-32a over go-spew's
//! `%#v` of the checkpoint struct with the checksum 0 (checked against upstream's test file).

use crate::cm::cpu_manager::state::{fnv32a, write_atomic};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

pub const STATE_FILE: &str = "memory_manager_state";

/// One resource on one NUMA node, bytes (MemoryTable).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryTable {
    #[serde(rename = "total")]
    pub total: u64,
    #[serde(rename = "systemReserved")]
    pub system_reserved: u64,
    pub allocatable: u64,
    pub reserved: u64,
    pub free: u64,
}

/// NUMANodeState.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    #[serde(rename = "numberOfAssignments")]
    pub assignments: i64,
    #[serde(rename = "memoryMap")]
    pub memory_map: BTreeMap<String, MemoryTable>,
    pub cells: Vec<usize>,
}

/// An assignment of `size` bytes of `type` over the NUMA nodes in `numaAffinity` (Block).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    #[serde(rename = "numaAffinity")]
    pub numa_affinity: Vec<usize>,
    #[serde(rename = "type")]
    pub kind: String,
    pub size: u64,
}

pub type MachineState = BTreeMap<usize, NodeState>;
pub type Assignments = BTreeMap<String, BTreeMap<String, Vec<Block>>>;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    pub machine: MachineState,
    pub assignments: Assignments,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("[memorymanager] configured policy {configured:?} differs from state checkpoint policy {found:?}")]
    PolicyChanged { configured: String, found: String },
    #[error("checkpoint is corrupted")]
    Corrupt,
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Io(#[from] crate::cm::cpu_manager::state::Error),
    #[error("{path}: {source}")]
    Read { path: std::path::PathBuf, source: std::io::Error },
}

#[derive(Debug, Serialize, Deserialize)]
struct Checkpoint {
    #[serde(rename = "policyName", default)]
    policy_name: String,
    #[serde(rename = "machineState", default)]
    machine_state: MachineState,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    entries: Assignments,
    #[serde(default)]
    checksum: u64,
}

fn spew_ints(v: &[usize]) -> String {
    format!("[{}]", v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(" "))
}

impl Checkpoint {
    /// `checksum.New(cp)`: spew's `(*state.MemoryManagerCheckpoint){PolicyName:(string)…
    /// MachineState:(state.NUMANodeMap)map[0:<*>{…}] Entries:(state.ContainerMemoryAssignments)map[…]
    /// Checksum:(checksum.Checksum)0}` (map values print without types, pointers as `<*>`).
    fn compute_checksum(&self) -> u64 {
        let table = |t: &MemoryTable| {
            format!(
                "<*>{{TotalMemSize:(uint64){} SystemReserved:(uint64){} Allocatable:(uint64){} Reserved:(uint64){} Free:(uint64){}}}",
                t.total, t.system_reserved, t.allocatable, t.reserved, t.free
            )
        };
        let node = |n: &NodeState| {
            let map: Vec<String> = n.memory_map.iter().map(|(k, t)| format!("{k}:{}", table(t))).collect();
            format!(
                "<*>{{NumberOfAssignments:(int){} MemoryMap:(map[v1.ResourceName]*state.MemoryTable)map[{}] Cells:([]int){}}}",
                n.assignments,
                map.join(" "),
                spew_ints(&n.cells)
            )
        };
        let machine: Vec<String> = self.machine_state.iter().map(|(id, n)| format!("{id}:{}", node(n))).collect();
        let block = |b: &Block| {
            format!(
                "{{NUMAAffinity:([]int){} Type:(v1.ResourceName){} Size:(uint64){}}}",
                spew_ints(&b.numa_affinity),
                b.kind,
                b.size
            )
        };
        let entries: Vec<String> = self
            .entries
            .iter()
            .map(|(pod, cs)| {
                let cs: Vec<String> = cs
                    .iter()
                    .map(|(c, blocks)| format!("{c}:[{}]", blocks.iter().map(block).collect::<Vec<_>>().join(" ")))
                    .collect();
                format!("{pod}:map[{}]", cs.join(" "))
            })
            .collect();
        let text = format!(
            "(*state.MemoryManagerCheckpoint){{PolicyName:(string){} MachineState:(state.NUMANodeMap)map[{}] Entries:(state.ContainerMemoryAssignments)map[{}] Checksum:(checksum.Checksum)0}}",
            self.policy_name,
            machine.join(" "),
            entries.join(" ")
        );
        u64::from(fnv32a(text.as_bytes()))
    }
}

pub fn load(path: &Path, policy: &str) -> Result<Option<State>, Error> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(Error::Read { path: path.to_path_buf(), source }),
    };
    let cp: Checkpoint = serde_json::from_slice(&bytes)?;
    if cp.checksum != 0 && cp.checksum != cp.compute_checksum() {
        return Err(Error::Corrupt);
    }
    if cp.policy_name != policy {
        return Err(Error::PolicyChanged { configured: policy.into(), found: cp.policy_name });
    }
    Ok(Some(State { machine: cp.machine_state, assignments: cp.entries }))
}

pub fn store(path: &Path, policy: &str, state: &State) -> Result<(), Error> {
    let mut cp = Checkpoint {
        policy_name: policy.to_string(),
        machine_state: state.machine.clone(),
        entries: state.assignments.clone(),
        checksum: 0,
    };
    cp.checksum = cp.compute_checksum();
    write_atomic(path, &serde_json::to_vec(&cp)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPSTREAM: &str = r#"{
        "policyName":"static",
        "machineState":{"0":{"numberOfAssignments":0,"memoryMap":{"memory":{"total":2048,"systemReserved":512,"allocatable":1536,"reserved":512,"free":1024}},"cells":[]}},
        "entries":{"pod":{"container1":[{"numaAffinity":[0],"type":"memory","size":512}]}},
        "checksum": 4215593881
    }"#;

    #[test]
    fn upstreams_test_checkpoint_verifies_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        std::fs::write(&path, UPSTREAM).unwrap();
        let st = load(&path, "Static").err().unwrap();
        assert_eq!(
            st.to_string(),
            r#"[memorymanager] configured policy "Static" differs from state checkpoint policy "static""#
        );
        let st = load(&path, "static").unwrap().unwrap();
        assert_eq!(st.assignments["pod"]["container1"][0].size, 512);
        store(&path, "static", &st).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with(r#""checksum":4215593881}"#), "{text}");
        std::fs::write(&path, UPSTREAM.replace("4215593881", "101010")).unwrap();
        assert_eq!(load(&path, "static").unwrap_err().to_string(), "checkpoint is corrupted");
    }
}
