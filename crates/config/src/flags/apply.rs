//! `Flags::apply`: the given flags written over the KubeletConfiguration, and the flag-only
//! settings (`NodeOptions`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::values::{Pairs, Reservations};
use super::{Flags, FlagsError};
use crate::duration::Duration;
use crate::types::KubeletConfiguration;

/// Default of `--root-dir`.
pub const DEFAULT_ROOT_DIR: &str = "/var/lib/kubelet";

/// Settings that exist only as flags, resolved after `Flags::apply`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeOptions {
    /// --cert-dir, default <root-dir>/pki.
    pub cert_dir: PathBuf,
    /// --root-dir, default /var/lib/kubelet.
    pub root_dir: PathBuf,
    /// --config, if given.
    pub config: Option<PathBuf>,
    /// --kubeconfig; `None` means standalone mode.
    pub kubeconfig: Option<PathBuf>,
    pub bootstrap_kubeconfig: Option<PathBuf>,
    /// --hostname-override, trimmed.
    pub hostname_override: Option<String>,
    /// --node-ip, else the file's nodeIP (seed extension), else `None` (detect).
    pub node_ip: Option<String>,
    /// --node-labels.
    pub node_labels: BTreeMap<String, String>,
    /// Effective verbosity (-v, else logging.verbosity).
    pub verbosity: u32,
    /// --cloud-provider ("" or "external"; anything else is refused at start-up).
    pub cloud_provider: Option<String>,
    /// --pod-infra-container-image (deprecated; image GC never removes it).
    pub pod_infra_container_image: Option<String>,
    /// --lock-file.
    pub lock_file: Option<PathBuf>,
    /// --exit-on-lock-contention.
    pub exit_on_lock_contention: bool,
    /// --image-credential-provider-config.
    pub image_credential_provider_config: Option<PathBuf>,
    /// --image-credential-provider-bin-dir.
    pub image_credential_provider_bin_dir: Option<PathBuf>,
    /// --housekeeping-period-for-tests (hidden).
    pub housekeeping_period_for_tests: Option<Duration>,
    /// --systemd-dir-for-tests (hidden): `<dir>/system` marks systemd running, `<dir>/bus` is the
    /// D-Bus bus systemd is on.
    pub systemd_dir_for_tests: Option<PathBuf>,
    /// --pleg-relist-period.
    pub pleg_relist_period: Option<Duration>,
    /// --pleg-relist-period-with-events.
    pub pleg_relist_period_with_events: Option<Duration>,
}

impl NodeOptions {
    /// The options of a kubelet given only `--root-dir` (the others at their flag defaults);
    /// for nodes composed in-process (hollow nodes, tests).
    pub fn with_root_dir(root_dir: PathBuf) -> Self {
        Self {
            cert_dir: root_dir.join("pki"),
            root_dir,
            config: None,
            kubeconfig: None,
            bootstrap_kubeconfig: None,
            hostname_override: None,
            node_ip: None,
            node_labels: BTreeMap::new(),
            verbosity: 0,
            cloud_provider: None,
            pod_infra_container_image: None,
            lock_file: None,
            exit_on_lock_contention: false,
            image_credential_provider_config: None,
            image_credential_provider_bin_dir: None,
            housekeeping_period_for_tests: None,
            systemd_dir_for_tests: None,
            pleg_relist_period: None,
            pleg_relist_period_with_events: None,
        }
    }

    /// The node name: the hostname override or the host name, trimmed and lower-cased.
    pub fn node_name(&self, host_name: &str) -> Result<String, FlagsError> {
        let name =
            self.hostname_override.as_deref().filter(|s| !s.is_empty()).unwrap_or(host_name).trim().to_lowercase();
        if name.is_empty() {
            return Err(FlagsError::EmptyNodeName);
        }
        Ok(name)
    }

    /// `--cloud-provider=external`: a cloud controller manager initializes the node.
    pub fn external_cloud_provider(&self) -> bool {
        self.cloud_provider.as_deref() == Some("external")
    }
}

