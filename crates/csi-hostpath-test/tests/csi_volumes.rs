//! The kubelet's CSI plugin (`kubelet::volume::csi`) against this test driver, without
//! containerd: registration through the plugin watcher, set-up/tear-down call order and paths,
//! idempotence across a simulated kubelet restart, stats, deregistration. Needs root (bind mounts).

use k8s_openapi::api::core::v1::{
    CSIPersistentVolumeSource, CSIVolumeSource, ObjectReference, PersistentVolume, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PersistentVolumeClaimStatus, PersistentVolumeClaimVolumeSource, PersistentVolumeSpec,
    Pod, PodSpec, Volume,
};
use k8s_openapi::api::storage::v1::{CSIDriver, CSIDriverSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kubelet::api::DynApi;
use kubelet::api::fake::FakeApi;
use kubelet::volume::csi::{self, CsiVolumes, Drivers, paths};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

const DRIVER: &str = "hostpath.test.csi";
const NODE: &str = "node1";

/// The running plugin; on drop it is stopped and every mount left under `dir` is detached.
struct Plugin {
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Plugin {
    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }
    fn start(&mut self, extra: &[&str]) {
        let child = Command::new(env!("CARGO_BIN_EXE_csi-hostpath-test"))
            .arg("--root-dir")
            .arg(self.root())
            .arg("--state-dir")
            .arg(self.state())
            .args(["--node-id", "test-node-id"])
            .args(extra)
            .spawn()
            .expect("start the plugin");
        self.child = Some(child);
    }
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }
    fn calls(&self) -> Vec<Value> {
        std::fs::read_to_string(self.state().join("calls.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
    /// The methods called since the `skip`-th call (NodeGetCapabilities left out).
    fn methods_since(&self, skip: usize) -> Vec<String> {
        self.calls()
            .iter()
            .skip(skip)
            .filter_map(|c| c["method"].as_str())
            .filter(|m| *m != "NodeGetCapabilities")
            .map(str::to_string)
            .collect()
    }
    fn mounts_under(&self) -> Vec<PathBuf> {
        let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        paths::mount_points(&mi).filter(|p| p.starts_with(self.dir.path())).collect()
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        self.stop();
        let mut mounts = self.mounts_under();
        mounts.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for m in mounts {
            let c = std::ffi::CString::new(m.as_os_str().as_encoded_bytes()).unwrap();
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

fn is_root(test: &str) -> bool {
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        if std::env::var("KUBELET_E2E_REQUIRED").is_ok_and(|v| v == "1") {
            panic!("{test}: needs root for bind mounts");
        }
        eprintln!("SKIPPED {test}: needs root for bind mounts");
    }
    root
}

fn meta(ns: Option<&str>, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: ns.map(Into::into),
        uid: Some(format!("uid-{name}")),
        ..Default::default()
    }
}

fn pod(name: &str) -> Pod {
    Pod { metadata: meta(Some("default"), name), spec: Some(PodSpec::default()), ..Default::default() }
}

fn claim_volume() -> Volume {
    Volume {
        name: "data".into(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: "claim".into(),
            read_only: None,
        }),
        ..Default::default()
    }
}

fn api() -> FakeApi {
    let f = FakeApi::new();
    f.put_persistent_volume_claim(PersistentVolumeClaim {
        metadata: meta(Some("default"), "claim"),
        spec: Some(PersistentVolumeClaimSpec { volume_name: Some("pv1".into()), ..Default::default() }),
        status: Some(PersistentVolumeClaimStatus { phase: Some("Bound".into()), ..Default::default() }),
    });
    f.put_persistent_volume(PersistentVolume {
        metadata: meta(None, "pv1"),
        spec: Some(PersistentVolumeSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            claim_ref: Some(ObjectReference {
                name: Some("claim".into()),
                namespace: Some("default".into()),
                ..Default::default()
            }),
            csi: Some(CSIPersistentVolumeSource {
                driver: DRIVER.into(),
                volume_handle: "vol-1".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    f.put_csi_driver(CSIDriver {
        metadata: meta(None, DRIVER),
        spec: CSIDriverSpec {
            attach_required: Some(false),
            pod_info_on_mount: Some(true),
            volume_lifecycle_modes: Some(vec!["Persistent".into(), "Ephemeral".into()]),
            ..Default::default()
        },
    });
    f
}

/// Starts the plugin and the kubelet's plugin watcher; returns once the driver is registered.
async fn setup(extra: &[&str]) -> (Plugin, FakeApi, CsiVolumes, tokio::task::JoinHandle<()>) {
    let mut plugin = Plugin { child: None, dir: tempfile::Builder::new().prefix("csi-test-").tempdir().unwrap() };
    std::fs::create_dir_all(plugin.root().join("pods")).unwrap();
    let fake = api();
    let dynapi: DynApi = Arc::new(fake.clone());
    let node = k8s_openapi::api::core::v1::Node { metadata: meta(None, NODE), ..Default::default() };
    dynapi.create_node(&node).await.unwrap();
    let drivers = Drivers::new();
    let mut cfg = csi::watcher::Config::new(plugin.root(), NODE.into());
    cfg.rescan = Duration::from_millis(200);
    let watcher = tokio::spawn(csi::watcher::run(
        cfg,
        drivers.clone(),
        Some(dynapi.clone()),
        tokio_util::sync::CancellationToken::new(),
    ));
    plugin.start(extra);
    let d = drivers.wait_for(DRIVER, Duration::from_secs(30)).await.expect("driver registered");
    assert_eq!(d.node_id, "test-node-id");
    assert_eq!(d.endpoint, plugin.root().join("plugins").join(DRIVER).join("csi.sock"));
    let vols = CsiVolumes::new(csi::Config { root_dir: plugin.root(), node_name: NODE.into() }, Some(dynapi), drivers);
    (plugin, fake, vols, watcher)
}

fn call<'a>(calls: &'a [Value], method: &str) -> Vec<&'a Value> {
    calls.iter().filter(|c| c["method"] == method).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_calls_arrive_in_order_with_upstream_paths_and_are_undone() {
    if !is_root("claim_calls_arrive_in_order_with_upstream_paths_and_are_undone") {
        return;
    }
    let (plugin, fake, vols, watcher) = setup(&[]).await;
    let root = plugin.root();
    // Registration: GetInfo, NodeGetInfo, then the status; CSINode lists the driver.
    let reg: Vec<String> = plugin.methods_since(0);
    assert_eq!(reg, vec!["GetInfo", "NodeGetInfo", "NotifyRegistrationStatus"]);
    assert_eq!(call(&plugin.calls(), "NotifyRegistrationStatus")[0]["plugin_registered"], true);
    let csinode = fake.csi_node(NODE).expect("CSINode created");
    assert_eq!(csinode.spec.drivers[0].name, DRIVER);
    assert_eq!(csinode.spec.drivers[0].node_id, "test-node-id");
    assert_eq!(csinode.metadata.owner_references.unwrap()[0].name, NODE);

    let start = plugin.calls().len();
    let a = pod("a");
    let target_a = vols.set_up(&a, &claim_volume()).await.unwrap();
    let staging = paths::staging_path(&root, DRIVER, "vol-1");
    assert_eq!(target_a, root.join("pods/uid-a/volumes/kubernetes.io~csi/pv1/mount"));
    assert_eq!(plugin.methods_since(start), vec!["NodeStageVolume", "NodePublishVolume"]);
    let calls = plugin.calls();
    let stage = call(&calls, "NodeStageVolume")[0];
    assert_eq!(stage["staging_target_path"], staging.display().to_string());
    assert_eq!(stage["volume_id"], "vol-1");
    let publish = call(&calls, "NodePublishVolume")[0];
    assert_eq!(publish["target_path"], target_a.display().to_string());
    assert_eq!(publish["staging_target_path"], staging.display().to_string());
    assert_eq!(publish["readonly"], false);
    assert_eq!(publish["volume_context"]["csi.storage.k8s.io/pod.name"], "a");
    assert_eq!(publish["volume_context"]["csi.storage.k8s.io/pod.uid"], "uid-a");
    assert!(paths::is_mount_point(&target_a) && paths::is_mount_point(&staging));
    let vd = paths::VolData::load(target_a.parent().unwrap()).unwrap().unwrap();
    assert_eq!((vd.driver_name.as_str(), vd.volume_handle.as_str(), vd.spec_vol_id.as_str()), (DRIVER, "vol-1", "pv1"));
    assert_eq!(vd.attachment_id, paths::attachment_name("vol-1", DRIVER, NODE));

    // Writes land in the driver's backing directory.
    std::fs::write(target_a.join("hello"), "from a").unwrap();
    assert_eq!(std::fs::read_to_string(plugin.state().join("volumes/vol-1/hello")).unwrap(), "from a");

    // Set-up again, and again from a fresh plugin instance (a restarted kubelet): no calls.
    let n = plugin.calls().len();
    let fresh = CsiVolumes::new(
        csi::Config { root_dir: root.clone(), node_name: NODE.into() },
        Some(Arc::new(fake.clone())),
        vols.drivers().clone(),
    );
    assert_eq!(vols.set_up(&a, &claim_volume()).await.unwrap(), target_a);
    assert_eq!(fresh.set_up(&a, &claim_volume()).await.unwrap(), target_a);
    assert_eq!(plugin.methods_since(n), Vec::<String>::new());
    assert_eq!(paths::mount_count(&target_a), 1);
    assert_eq!(paths::mount_count(&staging), 1);

    // A second pod: published, not staged again.
    let n = plugin.calls().len();
    let target_b = vols.set_up(&pod("b"), &claim_volume()).await.unwrap();
    assert_eq!(plugin.methods_since(n), vec!["NodePublishVolume"]);
    assert_eq!(std::fs::read_to_string(target_b.join("hello")).unwrap(), "from a");

    // Stats through NodeGetVolumeStats.
    let stats = vols.volume_stats(target_a.parent().unwrap()).await.unwrap().expect("stats");
    assert!(stats.capacity_bytes.unwrap() > 0 && stats.inodes.unwrap() > 0, "{stats:?}");

    // Tear-down of a: unpublish only (b still uses the staged volume); by the fresh instance.
    let n = plugin.calls().len();
    fresh.tear_down("uid-a", &target_a).await.unwrap();
    assert_eq!(plugin.methods_since(n), vec!["NodeUnpublishVolume"]);
    assert!(!target_a.parent().unwrap().exists(), "pod a's volume dir removed");
    assert!(paths::is_mount_point(&staging));
    // b: unpublish, then unstage with the same paths.
    let n = plugin.calls().len();
    vols.tear_down("uid-b", target_b.parent().unwrap()).await.unwrap();
    assert_eq!(plugin.methods_since(n), vec!["NodeUnpublishVolume", "NodeUnstageVolume"]);
    let calls = plugin.calls();
    assert_eq!(call(&calls, "NodeUnpublishVolume")[1]["target_path"], target_b.display().to_string());
    assert_eq!(call(&calls, "NodeUnstageVolume")[0]["staging_target_path"], staging.display().to_string());
    assert!(!staging.parent().unwrap().exists(), "global dir removed");
    assert_eq!(plugin.mounts_under(), Vec::<PathBuf>::new());
    assert_eq!(std::fs::read_to_string(plugin.state().join("volumes/vol-1/hello")).unwrap(), "from a", "data kept");
    // Again: nothing left to do.
    vols.tear_down("uid-b", target_b.parent().unwrap()).await.unwrap();
    watcher.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tear_down_waits_for_the_driver_and_inline_volumes_publish_only() {
    if !is_root("tear_down_waits_for_the_driver_and_inline_volumes_publish_only") {
        return;
    }
    let (mut plugin, fake, vols, watcher) = setup(&["--no-stage"]).await;
    let inline = Volume {
        name: "scratch".into(),
        csi: Some(CSIVolumeSource { driver: DRIVER.into(), read_only: Some(true), ..Default::default() }),
        ..Default::default()
    };
    let start = plugin.calls().len();
    let target = vols.set_up(&pod("c"), &inline).await.unwrap();
    assert_eq!(target, plugin.root().join("pods/uid-c/volumes/kubernetes.io~csi/scratch/mount"));
    assert_eq!(plugin.methods_since(start), vec!["NodePublishVolume"]);
    let calls = plugin.calls();
    let publish = call(&calls, "NodePublishVolume")[0];
    assert_eq!(publish["readonly"], true);
    assert_eq!(publish["staging_target_path"], "");
    assert_eq!(publish["volume_id"], paths::ephemeral_volume_handle("uid-c", "scratch"));
    assert_eq!(publish["volume_context"]["csi.storage.k8s.io/ephemeral"], "true");
    assert!(std::fs::write(target.join("x"), "y").is_err(), "read-only mount");

    // The driver goes away: deregistered, and CSINode no longer lists it.
    plugin.stop();
    let drivers = vols.drivers().clone();
    let gone = async {
        while drivers.get(DRIVER).is_some() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), gone).await.expect("driver deregistered");
    assert!(fake.csi_node(NODE).unwrap().spec.drivers.is_empty());
    let e = vols.tear_down("uid-c", &target).await.unwrap_err().to_string();
    assert!(e.contains("not found in the list of registered CSI drivers"), "{e}");
    assert!(paths::is_mount_point(&target), "still mounted until the driver is back");
    // Back again: the retried tear-down finishes.
    plugin.start(&["--no-stage"]);
    vols.drivers().wait_for(DRIVER, Duration::from_secs(30)).await.expect("registered again");
    vols.tear_down("uid-c", &target).await.unwrap();
    assert!(!target.parent().unwrap().exists());
    assert_eq!(plugin.mounts_under(), Vec::<PathBuf>::new());
    watcher.abort();
}

#[tokio::test]
async fn set_up_names_the_missing_driver() {
    let dir = tempfile::tempdir().unwrap();
    let vols = CsiVolumes::new(
        csi::Config { root_dir: dir.path().to_path_buf(), node_name: NODE.into() },
        Some(Arc::new(api())),
        Drivers::new(),
    );
    let e = vols.set_up(&pod("a"), &claim_volume()).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "PVC default/claim (PV pv1, CSI driver hostpath.test.csi): \
         driver name hostpath.test.csi not found in the list of registered CSI drivers"
    );
    assert!(!Path::new(&dir.path().join("pods/uid-a")).exists(), "nothing written before the driver answers");
}
