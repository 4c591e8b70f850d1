//! Garbage collection of what the runtime keeps after pods are done: dead containers and
//! stopped sandboxes ([`containers`], every minute) and unused images ([`images`], every five
//! minutes and under disk pressure), as upstream's container and image GC managers.

pub mod containers;
pub mod images;

use crate::clock::DynClock;
use crate::cri::DynRuntime;
use crate::status_manager::Statuses;
use std::path::PathBuf;
use std::time::Duration;

/// Upstream's ContainerGCPeriod and ImageGCPeriod.
pub const CONTAINER_GC_PERIOD: Duration = Duration::from_secs(60);
pub const IMAGE_GC_PERIOD: Duration = Duration::from_secs(300);

/// The container GC handle: cloneable; one task runs [`ContainerGc::run`], the eviction manager
/// calls [`ContainerGc::collect`] with `aggressive` under disk pressure.
#[derive(Clone)]
pub struct ContainerGc {
    pub runtime: DynRuntime,
    /// The pods the kubelet knows (those with a status); everything else is gone.
    pub statuses: Statuses,
    pub clock: DynClock,
    /// Dead instances younger than this stay (upstream's MinAge, 0 by default).
    pub min_age: Duration,
    pub container_logs_dir: PathBuf,
}

impl ContainerGc {
    pub async fn collect(&self, aggressive: bool) -> Result<(usize, usize), crate::cri::CriError> {
        let known = |uid: &str| self.statuses.get(uid).is_some();
        let now = self.clock.now();
        containers::collect(&self.runtime, &known, aggressive, now, self.min_age, &self.container_logs_dir).await
    }

    /// Collects every `period`, the first time one period after start (workers publish the
    /// pods they adopt first).
    /// Until `token` is cancelled (a collection in flight completes).
    pub async fn run(self, period: Duration, token: tokio_util::sync::CancellationToken) {
        loop {
            if token.run_until_cancelled(tokio::time::sleep(period)).await.is_none() {
                return;
            }
            if let Err(e) = self.collect(false).await {
                tracing::warn!(error = %e, "container GC failed");
            }
        }
    }
}
