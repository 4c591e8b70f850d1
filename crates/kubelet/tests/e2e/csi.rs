//! CSI end to end: testapi with a bound PVC/PV and a CSIDriver, the test-only hostpath CSI
//! driver (crates/csi-hostpath-test) registering through `<root>/plugins_registry`, and a busybox
//! pod on containerd reading and writing the volume. The driver's call log shows the CSI calls.

use crate::LONG;
use crate::api::{TestApi, eventually, start};
use crate::harness::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const DRIVER: &str = "hostpath.test.csi";

/// The driver binary `cargo test --workspace` built next to this test.
fn plugin_bin() -> PathBuf {
    let bin = std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().join("csi-hostpath-test");
    assert!(bin.exists(), "{} missing: run the tests with `cargo test --workspace`", bin.display());
    bin
}

/// The running driver. Dropped before the kubelet (declare it after): stops the driver and
/// detaches every mount left under the test directory, so removing it never reaches into a volume.
struct Driver {
    child: Option<Child>,
    root: PathBuf,
    state: tempfile::TempDir,
    test_dir: PathBuf,
}

impl Driver {
    fn start(root: &Path, test_dir: &Path) -> Self {
        let state = tempfile::Builder::new().prefix("csi-state-").tempdir().unwrap();
        let mut d = Self { child: None, root: root.to_path_buf(), state, test_dir: test_dir.to_path_buf() };
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.state.path().join("driver.log")).unwrap();
        let child = Command::new(plugin_bin())
            .arg("--root-dir")
            .arg(&self.root)
            .arg("--state-dir")
            .arg(self.state.path())
            .args(["--node-id", "e2e-node-id"])
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start csi-hostpath-test");
        self.child = Some(child);
    }

    fn calls(&self) -> Vec<Value> {
        read(&self.state.path().join("calls.jsonl")).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// (method, the call) of the volume calls, in order.
    fn volume_calls(&self) -> Vec<(String, Value)> {
        self.calls()
            .into_iter()
            .filter_map(|c| Some((c["method"].as_str()?.to_string(), c.clone())))
            .filter(|(m, _)| {
                ["NodeStageVolume", "NodePublishVolume", "NodeUnpublishVolume", "NodeUnstageVolume"]
                    .contains(&m.as_str())
            })
            .collect()
    }

    fn backing(&self, handle: &str) -> PathBuf {
        self.state.path().join("volumes").join(handle)
    }

    fn mounts_under(dir: &Path) -> Vec<PathBuf> {
        let mi = read(Path::new("/proc/self/mountinfo"));
        kubelet::volume::csi::paths::mount_points(&mi).filter(|p| p.starts_with(dir)).collect()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
        let mut mounts = Self::mounts_under(&self.test_dir);
        mounts.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for m in mounts {
            let c = std::ffi::CString::new(m.as_os_str().as_encoded_bytes()).unwrap();
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

fn storage_objects(handle: &str, attach_required: bool) -> String {
    format!(
        r#"apiVersion: storage.k8s.io/v1
kind: CSIDriver
metadata:
  name: {DRIVER}
spec:
  attachRequired: {attach_required}
  podInfoOnMount: true
---
apiVersion: v1
kind: PersistentVolume
metadata:
  name: pv-{handle}
spec:
  capacity: {{storage: 1Gi}}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  claimRef: {{namespace: default, name: claim-{handle}}}
  csi:
    driver: {DRIVER}
    volumeHandle: {handle}
    volumeAttributes: {{color: blue}}
status:
  phase: Bound
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: claim-{handle}
spec:
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: 1Gi}}}}
  volumeName: pv-{handle}
status:
  phase: Bound
"#
    )
}

fn pod(name: &str, claim: &str) -> String {
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
    command: ["sh", "-c", "echo written-by-pod > /data/out.txt && cat /data/out.txt && trap 'exit 0' TERM; while true; do sleep 0.2; done"]
    volumeMounts: [{{name: data, mountPath: /data}}]
  volumes:
  - name: data
    persistentVolumeClaim: {{claimName: {claim}}}
"#,
        img = image("busybox:1.36")
    )
}

