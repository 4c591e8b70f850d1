//! One pod's probes: the tasks probing its running container instances, what they last said,
//! and the probe checkpoint. The pod worker holds a [`PodProbes`]: it reconciles it with the
//! instances it observes, reads the results and stops it; the tasks are the handle's, each under
//! a child of the token the handle was given (the worker's, a child of the node's).

use super::checkpoint::{self, Saved, States};
use super::handlers::Target;
use super::{Kind, Update};
use k8s_openapi::api::core::v1::PodSpec;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::SystemTime;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// What the probes of one running container instance say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeView {
    pub ready: bool,
    pub started: bool,
    /// Why the readiness probe fails, when it does.
    pub readiness_message: String,
}

/// A running container instance to probe.
#[derive(Debug, Clone)]
pub struct Instance<'a> {
    /// The runtime's container id.
    pub id: &'a str,
    /// The container's name in the pod's spec.
    pub name: &'a str,
    /// When it started: `initialDelaySeconds` counts from here.
    pub started_at: SystemTime,
}

/// What one pod's probes need.
#[derive(Clone)]
pub struct Config {
    pub runtime: crate::cri::DynRuntime,
    /// prober_probe_total and prober_probe_duration_seconds are recorded here.
    pub metrics: crate::metrics::Metrics,
    pub pod: crate::cri::labels::PodRef,
    /// The pod's directory: the probe checkpoint is kept there.
    pub pod_dir: PathBuf,
}

/// The probes of one pod (see the module's doc).
pub struct PodProbes {
    cfg: Config,
    token: CancellationToken,
    /// By container id.
    instances: HashMap<String, ContainerProbes>,
    tasks: JoinSet<Option<()>>,
    tx: mpsc::UnboundedSender<Update>,
    rx: mpsc::UnboundedReceiver<Update>,
    /// Probe results saved before a kubelet restart (read once, at the first reconcile).
    restored: Option<States>,
    /// What the probe checkpoint file holds now.
    checkpointed: States,
}

/// The probe tasks of one container instance and what they last said.
struct ContainerProbes {
    /// The instance's tasks run until this is cancelled (when the instance is dropped).
    token: CancellationToken,
    view: ProbeView,
    started_tx: watch::Sender<bool>,
    /// Set when liveness or startup failed: the container is to be killed.
    kill: Option<String>,
}

