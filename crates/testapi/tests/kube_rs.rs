//! kube-rs (as the kubelet uses it) accepts testapi as a cluster: kubeconfig with client certs, typed
//! CRUD, status patches, conflicts, leases and the runtime watcher.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use serde_json::json;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn client(dir: &std::path::Path, file: &str) -> kube::Client {
    let kc = Kubeconfig::read_from(dir.join(file)).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.unwrap();
    kube::Client::try_from(cfg).unwrap()
}

/// A testapi server in `d` with a kubeconfig for node `n1`, ready.
async fn serve(d: &std::path::Path) -> Server {
    let server = Server(
        Command::new(env!("CARGO_BIN_EXE_testapi"))
            .args(["serve", "--dir", d.to_str().unwrap(), "--listen", "127.0.0.1:0", "--kubelet-node", "n1"])
            .args(["--bookmark-seconds", "1"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !d.join("ready").exists() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    server
}

#[tokio::test(flavor = "multi_thread")]
async fn kube_rs_client_works() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _server = serve(d).await;
    let admin = client(d, "admin.kubeconfig").await;
    let kubelet = client(d, "kubelet-n1.kubeconfig").await;

    let nss: Api<Namespace> = Api::all(admin.clone());
    assert_eq!(nss.list(&ListParams::default()).await.unwrap().items.len(), 4);

    // The kubelet registers its node and patches its status (strategic merge by condition type).
    let nodes: Api<Node> = Api::all(kubelet.clone());
    let node: Node = serde_json::from_value(json!({"metadata": {"name": "n1"},
        "status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "MemoryPressure", "status": "False"}]}}))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    let patch = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
    let patched = nodes.patch_status("n1", &PatchParams::default(), &Patch::Strategic(&patch)).await.unwrap();
    let conds = patched.status.unwrap().conditions.unwrap();
    assert_eq!(conds.len(), 2);
    assert_eq!(conds.iter().find(|c| c.type_ == "Ready").unwrap().status, "True");

    // Leases: create, replace with a stale resourceVersion conflicts.
    let leases: Api<Lease> = Api::namespaced(kubelet.clone(), "kube-node-lease");
    let lease: Lease =
        serde_json::from_value(json!({"metadata": {"name": "n1"}, "spec": {"holderIdentity": "n1"}})).unwrap();
    let created = leases.create(&PostParams::default(), &lease).await.unwrap();
    let mut renewed = created.clone();
    renewed.spec.as_mut().unwrap().lease_duration_seconds = Some(40);
    leases.replace("n1", &PostParams::default(), &renewed).await.unwrap();
    match leases.replace("n1", &PostParams::default(), &renewed).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 409),
        other => panic!("expected a conflict, got {other:?}"),
    }

    // The runtime watcher (list + watch with bookmarks) sees a pod bound to the node.
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    let cfg = watcher::Config::default().fields("spec.nodeName=n1");
    let mut stream = watcher(Api::<Pod>::all(kubelet.clone()), cfg).boxed();
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]}}))
    .unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        let mut created = false;
        while let Some(ev) = stream.next().await {
            match ev.unwrap() {
                watcher::Event::InitDone if !created => {
                    pods.create(&PostParams::default(), &pod).await.unwrap();
                    created = true;
                }
                watcher::Event::Apply(p) | watcher::Event::InitApply(p) => return p,
                _ => {}
            }
        }
        panic!("watch ended");
    })
    .await
    .unwrap();
    assert_eq!(seen.metadata.name.as_deref(), Some("p"));

    // Graceful deletion, then the kubelet's final delete.
    let marked = pods.delete("p", &DeleteParams::default()).await.unwrap();
    assert!(marked.left().unwrap().metadata.deletion_timestamp.is_some());
    pods.delete("p", &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await.unwrap();
    assert!(pods.get_opt("p").await.unwrap().is_none());
}

