//! The device manager on fake plugins: capacity and health, allocation at admission (distinct
//! devices, the plugin's preference, refusals with upstream's messages), the checkpoint across a
//! restart, devices of gone pods freed, run options and PreStartContainer, topology hints.

use super::proto::{self, AllocateResponse, ContainerAllocateResponse, Device, DevicePluginOptions};
use super::*;
use crate::clock::FakeClock;
use std::sync::Mutex as StdMutex;
use std::time::{Duration, SystemTime};

const R: &str = "example.com/widget";

#[derive(Default)]
struct FakePlugin {
    calls: StdMutex<Vec<String>>,
    preferred: Vec<String>,
    fail_allocate: bool,
}

#[async_trait::async_trait]
impl Plugin for FakePlugin {
    async fn allocate(&self, devices: Vec<String>) -> Result<AllocateResponse, tonic::Status> {
        self.calls.lock().unwrap().push(format!("Allocate {}", devices.join(",")));
        if self.fail_allocate {
            return Err(tonic::Status::unavailable("widget on fire"));
        }
        Ok(AllocateResponse {
            container_responses: vec![ContainerAllocateResponse {
                envs: [("WIDGET_IDS".to_string(), devices.join(","))].into(),
                mounts: devices
                    .iter()
                    .map(|d| proto::Mount {
                        container_path: format!("/widgets/{d}"),
                        host_path: format!("/state/{d}"),
                        read_only: true,
                    })
                    .collect(),
                ..Default::default()
            }],
        })
    }

    async fn preferred_allocation(
        &self,
        available: Vec<String>,
        must_include: Vec<String>,
        size: usize,
    ) -> Result<proto::PreferredAllocationResponse, tonic::Status> {
        self.calls.lock().unwrap().push(format!(
            "GetPreferredAllocation {} {} {size}",
            available.join(","),
            must_include.join(",")
        ));
        Ok(proto::PreferredAllocationResponse {
            container_responses: vec![proto::ContainerPreferredAllocationResponse {
                device_i_ds: self.preferred.clone(),
            }],
        })
    }

    async fn pre_start_container(&self, devices: Vec<String>) -> Result<(), tonic::Status> {
        self.calls.lock().unwrap().push(format!("PreStartContainer {}", devices.join(",")));
        Ok(())
    }
}

fn dev(id: &str, healthy: bool, numa: Option<i64>) -> Device {
    Device {
        id: id.into(),
        health: if healthy { proto::HEALTHY } else { proto::UNHEALTHY }.into(),
        topology: numa.map(|n| proto::TopologyInfo { nodes: vec![proto::NumaNode { id: n }] }),
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    cfg: Config,
    clock: FakeClock,
    dm: DeviceManager,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config { dir: dir.path().join(DIR), numa_nodes: vec![0, 1] };
    let clock = FakeClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000));
    let dm = DeviceManager::new(cfg.clone(), Arc::new(clock.clone()));
    Fixture { _dir: dir, cfg, clock, dm }
}

fn register(
    dm: &DeviceManager,
    plugin: FakePlugin,
    options: DevicePluginOptions,
    devices: Vec<Device>,
) -> (Arc<FakePlugin>, u64) {
    let plugin = Arc::new(plugin);
    let generation = dm.plugin_connected(R, options, plugin.clone());
    dm.devices_updated(R, generation, devices);
    (plugin, generation)
}

fn widgets(n: usize) -> Vec<Device> {
    (0..n).map(|i| dev(&format!("w{i}"), true, None)).collect()
}

fn pod(uid: &str, widgets: &[(&str, u32)]) -> Pod {
    let containers: Vec<serde_json::Value> = widgets
        .iter()
        .map(|(name, n)| serde_json::json!({"name": name, "image": "x", "resources": {"limits": {R: n.to_string()}}}))
        .collect();
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": uid, "namespace": "default", "uid": uid},
        "spec": {"containers": containers}
    }))
    .unwrap()
}

fn admit(dm: &DeviceManager, p: &Pod, admitted: &[&Pod]) -> Result<(), Rejection> {
    Admit(dm.clone()).admit(p, admitted)
}

fn held(dm: &DeviceManager, uid: &str, c: &str) -> BTreeSet<String> {
    dm.state().pod_devices.container_devices(uid, c, R).unwrap_or_default()
}

#[tokio::test]
async fn healthy_devices_are_allocatable_and_all_are_capacity() {
    let f = fixture();
    let (_, generation) = register(
        &f.dm,
        FakePlugin::default(),
        Default::default(),
        vec![dev("w0", true, None), dev("w1", true, None), dev("w2", false, None)],
    );
    let cap = f.dm.capacity();
    assert_eq!(cap.capacity[R], 3);
    assert_eq!(cap.allocatable[R], 2);
    // A plugin whose stream ends: everything unhealthy, still in capacity during the grace period.
    f.dm.plugin_disconnected(R, generation);
    let cap = f.dm.capacity();
    assert_eq!((cap.capacity[R], cap.allocatable[R]), (3, 0));
    f.clock.advance(state::ENDPOINT_STOP_GRACE + Duration::from_secs(1));
    let cap = f.dm.capacity();
    assert_eq!((cap.capacity[R], cap.allocatable[R]), (0, 0), "deleted after the grace: reported as 0");
    // It registers again: back.
    register(&f.dm, FakePlugin::default(), Default::default(), widgets(2));
    assert_eq!(f.dm.capacity().allocatable[R], 2);
}

