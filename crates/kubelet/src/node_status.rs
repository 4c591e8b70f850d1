//! Node registration and the node status setters: capacity and allocatable, conditions with
//! upstream reasons, addresses, nodeInfo, images, daemon endpoints. Patched every
//! `nodeStatusUpdateFrequency` when it changed and every `nodeStatusReportFrequency` anyway; a
//! deleted Node is registered again.

use crate::api::{ApiError, DynApi};
use crate::cri::DynRuntime;
use crate::pleg;
use k8s_openapi::api::core::v1::{
    ContainerImage, DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeFeatures,
    NodeRuntimeHandler, NodeRuntimeHandlerFeatures, NodeSpec, NodeStatus, NodeSystemInfo, Taint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kubelet_config::KubeletConfiguration;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub const KUBELET_VERSION: &str = concat!("v1.32.0-rs.", env!("CARGO_PKG_VERSION"));

#[derive(Debug, Clone)]
pub struct Config {
    pub node_name: String,
    pub node_ip: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub register: bool,
    pub update_frequency: Duration,
    pub report_frequency: Duration,
    pub max_pods: i64,
    pub kubelet_port: i32,
    pub root_dir: PathBuf,
    /// Millicores and bytes held back from allocatable (systemReserved + kubeReserved + the hard
    /// eviction threshold for memory).
    pub reserved_cpu_milli: i64,
    pub reserved_memory: i64,
    pub max_images: usize,
    /// The eviction manager's pressure conditions (None: always False).
    pub pressure: Option<crate::eviction::Handle>,
    /// The node shutdown manager's state: NotReady while shutting down (None: no manager).
    pub shutdown: Option<crate::nodeshutdown::Handle>,
    /// enableControllerAttachDetach: the Node says the attach/detach controller manages its
    /// volumes.
    pub controller_attach_detach: bool,
    /// The device plugins' extended resources (None: none); the composition hands it in.
    pub devices: Option<crate::cm::devicemanager::DeviceManager>,
    /// The second `--node-ip` of a dual-stack pair: a second InternalIP address.
    pub secondary_node_ip: Option<String>,
    /// `--cloud-provider=external`: the node registers with the uninitialized taint, and its
    /// addresses are left alone once the Node has any (the cloud controller manager's).
    pub external_cloud_provider: bool,
    /// `--node-ip` as given, for the cloud controller manager (the provided-node-ip annotation;
    /// only with an external cloud provider and a specified IP).
    pub provided_node_ip: Option<String>,
    /// providerID (`--provider-id`): spec.providerID at registration.
    pub provider_id: String,
}

/// The taint an external cloud provider's node carries until the cloud controller manager has
/// initialized it (k8s.io/cloud-provider/api TaintExternalCloudProvider).
pub const TAINT_EXTERNAL_CLOUD_PROVIDER: &str = "node.cloudprovider.kubernetes.io/uninitialized";

/// The annotation that tells the cloud controller manager the IPs given with `--node-ip`
/// (AnnotationAlphaProvidedIPAddr).
pub const PROVIDED_NODE_IP: &str = "alpha.kubernetes.io/provided-node-ip";

/// The annotation that hands attaching and detaching this node's volumes to the attach/detach
/// controller (upstream's ControllerManagedAttachAnnotation).
pub const CONTROLLER_MANAGED_ATTACH_DETACH: &str = "volumes.kubernetes.io/controller-managed-attach-detach";

/// A KubeletConfiguration field the node status cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}: must not be negative")]
    Negative(&'static str),
}

/// The node's identity and command-line-only settings the node status needs besides the
/// KubeletConfiguration.
#[derive(Debug, Clone)]
pub struct Identity {
    pub node_name: String,
    pub node_ip: Option<String>,
    /// `--node-labels`.
    pub labels: BTreeMap<String, String>,
    /// `--root-dir`.
    pub root_dir: PathBuf,
}

impl Config {
    /// From registerNode, registerWithTaints, nodeStatusUpdateFrequency,
    /// nodeStatusReportFrequency, maxPods, port, nodeStatusMaxImages and the reservations
    /// (systemReserved + kubeReserved; for memory also the hard eviction threshold). No pressure
    /// conditions: the composition hands in the eviction manager's.
    pub fn from_kubelet_config(cfg: &KubeletConfiguration, id: Identity) -> Result<Self, ConfigError> {
        let duration =
            |d: kubelet_config::duration::Duration, field: &'static str| d.to_std().ok_or(ConfigError::Negative(field));
        Ok(Self {
            node_name: id.node_name,
            node_ip: id.node_ip,
            labels: id.labels,
            taints: taints(cfg),
            register: cfg.register_node,
            update_frequency: duration(cfg.node_status_update_frequency, "nodeStatusUpdateFrequency")?,
            report_frequency: duration(cfg.node_status_report_frequency, "nodeStatusReportFrequency")?,
            max_pods: i64::from(cfg.max_pods),
            kubelet_port: cfg.port,
            root_dir: id.root_dir,
            reserved_cpu_milli: reserved_milli(cfg, "cpu"),
            reserved_memory: reserved(cfg, "memory") + eviction_memory(cfg),
            max_images: cfg.node_status_max_images.max(0) as usize,
            pressure: None,
            shutdown: None,
            controller_attach_detach: cfg.enable_controller_attach_detach,
            devices: None,
            secondary_node_ip: None,
            external_cloud_provider: false,
            provided_node_ip: None,
            provider_id: cfg.provider_id.clone(),
        })
    }
}

/// registerWithTaints as API taints.
pub fn taints(cfg: &KubeletConfiguration) -> Vec<Taint> {
    cfg.register_with_taints
        .iter()
        .map(|t| Taint {
            key: t.key.clone(),
            value: Some(t.value.clone()).filter(|v| !v.is_empty()),
            effect: t.effect.clone(),
            time_added: None,
        })
        .collect()
}

/// systemReserved + kubeReserved of a resource, in millis (cpu).
fn reserved_milli(cfg: &KubeletConfiguration, res: &str) -> i64 {
    [&cfg.system_reserved, &cfg.kube_reserved].iter().filter_map(|m| m.get(res)).map(|q| q.milli_value() as i64).sum()
}

/// systemReserved + kubeReserved of a resource, in units (bytes for memory).
fn reserved(cfg: &KubeletConfiguration, res: &str) -> i64 {
    [&cfg.system_reserved, &cfg.kube_reserved].iter().filter_map(|m| m.get(res)).map(|q| q.value() as i64).sum()
}

/// The hard eviction threshold for memory.available, when it is an absolute quantity.
fn eviction_memory(cfg: &KubeletConfiguration) -> i64 {
    let hard = cfg.effective_eviction_hard();
    hard.get("memory.available")
        .and_then(|v| kubelet_config::quantity::Quantity::parse(v).ok())
        .map(|q| q.value() as i64)
        .unwrap_or(0)
}

/// What the machine has, read once.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Machine {
    pub cpus: i64,
    pub memory_bytes: i64,
    pub storage_bytes: i64,
    pub machine_id: String,
    pub system_uuid: String,
    pub boot_id: String,
    pub kernel: String,
    pub os_image: String,
}

