//! TLS for the kubelet server on 10250: the serving pair (`tlsCertFile`/`tlsPrivateKeyFile`, or a
//! self-signed pair kept in `--cert-dir` as upstream does), `tlsMinVersion`, `tlsCipherSuites`, and
//! optional client certificates verified against `authentication.x509.clientCAFile`.

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedCipherSuite};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{field}: {path}: {message}")]
    File { field: &'static str, path: String, message: String },
    #[error("tlsCertFile and tlsPrivateKeyFile must be set together")]
    HalfPair,
    #[error("tlsMinVersion: {0} is not supported: this server speaks TLS 1.2 and 1.3 only")]
    OldVersion(String),
    #[error("tlsMinVersion: unknown version {0:?} (VersionTLS12, VersionTLS13)")]
    UnknownVersion(String),
    #[error("tlsCipherSuites: not supported by this server (rustls): {0}")]
    Suites(String),
    #[error("--cert-dir {0}: {1}")]
    CertDir(String, String),
    #[error("TLS setup: {0}")]
    Rustls(String),
}

/// What the server's TLS is made from.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub cert_file: String,
    pub key_file: String,
    /// Where the self-signed pair lives when no files are given (`kubelet.crt`, `kubelet.key`).
    pub cert_dir: PathBuf,
    pub min_version: String,
    pub cipher_suites: Vec<String>,
    pub client_ca_file: String,
    /// Names and addresses the self-signed certificate is valid for.
    pub host_names: Vec<String>,
    /// serverTLSBootstrap: the certificate comes from the serving certificate manager at each
    /// handshake (`certificate::serving::Resolver`) instead of files.
    pub cert_resolver: Option<Arc<dyn rustls::server::ResolvesServerCert>>,
}

fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The rustls suite for a Go `crypto/tls` suite name, if rustls implements it.
fn suite(name: &str) -> Option<SupportedCipherSuite> {
    use rustls::crypto::ring::cipher_suite as cs;
    Some(match name {
        "TLS_AES_128_GCM_SHA256" => cs::TLS13_AES_128_GCM_SHA256,
        "TLS_AES_256_GCM_SHA384" => cs::TLS13_AES_256_GCM_SHA384,
        "TLS_CHACHA20_POLY1305_SHA256" => cs::TLS13_CHACHA20_POLY1305_SHA256,
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305" | "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" => {
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305" | "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" => {
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        }
        _ => return None,
    })
}

/// The provider restricted to `names` for TLS 1.2; TLS 1.3 suites stay on as in Go, where they
/// are not configurable.
fn provider_with_suites(names: &[String]) -> Result<CryptoProvider, TlsError> {
    let mut p = provider();
    if names.is_empty() {
        return Ok(p);
    }
    let mut bad = Vec::new();
    let mut chosen: Vec<SupportedCipherSuite> = Vec::new();
    for n in names {
        match suite(n) {
            Some(s) => chosen.push(s),
            None => bad.push(n.as_str()),
        }
    }
    if !bad.is_empty() {
        return Err(TlsError::Suites(bad.join(", ")));
    }
    let tls13: Vec<SupportedCipherSuite> = p.cipher_suites.iter().copied().filter(|s| s.tls13().is_some()).collect();
    for s in tls13 {
        if !chosen.contains(&s) {
            chosen.push(s);
        }
    }
    p.cipher_suites = chosen;
    Ok(p)
}

static TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

fn versions(min: &str) -> Result<&'static [&'static rustls::SupportedProtocolVersion], TlsError> {
    match min {
        "" | "VersionTLS12" => Ok(rustls::ALL_VERSIONS),
        "VersionTLS13" => Ok(TLS13_ONLY),
        "VersionTLS10" | "VersionTLS11" => Err(TlsError::OldVersion(min.into())),
        other => Err(TlsError::UnknownVersion(other.into())),
    }
}

fn read_certs(field: &'static str, path: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |m: String| TlsError::File { field, path: path.into(), message: m };
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let certs: Vec<_> =
        CertificateDer::pem_slice_iter(&pem).collect::<Result<_, _>>().map_err(|e| err(format!("{e:?}")))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

fn read_key(field: &'static str, path: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    let err = |m: String| TlsError::File { field, path: path.into(), message: m };
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| err(format!("no usable PEM private key: {e:?}")))
}

/// The serving pair: the configured files, else `<cert-dir>/kubelet.{crt,key}`, generated
/// self-signed when missing (as upstream, which also keeps the generated pair across restarts).
fn serving_pair(s: &Settings) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    match (s.cert_file.is_empty(), s.key_file.is_empty()) {
        (false, false) => {
            return Ok((read_certs("tlsCertFile", &s.cert_file)?, read_key("tlsPrivateKeyFile", &s.key_file)?));
        }
        (true, true) => {}
        _ => return Err(TlsError::HalfPair),
    }
    let crt = s.cert_dir.join("kubelet.crt");
    let key = s.cert_dir.join("kubelet.key");
    if !crt.exists() || !key.exists() {
        generate_self_signed(&s.cert_dir, &crt, &key, &s.host_names)?;
    }
    let (c, k) = (crt.display().to_string(), key.display().to_string());
    Ok((read_certs("--cert-dir", &c)?, read_key("--cert-dir", &k)?))
}

