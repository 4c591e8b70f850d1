//! Upstream v1beta1 defaulting (pkg/kubelet/apis/config/v1beta1/defaults.go).
//!
//! Serde fills every missing field from `KubeletConfiguration::default()`. Upstream also treats
//! the zero value of non-pointer fields as unset (`port: 0` becomes 10250, `syncFrequency: 0s`
//! becomes 1m); `fill_unset` repeats that, plus the few defaults that depend on other fields or
//! on feature gates.

use std::collections::BTreeMap;

use serde::Deserializer;

use crate::duration::Duration;
use crate::features;
use crate::quantity::Quantity;
use crate::sections::*;
use crate::types::{API_VERSION, KIND, KubeletConfiguration};

/// Default hard eviction thresholds on Linux.
pub const DEFAULT_EVICTION_HARD: &[(&str, &str)] = &[
    ("imagefs.available", "15%"),
    ("memory.available", "100Mi"),
    ("nodefs.available", "10%"),
    ("nodefs.inodesFree", "5%"),
];
pub const DEFAULT_POD_LOGS_DIR: &str = "/var/log/pods";
pub const DEFAULT_VOLUME_PLUGIN_DIR: &str = "/usr/libexec/kubernetes/kubelet-plugins/volume/exec/";
pub const DEFAULT_CONTAINER_RUNTIME_ENDPOINT: &str = "unix:///run/containerd/containerd.sock";
/// Default of `crashLoopBackOff.maxContainerRestartPeriod` when its gate is on.
pub const MAX_CONTAINER_BACKOFF: Duration = Duration::from_secs(300);

fn default_container_log_max_size() -> Quantity {
    // A constant that parses (checked by the defaults tests); not outside input.
    #[allow(clippy::expect_used)]
    Quantity::parse("10Mi").expect("valid quantity")
}

/// `containerLogMaxSize: ""` means unset upstream; anything else must be a quantity.
pub(crate) fn container_log_max_size<'de, D: Deserializer<'de>>(d: D) -> Result<Quantity, D::Error> {
    let text = d.deserialize_any(crate::scalar::ScalarText)?;
    if text.is_empty() {
        return Ok(default_container_log_max_size());
    }
    Quantity::parse(&text).map_err(serde::de::Error::custom)
}

/// Whether a value is its type's zero value (Go's "unset" for non-pointer fields).
trait Zero {
    fn is_zero_value(&self) -> bool;
}
impl Zero for String {
    fn is_zero_value(&self) -> bool {
        self.is_empty()
    }
}
impl Zero for Duration {
    fn is_zero_value(&self) -> bool {
        self.is_zero()
    }
}
impl Zero for i32 {
    fn is_zero_value(&self) -> bool {
        *self == 0
    }
}
impl Zero for i64 {
    fn is_zero_value(&self) -> bool {
        *self == 0
    }
}

/// For each listed field: if it holds the zero value, take the default's value.
macro_rules! zero_means_default {
    ($cfg:ident, $def:ident; $($($field:ident).+),* $(,)?) => {
        $(
            if $cfg.$($field).+.is_zero_value() {
                $cfg.$($field).+ = $def.$($field).+.clone();
            }
        )*
    };
}

