//! Running one probe or lifecycle handler: exec (CRI ExecSync), httpGet, tcpSocket, grpc
//! (grpc.health.v1) and sleep. Shared by the probe workers and the lifecycle hooks.

use crate::cri::DynRuntime;
use k8s_openapi::api::core::v1::{ContainerPort, HTTPGetAction, LifecycleHandler, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::time::Duration;

/// What a probe or handler found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub ok: bool,
    pub message: String,
}

impl Outcome {
    pub fn ok() -> Self {
        Self { ok: true, message: String::new() }
    }

    pub fn fail(message: impl Into<String>) -> Self {
        Self { ok: false, message: message.into() }
    }
}

/// The container a probe or handler runs against.
#[derive(Clone)]
pub struct Target {
    pub runtime: DynRuntime,
    pub container_id: String,
    pub pod_ip: Option<String>,
    pub ports: Vec<ContainerPort>,
}

/// Why a probe's or handler's port does not resolve (the probe's failure message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    #[error("port {0:?} not found among the container's ports")]
    UnknownName(String),
    #[error("invalid port {0}")]
    Invalid(i32),
}

/// A port by number or by the name of one of the container's ports.
pub fn resolve_port(port: &IntOrString, ports: &[ContainerPort]) -> Result<u16, PortError> {
    let n = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(s) => match s.parse::<i32>() {
            Ok(n) => n,
            Err(_) => ports
                .iter()
                .find(|p| p.name.as_deref() == Some(s.as_str()))
                .map(|p| p.container_port)
                .ok_or_else(|| PortError::UnknownName(s.clone()))?,
        },
    };
    u16::try_from(n).ok().filter(|p| *p > 0).ok_or(PortError::Invalid(n))
}

const MAX_OUTPUT: usize = 10 * 1024;

fn short(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_OUTPUT)]);
    s.trim().to_string()
}

pub async fn exec(t: &Target, command: &[String], timeout: Duration) -> Outcome {
    match t.runtime.exec_sync(&t.container_id, command.to_vec(), timeout).await {
        Ok(out) if out.exit_code == 0 => Outcome::ok(),
        Ok(out) => {
            let output = short(if out.stderr.is_empty() { &out.stdout } else { &out.stderr });
            Outcome::fail(format!("command {command:?} exited with {}: {output}", out.exit_code))
        }
        Err(e) if e.code == tonic::Code::DeadlineExceeded => {
            Outcome::fail(format!("command {command:?} timed out after {}s", timeout.as_secs()))
        }
        Err(e) => Outcome::fail(format!("command {command:?} failed: {}", e.message)),
    }
}

