//! Exec, attach and port-forward: the runtime hands out a URL on its own streaming server (CRI
//! Exec/Attach/PortForward); the kubelet forwards the client's request there and, once the runtime
//! answers 101 Switching Protocols (SPDY/3.1 or WebSocket channel protocols), splices the two
//! upgraded connections byte for byte. The kubelet never parses the stream protocol, so every
//! protocol version the client and the runtime agree on works.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("invalid streaming URL {0:?} from the runtime")]
    Url(String),
    #[error("connecting to the runtime's streaming server {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("streaming request: {0}")]
    Http(#[from] hyper::Error),
    #[error("streaming request: {0}")]
    Request(#[from] axum::http::Error),
}

/// Headers that describe one hop and are not forwarded.
fn hop_header(name: &header::HeaderName) -> bool {
    matches!(name.as_str(), "host" | "authorization" | "content-length" | "transfer-encoding" | "keep-alive" | "te")
}

/// Forwards `req` to the runtime's streaming `url`; an upgrade is spliced in the background.
pub async fn proxy(mut req: Request, url: &str) -> Response {
    match forward(&mut req, url).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "streaming proxy");
            (StatusCode::BAD_GATEWAY, e.to_string()).into_response()
        }
    }
}

async fn forward(req: &mut Request, url: &str) -> Result<Response, ProxyError> {
    let uri: Uri = url.parse().map_err(|_| ProxyError::Url(url.into()))?;
    if uri.scheme_str() != Some("http") {
        // containerd and CRI-O serve plain HTTP on loopback by default; a TLS streaming server
        // would need its CA, which CRI does not hand out.
        return Err(ProxyError::Url(url.into()));
    }
    let authority = uri.authority().ok_or_else(|| ProxyError::Url(url.into()))?.to_string();
    let tcp =
        tokio::net::TcpStream::connect(&authority).await.map_err(|e| ProxyError::Connect(authority.clone(), e))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let upgrade = req.headers().contains_key(header::UPGRADE);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = hyper::Request::builder().method(req.method().clone()).uri(path);
    for (k, v) in req.headers() {
        if !hop_header(k) {
            out = out.header(k, v);
        }
    }
    out = out.header(header::HOST, authority);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut *req));
    let body = if upgrade {
        bytes::Bytes::new()
    } else {
        std::mem::take(req.body_mut()).collect().await.map(|c| c.to_bytes()).unwrap_or_default()
    };
    let mut resp = sender.send_request(out.body(http_body_util::Full::new(body))?).await?;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client_upgrade) = client_upgrade
    {
        let runtime_upgrade = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            match (client_upgrade.await, runtime_upgrade.await) {
                (Ok(c), Ok(r)) => {
                    let (mut c, mut r) = (TokioIo::new(c), TokioIo::new(r));
                    if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut r).await {
                        tracing::debug!(error = %e, "stream closed");
                    }
                }
                (c, r) => tracing::warn!(client = ?c.err(), runtime = ?r.err(), "stream upgrade failed"),
            }
        });
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        *r.headers_mut() = resp.headers().clone();
        return Ok(r);
    }
    let (parts, body) = resp.into_parts();
    Ok(Response::from_parts(parts, Body::new(body)))
}
