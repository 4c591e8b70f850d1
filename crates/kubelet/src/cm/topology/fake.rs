//! Fake sysfs trees for the topology, CPU and memory manager tests.

use std::path::Path;

pub struct FakeSys(tempfile::TempDir);

impl FakeSys {
    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// `cpus`: (cpu, socket, core_id); `nodes`: (node, cpulist, MemTotal GiB).
    pub fn build(cpus: &[(usize, usize, usize)], nodes: &[(usize, &str, u64)]) -> FakeSys {
        let dir = tempfile::tempdir().unwrap();
        let cpu_dir = dir.path().join("devices/system/cpu");
        std::fs::create_dir_all(&cpu_dir).unwrap();
        let online: crate::cm::topology::cpuset::CpuSet = cpus.iter().map(|c| c.0).collect();
        std::fs::write(cpu_dir.join("online"), format!("{online}\n")).unwrap();
        for &(cpu, socket, core) in cpus {
            let t = cpu_dir.join(format!("cpu{cpu}/topology"));
            std::fs::create_dir_all(&t).unwrap();
            std::fs::write(t.join("physical_package_id"), format!("{socket}\n")).unwrap();
            std::fs::write(t.join("core_id"), format!("{core}\n")).unwrap();
        }
        for &(node, list, gib) in nodes {
            let n = dir.path().join(format!("devices/system/node/node{node}"));
            std::fs::create_dir_all(&n).unwrap();
            std::fs::write(n.join("cpulist"), format!("{list}\n")).unwrap();
            let kb = gib * 1024 * 1024;
            std::fs::write(
                n.join("meminfo"),
                format!("Node {node} MemTotal:       {kb} kB\nNode {node} MemFree: 1 kB\n"),
            )
            .unwrap();
        }
        FakeSys(dir)
    }

    /// Upstream's topoDualSocketHT: 2 sockets (= NUMA nodes), 6 cores, 12 CPUs; socket s has the
    /// even (s = 0) or odd CPUs, core c is CPUs c and c+6.
    pub fn dual_socket_ht() -> FakeSys {
        let cpus: Vec<_> = (0..12).map(|cpu| (cpu, cpu % 2, (cpu % 6) / 2)).collect();
        FakeSys::build(&cpus, &[(0, "0,2,4,6,8,10", 8), (1, "1,3,5,7,9,11", 8)])
    }

    /// Upstream's topoDualSocketMultiNumaPerSocketHT: 2 sockets, 4 NUMA nodes, 80 CPUs
    /// (NUMA n has cores 10n..10n+9; siblings are c and c+40).
    pub fn dual_socket_multi_numa_ht() -> FakeSys {
        let mut cpus = Vec::new();
        for cpu in 0..80 {
            let core = cpu % 40;
            let socket = core / 20;
            cpus.push((cpu, socket, core % 20));
        }
        FakeSys::build(
            &cpus,
            &[(0, "0-9,40-49", 4), (1, "10-19,50-59", 4), (2, "20-29,60-69", 4), (3, "30-39,70-79", 4)],
        )
    }

    /// This CI machine: 1 NUMA node, 2 CPUs, no SMT.
    pub fn two_cpus() -> FakeSys {
        FakeSys::build(&[(0, 0, 0), (1, 0, 1)], &[(0, "0-1", 2)])
    }
}
