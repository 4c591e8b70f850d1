//! Hollow nodes: one node's kubelet logic on a given runtime (the fake, in practice) against an
//! API server — pod source, admission, dispatcher, workers, plan/executor, probes, PLEG, status
//! manager, node status, lease and events, all the real code. Many of them share one process
//! (`kubelet-hollow`) for scale tests, as kubemark does with ~220 MB per node.
//!
//! Not started here: the eviction manager, image/container GC, log rotation, CSI, cgroups and
//! the 10250/healthz/read-only servers (they measure or serve the host, which hollow nodes share).
//! The composition of the API-mode subsystems duplicates a part of `main.rs`; both should call one
//! function once main.rs settles.

use crate::api::DynApi;
use crate::clock::{DynClock, SystemClock};
use crate::cri::DynRuntime;
use crate::events::Recorder;
use crate::images::{self, Images};
use crate::pod::admission::NodeInfo;
use crate::pod::dispatcher;
use crate::pod::executor::Deps;
use crate::pod::runtime_config::NodeContext;
use crate::pod::worker::WorkerConfig;
use crate::sources::{self, SourceKind};
use crate::status_manager::Statuses;
use crate::{lease, node_status, pleg, status_sync};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("hollow node {node}: root dir {path}: {source}")]
    RootDir { node: String, path: PathBuf, source: std::io::Error },
}

pub type Result<T> = std::result::Result<T, Error>;

/// One hollow node. The defaults are upstream's (KubeletConfiguration v1beta1).
#[derive(Debug, Clone)]
pub struct Config {
    pub node_name: String,
    /// This node's own directory (pod directories, volumes); created if missing.
    pub root_dir: PathBuf,
    pub node_ip: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub max_pods: i64,
    /// nodeStatusUpdateFrequency / nodeStatusReportFrequency.
    pub status_update: Duration,
    pub status_report: Duration,
    /// nodeLeaseDurationSeconds (renewed every quarter of it).
    pub lease_duration_secs: i32,
    pub relist_period: Duration,
    /// syncFrequency.
    pub resync: Duration,
    /// eventRecordQPS / eventBurst.
    pub event_qps: f64,
    pub event_burst: u32,
    /// How often status_sync re-checks mirror pods and retries failed writes.
    pub status_resync: Duration,
    pub housekeeping: Duration,
}

impl Config {
    pub fn new(node_name: impl Into<String>, root_dir: PathBuf) -> Self {
        Self {
            node_name: node_name.into(),
            root_dir,
            node_ip: None,
            labels: BTreeMap::new(),
            max_pods: 110,
            status_update: Duration::from_secs(10),
            status_report: Duration::from_secs(300),
            lease_duration_secs: 40,
            relist_period: Duration::from_secs(1),
            resync: Duration::from_secs(60),
            event_qps: 50.0,
            event_burst: 100,
            status_resync: Duration::from_secs(10),
            housekeeping: Duration::from_secs(10),
        }
    }
}

/// A running hollow node. Dropping it stops its tasks (pod workers end with the dispatcher).
pub struct Node {
    pub name: String,
    pub statuses: Statuses,
    tasks: JoinSet<()>,
}

impl Node {
    /// Stops every task of this node.
    pub fn stop(mut self) {
        self.tasks.abort_all();
    }
}

