//! The `kubelet` binary: reads flags and the KubeletConfiguration, then wires the subsystems
//! together. The wiring is local variables in one function, not an object holding everything.

use anyhow::{Context, bail};
use clap::Parser;
use kubelet::api::DynApi;
use kubelet::api::kube_client::KubeApi;
use kubelet::clock::{DynClock, SystemClock};
use kubelet::cri::remote::RemoteRuntime;
use kubelet::cri::{DynRuntime, Runtime};
use kubelet::events::Recorder;
use kubelet::images::{self, Images};
use kubelet::pod::admission::NodeInfo;
use kubelet::pod::dispatcher;
use kubelet::pod::executor::{CONTAINER_LOGS_DIR, Deps};
use kubelet::pod::runtime_config::NodeContext;
use kubelet::pod::worker::WorkerConfig;
use kubelet::sources::{self, SourceKind};
use kubelet::status_manager::Statuses;
use kubelet::{lease, node_status, pleg, server, status_sync};
use kubelet_config::{Flags, KubeletConfiguration};
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Fields this kubelet acts on; any other field set to a non-default value is reported once
/// as not supported yet.
const IMPLEMENTED: &[&str] = &[
    "apiVersion",
    "kind",
    "staticPodPath",
    "staticPodURL",
    "staticPodURLHeader",
    "syncFrequency",
    "fileCheckFrequency",
    "httpCheckFrequency",
    "readOnlyPort",
    "healthzPort",
    "healthzBindAddress",
    "clusterDNS",
    "clusterDomain",
    "resolvConf",
    "runtimeRequestTimeout",
    "containerRuntimeEndpoint",
    "imageServiceEndpoint",
    "serializeImagePulls",
    "maxParallelImagePulls",
    "podLogsDir",
    "logging",
    "failSwapOn",
    "nodeIP",
    "kubeAPIQPS",
    "eventRecordQPS",
    "eventBurst",
    "kubeAPIBurst",
    "registerNode",
    "registerWithTaints",
    "nodeStatusUpdateFrequency",
    "nodeStatusReportFrequency",
    "nodeLeaseDurationSeconds",
    "nodeStatusMaxImages",
    "maxPods",
    "port",
    "cgroupDriver",
    "cgroupRoot",
    "cgroupsPerQOS",
    "cpuCFSQuota",
    "cpuCFSQuotaPeriod",
    "podPidsLimit",
    "enforceNodeAllocatable",
    "systemReserved",
    "kubeReserved",
    "containerLogMaxSize",
    "containerLogMaxFiles",
    "containerLogMaxWorkers",
    "containerLogMonitorInterval",
    "enableServer",
    "address",
    "tlsCertFile",
    "tlsPrivateKeyFile",
    "tlsMinVersion",
    "tlsCipherSuites",
    "authentication",
    "authorization",
    "enableDebuggingHandlers",
    "enableSystemLogHandler",
    "evictionHard",
    "evictionSoft",
    "evictionSoftGracePeriod",
    "evictionPressureTransitionPeriod",
    "evictionMaxPodGracePeriod",
    "evictionMinimumReclaim",
    "mergeDefaultEvictionSettings",
    "imageMinimumGCAge",
    "imageMaximumGCAge",
    "imageGCHighThresholdPercent",
    "imageGCLowThresholdPercent",
    "registryPullQPS",
    "registryBurst",
];

fn init_tracing(verbosity: u32) {
    let level = match verbosity {
        0..=2 => "info",
        3..=5 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{level},h2=info,hyper=info,tower=info,tonic=info"))
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
}

fn std_duration(d: kubelet_config::duration::Duration, field: &str) -> anyhow::Result<Duration> {
    d.to_std().with_context(|| format!("{field}: must not be negative"))
}

/// Whether /proc/swaps lists any active swap area.
fn swap_enabled() -> bool {
    std::fs::read_to_string("/proc/swaps").is_ok_and(|s| s.lines().skip(1).any(|l| !l.trim().is_empty()))
}

/// The node's primary IP: the source address of the default route (no packet is sent).
fn detect_node_ip() -> Option<String> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("10.255.255.255:9").ok()?;
    s.local_addr().ok().map(|a| a.ip().to_string())
}

