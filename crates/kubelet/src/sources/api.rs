//! Pods bound to this node, from the API server (watch on `spec.nodeName`). Mirror pods are the
//! kubelet's own reflection of static pods and are skipped.

use super::manifest::{CONFIG_MIRROR, CONFIG_SEEN, CONFIG_SOURCE};
use super::{Snapshot, SourceKind};
use crate::api::DynApi;
use k8s_openapi::api::core::v1::Pod;
use std::collections::HashMap;
use tokio::sync::mpsc;

pub fn is_mirror(p: &Pod) -> bool {
    p.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(CONFIG_MIRROR))
}

pub async fn run(api: DynApi, node_name: String, tx: mpsc::Sender<Snapshot>) {
    let mut rx = api.watch_node_pods(&node_name);
    let mut seen: HashMap<String, String> = HashMap::new();
    while let Some(pods) = rx.recv().await {
        let pods: Vec<Pod> = pods
            .into_iter()
            .filter(|p| !is_mirror(p))
            .map(|mut p| {
                let uid = p.metadata.uid.clone().unwrap_or_default();
                let first_seen = seen.entry(uid).or_insert_with(super::file::now_rfc3339).clone();
                let ann = p.metadata.annotations.get_or_insert_with(Default::default);
                ann.insert(CONFIG_SOURCE.into(), SourceKind::Api.as_str().into());
                ann.entry(CONFIG_SEEN.into()).or_insert(first_seen);
                super::defaults::apply(&mut p);
                p
            })
            .collect();
        seen.retain(|uid, _| pods.iter().any(|p| p.metadata.uid.as_deref() == Some(uid.as_str())));
        if tx.send(Snapshot { source: SourceKind::Api, pods }).await.is_err() {
            return;
        }
    }
}