/// The `ephemeralcontainers` subresource through kube-rs: GET, strategic PATCH and PUT change
/// only the ephemeral containers (a watch sees each as MODIFIED with a new resourceVersion); a
/// stale PUT conflicts; invalid, changed or removed ephemeral containers are refused (422).
#[tokio::test(flavor = "multi_thread")]
async fn ephemeral_containers_subresource() {
    let dir = tempfile::tempdir().unwrap();
    let _server = serve(dir.path()).await;
    let admin = client(dir.path(), "admin.kubeconfig").await;
    let pods: Api<Pod> = Api::namespaced(admin, "default");
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "web"},
        "spec": {"nodeName": "n1", "containers": [{"name": "app", "image": "busybox"}]}}))
    .unwrap();
    let created = pods.create(&PostParams::default(), &pod).await.unwrap();
    let rv0 = created.metadata.resource_version.clone().unwrap();
    let mut watch = pods.watch(&WatchParams::default().fields("metadata.name=web"), &rv0).await.unwrap().boxed();

    let got = pods.get_ephemeral_containers("web").await.unwrap();
    assert_eq!(got.metadata.uid, created.metadata.uid);
    let patch = json!({"spec": {"ephemeralContainers": [
        {"name": "debugger", "image": "busybox:1.36", "targetContainerName": "app", "command": ["sh"]}
    ]}});
    let patched =
        pods.patch_ephemeral_containers("web", &PatchParams::default(), &Patch::Strategic(&patch)).await.unwrap();
    let ecs = patched.spec.as_ref().unwrap().ephemeral_containers.clone().unwrap();
    assert_eq!((ecs.len(), ecs[0].target_container_name.as_deref()), (1, Some("app")));
    assert_eq!(ecs[0].termination_message_policy.as_deref(), Some("File"));
    let rv1 = patched.metadata.resource_version.clone().unwrap();
    assert_ne!(rv1, rv0);
    let modified = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(ev) = watch.next().await {
            if let WatchEvent::Modified(p) = ev.unwrap() {
                return p;
            }
        }
        panic!("watch ended");
    })
    .await
    .unwrap();
    assert_eq!(modified.metadata.resource_version.as_deref(), Some(rv1.as_str()));
    assert_eq!(modified.spec.unwrap().ephemeral_containers.map(|e| e.len()), Some(1));

    // PUT a whole pod: a second ephemeral container is added, the image change is ignored.
    let mut next = patched.clone();
    next.spec.as_mut().unwrap().containers[0].image = Some("nginx".into());
    let mut shell = ecs[0].clone();
    shell.name = "shell".into();
    shell.target_container_name = None;
    next.spec.as_mut().unwrap().ephemeral_containers.as_mut().unwrap().push(shell);
    let put = pods.replace_ephemeral_containers("web", &PostParams::default(), &next).await.unwrap();
    assert_eq!(put.spec.as_ref().unwrap().ephemeral_containers.as_ref().map(Vec::len), Some(2));
    assert_eq!(put.spec.as_ref().unwrap().containers[0].image.as_deref(), Some("busybox"));
    // The same PUT again carries a stale resourceVersion.
    match pods.replace_ephemeral_containers("web", &PostParams::default(), &next).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 409),
        other => panic!("expected a conflict, got {other:?}"),
    }

    let refused = |r: Result<Pod, kube::Error>| match r {
        Err(kube::Error::Api(s)) => {
            assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
            s.message
        }
        other => panic!("expected 422, got {other:?}"),
    };
    let probe = json!({"spec": {"ephemeralContainers": [
        {"name": "probe", "image": "busybox", "ports": [{"containerPort": 80}]}
    ]}});
    let m = refused(pods.patch_ephemeral_containers("web", &PatchParams::default(), &Patch::Strategic(&probe)).await);
    assert_eq!(
        m,
        "Pod \"web\" is invalid: spec.ephemeralContainers[2].ports: Forbidden: cannot be set for an Ephemeral Container"
    );
    let mut removed = put.clone();
    removed.spec.as_mut().unwrap().ephemeral_containers.as_mut().unwrap().pop();
    let m = refused(pods.replace_ephemeral_containers("web", &PostParams::default(), &removed).await);
    assert!(m.contains("existing ephemeral containers \"shell\" may not be removed"), "{m}");
    let pods_now = pods.get("web").await.unwrap();
    assert_eq!(pods_now.metadata.resource_version, put.metadata.resource_version, "refusals change nothing");
    // Pods are not created with ephemeral containers.
    let mut fresh = put.clone();
    fresh.metadata = kube::api::ObjectMeta { name: Some("fresh".into()), ..Default::default() };
    let m = refused(pods.create(&PostParams::default(), &fresh).await);
    assert_eq!(m, "Pod \"fresh\" is invalid: spec.ephemeralContainers: Forbidden: cannot be set on create");
}
