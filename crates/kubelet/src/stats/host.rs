//! Figures the runtime does not give: the node (root cgroup, /proc), pod cgroups when the
//! runtime has no pod-level stats, filesystems (statvfs) and log directories. Every path is
//! under [`HostPaths`], so tests run on a temporary tree.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct HostPaths {
    /// `/proc`
    pub proc: PathBuf,
    /// `/sys/fs/cgroup`
    pub cgroup: PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        Self { proc: "/proc".into(), cgroup: "/sys/fs/cgroup".into() }
    }
}

/// Memory of a cgroup, as cadvisor computes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    pub usage: u64,
    /// usage − inactive file pages (the kernel may drop those without swapping).
    pub working_set: u64,
    pub rss: Option<u64>,
    pub page_faults: Option<u64>,
    pub major_page_faults: Option<u64>,
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `key value` lines (memory.stat, cpu.stat).
fn read_kv(path: &Path) -> Option<Vec<(String, u64)>> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(
        text.lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                Some((it.next()?.to_string(), it.next()?.parse().ok()?))
            })
            .collect(),
    )
}

fn kv(stat: &[(String, u64)], key: &str) -> Option<u64> {
    stat.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
}

/// Which cgroup hierarchy the host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cgroups {
    V1,
    V2,
}

impl HostPaths {
    pub fn cgroups(&self) -> Option<Cgroups> {
        if self.cgroup.join("memory/memory.usage_in_bytes").exists() {
            Some(Cgroups::V1)
        } else if self.cgroup.join("cgroup.controllers").exists() {
            Some(Cgroups::V2)
        } else {
            None
        }
    }

    /// The directory of cgroup `name` (e.g. `/kubepods/pod<uid>`) for `controller` ("memory",
    /// "cpuacct"); the unified directory on v2.
    fn dir(&self, v: Cgroups, controller: &str, name: &str) -> PathBuf {
        let rel = name.trim_start_matches('/');
        match v {
            Cgroups::V1 => {
                let c = self.cgroup.join(controller);
                // `cpu,cpuacct` mounts show up as `cpuacct` through a symlink on most hosts.
                if controller == "cpuacct" && !c.exists() {
                    return self.cgroup.join("cpu,cpuacct").join(rel);
                }
                c.join(rel)
            }
            Cgroups::V2 => self.cgroup.join(rel),
        }
    }

    /// Memory of cgroup `name` ("/" for the root).
    pub fn memory(&self, name: &str) -> Option<Memory> {
        match self.cgroups()? {
            Cgroups::V1 => memory_v1(&self.dir(Cgroups::V1, "memory", name)),
            Cgroups::V2 if name.trim_matches('/').is_empty() => self.memory_from_meminfo(),
            Cgroups::V2 => memory_v2(&self.dir(Cgroups::V2, "", name)),
        }
    }

    /// Cumulative CPU time of cgroup `name` in nanoseconds.
    pub fn cpu_usage(&self, name: &str) -> Option<u64> {
        match self.cgroups()? {
            Cgroups::V1 => read_u64(&self.dir(Cgroups::V1, "cpuacct", name).join("cpuacct.usage")),
            Cgroups::V2 => {
                let stat = read_kv(&self.dir(Cgroups::V2, "", name).join("cpu.stat"))?;
                kv(&stat, "usage_usec").map(|u| u.saturating_mul(1000))
            }
        }
    }

    /// Whether cgroup `name` exists.
    pub fn exists(&self, name: &str) -> bool {
        match self.cgroups() {
            Some(v) => self.dir(v, "memory", name).is_dir(),
            None => false,
        }
    }