#[tokio::test]
async fn an_older_registrations_stream_neither_updates_nor_stops_the_new_one() {
    let f = fixture();
    let (_, old) = register(&f.dm, FakePlugin::default(), Default::default(), widgets(2));
    let (_, new) = register(&f.dm, FakePlugin::default(), Default::default(), widgets(4));
    f.dm.devices_updated(R, old, widgets(1));
    f.dm.plugin_disconnected(R, old);
    assert_eq!(f.dm.capacity().allocatable[R], 4);
    f.dm.plugin_disconnected(R, new);
    assert_eq!(f.dm.capacity().allocatable[R], 0);
}

#[tokio::test]
async fn pods_get_distinct_devices_and_one_beyond_is_refused_as_unexpected() {
    let f = fixture();
    let (plugin, _) = register(&f.dm, FakePlugin::default(), Default::default(), widgets(3));
    let a = pod("a", &[("app", 2)]);
    admit(&f.dm, &a, &[]).unwrap();
    let got = held(&f.dm, "a", "app");
    assert_eq!(got.len(), 2);
    let b = pod("b", &[("app", 2)]);
    let r = admit(&f.dm, &b, &[&a]).unwrap_err();
    assert_eq!(r.reason, "UnexpectedAdmissionError");
    assert_eq!(
        r.message,
        "Allocate failed due to requested number of devices unavailable for example.com/widget. Requested: 2, Available: 1, which is unexpected"
    );
    let c = pod("c", &[("app", 1)]);
    admit(&f.dm, &c, &[&a]).unwrap();
    let last = held(&f.dm, "c", "app");
    assert!(last.is_disjoint(&got), "{last:?} vs {got:?}");
    assert_eq!(plugin.calls.lock().unwrap().len(), 2, "one Allocate per admitted container");
    // The options the container gets come from the response.
    let opts = f.dm.run_options(&a, &a.spec.as_ref().unwrap().containers[0]).await.unwrap();
    let ids: Vec<&str> = got.iter().map(String::as_str).collect();
    assert_eq!(opts.envs, vec![("WIDGET_IDS".to_string(), ids.join(","))]);
    assert_eq!(opts.mounts.len(), 2);
}

#[tokio::test]
async fn devices_of_pods_no_longer_active_are_freed_at_the_next_allocation() {
    let f = fixture();
    register(&f.dm, FakePlugin::default(), Default::default(), widgets(2));
    let a = pod("a", &[("app", 2)]);
    admit(&f.dm, &a, &[]).unwrap();
    // "a" is still admitted: nothing left.
    assert!(admit(&f.dm, &pod("b", &[("app", 1)]), &[&a]).is_err());
    // "a" terminated (not in the admitted list any more): its devices are free again.
    admit(&f.dm, &pod("c", &[("app", 2)]), &[]).unwrap();
    assert!(f.dm.state().pod_devices.get("a", "app", R).is_none());
    assert_eq!(held(&f.dm, "c", "app").len(), 2);
}

#[tokio::test]
async fn the_plugins_preferred_devices_are_taken_first() {
    let f = fixture();
    let options = DevicePluginOptions { get_preferred_allocation_available: true, pre_start_required: false };
    let plugin = FakePlugin { preferred: vec!["w3".into(), "w1".into()], ..Default::default() };
    let (plugin, _) = register(&f.dm, plugin, options, widgets(4));
    admit(&f.dm, &pod("a", &[("app", 2)]), &[]).unwrap();
    assert_eq!(held(&f.dm, "a", "app"), BTreeSet::from(["w1".to_string(), "w3".to_string()]));
    let calls = plugin.calls.lock().unwrap().clone();
    assert_eq!(calls, vec!["GetPreferredAllocation w0,w1,w2,w3  2".to_string(), "Allocate w1,w3".to_string()]);
}

#[tokio::test]
async fn a_failed_allocate_refuses_the_pod_and_holds_nothing() {
    let f = fixture();
    register(&f.dm, FakePlugin { fail_allocate: true, ..Default::default() }, Default::default(), widgets(2));
    let r = admit(&f.dm, &pod("a", &[("app", 2)]), &[]).unwrap_err();
    assert_eq!(r.reason, "UnexpectedAdmissionError");
    assert_eq!(
        r.message,
        "Allocate failed due to rpc error: code = Unavailable desc = widget on fire, which is unexpected"
    );
    assert!(f.dm.state().allocated.get(R).is_none_or(BTreeSet::is_empty));
}

