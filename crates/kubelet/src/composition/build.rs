//! [`build`]: every subsystem's handle and task, in dependency order (recorder → statuses →
//! images → container manager → stats → CSI → device manager → volume manager → node context →
//! deps → worker config → PLEG cache → PLEG → sources → node status, lease, status sync → log
//! rotation → dispatcher → image and container GC → eviction → pod resources → servers), nothing
//! spawned.

use super::{Config, Error, Result};
use crate::admission::{self, NodeInfo};
use crate::api::DynApi;
use crate::clock::DynClock;
use crate::cri::DynRuntime;
use crate::event_recorder::Recorder;
use crate::images::Images;
use crate::metrics::Metrics;
use crate::pod::dispatcher;
use crate::pod::executor::Deps;
use crate::pod::runtime_config::NodeContext;
use crate::pod::worker::WorkerConfig;
use crate::sources::{self, Snapshot, SourceKind};
use crate::status_manager::Statuses;
use crate::{cm, eviction, gc, lease, logs, node_status, nodeshutdown, pleg, server, stats, status_manager, volume};
use futures::future::BoxFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What a node is built on: the outside worlds and the shared instruments.
pub struct Parts {
    pub runtime: DynRuntime,
    /// None: standalone (static pods only; no node status, lease, status sync or events).
    pub api: Option<DynApi>,
    pub clock: DynClock,
    pub metrics: Metrics,
}

/// When a task is told to stop (see `Running::shutdown`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    /// Cancelled first: sources, dispatcher and pod workers, PLEG, reconcilers, periodic loops.
    /// The flush waits for them.
    Drain,
    /// Cancelled first, not waited for before the flush: the servers (a long stream may hold
    /// its connection until the bound).
    Serve,
    /// Cancelled once every `Drain` task has ended: status sync and events send what the pod
    /// workers left.
    Flush,
}

/// A task to spawn, named for the shutdown report: made from the token it observes.
pub(super) struct Task {
    pub name: &'static str,
    pub stage: Stage,
    pub start: Box<dyn FnOnce(CancellationToken) -> BoxFuture<'static, ()> + Send>,
}

/// The servers, bound by [`Built::spawn`] before any task starts.
#[derive(Default)]
pub(super) struct Servers {
    pub healthz: Option<(SocketAddr, axum::Router)>,
    pub read_only: Option<(SocketAddr, axum::Router)>,
    pub kubelet: Option<(SocketAddr, Arc<rustls::ServerConfig>, axum::Router)>,
}

/// A node built and not yet started: its handles and its tasks.
pub struct Built {
    pub statuses: Statuses,
    pub(super) tasks: Vec<Task>,
    pub(super) servers: Servers,
    pub(super) snapshots: mpsc::Sender<Snapshot>,
    pub(super) pleg_events: mpsc::Sender<String>,
}

pub(super) fn staged<F, Fut>(name: &'static str, stage: Stage, start: F) -> Task
where
    F: FnOnce(CancellationToken) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    Task { name, stage, start: Box::new(move |token| Box::pin(start(token))) }
}

/// A task that observes the node's token and drains before the flush.
fn task<F, Fut>(name: &'static str, start: F) -> Task
where
    F: FnOnce(CancellationToken) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    staged(name, Stage::Drain, start)
}