/// HTTP GET as upstream probes do: 200–399 is success; redirects are followed on the same
/// host only (a redirect elsewhere counts as success, as upstream).
pub async fn http_get(t: &Target, action: &HTTPGetAction, timeout: Duration) -> Outcome {
    let port = match resolve_port(&action.port, &t.ports) {
        Ok(p) => p,
        Err(e) => return Outcome::fail(e.to_string()),
    };
    let host = action
        .host
        .clone()
        .filter(|h| !h.is_empty())
        .or_else(|| t.pod_ip.clone())
        .unwrap_or_else(|| "127.0.0.1".into());
    let scheme = action.scheme.as_deref().unwrap_or("HTTP").to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Outcome::fail(format!("unsupported scheme {scheme:?}"));
    }
    let path = action.path.clone().unwrap_or_default();
    let path = if path.starts_with('/') { path } else { format!("/{path}") };
    let host_port = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    let url = format!("{scheme}://{host_port}{path}");
    let origin_host = host.clone();
    let policy = reqwest::redirect::Policy::custom(move |attempt| {
        let same_host = attempt.url().host_str().is_some_and(|h| h.trim_matches(['[', ']']) == origin_host);
        if attempt.previous().len() >= 10 || !same_host { attempt.stop() } else { attempt.follow() }
    });
    // As upstream, probes do not verify the serving certificate.
    let client = match reqwest::Client::builder()
        .redirect(policy)
        .no_proxy()
        .timeout(timeout)
        .danger_accept_invalid_certs(true)
        .build()
    {
        Ok(c) => c,
        Err(e) => return Outcome::fail(format!("http client: {e}")),
    };
    let mut req = client.get(&url).header("User-Agent", "kube-probe/1.32").header("Accept", "*/*");
    for h in action.http_headers.iter().flatten() {
        req = req.header(h.name.as_str(), h.value.as_str());
    }
    let short_target = format!(":{port}{path}");
    match req.send().await {
        Ok(resp) if (200..400).contains(&resp.status().as_u16()) => Outcome::ok(),
        Ok(resp) => Outcome::fail(format!("HTTP {} from {short_target}", resp.status().as_u16())),
        Err(e) if e.is_timeout() => {
            Outcome::fail(format!("HTTP GET {short_target}: timed out after {}s", timeout.as_secs()))
        }
        Err(e) => Outcome::fail(format!("HTTP GET {short_target}: {}", root_cause(&e))),
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

pub async fn tcp(t: &Target, host: Option<&str>, port: &IntOrString, timeout: Duration) -> Outcome {
    let port = match resolve_port(port, &t.ports) {
        Ok(p) => p,
        Err(e) => return Outcome::fail(e.to_string()),
    };
    let host = host
        .filter(|h| !h.is_empty())
        .map(str::to_string)
        .or_else(|| t.pod_ip.clone())
        .unwrap_or_else(|| "127.0.0.1".into());
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host.as_str(), port))).await {
        Ok(Ok(_)) => Outcome::ok(),
        Ok(Err(e)) => Outcome::fail(format!("dial tcp {host}:{port}: {e}")),
        Err(_) => Outcome::fail(format!("dial tcp {host}:{port}: timed out after {}s", timeout.as_secs())),
    }
}

pub async fn grpc(t: &Target, port: i32, service: Option<&str>, timeout: Duration) -> Outcome {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let host = t.pod_ip.clone().unwrap_or_else(|| "127.0.0.1".into());
    let addr = format!("http://{host}:{port}");
    let work = async {
        let endpoint = tonic::transport::Endpoint::from_shared(addr.clone()).map_err(|e| e.to_string())?;
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| format!("failed to connect service {host}:{port}: {}", root_cause(&e)))?;
        let req = HealthCheckRequest { service: service.unwrap_or_default().to_string() };
        let resp = HealthClient::new(channel)
            .check(req)
            .await
            .map_err(|s| format!("rpc error: code = {:?} desc = {}", s.code(), s.message()))?;
        Ok::<i32, String>(resp.into_inner().status)
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(Ok(1)) => Outcome::ok(),
        Ok(Ok(status)) => Outcome::fail(format!("service unhealthy (responded with {})", serving_status(status))),
        Ok(Err(e)) => Outcome::fail(e),
        Err(_) => Outcome::fail(format!("timeout: health rpc did not complete within {}s", timeout.as_secs())),
    }
}

fn serving_status(s: i32) -> &'static str {
    match s {
        0 => "UNKNOWN",
        1 => "SERVING",
        2 => "NOT_SERVING",
        3 => "SERVICE_UNKNOWN",
        _ => "unrecognized",
    }
}

/// Runs a probe once, bounded by its `timeoutSeconds` (default 1).
pub async fn probe(p: &Probe, t: &Target) -> Outcome {
    let timeout = Duration::from_secs(p.timeout_seconds.unwrap_or(1).max(1) as u64);
    if let Some(e) = &p.exec {
        return exec(t, e.command.as_deref().unwrap_or_default(), timeout).await;
    }
    if let Some(h) = &p.http_get {
        return http_get(t, h, timeout).await;
    }
    if let Some(s) = &p.tcp_socket {
        return tcp(t, s.host.as_deref(), &s.port, timeout).await;
    }
    if let Some(g) = &p.grpc {
        return grpc(t, g.port, g.service.as_deref(), timeout).await;
    }
    Outcome::fail("probe has no handler")
}