impl Drop for ContainerProbes {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

impl PodProbes {
    /// No probe runs until [`reconcile`](Self::reconcile); every task stops once `token` is
    /// cancelled.
    pub fn new(cfg: Config, token: CancellationToken) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            cfg,
            token,
            instances: HashMap::new(),
            tasks: JoinSet::new(),
            tx,
            rx,
            restored: None,
            checkpointed: States::new(),
        }
    }

    /// Starts the probes of instances that just started running (from `spec`'s containers);
    /// stops those of instances no longer in `running`. After a kubelet restart an instance's
    /// probes go on from their checkpointed results.
    pub fn reconcile(
        &mut self,
        spec: Option<&PodSpec>,
        running: &[Instance<'_>],
        pod_ip: Option<&str>,
        now: SystemTime,
    ) {
        while self.tasks.try_join_next().is_some() {}
        self.instances.retain(|id, _| running.iter().any(|c| c.id == id));
        let pod_dir = &self.cfg.pod_dir;
        let restored = self.restored.get_or_insert_with(|| checkpoint::load(pod_dir)).clone();
        let Some(spec) = spec else { return };
        for c in running {
            if self.instances.contains_key(c.id) {
                continue;
            }
            // App containers and sidecars are probed (upstream's AddPod).
            let sidecars = spec.init_containers.iter().flatten().filter(|x| crate::meta::is_sidecar(x));
            let Some(container) = spec.containers.iter().chain(sidecars).find(|x| x.name == c.name) else { continue };
            let saved = restored.get(c.id).copied();
            let started = container.startup_probe.is_none() || saved.is_some_and(|s| s.started);
            let (started_tx, started_rx) = watch::channel(started);
            let entry = ContainerProbes {
                token: self.token.child_token(),
                view: ProbeView { ready: saved.is_some_and(|s| s.ready), started, readiness_message: String::new() },
                started_tx,
                kill: None,
            };
            let target = Target {
                runtime: self.cfg.runtime.clone(),
                container_id: c.id.to_string(),
                pod_ip: pod_ip.map(str::to_string),
                ports: container.ports.clone().unwrap_or_default(),
            };
            let probes = [
                (Kind::Startup, &container.startup_probe),
                (Kind::Liveness, &container.liveness_probe),
                (Kind::Readiness, &container.readiness_probe),
            ];
            for (kind, probe) in probes {
                let Some(probe) = probe.clone() else { continue };
                if kind == Kind::Startup && saved.is_some_and(|s| s.started) {
                    continue;
                }
                let initial = match (kind, saved) {
                    (Kind::Readiness, Some(s)) => Some(s.ready),
                    _ => None,
                };
                let gate = (kind != Kind::Startup && container.startup_probe.is_some()).then(|| started_rx.clone());
                let spec = super::worker::Spec {
                    metrics: self.cfg.metrics.clone(),
                    pod: self.cfg.pod.clone(),
                    kind,
                    probe,
                    container: c.name.to_string(),
                    target: target.clone(),
                    started_at: c.started_at,
                    now,
                    initial,
                };
                let probe = super::worker::run(spec, self.tx.clone(), gate);
                self.tasks.spawn(entry.token.clone().run_until_cancelled_owned(probe));
            }
            self.instances.insert(c.id.to_string(), entry);
        }
    }

    /// Stops an instance's probes (its container is being killed); its next instance gets new ones.
    pub fn forget(&mut self, id: &str) {
        self.instances.remove(id);
    }

    /// The next result that changed (cancel-safe: nothing is lost when the wait is dropped).
    pub async fn changed(&mut self) -> Update {
        // The handle holds a sender: the channel never closes.
        match self.rx.recv().await {
            Some(u) => u,
            None => std::future::pending().await,
        }
    }

    /// A result that changed, when one is waiting.
    pub fn try_changed(&mut self) -> Option<Update> {
        self.rx.try_recv().ok()
    }

    /// Takes a result into its instance's view; false when the instance is gone (the result is
    /// stale).
    pub fn record(&mut self, u: &Update) -> bool {
        let Some(p) = self.instances.get_mut(&u.container_id) else { return false };
        match (u.kind, u.ok) {
            (Kind::Readiness, ok) => {
                p.view.ready = ok;
                p.view.readiness_message = if ok { String::new() } else { u.message.clone() };
            }
            (Kind::Startup, true) => {
                p.view.started = true;
                let _ = p.started_tx.send(true);
            }
            (Kind::Liveness | Kind::Startup, false) => {
                p.kill = Some(format!("Container {} failed {} probe, will be restarted", u.container, u.kind.as_str()));
            }
            (Kind::Liveness, true) => {}
        }
        true
    }

    /// What each probed instance's probes say, by container id.
    pub fn views(&self) -> HashMap<String, ProbeView> {
        self.instances.iter().map(|(id, p)| (id.clone(), p.view.clone())).collect()
    }

    /// Instances whose liveness or startup probe failed, with the reason to kill them.
    pub fn unhealthy(&self) -> Vec<(String, String)> {
        self.instances.iter().filter_map(|(id, p)| p.kill.clone().map(|r| (id.clone(), r))).collect()
    }

    /// Writes the probe checkpoint when a result changed since the last write.
    pub fn checkpoint(&mut self) {
        let now: States = self
            .instances
            .iter()
            .map(|(id, p)| (id.clone(), Saved { ready: p.view.ready, started: p.view.started }))
            .collect();
        if now == self.checkpointed {
            return;
        }
        match checkpoint::save(&self.cfg.pod_dir, &now) {
            Ok(()) => self.checkpointed = now,
            Err(e) => {
                let pod = format!("{}/{}", self.cfg.pod.namespace, self.cfg.pod.name);
                tracing::warn!(pod = %pod, error = %e, "writing the probe checkpoint");
            }
        }
    }

    /// The pod's worker is ending: the checkpoint is written, every probe task is cancelled and
    /// awaited. Results still queued stay readable through [`try_changed`](Self::try_changed).
    pub async fn stop(&mut self) {
        self.checkpoint();
        self.instances.clear();
        self.token.cancel();
        while self.tasks.join_next().await.is_some() {}
    }

    /// Probe tasks not yet ended.
    #[cfg(test)]
    fn live_tasks(&mut self) -> usize {
        while self.tasks.try_join_next().is_some() {}
        self.tasks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, ExecAction, Probe};
    use std::time::Duration;

    fn exec_probe() -> Option<Probe> {
        Some(Probe {
            exec: Some(ExecAction { command: Some(vec!["true".into()]) }),
            period_seconds: Some(10),
            ..Default::default()
        })
    }

    fn spec(names: &[&str]) -> PodSpec {
        let containers = names
            .iter()
            .map(|n| Container {
                name: n.to_string(),
                liveness_probe: exec_probe(),
                readiness_probe: exec_probe(),
                ..Default::default()
            })
            .collect();
        PodSpec { containers, ..Default::default() }
    }

    fn probes(dir: &std::path::Path) -> PodProbes {
        let cfg = Config {
            runtime: std::sync::Arc::new(crate::cri::fake::FakeRuntime::new()),
            metrics: crate::metrics::Metrics::new(),
            pod: crate::cri::labels::PodRef { name: "web".into(), namespace: "default".into(), uid: "u1".into() },
            pod_dir: dir.to_path_buf(),
        };
        PodProbes::new(cfg, CancellationToken::new())
    }

    fn instance<'a>(id: &'a str, name: &'a str) -> Instance<'a> {
        Instance { id, name, started_at: SystemTime::UNIX_EPOCH }
    }

    /// Lets cancelled tasks run to their end.
    async fn settle() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    fn ids(p: &PodProbes) -> Vec<String> {
        let mut ids: Vec<String> = p.views().into_keys().collect();
        ids.sort();
        ids
    }

    #[tokio::test(start_paused = true)]
    async fn reconcile_starts_probes_of_new_instances_and_stops_those_gone() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = probes(dir.path());
        let now = SystemTime::UNIX_EPOCH;
        let (a, b) = (instance("c1", "app"), instance("c2", "side"));
        p.reconcile(Some(&spec(&["app", "side"])), &[a.clone(), b.clone()], None, now);
        assert_eq!(ids(&p), ["c1", "c2"]);
        assert_eq!(p.live_tasks(), 4, "liveness and readiness of each instance");

        // The same instances again: nothing new starts.
        p.reconcile(Some(&spec(&["app", "side"])), &[a.clone(), b.clone()], None, now);
        assert_eq!(p.live_tasks(), 4);

        // "side" went away (removed from the spec, its instance gone): its probes stop.
        p.reconcile(Some(&spec(&["app"])), std::slice::from_ref(&a), None, now);
        settle().await;
        assert_eq!(ids(&p), ["c1"]);
        assert_eq!(p.live_tasks(), 2);

        // A container added to the spec gets probes once its instance runs; one not in the spec
        // gets none.
        let c = instance("c3", "added");
        let stray = instance("c4", "unknown");
        p.reconcile(Some(&spec(&["app", "added"])), &[a, c, stray], None, now);
        assert_eq!(ids(&p), ["c1", "c3"]);
        assert_eq!(p.live_tasks(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn sidecars_are_probed_and_other_init_containers_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = probes(dir.path());
        let mut spec = spec(&["app"]);
        let init = |name: &str, policy: Option<&str>| Container {
            name: name.into(),
            restart_policy: policy.map(str::to_string),
            readiness_probe: exec_probe(),
            ..Default::default()
        };
        spec.init_containers = Some(vec![init("side", Some("Always")), init("setup", None)]);
        let running = [instance("c1", "app"), instance("c2", "side"), instance("c3", "setup")];
        p.reconcile(Some(&spec), &running, None, SystemTime::UNIX_EPOCH);
        assert_eq!(ids(&p), ["c1", "c2"]);
        assert_eq!(p.live_tasks(), 3, "the app's liveness and readiness, the sidecar's readiness");
        p.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn stop_cancels_every_task_and_forget_one_instance() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = probes(dir.path());
        let running = [instance("c1", "app"), instance("c2", "side")];
        p.reconcile(Some(&spec(&["app", "side"])), &running, None, SystemTime::UNIX_EPOCH);
        assert_eq!(p.live_tasks(), 4);
        p.forget("c2");
        settle().await;
        assert_eq!(p.live_tasks(), 2);
        p.stop().await;
        assert_eq!(p.live_tasks(), 0);
        assert!(p.views().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn results_are_checkpointed_and_restored_by_the_next_handle() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = probes(dir.path());
        let running = [instance("c1", "app")];
        p.reconcile(Some(&spec(&["app"])), &running, None, SystemTime::UNIX_EPOCH);
        let ready = Update {
            container_id: "c1".into(),
            container: "app".into(),
            kind: Kind::Readiness,
            ok: true,
            message: String::new(),
        };
        assert!(p.record(&ready));
        assert!(!p.record(&Update { container_id: "gone".into(), ..ready.clone() }), "a stale result");
        p.stop().await;
        assert_eq!(checkpoint::load(dir.path())["c1"], Saved { ready: true, started: true });

        // After a restart the same instance starts out ready.
        let mut again = probes(dir.path());
        again.reconcile(Some(&spec(&["app"])), &running, None, SystemTime::UNIX_EPOCH);
        assert!(again.views()["c1"].ready);
        again.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn the_tasks_results_come_through_changed_and_land_in_the_views() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = probes(dir.path());
        // The fake runtime has no such container: every exec fails.
        p.reconcile(Some(&spec(&["app"])), &[instance("c1", "app")], None, SystemTime::UNIX_EPOCH);
        let u = p.changed().await;
        assert_eq!((u.container_id.as_str(), u.kind, u.ok), ("c1", Kind::Readiness, false));
        assert!(u.message.contains("not running"), "{}", u.message);
        assert!(p.record(&u));
        assert_eq!(p.views()["c1"].readiness_message, u.message);
        // Liveness fails after its failureThreshold (3) periods: the instance is to be killed.
        let u = p.changed().await;
        assert_eq!((u.kind, u.ok), (Kind::Liveness, false));
        p.record(&u);
        assert_eq!(p.unhealthy().len(), 1);
        p.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_liveness_probe_marks_the_instance_for_a_kill() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = probes(dir.path());
        p.reconcile(Some(&spec(&["app"])), &[instance("c1", "app")], None, SystemTime::UNIX_EPOCH);
        assert!(p.unhealthy().is_empty());
        let failed = Update {
            container_id: "c1".into(),
            container: "app".into(),
            kind: Kind::Liveness,
            ok: false,
            message: "boom".into(),
        };
        p.record(&failed);
        assert_eq!(
            p.unhealthy(),
            [("c1".to_string(), "Container app failed liveness probe, will be restarted".to_string())]
        );
        p.stop().await;
    }
}
