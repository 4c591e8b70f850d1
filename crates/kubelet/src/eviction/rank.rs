//! Which pod goes first, and what its status says (upstream rankMemoryPressure,
//! rankDiskPressureFunc, rankPIDPressure, evictionMessage, localStorageEviction). Pure.

use super::thresholds::{Observations, Resource, Signal, Threshold};
use crate::cm::resources::{container_requests, pod_limits, pod_requests, units};
use crate::stats::types::{FsStats, PodStats};
use k8s_openapi::api::core::v1::Pod;
use std::borrow::Borrow;
use std::collections::HashMap;

/// Pod stats by UID, from one Summary.
pub type StatsByUid<'a> = HashMap<&'a str, &'a PodStats>;

pub fn stats_by_uid(pods: &[PodStats]) -> StatsByUid<'_> {
    pods.iter().map(|p| (p.pod_ref.uid.as_str(), p)).collect()
}

fn uid(p: &Pod) -> &str {
    p.metadata.uid.as_deref().unwrap_or_default()
}

fn priority(p: &Pod) -> i32 {
    p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// Upstream's IsCriticalPod: static and mirror pods, and priority ≥ 2000000000 (system-node-critical
/// and system-cluster-critical). The kubelet never evicts these and admits them under pressure.
pub fn is_critical(p: &Pod) -> bool {
    let ann = p.metadata.annotations.as_ref();
    let source = ann.and_then(|a| a.get("kubernetes.io/config.source")).map(String::as_str);
    let mirror = ann.is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
    matches!(source, Some("file" | "http")) || mirror || priority(p) >= 2_000_000_000
}

fn request(p: &Pod, resource: &str) -> i64 {
    units(pod_requests(p).get(resource).copied().unwrap_or(0))
}

fn used(f: &Option<FsStats>, inodes: bool) -> i64 {
    f.as_ref().and_then(|f| if inodes { f.inodes_used } else { f.used_bytes }).unwrap_or(0) as i64
}

/// Which of a pod's filesystem figures a disk signal counts. With one filesystem for images and
/// the node everything counts; with a dedicated image filesystem, nodefs counts logs and local
/// volumes and imagefs the containers' writable layers.
fn disk_usage(s: &PodStats, signal: Signal, dedicated_image_fs: bool) -> i64 {
    let inodes = signal.resource() == Resource::Inodes;
    let image_side = matches!(signal, Signal::ImageFsAvailable | Signal::ImageFsInodesFree);
    let (root, logs_and_volumes) = match (dedicated_image_fs, image_side) {
        (false, _) => (true, true),
        (true, true) => (true, false),
        (true, false) => (false, true),
    };
    let mut total = 0;
    for c in &s.containers {
        if root {
            total += used(&c.rootfs, inodes);
        }
        if logs_and_volumes {
            total += used(&c.logs, inodes);
        }
    }
    if logs_and_volumes {
        total += s.volume.iter().flatten().map(|v| used(&Some(v.fs.clone()), inodes)).sum::<i64>();
    }
    total
}

fn memory_usage(s: &PodStats) -> i64 {
    s.memory.as_ref().and_then(|m| m.working_set_bytes).unwrap_or(0) as i64
}

/// The pod's usage of what `signal` measures (None without stats: such pods go first).
fn usage(p: &Pod, stats: &StatsByUid, signal: Signal, dedicated_image_fs: bool) -> Option<i64> {
    let s = stats.get(uid(p))?;
    Some(match signal.resource() {
        Resource::Memory => memory_usage(s),
        Resource::Pids => s.process_stats.as_ref().and_then(|p| p.process_count).unwrap_or(0) as i64,
        Resource::EphemeralStorage | Resource::Inodes => disk_usage(s, signal, dedicated_image_fs),
    })
}

/// Orders `pods` for eviction under `signal`, first to evict first: memory and disk — usage
/// above requests first, then lower priority, then larger usage above requests; pids — lower
/// priority, then more processes. Pods without stats come first. `pods` may be shared (`Arc`s).
pub fn rank<P: Borrow<Pod>>(pods: &mut [P], signal: Signal, stats: &StatsByUid, dedicated_image_fs: bool) {
    let req_name = match signal.resource() {
        Resource::Memory => "memory",
        _ => "ephemeral-storage",
    };
    // Inodes have no requests (upstream compares against a zero request).
    let req = |p: &Pod| if signal.resource() == Resource::Inodes { 0 } else { request(p, req_name) };
    pods.sort_by(|a, b| {
        let (a, b) = (a.borrow(), b.borrow());
        let (ua, ub) = (usage(a, stats, signal, dedicated_image_fs), usage(b, stats, signal, dedicated_image_fs));
        // Pods without stats first.
        let (Some(ua), Some(ub)) = (ua, ub) else { return ua.is_some().cmp(&ub.is_some()) };
        if signal == Signal::PidAvailable {
            return priority(a).cmp(&priority(b)).then(ub.cmp(&ua));
        }
        let (ra, rb) = (req(a), req(b));
        let exceeds = |u: i64, r: i64| u > r;
        exceeds(ub, rb).cmp(&exceeds(ua, ra)).then(priority(a).cmp(&priority(b))).then((ub - rb).cmp(&(ua - ra)))
    });
}

/// The threshold quantity and what is available for the first acted-on threshold of `resource`.
fn threshold_met_info(resource: Resource, thresholds: &[Threshold], obs: &Observations) -> Option<(i64, i64)> {
    thresholds.iter().filter(|t| t.signal.resource() == resource).find_map(|t| {
        let o = obs.get(&t.signal)?;
        Some((t.value.quantity(o.capacity), o.available))
    })
}

/// Upstream's eviction message: the resource, the threshold and what was available, and each
/// container using more than it requested.
pub fn message(pod: &Pod, signal: Signal, thresholds: &[Threshold], obs: &Observations, stats: &StatsByUid) -> String {
    let resource = signal.resource();
    let mut m = format!("The node was low on resource: {}. ", resource.as_str());
    if let Some((q, avail)) = threshold_met_info(resource, thresholds, obs) {
        m += &format!("Threshold quantity: {}, available: {}. ", resource.format(q), resource.format(avail));
    }
    let Some(s) = stats.get(uid(pod)) else { return m };
    let spec = pod.spec.clone().unwrap_or_default();
    let containers: Vec<_> = spec.containers.iter().chain(spec.init_containers.iter().flatten()).collect();
    for cs in &s.containers {
        let Some(c) = containers.iter().find(|c| c.name == cs.name) else { continue };
        let usage = match resource {
            Resource::Memory => cs.memory.as_ref().and_then(|m| m.working_set_bytes).map(|u| u as i64),
            Resource::EphemeralStorage => match (&cs.rootfs, &cs.logs) {
                (Some(r), Some(l)) => r.used_bytes.zip(l.used_bytes).map(|(r, l)| (r + l) as i64),
                _ => None,
            },
            _ => None,
        };
        let req_text = c
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get(resource.as_str()))
            .map(|q| q.0.clone());
        let req = units(container_requests(c).get(resource.as_str()).copied().unwrap_or(0));
        if let Some(u) = usage.filter(|u| *u > req) {
            m += &format!(
                "Container {} was using {}, request is {}, has larger consumption of {}. ",
                c.name,
                resource.format(u),
                req_text.unwrap_or_else(|| "0".into()),
                resource.as_str()
            );
        }
    }
    m
}

