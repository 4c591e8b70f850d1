//! The manager on a fake logind (recording the lock, the drop-in reload and the signals) and a
//! fake dispatcher, in tokio's paused time.

use super::logind::{self, Connect, InhibitLock, Logind};
use super::*;
use crate::clock::FakeClock;
use futures::stream::BoxStream;
use k8s_openapi::api::core::v1::PodStatus;
use serde_json::json;
use std::sync::Mutex;
use std::time::UNIX_EPOCH;
use tokio::time::Instant;

#[derive(Default)]
struct FakeState {
    delay: Duration,
    /// What InhibitDelayMaxUSec becomes on reload (None: unchanged, as a logind ignoring it).
    delay_after_reload: Option<Duration>,
    locks_taken: usize,
    locks_held: usize,
    reloads: usize,
    signals: Option<mpsc::UnboundedSender<bool>>,
    log: Vec<String>,
}

#[derive(Clone, Default)]
struct FakeLogind(Arc<Mutex<FakeState>>);

struct Held(FakeLogind);

impl Drop for Held {
    fn drop(&mut self) {
        let mut s = self.0.0.lock().unwrap();
        s.locks_held -= 1;
        s.log.push("released".into());
    }
}

#[async_trait::async_trait]
impl Logind for FakeLogind {
    async fn inhibit_delay_max(&self) -> logind::Result<Duration> {
        Ok(self.0.lock().unwrap().delay)
    }
    async fn inhibit_shutdown(&self) -> logind::Result<InhibitLock> {
        let mut s = self.0.lock().unwrap();
        s.locks_taken += 1;
        s.locks_held += 1;
        s.log.push("inhibit".into());
        Ok(InhibitLock::new(Held(self.clone())))
    }
    async fn reload_logind_conf(&self) -> logind::Result<()> {
        let mut s = self.0.lock().unwrap();
        s.reloads += 1;
        if let Some(d) = s.delay_after_reload {
            s.delay = d;
        }
        Ok(())
    }
    async fn monitor_shutdown(&self) -> logind::Result<BoxStream<'static, bool>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.0.lock().unwrap().signals = Some(tx);
        Ok(tokio_stream_from(rx))
    }
}

fn tokio_stream_from(mut rx: mpsc::UnboundedReceiver<bool>) -> BoxStream<'static, bool> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

#[async_trait::async_trait]
impl Connect for FakeLogind {
    async fn connect(&self) -> logind::Result<Box<dyn Logind>> {
        Ok(Box::new(self.clone()))
    }
}

impl FakeLogind {
    fn with_delay(delay: Duration) -> Self {
        let f = Self::default();
        f.0.lock().unwrap().delay = delay;
        f
    }
    fn emit(&self, start: bool) {
        let tx = self.0.lock().unwrap().signals.clone().expect("watching");
        tx.send(start).unwrap();
    }
    fn held(&self) -> usize {
        self.0.lock().unwrap().locks_held
    }
    fn taken(&self) -> usize {
        self.0.lock().unwrap().locks_taken
    }
}

fn pod(name: &str, priority: Option<i32>, grace: Option<i64>) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "uid": name},
        "spec": {"containers": [], "priority": priority, "terminationGracePeriodSeconds": grace}
    }))
    .unwrap()
}

/// A killed pod as the fake dispatcher saw it: name, grace, when (since the signal).
type Kills = Arc<Mutex<Vec<(String, i64, Duration)>>>;

struct Node {
    logind: FakeLogind,
    handle: Handle,
    kills: Kills,
    token: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    state_file: PathBuf,
    _dir: tempfile::TempDir,
}

/// Starts the manager with `periods` over pods; the fake dispatcher "stops" a pod after
/// `stop_after(name, grace)` (None: never within its grace).
fn start(
    periods: Vec<Period>,
    logind: FakeLogind,
    pods: &[Pod],
    stop_after: impl Fn(&str, i64) -> Option<Duration> + Send + 'static,
) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let statuses = Statuses::new();
    for p in pods {
        statuses.set(p, PodStatus { phase: Some("Running".into()), ..Default::default() });
    }
    let (kill_tx, mut kill_rx) = mpsc::channel::<EvictionRequest>(4);
    let kills: Kills = Arc::default();
    let started = Instant::now();
    let seen = kills.clone();
    tokio::spawn(async move {
        while let Some(req) = kill_rx.recv().await {
            let grace = req.eviction.grace_secs;
            assert_eq!((req.eviction.reason, req.eviction.message.as_str()), (REASON, MESSAGE));
            seen.lock().unwrap().push((req.uid.clone(), grace, started.elapsed()));
            let after = stop_after(&req.uid, grace).unwrap_or(Duration::from_secs(grace as u64));
            let done = req.eviction.done;
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                drop(done);
            });
        }
    });
    let cfg = Config {
        node_name: "n1".into(),
        periods,
        state_file: dir.path().join(STATE_FILE),
        logind_conf_dir: dir.path().join("logind.conf.d"),
    };
    let handle = Handle::new();
    let deps = Deps {
        logind: Arc::new(logind.clone()),
        statuses,
        kill: kill_tx,
        events: Recorder::disabled(),
        metrics: Metrics::new(),
        clock: Arc::new(FakeClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000))),
    };
    let token = CancellationToken::new();
    let task = tokio::spawn(run(cfg.clone(), deps, handle.clone(), token.clone()));
    Node { logind, handle, kills, token, task, state_file: cfg.state_file, _dir: dir }
}

