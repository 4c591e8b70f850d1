//! Certificates (generated CA, serving cert, client certs), kubeconfig files and rustls configurations.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("rustls: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

pub struct Ca {
    pub cert: Certificate,
    pub key: KeyPair,
    /// PEM as written to ca.crt (the one clients trust).
    pub pem: String,
}

/// A generated certificate and key in PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: CertificateDer<'static>,
    pub key_der: Vec<u8>,
}

fn write(path: &Path, text: &str) -> Result<(), TlsError> {
    std::fs::write(path, text).map_err(|source| TlsError::Io { path: path.into(), source })
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "testapi-ca");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    p
}

impl Ca {
    /// Loads ca.key/ca.crt from `dir`, or generates and writes them.
    pub fn load_or_create(dir: &Path) -> Result<Ca, TlsError> {
        let key_path = dir.join("ca.key");
        let crt_path = dir.join("ca.crt");
        if let (Ok(key_pem), Ok(crt_pem)) = (std::fs::read_to_string(&key_path), std::fs::read_to_string(&crt_path)) {
            let key = KeyPair::from_pem(&key_pem)?;
            // Re-signing the same DN with the same key gives an equivalent issuer for new certificates.
            let cert = ca_params().self_signed(&key)?;
            return Ok(Ca { cert, key, pem: crt_pem });
        }
        let key = KeyPair::generate()?;
        let cert = ca_params().self_signed(&key)?;
        let pem = cert.pem();
        write(&key_path, &key.serialize_pem())?;
        write(&crt_path, &pem)?;
        Ok(Ca { cert, key, pem })
    }

    fn issue(&self, params: CertificateParams) -> Result<Issued, TlsError> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
        })
    }

    /// Serving certificate for 127.0.0.1, localhost and any extra host names / IPs.
    pub fn server_cert(&self, extra_sans: &[String]) -> Result<Issued, TlsError> {
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "kube-apiserver");
        p.distinguished_name = dn;
        let mut sans = vec!["127.0.0.1".to_string(), "localhost".to_string(), "::1".to_string()];
        sans.extend(extra_sans.iter().cloned());
        for s in sans {
            let san = match s.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(s.clone().try_into()?),
            };
            p.subject_alt_names.push(san);
        }
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(p)
    }

    /// Client certificate: CN = user, O = group.
    pub fn client_cert(&self, user: &str, group: Option<&str>) -> Result<Issued, TlsError> {
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, user);
        if let Some(g) = group {
            dn.push(DnType::OrganizationName, g);
        }
        p.distinguished_name = dn;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(p)
    }
}

/// Standard base64 (padding and whitespace tolerated); `None` on a bad character.
pub fn unb64(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

pub fn b64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = ((b[0] as u32) << 16) | ((b[1] as u32) << 8) | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A kubeconfig with embedded CA and client cert (context "testapi").
pub fn kubeconfig(server: &str, ca_pem: &str, user: &str, client: &Issued) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: testapi\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\n\
users:\n- name: {user}\n  user:\n    client-certificate-data: {crt}\n    client-key-data: {key}\n\
contexts:\n- name: testapi\n  context:\n    cluster: testapi\n    user: {user}\n    namespace: default\ncurrent-context: testapi\n",
        ca = b64(ca_pem.as_bytes()),
        crt = b64(client.cert_pem.as_bytes()),
        key = b64(client.key_pem.as_bytes()),
    )
}

/// Writes `<dir>/<file>.kubeconfig` (and the cert/key beside it as <file>.crt/.key).
pub fn write_kubeconfig(
    dir: &Path,
    file: &str,
    server: &str,
    ca: &Ca,
    user: &str,
    group: Option<&str>,
) -> Result<PathBuf, TlsError> {
    let issued = ca.client_cert(user, group)?;
    write(&dir.join(format!("{file}.crt")), &issued.cert_pem)?;
    write(&dir.join(format!("{file}.key")), &issued.key_pem)?;
    let path = dir.join(format!("{file}.kubeconfig"));
    write(&path, &kubeconfig(server, &ca.pem, user, &issued))?;
    Ok(path)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Server config: our serving cert; client certs optional but verified against the CA when presented.
pub fn server_config(ca: &Ca, serving: &Issued) -> Result<rustls::ServerConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone())?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .allow_unauthenticated()
        .build()?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(serving.key_der.clone()));
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![serving.cert_der.clone(), ca.cert.der().clone()], key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Accepts any server certificate (kubelet serving certs are self-signed).
#[derive(Debug)]
struct AnyServerCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Client config for talking to kubelets: client cert CN=kube-apiserver-kubelet-client, O=system:masters.
pub fn kubelet_client_config(ca: &Ca) -> Result<rustls::ClientConfig, TlsError> {
    let issued = ca.client_cert("kube-apiserver-kubelet-client", Some("system:masters"))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(issued.key_der.clone()));
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider())))
        .with_client_auth_cert(vec![issued.cert_der], key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// CN and O values of a certificate subject.
pub fn subject_names(der: &[u8]) -> Option<(String, Vec<String>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let cn = subject.iter_common_name().next()?.as_str().ok()?.to_string();
    let orgs = subject.iter_organization().filter_map(|o| o.as_str().ok().map(str::to_string)).collect();
    Some((cn, orgs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for s in [&b""[..], b"f", b"fo", b"foo", b"foob", b"fooba", b"foobar", &[0, 255, 128, 7]] {
            assert_eq!(unb64(&b64(s)).unwrap(), s);
        }
        assert!(unb64("a*b").is_none());
    }

    #[test]
    fn base64_matches_known_values() {
        assert_eq!(b64(b""), "");
        assert_eq!(b64(b"f"), "Zg==");
        assert_eq!(b64(b"fo"), "Zm8=");
        assert_eq!(b64(b"foo"), "Zm9v");
        assert_eq!(b64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn ca_reload_and_client_subject() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path()).unwrap();
        let again = Ca::load_or_create(dir.path()).unwrap();
        assert_eq!(ca.pem, again.pem);
        let c = again.client_cert("system:node:n1", Some("system:nodes")).unwrap();
        let (cn, orgs) = subject_names(&c.cert_der).unwrap();
        assert_eq!(cn, "system:node:n1");
        assert_eq!(orgs, vec!["system:nodes".to_string()]);
        // The reloaded CA's issued certs verify against the original ca.crt.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert.der().clone()).unwrap();
        let v =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider()).build().unwrap();
        v.verify_client_cert(&c.cert_der, &[], UnixTime::now()).unwrap();
        assert!(server_config(&again, &again.server_cert(&[]).unwrap()).is_ok());
        assert!(kubelet_client_config(&again).is_ok());
    }
}
