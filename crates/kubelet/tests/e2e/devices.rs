//! Device plugins end to end: testapi + kubectl, the kubelet on containerd and the test-only
//! device plugin (crates/device-plugin-test) advertising file-backed `example.com/widget`
//! devices through `<root>/device-plugins`. The node's capacity, allocation at admission (two
//! distinct devices in the container's env and mounts; a pod beyond capacity refused with
//! upstream's reason), health, a plugin restart, a kubelet restart with the checkpoint, a bad
//! registration, and the pod resources API over its socket.

use crate::LONG;
use crate::api::{TestApi, eventually, start};
use crate::harness::*;
use kubelet::podresources::proto as pr;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const R: &str = "example.com/widget";

/// The plugin binary `cargo test --workspace` built next to this test.
fn plugin_bin() -> PathBuf {
    let bin = std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().join("device-plugin-test");
    assert!(bin.exists(), "{} missing: run the tests with `cargo test --workspace`", bin.display());
    bin
}

/// A running test plugin; stopped (SIGTERM) when dropped.
struct Plugin {
    child: Option<Child>,
    dir: PathBuf,
    state: tempfile::TempDir,
    extra: Vec<String>,
}

impl Plugin {
    fn start(dir: &Path, extra: &[&str]) -> Self {
        let state = tempfile::Builder::new().prefix("widgets-").tempdir().unwrap();
        let mut p =
            Self { child: None, dir: dir.to_path_buf(), state, extra: extra.iter().map(|s| s.to_string()).collect() };
        p.spawn();
        p
    }

    fn spawn(&mut self) {
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.state.path().join("plugin.log")).unwrap();
        let child = Command::new(plugin_bin())
            .arg("--dir")
            .arg(&self.dir)
            .arg("--state-dir")
            .arg(self.state.path())
            .args(&self.extra)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start device-plugin-test");
        self.child = Some(child);
    }

    /// Waits until the process has exited; its status.
    async fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + LONG;
        while std::time::Instant::now() < deadline {
            if let Some(s) = self.child.as_mut()?.try_wait().ok().flatten() {
                return Some(s);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        None
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }

    fn calls(&self) -> Vec<Value> {
        read(&self.state.path().join("calls.jsonl")).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    fn count(&self, method: &str) -> usize {
        self.calls().iter().filter(|c| c["method"] == method).count()
    }

    fn set_unhealthy(&self, ids: &[&str]) {
        std::fs::write(self.state.path().join("unhealthy"), ids.join("\n")).unwrap();
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        self.stop();
    }
}

fn widget_pod(name: &str, n: u32) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: {img}
    command: ["sh", "-c", "echo IDS=$WIDGET_IDS; cat /widgets/*; trap 'exit 0' TERM; while true; do sleep 0.2; done"]
    resources:
      limits:
        {R}: "{n}"
"#,
        img = image("busybox:1.36")
    )
}

/// (capacity, allocatable) of the widgets on the Node.
fn widgets(api: &TestApi, node: &str) -> Option<(String, String)> {
    let n = api.get_json(&["node", node])?;
    let q = |field: &str| n["status"][field][R].as_str().map(str::to_string);
    Some((q("capacity")?, q("allocatable")?))
}

fn running(api: &TestApi, name: &str) -> Option<Value> {
    let p = api.get_json(&["pod", name])?;
    (p["status"]["phase"] == "Running" && p["status"]["containerStatuses"][0]["ready"] == true).then_some(p)
}

/// The device IDs the container printed (`IDS=a,b`) and the files it read from its mounts.
async fn printed(k: &Kubelet, name: &str, uid: &str) -> (Vec<String>, Vec<String>) {
    let log = format!("/var/log/pods/default_{name}_{uid}/app/0.log");
    let lines = wait_until(LONG, || async {
        let text = read(Path::new(&log));
        let lines: Vec<String> = text.lines().filter_map(|l| l.splitn(4, ' ').nth(3)).map(str::to_string).collect();
        lines.iter().any(|l| l.starts_with("IDS=")).then_some(lines)
    })
    .await
    .unwrap_or_else(|| panic!("no IDS line in {log}; kubelet log:\n{}", tail(&k.log(), 40)));
    let ids: Vec<String> =
        lines[0].trim_start_matches("IDS=").split(',').filter(|s| !s.is_empty()).map(str::to_string).collect();
    (ids, lines[1..].to_vec())
}

