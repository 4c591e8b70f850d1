//! Container garbage collection (upstream kuberuntime_gc.go): dead containers and stopped
//! sandboxes of pods the kubelet no longer knows are removed every minute. A known pod's dead
//! instances are its worker's business (the plan keeps the two newest of each container, for
//! status and `--previous` logs); under disk pressure every dead instance but the newest of each
//! container goes too.

use crate::cri::api::{self, ContainerState, PodSandboxState};
use crate::cri::labels::{CONTAINER_NAME, POD_NAME, POD_NAMESPACE, POD_UID};
use crate::cri::{DynRuntime, nanos_to_time};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// What to remove, containers before sandboxes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    pub containers: Vec<String>,
    pub sandboxes: Vec<String>,
}

/// Picks what to remove. `known(uid)` says whether the kubelet still has the pod; `aggressive`
/// is the disk-pressure mode. Only instances older than `min_age` count; running containers
/// and ready sandboxes are never picked.
pub fn select(
    containers: &[api::Container],
    sandboxes: &[api::PodSandbox],
    known: &(dyn Fn(&str) -> bool + Sync),
    aggressive: bool,
    now: SystemTime,
    min_age: Duration,
) -> Selection {
    let old_enough =
        |created: i64| nanos_to_time(created).is_none_or(|t| now.duration_since(t).unwrap_or_default() >= min_age);
    let uid_of = |labels: &HashMap<String, String>| labels.get(POD_UID).cloned().unwrap_or_default();
    let mut groups: HashMap<(String, String), Vec<&api::Container>> = HashMap::new();
    for c in containers.iter().filter(|c| c.state != ContainerState::ContainerRunning as i32) {
        let name = c.labels.get(CONTAINER_NAME).cloned().unwrap_or_default();
        groups.entry((uid_of(&c.labels), name)).or_default().push(c);
    }
    let mut out = Selection::default();
    for ((uid, _), mut dead) in groups {
        dead.sort_by_key(|c| std::cmp::Reverse(c.created_at));
        let keep = if uid.is_empty() || !known(&uid) {
            0
        } else if aggressive {
            1
        } else {
            continue;
        };
        out.containers.extend(dead.iter().skip(keep).filter(|c| old_enough(c.created_at)).map(|c| c.id.clone()));
    }
    out.containers.sort();
    // A stopped sandbox of a gone pod goes once nothing of it is left.
    for s in sandboxes.iter().filter(|s| s.state != PodSandboxState::SandboxReady as i32) {
        let uid = uid_of(&s.labels);
        if uid.is_empty() || known(&uid) || !old_enough(s.created_at) {
            continue;
        }
        let left = containers.iter().any(|c| c.pod_sandbox_id == s.id && !out.containers.contains(&c.id));
        if !left {
            out.sandboxes.push(s.id.clone());
        }
    }
    out.sandboxes.sort();
    out
}

/// The `/var/log/containers` link of a container, as the executor names it.
fn log_link(dir: &std::path::Path, c: &api::Container) -> Option<PathBuf> {
    let l = &c.labels;
    let mut name = format!("{}_{}_{}-{}", l.get(POD_NAME)?, l.get(POD_NAMESPACE)?, l.get(CONTAINER_NAME)?, c.id);
    if name.len() > 251 {
        let mut cut = 251;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
    }
    Some(dir.join(format!("{name}.log")))
}

