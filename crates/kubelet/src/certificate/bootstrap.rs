//! TLS bootstrap (pkg/kubelet/certificate/bootstrap/bootstrap.go): whether `--kubeconfig` still
//! holds a valid client certificate (isClientConfigStillValid), the request of a first one with
//! the `--bootstrap-kubeconfig` credentials (LoadClientCert, requestNodeCertificate) and the
//! kubeconfig that points at `kubelet-client-current.pem` (writeKubeconfigFromBootstrapping).

use super::csr::{self, CsrClient, Kind};
use super::store::FileStore;
use super::{Error, Result};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kube::config::{Cluster, Kubeconfig};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The key kept across failed bootstrap attempts (bootstrap.go's tmpPrivateKeyFile), so a
/// restarted kubelet asks again with the same key and finds its earlier request.
pub const TMP_KEY_FILE: &str = "kubelet-client.key.tmp";

/// How long a bootstrap request waits for its certificate (requestNodeCertificate: 3600 s).
pub const WAIT: Duration = Duration::from_secs(3600);

pub fn read_kubeconfig(path: &Path) -> Result<Kubeconfig> {
    Kubeconfig::read_from(path).map_err(|e| Error::Kubeconfig { path: path.to_path_buf(), message: e.to_string() })
}

/// The cluster and user of the current context.
fn current(k: &Kubeconfig) -> (Option<&Cluster>, Option<&kube::config::AuthInfo>) {
    let ctx = k
        .contexts
        .iter()
        .find(|c| Some(&c.name) == k.current_context.as_ref())
        .or(k.contexts.first())
        .and_then(|c| c.context.as_ref());
    let cluster = ctx.and_then(|c| k.clusters.iter().find(|n| n.name == c.cluster)).and_then(|n| n.cluster.as_ref());
    let user = ctx
        .and_then(|c| c.user.as_ref())
        .and_then(|u| k.auth_infos.iter().find(|n| &n.name == u))
        .and_then(|n| n.auth_info.as_ref());
    (cluster, user)
}

/// The client certificate file the kubeconfig's user names (with its key file), if any.
pub fn client_cert_files(k: &Kubeconfig) -> Option<(PathBuf, PathBuf)> {
    let (_, user) = current(k);
    let user = user?;
    let cert = PathBuf::from(user.client_certificate.as_ref()?);
    let key = user.client_key.as_ref().map(PathBuf::from).unwrap_or_else(|| cert.clone());
    Some((cert, key))
}

/// isClientConfigStillValid: the kubeconfig exists, names a client certificate and none of its
/// certificates is expired. An unreadable file is "not valid" (bootstrap again), as upstream.
pub fn kubeconfig_valid(path: &Path, now: SystemTime) -> bool {
    if !path.exists() {
        return false;
    }
    let k = match read_kubeconfig(path) {
        Ok(k) => k,
        Err(e) => {
            tracing::warn!(error = %e, "unable to read the existing kubeconfig");
            return false;
        }
    };
    let (_, user) = current(&k);
    let pem = match user {
        Some(u) if u.client_certificate_data.is_some() => {
            STANDARD.decode(u.client_certificate_data.as_deref().unwrap_or_default().trim()).ok()
        }
        Some(u) => u.client_certificate.as_ref().and_then(|f| std::fs::read(f).ok()),
        None => None,
    };
    let certs: Vec<CertificateDer<'static>> =
        pem.map(|p| CertificateDer::pem_slice_iter(&p).filter_map(|c| c.ok()).collect()).unwrap_or_default();
    if certs.is_empty() {
        tracing::warn!(kubeconfig = %path.display(), "no client certificate in the existing kubeconfig");
        return false;
    }
    for c in &certs {
        match super::store::validity(c) {
            Some((_, not_after)) if now <= not_after => {}
            _ => {
                tracing::warn!(kubeconfig = %path.display(), "part of the existing client certificate is expired");
                return false;
            }
        }
    }
    true
}

/// writeKubeconfigFromBootstrapping: the bootstrap kubeconfig's cluster (`default-cluster`: its
/// server, insecure flag, CA file — or CA data when there is no file), user `default-auth` with
/// `pem` as client certificate and key, context `default-context` in namespace `default`.
pub fn write_kubeconfig(bootstrap: &Kubeconfig, path: &Path, pem: &Path) -> Result<()> {
    let (cluster, _) = current(bootstrap);
    let cluster = cluster.cloned().unwrap_or_default();
    let mut c = serde_json::Map::new();
    if let Some(s) = &cluster.server {
        c.insert("server".into(), s.clone().into());
    }
    if cluster.insecure_skip_tls_verify == Some(true) {
        c.insert("insecure-skip-tls-verify".into(), true.into());
    }
    match (&cluster.certificate_authority, &cluster.certificate_authority_data) {
        (Some(file), _) => {
            c.insert("certificate-authority".into(), file.clone().into());
        }
        (None, Some(data)) => {
            c.insert("certificate-authority-data".into(), data.clone().into());
        }
        _ => {}
    }
    let pem = std::path::absolute(pem).unwrap_or_else(|_| pem.to_path_buf()).display().to_string();
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "default-cluster", "cluster": c}],
        "users": [{"name": "default-auth", "user": {"client-certificate": pem, "client-key": pem}}],
        "contexts": [{"name": "default-context", "context": {
            "cluster": "default-cluster", "user": "default-auth", "namespace": "default"}}],
        "current-context": "default-context",
        "preferences": {},
    });
    let text =
        serde_yaml::to_string(&doc).map_err(|e| Error::Kubeconfig { path: path.into(), message: e.to_string() })?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.into(), source })?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|source| Error::Io { path: tmp.clone(), source })?;
    std::fs::rename(&tmp, path).map_err(|source| Error::Io { path: path.into(), source })
}