/// Builds the node's subsystems from `cfg` on `parts`. Effects: the container manager's cgroups
/// (before any pod can start), the serving certificate, the volume manager's scan of what is
/// mounted. Nothing is spawned.
pub async fn build(cfg: Config, parts: Parts) -> Result<Built> {
    let Parts { runtime, api, clock, metrics } = parts;
    let node_name = cfg.node_name.clone();
    let root_dir = cfg.root_dir.clone();
    metrics.set_node_name(&node_name);
    let runtime_name = runtime.version().await.map(|v| v.runtime_name).unwrap_or_else(|_| "containerd".into());
    let mut tasks: Vec<Task> = Vec::new();

    let events = match &api {
        Some(api) => {
            let (rec, events_task) = Recorder::new(api.clone(), node_name.clone(), cfg.event_qps, cfg.event_burst);
            tasks.push(staged("events", Stage::Flush, move |token| events_task.run(token)));
            rec
        }
        None => Recorder::disabled(),
    };
    let statuses = Statuses::new();
    let mut images = Images::new(cfg.images.clone(), runtime.clone(), clock.clone());
    if let Some((qps, burst)) = cfg.registry_limit {
        images = images.with_registry_limit(qps, burst);
    }
    let host = cfg.host.as_ref();
    // QoS cgroup tiers and node allocatable before any pod starts, with the runtime's cgroup
    // driver when it reports one (else the configured one); refuses the systemd driver without
    // systemd.
    let cgroups = match host {
        Some(h) => {
            let mut cm_cfg = h.container_manager.clone();
            let configured = cm::driver::Driver::parse(&cm_cfg.cgroup_driver);
            cm_cfg.cgroup_driver = cm::driver::resolve(runtime.as_ref(), configured)
                .await
                .map_err(Error::CgroupDriver)?
                .as_str()
                .to_string();
            cm_cfg.resource_managers.state_dir = root_dir.clone();
            Some(cm::ContainerManager::setup(cm_cfg).map_err(Error::ContainerManager)?)
        }
        None => None,
    };
    let stats = host.zip(cgroups.as_ref()).map(|(h, cgroups)| {
        stats::Provider::new(
            stats::Config {
                node_name: node_name.clone(),
                root_dir: root_dir.clone(),
                pod_logs_dir: cfg.pod_logs_dir.clone(),
                kubepods: h.container_manager.cgroups_per_qos.then(|| cgroups.name(&cgroups.kubepods())),
                paths: Default::default(),
            },
            runtime.clone(),
        )
    });
    // Mounts (tmpfs, subPath binds) and mount points, for the volume plugins and CSI. A hollow
    // node (no host) mounts nothing on the machine: its tmpfs volumes are plain directories.
    let mounter: volume::mount::DynMounter = match host {
        Some(_) => volume::mount::host(),
        None => volume::mount::FakeMounter::new(),
    };
    // CSI: drivers register through <root-dir>/plugins_registry; the volume manager stages and
    // publishes CSI volumes through them.
    let csi: Option<Arc<dyn volume::CsiPlugin>> = match host {
        Some(_) => {
            let drivers = volume::csi::Drivers::new();
            let (watcher_cfg, watcher_drivers, watcher_api) =
                (volume::csi::watcher::Config::new(root_dir.clone(), node_name.clone()), drivers.clone(), api.clone());
            tasks.push(task("csi watcher", move |token| {
                volume::csi::watcher::run(watcher_cfg, watcher_drivers, watcher_api, token)
            }));
            let csi_cfg = volume::csi::Config { root_dir: root_dir.clone(), node_name: node_name.clone() };
            Some(Arc::new(volume::csi::CsiVolumes::new(csi_cfg, api.clone(), drivers).with_mounter(mounter.clone())))
        }
        None => None,
    };
    // Device plugins register on <root-dir>/device-plugins/kubelet.sock (bound now, stale
    // sockets removed); their resources go into the node status, admission allocates them and
    // containers get their devices, mounts and envs.
    let devices = match host {
        Some(_) => {
            let dm = cm::devicemanager::DeviceManager::new(cm::devicemanager::Config::new(&root_dir), clock.clone());
            let listener = cm::devicemanager::registration::bind(&dm)
                .map_err(|source| Error::DevicePlugins { path: dm.socket_path(), source })?;
            let serve_dm = dm.clone();
            tasks.push(task("device manager", move |token| {
                cm::devicemanager::registration::serve_on(serve_dm, listener, token)
            }));
            Some(dm)
        }
        None => None,
    };
    // The node's one reader of ConfigMaps, Secrets and Services: env, volumes and
    // imagePullSecrets read through it; the dispatcher's housekeeping prunes it.
    let objects = api.clone().map(crate::api::objects::Objects::new);
    // Volumes: set up before containers start, refreshed every syncFrequency, torn down with
    // their pod; what is on disk after a restart is reconstructed first.
    let allocatable = cgroups.as_ref().map(|c| c.allocatable());
    let (volumes, volume_reconciler) = volume::VolumeManager::new(volume::Config {
        root_dir: root_dir.clone(),
        node: volume::NodeFacts {
            name: node_name.clone(),
            allocatable_cpu_milli: allocatable.map(|a| a.cpu_milli),
            allocatable_memory: allocatable.map(|a| a.memory),
        },
        api: api.clone(),
        objects: objects.clone(),
        events: events.clone(),
        clock: clock.clone(),
        resync: cfg.sync_frequency,
        csi,
        mounter,
    });
    tasks.push(task("volume reconciler", move |token| volume_reconciler.run(token)));
    let node_ctx = Arc::new(NodeContext {
        node_name: node_name.clone(),
        node_ip: cfg.node_ip.clone(),
        cluster_dns: cfg.cluster_dns.clone(),
        cluster_domain: cfg.cluster_domain.clone(),
        resolv_conf: cfg.resolv_conf.clone(),
        pod_logs_dir: cfg.pod_logs_dir.clone(),
        root_dir: root_dir.clone(),
        cgroups: cgroups.clone(),
        seccomp_default: cfg.seccomp_default,
    });
    // In-place resize: the allocation manager's checkpoints (on a real node) and the gates.
    let gate = |name: &str| kubelet_config::features::enabled(&cfg.feature_gates, name);
    cm::qos::set_pod_level_resources(gate("PodLevelResources"));
    let allocation = crate::allocation::Manager::new(crate::allocation::Config {
        dir: host.map(|_| root_dir.clone()),
        allocatable: allocatable.unwrap_or_else(|| cm::admission::ResourceFit::unbounded(cfg.max_pods).allocatable),
        pod_level_resize: gate("InPlacePodLevelResourcesVerticalScaling"),
        allocated_status: gate("InPlacePodVerticalScalingAllocatedStatus"),
    })?;
    // What the PLEG's relist found, per pod: the workers observe from it.
    let pleg_cache = cfg.pleg.as_ref().map(|_| pleg::Cache::new());
    let deps = Deps {
        objects,
        events: events.clone(),
        runtime: runtime.clone(),
        images,
        node: node_ctx,
        clock: clock.clone(),
        container_logs_dir: cfg.container_logs_dir.clone(),
        metrics: metrics.clone(),
        volumes,
        runtime_classes: crate::runtime_class::RuntimeClasses::new(api.clone()),
        devices: devices.clone(),
        allocation,
        credential_providers: cfg.credential_providers.clone(),
    };
    let worker = WorkerConfig {
        deps,
        statuses: statuses.clone(),
        runtime_name: runtime_name.clone(),
        resync: cfg.sync_frequency,
        pleg: pleg_cache.clone(),
    };

    // The PLEG starts before node status: until its first relist the node is not ready.
    let pleg_health = pleg::Health::default();
    let (pleg_tx, pleg_rx) = mpsc::channel(1024);
    if let (Some(p), Some(cache)) = (&cfg.pleg, pleg_cache) {
        // containerd without CRI container events (1.6): the PLEG takes exits from its own events.
        let containerd_endpoint = p.runtime_endpoint.clone().filter(|_| runtime_name == "containerd");
        let pleg_cfg = pleg::Config {
            relist_period: p.relist_period,
            relist_period_with_events: p.relist_period_with_events,
            containerd_endpoint,
            ..pleg::Config::new(metrics.clone())
        };
        let (rt, health, tx) = (runtime.clone(), pleg_health.clone(), pleg_tx.clone());
        tasks.push(task("pleg", move |token| pleg::run(pleg_cfg, rt, health, cache, tx, token)));
    }
    let (snap_tx, snap_rx) = mpsc::channel(16);
    let mut wanted_sources = cfg.sources.fed.clone();
    if let Some(file_cfg) = cfg.sources.file.clone() {
        wanted_sources.insert(SourceKind::File);
        let tx = snap_tx.clone();
        // Sources hold nothing in flight: dropped at the token.
        tasks.push(task("file source", move |token| async move {
            token.run_until_cancelled(sources::file::run(file_cfg, tx)).await;
        }));
    }
    if let Some(http_cfg) = cfg.sources.http.clone() {
        wanted_sources.insert(SourceKind::Http);
        let tx = snap_tx.clone();
        tasks.push(task("http source", move |token| async move {
            token.run_until_cancelled(sources::http::run(http_cfg, tx)).await;
        }));
    }
    if wanted_sources.is_empty() && api.is_none() {
        tracing::warn!("no pod source configured (staticPodPath, staticPodURL): the kubelet will run no pods");
    }
    // What the runtime can run (RuntimeClass lookups, user namespaces, the supplemental groups
    // policy), from CRI Status now.
    let handlers = runtime.handlers().await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "CRI Status: no runtime handlers known");
        Default::default()
    });
    let node_info = NodeInfo {
        name: node_name.clone(),
        labels: node_status::node_labels(&node_name, &cfg.node_status.labels),
        taints: cfg.node_status.taints.clone(),
        // Strict only where the runtime says it honours it (CRI Status features; containerd
        // before 2.0 says nothing and would silently merge the groups).
        supplemental_groups_policy: handlers.features.as_ref().is_some_and(|f| f.supplemental_groups_policy),
    };
    // Node pressure conditions: set by the eviction manager, read by node status and admission.
    let pressure = host.map(|_| eviction::Handle::new());
    // Node shutdown state: set by the node shutdown manager, read by node status and admission.
    let shutdown = host.and_then(|h| h.node_shutdown.as_ref()).map(|_| nodeshutdown::Handle::new());
    if let Some(api) = api.clone() {
        wanted_sources.insert(SourceKind::Api);
        let (source_api, name, tx) = (api.clone(), node_name.clone(), snap_tx.clone());
        tasks.push(task("api source", move |token| async move {
            token.run_until_cancelled(sources::api::run(source_api, name, tx)).await;
        }));
        let ns_cfg = node_status::Config {
            pressure: pressure.clone(),
            shutdown: shutdown.clone(),
            devices: devices.clone(),
            ..cfg.node_status.clone()
        };
        let (ns_api, rt, health, ns_events) = (api.clone(), runtime.clone(), pleg_health.clone(), events.clone());
        tasks.push(task("node status", move |token| node_status::run(ns_cfg, ns_api, rt, health, ns_events, token)));
        let (lease_cfg, lease_api) = (cfg.lease.clone(), api.clone());
        tasks.push(task("lease", move |token| lease::run(lease_cfg, lease_api, token)));
        let (sync_cfg, sync_statuses) = (cfg.status_sync.clone(), statuses.clone());
        tasks.push(staged("status sync", Stage::Flush, move |token| {
            status_manager::sync::run(sync_cfg, sync_statuses, api, token)
        }));
    }
    if let Some(h) = host {
        // Container log rotation: every containerLogMonitorInterval, logs of running containers
        // past containerLogMaxSize are rotated (ReopenContainerLog) and old ones compressed or
        // removed.
        let (rotate_cfg, rt, clk) = (h.log_rotation.clone(), runtime.clone(), clock.clone());
        tasks.push(task("log rotation", move |token| logs::rotate::run(rotate_cfg, rt, clk, token)));
    }
    let (evict_tx, evict_rx) = mpsc::channel(4);
    // Admission, in upstream's order: node pressure, sysctls, device allocation, the node
    // predicates (pod OS first), resource fit, AppArmor. As upstream, a safe sysctl may also be listed as unsafe, and an
    // allowedUnsafeSysctls entry not known to be namespaced stops the kubelet.
    let sysctls = admission::sysctl::Allowlist::new(
        admission::sysctl::safe_sysctls(admission::sysctl::host_kernel())
            .into_iter()
            .map(str::to_string)
            .chain(cfg.allowed_unsafe_sysctls.iter().cloned()),
    )?;
    let resource_fit = match allocatable {
        Some(allocatable) => cm::admission::ResourceFit { allocatable, max_pods: cfg.max_pods },
        None => cm::admission::ResourceFit::unbounded(cfg.max_pods),
    };
    let mut admit: Vec<Arc<dyn admission::Handler>> = Vec::new();
    if let Some(p) = &pressure {
        admit.push(Arc::new(p.clone()));
    }
    admit.push(Arc::new(sysctls));
    // Upstream's resource allocation handler comes before the predicates: devices are allocated
    // (or the pod refused, UnexpectedAdmissionError) first.
    if let Some(dm) = &devices {
        admit.push(Arc::new(cm::devicemanager::Admit(dm.clone())));
    }
    // The resource managers' handler (the topology manager, which allocates CPUs) comes
    // before the node predicates, as upstream's GetAllocateResourcesPodAdmitHandler.
    if let Some(m) = cgroups.as_ref().and_then(|c| c.resource_managers()) {
        admit.push(m.topology.clone());
        let (cpu, rt, st) = (m.clone(), runtime.clone(), statuses.clone());
        let active: cm::cpu_manager::ActivePods = Arc::new(move || {
            st.list()
                .into_iter()
                .map(|p| {
                    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or_default();
                    let active = phase != "Succeeded" && phase != "Failed";
                    (p, active)
                })
                .collect()
        });
        tasks.push(task("resource managers", move |token| cpu.run(rt, active, token)));
    }
    admit.push(Arc::new(node_info));
    admit.push(Arc::new(admission::runtime::RuntimeSupport { handlers, api: api.is_some() }));
    admit.push(Arc::new(resource_fit));
    admit.push(Arc::new(cfg.apparmor.clone()));
    // Upstream adds the node shutdown manager's handler after the others: no pod while shutting down.
    if let Some(s) = &shutdown {
        admit.push(Arc::new(s.clone()));
    }
    let dispatcher_cfg = dispatcher::Config {
        worker,
        admission: admission::Handlers::new(admit),
        sources: wanted_sources,
        housekeeping: cfg.housekeeping,
    };
    let hooks = dispatcher::Hooks { evictions: host.map(|_| evict_rx) };
    tasks.push(task("dispatcher", move |token| dispatcher::run(dispatcher_cfg, snap_rx, pleg_rx, hooks, token)));

    let mut servers = Servers::default();
    if let (Some(h), Some(stats), Some(pressure)) = (host, stats, pressure) {
        // Garbage collection and eviction.
        let mut keep_images = h.keep_images.clone();
        keep_images.extend(runtime.sandbox_image().await.ok().flatten());
        let image_gc = gc::images::ImageGc::new(h.image_gc.clone(), runtime.clone(), clock.clone(), keep_images);
        if let Some(period) = h.image_gc_period {
            let gc = image_gc.clone();
            tasks.push(task("image gc", move |token| gc.run(period, token)));
        }
        let container_gc = gc::ContainerGc {
            runtime: runtime.clone(),
            statuses: statuses.clone(),
            clock: clock.clone(),
            min_age: Duration::ZERO,
            container_logs_dir: cfg.container_logs_dir.clone(),
        };
        let (gc, period) = (container_gc.clone(), h.container_gc_period);
        tasks.push(task("container gc", move |token| gc.run(period, token)));
        let eviction_deps = eviction::Deps {
            stats: stats.clone(),
            statuses: statuses.clone(),
            runtime: runtime.clone(),
            events: events.clone(),
            metrics: metrics.clone(),
            clock: clock.clone(),
            images: Some(image_gc),
            containers: Some(container_gc),
            evict: evict_tx.clone(),
        };
        let eviction_cfg = h.eviction.clone();
        tasks.push(task("eviction", move |token| eviction::run(eviction_cfg, eviction_deps, pressure, token)));
        // Graceful node shutdown: logind's inhibitor lock and PrepareForShutdown; pods killed
        // through the dispatcher like evictions.
        if let (Some(ns_cfg), Some(handle)) = (h.node_shutdown.clone(), shutdown) {
            let deps = nodeshutdown::Deps {
                logind: Arc::new(nodeshutdown::logind::SystemBus),
                statuses: statuses.clone(),
                kill: evict_tx,
                events: events.clone(),
                metrics: metrics.clone(),
                clock: clock.clone(),
            };
            tasks.push(task("node shutdown", move |token| nodeshutdown::run(ns_cfg, deps, handle, token)));
        }

        // The pod resources API: devices (and, once their managers report them, exclusive CPUs
        // and memory) per container of the active pods.
        if let Some(pr_cfg) = h.pod_resources.clone() {
            let listener = crate::podresources::bind(&pr_cfg)
                .map_err(|source| Error::PodResources { path: pr_cfg.socket.clone(), source })?;
            let providers = crate::podresources::Providers {
                pods: statuses.clone(),
                devices: devices.clone(),
                cpus: Arc::new(crate::podresources::NoExclusiveResources),
                memory: Arc::new(crate::podresources::NoExclusiveResources),
            };
            let service = crate::podresources::Service::new(pr_cfg, providers);
            tasks.push(task("pod resources", move |token| crate::podresources::serve(service, listener, token)));
        }
        let health = server::Health { pleg: pleg_health, pleg_threshold: h.pleg_health_threshold };
        // Handlers served on both the read-only port and 10250 (behind authentication there):
        // /metrics, /metrics/cadvisor, /metrics/resource, /metrics/probes, /stats/summary.
        let default_handlers = crate::metrics::routes::router(metrics, stats, runtime.clone());
        servers.healthz = h.healthz.map(|addr| (addr, server::healthz_router(health.clone())));
        servers.read_only = h
            .read_only
            .map(|addr| (addr, server::read_only_router(health.clone(), statuses.clone(), default_handlers.clone())));
        if let Some(server_cfg) = &h.kubelet_server {
            let parts =
                server::kubelet_port::Parts { health, statuses: statuses.clone(), runtime, api, default_handlers };
            let (tls, router) = server::kubelet_port::assemble(server_cfg, parts)?;
            servers.kubelet = Some((server_cfg.addr, tls, router));
        }
    }
    Ok(Built { statuses, tasks, servers, snapshots: snap_tx, pleg_events: pleg_tx })
}
