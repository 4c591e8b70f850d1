//! The plugin watcher (pkg/kubelet/pluginmanager) for CSI drivers: registration sockets in
//! `<root-dir>/plugins_registry` (inotify plus a periodic rescan) are asked GetInfo, validated,
//! their driver asked NodeGetInfo, recorded in [`Drivers`] and the CSINode, and told the result
//! with NotifyRegistrationStatus. A removed socket deregisters its driver.

use super::client::{self, Node};
use super::drivers::{self, Driver, Drivers};
use super::proto::registration::registration_client::RegistrationClient;
use super::proto::registration::{InfoRequest, PluginInfo, RegistrationStatus};
use crate::api::DynApi;
use crate::backoff::Exponential;
use notify::Watcher as _;
use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The registration directory under the root dir.
pub const REGISTRY_DIR: &str = "plugins_registry";
const REGISTRATION_TIMEOUT: Duration = Duration::from_secs(10);
/// A socket whose registration failed is tried again after this long, doubling up to the max
/// (a plugin's socket file exists a moment before it listens).
const RETRY: Exponential = Exponential::new(Duration::from_secs(1), Duration::from_secs(300));

#[derive(Debug, Clone)]
pub struct Config {
    pub root_dir: PathBuf,
    pub node_name: String,
    /// Rescan period (inotify events rescan at once).
    pub rescan: Duration,
}

impl Config {
    pub fn new(root_dir: PathBuf, node_name: String) -> Self {
        Self { root_dir, node_name, rescan: Duration::from_secs(5) }
    }
}

/// What the watcher knows about one socket (keyed by path; a new inode is a new plugin).
enum Seen {
    Registered { ino: u64 },
    Failed { ino: u64, at: Instant, delay: Duration },
}

/// Sockets under `dir` (and one level of subdirectories), hidden names skipped, with inodes.
fn sockets(dir: &Path) -> BTreeMap<PathBuf, u64> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![(dir.to_path_buf(), 0)];
    while let Some((d, depth)) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let Ok(md) = e.metadata() else { continue };
            if md.file_type().is_socket() {
                out.insert(e.path(), md.ino());
            } else if md.is_dir() && depth < 1 {
                dirs.push((e.path(), depth + 1));
            }
        }
    }
    out
}

/// Watches the registration directory until `token` is cancelled.
pub async fn run(cfg: Config, drivers: Drivers, api: Option<DynApi>, token: tokio_util::sync::CancellationToken) {
    let dir = cfg.root_dir.join(REGISTRY_DIR);
    for d in [&dir, &cfg.root_dir.join("plugins")] {
        if let Err(e) = std::fs::create_dir_all(d) {
            tracing::warn!(dir = %d.display(), error = %e, "cannot create the plugin directory");
        }
    }
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.is_ok_and(|ev| !matches!(ev.kind, notify::EventKind::Access(_))) {
            let _ = ev_tx.send(());
        }
    })
    .map_err(|e| tracing::warn!(error = %e, "inotify unavailable; polling the plugin registry only"))
    .ok();
    let mut watching = false;
    let mut seen: BTreeMap<PathBuf, Seen> = BTreeMap::new();
    loop {
        if !watching && let Some(w) = watcher.as_mut() {
            watching = w.watch(&dir, notify::RecursiveMode::Recursive).is_ok();
        }
        reconcile(&cfg, &dir, &drivers, api.as_ref(), &mut seen).await;
        // Wake up for the earliest retry of a failed registration, or the rescan.
        let next_retry = seen
            .values()
            .filter_map(|s| match s {
                Seen::Failed { at, delay, .. } => Some(delay.saturating_sub(at.elapsed())),
                Seen::Registered { .. } => None,
            })
            .min();
        let wait = next_retry.map_or(cfg.rescan, |r| r.min(cfg.rescan));
        tokio::select! {
            _ = token.cancelled() => return,
            got = ev_rx.recv() => {
                if got.is_none() { watching = false; }
                while ev_rx.try_recv().is_ok() {}
            }
            _ = tokio::time::sleep(wait) => {
                if let Some(w) = watcher.as_mut() && watching && !dir.exists() {
                    let _ = w.unwatch(&dir);
                    watching = false;
                }
            }
        }
    }
}

