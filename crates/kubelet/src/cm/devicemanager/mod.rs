//! The device manager (upstream's pkg/kubelet/cm/devicemanager): device plugins register on
//! `<root-dir>/device-plugins/kubelet.sock` (v1beta1 Registration, `registration.rs`), the
//! kubelet dials each plugin's socket and follows its ListAndWatch stream (`endpoint.rs`), the
//! devices become extended resources in the node's capacity (all) and allocatable (healthy),
//! pods asking for them get devices at admission (Allocate, the plugin's preferred devices
//! first), kept in `kubelet_internal_checkpoint` (`checkpoint.rs`, upstream's format) across
//! restarts, and their containers get the plugin's envs, mounts, devices, annotations and CDI
//! devices (`pod_devices.rs`), after PreStartContainer when the plugin asks for it.
//!
//! [`DeviceManager`] is the cloneable handle; [`DeviceManager::run`] the registration server
//! task. Bookkeeping is in `state.rs` (pure); plugin calls go through the [`Plugin`] trait, so the
//! allocation logic is tested on fake plugins.

pub mod checkpoint;
pub mod endpoint;
pub mod pod_devices;
pub mod proto;
pub mod registration;
pub mod state;
mod topology;

#[cfg(test)]
mod tests;

pub use pod_devices::RunOptions;
pub use state::Capacity;
pub use topology::TopologyHint;

use crate::admission::{Handler, Rejection};
use crate::clock::DynClock;
use k8s_openapi::api::core::v1::{Container, Pod};
use state::{State, Step};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The device plugins' directory under the root dir (upstream's DevicePluginPath).
pub const DIR: &str = "device-plugins";
/// The kubelet's registration socket in it (upstream's KubeletSocket).
pub const KUBELET_SOCKET: &str = "kubelet.sock";
/// Bound on PreStartContainer (upstream's KubeletPreStartContainerRPCTimeoutInSecs).
pub const PRE_START_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on Allocate and GetPreferredAllocation. Upstream sets none (a hung plugin holds its
/// admission forever); ours keeps the dispatcher moving.
pub const ALLOCATE_TIMEOUT: Duration = Duration::from_secs(30);

/// The calls the kubelet makes on a registered plugin (upstream's endpoint).
#[async_trait::async_trait]
pub trait Plugin: Send + Sync {
    async fn allocate(&self, devices: Vec<String>) -> Result<proto::AllocateResponse, tonic::Status>;
    async fn preferred_allocation(
        &self,
        available: Vec<String>,
        must_include: Vec<String>,
        size: usize,
    ) -> Result<proto::PreferredAllocationResponse, tonic::Status>;
    async fn pre_start_container(&self, devices: Vec<String>) -> Result<(), tonic::Status>;
}

/// Go's rendering of a gRPC status error.
pub fn rpc_error(s: &tonic::Status) -> String {
    format!("rpc error: code = {:?} desc = {}", s.code(), s.message())
}

/// Why devices could not be allocated or prepared (upstream's messages).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("pod {pod_uid:?} container {container:?} changed request for resource {resource:?} from {from} to {to}")]
    RequestChanged { pod_uid: String, container: String, resource: String, from: usize, to: usize },
    #[error("cannot allocate unregistered device {0}")]
    Unregistered(String),
    #[error("no healthy devices present; cannot allocate unhealthy devices {0}")]
    NoHealthy(String),
    #[error("previously allocated devices are no longer healthy; cannot allocate unhealthy devices {0}")]
    PreviouslyUnhealthy(String),
    #[error("requested number of devices unavailable for {resource}. Requested: {requested}, Available: {available}")]
    Unavailable { resource: String, requested: usize, available: usize },
    #[error("unexpectedly allocated less resources than required. Requested: {requested}, Got: {got}")]
    Short { requested: usize, got: usize },
    #[error("endpoint not found in cache for a registered resource: {0}")]
    EndpointNotFound(String),
    #[error("unknown Device Plugin {0}")]
    UnknownPlugin(String),
    #[error("endpoint {0} has been stopped")]
    EndpointStopped(String),
    #[error("device plugin GetPreferredAllocation rpc failed with err: {0}")]
    Preferred(String),
    /// Allocate's status, as Go prints it.
    #[error("{0}")]
    Allocate(String),
    #[error("no containers return in allocation response for {0}")]
    NoContainers(String),
    #[error("device plugin PreStartContainer rpc failed with err: {0}")]
    PreStart(String),
    #[error("no devices found allocated in local cache for pod {pod_uid}, container {container}, resource {resource}")]
    NotCached { pod_uid: String, container: String, resource: String },
    #[error("{0} timed out after {1:?}")]
    TimedOut(&'static str, Duration),
}

/// The device manager's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// `<root-dir>/device-plugins`: the registration socket, the plugins' sockets, the checkpoint.
    pub dir: PathBuf,
    /// The machine's NUMA node IDs (`/sys/devices/system/node`), for topology hints.
    pub numa_nodes: Vec<i64>,
}

