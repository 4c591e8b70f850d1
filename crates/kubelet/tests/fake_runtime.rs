//! The pod lifecycle on the in-memory runtime with an injected clock: dispatcher, workers,
//! plan, executor and status together, in milliseconds and without sleeping through backoffs.

use k8s_openapi::api::core::v1::Pod;
use kubelet::clock::FakeClock;
use kubelet::composition::{self, Identity};
use kubelet::cri::fake::FakeRuntime;
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
    clock: FakeClock,
    statuses: Statuses,
    snapshots: mpsc::Sender<Snapshot>,
    pleg: mpsc::Sender<String>,
    dir: Arc<tempfile::TempDir>,
    _running: composition::Running,
}

async fn node(rt: FakeRuntime) -> Node {
    node_with(rt, None).await
}

async fn node_with(rt: FakeRuntime, max_parallel_pulls: Option<usize>) -> Node {
    node_in(rt, max_parallel_pulls, Arc::new(tempfile::tempdir().unwrap())).await
}

/// A kubelet on `dir` (a restarted kubelet reuses the first one's root directory): the composed
/// node without a PLEG (PLEG events are fed by hand: workers list their pod themselves), pods
/// fed by hand as the file source.
async fn node_in(rt: FakeRuntime, max_parallel_pulls: Option<usize>, dir: Arc<tempfile::TempDir>) -> Node {
    let clock = FakeClock::new(SystemTime::now());
    let id = Identity { node_name: "n1".into(), node_ip: Some("192.0.2.10".into()) };
    let mut cfg = composition::Config::in_process(id, dir.path().join("root")).unwrap();
    cfg.images.max_parallel_pulls = max_parallel_pulls;
    cfg.pleg = None;
    cfg.sources.fed = HashSet::from([SourceKind::File]);
    cfg.housekeeping = Duration::from_millis(50);
    let parts = composition::Parts {
        runtime: Arc::new(rt.clone()),
        api: None,
        clock: Arc::new(clock.clone()),
        metrics: Default::default(),
    };
    let running = composition::build(cfg, parts).await.unwrap().spawn(CancellationToken::new()).await.unwrap();
    Node {
        rt,
        clock,
        statuses: running.statuses.clone(),
        snapshots: running.snapshots(),
        pleg: running.pleg_events(),
        dir,
        _running: running,
    }
}

fn pod(name: &str, restart: &str, inits: &[&str]) -> Pod {
    let init: Vec<_> = inits.iter().map(|n| serde_json::json!({"name": n, "image": "img:1"})).collect();
    let v = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"restartPolicy": restart, "initContainers": init, "containers": [{"name": "app", "image": "img:1"}]}
    });
    let origin = Origin { kind: SourceKind::File, location: format!("/m/{name}.yaml") };
    let p: Pod = serde_json::from_value(v).unwrap();
    manifest::prepare(p, &origin, "n1", "t").unwrap()
}