/// One pass: deregister vanished (or replaced) sockets, register new ones.
async fn reconcile(
    cfg: &Config,
    dir: &Path,
    drivers: &Drivers,
    api: Option<&DynApi>,
    seen: &mut BTreeMap<PathBuf, Seen>,
) {
    let now = sockets(dir);
    let gone: Vec<PathBuf> = seen
        .iter()
        .filter(|(p, s)| {
            let ino = match s {
                Seen::Registered { ino } | Seen::Failed { ino, .. } => *ino,
            };
            now.get(*p) != Some(&ino)
        })
        .map(|(p, _)| p.clone())
        .collect();
    for p in gone {
        seen.remove(&p);
        if let Some(d) = drivers.remove_socket(&p) {
            tracing::info!(driver = %d.name, socket = %p.display(), "CSI driver deregistered (socket removed)");
            if let Some(api) = api {
                if let Err(e) = drivers::set_node_id(api, &cfg.node_name, &d.name, None).await {
                    tracing::warn!(driver = %d.name, error = %e, "removing the driver's node ID from the Node");
                }
                if let Err(e) = drivers::remove_from_csi_node(api, &cfg.node_name, &d.name).await {
                    tracing::warn!(driver = %d.name, error = %e, "removing the driver from CSINode");
                }
            }
        }
    }
    for (path, ino) in now {
        let delay = match seen.get(&path) {
            Some(Seen::Registered { .. }) => continue,
            Some(Seen::Failed { at, delay, .. }) if at.elapsed() < *delay => continue,
            Some(Seen::Failed { delay, .. }) => RETRY.after(*delay),
            None => RETRY.initial,
        };
        let state = match register(cfg, &path, drivers, api).await {
            Ok(d) => {
                tracing::info!(driver = %d.name, endpoint = %d.endpoint.display(), node_id = %d.node_id, "CSI driver registered");
                Seen::Registered { ino }
            }
            Err(e) => {
                tracing::warn!(socket = %path.display(), error = %e, retry_in = ?delay, "plugin registration failed");
                Seen::Failed { ino, at: Instant::now(), delay }
            }
        };
        seen.insert(path, state);
    }
}

/// GetInfo → validate → NodeGetInfo → record (+ CSINode) → NotifyRegistrationStatus.
async fn register(cfg: &Config, socket: &Path, drivers: &Drivers, api: Option<&DynApi>) -> super::Result<Driver> {
    let ch = client::channel(socket).await?;
    let mut reg = RegistrationClient::new(ch);
    let info: PluginInfo = client::call("GetInfo", REGISTRATION_TIMEOUT, reg.get_info(InfoRequest {})).await?;
    let result = async {
        let endpoint = drivers::validate(&info)?;
        let node = Node::connect(&info.name, &endpoint).await?;
        let ni = node.get_info().await?;
        if ni.node_id.is_empty() {
            let empty = format!("CSI driver {}: NodeGetInfo returned an empty node ID", info.name);
            return Err(super::Error::Registration(empty));
        }
        let topology_keys = ni.accessible_topology.map(|t| t.segments.into_keys().collect()).unwrap_or_default();
        let d = Driver {
            name: info.name.clone(),
            endpoint,
            versions: info.supported_versions.clone(),
            node_id: ni.node_id,
            topology_keys,
            max_volumes: ni.max_volumes_per_node,
            socket: socket.to_path_buf(),
        };
        if let Some(api) = api {
            // Upstream's InstallCSIDriver: the Node's node-ID annotation, then the CSINode.
            drivers::set_node_id(api, &cfg.node_name, &d.name, Some(&d.node_id)).await?;
            drivers::add_to_csi_node(api, &cfg.node_name, &d).await?;
        }
        Ok(d)
    }
    .await;
    let status = RegistrationStatus {
        plugin_registered: result.is_ok(),
        error: result.as_ref().err().map(ToString::to_string).unwrap_or_default(),
    };
    if let Ok(d) = &result {
        drivers.insert(d.clone());
    }
    if let Err(e) =
        client::call("NotifyRegistrationStatus", REGISTRATION_TIMEOUT, reg.notify_registration_status(status)).await
    {
        tracing::warn!(socket = %socket.display(), error = %e, "telling the plugin its registration status");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_visible_sockets_are_plugins() {
        let dir = tempfile::tempdir().unwrap();
        let _a = std::os::unix::net::UnixListener::bind(dir.path().join("a-reg.sock")).unwrap();
        let _h = std::os::unix::net::UnixListener::bind(dir.path().join(".hidden.sock")).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let _b = std::os::unix::net::UnixListener::bind(dir.path().join("sub/b-reg.sock")).unwrap();
        std::fs::write(dir.path().join("file"), "x").unwrap();
        let found: Vec<PathBuf> = sockets(dir.path()).into_keys().collect();
        assert_eq!(found, vec![dir.path().join("a-reg.sock"), dir.path().join("sub/b-reg.sock")]);
    }
}