impl Config {
    pub fn new(root_dir: &Path) -> Self {
        Self { dir: root_dir.join(DIR), numa_nodes: topology::machine_numa_nodes() }
    }
}

struct Inner {
    dir: PathBuf,
    /// The machine's NUMA nodes, for topology hints.
    numa_nodes: Vec<i64>,
    clock: DynClock,
    state: Mutex<State>,
    /// Upstream's devicesToReuse: the pod being admitted → resource → devices of its finished
    /// (non-restartable) init containers that later containers may take.
    reuse: Mutex<(String, BTreeMap<String, BTreeSet<String>>)>,
}

/// The cloneable handle: capacity for the node status, allocation for admission, run options
/// for container starts, topology hints, devices for the pod resources API.
#[derive(Clone)]
pub struct DeviceManager(Arc<Inner>);

impl std::fmt::Debug for DeviceManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceManager").field("dir", &self.0.dir).finish_non_exhaustive()
    }
}

/// Whole units of each extended resource `c` limits (device plugin resources are asked for as
/// limits; requests equal them).
fn device_limits(c: &Container) -> BTreeMap<String, usize> {
    super::resources::container_limits(c)
        .into_iter()
        .filter(|(name, _)| {
            name.contains('/') && !name.starts_with("kubernetes.io/") && !name.starts_with("hugepages-")
        })
        .map(|(name, milli)| (name, super::resources::units(milli).max(0) as usize))
        .filter(|(_, n)| *n > 0)
        .collect()
}

fn containers(pod: &Pod) -> impl Iterator<Item = (&Container, bool)> {
    let spec = pod.spec.as_ref();
    let init = spec.into_iter().flat_map(|s| s.init_containers.iter().flatten()).map(|c| (c, true));
    init.chain(spec.into_iter().flat_map(|s| s.containers.iter()).map(|c| (c, false)))
}

/// Runs `fut` to completion from synchronous code (the admit handlers are synchronous, as
/// upstream's; Allocate is a plugin call). On the kubelet's multi-thread runtime the worker
/// thread is handed over while it waits; elsewhere (unit tests on fakes) it is polled in place.
fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| h.block_on(fut))
        }
        _ => futures::executor::block_on(fut),
    }
}

