//! Sends pod statuses to the API server: patches an API pod's status only when it changed,
//! keeps a mirror pod for every static pod (recreated if someone deletes it, replaced when the
//! manifest changes), and deletes a pod object (grace 0) once the kubelet has removed the pod.
//! A failed call is retried on the next round with the newest status: nothing is lost while
//! the API server is away.

use super::Statuses;
use crate::api::{ApiError, DynApi};
use crate::sources::manifest::{CONFIG_HASH, CONFIG_MIRROR, CONFIG_SOURCE};
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct Config {
    pub node_name: String,
    /// How often to re-check mirror pods and retry failed writes even without changes.
    pub resync: Duration,
}

struct Sent {
    namespace: String,
    name: String,
    is_static: bool,
    /// The pod as the status manager last had it; kept after its removal there, so the final
    /// status goes to the API before the object is deleted, as upstream's status manager does.
    pod: Option<Arc<Pod>>,
    /// The status manager removed the pod: its API object is to be deleted.
    removed: bool,
    /// The pod whose status the API server last took.
    sent: Option<Arc<Pod>>,
    /// The pod's status as the API server holds it (the last patch's answer, or read once), the
    /// base of the next patch; None until read.
    api_status: Option<Value>,
    /// The UID of the API object the status goes to (a static pod's is its mirror pod's).
    api_uid: Option<String>,
    mirror_ok: bool,
}

impl Sent {
    fn new(pod: &Pod) -> Self {
        Sent {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            is_static: is_static(pod),
            pod: None,
            removed: false,
            sent: None,
            api_status: None,
            api_uid: None,
            mirror_ok: false,
        }
    }
}

fn is_static(p: &Pod) -> bool {
    p.metadata.annotations.as_ref().and_then(|a| a.get(CONFIG_SOURCE)).is_some_and(|s| s != "api")
}

/// The mirror pod of a static pod (upstream: same name/namespace, config.mirror = config.hash,
/// controlled by the Node).
pub fn mirror_pod(p: &Pod, node_name: &str, node_uid: &str) -> Pod {
    let mut m = Pod::default();
    m.metadata.name = p.metadata.name.clone();
    m.metadata.namespace = p.metadata.namespace.clone();
    m.metadata.labels = p.metadata.labels.clone();
    let mut ann = p.metadata.annotations.clone().unwrap_or_default();
    let hash = ann.get(CONFIG_HASH).cloned().unwrap_or_default();
    ann.insert(CONFIG_MIRROR.into(), hash);
    m.metadata.annotations = Some(ann);
    m.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: node_name.to_string(),
        uid: node_uid.to_string(),
        controller: Some(true),
        ..Default::default()
    }]);
    m.spec = p.spec.clone();
    m
}

async fn ensure_mirror(api: &DynApi, pod: &Pod, cfg: &Config, node_uid: &mut Option<String>) -> Result<(), ApiError> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let hash = pod.metadata.annotations.as_ref().and_then(|a| a.get(CONFIG_HASH)).cloned().unwrap_or_default();
    if let Some(existing) = api.get_pod(&ns, &name).await? {
        let mirror_of = existing.metadata.annotations.as_ref().and_then(|a| a.get(CONFIG_MIRROR)).cloned();
        if mirror_of.as_deref() == Some(hash.as_str()) && existing.metadata.deletion_timestamp.is_none() {
            return Ok(());
        }
        // A stale mirror (the manifest changed) or a pod in the way: replace it.
        api.delete_pod(&ns, &name, 0, existing.metadata.uid.as_deref()).await?;
    }
    if node_uid.is_none() {
        *node_uid = api.get_node(&cfg.node_name).await?.and_then(|n| n.metadata.uid);
    }
    let Some(uid) = node_uid.clone() else {
        return Err(ApiError::Other("node not registered yet".into()));
    };
    api.create_pod(&mirror_pod(pod, &cfg.node_name, &uid)).await?;
    tracing::info!(pod = %format!("{ns}/{name}"), "created mirror pod");
    Ok(())
}

