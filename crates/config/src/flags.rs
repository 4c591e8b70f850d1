//! Command-line flags: every flag of the Go kubelet's `--help` (cmd/kubelet/app/options:
//! KubeletFlags.AddFlags, AddKubeletConfigFlags, the container runtime options, the logging
//! flags and the cAdvisor flags it registers), with upstream's value syntaxes. Every flag is
//! optional: a flag that is given overrides the configuration file, one that is not leaves the
//! file's value alone. Flag-only settings end up in `NodeOptions` (`apply.rs`); which flags are
//! deprecated or not acted on is in `notes.rs`.
//!
//! Both `--flag=value` and `--flag value` are accepted (booleans only as `--flag` or
//! `--flag=false`, as pflag), `-v=2`, `-v 2` and `--v=2` alike; a scalar flag given twice keeps
//! the last value, map and list flags add up.

mod apply;
mod notes;
pub mod values;

use std::path::PathBuf;

use clap::{ArgAction, CommandFactory, FromArgMatches, Parser};

pub use apply::{DEFAULT_ROOT_DIR, NodeOptions};
pub use notes::{FlagNote, Parsed};

use crate::duration::Duration;
use crate::quantity::Quantity;
use values::{Gates, Pairs, Reservations, Resources, Taints, VModule};

/// Errors in flag values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagsError {
    #[error("node name is empty: set --hostname-override or the host name")]
    EmptyNodeName,
}

/// The kubelet's command line.
#[derive(Debug, Clone, Default, PartialEq, Parser)]
#[command(name = "kubelet", about = "The Kubernetes node agent", version, args_override_self = true)]
pub struct Flags {
    /// KubeletConfiguration file (YAML or JSON); flags given here override its values.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Directory of KubeletConfiguration drop-ins merged over --config.
    #[arg(long)]
    pub config_dir: Option<PathBuf>,
    /// kubeconfig for the API server; without it the kubelet runs standalone.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// kubeconfig used to get a client certificate when --kubeconfig does not exist yet.
    #[arg(long)]
    pub bootstrap_kubeconfig: Option<PathBuf>,
    /// Node name to use instead of the host name.
    #[arg(long)]
    pub hostname_override: Option<String>,
    /// Node IP address, or an IPv4 and an IPv6 address comma-separated (dual stack); '::'
    /// prefers the host's IPv6 address.
    #[arg(long)]
    pub node_ip: Option<String>,
    /// Directory of the kubelet's certificates. [default: <root-dir>/pki]
    #[arg(long)]
    pub cert_dir: Option<PathBuf>,
    /// "" or "external" (the node waits for a cloud controller manager to initialize it).
    #[arg(long)]
    pub cloud_provider: Option<String>,
    /// Directory for kubelet state. [default: /var/lib/kubelet]
    #[arg(long)]
    pub root_dir: Option<PathBuf>,
    /// Labels added when registering the node: key=value,key2=value2.
    #[arg(long, value_parser = values::map, action = ArgAction::Append)]
    pub node_labels: Option<Vec<Pairs>>,
    /// Cloud provider ID of the node, set as spec.providerID (providerID).
    #[arg(long)]
    pub provider_id: Option<String>,
    /// File the kubelet holds an exclusive lock on while it runs.
    #[arg(long)]
    pub lock_file: Option<PathBuf>,
    /// Exit when another process opens --lock-file.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = values::go_bool)]
    pub exit_on_lock_contention: Option<bool>,
    /// Image credential provider plugin config file (CredentialProviderConfig).
    #[arg(long)]
    pub image_credential_provider_config: Option<PathBuf>,
    /// Directory of the image credential provider plugin binaries.
    #[arg(long)]
    pub image_credential_provider_bin_dir: Option<PathBuf>,
    /// Cgroup of the container runtime.
    #[arg(long)]
    pub runtime_cgroups: Option<String>,

    /// Log verbosity (logging.verbosity).
    #[arg(short = 'v', long = "v", help_heading = "Logging")]
    pub verbosity: Option<u32>,
    /// Per-module verbosity, 'pattern=N,...' (logging.vmodule).
    #[arg(long, value_parser = values::vmodule, help_heading = "Logging")]
    pub vmodule: Option<VModule>,
    /// Maximum time between log flushes (logging.flushFrequency).
    #[arg(long, help_heading = "Logging")]
    pub log_flush_frequency: Option<Duration>,

