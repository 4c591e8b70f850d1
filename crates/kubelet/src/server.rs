//! The plain-HTTP endpoints of a standalone kubelet: healthz on `healthzBindAddress:healthzPort`
//! and the read-only port (`/pods`, `/healthz`). The authenticated HTTPS server on 10250 is the
//! server-API issue's.

use crate::pleg;
use crate::status_manager::Statuses;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Clone)]
pub struct Health {
    pub pleg: pleg::Health,
    /// "PLEG is not healthy" after this long without a relist (upstream: 3 min).
    pub pleg_threshold: Duration,
}

impl Health {
    fn check(&self) -> Result<(), String> {
        if self.pleg.healthy(self.pleg_threshold) {
            Ok(())
        } else {
            Err(format!(
                "pleg was last seen active {}s ago; threshold is {:?}",
                chrono::Utc::now().timestamp() - self.pleg.last_relist_secs(),
                self.pleg_threshold
            ))
        }
    }
}

async fn healthz(State(h): State<Health>) -> impl IntoResponse {
    match h.check() {
        Ok(()) => (StatusCode::OK, "ok".to_string()),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("[-]syncloop failed: {e}\nhealthz check failed")),
    }
}

async fn healthz_syncloop(State(h): State<Health>) -> impl IntoResponse {
    match h.check() {
        Ok(()) => (StatusCode::OK, "ok".to_string()),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

fn health_routes(h: Health) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/healthz/ping", get(|| async { "ok" }))
        .route("/healthz/syncloop", get(healthz_syncloop))
        .with_state(h)
}

pub fn healthz_router(h: Health) -> Router {
    health_routes(h)
}

async fn pods(State(s): State<Statuses>) -> impl IntoResponse {
    let items = s.list();
    Json(serde_json::json!({
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": {},
        "items": items,
    }))
}

/// The read-only port: what upstream serves there that a standalone kubelet has.
/// `default_handlers` are the metrics and stats routes, served here unauthenticated as upstream does.
pub fn read_only_router(h: Health, statuses: Statuses, default_handlers: Router) -> Router {
    Router::new()
        .route("/pods", get(pods))
        .route("/pods/", get(pods))
        .with_state(statuses)
        .merge(health_routes(h))
        .merge(default_handlers)
}

/// Binds and serves `router` on `addr` in the background; binding errors are returned.
pub async fn serve(addr: SocketAddr, router: Router) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(%addr, error = %e, "server stopped");
        }
    });
    Ok(local)
}