fn set<T: Clone>(target: &mut T, flag: &Option<T>) {
    if let Some(value) = flag {
        *target = value.clone();
    }
}

/// A string slice flag: `--x=` means an empty list.
fn set_list(target: &mut Vec<String>, flag: &Option<Vec<String>>) {
    if let Some(values) = flag {
        *target = values.iter().map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect();
    }
}

/// A map flag replaces the file's map with every occurrence's pairs.
fn set_map(target: &mut BTreeMap<String, String>, flag: &Option<Vec<Pairs>>) {
    if let Some(occurrences) = flag {
        *target = Pairs::merge(occurrences);
    }
}

impl Flags {
    /// Writes every given flag over `cfg` and returns the flag-only settings.
    pub fn apply(&self, cfg: &mut KubeletConfiguration) -> NodeOptions {
        set(&mut cfg.enable_server, &self.enable_server);
        set(&mut cfg.address, &self.address);
        set(&mut cfg.port, &self.port);
        set(&mut cfg.read_only_port, &self.read_only_port);
        set(&mut cfg.healthz_port, &self.healthz_port);
        set(&mut cfg.healthz_bind_address, &self.healthz_bind_address);
        set(&mut cfg.tls_cert_file, &self.tls_cert_file);
        set(&mut cfg.tls_private_key_file, &self.tls_private_key_file);
        set_list(&mut cfg.tls_cipher_suites, &self.tls_cipher_suites);
        set(&mut cfg.tls_min_version, &self.tls_min_version);
        set(&mut cfg.rotate_certificates, &self.rotate_certificates);
        set(&mut cfg.server_tls_bootstrap, &self.rotate_server_certificates);
        set(&mut cfg.authentication.anonymous.enabled, &self.anonymous_auth);
        set(&mut cfg.authentication.webhook.enabled, &self.authentication_token_webhook);
        set(&mut cfg.authentication.webhook.cache_ttl, &self.authentication_token_webhook_cache_ttl);
        set(&mut cfg.authentication.x509.client_ca_file, &self.client_ca_file);
        set(&mut cfg.authorization.mode, &self.authorization_mode);
        set(&mut cfg.authorization.webhook.cache_authorized_ttl, &self.authorization_webhook_cache_authorized_ttl);
        set(&mut cfg.authorization.webhook.cache_unauthorized_ttl, &self.authorization_webhook_cache_unauthorized_ttl);
        set(&mut cfg.enable_debugging_handlers, &self.enable_debugging_handlers);
        set(&mut cfg.enable_contention_profiling, &self.contention_profiling);
        set(&mut cfg.streaming_connection_idle_timeout, &self.streaming_connection_idle_timeout);
        set(&mut cfg.container_runtime_endpoint, &self.container_runtime_endpoint);
        set(&mut cfg.image_service_endpoint, &self.image_service_endpoint);
        set(&mut cfg.runtime_request_timeout, &self.runtime_request_timeout);
        set(&mut cfg.static_pod_path, &self.pod_manifest_path);
        set(&mut cfg.static_pod_url, &self.manifest_url);
        set(&mut cfg.sync_frequency, &self.sync_frequency);
        set(&mut cfg.file_check_frequency, &self.file_check_frequency);
        set(&mut cfg.http_check_frequency, &self.http_check_frequency);
        set(&mut cfg.max_pods, &self.max_pods);
        set(&mut cfg.pods_per_core, &self.pods_per_core);
        set(&mut cfg.pod_pids_limit, &self.pod_max_pids);
        set(&mut cfg.pod_cidr, &self.pod_cidr);
        set(&mut cfg.cluster_domain, &self.cluster_domain);
        set_list(&mut cfg.cluster_dns, &self.cluster_dns);
        set(&mut cfg.resolv_conf, &self.resolv_conf);
        set(&mut cfg.hairpin_mode, &self.hairpin_mode);
        set(&mut cfg.serialize_image_pulls, &self.serialize_image_pulls);
        set(&mut cfg.registry_pull_qps, &self.registry_qps);
        set(&mut cfg.registry_burst, &self.registry_burst);
        set(&mut cfg.event_record_qps, &self.event_qps);
        set(&mut cfg.event_burst, &self.event_burst);
        set(&mut cfg.content_type, &self.kube_api_content_type);
        set(&mut cfg.kube_api_qps, &self.kube_api_qps);
        set(&mut cfg.kube_api_burst, &self.kube_api_burst);
        set(&mut cfg.container_log_max_size, &self.container_log_max_size);
        set(&mut cfg.container_log_max_files, &self.container_log_max_files);
        set(&mut cfg.image_minimum_gc_age, &self.minimum_image_ttl_duration);
        set(&mut cfg.image_gc_high_threshold_percent, &self.image_gc_high_threshold);
        set(&mut cfg.image_gc_low_threshold_percent, &self.image_gc_low_threshold);
        set(&mut cfg.volume_stats_agg_period, &self.volume_stats_agg_period);
        set(&mut cfg.volume_plugin_dir, &self.volume_plugin_dir);
        set(&mut cfg.enable_controller_attach_detach, &self.enable_controller_attach_detach);
        set_list(&mut cfg.allowed_unsafe_sysctls, &self.allowed_unsafe_sysctls);
        set(&mut cfg.seccomp_default, &self.seccomp_default);
        set(&mut cfg.run_once, &self.run_once);
        set(&mut cfg.register_node, &self.register_node);
        set(&mut cfg.node_status_update_frequency, &self.node_status_update_frequency);
        set(&mut cfg.node_status_max_images, &self.node_status_max_images);
        set(&mut cfg.fail_swap_on, &self.fail_swap_on);
        set(&mut cfg.fail_cgroup_v1, &self.fail_cgroupv1);
        set(&mut cfg.cgroup_driver, &self.cgroup_driver);
        set(&mut cfg.cgroup_root, &self.cgroup_root);
        set(&mut cfg.cgroups_per_qos, &self.cgroups_per_qos);
        set(&mut cfg.kubelet_cgroups, &self.kubelet_cgroups);
        set(&mut cfg.system_cgroups, &self.system_cgroups);
        set(&mut cfg.cpu_cfs_quota, &self.cpu_cfs_quota);
        set(&mut cfg.cpu_cfs_quota_period, &self.cpu_cfs_quota_period);
        set(&mut cfg.cpu_manager_policy, &self.cpu_manager_policy);
        set(&mut cfg.cpu_manager_reconcile_period, &self.cpu_manager_reconcile_period);
        set(&mut cfg.memory_manager_policy, &self.memory_manager_policy);
        set(&mut cfg.topology_manager_policy, &self.topology_manager_policy);
        set(&mut cfg.topology_manager_scope, &self.topology_manager_scope);
        set(&mut cfg.reserved_system_cpus, &self.reserved_cpus);
        set(&mut cfg.system_reserved_cgroup, &self.system_reserved_cgroup);
        set(&mut cfg.kube_reserved_cgroup, &self.kube_reserved_cgroup);
        set_list(&mut cfg.enforce_node_allocatable, &self.enforce_node_allocatable);
        set(&mut cfg.eviction_pressure_transition_period, &self.eviction_pressure_transition_period);
        set(&mut cfg.eviction_max_pod_grace_period, &self.eviction_max_pod_grace_period);
        set(&mut cfg.kernel_memcg_notification, &self.kernel_memcg_notification);
        set(&mut cfg.local_storage_capacity_isolation, &self.local_storage_capacity_isolation);
        set(&mut cfg.protect_kernel_defaults, &self.protect_kernel_defaults);
        set(&mut cfg.make_iptables_util_chains, &self.make_iptables_util_chains);
        set(&mut cfg.iptables_masquerade_bit, &self.iptables_masquerade_bit);
        set(&mut cfg.iptables_drop_bit, &self.iptables_drop_bit);
        set(&mut cfg.oom_score_adj, &self.oom_score_adj);
        set(&mut cfg.max_open_files, &self.max_open_files);
        set(&mut cfg.logging.format, &self.logging_format);
        set(&mut cfg.logging.options.text.split_stream, &self.log_text_split_stream);
        set(&mut cfg.logging.options.text.info_buffer_size, &self.log_text_info_buffer_size);
        set(&mut cfg.logging.options.json.split_stream, &self.log_json_split_stream);
        set(&mut cfg.logging.options.json.info_buffer_size, &self.log_json_info_buffer_size);
        set(&mut cfg.provider_id, &self.provider_id);
        set(&mut cfg.node_ip, &self.node_ip);
        set(&mut cfg.logging.verbosity, &self.verbosity);
        set(&mut cfg.logging.flush_frequency, &self.log_flush_frequency);
        if let Some(vmodule) = &self.vmodule {
            cfg.logging.vmodule = vmodule.0.clone();
        }
        if let Some(taints) = &self.register_with_taints {
            cfg.register_with_taints = taints.0.clone();
        }
        set_map(&mut cfg.cpu_manager_policy_options, &self.cpu_manager_policy_options);
        set_map(&mut cfg.topology_manager_policy_options, &self.topology_manager_policy_options);
        set_map(&mut cfg.qos_reserved, &self.qos_reserved);
        set_map(&mut cfg.eviction_hard, &self.eviction_hard);
        set_map(&mut cfg.eviction_soft, &self.eviction_soft);
        set_map(&mut cfg.eviction_soft_grace_period, &self.eviction_soft_grace_period);
        set_map(&mut cfg.eviction_minimum_reclaim, &self.eviction_minimum_reclaim);
        if let Some(headers) = &self.manifest_url_header {
            let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (k, v) in headers.iter().flat_map(|p| p.0.iter()) {
                map.entry(k.clone()).or_default().push(v.clone());
            }
            cfg.static_pod_url_header = map;
        }
        for (target, flag) in
            [(&mut cfg.system_reserved, &self.system_reserved), (&mut cfg.kube_reserved, &self.kube_reserved)]
        {
            if let Some(occurrences) = flag {
                *target = occurrences.iter().flat_map(|r| r.0.iter().cloned()).collect();
            }
        }
        if let Some(occurrences) = &self.reserved_memory {
            cfg.reserved_memory = Reservations::merge(occurrences);
        }
        // Upstream keeps the file's gates that the flag does not name (kubeletConfigFlagPrecedence).
        if let Some(gates) = &self.feature_gates {
            cfg.feature_gates.extend(gates.iter().flat_map(|g| g.0.iter().cloned()));
        }
        self.node_options(cfg)
    }