/// LoadClientCert: unless `kubeconfig` is still valid, asks for a client certificate with
/// `client` (the bootstrap credentials), reusing the key of the current pair or of the
/// temporary key file, stores the answer and writes `kubeconfig` pointing at it.
pub async fn load_client_cert(
    kubeconfig: &Path,
    bootstrap: &Kubeconfig,
    store: &FileStore,
    cert_dir: &Path,
    node_name: &str,
    client: &dyn CsrClient,
    now: SystemTime,
) -> Result<bool> {
    if kubeconfig_valid(kubeconfig, now) {
        tracing::info!(kubeconfig = %kubeconfig.display(), "kubeconfig exists and is valid, skipping bootstrap");
        return Ok(false);
    }
    tracing::info!("using the bootstrap kubeconfig to request a client certificate");
    let key = reusable_key(store, cert_dir)?;
    let mut prepared = csr::prepare(Kind::Client, node_name, &[], Some(key))?;
    let (cn, org) = csr::subject(node_name);
    prepared.name = Some(csr::digested_name(&prepared.public_key_der, &cn, &[org], &Kind::Client.usages()));
    let cert = client.request_certificate(&prepared, WAIT).await?;
    store.update(&cert, &prepared.key_pem, SystemTime::now())?;
    let tmp = cert_dir.join(TMP_KEY_FILE);
    if let Err(e) = std::fs::remove_file(&tmp)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::info!(path = %tmp.display(), error = %e, "failed cleaning up the private key file");
    }
    write_kubeconfig(bootstrap, kubeconfig, &store.current_path())?;
    Ok(true)
}

