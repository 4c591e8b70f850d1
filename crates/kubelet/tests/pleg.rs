//! The PLEG with its cache feeding the pod workers, on the in-memory runtime and tokio's paused
//! time: workers observe from the relist (no list calls of their own), never act on a relist
//! older than their own changes, see exits at once through runtime events, and through the
//! relist when the runtime has no events or the stream broke.

use k8s_openapi::api::core::v1::Pod;
use kubelet::clock::FakeClock;
use kubelet::composition::{self, Identity};
use kubelet::cri::DynRuntime;
use kubelet::cri::fake::FakeRuntime;
use kubelet::pleg;
use kubelet::sources::manifest::{self, Origin};
use kubelet::sources::{Snapshot, SourceKind};
use kubelet::status_manager::Statuses;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

struct Node {
    rt: FakeRuntime,
    statuses: Statuses,
    snapshots: mpsc::Sender<Snapshot>,
    _running: composition::Running,
    _dir: tempfile::TempDir,
}

/// The composed node on the fake runtime: PLEG and its cache, dispatcher, workers; pods fed by
/// hand as the file source.
async fn node(rt: FakeRuntime, relist_period: Duration) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let id = Identity { node_name: "n1".into(), node_ip: Some("192.0.2.10".into()) };
    let mut cfg = composition::Config::in_process(id, dir.path().join("root")).unwrap();
    cfg.sync_frequency = Duration::from_secs(600);
    cfg.pleg.as_mut().unwrap().relist_period = relist_period;
    cfg.max_pods = 1000;
    cfg.sources.fed = HashSet::from([SourceKind::File]);
    cfg.housekeeping = Duration::from_secs(600);
    let parts = composition::Parts {
        runtime: Arc::new(rt.clone()),
        api: None,
        clock: Arc::new(FakeClock::new(SystemTime::now())),
        metrics: Default::default(),
    };
    let running = composition::build(cfg, parts).await.unwrap().spawn(CancellationToken::new()).await.unwrap();
    Node { rt, statuses: running.statuses.clone(), snapshots: running.snapshots(), _running: running, _dir: dir }
}

fn pod(name: &str) -> Pod {
    pod_with(name, "Always")
}

fn pod_with(name: &str, restart: &str) -> Pod {
    let v = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"restartPolicy": restart, "containers": [{"name": "app", "image": "img:1"}]}
    });
    let origin = Origin { kind: SourceKind::File, location: format!("/m/{name}.yaml") };
    manifest::prepare(serde_json::from_value(v).unwrap(), &origin, "n1", "t").unwrap()
}

fn app(n: &Node, uid: &str) -> Option<k8s_openapi::api::core::v1::ContainerStatus> {
    n.statuses.get(uid)?.container_statuses?.into_iter().find(|c| c.name == "app")
}

fn running(n: &Node, uid: &str) -> bool {
    app(n, uid).and_then(|c| c.state).is_some_and(|s| s.running.is_some())
}

/// Waits (in paused time) until `f` holds; returns how long that took.
async fn until(what: &str, limit: Duration, f: impl Fn() -> bool) -> Duration {
    let start = tokio::time::Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    start.elapsed()
}