fn generate_self_signed(dir: &Path, crt: &Path, key: &Path, names: &[String]) -> Result<(), TlsError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let derr = |e: &dyn std::fmt::Display| TlsError::CertDir(dir.display().to_string(), e.to_string());
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| derr(&e))?;
    let mut names: Vec<String> = names.iter().filter(|n| !n.is_empty()).cloned().collect();
    for n in ["localhost", "127.0.0.1"] {
        if !names.iter().any(|x| x == n) {
            names.push(n.into());
        }
    }
    let mut params = rcgen::CertificateParams::new(names.clone()).map_err(|e| derr(&e))?;
    let now = chrono::Utc::now();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{}@{}", names.first().map_or("kubelet", |n| n), now.timestamp()));
    params.not_before = rcgen::date_time_ymd(2000, 1, 1);
    // One year, as upstream's self-signed serving certificate.
    let later = (now + chrono::Duration::days(366)).date_naive();
    use chrono::Datelike;
    params.not_after = rcgen::date_time_ymd(later.year(), later.month() as u8, later.day() as u8);
    let pair = rcgen::KeyPair::generate().map_err(|e| derr(&e))?;
    let cert = params.self_signed(&pair).map_err(|e| derr(&e))?;
    let write = |path: &Path, body: String, mode: u32| -> Result<(), TlsError> {
        use std::io::Write;
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| derr(&e))?;
        f.write_all(body.as_bytes()).map_err(|e| derr(&e))?;
        std::fs::rename(&tmp, path).map_err(|e| derr(&e))
    };
    write(key, pair.serialize_pem(), 0o600)?;
    write(crt, cert.pem(), 0o644)?;
    tracing::info!(cert = %crt.display(), "generated a self-signed serving certificate");
    Ok(())
}

/// The rustls configuration for the server.
pub fn server_config(s: &Settings) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(provider_with_suites(&s.cipher_suites)?);
    let versions = versions(&s.min_version)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = if s.client_ca_file.is_empty() {
        builder.with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        for c in read_certs("authentication.x509.clientCAFile", &s.client_ca_file)? {
            roots.add(c).map_err(|e| TlsError::File {
                field: "authentication.x509.clientCAFile",
                path: s.client_ca_file.clone(),
                message: e.to_string(),
            })?;
        }
        // Clients without a certificate may still authenticate with a token (or anonymously).
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
        builder.with_client_cert_verifier(verifier)
    };
    let mut cfg = match &s.cert_resolver {
        Some(resolver) => builder.with_cert_resolver(resolver.clone()),
        None => {
            let (certs, key) = serving_pair(s)?;
            builder.with_single_cert(certs, key).map_err(|e| TlsError::Rustls(e.to_string()))?
        }
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// User name (CN) and groups (O) of a verified client certificate.
pub fn identity(cert: &CertificateDer<'_>) -> Option<(String, Vec<String>)> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let subject = parsed.subject();
    let cn = subject.iter_common_name().next()?.as_str().ok()?.to_string();
    let groups = subject.iter_organization().filter_map(|o| o.as_str().ok().map(str::to_string)).collect();
    Some((cn, groups))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path) -> Settings {
        Settings {
            cert_dir: dir.join("pki"),
            host_names: vec!["node-a".into(), "10.0.0.5".into()],
            ..Default::default()
        }
    }

    #[test]
    fn self_signed_pair_is_generated_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        server_config(&settings(dir.path())).unwrap();
        let crt = dir.path().join("pki/kubelet.crt");
        let first = std::fs::read(&crt).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("pki/kubelet.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "private key readable by root only");
        server_config(&settings(dir.path())).unwrap();
        assert_eq!(std::fs::read(&crt).unwrap(), first, "reused across restarts");
        let der = CertificateDer::pem_slice_iter(&first).next().unwrap().unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        let sans = format!("{:?}", parsed.subject_alternative_name().unwrap().unwrap().value);
        assert!(sans.contains("node-a") && sans.contains("localhost"), "{sans}");
    }

    #[test]
    fn bad_settings_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings(dir.path());
        s.min_version = "VersionTLS10".into();
        assert_eq!(
            server_config(&s).unwrap_err().to_string(),
            "tlsMinVersion: VersionTLS10 is not supported: this server speaks TLS 1.2 and 1.3 only"
        );
        s.min_version = "VersionTLS13".into();
        s.cipher_suites = vec!["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".into(), "TLS_RSA_WITH_RC4_128_SHA".into()];
        assert_eq!(
            server_config(&s).unwrap_err().to_string(),
            "tlsCipherSuites: not supported by this server (rustls): TLS_RSA_WITH_RC4_128_SHA"
        );
        s.cipher_suites = vec!["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256".into()];
        assert!(server_config(&s).is_ok());
        s.cert_file = "/nonexistent.crt".into();
        assert_eq!(
            server_config(&s).unwrap_err().to_string(),
            "tlsCertFile and tlsPrivateKeyFile must be set together"
        );
        s.key_file = "/nonexistent.key".into();
        assert!(server_config(&s).unwrap_err().to_string().starts_with("tlsCertFile: /nonexistent.crt:"));
        s = settings(dir.path());
        s.client_ca_file = dir.path().join("missing-ca.crt").display().to_string();
        assert!(server_config(&s).unwrap_err().to_string().starts_with("authentication.x509.clientCAFile:"));
    }

    #[test]
    fn tls12_suites_are_restricted_and_tls13_kept() {
        let p = provider_with_suites(&["TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384".into()]).unwrap();
        let tls12: Vec<_> = p.cipher_suites.iter().filter(|s| s.tls13().is_none()).collect();
        assert_eq!(tls12.len(), 1);
        assert!(p.cipher_suites.iter().any(|s| s.tls13().is_some()));
    }
}
