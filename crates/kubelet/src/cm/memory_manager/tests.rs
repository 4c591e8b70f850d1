//! The Static policy on fake NUMA machines, after upstream's memory manager tests.

use super::*;
use crate::cm::cpu_manager::policy::tests::{container, pod};
use crate::cm::topology::fake::FakeSys;
use crate::cm::topology::hints::{NumaInfo, Options, Policy, Scope, TopologyManager};

const GI: u64 = 1 << 30;

fn cfg(dir: &std::path::Path) -> Config {
    Config {
        policy: "Static".into(),
        reserved_memory: vec![(0, BTreeMap::from([("memory".to_string(), GI)]))],
        allocatable_reservation: BTreeMap::from([("memory".to_string(), GI)]),
        state_dir: dir.to_path_buf(),
    }
}

fn topo() -> CpuTopology {
    CpuTopology::discover(FakeSys::dual_socket_ht().path()).unwrap()
}

fn admit(m: Arc<MemoryManager>, store: Arc<AffinityStore>, p: &Pod) -> Result<(), crate::admission::Rejection> {
    use crate::admission::Handler;
    let numa = NumaInfo { nodes: vec![0, 1], distances: BTreeMap::new() };
    let mut tm = TopologyManager::new(Policy::BestEffort, Scope::Container, Options::default(), numa, store).unwrap();
    tm.add_provider(m);
    tm.admit(p, &[])
}

#[test]
fn reserved_memory_must_match_node_allocatable() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.allocatable_reservation.insert("memory".into(), 2 * GI);
    assert_eq!(
        MemoryManager::start(&c, topo(), Arc::default()).unwrap_err().to_string(),
        r#"the total amount "1Gi" of type "memory" is not equal to the value "2Gi" determined by Node Allocatable feature"#
    );
    let mut c = cfg(dir.path());
    c.reserved_memory.push((3, BTreeMap::new()));
    assert_eq!(
        MemoryManager::start(&c, topo(), Arc::default()).unwrap_err().to_string(),
        "the reserved memory configuration references a NUMA node 3 that does not exist on this machine"
    );
    let mut c = cfg(dir.path());
    c.reserved_memory.clear();
    c.allocatable_reservation.clear();
    assert_eq!(
        MemoryManager::start(&c, topo(), Arc::default()).unwrap_err().to_string(),
        "[memorymanager] you should specify the system reserved memory"
    );
}

#[test]
fn guaranteed_memory_goes_to_the_narrowest_numa_nodes_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(AffinityStore::default());
    let m = Arc::new(MemoryManager::start(&cfg(dir.path()), topo(), store.clone()).unwrap());
    let node0 = &m.state().machine[&0].memory_map["memory"];
    assert_eq!((node0.total, node0.system_reserved, node0.free), (8 * GI, GI, 7 * GI));
    // 12Gi fits on no single node: both, filling node 0 first.
    let big = pod("big", vec![], vec![container("c", "1", "12Gi", true)]);
    admit(m.clone(), store.clone(), &big).unwrap();
    assert_eq!(m.numa_nodes_for("big", "c").as_deref(), Some("0,1"));
    // 2Gi fits on one node: node 1, the only one with room left.
    let small = pod("small", vec![], vec![container("c", "1", "2Gi", true)]);
    admit(m.clone(), store.clone(), &small).unwrap();
    assert_eq!(m.numa_nodes_for("small", "c").as_deref(), Some("1"));
    // A multi-node mask may not reuse nodes already used alone: 6Gi fits nowhere now.
    let third = pod("third", vec![], vec![container("c", "1", "6Gi", true)]);
    assert_eq!(admit(m.clone(), store.clone(), &third).unwrap_err().reason, "UnexpectedAdmissionError");
    // Burstable pods are left alone.
    let b = pod("b", vec![], vec![container("c", "1", "1Gi", false)]);
    admit(m.clone(), store.clone(), &b).unwrap();
    assert_eq!(m.numa_nodes_for("b", "c"), None);
    let before = m.state();
    drop(m);
    let m = MemoryManager::start(&cfg(dir.path()), topo(), Arc::default()).unwrap();
    assert_eq!(m.state(), before);
    // Gone pods give their memory back.
    m.remove_stale(&HashSet::from(["small".to_string()]), &HashSet::new());
    let node0 = &m.state().machine[&0].memory_map["memory"];
    assert_eq!(node0.free, node0.allocatable);
    assert_eq!(m.numa_nodes_for("small", "c").as_deref(), Some("1"));
    // A machine that changed under the state is refused.
    drop(m);
    let mut c = cfg(dir.path());
    c.reserved_memory = vec![
        (0, BTreeMap::from([("memory".to_string(), GI / 2)])),
        (1, BTreeMap::from([("memory".to_string(), GI / 2)])),
    ];
    assert_eq!(
        MemoryManager::start(&c, topo(), Arc::default()).unwrap_err().to_string(),
        "[memorymanager] the expected machine state is different from the real one"
    );
}

#[test]
fn the_none_policy_assigns_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let c = Config { policy: "None".into(), state_dir: dir.path().to_path_buf(), ..Config::default() };
    let store = Arc::new(AffinityStore::default());
    let m = Arc::new(MemoryManager::start(&c, topo(), store.clone()).unwrap());
    let g = pod("g", vec![], vec![container("c", "1", "1Gi", true)]);
    admit(m.clone(), store, &g).unwrap();
    assert_eq!(m.numa_nodes_for("g", "c"), None);
    let text = std::fs::read_to_string(dir.path().join("memory_manager_state")).unwrap();
    assert!(text.starts_with(r#"{"policyName":"None","machineState":{},"checksum":"#), "{text}");
}
