//! Pod subresources reach a (fake) kubelet: logs are forwarded and exec upgrades are spliced both ways,
//! with the apiserver's kubelet client certificate.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

async fn read_head<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> String {
    let mut buf = Vec::new();
    let mut b = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await.unwrap() == 0 {
            break;
        }
        buf.push(b[0]);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// A kubelet stand-in: requires a client certificate from the testapi CA, records request lines,
/// answers /containerLogs with text and /exec with a 101 then echoes bytes.
async fn fake_kubelet(ca_pem: &[u8], seen: Arc<Mutex<Vec<String>>>) -> u16 {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().self_signed(&key).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca_pem).unwrap()).unwrap();
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider()).build().unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert.der().clone()], PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())))
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let head = read_head(&mut tls).await;
                let line = head.lines().next().unwrap_or("").to_string();
                seen.lock().unwrap().push(line.clone());
                if line.contains("/containerLogs/") {
                    let body = "hello from the kubelet\n";
                    let resp = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                    tls.write_all(resp.as_bytes()).await.unwrap();
                } else {
                    let resp = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n";
                    tls.write_all(resp.as_bytes()).await.unwrap();
                    let mut buf = [0u8; 64];
                    while let Ok(n) = tls.read(&mut buf).await {
                        if n == 0 || tls.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        let _ = tls.flush().await;
                    }
                }
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

fn kubectl(config: &Path, args: &[&str]) -> String {
    let out = Command::new("/usr/bin/kubectl").args(args).env("KUBECONFIG", config).output().unwrap();
    assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_and_exec_upgrade_reach_the_kubelet() {
    if !Path::new("/usr/bin/kubectl").exists() {
        eprintln!("skipping: /usr/bin/kubectl is missing");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _server = Server(
        Command::new(env!("CARGO_BIN_EXE_testapi"))
            .args(["serve", "--dir", d.to_str().unwrap(), "--listen", "127.0.0.1:0", "--bind-unscheduled-to", "n1"])
            .args(["--token", "tok:tester:system:masters"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !d.join("ready").exists() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let url = std::fs::read_to_string(d.join("ready")).unwrap().trim().to_string();
    let ca_pem = std::fs::read(d.join("ca.crt")).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let port = fake_kubelet(&ca_pem, seen.clone()).await;

    let admin = d.join("admin.kubeconfig");
    let node = format!(
        "apiVersion: v1\nkind: Node\nmetadata: {{name: n1}}\nstatus:\n  addresses: [{{type: InternalIP, address: 127.0.0.1}}]\n  daemonEndpoints: {{kubeletEndpoint: {{Port: {port}}}}}\n"
    );
    std::fs::write(d.join("node.yaml"), node).unwrap();
    std::fs::write(
        d.join("pod.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers: [{name: c, image: busybox}]\n",
    )
    .unwrap();
    let (a, n, p) = (admin.clone(), d.join("node.yaml"), d.join("pod.yaml"));
    let logs = tokio::task::spawn_blocking(move || {
        kubectl(&a, &["create", "-f", n.to_str().unwrap()]);
        kubectl(&a, &["create", "-f", p.to_str().unwrap()]);
        kubectl(&a, &["logs", "web", "--tail=5"])
    })
    .await
    .unwrap();
    assert_eq!(logs, "hello from the kubelet\n");
    assert!(seen.lock().unwrap()[0].starts_with("GET /containerLogs/default/web/c?tailLines=5 "), "{:?}", seen);

    // exec: an upgrade request spliced to the kubelet (raw client with a bearer token).
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(&ca_pem).unwrap()).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let addr = url.trim_start_matches("https://").to_string();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    let req = "POST /api/v1/namespaces/default/pods/web/exec?command=sh&command=-c&stdout=true HTTP/1.1\r\n\
Host: x\r\nAuthorization: Bearer tok\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nContent-Length: 0\r\n\r\n";
    tls.write_all(req.as_bytes()).await.unwrap();
    let head = read_head(&mut tls).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    tls.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf, b"ping");
    let lines = seen.lock().unwrap().clone();
    assert!(
        lines.iter().any(|l| l.starts_with("POST /exec/default/web/c?command=sh&command=-c&stdout=true ")),
        "{lines:?}"
    );
}