fn read_trim(p: &str) -> String {
    std::fs::read_to_string(p).map(|s| s.trim().to_string()).unwrap_or_default()
}

impl Machine {
    pub fn read(root_dir: &std::path::Path) -> Self {
        let memory_kib = read_trim("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<i64>().ok())
            .unwrap_or(0);
        let storage_bytes = {
            let path = std::ffi::CString::new(root_dir.as_os_str().as_encoded_bytes()).unwrap_or_default();
            let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
            if unsafe { libc::statvfs(path.as_ptr(), &mut st) } == 0 {
                (st.f_blocks as i64) * (st.f_frsize as i64)
            } else {
                0
            }
        };
        let os_image = read_trim("/etc/os-release")
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_else(|| "Linux".into());
        Self {
            cpus: std::thread::available_parallelism().map(|n| n.get() as i64).unwrap_or(1),
            memory_bytes: memory_kib * 1024,
            storage_bytes,
            machine_id: read_trim("/etc/machine-id"),
            system_uuid: read_trim("/sys/class/dmi/id/product_uuid"),
            boot_id: read_trim("/proc/sys/kernel/random/boot_id"),
            kernel: read_trim("/proc/sys/kernel/osrelease"),
            os_image,
        }
    }
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// `--node-labels` plus the well-known hostname/os/arch labels.
pub fn node_labels(node_name: &str, extra: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut labels = extra.clone();
    labels.insert("kubernetes.io/hostname".into(), node_name.to_string());
    labels.insert("kubernetes.io/os".into(), "linux".into());
    labels.insert("kubernetes.io/arch".into(), arch().into());
    labels.insert("beta.kubernetes.io/os".into(), "linux".into());
    labels.insert("beta.kubernetes.io/arch".into(), arch().into());
    labels
}

/// The Node object to register (upstream's initialNode): taints registerWithTaints then, with
/// an external cloud provider, the uninitialized taint; providerID when set.
pub fn initial_node(cfg: &Config) -> Node {
    let labels = node_labels(&cfg.node_name, &cfg.labels);
    let mut node = Node::default();
    node.metadata.name = Some(cfg.node_name.clone());
    node.metadata.labels = Some(labels);
    let mut annotations = BTreeMap::new();
    if cfg.controller_attach_detach {
        annotations.insert(CONTROLLER_MANAGED_ATTACH_DETACH.to_string(), "true".to_string());
    }
    if let Some(ips) = cfg.provided_node_ip.as_ref().filter(|_| cfg.external_cloud_provider) {
        annotations.insert(PROVIDED_NODE_IP.to_string(), ips.clone());
    }
    node.metadata.annotations = (!annotations.is_empty()).then_some(annotations);
    let mut taints = cfg.taints.clone();
    if cfg.external_cloud_provider {
        taints.push(Taint {
            key: TAINT_EXTERNAL_CLOUD_PROVIDER.into(),
            value: Some("true".into()),
            effect: "NoSchedule".into(),
            time_added: None,
        });
    }
    node.spec = Some(NodeSpec {
        taints: (!taints.is_empty()).then_some(taints),
        provider_id: Some(cfg.provider_id.clone()).filter(|id| !id.is_empty()),
        ..Default::default()
    });
    node
}

/// The NodeAddress setter without an in-tree cloud: the InternalIP(s) (the dual-stack pair in
/// the order given) then the Hostname. With an external cloud provider the Node's existing
/// addresses win (`None`: leave them), and without a given IP only the Hostname is set.
pub fn node_addresses(cfg: &Config, existing: Option<&[NodeAddress]>) -> Option<Vec<NodeAddress>> {
    if cfg.external_cloud_provider && existing.is_some_and(|a| !a.is_empty()) {
        return None;
    }
    let internal = |ip: &String| NodeAddress { type_: "InternalIP".into(), address: ip.clone() };
    let mut addresses = Vec::new();
    if !cfg.external_cloud_provider || cfg.provided_node_ip.is_some() {
        addresses.extend(cfg.node_ip.iter().map(internal));
        addresses.extend(cfg.secondary_node_ip.iter().map(internal));
    }
    addresses.push(NodeAddress { type_: "Hostname".into(), address: cfg.node_name.clone() });
    Some(addresses)
}

/// What the runtime and the PLEG say about readiness, and the runtime's handlers and features.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Health {
    pub runtime_version: String,
    /// None when ready, else the NotReady message.
    pub not_ready: Option<String>,
    /// CRI Status `runtime_handlers` and `features` (none from containerd 1.6).
    pub handlers: crate::cri::RuntimeHandlers,
}

/// The PLEG's health threshold (upstream's relistThreshold).
const PLEG_THRESHOLD: Duration = Duration::from_secs(180);

pub async fn health(runtime: &DynRuntime, pleg: &pleg::Health, shutdown: Option<&str>) -> Health {
    let runtime_version = match runtime.version().await {
        Ok(v) => format!("{}://{}", v.runtime_name, v.runtime_version),
        Err(_) => String::new(),
    };
    let since_relist = Duration::from_secs((chrono::Utc::now().timestamp() - pleg.last_relist_secs()).max(0) as u64);
    let pleg_stale = (!pleg.healthy(PLEG_THRESHOLD)).then_some(since_relist);
    let status = runtime.status().await;
    if let Err(e) = &status {
        tracing::warn!(error = %e, "container runtime status check failed");
    }
    let conditions = status.as_ref().ok().map(|st| st.conditions.as_slice());
    let handlers = runtime.handlers().await.unwrap_or_default();
    Health { runtime_version, not_ready: with_shutdown(conditions, pleg_stale, shutdown), handlers }
}

/// Upstream's Ready condition message (runtimeState's runtime and network errors, aggregated):
/// only the runtime's RuntimeReady and NetworkReady conditions count (k/k #123148: other CRI
/// conditions never make the node NotReady). `conditions` is None when the runtime's status
/// could not be read; `pleg_stale` is the time since the last relist once past the threshold.
pub fn not_ready(
    conditions: Option<&[crate::cri::api::RuntimeCondition]>,
    pleg_stale: Option<Duration>,
) -> Option<String> {
    aggregate(not_ready_errors(conditions, pleg_stale))
}

/// The errors behind [`not_ready`], in upstream's order (runtime, network).
fn not_ready_errors(
    conditions: Option<&[crate::cri::api::RuntimeCondition]>,
    pleg_stale: Option<Duration>,
) -> Vec<String> {
    let go = kubelet_config::duration::Duration::from_std;
    let mut errors = Vec::new();
    if conditions.is_none() {
        errors.push("container runtime is down".to_string());
    }
    if let Some(elapsed) = pleg_stale {
        errors.push(format!(
            "PLEG is not healthy: pleg was last seen active {} ago; threshold is {}",
            go(elapsed),
            go(PLEG_THRESHOLD)
        ));
    }
    let describe = |type_: &str| match conditions.into_iter().flatten().find(|c| c.r#type == type_) {
        Some(c) if c.status => None,
        // Upstream prints the condition as "Type=false reason:… message:…", or <nil> when absent.
        Some(c) => Some(format!("{}=false reason:{} message:{}", c.r#type, c.reason, c.message)),
        None => Some("<nil>".to_string()),
    };
    if conditions.is_some() {
        if let Some(c) = describe("RuntimeReady") {
            errors.push(format!("container runtime not ready: {c}"));
        }
        if let Some(c) = describe("NetworkReady") {
            errors.push(format!("container runtime network not ready: {c}"));
        }
    }
    errors
}

/// The Ready message with the node shutdown manager's error last (upstream's ReadyCondition
/// setter: runtime, network, storage, then nodeShutdownManagerErrorsFunc).
fn with_shutdown(
    conditions: Option<&[crate::cri::api::RuntimeCondition]>,
    pleg_stale: Option<Duration>,
    shutdown: Option<&str>,
) -> Option<String> {
    let mut errors = not_ready_errors(conditions, pleg_stale);
    errors.extend(shutdown.map(str::to_string));
    aggregate(errors)
}

/// apimachinery's Aggregate error text: one message as it is, several (duplicates dropped) as
/// "[a, b]".
fn aggregate(errors: Vec<String>) -> Option<String> {
    let mut seen: Vec<String> = Vec::new();
    for e in errors {
        if !seen.contains(&e) {
            seen.push(e);
        }
    }
    match seen.len() {
        0 => None,
        1 => seen.pop(),
        _ => Some(format!("[{}]", seen.join(", "))),
    }
}

/// The node events upstream's condition setters record when a condition changes status:
/// NodeReady / NodeNotReady when an existing Ready condition flips, and the pressure events
/// (NodeHasSufficientMemory, …) when a pressure condition is new or flips.
pub fn condition_events(before: &[NodeCondition], after: &[NodeCondition]) -> Vec<&'static str> {
    let status_of = |list: &[NodeCondition], t: &str| list.iter().find(|c| c.type_ == t).map(|c| c.status.clone());
    let mut events = Vec::new();
    for (type_, when_true, when_false) in [
        ("MemoryPressure", "NodeHasInsufficientMemory", "NodeHasSufficientMemory"),
        ("DiskPressure", "NodeHasDiskPressure", "NodeHasNoDiskPressure"),
        ("PIDPressure", "NodeHasInsufficientPID", "NodeHasSufficientPID"),
    ] {
        let now = status_of(after, type_);
        if now.is_some() && status_of(before, type_) != now {
            events.push(if now.as_deref() == Some("True") { when_true } else { when_false });
        }
    }
    if let (Some(was), Some(now)) = (status_of(before, "Ready"), status_of(after, "Ready"))
        && was != now
    {
        events.push(if now == "True" { "NodeReady" } else { "NodeNotReady" });
    }
    events
}

/// The RuntimeHandlers setter: every handler the runtime reports, with its features.
fn runtime_handlers(h: &crate::cri::RuntimeHandlers) -> Vec<NodeRuntimeHandler> {
    h.handlers
        .iter()
        .map(|h| {
            let f = h.features.as_ref();
            NodeRuntimeHandler {
                name: Some(h.name.clone()),
                features: Some(NodeRuntimeHandlerFeatures {
                    recursive_read_only_mounts: Some(f.is_some_and(|f| f.recursive_read_only_mounts)),
                    user_namespaces: Some(f.is_some_and(|f| f.user_namespaces)),
                }),
            }
        })
        .collect()
}

/// The NodeFeatures setter: set only when the runtime reports features.
fn node_features(h: &crate::cri::RuntimeHandlers) -> Option<NodeFeatures> {
    h.features.as_ref().map(|f| NodeFeatures { supplemental_groups_policy: Some(f.supplemental_groups_policy) })
}

fn condition(type_: &str, ok_status: &str, reason: &str, message: &str) -> NodeCondition {
    NodeCondition {
        type_: type_.into(),
        status: ok_status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: None,
        last_transition_time: None,
    }
}

/// The status the setters compute (heartbeat and transition times are added when sending).
pub fn compute_status(cfg: &Config, m: &Machine, h: &Health, images: Vec<ContainerImage>) -> NodeStatus {
    let q = |s: String| Quantity(s);
    let mut capacity = BTreeMap::new();
    capacity.insert("cpu".to_string(), q(m.cpus.to_string()));
    capacity.insert("memory".to_string(), q(format!("{}Ki", m.memory_bytes / 1024)));
    capacity.insert("pods".to_string(), q(cfg.max_pods.to_string()));
    capacity.insert("ephemeral-storage".to_string(), q(format!("{}Ki", m.storage_bytes / 1024)));
    capacity.insert("hugepages-2Mi".to_string(), q("0".into()));
    capacity.insert("hugepages-1Gi".to_string(), q("0".into()));
    let mut allocatable = capacity.clone();
    let cpu_milli = (m.cpus * 1000 - cfg.reserved_cpu_milli).max(0);
    allocatable.insert(
        "cpu".into(),
        q(if cpu_milli % 1000 == 0 { (cpu_milli / 1000).to_string() } else { format!("{cpu_milli}m") }),
    );
    allocatable.insert("memory".into(), q(format!("{}Ki", (m.memory_bytes - cfg.reserved_memory).max(0) / 1024)));
    // Upstream's MachineInfo setter: each device plugin resource with all its devices in
    // capacity and the healthy ones in allocatable; a deleted one as 0 in both.
    if let Some(devices) = &cfg.devices {
        let ext = devices.capacity();
        capacity.extend(ext.capacity.into_iter().map(|(r, n)| (r, q(n.to_string()))));
        allocatable.extend(ext.allocatable.into_iter().map(|(r, n)| (r, q(n.to_string()))));
    }
    let ready = match &h.not_ready {
        None => condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        Some(msg) => condition("Ready", "False", "KubeletNotReady", msg),
    };
    use crate::eviction::thresholds::Condition;
    let under = |c: Condition| cfg.pressure.as_ref().is_some_and(|p| p.has(c));
    let conditions = vec![
        if under(Condition::MemoryPressure) {
            condition(
                "MemoryPressure",
                "True",
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available",
            )
        } else {
            condition(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            )
        },
        if under(Condition::DiskPressure) {
            condition("DiskPressure", "True", "KubeletHasDiskPressure", "kubelet has disk pressure")
        } else {
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure")
        },
        if under(Condition::PIDPressure) {
            condition("PIDPressure", "True", "KubeletHasInsufficientPID", "kubelet has insufficient PID available")
        } else {
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available")
        },
        ready,
    ];
    let addresses = node_addresses(cfg, None);
    NodeStatus {
        capacity: Some(capacity),
        allocatable: Some(allocatable),
        conditions: Some(conditions),
        addresses,
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint { port: cfg.kubelet_port }),
        }),
        node_info: Some(NodeSystemInfo {
            machine_id: m.machine_id.clone(),
            system_uuid: m.system_uuid.clone(),
            boot_id: m.boot_id.clone(),
            kernel_version: m.kernel.clone(),
            os_image: m.os_image.clone(),
            container_runtime_version: h.runtime_version.clone(),
            kubelet_version: KUBELET_VERSION.into(),
            kube_proxy_version: String::new(),
            operating_system: "linux".into(),
            architecture: arch().into(),
            ..Default::default()
        }),
        images: Some(images),
        // An empty list is left out, as Go's omitempty does.
        runtime_handlers: Some(runtime_handlers(&h.handlers)).filter(|l| !l.is_empty()),
        features: node_features(&h.handlers),
        ..Default::default()
    }
}

