//! Graceful node shutdown end to end: the kubelet on containerd and testapi, logind replaced by
//! `login1-test` (a private dbus-daemon and a fake org.freedesktop.login1, found through
//! `DBUS_SYSTEM_BUS_ADDRESS`). And the other side of it: a kubelet that is itself stopped
//! (SIGTERM) kills no pod, even with the shutdown manager on.

use crate::LONG;
use crate::api::{TestApi, eventually, kubectl_present};
use crate::harness::*;
use login1_test::{Bus, Call, Login1};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const MESSAGE: &str = "Pod was terminated in response to imminent node shutdown.";

/// Starts a private bus and the fake logind (its InhibitDelayMaxUSec above what the kubelet asks).
async fn logind(test: &str) -> Option<(Bus, Login1)> {
    let bus = match Bus::start() {
        Ok(b) => b,
        Err(e) if std::env::var_os("KUBELET_E2E_REQUIRED").is_some() => {
            panic!("{test}: dbus-daemon (hack/env-dbus.sh): {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED {test}: no dbus-daemon: {e}");
            return None;
        }
    };
    let login1 = Login1::serve(&bus.address(), Duration::from_secs(30), None).await.expect("fake logind");
    Some((bus, login1))
}

/// A pod that ignores SIGTERM (so each stop takes exactly the grace period it was given).
fn stubborn(name: &str, priority: i32, grace: i64) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  priority: {priority}
  terminationGracePeriodSeconds: {grace}
  containers:
  - name: app
    image: {img}
    command: ["sh", "-c", "trap '' TERM; echo started; while true; do sleep 0.2; done"]
"#,
        img = image("busybox:1.36")
    )
}

fn nanos(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_nanos() as i64
}

