//! Command-line flags with the upstream kubelet names. Every flag is optional: a flag that is
//! given overrides the configuration file, one that is not leaves the file's value alone.
//! Flag-only settings (root dir, kubeconfig, node name, labels) end up in `NodeOptions`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Parser;

use crate::duration::Duration;
use crate::types::KubeletConfiguration;

/// Errors in flag values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagsError {
    #[error("{0:?} is not key=value")]
    NotKeyValue(String),
    #[error("{key}: {value:?} is not true or false")]
    NotBool { key: String, value: String },
    #[error("{0:?}: a label key must not be empty")]
    EmptyKey(String),
    #[error("node name is empty: set --hostname-override or the host name")]
    EmptyNodeName,
}

/// Default of `--root-dir`.
pub const DEFAULT_ROOT_DIR: &str = "/var/lib/kubelet";

/// The kubelet's command line.
#[derive(Debug, Clone, Default, PartialEq, Parser)]
#[command(name = "kubelet", about = "The Kubernetes node agent", version)]
pub struct Flags {
    /// KubeletConfiguration file (YAML or JSON); flags given here override its values.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// kubeconfig for the API server; without it the kubelet runs standalone.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// kubeconfig used to get a client certificate when --kubeconfig does not exist yet.
    #[arg(long)]
    pub bootstrap_kubeconfig: Option<PathBuf>,
    /// CRI runtime endpoint (containerRuntimeEndpoint).
    #[arg(long)]
    pub container_runtime_endpoint: Option<String>,
    /// CRI image endpoint (imageServiceEndpoint).
    #[arg(long)]
    pub image_service_endpoint: Option<String>,
    /// Directory for kubelet state (flag only). [default: /var/lib/kubelet]
    #[arg(long)]
    pub root_dir: Option<PathBuf>,
    /// Static pod manifests directory or file (staticPodPath).
    #[arg(long)]
    pub pod_manifest_path: Option<String>,
    /// URL serving static pods (staticPodURL).
    #[arg(long)]
    pub manifest_url: Option<String>,
    /// Node name to use instead of the host name.
    #[arg(long)]
    pub hostname_override: Option<String>,
    /// Node IP address(es), comma-separated for dual stack.
    #[arg(long)]
    pub node_ip: Option<String>,
    /// Labels added when registering the node: key=value,key2=value2.
    #[arg(long, value_parser = parse_labels)]
    pub node_labels: Option<BTreeMap<String, String>>,
    /// Register the node with the API server (registerNode).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub register_node: Option<bool>,
    /// Unauthenticated read-only port, 0 disables (readOnlyPort).
    #[arg(long)]
    pub read_only_port: Option<i32>,
    /// Localhost healthz port, 0 disables (healthzPort).
    #[arg(long)]
    pub healthz_port: Option<i32>,
    /// Healthz server address (healthzBindAddress).
    #[arg(long)]
    pub healthz_bind_address: Option<String>,
    /// Kubelet API address (address).
    #[arg(long)]
    pub address: Option<String>,
    /// Kubelet API port (port).
    #[arg(long)]
    pub port: Option<i32>,
    /// Maximum pods on this node (maxPods).
    #[arg(long)]
    pub max_pods: Option<i32>,
    /// cgroupfs or systemd (cgroupDriver).
    #[arg(long)]
    pub cgroup_driver: Option<String>,
    /// Root cgroup for pods (cgroupRoot).
    #[arg(long)]
    pub cgroup_root: Option<String>,
    /// Timeout of runtime requests (runtimeRequestTimeout), e.g. 2m0s.
    #[arg(long)]
    pub runtime_request_timeout: Option<Duration>,
    /// Refuse to start with swap on (failSwapOn).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub fail_swap_on: Option<bool>,
    /// RuntimeDefault seccomp profile for containers that name none (seccompDefault).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub seccomp_default: Option<bool>,
    /// Deprecated: the sandbox image is configured in the runtime.
    #[arg(long)]
    pub pod_infra_container_image: Option<String>,
    /// Cluster DNS server IPs, comma-separated (clusterDNS).
    #[arg(long, value_delimiter = ',')]
    pub cluster_dns: Option<Vec<String>>,
    /// Cluster DNS domain (clusterDomain).
    #[arg(long)]
    pub cluster_domain: Option<String>,
    /// Max period between syncs (syncFrequency).
    #[arg(long)]
    pub sync_frequency: Option<Duration>,
    /// Period of static pod path checks (fileCheckFrequency).
    #[arg(long)]
    pub file_check_frequency: Option<Duration>,
    /// Period of static pod URL checks (httpCheckFrequency).
    #[arg(long)]
    pub http_check_frequency: Option<Duration>,
    /// Feature gates: Gate=true,Other=false; merged over the file's featureGates.
    #[arg(long, value_parser = parse_feature_gates)]
    pub feature_gates: Option<BTreeMap<String, bool>>,
    /// Log verbosity (logging.verbosity).
    /// Directory of the self-signed serving pair (kubelet.crt/kubelet.key); default <root-dir>/pki.
    #[arg(long)]
    pub cert_dir: Option<PathBuf>,
    #[arg(long)]
    pub tls_cert_file: Option<String>,
    #[arg(long)]
    pub tls_private_key_file: Option<String>,
    #[arg(long)]
    pub tls_min_version: Option<String>,
    #[arg(long, value_delimiter = ',')]
    pub tls_cipher_suites: Option<Vec<String>>,
    /// Client certificate rotation through CSRs (rotateCertificates).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub rotate_certificates: Option<bool>,
    /// Serving certificate from a kubelet-serving CSR, rotated (serverTLSBootstrap).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub rotate_server_certificates: Option<bool>,
    #[arg(long)]
    pub client_ca_file: Option<String>,
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub anonymous_auth: Option<bool>,
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub authentication_token_webhook: Option<bool>,
    #[arg(long, value_parser = ["AlwaysAllow", "Webhook"])]
    pub authorization_mode: Option<String>,
    #[arg(short = 'v', long = "v")]
    pub verbosity: Option<u32>,
    /// Only "external" (or empty): in-tree cloud providers are gone.
    #[arg(long, value_parser = ["external", ""])]
    pub cloud_provider: Option<String>,
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
    #[arg(long)]
    pub pleg_relist_period: Option<Duration>,
    /// This kubelet's own (upstream's Evented PLEG hard-codes 300 s): the backstop relist period
    /// while container events flow.
    #[arg(long)]
    pub pleg_relist_period_with_events: Option<Duration>,
}

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
    /// --cloud-provider ("external" or empty).
    pub cloud_provider: Option<String>,
    /// --pod-infra-container-image (deprecated; image GC never removes it).
    pub pod_infra_container_image: Option<String>,
    /// --housekeeping-period-for-tests (hidden).
    pub housekeeping_period_for_tests: Option<Duration>,
    /// --systemd-dir-for-tests (hidden).
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
}