/// One collection: lists the runtime, selects, removes. Returns how many containers and
/// sandboxes went.
pub async fn collect(
    runtime: &DynRuntime,
    known: &(dyn Fn(&str) -> bool + Sync),
    aggressive: bool,
    now: SystemTime,
    min_age: Duration,
    container_logs_dir: &std::path::Path,
) -> Result<(usize, usize), crate::cri::CriError> {
    let containers = runtime.list_containers(None).await?;
    let sandboxes = runtime.list_pod_sandboxes(None).await?;
    let sel = select(&containers, &sandboxes, known, aggressive, now, min_age);
    let mut removed = (0, 0);
    for id in &sel.containers {
        if let Some(link) = containers.iter().find(|c| &c.id == id).and_then(|c| log_link(container_logs_dir, c)) {
            let _ = std::fs::remove_file(link);
        }
        match runtime.remove_container(id).await {
            Ok(()) => removed.0 += 1,
            Err(e) if e.is_not_found() => {}
            Err(e) => tracing::warn!(container = %id, error = %e, "container GC: cannot remove container"),
        }
    }
    for id in &sel.sandboxes {
        match runtime.remove_pod_sandbox(id).await {
            Ok(()) => removed.1 += 1,
            Err(e) if e.is_not_found() => {}
            Err(e) => tracing::warn!(sandbox = %id, error = %e, "container GC: cannot remove sandbox"),
        }
    }
    if removed != (0, 0) {
        tracing::info!(
            containers = removed.0,
            sandboxes = removed.1,
            aggressive,
            "container GC removed dead instances"
        );
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_000_000_000_000_000_000;

    fn labels(uid: &str, name: &str) -> HashMap<String, String> {
        HashMap::from([
            (POD_UID.to_string(), uid.to_string()),
            (CONTAINER_NAME.to_string(), name.to_string()),
            (POD_NAME.to_string(), "p".to_string()),
            (POD_NAMESPACE.to_string(), "ns".to_string()),
        ])
    }

    fn container(id: &str, uid: &str, name: &str, running: bool, age_secs: i64) -> api::Container {
        api::Container {
            id: id.into(),
            pod_sandbox_id: format!("sb-{uid}"),
            state: if running { ContainerState::ContainerRunning } else { ContainerState::ContainerExited } as i32,
            created_at: T0 - age_secs * 1_000_000_000,
            labels: labels(uid, name),
            ..Default::default()
        }
    }

    fn sandbox(uid: &str, ready: bool) -> api::PodSandbox {
        api::PodSandbox {
            id: format!("sb-{uid}"),
            state: if ready { PodSandboxState::SandboxReady } else { PodSandboxState::SandboxNotready } as i32,
            created_at: T0 - 600_000_000_000,
            labels: labels(uid, ""),
            ..Default::default()
        }
    }

    fn now() -> SystemTime {
        nanos_to_time(T0).unwrap()
    }

    #[test]
    fn dead_instances_and_stopped_sandboxes_of_gone_pods_are_removed() {
        let cs = vec![
            container("gone-1", "gone", "app", false, 100),
            container("gone-2", "gone", "app", false, 50),
            container("live-run", "live", "app", true, 100),
            container("live-dead", "live", "app", false, 200),
            container("live-older", "live", "app", false, 300),
        ];
        let sbs = vec![sandbox("gone", false), sandbox("live", true)];
        let known = |u: &str| u == "live";
        let sel = select(&cs, &sbs, &known, false, now(), Duration::ZERO);
        assert_eq!(
            sel,
            Selection { containers: vec!["gone-1".into(), "gone-2".into()], sandboxes: vec!["sb-gone".into()] }
        );
    }

    #[test]
    fn under_disk_pressure_only_the_newest_dead_instance_of_a_known_container_stays() {
        let cs = vec![
            container("live-run", "live", "app", true, 10),
            container("dead-new", "live", "app", false, 200),
            container("dead-old", "live", "app", false, 300),
            container("side-only", "live", "side", false, 300),
        ];
        let known = |_: &str| true;
        let sel = select(&cs, &[], &known, true, now(), Duration::ZERO);
        assert_eq!(sel.containers, vec!["dead-old".to_string()]);
    }

    #[test]
    fn young_instances_and_sandboxes_with_containers_left_stay() {
        let cs = vec![container("young", "gone", "app", false, 5), container("old", "gone", "app", false, 120)];
        let sbs = vec![sandbox("gone", false)];
        let sel = select(&cs, &sbs, &|_: &str| false, false, now(), Duration::from_secs(60));
        assert_eq!(sel, Selection { containers: vec!["old".into()], sandboxes: vec![] });
        // A ready sandbox of an unknown pod is the dispatcher's orphan cleanup, not GC.
        let sel = select(&[], &[sandbox("gone", true)], &|_: &str| false, false, now(), Duration::ZERO);
        assert!(sel.sandboxes.is_empty());
    }

    #[tokio::test]
    async fn collect_removes_through_the_runtime() {
        use crate::cri::Runtime;
        let rt = crate::cri::fake::FakeRuntime::new();
        let sb = rt
            .run_pod_sandbox(api::PodSandboxConfig {
                labels: labels("gone", ""),
                metadata: Some(api::PodSandboxMetadata {
                    name: "p".into(),
                    namespace: "ns".into(),
                    uid: "gone".into(),
                    attempt: 0,
                }),
                ..Default::default()
            })
            .await
            .unwrap();
        rt.stop_pod_sandbox(&sb).await.unwrap();
        let dyn_rt: DynRuntime = std::sync::Arc::new(rt.clone());
        let dir = tempfile::tempdir().unwrap();
        let (c, s) =
            collect(&dyn_rt, &|_: &str| false, false, SystemTime::now(), Duration::ZERO, dir.path()).await.unwrap();
        assert_eq!((c, s), (0, 1));
        assert_eq!(rt.sandbox_count(), 0);
    }
}
