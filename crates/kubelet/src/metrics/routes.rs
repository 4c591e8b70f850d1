//! The metrics and stats endpoints as one router, served on the read-only port and (behind
//! authentication) on the kubelet port: `/metrics`, `/metrics/probes`, `/metrics/resource`,
//! `/metrics/cadvisor`, `/stats/summary` and `/stats/` (the same summary).

use super::{Metrics, resource, text};
use crate::cri::labels::POD_UID;
use crate::cri::{DynRuntime, api};
use crate::stats::Provider;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::collections::HashSet;

/// The Prometheus text format upstream serves.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone)]
struct Handlers {
    metrics: Metrics,
    stats: Provider,
    runtime: DynRuntime,
}

pub fn router(metrics: Metrics, stats: Provider, runtime: DynRuntime) -> Router {
    Router::new()
        .route("/metrics", get(kubelet_metrics))
        .route("/metrics/probes", get(probe_metrics))
        .route("/metrics/resource", get(resource_metrics))
        .route("/metrics/cadvisor", get(cadvisor_metrics))
        .route("/stats/summary", get(summary))
        .route("/stats", get(summary))
        .route("/stats/", get(summary))
        .with_state(Handlers { metrics, stats, runtime })
}

fn exposition(body: String) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
}

/// `kubelet_running_pods` and `kubelet_running_containers{container_state}` from one
/// ListPodSandbox and one ListContainers.
pub async fn running_families(runtime: &DynRuntime) -> Result<Vec<text::Family>, crate::cri::CriError> {
    let (sandboxes, containers) = tokio::try_join!(runtime.list_pod_sandboxes(None), runtime.list_containers(None))?;
    let pods: HashSet<&String> = sandboxes
        .iter()
        .filter(|s| s.state == api::PodSandboxState::SandboxReady as i32)
        .filter_map(|s| s.labels.get(POD_UID))
        .collect();
    let mut running_pods = text::Family::new(
        "kubelet_running_pods",
        "[ALPHA] Number of pods that have a running pod sandbox",
        text::Kind::Gauge,
    );
    running_pods.push(vec![], pods.len() as f64, None);
    let mut by_state = [("created", 0u64), ("exited", 0), ("running", 0), ("unknown", 0)];
    for c in containers.iter().filter(|c| c.labels.contains_key(POD_UID)) {
        let state = match api::ContainerState::try_from(c.state) {
            Ok(api::ContainerState::ContainerCreated) => "created",
            Ok(api::ContainerState::ContainerRunning) => "running",
            Ok(api::ContainerState::ContainerExited) => "exited",
            _ => "unknown",
        };
        if let Some(e) = by_state.iter_mut().find(|(s, _)| *s == state) {
            e.1 += 1;
        }
    }
    let mut running_containers = text::Family::new(
        "kubelet_running_containers",
        "[ALPHA] Number of containers currently running",
        text::Kind::Gauge,
    );
    for (state, n) in by_state {
        running_containers.push(vec![("container_state", state.to_string())], n as f64, None);
    }
    Ok(vec![running_containers, running_pods])
}

async fn kubelet_metrics(State(h): State<Handlers>) -> Response {
    let scraped = running_families(&h.runtime).await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "metrics: cannot count running pods and containers");
        Vec::new()
    });
    exposition(h.metrics.encode_kubelet(&scraped))
}

async fn probe_metrics(State(h): State<Handlers>) -> Response {
    exposition(h.metrics.encode_probes())
}

async fn resource_metrics(State(h): State<Handlers>) -> Response {
    let collected = h.stats.collect(true).await.map_err(|e| tracing::warn!(error = %e, "resource metrics")).ok();
    let mut out = String::new();
    text::encode(&mut out, &resource::resource_families(collected.as_ref()));
    exposition(out)
}

async fn cadvisor_metrics(State(h): State<Handlers>) -> Response {
    match h.stats.collect(false).await {
        Ok(c) => {
            let mut out = String::new();
            text::encode(&mut out, &resource::cadvisor_families(&c));
            exposition(out)
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[derive(serde::Deserialize, Default)]
struct SummaryQuery {
    only_cpu_and_memory: Option<String>,
}

async fn summary(State(h): State<Handlers>, Query(q): Query<SummaryQuery>) -> Response {
    let only = q.only_cpu_and_memory.as_deref().is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
    match h.stats.collect(only).await {
        Ok(c) => axum::Json(c.summary).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("internal error: {e}")).into_response(),
    }
}
