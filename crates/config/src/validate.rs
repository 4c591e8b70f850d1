//! `KubeletConfiguration::validate`: the checks of upstream
//! pkg/kubelet/apis/config/validation/validation.go, plus the ones upstream makes later at
//! startup (cgroup driver, manager policies, eviction thresholds, reserved resources, TLS names).
//! Every bad field is reported, not just the first.

use std::collections::BTreeSet;
use std::fmt;

use crate::checks;
use crate::duration::Duration;
use crate::features;
use crate::types::KubeletConfiguration;

mod resources;

/// One invalid field: `field: value: reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// camelCase path, e.g. `maxPods` or `registerWithTaints[0].effect`.
    pub field: String,
    /// The offending value as written (strings quoted).
    pub value: String,
    pub reason: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.field, self.value, self.reason)
    }
}

/// Every invalid field of a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid kubelet configuration: {}", list(.errors))]
pub struct ValidationErrors {
    pub errors: Vec<FieldError>,
}

fn list(errors: &[FieldError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

impl ValidationErrors {
    /// Whether `field` is among the errors.
    pub fn has(&self, field: &str) -> bool {
        self.errors.iter().any(|e| e.field == field)
    }
}

/// Collects field errors.
struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, field: impl Into<String>, value: impl fmt::Display, reason: impl Into<String>) {
        self.0.push(FieldError { field: field.into(), value: value.to_string(), reason: reason.into() });
    }
    fn non_negative(&mut self, field: &str, value: i64) {
        if value < 0 {
            self.add(field, value, "must be greater than or equal to 0");
        }
    }
    fn in_range(&mut self, field: &str, value: i64, low: i64, high: i64) {
        if !(low..=high).contains(&value) {
            self.add(field, value, format!("must be between {low} and {high}, inclusive"));
        }
    }
    fn port(&mut self, field: &str, value: i32, zero_allowed: bool) {
        let disabled = zero_allowed && value == 0;
        if !disabled && !(1..=65535).contains(&value) {
            let low = if zero_allowed { 0 } else { 1 };
            self.add(field, value, format!("must be between {low} and 65535, inclusive"));
        }
    }
    fn positive_duration(&mut self, field: &str, value: Duration) {
        if value.as_nanos() <= 0 {
            self.add(field, value, "must be greater than 0");
        }
    }
    fn one_of(&mut self, field: &str, value: &str, allowed: &[&str]) {
        if !allowed.contains(&value) {
            self.add(field, q(value), format!("must be one of {}", quoted(allowed)));
        }
    }
    fn needs_gate(&mut self, field: &str, value: impl fmt::Display, gate: &str) {
        self.add(field, value, format!("requires feature gate {gate}"));
    }
}

/// A string value as shown in errors.
fn q(s: &str) -> String {
    format!("{s:?}")
}

fn quoted(items: &[&str]) -> String {
    items.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ")
}

