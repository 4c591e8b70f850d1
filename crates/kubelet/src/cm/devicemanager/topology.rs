//! Topology hints for device plugin resources (upstream's GetTopologyHints /
//! generateDeviceTopologyHints): every combination of the machine's NUMA nodes that holds
//! enough free devices (and every reusable one) is a hint; those with the fewest nodes that
//! could hold the request at all are preferred. The topology manager takes them through its
//! hint provider trait; `DeviceManager::get_topology_hints` is the method it calls.

use super::proto::Device;
use std::collections::{BTreeMap, BTreeSet};

/// A NUMA affinity and whether it is a preferred one (upstream's topologymanager.TopologyHint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyHint {
    pub numa_affinity: BTreeSet<i64>,
    pub preferred: bool,
}

/// The machine's NUMA nodes from `/sys/devices/system/node/node<N>` (node 0 when unreadable).
pub fn machine_numa_nodes() -> Vec<i64> {
    let mut nodes: Vec<i64> = std::fs::read_dir("/sys/devices/system/node")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("node")?.parse().ok())
        .collect();
    nodes.sort_unstable();
    if nodes.is_empty() { vec![0] } else { nodes }
}

fn numa_of(d: Option<&Device>) -> Vec<i64> {
    d.and_then(|d| d.topology.as_ref()).map(|t| t.nodes.iter().map(|n| n.id).collect()).unwrap_or_default()
}

/// Whether any device of the resource has NUMA affinity (upstream's deviceHasTopologyAlignment).
pub fn has_alignment(all: &BTreeMap<String, Device>) -> bool {
    all.values().any(|d| !numa_of(Some(d)).is_empty())
}

/// The hints for `request` devices out of `available` plus `reusable` (which must all fit the
/// mask), over every non-empty combination of `nodes`.
pub fn hints_for(
    nodes: &[i64],
    all: &BTreeMap<String, Device>,
    available: &BTreeSet<String>,
    reusable: &BTreeSet<String>,
    request: usize,
) -> Vec<TopologyHint> {
    let mut min_size = nodes.len();
    let mut hints = Vec::new();
    let combos = 1u64.checked_shl(nodes.len() as u32).unwrap_or(u64::MAX);
    for bits in 1..combos {
        let mask: BTreeSet<i64> =
            nodes.iter().enumerate().filter(|(i, _)| bits & (1 << i) != 0).map(|(_, n)| *n).collect();
        let in_mask = |d: Option<&Device>| numa_of(d).iter().any(|n| mask.contains(n));
        let fit = all.values().filter(|d| in_mask(Some(d))).count();
        if fit >= request && mask.len() < min_size {
            min_size = mask.len();
        }
        let mut matching = 0;
        let mut reusable_outside = false;
        for d in reusable {
            let dev = all.get(d);
            if numa_of(dev).is_empty() {
                continue;
            }
            if !in_mask(dev) {
                reusable_outside = true;
                break;
            }
            matching += 1;
        }
        if reusable_outside {
            continue;
        }
        matching += available.iter().filter(|d| in_mask(all.get(*d))).count();
        if matching >= request {
            hints.push(TopologyHint { numa_affinity: mask, preferred: false });
        }
    }
    for h in &mut hints {
        h.preferred = h.numa_affinity.len() == min_size;
    }
    hints
}