    /// Every process in cgroup `name` and its children.
    pub fn pids(&self, name: &str) -> Vec<u32> {
        let Some(v) = self.cgroups() else { return Vec::new() };
        let mut out = Vec::new();
        let mut stack = vec![self.dir(v, "memory", name)];
        while let Some(dir) = stack.pop() {
            if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                out.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
            }
            if let Ok(rd) = std::fs::read_dir(&dir) {
                stack.extend(rd.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()));
            }
        }
        out
    }

    /// Node memory from /proc/meminfo (cgroup v2 has no memory.current at the root).
    fn memory_from_meminfo(&self) -> Option<Memory> {
        let info = self.meminfo()?;
        let total = info.get("MemTotal")?;
        let usage = total.saturating_sub(*info.get("MemFree")?);
        let inactive = info.get("Inactive(file)").copied().unwrap_or(0);
        Some(Memory { usage, working_set: usage.saturating_sub(inactive), ..Default::default() })
    }

    /// /proc/meminfo in bytes.
    pub fn meminfo(&self) -> Option<std::collections::HashMap<String, u64>> {
        let text = std::fs::read_to_string(self.proc.join("meminfo")).ok()?;
        Some(
            text.lines()
                .filter_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    let mut it = v.split_whitespace();
                    let n: u64 = it.next()?.parse().ok()?;
                    let mult = if it.next() == Some("kB") { 1024 } else { 1 };
                    Some((k.to_string(), n * mult))
                })
                .collect(),
        )
    }

    /// CPU time of the whole node from /proc/stat (when the root cgroup has no counter).
    pub fn proc_stat_cpu_nanos(&self) -> Option<u64> {
        let text = std::fs::read_to_string(self.proc.join("stat")).ok()?;
        let line = text.lines().find(|l| l.starts_with("cpu "))?;
        // user nice system idle iowait irq softirq steal: busy time excludes idle and iowait.
        let f: Vec<u64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
        let busy: u64 = [0usize, 1, 2, 5, 6, 7].iter().filter_map(|i| f.get(*i)).sum();
        // SAFETY: sysconf has no memory effects.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let hz = if hz > 0 { hz as u64 } else { 100 };
        Some(busy.saturating_mul(1_000_000_000 / hz))
    }

    /// Boot time (unix seconds) from /proc/stat.
    pub fn boot_time(&self) -> Option<i64> {
        let text = std::fs::read_to_string(self.proc.join("stat")).ok()?;
        text.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse().ok())
    }

    /// `/proc/sys/kernel/pid_max`.
    pub fn pid_max(&self) -> Option<i64> {
        std::fs::read_to_string(self.proc.join("sys/kernel/pid_max")).ok()?.trim().parse().ok()
    }

    /// Interfaces of the network namespace of `pid` (None: the kubelet's own), without the
    /// loopback and the host ends of container links.
    pub fn interfaces(&self, pid: Option<u32>) -> Vec<Interface> {
        let path = match pid {
            Some(p) => self.proc.join(p.to_string()).join("net/dev"),
            None => self.proc.join("net/dev"),
        };
        std::fs::read_to_string(path).map(|t| parse_net_dev(&t)).unwrap_or_default()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_errors: u64,
    pub tx_bytes: u64,
    pub tx_errors: u64,
}

/// Interfaces cadvisor ignores.
fn ignored_interface(name: &str) -> bool {
    ["lo", "veth", "docker", "nerdctl"].iter().any(|p| name.starts_with(p))
}

pub fn parse_net_dev(text: &str) -> Vec<Interface> {
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let name = name.trim();
            if ignored_interface(name) {
                return None;
            }
            let f: Vec<u64> = rest.split_whitespace().filter_map(|v| v.parse().ok()).collect();
            Some(Interface {
                name: name.to_string(),
                rx_bytes: *f.first()?,
                rx_errors: *f.get(2)?,
                tx_bytes: *f.get(8)?,
                tx_errors: *f.get(10)?,
            })
        })
        .collect()
}

/// cgroup v1: usage_in_bytes, and working set = usage − total_inactive_file.
pub fn memory_v1(dir: &Path) -> Option<Memory> {
    let usage = read_u64(&dir.join("memory.usage_in_bytes"))?;
    let stat = read_kv(&dir.join("memory.stat")).unwrap_or_default();
    let inactive = kv(&stat, "total_inactive_file").unwrap_or(0);
    Some(Memory {
        usage,
        working_set: usage.saturating_sub(inactive),
        rss: kv(&stat, "total_rss"),
        page_faults: kv(&stat, "total_pgfault"),
        major_page_faults: kv(&stat, "total_pgmajfault"),
    })
}

/// cgroup v2: memory.current, and working set = current − inactive_file.
pub fn memory_v2(dir: &Path) -> Option<Memory> {
    let usage = read_u64(&dir.join("memory.current"))?;
    let stat = read_kv(&dir.join("memory.stat")).unwrap_or_default();
    let inactive = kv(&stat, "inactive_file").unwrap_or(0);
    Some(Memory {
        usage,
        working_set: usage.saturating_sub(inactive),
        rss: kv(&stat, "anon"),
        page_faults: kv(&stat, "pgfault"),
        major_page_faults: kv(&stat, "pgmajfault"),
    })
}

/// The pod cgroup of `uid` under the kubepods cgroup `kubepods` (cgroupfs or systemd names,
/// any QoS tier), if it exists.
pub fn find_pod_cgroup(paths: &HostPaths, kubepods: &str, uid: &str) -> Option<String> {
    let base = kubepods.trim_end_matches('/');
    let systemd = base.ends_with(".slice");
    let candidates: Vec<String> = if systemd {
        let u = uid.replace('-', "_");
        vec![
            format!("{base}/kubepods-pod{u}.slice"),
            format!("{base}/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice"),
            format!("{base}/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice"),
        ]
    } else {
        vec![format!("{base}/pod{uid}"), format!("{base}/burstable/pod{uid}"), format!("{base}/besteffort/pod{uid}")]
    };
    candidates.into_iter().find(|c| paths.exists(c))
}

/// A filesystem's size and use (statvfs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fs {
    pub capacity: u64,
    pub available: u64,
    pub used: u64,
    pub inodes: u64,
    pub inodes_free: u64,
}