fn secs(n: i64) -> f64 {
    n as f64 / 1e9
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_shutdown_stops_pods_by_priority_within_their_budgets_then_releases_the_lock() {
    let test = "shutdown";
    if !kubectl_present(test) {
        return;
    }
    let Some((bus, login1)) = logind(test).await else { return };
    let node = format!("e2e-{test}");
    let api = TestApi::start(&node);
    let args = vec!["--kubeconfig".to_string(), api.kubelet_kubeconfig().display().to_string()];
    // Three groups: regular pods 3 s, priority 1000 up 4 s, system-critical 2 s.
    let extra = "nodeStatusUpdateFrequency: 1s\nnodeLeaseDurationSeconds: 4\nshutdownGracePeriodByPodPriority:\n- priority: 0\n  shutdownGracePeriodSeconds: 3\n- priority: 1000\n  shutdownGracePeriodSeconds: 4\n- priority: 2000000000\n  shutdownGracePeriodSeconds: 2\n";
    let address = bus.address();
    let env = [("DBUS_SYSTEM_BUS_ADDRESS", address.as_str())];
    let Some(mut k) = Kubelet::start_with_env(test, extra, &args, &env).await else { return };

    // The delay lock, as upstream asks for it.
    eventually("inhibitor lock taken", || (login1.held() == 1).then_some(())).await;
    let first = login1.calls().into_iter().find(|c| matches!(c, Call::Inhibit { .. })).unwrap();
    assert_eq!(
        first,
        Call::Inhibit {
            what: "shutdown".into(),
            who: "kubelet".into(),
            why: "Kubelet needs time to handle node shutdown".into(),
            mode: "delay".into()
        }
    );
    let ready = |api: &TestApi| {
        let n = api.get_json(&["node", &node])?;
        n["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == "Ready").cloned()
    };
    eventually("node Ready", || ready(&api).filter(|c| c["status"] == "True")).await;

    // low (priority 0) gets its group's 3 s; mid (1000) its own 2 s, shorter than its group's
    // 4 s (2 s is also the kubelet's minimum grace period); crit (system-cluster-critical's
    // value) the critical group's 2 s.
    for (name, priority, grace) in [("low", 0, 30), ("mid", 1000, 2), ("crit", 2_000_000_000, 30)] {
        api.apply(&stubborn(name, priority, grace));
    }
    let mut ids = Vec::new();
    for name in ["low", "mid", "crit"] {
        let pod = eventually(&format!("{name} running"), || {
            let p = api.get_json(&["pod", name])?;
            let cs = p["status"]["containerStatuses"].as_array()?.first()?.clone();
            cs["state"]["running"].is_object().then_some(p)
        })
        .await;
        let uid = pod["metadata"]["uid"].as_str().unwrap().to_string();
        let id = pod["status"]["containerStatuses"][0]["containerID"].as_str().unwrap();
        ids.push(id.trim_start_matches("containerd://").to_string());
        // The trap is set once it says so.
        let log = format!("/var/log/pods/default_{name}_{uid}/app/0.log");
        wait_until(LONG, || async { read(std::path::Path::new(&log)).contains("started").then_some(()) })
            .await
            .unwrap_or_else(|| panic!("{name}: no start line in {log}"));
    }

    let t0 = nanos(SystemTime::now());
    login1.prepare_for_shutdown(true).await.expect("emit PrepareForShutdown(true)");
    eventually("inhibitor lock released", || (login1.held() == 0).then_some(())).await;
    let released = nanos(SystemTime::now());

    // Each group stopped after the one below it, within its budget (SIGKILL at the grace period).
    // A group's budget is its grace period, so the last SIGKILL may land just after the release.
    let mut finished = Vec::new();
    for id in &ids {
        let st = wait_until(Duration::from_secs(30), || async {
            let st = k.runtime.container_status(id).await.expect("container kept");
            (st.state == kubelet::cri::api::ContainerState::ContainerExited as i32).then_some(st)
        })
        .await
        .unwrap_or_else(|| panic!("{id} still running; log:\n{}", tail(&k.log(), 40)));
        assert_eq!(st.exit_code, 137, "SIGKILLed at the end of its grace period");
        finished.push(st.finished_at);
    }
    let (low, mid, crit) = (finished[0] - t0, finished[1] - finished[0], finished[2] - finished[1]);
    let report = format!(
        "low {:.2} s after the signal, mid {:.2} s after low, crit {:.2} s after mid, lock released {:.2} s after the signal",
        secs(low),
        secs(mid),
        secs(crit),
        secs(released - t0)
    );
    eprintln!("{report}");
    assert!((2.5..6.0).contains(&secs(low)), "low: its group's 3 s: {report}");
    assert!((1.5..3.5).contains(&secs(mid)), "mid: its own 2 s after low, not its group's 4 s: {report}");
    assert!((1.5..4.0).contains(&secs(crit)), "crit: the critical 2 s after mid: {report}");
    assert!(released >= finished[2] - 500_000_000, "lock released after the last group: {report}");

    // Failed / Terminated with upstream's message and the DisruptionTarget condition.
    for name in ["low", "mid", "crit"] {
        let p = eventually(&format!("{name} Failed"), || {
            let p = api.get_json(&["pod", name])?;
            (p["status"]["phase"] == "Failed").then_some(p)
        })
        .await;
        assert_eq!(p["status"]["reason"], "Terminated", "{name}: {}", p["status"]);
        assert_eq!(p["status"]["message"], MESSAGE, "{name}");
        let d = p["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "DisruptionTarget");
        let d = d.unwrap_or_else(|| panic!("{name}: no DisruptionTarget: {}", p["status"]));
        assert_eq!((d["status"].as_str(), d["reason"].as_str()), (Some("True"), Some("TerminationByKubelet")));
    }
    // The node is NotReady with upstream's message, and refuses new pods.
    let c = eventually("node NotReady", || ready(&api).filter(|c| c["status"] == "False")).await;
    assert_eq!((c["reason"].as_str(), c["message"].as_str()), (Some("KubeletNotReady"), Some("node is shutting down")));
    // Upstream's node events for the shutdown and, below, its cancellation.
    let node_event = |api: &TestApi, message: &str| {
        let events = api.get_json(&["events"])?;
        events["items"]
            .as_array()?
            .iter()
            .find(|e| e["involvedObject"]["kind"] == "Node" && e["reason"] == "NodeShutdown" && e["message"] == message)
            .cloned()
    };
    eventually("NodeShutdown event", || node_event(&api, "Shutdown manager detected shutdown event")).await;
    api.apply(&stubborn("late", 0, 1));
    let late = eventually("late refused", || {
        let p = api.get_json(&["pod", "late"])?;
        (p["status"]["phase"] == "Failed").then_some(p)
    })
    .await;
    assert_eq!(late["status"]["reason"], "NodeShutdown");
    assert_eq!(late["status"]["message"], "Pod was rejected: Pod was rejected as the node is shutting down.");

    // Cancelled: the lock is taken again and the node is Ready again.
    login1.prepare_for_shutdown(false).await.expect("emit PrepareForShutdown(false)");
    eventually("inhibitor lock taken again", || (login1.held() == 1).then_some(())).await;
    let inhibits = login1.calls().iter().filter(|c| matches!(c, Call::Inhibit { .. })).count();
    assert_eq!(inhibits, 2);
    eventually("node Ready again", || ready(&api).filter(|c| c["status"] == "True")).await;
    eventually("cancellation event", || node_event(&api, "Shutdown manager detected shutdown cancellation")).await;
    let state = std::fs::read_to_string(k.dir.path().join("root/graceful_node_shutdown_state")).unwrap();
    assert!(state.contains("\"startTime\"") && state.contains("\"endTime\""), "{state}");

    api.kubectl(&["delete", "pods", "--all", "--wait=false"]);
    k.cleanup().await;
    drop(bus);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_to_the_kubelet_is_no_node_shutdown_and_pods_keep_running() {
    let test = "shutdown-sigterm";
    let Some((bus, login1)) = logind(test).await else { return };
    let address = bus.address();
    let env = [("DBUS_SYSTEM_BUS_ADDRESS", address.as_str())];
    let extra = "shutdownGracePeriod: 4s\nshutdownGracePeriodCriticalPods: 2s\n";
    let Some(mut k) = Kubelet::start_with_env(test, extra, &[], &env).await else { return };
    let bb = image("busybox:1.36");
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: keep\nspec:\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: app\n    image: {bb}\n    command: [\"sh\", \"-c\", \"trap 'echo got-term; exit 0' TERM; echo started; while true; do sleep 0.2; done\"]\n"
    );
    k.write_manifest("keep.yaml", &manifest);
    let pod = k.wait_pod("keep", "running", LONG, |p| is_running(p, "app").then(|| p.clone())).await;
    let id = container_status(&pod, "app").unwrap().container_id.clone().unwrap();
    let raw = id.trim_start_matches("containerd://").to_string();
    let log = format!("/var/log/pods/default_keep-{}_{}/app/0.log", k.node, uid(&pod));
    wait_until(LONG, || async { read(std::path::Path::new(&log)).contains("started").then_some(()) })
        .await
        .expect("trap set");
    wait_until(LONG, || async { (login1.held() == 1).then_some(()) }).await.expect("inhibitor lock taken");

    let took = k.terminate();
    assert!(took.is_some(), "the kubelet exits on SIGTERM");
    // Its lock goes with the process; no shutdown was signalled and no container stopped.
    wait_until(LONG, || async { (login1.held() == 0).then_some(()) }).await.expect("lock released by the exit");
    assert!(!login1.calls().iter().any(|c| matches!(c, Call::PrepareForShutdown(_))));
    let st = k.runtime.container_status(&raw).await.expect("container still there");
    assert_eq!(st.state, kubelet::cri::api::ContainerState::ContainerRunning as i32, "still running after SIGTERM");
    assert!(!read(std::path::Path::new(&log)).contains("got-term"), "the container got no SIGTERM");

    // The next kubelet takes the lock again and adopts the same container.
    k.start_again().await;
    wait_until(LONG, || async { (login1.held() == 1).then_some(()) }).await.expect("lock taken again");
    let after = k.wait_pod("keep", "running again", LONG, |p| is_running(p, "app").then(|| p.clone())).await;
    assert_eq!(container_status(&after, "app").unwrap().container_id.as_deref(), Some(id.as_str()));
    assert_eq!(container_status(&after, "app").unwrap().restart_count, 0);
    k.cleanup().await;
    drop(bus);
}