/// Runs a lifecycle hook, bounded by `timeout`.
pub async fn hook(h: &LifecycleHandler, t: &Target, timeout: Duration) -> Outcome {
    let work = async {
        if let Some(e) = &h.exec {
            return exec(t, e.command.as_deref().unwrap_or_default(), timeout).await;
        }
        if let Some(g) = &h.http_get {
            return http_get(t, g, timeout).await;
        }
        if let Some(s) = &h.sleep {
            tokio::time::sleep(Duration::from_secs(s.seconds.max(0) as u64)).await;
            return Outcome::ok();
        }
        if h.tcp_socket.is_some() {
            return Outcome::fail("tcpSocket lifecycle handlers are deprecated and not supported");
        }
        Outcome::fail("lifecycle handler has no action")
    };
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or_else(|_| Outcome::fail(format!("hook did not complete within {}s", timeout.as_secs())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_resolve_by_number_or_name() {
        let ports = vec![ContainerPort { name: Some("http".into()), container_port: 8080, ..Default::default() }];
        assert_eq!(resolve_port(&IntOrString::Int(80), &ports), Ok(80));
        assert_eq!(resolve_port(&IntOrString::String("http".into()), &ports), Ok(8080));
        assert_eq!(resolve_port(&IntOrString::String("9090".into()), &ports), Ok(9090));
        let unknown = resolve_port(&IntOrString::String("grpc".into()), &ports).unwrap_err();
        assert_eq!(unknown.to_string(), "port \"grpc\" not found among the container's ports");
        assert_eq!(resolve_port(&IntOrString::Int(0), &ports).unwrap_err().to_string(), "invalid port 0");
    }

    #[tokio::test]
    async fn http_probe_success_range_and_message() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 2048];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let status = if req.starts_with("GET /ok") {
                    "200 OK"
                } else if req.starts_with("GET /moved") {
                    "302 Found\r\nlocation: /ok"
                } else {
                    "503 Service Unavailable"
                };
                let _ = s
                    .write_all(
                        format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").as_bytes(),
                    )
                    .await;
            }
        });
        let t = Target {
            runtime: std::sync::Arc::new(crate::cri::fake::FakeRuntime::new()),
            container_id: "c".into(),
            pod_ip: Some("127.0.0.1".into()),
            ports: vec![],
        };
        let action = |path: &str| HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(port as i32),
            ..Default::default()
        };
        assert!(http_get(&t, &action("/ok"), Duration::from_secs(5)).await.ok);
        assert!(http_get(&t, &action("/moved"), Duration::from_secs(5)).await.ok);
        let bad = http_get(&t, &action("/ready"), Duration::from_secs(5)).await;
        assert_eq!(bad, Outcome::fail(format!("HTTP 503 from :{port}/ready")));
        assert!(tcp(&t, None, &IntOrString::Int(port as i32), Duration::from_secs(5)).await.ok);
    }

    #[tokio::test]
    async fn https_probes_skip_certificate_verification() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let chain = vec![cert.cert.der().clone()];
        let key = rustls::pki_types::PrivateKeyDer::try_from(cert.key_pair.serialize_der()).unwrap();
        let config =
            rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(s).await else { return };
                    let mut buf = [0u8; 2048];
                    let n = tls.read(&mut buf).await.unwrap_or(0);
                    let ok = String::from_utf8_lossy(&buf[..n]).starts_with("GET /healthz");
                    let status = if ok { "200 OK" } else { "500 Internal Server Error" };
                    let _ = tls
                        .write_all(
                            format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").as_bytes(),
                        )
                        .await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        let t = Target {
            runtime: std::sync::Arc::new(crate::cri::fake::FakeRuntime::new()),
            container_id: "c".into(),
            pod_ip: Some("127.0.0.1".into()),
            ports: vec![],
        };
        let action = |path: &str| HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(port as i32),
            scheme: Some("HTTPS".into()),
            ..Default::default()
        };
        let ok = http_get(&t, &action("/healthz"), Duration::from_secs(5)).await;
        assert!(ok.ok, "{ok:?}");
        let bad = http_get(&t, &action("/other"), Duration::from_secs(5)).await;
        assert_eq!(bad, Outcome::fail(format!("HTTP 500 from :{port}/other")));
    }
}
