use super::*;

/// A pod from (cpu request, cpu limit, memory request, memory limit) per container; "" = unset.
fn pod(containers: &[(&str, &str, &str, &str)]) -> Pod {
    let cs: Vec<serde_json::Value> = containers
        .iter()
        .enumerate()
        .map(|(i, (cr, cl, mr, ml))| {
            let mut req = serde_json::Map::new();
            let mut lim = serde_json::Map::new();
            for (is_req, k, v) in [(true, "cpu", cr), (false, "cpu", cl), (true, "memory", mr), (false, "memory", ml)] {
                if !v.is_empty() {
                    let m = if is_req { &mut req } else { &mut lim };
                    m.insert(k.into(), (*v).into());
                }
            }
            serde_json::json!({"name": format!("c{i}"), "image": "x", "resources": {"requests": req, "limits": lim}})
        })
        .collect();
    serde_json::from_value(serde_json::json!({"metadata": {"name": "p", "uid": "u1"}, "spec": {"containers": cs}}))
        .unwrap()
}

#[test]
fn shares_follow_upstream() {
    assert_eq!(milli_cpu_to_shares(0), 2);
    assert_eq!(milli_cpu_to_shares(1), 2);
    assert_eq!(milli_cpu_to_shares(100), 102);
    assert_eq!(milli_cpu_to_shares(250), 256);
    assert_eq!(milli_cpu_to_shares(1000), 1024);
    assert_eq!(milli_cpu_to_shares(1_000_000), 262_144);
}

#[test]
fn quota_follows_upstream() {
    assert_eq!(milli_cpu_to_quota(0, 100_000), 0);
    assert_eq!(milli_cpu_to_quota(5, 100_000), 1000);
    assert_eq!(milli_cpu_to_quota(100, 100_000), 10_000);
    assert_eq!(milli_cpu_to_quota(1500, 100_000), 150_000);
    assert_eq!(milli_cpu_to_quota(500, 50_000), 25_000);
}

#[test]
fn v2_weight_conversion() {
    assert_eq!(shares_to_weight(2), 1);
    assert_eq!(shares_to_weight(1024), 39);
    assert_eq!(shares_to_weight(262_144), 10_000);
}

const MI: i64 = 1 << 20;

fn policy() -> Policy {
    Policy { memory_capacity: 1000 * MI, ..Policy::default() }
}

#[test]
fn guaranteed_pod_cgroup_gets_everything() {
    let p = pod(&[("500m", "500m", "64Mi", "64Mi"), ("", "250m", "", "32Mi")]);
    let c = pod_cgroup_config(&p, &policy());
    assert_eq!(c.cpu_shares, Some(768));
    assert_eq!(c.cpu_quota, Some(75_000));
    assert_eq!(c.cpu_period, Some(100_000));
    assert_eq!(c.memory, Some(96 * MI));
    assert_eq!(c.pids, None);
}

#[test]
fn burstable_rules() {
    // Every container has both limits: quota and memory.
    let c = pod_cgroup_config(&pod(&[("100m", "200m", "10Mi", "20Mi"), ("", "100m", "", "10Mi")]), &policy());
    assert_eq!((c.cpu_shares, c.cpu_quota, c.memory), (Some(204), Some(30_000), Some(30 * MI)));
    // One container without a cpu limit: no quota; memory limits everywhere: memory.
    let c = pod_cgroup_config(&pod(&[("100m", "200m", "", "20Mi"), ("100m", "", "", "10Mi")]), &policy());
    assert_eq!((c.cpu_shares, c.cpu_quota, c.cpu_period, c.memory), (Some(204), None, None, Some(30 * MI)));
    // One without a memory limit: no memory; cpu limits everywhere: quota.
    let c = pod_cgroup_config(&pod(&[("", "200m", "10Mi", "")]), &policy());
    assert_eq!((c.cpu_shares, c.cpu_quota, c.memory), (Some(204), Some(20_000), None));
    // Requests only: shares only.
    let c = pod_cgroup_config(&pod(&[("300m", "", "10Mi", "")]), &policy());
    assert_eq!((c.cpu_shares, c.cpu_quota, c.memory), (Some(307), None, None));
}

#[test]
fn best_effort_gets_two_shares() {
    let c = pod_cgroup_config(&pod(&[("", "", "", "")]), &policy());
    assert_eq!(c, CgroupConfig { cpu_shares: Some(2), ..Default::default() });
}

#[test]
fn cfs_quota_off_pids_limit_and_period() {
    let p = pod(&[("1", "1", "1Gi", "1Gi")]);
    let off = Policy { cpu_cfs_quota: false, pod_pids_limit: 100, ..policy() };
    let c = pod_cgroup_config(&p, &off);
    assert_eq!((c.cpu_quota, c.pids), (Some(-1), Some(100)));
    let short = Policy { cpu_cfs_period_us: 50_000, ..policy() };
    let c = pod_cgroup_config(&p, &short);
    assert_eq!((c.cpu_quota, c.cpu_period), (Some(50_000), Some(50_000)));
}

#[test]
fn overhead_is_added_to_the_pod_cgroup() {
    let mut p = pod(&[("500m", "500m", "64Mi", "64Mi")]);
    let overhead = [("cpu", "250m"), ("memory", "16Mi")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), k8s_openapi::apimachinery::pkg::api::resource::Quantity(v.into())))
        .collect();
    p.spec.as_mut().unwrap().overhead = Some(overhead);
    let c = pod_cgroup_config(&p, &policy());
    assert_eq!(c.cpu_shares, Some(768));
    assert_eq!(c.cpu_quota, Some(75_000));
    assert_eq!(c.memory, Some(80 * MI));
}

