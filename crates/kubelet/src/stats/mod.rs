//! Resource usage of the node, pods and containers: the Summary API (`/stats/summary`) and the
//! figures behind `/metrics/resource` and `/metrics/cadvisor`.
//!
//! Data sources: CRI ListPodSandbox, ListContainers, ListContainerStats, ListPodSandboxStats
//! (containerd 1.6 may answer Unimplemented: pod figures then come from the pod cgroup, or the
//! sum of its containers) and ImageFsInfo; the node from the root cgroup and /proc; filesystems
//! by statvfs; logs and emptyDir volumes by walking their directories. Nothing is cached but the
//! previous CPU sample per container/pod/node, for usageNanoCores.

pub mod host;
mod node;
pub mod rate;
pub mod types;

use crate::cri::labels::{CONTAINER_NAME, PodRef};
use crate::cri::{CriError, DynRuntime, api};
use host::HostPaths;
use rate::{CpuRates, CpuSample};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use types::*;

#[derive(Debug, Clone)]
pub struct Config {
    pub node_name: String,
    /// `--root-dir` (node filesystem; emptyDir volumes under `pods/<uid>/volumes`).
    pub root_dir: PathBuf,
    /// `podLogsDir`.
    pub pod_logs_dir: PathBuf,
    /// The cgroup holding every pod (`/kubepods`, `/kubepods.slice`), if pods get cgroups.
    pub kubepods: Option<String>,
    pub paths: HostPaths,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to list pod stats: {0}")]
    Runtime(#[from] CriError),
}

/// What `/metrics/cadvisor` needs beyond the summary, per container.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerInfo {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub id: String,
    pub image: String,
    /// The container's cgroup name (cadvisor's `id` label), or its ID when unknown.
    pub cgroup: String,
}

/// One collection: the summary and the per-container extras.
#[derive(Debug, Clone)]
pub struct Collected {
    pub summary: Summary,
    pub containers: Vec<ContainerInfo>,
}

/// Computes stats on demand. Cloning shares the CPU samples.
#[derive(Clone)]
pub struct Provider {
    cfg: Arc<Config>,
    runtime: DynRuntime,
    rates: Arc<CpuRates>,
}

pub(crate) fn time_of_nanos(nanos: i64) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time> {
    crate::cri::nanos_to_time(nanos).map(crate::meta::time)
}

pub(crate) fn now_nanos() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

fn u64v(v: &Option<api::UInt64Value>) -> Option<u64> {
    v.as_ref().map(|v| v.value)
}

fn fs_stats(time: i64, used: Option<u64>, inodes_used: Option<u64>, fs: Option<host::Fs>) -> FsStats {
    FsStats {
        time: time_of_nanos(time),
        available_bytes: fs.map(|f| f.available),
        capacity_bytes: fs.map(|f| f.capacity),
        used_bytes: used,
        inodes_free: fs.map(|f| f.inodes_free),
        inodes: fs.map(|f| f.inodes),
        inodes_used,
    }
}

fn memory_from_host(time: i64, m: host::Memory, limit: Option<u64>) -> MemoryStats {
    MemoryStats {
        time: time_of_nanos(time),
        available_bytes: limit.map(|l| l.saturating_sub(m.working_set)),
        usage_bytes: Some(m.usage),
        working_set_bytes: Some(m.working_set),
        rss_bytes: m.rss,
        page_faults: m.page_faults,
        major_page_faults: m.major_page_faults,
    }
}

fn network_stats(time: i64, ifaces: Vec<host::Interface>) -> Option<NetworkStats> {
    let conv = |i: &host::Interface| InterfaceStats {
        name: i.name.clone(),
        rx_bytes: Some(i.rx_bytes),
        rx_errors: Some(i.rx_errors),
        tx_bytes: Some(i.tx_bytes),
        tx_errors: Some(i.tx_errors),
    };
    let default = ifaces.iter().find(|i| i.name == "eth0").or(ifaces.first())?;
    Some(NetworkStats {
        time: time_of_nanos(time),
        default: conv(default),
        interfaces: ifaces.iter().map(conv).collect(),
    })
}

fn network_from_cri(n: &api::NetworkUsage) -> Option<NetworkStats> {
    let conv = |i: &api::NetworkInterfaceUsage| InterfaceStats {
        name: i.name.clone(),
        rx_bytes: u64v(&i.rx_bytes),
        rx_errors: u64v(&i.rx_errors),
        tx_bytes: u64v(&i.tx_bytes),
        tx_errors: u64v(&i.tx_errors),
    };
    let default = n.default_interface.as_ref()?;
    Some(NetworkStats {
        time: time_of_nanos(n.timestamp),
        default: conv(default),
        interfaces: std::iter::once(default).chain(n.interfaces.iter()).map(conv).collect(),
    })
}

