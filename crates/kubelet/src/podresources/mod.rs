//! The pod resources API (upstream's pkg/kubelet/apis/podresources, v1 server_v1.go): the
//! PodResourcesLister gRPC service on `<root-dir>/pod-resources/kubelet.sock` — List (every
//! active pod's containers with their devices, exclusive CPUs and memory),
//! GetAllocatableResources (the node's devices, CPUs and memory) and Get (one pod; behind the
//! KubeletPodResourcesGet gate, on by default since 1.34). Requests beyond 100/s (burst 10) are
//! refused as upstream's limiter does.
//!
//! Devices come from the device manager. Exclusive CPUs and memory come through
//! [`CpusProvider`] and [`MemoryProvider`], which the CPU and memory managers implement; until
//! they are wired in, [`NoExclusiveResources`] reports none (empty lists, as upstream with the
//! `none` policies). Dynamic resources (DRA) are not reported yet.

pub mod proto;

use crate::cm::devicemanager::DeviceManager;
use crate::status_manager::Statuses;
use k8s_openapi::api::core::v1::{Container, Pod};
use proto::pod_resources_lister_server::{PodResourcesLister, PodResourcesListerServer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

/// The socket's directory under the root dir and its name (upstream's podResourcesDir and
/// podresources socket).
pub const DIR: &str = "pod-resources";
pub const SOCKET: &str = "kubelet.sock";
/// Upstream's podresources.DefaultQPS and DefaultBurstTokens.
pub const DEFAULT_QPS: f64 = 100.0;
pub const DEFAULT_BURST: f64 = 10.0;

/// Exclusive CPUs per container and the node's allocatable CPUs (the CPU manager's part).
pub trait CpusProvider: Send + Sync {
    fn cpus(&self, pod_uid: &str, container: &str) -> Vec<i64>;
    fn allocatable_cpus(&self) -> Vec<i64>;
}

/// Memory and hugepages per container and the node's allocatable memory (the memory manager's
/// part).
pub trait MemoryProvider: Send + Sync {
    fn memory(&self, pod_uid: &str, container: &str) -> Vec<proto::ContainerMemory>;
    fn allocatable_memory(&self) -> Vec<proto::ContainerMemory>;
}

/// No CPU or memory manager with exclusive assignments: nothing to report.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoExclusiveResources;

impl CpusProvider for NoExclusiveResources {
    fn cpus(&self, _: &str, _: &str) -> Vec<i64> {
        Vec::new()
    }
    fn allocatable_cpus(&self) -> Vec<i64> {
        Vec::new()
    }
}

impl MemoryProvider for NoExclusiveResources {
    fn memory(&self, _: &str, _: &str) -> Vec<proto::ContainerMemory> {
        Vec::new()
    }
    fn allocatable_memory(&self) -> Vec<proto::ContainerMemory> {
        Vec::new()
    }
}

/// The service's settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub socket: PathBuf,
    /// KubeletPodResourcesGet: whether Get answers.
    pub get_enabled: bool,
}

impl Config {
    pub fn new(root_dir: &Path, get_enabled: bool) -> Self {
        Self { socket: root_dir.join(DIR).join(SOCKET), get_enabled }
    }
}

/// What the service reads.
#[derive(Clone)]
pub struct Providers {
    pub pods: Statuses,
    pub devices: Option<DeviceManager>,
    pub cpus: Arc<dyn CpusProvider>,
    pub memory: Arc<dyn MemoryProvider>,
}

/// Upstream's rate limiter (x/time/rate with QPS and burst): a request without a token is
/// refused, never queued.
struct Limiter {
    tokens: f64,
    last: Instant,
}

