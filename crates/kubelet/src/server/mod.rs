//! The kubelet's servers: healthz on `healthzBindAddress:healthzPort` (plain HTTP), the deprecated
//! read-only port (plain HTTP, off unless `readOnlyPort` is set), and the authenticated HTTPS
//! server on `address:port` (10250) — assembled in [`kubelet_port`] from [`tls`], [`auth`],
//! [`handlers`], [`streaming`].

pub mod auth;
pub mod handlers;
pub mod kubelet_port;
pub mod streaming;
pub mod tls;

use crate::pleg;
use crate::status_manager::Statuses;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use std::net::SocketAddr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct Health {
    pub pleg: pleg::Health,
    /// "PLEG is not healthy" after this long without a relist (upstream: 3 min).
    pub pleg_threshold: Duration,
}

/// Why `/healthz` fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unhealthy {
    #[error("pleg was last seen active {ago_secs}s ago; threshold is {threshold:?}")]
    Pleg { ago_secs: i64, threshold: Duration },
}

impl Health {
    fn check(&self) -> Result<(), Unhealthy> {
        if self.pleg.healthy(self.pleg_threshold) {
            Ok(())
        } else {
            let ago_secs = chrono::Utc::now().timestamp() - self.pleg.last_relist_secs();
            Err(Unhealthy::Pleg { ago_secs, threshold: self.pleg_threshold })
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
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

pub fn health_routes(h: Health) -> Router {
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
    let pods = s.list();
    let items: Vec<&k8s_openapi::api::core::v1::Pod> = pods.iter().map(|p| &**p).collect();
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

/// Binds a server's listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// Serves `router` on `listener` (plain HTTP) until the server fails or `token` is cancelled:
/// then it stops accepting and waits for the requests in flight (a long stream is cut when the
/// node's bound runs out).
pub async fn run(listener: tokio::net::TcpListener, router: Router, token: CancellationToken) {
    let addr = listener.local_addr().ok();
    if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(token.cancelled_owned()).await {
        tracing::error!(?addr, error = %e, "server stopped");
    }
}

/// Serves `router` over TLS on `listener`: one task per connection, HTTP/1.1 with upgrades
/// (exec, attach and port-forward streams), the verified client certificate's identity in every
/// request's extensions for [`auth`]. When `token` is cancelled it stops accepting, asks every
/// connection to close after its request in flight, and waits for them; the connection tasks
/// are its own, so they end with it (a long stream is cut when the node's bound runs out).
pub async fn run_tls(
    listener: tokio::net::TcpListener,
    tls: std::sync::Arc<rustls::ServerConfig>,
    router: Router,
    token: CancellationToken,
) {
    use hyper_util::rt::TokioIo;
    use tower::ServiceExt;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = token.cancelled() => break,
            // Ended connections are reaped as they go.
            Some(_) = connections.join_next() => continue,
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        let token = token.clone();
        connections.spawn(async move {
            let handshake = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp));
            let Some(handshake) = token.run_until_cancelled(handshake).await else { return };
            let stream = match handshake {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let cert = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(tls::identity);
            let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(auth::PeerCert(cert.clone()));
                router.clone().oneshot(req.map(axum::body::Body::new))
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(conn);
            let ended = tokio::select! {
                r = conn.as_mut() => r,
                _ = token.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
    while connections.join_next().await.is_some() {}
}