impl Provider {
    pub fn new(cfg: Config, runtime: DynRuntime) -> Self {
        Self { cfg: Arc::new(cfg), runtime, rates: Arc::default() }
    }

    pub fn node_name(&self) -> &str {
        &self.cfg.node_name
    }

    /// CPU usage with nano-cores (the runtime's, or from the previous sample of `key`).
    fn cpu(
        &self,
        key: String,
        live: &mut HashSet<String>,
        time: i64,
        usage: Option<u64>,
        cores: Option<u64>,
    ) -> CpuStats {
        let cores = cores.or_else(|| {
            usage.and_then(|u| self.rates.observe(&key, CpuSample { timestamp_nanos: time, usage_nanos: u }))
        });
        live.insert(key);
        CpuStats { time: time_of_nanos(time), usage_nano_cores: cores, usage_core_nano_seconds: usage }
    }

    /// Collects the summary (`only_cpu_and_memory`: no filesystems, network or volumes).
    pub async fn collect(&self, only_cpu_and_memory: bool) -> Result<Collected, Error> {
        let rt = &self.runtime;
        let (sandboxes, containers, cstats) =
            tokio::try_join!(rt.list_pod_sandboxes(None), rt.list_containers(None), rt.list_container_stats(None))?;
        let sbstats: HashMap<String, api::PodSandboxStats> = match rt.list_pod_sandbox_stats(None).await {
            Ok(v) => v.into_iter().filter_map(|s| Some((s.attributes.as_ref()?.id.clone(), s))).collect(),
            Err(e) => {
                tracing::debug!(error = %e, "no pod sandbox stats from the runtime; using pod cgroups");
                HashMap::new()
            }
        };
        let image_fs = if only_cpu_and_memory {
            None
        } else {
            rt.image_fs_info().await.map_err(|e| tracing::debug!(error = %e, "image fs info")).ok()
        };
        // Image names by ID: ListContainers gives containerd's image ID, cadvisor labels by name.
        let image_names: HashMap<String, String> = if only_cpu_and_memory {
            HashMap::new()
        } else {
            let images = rt.list_images().await.map_err(|e| tracing::debug!(error = %e, "list images")).ok();
            images
                .into_iter()
                .flatten()
                .filter_map(|i| Some((i.id.clone(), i.repo_tags.first().or(i.repo_digests.first())?.clone())))
                .collect()
        };
        let image_fs_usage = image_fs.as_ref().and_then(|r| r.image_filesystems.first().cloned());
        let image_fs_stat = image_fs_usage
            .as_ref()
            .and_then(|u| u.fs_id.as_ref())
            .and_then(|id| host::statvfs(std::path::Path::new(&id.mountpoint)));
        let logs_fs = (!only_cpu_and_memory).then(|| host::statvfs(&self.cfg.pod_logs_dir)).flatten();
        let root_fs = (!only_cpu_and_memory).then(|| host::statvfs(&self.cfg.root_dir)).flatten();
        let mut live = HashSet::new();

        // The newest ready sandbox of each pod.
        let mut pods: HashMap<String, (&api::PodSandbox, PodRef)> = HashMap::new();
        for sb in sandboxes.iter().filter(|s| s.state == api::PodSandboxState::SandboxReady as i32) {
            let Some(r) = PodRef::from_labels(&sb.labels) else { continue };
            if pods.get(&r.uid).is_none_or(|(old, _)| old.created_at < sb.created_at) {
                pods.insert(r.uid.clone(), (sb, r));
            }
        }
        let stats_by_id: HashMap<&str, &api::ContainerStats> =
            cstats.iter().filter_map(|s| Some((s.attributes.as_ref()?.id.as_str(), s))).collect();
        let mut by_sandbox: HashMap<&str, Vec<&api::Container>> = HashMap::new();
        for c in containers.iter().filter(|c| c.state == api::ContainerState::ContainerRunning as i32) {
            by_sandbox.entry(c.pod_sandbox_id.as_str()).or_default().push(c);
        }

        let mut out_pods = Vec::new();
        let mut infos = Vec::new();
        let mut uids: Vec<&String> = pods.keys().collect();
        uids.sort();
        for uid in uids {
            let (sb, r) = &pods[uid];
            let cgroup = self.cfg.kubepods.as_deref().and_then(|k| host::find_pod_cgroup(&self.cfg.paths, k, uid));
            let log_dir = self.cfg.pod_logs_dir.join(format!("{}_{}_{}", r.namespace, r.name, r.uid));
            let mut cs = Vec::new();
            let mut list = by_sandbox.get(sb.id.as_str()).cloned().unwrap_or_default();
            list.sort_by(|a, b| a.metadata.as_ref().map(|m| &m.name).cmp(&b.metadata.as_ref().map(|m| &m.name)));
            for c in list {
                let name = c
                    .metadata
                    .as_ref()
                    .map(|m| m.name.clone())
                    .or_else(|| c.labels.get(CONTAINER_NAME).cloned())
                    .unwrap_or_default();
                let st = stats_by_id.get(c.id.as_str());
                let ccg = cgroup.as_ref().map(|p| format!("{p}/{}", c.id));
                let now = now_nanos();
                let cpu = st.and_then(|s| s.cpu.as_ref()).map(|u| {
                    self.cpu(
                        format!("c/{}", c.id),
                        &mut live,
                        u.timestamp,
                        u64v(&u.usage_core_nano_seconds),
                        u64v(&u.usage_nano_cores),
                    )
                });
                // The runtime's working set; what it leaves out comes from the container cgroup.
                let host_mem = ccg.as_deref().and_then(|p| self.cfg.paths.memory(p));
                let memory = st.and_then(|s| s.memory.as_ref()).map(|m| MemoryStats {
                    time: time_of_nanos(m.timestamp),
                    available_bytes: u64v(&m.available_bytes),
                    usage_bytes: u64v(&m.usage_bytes).or(host_mem.map(|h| h.usage)),
                    working_set_bytes: u64v(&m.working_set_bytes).or(host_mem.map(|h| h.working_set)),
                    rss_bytes: u64v(&m.rss_bytes).or(host_mem.and_then(|h| h.rss)),
                    page_faults: u64v(&m.page_faults).or(host_mem.and_then(|h| h.page_faults)),
                    major_page_faults: u64v(&m.major_page_faults).or(host_mem.and_then(|h| h.major_page_faults)),
                });
                let (rootfs, logs) = if only_cpu_and_memory {
                    (None, None)
                } else {
                    let rootfs = st
                        .and_then(|s| s.writable_layer.as_ref())
                        .map(|w| fs_stats(w.timestamp, u64v(&w.used_bytes), u64v(&w.inodes_used), image_fs_stat));
                    let (bytes, inodes) = host::disk_usage(&log_dir.join(&name));
                    (rootfs, Some(fs_stats(now, Some(bytes), Some(inodes), logs_fs)))
                };
                infos.push(ContainerInfo {
                    namespace: r.namespace.clone(),
                    pod: r.name.clone(),
                    container: name.clone(),
                    id: c.id.clone(),
                    image: {
                        let id = c.image.as_ref().map(|i| i.image.clone()).filter(|i| !i.is_empty());
                        let id = id.unwrap_or_else(|| c.image_ref.clone());
                        image_names.get(&id).or_else(|| image_names.get(&c.image_ref)).cloned().unwrap_or(id)
                    },
                    cgroup: ccg.unwrap_or_else(|| c.id.clone()),
                });
                cs.push(ContainerStats { name, start_time: time_of_nanos(c.created_at), cpu, memory, rootfs, logs });
            }
            out_pods.push(self.pod_stats(
                r,
                sb,
                cs,
                cgroup.as_deref(),
                sbstats.get(&sb.id),
                only_cpu_and_memory,
                &mut live,
            ));
        }
        let node =
            node::node_stats(self, only_cpu_and_memory, image_fs_usage.as_ref(), image_fs_stat, root_fs, &mut live);
        self.rates.retain(&live);
        Ok(Collected { summary: Summary { node, pods: out_pods }, containers: infos })
    }

