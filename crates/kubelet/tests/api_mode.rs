//! API-server mode on the in-memory API and the fake runtime: registration, node status, lease,
//! pods from the API (status, graceful deletion), mirror pods, an API outage.

use k8s_openapi::api::core::v1::Pod;
use kubelet::api::LEASE_NAMESPACE;
use kubelet::api::fake::FakeApi;
use kubelet::clock::FakeClock;
use kubelet::composition::{self, Identity};
use kubelet::cri::fake::FakeRuntime;
use kubelet::sources::manifest::{self, Origin};
use kubelet::sources::{Snapshot, SourceKind};
use kubelet::status_manager::Statuses;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const NODE: &str = "n1";

struct Cluster {
    api: FakeApi,
    rt: FakeRuntime,
    statuses: Statuses,
    files: mpsc::Sender<Snapshot>,
    running: composition::Running,
    dir: Arc<tempfile::TempDir>,
}

/// The composed node in API mode on the fake API and runtime, short periods; static pods fed by
/// hand as the file source.
async fn start() -> Cluster {
    let rt = FakeRuntime::new();
    rt.add_image("img:1");
    start_on(FakeApi::new(), rt, Arc::new(tempfile::tempdir().unwrap())).await
}

/// The node on a given API, runtime and root directory (a restarted kubelet keeps all three).
async fn start_on(api: FakeApi, rt: FakeRuntime, dir: Arc<tempfile::TempDir>) -> Cluster {
    let id = Identity { node_name: NODE.into(), node_ip: Some("192.0.2.10".into()) };
    let mut cfg = composition::Config::in_process(id, dir.path().join("root")).unwrap();
    cfg.pleg.as_mut().unwrap().relist_period = Duration::from_millis(100);
    cfg.sources.fed = HashSet::from([SourceKind::File]);
    cfg.housekeeping = Duration::from_millis(200);
    cfg.node_status.labels = BTreeMap::from([("team".to_string(), "a".to_string())]);
    cfg.node_status.taints = vec![k8s_openapi::api::core::v1::Taint {
        key: "example.com/t".into(),
        effect: "NoSchedule".into(),
        ..Default::default()
    }];
    cfg.node_status.update_frequency = Duration::from_millis(200);
    cfg.node_status.root_dir = dir.path().to_path_buf();
    cfg.node_status.reserved_memory = 100 << 20;
    cfg.lease.duration_secs = 1;
    cfg.status_sync.resync = Duration::from_millis(300);
    let parts = composition::Parts {
        runtime: Arc::new(rt.clone()),
        api: Some(Arc::new(api.clone())),
        clock: Arc::new(FakeClock::new(SystemTime::now())),
        metrics: Default::default(),
    };
    let running = composition::build(cfg, parts).await.unwrap().spawn(CancellationToken::new()).await.unwrap();
    Cluster { api, rt, statuses: running.statuses.clone(), files: running.snapshots(), running, dir }
}

async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    for _ in 0..1500 {
        if let Some(v) = f() {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

fn api_pod(name: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
        "spec": {"nodeName": NODE, "containers": [{"name": "app", "image": "img:1"}]}
    }))
    .unwrap()
}

