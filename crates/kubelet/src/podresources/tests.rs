//! The pod resources service on a device manager with a fake plugin and the status store.

use super::*;
use crate::admission::Handler;
use crate::cm::devicemanager::{self, Admit, proto as dp};

struct Widgets;

#[async_trait::async_trait]
impl devicemanager::Plugin for Widgets {
    async fn allocate(&self, devices: Vec<String>) -> Result<dp::AllocateResponse, tonic::Status> {
        let _ = devices;
        Ok(dp::AllocateResponse { container_responses: vec![Default::default()] })
    }
    async fn preferred_allocation(
        &self,
        _: Vec<String>,
        _: Vec<String>,
        _: usize,
    ) -> Result<dp::PreferredAllocationResponse, tonic::Status> {
        Ok(Default::default())
    }
    async fn pre_start_container(&self, _: Vec<String>) -> Result<(), tonic::Status> {
        Ok(())
    }
}

fn pod(name: &str, widgets: u32, phase: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "team", "uid": format!("uid-{name}")},
        "spec": {
            "initContainers": [
                {"name": "setup", "image": "x"},
                {"name": "sidecar", "image": "x", "restartPolicy": "Always"}
            ],
            "containers": [{"name": "app", "image": "x", "resources": {"limits": {"example.com/widget": widgets.to_string()}}}]
        },
        "status": {"phase": phase}
    }))
    .unwrap()
}

fn fixture(get_enabled: bool) -> (tempfile::TempDir, Service, Statuses, DeviceManager) {
    let dir = tempfile::tempdir().unwrap();
    let dm = DeviceManager::new(
        devicemanager::Config { dir: dir.path().join("device-plugins"), numa_nodes: vec![0] },
        Arc::new(crate::clock::SystemClock),
    );
    let generation = dm.plugin_connected("example.com/widget", Default::default(), Arc::new(Widgets));
    let devices = (0..3)
        .map(|i| dp::Device {
            id: format!("w{i}"),
            health: dp::HEALTHY.into(),
            topology: (i == 2).then(|| dp::TopologyInfo { nodes: vec![dp::NumaNode { id: 0 }] }),
        })
        .collect();
    dm.devices_updated("example.com/widget", generation, devices);
    let statuses = Statuses::new();
    let providers = Providers {
        pods: statuses.clone(),
        devices: Some(dm.clone()),
        cpus: Arc::new(NoExclusiveResources),
        memory: Arc::new(NoExclusiveResources),
    };
    let svc = Service::new(Config::new(dir.path(), get_enabled), providers);
    (dir, svc, statuses, dm)
}

fn set(statuses: &Statuses, p: &Pod) {
    statuses.set(p, p.status.clone().unwrap_or_default());
}

#[tokio::test]
async fn list_reports_each_active_pods_devices_by_container_and_get_one_pod() {
    let (_dir, svc, statuses, dm) = fixture(true);
    let web = pod("web", 2, "Running");
    Admit(dm.clone()).admit(&web, &[]).unwrap();
    set(&statuses, &web);
    set(&statuses, &pod("done", 0, "Succeeded"));
    let list = svc.list(Request::new(proto::ListPodResourcesRequest {})).await.unwrap().into_inner();
    assert_eq!(list.pod_resources.len(), 1, "terminal pods are not listed");
    let p = &list.pod_resources[0];
    assert_eq!((p.name.as_str(), p.namespace.as_str()), ("web", "team"));
    let names: Vec<&str> = p.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, vec!["sidecar", "app"], "sidecars first, plain init containers left out");
    let app = &p.containers[1];
    let ids: Vec<&str> = app.devices.iter().flat_map(|d| d.device_ids.iter().map(String::as_str)).collect();
    assert_eq!(ids.len(), 2);
    assert!(app.devices.iter().all(|d| d.resource_name == "example.com/widget"));
    assert!(app.cpu_ids.is_empty() && app.memory.is_empty(), "no CPU or memory manager yet");

    let got = svc
        .get(Request::new(proto::GetPodResourcesRequest { pod_name: "web".into(), pod_namespace: "team".into() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.pod_resources.as_ref(), Some(p));
    let missing = svc
        .get(Request::new(proto::GetPodResourcesRequest { pod_name: "nope".into(), pod_namespace: "team".into() }))
        .await
        .unwrap_err();
    assert_eq!(missing.message(), "pod nope in namespace team not found");
}

#[tokio::test]
async fn allocatable_lists_every_healthy_device_with_its_numa_node() {
    let (_dir, svc, ..) = fixture(true);
    let a =
        svc.get_allocatable_resources(Request::new(proto::AllocatableResourcesRequest {})).await.unwrap().into_inner();
    assert_eq!(a.devices.len(), 3);
    let w2 = a.devices.iter().find(|d| d.device_ids == ["w2"]).unwrap();
    assert_eq!(w2.topology.as_ref().unwrap().nodes[0].id, 0);
    assert!(a.devices.iter().find(|d| d.device_ids == ["w0"]).unwrap().topology.is_none());
    assert!(a.cpu_ids.is_empty());
}

#[tokio::test]
async fn get_is_refused_when_its_gate_is_off_and_bursts_are_rate_limited() {
    let (_dir, svc, ..) = fixture(false);
    let e = svc
        .get(Request::new(proto::GetPodResourcesRequest { pod_name: "web".into(), pod_namespace: "team".into() }))
        .await
        .unwrap_err();
    assert_eq!(e.message(), "PodResources API Get method disabled");
    // The burst (10) is spent (one above); the rest of a tight loop is refused.
    let mut refused = 0;
    for _ in 0..20 {
        if let Err(s) = svc.list(Request::new(proto::ListPodResourcesRequest {})).await {
            assert_eq!((s.code(), s.message()), (tonic::Code::ResourceExhausted, "rejected by rate limit"));
            refused += 1;
        }
    }
    assert!(refused >= 5, "refused {refused}");
}
