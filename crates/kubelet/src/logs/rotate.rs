//! Container log rotation, as upstream's pkg/kubelet/logs container log manager: every
//! `containerLogMonitorInterval` each running container's log file is checked; one that reached
//! `containerLogMaxSize` is renamed to `<log>.<YYYYMMDD-HHMMSS>` (UTC) and the runtime is asked to
//! reopen its log (ReopenContainerLog). Older rotated files are gzip-compressed (the newest
//! stays uncompressed, so readers and the runtime can finish with it) and the oldest are removed
//! so that at most `containerLogMaxFiles` files exist, the current one included.

use super::files::{self, COMPRESS_SUFFIX, TMP_SUFFIX};
use crate::clock::DynClock;
use crate::cri::{CriError, DynRuntime, api};
use futures::StreamExt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Format of the rotation suffix (Go's `20060102-150405`).
pub const TIMESTAMP_FORMAT: &str = "%Y%m%d-%H%M%S";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Rotate a file once it is this large (bytes); negative disables rotation.
    pub max_size: i64,
    /// Files kept per container log, the current one included (at least 2).
    pub max_files: usize,
    /// Containers checked at the same time.
    pub max_workers: usize,
    pub monitor_interval: Duration,
}

impl Config {
    /// From containerLogMaxSize, containerLogMaxFiles, containerLogMaxWorkers and
    /// containerLogMonitorInterval (validated by the config crate).
    pub fn from_kubelet_config(cfg: &kubelet_config::KubeletConfiguration) -> Self {
        Self {
            max_size: cfg.container_log_max_size.value().clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64,
            max_files: cfg.container_log_max_files.max(2) as usize,
            max_workers: cfg.container_log_max_workers.max(1) as usize,
            monitor_interval: cfg.container_log_monitor_interval.to_std().unwrap_or(Duration::from_secs(10)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to {op} {}: {source}", path.display())]
    Io { op: &'static str, path: PathBuf, source: io::Error },
    #[error("failed to reopen container log {id}: {source}")]
    Reopen { id: String, source: CriError },
    #[error("rotation stopped: {0}")]
    Stopped(String),
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io { op, path, source }
}

/// Rotates container logs; [`run`] drives it, tests call [`LogManager::rotate_once`].
pub struct LogManager {
    cfg: Config,
    runtime: DynRuntime,
    clock: DynClock,
}

/// The rotation task: one pass every monitor interval. Returns at once when rotation is
/// disabled (negative max size).
/// Until `token` is cancelled (a pass in flight completes).
pub async fn run(cfg: Config, runtime: DynRuntime, clock: DynClock, token: tokio_util::sync::CancellationToken) {
    if cfg.max_size < 0 {
        tracing::info!("container log rotation disabled (negative containerLogMaxSize)");
        return;
    }
    tracing::info!(
        max_size = cfg.max_size,
        max_files = cfg.max_files,
        workers = cfg.max_workers,
        interval = ?cfg.monitor_interval,
        "container log rotation started"
    );
    let interval = cfg.monitor_interval;
    let manager = LogManager::new(cfg, runtime, clock);
    loop {
        manager.rotate_once().await;
        if token.run_until_cancelled(tokio::time::sleep(interval)).await.is_none() {
            return;
        }
    }
}

impl LogManager {
    pub fn new(cfg: Config, runtime: DynRuntime, clock: DynClock) -> Self {
        Self { cfg, runtime, clock }
    }

    /// One monitoring pass over the running containers.
    pub async fn rotate_once(&self) {
        let containers = match self.runtime.list_containers(None).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "container log rotation: failed to list containers");
                return;
            }
        };
        // Only running containers write; a stopped one keeps its last file as it is.
        let running = containers.into_iter().filter(|c| c.state == api::ContainerState::ContainerRunning as i32);
        futures::stream::iter(running)
            .for_each_concurrent(self.cfg.max_workers, |c| async move { self.process(&c).await })
            .await;
    }

    async fn process(&self, c: &api::Container) {
        let container = c.metadata.as_ref().map(|m| m.name.as_str()).unwrap_or_default();
        let pod = c.labels.get(crate::cri::labels::POD_NAME).map(String::as_str).unwrap_or_default();
        let status = match self.runtime.container_status(&c.id).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(pod, container, id = %c.id, error = %e, "container log rotation: no status");
                return;
            }
        };
        let path = PathBuf::from(&status.log_path);
        if !path.is_absolute() {
            // No log, or one the kubelet cannot place.
            return;
        }
        let size = match std::fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Someone removed the file: have the runtime create it again.
                if let Err(e) = self.runtime.reopen_container_log(&c.id).await {
                    tracing::warn!(pod, container, path = %path.display(), error = %e, "container log missing and reopening it failed");
                    return;
                }
                match std::fs::metadata(&path) {
                    Ok(m) => m.len(),
                    Err(e) => {
                        tracing::warn!(pod, container, path = %path.display(), error = %e, "container log missing after reopen");
                        return;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(pod, container, path = %path.display(), error = %e, "failed to stat container log");
                return;
            }
        };
        if (size as i128) < i128::from(self.cfg.max_size) {
            return;
        }
        match self.rotate_log(&c.id, &path).await {
            Ok(Some(rotated)) => {
                tracing::debug!(pod, container, path = %path.display(), rotated = %rotated.display(), size, "container log rotated")
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(pod, container, path = %path.display(), error = %e, "container log rotation failed")
            }
        }
    }

    /// Rotates `log` of container `id`: tidies the rotated files, renames the current one and has
    /// the runtime reopen it (renaming back if that fails). The new rotated file, or None when
    /// one with this second's name already exists (tried again next pass).
    pub async fn rotate_log(&self, id: &str, log: &Path) -> Result<Option<PathBuf>, Error> {
        let stamp = chrono::DateTime::<chrono::Utc>::from(self.clock.now()).format(TIMESTAMP_FORMAT);
        let rotated = PathBuf::from(format!("{}.{stamp}", log.display()));
        let compressed = PathBuf::from(format!("{}{COMPRESS_SUFFIX}", rotated.display()));
        if rotated.exists() || compressed.exists() {
            return Ok(None);
        }
        let max_files = self.cfg.max_files;
        let tidy_log = log.to_path_buf();
        tokio::task::spawn_blocking(move || tidy(&tidy_log, max_files))
            .await
            .map_err(|e| Error::Stopped(e.to_string()))??;
        std::fs::rename(log, &rotated).map_err(io_err("rename", log))?;
        if let Err(source) = self.runtime.reopen_container_log(id).await {
            // Back, so the next pass can try again (if the kubelet dies here the log is lost,
            // as upstream notes).
            if let Err(e) = std::fs::rename(&rotated, log) {
                tracing::error!(id, rotated = %rotated.display(), error = %e, "failed to rename rotated log back");
            }
            return Err(Error::Reopen { id: id.to_string(), source });
        }
        Ok(Some(rotated))
    }
}

