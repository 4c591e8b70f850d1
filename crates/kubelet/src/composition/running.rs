//! [`Built::spawn`] and the [`Running`] node: every task in one `JoinSet`, each started under
//! the node's cancellation token; shutdown cancels the token, waits for the tasks within a
//! bound and aborts what is left.

use super::build::{Built, Task};
use super::{Error, Result};
use crate::server;
use crate::sources::Snapshot;
use crate::status_manager::Statuses;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::{Id, JoinSet};
use tokio_util::sync::CancellationToken;

/// A started node.
pub struct Running {
    pub statuses: Statuses,
    /// Where the servers listen (None: not started).
    pub healthz: Option<SocketAddr>,
    pub read_only: Option<SocketAddr>,
    pub kubelet_server: Option<SocketAddr>,
    snapshots: mpsc::Sender<Snapshot>,
    pleg_events: mpsc::Sender<String>,
    token: CancellationToken,
    tasks: JoinSet<()>,
    names: HashMap<Id, &'static str>,
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    server::bind(addr).await.map_err(|source| Error::Bind { what, addr, source })
}

impl Built {
    /// Binds the servers (so the node is not reported ready before they listen), then starts
    /// every task under `token`. A bind failure starts nothing.
    pub async fn spawn(self, token: CancellationToken) -> Result<Running> {
        let Built { statuses, tasks, servers, snapshots, pleg_events } = self;
        let mut server_tasks: Vec<Task> = Vec::new();
        let mut running = Running {
            statuses,
            healthz: None,
            read_only: None,
            kubelet_server: None,
            snapshots,
            pleg_events,
            token,
            tasks: JoinSet::new(),
            names: HashMap::new(),
        };
        if let Some((addr, router)) = servers.healthz {
            let listener = bind("healthz server", addr).await?;
            let addr = listener.local_addr().unwrap_or(addr);
            tracing::info!(%addr, "healthz listening");
            running.healthz = Some(addr);
            server_tasks.push(("healthz server", Box::pin(server::run(listener, router))));
        }
        if let Some((addr, router)) = servers.read_only {
            let listener = bind("read-only server", addr).await?;
            let addr = listener.local_addr().unwrap_or(addr);
            tracing::info!(%addr, "read-only port listening");
            running.read_only = Some(addr);
            server_tasks.push(("read-only server", Box::pin(server::run(listener, router))));
        }
        if let Some((addr, tls, router)) = servers.kubelet {
            let listener = bind("kubelet server", addr).await?;
            let addr = listener.local_addr().unwrap_or(addr);
            tracing::info!(%addr, "kubelet server listening (HTTPS)");
            running.kubelet_server = Some(addr);
            server_tasks.push(("kubelet server", Box::pin(server::run_tls(listener, tls, router))));
        }
        for (name, task) in tasks.into_iter().chain(server_tasks) {
            running.spawn(name, task);
        }
        Ok(running)
    }
}

impl Running {
    /// Every long-lived task starts here, under the node's token. (Until the tasks observe the
    /// token themselves, a cancelled task is dropped at its next await.)
    fn spawn(&mut self, name: &'static str, task: futures::future::BoxFuture<'static, ()>) {
        let token = self.token.clone();
        let handle = self.tasks.spawn(async move {
            token.run_until_cancelled(task).await;
        });
        self.names.insert(handle.id(), name);
    }

    /// Feeds the dispatcher snapshots of a source the caller runs (see `Sources::fed`).
    pub fn snapshots(&self) -> mpsc::Sender<Snapshot> {
        self.snapshots.clone()
    }

    /// Feeds the dispatcher PLEG events by hand (a node without a PLEG).
    pub fn pleg_events(&self) -> mpsc::Sender<String> {
        self.pleg_events.clone()
    }

    /// The node's cancellation token: cancelling it stops the node.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Waits until every task has ended (after the token is cancelled, or if they all end on
    /// their own); a task that panicked is logged.
    pub async fn wait(mut self) {
        while let Some(r) = self.tasks.join_next_with_id().await {
            self.ended(r);
        }
    }

    /// Cancels the token, waits up to `within` for the tasks to end, then aborts the rest.
    pub async fn shutdown(mut self, within: Duration) {
        self.token.cancel();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.tasks.join_next_with_id()).await {
                Ok(Some(r)) => self.ended(r),
                Ok(None) => return,
                Err(_) => break,
            }
        }
        let left: Vec<&str> = self.names.values().copied().collect();
        tracing::warn!(tasks = ?left, ?within, "tasks did not stop in time: aborted");
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }

    /// Cancels the token and aborts every task at once.
    pub fn abort(mut self) {
        self.token.cancel();
        self.tasks.abort_all();
    }

    fn ended(&mut self, r: std::result::Result<(Id, ()), tokio::task::JoinError>) {
        let id = match &r {
            Ok((id, ())) => *id,
            Err(e) => e.id(),
        };
        let name = self.names.remove(&id).unwrap_or("task");
        if let Err(e) = r
            && e.is_panic()
        {
            tracing::error!(task = name, "task panicked");
        }
    }
}
