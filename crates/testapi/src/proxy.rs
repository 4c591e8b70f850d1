//! Pod subresources (log, exec, attach, portforward) and node proxy, forwarded to the kubelet's HTTPS
//! server with a client certificate; HTTP upgrades (SPDY / WebSocket) are spliced byte for byte.

use std::collections::HashMap;
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::Value;

use crate::handlers::{App, Target, parse_query};
use crate::respond::{Body, error, store_error};
use crate::store::Key;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("connecting to kubelet {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("invalid kubelet address {0:?}")]
    Address(String),
    #[error("kubelet request: {0}")]
    Http(#[from] hyper::Error),
    #[error("kubelet request: {0}")]
    Request(#[from] hyper::http::Error),
}

/// Kubelet host and port from a Node object: daemonEndpoints.kubeletEndpoint.Port (default 10250),
/// address InternalIP, else Hostname, else ExternalIP.
pub fn kubelet_endpoint(node: &Value) -> Option<(String, u16)> {
    let port = node.pointer("/status/daemonEndpoints/kubeletEndpoint/Port").and_then(Value::as_u64).unwrap_or(10250);
    let addrs = node.pointer("/status/addresses").and_then(Value::as_array)?;
    let find = |t: &str| {
        addrs.iter().find(|a| a.get("type").and_then(Value::as_str) == Some(t)).and_then(|a| a.get("address")?.as_str())
    };
    let host = find("InternalIP").or_else(|| find("Hostname")).or_else(|| find("ExternalIP"))?;
    Some((host.to_string(), port as u16))
}

fn encode_query(q: &HashMap<String, String>, original: Option<&str>, drop: &[&str]) -> String {
    // Keep the original encoding and order (repeated `command=` parameters matter for exec).
    let _ = q;
    let kept: Vec<&str> = original
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty() && !drop.contains(&p.split('=').next().unwrap_or("")))
        .collect();
    if kept.is_empty() { String::new() } else { format!("?{}", kept.join("&")) }
}

/// The kubelet path for a subresource request (without the query).
pub fn kubelet_path(t: &Target, container: Option<&str>) -> Option<String> {
    let ns = t.namespace.as_deref().unwrap_or("");
    let name = t.name.as_deref()?;
    let c = container.unwrap_or("");
    Some(match t.subresource.as_deref()? {
        "log" => format!("/containerLogs/{ns}/{name}/{c}"),
        "exec" => format!("/exec/{ns}/{name}/{c}"),
        "attach" => format!("/attach/{ns}/{name}/{c}"),
        "portforward" => format!("/portForward/{ns}/{name}"),
        "proxy" => format!("/{}", t.rest),
        _ => return None,
    })
}

pub async fn proxy(app: Arc<App>, t: Target, req: Request<Incoming>) -> Response<Body> {
    let query = parse_query(req.uri().query());
    let (node_name, container) = if t.def.plural == "nodes" {
        (t.name.clone().unwrap_or_default(), None)
    } else {
        let pod = match app.store.get(&Key {
            resource: t.def.key(),
            namespace: t.namespace.clone().unwrap_or_default(),
            name: t.name.clone().unwrap_or_default(),
        }) {
            Ok(p) => p,
            Err(e) => return store_error(&e),
        };
        let node = pod.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or("").to_string();
        if node.is_empty() {
            return error(400, "BadRequest", "pod is not scheduled to a node");
        }
        let container = match query.get("container").filter(|c| !c.is_empty()) {
            Some(c) => Some(c.clone()),
            None if t.subresource.as_deref() == Some("portforward") => None,
            None => {
                let names: Vec<&str> = pod
                    .pointer("/spec/containers")
                    .and_then(Value::as_array)
                    .map(|cs| cs.iter().filter_map(|c| c.get("name")?.as_str()).collect())
                    .unwrap_or_default();
                if names.len() != 1 {
                    let pod_name = t.name.as_deref().unwrap_or("");
                    return error(
                        400,
                        "BadRequest",
                        &format!("a container name must be specified for pod {pod_name}, choose one of: {names:?}"),
                    );
                }
                Some(names[0].to_string())
            }
        };
        (node, container)
    };
    let node = match app.store.get(&Key { resource: "/v1/nodes".into(), namespace: String::new(), name: node_name }) {
        Ok(n) => n,
        Err(e) => return store_error(&e),
    };
    let Some((host, port)) = kubelet_endpoint(&node) else {
        return error(503, "ServiceUnavailable", "the node has no usable address");
    };
    let Some(path) = kubelet_path(&t, container.as_deref()) else {
        return error(404, "NotFound", "unknown subresource");
    };
    let drop: &[&str] = if t.subresource.as_deref() == Some("log") { &["container"] } else { &[] };
    let uri = format!("{path}{}", encode_query(&query, req.uri().query(), drop));
    match forward(&app, &host, port, &uri, req).await {
        Ok(r) => r,
        Err(e) => error(502, "ServiceUnavailable", &e.to_string()),
    }
}

async fn forward(
    app: &App,
    host: &str,
    port: u16,
    uri: &str,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, ProxyError> {
    let addr = format!("{host}:{port}");
    let tcp = tokio::net::TcpStream::connect(&addr).await.map_err(|e| ProxyError::Connect(addr.clone(), e))?;
    let server_name = ServerName::try_from(host.to_string()).map_err(|_| ProxyError::Address(host.into()))?;
    let tls = tokio_rustls::TlsConnector::from(app.kubelet_tls.clone())
        .connect(server_name, tcp)
        .await
        .map_err(|e| ProxyError::Connect(addr.clone(), e))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let upgrade = req.headers().contains_key("upgrade");
    let mut builder = Request::builder().method(req.method().clone()).uri(uri);
    for (k, v) in req.headers() {
        if !matches!(k.as_str(), "host" | "authorization" | "content-length" | "transfer-encoding") {
            builder = builder.header(k, v);
        }
    }
    builder = builder.header("host", addr);
    let client_upgrade = if upgrade { Some(hyper::upgrade::on(&mut req)) } else { None };
    let body = if upgrade { bytes::Bytes::new() } else { req.into_body().collect().await?.to_bytes() };
    let out = builder.body(Full::new(body))?;
    let mut resp = sender.send_request(out).await?;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client_upgrade) = client_upgrade
    {
        let upstream = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            if let (Ok(c), Ok(u)) = (client_upgrade.await, upstream.await) {
                let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
                let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
            }
        });
        let mut r = Response::new(crate::respond::full(bytes::Bytes::new()));
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        *r.headers_mut() = resp.headers().clone();
        return Ok(r);
    }
    let (parts, body) = resp.into_parts();
    let body = body.map_err(std::io::Error::other).boxed();
    Ok(Response::from_parts(parts, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::parse_target;
    use serde_json::json;

    #[test]
    fn endpoint_from_node() {
        let n = json!({"status": {"addresses": [{"type": "Hostname", "address": "h1"}, {"type": "InternalIP", "address": "10.0.0.5"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10350}}}});
        assert_eq!(kubelet_endpoint(&n), Some(("10.0.0.5".into(), 10350)));
        let n = json!({"status": {"addresses": [{"type": "Hostname", "address": "h1"}]}});
        assert_eq!(kubelet_endpoint(&n), Some(("h1".into(), 10250)));
        assert_eq!(kubelet_endpoint(&json!({})), None);
    }

    #[test]
    fn kubelet_paths_and_queries() {
        let t = parse_target("/api/v1/namespaces/ns/pods/p/log").unwrap();
        assert_eq!(kubelet_path(&t, Some("c")).unwrap(), "/containerLogs/ns/p/c");
        let t = parse_target("/api/v1/namespaces/ns/pods/p/exec").unwrap();
        assert_eq!(kubelet_path(&t, Some("c")).unwrap(), "/exec/ns/p/c");
        let t = parse_target("/api/v1/namespaces/ns/pods/p/portforward").unwrap();
        assert_eq!(kubelet_path(&t, None).unwrap(), "/portForward/ns/p");
        let t = parse_target("/api/v1/nodes/n/proxy/stats/summary").unwrap();
        assert_eq!(kubelet_path(&t, None).unwrap(), "/stats/summary");
        let q = "container=c&follow=true&tailLines=5";
        assert_eq!(encode_query(&parse_query(Some(q)), Some(q), &["container"]), "?follow=true&tailLines=5");
        let q = "command=ls&command=-l&stdout=true";
        assert_eq!(encode_query(&parse_query(Some(q)), Some(q), &[]), "?command=ls&command=-l&stdout=true");
    }
}
