use super::*;
use std::time::{Duration, SystemTime};

fn pod(uid: &str, cpu: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": uid, "namespace": "default", "uid": uid, "generation": 1},
        "spec": {"containers": [{"name": "app", "image": "x",
            "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}, "limits": {"cpu": cpu, "memory": "64Mi"}}}]}
    }))
    .unwrap()
}

fn node() -> Allocatable {
    Allocatable { cpu_milli: 2000, memory: 1 << 30, pids: 1000 }
}

fn t(s: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(s)
}

fn cpu_of(p: &Pod) -> String {
    p.spec.as_ref().unwrap().containers[0].resources.as_ref().unwrap().requests.as_ref().unwrap()["cpu"].0.clone()
}

#[test]
fn a_fitting_resize_is_allocated_and_in_progress() {
    let m = Manager::new(Config::in_memory(node())).unwrap();
    let p = pod("a", "500m");
    m.add_pod(&p);
    let resized = pod("a", "800m");
    assert_eq!(cpu_of(&m.allocated_pod(&resized)), "500m");
    assert!(m.handle_resize(&resized, &[], t(1)).is_allocated());
    assert_eq!(cpu_of(&m.allocated_pod(&resized)), "800m");
    let c = m.conditions("a");
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].type_, POD_RESIZE_IN_PROGRESS);
    assert_eq!(c[0].observed_generation, Some(1));
    m.clear_in_progress("a");
    assert!(m.conditions("a").is_empty());
}

#[test]
fn more_than_the_node_has_is_infeasible_with_upstreams_message() {
    let m = Manager::new(Config::in_memory(node())).unwrap();
    m.add_pod(&pod("a", "500m"));
    assert!(!m.handle_resize(&pod("a", "3"), &[], t(1)).is_allocated());
    let c = m.conditions("a");
    assert_eq!(c[0].type_, POD_RESIZE_PENDING);
    assert_eq!(c[0].reason.as_deref(), Some("Infeasible"));
    assert_eq!(c[0].message.as_deref(), Some("Node didn't have enough capacity: cpu, requested: 3000, capacity: 2000"));
    assert!(m.pending().is_empty());
    // Set back to what is allocated: nothing pending any more.
    assert!(!m.handle_resize(&pod("a", "500m"), &[], t(2)).is_allocated());
    assert!(m.conditions("a").is_empty());
}

#[test]
fn a_resize_that_does_not_fit_now_is_deferred_and_retried_once_room_is_made() {
    let m = Manager::new(Config::in_memory(node())).unwrap();
    let other = pod("b", "1500m");
    m.add_pod(&pod("a", "400m"));
    m.add_pod(&other);
    assert!(!m.handle_resize(&pod("a", "1"), std::slice::from_ref(&other), t(1)).is_allocated());
    let c = m.conditions("a");
    assert_eq!(c[0].reason.as_deref(), Some("Deferred"));
    assert_eq!(
        c[0].message.as_deref(),
        Some("Node didn't have enough resource: cpu, requested: 1000, used: 1500, capacity: 2000")
    );
    assert_eq!(m.pending(), vec!["a".to_string()]);
    // The other pod goes: the retry allocates.
    m.remove_pod("b");
    assert!(m.handle_resize(&pod("a", "1"), &[], t(2)).is_allocated());
    assert!(m.pending().is_empty());
    assert_eq!(m.conditions("a")[0].type_, POD_RESIZE_IN_PROGRESS);
}

#[test]
fn static_pods_are_not_resized() {
    let m = Manager::new(Config::in_memory(node())).unwrap();
    let mut p = pod("s", "100m");
    p.metadata.annotations = Some([("kubernetes.io/config.source".to_string(), "file".to_string())].into());
    m.add_pod(&p);
    let mut resized = pod("s", "200m");
    resized.metadata.annotations = p.metadata.annotations.clone();
    assert!(!m.handle_resize(&resized, &[], t(1)).is_allocated());
    assert_eq!(m.conditions("s")[0].message.as_deref(), Some("In-place resize of static pods is not supported"));
}

#[test]
fn allocation_and_actuation_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config { dir: Some(dir.path().to_path_buf()), ..Config::in_memory(node()) };
    let m = Manager::new(cfg.clone()).unwrap();
    m.add_pod(&pod("a", "500m"));
    let old = m.allocated_pod(&pod("a", "500m")).spec.unwrap().containers[0].resources.clone().unwrap();
    m.set_actuated("a", "app", old.clone());
    assert!(m.handle_resize(&pod("a", "700m"), &[], t(1)).is_allocated());
    drop(m);
    let again = Manager::new(cfg).unwrap();
    // The desired spec seen at admission after the restart does not replace the allocation.
    again.add_pod(&pod("a", "900m"));
    assert_eq!(cpu_of(&again.allocated_pod(&pod("a", "900m"))), "700m");
    assert_eq!(again.actuated("a", "app"), Some(old));
    again.remove_orphans(&Default::default());
    assert_eq!(again.actuated("a", "app"), None);
}

#[test]
fn event_messages_summarize_the_containers_resources_as_upstream() {
    let msg = event_message("Pod resize started", &pod("a", "500m"), "");
    assert!(msg.starts_with("Pod resize started: {\"containers\":[{\"name\":\"app\",\"resources\":{"), "{msg}");
    assert!(msg.ends_with("}}],\"generation\":1}"), "{msg}");
    let err = event_message("Pod resize Deferred", &pod("a", "500m"), "no room");
    assert!(err.ends_with("\"generation\":1,\"error\":\"no room\"}"), "{err}");
}
