//! Hollow nodes against testapi (the project's in-memory API server, a real HTTPS server and
//! kube-rs clients): three nodes in this process register Ready with a renewed Lease, run the
//! pods bound to them on the fake runtime (a readiness probe included) and delete them gracefully.

use k8s_openapi::api::core::v1::{Node, Pod};
use kubelet::api::kube_client::KubeApi;
use kubelet::api::{DynApi, LEASE_NAMESPACE};
use kubelet::cri::DynRuntime;
use kubelet::cri::fake::FakeRuntime;
use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const NODES: usize = 3;
const PODS_PER_NODE: usize = 2;

/// The testapi binary `cargo test --workspace` builds next to the test binaries.
fn testapi_bin() -> Option<PathBuf> {
    let bin = std::env::current_exe().ok()?.parent()?.parent()?.join("testapi");
    if bin.exists() {
        return Some(bin);
    }
    if std::env::var("KUBELET_E2E_REQUIRED").is_ok_and(|v| v == "1") {
        panic!("{} missing: run the tests with `cargo test --workspace`", bin.display());
    }
    eprintln!("skipped: {} missing (run the tests with `cargo test --workspace`)", bin.display());
    None
}

struct TestApi {
    child: Child,
    dir: tempfile::TempDir,
}

impl TestApi {
    fn start(bin: &PathBuf) -> Self {
        let dir = tempfile::Builder::new().prefix("testapi-hollow-").tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("testapi.log")).unwrap();
        let child = Command::new(bin)
            .args(["serve", "--dir"])
            .arg(dir.path())
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start testapi");
        let t = Self { child, dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !t.dir.path().join("ready").exists() {
            assert!(Instant::now() < deadline, "testapi did not become ready");
            std::thread::sleep(Duration::from_millis(20));
        }
        t
    }

    fn admin(&self) -> PathBuf {
        self.dir.path().join("admin.kubeconfig")
    }
}

impl Drop for TestApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` until it returns Some, failing after 60 s with `what`.
async fn eventually<T, F: Future<Output = Option<T>>>(what: &str, mut f: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn pod(name: &str, node: &str, readiness: bool) -> Pod {
    let mut container = serde_json::json!({"name": "app", "image": "registry.example/app:1"});
    if readiness {
        container["readinessProbe"] = serde_json::json!({"exec": {"command": ["true"]}, "periodSeconds": 1});
    }
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": node, "containers": [container]}
    }))
    .unwrap()
}

fn ready(node: &Node) -> Option<String> {
    let c = node.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready")?;
    Some(c.status.clone())
}

fn pod_condition(p: &Pod, ty: &str) -> Option<String> {
    Some(p.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == ty)?.status.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hollow_nodes_register_renew_leases_and_run_their_pods() {
    let Some(bin) = testapi_bin() else { return };
    let server = TestApi::start(&bin);
    let roots = tempfile::tempdir().unwrap();
    let admin: DynApi = Arc::new(KubeApi::from_kubeconfig(&server.admin(), 1000.0, 1000).await.unwrap());

    let mut nodes = Vec::new();
    for i in 0..NODES {
        let name = format!("hollow-{i}");
        let fake = FakeRuntime::without_call_log();
        fake.open_registry();
        let runtime: DynRuntime = Arc::new(fake);
        let api: DynApi = Arc::new(KubeApi::from_kubeconfig(&server.admin(), 50.0, 100).await.unwrap());
        let mut cfg = kubelet::hollow::Config::new(name.clone(), roots.path().join(&name));
        cfg.status_update = Duration::from_millis(500);
        cfg.lease_duration_secs = 2;
        nodes.push(kubelet::hollow::start(cfg, runtime, api).await.unwrap());
    }

    for node in &nodes {
        let n = &node.name;
        let st = eventually(&format!("{n} registered with a Ready condition"), || async {
            ready(&admin.get_node(n).await.ok()??)
        })
        .await;
        assert_eq!(st, "True", "{n} is not Ready");
        let lease = eventually(&format!("lease of {n}"), || async { admin.get_lease(n).await.ok()? }).await;
        assert_eq!(lease.metadata.namespace.as_deref(), Some(LEASE_NAMESPACE));
        let spec = lease.spec.unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some(n.as_str()));
        let first = spec.renew_time.unwrap();
        eventually(&format!("lease of {n} renewed"), || async {
            admin.get_lease(n).await.ok()??.spec?.renew_time.filter(|t| *t != first)
        })
        .await;
    }

    let mut names = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        for j in 0..PODS_PER_NODE {
            let name = format!("p-{i}-{j}");
            admin.create_pod(&pod(&name, &node.name, j == 0)).await.unwrap();
            names.push((name, node.name.clone(), j == 0));
        }
    }
    for (name, node, probed) in &names {
        let p = eventually(&format!("pod {name} Running"), || async {
            let p = admin.get_pod("default", name).await.ok()??;
            (p.status.as_ref()?.phase.as_deref() == Some("Running")).then_some(p)
        })
        .await;
        assert_eq!(p.spec.as_ref().unwrap().node_name.as_deref(), Some(node.as_str()));
        if *probed {
            // The readiness probe (exec on the fake runtime) passes: Ready follows.
            eventually(&format!("pod {name} Ready"), || async {
                let p = admin.get_pod("default", name).await.ok()??;
                (pod_condition(&p, "Ready")? == "True").then_some(())
            })
            .await;
        }
        // The node's own status manager has it too.
        let local = nodes.iter().find(|n| &n.name == node).unwrap();
        assert!(local.statuses.count(|s| s.phase.as_deref() == Some("Running")) >= 1);
    }

    // Graceful deletion: the kubelet kills the containers and deletes the object (grace 0).
    let (gone, _, _) = &names[0];
    admin.delete_pod("default", gone, 30, None).await.unwrap();
    eventually(&format!("pod {gone} deleted by its kubelet"), || async {
        admin.get_pod("default", gone).await.ok()?.is_none().then_some(())
    })
    .await;

    for n in nodes {
        n.stop();
    }
}
