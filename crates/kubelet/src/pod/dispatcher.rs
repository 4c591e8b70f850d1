//! The dispatcher merges the config sources' snapshots into the set of desired pods, keeps one
//! worker per pod, routes PLEG events to workers, and removes pods the runtime runs that no
//! source wants (orphans, e.g. after a manifest was deleted while the kubelet was down).

use super::worker::{self, Handle, Msg, WorkerConfig};
use crate::admission::Handlers;
use crate::cri::labels::{self, PodRef};
use crate::meta::{pod_name, time};
use crate::sources::{Snapshot, SourceKind};
use k8s_openapi::api::core::v1::Pod;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub struct Config {
    pub worker: WorkerConfig,
    /// The admit handlers a new pod must pass (node predicates, resources, node pressure).
    pub admission: Handlers,
    /// The sources that must deliver a first snapshot before orphans may be removed.
    pub sources: HashSet<SourceKind>,
    pub housekeeping: Duration,
}

struct Entry {
    handle: Handle,
    pod: Pod,
    terminating: bool,
}

/// What the eviction manager adds: the evictions to hand to workers.
#[derive(Default)]
pub struct Hooks {
    pub evictions: Option<mpsc::Receiver<super::EvictionRequest>>,
}

/// Runs until `token` is cancelled: then it takes no more snapshots, PLEG events or
/// evictions, and waits for its workers (each under a child token) to stop. The workers are
/// tasks of its own: if the node's bound runs out and the dispatcher is aborted, so are they.
pub async fn run(
    cfg: Config,
    mut snapshots: mpsc::Receiver<Snapshot>,
    mut pleg: mpsc::Receiver<String>,
    mut hooks: Hooks,
    token: CancellationToken,
) {
    // Each worker's task returns its pod's UID when it ends.
    let mut tasks: JoinSet<String> = JoinSet::new();
    let mut by_source: BTreeMap<SourceKind, Vec<Pod>> = BTreeMap::new();
    let mut workers: HashMap<String, Entry> = HashMap::new();
    let mut housekeeping = tokio::time::interval(cfg.housekeeping);
    housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut orphans_pending = HashSet::new();
    // Pods refused at admission: they get a Failed status and never run.
    let mut rejected: HashSet<String> = HashSet::new();

    let spawn = |pod: Pod, terminating: bool, workers: &mut HashMap<String, Entry>, tasks: &mut JoinSet<String>| {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let handle = worker::spawn(pod.clone(), terminating, cfg.worker.clone(), token.child_token(), tasks);
        workers.insert(uid, Entry { handle, pod, terminating });
    };

    loop {
        tokio::select! {
            biased;
            _ = token.cancelled() => break,
            Some(snap) = snapshots.recv() => {
                let mut resized: Vec<String> = Vec::new();
                by_source.insert(snap.source, snap.pods);
                let all: HashMap<String, &Pod> = by_source
                    .values()
                    .flatten()
                    .map(|p| (p.metadata.uid.clone().unwrap_or_default(), p))
                    .collect();
                for (uid, e) in workers.iter_mut() {
                    match all.get(uid) {
                        None if !e.terminating => {
                            e.terminating = true;
                            e.handle.send(Msg::Terminate);
                        }
                        // Deleted through the API: kill with the requested grace period.
                        Some(p) if !e.terminating && p.metadata.deletion_timestamp.is_some() => {
                            tracing::info!(pod = %pod_name(p), "pod deleted through the API");
                            e.pod = (*p).clone();
                            e.terminating = true;
                            e.handle.send(Msg::Update(Box::new(e.pod.clone())));
                            e.handle.send(Msg::Terminate);
                        }
                        Some(p) if !e.terminating && !same_desired(p, &e.pod) => {
                            e.pod = (*p).clone();
                            resized.push(uid.clone());
                        }
                        _ => {}
                    }
                }
                // Updated pods: a changed resize is evaluated against the other pods'
                // allocations before the worker sees the pod (upstream's HandlePodUpdates →
                // handlePodResourcesResize); resizes waiting for room are tried again after.
                for uid in &resized {
                    resize(&cfg, &workers, uid);
                    if let Some(e) = workers.get(uid) {
                        e.handle.send(Msg::Update(Box::new(e.pod.clone())));
                    }
                }
                if !resized.is_empty() {
                    retry_pending_resizes(&cfg, &workers);
                }
                for uid in rejected.iter().filter(|u| !all.contains_key(*u)) {
                    cfg.worker.statuses.remove(uid);
                }
                rejected.retain(|u| all.contains_key(u));
                // What is already admitted, computed once per snapshot (not per new pod).
                let mut admitted: Vec<Pod> = workers
                    .iter()
                    .filter(|(u, e)| !e.terminating && !cfg.worker.statuses.is_terminal(u))
                    .map(|(_, e)| cfg.worker.deps.allocation.allocated_pod(&e.pod))
                    .collect();
                let mut uids: Vec<&String> = all.keys().collect();
                // Admit in creation order, as upstream does.
                uids.sort_by_key(|u| all[*u].metadata.creation_timestamp.as_ref().map(|t| t.0));
                for uid in uids {
                    let pod = all[uid];
                    if !workers.contains_key(uid) && !rejected.contains(uid) && pod.metadata.deletion_timestamp.is_none() {
                        // Admitted with its allocation when it has one (a kubelet restart:
                        // the checkpoint is the source of truth), as upstream's AddPod.
                        let allocation = &cfg.worker.deps.allocation;
                        let pod_allocated = allocation.allocated_pod(pod);
                        let refs: Vec<&Pod> = admitted.iter().collect();
                        if let Err(r) = cfg.admission.admit(&pod_allocated, &refs) {
                            tracing::warn!(pod = %pod_name(pod), reason = %r.reason, "{}", r.message);
                            // Upstream's rejectPod: a Warning event with the handler's message,
                            // the status message prefixed.
                            let events = &cfg.worker.deps.events;
                            events.pod(pod, None, crate::event_recorder::Type::Warning, &r.reason, r.message.clone());
                            let status = k8s_openapi::api::core::v1::PodStatus {
                                phase: Some("Failed".into()),
                                reason: Some(r.reason),
                                message: Some(format!("Pod was rejected: {}", r.message)),
                                start_time: Some(time(cfg.worker.deps.clock.now())),
                                ..Default::default()
                            };
                            cfg.worker.statuses.set(pod, status);
                            rejected.insert(uid.clone());
                            continue;
                        }
                        allocation.add_pod(&pod_allocated);
                        admitted.push(pod_allocated);
                    }
                    if !workers.contains_key(uid) && !rejected.contains(uid) {
                        let deleting = pod.metadata.deletion_timestamp.is_some();
                        tracing::info!(pod = %pod_name(pod), uid = %uid, deleting, "pod added");
                        spawn((*pod).clone(), deleting, &mut workers, &mut tasks);
                        // A resize left pending when the kubelet stopped is evaluated again.
                        if !deleting && resize(&cfg, &workers, uid) && let Some(e) = workers.get(uid.as_str()) {
                            e.handle.send(Msg::Update(Box::new(e.pod.clone())));
                        }
                    }
                }
                if cfg.sources.iter().all(|s| by_source.contains_key(s)) {
                    // Sources are ready: anything else in the runtime is an orphan.
                    housekeeping.reset_immediately();
                }
            }
            Some(req) = async { match hooks.evictions.as_mut() { Some(rx) => rx.recv().await, None => None } } => {
                match workers.get(&req.uid) {
                    Some(e) if !e.terminating => { e.handle.send(Msg::Evict(req.eviction)); }
                    _ => tracing::info!(uid = %req.uid, "eviction of a pod that is no longer running; ignored"),
                }
            }
            Some(uid) = pleg.recv() => {
                match workers.get(&uid) {
                    Some(e) => { e.handle.send(Msg::RuntimeEvent); }
                    None => { orphans_pending.insert(uid); }
                }
            }
            Some(ended) = tasks.join_next() => {
                let uid = match ended {
                    Ok(uid) => uid,
                    Err(e) => {
                        tracing::error!(error = %e, "pod worker panicked");
                        continue;
                    }
                };
                if workers.get(&uid).is_some_and(|e| e.terminating) {
                    workers.remove(&uid);
                    // Room was made: deferred resizes are tried again.
                    retry_pending_resizes(&cfg, &workers);
                }
                // The pod may be wanted again (same manifest put back): start it afresh.
                if let Some(pod) = by_source
                    .values()
                    .flatten()
                    .find(|p| p.metadata.uid.as_deref() == Some(uid.as_str()) && p.metadata.deletion_timestamp.is_none())
                    .cloned()
                    && !workers.contains_key(&uid)
                {
                    let source = pod.metadata.annotations.as_ref().and_then(|a| a.get("kubernetes.io/config.source"));
                    cfg.worker.deps.metrics.restarted_pod(source.is_some_and(|s| s != "api"));
                    spawn(pod, false, &mut workers, &mut tasks);
                }
            }
            _ = housekeeping.tick() => {
                if !cfg.sources.iter().all(|s| by_source.contains_key(s)) {
                    continue;
                }
                orphans_pending.clear();
                // Deferred resizes are retried periodically too (upstream: every 3 minutes).
                retry_pending_resizes(&cfg, &workers);
                // The node's object reader forgets pods without a worker, and what only they read.
                if let Some(objects) = &cfg.worker.deps.objects {
                    objects.retain_pods(&workers.keys().cloned().collect());
                }
                match cfg.worker.deps.runtime.list_pod_sandboxes(None).await {
                    Ok(sandboxes) => {
                        let mut seen = HashSet::new();
                        for sb in sandboxes {
                            let Some(r) = PodRef::from_labels(&sb.labels) else { continue };
                            if workers.contains_key(&r.uid) || !seen.insert(r.uid.clone()) {
                                continue;
                            }
                            tracing::info!(pod = %format!("{}/{}", r.namespace, r.name), uid = %r.uid, "removing pod no source wants");
                            let grace = grace_from_runtime(&cfg, &r.uid).await;
                            spawn(orphan_pod(&r, grace), true, &mut workers, &mut tasks);
                        }
                        // Volumes and directories of pods nothing runs or wants (deleted while
                        // the kubelet was down).
                        let known: HashSet<String> = workers.keys().cloned().collect();
                        cfg.worker.deps.volumes.cleanup_orphans(&known);
                        cfg.worker.deps.allocation.remove_orphans(&known);
                    }
                    Err(e) => tracing::warn!(error = %e, "housekeeping: cannot list sandboxes"),
                }
            }
            else => break,
        }
        if !orphans_pending.is_empty() && cfg.sources.iter().all(|s| by_source.contains_key(s)) {
            housekeeping.reset_immediately();
            orphans_pending.clear();
        }
    }
    tracing::info!(workers = tasks.len(), "stopping pod workers; pods keep running");
    while let Some(ended) = tasks.join_next().await {
        if let Err(e) = ended
            && e.is_panic()
        {
            tracing::error!(error = %e, "pod worker panicked");
        }
    }
}