    /// Serve the kubelet API (enableServer).
    #[arg(long, help_heading = "Deprecated: set in the --config file (server)", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = values::go_bool)]
    pub enable_server: Option<bool>,
    /// Kubelet API address (address).
    #[arg(long, help_heading = "Deprecated: set in the --config file (server)", value_parser = values::ip)]
    pub address: Option<String>,
    /// Kubelet API port (port).
    #[arg(long, help_heading = "Deprecated: set in the --config file (server)")]
    pub port: Option<i32>,
    /// Unauthenticated read-only port, 0 disables it (readOnlyPort).
    #[arg(long, help_heading = "Deprecated: set in the --config file (server)")]
    pub read_only_port: Option<i32>,
    /// Localhost healthz port, 0 disables it (healthzPort).
    #[arg(long, help_heading = "Deprecated: set in the --config file (server)")]
    pub healthz_port: Option<i32>,
    /// Healthz server address (healthzBindAddress).
    #[arg(long, help_heading = "Deprecated: set in the --config file (server)", value_parser = values::ip)]
    pub healthz_bind_address: Option<String>,
    /// Serving certificate (tlsCertFile).
    #[arg(long, help_heading = "Deprecated: set in the --config file (server)")]
    pub tls_cert_file: Option<String>,
    /// Serving key (tlsPrivateKeyFile).
    #[arg(long, help_heading = "Deprecated: set in the --config file (server)")]
    pub tls_private_key_file: Option<String>,
    /// Allowed cipher suites, comma-separated Go names (tlsCipherSuites).
    #[arg(long, help_heading = "Deprecated: set in the --config file (server)", value_delimiter = ',')]
    pub tls_cipher_suites: Option<Vec<String>>,
    /// Minimum TLS version, e.g. VersionTLS12 (tlsMinVersion).
    #[arg(long, help_heading = "Deprecated: set in the --config file (server)")]
    pub tls_min_version: Option<String>,
    /// Rotate the client certificate (rotateCertificates).
    #[arg(long, help_heading = "Deprecated: set in the --config file (server)", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = values::go_bool)]
    pub rotate_certificates: Option<bool>,
    /// Request and rotate the serving certificate (serverTLSBootstrap).
    #[arg(long, help_heading = "Deprecated: set in the --config file (server)", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = values::go_bool)]
    pub rotate_server_certificates: Option<bool>,
    /// Allow anonymous requests (authentication.anonymous.enabled).
    #[arg(long, help_heading = "Deprecated: set in the --config file (server)", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = values::go_bool)]
    pub anonymous_auth: Option<bool>,
    /// Check bearer tokens with TokenReview (authentication.webhook.enabled).
    #[arg(long, help_heading = "Deprecated: set in the --config file (server)", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = values::go_bool)]
    pub authentication_token_webhook: Option<bool>,
    /// TokenReview cache TTL (authentication.webhook.cacheTTL).
    #[arg(long, help_heading = "Deprecated: set in the --config file (server)")]
    pub authentication_token_webhook_cache_ttl: Option<Duration>,
    /// CA bundle for client certificates (authentication.x509.clientCAFile).
    #[arg(long, help_heading = "Deprecated: set in the --config file (server)")]
    pub client_ca_file: Option<String>,
    /// AlwaysAllow or Webhook (authorization.mode).
    #[arg(long, help_heading = "Deprecated: set in the --config file (server)")]
    pub authorization_mode: Option<String>,
    /// Cache TTL of allowed answers (authorization.webhook.cacheAuthorizedTTL).
    #[arg(long, help_heading = "Deprecated: set in the --config file (server)")]
    pub authorization_webhook_cache_authorized_ttl: Option<Duration>,
    /// Cache TTL of denied answers (authorization.webhook.cacheUnauthorizedTTL).
    #[arg(long, help_heading = "Deprecated: set in the --config file (server)")]
    pub authorization_webhook_cache_unauthorized_ttl: Option<Duration>,
    /// Serve logs, exec, attach, port-forward (enableDebuggingHandlers).
    #[arg(long, help_heading = "Deprecated: set in the --config file (server)", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = values::go_bool)]
    pub enable_debugging_handlers: Option<bool>,
    /// Block profiling (enableContentionProfiling).
    #[arg(long, help_heading = "Deprecated: set in the --config file (server)", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = values::go_bool)]
    pub contention_profiling: Option<bool>,
    /// Idle timeout of streaming connections (streamingConnectionIdleTimeout).
    #[arg(long, help_heading = "Deprecated: set in the --config file (server)")]
    pub streaming_connection_idle_timeout: Option<Duration>,
    /// CRI runtime endpoint (containerRuntimeEndpoint).
    #[arg(long, help_heading = "Deprecated: set in the --config file (pods and runtime)")]
    pub container_runtime_endpoint: Option<String>,
    /// CRI image endpoint (imageServiceEndpoint).
    #[arg(long, help_heading = "Deprecated: set in the --config file (pods and runtime)")]
    pub image_service_endpoint: Option<String>,
    /// Timeout of runtime requests, e.g. 2m0s (runtimeRequestTimeout).
    #[arg(long, help_heading = "Deprecated: set in the --config file (pods and runtime)")]
    pub runtime_request_timeout: Option<Duration>,
    /// Static pod directory or file (staticPodPath).
    #[arg(long, help_heading = "Deprecated: set in the --config file (pods and runtime)")]
    pub pod_manifest_path: Option<String>,
    /// URL serving static pods (staticPodURL).
    #[arg(long, help_heading = "Deprecated: set in the --config file (pods and runtime)")]
    pub manifest_url: Option<String>,
    /// Headers for --manifest-url, 'a:hello,b:again'; repeatable (staticPodURLHeader).
    #[arg(long, help_heading = "Deprecated: set in the --config file (pods and runtime)", value_parser = values::colon_multimap, action = ArgAction::Append)]
    pub manifest_url_header: Option<Vec<Pairs>>,
    /// Max period between syncs (syncFrequency).
    #[arg(long, help_heading = "Deprecated: set in the --config file (pods and runtime)")]
    pub sync_frequency: Option<Duration>,
    /// Period of static pod path checks (fileCheckFrequency).
    #[arg(long, help_heading = "Deprecated: set in the --config file (pods and runtime)")]
    pub file_check_frequency: Option<Duration>,
    /// Period of static pod URL checks (httpCheckFrequency).
    #[arg(long, help_heading = "Deprecated: set in the --config file (pods and runtime)")]
    pub http_check_frequency: Option<Duration>,
    /// Maximum pods on this node (maxPods).
    #[arg(long, help_heading = "Deprecated: set in the --config file (pods and runtime)")]
    pub max_pods: Option<i32>,
    /// Maximum pods per core, 0 for no limit (podsPerCore).
    #[arg(long, help_heading = "Deprecated: set in the --config file (pods and runtime)")]
    pub pods_per_core: Option<i32>,
    /// Maximum PIDs per pod, -1 for the node's (podPidsLimit).
    #[arg(long, help_heading = "Deprecated: set in the --config file (pods and runtime)")]
    pub pod_max_pids: Option<i64>,
    /// Pod CIDR in standalone mode (podCIDR).
    #[arg(long, help_heading = "Deprecated: set in the --config file (pods and runtime)")]
    pub pod_cidr: Option<String>,
    /// Cluster DNS domain (clusterDomain).
    #[arg(long, help_heading = "Deprecated: set in the --config file (pods and runtime)")]
    pub cluster_domain: Option<String>,
    /// Cluster DNS server IPs, comma-separated (clusterDNS).
    #[arg(long, help_heading = "Deprecated: set in the --config file (pods and runtime)", value_delimiter = ',')]
    pub cluster_dns: Option<Vec<String>>,
    /// Resolver config for pod DNS (resolvConf).
    #[arg(long, help_heading = "Deprecated: set in the --config file (pods and runtime)")]
    pub resolv_conf: Option<String>,
    /// promiscuous-bridge, hairpin-veth or none (hairpinMode).
    #[arg(long, help_heading = "Deprecated: set in the --config file (pods and runtime)")]
    pub hairpin_mode: Option<String>,
    /// Pull one image at a time (serializeImagePulls).
    #[arg(long, help_heading = "Deprecated: set in the --config file (pods and runtime)", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = values::go_bool)]
    pub serialize_image_pulls: Option<bool>,
    /// Registry pulls per second, 0 for no limit (registryPullQPS).
    #[arg(long, help_heading = "Deprecated: set in the --config file (pods and runtime)")]
    pub registry_qps: Option<i32>,
    /// Burst of registry pulls (registryBurst).
    #[arg(long, help_heading = "Deprecated: set in the --config file (pods and runtime)")]
    pub registry_burst: Option<i32>,
    /// Event creations per second (eventRecordQPS).
    #[arg(long, help_heading = "Deprecated: set in the --config file (pods and runtime)")]
    pub event_qps: Option<i32>,
    /// Burst of event creations (eventBurst).
    #[arg(long, help_heading = "Deprecated: set in the --config file (pods and runtime)")]
    pub event_burst: Option<i32>,
    /// Content type of API requests (contentType).
    #[arg(long, help_heading = "Deprecated: set in the --config file (pods and runtime)")]
    pub kube_api_content_type: Option<String>,
    /// API requests per second (kubeAPIQPS).
    #[arg(long, help_heading = "Deprecated: set in the --config file (pods and runtime)")]
    pub kube_api_qps: Option<i32>,
    /// Burst of API requests (kubeAPIBurst).
    #[arg(long, help_heading = "Deprecated: set in the --config file (pods and runtime)")]
    pub kube_api_burst: Option<i32>,
    /// Container log size that triggers rotation, e.g. 10Mi (containerLogMaxSize).
    #[arg(long, help_heading = "Deprecated: set in the --config file (pods and runtime)")]
    pub container_log_max_size: Option<Quantity>,
    /// Log files kept per container (containerLogMaxFiles).
    #[arg(long, help_heading = "Deprecated: set in the --config file (pods and runtime)")]
    pub container_log_max_files: Option<i32>,
    /// Minimum age of an unused image before GC (imageMinimumGCAge).
    #[arg(long, help_heading = "Deprecated: set in the --config file (pods and runtime)")]
    pub minimum_image_ttl_duration: Option<Duration>,
    /// Disk usage percent that always triggers image GC (imageGCHighThresholdPercent).
    #[arg(long, help_heading = "Deprecated: set in the --config file (pods and runtime)")]
    pub image_gc_high_threshold: Option<i32>,
    /// Disk usage percent image GC frees down to (imageGCLowThresholdPercent).
    #[arg(long, help_heading = "Deprecated: set in the --config file (pods and runtime)")]
    pub image_gc_low_threshold: Option<i32>,
    /// Period of volume usage collection (volumeStatsAggPeriod).
    #[arg(long, help_heading = "Deprecated: set in the --config file (pods and runtime)")]
    pub volume_stats_agg_period: Option<Duration>,
    /// Flexvolume plugin directory (volumePluginDir).
    #[arg(long, help_heading = "Deprecated: set in the --config file (pods and runtime)")]
    pub volume_plugin_dir: Option<String>,
    /// Let the attach/detach controller manage volumes (enableControllerAttachDetach).
    #[arg(long, help_heading = "Deprecated: set in the --config file (pods and runtime)", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = values::go_bool)]
    pub enable_controller_attach_detach: Option<bool>,
    /// Unsafe sysctls or prefix* patterns pods may set (allowedUnsafeSysctls).
    #[arg(long, help_heading = "Deprecated: set in the --config file (pods and runtime)", value_delimiter = ',')]
    pub allowed_unsafe_sysctls: Option<Vec<String>>,
    /// RuntimeDefault seccomp profile by default (seccompDefault).
    #[arg(long, help_heading = "Deprecated: set in the --config file (pods and runtime)", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = values::go_bool)]
    pub seccomp_default: Option<bool>,
    /// Run static pods once and exit; refused by validation (runOnce).
    #[arg(long = "runonce", help_heading = "Deprecated: set in the --config file (pods and runtime)", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = values::go_bool)]
    pub run_once: Option<bool>,
    /// Register the node with the API server (registerNode).
    #[arg(long, help_heading = "Deprecated: set in the --config file (node)", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = values::go_bool)]
    pub register_node: Option<bool>,
    /// Taints at registration, 'key=value:Effect,...' (registerWithTaints).
    #[arg(long, help_heading = "Deprecated: set in the --config file (node)", value_parser = values::taints)]
    pub register_with_taints: Option<Taints>,
    /// How often node status is computed (nodeStatusUpdateFrequency).
    #[arg(long, help_heading = "Deprecated: set in the --config file (node)")]
    pub node_status_update_frequency: Option<Duration>,
    /// Images in node status, -1 for all (nodeStatusMaxImages).
    #[arg(long, help_heading = "Deprecated: set in the --config file (node)")]
    pub node_status_max_images: Option<i32>,
    /// Refuse to start with swap on (failSwapOn).
    #[arg(long, help_heading = "Deprecated: set in the --config file (node)", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = values::go_bool)]
    pub fail_swap_on: Option<bool>,
    /// Refuse to start on cgroup v1 (failCgroupV1).
    #[arg(long, help_heading = "Deprecated: set in the --config file (node)", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = values::go_bool)]
    pub fail_cgroupv1: Option<bool>,
    /// cgroupfs or systemd (cgroupDriver).
    #[arg(long, help_heading = "Deprecated: set in the --config file (node)")]
    pub cgroup_driver: Option<String>,
    /// Root cgroup for pods (cgroupRoot).
    #[arg(long, help_heading = "Deprecated: set in the --config file (node)")]
    pub cgroup_root: Option<String>,
    /// QoS cgroup hierarchy (cgroupsPerQOS).
    #[arg(long, help_heading = "Deprecated: set in the --config file (node)", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = values::go_bool)]
    pub cgroups_per_qos: Option<bool>,
    /// Cgroup of the kubelet (kubeletCgroups).
    #[arg(long, help_heading = "Deprecated: set in the --config file (node)")]
    pub kubelet_cgroups: Option<String>,
    /// Cgroup of non-kernel processes outside containers (systemCgroups).
    #[arg(long, help_heading = "Deprecated: set in the --config file (node)")]
    pub system_cgroups: Option<String>,
    /// Enforce CPU limits with CFS quota (cpuCFSQuota).
    #[arg(long, help_heading = "Deprecated: set in the --config file (node)", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = values::go_bool)]
    pub cpu_cfs_quota: Option<bool>,
    /// CFS quota period (cpuCFSQuotaPeriod).
    #[arg(long, help_heading = "Deprecated: set in the --config file (node)")]
    pub cpu_cfs_quota_period: Option<Duration>,
    /// none or static (cpuManagerPolicy).
    #[arg(long, help_heading = "Deprecated: set in the --config file (node)")]
    pub cpu_manager_policy: Option<String>,
    /// One key=value CPU manager option; repeatable (cpuManagerPolicyOptions).
    #[arg(long, help_heading = "Deprecated: set in the --config file (node)", value_parser = values::map_no_split, action = ArgAction::Append)]
    pub cpu_manager_policy_options: Option<Vec<Pairs>>,
    /// CPU manager reconcile period (cpuManagerReconcilePeriod).
    #[arg(long, help_heading = "Deprecated: set in the --config file (node)")]
    pub cpu_manager_reconcile_period: Option<Duration>,
    /// None or Static (memoryManagerPolicy).
    #[arg(long, help_heading = "Deprecated: set in the --config file (node)")]
    pub memory_manager_policy: Option<String>,
    /// NUMA reservations, '0:memory=1Gi,hugepages-1M=2Gi'; repeatable (reservedMemory).
    #[arg(long, help_heading = "Deprecated: set in the --config file (node)", value_parser = values::reserved_memory, action = ArgAction::Append)]
    pub reserved_memory: Option<Vec<Reservations>>,
    /// none, best-effort, restricted or single-numa-node (topologyManagerPolicy).
    #[arg(long, help_heading = "Deprecated: set in the --config file (node)")]
    pub topology_manager_policy: Option<String>,
    /// container or pod (topologyManagerScope).
    #[arg(long, help_heading = "Deprecated: set in the --config file (node)")]
    pub topology_manager_scope: Option<String>,
    /// One key=value topology manager option; repeatable (topologyManagerPolicyOptions).
    #[arg(long, help_heading = "Deprecated: set in the --config file (node)", value_parser = values::map_no_split, action = ArgAction::Append)]
    pub topology_manager_policy_options: Option<Vec<Pairs>>,
    /// Percent reserved per QoS, 'memory=50%' (qosReserved).
    #[arg(long, help_heading = "Deprecated: set in the --config file (node)", value_parser = values::map, action = ArgAction::Append)]
    pub qos_reserved: Option<Vec<Pairs>>,
    /// CPUs reserved for the system, e.g. 0-1 (reservedSystemCPUs).
    #[arg(long, help_heading = "Deprecated: set in the --config file (node)")]
    pub reserved_cpus: Option<String>,
    /// Resources for the OS, 'cpu=200m,memory=500Mi' (systemReserved).
    #[arg(long, help_heading = "Deprecated: set in the --config file (node)", value_parser = values::resources, action = ArgAction::Append)]
    pub system_reserved: Option<Vec<Resources>>,
    /// Resources for Kubernetes daemons (kubeReserved).
    #[arg(long, help_heading = "Deprecated: set in the --config file (node)", value_parser = values::resources, action = ArgAction::Append)]
    pub kube_reserved: Option<Vec<Resources>>,
    /// Cgroup enforcing systemReserved (systemReservedCgroup).
    #[arg(long, help_heading = "Deprecated: set in the --config file (node)")]
    pub system_reserved_cgroup: Option<String>,
    /// Cgroup enforcing kubeReserved (kubeReservedCgroup).
    #[arg(long, help_heading = "Deprecated: set in the --config file (node)")]
    pub kube_reserved_cgroup: Option<String>,
    /// Allocatable enforcement levels, comma-separated (enforceNodeAllocatable).
    #[arg(long, help_heading = "Deprecated: set in the --config file (node)", value_delimiter = ',')]
    pub enforce_node_allocatable: Option<Vec<String>>,
    /// Hard eviction thresholds, 'memory.available<100Mi,...' (evictionHard).
    #[arg(long, help_heading = "Deprecated: set in the --config file (node)", value_parser = values::langle_map, action = ArgAction::Append)]
    pub eviction_hard: Option<Vec<Pairs>>,
    /// Soft eviction thresholds (evictionSoft).
    #[arg(long, help_heading = "Deprecated: set in the --config file (node)", value_parser = values::langle_map, action = ArgAction::Append)]
    pub eviction_soft: Option<Vec<Pairs>>,
    /// Grace periods of soft thresholds, 'memory.available=1m30s' (evictionSoftGracePeriod).
    #[arg(long, help_heading = "Deprecated: set in the --config file (node)", value_parser = values::map, action = ArgAction::Append)]
    pub eviction_soft_grace_period: Option<Vec<Pairs>>,
    /// Wait before leaving a pressure condition (evictionPressureTransitionPeriod).
    #[arg(long, help_heading = "Deprecated: set in the --config file (node)")]
    pub eviction_pressure_transition_period: Option<Duration>,
    /// Maximum grace period of soft evictions, seconds (evictionMaxPodGracePeriod).
    #[arg(long, help_heading = "Deprecated: set in the --config file (node)")]
    pub eviction_max_pod_grace_period: Option<i32>,
    /// Minimum reclaims, 'imagefs.available=2Gi' (evictionMinimumReclaim).
    #[arg(long, help_heading = "Deprecated: set in the --config file (node)", value_parser = values::map, action = ArgAction::Append)]
    pub eviction_minimum_reclaim: Option<Vec<Pairs>>,
    /// Memcg notifications for memory eviction (kernelMemcgNotification).
    #[arg(long, help_heading = "Deprecated: set in the --config file (node)", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = values::go_bool)]
    pub kernel_memcg_notification: Option<bool>,
    /// Local ephemeral storage isolation (localStorageCapacityIsolation).
    #[arg(long, help_heading = "Deprecated: set in the --config file (node)", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = values::go_bool)]
    pub local_storage_capacity_isolation: Option<bool>,
    /// Fail instead of changing kernel tunables (protectKernelDefaults).
    #[arg(long, help_heading = "Deprecated: set in the --config file (node)", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = values::go_bool)]
    pub protect_kernel_defaults: Option<bool>,
    /// Create the iptables hint chain (makeIPTablesUtilChains).
    #[arg(long, help_heading = "Deprecated: set in the --config file (node)", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = values::go_bool)]
    pub make_iptables_util_chains: Option<bool>,
    /// No effect (iptablesMasqueradeBit).
    #[arg(long, help_heading = "Deprecated: set in the --config file (node)")]
    pub iptables_masquerade_bit: Option<i32>,
    /// No effect (iptablesDropBit).
    #[arg(long, help_heading = "Deprecated: set in the --config file (node)")]
    pub iptables_drop_bit: Option<i32>,
    /// oom_score_adj of the kubelet, -1000..1000 (oomScoreAdj).
    #[arg(long, help_heading = "Deprecated: set in the --config file (node)")]
    pub oom_score_adj: Option<i32>,
    /// Open file limit of the kubelet (maxOpenFiles).
    #[arg(long, help_heading = "Deprecated: set in the --config file (node)")]
    pub max_open_files: Option<i64>,
    /// Feature gates, 'A=true,B=false'; merged over the file's (featureGates).
    #[arg(long, help_heading = "Deprecated: set in the --config file (node)", value_parser = values::feature_gates, action = ArgAction::Append)]
    pub feature_gates: Option<Vec<Gates>>,
    /// text or json (logging.format).
    #[arg(long, help_heading = "Deprecated: set in the --config file (logging)")]
    pub logging_format: Option<String>,
    /// Info to stdout, errors to stderr, text format (logging.options.text.splitStream).
    #[arg(long, help_heading = "Deprecated: set in the --config file (logging)", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = values::go_bool)]
    pub log_text_split_stream: Option<bool>,
    /// Info buffer with split streams, text format (logging.options.text.infoBufferSize).
    #[arg(long, help_heading = "Deprecated: set in the --config file (logging)")]
    pub log_text_info_buffer_size: Option<Quantity>,
    /// Info to stdout, errors to stderr, JSON format (logging.options.json.splitStream).
    #[arg(long, help_heading = "Deprecated: set in the --config file (logging)", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = values::go_bool)]
    pub log_json_split_stream: Option<bool>,
    /// Info buffer with split streams, JSON format (logging.options.json.infoBufferSize).
    #[arg(long, help_heading = "Deprecated: set in the --config file (logging)")]
    pub log_json_info_buffer_size: Option<Quantity>,