async fn connect_runtime(cfg: &KubeletConfiguration, timeout: Duration) -> DynRuntime {
    let image_ep = cfg.effective_image_service_endpoint().to_string();
    let mut delay = Duration::from_millis(500);
    loop {
        match RemoteRuntime::connect(&cfg.container_runtime_endpoint, Some(&image_ep), timeout).await {
            Ok(rt) => match rt.version().await {
                Ok(v) => {
                    tracing::info!(
                        runtime = %v.runtime_name,
                        version = %v.runtime_version,
                        api = %v.runtime_api_version,
                        endpoint = %cfg.container_runtime_endpoint,
                        "connected to container runtime"
                    );
                    match rt.status().await {
                        Ok(st) => {
                            for c in st.conditions.iter().filter(|c| !c.status) {
                                tracing::warn!(condition = %c.r#type, reason = %c.reason, "runtime not ready: {}", c.message);
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "runtime status"),
                    }
                    return Arc::new(rt);
                }
                Err(e) => tracing::warn!(error = %e, retry_in = ?delay, "container runtime not answering"),
            },
            Err(e) => tracing::warn!(error = %e, retry_in = ?delay, "container runtime not reachable"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

fn main() -> std::process::ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kubelet: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line with the whole chain, no backtrace: these are user-facing errors.
            eprintln!("kubelet: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A PLEG period flag: positive and at most 2 minutes (`/healthz` fails once no relist
/// succeeded for 3 minutes, upstream's PLEG health threshold).
fn relist_period(flag: &str, d: Option<kubelet_config::Duration>) -> anyhow::Result<Option<Duration>> {
    let Some(d) = d else { return Ok(None) };
    match d.to_std() {
        Some(p) if p > Duration::ZERO && p <= Duration::from_secs(120) => Ok(Some(p)),
        _ => bail!("{flag}: {d} must be greater than 0 and at most 2m"),
    }
}

async fn run() -> anyhow::Result<()> {
    let flags = Flags::parse();
    // The load error already lists every bad field; keep it as one message.
    let (cfg, node) = kubelet_config::load_with_flags(&flags).map_err(|e| anyhow::anyhow!("{e}"))?;
    init_tracing(node.verbosity);
    let relist = relist_period("--pleg-relist-period", node.pleg_relist_period)?;
    let relist_with_events = relist_period("--pleg-relist-period-with-events", node.pleg_relist_period_with_events)?;
    for field in kubelet_config::unsupported_fields(&cfg, IMPLEMENTED) {
        tracing::warn!(field, "configuration field is accepted but not supported yet");
    }
    if cfg.fail_swap_on && swap_enabled() {
        bail!("running with swap on is not supported, please disable swap or set --fail-swap-on flag to false");
    }

    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let node_name = node.node_name(&host_name)?;
    let node_ip = node.node_ip.clone().filter(|ip| !ip.is_empty()).or_else(detect_node_ip);
    let node_ip_for_status = node_ip.clone();
    let root_dir = node.root_dir.clone();
    std::fs::create_dir_all(root_dir.join("pods")).with_context(|| format!("--root-dir {}", root_dir.display()))?;
    // As upstream: the root and pods directories are not readable by other users (secrets and
    // tokens live below them).
    for dir in [root_dir.clone(), root_dir.join("pods")] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750))
            .with_context(|| format!("--root-dir: setting the mode of {}", dir.display()))?;
    }
    tracing::info!(node = %node_name, root_dir = %root_dir.display(), "starting kubelet");

    let clock: DynClock = Arc::new(SystemClock);
    let gc_clock = clock.clone();
    let request_timeout = std_duration(cfg.runtime_request_timeout, "runtimeRequestTimeout")?;
    let metrics = kubelet::metrics::Metrics::new();
    metrics.set_node_name(&node_name);
    // Every CRI call is counted and timed (kubelet_runtime_operations_*).
    let runtime =
        kubelet::cri::instrumented::Instrumented::wrap(connect_runtime(&cfg, request_timeout).await, metrics.clone());
    let runtime_name = runtime.version().await.map(|v| v.runtime_name).unwrap_or_else(|_| "containerd".into());
    // containerd without CRI container events (1.6): the PLEG takes exits from its own events.
    let containerd_endpoint = (runtime_name == "containerd").then(|| cfg.container_runtime_endpoint.clone());

    let api: Option<DynApi> = match &node.kubeconfig {
        Some(path) => {
            let client = KubeApi::from_kubeconfig(path, f64::from(cfg.kube_api_qps), cfg.kube_api_burst.max(1) as u32)
                .await
                .map_err(|e| anyhow::anyhow!(e))?;
            tracing::info!(kubeconfig = %path.display(), "API server mode");
            Some(Arc::new(client))
        }
        None => None,
    };
    let events = match &api {
        Some(api) => {
            let (rec, task) = Recorder::new(
                api.clone(),
                node_name.clone(),
                f64::from(cfg.event_record_qps),
                cfg.event_burst.max(1) as u32,
            );
            tokio::spawn(task);
            rec
        }
        None => Recorder::disabled(),
    };
    let statuses = Statuses::new();
    let max_parallel_pulls =
        if cfg.serialize_image_pulls { Some(1) } else { cfg.max_parallel_image_pulls.map(|n| n as usize) };
    let images = Images::new(images::Config { max_parallel_pulls }, runtime.clone(), clock.clone())
        .with_registry_limit(f64::from(cfg.registry_pull_qps), cfg.registry_burst.max(1) as u32);
    // QoS cgroup tiers and node allocatable before any pod starts; refuses the systemd driver
    // without systemd.
    let cgroups = kubelet::cm::ContainerManager::setup(&cfg).context("container manager")?;
    let stats = kubelet::stats::Provider::new(
        kubelet::stats::Config {
            node_name: node_name.clone(),
            root_dir: root_dir.clone(),
            pod_logs_dir: PathBuf::from(&cfg.pod_logs_dir),
            kubepods: cfg.cgroups_per_qos.then(|| cgroups.kubepods().to_path()),
            paths: Default::default(),
        },
        runtime.clone(),
    );
    // Volumes: set up before containers start, refreshed every syncFrequency, torn down with
    // their pod; what is on disk after a restart is reconstructed first.
    let allocatable = cgroups.allocatable();
    // CSI: drivers register through <root-dir>/plugins_registry; the volume manager stages and
    // publishes CSI volumes through them.
    let csi_drivers = kubelet::volume::csi::Drivers::new();
    tokio::spawn(kubelet::volume::csi::watcher::run(
        kubelet::volume::csi::watcher::Config::new(root_dir.clone(), node_name.clone()),
        csi_drivers.clone(),
        api.clone(),
    ));
    let csi_volumes = kubelet::volume::csi::CsiVolumes::new(
        kubelet::volume::csi::Config { root_dir: root_dir.clone(), node_name: node_name.clone() },
        api.clone(),
        csi_drivers,
    );
    let (volumes, volume_reconciler) = kubelet::volume::VolumeManager::new(kubelet::volume::Config {
        root_dir: root_dir.clone(),
        node: kubelet::volume::NodeFacts {
            name: node_name.clone(),
            allocatable_cpu_milli: Some(allocatable.cpu_milli),
            allocatable_memory: Some(allocatable.memory),
        },
        api: api.clone(),
        events: events.clone(),
        clock: clock.clone(),
        resync: std_duration(cfg.sync_frequency, "syncFrequency")?,
        csi: Some(Arc::new(csi_volumes)),
    });
    tokio::spawn(volume_reconciler);
    let node_ctx = Arc::new(NodeContext {
        node_name: node_name.clone(),
        node_ip,
        cluster_dns: cfg.cluster_dns.clone(),
        cluster_domain: cfg.cluster_domain.clone(),
        resolv_conf: PathBuf::from(&cfg.resolv_conf),
        pod_logs_dir: PathBuf::from(&cfg.pod_logs_dir),
        root_dir: root_dir.clone(),
        cgroups: Some(cgroups),
    });
    // What the PLEG's relist found, per pod: the workers observe from it.
    let pleg_cache = pleg::Cache::new();
    let deps = Deps {
        api: api.clone(),
        events: events.clone(),
        runtime: runtime.clone(),
        images,
        node: node_ctx,
        clock,
        container_logs_dir: CONTAINER_LOGS_DIR.into(),
        metrics: metrics.clone(),
        volumes,
    };
    let worker = WorkerConfig {
        deps,
        statuses: statuses.clone(),
        runtime_name,
        resync: std_duration(cfg.sync_frequency, "syncFrequency")?,
        pleg: Some(pleg_cache.clone()),
    };

    let (snap_tx, snap_rx) = mpsc::channel(16);
    let mut wanted_sources = HashSet::new();
    if !cfg.static_pod_path.is_empty() {
        wanted_sources.insert(SourceKind::File);
        let file_cfg = sources::file::Config {
            dir: PathBuf::from(&cfg.static_pod_path),
            node_name: node_name.clone(),
            period: std_duration(cfg.file_check_frequency, "fileCheckFrequency")?,
        };
        tokio::spawn(sources::file::run(file_cfg, snap_tx.clone()));
    }
    if !cfg.static_pod_url.is_empty() {
        wanted_sources.insert(SourceKind::Http);
        let http_cfg = sources::http::Config {
            url: cfg.static_pod_url.clone(),
            headers: cfg.static_pod_url_header.clone().into_iter().collect(),
            node_name: node_name.clone(),
            period: std_duration(cfg.http_check_frequency, "httpCheckFrequency")?,
        };
        tokio::spawn(sources::http::run(http_cfg, snap_tx.clone()));
    }
    if wanted_sources.is_empty() && node.kubeconfig.is_none() {
        tracing::warn!("no pod source configured (staticPodPath, staticPodURL): the kubelet will run no pods");
    }

    let taints = node_status::taints(&cfg);
    let node_info = NodeInfo {
        name: node_name.clone(),
        labels: node_status::node_labels(&node_name, &node.node_labels),
        taints: taints.clone(),
    };
    let pleg_health = pleg::Health::default();
    let api_for_server = api.clone();
    // Node pressure conditions: set by the eviction manager, read by node status and admission.
    let pressure = kubelet::eviction::Handle::new();
    let mut eviction_cfg =
        kubelet::eviction::Config::from_kubelet_config(&cfg, root_dir.clone()).map_err(|e| anyhow::anyhow!(e))?;
    if let Some(api) = api.clone() {
        wanted_sources.insert(SourceKind::Api);
        tokio::spawn(sources::api::run(api.clone(), node_name.clone(), snap_tx.clone()));
        let ns_cfg = node_status::Config {
            pressure: Some(pressure.clone()),
            ..node_status::Config::from_kubelet_config(
                &cfg,
                node_status::Identity {
                    node_name: node_name.clone(),
                    node_ip: node_ip_for_status.clone(),
                    labels: node.node_labels.clone(),
                    root_dir: root_dir.clone(),
                },
            )?
        };
        tokio::spawn(node_status::run(ns_cfg, api.clone(), runtime.clone(), pleg_health.clone()));
        let lease_cfg = lease::Config { node_name: node_name.clone(), duration_secs: cfg.node_lease_duration_seconds };
        tokio::spawn(lease::run(lease_cfg, api.clone()));
        let sync_cfg = status_sync::Config { node_name: node_name.clone(), resync: Duration::from_secs(10) };
        tokio::spawn(status_sync::run(sync_cfg, statuses.clone(), api));
    }
    drop(snap_tx);
    // Container log rotation: every containerLogMonitorInterval, logs of running containers past
    // containerLogMaxSize are rotated (ReopenContainerLog) and old ones compressed / removed.
    let log_rotation = kubelet::logs::rotate::Config::from_kubelet_config(&cfg);
    tokio::spawn(kubelet::logs::rotate::run(log_rotation, runtime.clone(), Arc::new(SystemClock)));
    let (pleg_tx, pleg_rx) = mpsc::channel(1024);
    let mut pleg_cfg = pleg::Config { containerd_endpoint, ..pleg::Config::new(metrics.clone()) };
    if let Some(d) = relist {
        pleg_cfg.relist_period = d;
    }
    if let Some(d) = relist_with_events {
        pleg_cfg.relist_period_with_events = d;
    }
    tokio::spawn(pleg::run(pleg_cfg, runtime.clone(), pleg_health.clone(), pleg_cache, pleg_tx));
    let (evict_tx, evict_rx) = mpsc::channel(4);
    tokio::spawn(dispatcher::run_with(
        dispatcher::Config {
            worker,
            node: node_info,
            max_pods: i64::from(cfg.max_pods),
            sources: wanted_sources,
            housekeeping: Duration::from_secs(10),
        },
        snap_rx,
        pleg_rx,
        dispatcher::Hooks { admit: Some(pressure.clone()), evictions: Some(evict_rx) },
    ));

    // Garbage collection and eviction (issue 6). The hidden --housekeeping-period-for-tests
    // shortens their periods for the e2e tests.
    let housekeeping = node.housekeeping_period_for_tests.and_then(|d| d.to_std());
    let mut keep_images: Vec<String> = node.pod_infra_container_image.clone().into_iter().collect();
    keep_images.extend(runtime.sandbox_image().await.ok().flatten());
    let image_gc = kubelet::gc::images::ImageGc::new(
        kubelet::gc::images::Policy::from_kubelet_config(&cfg),
        runtime.clone(),
        gc_clock.clone(),
        keep_images,
    );
    if cfg.image_gc_high_threshold_percent < 100 {
        tokio::spawn(image_gc.clone().run(housekeeping.unwrap_or(kubelet::gc::IMAGE_GC_PERIOD)));
    }
    let container_gc = kubelet::gc::ContainerGc {
        runtime: runtime.clone(),
        statuses: statuses.clone(),
        clock: gc_clock.clone(),
        min_age: Duration::ZERO,
        container_logs_dir: CONTAINER_LOGS_DIR.into(),
    };
    tokio::spawn(container_gc.clone().run(housekeeping.unwrap_or(kubelet::gc::CONTAINER_GC_PERIOD)));
    if let Some(p) = housekeeping {
        eviction_cfg.monitoring_interval = p;
    }
    let eviction_deps = kubelet::eviction::Deps {
        stats: stats.clone(),
        statuses: statuses.clone(),
        runtime: runtime.clone(),
        events: events.clone(),
        metrics: metrics.clone(),
        clock: gc_clock,
        images: Some(image_gc),
        containers: Some(container_gc),
        evict: evict_tx,
    };
    tokio::spawn(kubelet::eviction::run(eviction_cfg, eviction_deps, pressure));

    let health = server::Health { pleg: pleg_health, pleg_threshold: Duration::from_secs(180) };
    // Handlers served on both the read-only port and 10250 (behind authentication there):
    // /metrics, /metrics/cadvisor, /metrics/resource, /metrics/probes, /stats/summary.
    let default_handlers: axum::Router = kubelet::metrics::routes::router(metrics, stats, runtime.clone());
    if cfg.healthz_port > 0 {
        let ip: IpAddr = cfg
            .healthz_bind_address
            .parse()
            .with_context(|| format!("healthzBindAddress: {:?}", cfg.healthz_bind_address))?;
        let addr = SocketAddr::new(ip, cfg.healthz_port as u16);
        server::serve(addr, server::healthz_router(health.clone()))
            .await
            .with_context(|| format!("healthz server on {addr}"))?;
        tracing::info!(%addr, "healthz listening");
    }
    if cfg.read_only_port > 0 {
        let ip: IpAddr = cfg.address.parse().with_context(|| format!("address: {:?}", cfg.address))?;
        let addr = SocketAddr::new(ip, cfg.read_only_port as u16);
        server::serve(addr, server::read_only_router(health.clone(), statuses.clone(), default_handlers.clone()))
            .await
            .with_context(|| format!("read-only server on {addr}"))?;
        tracing::info!(%addr, "read-only port listening");
    }

    if cfg.enable_server {
        let server_cfg = server::kubelet_port::Config::from_kubelet_config(
            &cfg,
            node.cert_dir.clone(),
            &node_name,
            node_ip_for_status.as_deref(),
        )?;
        let (tls, router) = server::kubelet_port::assemble(
            &server_cfg,
            server::kubelet_port::Parts {
                health: health.clone(),
                statuses: statuses.clone(),
                runtime: runtime.clone(),
                api: api_for_server.clone(),
                default_handlers: default_handlers.clone(),
            },
        )?;
        let addr = server_cfg.addr;
        let addr = server::serve_tls(addr, tls, router).await.with_context(|| format!("kubelet server on {addr}"))?;
        tracing::info!(%addr, "kubelet server listening (HTTPS)");
    }

    // SIGTERM/SIGINT stop the kubelet; pods keep running and are adopted on the next start.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down; pods are left running");
    Ok(())
}
