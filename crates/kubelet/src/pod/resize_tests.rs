use super::*;
use crate::pod::observe::{ContainerObs, SandboxObs};

fn pod(cpu: &str, mem: &str, policy: Option<&str>) -> Pod {
    let mut c = serde_json::json!({"name": "app", "image": "x",
        "resources": {"requests": {"cpu": cpu, "memory": mem}, "limits": {"cpu": cpu, "memory": mem}}});
    if let Some(p) = policy {
        c["resizePolicy"] = serde_json::json!([{"resourceName": "memory", "restartPolicy": p}]);
    }
    serde_json::from_value(serde_json::json!({"metadata": {"name": "p", "uid": "u"}, "spec": {"containers": [c]}}))
        .unwrap()
}

fn running() -> PodObs {
    PodObs {
        sandboxes: vec![SandboxObs {
            id: "s".into(),
            attempt: 0,
            ready: true,
            created_at: 1,
            ip: Some("10.0.0.2".into()),
            additional_ips: vec![],
        }],
        containers: vec![ContainerObs {
            id: "c1".into(),
            name: "app".into(),
            sandbox_id: "s".into(),
            state: CState::Running,
            hash: 0,
            restart_count: 0,
            init: false,
            created_at: 1,
            started_at: 1,
            finished_at: 0,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            image: "x".into(),
            image_ref: "x".into(),
        }],
    }
}

fn res(p: &Pod) -> ResourceRequirements {
    p.spec.as_ref().unwrap().containers[0].resources.clone().unwrap()
}

#[test]
fn unchanged_resources_need_nothing_and_unrecorded_ones_are_adopted() {
    let p = pod("100m", "64Mi", None);
    assert_eq!(plan(&p, &running(), &|_| Some(res(&p))), Plan::default());
    let adopted = plan(&p, &running(), &|_| None);
    assert_eq!(adopted.adopt, vec!["app".to_string()]);
    assert!(adopted.containers.is_empty());
}

#[test]
fn a_change_is_in_place_unless_the_policy_restarts_for_it() {
    let old = pod("100m", "64Mi", Some("RestartContainer"));
    // cpu changed, memory's policy is RestartContainer: in place.
    let cpu = pod("200m", "64Mi", Some("RestartContainer"));
    let p = plan(&cpu, &running(), &|_| Some(res(&old)));
    assert_eq!(p.containers, vec![ContainerResize { id: "c1".into(), name: "app".into(), restart: false }]);
    // memory changed: restart.
    let mem = pod("100m", "128Mi", Some("RestartContainer"));
    assert!(plan(&mem, &running(), &|_| Some(res(&old))).containers[0].restart);
    // The same quantity spelled differently is no change.
    let spelled = pod("0.1", "64Mi", Some("RestartContainer"));
    assert!(plan(&spelled, &running(), &|_| Some(res(&old))).containers.is_empty());
    assert_eq!(changed(&res(&mem), &res(&old)), vec!["memory"]);
}

#[test]
fn the_pod_cgroup_grows_before_and_shrinks_after() {
    let old = CgroupConfig { cpu_shares: Some(102), cpu_quota: Some(10_000), memory: Some(100), ..Default::default() };
    let new = CgroupConfig { cpu_shares: Some(204), cpu_quota: Some(5_000), memory: Some(200), ..Default::default() };
    let g = grown(&old, &new);
    assert_eq!((g.cpu_shares, g.cpu_quota, g.memory), (Some(204), Some(10_000), Some(200)));
    let unlimited = CgroupConfig { memory: Some(-1), ..Default::default() };
    assert_eq!(grown(&unlimited, &new).memory, Some(-1));
}