pub fn statvfs(path: &Path) -> Option<Fs> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `s` a properly sized out-parameter.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    let frsize = s.f_frsize as u64;
    Some(Fs {
        capacity: s.f_blocks as u64 * frsize,
        available: s.f_bavail as u64 * frsize,
        used: (s.f_blocks as u64).saturating_sub(s.f_bfree as u64) * frsize,
        inodes: s.f_files as u64,
        inodes_free: s.f_ffree as u64,
    })
}

/// Bytes and inodes used under `dir` (files counted once, symlinks not followed).
pub fn disk_usage(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut bytes = 0;
    let mut inodes = 0;
    let mut seen = HashSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(md) = e.path().symlink_metadata() else { continue };
            if !seen.insert((md.dev(), md.ino())) {
                continue;
            }
            inodes += 1;
            bytes += md.blocks() * 512;
            if md.is_dir() {
                stack.push(e.path());
            }
        }
    }
    (bytes, inodes)
}

/// The number of processes (threads included, as upstream's sysinfo) on the node.
pub fn process_count() -> Option<i64> {
    let mut info: libc::sysinfo = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a properly sized out-parameter.
    (unsafe { libc::sysinfo(&mut info) } == 0).then_some(i64::from(info.procs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn working_set_is_usage_minus_inactive_file_on_v1_and_v2() {
        let d = tempfile::tempdir().unwrap();
        let v1 = d.path().join("v1");
        write(&v1, "memory/memory.usage_in_bytes", "104857600\n");
        write(&v1, "memory/kubepods/burstable/podabc/memory.usage_in_bytes", "73400320\n");
        write(
            &v1,
            "memory/kubepods/burstable/podabc/memory.stat",
            "cache 100\nrss 5\ntotal_rss 52428800\ntotal_inactive_file 20971520\ntotal_pgfault 7\ntotal_pgmajfault 1\n",
        );
        write(&v1, "cpuacct/kubepods/burstable/podabc/cpuacct.usage", "123456789\n");
        let paths = HostPaths { proc: d.path().join("proc"), cgroup: v1 };
        assert_eq!(paths.cgroups(), Some(Cgroups::V1));
        let pod = find_pod_cgroup(&paths, "/kubepods", "abc").unwrap();
        assert_eq!(pod, "/kubepods/burstable/podabc");
        let m = paths.memory(&pod).unwrap();
        assert_eq!(
            m,
            Memory {
                usage: 73400320,
                working_set: 52428800,
                rss: Some(52428800),
                page_faults: Some(7),
                major_page_faults: Some(1)
            }
        );
        assert_eq!(paths.cpu_usage(&pod), Some(123456789));
        assert_eq!(paths.memory("/").unwrap().working_set, 104857600, "no memory.stat: nothing inactive");

        let v2 = d.path().join("v2");
        write(&v2, "cgroup.controllers", "cpu memory\n");
        write(&v2, "kubepods.slice/kubepods-pod1_2.slice/memory.current", "1000\n");
        write(&v2, "kubepods.slice/kubepods-pod1_2.slice/memory.stat", "anon 600\ninactive_file 300\n");
        write(&v2, "kubepods.slice/kubepods-pod1_2.slice/cpu.stat", "usage_usec 42\nuser_usec 40\n");
        write(&v2, "proc/meminfo", "MemTotal:       1000 kB\nMemFree:         200 kB\nInactive(file):  100 kB\n");
        let paths = HostPaths { proc: v2.join("proc"), cgroup: v2.clone() };
        let pod = find_pod_cgroup(&paths, "/kubepods.slice", "1-2").unwrap();
        let m = paths.memory(&pod).unwrap();
        assert_eq!((m.usage, m.working_set, m.rss), (1000, 700, Some(600)));
        assert_eq!(paths.cpu_usage(&pod), Some(42_000));
        let node = paths.memory("/").unwrap();
        assert_eq!((node.usage, node.working_set), (800 * 1024, 700 * 1024));
    }

    #[test]
    fn net_dev_skips_loopback_and_veths() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
             face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
             lo: 100 1 0 0 0 0 0 0 100 1 0 0 0 0 0 0\n  \
             eth0: 2000 20 3 0 0 0 0 0 4000 40 5 0 0 0 0 0\n\
             veth12: 1 1 0 0 0 0 0 0 1 1 0 0 0 0 0 0\n";
        let got = parse_net_dev(text);
        assert_eq!(
            got,
            vec![Interface { name: "eth0".into(), rx_bytes: 2000, rx_errors: 3, tx_bytes: 4000, tx_errors: 5 }]
        );
    }

    #[test]
    fn statvfs_and_disk_usage_see_real_files() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "a/0.log", &"x".repeat(10_000));
        let (bytes, inodes) = disk_usage(d.path());
        assert!(bytes >= 10_000, "{bytes}");
        assert_eq!(inodes, 2);
        let fs = statvfs(d.path()).unwrap();
        assert!(fs.capacity >= fs.available && fs.capacity > 0);
    }
}