    /// Deprecated: the sandbox image is configured in the runtime; image GC keeps this image.
    #[arg(long, help_heading = "Deprecated")]
    pub pod_infra_container_image: Option<String>,
    #[arg(long, help_heading = "Deprecated")]
    pub minimum_container_ttl_duration: Option<Duration>,
    #[arg(long, help_heading = "Deprecated")]
    pub maximum_dead_containers_per_container: Option<i32>,
    #[arg(long, help_heading = "Deprecated")]
    pub maximum_dead_containers: Option<i32>,
    #[arg(long, help_heading = "Deprecated", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = values::go_bool)]
    pub register_schedulable: Option<bool>,
    #[arg(long, help_heading = "Deprecated", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = values::go_bool)]
    pub keep_terminated_pod_volumes: Option<bool>,
    #[arg(long, help_heading = "Deprecated")]
    pub experimental_mounter_path: Option<String>,
    #[arg(long, help_heading = "Deprecated")]
    pub cloud_config: Option<String>,
    #[arg(long, help_heading = "Deprecated", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = values::go_bool)]
    pub experimental_allocatable_ignore_eviction: Option<bool>,

    /// Tests only (hidden): run eviction monitoring, image GC and container GC every this
    /// period instead of upstream's 10 s / 5 min / 1 min.
    #[arg(long, hide = true)]
    pub housekeeping_period_for_tests: Option<Duration>,
    /// Tests only (hidden): systemd's run directory for the systemd cgroup driver
    /// (`<dir>/system` marks systemd running, `<dir>/bus` is the D-Bus bus systemd is on)
    /// instead of /run/systemd/system and the system bus.
    #[arg(long, hide = true)]
    pub systemd_dir_for_tests: Option<PathBuf>,
    /// This kubelet's own (upstream hard-codes 1 s): the PLEG relist period while the runtime
    /// sends no container events.
    #[arg(long, help_heading = "This kubelet's own")]
    pub pleg_relist_period: Option<Duration>,
    /// This kubelet's own (upstream's Evented PLEG hard-codes 300 s): the backstop relist period
    /// while container events flow.
    #[arg(long, help_heading = "This kubelet's own")]
    pub pleg_relist_period_with_events: Option<Duration>,
}

impl Flags {
    /// The command with every flag, the cAdvisor ones included (`notes::cadvisor_args`).
    pub fn full_command() -> clap::Command {
        <Flags as CommandFactory>::command().args(notes::cadvisor_args())
    }

    /// Parses a command line (the program name first) and notes which flags were given.
    pub fn parse_args<I, T>(args: I) -> Result<Parsed, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let command = Self::full_command();
        let matches = command.clone().try_get_matches_from(args)?;
        let flags = Flags::from_arg_matches(&matches)?;
        Ok(Parsed { flags, given: notes::given(&command, &matches) })
    }

    /// `parse_args` over the process's arguments; exits with clap's message on an error (and
    /// for --help / --version).
    pub fn parse_env() -> Parsed {
        Self::parse_args(std::env::args_os()).unwrap_or_else(|e| e.exit())
    }
}

#[cfg(test)]
mod tests;
