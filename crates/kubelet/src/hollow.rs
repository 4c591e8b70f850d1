//! Hollow nodes: one node's kubelet logic on a given runtime (the fake, in practice) against an
//! API server — pod source, admission, dispatcher, workers, plan/executor, probes, PLEG, status
//! manager, node status, lease and events, all the real code. Many of them share one process
//! (`kubelet-hollow`) for scale tests, as kubemark does with ~220 MB per node.
//!
//! Not started here: the eviction manager, image/container GC, log rotation, CSI, cgroups and
//! the 10250/healthz/read-only servers (they measure or serve the host, which hollow nodes share).
//! The node is composed by [`crate::composition`], as the kubelet's is, without its host part.

use crate::api::DynApi;
use crate::clock::SystemClock;
use crate::composition::{self, Identity};
use crate::cri::DynRuntime;
use crate::status_manager::Statuses;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("hollow node {node}: root dir {path}: {source}")]
    RootDir { node: String, path: PathBuf, source: std::io::Error },
    #[error("hollow node {node}")]
    Compose { node: String, source: composition::Error },
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
    /// How often the status sync re-checks mirror pods and retries failed writes.
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
    running: composition::Running,
}

impl Node {
    /// Stops every task of this node.
    pub fn stop(self) {
        self.running.abort();
    }
}

/// The node's composition: an in-process node with this node's settings, pods from the API only.
fn composition_config(cfg: &Config) -> composition::Result<composition::Config> {
    let id = Identity { node_name: cfg.node_name.clone(), node_ip: cfg.node_ip.clone() };
    let mut c = composition::Config::in_process(id, cfg.root_dir.clone())?;
    c.node_status.labels = cfg.labels.clone();
    c.event_qps = cfg.event_qps;
    c.event_burst = cfg.event_burst.max(1);
    c.sync_frequency = cfg.resync;
    c.node_status.max_pods = cfg.max_pods;
    c.node_status.update_frequency = cfg.status_update;
    c.node_status.report_frequency = cfg.status_report;
    c.lease.duration_secs = cfg.lease_duration_secs;
    c.status_sync.resync = cfg.status_resync;
    if let Some(p) = c.pleg.as_mut() {
        p.relist_period = cfg.relist_period;
    }
    c.max_pods = cfg.max_pods;
    c.housekeeping = cfg.housekeeping;
    Ok(c)
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
    let compose_err = |source| Error::Compose { node: node_name.clone(), source };
    let config = composition_config(&cfg).map_err(compose_err)?;
    let parts = composition::Parts {
        runtime,
        api: Some(api),
        clock: Arc::new(SystemClock),
        metrics: crate::metrics::Metrics::new(),
    };
    let built = composition::build(config, parts).await.map_err(compose_err)?;
    let running = built.spawn(CancellationToken::new()).await.map_err(compose_err)?;
    Ok(Node { name: node_name, statuses: running.statuses.clone(), running })
}