impl Limiter {
    fn allow(&mut self, now: Instant) -> bool {
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * DEFAULT_QPS).min(DEFAULT_BURST);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

pub struct Service {
    cfg: Config,
    providers: Providers,
    limiter: Mutex<Limiter>,
}

fn is_active(p: &Pod) -> bool {
    !matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

fn topology(node: Option<i64>) -> Option<proto::TopologyInfo> {
    node.map(|id| proto::TopologyInfo { nodes: vec![proto::NumaNode { id }] })
}

impl Service {
    pub fn new(cfg: Config, providers: Providers) -> Self {
        let limiter = Mutex::new(Limiter { tokens: DEFAULT_BURST, last: Instant::now() });
        Self { cfg, providers, limiter }
    }

    fn admit(&self) -> Result<(), Status> {
        let mut l = self.limiter.lock().unwrap_or_else(|p| p.into_inner());
        if l.allow(Instant::now()) { Ok(()) } else { Err(Status::resource_exhausted("rejected by rate limit")) }
    }

    fn active_pods(&self) -> Vec<Arc<Pod>> {
        let mut pods: Vec<Arc<Pod>> = self.providers.pods.list().into_iter().filter(|p| is_active(p)).collect();
        pods.sort_by(|a, b| (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name)));
        pods
    }

    fn container(&self, uid: &str, c: &Container) -> proto::ContainerResources {
        let devices = self.providers.devices.as_ref().map_or_else(Vec::new, |d| {
            d.container_devices(uid, &c.name)
                .into_iter()
                .map(|(resource_name, device_ids, node)| proto::ContainerDevices {
                    resource_name,
                    device_ids,
                    topology: topology(node),
                })
                .collect()
        });
        proto::ContainerResources {
            name: c.name.clone(),
            devices,
            cpu_ids: self.providers.cpus.cpus(uid, &c.name),
            memory: self.providers.memory.memory(uid, &c.name),
            dynamic_resources: Vec::new(),
        }
    }

    /// One pod's resources: its sidecars (restartable init containers) then its containers, as
    /// upstream lists them with SidecarContainers on.
    pub fn pod_resources(&self, pod: &Pod) -> proto::PodResources {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let spec = pod.spec.as_ref();
        let sidecars = spec
            .into_iter()
            .flat_map(|s| s.init_containers.iter().flatten())
            .filter(|c| c.restart_policy.as_deref() == Some("Always"));
        let apps = spec.into_iter().flat_map(|s| s.containers.iter());
        proto::PodResources {
            name: pod.metadata.name.clone().unwrap_or_default(),
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            containers: sidecars.chain(apps).map(|c| self.container(&uid, c)).collect(),
        }
    }

    /// Frees devices of pods no longer active first, as upstream's List does
    /// (UpdateAllocatedDevices).
    fn refresh_devices(&self, pods: &[Arc<Pod>]) {
        if let Some(d) = &self.providers.devices {
            let active: std::collections::BTreeSet<String> =
                pods.iter().filter_map(|p| p.metadata.uid.clone()).collect();
            d.update_allocated(&|u| active.contains(u));
        }
    }
}

#[tonic::async_trait]
impl PodResourcesLister for Service {
    async fn list(
        &self,
        _r: Request<proto::ListPodResourcesRequest>,
    ) -> Result<Response<proto::ListPodResourcesResponse>, Status> {
        self.admit()?;
        let pods = self.active_pods();
        self.refresh_devices(&pods);
        let pod_resources = pods.iter().map(|p| self.pod_resources(p)).collect();
        Ok(Response::new(proto::ListPodResourcesResponse { pod_resources }))
    }

    async fn get_allocatable_resources(
        &self,
        _r: Request<proto::AllocatableResourcesRequest>,
    ) -> Result<Response<proto::AllocatableResourcesResponse>, Status> {
        self.admit()?;
        let mut devices = Vec::new();
        for (resource_name, id, nodes) in
            self.providers.devices.as_ref().map(|d| d.allocatable_devices()).unwrap_or_default()
        {
            // One entry per device, with its NUMA nodes (upstream's containerDevicesFromResourceDeviceInstances).
            let topology = (!nodes.is_empty())
                .then(|| proto::TopologyInfo { nodes: nodes.into_iter().map(|id| proto::NumaNode { id }).collect() });
            devices.push(proto::ContainerDevices { resource_name, device_ids: vec![id], topology });
        }
        Ok(Response::new(proto::AllocatableResourcesResponse {
            devices,
            cpu_ids: self.providers.cpus.allocatable_cpus(),
            memory: self.providers.memory.allocatable_memory(),
        }))
    }

    async fn get(
        &self,
        r: Request<proto::GetPodResourcesRequest>,
    ) -> Result<Response<proto::GetPodResourcesResponse>, Status> {
        self.admit()?;
        if !self.cfg.get_enabled {
            return Err(Status::unknown("PodResources API Get method disabled"));
        }
        let r = r.into_inner();
        let pod =
            self.providers.pods.find(&r.pod_namespace, &r.pod_name).filter(|p| is_active(p)).ok_or_else(|| {
                Status::unknown(format!("pod {} in namespace {} not found", r.pod_name, r.pod_namespace))
            })?;
        Ok(Response::new(proto::GetPodResourcesResponse { pod_resources: Some(self.pod_resources(&pod)) }))
    }
}

/// Creates the directory, replaces a stale socket and binds.
pub fn bind(cfg: &Config) -> std::io::Result<tokio::net::UnixListener> {
    if let Some(dir) = cfg.socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(&cfg.socket) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    tokio::net::UnixListener::bind(&cfg.socket)
}

/// Serves on `listener` until `token` is cancelled; the socket is removed then.
pub async fn serve(service: Service, listener: tokio::net::UnixListener, token: CancellationToken) {
    let socket = service.cfg.socket.clone();
    tracing::info!(socket = %socket.display(), "pod resources server listening");
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    if let Err(e) = tonic::transport::Server::builder()
        .timeout(Duration::from_secs(60))
        .add_service(PodResourcesListerServer::new(service))
        .serve_with_incoming_shutdown(incoming, token.cancelled())
        .await
    {
        tracing::error!(error = %e, "pod resources server failed");
    }
    let _ = std::fs::remove_file(&socket);
}

#[cfg(test)]
mod tests;