/// Evaluates the resize of an admitted pod against the other running pods' allocations;
/// returns whether its allocation changed.
fn resize(cfg: &Config, workers: &HashMap<String, Entry>, uid: &str) -> bool {
    let Some(e) = workers.get(uid) else { return false };
    let allocation = &cfg.worker.deps.allocation;
    let others: Vec<Pod> = workers
        .iter()
        .filter(|(u, o)| u.as_str() != uid && !o.terminating && !cfg.worker.statuses.is_terminal(u))
        .map(|(_, o)| allocation.allocated_pod(&o.pod))
        .collect();
    let events = &cfg.worker.deps.events;
    use crate::allocation::{Resized, event_message};
    use crate::event_recorder::Type;
    match allocation.handle_resize(&e.pod, &others, cfg.worker.deps.clock.now()) {
        Resized::Allocated => {
            tracing::info!(pod = %pod_name(&e.pod), "pod resize allocated");
            events.pod(&e.pod, None, Type::Normal, "ResizeStarted", event_message("Pod resize started", &e.pod, ""));
            true
        }
        Resized::Pending { reason, message, new: true } => {
            tracing::info!(pod = %pod_name(&e.pod), %reason, "pod resize pending: {message}");
            let kind = if reason == "Infeasible" { "ResizeInfeasible" } else { "ResizeDeferred" };
            let text = event_message(&format!("Pod resize {reason}"), &e.pod, &message);
            events.pod(&e.pod, None, Type::Warning, kind, text);
            false
        }
        _ => false,
    }
}

