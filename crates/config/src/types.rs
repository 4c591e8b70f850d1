//! `KubeletConfiguration` (kubelet.config.k8s.io/v1beta1) with the upstream field names.
//!
//! Fields that are pointers upstream (`*bool`, `*int32`) are plain values here: a missing field
//! takes the upstream default, an explicit value (even `false` or `0`) is kept. Fields that are
//! plain values upstream treat their zero value as "unset", exactly as upstream defaulting does
//! (see `defaults.rs`). Defaults are noted as "Default: …" on each field.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::quantity::Quantity;
use crate::scalar;
use crate::sections::*;

/// The only accepted `apiVersion`.
pub const API_VERSION: &str = "kubelet.config.k8s.io/v1beta1";
/// The only accepted `kind`.
pub const KIND: &str = "KubeletConfiguration";

/// The kubelet's configuration file, with upstream v1beta1 defaults applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeletConfiguration {
    /// Must be `kubelet.config.k8s.io/v1beta1`.
    pub api_version: String,
    /// Must be `KubeletConfiguration`.
    pub kind: String,

    /// Serve the secured kubelet API. Default: true.
    pub enable_server: bool,
    /// Directory (or single file) of static pod manifests. Default: "" (none).
    pub static_pod_path: String,
    /// Root of pod log directories. Default: /var/log/pods.
    pub pod_logs_dir: String,
    /// Max period between syncs of running containers and config. Default: 1m.
    pub sync_frequency: Duration,
    /// Period between checks of the static pod path. Default: 20s.
    pub file_check_frequency: Duration,
    /// Period between checks of the static pod URL. Default: 20s.
    pub http_check_frequency: Duration,
    /// URL serving static pods. Default: "".
    #[serde(rename = "staticPodURL")]
    pub static_pod_url: String,
    /// HTTP headers sent with staticPodURL requests. Default: none.
    #[serde(rename = "staticPodURLHeader")]
    pub static_pod_url_header: BTreeMap<String, Vec<String>>,
    /// Address the kubelet API serves on. Default: 0.0.0.0.
    pub address: String,
    /// Port of the kubelet API (1..65535). Default: 10250.
    pub port: i32,
    /// Unauthenticated read-only port; 0 disables it. Default: 0 (the flag's default is 10255).
    pub read_only_port: i32,
    /// Serving certificate. Default: "" (self-signed under the cert dir).
    pub tls_cert_file: String,
    /// Serving key. Default: "".
    pub tls_private_key_file: String,
    /// Allowed TLS cipher suites (Go names). Default: none (Go's defaults).
    pub tls_cipher_suites: Vec<String>,
    /// Allowed key exchange curves (Go CurveID numbers). Default: none.
    pub tls_curve_preferences: Vec<i32>,
    /// Minimum TLS version (`VersionTLS12`, `VersionTLS13`, …). Default: "".
    pub tls_min_version: String,
    /// Rotate the client certificate through the certificates API. Default: false.
    pub rotate_certificates: bool,
    /// Request the serving certificate through the certificates API. Default: false.
    #[serde(rename = "serverTLSBootstrap")]
    pub server_tls_bootstrap: bool,
    pub authentication: KubeletAuthentication,
    pub authorization: KubeletAuthorization,
    /// Registry pulls per second; 0 means unlimited. Default: 5.
    #[serde(rename = "registryPullQPS")]
    pub registry_pull_qps: i32,
    /// Burst of registry pulls. Default: 10.
    pub registry_burst: i32,
    /// Credential re-check for images already on the node. Default: "" (`NeverVerifyPreloadedImages`
    /// when the KubeletEnsureSecretPulledImages gate is on).
    pub image_pull_credentials_verification_policy: String,
    /// Images exempt from credential re-check under `NeverVerifyAllowlistedImages`. Default: none.
    pub preloaded_images_verification_allowlist: Vec<String>,
    /// Event creations per second; 0 means unlimited. Default: 50.
    #[serde(rename = "eventRecordQPS")]
    pub event_record_qps: i32,
    /// Burst of event creations. Default: 100.
    pub event_burst: i32,
    /// Serve exec, attach, logs and port-forward. Default: true.
    pub enable_debugging_handlers: bool,
    /// Block profiling (with debugging handlers). Default: false.
    pub enable_contention_profiling: bool,
    /// Localhost healthz port; 0 disables it. Default: 10248.
    pub healthz_port: i32,
    /// Address of the healthz server. Default: 127.0.0.1.
    pub healthz_bind_address: String,
    /// oom_score_adj of the kubelet process, -1000..1000. Default: -999.
    pub oom_score_adj: i32,
    /// Cluster DNS domain added to pod search paths. Default: "".
    pub cluster_domain: String,
    /// Cluster DNS server IPs for pods. Default: none (the host's resolvers).
    #[serde(rename = "clusterDNS")]
    pub cluster_dns: Vec<String>,
    /// Idle timeout of streaming connections (deprecated upstream). Default: 4h.
    pub streaming_connection_idle_timeout: Duration,
    /// How often node status is computed. Default: 10s.
    pub node_status_update_frequency: Duration,
    /// How often unchanged node status is posted. Default: 5m, or nodeStatusUpdateFrequency when
    /// that is set explicitly.
    pub node_status_report_frequency: Duration,
    /// Duration of the node Lease. Default: 40.
    pub node_lease_duration_seconds: i32,
    /// Minimum age of an unused image before GC. Default: 2m.
    #[serde(rename = "imageMinimumGCAge")]
    pub image_minimum_gc_age: Duration,
    /// Maximum unused age before GC; 0 disables it. Default: 0s.
    #[serde(rename = "imageMaximumGCAge")]
    pub image_maximum_gc_age: Duration,
    /// Disk usage percent that always triggers image GC. Default: 85.
    #[serde(rename = "imageGCHighThresholdPercent")]
    pub image_gc_high_threshold_percent: i32,
    /// Disk usage percent image GC frees down to. Default: 80.
    #[serde(rename = "imageGCLowThresholdPercent")]
    pub image_gc_low_threshold_percent: i32,
    /// Period of volume disk usage collection. Default: 1m.
    pub volume_stats_agg_period: Duration,
    /// Cgroup to isolate the kubelet in. Default: "".
    pub kubelet_cgroups: String,
    /// Cgroup for non-kernel processes outside containers (needs cgroupRoot). Default: "".
    pub system_cgroups: String,
    /// Root cgroup for pods. Default: "" (the runtime's choice; `/` in practice).
    pub cgroup_root: String,
    /// QoS-level cgroup hierarchy. Default: true.
    #[serde(rename = "cgroupsPerQOS")]
    pub cgroups_per_qos: bool,
    /// `cgroupfs` or `systemd`. Default: cgroupfs.
    pub cgroup_driver: String,
    /// `none` or `static`. Default: none.
    pub cpu_manager_policy: String,
    /// Kill container processes one by one on OOM instead of as a group. Default: unset (auto).
    #[serde(rename = "singleProcessOOMKill", skip_serializing_if = "Option::is_none")]
    pub single_process_oom_kill: Option<bool>,
    /// Extra cpu manager policy options. Default: none.
    #[serde(deserialize_with = "scalar::string_map")]
    pub cpu_manager_policy_options: BTreeMap<String, String>,
    /// Reconcile period of the cpu manager. Default: 10s.
    pub cpu_manager_reconcile_period: Duration,
    /// Reconcile period of the DRA manager. Default: 60s.
    #[serde(rename = "draManagerReconcilePeriod")]
    pub dra_manager_reconcile_period: Duration,
    /// `None` or `Static`. Default: None.
    pub memory_manager_policy: String,
    /// `none`, `best-effort`, `restricted` or `single-numa-node`. Default: none.
    pub topology_manager_policy: String,
    /// `container` or `pod`. Default: container.
    pub topology_manager_scope: String,
    /// Extra topology manager policy options. Default: none.
    #[serde(deserialize_with = "scalar::string_map")]
    pub topology_manager_policy_options: BTreeMap<String, String>,
    /// Percent of a resource reserved for Guaranteed pods (`memory: 50%`). Default: none.
    #[serde(rename = "qosReserved", deserialize_with = "scalar::string_map")]
    pub qos_reserved: BTreeMap<String, String>,
    /// Timeout of runtime calls except pull, logs, exec and attach. Default: 2m.
    pub runtime_request_timeout: Duration,
    /// `promiscuous-bridge`, `hairpin-veth` or `none`. Default: promiscuous-bridge.
    pub hairpin_mode: String,
    /// Maximum pods on this node. Default: 110.
    pub max_pods: i32,
    /// Pod CIDR in standalone mode. Default: "".
    #[serde(rename = "podCIDR")]
    pub pod_cidr: String,
    /// Maximum PIDs per pod; -1 means the node allocatable limit. Default: -1.
    pub pod_pids_limit: i64,
    /// Resolver config for pod DNS; "" disables DNS. Default: /etc/resolv.conf.
    pub resolv_conf: String,
    /// Run pods once and exit (rejected by validation, as upstream). Default: false.
    pub run_once: bool,
    /// Enforce CPU limits with CFS quota. Default: true.
    #[serde(rename = "cpuCFSQuota")]
    pub cpu_cfs_quota: bool,
    /// CFS quota period (needs CustomCPUCFSQuotaPeriod to change). Default: 100ms.
    #[serde(rename = "cpuCFSQuotaPeriod")]
    pub cpu_cfs_quota_period: Duration,
    /// Images reported in node status; -1 means no cap. Default: 50.
    pub node_status_max_images: i32,
    /// Open file limit of the kubelet process. Default: 1000000.
    pub max_open_files: i64,
    /// Content type of API requests. Default: application/vnd.kubernetes.protobuf.
    pub content_type: String,
    /// API requests per second. Default: 50.
    #[serde(rename = "kubeAPIQPS")]
    pub kube_api_qps: i32,
    /// Burst of API requests. Default: 100.
    #[serde(rename = "kubeAPIBurst")]
    pub kube_api_burst: i32,
    /// Pull one image at a time. Default: true, or false when maxParallelImagePulls >= 2.
    pub serialize_image_pulls: bool,
    /// Maximum parallel image pulls; unset means no limit. Default: unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_parallel_image_pulls: Option<i32>,
    /// Hard eviction thresholds, signal → quantity or percentage. Default: memory.available 100Mi,
    /// nodefs.available 10%, nodefs.inodesFree 5%, imagefs.available 15%. Setting it replaces the
    /// whole map unless mergeDefaultEvictionSettings is true.
    #[serde(deserialize_with = "scalar::string_map")]
    pub eviction_hard: BTreeMap<String, String>,
    /// Soft eviction thresholds. Default: none.
    #[serde(deserialize_with = "scalar::string_map")]
    pub eviction_soft: BTreeMap<String, String>,
    /// Grace period per soft threshold (Go durations). Default: none.
    #[serde(deserialize_with = "scalar::string_map")]
    pub eviction_soft_grace_period: BTreeMap<String, String>,
    /// Wait before leaving a pressure condition. Default: 5m.
    pub eviction_pressure_transition_period: Duration,
    /// Maximum pod grace period (seconds) for soft evictions. Default: 0.
    pub eviction_max_pod_grace_period: i32,
    /// Minimum amount reclaimed per eviction, signal → quantity or percentage. Default: none.
    #[serde(deserialize_with = "scalar::string_map")]
    pub eviction_minimum_reclaim: BTreeMap<String, String>,
    /// Merge the default evictionHard signals into a partial evictionHard. Default: false.
    pub merge_default_eviction_settings: bool,
    /// Maximum pods per core; 0 means no limit. Default: 0.
    pub pods_per_core: i32,
    /// Let the attach/detach controller handle this node's volumes. Default: true.
    pub enable_controller_attach_detach: bool,
    /// Fail instead of changing kernel tunables. Default: false.
    pub protect_kernel_defaults: bool,
    /// Create the KUBE-IPTABLES-HINT chain. Default: true.
    #[serde(rename = "makeIPTablesUtilChains")]
    pub make_iptables_util_chains: bool,
    /// Deprecated, no effect. Default: 14.
    pub iptables_masquerade_bit: i32,
    /// Deprecated, no effect. Default: 15.
    pub iptables_drop_bit: i32,
    /// Feature gates; any name is accepted here. Default: none.
    pub feature_gates: BTreeMap<String, bool>,
    /// Refuse to start when swap is on. Default: true.
    pub fail_swap_on: bool,
    pub memory_swap: MemorySwapConfiguration,
    /// Container log size that triggers rotation. Default: 10Mi.
    #[serde(deserialize_with = "crate::defaults::container_log_max_size")]
    pub container_log_max_size: Quantity,
    /// Rotated log files kept per container (>= 2). Default: 5.
    pub container_log_max_files: i32,
    /// Concurrent log rotation workers (>= 1). Default: 1.
    pub container_log_max_workers: i32,
    /// How often logs are checked for rotation (>= 3s). Default: 10s.
    pub container_log_monitor_interval: Duration,
    /// `Get`, `Cache` or `Watch`. Default: Watch.
    pub config_map_and_secret_change_detection_strategy: String,
    /// Resources reserved for the OS (`cpu`, `memory`, `ephemeral-storage`, `pid`). Default: none.
    pub system_reserved: BTreeMap<String, Quantity>,
    /// Resources reserved for Kubernetes daemons. Default: none.
    pub kube_reserved: BTreeMap<String, Quantity>,
    /// CPU list reserved for system and Kubernetes threads (`0-1`). Default: "".
    #[serde(rename = "reservedSystemCPUs", deserialize_with = "scalar::string")]
    pub reserved_system_cpus: String,
    /// Previous minor version whose hidden metrics are shown (`1.31`). Default: "".
    #[serde(deserialize_with = "scalar::string")]
    pub show_hidden_metrics_for_version: String,
    /// Cgroup enforcing systemReserved. Default: "".
    pub system_reserved_cgroup: String,
    /// Cgroup enforcing kubeReserved. Default: "".
    pub kube_reserved_cgroup: String,
    /// Allocatable enforcement: `pods`, `system-reserved[-compressible]`,
    /// `kube-reserved[-compressible]` or `none`. Default: [pods].
    pub enforce_node_allocatable: Vec<String>,
    /// Unsafe sysctls (or `prefix*` patterns) pods may set. Default: none.
    pub allowed_unsafe_sysctls: Vec<String>,
    /// Directory of flexvolume plugins. Default: /usr/libexec/kubernetes/kubelet-plugins/volume/exec/.
    pub volume_plugin_dir: String,
    /// Cloud provider ID of this node. Default: "".
    #[serde(rename = "providerID")]
    pub provider_id: String,
    /// Use memcg notifications for memory eviction. Default: false.
    pub kernel_memcg_notification: bool,
    pub logging: LoggingConfiguration,
    /// Serve /logs/. Default: true.
    pub enable_system_log_handler: bool,
    /// Node log query on /logs/ (needs NodeLogQuery). Default: false.
    pub enable_system_log_query: bool,
    /// Total delay of node shutdown for pod termination. Default: 0s.
    pub shutdown_grace_period: Duration,
    /// Part of shutdownGracePeriod kept for critical pods. Default: 0s.
    pub shutdown_grace_period_critical_pods: Duration,
    /// Shutdown grace period by pod priority (exclusive with the two above). Default: none.
    pub shutdown_grace_period_by_pod_priority: Vec<ShutdownGracePeriodByPodPriority>,
    pub crash_loop_back_off: CrashLoopBackOffConfig,
    /// Per-NUMA-node memory reservations for the memory manager. Default: none.
    pub reserved_memory: Vec<MemoryReservation>,
    /// Serve /debug/pprof/. Default: true.
    pub enable_profiling_handler: bool,
    /// Serve /debug/flags/v. Default: true.
    pub enable_debug_flags_handler: bool,
    /// RuntimeDefault seccomp profile for all pods. Default: false.
    pub seccomp_default: bool,
    /// Factor for cgroup v2 memory.high under MemoryQoS, (0, 1]. Default: 0.9.
    pub memory_throttling_factor: f64,
    /// `None` or `TieredReservation` (needs MemoryQoS). Default: None.
    pub memory_reservation_policy: String,
    /// Taints added when the node registers. Default: none.
    pub register_with_taints: Vec<Taint>,
    /// Register the Node object. Default: true.
    pub register_node: bool,
    /// OpenTelemetry tracing. Default: unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracing: Option<TracingConfiguration>,
    /// Local ephemeral storage isolation. Default: true.
    pub local_storage_capacity_isolation: bool,
    /// CRI runtime endpoint. Default: unix:///run/containerd/containerd.sock.
    pub container_runtime_endpoint: String,
    /// CRI image endpoint; "" means containerRuntimeEndpoint. Default: "".
    pub image_service_endpoint: String,
    /// Refuse to start on cgroup v1 hosts. Default: false.
    pub fail_cgroup_v1: bool,
    /// User namespace settings. Default: unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_namespaces: Option<UserNamespaces>,

    /// Seed extension (a removed kubelet flag, not an upstream config field): how long an image
    /// pull may make no progress before it is cancelled. Default: 1m (the old flag's default).
    pub image_pull_progress_deadline: Duration,
    /// Seed extension (the `--node-ip` flag, not an upstream config field): IP address(es) of
    /// the node, comma-separated for dual stack. Default: "" (detected).
    #[serde(rename = "nodeIP")]
    pub node_ip: String,
    /// Seed extension (not an upstream field): serve /metrics. Default: true.
    pub enable_metrics: bool,
    /// Seed extension (the removed `--cni-conf-dir` flag): CNI network config directory.
    /// Default: /etc/cni/net.d.
    pub cni_conf_dir: String,
    /// Seed extension (the removed `--cni-bin-dir` flag): CNI plugin binary directory.
    /// Default: /opt/cni/bin.
    pub cni_bin_dir: String,
}
