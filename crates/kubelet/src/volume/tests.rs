//! The manager end to end on the fake API and a temporary root directory (disk-backed volumes,
//! so no mount privilege is needed).

use super::*;
use crate::api::fake::FakeApi;
use crate::clock::SystemClock;
use k8s_openapi::api::core::v1::ConfigMap;
use std::collections::BTreeMap;

fn config_map(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name.into());
    cm.metadata.namespace = Some("ns".into());
    cm.data = Some(data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>());
    cm
}

fn pod(uid: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": "ns", "uid": uid},
        "spec": {"containers": [{"name": "c", "image": "i"}], "volumes": [
            {"name": "config", "configMap": {"name": "settings"}},
            {"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}}
        ]}
    }))
    .unwrap()
}

fn manager(root: &Path, fake: &FakeApi) -> VolumeManager {
    let mut cfg = Config::new(root.to_path_buf(), Arc::new(SystemClock));
    cfg.api = Some(Arc::new(fake.clone()));
    cfg.objects = Some(crate::api::objects::Objects::new(Arc::new(fake.clone())));
    cfg.resync = Duration::from_secs(1);
    VolumeManager::spawn(cfg)
}

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_missing_config_map_keeps_the_pod_waiting_until_it_exists() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeApi::new();
    let m = manager(dir.path(), &fake);
    let p = pod("u1");
    let e = m.wait_ready(&p, WAIT).await.unwrap_err();
    assert_eq!(
        e.message,
        "Unable to attach or mount volumes: unmounted volumes=[config]: MountVolume.SetUp failed for volume \"config\" : configmap \"settings\" not found"
    );
    assert!(e.retry_at.is_some());
    fake.put_config_map(config_map("settings", &[("color", "blue")]));
    let vols = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match m.wait_ready(&p, WAIT).await {
                Ok(v) => return v,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await
    .unwrap();
    let cfg = vols.host_path("config").unwrap();
    assert_eq!(cfg, dir.path().join("pods/u1/volumes/kubernetes.io~configmap/config"));
    assert_eq!(std::fs::read_to_string(cfg.join("color")).unwrap(), "blue");
    assert!(vols.host_path("scratch").unwrap().is_dir());
    let eds = m.empty_dirs();
    assert_eq!(eds.len(), 1);
    assert_eq!((eds[0].volume.as_str(), eds[0].size_limit, eds[0].memory), ("scratch", Some(1 << 30), false));
    m.tear_down_pod(&p, WAIT).await.unwrap();
    assert!(!dir.path().join("pods/u1/volumes/kubernetes.io~configmap/config").exists());
    assert!(m.empty_dirs().is_empty());
}