fn running(api: &TestApi, name: &str) -> Option<Value> {
    let p = api.get_json(&["pod", name])?;
    (p["status"]["phase"] == "Running" && p["status"]["containerStatuses"][0]["ready"] == true).then_some(p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claims_csi_calls_arrive_in_order_and_are_undone_on_deletion() {
    let Some((api, mut k)) = start("csi").await else { return };
    let root = k.dir.path().join("root");
    let driver = Driver::start(&root, k.dir.path());
    let handle = "vol-e2e";
    api.apply(&storage_objects(handle, false));
    // The driver registers: CSINode lists it with its node ID.
    let csinode = eventually("CSINode lists the driver", || {
        let n = api.get_json(&["csinode", &k.node])?;
        (n["spec"]["drivers"][0]["name"] == DRIVER).then_some(n)
    })
    .await;
    assert_eq!(csinode["spec"]["drivers"][0]["nodeID"], "e2e-node-id");
    assert_eq!(csinode["metadata"]["ownerReferences"][0]["kind"], "Node", "{csinode}");
    // The Node carries the driver's node ID (upstream's nodeinfomanager), set before the CSINode.
    let node = api.get_json(&["node", &k.node]).unwrap();
    assert_eq!(
        node["metadata"]["annotations"]["csi.volume.kubernetes.io/nodeid"],
        format!("{{\"{DRIVER}\":\"e2e-node-id\"}}"),
        "{}",
        node["metadata"]
    );

    api.apply(&pod("reader", &format!("claim-{handle}")));
    let p = eventually("pod Running with the volume", || running(&api, "reader")).await;
    let uid = p["metadata"]["uid"].as_str().unwrap().to_string();
    let staging = kubelet::volume::csi::paths::staging_path(&root, DRIVER, handle);
    let target = root.join(format!("pods/{uid}/volumes/kubernetes.io~csi/pv-{handle}/mount"));
    // The container wrote through the published mount into the driver's backing directory.
    let written = wait_until(LONG, || async {
        Some(read(&driver.backing(handle).join("out.txt"))).filter(|s| s.contains("written-by-pod"))
    })
    .await;
    assert!(written.is_some(), "the pod's write reached the volume; kubelet log:\n{}", tail(&k.log(), 40));
    let calls = driver.volume_calls();
    let methods: Vec<&str> = calls.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(methods, vec!["NodeStageVolume", "NodePublishVolume"], "{calls:?}");
    assert_eq!(calls[0].1["staging_target_path"], staging.display().to_string());
    assert_eq!(calls[0].1["volume_id"], handle);
    assert_eq!(calls[1].1["target_path"], target.display().to_string());
    assert_eq!(calls[1].1["staging_target_path"], staging.display().to_string());
    assert_eq!(calls[1].1["volume_context"]["color"], "blue");
    assert_eq!(calls[1].1["volume_context"]["csi.storage.k8s.io/pod.name"], "reader");
    assert_eq!(calls[1].1["volume_context"]["csi.storage.k8s.io/pod.uid"], uid.as_str());
    // Registration came first: GetInfo, NodeGetInfo, NotifyRegistrationStatus.
    let all: Vec<String> = driver.calls().iter().filter_map(|c| c["method"].as_str().map(str::to_string)).collect();
    let pos = |m: &str| all.iter().position(|x| x == m).unwrap_or(usize::MAX);
    assert!(pos("NodeGetInfo") < pos("NodeStageVolume"), "{all:?}");

    // A SIGKILLed kubelet comes back: the running pod keeps its volume, nothing is mounted twice.
    k.restart(libc::SIGKILL).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let again = eventually("still Running after the restart", || running(&api, "reader")).await;
    assert_eq!(again["metadata"]["uid"], uid.as_str());
    let publishes = driver.volume_calls().iter().filter(|(m, _)| m == "NodePublishVolume").count();
    let mounted = kubelet::volume::csi::paths::mount_count(&target);
    assert!(publishes == 1 || mounted == 1, "publishes {publishes}, mounts of the target {mounted}");
    assert_eq!(mounted, 1, "target mounted once");
    assert_eq!(kubelet::volume::csi::paths::mount_count(&staging), 1, "staging mounted once");

    // Deleting the pod unpublishes, then unstages, with the same paths.
    api.kubectl(&["delete", "pod", "reader", "--timeout=90s"]);
    let undone = wait_until(LONG, || async {
        let calls = driver.volume_calls();
        calls.iter().any(|(m, _)| m == "NodeUnstageVolume").then_some(calls)
    })
    .await
    .unwrap_or_else(|| panic!("no NodeUnstageVolume; kubelet log:\n{}", tail(&k.log(), 60)));
    let tail_calls: Vec<&(String, Value)> =
        undone.iter().skip_while(|(m, _)| !m.starts_with("NodeUnpublish")).collect();
    assert_eq!(tail_calls.len(), 2, "{undone:?}");
    assert_eq!(tail_calls[0].0, "NodeUnpublishVolume");
    assert_eq!(tail_calls[0].1["target_path"], target.display().to_string());
    assert_eq!(tail_calls[1].0, "NodeUnstageVolume");
    assert_eq!(tail_calls[1].1["staging_target_path"], staging.display().to_string());
    let clean = wait_until(LONG, || async { Driver::mounts_under(&root).is_empty().then_some(()) }).await;
    assert!(clean.is_some(), "mounts left: {:?}", Driver::mounts_under(&root));
    assert!(!target.parent().unwrap().exists(), "pod volume dir removed");
    assert_eq!(read(&driver.backing(handle).join("out.txt")).trim(), "written-by-pod", "data kept by the driver");
    k.cleanup().await;
    drop(driver);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_waits_for_its_volume_attachment() {
    let Some((api, mut k)) = start("csiattach").await else { return };
    let root = k.dir.path().join("root");
    let driver = Driver::start(&root, k.dir.path());
    let handle = "vol-attach";
    api.apply(&storage_objects(handle, true));
    api.apply(&pod("waiter", &format!("claim-{handle}")));
    let va = kubelet::volume::csi::paths::attachment_name(handle, DRIVER, &k.node);
    // ContainerCreating, with the reason in an event naming the VolumeAttachment.
    eventually("FailedMount naming the VolumeAttachment", || {
        let events = api.kubectl(&["get", "events", "-o", "json"]);
        (events.contains(&va) || k.log().contains(&va)).then_some(())
    })
    .await;
    let p = api.get_json(&["pod", "waiter"]).unwrap();
    assert_eq!(p["status"]["phase"], "Pending");
    assert!(driver.volume_calls().is_empty(), "nothing staged before the attachment");
    // The attach/detach controller's part, by hand.
    api.apply(&format!(
        "apiVersion: storage.k8s.io/v1\nkind: VolumeAttachment\nmetadata:\n  name: {va}\nspec:\n  attacher: {DRIVER}\n  nodeName: {node}\n  source: {{persistentVolumeName: pv-{handle}}}\n",
        node = k.node
    ));
    api.kubectl(&[
        "patch",
        "volumeattachment",
        &va,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"attached":true,"attachmentMetadata":{"devicePath":"/dev/fake"}}}"#,
    ]);
    eventually("Running once attached", || running(&api, "waiter")).await;
    let calls = driver.volume_calls();
    assert_eq!(calls[0].0, "NodeStageVolume");
    assert_eq!(calls[0].1["publish_context"]["devicePath"], "/dev/fake");
    api.kubectl(&["delete", "pod", "waiter", "--timeout=90s"]);
    wait_until(LONG, || async { Driver::mounts_under(&root).is_empty().then_some(()) }).await;
    k.cleanup().await;
    drop(driver);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_deleted_while_the_kubelet_is_down_has_its_csi_volume_torn_down() {
    let Some((api, mut k)) = start("csiorphan").await else { return };
    let root = k.dir.path().join("root");
    let driver = Driver::start(&root, k.dir.path());
    let handle = "vol-orphan";
    api.apply(&storage_objects(handle, false));
    api.apply(&pod("orphan", &format!("claim-{handle}")));
    let p = eventually("pod Running with the volume", || running(&api, "orphan")).await;
    let uid = p["metadata"]["uid"].as_str().unwrap().to_string();
    let target = root.join(format!("pods/{uid}/volumes/kubernetes.io~csi/pv-{handle}/mount"));
    assert!(kubelet::volume::csi::paths::is_mount_point(&target));
    // Frozen, so it cannot see the deletion; then killed and started again.
    let pid = k.pid().expect("kubelet running") as i32;
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    api.kubectl(&["delete", "pod", "orphan", "--grace-period=0", "--force", "--wait=false"]);
    k.restart(libc::SIGKILL).await;
    let undone = wait_until(LONG, || async {
        let calls = driver.volume_calls();
        calls.iter().any(|(m, _)| m == "NodeUnstageVolume").then_some(calls)
    })
    .await
    .unwrap_or_else(|| panic!("no NodeUnstageVolume; kubelet log:\n{}", tail(&k.log(), 60)));
    let methods: Vec<&str> = undone.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(methods, ["NodeStageVolume", "NodePublishVolume", "NodeUnpublishVolume", "NodeUnstageVolume"]);
    assert_eq!(undone[2].1["target_path"], target.display().to_string());
    let clean = wait_until(LONG, || async { Driver::mounts_under(&root).is_empty().then_some(()) }).await;
    assert!(clean.is_some(), "mounts left: {:?}", Driver::mounts_under(&root));
    k.cleanup().await;
    drop(driver);
}

/// A pod with fsGroup 2000 (and `policy` as fsGroupChangePolicy) printing the ownership of the
/// claim's root and of `/data/planted`.
fn fs_group_pod(name: &str, policy: Option<&str>, claim: &str) -> String {
    let policy = policy.map(|p| format!(", fsGroupChangePolicy: {p}")).unwrap_or_default();
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 1
  securityContext: {{fsGroup: 2000{policy}}}
  containers:
  - name: app
    image: {img}
    command: ["sh", "-c", "stat -c '%n %g %a' /data /data/planted; echo DONE; sleep 3600"]
    volumeMounts: [{{name: data, mountPath: /data}}]
  volumes:
  - name: data
    persistentVolumeClaim: {{claimName: {claim}}}
"#,
        img = image("busybox:1.36")
    )
}

/// What the pod's container printed once it printed DONE.
async fn printed(api: &TestApi, name: &str) -> Vec<String> {
    let p = eventually(&format!("{name} Running"), || running(api, name)).await;
    let log = format!("/var/log/pods/default_{name}_{}/app/0.log", p["metadata"]["uid"].as_str().unwrap());
    eventually(&format!("{name} printed DONE"), || {
        let lines: Vec<String> = std::fs::read_to_string(&log)
            .ok()?
            .lines()
            .filter_map(|l| l.splitn(4, ' ').nth(3))
            .map(str::to_string)
            .collect();
        lines.iter().any(|l| l == "DONE").then_some(lines)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_group_is_applied_to_csi_volumes_and_on_root_mismatch_skips_a_matching_root() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Some((api, mut k)) = start("csifsg").await else { return };
    let root = k.dir.path().join("root");
    let driver = Driver::start(&root, k.dir.path());
    let handle = "vol-fsg";
    // fsGroupPolicy File: the kubelet changes the ownership whatever the fsType.
    api.apply(
        &storage_objects(handle, false).replace("podInfoOnMount: true", "podInfoOnMount: true\n  fsGroupPolicy: File"),
    );
    eventually("CSINode lists the driver", || {
        (api.get_json(&["csinode", &k.node])?["spec"]["drivers"][0]["name"] == DRIVER).then_some(())
    })
    .await;
    let claim = format!("claim-{handle}");
    let unstaged = |n: usize| {
        let driver = &driver;
        async move {
            wait_until(LONG, || async {
                let count = driver.volume_calls().iter().filter(|(m, _)| m == "NodeUnstageVolume").count();
                (count >= n).then_some(())
            })
            .await
            .expect("the volume unstaged");
        }
    };

    // The first pod (no policy: always recursive) gives the volume to the fsGroup.
    api.apply(&fs_group_pod("first", None, &claim));
    let lines = printed(&api, "first").await;
    let data = lines.iter().find(|l| l.starts_with("/data ")).cloned().unwrap_or_default();
    assert!(data.starts_with("/data 2000 2"), "setgid root owned by the fsGroup: {lines:?}");
    let meta = std::fs::metadata(driver.backing(handle)).unwrap();
    assert_eq!((meta.gid(), meta.mode() & 0o2070), (2000, 0o2070), "on the node too");
    api.kubectl(&["delete", "pod", "first", "--timeout=90s"]);
    unstaged(1).await;

    // A file the fsGroup does not own, under a root that already matches.
    let planted = driver.backing(handle).join("planted");
    std::fs::write(&planted, "x").unwrap();
    std::os::unix::fs::chown(&planted, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o600)).unwrap();
    // OnRootMismatch: the root matches, nothing is walked.
    api.apply(&fs_group_pod("lazy", Some("OnRootMismatch"), &claim));
    let lines = printed(&api, "lazy").await;
    assert!(lines.iter().any(|l| l == "/data/planted 0 600"), "{lines:?}");
    api.kubectl(&["delete", "pod", "lazy", "--timeout=90s"]);
    unstaged(2).await;
    // Always (the default): the whole volume again.
    api.apply(&fs_group_pod("eager", Some("Always"), &claim));
    let lines = printed(&api, "eager").await;
    assert!(lines.iter().any(|l| l == "/data/planted 2000 660"), "{lines:?}");
    api.kubectl(&["delete", "pod", "eager", "--timeout=90s"]);
    unstaged(3).await;
    k.cleanup().await;
    drop(driver);
}