/// Before a rotation: removes leftovers of interrupted compressions, keeps the newest
/// `max_files - 2` rotated files (the current file and the one about to be rotated make up the
/// rest), and compresses those not compressed yet.
fn tidy(log: &Path, max_files: usize) -> Result<(), Error> {
    let all = files::rotated_candidates(log).map_err(io_err("list rotated logs of", log))?;
    let (mut in_use, unused) = files::split_unused(all);
    for l in unused {
        remove(&l)?;
    }
    in_use.sort();
    let keep = max_files.saturating_sub(2);
    let excess = in_use.len().saturating_sub(keep);
    // Oldest first, so a reader in the middle of the set is disturbed last.
    for l in in_use.drain(..excess) {
        remove(&l)?;
    }
    for l in in_use.iter().filter(|l| !files::is_compressed(l)) {
        compress(l)?;
    }
    Ok(())
}

fn remove(p: &Path) -> Result<(), Error> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove", p)(e)),
        _ => Ok(()),
    }
}

/// `<l>` → `<l>.gz` through `<l>.tmp`; the mode and modification time are kept.
fn compress(l: &Path) -> Result<(), Error> {
    let tmp = PathBuf::from(format!("{}{TMP_SUFFIX}", l.display()));
    let gz = PathBuf::from(format!("{}{COMPRESS_SUFFIX}", l.display()));
    let result = (|| {
        let meta = std::fs::metadata(l).map_err(io_err("stat", l))?;
        let mut src = std::fs::File::open(l).map_err(io_err("open", l))?;
        let out = std::fs::File::create(&tmp).map_err(io_err("create", &tmp))?;
        out.set_permissions(meta.permissions()).map_err(io_err("set the mode of", &tmp))?;
        let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::default());
        io::copy(&mut src, &mut enc).map_err(io_err("compress", l))?;
        let out = enc.finish().map_err(io_err("compress", l))?;
        if let Ok(mtime) = meta.modified() {
            let _ = out.set_modified(mtime);
        }
        out.sync_all().map_err(io_err("sync", &tmp))?;
        std::fs::rename(&tmp, &gz).map_err(io_err("rename", &tmp))?;
        remove(l)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
#[path = "rotate_tests.rs"]
mod tests;
