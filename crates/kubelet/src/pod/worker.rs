//! One worker per pod: a task that syncs its pod whenever the spec changes, the PLEG reports a
//! runtime change, a backoff ends or the resync period passes. Workers share nothing but handles.

mod deadline;
mod resizing;
mod running;
mod terminated;
mod terminating;

use super::error::Result;
use super::executor::{self, Deps};
use super::observe::{self, ContainerObs, PodObs};
use super::status::{self, WaitingReasons};
use crate::backoff::Exponential;
use crate::backoff::Keyed as Backoff;
use crate::prober::{self, PodProbes};
use crate::status_manager::Statuses;
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use std::collections::HashMap;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long a sync waits for volume set-ups or teardowns still in progress (failures return
/// at once; the volume manager retries them with backoff).
const VOLUME_WAIT: Duration = Duration::from_secs(10);

/// How long an observation waits for a fresh PLEG relist before listing the pod itself.
const FRESH_WAIT: Duration = Duration::from_secs(5);
/// Failed syncs are retried after 2 s doubling to 30 s.
const SYNC_RETRY: Exponential = Exponential::new(Duration::from_secs(2), Duration::from_secs(30));

#[derive(Debug)]
pub enum Msg {
    /// A new version of the pod's spec.
    Update(Box<Pod>),
    /// Something changed in the runtime for this pod.
    RuntimeEvent,
    /// The pod is no longer wanted: stop and remove it.
    Terminate,
    /// Node pressure or node shutdown: kill with the eviction's grace period, end Failed with its
    /// reason (Evicted / Terminated).
    Evict(super::Eviction),
}

/// Why the kubelet itself ended a pod Failed (an eviction, the active deadline): the status
/// reason and message, and the kill's grace period (None: the pod's own).
#[derive(Debug)]
struct Kill {
    reason: &'static str,
    message: String,
    grace_secs: Option<i64>,
    /// Evictions add the DisruptionTarget condition; the active deadline does not (upstream).
    disruption: bool,
    /// Dropped once the pod's containers are stopped (the eviction manager waits for it).
    done: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Kill {
    fn evicted(e: super::Eviction) -> Self {
        Kill { reason: e.reason, message: e.message, grace_secs: Some(e.grace_secs), disruption: true, done: e.done }
    }
}

/// A killed pod's status: the kill's reason and message; an eviction's DisruptionTarget condition
/// (reason TerminationByKubelet), as upstream.
fn killed_status(st: &mut PodStatus, kill: &Kill, ctx: &status::Context) {
    st.reason = Some(kill.reason.into());
    st.message = Some(kill.message.clone());
    if !kill.disruption {
        return;
    }
    let since = ctx
        .previous
        .and_then(|p| p.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "DisruptionTarget"))
        .and_then(|c| c.last_transition_time.clone());
    let conditions = st.conditions.get_or_insert_with(Vec::new);
    conditions.retain(|c| c.type_ != "DisruptionTarget");
    conditions.push(k8s_openapi::api::core::v1::PodCondition {
        type_: "DisruptionTarget".into(),
        status: "True".into(),
        reason: Some("TerminationByKubelet".into()),
        message: Some(kill.message.clone()),
        last_transition_time: since.or_else(|| Some(status::time(ctx.now))),
        ..Default::default()
    });
}

#[derive(Clone)]
pub struct WorkerConfig {
    pub deps: Deps,
    pub statuses: Statuses,
    pub runtime_name: String,
    pub resync: Duration,
    /// The PLEG's cache: workers observe from it instead of listing their pod. Without it (unit
    /// tests that feed PLEG events by hand), each observation lists the pod.
    pub pleg: Option<crate::pleg::Cache>,
}

/// Handle to a running worker.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::UnboundedSender<Msg>,
}

impl Handle {
    pub fn send(&self, msg: Msg) -> bool {
        self.tx.send(msg).is_ok()
    }
}

