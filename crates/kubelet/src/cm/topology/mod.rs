//! The machine's CPU and NUMA topology (upstream pkg/kubelet/cm/cpumanager/topology, which reads
//! it through cAdvisor), read here straight from sysfs under a root so tests run against fake
//! trees: `devices/system/cpu/online`, `cpu<N>/topology/{core_id,physical_package_id}`,
//! `devices/system/node/node<N>/{cpulist,meminfo}`. `bitmask` holds NUMA affinity masks,
//! `hints` the topology manager (policies, scopes, hint providers).

pub mod bitmask;
pub mod cpuset;
pub mod hints;

use cpuset::CpuSet;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Where a logical CPU sits. `core` is unique machine-wide: the lowest CPU ID among the core's
/// threads (upstream's getUniqueCoreID), since sysfs `core_id` repeats across sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuInfo {
    pub numa: usize,
    pub socket: usize,
    pub core: usize,
}

/// Logical CPUs by ID (upstream's CPUDetails), with the queries the CPU manager needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Details(pub BTreeMap<usize, CpuInfo>);

impl Details {
    pub fn cpus(&self) -> CpuSet {
        self.0.keys().copied().collect()
    }

    pub fn keep_only(&self, cpus: &CpuSet) -> Details {
        Details(self.0.iter().filter(|(c, _)| cpus.contains(**c)).map(|(c, i)| (*c, *i)).collect())
    }

    fn ids(&self, f: impl Fn(&CpuInfo) -> usize) -> BTreeSet<usize> {
        self.0.values().map(f).collect()
    }

    fn cpus_where(&self, f: impl Fn(&CpuInfo) -> bool) -> CpuSet {
        self.0.iter().filter(|(_, i)| f(i)).map(|(c, _)| *c).collect()
    }

    pub fn numa_nodes(&self) -> BTreeSet<usize> {
        self.ids(|i| i.numa)
    }

    pub fn sockets(&self) -> BTreeSet<usize> {
        self.ids(|i| i.socket)
    }

    pub fn cores(&self) -> BTreeSet<usize> {
        self.ids(|i| i.core)
    }

    pub fn cpus_in_numa_nodes(&self, ids: &[usize]) -> CpuSet {
        self.cpus_where(|i| ids.contains(&i.numa))
    }

    pub fn cpus_in_sockets(&self, ids: &[usize]) -> CpuSet {
        self.cpus_where(|i| ids.contains(&i.socket))
    }

    pub fn cpus_in_cores(&self, ids: &[usize]) -> CpuSet {
        self.cpus_where(|i| ids.contains(&i.core))
    }

    pub fn sockets_in_numa_nodes(&self, ids: &[usize]) -> BTreeSet<usize> {
        self.0.values().filter(|i| ids.contains(&i.numa)).map(|i| i.socket).collect()
    }

    pub fn numa_nodes_in_sockets(&self, ids: &[usize]) -> BTreeSet<usize> {
        self.0.values().filter(|i| ids.contains(&i.socket)).map(|i| i.numa).collect()
    }

    pub fn cores_in_sockets(&self, ids: &[usize]) -> BTreeSet<usize> {
        self.0.values().filter(|i| ids.contains(&i.socket)).map(|i| i.core).collect()
    }

    pub fn cores_in_numa_nodes(&self, ids: &[usize]) -> BTreeSet<usize> {
        self.0.values().filter(|i| ids.contains(&i.numa)).map(|i| i.core).collect()
    }
}

/// The machine: CPUs with their core, socket and NUMA node, and each NUMA node's memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuTopology {
    pub details: Details,
    pub num_cpus: usize,
    pub num_cores: usize,
    pub num_sockets: usize,
    pub num_numa_nodes: usize,
    /// MemTotal of each NUMA node, bytes.
    pub numa_memory: BTreeMap<usize, u64>,
    /// `node<N>/distance`: the distance from node N to each node, by node ID.
    pub numa_distances: BTreeMap<usize, Vec<u64>>,
    /// `node<N>/hugepages/hugepages-<kB>kB/nr_hugepages`: (page size in bytes, pages) per node.
    pub numa_hugepages: BTreeMap<usize, Vec<(u64, u64)>>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the CPU topology: {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cannot read the CPU topology: {path}: {why}")]
    Parse { path: PathBuf, why: String },
    #[error("cannot read the CPU topology: no online CPUs under {0}")]
    NoCpus(PathBuf),
}

fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })
}

fn read_usize(path: &Path) -> Result<usize, Error> {
    let text = read(path)?;
    // physical_package_id is -1 on some virtual machines: count it as socket 0.
    let t = text.trim();
    if t == "-1" {
        return Ok(0);
    }
    t.parse().map_err(|_| Error::Parse { path: path.to_path_buf(), why: format!("{t:?} is not a number") })
}

fn read_cpuset(path: &Path) -> Result<CpuSet, Error> {
    CpuSet::parse(&read(path)?).map_err(|e| Error::Parse { path: path.to_path_buf(), why: e.to_string() })
}