/// Runs pod "web" (restartPolicy Always) until it has run a while; returns its UID.
async fn run_web(n: &Node) -> String {
    let p = pod("web");
    let u = p.metadata.uid.clone().unwrap();
    n.snapshots.send(Snapshot { source: SourceKind::File, pods: vec![p] }).await.unwrap();
    until("running", Duration::from_secs(5), || running(n, &u)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    u
}

/// Makes the pod's container exit with 1; returns how long its restart took to show in the status.
async fn exit_and_wait_for_the_restart(n: &Node, u: &str) -> Duration {
    n.rt.exit_container(&n.rt.containers_named("app")[0], 1);
    until("restarted", Duration::from_secs(5), || app(n, u).is_some_and(|c| c.restart_count == 1) && running(n, u))
        .await
}

fn count(rt: &FakeRuntime, op: &str) -> usize {
    rt.calls().iter().filter(|c| *c == op).count()
}

#[tokio::test(start_paused = true)]
async fn workers_observe_from_the_relist_and_never_from_a_stale_one() {
    let rt = FakeRuntime::new();
    rt.add_image("img:1");
    let n = node(rt, Duration::from_secs(1)).await;
    let pods: Vec<Pod> = (0..20).map(|i| pod(&format!("p{i}"))).collect();
    let uids: Vec<String> = pods.iter().map(|p| p.metadata.uid.clone().unwrap()).collect();
    n.snapshots.send(Snapshot { source: SourceKind::File, pods }).await.unwrap();
    until("all running", Duration::from_secs(10), || uids.iter().all(|u| running(&n, u))).await;
    // Each pod started exactly once: no worker planned from a relist older than its own
    // RunPodSandbox/CreateContainer.
    assert_eq!(count(&n.rt, "RunPodSandbox"), 20);
    assert_eq!(count(&n.rt, "CreateContainer"), 20);
    assert_eq!(count(&n.rt, "StartContainer"), 20);
    // The lists are the PLEG's, shared by all pods (the workers' waits coalesce), not two per pod.
    let lists = count(&n.rt, "ListContainers");
    assert!(lists < 20, "{lists} ListContainers calls for 20 pods");

    // Quiet: nothing but the periodic relist.
    let before = n.rt.calls().len();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle: Vec<String> = n.rt.calls()[before..].to_vec();
    assert!(idle.iter().all(|c| c == "ListContainers" || c == "ListPodSandbox"), "{idle:?}");
    assert!(idle.len() <= 22, "{} calls in 10 s idle", idle.len());
}

#[tokio::test(start_paused = true)]
async fn without_events_an_exit_is_seen_by_the_next_relist_and_restarted() {
    let rt = FakeRuntime::new();
    rt.add_image("img:1");
    // containerd 1.6: GetContainerEvents is Unimplemented.
    rt.set_events_unimplemented(true);
    let n = node(rt, Duration::from_secs(1)).await;
    let u = run_web(&n).await;
    let took = exit_and_wait_for_the_restart(&n, &u).await;
    assert!(took <= Duration::from_millis(1100), "took {took:?}: the relist period bounds it");
    assert_eq!(count(&n.rt, "CreateContainer"), 2);
}

#[tokio::test(start_paused = true)]
async fn a_removed_pod_put_back_with_the_same_uid_starts_afresh() {
    let rt = FakeRuntime::new();
    rt.add_image("img:1");
    let n = node(rt, Duration::from_secs(1)).await;
    let p = pod("web");
    let u = p.metadata.uid.clone().unwrap();
    n.snapshots.send(Snapshot { source: SourceKind::File, pods: vec![p.clone()] }).await.unwrap();
    until("running", Duration::from_secs(5), || running(&n, &u)).await;
    n.snapshots.send(Snapshot { source: SourceKind::File, pods: vec![] }).await.unwrap();
    until("removed", Duration::from_secs(5), || n.rt.sandbox_count() == 0 && n.statuses.get(&u).is_none()).await;
    n.snapshots.send(Snapshot { source: SourceKind::File, pods: vec![p] }).await.unwrap();
    until("running again", Duration::from_secs(5), || running(&n, &u)).await;
    assert_eq!(n.rt.sandbox_count(), 1);
    assert_eq!(count(&n.rt, "RunPodSandbox"), 2);
    assert_eq!(app(&n, &u).map(|c| c.restart_count), Some(0));
}

fn terminated(n: &Node, uid: &str, code: i32) -> bool {
    app(n, uid).and_then(|c| c.state?.terminated).is_some_and(|t| t.exit_code == code)
}

#[tokio::test(start_paused = true)]
async fn an_exit_reaches_the_status_through_events_without_a_relist() {
    let rt = FakeRuntime::new();
    rt.add_image("img:1");
    let n = node(rt, Duration::from_secs(1)).await;
    let p = pod_with("web", "Never");
    let u = p.metadata.uid.clone().unwrap();
    n.snapshots.send(Snapshot { source: SourceKind::File, pods: vec![p] }).await.unwrap();
    until("running", Duration::from_secs(5), || running(&n, &u)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    n.rt.exit_container(&n.rt.containers_named("app")[0], 3);
    // With the stream up the periodic relist is 30 s away and no worker asked for one: only
    // the event can bring the exit this fast.
    let took = until("terminated", Duration::from_secs(5), || terminated(&n, &u, 3)).await;
    assert!(took <= Duration::from_millis(2), "took {took:?}");
}

#[tokio::test(start_paused = true)]
async fn with_events_the_relist_slows_to_its_backstop_period() {
    let rt = FakeRuntime::new();
    rt.add_image("img:1");
    let n = node(rt, Duration::from_secs(1)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let lists = count(&n.rt, "ListContainers");
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(count(&n.rt, "ListContainers") - lists, 2, "one relist every 30 s");
}

#[tokio::test(start_paused = true)]
async fn a_broken_event_stream_falls_back_to_the_relist_until_it_is_back() {
    let rt = FakeRuntime::new();
    rt.add_image("img:1");
    let n = node(rt, Duration::from_secs(1)).await;
    let (a, b) = (pod_with("a", "Never"), pod_with("b", "Never"));
    let (ua, ub) = (a.metadata.uid.clone().unwrap(), b.metadata.uid.clone().unwrap());
    n.snapshots.send(Snapshot { source: SourceKind::File, pods: vec![a, b] }).await.unwrap();
    until("running", Duration::from_secs(5), || running(&n, &ua) && running(&n, &ub)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ids = n.rt.containers_named("app");
    // The runtime drops the stream; the container exits while the PLEG resubscribes (1 s).
    n.rt.break_event_streams();
    tokio::task::yield_now().await;
    n.rt.exit_container(&ids[0], 1);
    let took = until("a terminated", Duration::from_secs(5), || terminated(&n, &ua, 1) || terminated(&n, &ub, 1)).await;
    assert!(took <= Duration::from_millis(1100), "took {took:?}: the 1 s relist caught it");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(count(&n.rt, "GetContainerEvents"), 2, "resubscribed");
    n.rt.exit_container(&ids[1], 2);
    let took = until("b terminated", Duration::from_secs(5), || terminated(&n, &ua, 2) || terminated(&n, &ub, 2)).await;
    assert!(took <= Duration::from_millis(2), "took {took:?}: events again");
}

/// An exit of an instance the cache does not know yet (created after the last relist, exited
/// before the next one: a container that crashes at once) makes the PLEG relist soon instead of
/// waiting for its 30 s backstop. Before, such an exit waited for that relist (the e2e crash
/// loop then restarted every 30 s and never showed "back-off 10s").
#[tokio::test(start_paused = true)]
async fn an_exit_of_an_instance_created_since_the_last_relist_makes_the_pleg_relist() {
    let rt = FakeRuntime::new();
    rt.add_image("img:1");
    let runtime: DynRuntime = Arc::new(rt.clone());
    let cache = pleg::Cache::new();
    let (feed_tx, feed_rx) = mpsc::channel(8);
    let (tx, mut changed) = mpsc::channel(8);
    tokio::spawn(pleg::run_with_feed(
        pleg::Config::new(Default::default()),
        runtime.clone(),
        pleg::Health::default(),
        cache.clone(),
        tx,
        feed_rx,
        tokio_util::sync::CancellationToken::new(),
    ));
    feed_tx.send(pleg::Feed::Up).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let lists = count(&rt, "ListContainers");
    let mut sandbox = kubelet::cri::api::PodSandboxConfig::default();
    sandbox.labels.insert(kubelet::cri::labels::POD_UID.into(), "u1".into());
    let sb = runtime.run_pod_sandbox(sandbox).await.unwrap();
    let mut config = kubelet::cri::api::ContainerConfig::default();
    config.labels.insert(kubelet::cri::labels::POD_UID.into(), "u1".into());
    let c = runtime.create_container(&sb, config, Default::default()).await.unwrap();
    runtime.start_container(&c).await.unwrap();
    rt.exit_container(&c, 1);
    let ev = pleg::Event { id: c.clone(), uid: None, kind: pleg::EventKind::Stopped };
    feed_tx.send(pleg::Feed::Event(ev)).await.unwrap();
    let uid = tokio::time::timeout(Duration::from_secs(1), changed.recv()).await.expect("relisted soon");
    assert_eq!(uid.as_deref(), Some("u1"));
    assert_eq!(count(&rt, "ListContainers") - lists, 1, "one relist, not the 30 s backstop");
    let exited = kubelet::cri::api::ContainerState::ContainerExited as i32;
    assert_eq!(cache.get("u1").unwrap().containers[0].state, exited);
}

/// A worker's own changes need no relist: after an exit (an event) the restart — CreateContainer,
/// StartContainer — is recorded in the cache by the worker itself, so the restart reaches the
/// status without any list call. Before, the worker waited for a relist that started after its
/// change: O(all pods), ~90 ms at 5,000 fake pods.
#[tokio::test(start_paused = true)]
async fn a_restart_reaches_the_status_without_a_relist() {
    let rt = FakeRuntime::new();
    rt.add_image("img:1");
    let n = node(rt, Duration::from_secs(1)).await;
    let u = run_web(&n).await;
    let lists = count(&n.rt, "ListContainers");
    let took = exit_and_wait_for_the_restart(&n, &u).await;
    assert!(took <= Duration::from_millis(2), "took {took:?}");
    assert_eq!(count(&n.rt, "ListContainers"), lists, "no relist: {:?}", n.rt.calls());
    assert_eq!(count(&n.rt, "CreateContainer"), 2);
}