/// A pod past a local-storage limit: an emptyDir over its sizeLimit, or the pod over the sum of
/// its containers' ephemeral-storage limits. Returns the eviction message and the metric's
/// signal label (upstream's `emptydirfs.limit` / `ephemeralpodfs.limit`).
pub fn local_storage_violation(pod: &Pod, stats: &PodStats) -> Option<(String, &'static str)> {
    let spec = pod.spec.as_ref()?;
    for v in spec.volumes.iter().flatten() {
        let Some(ed) = &v.empty_dir else { continue };
        let Some(limit) = ed.size_limit.as_ref() else { continue };
        let limit_bytes = units(crate::cm::resources::milli(limit));
        let used =
            stats.volume.iter().flatten().find(|s| s.name == v.name).and_then(|s| s.fs.used_bytes).map(|u| u as i64);
        if limit_bytes > 0 && used.is_some_and(|u| u > limit_bytes) {
            return Some((
                format!("Usage of EmptyDir volume {:?} exceeds the limit {:?}. ", v.name, limit.0),
                "emptydirfs.limit",
            ));
        }
    }
    let limit = pod_limits(pod).get("ephemeral-storage").copied().map(units)?;
    let used = stats.ephemeral_storage.as_ref().and_then(|e| e.used_bytes)? as i64;
    (used > limit).then(|| {
        (
            format!(
                "Pod ephemeral local storage usage exceeds the total limit of containers {}. ",
                super::thresholds::format_binary(limit)
            ),
            "ephemeralpodfs.limit",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eviction::thresholds::{Observation, Value};
    use crate::stats::types::*;

    fn pod(name: &str, priority: i32, mem_request: &str) -> Pod {
        let resources = if mem_request.is_empty() {
            serde_json::json!({})
        } else {
            serde_json::json!({"requests": {"memory": mem_request}})
        };
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "uid": name, "annotations": {"kubernetes.io/config.source": "api"}},
            "spec": {"priority": priority, "containers": [{"name": "app", "image": "x", "resources": resources}]}
        }))
        .unwrap()
    }

    fn stats(uid: &str, working_set: u64) -> PodStats {
        PodStats {
            pod_ref: PodReference { name: uid.into(), namespace: "default".into(), uid: uid.into() },
            start_time: None,
            containers: vec![ContainerStats {
                name: "app".into(),
                start_time: None,
                cpu: None,
                memory: Some(MemoryStats { working_set_bytes: Some(working_set), ..Default::default() }),
                rootfs: Some(FsStats { used_bytes: Some(working_set), inodes_used: Some(1), ..Default::default() }),
                logs: Some(FsStats { used_bytes: Some(0), inodes_used: Some(1), ..Default::default() }),
            }],
            cpu: None,
            memory: Some(MemoryStats { working_set_bytes: Some(working_set), ..Default::default() }),
            network: None,
            volume: None,
            ephemeral_storage: None,
            process_stats: Some(ProcessStats { process_count: Some(working_set) }),
        }
    }

    fn names(pods: &[Pod]) -> Vec<&str> {
        pods.iter().map(|p| p.metadata.name.as_deref().unwrap()).collect()
    }

    #[test]
    fn memory_ranks_exceeding_requests_then_priority_then_usage_above_request() {
        let mut pods = vec![
            pod("guaranteed-big", 0, "1Gi"),
            pod("besteffort-small", 0, ""),
            pod("besteffort-big", 0, ""),
            pod("important-hog", 1000, ""),
            pod("burstable-over", 0, "100"),
        ];
        let all = vec![
            stats("guaranteed-big", 900 << 20),
            stats("besteffort-small", 10),
            stats("besteffort-big", 500),
            stats("important-hog", 5000),
            stats("burstable-over", 150),
        ];
        let by = stats_by_uid(&all);
        rank(&mut pods, Signal::MemoryAvailable, &by, false);
        // Over their requests: the priority-0 pods by usage above request, then the important
        // one; the pod below its request last although it uses the most.
        assert_eq!(
            names(&pods),
            ["besteffort-big", "burstable-over", "besteffort-small", "important-hog", "guaranteed-big"]
        );
    }

    #[test]
    fn pods_without_stats_go_first_and_pids_rank_by_priority_then_count() {
        let mut pods = vec![pod("a", 0, ""), pod("nostats", 0, ""), pod("b", -5, "")];
        let all = vec![stats("a", 10), stats("b", 1)];
        let by = stats_by_uid(&all);
        rank(&mut pods, Signal::MemoryAvailable, &by, false);
        assert_eq!(names(&pods)[0], "nostats");
        let mut pods = vec![pod("a", 0, ""), pod("c", 0, ""), pod("b", -5, "")];
        let all = vec![stats("a", 10), stats("b", 1), stats("c", 20)];
        let by = stats_by_uid(&all);
        rank(&mut pods, Signal::PidAvailable, &by, false);
        assert_eq!(names(&pods), ["b", "c", "a"]);
    }

    #[test]
    fn disk_ranks_by_ephemeral_storage_above_request() {
        let mut pods = vec![pod("small", 0, ""), pod("big", 0, "")];
        let all = vec![stats("small", 10), stats("big", 1000)];
        let by = stats_by_uid(&all);
        rank(&mut pods, Signal::NodeFsAvailable, &by, false);
        assert_eq!(names(&pods), ["big", "small"]);
        // With a dedicated image filesystem, nodefs counts logs and volumes only: a tie.
        rank(&mut pods, Signal::ImageFsAvailable, &by, true);
        assert_eq!(names(&pods), ["big", "small"]);
    }

    #[test]
    fn the_message_names_the_signal_threshold_and_the_greedy_container() {
        let p = pod("hog", 0, "64Mi");
        let all = vec![stats("hog", 300 << 20)];
        let by = stats_by_uid(&all);
        let th = [Threshold {
            signal: Signal::MemoryAvailable,
            value: Value::Quantity(100 << 20),
            grace_period: std::time::Duration::ZERO,
            min_reclaim: None,
        }];
        let obs =
            Observations::from([(Signal::MemoryAvailable, Observation { available: 50 << 20, capacity: 1 << 30 })]);
        assert_eq!(
            message(&p, Signal::MemoryAvailable, &th, &obs, &by),
            "The node was low on resource: memory. Threshold quantity: 100Mi, available: 50Mi. \
             Container app was using 300Mi, request is 64Mi, has larger consumption of memory. "
        );
    }

    #[test]
    fn static_mirror_and_system_critical_pods_are_critical() {
        let mut p = pod("x", 0, "");
        assert!(!is_critical(&p));
        p.metadata.annotations = Some([("kubernetes.io/config.source".to_string(), "file".to_string())].into());
        assert!(is_critical(&p));
        let mut p = pod("y", 2_000_000_000, "");
        assert!(is_critical(&p));
        p.spec.as_mut().unwrap().priority = Some(0);
        assert!(!is_critical(&p));
    }

    #[test]
    fn an_empty_dir_over_its_size_limit_is_a_violation() {
        let p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "uid": "p"},
            "spec": {"containers": [{"name": "app", "image": "x"}],
                     "volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": "1Mi"}}, {"name": "free", "emptyDir": {}}]}
        }))
        .unwrap();
        let mut s = stats("p", 0);
        let vol = |name: &str, used: u64| VolumeStats {
            fs: FsStats { used_bytes: Some(used), ..Default::default() },
            name: name.into(),
        };
        s.volume = Some(vec![vol("scratch", 1 << 20), vol("free", 1 << 30)]);
        assert_eq!(local_storage_violation(&p, &s), None, "exactly at the limit is fine");
        s.volume = Some(vec![vol("scratch", (1 << 20) + 4096)]);
        assert_eq!(
            local_storage_violation(&p, &s),
            Some(("Usage of EmptyDir volume \"scratch\" exceeds the limit \"1Mi\". ".into(), "emptydirfs.limit"))
        );
    }
}