/// Starts the worker in `set` (its owner's: aborted with it); the task returns the pod UID when
/// the worker ends (a terminated pod fully removed, or `token` cancelled). Once `token` is
/// cancelled the worker starts no new sync: a sync in flight finishes the CRI call it is in and
/// stops at the next clean point (no sandbox or container half-made), then the probes stop, the
/// probe checkpoint and the newest status are written and the worker ends. It never stops a
/// container for that.
pub fn spawn(
    pod: Pod,
    terminating: bool,
    cfg: WorkerConfig,
    token: CancellationToken,
    set: &mut JoinSet<String>,
) -> Handle {
    let (tx, rx) = mpsc::unbounded_channel();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    // After a restart the API's copy of the status (startTime, transition times) is the record.
    let previous = cfg.statuses.get(&uid).or_else(|| pod.status.clone().filter(|s| s.phase.is_some()));
    // The pod's probes run under a child of the worker's token.
    let probes = prober::pod::Config {
        runtime: cfg.deps.runtime.clone(),
        metrics: cfg.deps.metrics.clone(),
        pod: super::runtime_config::pod_ref(&pod),
        pod_dir: super::runtime_config::pod_dir(&cfg.deps.node, &uid),
    };
    let probes = PodProbes::new(probes, token.child_token());
    // The worker runs the pod with the resources allocated to it (a resize not yet admitted
    // is not seen here).
    let pod = cfg.deps.allocation.allocated_pod(&pod);
    let worker = Worker {
        seen: cfg.deps.clock.now(),
        pod,
        terminating,
        cfg,
        backoff: Backoff::container_restart(),
        waiting: HashMap::new(),
        status: previous,
        killed: None,
        cache: HashMap::new(),
        ip_cache: HashMap::new(),
        probes,
        last_obs: None,
        token,
    };
    set.spawn(async move {
        worker.run(rx).await;
        uid
    });
    Handle { tx }
}

struct Worker {
    /// When the kubelet first saw the pod (kubelet_pod_start_duration_seconds counts from here).
    seen: SystemTime,
    pod: Pod,
    terminating: bool,
    cfg: WorkerConfig,
    backoff: Backoff,
    waiting: WaitingReasons,
    status: Option<PodStatus>,
    /// Set once the kubelet ended the pod Failed (evicted, past its active deadline).
    killed: Option<Kill>,
    cache: HashMap<String, ContainerObs>,
    ip_cache: HashMap<String, observe::SandboxIps>,
    /// The probes of the running container instances (the prober's tasks).
    probes: PodProbes,
    /// The last observation published, for the last status when the worker stops.
    last_obs: Option<PodObs>,
    /// Cancelled when the kubelet stops (a child of the dispatcher's).
    token: CancellationToken,
}

enum Outcome {
    /// Sync again no later than this.
    Next(Option<SystemTime>),
    /// The pod is gone from the runtime; the worker ends.
    Removed,
}

