//! One node, composed in one place. [`Config::from_kubelet_config`] turns the
//! KubeletConfiguration and the command-line-only options into per-subsystem configs;
//! [`build`] makes every subsystem's handle and task from them and the injected parts (runtime,
//! API, clock, metrics) without spawning anything; [`Built::spawn`] binds the servers and starts
//! every task in one `JoinSet` under one cancellation token, and the [`Running`] node it returns
//! is shut down and awaited by its caller. The binary, the hollow nodes, the bench and the tests
//! all compose their nodes here; hollow nodes and fake-runtime tests leave out the host-level
//! subsystems ([`Config::host`]: cgroups, stats, CSI, eviction, GC, log rotation, the servers).

mod build;
mod running;

pub use build::{Built, Parts, build};
pub use running::{Running, Stopped};

use crate::node_ips::NodeIps;
use crate::sources::{self, SourceKind};
use crate::{cm, eviction, gc, images, lease, logs, node_status, server, status_manager};
use kubelet_config::{KubeletConfiguration, NodeOptions};
use std::collections::HashSet;
use std::net::{AddrParseError, IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}: must not be negative")]
    Negative(&'static str),
    #[error("{flag}: {value} must be greater than 0 and at most 2m")]
    RelistPeriod { flag: &'static str, value: kubelet_config::Duration },
    #[error(transparent)]
    NodeName(#[from] kubelet_config::FlagsError),
    #[error("running with swap on is not supported, please disable swap or set --fail-swap-on flag to false")]
    SwapOn,
    #[error("--root-dir {}", path.display())]
    RootDir { path: PathBuf, source: std::io::Error },
    #[error("--root-dir: setting the mode of {}", path.display())]
    RootDirMode { path: PathBuf, source: std::io::Error },
    #[error("{field}: {value:?}")]
    Address { field: &'static str, value: String, source: AddrParseError },
    #[error(transparent)]
    NodeStatus(#[from] node_status::ConfigError),
    #[error(transparent)]
    Eviction(#[from] eviction::ConfigError),
    #[error(transparent)]
    Sysctls(#[from] crate::admission::sysctl::Error),
    #[error(transparent)]
    KubeletServer(#[from] server::kubelet_port::Error),
    #[error(transparent)]
    NodeIp(#[from] crate::node_ips::Error),
    #[error(transparent)]
    CredentialProviders(#[from] crate::credential_provider::ConfigError),
    /// Upstream (NewMainKubelet) refuses every in-tree cloud provider name.
    #[error(
        "cloud provider {0:?} was specified, but built-in cloud providers are disabled. Please set --cloud-provider=external and migrate to an external cloud provider"
    )]
    CloudProvider(String),
    #[error("container manager")]
    ContainerManager(#[source] cm::Error),
    #[error("cgroup driver")]
    CgroupDriver(#[source] cm::driver::Error),
    #[error("pod resources socket {}", path.display())]
    PodResources { path: PathBuf, source: std::io::Error },
    #[error("device plugin registration socket {}", path.display())]
    DevicePlugins { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Allocation(#[from] crate::allocation::state::Error),
    #[error("{what} on {addr}")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
}

pub type Result<T> = std::result::Result<T, Error>;

/// Who the node is: its name and primary IP.
#[derive(Debug, Clone)]
pub struct Identity {
    pub node_name: String,
    pub node_ip: Option<String>,
}

impl Identity {
    /// The node name from `--hostname-override`, else the host name; the primary IP from
    /// `--node-ip` (or the file's nodeIP), else (also for `0.0.0.0` / `::`) the source address
    /// of the default route.
    pub fn of_host(node: &NodeOptions) -> Result<Self> {
        let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let node_name = node.node_name(&host_name)?;
        let ips = NodeIps::parse(node.node_ip.as_deref().unwrap_or_default())?;
        Ok(Self { node_name, node_ip: ips.resolve_primary().map(|ip| ip.to_string()) })
    }
}

/// The credential provider plugins of `--image-credential-provider-config`, checked at start-up.
fn credential_providers(node: &NodeOptions) -> Result<Option<crate::credential_provider::Providers>> {
    use crate::credential_provider as cp;
    match (&node.image_credential_provider_config, &node.image_credential_provider_bin_dir) {
        (None, None) => Ok(None),
        (Some(config), Some(bin_dir)) => Ok(Some(cp::Providers::new(cp::load(config, bin_dir)?))),
        _ => Err(cp::ConfigError::Incomplete.into()),
    }
}

/// `--cloud-provider`: "" or "external"; `--node-ip`'s second address and, with an external
/// cloud provider, the provided-node-ip annotation (upstream's NodeAddress setter).
fn cloud_and_node_ips(node: &NodeOptions, status: &mut node_status::Config) -> Result<()> {
    match node.cloud_provider.as_deref().unwrap_or_default() {
        "" => {}
        "external" => status.external_cloud_provider = true,
        other => return Err(Error::CloudProvider(other.to_string())),
    }
    let ips = NodeIps::parse(node.node_ip.as_deref().unwrap_or_default())?;
    status.secondary_node_ip = ips.secondary.map(|ip| ip.to_string());
    status.provided_node_ip = ips.provided().filter(|_| status.external_cloud_provider);
    Ok(())
}

/// Every subsystem's config. Fields are public: callers (hollow nodes, tests) adjust what the
/// KubeletConfiguration cannot say before [`build`].
#[derive(Debug, Clone)]
pub struct Config {
    pub node_name: String,
    pub node_ip: Option<String>,
    pub root_dir: PathBuf,
    pub images: images::Config,
    /// registryPullQPS / registryBurst (None: pulls are not rate limited).
    pub registry_limit: Option<(f64, u32)>,
    /// eventRecordQPS / eventBurst (events are recorded only with an API server).
    pub event_qps: f64,
    pub event_burst: u32,
    /// syncFrequency: pod resync and the rewrite of API-backed volumes.
    pub sync_frequency: Duration,
    pub cluster_dns: Vec<String>,
    pub cluster_domain: String,
    pub resolv_conf: PathBuf,
    pub pod_logs_dir: PathBuf,
    /// Where the `/var/log/containers` symlinks go.
    pub container_logs_dir: PathBuf,
    pub sources: Sources,
    /// Used with an API server (node status, lease, status sync); its labels and taints are
    /// also the node's for admission.
    pub node_status: node_status::Config,
    pub lease: lease::Config,
    pub status_sync: status_manager::sync::Config,
    /// None: no PLEG; the caller feeds PLEG events by hand ([`Running::pleg_events`]) and
    /// workers list their pod themselves.
    pub pleg: Option<Pleg>,
    /// maxPods, for admission.
    pub max_pods: i64,
    /// allowedUnsafeSysctls: names and `prefix*` patterns pods may set besides the safe set.
    pub allowed_unsafe_sysctls: Vec<String>,
    /// seccompDefault: RuntimeDefault for containers that name no seccomp profile.
    pub seccomp_default: bool,
    /// Whether the host enforces AppArmor (`/sys/module/apparmor/parameters/enabled`); pods that
    /// ask for a profile are refused when it does not.
    pub apparmor: crate::admission::apparmor::Host,
    /// How often the dispatcher looks for orphaned pods.
    pub housekeeping: Duration,
    /// `--image-credential-provider-config` / `-bin-dir`: pull credentials from exec plugins.
    pub credential_providers: Option<crate::credential_provider::Providers>,
    /// The host-level subsystems; None for hollow nodes and fake-runtime tests.
    pub host: Option<Host>,
    /// featureGates (the gates not listed keep upstream's defaults: `kubelet_config::features`).
    pub feature_gates: std::collections::BTreeMap<String, bool>,
}

/// The pod sources.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// staticPodPath.
    pub file: Option<sources::file::Config>,
    /// staticPodURL.
    pub http: Option<sources::http::Config>,
    /// Sources the caller feeds through [`Running::snapshots`]: orphans are removed only after
    /// each has sent a first snapshot.
    pub fed: HashSet<SourceKind>,
}

#[derive(Debug, Clone)]
pub struct Pleg {
    pub relist_period: Duration,
    pub relist_period_with_events: Duration,
    /// containerRuntimeEndpoint: when the runtime is containerd, the PLEG takes exits from
    /// containerd's own events there.
    pub runtime_endpoint: Option<String>,
}

/// What a kubelet on a real host runs besides the pod machinery.
#[derive(Debug, Clone)]
pub struct Host {
    /// failSwapOn.
    pub fail_swap_on: bool,
    pub container_manager: cm::Config,
    pub eviction: eviction::Config,
    pub log_rotation: logs::rotate::Config,
    pub image_gc: gc::images::Policy,
    /// None when imageGCHighThresholdPercent is 100 (image GC off).
    pub image_gc_period: Option<Duration>,
    pub container_gc_period: Duration,
    /// `--pod-infra-container-image`: never removed by image GC (nor is the runtime's sandbox image).
    pub keep_images: Vec<String>,
    /// healthzBindAddress:healthzPort.
    pub healthz: Option<SocketAddr>,
    /// address:readOnlyPort.
    pub read_only: Option<SocketAddr>,
    /// address:port, when enableServer.
    pub kubelet_server: Option<server::kubelet_port::Config>,
    /// `/healthz` fails once no relist succeeded for this long (upstream: 3 min).
    pub pleg_health_threshold: Duration,
    /// Graceful node shutdown (None: `shutdownGracePeriod` 0 and no by-priority list).
    pub node_shutdown: Option<crate::nodeshutdown::Config>,
    /// The pod resources API on `<root-dir>/pod-resources/kubelet.sock` (None: not served).
    pub pod_resources: Option<crate::podresources::Config>,
}

fn duration(d: kubelet_config::Duration, field: &'static str) -> Result<Duration> {
    d.to_std().ok_or(Error::Negative(field))
}

/// A PLEG period flag: positive and at most 2 minutes (`/healthz` fails once no relist
/// succeeded for 3 minutes, upstream's PLEG health threshold).
fn relist_period(flag: &'static str, d: Option<kubelet_config::Duration>) -> Result<Option<Duration>> {
    let Some(d) = d else { return Ok(None) };
    match d.to_std() {
        Some(p) if p > Duration::ZERO && p <= Duration::from_secs(120) => Ok(Some(p)),
        _ => Err(Error::RelistPeriod { flag, value: d }),
    }
}

fn address(field: &'static str, value: &str, port: i32) -> Result<SocketAddr> {
    let ip: IpAddr = value.parse().map_err(|source| Error::Address { field, value: value.to_string(), source })?;
    Ok(SocketAddr::new(ip, port as u16))
}

impl Config {
    /// A kubelet's node from its KubeletConfiguration and command-line-only options, the host
    /// subsystems included.
    pub fn from_kubelet_config(cfg: &KubeletConfiguration, node: &NodeOptions, id: Identity) -> Result<Self> {
        let relist = relist_period("--pleg-relist-period", node.pleg_relist_period)?;
        let relist_with_events =
            relist_period("--pleg-relist-period-with-events", node.pleg_relist_period_with_events)?;
        let Identity { node_name, node_ip } = id;
        let root_dir = node.root_dir.clone();
        let sync_frequency = duration(cfg.sync_frequency, "syncFrequency")?;
        let max_parallel_pulls =
            if cfg.serialize_image_pulls { Some(1) } else { cfg.max_parallel_image_pulls.map(|n| n as usize) };
        let mut sources = Sources::default();
        if !cfg.static_pod_path.is_empty() {
            sources.file = Some(sources::file::Config {
                dir: PathBuf::from(&cfg.static_pod_path),
                node_name: node_name.clone(),
                period: duration(cfg.file_check_frequency, "fileCheckFrequency")?,
            });
        }
        if !cfg.static_pod_url.is_empty() {
            sources.http = Some(sources::http::Config {
                url: cfg.static_pod_url.clone(),
                headers: cfg.static_pod_url_header.clone().into_iter().collect(),
                node_name: node_name.clone(),
                period: duration(cfg.http_check_frequency, "httpCheckFrequency")?,
            });
        }
        let mut node_status = node_status::Config::from_kubelet_config(
            cfg,
            node_status::Identity {
                node_name: node_name.clone(),
                node_ip: node_ip.clone(),
                labels: node.node_labels.clone(),
                root_dir: root_dir.clone(),
            },
        )?;
        cloud_and_node_ips(node, &mut node_status)?;
        let mut pleg = Pleg {
            relist_period: Duration::from_secs(1),
            relist_period_with_events: Duration::from_secs(30),
            runtime_endpoint: Some(cfg.container_runtime_endpoint.clone()),
        };
        if let Some(d) = relist {
            pleg.relist_period = d;
        }
        if let Some(d) = relist_with_events {
            pleg.relist_period_with_events = d;
        }
        let host = Host::from_kubelet_config(cfg, node, &node_name, node_ip.as_deref())?;
        Ok(Self {
            images: images::Config { max_parallel_pulls },
            registry_limit: Some((f64::from(cfg.registry_pull_qps), cfg.registry_burst.max(1) as u32)),
            event_qps: f64::from(cfg.event_record_qps),
            event_burst: cfg.event_burst.max(1) as u32,
            sync_frequency,
            cluster_dns: cfg.cluster_dns.clone(),
            cluster_domain: cfg.cluster_domain.clone(),
            resolv_conf: PathBuf::from(&cfg.resolv_conf),
            pod_logs_dir: PathBuf::from(&cfg.pod_logs_dir),
            container_logs_dir: crate::pod::executor::CONTAINER_LOGS_DIR.into(),
            sources,
            node_status,
            lease: lease::Config { node_name: node_name.clone(), duration_secs: cfg.node_lease_duration_seconds },
            status_sync: status_manager::sync::Config { node_name: node_name.clone(), resync: Duration::from_secs(10) },
            pleg: Some(pleg),
            max_pods: i64::from(cfg.max_pods),
            allowed_unsafe_sysctls: cfg.allowed_unsafe_sysctls.clone(),
            seccomp_default: cfg.seccomp_default,
            apparmor: crate::admission::apparmor::Host::detect(),
            housekeeping: Duration::from_secs(10),
            credential_providers: credential_providers(node)?,
            host: Some(host),
            feature_gates: cfg.feature_gates.clone(),
            node_name,
            node_ip,
            root_dir,
        })
    }

    /// A node sharing its process and host with others (hollow nodes, the bench, tests):
    /// upstream's defaults without the host part, unbounded and unthrottled image pulls,
    /// `cluster.local`, no resolv.conf, no PLEG subscription to containerd, no reservations, and
    /// pod logs and container log links below `root_dir` (`logs`, `containers`).
    pub fn in_process(id: Identity, root_dir: PathBuf) -> Result<Self> {
        let node = NodeOptions::with_root_dir(root_dir.clone());
        let mut c = Self::from_kubelet_config(&KubeletConfiguration::default(), &node, id)?;
        c.host = None;
        c.images.max_parallel_pulls = None;
        c.registry_limit = None;
        c.cluster_domain = "cluster.local".into();
        c.resolv_conf = "/nonexistent".into();
        c.pod_logs_dir = root_dir.join("logs");
        c.container_logs_dir = root_dir.join("containers");
        c.node_status.reserved_memory = 0;
        if let Some(p) = c.pleg.as_mut() {
            p.runtime_endpoint = None;
        }
        Ok(c)
    }

    /// Before the runtime is connected: refuses to run with swap on (failSwapOn) and creates
    /// `<root-dir>/pods`. As upstream, the root and pods directories are not readable by other
    /// users (secrets and tokens live below them).
    pub fn prepare_host(&self) -> Result<()> {
        if self.host.as_ref().is_some_and(|h| h.fail_swap_on) && swap_enabled() {
            return Err(Error::SwapOn);
        }
        let pods = self.root_dir.join("pods");
        std::fs::create_dir_all(&pods).map_err(|source| Error::RootDir { path: self.root_dir.clone(), source })?;
        for dir in [self.root_dir.clone(), pods] {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750))
                .map_err(|source| Error::RootDirMode { path: dir.clone(), source })?;
        }
        Ok(())
    }
}

impl Host {
    fn from_kubelet_config(
        cfg: &KubeletConfiguration,
        node: &NodeOptions,
        node_name: &str,
        node_ip: Option<&str>,
    ) -> Result<Self> {
        // The hidden --housekeeping-period-for-tests shortens the GC and eviction periods for
        // the e2e tests.
        let housekeeping = node.housekeeping_period_for_tests.and_then(|d| d.to_std());
        let mut eviction =
            eviction::Config::from_kubelet_config(cfg, node.root_dir.clone()).map_err(Error::Eviction)?;
        if let Some(p) = housekeeping {
            eviction.monitoring_interval = p;
        }
        let healthz = match cfg.healthz_port > 0 {
            true => Some(address("healthzBindAddress", &cfg.healthz_bind_address, cfg.healthz_port)?),
            false => None,
        };
        let read_only = match cfg.read_only_port > 0 {
            true => Some(address("address", &cfg.address, cfg.read_only_port)?),
            false => None,
        };
        let kubelet_server = match cfg.enable_server {
            true => {
                Some(server::kubelet_port::Config::from_kubelet_config(cfg, node.cert_dir.clone(), node_name, node_ip)?)
            }
            false => None,
        };
        let mut container_manager = cm::Config::from_kubelet(cfg);
        if let Some(dir) = &node.systemd_dir_for_tests {
            container_manager.systemd_run_dir = dir.join("system");
            container_manager.systemd_socket = Some(dir.join("bus"));
        }
        Ok(Self {
            fail_swap_on: cfg.fail_swap_on,
            container_manager,
            eviction,
            log_rotation: logs::rotate::Config::from_kubelet_config(cfg),
            image_gc: gc::images::Policy::from_kubelet_config(cfg),
            image_gc_period: (cfg.image_gc_high_threshold_percent < 100)
                .then(|| housekeeping.unwrap_or(gc::IMAGE_GC_PERIOD)),
            container_gc_period: housekeeping.unwrap_or(gc::CONTAINER_GC_PERIOD),
            keep_images: node.pod_infra_container_image.clone().into_iter().collect(),
            node_shutdown: crate::nodeshutdown::Config::from_kubelet_config(cfg, node_name, &node.root_dir),
            healthz,
            read_only,
            kubelet_server,
            pleg_health_threshold: Duration::from_secs(180),
            pod_resources: Some(crate::podresources::Config::new(
                &node.root_dir,
                kubelet_config::features::enabled(&cfg.feature_gates, "KubeletPodResourcesGet"),
            )),
        })
    }
}

/// Whether /proc/swaps lists any active swap area.
fn swap_enabled() -> bool {
    std::fs::read_to_string("/proc/swaps").is_ok_and(|s| s.lines().skip(1).any(|l| !l.trim().is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> Identity {
        Identity { node_name: "n1".into(), node_ip: Some("192.0.2.1".into()) }
    }

    #[test]
    fn the_defaults_give_upstreams_periods_and_every_host_subsystem() {
        let node = NodeOptions::with_root_dir("/r".into());
        let c = Config::from_kubelet_config(&KubeletConfiguration::default(), &node, id()).unwrap();
        assert_eq!(c.sync_frequency, Duration::from_secs(60));
        assert_eq!(c.pleg.as_ref().unwrap().relist_period, Duration::from_secs(1));
        let host = c.host.unwrap();
        assert_eq!(host.healthz, Some("127.0.0.1:10248".parse().unwrap()));
        assert_eq!(host.read_only, None);
        assert!(host.kubelet_server.is_some());
        assert_eq!(host.container_gc_period, gc::CONTAINER_GC_PERIOD);
        assert!(c.sources.file.is_none() && c.sources.http.is_none());
    }

    #[test]
    fn a_bad_relist_period_is_named() {
        let mut node = NodeOptions::with_root_dir("/r".into());
        node.pleg_relist_period_with_events = Some(kubelet_config::Duration::parse("10m").unwrap());
        let e = Config::from_kubelet_config(&KubeletConfiguration::default(), &node, id()).unwrap_err();
        assert_eq!(e.to_string(), "--pleg-relist-period-with-events: 10m0s must be greater than 0 and at most 2m");
    }

    #[test]
    fn the_housekeeping_flag_shortens_gc_and_eviction() {
        let mut node = NodeOptions::with_root_dir("/r".into());
        node.housekeeping_period_for_tests = Some(kubelet_config::Duration::parse("2s").unwrap());
        let c = Config::from_kubelet_config(&KubeletConfiguration::default(), &node, id()).unwrap();
        let host = c.host.unwrap();
        assert_eq!(host.container_gc_period, Duration::from_secs(2));
        assert_eq!(host.image_gc_period, Some(Duration::from_secs(2)));
        assert_eq!(host.eviction.monitoring_interval, Duration::from_secs(2));
    }
}
