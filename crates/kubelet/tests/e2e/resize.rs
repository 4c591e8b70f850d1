//! In-place pod resize and pod-level resources end to end (testapi + kubectl + containerd,
//! cgroup v1): `kubectl patch --subresource resize` changes a running container's cgroup without
//! a restart (same container ID, restartCount 0), a container whose resizePolicy says
//! RestartContainer for memory is restarted with the new limit, a resize beyond the node is
//! PodResizePending/Infeasible and changes nothing, and `spec.resources` sets the pod cgroup.

use crate::api::{eventually, start};
use crate::harness::image;
use serde_json::Value;
use std::path::Path;

const MI: i64 = 1 << 20;

fn v1(controller: &str, cgroup: &str, file: &str) -> Option<i64> {
    let path = Path::new("/sys/fs/cgroup").join(controller).join(cgroup.trim_start_matches('/')).join(file);
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn condition(p: &Value, type_: &str) -> Option<Value> {
    p["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_).cloned()
}

fn status<'a>(p: &'a Value, name: &str) -> &'a Value {
    p["status"]["containerStatuses"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == name))
        .unwrap_or(&Value::Null)
}

fn id(p: &Value, name: &str) -> String {
    status(p, name)["containerID"].as_str().unwrap_or_default().rsplit("://").next().unwrap_or_default().to_string()
}

fn pod_yaml() -> String {
    let img = image("busybox:1.36");
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: resized
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: {img}
    command: ["sleep", "3600"]
    resources:
      requests: {{cpu: 100m, memory: 32Mi}}
      limits: {{cpu: 200m, memory: 64Mi}}
  - name: restarter
    image: {img}
    command: ["sleep", "3600"]
    resizePolicy:
    - {{resourceName: memory, restartPolicy: RestartContainer}}
    resources:
      requests: {{cpu: 50m, memory: 32Mi}}
      limits: {{cpu: 100m, memory: 64Mi}}
---
apiVersion: v1
kind: Pod
metadata:
  name: pod-level
spec:
  terminationGracePeriodSeconds: 1
  resources:
    limits: {{cpu: 500m, memory: 128Mi}}
  containers:
  - name: app
    image: {img}
    command: ["sleep", "3600"]
"#
    )
}

