//! Sidecar containers (init containers with `restartPolicy: Always`) on containerd: started in
//! order before the app and kept running, restarted when they stop, ended after the app; and a
//! pod whose sandbox goes away runs its init containers again in a new one.

use crate::LONG;
use crate::harness::*;
use kubelet::cri::api;
use std::path::Path;
use std::time::{Duration, Instant};

/// A container's runtime ID, from the pod's status.
fn container_id(pod: &k8s_openapi::api::core::v1::Pod, name: &str) -> String {
    let id = container_status(pod, name).and_then(|c| c.container_id.clone()).unwrap_or_default();
    id.trim_start_matches("containerd://").to_string()
}

fn init_status<'a>(
    pod: &'a k8s_openapi::api::core::v1::Pod,
    name: &str,
) -> &'a k8s_openapi::api::core::v1::ContainerStatus {
    let st = pod.status.as_ref().expect("status");
    st.init_container_statuses.iter().flatten().find(|c| c.name == name).expect("in initContainerStatuses")
}

/// The lines of a file the pod's containers append to (a hostPath of the test's directory).
fn lines(path: &Path) -> Vec<String> {
    read(path).lines().map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_starts_before_the_app_stays_ready_and_is_restarted_when_it_stops() {
    let Some(mut k) = Kubelet::start("sidecar").await else { return };
    let bb = image("busybox:1.36");
    // The sidecar's startup probe passes once it has made /shared/up: only then does `setup`
    // start, which needs it, and after `setup` the app, which needs both.
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: withside
spec:
  terminationGracePeriodSeconds: 2
  initContainers:
  - name: side
    image: {bb}
    restartPolicy: Always
    command: ["sh", "-c", "trap 'exit 0' TERM; sleep 1; touch /shared/up; while true; do sleep 0.2; done"]
    startupProbe: {{exec: {{command: [test, -e, /shared/up]}}, periodSeconds: 1}}
    readinessProbe: {{exec: {{command: [test, -e, /shared/up]}}, periodSeconds: 1}}
    volumeMounts: [{{name: shared, mountPath: /shared}}]
  - name: setup
    image: {bb}
    command: ["sh", "-c", "test -e /shared/up && touch /shared/setup"]
    volumeMounts: [{{name: shared, mountPath: /shared}}]
  containers:
  - name: app
    image: {bb}
    command: ["sh", "-c", "test -e /shared/up && test -e /shared/setup || exit 1; trap 'exit 0' TERM; while true; do sleep 0.2; done"]
    volumeMounts: [{{name: shared, mountPath: /shared}}]
  volumes:
  - name: shared
    emptyDir: {{}}
"#
    );
    k.write_manifest("withside.yaml", &manifest);
    let ready = |p: &k8s_openapi::api::core::v1::Pod| condition(p, "Ready").as_deref() == Some("True");
    let pod = k
        .wait_pod("withside", "Running and Ready", LONG, |p| (ready(p) && phase(p) == "Running").then(|| p.clone()))
        .await;
    assert_eq!(condition(&pod, "Initialized").as_deref(), Some("True"));
    assert_eq!(condition(&pod, "ContainersReady").as_deref(), Some("True"));
    let side = init_status(&pod, "side");
    assert_eq!((side.started, side.ready, side.restart_count), (Some(true), true, 0), "{side:?}");
    assert!(side.state.as_ref().unwrap().running.is_some(), "{side:?}");
    let setup = init_status(&pod, "setup").state.as_ref().unwrap().terminated.clone().expect("setup terminated");
    assert_eq!(
        (setup.exit_code, setup.reason.as_deref()),
        (0, Some("Completed")),
        "setup ran after the sidecar started"
    );
    let app = container_status(&pod, "app").unwrap();
    assert_eq!(app.restart_count, 0, "the app found the sidecar's and setup's files at once");
    // In the sidecar's wake: setup ran after it started, the app after setup.
    let side_started = side.state.as_ref().unwrap().running.as_ref().unwrap().started_at.clone().unwrap().0;
    assert!(side_started <= setup.started_at.clone().unwrap().0);
    let app_started = app.state.as_ref().unwrap().running.as_ref().unwrap().started_at.clone().unwrap().0;
    assert!(setup.finished_at.clone().unwrap().0 <= app_started);

    // The sidecar's process is killed from outside: the kubelet starts it again (whatever the
    // pod's restart policy), the app runs on undisturbed.
    let app_id = container_id(&pod, "app");
    k.runtime.stop_container(&container_id(&pod, "side"), 0).await.expect("kill the sidecar");
    let again = k
        .wait_pod("withside", "sidecar restarted, running and ready", LONG, |p| {
            let s = container_status(p, "side")?;
            (s.restart_count >= 1 && s.ready && is_running(p, "side") && ready(p)).then(|| p.clone())
        })
        .await;
    let side = init_status(&again, "side");
    let last = side.last_state.as_ref().and_then(|s| s.terminated.as_ref()).expect("the killed instance in lastState");
    assert_eq!(last.exit_code, 137);
    let app = container_status(&again, "app").unwrap();
    assert_eq!((container_id(&again, "app"), app.restart_count), (app_id, 0), "the app was not restarted");
    assert!(is_running(&again, "app"));
    assert_eq!(phase(&again), "Running");
    k.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_never_pod_succeeds_once_its_app_is_done_and_its_sidecar_is_stopped() {
    let Some(mut k) = Kubelet::start("sidecar-never").await else { return };
    let bb = image("busybox:1.36");
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: job
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 10
  initContainers:
  - name: side
    image: {bb}
    restartPolicy: Always
    command: ["sh", "-c", "trap 'exit 0' TERM; touch /shared/up; while true; do sleep 0.2; done"]
    volumeMounts: [{{name: shared, mountPath: /shared}}]
  containers:
  - name: app
    image: {bb}
    command: ["sh", "-c", "until test -e /shared/up; do sleep 0.1; done; sleep 1; echo done"]
    volumeMounts: [{{name: shared, mountPath: /shared}}]
  volumes:
  - name: shared
    emptyDir: {{}}
"#
    );
    k.write_manifest("job.yaml", &manifest);
    let pod = k.wait_pod("job", "Succeeded", LONG, |p| (phase(p) == "Succeeded").then(|| p.clone())).await;
    let app = container_status(&pod, "app").unwrap().state.as_ref().unwrap().terminated.clone().expect("app done");
    assert_eq!((app.exit_code, app.reason.as_deref()), (0, Some("Completed")));
    let side = init_status(&pod, "side");
    let stopped = side.state.as_ref().unwrap().terminated.clone().expect("the sidecar stopped");
    assert_eq!(stopped.exit_code, 0, "stopped with SIGTERM, which it traps: {stopped:?}");
    assert!(!side.ready);
    assert_eq!(side.restart_count, 0, "not restarted once the app was done");
    assert!(app.finished_at.unwrap().0 <= stopped.finished_at.unwrap().0, "the sidecar outlived the app");
    assert_eq!(condition(&pod, "Ready").as_deref(), Some("False"));
    // It stays so: no sidecar comes back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = k.pod("job").await.unwrap();
    assert_eq!((phase(&later), init_status(&later, "side").restart_count), ("Succeeded", 0));
    k.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_pod_stops_its_app_before_its_sidecars_in_reverse_order() {
    let Some(mut k) = Kubelet::start("sidecar-order").await else { return };
    let bb = image("busybox:1.36");
    let out = k.dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    // Each container notes when it is asked to stop; the app takes 2 s to finish, the sidecars
    // 1 s. Stopped all at once, the sidecars' notes would come before the app's "app-exit".
    let side = |name: &str| {
        format!(
            r#"  - name: {name}
    image: {bb}
    restartPolicy: Always
    command: ["sh", "-c", "trap 'echo {name}-term >> /out/order; sleep 1; exit 0' TERM; echo {name}-up >> /out/order; while true; do sleep 0.2; done"]
    volumeMounts: [{{name: out, mountPath: /out}}]
"#
        )
    };
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: ordered
spec:
  terminationGracePeriodSeconds: 20
  initContainers:
{side_a}{side_b}  containers:
  - name: app
    image: {bb}
    command: ["sh", "-c", "trap 'echo app-term >> /out/order; sleep 2; echo app-exit >> /out/order; exit 0' TERM; echo app-up >> /out/order; while true; do sleep 0.2; done"]
    volumeMounts: [{{name: out, mountPath: /out}}]
  volumes:
  - name: out
    hostPath: {{path: {out}, type: Directory}}
"#,
        side_a = side("side-a"),
        side_b = side("side-b"),
        out = out.display()
    );
    k.write_manifest("ordered.yaml", &manifest);
    let order = out.join("order");
    let pod = k
        .wait_pod("ordered", "all running", LONG, |p| {
            (is_running(p, "side-a") && is_running(p, "side-b") && is_running(p, "app")).then(|| p.clone())
        })
        .await;
    // Every trap is set once its "-up" line is written.
    wait_until(LONG, || async { (lines(&order).iter().filter(|l| l.ends_with("-up")).count() == 3).then_some(()) })
        .await
        .expect("every container up");
    let ids: Vec<(&str, String)> = ["app", "side-b", "side-a"].iter().map(|n| (*n, container_id(&pod, n))).collect();

    let deleted = Instant::now();
    k.remove_manifest("ordered.yaml");
    // Each container's finishedAt, read through CRI while the kubelet still has it (the
    // containers are removed with the pod); one already gone counts as finished when first seen so.
    let mut finished: std::collections::HashMap<&str, i64> = Default::default();
    while finished.len() < ids.len() && deleted.elapsed() < LONG {
        for (name, id) in &ids {
            if finished.contains_key(name) {
                continue;
            }
            match k.runtime.container_status(id).await {
                Ok(st) if st.state == api::ContainerState::ContainerExited as i32 => {
                    finished.insert(name, st.finished_at);
                }
                Ok(_) => {}
                Err(_) => {
                    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
                    finished.insert(name, now.as_nanos() as i64);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_until(LONG, || async { k.pod("ordered").await.is_none().then_some(()) }).await.expect("pod removed");
    let stops: Vec<String> = lines(&order).into_iter().filter(|l| !l.ends_with("-up")).collect();
    assert_eq!(
        stops,
        ["app-term", "app-exit", "side-b-term", "side-a-term"],
        "the app stops first, then the sidecars, the last one first; finishedAt {finished:?}"
    );
    assert!(finished["app"] < finished["side-b"], "app finished before side-b: {finished:?}");
    assert!(finished["side-b"] < finished["side-a"], "side-b finished before side-a: {finished:?}");
    k.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_sandbox_purges_the_old_init_containers_and_runs_them_again() {
    let Some(mut k) = Kubelet::start("sandbox-change").await else { return };
    let bb = image("busybox:1.36");
    let out = k.dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: reinit
spec:
  terminationGracePeriodSeconds: 2
  initContainers:
  - name: init
    image: {bb}
    command: ["sh", "-c", "echo init >> /out/runs"]
    volumeMounts: [{{name: out, mountPath: /out}}]
  - name: side
    image: {bb}
    restartPolicy: Always
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"]
  containers:
  - name: app
    image: {bb}
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"]
  volumes:
  - name: out
    hostPath: {{path: {out}, type: Directory}}
"#,
        out = out.display()
    );
    k.write_manifest("reinit.yaml", &manifest);
    let runs = out.join("runs");
    let pod = k
        .wait_pod("reinit", "running", LONG, |p| (is_running(p, "app") && is_running(p, "side")).then(|| p.clone()))
        .await;
    assert_eq!(lines(&runs), ["init"]);
    let sandboxes = k.our_sandboxes().await;
    assert_eq!(sandboxes.len(), 1);
    let old = sandboxes[0].id.clone();
    let old_inits = [container_id(&pod, "init"), container_id(&pod, "side")];

    // The sandbox is stopped behind the kubelet's back: a new one, and init from the start.
    k.runtime.stop_pod_sandbox(&old).await.expect("stop the sandbox");
    let again = k
        .wait_pod("reinit", "running in a new sandbox", LONG, |p| {
            (is_running(p, "app") && is_running(p, "side") && container_id(p, "app") != container_id(&pod, "app"))
                .then(|| p.clone())
        })
        .await;
    assert_eq!(lines(&runs), ["init", "init"], "the init container ran again in the new sandbox");
    let init = init_status(&again, "init").state.as_ref().unwrap().terminated.clone().expect("init done again");
    assert_eq!(init.exit_code, 0);
    // The old sandbox's init containers are purged from the runtime (upstream's
    // purgeInitContainers); its app container is kept (for lastState) until garbage collection.
    let uid = uid(&again);
    let selector = std::collections::HashMap::from([("io.kubernetes.pod.uid".to_string(), uid.clone())]);
    let filter = api::ContainerFilter { label_selector: selector, ..Default::default() };
    let containers = k.runtime.list_containers(Some(filter)).await.unwrap();
    for id in &old_inits {
        assert!(!containers.iter().any(|c| &c.id == id), "old init instance {id} purged: {containers:?}");
    }
    let in_new: Vec<&str> = containers
        .iter()
        .filter(|c| c.pod_sandbox_id != old)
        .filter_map(|c| c.metadata.as_ref().map(|m| m.name.as_str()))
        .collect();
    for name in ["init", "side", "app"] {
        assert!(in_new.contains(&name), "{name} in the new sandbox: {in_new:?}");
    }
    let new = k
        .our_sandboxes()
        .await
        .into_iter()
        .find(|s| s.id != old && s.state == api::PodSandboxState::SandboxReady as i32);
    assert_eq!(new.and_then(|s| s.metadata).map(|m| m.attempt), Some(1), "attempt 1");
    k.cleanup().await;
}