impl Worker {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        let name = executor::pod_name(&self.pod);
        let mut failures = 0u32;
        // kubelet_pod_worker_duration_seconds{operation_type}: create, update (spec changed), sync.
        let mut op = "create";
        loop {
            if self.token.is_cancelled() {
                break;
            }
            let started = std::time::Instant::now();
            let result = self.sync().await;
            self.cfg.deps.metrics.pod_worker(op, started.elapsed());
            op = "sync";
            if self.token.is_cancelled() {
                if let Err(e) = &result {
                    tracing::info!(pod = %name, error = %e, "pod sync stopped with the kubelet");
                }
                break;
            }
            let next = match result {
                Ok(Outcome::Removed) => return,
                Ok(Outcome::Next(t)) => {
                    failures = 0;
                    t
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(pod = %name, error = %e, "pod sync failed; will retry");
                    // Retry failed syncs with a growing delay (2 s doubling to 30 s).
                    let delay = SYNC_RETRY.nth(failures);
                    Some(self.cfg.deps.clock.now() + delay)
                }
            };
            let wait = next
                .map(|t| t.duration_since(self.cfg.deps.clock.now()).unwrap_or_default())
                .unwrap_or(self.cfg.resync)
                .min(self.cfg.resync);
            let msg = tokio::select! {
                biased;
                _ = self.token.cancelled() => break,
                m = rx.recv() => m,
                u = self.probes.changed() => {
                    self.probe_update(u);
                    while let Some(u) = self.probes.try_changed() {
                        self.probe_update(u);
                    }
                    continue;
                }
                _ = tokio::time::sleep(wait) => continue,
            };
            let Some(msg) = msg else { break };
            if matches!(msg, Msg::Update(_)) {
                op = "update";
            }
            self.apply(msg);
            // Coalesce whatever else queued up meanwhile into this one sync.
            while let Ok(m) = rx.try_recv() {
                if matches!(m, Msg::Update(_)) {
                    op = "update";
                }
                self.apply(m);
            }
        }
        self.stop().await;
    }

    /// The kubelet is stopping: the probes stop, their last results go into the probe
    /// checkpoint and the status. Containers keep running.
    async fn stop(&mut self) {
        let mut changed = false;
        while let Some(u) = self.probes.try_changed() {
            self.probe_update(u);
            changed = true;
        }
        if changed && let Some(obs) = self.last_obs.take() {
            self.publish_status(&obs);
        }
        self.probes.stop().await;
        tracing::debug!(pod = %executor::pod_name(&self.pod), "pod worker stopped");
    }

    fn apply(&mut self, msg: Msg) {
        match msg {
            Msg::Update(p) => self.pod = self.cfg.deps.allocation.allocated_pod(&p),
            Msg::Terminate => self.terminating = true,
            Msg::RuntimeEvent => {}
            Msg::Evict(e) => {
                self.kill(Kill::evicted(e));
            }
        }
    }

    /// The pod ends Failed with the kill's reason: the terminal branch of the sync kills what
    /// runs. A deleted or finished pod is left as it is (false).
    fn kill(&mut self, kill: Kill) -> bool {
        let phase = self.status.as_ref().and_then(|s| s.phase.as_deref());
        if self.killed.is_some() || self.terminating || matches!(phase, Some("Succeeded" | "Failed")) {
            return false;
        }
        tracing::info!(pod = %executor::pod_name(&self.pod), reason = kill.reason, "{}", kill.message);
        self.status.get_or_insert_with(Default::default).phase = Some("Failed".into());
        self.killed = Some(kill);
        true
    }

    fn probe_update(&mut self, u: prober::Update) {
        if !self.probes.record(&u) {
            return;
        }
        if !u.ok && !u.message.is_empty() {
            let ev = format!("{} probe failed: {}", u.kind.title(), u.message);
            self.cfg.deps.events.pod(
                &self.pod,
                Some(&u.container),
                crate::event_recorder::Type::Warning,
                "Unhealthy",
                ev,
            );
        }
        let pod = executor::pod_name(&self.pod);
        tracing::info!(pod = %pod, container = %u.container, probe = u.kind.as_str(), ok = u.ok, "probe result changed: {}", u.message);
    }

    /// The instances to probe: running app containers and sidecars (upstream probes sidecars
    /// too, not other init containers), in the ready sandbox.
    fn reconcile_probes(&mut self, obs: &PodObs) {
        let sandbox = obs.sandbox().filter(|s| s.ready);
        let pod_ip = sandbox.and_then(|s| s.ip.as_deref());
        let now = self.cfg.deps.clock.now();
        let spec = self.pod.spec.as_ref();
        let sidecar = |name: &str| {
            spec.and_then(|s| s.init_containers.as_ref())
                .is_some_and(|i| i.iter().any(|c| c.name == name && crate::meta::is_sidecar(c)))
        };
        let running: Vec<prober::Instance<'_>> = obs
            .containers
            .iter()
            .filter(|c| c.state == observe::CState::Running && (!c.init || sidecar(&c.name)))
            .filter(|c| sandbox.is_some_and(|s| s.id == c.sandbox_id))
            .map(|c| prober::Instance {
                id: &c.id,
                name: &c.name,
                started_at: crate::cri::nanos_to_time(c.started_at).unwrap_or(now),
            })
            .collect();
        self.probes.reconcile(self.pod.spec.as_ref(), &running, pod_ip, now);
    }

    /// The pod's runtime state: from the PLEG cache (fresh with respect to this worker's own
    /// changes), else from the pod's own list calls.
    async fn observe(&mut self) -> Result<PodObs> {
        let uid = self.pod.metadata.uid.clone().unwrap_or_default();
        let runtime = &self.cfg.deps.runtime;
        // A stopping kubelet relists no more: the pod is listed directly.
        let record = match &self.cfg.pleg {
            Some(pleg) => self.token.run_until_cancelled(pleg.get_fresh(&uid, FRESH_WAIT)).await.flatten(),
            None => None,
        };
        let obs = match record {
            Some(r) => observe::from_record(runtime, &r, &mut self.cache, &mut self.ip_cache).await,
            None => observe::observe(runtime, &uid, &mut self.cache, &mut self.ip_cache).await,
        };
        Ok(obs?)
    }

    /// Observes after this worker changed the runtime: waits for a relist that saw the change.
    async fn observe_after_change(&mut self) -> Result<PodObs> {
        self.changed_runtime();
        self.observe().await
    }

    /// The executor's changes, every outcome known: the PLEG cache takes them as they are, so
    /// the next observation needs no relist (only the new containers' statuses).
    fn record_own(&mut self, done: &executor::Done) {
        if let Some((id, ips)) = &done.sandbox_ips {
            self.ip_cache.insert(id.clone(), ips.clone());
        }
        if let Some(pleg) = &self.cfg.pleg {
            pleg.record_own(self.pod.metadata.uid.as_deref().unwrap_or_default(), done.change.clone());
        }
    }

    fn changed_runtime(&self) {
        if let Some(pleg) = &self.cfg.pleg {
            pleg.invalidate(self.pod.metadata.uid.as_deref().unwrap_or_default());
        }
    }

    fn publish(&mut self, obs: &PodObs) {
        // No probe starts once the kubelet is stopping.
        if !self.token.is_cancelled() {
            self.reconcile_probes(obs);
        }
        self.publish_status(obs);
        self.last_obs = Some(obs.clone());
    }

    fn publish_status(&mut self, obs: &PodObs) {
        self.probes.checkpoint();
        let views = self.probes.views();
        let ctx = status::Context {
            probes: &views,
            waiting: &self.waiting,
            previous: self.status.as_ref(),
            host_ip: self.cfg.deps.node.node_ip.as_deref(),
            runtime_name: &self.cfg.runtime_name,
            now: self.cfg.deps.clock.now(),
            pod_is_terminal: self.terminating && !obs.any_running(),
            conditions: self.pod.status.as_ref().and_then(|s| s.conditions.as_deref()).unwrap_or_default(),
        };
        let mut st = status::compute(&self.pod, obs, &ctx);
        if let Some(k) = &self.killed {
            killed_status(&mut st, k, &ctx);
        }
        if !ctx.pod_is_terminal {
            self.resize_status(&mut st);
        }
        self.record_start(&st);
        self.cfg.statuses.set(&self.pod, st.clone());
        self.status = Some(st);
    }

    /// The first time the pod runs: kubelet_pod_start_duration_seconds (from first seen) and
    /// kubelet_pod_start_sli_duration_seconds (from creation, image pulls excluded).
    fn record_start(&self, st: &PodStatus) {
        let was_running = self.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
        if was_running || st.phase.as_deref() != Some("Running") {
            return;
        }
        let now = self.cfg.deps.clock.now();
        let created = self
            .pod
            .metadata
            .creation_timestamp
            .as_ref()
            .and_then(|t| u64::try_from(t.0.as_nanosecond()).ok())
            .map(|n| std::time::UNIX_EPOCH + Duration::from_nanos(n))
            .unwrap_or(self.seen);
        let uid = self.pod.metadata.uid.as_deref().unwrap_or_default();
        let host_network = self.pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false);
        self.cfg.deps.metrics.pod_started(
            uid,
            now.duration_since(self.seen).unwrap_or_default(),
            now.duration_since(created).unwrap_or_default(),
            host_network,
        );
    }

    /// One sync, in upstream's phases: a deleted pod is terminated (`terminating.rs`: every
    /// container stopped, the pod removed from the runtime) and then cleaned up (`terminated.rs`:
    /// volumes, pod directory, cgroup, logs, status; the worker ends); a terminal pod (Succeeded,
    /// Failed, evicted) is only kept stopped, its volumes torn down; any other pod is synced to
    /// its spec (`running.rs`).
    async fn sync(&mut self) -> Result<Outcome> {
        let obs = self.observe().await?;
        if self.terminating {
            self.sync_terminating(&obs).await?;
            return self.sync_terminated().await;
        }
        let deadline = self.check_deadline();
        self.publish(&obs);
        let phase = self.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or_default();
        if phase == "Succeeded" || phase == "Failed" {
            // Dropped when both phases end, after the kill: the eviction manager waits for it.
            let _evicted = self.killed.as_mut().and_then(|e| e.done.take());
            let obs = self.stop_terminal(obs).await?;
            self.tear_down_terminal(&obs).await;
            return Ok(Outcome::Next(None));
        }
        // Synced again when the active deadline falls.
        Ok(match self.sync_running(obs).await? {
            Outcome::Next(next) => Outcome::Next(next.into_iter().chain(deadline).min()),
            removed => removed,
        })
    }
}