/// Starts one node's subsystems on `runtime` against `api`.
pub async fn start(cfg: Config, runtime: DynRuntime, api: DynApi) -> Result<Node> {
    let node_name = cfg.node_name.clone();
    let root_dir = cfg.root_dir.clone();
    let dir_err = |path: PathBuf| {
        let node = node_name.clone();
        move |source| Error::RootDir { node, path, source }
    };
    for dir in [root_dir.join("pods"), root_dir.join("logs"), root_dir.join("containers")] {
        std::fs::create_dir_all(&dir).map_err(dir_err(dir.clone()))?;
    }
    let runtime_name = runtime.version().await.map(|v| v.runtime_name).unwrap_or_else(|_| "fake".into());
    let clock: DynClock = Arc::new(SystemClock);
    let metrics = crate::metrics::Metrics::new();
    metrics.set_node_name(&node_name);
    let mut tasks = JoinSet::new();

    let (events, events_task) = Recorder::new(api.clone(), node_name.clone(), cfg.event_qps, cfg.event_burst.max(1));
    tasks.spawn(events_task);
    let statuses = Statuses::new();
    let images = Images::new(images::Config { max_parallel_pulls: None }, runtime.clone(), clock.clone());
    let (volumes, volume_task) = crate::volume::VolumeManager::new(crate::volume::Config {
        node: crate::volume::NodeFacts { name: node_name.clone(), ..Default::default() },
        api: Some(api.clone()),
        events: events.clone(),
        resync: cfg.resync,
        ..crate::volume::Config::new(root_dir.clone(), clock.clone())
    });
    tasks.spawn(volume_task);
    let node_ctx = Arc::new(NodeContext {
        node_name: node_name.clone(),
        node_ip: cfg.node_ip.clone(),
        cluster_dns: vec![],
        cluster_domain: "cluster.local".into(),
        resolv_conf: "/nonexistent".into(),
        pod_logs_dir: root_dir.join("logs"),
        root_dir: root_dir.clone(),
        cgroups: None,
    });
    let deps = Deps {
        api: Some(api.clone()),
        events,
        runtime: runtime.clone(),
        images,
        node: node_ctx,
        clock,
        container_logs_dir: root_dir.join("containers"),
        metrics: metrics.clone(),
        volumes,
    };
    let pleg_cache = pleg::Cache::new();
    let worker = WorkerConfig {
        deps,
        statuses: statuses.clone(),
        runtime_name,
        resync: cfg.resync,
        pleg: Some(pleg_cache.clone()),
    };

    let (snap_tx, snap_rx) = mpsc::channel(16);
    tasks.spawn(sources::api::run(api.clone(), node_name.clone(), snap_tx));
    let pleg_health = pleg::Health::default();
    let ns_cfg = node_status::Config {
        node_name: node_name.clone(),
        node_ip: cfg.node_ip.clone(),
        labels: cfg.labels.clone(),
        taints: vec![],
        register: true,
        update_frequency: cfg.status_update,
        report_frequency: cfg.status_report,
        max_pods: cfg.max_pods,
        kubelet_port: 10250,
        root_dir: root_dir.clone(),
        reserved_cpu_milli: 0,
        reserved_memory: 0,
        max_images: 50,
        pressure: None,
    };
    tasks.spawn(node_status::run(ns_cfg, api.clone(), runtime.clone(), pleg_health.clone()));
    let lease_cfg = lease::Config { node_name: node_name.clone(), duration_secs: cfg.lease_duration_secs };
    tasks.spawn(lease::run(lease_cfg, api.clone()));
    let sync_cfg = status_sync::Config { node_name: node_name.clone(), resync: cfg.status_resync };
    tasks.spawn(status_sync::run(sync_cfg, statuses.clone(), api));

    let (pleg_tx, pleg_rx) = mpsc::channel(1024);
    tasks.spawn(pleg::run(
        pleg::Config { relist_period: cfg.relist_period, ..pleg::Config::new(metrics) },
        runtime,
        pleg_health,
        pleg_cache,
        pleg_tx,
    ));
    let node_info =
        NodeInfo { name: node_name.clone(), labels: node_status::node_labels(&node_name, &cfg.labels), taints: vec![] };
    tasks.spawn(dispatcher::run(
        dispatcher::Config {
            worker,
            node: node_info,
            max_pods: cfg.max_pods,
            sources: HashSet::from([SourceKind::Api]),
            housekeeping: cfg.housekeeping,
        },
        snap_rx,
        pleg_rx,
    ));
    Ok(Node { name: node_name, statuses, tasks })
}
