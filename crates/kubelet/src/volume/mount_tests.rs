//! Mounting logic on the recording [`FakeMounter`]: what is mounted where (tmpfs sizes, subPath
//! binds), that teardown takes off everything set-up mounted and removes the directories, and
//! that a failed mount leaves nothing behind. No privilege needed.

use super::mount::{Call, FakeMounter, Mounter};
use super::plugins::{self, Ctx, Kind};
use super::projected::Tokens;
use super::*;
use crate::api::fake::FakeApi;
use crate::clock::SystemClock;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use std::collections::BTreeMap;

const MI: i64 = 1 << 20;
const EPERM: &str = "Operation not permitted (os error 1)";

fn pod(volumes: serde_json::Value) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": "ns", "uid": "u1"},
        "spec": {"containers": [{"name": "c", "image": "i"}], "volumes": volumes}
    }))
    .unwrap()
}

fn volumes(p: &Pod) -> Vec<Volume> {
    p.spec.as_ref().unwrap().volumes.clone().unwrap()
}

/// A temporary root (canonical, as the mount table has it) and a node with 1 GiB allocatable.
struct Env {
    _dir: tempfile::TempDir,
    root: PathBuf,
    api: DynApi,
    objects: crate::api::objects::Objects,
    tokens: Tokens,
    node: NodeFacts,
    fake: Arc<FakeMounter>,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let fake_api = FakeApi::new();
        let mut s = Secret::default();
        s.metadata.name = Some("creds".into());
        s.metadata.namespace = Some("ns".into());
        s.data = Some(BTreeMap::from([("password".into(), ByteString(b"hunter2".to_vec()))]));
        fake_api.put_secret(s);
        let node = NodeFacts { allocatable_memory: Some(1024 * MI), ..Default::default() };
        let api: DynApi = Arc::new(fake_api);
        let objects = crate::api::objects::Objects::new(api.clone());
        Env { _dir: dir, root, api, objects, tokens: Tokens::default(), node, fake: FakeMounter::new() }
    }

    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            root: &self.root,
            api: Some(&self.api),
            objects: Some(&self.objects),
            tokens: &self.tokens,
            node: &self.node,
            csi: None,
            mounter: &*self.fake,
            now: SystemTime::now(),
        }
    }

    fn volume_dir(&self, plugin: &str, name: &str) -> PathBuf {
        plugins::volume_dir(&self.root, "u1", plugin, name)
    }
}

#[tokio::test]
async fn a_memory_empty_dir_is_a_tmpfs_of_its_size_limit_and_teardown_unmounts_and_removes_it() {
    let env = Env::new();
    let p = pod(serde_json::json!([{"name": "cache", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}]));
    let v = &volumes(&p)[0];
    let path = plugins::set_up(&env.ctx(), &p, v).await.unwrap();
    let dir = env.volume_dir("kubernetes.io~empty-dir", "cache");
    assert_eq!(path, dir);
    assert_eq!(env.fake.calls(), [Call::Tmpfs { target: dir.clone(), size: Some(64 * MI) }]);
    assert_eq!(env.fake.mounted(), std::slice::from_ref(&dir));
    // Set up again (a restarted kubelet, a refresh): the tmpfs is kept, not stacked.
    plugins::set_up(&env.ctx(), &p, v).await.unwrap();
    assert_eq!(env.fake.calls().len(), 1);

    std::fs::write(dir.join("f"), "x").unwrap();
    plugins::tear_down(&env.ctx(), "u1", Kind::EmptyDir, &dir).await.unwrap();
    assert_eq!(env.fake.calls()[1..], [Call::Unmount(dir.clone())]);
    assert!(env.fake.mounted().is_empty());
    assert!(!dir.exists());
}

#[tokio::test]
async fn a_disk_empty_dir_mounts_nothing() {
    let env = Env::new();
    let p = pod(serde_json::json!([{"name": "scratch", "emptyDir": {"sizeLimit": "64Mi"}}]));
    let dir = plugins::set_up(&env.ctx(), &p, &volumes(&p)[0]).await.unwrap();
    assert!(dir.is_dir());
    assert!(env.fake.calls().is_empty());
}