    #[allow(clippy::too_many_arguments)]
    fn pod_stats(
        &self,
        r: &PodRef,
        sb: &api::PodSandbox,
        containers: Vec<ContainerStats>,
        cgroup: Option<&str>,
        cri: Option<&api::PodSandboxStats>,
        only_cpu_and_memory: bool,
        live: &mut HashSet<String>,
    ) -> PodStats {
        let now = now_nanos();
        let linux = cri.and_then(|s| s.linux.as_ref());
        let key = format!("p/{}", r.uid);
        let paths = &self.cfg.paths;
        // CPU: the runtime's pod figure, else the pod cgroup, else the sum of the containers.
        let cpu = if let Some(u) = linux.and_then(|l| l.cpu.as_ref()) {
            Some(self.cpu(key, live, u.timestamp, u64v(&u.usage_core_nano_seconds), u64v(&u.usage_nano_cores)))
        } else if let Some(usage) = cgroup.and_then(|c| paths.cpu_usage(c)) {
            Some(self.cpu(key, live, now, Some(usage), None))
        } else {
            let usages: Vec<&CpuStats> = containers.iter().filter_map(|c| c.cpu.as_ref()).collect();
            (!usages.is_empty()).then(|| CpuStats {
                time: time_of_nanos(now),
                usage_nano_cores: usages.iter().map(|c| c.usage_nano_cores).sum(),
                usage_core_nano_seconds: usages.iter().map(|c| c.usage_core_nano_seconds).sum(),
            })
        };
        let memory = if let Some(m) = linux.and_then(|l| l.memory.as_ref()) {
            Some(MemoryStats {
                time: time_of_nanos(m.timestamp),
                available_bytes: u64v(&m.available_bytes),
                usage_bytes: u64v(&m.usage_bytes),
                working_set_bytes: u64v(&m.working_set_bytes),
                rss_bytes: u64v(&m.rss_bytes),
                page_faults: u64v(&m.page_faults),
                major_page_faults: u64v(&m.major_page_faults),
            })
        } else if let Some(m) = cgroup.and_then(|c| paths.memory(c)) {
            Some(memory_from_host(now, m, None))
        } else {
            let mems: Vec<&MemoryStats> = containers.iter().filter_map(|c| c.memory.as_ref()).collect();
            (!mems.is_empty()).then(|| MemoryStats {
                time: time_of_nanos(now),
                usage_bytes: mems.iter().map(|m| m.usage_bytes).sum(),
                working_set_bytes: mems.iter().map(|m| m.working_set_bytes).sum(),
                rss_bytes: mems.iter().map(|m| m.rss_bytes).sum(),
                ..Default::default()
            })
        };
        let mut pod = PodStats {
            pod_ref: PodReference { name: r.name.clone(), namespace: r.namespace.clone(), uid: r.uid.clone() },
            start_time: time_of_nanos(sb.created_at),
            containers,
            cpu,
            memory,
            network: None,
            volume: None,
            ephemeral_storage: None,
            process_stats: None,
        };
        if only_cpu_and_memory {
            return pod;
        }
        let pids = cgroup.map(|c| paths.pids(c)).unwrap_or_default();
        if !pids.is_empty() {
            pod.process_stats = Some(ProcessStats { process_count: Some(pids.len() as u64) });
        }
        pod.network = linux
            .and_then(|l| l.network.as_ref())
            .and_then(network_from_cri)
            .or_else(|| network_stats(now, pids.first().map(|p| paths.interfaces(Some(*p))).unwrap_or_default()));
        let volumes = self.empty_dir_volumes(&r.uid, now);
        let used = pod
            .containers
            .iter()
            .flat_map(|c| [&c.rootfs, &c.logs])
            .flatten()
            .chain(volumes.iter().map(|v| &v.fs))
            .filter_map(|f| f.used_bytes)
            .sum::<u64>();
        let inodes = pod
            .containers
            .iter()
            .flat_map(|c| [&c.rootfs, &c.logs])
            .flatten()
            .chain(volumes.iter().map(|v| &v.fs))
            .filter_map(|f| f.inodes_used)
            .sum::<u64>();
        let root_fs = host::statvfs(&self.cfg.root_dir);
        pod.ephemeral_storage = Some(fs_stats(now, Some(used), Some(inodes), root_fs));
        pod.volume = Some(volumes);
        pod
    }

    /// The pod's emptyDir volumes (on the node filesystem).
    fn empty_dir_volumes(&self, uid: &str, now: i64) -> Vec<VolumeStats> {
        let dir = self.cfg.root_dir.join("pods").join(uid).join("volumes/kubernetes.io~empty-dir");
        let Ok(rd) = std::fs::read_dir(&dir) else { return Vec::new() };
        let fs = host::statvfs(&self.cfg.root_dir);
        let mut out: Vec<VolumeStats> = rd
            .flatten()
            .map(|e| {
                let (bytes, inodes) = host::disk_usage(&e.path());
                VolumeStats {
                    fs: fs_stats(now, Some(bytes), Some(inodes), fs),
                    name: e.file_name().to_string_lossy().into(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

#[cfg(test)]
pub(crate) mod tests;