impl KubeletConfiguration {
    /// Checks the whole configuration and reports every invalid field at once.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut e = Errors(Vec::new());
        self.check_server(&mut e);
        self.check_limits(&mut e);
        self.check_periods(&mut e);
        self.check_images(&mut e);
        self.check_node(&mut e);
        self.check_managers(&mut e);
        self.check_shutdown(&mut e);
        self.check_allocatable(&mut e);
        self.check_eviction(&mut e);
        self.check_logging(&mut e);
        if e.0.is_empty() { Ok(()) } else { Err(ValidationErrors { errors: e.0 }) }
    }

    fn gate(&self, name: &str) -> bool {
        features::enabled(&self.feature_gates, name)
    }

    fn check_server(&self, e: &mut Errors) {
        if !checks::is_ip(&self.address) {
            e.add("address", q(&self.address), "must be an IP address");
        }
        e.port("port", self.port, false);
        e.port("readOnlyPort", self.read_only_port, true);
        e.port("healthzPort", self.healthz_port, true);
        if !checks::is_ip(&self.healthz_bind_address) {
            e.add("healthzBindAddress", q(&self.healthz_bind_address), "must be an IP address");
        }
        if !self.tls_min_version.is_empty() {
            e.one_of("tlsMinVersion", &self.tls_min_version, checks::TLS_VERSIONS);
        }
        for (i, suite) in self.tls_cipher_suites.iter().enumerate() {
            if !checks::TLS_CIPHER_SUITES.contains(&suite.as_str()) {
                e.add(format!("tlsCipherSuites[{i}]"), q(suite), "unknown cipher suite");
            }
        }
        if self.server_tls_bootstrap && !self.gate("RotateKubeletServerCertificate") {
            e.needs_gate("serverTLSBootstrap", true, "RotateKubeletServerCertificate");
        }
        e.one_of("authorization.mode", &self.authorization.mode, &["AlwaysAllow", "Webhook"]);
        e.positive_duration("authentication.webhook.cacheTTL", self.authentication.webhook.cache_ttl);
        let webhook = &self.authorization.webhook;
        e.positive_duration("authorization.webhook.cacheAuthorizedTTL", webhook.cache_authorized_ttl);
        e.positive_duration("authorization.webhook.cacheUnauthorizedTTL", webhook.cache_unauthorized_ttl);
        if self.enable_system_log_query {
            if !self.gate("NodeLogQuery") {
                e.needs_gate("enableSystemLogQuery", true, "NodeLogQuery");
            }
            if !self.enable_system_log_handler {
                e.add("enableSystemLogQuery", true, "requires enableSystemLogHandler");
            }
        }
        if !self.show_hidden_metrics_for_version.is_empty()
            && !checks::is_major_minor(&self.show_hidden_metrics_for_version)
        {
            e.add("showHiddenMetricsForVersion", q(&self.show_hidden_metrics_for_version), "must be <major>.<minor>");
        }
        if let Some(rate) = self.tracing.as_ref().and_then(|t| t.sampling_rate_per_million) {
            e.in_range("tracing.samplingRatePerMillion", rate.into(), 0, 1_000_000);
        }
    }

    fn check_limits(&self, e: &mut Errors) {
        e.non_negative("eventRecordQPS", self.event_record_qps.into());
        e.non_negative("eventBurst", self.event_burst.into());
        e.non_negative("registryPullQPS", self.registry_pull_qps.into());
        e.non_negative("registryBurst", self.registry_burst.into());
        e.non_negative("kubeAPIQPS", self.kube_api_qps.into());
        e.non_negative("kubeAPIBurst", self.kube_api_burst.into());
        e.non_negative("maxPods", self.max_pods.into());
        e.non_negative("podsPerCore", self.pods_per_core.into());
        e.non_negative("maxOpenFiles", self.max_open_files);
        if self.node_status_max_images < -1 {
            e.add("nodeStatusMaxImages", self.node_status_max_images, "must be -1 or greater");
        }
        e.in_range("oomScoreAdj", self.oom_score_adj.into(), -1000, 1000);
        e.in_range("iptablesMasqueradeBit", self.iptables_masquerade_bit.into(), 0, 31);
        e.in_range("iptablesDropBit", self.iptables_drop_bit.into(), 0, 31);
        if self.node_lease_duration_seconds <= 0 {
            e.add("nodeLeaseDurationSeconds", self.node_lease_duration_seconds, "must be greater than 0");
        }
        if self.container_log_max_size.is_negative() {
            e.add("containerLogMaxSize", q(self.container_log_max_size.as_str()), "must be greater than or equal to 0");
        }
        if self.container_log_max_files <= 1 {
            e.add("containerLogMaxFiles", self.container_log_max_files, "must be greater than 1");
        }
        if self.container_log_max_workers < 1 {
            e.add("containerLogMaxWorkers", self.container_log_max_workers, "must be greater than or equal to 1");
        }
        if self.container_log_monitor_interval < Duration::from_secs(3) {
            e.add("containerLogMonitorInterval", self.container_log_monitor_interval, "must be at least 3s");
        }
        if !(self.memory_throttling_factor > 0.0 && self.memory_throttling_factor <= 1.0) {
            e.add("memoryThrottlingFactor", self.memory_throttling_factor, "must be greater than 0 and at most 1.0");
        }
        if self.run_once {
            e.add("runOnce", true, "runOnce mode is deprecated and must not be set");
        }
    }

    fn check_periods(&self, e: &mut Errors) {
        for (field, value) in [
            ("syncFrequency", self.sync_frequency),
            ("fileCheckFrequency", self.file_check_frequency),
            ("httpCheckFrequency", self.http_check_frequency),
            ("nodeStatusUpdateFrequency", self.node_status_update_frequency),
            ("nodeStatusReportFrequency", self.node_status_report_frequency),
            ("streamingConnectionIdleTimeout", self.streaming_connection_idle_timeout),
            ("volumeStatsAggPeriod", self.volume_stats_agg_period),
            ("cpuManagerReconcilePeriod", self.cpu_manager_reconcile_period),
            ("draManagerReconcilePeriod", self.dra_manager_reconcile_period),
            ("runtimeRequestTimeout", self.runtime_request_timeout),
            ("evictionPressureTransitionPeriod", self.eviction_pressure_transition_period),
        ] {
            e.positive_duration(field, value);
        }
        let period = self.cpu_cfs_quota_period;
        if !self.gate("CustomCPUCFSQuotaPeriod") {
            if period != Duration::from_millis(100) {
                e.needs_gate("cpuCFSQuotaPeriod", period, "CustomCPUCFSQuotaPeriod");
            }
        } else if period < Duration::from_millis(1) || period > Duration::from_secs(1) {
            e.add("cpuCFSQuotaPeriod", period, "must be between 1ms and 1s, inclusive");
        }
    }

    fn check_images(&self, e: &mut Errors) {
        let (high, low) = (self.image_gc_high_threshold_percent, self.image_gc_low_threshold_percent);
        e.in_range("imageGCHighThresholdPercent", high.into(), 0, 100);
        e.in_range("imageGCLowThresholdPercent", low.into(), 0, 100);
        if low >= high {
            e.add("imageGCLowThresholdPercent", low, format!("must be less than imageGCHighThresholdPercent ({high})"));
        }
        let (min_age, max_age) = (self.image_minimum_gc_age, self.image_maximum_gc_age);
        if min_age.is_negative() {
            e.add("imageMinimumGCAge", min_age, "must not be negative");
        }
        if max_age.is_negative() {
            e.add("imageMaximumGCAge", max_age, "must not be negative");
        }
        if !max_age.is_zero() && !self.gate("ImageMaximumGCAge") {
            e.needs_gate("imageMaximumGCAge", max_age, "ImageMaximumGCAge");
        }
        if max_age.as_nanos() > 0 && max_age <= min_age {
            e.add("imageMaximumGCAge", max_age, format!("must be greater than imageMinimumGCAge ({min_age})"));
        }
        if let Some(n) = self.max_parallel_image_pulls {
            if n < 1 {
                e.add("maxParallelImagePulls", n, "must be greater than 0");
            } else if n > 1 && self.serialize_image_pulls {
                e.add("maxParallelImagePulls", n, "must be 1 or unset when serializeImagePulls is true");
            }
        }
        let policy = &self.image_pull_credentials_verification_policy;
        let allowlist = &self.preloaded_images_verification_allowlist;
        if self.gate("KubeletEnsureSecretPulledImages") {
            e.one_of(
                "imagePullCredentialsVerificationPolicy",
                policy,
                &["NeverVerify", "NeverVerifyPreloadedImages", "NeverVerifyAllowlistedImages", "AlwaysVerify"],
            );
            if !allowlist.is_empty() && policy != "NeverVerifyAllowlistedImages" {
                e.add(
                    "preloadedImagesVerificationAllowlist",
                    format!("{allowlist:?}"),
                    "requires imagePullCredentialsVerificationPolicy NeverVerifyAllowlistedImages",
                );
            }
        } else {
            if !policy.is_empty() {
                e.needs_gate("imagePullCredentialsVerificationPolicy", q(policy), "KubeletEnsureSecretPulledImages");
            }
            if !allowlist.is_empty() {
                e.needs_gate(
                    "preloadedImagesVerificationAllowlist",
                    format!("{allowlist:?}"),
                    "KubeletEnsureSecretPulledImages",
                );
            }
        }
    }

    fn check_node(&self, e: &mut Errors) {
        for (i, ip) in self.cluster_dns.iter().enumerate() {
            if !checks::is_ip(ip) {
                e.add(format!("clusterDNS[{i}]"), q(ip), "must be an IP address");
            }
        }
        e.one_of("hairpinMode", &self.hairpin_mode, &["promiscuous-bridge", "hairpin-veth", "none"]);
        e.one_of(
            "configMapAndSecretChangeDetectionStrategy",
            &self.config_map_and_secret_change_detection_strategy,
            &["Get", "Cache", "Watch"],
        );
        for (i, taint) in self.register_with_taints.iter().enumerate() {
            let field = |name: &str| format!("registerWithTaints[{i}].{name}");
            if !checks::is_qualified_name(&taint.key) {
                e.add(field("key"), q(&taint.key), "must be a qualified name");
            }
            if !checks::is_label_value(&taint.value) {
                e.add(field("value"), q(&taint.value), "must be a valid label value");
            }
            e.one_of(&field("effect"), &taint.effect, &["NoSchedule", "PreferNoSchedule", "NoExecute"]);
            if let Some(t) = &taint.time_added {
                e.add(field("timeAdded"), q(t), "must not be set");
            }
        }
        for (i, sysctl) in self.allowed_unsafe_sysctls.iter().enumerate() {
            if !checks::is_sysctl_pattern(sysctl) {
                e.add(format!("allowedUnsafeSysctls[{i}]"), q(sysctl), "must be a sysctl name or prefix* pattern");
            }
        }
        if self.container_runtime_endpoint.is_empty() {
            e.add("containerRuntimeEndpoint", q(""), "must not be empty");
        }
        let dir = &self.pod_logs_dir;
        if !checks::is_clean_absolute_path(dir) {
            e.add("podLogsDir", q(dir), "must be an absolute, normalized path");
        } else if !dir.is_ascii() {
            e.add("podLogsDir", q(dir), "must contain ASCII characters only");
        }
        let swap = &self.memory_swap.swap_behavior;
        if self.gate("NodeSwap") {
            e.one_of("memorySwap.swapBehavior", swap, &["", "NoSwap", "LimitedSwap"]);
        } else if !swap.is_empty() {
            e.needs_gate("memorySwap.swapBehavior", q(swap), "NodeSwap");
        }
        let cap = self.crash_loop_back_off.max_container_restart_period;
        let field = "crashLoopBackOff.maxContainerRestartPeriod";
        match (self.gate("KubeletCrashLoopBackOffMax"), cap) {
            (true, None) => e.add(field, q(""), "must be set when KubeletCrashLoopBackOffMax is enabled"),
            (true, Some(d)) if d < Duration::from_secs(1) || d > Duration::from_secs(300) => {
                e.add(field, d, "must be between 1s and 300s")
            }
            (false, Some(d)) => e.needs_gate(field, d, "KubeletCrashLoopBackOffMax"),
            _ => {}
        }
    }

    fn check_managers(&self, e: &mut Errors) {
        e.one_of("cgroupDriver", &self.cgroup_driver, &["cgroupfs", "systemd"]);
        if !self.system_cgroups.is_empty() && self.cgroup_root.is_empty() {
            e.add("systemCgroups", q(&self.system_cgroups), "requires cgroupRoot to be set");
        }
        e.one_of("cpuManagerPolicy", &self.cpu_manager_policy, &["none", "static"]);
        e.one_of("memoryManagerPolicy", &self.memory_manager_policy, &["None", "Static"]);
        e.one_of(
            "topologyManagerPolicy",
            &self.topology_manager_policy,
            &["none", "best-effort", "restricted", "single-numa-node"],
        );
        e.one_of("topologyManagerScope", &self.topology_manager_scope, &["container", "pod"]);
        let policy = &self.memory_reservation_policy;
        e.one_of("memoryReservationPolicy", policy, &["None", "TieredReservation"]);
        if policy == "TieredReservation" && !self.gate("MemoryQoS") {
            e.needs_gate("memoryReservationPolicy", q(policy), "MemoryQoS");
        }
        for (key, value) in &self.qos_reserved {
            let field = format!("qosReserved[{key}]");
            if key != "memory" {
                e.add(field, q(value), "only memory can be reserved");
                continue;
            }
            let pct = value.strip_suffix('%').and_then(|v| v.parse::<i64>().ok());
            if !pct.is_some_and(|p| (0..=100).contains(&p)) {
                e.add(field, q(value), "must be a percentage between 0% and 100%");
            }
        }
        let mut seen = BTreeSet::new();
        for (i, reservation) in self.reserved_memory.iter().enumerate() {
            for (kind, amount) in &reservation.limits {
                let field = format!("reservedMemory[{i}].limits[{kind}]");
                if kind != "memory" && !kind.starts_with("hugepages-") {
                    e.add(&field, q(kind), "only memory and hugepages-<size> can be reserved");
                }
                if !seen.insert((reservation.numa_node, kind.clone())) {
                    e.add(&field, q(amount.as_str()), format!("duplicate for NUMA node {}", reservation.numa_node));
                }
                if amount.is_negative() {
                    e.add(&field, q(amount.as_str()), "must not be negative");
                }
            }
        }
    }

    fn check_shutdown(&self, e: &mut Errors) {
        let (total, critical) = (self.shutdown_grace_period, self.shutdown_grace_period_critical_pods);
        if self.gate("GracefulNodeShutdown") {
            if critical > total {
                e.add(
                    "shutdownGracePeriodCriticalPods",
                    critical,
                    format!("must be less than or equal to shutdownGracePeriod ({total})"),
                );
            }
            for (field, d) in [("shutdownGracePeriod", total), ("shutdownGracePeriodCriticalPods", critical)] {
                if d.is_negative() || (d.as_nanos() > 0 && d < Duration::from_secs(1)) {
                    e.add(field, d, "must be 0 or at least 1s");
                }
            }
        } else if total.as_nanos() > 0 || critical.as_nanos() > 0 {
            e.needs_gate("shutdownGracePeriod", total, "GracefulNodeShutdown");
        }
        if !self.shutdown_grace_period_by_pod_priority.is_empty() {
            let count = self.shutdown_grace_period_by_pod_priority.len();
            let value = format!("{count} entries");
            if !self.gate("GracefulNodeShutdownBasedOnPodPriority") {
                e.needs_gate("shutdownGracePeriodByPodPriority", value, "GracefulNodeShutdownBasedOnPodPriority");
            } else if total.as_nanos() > 0 || critical.as_nanos() > 0 {
                e.add(
                    "shutdownGracePeriodByPodPriority",
                    value,
                    "cannot be set together with shutdownGracePeriod or shutdownGracePeriodCriticalPods",
                );
            }
        }
    }

    fn check_logging(&self, e: &mut Errors) {
        let logging = &self.logging;
        e.one_of("logging.format", &logging.format, &["text", "json"]);
        if logging.format != "text" && !logging.vmodule.is_empty() {
            e.add(
                "logging.vmodule",
                format!("{} entries", logging.vmodule.len()),
                "only supported for the text format",
            );
        }
        for (i, item) in logging.vmodule.iter().enumerate() {
            if item.file_pattern.is_empty() || item.file_pattern.contains([',', '=']) {
                e.add(
                    format!("logging.vmodule[{i}].filePattern"),
                    q(&item.file_pattern),
                    "must be non-empty without ',' or '='",
                );
            }
        }
        e.positive_duration("logging.flushFrequency", logging.flush_frequency);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        KubeletConfiguration::default().validate().unwrap();
    }

    #[test]
    fn one_error_lists_every_bad_field() {
        let cfg = KubeletConfiguration {
            max_pods: -1,
            port: 70000,
            cgroup_driver: "docker".into(),
            image_gc_low_threshold_percent: 90,
            container_log_max_files: 1,
            oom_score_adj: -1001,
            ..Default::default()
        };
        let err = cfg.validate().unwrap_err();
        for field in
            ["maxPods", "port", "cgroupDriver", "imageGCLowThresholdPercent", "containerLogMaxFiles", "oomScoreAdj"]
        {
            assert!(err.has(field), "{field} missing from {err}");
        }
        let text = err.to_string();
        assert!(text.contains("maxPods: -1: must be greater than or equal to 0"), "{text}");
        assert!(text.contains("port: 70000: must be between 1 and 65535, inclusive"), "{text}");
        assert!(text.contains("cgroupDriver: \"docker\": must be one of \"cgroupfs\", \"systemd\""), "{text}");
        assert!(
            text.contains("imageGCLowThresholdPercent: 90: must be less than imageGCHighThresholdPercent (85)"),
            "{text}"
        );
    }

    #[test]
    fn feature_gated_fields_need_their_gate() {
        let mut cfg = KubeletConfiguration { cpu_cfs_quota_period: Duration::from_millis(50), ..Default::default() };
        assert!(cfg.validate().unwrap_err().has("cpuCFSQuotaPeriod"));
        cfg.feature_gates.insert("CustomCPUCFSQuotaPeriod".into(), true);
        cfg.validate().unwrap();
    }

    #[test]
    fn shutdown_periods_are_exclusive_with_priorities() {
        let cfg = KubeletConfiguration {
            shutdown_grace_period: Duration::from_secs(30),
            shutdown_grace_period_critical_pods: Duration::from_secs(60),
            shutdown_grace_period_by_pod_priority: vec![Default::default()],
            ..Default::default()
        };
        let err = cfg.validate().unwrap_err();
        assert!(err.has("shutdownGracePeriodCriticalPods"));
        assert!(err.has("shutdownGracePeriodByPodPriority"));
    }
}