async fn until(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(600);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn p(priority: i32, grace_secs: i64) -> Period {
    Period { priority, grace_secs }
}

#[tokio::test(start_paused = true)]
async fn groups_are_killed_from_low_to_high_priority_each_within_its_budget() {
    let pods = [
        pod("low", Some(0), Some(30)),
        pod("mid", Some(1000), Some(1)),
        pod("crit", Some(2_000_000_000), Some(30)),
        pod("crit-polite", Some(2_000_001_000), Some(30)),
    ];
    let logind = FakeLogind::with_delay(Duration::from_secs(30));
    // Every pod ignores SIGTERM (takes its whole grace) except crit-polite, which stops at once.
    let n = start(vec![p(0, 3), p(1000, 2), p(2_000_000_000, 2)], logind, &pods, |name, _| {
        (name == "crit-polite").then_some(Duration::ZERO)
    });
    until("lock taken", || n.logind.held() == 1).await;
    let t0 = Instant::now();
    n.logind.emit(true);
    until("lock released", || n.logind.held() == 0).await;
    let took = t0.elapsed();
    let kills = n.kills.lock().unwrap().clone();
    let at = |name: &str| kills.iter().find(|k| k.0 == name).cloned().unwrap_or_else(|| panic!("{name}: {kills:?}"));
    // The group's grace period, or the pod's own when shorter (mid: 1 s).
    assert_eq!((at("low").1, at("mid").1, at("crit").1, at("crit-polite").1), (3, 1, 2, 2));
    let secs = |d: Duration| d.as_secs_f64().round() as u64;
    // low takes its group's 3 s; mid is done after its own 1 s, so its group ends early; the
    // critical group starts then.
    assert_eq!((secs(at("low").2), secs(at("mid").2), secs(at("crit").2)), (0, 3, 4));
    assert_eq!(secs(took), 6, "lock released once the last group is done");
    assert!(n.handle.shutting_down());
    assert_eq!(n.handle.status(), Some("node is shutting down"));
    let pending = pod("late", None, None);
    let refused = n.handle.admit(&pending, &[]).unwrap_err();
    assert_eq!(refused.reason, "NodeShutdown");
    assert_eq!(refused.message, "Pod was rejected as the node is shutting down.");
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(&n.state_file).unwrap()).unwrap();
    assert!(state["endTime"].as_str().is_some_and(|t| t != "0001-01-01T00:00:00Z"), "{state}");
    n.token.cancel();
    n.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_group_that_outlives_its_budget_is_not_waited_for_longer() {
    let pods = [pod("low", None, Some(60)), pod("crit", Some(2_000_000_000), Some(60))];
    let logind = FakeLogind::with_delay(Duration::from_secs(30));
    // The fake "stops" pods far later than the budget: the manager moves on at the budget.
    let n = start(vec![p(0, 2), p(2_000_000_000, 1)], logind, &pods, |_, _| Some(Duration::from_secs(100)));
    until("lock taken", || n.logind.held() == 1).await;
    let t0 = Instant::now();
    n.logind.emit(true);
    until("lock released", || n.logind.held() == 0).await;
    assert_eq!(t0.elapsed().as_secs_f64().round() as u64, 3);
    let kills = n.kills.lock().unwrap().clone();
    assert_eq!(kills.iter().map(|k| (k.0.as_str(), k.2.as_secs())).collect::<Vec<_>>(), [("low", 0), ("crit", 2)]);
    n.token.cancel();
    n.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn empty_groups_take_no_time() {
    let logind = FakeLogind::with_delay(Duration::from_secs(30));
    let n = start(vec![p(0, 5), p(2_000_000_000, 5)], logind, &[pod("crit", Some(2_000_000_000), Some(1))], |_, _| {
        Some(Duration::ZERO)
    });
    until("lock taken", || n.logind.held() == 1).await;
    let t0 = Instant::now();
    n.logind.emit(true);
    until("lock released", || n.logind.held() == 0).await;
    assert!(t0.elapsed() < Duration::from_millis(100), "no wait for the empty regular group");
    assert_eq!(n.kills.lock().unwrap().len(), 1);
    n.token.cancel();
    n.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_shutdown_takes_the_lock_again_and_admits_again() {
    let logind = FakeLogind::with_delay(Duration::from_secs(30));
    let n = start(vec![p(0, 1), p(2_000_000_000, 1)], logind, &[], |_, _| None);
    until("lock taken", || n.logind.held() == 1).await;
    n.logind.emit(true);
    until("lock released", || n.logind.held() == 0).await;
    assert!(n.handle.shutting_down());
    n.logind.emit(false);
    until("lock taken again", || n.logind.held() == 1).await;
    assert_eq!(n.logind.taken(), 2);
    until("not shutting down", || !n.handle.shutting_down()).await;
    assert!(n.handle.admit(&pod("new", None, None), &[]).is_ok());
    assert_eq!(n.handle.status(), None);
    n.token.cancel();
    n.task.await.unwrap();
    assert_eq!(n.logind.held(), 0, "a stopping kubelet drops its lock");
    assert!(n.kills.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_stopping_kubelet_kills_no_pod() {
    let logind = FakeLogind::with_delay(Duration::from_secs(30));
    let n = start(vec![p(0, 3), p(2_000_000_000, 2)], logind, &[pod("web", None, None)], |_, _| None);
    until("lock taken", || n.logind.held() == 1).await;
    n.token.cancel();
    n.task.await.unwrap();
    assert_eq!(n.logind.held(), 0);
    assert!(n.kills.lock().unwrap().is_empty(), "the kubelet's own stop is no node shutdown");
    assert!(!n.handle.shutting_down());
}

#[tokio::test(start_paused = true)]
async fn a_short_inhibit_delay_is_raised_through_the_drop_in_and_a_reload() {
    let logind = FakeLogind::with_delay(Duration::from_secs(5));
    logind.0.lock().unwrap().delay_after_reload = Some(Duration::from_secs(7));
    let n = start(vec![p(0, 5), p(2_000_000_000, 2)], logind, &[], |_, _| None);
    until("lock taken", || n.logind.held() == 1).await;
    assert_eq!(n.logind.0.lock().unwrap().reloads, 1);
    let dropin = n.state_file.parent().unwrap().join("logind.conf.d/99-kubelet.conf");
    assert!(std::fs::read_to_string(&dropin).unwrap().contains("InhibitDelayMaxSec=7"));
    n.token.cancel();
    n.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_delay_logind_will_not_raise_leaves_the_manager_off() {
    let logind = FakeLogind::with_delay(Duration::from_secs(5));
    let n = start(vec![p(0, 5), p(2_000_000_000, 2)], logind, &[], |_, _| None);
    // The first start fails: no lock, the task ends, pods are admitted.
    tokio::time::timeout(Duration::from_secs(60), n.task).await.expect("manager ended").unwrap();
    assert_eq!(n.logind.taken(), 0);
    assert_eq!(n.logind.0.lock().unwrap().reloads, 1);
    assert!(n.handle.admit(&pod("new", None, None), &[]).is_ok());
}

#[test]
fn the_configuration_turns_the_manager_on_or_off() {
    let root = std::path::Path::new("/var/lib/kubelet");
    let off = KubeletConfiguration::default();
    assert!(Config::from_kubelet_config(&off, "n1", root).is_none(), "shutdownGracePeriod 0 keeps it off");
    let kc = KubeletConfiguration {
        shutdown_grace_period: kubelet_config::duration::Duration::parse("30s").unwrap(),
        shutdown_grace_period_critical_pods: kubelet_config::duration::Duration::parse("10s").unwrap(),
        ..Default::default()
    };
    let c = Config::from_kubelet_config(&kc, "n1", root).unwrap();
    assert_eq!(c.periods, vec![p(0, 20), p(2_000_000_000, 10)]);
    assert_eq!(c.state_file, root.join("graceful_node_shutdown_state"));
    let mut gated = kc.clone();
    gated.feature_gates.insert("GracefulNodeShutdown".into(), false);
    assert!(Config::from_kubelet_config(&gated, "n1", root).is_none());
    let by_priority = KubeletConfiguration {
        shutdown_grace_period_by_pod_priority: vec![
            kubelet_config::ShutdownGracePeriodByPodPriority { priority: 100000, shutdown_grace_period_seconds: 4 },
            kubelet_config::ShutdownGracePeriodByPodPriority { priority: 0, shutdown_grace_period_seconds: 6 },
        ],
        ..Default::default()
    };
    let c = Config::from_kubelet_config(&by_priority, "n1", root).unwrap();
    assert_eq!(c.periods, vec![p(0, 6), p(100000, 4)]);
}