impl Default for KubeletConfiguration {
    /// The configuration upstream produces from an empty file.
    fn default() -> Self {
        Self {
            api_version: API_VERSION.to_string(),
            kind: KIND.to_string(),
            enable_server: true,
            static_pod_path: String::new(),
            pod_logs_dir: DEFAULT_POD_LOGS_DIR.to_string(),
            sync_frequency: Duration::from_mins(1),
            file_check_frequency: Duration::from_secs(20),
            http_check_frequency: Duration::from_secs(20),
            static_pod_url: String::new(),
            static_pod_url_header: BTreeMap::new(),
            address: "0.0.0.0".to_string(),
            port: 10250,
            read_only_port: 0,
            tls_cert_file: String::new(),
            tls_private_key_file: String::new(),
            tls_cipher_suites: Vec::new(),
            tls_curve_preferences: Vec::new(),
            tls_min_version: String::new(),
            rotate_certificates: false,
            server_tls_bootstrap: false,
            authentication: KubeletAuthentication::default(),
            authorization: KubeletAuthorization::default(),
            registry_pull_qps: 5,
            registry_burst: 10,
            image_pull_credentials_verification_policy: String::new(),
            preloaded_images_verification_allowlist: Vec::new(),
            event_record_qps: 50,
            event_burst: 100,
            enable_debugging_handlers: true,
            enable_contention_profiling: false,
            healthz_port: 10248,
            healthz_bind_address: "127.0.0.1".to_string(),
            oom_score_adj: -999,
            cluster_domain: String::new(),
            cluster_dns: Vec::new(),
            streaming_connection_idle_timeout: Duration::from_hours(4),
            node_status_update_frequency: Duration::from_secs(10),
            node_status_report_frequency: Duration::from_mins(5),
            node_lease_duration_seconds: 40,
            image_minimum_gc_age: Duration::from_mins(2),
            image_maximum_gc_age: Duration::ZERO,
            image_gc_high_threshold_percent: 85,
            image_gc_low_threshold_percent: 80,
            volume_stats_agg_period: Duration::from_mins(1),
            kubelet_cgroups: String::new(),
            system_cgroups: String::new(),
            cgroup_root: String::new(),
            cgroups_per_qos: true,
            cgroup_driver: "cgroupfs".to_string(),
            cpu_manager_policy: "none".to_string(),
            single_process_oom_kill: None,
            cpu_manager_policy_options: BTreeMap::new(),
            cpu_manager_reconcile_period: Duration::from_secs(10),
            dra_manager_reconcile_period: Duration::from_secs(60),
            memory_manager_policy: "None".to_string(),
            topology_manager_policy: "none".to_string(),
            topology_manager_scope: "container".to_string(),
            topology_manager_policy_options: BTreeMap::new(),
            qos_reserved: BTreeMap::new(),
            runtime_request_timeout: Duration::from_mins(2),
            hairpin_mode: "promiscuous-bridge".to_string(),
            max_pods: 110,
            pod_cidr: String::new(),
            pod_pids_limit: -1,
            resolv_conf: "/etc/resolv.conf".to_string(),
            run_once: false,
            cpu_cfs_quota: true,
            cpu_cfs_quota_period: Duration::from_millis(100),
            node_status_max_images: 50,
            max_open_files: 1_000_000,
            content_type: "application/vnd.kubernetes.protobuf".to_string(),
            kube_api_qps: 50,
            kube_api_burst: 100,
            serialize_image_pulls: true,
            max_parallel_image_pulls: None,
            eviction_hard: default_eviction_hard(),
            eviction_soft: BTreeMap::new(),
            eviction_soft_grace_period: BTreeMap::new(),
            eviction_pressure_transition_period: Duration::from_mins(5),
            eviction_max_pod_grace_period: 0,
            eviction_minimum_reclaim: BTreeMap::new(),
            merge_default_eviction_settings: false,
            pods_per_core: 0,
            enable_controller_attach_detach: true,
            protect_kernel_defaults: false,
            make_iptables_util_chains: true,
            iptables_masquerade_bit: 14,
            iptables_drop_bit: 15,
            feature_gates: BTreeMap::new(),
            fail_swap_on: true,
            memory_swap: MemorySwapConfiguration::default(),
            container_log_max_size: default_container_log_max_size(),
            container_log_max_files: 5,
            container_log_max_workers: 1,
            container_log_monitor_interval: Duration::from_secs(10),
            config_map_and_secret_change_detection_strategy: "Watch".to_string(),
            system_reserved: BTreeMap::new(),
            kube_reserved: BTreeMap::new(),
            reserved_system_cpus: String::new(),
            show_hidden_metrics_for_version: String::new(),
            system_reserved_cgroup: String::new(),
            kube_reserved_cgroup: String::new(),
            enforce_node_allocatable: vec!["pods".to_string()],
            allowed_unsafe_sysctls: Vec::new(),
            volume_plugin_dir: DEFAULT_VOLUME_PLUGIN_DIR.to_string(),
            provider_id: String::new(),
            kernel_memcg_notification: false,
            logging: LoggingConfiguration::default(),
            enable_system_log_handler: true,
            enable_system_log_query: false,
            shutdown_grace_period: Duration::ZERO,
            shutdown_grace_period_critical_pods: Duration::ZERO,
            shutdown_grace_period_by_pod_priority: Vec::new(),
            crash_loop_back_off: CrashLoopBackOffConfig::default(),
            reserved_memory: Vec::new(),
            enable_profiling_handler: true,
            enable_debug_flags_handler: true,
            seccomp_default: false,
            memory_throttling_factor: 0.9,
            memory_reservation_policy: "None".to_string(),
            register_with_taints: Vec::new(),
            register_node: true,
            tracing: None,
            local_storage_capacity_isolation: true,
            container_runtime_endpoint: DEFAULT_CONTAINER_RUNTIME_ENDPOINT.to_string(),
            image_service_endpoint: String::new(),
            fail_cgroup_v1: false,
            user_namespaces: None,
            image_pull_progress_deadline: Duration::from_mins(1),
            node_ip: String::new(),
            enable_metrics: true,
            cni_conf_dir: "/etc/cni/net.d".to_string(),
            cni_bin_dir: "/opt/cni/bin".to_string(),
        }
    }
}

