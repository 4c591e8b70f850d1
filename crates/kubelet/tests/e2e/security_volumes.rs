//! Volume ownership (fsGroup), RuntimeClass, user namespaces and recursive read-only mounts end to
//! end. One standalone kubelet serves the static pods (emptyDir and downwardAPI under fsGroup, the
//! refusals, recursiveReadOnly); one on testapi serves the API pods (configMap/secret under
//! fsGroup, RuntimeClass → the `runc-alt` handler of hack/containerd/config.toml, a missing
//! RuntimeClass, node status). Ownership is read inside the containers with `stat`.

use crate::LONG;
use crate::api::{TestApi, eventually, kubectl_present};
use crate::harness::*;
use k8s_openapi::api::core::v1::Pod;

/// A pod whose container prints `stat -c '%n %g %a'` of `paths` (with -L: through symlinks),
/// then `DONE`, then sleeps.
fn stat_pod(name: &str, spec_extra: &str, mounts: &str, volumes: &str, paths: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: {name}}}
spec:
  terminationGracePeriodSeconds: 1
{spec_extra}  containers:
  - name: app
    image: {img}
    command: ["sh", "-c", "{paths}; echo DONE; sleep 3600"]
    volumeMounts:
{mounts}  volumes:
{volumes}"#,
        img = image("busybox:1.36")
    )
}

/// `path gid mode` per line the container printed, from its log on the node.
fn stat_lines(log: &str) -> Vec<String> {
    log.lines().filter_map(|l| l.splitn(4, ' ').nth(3)).map(str::to_string).collect()
}

fn container_log(pod_ns_name_uid: &str) -> Option<String> {
    std::fs::read_to_string(format!("/var/log/pods/{pod_ns_name_uid}/app/0.log")).ok()
}

async fn printed(k: &Kubelet, name: &str) -> Vec<String> {
    let pod = k.wait_pod(name, "running", LONG, |p| is_running(p, "app").then(|| p.clone())).await;
    let dir = format!("default_{}_{}", pod.metadata.name.as_deref().unwrap_or_default(), uid(&pod));
    let lines = wait_until(LONG, || async {
        let lines = stat_lines(&container_log(&dir)?);
        lines.iter().any(|l| l == "DONE").then_some(lines)
    })
    .await;
    lines.unwrap_or_else(|| panic!("{name}: no DONE in its log; kubelet log:\n{}", tail(&k.log(), 40)))
}

