//! Sends pod statuses to the API server: patches an API pod's status only when it changed,
//! keeps a mirror pod for every static pod (recreated if someone deletes it, replaced when the
//! manifest changes), and deletes a pod object (grace 0) once the kubelet has removed the pod.
//! A failed call is retried on the next round with the newest status: nothing is lost while
//! the API server is away.

use super::Statuses;
use crate::api::{ApiError, DynApi};
use crate::sources::manifest::{CONFIG_HASH, CONFIG_MIRROR, CONFIG_SOURCE};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
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
    /// The pod as the status manager has it now; None once it was removed there (its API
    /// object is to be deleted).
    pod: Option<Arc<Pod>>,
    /// The pod whose status the API server last took.
    sent: Option<Arc<Pod>>,
    mirror_ok: bool,
}

impl Sent {
    fn new(pod: &Pod) -> Self {
        Sent {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            is_static: is_static(pod),
            pod: None,
            sent: None,
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
                s.pod = None;
                dirty.insert(uid.clone());
            }
        }
        for pod in changes.updated {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            let entry = sent.entry(uid.clone()).or_insert_with(|| Sent::new(&pod));
            entry.pod = Some(pod);
            dirty.insert(uid);
        }
        for uid in changes.removed {
            if let Some(s) = sent.get_mut(&uid) {
                s.pod = None;
                dirty.insert(uid);
            }
        }
        let mut errors = 0;
        let (present, gone): (Vec<String>, Vec<String>) =
            std::mem::take(&mut dirty).into_iter().partition(|uid| sent.get(uid).is_some_and(|s| s.pod.is_some()));
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
            let patch = serde_json::json!({ "status": pod.status });
            match api.patch_pod_status(&entry.namespace, &entry.name, &patch).await {
                Ok(_) => entry.sent = Some(pod),
                // The object is gone (a mirror deleted by someone): recreate it next round.
                Err(ApiError::NotFound) => {
                    entry.mirror_ok = false;
                    entry.sent = None;
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
            let Some(s) = sent.get(&uid) else { continue };
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