#[tokio::test]
async fn unregistered_and_unhealthy_resources_are_refused_with_upstreams_messages() {
    let f = fixture();
    // Unknown to the manager: not a device plugin resource; left to the other handlers.
    admit(&f.dm, &pod("a", &[("app", 1)]), &[]).unwrap();
    let (_, generation) = register(&f.dm, FakePlugin::default(), Default::default(), widgets(1));
    f.dm.plugin_disconnected(R, generation);
    let r = admit(&f.dm, &pod("b", &[("app", 1)]), &[]).unwrap_err();
    assert_eq!(
        r.message,
        "Allocate failed due to no healthy devices present; cannot allocate unhealthy devices example.com/widget, which is unexpected"
    );
}

#[tokio::test]
async fn init_container_devices_are_reused_by_the_app_containers() {
    let f = fixture();
    let (plugin, _) = register(&f.dm, FakePlugin::default(), Default::default(), widgets(2));
    let mut p = pod("a", &[("app", 2)]);
    let init: k8s_openapi::api::core::v1::Container =
        serde_json::from_value(serde_json::json!({"name": "init", "image": "x", "resources": {"limits": {R: "2"}}}))
            .unwrap();
    p.spec.as_mut().unwrap().init_containers = Some(vec![init]);
    admit(&f.dm, &p, &[]).unwrap();
    assert_eq!(held(&f.dm, "a", "init"), held(&f.dm, "a", "app"));
    assert_eq!(plugin.calls.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn assignments_survive_a_restart_through_the_checkpoint() {
    let f = fixture();
    register(&f.dm, FakePlugin::default(), Default::default(), widgets(3));
    let a = pod("a", &[("app", 2)]);
    admit(&f.dm, &a, &[]).unwrap();
    let before = held(&f.dm, "a", "app");
    let before_opts = f.dm.run_options(&a, &a.spec.as_ref().unwrap().containers[0]).await.unwrap();

    // A new kubelet: the plugin has not registered again yet.
    let again = DeviceManager::new(f.cfg.clone(), Arc::new(f.clock.clone()));
    assert_eq!(held(&again, "a", "app"), before);
    let cap = again.capacity();
    assert_eq!((cap.capacity[R], cap.allocatable[R]), (0, 0), "0 until the plugin is back");
    // The running pod is admitted again without its plugin and keeps its devices.
    admit(&again, &a, &[]).unwrap();
    assert_eq!(held(&again, "a", "app"), before);
    // A new pod waits for the plugin.
    let r = admit(&again, &pod("b", &[("app", 1)]), &[&a]).unwrap_err();
    assert!(r.message.contains("no healthy devices present"), "{}", r.message);
    // The plugin is back: the third device goes to the new pod, never one of "a"'s.
    let (plugin, _) = register(&again, FakePlugin::default(), Default::default(), widgets(3));
    admit(&again, &pod("b", &[("app", 1)]), &[&a]).unwrap();
    assert!(held(&again, "b", "app").is_disjoint(&before));
    assert_eq!(plugin.calls.lock().unwrap().len(), 1, "no Allocate for the restored pod");
    let opts = again.run_options(&a, &a.spec.as_ref().unwrap().containers[0]).await.unwrap();
    assert_eq!(opts, before_opts, "the restored response still configures the container");
}

#[tokio::test]
async fn pre_start_container_is_called_when_the_plugin_asks() {
    let f = fixture();
    let options = DevicePluginOptions { pre_start_required: true, get_preferred_allocation_available: false };
    let (plugin, _) = register(&f.dm, FakePlugin::default(), options, widgets(1));
    let a = pod("a", &[("app", 1)]);
    admit(&f.dm, &a, &[]).unwrap();
    f.dm.run_options(&a, &a.spec.as_ref().unwrap().containers[0]).await.unwrap();
    assert_eq!(plugin.calls.lock().unwrap().last().unwrap(), "PreStartContainer w0");
}

#[tokio::test]
async fn topology_hints_prefer_the_fewest_numa_nodes() {
    let f = fixture();
    register(
        &f.dm,
        FakePlugin::default(),
        Default::default(),
        vec![dev("w0", true, Some(0)), dev("w1", true, Some(0)), dev("w2", true, Some(1))],
    );
    let hints = f.dm.get_topology_hints(&pod("a", &[("app", 2)]), &pod("a", &[("app", 2)]).spec.unwrap().containers[0]);
    let hints = hints[R].clone().unwrap();
    let as_sets: Vec<(Vec<i64>, bool)> =
        hints.iter().map(|h| (h.numa_affinity.iter().copied().collect(), h.preferred)).collect();
    assert_eq!(as_sets, vec![(vec![0], true), (vec![0, 1], false)]);
    // Devices without topology: no preference.
    let g = fixture();
    register(&g.dm, FakePlugin::default(), Default::default(), widgets(2));
    let p = pod("a", &[("app", 1)]);
    assert_eq!(g.dm.get_topology_hints(&p, &p.spec.as_ref().unwrap().containers[0])[R], None);
}