fn rejected(p: &Pod) -> Option<(String, String)> {
    let st = p.status.as_ref()?;
    if st.phase.as_deref() != Some("Failed") {
        return None;
    }
    Some((st.reason.clone()?, st.message.clone()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_group_owns_static_pod_volumes_and_unsupported_security_fields_are_refused() {
    let Some(mut k) = Kubelet::start("secvol").await else { return };
    let node = k.node.clone();
    // fsGroup 2000, running as 1000: emptyDirs (disk and memory) and a downwardAPI volume.
    let paths = "cd /cache && touch new && mkdir sub && stat -c '%n %g %a' /cache /cache/new /cache/sub /mem /info && stat -L -c '%n %g %a' /info/labels /info/..data && id -u";
    k.write_manifest(
        "fsg.yaml",
        &stat_pod(
            "fsg",
            "  securityContext: {fsGroup: 2000, runAsUser: 1000}\n",
            "    - {name: cache, mountPath: /cache}\n    - {name: mem, mountPath: /mem}\n    - {name: info, mountPath: /info}\n",
            "  - {name: cache, emptyDir: {}}\n  - {name: mem, emptyDir: {medium: Memory}}\n  - name: info\n    downwardAPI:\n      defaultMode: 384\n      items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]\n",
            paths,
        ),
    );
    // Refused at admission: a RuntimeClass without an API server, a user namespace containerd
    // 1.6 cannot give.
    let plain = |name: &str, extra: &str| {
        stat_pod(name, extra, "    - {name: v, mountPath: /v}\n", "  - {name: v, emptyDir: {}}\n", "true")
    };
    k.write_manifest("rtclass.yaml", &plain("rtclass", "  runtimeClassName: alt\n"));
    k.write_manifest("userns.yaml", &plain("userns", "  hostUsers: false\n"));
    // recursiveReadOnly: Enabled needs the runtime's support (containerd 1.6 reports none);
    // IfPossible falls back to a plain read-only mount.
    let rro = |name: &str, mode: &str, script: &str| {
        stat_pod(
            name,
            "",
            &format!("    - {{name: v, mountPath: /ro, readOnly: true, recursiveReadOnly: {mode}}}\n"),
            "  - {name: v, emptyDir: {}}\n",
            script,
        )
    };
    k.write_manifest("rroenabled.yaml", &rro("rroenabled", "Enabled", "true"));
    k.write_manifest(
        "rropossible.yaml",
        &rro("rropossible", "IfPossible", "touch /ro/x 2>/dev/null && echo writable || echo read-only"),
    );

    let lines = printed(&k, "fsg").await;
    let want = [
        // The emptyDir: setgid, group rwx, the fsGroup; what the container makes inherits it.
        "/cache 2000 2777",
        "/cache/new 2000 644",
        "/cache/sub 2000 2755",
        // A tmpfs root is 1777: sticky, setgid, the fsGroup.
        "/mem 2000 3777",
        "/info 2000 3777",
        // defaultMode 0600 plus group read; the timestamped directory setgid.
        "/info/labels 2000 640",
        "/info/..data 2000 2755",
        "1000",
    ];
    for w in want {
        assert!(lines.iter().any(|l| l == w), "{w:?} not in {lines:?}");
    }

    let refused = [
        (
            "rtclass",
            "RuntimeClassUnavailable",
            format!("Pod was rejected: pod default/rtclass-{node}: spec.runtimeClassName \"alt\": no API server"),
        ),
        (
            "userns",
            "UserNamespacesNotSupported",
            format!(
                "Pod was rejected: pod default/userns-{node}: spec.hostUsers: false needs a user namespace: runtime handlers are not set"
            ),
        ),
    ];
    for (name, reason, message) in refused {
        let (r, m) = k.wait_pod(name, "rejected", LONG, rejected).await;
        assert_eq!(r, reason, "{name}: {m}");
        assert!(m.starts_with(&message), "{name}: {m}");
    }
    let p = k
        .wait_pod("rroenabled", "CreateContainerConfigError", LONG, |p| {
            (waiting_reason(p, "app") == Some("CreateContainerConfigError")).then(|| p.clone())
        })
        .await;
    let msg = container_status(&p, "app").and_then(|s| s.state.as_ref()?.waiting.as_ref()?.message.clone());
    assert_eq!(
        msg.as_deref(),
        Some(
            "failed to resolve recursive read-only mode: volume \"v\" requested recursive read-only mode, but it is not supported by the runtime"
        )
    );
    let lines = printed(&k, "rropossible").await;
    assert!(lines.iter().any(|l| l == "read-only"), "{lines:?}");
    k.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_pods_get_their_runtime_class_handler_and_fs_group_on_config_maps_and_secrets() {
    let test = "secvolapi";
    if !kubectl_present(test) {
        return;
    }
    let node = format!("e2e-{test}");
    let api = TestApi::start(&node);
    let args = vec!["--kubeconfig".to_string(), api.kubelet_kubeconfig().display().to_string()];
    let Some(mut k) = Kubelet::start_with_args(test, "nodeStatusUpdateFrequency: 1s\n", &args).await else { return };
    api.apply(
        "apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata: {name: alt}\nhandler: runc-alt\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: {color: blue}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: creds}\nstringData: {password: hunter2}\n",
    );
    assert_eq!(api.get_json(&["runtimeclass", "alt"]).unwrap()["handler"], "runc-alt");
    let sleeper = |name: &str, extra: &str| {
        stat_pod(name, extra, "    - {name: v, mountPath: /v}\n", "  - {name: v, emptyDir: {}}\n", "true")
    };
    let owned = stat_pod(
        "owned",
        // supplementalGroups: the container reads the 0440 secret through its group.
        "  securityContext: {fsGroup: 2000, runAsUser: 1000, supplementalGroups: [2000]}\n",
        "    - {name: cfg, mountPath: /cfg}\n    - {name: creds, mountPath: /creds}\n",
        "  - {name: cfg, configMap: {name: cfg}}\n  - {name: creds, secret: {secretName: creds, defaultMode: 256}}\n",
        "stat -c '%n %g %a' /cfg /creds && stat -L -c '%n %g %a' /cfg/color /creds/password && cat /creds/password && echo",
    );
    api.apply(
        &[sleeper("alt", "  runtimeClassName: alt\n"), sleeper("missing", "  runtimeClassName: nope\n"), owned]
            .join("---\n"),
    );

    // The RuntimeClass's handler reaches RunPodSandbox: containerd made the sandbox with runc-alt
    // (its own runc state root).
    let p = eventually("alt Running", || {
        let p = api.get_json(&["pod", "alt"])?;
        (p["status"]["phase"] == "Running").then_some(p)
    })
    .await;
    let uid = p["metadata"]["uid"].as_str().unwrap().to_string();
    let sandbox = k
        .runtime
        .list_pod_sandboxes(None)
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.metadata.as_ref().is_some_and(|m| m.uid == uid))
        .expect("alt's sandbox");
    assert_eq!(sandbox.runtime_handler, "runc-alt");
    let status = k.runtime.pod_sandbox_status(&sandbox.id).await.unwrap();
    assert_eq!(status.runtime_handler, "runc-alt");
    assert!(
        std::path::Path::new("/run/runc-alt/k8s.io").join(&sandbox.id).exists(),
        "runc-alt's state root holds the sandbox"
    );

    // A missing RuntimeClass: no sandbox, upstream's FailedCreatePodSandBox event, still Pending.
    let event = eventually("FailedCreatePodSandBox for missing", || {
        let events = api.get_json(&["events"])?;
        events["items"]
            .as_array()?
            .iter()
            .find(|e| e["involvedObject"]["name"] == "missing" && e["reason"] == "FailedCreatePodSandBox")
            .cloned()
    })
    .await;
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["message"], "Failed to create pod sandbox: runtimeclass.node.k8s.io \"nope\" not found");
    assert_eq!(api.get_json(&["pod", "missing"]).unwrap()["status"]["phase"], "Pending");

    // configMap and secret files honour fsGroup and defaultMode.
    let p = eventually("owned Running", || {
        let p = api.get_json(&["pod", "owned"])?;
        (p["status"]["phase"] == "Running").then_some(p)
    })
    .await;
    let dir = format!("default_owned_{}", p["metadata"]["uid"].as_str().unwrap());
    let lines = wait_until(LONG, || async {
        let lines = stat_lines(&container_log(&dir)?);
        lines.iter().any(|l| l == "DONE").then_some(lines)
    })
    .await
    .unwrap_or_else(|| panic!("owned printed nothing; kubelet log:\n{}", tail(&k.log(), 40)));
    for w in ["/cfg 2000 2777", "/creds 2000 3777", "/cfg/color 2000 644", "/creds/password 2000 440", "hunter2"] {
        assert!(lines.iter().any(|l| l == w), "{w:?} not in {lines:?}");
    }

    // containerd 1.6 reports no runtime handlers and no features: the node says nothing, as
    // upstream's setters leave empty lists and nil features out.
    let n = eventually("node Ready", || {
        let n = api.get_json(&["node", &node])?;
        n["status"]["nodeInfo"]["containerRuntimeVersion"].as_str().is_some_and(|v| !v.is_empty()).then_some(n)
    })
    .await;
    assert!(n["status"]["runtimeHandlers"].is_null(), "{}", n["status"]["runtimeHandlers"]);
    assert!(n["status"]["features"].is_null(), "{}", n["status"]["features"]);
    api.kubectl(&["delete", "pod", "--all", "--timeout=90s"]);
    k.cleanup().await;
}