async fn bounded<T>(
    what: &'static str,
    timeout: Duration,
    fut: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> Result<Result<T, tonic::Status>, AllocError> {
    tokio::time::timeout(timeout, fut).await.map_err(|_| AllocError::TimedOut(what, timeout))
}

impl DeviceManager {
    /// The manager with what the checkpoint kept (a corrupt or unreadable one is logged and
    /// ignored, as upstream continues without it).
    pub fn new(cfg: Config, clock: DynClock) -> Self {
        let state = match checkpoint::read(&cfg.dir) {
            Ok(Some(data)) => State::from_checkpoint(&data, clock.now()),
            Ok(None) => State::default(),
            Err(e) => {
                tracing::error!(error = %e, "continuing without the device manager checkpoint; device allocation info may not be up to date");
                State::default()
            }
        };
        Self(Arc::new(Inner {
            dir: cfg.dir,
            numa_nodes: cfg.numa_nodes,
            clock,
            state: Mutex::new(state),
            reuse: Mutex::default(),
        }))
    }

    pub fn dir(&self) -> &Path {
        &self.0.dir
    }

    pub fn socket_path(&self) -> PathBuf {
        self.0.dir.join(KUBELET_SOCKET)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write_checkpoint(&self, state: &State) {
        if let Err(e) = checkpoint::write(&self.0.dir, &state.checkpoint()) {
            tracing::error!(error = %e, "writing the device manager checkpoint");
        }
    }

    /// A plugin connected with `options`; the registration's generation.
    pub fn plugin_connected(
        &self,
        resource: &str,
        options: proto::DevicePluginOptions,
        plugin: Arc<dyn Plugin>,
    ) -> u64 {
        tracing::info!(resource, ?options, "device plugin endpoint registered");
        self.state().register(resource, options, plugin)
    }

    /// A ListAndWatch update from the plugin's registration `generation` (an older
    /// registration's stream is ignored).
    pub fn devices_updated(&self, resource: &str, generation: u64, devices: Vec<proto::Device>) {
        let mut st = self.state();
        if st.endpoints.get(resource).is_none_or(|e| e.generation != generation) {
            return;
        }
        let total = devices.len();
        st.update_devices(resource, devices);
        let healthy = st.healthy.get(resource).map_or(0, BTreeSet::len);
        tracing::info!(resource, total, healthy, "device plugin reported its devices");
        self.write_checkpoint(&st);
    }

    /// The plugin's stream ended: its devices are unhealthy from now on; the resource is
    /// deleted after the grace period unless the plugin registers again.
    pub fn plugin_disconnected(&self, resource: &str, generation: u64) {
        let now = self.0.clock.now();
        if self.state().disconnected(resource, generation, now) {
            tracing::warn!(resource, "device plugin endpoint stopped; its devices are unhealthy");
        }
    }

    /// Extended resources for the node status (upstream's GetCapacity and the node setter).
    pub fn capacity(&self) -> Capacity {
        let mut st = self.state();
        let (cap, deleted) = st.capacity(self.0.clock.now());
        if deleted {
            tracing::info!(resources = ?cap.capacity.iter().filter(|(_, n)| **n == 0).map(|(r, _)| r).collect::<Vec<_>>(), "device plugin resources deleted after the endpoint stop grace period");
            self.write_checkpoint(&st);
        }
        cap
    }

    /// Whether `pod` asks for any device plugin resource.
    pub fn wants_devices(&self, pod: &Pod) -> bool {
        let st = self.state();
        containers(pod).any(|(c, _)| device_limits(c).keys().any(|r| st.is_device_plugin_resource(r)))
    }

    /// Frees the devices of pods not in `active` (upstream's UpdateAllocatedDevices).
    pub fn update_allocated(&self, active: &(dyn Fn(&str) -> bool + Sync)) {
        self.state().update_allocated(active);
    }

    /// Allocates devices to every container of `pod`, init containers first (upstream's
    /// Allocate as the resource allocation admit handler calls it). `active` says which other
    /// pods still hold their devices.
    pub async fn allocate_pod(&self, pod: &Pod, active: &(dyn Fn(&str) -> bool + Sync)) -> Result<(), AllocError> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        {
            let mut reuse = self.0.reuse.lock().unwrap_or_else(|p| p.into_inner());
            if reuse.0 != uid {
                *reuse = (uid.clone(), BTreeMap::new());
            }
        }
        let mut updated = false;
        for (c, init) in containers(pod) {
            let restartable = init && c.restart_policy.as_deref() == Some("Always");
            self.allocate_container(pod, c, &mut updated, active).await?;
            let held: BTreeMap<String, BTreeSet<String>> = self
                .state()
                .pod_devices
                .container(&uid, &c.name)
                .map(|r| r.iter().map(|(res, a)| (res.clone(), a.ids())).collect())
                .unwrap_or_default();
            let mut reuse = self.0.reuse.lock().unwrap_or_else(|p| p.into_inner());
            for (res, ids) in held {
                let set = reuse.1.entry(res).or_default();
                if init && !restartable {
                    // addContainerAllocatedResources: later containers may take them.
                    set.extend(ids);
                } else {
                    // removeContainerAllocatedResources: this container keeps them.
                    set.retain(|d| !ids.contains(d));
                }
            }
        }
        Ok(())
    }

    /// Upstream's allocateContainerResources for one container.
    async fn allocate_container(
        &self,
        pod: &Pod,
        c: &Container,
        updated: &mut bool,
        active: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<(), AllocError> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let mut changed = false;
        for (resource, required) in device_limits(c) {
            let reusable = {
                let reuse = self.0.reuse.lock().unwrap_or_else(|p| p.into_inner());
                reuse.1.get(&resource).cloned().unwrap_or_default()
            };
            let step = {
                let mut st = self.state();
                if !st.is_device_plugin_resource(&resource) {
                    continue;
                }
                // Stranded devices of gone pods are freed before the first allocation.
                if !*updated {
                    st.update_allocated(&|u| u == uid || active(u));
                    *updated = true;
                }
                st.step(&uid, &c.name, &resource, required, &reusable)?
            };
            let Step::Need { reused, needed, required, available, endpoint } = step else { continue };
            let plugin = endpoint.plugin.clone().filter(|_| endpoint.stopped_at.is_none());
            let mut devices = reused.clone();
            if needed > 0 {
                let preferred = match (&plugin, &endpoint.options) {
                    (Some(p), Some(o)) if o.get_preferred_allocation_available => {
                        let offer: Vec<String> = available.union(&reused).cloned().collect();
                        let must: Vec<String> = reused.iter().cloned().collect();
                        let resp = bounded(
                            "GetPreferredAllocation",
                            ALLOCATE_TIMEOUT,
                            p.preferred_allocation(offer, must, required),
                        )
                        .await?
                        .map_err(|s| AllocError::Preferred(rpc_error(&s)))?;
                        resp.container_responses.into_iter().next().map(|r| r.device_i_ds).unwrap_or_default()
                    }
                    _ => Vec::new(),
                };
                let chosen = self.state().choose(&resource, needed, &available, &preferred)?;
                devices.extend(chosen);
            }
            let Some(plugin) = plugin else {
                self.state().rollback();
                return Err(AllocError::EndpointStopped(resource));
            };
            tracing::info!(pod = %crate::meta::pod_name(pod), container = %c.name, resource, ?devices, "allocating devices");
            let list: Vec<String> = devices.iter().cloned().collect();
            let resp = match bounded("Allocate", ALLOCATE_TIMEOUT, plugin.allocate(list)).await {
                Ok(Ok(r)) => r,
                Ok(Err(s)) => {
                    self.state().rollback();
                    return Err(AllocError::Allocate(rpc_error(&s)));
                }
                Err(e) => {
                    self.state().rollback();
                    return Err(e);
                }
            };
            let Some(first) = resp.container_responses.into_iter().next() else {
                self.state().rollback();
                return Err(AllocError::NoContainers(resource));
            };
            self.state().commit(&uid, &c.name, &resource, &devices, first);
            changed = true;
        }
        if changed {
            let st = self.state();
            self.write_checkpoint(&st);
        }
        Ok(())
    }

    /// What the container's runtime config gets from its devices (upstream's
    /// GetDeviceRunContainerOptions): PreStartContainer first where the plugin asks for it; a
    /// container with a device plugin resource but no devices on record (a race at restart) is
    /// allocated again.
    pub async fn run_options(&self, pod: &Pod, c: &Container) -> Result<RunOptions, AllocError> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let mut reallocate = false;
        for resource in device_limits(c).into_keys() {
            let (endpoint, held) = {
                let st = self.state();
                if !st.is_device_plugin_resource(&resource) {
                    continue;
                }
                (st.endpoints.get(&resource).cloned(), st.pod_devices.container_devices(&uid, &c.name, &resource))
            };
            let Some(endpoint) = endpoint else { return Err(AllocError::EndpointNotFound(resource)) };
            if endpoint.options.as_ref().is_some_and(|o| o.pre_start_required) {
                let Some(ids) = held.clone() else {
                    return Err(AllocError::NotCached { pod_uid: uid, container: c.name.clone(), resource });
                };
                let Some(plugin) = endpoint.plugin.filter(|_| endpoint.stopped_at.is_none()) else {
                    return Err(AllocError::PreStart(format!("endpoint {resource} has been stopped")));
                };
                bounded("PreStartContainer", PRE_START_TIMEOUT, plugin.pre_start_container(ids.into_iter().collect()))
                    .await?
                    .map_err(|s| AllocError::PreStart(rpc_error(&s)))?;
            }
            reallocate |= held.is_none();
        }
        if reallocate {
            tracing::info!(pod = %crate::meta::pod_name(pod), container = %c.name, "allocating device plugin resources again");
            let mut updated = true;
            self.allocate_container(pod, c, &mut updated, &|_| true).await?;
        }
        Ok(self.state().pod_devices.run_options(&uid, &c.name))
    }

    /// Topology hints per device plugin resource `c` asks for (upstream's GetTopologyHints, for
    /// the topology manager's hint providers): None for a resource whose devices have no NUMA
    /// affinity (no preference); Some(empty) when the request cannot be satisfied.
    pub fn get_topology_hints(&self, pod: &Pod, c: &Container) -> BTreeMap<String, Option<Vec<TopologyHint>>> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let st = self.state();
        let mut out = BTreeMap::new();
        for (resource, required) in device_limits(c) {
            if !st.is_device_plugin_resource(&resource) {
                continue;
            }
            let all = st.all.get(&resource).cloned().unwrap_or_default();
            let nodes = &self.0.numa_nodes;
            if !topology::has_alignment(&all) {
                out.insert(resource, None);
                continue;
            }
            if let Some(held) = st.pod_devices.container_devices(&uid, &c.name, &resource) {
                let hints = if held.len() == required {
                    topology::hints_for(nodes, &all, &held, &BTreeSet::new(), required)
                } else {
                    Vec::new()
                };
                out.insert(resource, Some(hints));
                continue;
            }
            let in_use = st.allocated.get(&resource).cloned().unwrap_or_default();
            let healthy = st.healthy.get(&resource).cloned().unwrap_or_default();
            let available: BTreeSet<String> = healthy.difference(&in_use).cloned().collect();
            let reusable = {
                let reuse = self.0.reuse.lock().unwrap_or_else(|p| p.into_inner());
                if reuse.0 == uid { reuse.1.get(&resource).cloned().unwrap_or_default() } else { BTreeSet::new() }
            };
            let hints = if available.union(&reusable).count() < required {
                Vec::new()
            } else {
                topology::hints_for(nodes, &all, &available, &reusable, required)
            };
            out.insert(resource, Some(hints));
        }
        out
    }

    /// The devices each resource of the container holds, by NUMA node (for the pod resources
    /// API's List and Get): (resource, device IDs, NUMA node or None).
    pub fn container_devices(&self, uid: &str, container: &str) -> Vec<(String, Vec<String>, Option<i64>)> {
        let st = self.state();
        let Some(resources) = st.pod_devices.container(uid, container) else { return Vec::new() };
        resources
            .iter()
            .flat_map(|(res, a)| {
                a.by_numa.iter().map(move |(node, ids)| {
                    (res.clone(), ids.clone(), (*node != pod_devices::NO_TOPOLOGY).then_some(*node))
                })
            })
            .collect()
    }

    /// Every healthy device with its NUMA nodes (for GetAllocatableResources).
    pub fn allocatable_devices(&self) -> Vec<(String, String, Vec<i64>)> {
        let st = self.state();
        let mut out = Vec::new();
        for (res, healthy) in &st.healthy {
            for id in healthy {
                let nodes = st
                    .all
                    .get(res)
                    .and_then(|a| a.get(id))
                    .and_then(|d| d.topology.as_ref())
                    .map(|t| t.nodes.iter().map(|n| n.id).collect())
                    .unwrap_or_default();
                out.push((res.clone(), id.clone(), nodes));
            }
        }
        out
    }

    /// The registration server on `<dir>/kubelet.sock` until `token` is cancelled (see
    /// `registration.rs`).
    pub async fn run(self, token: tokio_util::sync::CancellationToken) {
        registration::serve(self, token).await;
    }
}

/// The resource allocation admit handler (upstream's cm resourceAllocator / topology manager
/// scope with the none policy): a pod asking for device plugin resources gets its devices now,
/// or is refused with `UnexpectedAdmissionError` (upstream's admission.GetPodAdmitResult).
#[derive(Clone, Debug)]
pub struct Admit(pub DeviceManager);

/// Upstream's unexpectedAdmissionError.
pub fn unexpected(e: &AllocError) -> Rejection {
    Rejection {
        reason: "UnexpectedAdmissionError".into(),
        message: format!("Allocate failed due to {e}, which is unexpected"),
    }
}

impl Handler for Admit {
    fn admit(&self, pod: &Pod, admitted: &[&Pod]) -> Result<(), Rejection> {
        if !self.0.wants_devices(pod) {
            return Ok(());
        }
        let active: BTreeSet<String> = admitted.iter().filter_map(|p| p.metadata.uid.clone()).collect();
        block_on(self.0.allocate_pod(pod, &|u| active.contains(u))).map_err(|e| {
            tracing::warn!(pod = %crate::meta::pod_name(pod), error = %e, "device allocation failed");
            unexpected(&e)
        })
    }
}