fn phase(p: &Pod) -> Option<&str> {
    p.status.as_ref()?.phase.as_deref()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_registers_reports_ready_and_renews_its_lease() {
    let c = start().await;
    // Ready once the PLEG has relisted (before that the node is NotReady, as upstream's is while
    // its PLEG "has yet to be successful"): wait for it rather than take the first status.
    let node = eventually("node registered and Ready", || {
        c.api.node(NODE).filter(|n| {
            let conditions = n.status.as_ref().and_then(|s| s.conditions.as_ref());
            conditions.into_iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True")
        })
    })
    .await;
    let labels = node.metadata.labels.clone().unwrap();
    assert_eq!(labels.get("kubernetes.io/hostname").map(String::as_str), Some(NODE));
    assert_eq!(labels.get("kubernetes.io/os").map(String::as_str), Some("linux"));
    assert_eq!(labels.get("team").map(String::as_str), Some("a"));
    assert_eq!(node.spec.unwrap().taints.unwrap()[0].key, "example.com/t");
    let st = node.status.unwrap();
    let ready = st.conditions.unwrap().into_iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_deref()), ("True", Some("KubeletReady")));
    assert_eq!(st.capacity.unwrap()["pods"].0, "110");
    assert_eq!(st.daemon_endpoints.unwrap().kubelet_endpoint.unwrap().port, 10250);
    assert_eq!(st.node_info.unwrap().container_runtime_version, "fake://0.0.0");

    // The owner reference is added once the Node exists (the lease may come first).
    let lease =
        eventually("lease owned by the node", || c.api.lease(NODE).filter(|l| l.metadata.owner_references.is_some()))
            .await;
    assert_eq!(lease.metadata.namespace.as_deref(), Some(LEASE_NAMESPACE));
    assert_eq!(lease.metadata.owner_references.unwrap()[0].kind, "Node");
    let first = lease.spec.unwrap().renew_time.unwrap();
    eventually("lease renewed", || c.api.lease(NODE)?.spec?.renew_time.filter(|t| *t != first)).await;

    // Someone deletes the Node: the kubelet registers it again.
    c.api.delete_node(NODE);
    eventually("re-registered", || c.api.node(NODE).filter(|n| n.status.is_some())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_pods_run_report_status_and_are_deleted_gracefully() {
    let c = start().await;
    c.api.put_pod(api_pod("web"));
    eventually("Running in the API", || (phase(&c.api.pod("default", "web")?)? == "Running").then_some(())).await;
    let p = c.api.pod("default", "web").unwrap();
    assert!(p.status.as_ref().unwrap().pod_ip.is_some());
    // kubectl delete: deletionTimestamp and a grace period.
    let mut deleting = p.clone();
    deleting.metadata.deletion_timestamp = Some(kubelet::meta::time(SystemTime::now()));
    deleting.metadata.deletion_grace_period_seconds = Some(5);
    c.api.put_pod(deleting);
    eventually("object deleted after the containers", || c.api.pod("default", "web").is_none().then_some(())).await;
    // The lifecycle as events on the pod, in order.
    let reasons = eventually("events", || {
        let r: Vec<String> = c
            .api
            .events()
            .into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some("web"))
            .filter_map(|e| e.reason)
            .collect();
        r.contains(&"Killing".to_string()).then_some(r)
    })
    .await;
    assert_eq!(reasons, vec!["Pulled", "Created", "Started", "Killing"]);
    let started = c.api.events().into_iter().find(|e| e.reason.as_deref() == Some("Started")).unwrap();
    assert_eq!(started.involved_object.field_path.as_deref(), Some("spec.containers{app}"));
    assert_eq!(started.source.unwrap().host.as_deref(), Some(NODE));
    assert_eq!(c.rt.sandbox_count(), 0);
    assert!(c.api.calls().contains(&"delete_pod".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_pods_get_mirror_pods_that_come_back() {
    let c = start().await;
    let v = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "etcd"},
        "spec": {"containers": [{"name": "app", "image": "img:1"}]}});
    let origin = Origin { kind: SourceKind::File, location: "/m/etcd.yaml".into() };
    let pod = manifest::prepare(serde_json::from_value(v).unwrap(), &origin, NODE, "t").unwrap();
    let hash = pod.metadata.uid.clone().unwrap();
    c.files.send(Snapshot { source: SourceKind::File, pods: vec![pod] }).await.unwrap();
    let name = format!("etcd-{NODE}");
    let mirror = eventually("mirror pod", || c.api.pod("default", &name)).await;
    let ann = mirror.metadata.annotations.clone().unwrap();
    assert_eq!(ann.get("kubernetes.io/config.mirror"), Some(&hash));
    let owner = &mirror.metadata.owner_references.clone().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str(), owner.controller), ("Node", NODE, Some(true)));
    eventually("mirror status Running", || (phase(&c.api.pod("default", &name)?)? == "Running").then_some(())).await;
    // The mirror pod is not run a second time: one sandbox.
    assert_eq!(c.rt.sandbox_count(), 1);
    // kubectl delete of the mirror: it comes back.
    c.api.remove_pod("default", &name);
    eventually("mirror recreated", || c.api.pod("default", &name)).await;
    assert_eq!(c.rt.sandbox_count(), 1, "the static pod itself kept running");
    // The manifest goes away: so does the mirror.
    c.files.send(Snapshot { source: SourceKind::File, pods: vec![] }).await.unwrap();
    eventually("mirror deleted", || c.api.pod("default", &name).is_none().then_some(())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_catches_up_after_an_api_outage() {
    let c = start().await;
    c.api.put_pod(api_pod("job"));
    eventually("Running", || (phase(&c.api.pod("default", "job")?)? == "Running").then_some(())).await;
    c.api.set_down(true);
    let id = c.rt.containers_named("app")[0].clone();
    c.rt.exit_container(&id, 0);
    // The kubelet sees the exit and restarts the container while the API is away.
    eventually("restart seen locally", || {
        let st = c.statuses.list().into_iter().find(|p| p.metadata.name.as_deref() == Some("job"))?.status.clone()?;
        (st.container_statuses?[0].restart_count >= 1).then_some(())
    })
    .await;
    assert_eq!(c.rt.sandbox_count(), 1, "pods keep running");
    c.api.set_down(false);
    eventually("status caught up", || {
        let st = c.api.pod("default", "job")?.status?;
        (st.container_statuses?[0].restart_count >= 1).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_that_does_not_fit_the_node_is_rejected_and_others_run() {
    let c = start().await;
    let mut picky = api_pod("picky");
    picky.spec.as_mut().unwrap().node_selector = Some(BTreeMap::from([("disk".to_string(), "ssd".to_string())]));
    c.api.put_pod(picky);
    c.api.put_pod(api_pod("easy"));
    let st = eventually("rejected", || {
        c.api.pod("default", "picky")?.status.filter(|s| s.phase.as_deref() == Some("Failed"))
    })
    .await;
    assert_eq!(st.reason.as_deref(), Some("NodeAffinity"));
    assert_eq!(
        st.message.as_deref(),
        Some("Pod was rejected: Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector")
    );
    // As upstream's rejectPod: a Warning event with the handler's message, unprefixed.
    let event = eventually("rejection event", || {
        c.api.events().into_iter().find(|e| e.reason.as_deref() == Some("NodeAffinity"))
    })
    .await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert_eq!(event.involved_object.name.as_deref(), Some("picky"));
    assert_eq!(
        event.message.as_deref(),
        Some("Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector")
    );
    eventually("the other pod runs", || (phase(&c.api.pod("default", "easy")?)? == "Running").then_some(())).await;
    assert_eq!(c.rt.sandbox_count(), 1, "the rejected pod never ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_pull_secrets_authenticate_pulls() {
    let c = start().await;
    c.rt.add_private_image("127.0.0.1:5001/private:1", "user", "pass");
    let mut secret = k8s_openapi::api::core::v1::Secret::default();
    secret.metadata.name = Some("regcred".into());
    secret.metadata.namespace = Some("default".into());
    secret.type_ = Some("kubernetes.io/dockerconfigjson".into());
    let json = r#"{"auths":{"127.0.0.1:5001":{"username":"user","password":"pass"}}}"#;
    secret.data =
        Some(BTreeMap::from([(".dockerconfigjson".to_string(), k8s_openapi::ByteString(json.as_bytes().to_vec()))]));
    c.api.put_secret(secret);
    let private = |name: &str, with_secret: bool| {
        let mut p = api_pod(name);
        let spec = p.spec.as_mut().unwrap();
        spec.containers[0].image = Some("127.0.0.1:5001/private:1".into());
        spec.containers[0].image_pull_policy = Some("Always".into());
        if with_secret {
            spec.image_pull_secrets =
                Some(vec![k8s_openapi::api::core::v1::LocalObjectReference { name: "regcred".into() }]);
        }
        p
    };
    c.api.put_pod(private("without", false));
    c.api.put_pod(private("with", true));
    eventually("the pod with the secret runs", || (phase(&c.api.pod("default", "with")?)? == "Running").then_some(()))
        .await;
    let waiting = eventually("the other fails to pull", || {
        let st = c.api.pod("default", "without")?.status?;
        let w = st.container_statuses?.into_iter().next()?.state?.waiting?;
        matches!(w.reason.as_deref(), Some("ErrImagePull") | Some("ImagePullBackOff")).then_some(w)
    })
    .await;
    if waiting.reason.as_deref() == Some("ErrImagePull") {
        assert!(waiting.message.unwrap_or_default().contains("401 Unauthorized"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_comes_from_config_maps_secrets_and_service_links() {
    let c = start().await;
    let mut cm = k8s_openapi::api::core::v1::ConfigMap::default();
    cm.metadata.name = Some("settings".into());
    cm.metadata.namespace = Some("default".into());
    cm.data = Some(BTreeMap::from([("color".to_string(), "blue".to_string())]));
    c.api.put_config_map(cm);
    let svc = |ns: &str, name: &str, ip: &str| -> k8s_openapi::api::core::v1::Service {
        serde_json::from_value(serde_json::json!({"metadata": {"name": name, "namespace": ns},
            "spec": {"clusterIP": ip, "ports": [{"port": 443, "protocol": "TCP"}]}}))
        .unwrap()
    };
    c.api.put_service(svc("default", "kubernetes", "10.96.0.1"));
    c.api.put_service(svc("default", "web-api", "10.96.0.20"));
    let mut p = api_pod("envy");
    p.spec.as_mut().unwrap().containers[0].env = Some(vec![serde_json::from_value(
        serde_json::json!({"name": "COLOR", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "color"}}}),
    )
    .unwrap()]);
    c.api.put_pod(p);
    let id = eventually("created", || c.rt.containers_named("app").first().cloned()).await;
    let envs: BTreeMap<String, String> =
        c.rt.config(&id).unwrap().envs.into_iter().map(|kv| (kv.key, kv.value)).collect();
    assert_eq!(envs["COLOR"], "blue");
    assert_eq!(envs["KUBERNETES_SERVICE_HOST"], "10.96.0.1");
    assert_eq!(envs["WEB_API_SERVICE_HOST"], "10.96.0.20");
    assert_eq!(envs["WEB_API_PORT_443_TCP"], "tcp://10.96.0.20:443");
}

/// A static pod whose container takes `PASSWORD` from the Secret `creds`.
fn secret_env_pod(name: &str) -> Pod {
    let v = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": name, "image": "img:1", "env": [
            {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}}]}]}});
    let origin = Origin { kind: SourceKind::File, location: format!("/m/{name}.yaml") };
    manifest::prepare(serde_json::from_value(v).unwrap(), &origin, NODE, "t").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_serves_secrets_live_pods_read_and_forgets_those_of_gone_pods() {
    let c = start().await;
    let mut secret = k8s_openapi::api::core::v1::Secret::default();
    secret.metadata.name = Some("creds".into());
    secret.metadata.namespace = Some("default".into());
    secret.data = Some(BTreeMap::from([("password".to_string(), k8s_openapi::ByteString(b"hunter2".to_vec()))]));
    c.api.put_secret(secret);
    let password = |container: &str| {
        let id = c.rt.containers_named(container).first().cloned()?;
        c.rt.config(&id)?.envs.into_iter().find(|kv| kv.key == "PASSWORD").map(|kv| kv.value)
    };
    let (a, b, late) = (secret_env_pod("a"), secret_env_pod("b"), secret_env_pod("late"));
    c.files.send(Snapshot { source: SourceKind::File, pods: vec![a.clone()] }).await.unwrap();
    assert_eq!(eventually("a created", || password("a")).await, "hunter2");

    // The API goes away: a new pod gets the Secret a live pod read.
    c.api.set_down(true);
    c.files.send(Snapshot { source: SourceKind::File, pods: vec![a.clone(), b.clone()] }).await.unwrap();
    assert_eq!(eventually("b created from the last answer", || password("b")).await, "hunter2");

    // Both pods go: after the dispatcher's housekeeping the node keeps nothing of the Secret.
    c.files.send(Snapshot { source: SourceKind::File, pods: vec![] }).await.unwrap();
    for p in [&a, &b] {
        let uid = p.metadata.uid.clone().unwrap();
        eventually("pod removed", || c.statuses.get(&uid).is_none().then_some(())).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    c.files.send(Snapshot { source: SourceKind::File, pods: vec![late.clone()] }).await.unwrap();
    let uid = late.metadata.uid.clone().unwrap();
    let waiting = eventually("late waits for the API", || {
        let w = c.statuses.get(&uid)?.container_statuses?.into_iter().next()?.state?.waiting?;
        (w.reason.as_deref() == Some("CreateContainerConfigError")).then_some(w)
    })
    .await;
    assert_eq!(waiting.message.as_deref(), Some("secret default/creds: connection refused"));
    assert!(c.rt.containers_named("late").is_empty());
}

/// The runtime calls that stop or remove something.
fn destructive(calls: &[String]) -> Vec<&String> {
    calls
        .iter()
        .filter(|c| ["StopContainer", "RemoveContainer", "StopPodSandbox", "RemovePodSandbox"].contains(&c.as_str()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_leaves_pods_running_flushes_statuses_and_a_restart_adopts() {
    use kubelet::cri::Runtime;
    let c = start().await;
    for name in ["a", "b"] {
        c.api.put_pod(api_pod(name));
    }
    for name in ["a", "b"] {
        eventually("Running in the API", || (phase(&c.api.pod("default", name)?)? == "Running").then_some(())).await;
    }
    // Two more pods whose sandboxes take a while: the kubelet stops while they are being made.
    c.rt.set_sandbox_delay(Duration::from_millis(1500));
    for name in ["c", "d"] {
        c.api.put_pod(api_pod(name));
    }
    // Their workers are in RunPodSandbox by now (the call is logged when it returns).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = c.rt.calls().len();
    let Cluster { api, rt, statuses, running, dir, .. } = c;

    let bound = Duration::from_secs(6);
    let started = std::time::Instant::now();
    let stopped = running.shutdown(bound).await;
    assert!(stopped.aborted.is_empty(), "every task stopped by itself: {stopped:?}");
    assert!(started.elapsed() < bound, "within the bound: {:?}", started.elapsed());
    // Nothing is left: the node's tasks, pod workers, probes, PLEG streams, volume operations.
    let metrics = tokio::runtime::Handle::current().metrics();
    eventually("no task left", || (metrics.num_alive_tasks() == 0).then_some(())).await;

    // A kubelet stop stops nothing and makes nothing new once it has begun.
    let calls = rt.calls();
    let after = &calls[before..];
    assert!(destructive(after).is_empty(), "shutdown stopped or removed something: {after:?}");
    assert!(!after.iter().any(|x| x == "CreateContainer"), "no container made while stopping: {after:?}");
    let containers = rt.list_containers(None).await.unwrap();
    for name in ["a", "b"] {
        let uid = format!("uid-{name}");
        let running = containers
            .iter()
            .filter(|x| x.labels.get(kubelet::cri::labels::POD_UID) == Some(&uid))
            .filter(|x| x.state == kubelet::cri::api::ContainerState::ContainerRunning as i32);
        assert_eq!(running.count(), 1, "pod {name} still runs");
    }
    // The newest status of every pod reached the API (c and d: with their sandboxes made after
    // the stop began). A merge patch leaves scalars the kubelet dropped: lists and phase compared.
    let essentials = |s: &k8s_openapi::api::core::v1::PodStatus| {
        (s.phase.clone(), s.pod_ip.clone(), s.conditions.clone(), s.container_statuses.clone())
    };
    for name in ["a", "b", "c", "d"] {
        let local = statuses.get(&format!("uid-{name}")).unwrap_or_else(|| panic!("pod {name} has a status"));
        // As the API keeps it (times in seconds).
        let local = serde_json::from_value(serde_json::to_value(local).unwrap()).unwrap();
        let remote = api.pod("default", name).and_then(|p| p.status);
        assert_eq!(
            remote.as_ref().map(essentials),
            Some(essentials(&local)),
            "pod {name}: the API has the newest status"
        );
    }

    // The next start adopts what it finds: every pod Running, one sandbox each.
    rt.set_sandbox_delay(Duration::ZERO);
    let restarted = start_on(api.clone(), rt.clone(), dir).await;
    for name in ["a", "b", "c", "d"] {
        eventually("Running after the restart", || (phase(&api.pod("default", name)?)? == "Running").then_some(()))
            .await;
    }
    let sandboxes = rt.list_pod_sandboxes(None).await.unwrap();
    for name in ["a", "b", "c", "d"] {
        let uid = format!("uid-{name}");
        let mine = sandboxes.iter().filter(|s| s.labels.get(kubelet::cri::labels::POD_UID) == Some(&uid)).count();
        assert_eq!(mine, 1, "pod {name}: one sandbox");
    }
    assert!(destructive(&rt.calls()).is_empty(), "nothing was stopped or removed across the restart");
    restarted.running.shutdown(bound).await;
}