#[tokio::test]
async fn a_secret_volume_is_written_on_a_tmpfs_sized_to_the_node_and_torn_down() {
    let env = Env::new();
    let p = pod(serde_json::json!([{"name": "creds", "secret": {"secretName": "creds"}}]));
    let dir = plugins::set_up(&env.ctx(), &p, &volumes(&p)[0]).await.unwrap();
    assert_eq!(dir, env.volume_dir("kubernetes.io~secret", "creds"));
    // No pod memory limit and no sizeLimit: node allocatable.
    assert_eq!(env.fake.calls(), [Call::Tmpfs { target: dir.clone(), size: Some(1024 * MI) }]);
    assert_eq!(std::fs::read_to_string(dir.join("password")).unwrap(), "hunter2");

    plugins::tear_down(&env.ctx(), "u1", Kind::Secret, &dir).await.unwrap();
    assert_eq!(env.fake.calls().last(), Some(&Call::Unmount(dir.clone())));
    assert!(env.fake.mounted().is_empty());
    assert!(!dir.exists());
}

#[tokio::test]
async fn teardown_refuses_to_remove_a_directory_with_a_mount_below_it() {
    let env = Env::new();
    let p = pod(serde_json::json!([{"name": "scratch", "emptyDir": {}}]));
    let dir = plugins::set_up(&env.ctx(), &p, &volumes(&p)[0]).await.unwrap();
    std::fs::create_dir(dir.join("inner")).unwrap();
    env.fake.mount_tmpfs(&dir.join("inner"), None).unwrap();
    let e = plugins::tear_down(&env.ctx(), "u1", Kind::EmptyDir, &dir).await.unwrap_err();
    assert_eq!(e.to_string(), format!("{} is still mounted", dir.join("inner").display()));
    assert!(dir.join("inner").is_dir(), "nothing removed");
}