/// The current pair's key when it has one, else the temporary key file's (created when missing,
/// 0600: LoadOrGenerateKeyFile).
fn reusable_key(store: &FileStore, cert_dir: &Path) -> Result<rcgen::KeyPair> {
    // The pair file holds certificates first: the key is its first key block. Only PKCS#8
    // ECDSA P-256 keys are reused (what this kubelet writes); others get a new key.
    let key_of = |path: &Path| -> Option<rcgen::KeyPair> {
        let pem = std::fs::read(path).ok()?;
        let der = rustls::pki_types::PrivateKeyDer::from_pem_slice(&pem).ok()?;
        rcgen::KeyPair::from_der_and_sign_algo(&der, &rcgen::PKCS_ECDSA_P256_SHA256).ok()
    };
    if let Ok(Some(pair)) = store.current()
        && let Some(key) = key_of(&pair.path)
    {
        return Ok(key);
    }
    let path = cert_dir.join(TMP_KEY_FILE);
    if let Some(key) = key_of(&path) {
        return Ok(key);
    }
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    super::store::write_private(cert_dir, &path, key.serialize_pem().as_bytes())?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certificate::store::tests::issue;
    use std::sync::Mutex;

    const BOOTSTRAP: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:6443\n    certificate-authority-data: Q0E=\nusers:\n- name: u\n  user:\n    token: abcdef.0123456789abcdef\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\n";

    struct Recording(Mutex<Vec<String>>);

    #[async_trait::async_trait]
    impl CsrClient for Recording {
        async fn request_certificate(&self, p: &csr::Prepared, _wait: Duration) -> Result<String> {
            self.0.lock().unwrap().push(p.name.clone().unwrap_or_default());
            let req = rcgen::CertificateSigningRequestParams::from_pem(&p.csr_pem).unwrap();
            let ca_key = rcgen::KeyPair::generate().unwrap();
            let ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap().self_signed(&ca_key).unwrap();
            Ok(req.signed_by(&ca, &ca_key).unwrap().pem())
        }
    }

    #[tokio::test]
    async fn bootstrap_writes_the_pair_and_a_kubeconfig_then_reuses_them() {
        let dir = tempfile::tempdir().unwrap();
        let bootstrap_path = dir.path().join("bootstrap.conf");
        std::fs::write(&bootstrap_path, BOOTSTRAP).unwrap();
        let bootstrap = read_kubeconfig(&bootstrap_path).unwrap();
        let kubeconfig = dir.path().join("kubelet.conf");
        let certs = dir.path().join("pki");
        let store = FileStore::new(&certs, "kubelet-client");
        let client = Recording(Mutex::new(Vec::new()));
        let now = SystemTime::now();
        assert!(load_client_cert(&kubeconfig, &bootstrap, &store, &certs, "n1", &client, now).await.unwrap());
        let names = client.0.lock().unwrap().clone();
        assert!(names[0].starts_with("node-csr-"), "{names:?}");
        assert!(!certs.join(TMP_KEY_FILE).exists());
        let written = read_kubeconfig(&kubeconfig).unwrap();
        assert_eq!(written.current_context.as_deref(), Some("default-context"));
        let (cluster, user) = current(&written);
        assert_eq!(cluster.unwrap().server.as_deref(), Some("https://127.0.0.1:6443"));
        assert_eq!(cluster.unwrap().certificate_authority_data.as_deref(), Some("Q0E="));
        let pem = store.current_path().display().to_string();
        assert_eq!(user.unwrap().client_certificate.as_deref(), Some(pem.as_str()));
        assert_eq!(user.unwrap().client_key.as_deref(), Some(pem.as_str()));
        assert_eq!(written.auth_infos[0].name, "default-auth");
        // A valid kubeconfig: no request.
        assert!(kubeconfig_valid(&kubeconfig, now));
        assert!(!load_client_cert(&kubeconfig, &bootstrap, &store, &certs, "n1", &client, now).await.unwrap());
        assert_eq!(client.0.lock().unwrap().len(), 1);
        // Expired (rcgen's default validity ends in 4096): bootstrap again, with the same key.
        let far = SystemTime::UNIX_EPOCH + Duration::from_secs(5000 * 365 * 86400 / 2);
        assert!(!kubeconfig_valid(&kubeconfig, far));
        load_client_cert(&kubeconfig, &bootstrap, &store, &certs, "n1", &client, far).await.unwrap();
        let names = client.0.lock().unwrap().clone();
        assert_eq!(names[0], names[1], "the same key and subject give the same request name");
    }

    #[test]
    fn a_kubeconfig_with_an_expired_or_missing_certificate_is_not_valid() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!kubeconfig_valid(&dir.path().join("missing"), SystemTime::now()));
        let (cert, _) = issue("system:node:n1", 1);
        std::fs::write(dir.path().join("c.pem"), cert).unwrap();
        let conf = dir.path().join("k.conf");
        let text = BOOTSTRAP.replace("token: abcdef.0123456789abcdef", "client-certificate: c.pem");
        std::fs::write(&conf, text).unwrap();
        assert!(kubeconfig_valid(&conf, SystemTime::now()));
        assert!(!kubeconfig_valid(&conf, SystemTime::now() + Duration::from_secs(3 * 86400)));
        std::fs::write(&conf, BOOTSTRAP).unwrap();
        assert!(!kubeconfig_valid(&conf, SystemTime::now()));
    }
}