impl CpuTopology {
    /// Builds a topology from (cpu, numa, socket, sysfs core_id) rows.
    pub fn from_cpus(rows: &[(usize, usize, usize, usize)], numa_memory: BTreeMap<usize, u64>) -> CpuTopology {
        let mut lowest: BTreeMap<(usize, usize), usize> = BTreeMap::new();
        for &(cpu, _, socket, core_id) in rows {
            let e = lowest.entry((socket, core_id)).or_insert(cpu);
            *e = (*e).min(cpu);
        }
        let details = Details(
            rows.iter()
                .map(|&(cpu, numa, socket, core_id)| (cpu, CpuInfo { numa, socket, core: lowest[&(socket, core_id)] }))
                .collect(),
        );
        CpuTopology {
            num_cpus: details.0.len(),
            num_cores: details.cores().len(),
            num_sockets: details.sockets().len(),
            num_numa_nodes: details.numa_nodes().len(),
            details,
            numa_memory,
            numa_distances: BTreeMap::new(),
            numa_hugepages: BTreeMap::new(),
        }
    }

    /// Reads the topology under a sysfs root (`/sys` on the machine).
    pub fn discover(sys: &Path) -> Result<CpuTopology, Error> {
        let cpu_dir = sys.join("devices/system/cpu");
        let online = read_cpuset(&cpu_dir.join("online"))?;
        if online.is_empty() {
            return Err(Error::NoCpus(cpu_dir));
        }
        let node_dir = sys.join("devices/system/node");
        let mut numa_of = BTreeMap::new();
        let mut numa_memory = BTreeMap::new();
        let mut numa_distances = BTreeMap::new();
        let mut numa_hugepages: BTreeMap<usize, Vec<(u64, u64)>> = BTreeMap::new();
        if let Ok(entries) = std::fs::read_dir(&node_dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                let Some(id) = name.strip_prefix("node").and_then(|n| n.parse::<usize>().ok()) else { continue };
                for cpu in read_cpuset(&entry.path().join("cpulist"))?.iter() {
                    numa_of.insert(cpu, id);
                }
                if let Ok(meminfo) = std::fs::read_to_string(entry.path().join("meminfo")) {
                    numa_memory.insert(id, node_mem_total(&meminfo));
                }
                for hp in std::fs::read_dir(entry.path().join("hugepages")).into_iter().flatten().flatten() {
                    let name = hp.file_name().to_string_lossy().to_string();
                    let Some(kb) = name.strip_prefix("hugepages-").and_then(|n| n.strip_suffix("kB")) else { continue };
                    let (Ok(kb), Ok(pages)) = (kb.parse::<u64>(), read_usize(&hp.path().join("nr_hugepages"))) else {
                        continue;
                    };
                    numa_hugepages.entry(id).or_default().push((kb * 1024, pages as u64));
                }
                if let Ok(d) = std::fs::read_to_string(entry.path().join("distance")) {
                    numa_distances.insert(id, d.split_whitespace().filter_map(|x| x.parse().ok()).collect());
                }
            }
        }
        let mut rows = Vec::new();
        for cpu in online.iter() {
            let topo = cpu_dir.join(format!("cpu{cpu}/topology"));
            let socket = read_usize(&topo.join("physical_package_id"))?;
            let core_id = read_usize(&topo.join("core_id"))?;
            rows.push((cpu, numa_of.get(&cpu).copied().unwrap_or(0), socket, core_id));
        }
        if numa_memory.is_empty() {
            numa_memory.insert(0, crate::cm::machine_memory().max(0) as u64);
        }
        let mut topology = CpuTopology::from_cpus(&rows, numa_memory);
        topology.numa_distances = numa_distances;
        topology.numa_hugepages = numa_hugepages;
        Ok(topology)
    }

    pub fn cpus(&self) -> CpuSet {
        self.details.cpus()
    }

    /// Hyper-threads per core (upstream's CPUsPerCore; 0 without cores).
    pub fn cpus_per_core(&self) -> usize {
        self.num_cpus.checked_div(self.num_cores).unwrap_or(0)
    }

    pub fn cpus_per_socket(&self) -> usize {
        self.num_cpus.checked_div(self.num_sockets).unwrap_or(0)
    }

    /// The core (unique ID) a CPU belongs to.
    pub fn core_of(&self, cpu: usize) -> Option<usize> {
        self.details.0.get(&cpu).map(|i| i.core)
    }
}

/// `Node 0 MemTotal:  24572428 kB` → bytes.
fn node_mem_total(meminfo: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|l| l.split_once("MemTotal:").map(|(_, v)| v))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

#[cfg(test)]
pub(crate) mod fake;

#[cfg(test)]
mod tests {
    use super::fake::FakeSys;
    use super::*;

    #[test]
    fn discovers_sockets_numa_nodes_and_smt_siblings() {
        // 2 sockets × 3 cores × 2 threads, one NUMA node per socket; siblings are n and n+6.
        let sys = FakeSys::dual_socket_ht();
        let t = CpuTopology::discover(sys.path()).unwrap();
        assert_eq!((t.num_cpus, t.num_cores, t.num_sockets, t.num_numa_nodes), (12, 6, 2, 2));
        assert_eq!(t.cpus_per_core(), 2);
        assert_eq!(t.details.cpus_in_cores(&[0]).to_string(), "0,6");
        assert_eq!(t.details.cpus_in_numa_nodes(&[1]).to_string(), "1,3,5,7,9,11");
        assert_eq!(t.numa_memory.get(&1), Some(&(8 * 1024 * 1024 * 1024)));
    }

    #[test]
    fn a_machine_without_numa_directories_is_one_node() {
        let sys = FakeSys::build(&[(0, 0, 0), (1, 0, 1)], &[]);
        let t = CpuTopology::discover(sys.path()).unwrap();
        assert_eq!((t.num_cpus, t.num_numa_nodes, t.cpus_per_core()), (2, 1, 1));
    }
}