/// The default `evictionHard` map.
pub fn default_eviction_hard() -> BTreeMap<String, String> {
    DEFAULT_EVICTION_HARD.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

impl KubeletConfiguration {
    /// Applies the upstream defaulting rules serde cannot express. `present(key)` says whether a
    /// top-level key was written in the file.
    pub(crate) fn fill_unset(&mut self, present: &dyn Fn(&str) -> bool) {
        let def = KubeletConfiguration::default();
        // nodeStatusReportFrequency follows an explicitly set nodeStatusUpdateFrequency.
        let update_explicit = present("nodeStatusUpdateFrequency") && !self.node_status_update_frequency.is_zero();
        if self.node_status_report_frequency.is_zero() || !present("nodeStatusReportFrequency") {
            self.node_status_report_frequency =
                if update_explicit { self.node_status_update_frequency } else { def.node_status_report_frequency };
        }
        zero_means_default!(self, def;
            sync_frequency, file_check_frequency, http_check_frequency, address, port,
            authentication.webhook.cache_ttl, authorization.mode,
            authorization.webhook.cache_authorized_ttl,
            authorization.webhook.cache_unauthorized_ttl,
            registry_burst, event_burst, healthz_bind_address, streaming_connection_idle_timeout,
            node_status_update_frequency, node_lease_duration_seconds, image_minimum_gc_age,
            volume_stats_agg_period, cgroup_driver, cpu_manager_policy,
            cpu_manager_reconcile_period, dra_manager_reconcile_period, memory_manager_policy,
            topology_manager_policy, topology_manager_scope, runtime_request_timeout,
            hairpin_mode, max_pods, max_open_files, content_type, kube_api_burst,
            eviction_pressure_transition_period, config_map_and_secret_change_detection_strategy,
            volume_plugin_dir, logging.format, logging.flush_frequency,
            memory_reservation_policy, container_runtime_endpoint, pod_logs_dir,
        );
        if self.pod_pids_limit < 0 {
            self.pod_pids_limit = -1;
        }
        if !present("serializeImagePulls") {
            self.serialize_image_pulls = self.max_parallel_image_pulls.is_none_or(|n| n < 2);
        }
        if features::enabled(&self.feature_gates, "KubeletCrashLoopBackOffMax")
            && self.crash_loop_back_off.max_container_restart_period.is_none()
        {
            self.crash_loop_back_off.max_container_restart_period = Some(MAX_CONTAINER_BACKOFF);
        }
        if features::enabled(&self.feature_gates, "KubeletEnsureSecretPulledImages")
            && self.image_pull_credentials_verification_policy.is_empty()
        {
            self.image_pull_credentials_verification_policy = "NeverVerifyPreloadedImages".to_string();
        }
    }

    /// The image service endpoint, falling back to the runtime endpoint when unset.
    pub fn effective_image_service_endpoint(&self) -> &str {
        if self.image_service_endpoint.is_empty() {
            &self.container_runtime_endpoint
        } else {
            &self.image_service_endpoint
        }
    }

    /// `evictionHard` as the kubelet uses it: with mergeDefaultEvictionSettings the default
    /// signals fill in the ones not written; otherwise exactly the configured map.
    pub fn effective_eviction_hard(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if self.merge_default_eviction_settings {
            out = default_eviction_hard();
        }
        out.extend(self.eviction_hard.clone());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_upstream() {
        let c = KubeletConfiguration::default();
        assert_eq!(c.api_version, "kubelet.config.k8s.io/v1beta1");
        assert_eq!(c.kind, "KubeletConfiguration");
        assert!(c.enable_server);
        assert_eq!(c.static_pod_path, "");
        assert_eq!(c.pod_logs_dir, "/var/log/pods");
        assert_eq!(c.address, "0.0.0.0");
        assert_eq!((c.port, c.read_only_port, c.healthz_port), (10250, 0, 10248));
        assert_eq!(c.healthz_bind_address, "127.0.0.1");
        assert_eq!(c.sync_frequency.to_string(), "1m0s");
        assert_eq!(c.file_check_frequency.to_string(), "20s");
        assert_eq!(c.http_check_frequency.to_string(), "20s");
        assert_eq!(c.node_status_update_frequency.to_string(), "10s");
        assert_eq!(c.node_status_report_frequency.to_string(), "5m0s");
        assert_eq!(c.node_lease_duration_seconds, 40);
        assert_eq!(c.image_minimum_gc_age.to_string(), "2m0s");
        assert_eq!((c.image_gc_high_threshold_percent, c.image_gc_low_threshold_percent), (85, 80));
        assert_eq!((c.max_pods, c.pod_pids_limit), (110, -1));
        assert_eq!(c.container_log_max_size.as_str(), "10Mi");
        assert_eq!((c.container_log_max_files, c.container_log_max_workers), (5, 1));
        assert_eq!(c.container_log_monitor_interval.to_string(), "10s");
        assert!(c.serialize_image_pulls);
        assert_eq!((c.registry_pull_qps, c.registry_burst), (5, 10));
        assert_eq!((c.event_record_qps, c.event_burst), (50, 100));
        assert_eq!((c.kube_api_qps, c.kube_api_burst), (50, 100));
        assert!(c.cpu_cfs_quota);
        assert_eq!(c.cpu_cfs_quota_period.to_string(), "100ms");
        assert_eq!(c.runtime_request_timeout.to_string(), "2m0s");
        assert_eq!(c.streaming_connection_idle_timeout.to_string(), "4h0m0s");
        assert_eq!(c.eviction_pressure_transition_period.to_string(), "5m0s");
        assert_eq!((c.cgroup_driver.as_str(), c.cgroups_per_qos), ("cgroupfs", true));
        assert_eq!(c.cpu_manager_policy, "none");
        assert_eq!(c.cpu_manager_reconcile_period.to_string(), "10s");
        assert_eq!(c.memory_manager_policy, "None");
        assert_eq!((c.topology_manager_policy.as_str(), c.topology_manager_scope.as_str()), ("none", "container"));
        assert_eq!(c.oom_score_adj, -999);
        assert_eq!(c.node_status_max_images, 50);
        assert!(c.fail_swap_on && c.register_node);
        assert_eq!(c.enforce_node_allocatable, vec!["pods"]);
        assert_eq!(c.container_runtime_endpoint, "unix:///run/containerd/containerd.sock");
        assert_eq!(c.image_service_endpoint, "");
        assert_eq!(c.effective_image_service_endpoint(), c.container_runtime_endpoint);
        assert!(!c.authentication.anonymous.enabled);
        assert!(c.authentication.webhook.enabled);
        assert_eq!(c.authentication.webhook.cache_ttl.to_string(), "2m0s");
        assert_eq!(c.authorization.mode, "Webhook");
        assert_eq!(c.authorization.webhook.cache_authorized_ttl.to_string(), "5m0s");
        assert_eq!(c.authorization.webhook.cache_unauthorized_ttl.to_string(), "30s");
        assert_eq!(c.eviction_hard["memory.available"], "100Mi");
        assert_eq!(c.eviction_hard["nodefs.available"], "10%");
        assert_eq!(c.eviction_hard["nodefs.inodesFree"], "5%");
        assert_eq!(c.eviction_hard["imagefs.available"], "15%");
        assert_eq!(c.eviction_hard.len(), 4);
        assert_eq!(c.hairpin_mode, "promiscuous-bridge");
        assert_eq!(c.resolv_conf, "/etc/resolv.conf");
        assert_eq!(c.logging.format, "text");
        assert_eq!(c.logging.flush_frequency.to_string(), "5s");
    }

    fn filled(mut c: KubeletConfiguration, keys: &[&str]) -> KubeletConfiguration {
        c.fill_unset(&|k| keys.contains(&k));
        c
    }

    #[test]
    fn zero_values_of_plain_fields_mean_default() {
        let c = KubeletConfiguration {
            port: 0,
            max_pods: 0,
            sync_frequency: Duration::ZERO,
            cgroup_driver: String::new(),
            ..Default::default()
        };
        let c = filled(c, &["port", "maxPods", "syncFrequency", "cgroupDriver"]);
        assert_eq!((c.port, c.max_pods), (10250, 110));
        assert_eq!(c.sync_frequency, Duration::from_mins(1));
        assert_eq!(c.cgroup_driver, "cgroupfs");
    }

    #[test]
    fn report_frequency_follows_explicit_update_frequency() {
        let c = KubeletConfiguration { node_status_update_frequency: Duration::from_secs(20), ..Default::default() };
        let c = filled(c, &["nodeStatusUpdateFrequency"]);
        assert_eq!(c.node_status_report_frequency, Duration::from_secs(20));
    }

    #[test]
    fn parallel_pulls_turn_off_serialized_pulls_unless_written() {
        let c = KubeletConfiguration { max_parallel_image_pulls: Some(5), ..Default::default() };
        assert!(!filled(c.clone(), &["maxParallelImagePulls"]).serialize_image_pulls);
        assert!(filled(c, &["maxParallelImagePulls", "serializeImagePulls"]).serialize_image_pulls);
    }

    #[test]
    fn crash_loop_cap_defaults_only_with_its_gate() {
        let mut c = KubeletConfiguration::default();
        c.fill_unset(&|_| false);
        assert_eq!(c.crash_loop_back_off.max_container_restart_period, None);
        c.feature_gates.insert("KubeletCrashLoopBackOffMax".into(), true);
        c.fill_unset(&|_| false);
        assert_eq!(c.crash_loop_back_off.max_container_restart_period, Some(Duration::from_secs(300)));
    }

    #[test]
    fn merge_default_eviction_settings_fills_missing_signals() {
        let mut c = KubeletConfiguration {
            eviction_hard: [("memory.available".to_string(), "1Gi".to_string())].into(),
            ..Default::default()
        };
        assert_eq!(c.effective_eviction_hard().len(), 1);
        c.merge_default_eviction_settings = true;
        let merged = c.effective_eviction_hard();
        assert_eq!(merged.len(), 4);
        assert_eq!(merged["memory.available"], "1Gi");
    }
}
