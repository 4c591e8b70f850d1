//! The node part of the summary: the root cgroup (or /proc) for CPU and memory, the host's
//! interfaces, the root-dir and image filesystems, process limits, and the `pods` system
//! container (the kubepods cgroup).

use super::host::{self, Fs};
use super::types::*;
use super::{Provider, fs_stats, memory_from_host, network_stats, now_nanos, time_of_nanos, u64v};
use crate::cri::api;
use std::collections::HashSet;

pub(super) fn node_stats(
    p: &Provider,
    only_cpu_and_memory: bool,
    image_fs: Option<&api::FilesystemUsage>,
    image_fs_stat: Option<Fs>,
    root_fs: Option<Fs>,
    live: &mut HashSet<String>,
) -> NodeStats {
    let paths = &p.cfg.paths;
    let now = now_nanos();
    let capacity = paths.meminfo().and_then(|m| m.get("MemTotal").copied());
    let usage = paths.cpu_usage("/").or_else(|| paths.proc_stat_cpu_nanos());
    let cpu = usage.map(|u| p.cpu("node".into(), live, now, Some(u), None));
    let memory = paths.memory("/").map(|m| memory_from_host(now, m, capacity));
    let mut node = NodeStats {
        node_name: p.cfg.node_name.clone(),
        start_time: paths.boot_time().and_then(|s| time_of_nanos(s.saturating_mul(1_000_000_000))),
        cpu,
        memory,
        ..Default::default()
    };
    if let Some(kubepods) = p.cfg.kubepods.as_deref() {
        let cpu = paths.cpu_usage(kubepods).map(|u| p.cpu("pods".into(), live, now, Some(u), None));
        if let Some(m) = paths.memory(kubepods) {
            node.system_containers.push(ContainerStats {
                name: "pods".into(),
                start_time: node.start_time.clone(),
                cpu,
                memory: Some(memory_from_host(now, m, capacity)),
                rootfs: None,
                logs: None,
            });
        }
    }
    if only_cpu_and_memory {
        return node;
    }
    node.network = network_stats(now, paths.interfaces(None));
    node.fs = root_fs.map(|f| fs_stats(now, Some(f.used), Some(f.inodes.saturating_sub(f.inodes_free)), Some(f)));
    node.runtime = image_fs.map(|u| {
        let fs = fs_stats(u.timestamp, u64v(&u.used_bytes), u64v(&u.inodes_used), image_fs_stat);
        RuntimeStats { image_fs: Some(fs.clone()), container_fs: Some(fs) }
    });
    node.rlimit =
        Some(RlimitStats { time: time_of_nanos(now), maxpid: paths.pid_max(), curproc: host::process_count() });
    node
}