#[test]
fn init_containers_take_the_max() {
    let mut p = pod(&[("100m", "", "10Mi", "")]);
    let init: k8s_openapi::api::core::v1::Container = serde_json::from_value(
        serde_json::json!({"name": "init", "image": "x", "resources": {"requests": {"cpu": "1", "memory": "1Mi"}}}),
    )
    .unwrap();
    p.spec.as_mut().unwrap().init_containers = Some(vec![init]);
    let r = pod_requests(&p);
    assert_eq!(r["cpu"], 1000);
    assert_eq!(units(r["memory"]), 10 * MI);
}

#[test]
fn oom_score_adj_table() {
    let cap = 1000 * MI;
    let table: &[(Pod, i64)] = &[
        (pod(&[("1", "1", "1Gi", "1Gi")]), -997),
        (pod(&[("", "", "", "")]), 1000),
        // 1000 - 1000*100/1000 = 900
        (pod(&[("", "", "100Mi", "")]), 900),
        // A tiny request would be 1000: capped at 999.
        (pod(&[("100m", "", "", "")]), 999),
        (pod(&[("", "", "1Ki", "")]), 999),
        // Requesting (nearly) everything: floor 3.
        (pod(&[("", "", "999Mi", "")]), 3),
        (pod(&[("", "", "2000Mi", "")]), 3),
        // Limit only: the request defaults to it (500 of 1000).
        (pod(&[("100m", "", "", "500Mi")]), 500),
    ];
    for (p, want) in table {
        let c = &p.spec.as_ref().unwrap().containers[0];
        assert_eq!(oom_score_adj(p, c, cap), *want, "{:?}", c.resources);
    }
    let mut critical = pod(&[("", "", "", "")]);
    critical.spec.as_mut().unwrap().priority_class_name = Some("system-node-critical".into());
    assert_eq!(oom_score_adj(&critical, &critical.spec.as_ref().unwrap().containers[0], cap), -997);
}

#[test]
fn container_resources_for_cri() {
    let p = pod(&[("250m", "500m", "32Mi", "64Mi"), ("", "", "", ""), ("", "1", "", "")]);
    let cs = &p.spec.as_ref().unwrap().containers;
    let r = container_resources(&p, &cs[0], &policy());
    assert_eq!((r.cpu_shares, r.cpu_quota, r.cpu_period, r.memory_limit_in_bytes), (256, 50_000, 100_000, 64 * MI));
    assert_eq!(r.oom_score_adj, 968);
    let r = container_resources(&p, &cs[1], &policy());
    assert_eq!((r.cpu_shares, r.cpu_quota, r.cpu_period, r.memory_limit_in_bytes), (2, 0, 100_000, 0));
    // No request: shares from the limit.
    let r = container_resources(&p, &cs[2], &policy());
    assert_eq!((r.cpu_shares, r.cpu_quota), (1024, 100_000));
    let off = Policy { cpu_cfs_quota: false, ..policy() };
    let r = container_resources(&p, &cs[0], &off);
    assert_eq!((r.cpu_quota, r.cpu_period), (0, 0));
}

#[test]
fn hugepages_where_requested() {
    assert_eq!(hugepage_size("hugepages-2Mi"), Some(2 * 1024 * 1024));
    assert_eq!(hugepage_size_name(2 * 1024 * 1024), "2MB");
    assert_eq!(hugepage_size_name(1 << 30), "1GB");
    let p: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "p", "uid": "u"},
        "spec": {"containers": [{"name": "c", "image": "x", "resources": {
            "limits": {"hugepages-2Mi": "4Mi", "memory": "10Mi", "cpu": "1"}}}]}
    }))
    .unwrap();
    let r = container_resources(&p, &p.spec.as_ref().unwrap().containers[0], &policy());
    assert_eq!(r.hugepage_limits.len(), 1);
    assert_eq!((r.hugepage_limits[0].page_size.as_str(), r.hugepage_limits[0].limit), ("2MB", 4 << 20));
    assert_eq!(pod_cgroup_config(&p, &policy()).hugepages.get(&(2 << 20)), Some(&(4 << 20)));
    let none = pod(&[("1", "1", "1Gi", "1Gi")]);
    assert!(
        container_resources(&none, &none.spec.as_ref().unwrap().containers[0], &policy()).hugepage_limits.is_empty()
    );
}

#[test]
fn pod_level_resources_set_the_pod_cgroup_and_requests() {
    let p: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "p", "uid": "u"},
        "spec": {
            "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}},
            "containers": [
                {"name": "a", "image": "x", "resources": {"requests": {"cpu": "100m"}}},
                {"name": "b", "image": "x"}
            ]
        }
    }))
    .unwrap();
    assert_eq!(super::super::qos::qos_class(&p), "Guaranteed");
    assert_eq!(pod_requests(&p).get("cpu"), Some(&500));
    let cfg = pod_cgroup_config(&p, &policy());
    assert_eq!(cfg.cpu_quota, Some(50_000));
    assert_eq!(cfg.memory, Some(128 * 1024 * 1024));
    assert_eq!(cfg.cpu_shares, Some(512));
}
