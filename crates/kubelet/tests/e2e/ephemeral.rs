//! Ephemeral containers end to end (testapi + kubectl + containerd): `kubectl debug` adds them
//! through the `ephemeralcontainers` subresource; the kubelet starts each once in the running
//! pod's sandbox — in the target container's process namespace with `--target` — reports them in
//! `ephemeralContainerStatuses`, never restarts them, leaves the other containers alone and stops
//! them with the pod. `kubectl logs -c` reads their output; `kubectl debug -i` attaches to one.

use crate::api::{TestApi, eventually};
use crate::harness::*;
use kubelet::cri::api;
use serde_json::Value;
use std::collections::HashMap;

fn web_pod(img: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: app
    image: {img}
    command: ["sleep", "3600"]
"#
    )
}

fn ephemeral_status(p: &Value, name: &str) -> Option<Value> {
    p["status"]["ephemeralContainerStatuses"].as_array()?.iter().find(|s| s["name"] == name).cloned()
}

fn ready(p: &Value) -> Option<&str> {
    p["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == "Ready")?["status"].as_str()
}

/// The ephemeral container's status once it has terminated.
async fn terminated(api: &TestApi, name: &str) -> Value {
    eventually(&format!("{name} terminated"), || {
        let s = ephemeral_status(&api.get_json(&["pod", "web"])?, name)?;
        s["state"]["terminated"].is_object().then_some(s)
    })
    .await
}

/// Runs kubectl with `input` written on a stdin kept open until kubectl exits (bounded); returns
/// its stdout and stderr.
async fn interact(api: &TestApi, args: &[&str], input: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut child = std::process::Command::new("kubectl")
        .env("KUBECONFIG", api.dir.path().join("admin.kubeconfig"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    let pid = child.id();
    let read = tokio::task::spawn_blocking(move || {
        let (mut out, mut err) = (String::new(), String::new());
        let _ = child.stdout.take().unwrap().read_to_string(&mut out);
        let _ = child.stderr.take().unwrap().read_to_string(&mut err);
        let _ = child.wait();
        drop(stdin);
        (out, err)
    });
    match tokio::time::timeout(crate::LONG, read).await {
        Ok(r) => r.unwrap(),
        Err(_) => {
            // SAFETY: kill(2) on the kubectl this test started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("kubectl {args:?} did not end");
        }
    }
}

/// The runtime's containers of the pod named `name` (every instance, any state).
async fn instances(k: &Kubelet, uid: &str, name: &str) -> Vec<api::Container> {
    let selector = HashMap::from([
        ("io.kubernetes.pod.uid".to_string(), uid.to_string()),
        ("io.kubernetes.container.name".to_string(), name.to_string()),
    ]);
    let filter = api::ContainerFilter { label_selector: selector, ..Default::default() };
    k.runtime.list_containers(Some(filter)).await.unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_debug_runs_ephemeral_containers_in_the_targets_process_namespace() {
    let Some((api, mut k, _scratch)) = crate::server::start("ephemeral").await else { return };
    let bb = image("busybox:1.36");
    api.apply(&web_pod(&bb));
    let before = eventually("app running", || {
        let p = api.get_json(&["pod", "web"])?;
        (p["status"]["containerStatuses"][0]["state"]["running"].is_object()).then_some(p)
    })
    .await;
    let uid = before["metadata"]["uid"].as_str().unwrap().to_string();
    let app_id = before["status"]["containerStatuses"][0]["containerID"].clone();

    // With --target: the debugger sees the app's processes (its `sleep 3600`).
    let script = "ps; echo debugger-done";
    api.kubectl(&[
        "debug",
        "web",
        &format!("--image={bb}"),
        "--target=app",
        "-c",
        "debugger",
        "--",
        "sh",
        "-c",
        script,
    ]);
    let debugger = terminated(&api, "debugger").await;
    let t = &debugger["state"]["terminated"];
    assert_eq!((t["exitCode"].as_i64(), t["reason"].as_str()), (Some(0), Some("Completed")), "{debugger}");
    let cid = debugger["containerID"].as_str().unwrap().to_string();
    assert!(cid.starts_with("containerd://"), "{debugger}");
    assert_eq!(t["containerID"].as_str(), Some(cid.as_str()));
    assert_eq!(debugger["image"], bb.as_str());
    assert!(debugger["imageID"].as_str().is_some_and(|i| !i.is_empty()), "{debugger}");
    assert_eq!((debugger["ready"].as_bool(), debugger["restartCount"].as_i64()), (Some(false), Some(0)));
    let log = api.kubectl(&["logs", "web", "-c", "debugger"]);
    assert!(log.contains("debugger-done"), "{log}");
    assert!(log.lines().any(|l| l.trim_end().ends_with("sleep 3600")), "the target's process is visible: {log}");

    // Without a target: its own process namespace, the app's processes are not there.
    let script = "ps; echo shell-done";
    api.kubectl(&["debug", "web", &format!("--image={bb}"), "-c", "shell", "--", "sh", "-c", script]);
    terminated(&api, "shell").await;
    let log = api.kubectl(&["logs", "web", "-c", "shell"]);
    assert!(log.contains("shell-done"), "{log}");
    assert!(!log.contains("sleep 3600"), "no target, no shared process namespace: {log}");

    // Interactive: `kubectl debug -i` attaches to the container; a line typed on stdin reaches
    // it and its answer comes back through the attach. Stdin stays open until the answer is in:
    // as upstream (docker's rules), the runtime closes an attach's stdout when its stdin closes
    // unless the container has stdinOnce.
    let talk = ["debug", "-i", "web", &format!("--image={bb}"), "--target=app", "-c", "talker", "--"];
    let (stdout, stderr) = interact(&api, &[&talk[..], &["sh", "-c", "read x; echo got-$x"]].concat(), "hello\n").await;
    assert!(stdout.contains("got-hello"), "stdout {stdout:?}, stderr {stderr}");
    terminated(&api, "talker").await;

    // The app container was neither restarted nor replaced, and the debugger (exited) not
    // started again: one instance of each in the runtime.
    let p = api.get_json(&["pod", "web"]).unwrap();
    let app = &p["status"]["containerStatuses"][0];
    assert_eq!((&app["containerID"], app["restartCount"].as_i64()), (&app_id, Some(0)), "{app}");
    assert!(app["state"]["running"].is_object());
    assert_eq!(p["status"]["phase"], "Running");
    assert_eq!(ready(&p), Some("True"), "ephemeral containers do not count in readiness");
    for name in ["app", "debugger", "shell", "talker"] {
        assert_eq!(instances(&k, &uid, name).await.len(), 1, "{name}");
    }
    let again = ephemeral_status(&p, "debugger").unwrap();
    assert_eq!(again["containerID"].as_str(), Some(cid.as_str()), "the debugger was not started again");
    let names: Vec<&str> = p["status"]["ephemeralContainerStatuses"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["debugger", "shell", "talker"], "sorted by name");

    // A running ephemeral container is stopped with the pod.
    api.kubectl(&["debug", "web", &format!("--image={bb}"), "--target=app", "-c", "sleeper", "--", "sleep", "3600"]);
    eventually("sleeper running", || {
        let s = ephemeral_status(&api.get_json(&["pod", "web"])?, "sleeper")?;
        s["state"]["running"].is_object().then_some(())
    })
    .await;
    api.kubectl(&["delete", "pod", "web", "--timeout=90s"]);
    let running = api::ContainerState::ContainerRunning as i32;
    for name in ["app", "sleeper"] {
        let left = instances(&k, &uid, name).await;
        assert!(left.iter().all(|c| c.state != running), "{name} still running after the pod was deleted");
    }
    k.cleanup().await;
}
