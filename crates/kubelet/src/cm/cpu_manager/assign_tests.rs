//! Scenarios from upstream's cpu_assignment_test.go (TestTakeByTopologyNUMAPacked,
//! TestTakeByTopologyNUMADistributed) on the same machines, read from fake sysfs trees.

use super::*;
use crate::cm::topology::fake::FakeSys;

fn topo(sys: FakeSys) -> CpuTopology {
    CpuTopology::discover(sys.path()).unwrap()
}

fn set(s: &str) -> CpuSet {
    CpuSet::parse(s).unwrap()
}

#[test]
fn packed_takes_on_a_dual_socket_ht_box() {
    let t = topo(FakeSys::dual_socket_ht());
    // (available, n, expected)
    let cases = [
        ("1-5,7-11", 1, "2"),        // a free thread on socket 0, whose sibling 8 is also free
        ("0-11", 6, "0,2,4,6,8,10"), // a whole socket
        ("0-11", 2, "0,6"),          // a whole core (the reserved-CPU example in NewStaticPolicy)
        // Whole cores, from the socket with fewer free CPUs first: core 4 (4,10) on socket 0,
        // then core 1 (1,7) on socket 1.
        ("1,3-11", 4, "1,4,7,10"),
        ("0-11", 7, "0-2,4,6,8,10"), // a socket, then the emptiest core's thread
    ];
    for (avail, n, want) in cases {
        assert_eq!(take_packed(&t, &set(avail), n).unwrap().to_string(), want, "{avail} take {n}");
    }
    assert_eq!(
        take_packed(&t, &set("0-3"), 5).unwrap_err().to_string(),
        "not enough cpus available to satisfy request: requested=5, available=4"
    );
}

#[test]
fn packed_takes_numa_nodes_and_sockets_on_a_multi_numa_socket_box() {
    let t = topo(FakeSys::dual_socket_multi_numa_ht());
    let cases = [
        ("0-79", 40, "0-19,40-59"),         // a socket
        ("0-79", 20, "0-9,40-49"),          // a NUMA node
        ("10-39,50-79", 20, "10-19,50-59"), // a NUMA node, one already taken
        ("0-79", 60, "0-29,40-69"),         // a socket and a NUMA node
        ("1-39,41-79", 60, "10-39,50-79"),  // the same with core 0 taken
    ];
    for (avail, n, want) in cases {
        assert_eq!(take_packed(&t, &set(avail), n).unwrap().to_string(), want, "{avail} take {n}");
    }
}

#[test]
fn distributed_spreads_evenly_over_numa_nodes() {
    let t = topo(FakeSys::dual_socket_multi_numa_ht());
    // Fits in one NUMA node: packed there.
    assert_eq!(take_distributed(&t, &set("0-79"), 8, 1).unwrap().to_string(), "0-3,40-43");
    // 40 CPUs over 2 NUMA nodes, 20 each.
    let got = take_distributed(&t, &set("0-79"), 40, 1).unwrap();
    let per_node: Vec<usize> = (0..4).map(|n| got.intersection(&t.details.cpus_in_numa_nodes(&[n])).len()).collect();
    assert_eq!(per_node.iter().filter(|c| **c == 20).count(), 2, "{got}");
    // 60 CPUs over 3 nodes, 20 each.
    let got = take_distributed(&t, &set("0-79"), 60, 1).unwrap();
    let per_node: Vec<usize> = (0..4).map(|n| got.intersection(&t.details.cpus_in_numa_nodes(&[n])).len()).collect();
    assert_eq!(per_node.iter().filter(|c| **c == 20).count(), 3, "{got}");
    // An odd count in groups of 2 falls back to packing.
    assert_eq!(take_distributed(&t, &set("0-79"), 3, 2).unwrap().len(), 3);
}