    fn node_options(&self, cfg: &KubeletConfiguration) -> NodeOptions {
        let root_dir = self.root_dir.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT_DIR));
        NodeOptions {
            cert_dir: self.cert_dir.clone().unwrap_or_else(|| root_dir.join("pki")),
            root_dir,
            config: self.config.clone(),
            kubeconfig: self.kubeconfig.clone(),
            bootstrap_kubeconfig: self.bootstrap_kubeconfig.clone(),
            hostname_override: self
                .hostname_override
                .as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            node_ip: Some(cfg.node_ip.clone()).filter(|ip| !ip.is_empty()),
            node_labels: self.node_labels.as_deref().map(Pairs::merge).unwrap_or_default(),
            verbosity: cfg.logging.verbosity,
            cloud_provider: self.cloud_provider.clone(),
            pod_infra_container_image: self.pod_infra_container_image.clone(),
            lock_file: self.lock_file.clone().filter(|p| !p.as_os_str().is_empty()),
            exit_on_lock_contention: self.exit_on_lock_contention.unwrap_or(false),
            image_credential_provider_config: self.image_credential_provider_config.clone(),
            image_credential_provider_bin_dir: self.image_credential_provider_bin_dir.clone(),
            housekeeping_period_for_tests: self.housekeeping_period_for_tests,
            systemd_dir_for_tests: self.systemd_dir_for_tests.clone(),
            pleg_relist_period: self.pleg_relist_period,
            pleg_relist_period_with_events: self.pleg_relist_period_with_events,
        }
    }
}
