//! [`Built::spawn`] and the [`Running`] node: every task in one `JoinSet`, each observing the
//! node's cancellation token; shutdown cancels the token, lets the pod workers stop, then the
//! status sync flush, all within a bound, and aborts what is left.

use super::build::{Built, Stage, Task, staged};
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
    /// Cancelled once every `Stage::Drain` task has ended (or the bound is nearly out).
    flush: CancellationToken,
    tasks: JoinSet<()>,
    names: HashMap<Id, (&'static str, Stage)>,
}

/// What [`Running::shutdown`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stopped {
    /// The tasks that had not ended within the bound, aborted.
    pub aborted: Vec<&'static str>,
}

/// The part of the bound kept for the flush (status sync, events) after the pod workers.
const FLUSH_SHARE: u32 = 4;

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
            flush: CancellationToken::new(),
            tasks: JoinSet::new(),
            names: HashMap::new(),
        };
        if let Some((addr, router)) = servers.healthz {
            let listener = bind("healthz server", addr).await?;
            let addr = listener.local_addr().unwrap_or(addr);
            tracing::info!(%addr, "healthz listening");
            running.healthz = Some(addr);
            server_tasks.push(staged("healthz server", Stage::Serve, move |t| server::run(listener, router, t)));
        }
        if let Some((addr, router)) = servers.read_only {
            let listener = bind("read-only server", addr).await?;
            let addr = listener.local_addr().unwrap_or(addr);
            tracing::info!(%addr, "read-only port listening");
            running.read_only = Some(addr);
            server_tasks.push(staged("read-only server", Stage::Serve, move |t| server::run(listener, router, t)));
        }
        if let Some((addr, tls, router)) = servers.kubelet {
            let listener = bind("kubelet server", addr).await?;
            let addr = listener.local_addr().unwrap_or(addr);
            tracing::info!(%addr, "kubelet server listening (HTTPS)");
            running.kubelet_server = Some(addr);
            server_tasks
                .push(staged("kubelet server", Stage::Serve, move |t| server::run_tls(listener, tls, router, t)));
        }
        for task in tasks.into_iter().chain(server_tasks) {
            running.spawn(task);
        }
        Ok(running)
    }
}

impl Running {
    /// Every long-lived task starts here, with the token it observes: the node's, or for the
    /// flush stage the one cancelled after the pod workers stopped.
    fn spawn(&mut self, task: Task) {
        let token = match task.stage {
            Stage::Drain | Stage::Serve => self.token.clone(),
            Stage::Flush => self.flush.clone(),
        };
        let handle = self.tasks.spawn((task.start)(token));
        self.names.insert(handle.id(), (task.name, task.stage));
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

    /// How many of the node's tasks are still running.
    pub fn tasks_left(&self) -> usize {
        self.tasks.len()
    }

    /// Waits until every task has ended (after the token is cancelled, or if they all end on
    /// their own); a task that panicked is logged. The flush starts once the node's token is
    /// cancelled and the draining tasks have ended.
    pub async fn wait(mut self) {
        loop {
            self.release_flush();
            let Some(r) = self.tasks.join_next_with_id().await else { return };
            self.ended(r);
        }
    }

    /// Cancels the token and stops the node within `within`: the sources, the dispatcher (which
    /// waits for its pod workers), the PLEG, the reconcilers and loops end first, the servers
    /// stop accepting; once those that drain have ended (or at the latest when a quarter of the
    /// bound is left) the status sync sends the newest statuses and the events their queue. What
    /// is left at the bound is aborted. Pods keep running.
    pub async fn shutdown(mut self, within: Duration) -> Stopped {
        self.token.cancel();
        let deadline = tokio::time::Instant::now() + within;
        let flush_at = deadline - within / FLUSH_SHARE;
        loop {
            self.release_flush();
            let until = if self.flush.is_cancelled() { deadline } else { flush_at };
            match tokio::time::timeout_at(until, self.tasks.join_next_with_id()).await {
                Ok(Some(r)) => self.ended(r),
                Ok(None) => return Stopped::default(),
                Err(_) if !self.flush.is_cancelled() => {
                    tracing::warn!(tasks = ?self.left(Some(Stage::Drain)), "still stopping; flushing the statuses now");
                    self.flush.cancel();
                }
                Err(_) => break,
            }
        }
        let aborted = self.left(None);
        tracing::warn!(tasks = ?aborted, ?within, "tasks did not stop in time: aborted");
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        Stopped { aborted }
    }

    /// Cancels the tokens and aborts every task at once.
    pub fn abort(mut self) {
        self.token.cancel();
        self.flush.cancel();
        self.tasks.abort_all();
    }

    /// Starts the flush once the node is stopping and nothing that drains is left.
    fn release_flush(&self) {
        if self.token.is_cancelled() && !self.flush.is_cancelled() && self.left(Some(Stage::Drain)).is_empty() {
            self.flush.cancel();
        }
    }

    fn left(&self, stage: Option<Stage>) -> Vec<&'static str> {
        let mut names: Vec<&'static str> =
            self.names.values().filter(|(_, s)| stage.is_none_or(|w| *s == w)).map(|(n, _)| *n).collect();
        names.sort_unstable();
        names
    }

    fn ended(&mut self, r: std::result::Result<(Id, ()), tokio::task::JoinError>) {
        let id = match &r {
            Ok((id, ())) => *id,
            Err(e) => e.id(),
        };
        let name = self.names.remove(&id).map_or("task", |(n, _)| n);
        if let Err(e) = r
            && e.is_panic()
        {
            tracing::error!(task = name, "task panicked");
        }
    }
}