/// Deferred resizes tried again (upstream's RetryPendingResizes); a pod whose resize is now
/// allocated is synced.
fn retry_pending_resizes(cfg: &Config, workers: &HashMap<String, Entry>) {
    for uid in cfg.worker.deps.allocation.pending() {
        if resize(cfg, workers, &uid)
            && let Some(e) = workers.get(&uid)
        {
            e.handle.send(Msg::Update(Box::new(e.pod.clone())));
        }
    }
}

/// Whether two versions of a pod want the same thing: the API's bookkeeping (resourceVersion,
/// managed fields, the status the kubelet itself wrote) does not count; the conditions of its
/// readiness gates, which other actors write into the status, do (Ready follows them).
fn same_desired(a: &Pod, b: &Pod) -> bool {
    let strip = |p: &Pod| {
        let mut m = p.metadata.clone();
        m.resource_version = None;
        m.managed_fields = None;
        (m, p.spec.clone())
    };
    strip(a) == strip(b) && gate_conditions(a) == gate_conditions(b)
}

/// The type and status of each readiness gate's condition in the pod's status.
fn gate_conditions(p: &Pod) -> Vec<(&str, Option<&str>)> {
    let conditions = p.status.as_ref().and_then(|s| s.conditions.as_deref()).unwrap_or_default();
    let gates = p.spec.as_ref().and_then(|s| s.readiness_gates.as_deref()).unwrap_or_default();
    gates
        .iter()
        .map(|g| {
            let c = conditions.iter().find(|c| c.type_ == g.condition_type);
            (g.condition_type.as_str(), c.map(|c| c.status.as_str()))
        })
        .collect()
}

