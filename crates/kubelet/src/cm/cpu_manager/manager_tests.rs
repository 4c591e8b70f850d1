//! The manager on a fake machine and the fake runtime: the checkpoint across restarts, the
//! cpuset a container is created with, and the reconcile loop.

use super::policy::tests::{container, pod};
use super::*;
use crate::cm::topology::fake::FakeSys;
use crate::cri::fake::FakeRuntime;
use crate::cri::{Runtime, labels};

fn config(dir: &std::path::Path, policy: &str) -> Config {
    Config {
        policy: policy.into(),
        options: BTreeMap::new(),
        reserved_cpus: Some(CpuSet::of([0])),
        num_reserved: 1,
        reconcile_period: Duration::from_secs(10),
        state_dir: dir.to_path_buf(),
        feature_gates: BTreeMap::new(),
    }
}

fn start(dir: &std::path::Path, policy: &str) -> Result<CpuManager, Error> {
    let topo = CpuTopology::discover(FakeSys::two_cpus().path()).unwrap();
    CpuManager::start(&config(dir, policy), topo, Arc::default())
}

#[test]
fn state_survives_a_restart_and_a_changed_policy_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let m = start(dir.path(), "static").unwrap();
    let g = pod("g", vec![], vec![container("c", "1", "100Mi", true)]);
    m.allocate(&g, &g.spec.as_ref().unwrap().containers[0]).unwrap();
    assert_eq!(m.cpuset_for("g", "c").unwrap().to_string(), "1");
    assert_eq!(m.cpuset_for("other", "c").unwrap().to_string(), "0");
    let text = std::fs::read_to_string(dir.path().join("cpu_manager_state")).unwrap();
    assert!(
        text.starts_with(r#"{"policyName":"static","defaultCpuSet":"0","entries":{"g":{"c":"1"}},"checksum":"#),
        "{text}"
    );
    drop(m);
    let m = start(dir.path(), "static").unwrap();
    assert_eq!(m.cpuset_for("g", "c").unwrap().to_string(), "1");
    // A second one-CPU pod does not fit: CPU 0 is reserved.
    let h = pod("h", vec![], vec![container("c", "1", "100Mi", true)]);
    let err = m.allocate(&h, &h.spec.as_ref().unwrap().containers[0]).unwrap_err();
    assert_eq!(err.reason, "UnexpectedAdmissionError");
    let err = start(dir.path(), "none").unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "start cpu manager error: could not restore state from checkpoint: configured policy \"none\" differs from state checkpoint policy \"static\", please drain this node and delete the CPU manager checkpoint file {:?} before restarting Kubelet",
            dir.path().join("cpu_manager_state")
        )
    );
    std::fs::write(dir.path().join("cpu_manager_state"), "{\"policyName\":\"static\",\"checksum\":7}").unwrap();
    assert!(start(dir.path(), "static").unwrap_err().to_string().contains("checkpoint is corrupted"));
}

#[test]
fn the_none_policy_pins_nothing_but_keeps_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let m = start(dir.path(), "none").unwrap();
    let g = pod("g", vec![], vec![container("c", "1", "100Mi", true)]);
    m.allocate(&g, &g.spec.as_ref().unwrap().containers[0]).unwrap();
    assert_eq!(m.cpuset_for("g", "c"), None);
    let text = std::fs::read_to_string(dir.path().join("cpu_manager_state")).unwrap();
    assert_eq!(text, r#"{"policyName":"none","defaultCpuSet":"","checksum":1353318690}"#);
}

async fn run_container(rt: &FakeRuntime, uid: &str, name: &str) -> String {
    let labels = std::collections::HashMap::from([
        (labels::POD_UID.to_string(), uid.to_string()),
        (labels::CONTAINER_NAME.to_string(), name.to_string()),
    ]);
    let sb_cfg = api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata { uid: uid.into(), name: uid.into(), ..Default::default() }),
        labels: labels.clone(),
        ..Default::default()
    };
    let sb = rt.run_pod_sandbox(sb_cfg.clone()).await.unwrap();
    let cfg = api::ContainerConfig {
        metadata: Some(api::ContainerMetadata { name: name.into(), attempt: 0 }),
        image: Some(api::ImageSpec { image: "busybox".into(), ..Default::default() }),
        labels,
        ..Default::default()
    };
    let id = rt.create_container(&sb, cfg, sb_cfg).await.unwrap();
    rt.start_container(&id).await.unwrap();
    id
}

#[tokio::test]
async fn reconcile_shrinks_and_grows_the_shared_pool_of_running_containers() {
    let dir = tempfile::tempdir().unwrap();
    let m = start(dir.path(), "static").unwrap();
    let fake = FakeRuntime::default();
    fake.add_image("busybox");
    let rt: DynRuntime = Arc::new(fake.clone());
    let be = pod("be", vec![], vec![container("c", "0", "0", false)]);
    let g = pod("g", vec![], vec![container("c", "1", "100Mi", true)]);
    let be_id = run_container(&fake, "be", "c").await;
    m.allocate(&g, &g.spec.as_ref().unwrap().containers[0]).unwrap();
    let g_id = run_container(&fake, "g", "c").await;
    let statuses = Arc::new(Mutex::new(vec![(Arc::new(be.clone()), true), (Arc::new(g.clone()), true)]));
    let s = statuses.clone();
    let active: ActivePods = Arc::new(move || s.lock().unwrap().clone());
    let cpus = |id: &str| fake.config(id).unwrap().linux.unwrap().resources.unwrap().cpuset_cpus;
    m.reconcile(&rt, &active).await;
    assert_eq!((cpus(&be_id), cpus(&g_id)), ("0".to_string(), "1".to_string()));
    // The Guaranteed pod is gone: its CPU returns and the BestEffort container gets it.
    statuses.lock().unwrap().retain(|(p, _)| p.metadata.uid.as_deref() == Some("be"));
    fake.remove_container(&g_id).await.ok();
    m.reconcile(&rt, &active).await;
    assert_eq!(cpus(&be_id), "0-1");
    assert_eq!(m.state().default_cpu_set.to_string(), "0-1");
    let updates = fake.calls().iter().filter(|c| c.starts_with("UpdateContainerResources")).count();
    m.reconcile(&rt, &active).await;
    let again = fake.calls().iter().filter(|c| c.starts_with("UpdateContainerResources")).count();
    assert_eq!(updates, again, "nothing changed, nothing written");
}

#[tokio::test]
async fn a_fresh_allocation_is_not_stale_before_its_pod_has_a_status() {
    let dir = tempfile::tempdir().unwrap();
    let m = start(dir.path(), "static").unwrap();
    let rt: DynRuntime = Arc::new(FakeRuntime::default());
    let g = pod("g", vec![], vec![container("c", "1", "100Mi", true)]);
    m.allocate(&g, &g.spec.as_ref().unwrap().containers[0]).unwrap();
    let active: ActivePods = Arc::new(Vec::new);
    m.reconcile(&rt, &active).await;
    assert_eq!(m.cpuset_for("g", "c").unwrap().to_string(), "1");
    // Once seen terminal, it is released.
    let done = Arc::new(g.clone());
    let active: ActivePods = Arc::new(move || vec![(done.clone(), false)]);
    m.reconcile(&rt, &active).await;
    assert_eq!(m.state().default_cpu_set.to_string(), "0-1");
}
