//! kube-rs (as the kubelet uses it) accepts testapi as a cluster: kubeconfig with client certs, typed
//! CRUD, status patches, conflicts, leases and the runtime watcher.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
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

#[tokio::test(flavor = "multi_thread")]
async fn kube_rs_client_works() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _server = Server(
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