/// The grace period recorded on an orphan's containers (30 s if none).
async fn grace_from_runtime(cfg: &Config, uid: &str) -> i64 {
    let selector = HashMap::from([(labels::POD_UID.to_string(), uid.to_string())]);
    let filter = crate::cri::api::ContainerFilter { label_selector: selector, ..Default::default() };
    cfg.worker
        .deps
        .runtime
        .list_containers(Some(filter))
        .await
        .ok()
        .and_then(|cs| cs.iter().find_map(|c| labels::ContainerAnnotations::parse(&c.annotations).termination_grace))
        .unwrap_or(30)
}

fn orphan_pod(r: &PodRef, grace: i64) -> Pod {
    let mut pod = Pod::default();
    pod.metadata.name = Some(r.name.clone());
    pod.metadata.namespace = Some(r.namespace.clone());
    pod.metadata.uid = Some(r.uid.clone());
    pod.spec = Some(k8s_openapi::api::core::v1::PodSpec {
        termination_grace_period_seconds: Some(grace),
        ..Default::default()
    });
    pod
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(rv: &str, conditions: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "uid": "u1", "resourceVersion": rv},
            "spec": {"containers": [], "readinessGates": [{"conditionType": "example.com/gate"}]},
            "status": {"phase": "Running", "conditions": conditions},
        }))
        .unwrap()
    }

    #[test]
    fn a_readiness_gate_condition_change_reaches_the_worker_and_the_kubelets_own_writes_do_not() {
        let base = pod("1", json!([{"type": "Ready", "status": "False"}]));
        // The kubelet's own status write (a new resourceVersion) is no change.
        assert!(same_desired(&base, &pod("2", json!([{"type": "Ready", "status": "True"}]))));
        let gated = pod("3", json!([{"type": "example.com/gate", "status": "True"}]));
        assert!(!same_desired(&base, &gated));
        let flipped = pod("4", json!([{"type": "example.com/gate", "status": "False"}]));
        assert!(!same_desired(&gated, &flipped));
    }

    #[test]
    fn an_added_ephemeral_container_reaches_the_worker() {
        let base = pod("1", json!([]));
        let mut debugged = pod("2", json!([]));
        let ec = serde_json::from_value(json!({"name": "debugger", "image": "busybox", "targetContainerName": "app"}));
        debugged.spec.as_mut().unwrap().ephemeral_containers = Some(vec![ec.unwrap()]);
        assert!(!same_desired(&base, &debugged));
    }
}