async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    for _ in 0..3000 {
        if let Some(v) = f() {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

fn app_status(n: &Node, uid: &str) -> Option<k8s_openapi::api::core::v1::ContainerStatus> {
    n.statuses.get(uid)?.container_statuses?.into_iter().find(|c| c.name == "app")
}

fn running(n: &Node, uid: &str) -> bool {
    app_status(n, uid).and_then(|c| c.state).is_some_and(|s| s.running.is_some())
}

fn uid(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap()
}

#[tokio::test]
async fn a_pod_starts_crashes_backs_off_and_is_removed() {
    let rt = FakeRuntime::new();
    rt.add_image("img:1");
    let n = node(rt).await;
    let p = pod("web", "Always", &[]);
    let u = uid(&p);
    n.snapshots.send(Snapshot { source: SourceKind::File, pods: vec![p] }).await.unwrap();
    eventually("running", || running(&n, &u).then_some(())).await;
    assert_eq!(n.statuses.get(&u).unwrap().phase.as_deref(), Some("Running"));

    // First crash: restarted at once.
    let first = n.rt.containers_named("app")[0].clone();
    n.rt.exit_container(&first, 1);
    n.pleg.send(u.clone()).await.unwrap();
    eventually("restart 1", || (app_status(&n, &u)?.restart_count == 1 && running(&n, &u)).then_some(())).await;

    // Second crash within the 10 s window: CrashLoopBackOff, no restart until the clock moves.
    let second = n.rt.containers_named("app")[1].clone();
    n.rt.exit_container(&second, 1);
    n.pleg.send(u.clone()).await.unwrap();
    let msg = eventually("back-off", || {
        let w = app_status(&n, &u)?.state?.waiting?;
        (w.reason.as_deref() == Some("CrashLoopBackOff")).then(|| w.message.unwrap_or_default())
    })
    .await;
    assert!(msg.starts_with("back-off 10s restarting failed container=app pod=web-n1_default("), "{msg}");
    assert_eq!(n.rt.containers_named("app").len(), 2);
    n.clock.advance(Duration::from_secs(11));
    n.pleg.send(u.clone()).await.unwrap();
    eventually("restart 2", || (app_status(&n, &u)?.restart_count == 2 && running(&n, &u)).then_some(())).await;

    // Removed from the source: containers stopped, everything removed, status gone.
    n.snapshots.send(Snapshot { source: SourceKind::File, pods: vec![] }).await.unwrap();
    eventually("removed", || (n.statuses.get(&u).is_none() && n.rt.sandbox_count() == 0).then_some(())).await;
    assert!(n.rt.calls().contains(&"StopContainer".to_string()));
}

#[tokio::test]
async fn init_containers_start_one_at_a_time() {
    let rt = FakeRuntime::new();
    rt.add_image("img:1");
    let n = node(rt).await;
    let p = pod("job", "Always", &["one", "two"]);
    let u = uid(&p);
    n.snapshots.send(Snapshot { source: SourceKind::File, pods: vec![p] }).await.unwrap();
    let one = eventually("init one", || n.rt.containers_named("one").first().cloned()).await;
    assert!(n.rt.containers_named("two").is_empty() && n.rt.containers_named("app").is_empty());
    n.rt.exit_container(&one, 0);
    n.pleg.send(u.clone()).await.unwrap();
    let two = eventually("init two", || n.rt.containers_named("two").first().cloned()).await;
    assert!(n.rt.containers_named("app").is_empty());
    n.rt.exit_container(&two, 0);
    n.pleg.send(u.clone()).await.unwrap();
    eventually("app", || running(&n, &u).then_some(())).await;
    let st = n.statuses.get(&u).unwrap();
    let initialized = st.conditions.unwrap().into_iter().find(|c| c.type_ == "Initialized").unwrap();
    assert_eq!(initialized.status, "True");
}

#[tokio::test]
async fn never_restarting_pod_fails_and_stays_down() {
    let rt = FakeRuntime::new();
    rt.add_image("img:1");
    let n = node(rt).await;
    let p = pod("once", "Never", &[]);
    let u = uid(&p);
    n.snapshots.send(Snapshot { source: SourceKind::File, pods: vec![p] }).await.unwrap();
    eventually("running", || running(&n, &u).then_some(())).await;
    let id = n.rt.containers_named("app")[0].clone();
    n.rt.exit_container(&id, 3);
    n.pleg.send(u.clone()).await.unwrap();
    eventually("failed", || (n.statuses.get(&u)?.phase.as_deref() == Some("Failed")).then_some(())).await;
    n.pleg.send(u.clone()).await.unwrap();
    tokio::task::yield_now().await;
    assert_eq!(n.rt.containers_named("app").len(), 1, "not restarted");
    let term = app_status(&n, &u).unwrap().state.unwrap().terminated.unwrap();
    assert_eq!((term.exit_code, term.reason.as_deref()), (3, Some("Error")));
}

/// The active deadline on the injected clock (upstream's activeDeadlineHandler): a pod started
/// with one ends Failed / DeadlineExceeded once it has run that long, its container stopped and
/// the pod kept; one lowered by a spec update applies at once.
#[tokio::test]
async fn the_active_deadline_kills_the_pod_and_keeps_it_failed() {
    let rt = FakeRuntime::new();
    rt.add_image("img:1");
    let n = node(rt).await;
    let with_deadline = |name: &str, deadline: Option<i64>| {
        let mut p = pod(name, "Always", &[]);
        p.spec.as_mut().unwrap().active_deadline_seconds = deadline;
        p
    };
    let timed = with_deadline("timed", Some(5));
    let open = with_deadline("open", None);
    let (t, o) = (uid(&timed), uid(&open));
    n.snapshots.send(Snapshot { source: SourceKind::File, pods: vec![timed.clone(), open.clone()] }).await.unwrap();
    eventually("running", || (running(&n, &t) && running(&n, &o)).then_some(())).await;
    let failed = |u: &str| {
        let st = n.statuses.get(u)?;
        (st.phase.as_deref() == Some("Failed")).then_some(st)
    };
    n.clock.advance(Duration::from_secs(4));
    n.pleg.send(t.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(running(&n, &t) && failed(&t).is_none(), "not before the deadline");
    n.clock.advance(Duration::from_secs(1));
    n.pleg.send(t.clone()).await.unwrap();
    let st = eventually("past the deadline", || failed(&t).filter(|_| !running(&n, &t))).await;
    assert_eq!(st.reason.as_deref(), Some("DeadlineExceeded"));
    assert_eq!(st.message.as_deref(), Some("Pod was active on the node longer than the specified deadline"));
    assert!(st.conditions.iter().flatten().all(|c| c.type_ != "DisruptionTarget"));
    assert!(n.rt.calls().contains(&"StopContainer".to_string()));
    // A deadline set on the running pod (already past: it started 5 s ago).
    let mut lowered = open.clone();
    lowered.spec.as_mut().unwrap().active_deadline_seconds = Some(3);
    n.snapshots.send(Snapshot { source: SourceKind::File, pods: vec![timed, lowered] }).await.unwrap();
    let st = eventually("lowered deadline", || failed(&o).filter(|_| !running(&n, &o))).await;
    assert_eq!(st.reason.as_deref(), Some("DeadlineExceeded"));
    // Both pods stay, terminal: nothing restarts them.
    n.pleg.send(t.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(n.rt.containers_named("app").len(), 2, "not restarted");
    assert!(failed(&t).is_some() && failed(&o).is_some());
}

#[tokio::test]
async fn running_pods_are_adopted_and_orphans_removed() {
    let rt = FakeRuntime::new();
    rt.add_image("img:1");
    let p = pod("kept", "Always", &[]);
    let u = uid(&p);
    // A first kubelet starts the pod and an orphan, then goes away.
    {
        let first = node(rt.clone()).await;
        first
            .snapshots
            .send(Snapshot { source: SourceKind::File, pods: vec![p.clone(), pod("orphan", "Always", &[])] })
            .await
            .unwrap();
        eventually("both running", || (rt.containers_named("app").len() == 2).then_some(())).await;
        eventually("both statuses", || (first.statuses.list().len() == 2).then_some(())).await;
    }
    tokio::task::yield_now().await;
    let creates_before = rt.calls().iter().filter(|c| *c == "CreateContainer").count();
    let app_before: Vec<String> = rt.containers_named("app");
    // A second kubelet (fresh dispatcher) wants only `kept`.
    let second = node(rt.clone()).await;
    second.snapshots.send(Snapshot { source: SourceKind::File, pods: vec![p] }).await.unwrap();
    eventually("adopted", || running(&second, &u).then_some(())).await;
    eventually("orphan removed", || (rt.sandbox_count() == 1).then_some(())).await;
    let creates_after = rt.calls().iter().filter(|c| *c == "CreateContainer").count();
    assert_eq!(creates_before, creates_after, "nothing recreated");
    let kept = rt.containers_named("app");
    assert_eq!(kept.len(), 1);
    assert!(app_before.contains(&kept[0]));
    assert_eq!(app_status(&second, &u).unwrap().restart_count, 0);
}

fn probed_pod(name: &str, container: serde_json::Value) -> Pod {
    let v = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [container]}
    });
    let origin = Origin { kind: SourceKind::File, location: format!("/m/{name}.yaml") };
    manifest::prepare(serde_json::from_value(v).unwrap(), &origin, "n1", "t").unwrap()
}

fn execs_of(n: &Node, id: &str, cmd: &str) -> usize {
    n.rt.execs().iter().filter(|(c, args)| c == id && args.first().map(String::as_str) == Some(cmd)).count()
}

#[tokio::test(start_paused = true)]
async fn liveness_restarts_after_exactly_failure_threshold_failures() {
    let rt = FakeRuntime::new();
    rt.add_image("img:1");
    // Two passes, then failing for good.
    rt.script_exec("app", &["live"], &[0, 0, 1]);
    let n = node(rt).await;
    let p = probed_pod(
        "live",
        serde_json::json!({"name": "app", "image": "img:1",
            "livenessProbe": {"exec": {"command": ["live"]}, "periodSeconds": 1, "failureThreshold": 3}}),
    );
    let u = uid(&p);
    n.snapshots.send(Snapshot { source: SourceKind::File, pods: vec![p] }).await.unwrap();
    eventually("restarted", || (n.rt.containers_named("app").len() == 2).then_some(())).await;
    let first = n.rt.containers_named("app")[0].clone();
    assert_eq!(execs_of(&n, &first, "live"), 5, "2 passes + exactly 3 failures before the kill");
    eventually("restart counted", || (app_status(&n, &u)?.restart_count == 1).then_some(())).await;
}

#[tokio::test(start_paused = true)]
async fn startup_probe_holds_liveness_and_readiness_back() {
    let rt = FakeRuntime::new();
    rt.add_image("img:1");
    rt.script_exec("app", &["startup"], &[1, 1, 1, 0]);
    // Liveness would kill at its first failure if it ran before startup succeeded.
    rt.script_exec("app", &["live"], &[1]);
    rt.script_exec("app", &["ready"], &[0]);
    let n = node(rt).await;
    let p = probed_pod(
        "slow",
        serde_json::json!({"name": "app", "image": "img:1",
            "startupProbe": {"exec": {"command": ["startup"]}, "periodSeconds": 1, "failureThreshold": 10},
            "livenessProbe": {"exec": {"command": ["live"]}, "initialDelaySeconds": 5, "periodSeconds": 5, "failureThreshold": 1},
            "readinessProbe": {"exec": {"command": ["ready"]}, "periodSeconds": 1}}),
    );
    let u = uid(&p);
    n.snapshots.send(Snapshot { source: SourceKind::File, pods: vec![p] }).await.unwrap();
    eventually("started", || app_status(&n, &u)?.started.filter(|s| *s)).await;
    let id = n.rt.containers_named("app")[0].clone();
    let execs = n.rt.execs();
    let first_other = execs.iter().position(|(c, a)| c == &id && a[0] != "startup").unwrap_or(usize::MAX);
    let startup_runs: Vec<_> =
        execs.iter().enumerate().filter(|(_, (c, a))| c == &id && a[0] == "startup").map(|(i, _)| i).collect();
    assert_eq!(startup_runs.len(), 4, "3 failures then a pass");
    assert!(first_other > startup_runs[3], "liveness/readiness ran before startup passed: {execs:?}");
    eventually("ready", || app_status(&n, &u)?.ready.then_some(())).await;
    // Now liveness runs and its failure restarts the container.
    eventually("killed by liveness", || (n.rt.containers_named("app").len() == 2).then_some(())).await;
}

#[tokio::test(start_paused = true)]
async fn readiness_flips_ready_both_ways() {
    let rt = FakeRuntime::new();
    rt.add_image("img:1");
    rt.script_exec("app", &["ready"], &[1, 0, 0, 1, 1, 0]);
    let n = node(rt).await;
    let p = probed_pod(
        "rdy",
        serde_json::json!({"name": "app", "image": "img:1",
            "readinessProbe": {"exec": {"command": ["ready"]}, "periodSeconds": 1, "successThreshold": 2, "failureThreshold": 2}}),
    );
    let u = uid(&p);
    n.snapshots.send(Snapshot { source: SourceKind::File, pods: vec![p] }).await.unwrap();
    let pod_ready = |n: &Node| {
        n.statuses
            .get(&u)
            .and_then(|s| s.conditions)
            .and_then(|c| c.into_iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status == "True")
    };
    eventually("running, not ready", || (running(&n, &u) && pod_ready(&n) == Some(false)).then_some(())).await;
    eventually("ready after 2 passes", || (pod_ready(&n) == Some(true)).then_some(())).await;
    eventually("unready after 2 failures", || (pod_ready(&n) == Some(false)).then_some(())).await;
    let msg = n.statuses.get(&u).unwrap().message.unwrap_or_default();
    assert!(msg.starts_with("readiness probe failing: command [\"ready\"] exited with 1"), "{msg}");
    eventually("ready again", || (pod_ready(&n) == Some(true)).then_some(())).await;
    assert_eq!(app_status(&n, &u).unwrap().restart_count, 0, "readiness never restarts");
}

#[tokio::test(start_paused = true)]
async fn probe_results_survive_a_kubelet_restart() {
    let rt = FakeRuntime::new();
    rt.add_image("img:1");
    // Passing once (before the restart), failing for good from the second run (after it).
    rt.script_exec("app", &["ready"], &[0, 1]);
    rt.script_exec("app", &["startup"], &[0]);
    let p = probed_pod(
        "keep",
        serde_json::json!({"name": "app", "image": "img:1",
            "startupProbe": {"exec": {"command": ["startup"]}, "periodSeconds": 1},
            "readinessProbe": {"exec": {"command": ["ready"]}, "periodSeconds": 10, "failureThreshold": 3}}),
    );
    let u = uid(&p);
    let pod_ready = |n: &Node| {
        n.statuses
            .get(&u)
            .and_then(|s| s.conditions)
            .and_then(|c| c.into_iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status == "True")
    };
    let dir = {
        let first = node(rt.clone()).await;
        first.snapshots.send(Snapshot { source: SourceKind::File, pods: vec![p.clone()] }).await.unwrap();
        eventually("ready", || (pod_ready(&first) == Some(true)).then_some(())).await;
        first.dir.clone()
    };
    tokio::task::yield_now().await;
    let id = rt.containers_named("app")[0].clone();
    let startups_before = rt.execs().iter().filter(|(c, a)| c == &id && a[0] == "startup").count();
    // The restarted kubelet reports the pod Ready from its first status on, without rerunning the
    // startup probe, and only the readiness failures that follow (3 × 10 s) take it out.
    let second = node_in(rt.clone(), None, dir).await;
    second.snapshots.send(Snapshot { source: SourceKind::File, pods: vec![p] }).await.unwrap();
    let first_seen = eventually("a status", || pod_ready(&second)).await;
    assert!(first_seen, "Ready kept across the restart");
    assert_eq!(app_status(&second, &u).unwrap().started, Some(true));
    eventually("unready after 3 failures", || (pod_ready(&second) == Some(false)).then_some(())).await;
    let startups_after = rt.execs().iter().filter(|(c, a)| c == &id && a[0] == "startup").count();
    assert_eq!(startups_before, startups_after, "the startup probe is not run again");
}

#[tokio::test]
async fn failing_post_start_hook_kills_the_container() {
    let rt = FakeRuntime::new();
    rt.add_image("img:1");
    rt.script_exec("app", &["hook"], &[1]);
    let n = node(rt).await;
    let p = probed_pod(
        "hooked",
        serde_json::json!({"name": "app", "image": "img:1", "lifecycle": {"postStart": {"exec": {"command": ["hook"]}}}}),
    );
    let u = uid(&p);
    n.snapshots.send(Snapshot { source: SourceKind::File, pods: vec![p] }).await.unwrap();
    let w = eventually("PostStartHookError", || {
        let w = app_status(&n, &u)?.state?.waiting?;
        (w.reason.as_deref() == Some("PostStartHookError")).then_some(w)
    })
    .await;
    assert!(w.message.unwrap_or_default().contains("PostStartHook failed"));
    let first = n.rt.containers_named("app")[0].clone();
    assert!(n.rt.calls().contains(&"StopContainer".to_string()));
    assert_eq!(execs_of(&n, &first, "hook"), 1);
}

fn ephemeral_status(n: &Node, uid: &str, name: &str) -> Option<k8s_openapi::api::core::v1::ContainerStatus> {
    n.statuses.get(uid)?.ephemeral_container_statuses?.into_iter().find(|c| c.name == name)
}

/// An ephemeral container added to a running pod (same UID, a new spec) is started once in its
/// sandbox, in the target's process namespace, without touching the app; once exited it is not
/// started again, also when the app restarts.
#[tokio::test]
async fn an_added_ephemeral_container_starts_once_in_the_targets_pid_namespace() {
    use kubelet::cri::api::NamespaceMode;
    let rt = FakeRuntime::new();
    rt.add_image("img:1");
    rt.add_image("busybox:1");
    let n = node(rt).await;
    let p = pod("web", "Always", &[]);
    let u = uid(&p);
    n.snapshots.send(Snapshot { source: SourceKind::File, pods: vec![p.clone()] }).await.unwrap();
    eventually("running", || running(&n, &u).then_some(())).await;
    let app = n.rt.containers_named("app");

    let mut debugged = p.clone();
    let ec = serde_json::json!({"name": "debugger", "image": "busybox:1", "targetContainerName": "app", "stdin": true});
    debugged.spec.as_mut().unwrap().ephemeral_containers = Some(vec![serde_json::from_value(ec).unwrap()]);
    n.snapshots.send(Snapshot { source: SourceKind::File, pods: vec![debugged] }).await.unwrap();
    let st = eventually("debugger running", || {
        ephemeral_status(&n, &u, "debugger").filter(|s| s.state.as_ref().is_some_and(|s| s.running.is_some()))
    })
    .await;
    let debugger = n.rt.containers_named("debugger");
    assert_eq!(debugger.len(), 1);
    assert_eq!(st.container_id, Some(format!("fake://{}", debugger[0])));
    assert!(!st.ready);
    let cfg = n.rt.config(&debugger[0]).unwrap();
    assert_eq!(cfg.annotations.get("io.kubernetes.container.type").map(String::as_str), Some("ephemeral"));
    assert!(cfg.stdin);
    let ns = cfg.linux.unwrap().security_context.unwrap().namespace_options.unwrap();
    assert_eq!((ns.pid, ns.target_id.as_str()), (NamespaceMode::Target as i32, app[0].as_str()));
    assert_eq!(n.rt.containers_named("app"), app, "the app container is left alone");

    // Exited: terminated in the status and never started again, even when the app restarts.
    n.rt.exit_container(&debugger[0], 3);
    n.pleg.send(u.clone()).await.unwrap();
    eventually("debugger terminated", || {
        let s = ephemeral_status(&n, &u, "debugger")?;
        (s.state?.terminated?.exit_code == 3).then_some(())
    })
    .await;
    n.rt.exit_container(&app[0], 1);
    n.pleg.send(u.clone()).await.unwrap();
    eventually("app restarted", || (app_status(&n, &u)?.restart_count == 1 && running(&n, &u)).then_some(())).await;
    assert_eq!(n.rt.containers_named("debugger").len(), 1);
    let st = ephemeral_status(&n, &u, "debugger").unwrap();
    assert_eq!(st.state.unwrap().terminated.unwrap().exit_code, 3);
    assert_eq!(n.statuses.get(&u).unwrap().phase.as_deref(), Some("Running"));
}

/// While init containers run, an ephemeral container starts (upstream starts them before init
/// containers); one whose target has no instance yet waits with CreateContainerConfigError.
#[tokio::test]
async fn ephemeral_containers_start_during_init_and_a_missing_target_is_a_config_error() {
    let rt = FakeRuntime::new();
    rt.add_image("img:1");
    let n = node(rt).await;
    let mut p = pod("init", "Always", &["setup"]);
    let u = uid(&p);
    n.snapshots.send(Snapshot { source: SourceKind::File, pods: vec![p.clone()] }).await.unwrap();
    eventually("setup running", || (n.rt.containers_named("setup").len() == 1).then_some(())).await;
    let ecs = serde_json::json!([
        {"name": "debugger", "image": "img:1", "targetContainerName": "app"},
        {"name": "shell", "image": "img:1", "targetContainerName": "setup"}
    ]);
    p.spec.as_mut().unwrap().ephemeral_containers = Some(serde_json::from_value(ecs).unwrap());
    n.snapshots.send(Snapshot { source: SourceKind::File, pods: vec![p] }).await.unwrap();
    let w = eventually("debugger waiting", || {
        ephemeral_status(&n, &u, "debugger")?.state?.waiting.filter(|w| w.reason.as_deref() != Some("PodInitializing"))
    })
    .await;
    assert_eq!(w.reason.as_deref(), Some("CreateContainerConfigError"));
    assert_eq!(w.message.as_deref(), Some("unable to find target container app"));
    eventually("shell running", || ephemeral_status(&n, &u, "shell")?.state?.running).await;
    assert!(n.rt.containers_named("debugger").is_empty());
    assert!(n.rt.containers_named("app").is_empty(), "the app still waits for its init container");
}

#[tokio::test(start_paused = true)]
async fn a_pod_waiting_for_a_pull_slot_says_where_it_stands() {
    let rt = FakeRuntime::new();
    rt.set_pull_delay(Duration::from_secs(5));
    rt.add_registry_image("big:1");
    rt.add_registry_image("small:1");
    let n = node_with(rt, Some(1)).await;
    let pod_with = |name: &str, image: &str| probed_pod(name, serde_json::json!({"name": "app", "image": image}));
    let first = pod_with("first", "big:1");
    let second = pod_with("second", "small:1");
    let u2 = uid(&second);
    n.snapshots.send(Snapshot { source: SourceKind::File, pods: vec![first] }).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    n.snapshots
        .send(Snapshot { source: SourceKind::File, pods: vec![pod_with("first", "big:1"), second] })
        .await
        .unwrap();
    let msg =
        eventually("queued message", || n.statuses.get(&u2)?.message.filter(|m| m.starts_with("image pull queued")))
            .await;
    assert_eq!(msg, "image pull queued behind big:1 (position 1)");
    eventually("second running", || running(&n, &u2).then_some(())).await;
}

/// The image is pulled while the sandbox is made (neither needs the other): a 5 s pull and a 5 s
/// RunPodSandbox start the container after 5 s, not 10 s as when the pull followed the sandbox.
#[tokio::test(start_paused = true)]
async fn the_image_is_pulled_while_the_sandbox_is_made() {
    let rt = FakeRuntime::new();
    rt.set_pull_delay(Duration::from_secs(5));
    rt.set_sandbox_delay(Duration::from_secs(5));
    rt.add_registry_image("img:1");
    let n = node(rt).await;
    let p = pod("web", "Always", &[]);
    let u = uid(&p);
    let start = tokio::time::Instant::now();
    n.snapshots.send(Snapshot { source: SourceKind::File, pods: vec![p] }).await.unwrap();
    eventually("running", || running(&n, &u).then_some(())).await;
    let took = start.elapsed();
    assert!(took < Duration::from_secs(6), "took {took:?}: the pull and the sandbox ran one after the other");
    assert_eq!(n.rt.calls().iter().filter(|c| *c == "PullImage").count(), 1);
}

#[tokio::test]
async fn run_as_non_root_is_checked_against_the_images_user_before_creating() {
    let rt = FakeRuntime::new();
    rt.add_image("img:1");
    rt.add_image("user:1000");
    rt.set_image_user("user:1000", Some(1000), "");
    let n = node(rt).await;
    let with = |name: &str, image: &str| {
        let mut p = pod(name, "Always", &[]);
        let c = &mut p.spec.as_mut().unwrap().containers[0];
        c.image = Some(image.into());
        c.security_context = Some(serde_json::from_value(serde_json::json!({"runAsNonRoot": true})).unwrap());
        p
    };
    let (root, nonroot) = (with("root", "img:1"), with("nonroot", "user:1000"));
    let (ur, un) = (uid(&root), uid(&nonroot));
    n.snapshots.send(Snapshot { source: SourceKind::File, pods: vec![root, nonroot] }).await.unwrap();
    let msg = eventually("CreateContainerConfigError", || {
        let w = app_status(&n, &ur)?.state?.waiting?;
        (w.reason.as_deref() == Some("CreateContainerConfigError")).then(|| w.message.unwrap_or_default())
    })
    .await;
    assert_eq!(
        msg,
        format!(
            "container has runAsNonRoot and image will run as root (pod: \"root-n1_default({ur})\", container: app)"
        )
    );
    eventually("non-root running", || running(&n, &un).then_some(())).await;
    // Only the non-root pod's container was created, with the image's uid.
    let created = n.rt.containers_named("app");
    assert_eq!(created.len(), 1);
    let sc = n.rt.config(&created[0]).unwrap().linux.unwrap().security_context.unwrap();
    assert_eq!(sc.run_as_user.map(|u| u.value), Some(1000));
}