#[tokio::test]
async fn a_failed_tmpfs_mount_leaves_no_directory_and_no_mount() {
    let env = Env::new();
    env.fake.fail_mounts(Some(libc::EPERM));
    let p = pod(serde_json::json!([{"name": "cache", "emptyDir": {"medium": "Memory"}},
        {"name": "creds", "secret": {"secretName": "creds"}}]));
    for (v, plugin) in volumes(&p).iter().zip(["kubernetes.io~empty-dir", "kubernetes.io~secret"]) {
        let dir = env.volume_dir(plugin, &v.name);
        let e = plugins::set_up(&env.ctx(), &p, v).await.unwrap_err();
        assert_eq!(e.to_string(), format!("mounting tmpfs on {}: {EPERM}", dir.display()));
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
    assert!(env.fake.calls().is_empty());
    assert!(env.fake.mounted().is_empty());
}

fn sub_request<'a>(pod_dir: &'a Path, vol: &'a Path, index: usize) -> subpath::Request<'a> {
    subpath::Request { pod_dir, volume: "v", volume_path: vol, sub_path: "data/conf", container: "c", index }
}

#[test]
fn a_sub_path_is_bind_mounted_from_inside_the_volume_once_and_cleaned_up() {
    let env = Env::new();
    let vol = env.root.join("vol");
    std::fs::create_dir_all(vol.join("data")).unwrap();
    let pod_dir = plugins::pod_dir(&env.root, "u1");
    let target = subpath::prepare_with(&*env.fake, &sub_request(&pod_dir, &vol, 2)).unwrap();
    assert_eq!(target, pod_dir.join("volume-subpaths/v/c/2"));
    assert!(vol.join("data/conf").is_dir(), "the missing directory is created in the volume");
    assert!(target.is_dir(), "a directory target for a directory");
    assert_eq!(env.fake.calls(), [Call::Bind { source: vol.join("data/conf"), target: target.clone() }]);

    // A container restart prepares again: the earlier bind comes off first, nothing stacks.
    subpath::prepare_with(&*env.fake, &sub_request(&pod_dir, &vol, 2)).unwrap();
    assert_eq!(env.fake.calls()[1], Call::Unmount(target.clone()));
    assert_eq!(env.fake.mounted(), std::slice::from_ref(&target));

    subpath::clean(&*env.fake, &pod_dir, Some("v")).unwrap();
    assert_eq!(env.fake.calls().last(), Some(&Call::Unmount(target.clone())));
    assert!(env.fake.mounted().is_empty());
    assert!(!pod_dir.join("volume-subpaths/v").exists());
    assert!(vol.join("data/conf").is_dir(), "the volume is untouched");
}

#[test]
fn a_failed_sub_path_bind_leaves_no_target_behind() {
    let env = Env::new();
    let vol = env.root.join("vol");
    std::fs::create_dir_all(&vol).unwrap();
    std::fs::write(vol.join("file"), "x").unwrap();
    let pod_dir = plugins::pod_dir(&env.root, "u1");
    env.fake.fail_mounts(Some(libc::EPERM));
    let req = subpath::Request { sub_path: "file", ..sub_request(&pod_dir, &vol, 0) };
    let e = subpath::prepare_with(&*env.fake, &req).unwrap_err();
    let target = pod_dir.join("volume-subpaths/v/c/0");
    assert_eq!(
        e.to_string(),
        format!("subPath \"file\" of volume \"v\": bind-mounting onto {}: {EPERM}", target.display())
    );
    assert!(!pod_dir.join("volume-subpaths").exists());
    assert!(env.fake.mounted().is_empty());
}

fn manager(env: &Env) -> VolumeManager {
    let mut cfg = Config::new(env.root.clone(), Arc::new(SystemClock));
    cfg.node = env.node.clone();
    cfg.mounter = env.fake.clone();
    VolumeManager::spawn(cfg)
}

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn the_manager_unmounts_everything_it_mounted_when_the_pod_goes() {
    let env = Env::new();
    let m = manager(&env);
    let p = pod(serde_json::json!([{"name": "cache", "emptyDir": {"medium": "Memory", "sizeLimit": "8Mi"}},
        {"name": "info", "downwardAPI": {"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}}]));
    let vols = m.wait_ready(&p, WAIT).await.unwrap();
    let cache = env.volume_dir("kubernetes.io~empty-dir", "cache");
    let info = env.volume_dir("kubernetes.io~downward-api", "info");
    assert_eq!(vols.host_path("cache"), Some(cache.as_path()));
    assert_eq!(std::fs::read_to_string(info.join("name")).unwrap(), "web");
    let mut mounted = env.fake.mounted();
    mounted.sort();
    assert_eq!(mounted, [info.clone(), cache.clone()]);
    assert!(env.fake.calls().contains(&Call::Tmpfs { target: cache.clone(), size: Some(8 * MI) }));
    // A subPath of the cache, prepared for a container, goes with the pod too.
    let pod_dir = plugins::pod_dir(&env.root, "u1");
    let req = subpath::Request {
        pod_dir: &pod_dir,
        volume: "cache",
        volume_path: &cache,
        sub_path: "sub",
        container: "c",
        index: 0,
    };
    let bind = subpath::prepare_with(&*env.fake, &req).unwrap();

    m.tear_down_pod(&p, WAIT).await.unwrap();
    let unmounted: Vec<PathBuf> =
        env.fake.calls().into_iter().filter_map(|c| if let Call::Unmount(p) = c { Some(p) } else { None }).collect();
    for p in [&bind, &cache, &info] {
        assert!(unmounted.contains(p), "{} not unmounted: {unmounted:?}", p.display());
    }
    assert!(env.fake.mounted().is_empty());
    assert!(!cache.exists() && !info.exists() && !pod_dir.join("volume-subpaths").exists());
}

#[tokio::test]
async fn a_failed_mount_is_reported_and_leaves_nothing_behind() {
    let env = Env::new();
    env.fake.fail_mounts(Some(libc::EPERM));
    let m = manager(&env);
    let p = pod(serde_json::json!([{"name": "cache", "emptyDir": {"medium": "Memory"}}]));
    let e = m.wait_ready(&p, WAIT).await.unwrap_err();
    let dir = env.volume_dir("kubernetes.io~empty-dir", "cache");
    assert_eq!(
        e.message,
        format!(
            "Unable to attach or mount volumes: unmounted volumes=[cache]: MountVolume.SetUp failed for volume \"cache\" : mounting tmpfs on {}: {EPERM}",
            dir.display()
        )
    );
    assert!(!dir.exists());
    assert!(env.fake.mounted().is_empty());
    m.tear_down_pod(&p, WAIT).await.unwrap();
    assert!(env.fake.calls().is_empty(), "nothing to unmount");
}