/// Pod condition types the kubelet owns (upstream's PodConditionsByKubelet); others (readiness
/// gates, DisruptionTarget, …) belong to other actors and are kept as the API server has them.
const KUBELET_CONDITIONS: [&str; 7] = [
    "PodScheduled",
    "Ready",
    "Initialized",
    "ContainersReady",
    "PodReadyToStartContainers",
    "PodResizePending",
    "PodResizeInProgress",
];

/// Status fields the kubelet never writes; kept as the API server has them.
const NOT_KUBELET_FIELDS: [&str; 3] = ["nominatedNodeName", "resourceClaimStatuses", "extendedResourceClaimStatus"];

/// The status to send: the kubelet's, with the conditions and fields other actors own taken from
/// the API's copy (upstream's mergePodStatus: others' conditions first, then the kubelet's).
fn merged_status(api: &Value, ours: &Value) -> Value {
    let mut out = ours.clone();
    let Some(o) = out.as_object_mut() else { return out };
    let owned_by_kubelet =
        |c: &&Value| c.get("type").and_then(Value::as_str).is_some_and(|t| KUBELET_CONDITIONS.contains(&t));
    let mut conditions: Vec<Value> = api
        .get("conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| !owned_by_kubelet(c))
        .cloned()
        .collect();
    if let Some(Value::Array(own)) = o.get("conditions") {
        conditions.extend(own.iter().cloned());
    }
    if conditions.is_empty() {
        o.remove("conditions");
    } else {
        o.insert("conditions".into(), Value::Array(conditions));
    }
    for f in NOT_KUBELET_FIELDS {
        match api.get(f) {
            Some(v) => o.insert(f.into(), v.clone()),
            None => o.remove(f),
        };
    }
    out
}

/// The strategic merge patch from the API's status to ours, with the API object's UID as a
/// precondition (upstream's PatchPodStatus); None when it would change nothing.
fn status_patch(api_uid: &str, api: &Value, ours: &Value) -> Option<Value> {
    let diff = strategic_patch::diff(api, &merged_status(api, ours));
    if diff.as_object().is_some_and(|d| d.is_empty()) {
        return None;
    }
    Some(serde_json::json!({ "metadata": { "uid": api_uid }, "status": diff }))
}

/// A status as a JSON map (an absent status is an empty one).
fn status_value(status: Option<&PodStatus>) -> Value {
    match status.map(serde_json::to_value) {
        Some(Ok(v @ Value::Object(_))) => v,
        _ => Value::Object(Default::default()),
    }
}

/// Sends a pod's status as a strategic merge patch against what the API server holds (read once
/// per pod, then taken from each patch's answer): fields that became empty are deleted, the
/// conditions merge by type, a write that would change nothing is not made.
async fn patch_status(api: &DynApi, entry: &mut Sent, pod: &Pod) -> Result<(), ApiError> {
    let base = match &entry.api_status {
        Some(base) => base.clone(),
        None => {
            let Some(current) = api.get_pod(&entry.namespace, &entry.name).await? else {
                return Err(ApiError::NotFound);
            };
            let api_uid = current.metadata.uid.clone().unwrap_or_default();
            // Upstream: "Pod was deleted and then recreated, skipping status update".
            if !entry.is_static && pod.metadata.uid.as_deref() != Some(api_uid.as_str()) {
                tracing::info!(pod = %entry.name, "pod was deleted and then recreated, skipping status update");
                return Ok(());
            }
            entry.api_uid = Some(api_uid);
            let base = status_value(current.status.as_ref());
            entry.api_status = Some(base.clone());
            base
        }
    };
    let Some(patch) =
        status_patch(entry.api_uid.as_deref().unwrap_or_default(), &base, &status_value(pod.status.as_ref()))
    else {
        return Ok(());
    };
    let answer = api.patch_pod_status(&entry.namespace, &entry.name, &patch).await?;
    entry.api_status = Some(status_value(answer.status.as_ref()));
    Ok(())
}

/// Sends until `token` is cancelled, then makes one last round with the newest statuses (the
/// composition cancels it once the pod workers have stopped, and bounds that round). Each round
/// looks at the pods whose status changed since the last one and at those still owed a write
/// (a failed call, a mirror pod to re-check), not at every pod.
pub async fn run(cfg: Config, statuses: Statuses, api: DynApi, token: CancellationToken) {
    let mut version = statuses.subscribe();
    let mut seen = 0;
    let mut sent: HashMap<String, Sent> = HashMap::new();
    // The pods owed a round: changed, not yet taken by the API server, or to be deleted.
    let mut dirty: BTreeSet<String> = BTreeSet::new();
    let mut node_uid: Option<String> = None;
    let mut failing = false;
    let mut last_round = false;
    loop {
        if token.is_cancelled() {
            last_round = true;
        }
        let changes = statuses.changes(seen);
        seen = changes.version;
        if changes.full {
            let present: HashSet<&str> = changes.updated.iter().filter_map(|p| p.metadata.uid.as_deref()).collect();
            for (uid, s) in sent.iter_mut().filter(|(uid, _)| !present.contains(uid.as_str())) {
                s.removed = true;
                dirty.insert(uid.clone());
            }
        }
        for pod in changes.updated {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            let entry = sent.entry(uid.clone()).or_insert_with(|| Sent::new(&pod));
            entry.pod = Some(pod);
            entry.removed = false;
            dirty.insert(uid);
        }
        for last in changes.removed {
            let uid = last.metadata.uid.clone().unwrap_or_default();
            if let Some(s) = sent.get_mut(&uid) {
                s.pod = Some(last);
                s.removed = true;
                dirty.insert(uid);
            }
        }
        let mut errors = 0;
        let (present, gone): (Vec<String>, Vec<String>) =
            std::mem::take(&mut dirty).into_iter().partition(|uid| sent.get(uid).is_some_and(|s| !s.removed));
        for uid in present {
            let Some(entry) = sent.get_mut(&uid) else { continue };
            let Some(pod) = entry.pod.clone() else { continue };
            if entry.is_static && !entry.mirror_ok {
                match ensure_mirror(&api, &pod, &cfg, &mut node_uid).await {
                    Ok(()) => entry.mirror_ok = true,
                    Err(e) => {
                        errors += 1;
                        tracing::debug!(pod = %entry.name, error = %e, "mirror pod not ensured yet");
                        dirty.insert(uid);
                        continue;
                    }
                }
            }
            if entry.sent.as_ref().and_then(|p| p.status.as_ref()) == pod.status.as_ref() {
                continue;
            }
            match patch_status(&api, entry, &pod).await {
                Ok(()) => entry.sent = Some(pod),
                // The object is gone (a mirror deleted by someone): recreate it next round.
                Err(ApiError::NotFound) => {
                    entry.mirror_ok = false;
                    entry.sent = None;
                    entry.api_status = None;
                    dirty.insert(uid);
                }
                // Another pod under the name (the UID precondition failed): read it again.
                Err(ApiError::Conflict(e)) => {
                    entry.api_status = None;
                    errors += 1;
                    tracing::debug!(pod = %entry.name, error = %e, "pod status patch conflicted; will re-read");
                    dirty.insert(uid);
                }
                Err(e) => {
                    errors += 1;
                    tracing::debug!(pod = %entry.name, error = %e, "pod status update failed; will retry");
                    dirty.insert(uid);
                }
            }
        }
        // Pods the kubelet has finished with: their API objects go (grace 0).
        for uid in gone {
            let Some(s) = sent.get_mut(&uid) else { continue };
            // An API pod's final status (its stopped containers, its terminal phase) first.
            if !s.is_static
                && let Some(last) = s.pod.clone()
                && s.sent.as_ref().and_then(|p| p.status.as_ref()) != last.status.as_ref()
            {
                match patch_status(&api, s, &last).await {
                    Ok(()) => s.sent = Some(last),
                    // Gone, or another pod under the name: nothing of ours to finish.
                    Err(ApiError::NotFound | ApiError::Conflict(_)) => {}
                    Err(e) => {
                        errors += 1;
                        tracing::debug!(pod = %s.name, error = %e, "final pod status not sent; will retry");
                        dirty.insert(uid);
                        continue;
                    }
                }
            }
            let precondition = if s.is_static { None } else { Some(uid.as_str()) };
            match api.delete_pod(&s.namespace, &s.name, 0, precondition).await {
                Ok(()) | Err(ApiError::NotFound) => {
                    tracing::info!(pod = %format!("{}/{}", s.namespace, s.name), "pod object deleted");
                    sent.remove(&uid);
                }
                Err(e) => {
                    errors += 1;
                    tracing::debug!(pod = %s.name, error = %e, "pod delete failed; will retry");
                    dirty.insert(uid);
                }
            }
        }
        if errors > 0 && !failing {
            tracing::warn!(errors, "API server writes failing; keeping the newest statuses to send later");
        } else if errors == 0 && failing {
            tracing::info!("API server writes caught up");
        }
        failing = errors > 0;
        if last_round {
            if failing {
                tracing::warn!(errors, "stopping with pod statuses the API server has not taken");
            }
            return;
        }
        // Mirror pods are re-checked on every resync (someone may have deleted one).
        let wait = if failing { Duration::from_secs(2) } else { cfg.resync };
        tokio::select! {
            // One last round: whatever changed since this one.
            _ = token.cancelled() => {}
            r = version.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(wait) => {
                for (uid, s) in sent.iter_mut().filter(|(_, s)| s.is_static) {
                    s.mirror_ok = false;
                    dirty.insert(uid.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::fake::FakeApi;
    use k8s_openapi::api::core::v1::PodCondition;
    use serde_json::json;

    fn pod(uid: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": uid,
                         "annotations": {CONFIG_SOURCE: "api"}},
            "spec": {"containers": [{"name": "app", "image": "busybox"}]}
        }))
        .unwrap()
    }

    fn status(v: Value) -> PodStatus {
        serde_json::from_value(v).unwrap()
    }

    fn cond(t: &str, s: &str) -> PodCondition {
        PodCondition { type_: t.into(), status: s.into(), ..Default::default() }
    }

    struct Node {
        api: Arc<FakeApi>,
        statuses: Statuses,
        token: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    fn start(api: Arc<FakeApi>) -> Node {
        let statuses = Statuses::new();
        let token = CancellationToken::new();
        let cfg = Config { node_name: "n1".into(), resync: Duration::from_secs(3600) };
        let task = tokio::spawn(run(cfg, statuses.clone(), api.clone(), token.clone()));
        Node { api, statuses, token, task }
    }

    impl Node {
        async fn wait(&self, what: &str, ok: impl Fn(&Pod) -> bool) -> Pod {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            loop {
                if let Some(p) = self.api.pod("default", "web")
                    && ok(&p)
                {
                    return p;
                }
                assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }

        async fn stop(self) {
            self.token.cancel();
            self.task.await.unwrap();
        }

        fn patches(&self) -> usize {
            self.api.calls().iter().filter(|c| *c == "patch_pod_status").count()
        }
    }

    #[tokio::test]
    async fn a_field_that_became_empty_is_cleared_in_the_api() {
        let api = Arc::new(FakeApi::new());
        api.put_pod(pod("u1"));
        let n = start(api);
        let p = pod("u1");
        n.statuses.set(&p, status(json!({"phase": "Pending", "message": "creating pod sandbox", "reason": "X"})));
        n.wait("the pending status", |p| {
            p.status.as_ref().and_then(|s| s.message.as_deref()) == Some("creating pod sandbox")
        })
        .await;
        n.statuses.set(&p, status(json!({"phase": "Running"})));
        let got = n.wait("running", |p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")).await;
        let s = got.status.unwrap();
        assert_eq!((s.message, s.reason), (None, None));
        n.stop().await;
    }

    #[tokio::test]
    async fn conditions_other_actors_own_survive_and_unchanged_statuses_are_not_written() {
        let api = Arc::new(FakeApi::new());
        let mut p = pod("u1");
        // The scheduler's and a readiness gate's conditions, already in the API.
        p.status = Some(PodStatus {
            conditions: Some(vec![cond("PodScheduled", "True"), cond("example.com/gate", "True")]),
            ..Default::default()
        });
        api.put_pod(p.clone());
        let n = start(api);
        n.statuses.set(
            &p,
            PodStatus {
                phase: Some("Running".into()),
                conditions: Some(vec![cond("PodScheduled", "True"), cond("Ready", "True")]),
                ..Default::default()
            },
        );
        let got = n.wait("running", |p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")).await;
        let types: Vec<String> = got.status.unwrap().conditions.unwrap().into_iter().map(|c| c.type_).collect();
        assert_eq!(types, ["example.com/gate", "PodScheduled", "Ready"]);
        let writes = n.patches();
        assert_eq!(writes, 1);
        // A new status equal to what the API holds (the gate condition included) sends nothing.
        n.statuses.set(
            &p,
            PodStatus {
                phase: Some("Running".into()),
                conditions: Some(vec![
                    cond("PodScheduled", "True"),
                    cond("Ready", "True"),
                    cond("Initialized", "True"),
                ]),
                ..Default::default()
            },
        );
        n.wait("initialized", |p| p.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|c| c.len() == 4))
            .await;
        assert_eq!(n.patches(), 2);
        n.stop().await;
    }

    #[tokio::test]
    async fn the_final_status_reaches_the_api_before_the_object_is_deleted() {
        let api = Arc::new(FakeApi::new());
        api.put_pod(pod("u1"));
        let n = start(api);
        let p = pod("u1");
        n.statuses.set(&p, status(json!({"phase": "Running"})));
        n.wait("running", |p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")).await;
        // The worker publishes the terminal status and removes the pod at once.
        n.statuses.set(&p, status(json!({"phase": "Succeeded"})));
        n.statuses.remove("u1");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while n.api.pod("default", "web").is_some() {
            assert!(tokio::time::Instant::now() < deadline, "the pod object was never deleted");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let calls = n.api.calls();
        let last_patch = calls.iter().rposition(|c| c == "patch_pod_status").unwrap();
        let delete = calls.iter().position(|c| c == "delete_pod").unwrap();
        assert!(last_patch < delete, "{calls:?}");
        assert_eq!(n.patches(), 2, "{calls:?}");
        n.stop().await;
    }

    #[tokio::test]
    async fn a_pod_recreated_under_the_name_is_not_patched() {
        let api = Arc::new(FakeApi::new());
        api.put_pod(pod("other-uid"));
        let n = start(api);
        n.statuses.set(&pod("u1"), status(json!({"phase": "Running"})));
        // The sync reads the API pod once, sees another UID and skips the write.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !n.api.calls().iter().any(|c| c == "get_pod") {
            assert!(tokio::time::Instant::now() < deadline, "the sync never read the pod");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let api = n.api.clone();
        n.stop().await;
        assert!(!api.calls().iter().any(|c| c == "patch_pod_status"), "{:?}", api.calls());
        assert_eq!(api.pod("default", "web").unwrap().status, None);
    }

    #[test]
    fn the_patch_carries_the_uid_and_only_what_changed() {
        let api =
            json!({"phase": "Pending", "message": "m", "conditions": [{"type": "DisruptionTarget", "status": "True"}]});
        let ours = json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]});
        let p = status_patch("u1", &api, &ours).unwrap();
        assert_eq!(
            p,
            json!({"metadata": {"uid": "u1"}, "status": {
                "phase": "Running",
                "message": null,
                "$setElementOrder/conditions": [{"type": "DisruptionTarget"}, {"type": "Ready"}],
                "conditions": [{"type": "Ready", "status": "True"}]
            }})
        );
        let same = json!({"phase": "Running", "conditions": [{"type": "DisruptionTarget", "status": "True"}, {"type": "Ready", "status": "True"}]});
        assert_eq!(status_patch("u1", &same, &ours), None);
    }
}