async fn images(runtime: &DynRuntime, max: usize) -> Vec<ContainerImage> {
    let mut imgs: Vec<ContainerImage> = runtime
        .list_images()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|i| ContainerImage {
            names: Some(i.repo_digests.into_iter().chain(i.repo_tags).collect()),
            size_bytes: Some(i.size as i64),
        })
        .collect();
    imgs.sort_by_key(|i| std::cmp::Reverse(i.size_bytes));
    imgs.truncate(max);
    imgs
}

/// Adds heartbeat and transition times, keeping transition times of unchanged conditions.
fn with_times(
    mut st: NodeStatus,
    previous: Option<&NodeStatus>,
    now: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> NodeStatus {
    for c in st.conditions.iter_mut().flatten() {
        c.last_heartbeat_time = Some(now.clone());
        let prev = previous.and_then(|p| p.conditions.as_ref()).and_then(|cs| cs.iter().find(|x| x.type_ == c.type_));
        c.last_transition_time = match prev {
            Some(p) if p.status == c.status => p.last_transition_time.clone().or(Some(now.clone())),
            _ => Some(now.clone()),
        };
    }
    st
}

async fn register(cfg: &Config, api: &DynApi) -> Result<(), ApiError> {
    if let Some(existing) = api.get_node(&cfg.node_name).await? {
        return reconcile_attach_detach(cfg, api, &existing).await;
    }
    match api.create_node(&initial_node(cfg)).await {
        Ok(_) => {
            tracing::info!(node = %cfg.node_name, "node registered");
            Ok(())
        }
        Err(ApiError::Conflict(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// An existing Node's controller-managed-attach-detach annotation brought in line with the
/// configuration (upstream's reconcileCMADAnnotationWithExistingNode): set when enabled,
/// removed when not.
async fn reconcile_attach_detach(cfg: &Config, api: &DynApi, node: &Node) -> Result<(), ApiError> {
    let current = node.metadata.annotations.as_ref().and_then(|a| a.get(CONTROLLER_MANAGED_ATTACH_DETACH));
    let want = cfg.controller_attach_detach.then_some("true");
    if current.map(String::as_str) == want {
        return Ok(());
    }
    tracing::info!(node = %cfg.node_name, enabled = cfg.controller_attach_detach, "updating the controller-managed attach/detach annotation");
    let patch = serde_json::json!({"metadata": {"annotations": {CONTROLLER_MANAGED_ATTACH_DETACH: want}}});
    api.patch_node(&cfg.node_name, &patch).await.map(drop)
}

/// Registers the node (when `registerNode`) and keeps its status current, recording upstream's
/// node condition events. Until `token` is cancelled (an update in flight completes).
pub async fn run(
    cfg: Config,
    api: DynApi,
    runtime: DynRuntime,
    pleg: pleg::Health,
    events: crate::event_recorder::Recorder,
    token: CancellationToken,
) {
    let machine = Machine::read(&cfg.root_dir);
    let mut shutdown_rx = cfg.shutdown.as_ref().map(|s| s.subscribe());
    let mut registered = !cfg.register;
    let mut last_sent: Option<NodeStatus> = None;
    let mut last_report = Instant::now();
    loop {
        if token.is_cancelled() {
            return;
        }
        if !registered {
            match register(&cfg, &api).await {
                Ok(()) => registered = true,
                Err(e) => tracing::warn!(node = %cfg.node_name, error = %e, "node registration failed; retrying"),
            }
        }
        // As upstream, read the Node every cycle: a deleted Node is registered again, and its
        // conditions are what the new ones are compared with for the events.
        let current = if registered { api.get_node(&cfg.node_name).await } else { Ok(None) };
        if registered && cfg.register && matches!(current, Ok(None)) {
            tracing::warn!(node = %cfg.node_name, "node object is gone; registering again");
            registered = false;
            last_sent = None;
            continue;
        }
        if registered {
            let shutting_down = cfg.shutdown.as_ref().and_then(|s| s.status());
            let h = health(&runtime, &pleg, shutting_down).await;
            let mut status = compute_status(&cfg, &machine, &h, images(&runtime, cfg.max_images).await);
            let existing = current.as_ref().ok().and_then(Option::as_ref).and_then(|n| n.status.as_ref());
            status.addresses = node_addresses(&cfg, existing.and_then(|s| s.addresses.as_deref()));
            let changed = last_sent.as_ref().is_none_or(|prev| strip_times(prev) != status);
            if changed || last_report.elapsed() >= cfg.report_frequency {
                let now = crate::meta::time(std::time::SystemTime::now());
                let full = with_times(status, last_sent.as_ref(), now);
                let patch = serde_json::json!({ "status": full });
                match api.patch_node_status(&cfg.node_name, &patch).await {
                    Ok(_) => {
                        let before = current.ok().flatten().and_then(|n| n.status).and_then(|s| s.conditions);
                        let after = full.conditions.as_deref().unwrap_or_default();
                        for reason in condition_events(before.as_deref().unwrap_or_default(), after) {
                            let message = format!("Node {} status is now: {reason}", cfg.node_name);
                            tracing::info!(node = %cfg.node_name, "{message}");
                            events.node(&cfg.node_name, crate::event_recorder::Type::Normal, reason, message);
                        }
                        last_sent = Some(full);
                        last_report = Instant::now();
                    }
                    Err(ApiError::NotFound) if cfg.register => {
                        tracing::warn!(node = %cfg.node_name, "node object is gone; registering again");
                        registered = false;
                        last_sent = None;
                        continue;
                    }
                    Err(e) => tracing::warn!(node = %cfg.node_name, error = %e, "node status update failed"),
                }
            }
        }
        // A node shutdown starting or cancelled is reported at once (upstream's syncNodeStatus
        // from the shutdown manager).
        let shutdown_changed = async {
            match shutdown_rx.as_mut() {
                Some(rx) => {
                    if rx.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending().await,
            }
        };
        let wait = async {
            tokio::select! {
                _ = tokio::time::sleep(cfg.update_frequency) => {}
                _ = shutdown_changed => {}
            }
        };
        if token.run_until_cancelled(wait).await.is_none() {
            return;
        }
    }
}

fn strip_times(s: &NodeStatus) -> NodeStatus {
    let mut s = s.clone();
    for c in s.conditions.iter_mut().flatten() {
        c.last_heartbeat_time = None;
        c.last_transition_time = None;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> Identity {
        Identity { node_name: "n1".into(), node_ip: None, labels: BTreeMap::new(), root_dir: "/r".into() }
    }

    #[test]
    fn config_from_kubelet_config_sums_reservations_and_the_hard_memory_threshold() {
        let mut kc = KubeletConfiguration::default();
        kc.system_reserved.insert("cpu".into(), kubelet_config::quantity::Quantity::parse("100m").unwrap());
        kc.kube_reserved.insert("memory".into(), kubelet_config::quantity::Quantity::parse("100Mi").unwrap());
        let c = Config::from_kubelet_config(&kc, id()).unwrap();
        assert_eq!(c.reserved_cpu_milli, 100);
        // The default evictionHard memory.available is 100Mi.
        assert_eq!(c.reserved_memory, 200 << 20);
        assert_eq!(c.update_frequency, Duration::from_secs(10));
        assert!(c.pressure.is_none());
    }

    fn cloud_node() -> Config {
        let mut kc = KubeletConfiguration { provider_id: "aws:///us-west-2a/i-1".into(), ..Default::default() };
        kc.register_with_taints.push(kubelet_config::Taint {
            key: "dedicated".into(),
            value: "gpu".into(),
            effect: "NoSchedule".into(),
            time_added: None,
        });
        let mut c = Config::from_kubelet_config(&kc, Identity { node_ip: Some("10.0.0.7".into()), ..id() }).unwrap();
        c.external_cloud_provider = true;
        c.secondary_node_ip = Some("fd00::7".into());
        c.provided_node_ip = Some("10.0.0.7,fd00::7".into());
        c
    }

    #[test]
    fn an_external_cloud_node_registers_uninitialized_with_its_provider_id() {
        let node = initial_node(&cloud_node());
        let spec = node.spec.unwrap();
        let taints: Vec<_> = spec
            .taints
            .unwrap()
            .into_iter()
            .map(|t| format!("{}={}:{}", t.key, t.value.unwrap_or_default(), t.effect))
            .collect();
        assert_eq!(
            taints,
            vec!["dedicated=gpu:NoSchedule", "node.cloudprovider.kubernetes.io/uninitialized=true:NoSchedule"]
        );
        assert_eq!(spec.provider_id.as_deref(), Some("aws:///us-west-2a/i-1"));
        assert_eq!(node.metadata.annotations.unwrap()[PROVIDED_NODE_IP], "10.0.0.7,fd00::7");

        let plain = initial_node(&Config::from_kubelet_config(&KubeletConfiguration::default(), id()).unwrap());
        assert!(plain.spec.unwrap().taints.is_none());
    }

    #[test]
    fn addresses_follow_upstreams_node_address_setter() {
        let mut c = cloud_node();
        let list = |a: Option<Vec<NodeAddress>>| {
            a.map(|a| a.into_iter().map(|a| format!("{}={}", a.type_, a.address)).collect::<Vec<_>>())
        };
        assert_eq!(
            list(node_addresses(&c, None)),
            Some(vec!["InternalIP=10.0.0.7".into(), "InternalIP=fd00::7".into(), "Hostname=n1".into()])
        );
        let ccm = [NodeAddress { type_: "InternalIP".into(), address: "10.1.1.1".into() }];
        assert_eq!(node_addresses(&c, Some(&ccm)), None, "the cloud controller manager's addresses stay");
        c.provided_node_ip = None;
        assert_eq!(
            list(node_addresses(&c, Some(&[]))),
            Some(vec!["Hostname=n1".into()]),
            "no --node-ip: wait for the CCM"
        );
        c.external_cloud_provider = false;
        assert_eq!(list(node_addresses(&c, Some(&ccm))).unwrap().len(), 3, "without a cloud the kubelet's own win");
    }

    #[test]
    fn a_negative_frequency_is_named() {
        let kc = KubeletConfiguration {
            node_status_report_frequency: kubelet_config::duration::Duration::parse("-1s").unwrap(),
            ..Default::default()
        };
        let e = Config::from_kubelet_config(&kc, id()).unwrap_err();
        assert_eq!(e.to_string(), "nodeStatusReportFrequency: must not be negative");
    }

    fn cond(type_: &str, status: bool, reason: &str, message: &str) -> crate::cri::api::RuntimeCondition {
        crate::cri::api::RuntimeCondition {
            r#type: type_.into(),
            status,
            reason: reason.into(),
            message: message.into(),
        }
    }

    #[test]
    fn a_node_shutting_down_is_not_ready_with_upstreams_message_last() {
        use crate::cri::api::RuntimeCondition;
        let cond = |t: &str, ok: bool| RuntimeCondition { r#type: t.into(), status: ok, ..Default::default() };
        let ready = [cond("RuntimeReady", true), cond("NetworkReady", true)];
        assert_eq!(with_shutdown(Some(&ready), None, None), None);
        assert_eq!(
            with_shutdown(Some(&ready), None, Some("node is shutting down")).as_deref(),
            Some("node is shutting down")
        );
        assert_eq!(
            with_shutdown(None, None, Some("node is shutting down")).as_deref(),
            Some("[container runtime is down, node is shutting down]")
        );
    }

    #[test]
    fn only_runtime_and_network_readiness_make_the_node_not_ready() {
        let ready = [cond("RuntimeReady", true, "", ""), cond("NetworkReady", true, "", "")];
        assert_eq!(not_ready(Some(&ready), None), None);
        // containerd's deprecation condition (k/k #123148) is not a readiness condition.
        let deprecated =
            [ready[0].clone(), ready[1].clone(), cond("ContainerdHasNoDeprecationWarnings", false, "X", "y")];
        assert_eq!(not_ready(Some(&deprecated), None), None);
        let no_net =
            [ready[0].clone(), cond("NetworkReady", false, "NetworkPluginNotReady", "cni plugin not initialized")];
        assert_eq!(
            not_ready(Some(&no_net), None).as_deref(),
            Some(
                "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:cni plugin not initialized"
            )
        );
        assert_eq!(
            not_ready(Some(&[]), None).as_deref(),
            Some("[container runtime not ready: <nil>, container runtime network not ready: <nil>]")
        );
        assert_eq!(not_ready(None, None).as_deref(), Some("container runtime is down"));
        assert_eq!(
            not_ready(Some(&ready), Some(Duration::from_secs(185))).as_deref(),
            Some("PLEG is not healthy: pleg was last seen active 3m5s ago; threshold is 3m0s")
        );
    }

    fn node_cond(type_: &str, status: &str) -> NodeCondition {
        NodeCondition { type_: type_.into(), status: status.into(), ..Default::default() }
    }

    #[test]
    fn condition_events_follow_upstreams_setters() {
        let fresh = [
            node_cond("MemoryPressure", "False"),
            node_cond("DiskPressure", "False"),
            node_cond("PIDPressure", "False"),
            node_cond("Ready", "True"),
        ];
        // A new node: the pressure conditions are new; Ready has nothing to flip from.
        assert_eq!(
            condition_events(&[], &fresh),
            ["NodeHasSufficientMemory", "NodeHasNoDiskPressure", "NodeHasSufficientPID"]
        );
        assert!(condition_events(&fresh, &fresh).is_empty());
        let mut worse = fresh.clone();
        worse[0].status = "True".into();
        worse[3].status = "False".into();
        assert_eq!(condition_events(&fresh, &worse), ["NodeHasInsufficientMemory", "NodeNotReady"]);
        assert_eq!(condition_events(&worse, &fresh), ["NodeHasSufficientMemory", "NodeReady"]);
        // The node controller's Unknown (lease expired) back to True is a transition too.
        let mut unknown = fresh.clone();
        unknown[3].status = "Unknown".into();
        assert_eq!(condition_events(&unknown, &fresh), ["NodeReady"]);
    }

    #[test]
    fn runtime_handlers_and_features_are_reported_and_left_out_when_none() {
        use crate::cri::api;
        let cfg = Config::from_kubelet_config(&KubeletConfiguration::default(), id()).unwrap();
        let m = Machine { cpus: 2, memory_bytes: 1 << 30, storage_bytes: 1 << 30, ..Default::default() };
        let none = compute_status(&cfg, &m, &Health::default(), Vec::new());
        assert_eq!((none.runtime_handlers, none.features), (None, None), "containerd 1.6 reports none");
        let handlers = crate::cri::RuntimeHandlers {
            handlers: vec![
                api::RuntimeHandler {
                    name: String::new(),
                    features: Some(api::RuntimeHandlerFeatures {
                        recursive_read_only_mounts: true,
                        user_namespaces: false,
                    }),
                },
                api::RuntimeHandler { name: "kata".into(), features: None },
            ],
            features: Some(api::RuntimeFeatures { supplemental_groups_policy: true }),
        };
        let s = compute_status(&cfg, &m, &Health { handlers, ..Default::default() }, Vec::new());
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(
            json["runtimeHandlers"],
            serde_json::json!([
                {"name": "", "features": {"recursiveReadOnlyMounts": true, "userNamespaces": false}},
                {"name": "kata", "features": {"recursiveReadOnlyMounts": false, "userNamespaces": false}}
            ])
        );
        assert_eq!(json["features"], serde_json::json!({"supplementalGroupsPolicy": true}));
    }

    #[tokio::test]
    async fn the_node_says_the_controller_manages_attach_detach_when_enabled() {
        let fake = crate::api::fake::FakeApi::new();
        let api: DynApi = std::sync::Arc::new(fake.clone());
        let mut cfg = Config::from_kubelet_config(&KubeletConfiguration::default(), id()).unwrap();
        assert!(cfg.controller_attach_detach, "enableControllerAttachDetach defaults to true");
        let annotation = || {
            fake.node("n1")
                .unwrap()
                .metadata
                .annotations
                .unwrap_or_default()
                .get(CONTROLLER_MANAGED_ATTACH_DETACH)
                .cloned()
        };
        register(&cfg, &api).await.unwrap();
        assert_eq!(annotation().as_deref(), Some("true"));
        // An existing Node is brought in line with the configuration both ways.
        cfg.controller_attach_detach = false;
        register(&cfg, &api).await.unwrap();
        assert_eq!(annotation(), None);
        cfg.controller_attach_detach = true;
        register(&cfg, &api).await.unwrap();
        assert_eq!(annotation().as_deref(), Some("true"));
    }
}