fn patch(api: &crate::api::TestApi, body: &str) -> std::process::Output {
    api.kubectl_raw(&["patch", "pod", "resized", "--subresource", "resize", "--type=strategic", "-p", body], None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_are_resized_in_place_and_pod_level_resources_set_the_pod_cgroup() {
    if !Path::new("/sys/fs/cgroup/cpu/cpu.shares").exists() {
        eprintln!("SKIPPED resize: this test reads cgroup v1 files");
        return;
    }
    let Some((api, mut k)) = start("resize").await else { return };
    api.apply(&pod_yaml());
    let before = eventually("both containers of resized running", || {
        let p = api.get_json(&["pod", "resized"])?;
        (status(&p, "app")["state"]["running"].is_object() && status(&p, "restarter")["state"]["running"].is_object())
            .then_some(p)
    })
    .await;
    let uid = before["metadata"]["uid"].as_str().unwrap().to_string();
    let pod_cgroup = format!("/kubepods/burstable/pod{uid}");
    let (app_id, restarter_id) = (id(&before, "app"), id(&before, "restarter"));
    assert_eq!(v1("cpu", &pod_cgroup, "cpu.cfs_quota_us"), Some(30_000), "pod quota from 200m + 100m");
    assert_eq!(v1("cpu", &format!("{pod_cgroup}/{app_id}"), "cpu.cfs_quota_us"), Some(20_000));
    assert_eq!(status(&before, "app")["resources"]["limits"]["cpu"], "200m", "{}", before["status"]);

    // cpu and memory of both containers through the resize subresource.
    let out = patch(
        &api,
        r#"{"spec":{"containers":[
            {"name":"app","resources":{"requests":{"cpu":"150m","memory":"48Mi"},"limits":{"cpu":"300m","memory":"96Mi"}}},
            {"name":"restarter","resources":{"limits":{"cpu":"100m","memory":"96Mi"}}}]}}"#,
    );
    assert!(out.status.success(), "kubectl patch --subresource resize: {}", String::from_utf8_lossy(&out.stderr));
    let after = eventually("resize applied and the restarter restarted", || {
        let p = api.get_json(&["pod", "resized"])?;
        let done = status(&p, "app")["resources"]["limits"]["cpu"] == "300m"
            && status(&p, "restarter")["restartCount"] == 1
            && status(&p, "restarter")["state"]["running"].is_object()
            && condition(&p, "PodResizeInProgress").is_none();
        done.then_some(p)
    })
    .await;
    // In place: the same container, never restarted, its cgroup and the pod's changed.
    assert_eq!(id(&after, "app"), app_id, "app kept its container");
    assert_eq!(status(&after, "app")["restartCount"], 0);
    let app_cgroup = format!("{pod_cgroup}/{app_id}");
    assert_eq!(v1("cpu", &app_cgroup, "cpu.cfs_quota_us"), Some(30_000), "app's quota for 300m");
    assert_eq!(v1("cpu", &app_cgroup, "cpu.shares"), Some(153), "app's shares for 150m");
    assert_eq!(v1("memory", &app_cgroup, "memory.limit_in_bytes"), Some(96 * MI));
    assert_eq!(status(&after, "app")["resources"]["requests"]["memory"], "48Mi");
    assert_eq!(v1("cpu", &pod_cgroup, "cpu.cfs_quota_us"), Some(40_000), "pod quota from 300m + 100m");
    assert_eq!(v1("memory", &pod_cgroup, "memory.limit_in_bytes"), Some(192 * MI));
    // RestartContainer for memory: a new container with the new limit.
    let new_restarter = id(&after, "restarter");
    assert_ne!(new_restarter, restarter_id, "the restarter was replaced");
    assert_eq!(v1("memory", &format!("{pod_cgroup}/{new_restarter}"), "memory.limit_in_bytes"), Some(96 * MI));

    // More cpu than the node has: Infeasible, nothing changes.
    let out = patch(
        &api,
        r#"{"spec":{"containers":[{"name":"app","resources":{"requests":{"cpu":"100"},"limits":{"cpu":"100"}}}]}}"#,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pending = eventually("PodResizePending Infeasible", || {
        let p = api.get_json(&["pod", "resized"])?;
        condition(&p, "PodResizePending").filter(|c| c["reason"] == "Infeasible").map(|c| (p, c))
    })
    .await;
    let msg = pending.1["message"].as_str().unwrap_or_default();
    assert!(msg.starts_with("Node didn't have enough capacity: cpu, requested: 100050, capacity: "), "{msg}");
    assert_eq!(status(&pending.0, "app")["resources"]["limits"]["cpu"], "300m");
    assert_eq!(v1("cpu", &app_cgroup, "cpu.cfs_quota_us"), Some(30_000));
    // The resize events, as upstream records them.
    for (reason, prefix) in [
        ("ResizeStarted", "Pod resize started: {"),
        ("ResizeCompleted", "Pod resize completed: {"),
        ("ResizeInfeasible", "Pod resize Infeasible: {"),
    ] {
        let e = eventually(reason, || {
            let events = api.get_json(&["events"])?;
            events["items"]
                .as_array()?
                .iter()
                .find(|e| e["involvedObject"]["name"] == "resized" && e["reason"] == reason)
                .cloned()
        })
        .await;
        assert!(e["message"].as_str().is_some_and(|m| m.starts_with(prefix)), "{e}");
    }
    // Set back to what fits: the pending condition goes.
    let out = patch(
        &api,
        r#"{"spec":{"containers":[{"name":"app","resources":{"requests":{"cpu":"150m"},"limits":{"cpu":"300m"}}}]}}"#,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    eventually("PodResizePending cleared", || {
        let p = api.get_json(&["pod", "resized"])?;
        condition(&p, "PodResizePending").is_none().then_some(())
    })
    .await;
    assert_eq!(id(&api.get_json(&["pod", "resized"]).unwrap(), "app"), app_id);

    // A resize made while the kubelet is down: the restarted kubelet keeps the checkpointed
    // allocation at admission, then allocates and applies the resize in place — no container
    // is restarted by the restart itself.
    k.terminate().expect("the kubelet stops on SIGTERM");
    let out = patch(
        &api,
        r#"{"spec":{"containers":[{"name":"app","resources":{"requests":{"cpu":"120m"},"limits":{"cpu":"250m"}}}]}}"#,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    k.start_again().await;
    let restarted = eventually("the resize made while the kubelet was down applied", || {
        let p = api.get_json(&["pod", "resized"])?;
        (status(&p, "app")["resources"]["limits"]["cpu"] == "250m" && condition(&p, "PodResizeInProgress").is_none())
            .then_some(p)
    })
    .await;
    assert_eq!(id(&restarted, "app"), app_id, "app kept its container across the kubelet restart");
    assert_eq!(id(&restarted, "restarter"), new_restarter, "the restarter was not restarted again");
    assert_eq!(status(&restarted, "app")["restartCount"], 0);
    assert_eq!(v1("cpu", &app_cgroup, "cpu.cfs_quota_us"), Some(25_000), "app's quota for 250m");
    let root = k.dir.path().join("root");
    for file in ["allocated_pods_state", "actuated_pods_state"] {
        let cp: Value = serde_json::from_slice(&std::fs::read(root.join(file)).expect(file)).expect(file);
        assert!(cp["data"].as_str().is_some_and(|d| d.contains(&uid)) && cp["checksum"].is_u64(), "{file}: {cp}");
    }

    // A non-resize field through the subresource is refused as kube-apiserver does.
    let out =
        patch(&api, r#"{"spec":{"containers":[{"name":"app","resources":{"limits":{"ephemeral-storage":"1Gi"}}}]}}"#);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("only cpu and memory resources are mutable"));

    // Pod-level resources: Guaranteed from spec.resources, the pod cgroup limited by it.
    let pl = eventually("pod-level running", || {
        let p = api.get_json(&["pod", "pod-level"])?;
        status(&p, "app")["state"]["running"].is_object().then_some(p)
    })
    .await;
    let pl_uid = pl["metadata"]["uid"].as_str().unwrap();
    let pl_cgroup = format!("/kubepods/pod{pl_uid}");
    assert_eq!(v1("cpu", &pl_cgroup, "cpu.cfs_quota_us"), Some(50_000), "pod-level cpu limit 500m");
    assert_eq!(v1("cpu", &pl_cgroup, "cpu.shares"), Some(512));
    assert_eq!(v1("memory", &pl_cgroup, "memory.limit_in_bytes"), Some(128 * MI));
    eventually("qosClass Guaranteed", || {
        let p = api.get_json(&["pod", "pod-level"])?;
        (p["status"]["qosClass"] == "Guaranteed").then_some(())
    })
    .await;

    api.kubectl(&["delete", "pod", "--all", "--timeout=90s"]);
    k.cleanup().await;
}