#[tokio::test]
async fn config_map_updates_reach_the_volume_on_resync() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeApi::new();
    fake.put_config_map(config_map("settings", &[("color", "blue")]));
    let m = manager(dir.path(), &fake);
    let p = pod("u1");
    let vols = m.wait_ready(&p, WAIT).await.unwrap();
    let file = vols.host_path("config").unwrap().join("color");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "blue");
    fake.put_config_map(config_map("settings", &[("color", "green")]));
    let changed = tokio::time::timeout(Duration::from_secs(10), async {
        while std::fs::read_to_string(&file).unwrap_or_default() != "green" {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(changed.is_ok(), "the update was written");
    m.tear_down_pod(&p, WAIT).await.unwrap();
}

#[tokio::test]
async fn a_restarted_manager_reconstructs_and_tears_down_what_is_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeApi::new();
    fake.put_config_map(config_map("settings", &[("color", "blue")]));
    let first = manager(dir.path(), &fake);
    first.wait_ready(&pod("u1"), WAIT).await.unwrap();
    first.wait_ready(&pod("u2"), WAIT).await.unwrap();
    std::fs::write(dir.path().join("pods/u1/volumes/kubernetes.io~empty-dir/scratch/data"), "keep").unwrap();
    drop(first);

    // A new kubelet: both pods' volumes count as set up, their content is kept.
    let second = manager(dir.path(), &fake);
    let vols = second.wait_ready(&pod("u1"), WAIT).await.unwrap();
    let data = vols.host_path("scratch").unwrap().join("data");
    assert_eq!(std::fs::read_to_string(data).unwrap(), "keep");
    // u2 was deleted while the kubelet was down: housekeeping removes it.
    second.cleanup_orphans(&HashSet::from(["u1".to_string()]));
    let gone = tokio::time::timeout(Duration::from_secs(10), async {
        while dir.path().join("pods/u2").exists() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(gone.is_ok(), "orphan pod directory removed");
    assert!(dir.path().join("pods/u1/volumes").exists());
    second.tear_down_pod(&pod("u1"), WAIT).await.unwrap();
    assert!(!dir.path().join("pods/u1/volumes/kubernetes.io~configmap/config").exists());
}

/// A CSI plugin whose teardown fails a given number of times.
struct FlakyCsi {
    root: PathBuf,
    failures: std::sync::atomic::AtomicU32,
}

#[async_trait::async_trait]
impl CsiPlugin for FlakyCsi {
    async fn set_up(&self, pod: &Pod, _volume: &Volume) -> csi::Result<PathBuf> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let dir = plugins::volume_dir(&self.root, &uid, plugins::CSI_DIR, "pv-1").join("mount");
        std::fs::create_dir_all(&dir).map_err(|source| csi::Error::Io {
            what: "creating",
            path: dir.clone(),
            source,
        })?;
        Ok(dir)
    }

    async fn tear_down(&self, _pod_uid: &str, volume_dir: &Path) -> csi::Result<()> {
        use std::sync::atomic::Ordering;
        if self.failures.load(Ordering::SeqCst) > 0 {
            self.failures.fetch_sub(1, Ordering::SeqCst);
            let status = tonic::Status::unavailable("device or resource busy");
            return Err(csi::client::Error::Rpc { op: "NodeUnpublishVolume".into(), status }.into());
        }
        let removed = std::fs::remove_dir_all(volume_dir);
        removed.map_err(|source| csi::Error::Io { what: "removing", path: volume_dir.to_path_buf(), source })
    }
}

#[tokio::test]
async fn a_failing_teardown_is_reported_and_retried_until_it_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeApi::new();
    let mut cfg = Config::new(dir.path().to_path_buf(), Arc::new(SystemClock));
    let (rec, events) = Recorder::new(Arc::new(fake.clone()), "n".into(), 1000.0, 1000);
    tokio::spawn(events.run(tokio_util::sync::CancellationToken::new()));
    cfg.events = rec;
    let csi = FlakyCsi { root: dir.path().to_path_buf(), failures: 2.into() };
    cfg.csi = Some(Arc::new(csi));
    let m = VolumeManager::spawn(cfg);
    let p: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "db", "namespace": "ns", "uid": "u1"},
        "spec": {"containers": [{"name": "c", "image": "i"}], "volumes": [
            {"name": "data", "persistentVolumeClaim": {"claimName": "claim"}}]}
    }))
    .unwrap();
    let vols = m.wait_ready(&p, WAIT).await.unwrap();
    assert_eq!(vols.host_path("data").unwrap(), dir.path().join("pods/u1/volumes/kubernetes.io~csi/pv-1/mount"));
    let e = m.tear_down_pod(&p, WAIT).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "UnmountVolume.TearDown failed for volume \"data\" : NodeUnpublishVolume failed: rpc error: code = Unavailable desc = device or resource busy"
    );
    // The worker calls again after its own backoff; the manager has been retrying meanwhile.
    let done = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if m.tear_down_pod(&p, WAIT).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(done.is_ok());
    assert!(!dir.path().join("pods/u1/volumes/kubernetes.io~csi/pv-1").exists());
    let reasons = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let evs = fake.events();
            if evs.iter().any(|e| e.reason.as_deref() == Some("FailedUnMount")) {
                return evs;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap();
    let ev = reasons.iter().find(|e| e.reason.as_deref() == Some("FailedUnMount")).unwrap();
    assert_eq!(ev.involved_object.name.as_deref(), Some("db"));
    assert!(ev.message.as_deref().unwrap_or_default().contains("volume \"data\""));
}