fn key_values(text: &str) -> Result<Vec<(String, String)>, FlagsError> {
    text.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (k, v) = part.split_once('=').ok_or_else(|| FlagsError::NotKeyValue(part.to_string()))?;
            if k.trim().is_empty() {
                return Err(FlagsError::EmptyKey(part.to_string()));
            }
            Ok((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

/// Parses `k=v,k2=v2`.
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, FlagsError> {
    Ok(key_values(text)?.into_iter().collect())
}

/// Parses `Gate=true,Other=false`.
pub fn parse_feature_gates(text: &str) -> Result<BTreeMap<String, bool>, FlagsError> {
    key_values(text)?
        .into_iter()
        .map(|(key, value)| match value.to_ascii_lowercase().as_str() {
            "true" => Ok((key, true)),
            "false" => Ok((key, false)),
            _ => Err(FlagsError::NotBool { key, value }),
        })
        .collect()
}

impl Flags {
    /// Writes every given flag over `cfg` and returns the flag-only settings.
    pub fn apply(&self, cfg: &mut KubeletConfiguration) -> NodeOptions {
        fn set<T: Clone>(target: &mut T, flag: &Option<T>) {
            if let Some(value) = flag {
                *target = value.clone();
            }
        }
        set(&mut cfg.container_runtime_endpoint, &self.container_runtime_endpoint);
        set(&mut cfg.image_service_endpoint, &self.image_service_endpoint);
        set(&mut cfg.static_pod_path, &self.pod_manifest_path);
        set(&mut cfg.static_pod_url, &self.manifest_url);
        set(&mut cfg.node_ip, &self.node_ip);
        set(&mut cfg.register_node, &self.register_node);
        set(&mut cfg.read_only_port, &self.read_only_port);
        set(&mut cfg.healthz_port, &self.healthz_port);
        set(&mut cfg.healthz_bind_address, &self.healthz_bind_address);
        set(&mut cfg.address, &self.address);
        set(&mut cfg.port, &self.port);
        set(&mut cfg.max_pods, &self.max_pods);
        set(&mut cfg.cgroup_driver, &self.cgroup_driver);
        set(&mut cfg.cgroup_root, &self.cgroup_root);
        set(&mut cfg.runtime_request_timeout, &self.runtime_request_timeout);
        set(&mut cfg.fail_swap_on, &self.fail_swap_on);
        set(&mut cfg.seccomp_default, &self.seccomp_default);
        set(&mut cfg.cluster_dns, &self.cluster_dns);
        set(&mut cfg.cluster_domain, &self.cluster_domain);
        set(&mut cfg.sync_frequency, &self.sync_frequency);
        set(&mut cfg.file_check_frequency, &self.file_check_frequency);
        set(&mut cfg.http_check_frequency, &self.http_check_frequency);
        set(&mut cfg.logging.verbosity, &self.verbosity);
        set(&mut cfg.tls_cert_file, &self.tls_cert_file);
        set(&mut cfg.rotate_certificates, &self.rotate_certificates);
        set(&mut cfg.server_tls_bootstrap, &self.rotate_server_certificates);
        set(&mut cfg.tls_private_key_file, &self.tls_private_key_file);
        set(&mut cfg.tls_min_version, &self.tls_min_version);
        set(&mut cfg.tls_cipher_suites, &self.tls_cipher_suites);
        set(&mut cfg.authentication.x509.client_ca_file, &self.client_ca_file);
        set(&mut cfg.authentication.anonymous.enabled, &self.anonymous_auth);
        set(&mut cfg.authentication.webhook.enabled, &self.authentication_token_webhook);
        set(&mut cfg.authorization.mode, &self.authorization_mode);
        if let Some(gates) = &self.feature_gates {
            cfg.feature_gates.extend(gates.clone());
        }
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
            node_labels: self.node_labels.clone().unwrap_or_default(),
            verbosity: cfg.logging.verbosity,
            cloud_provider: self.cloud_provider.clone(),
            pod_infra_container_image: self.pod_infra_container_image.clone(),
            housekeeping_period_for_tests: self.housekeeping_period_for_tests,
            systemd_dir_for_tests: self.systemd_dir_for_tests.clone(),
            pleg_relist_period: self.pleg_relist_period,
            pleg_relist_period_with_events: self.pleg_relist_period_with_events,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> Flags {
        Flags::try_parse_from(std::iter::once("kubelet").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn rotation_flags_set_their_config_fields() {
        let mut cfg = KubeletConfiguration::default();
        flags(&["--rotate-certificates", "--rotate-server-certificates=true"]).apply(&mut cfg);
        assert!(cfg.rotate_certificates && cfg.server_tls_bootstrap);
        let mut cfg = KubeletConfiguration { rotate_certificates: true, ..Default::default() };
        flags(&["--rotate-certificates=false"]).apply(&mut cfg);
        assert!(!cfg.rotate_certificates && !cfg.server_tls_bootstrap);
    }

    #[test]
    fn flags_override_file() {
        let mut cfg = KubeletConfiguration::from_text(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
             maxPods: 20\ncgroupDriver: systemd\nclusterDomain: file.local\n\
             featureGates:\n  A: true\n  B: true\n",
        )
        .unwrap();
        let f = flags(&[
            "--max-pods=30",
            "--cgroup-driver",
            "cgroupfs",
            "--cluster-dns=10.0.0.10,10.0.0.11",
            "--feature-gates=B=false,C=true",
            "--sync-frequency=30s",
            "--register-node=false",
            "--fail-swap-on",
            "--seccomp-default",
            "-v",
            "4",
        ]);
        let node = f.apply(&mut cfg);
        assert_eq!(cfg.max_pods, 30);
        assert_eq!(cfg.cgroup_driver, "cgroupfs");
        assert_eq!(cfg.cluster_domain, "file.local", "flag not given: file wins");
        assert_eq!(cfg.cluster_dns, vec!["10.0.0.10", "10.0.0.11"]);
        assert_eq!(cfg.feature_gates, [("A".into(), true), ("B".into(), false), ("C".into(), true)].into());
        assert_eq!(cfg.sync_frequency, Duration::from_secs(30));
        assert!(!cfg.register_node);
        assert!(cfg.fail_swap_on);
        assert!(cfg.seccomp_default);
        assert_eq!(cfg.logging.verbosity, 4);
        assert_eq!(node.verbosity, 4);
        assert_eq!(node.root_dir, PathBuf::from("/var/lib/kubelet"));
    }

    #[test]
    fn no_flags_change_nothing() {
        let mut cfg = KubeletConfiguration::default();
        let node = flags(&[]).apply(&mut cfg);
        assert_eq!(cfg, KubeletConfiguration::default());
        assert_eq!(node.kubeconfig, None);
        assert_eq!(node.node_ip, None);
    }

    #[test]
    fn node_options_collect_flag_only_values() {
        let mut cfg = KubeletConfiguration::default();
        let node = flags(&[
            "--root-dir=/tmp/kubelet",
            "--kubeconfig=/etc/kubernetes/kubelet.conf",
            "--hostname-override= Node-A ",
            "--node-ip=192.168.1.5",
            "--node-labels=role=worker,zone=a",
            "--pod-manifest-path=/etc/kubernetes/manifests",
            "--cloud-provider=external",
            "--pod-infra-container-image=pause:3.9",
            "--v=2",
        ])
        .apply(&mut cfg);
        assert_eq!(node.root_dir, PathBuf::from("/tmp/kubelet"));
        assert_eq!(node.kubeconfig, Some(PathBuf::from("/etc/kubernetes/kubelet.conf")));
        assert_eq!(node.node_name("ignored").unwrap(), "node-a");
        assert_eq!(node.node_ip.as_deref(), Some("192.168.1.5"));
        assert_eq!(node.node_labels["role"], "worker");
        assert_eq!(node.node_labels["zone"], "a");
        assert_eq!(cfg.static_pod_path, "/etc/kubernetes/manifests");
        assert_eq!(node.verbosity, 2);
    }

    #[test]
    fn bad_flag_values_are_rejected() {
        let parse = |args: &[&str]| Flags::try_parse_from(std::iter::once("kubelet").chain(args.iter().copied()));
        assert!(parse(&["--cloud-provider=aws"]).is_err());
        assert!(parse(&["--node-labels=novalue"]).is_err());
        assert!(parse(&["--feature-gates=A=maybe"]).is_err());
        assert!(parse(&["--sync-frequency=10"]).is_err());
        assert!(parse(&["--max-pods=many"]).is_err());
    }

    #[test]
    fn node_name_falls_back_to_host_name() {
        let node = flags(&[]).apply(&mut KubeletConfiguration::default());
        assert_eq!(node.node_name("MyHost\n").unwrap(), "myhost");
        assert_eq!(node.node_name(" "), Err(FlagsError::EmptyNodeName));
    }
}