async fn pod_resources(root: &Path) -> pr::ListPodResourcesResponse {
    let channel = kubelet::cm::devicemanager::endpoint::dial(&root.join("pod-resources/kubelet.sock")).await.unwrap();
    let mut client = pr::pod_resources_lister_client::PodResourcesListerClient::new(channel);
    client.list(pr::ListPodResourcesRequest {}).await.unwrap().into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_plugin_widgets_are_advertised_allocated_and_kept_across_restarts() {
    let Some((api, mut k)) = start("devices").await else { return };
    let root = k.dir.path().join("root");
    let dp_dir = root.join("device-plugins");
    let mut plugin = Plugin::start(&dp_dir, &["--count", "3"]);

    // Registration: the Node shows 3 widgets.
    eventually("3 widgets on the node", || (widgets(&api, &k.node)? == ("3".into(), "3".into())).then_some(())).await;
    // The kubelet asked for the options before answering Register, then opened the stream (the
    // plugin records its own Register once it has the answer, so that one may come in between).
    let calls: Vec<String> = plugin
        .calls()
        .iter()
        .filter_map(|c| c["method"].as_str().map(str::to_string))
        .filter(|m| m != "Register")
        .collect();
    assert_eq!(&calls[..2], ["GetDevicePluginOptions", "ListAndWatch"], "{calls:?}");

    // Bad registrations are refused with upstream's messages and disturb nothing.
    let mut bad =
        Plugin::start(&dp_dir, &["--api-version", "v1alpha", "--socket", "bad.sock", "--resource", "example.com/bad"]);
    let mut badname = Plugin::start(&dp_dir, &["--socket", "badname.sock", "--resource", "widget"]);
    for (p, want) in [
        (
            &mut bad,
            r#"requested API version "v1alpha" is not supported by kubelet. Supported versions are ["v1beta1"]"#,
        ),
        (&mut badname, r#"the ResourceName "widget" is invalid"#),
    ] {
        let exited = p.exited().await;
        assert!(exited.is_some_and(|s| !s.success()), "a refused plugin exits");
        let refused = p.calls().into_iter().find(|c| c["method"] == "Register").expect("Register recorded");
        assert_eq!(refused["ok"], false);
        assert_eq!(refused["error"], want);
    }
    let node = api.get_json(&["node", &k.node]).unwrap();
    assert!(node["status"]["capacity"]["example.com/bad"].is_null(), "{}", node["status"]["capacity"]);
    assert_eq!(widgets(&api, &k.node), Some(("3".into(), "3".into())));

    // A pod asking for 2 widgets gets 2 distinct devices: env and mounted files agree with
    // what the plugin allocated.
    api.apply(&widget_pod("two", 2));
    let two = eventually("pod two Running", || running(&api, "two")).await;
    let two_uid = two["metadata"]["uid"].as_str().unwrap().to_string();
    let two_cid = two["status"]["containerStatuses"][0]["containerID"].clone();
    let (ids, files) = printed(&k, "two", &two_uid).await;
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_ne!(ids[0], ids[1]);
    assert_eq!(files, ids, "each device's file is mounted at /widgets/<id>");
    let allocs: Vec<Value> = plugin.calls().into_iter().filter(|c| c["method"] == "Allocate").collect();
    assert_eq!(allocs.len(), 1);
    assert_eq!(allocs[0]["devices"], serde_json::json!(ids));

    // The pod resources API reports them for the container.
    let list = pod_resources(&root).await;
    let listed = list.pod_resources.iter().find(|p| p.name == "two").expect("pod two listed");
    let mut got: Vec<String> = listed.containers[0].devices.iter().flat_map(|d| d.device_ids.clone()).collect();
    got.sort();
    assert_eq!(listed.containers[0].name, "app");
    assert_eq!(listed.containers[0].devices[0].resource_name, R);
    assert_eq!(got, ids);

    // Beyond capacity: refused at admission with upstream's reason and message; never started.
    api.apply(&widget_pod("toomany", 2));
    let refused = eventually("pod toomany Failed", || {
        let p = api.get_json(&["pod", "toomany"])?;
        (p["status"]["phase"] == "Failed").then_some(p)
    })
    .await;
    assert_eq!(refused["status"]["reason"], "UnexpectedAdmissionError");
    assert_eq!(
        refused["status"]["message"],
        "Pod was rejected: Allocate failed due to requested number of devices unavailable for example.com/widget. Requested: 2, Available: 1, which is unexpected"
    );
    api.kubectl(&["delete", "pod", "toomany", "--wait=false"]);

    // An unhealthy device leaves allocatable, not capacity.
    let free = ["widget-0", "widget-1", "widget-2"].into_iter().find(|d| !ids.iter().any(|i| i == d)).unwrap();
    plugin.set_unhealthy(&[free]);
    eventually("2 allocatable of 3", || (widgets(&api, &k.node)? == ("3".into(), "2".into())).then_some(())).await;
    plugin.set_unhealthy(&[]);
    eventually("3 allocatable again", || (widgets(&api, &k.node)? == ("3".into(), "3".into())).then_some(())).await;

    // A plugin that goes away: its devices are unhealthy (capacity kept during the grace
    // period); the kubelet stays healthy and the running pod untouched. Back: registered again.
    plugin.stop();
    eventually("0 allocatable while the plugin is down", || {
        (widgets(&api, &k.node)? == ("3".into(), "0".into())).then_some(())
    })
    .await;
    assert!(k.exit_status().is_none(), "the kubelet keeps running");
    plugin.spawn();
    eventually("re-registered", || (widgets(&api, &k.node)? == ("3".into(), "3".into())).then_some(())).await;
    assert_eq!(running(&api, "two").unwrap()["status"]["containerStatuses"][0]["containerID"], two_cid);

    // A kubelet restart: the checkpoint keeps the assignment, the plugin registers again on the
    // new socket, the running container is kept and its devices are never handed out again.
    let checkpoint: Value =
        serde_json::from_str(&read(&dp_dir.join("kubelet_internal_checkpoint"))).expect("checkpoint written");
    let entry = &checkpoint["Data"]["PodDeviceEntries"][0];
    assert_eq!(entry["PodUID"], two_uid.as_str());
    assert_eq!(entry["ResourceName"], R);
    assert_eq!(entry["DeviceIDs"]["-1"], serde_json::json!(ids));
    assert!(checkpoint["Checksum"].is_u64());
    let registers = plugin.count("Register");
    k.restart(libc::SIGKILL).await;
    wait_until(LONG, || async { (plugin.count("Register") > registers).then_some(()) })
        .await
        .unwrap_or_else(|| panic!("the plugin did not register again; kubelet log:\n{}", tail(&k.log(), 40)));
    eventually("3 widgets after the restart", || (widgets(&api, &k.node)? == ("3".into(), "3".into())).then_some(()))
        .await;
    api.apply(&widget_pod("one", 1));
    let one = eventually("pod one Running", || running(&api, "one")).await;
    let (one_ids, _) = printed(&k, "one", one["metadata"]["uid"].as_str().unwrap()).await;
    assert_eq!(one_ids.len(), 1);
    assert!(!ids.contains(&one_ids[0]), "{one_ids:?} must not be one of {ids:?}");
    let again = running(&api, "two").expect("two still running");
    assert_eq!(again["status"]["containerStatuses"][0]["containerID"], two_cid, "container kept");
    assert_eq!(plugin.count("Allocate"), 2, "pod two was not allocated again");
    let list = pod_resources(&root).await;
    let listed = list.pod_resources.iter().find(|p| p.name == "two").expect("pod two listed after restart");
    let mut got: Vec<String> = listed.containers[0].devices.iter().flat_map(|d| d.device_ids.clone()).collect();
    got.sort();
    assert_eq!(got, ids, "the restored assignment is reported");

    for p in ["two", "one"] {
        api.kubectl(&["delete", "pod", p, "--timeout=90s"]);
    }
    k.cleanup().await;
    drop(plugin);
}
