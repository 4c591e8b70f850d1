//! CertificateSigningRequests for the node's two identities: the key and PEM request
//! (certutil.MakeCSR), the request's name (bootstrap.go's digestedName), and the API side
//! (client-go util/certificate/csr: RequestCertificate, WaitForCertificate) behind [`CsrClient`].

use super::{Error, Result};
use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{CertificateSigningRequest, CertificateSigningRequestSpec};
use std::net::IpAddr;
use std::time::Duration;

/// Which of the kubelet's certificates a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The API client identity (`kubernetes.io/kube-apiserver-client-kubelet`).
    Client,
    /// The 10250 serving certificate (`kubernetes.io/kubelet-serving`).
    Serving,
}

impl Kind {
    /// The FileStore prefix (pkg/kubelet/certificate: "kubelet-client" / "kubelet-server").
    pub fn prefix(self) -> &'static str {
        match self {
            Kind::Client => "kubelet-client",
            Kind::Serving => "kubelet-server",
        }
    }

    pub fn signer_name(self) -> &'static str {
        match self {
            Kind::Client => "kubernetes.io/kube-apiserver-client-kubelet",
            Kind::Serving => "kubernetes.io/kubelet-serving",
        }
    }

    /// Usages for an ECDSA key: upstream asks for "key encipherment" only with RSA keys
    /// (pkg/kubelet/certificate/kubelet.go, since 1.27), digital signature plus client or server
    /// auth otherwise.
    pub fn usages(self) -> Vec<String> {
        let last = match self {
            Kind::Client => "client auth",
            Kind::Serving => "server auth",
        };
        vec!["digital signature".into(), last.into()]
    }
}

/// A request ready to be sent, with the key that stays on the node.
pub struct Prepared {
    pub kind: Kind,
    pub csr_pem: String,
    pub key_pem: String,
    /// The key's SubjectPublicKeyInfo (DER).
    pub public_key_der: Vec<u8>,
    /// `node-csr-<digest>` for bootstrap requests (so a restarted bootstrap finds its request);
    /// `None` for rotations (generateName `csr-`, as upstream's certificate manager).
    pub name: Option<String>,
}

/// The subject upstream uses for both identities: CN `system:node:<name>`, O `system:nodes`.
pub fn subject(node_name: &str) -> (String, &'static str) {
    (format!("system:node:{node_name}"), "system:nodes")
}

/// A new ECDSA P-256 key and its CSR. `sans` (serving only) become DNS names, or IP addresses
/// when they parse as one (the node's hostnames and addresses).
pub fn prepare(kind: Kind, node_name: &str, sans: &[String], key: Option<rcgen::KeyPair>) -> Result<Prepared> {
    let key = match key {
        Some(k) => k,
        None => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?,
    };
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    let (cn, org) = subject(node_name);
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::OrganizationName, org);
    params.distinguished_name.push(rcgen::DnType::CommonName, cn);
    if kind == Kind::Serving {
        for s in sans.iter().filter(|s| !s.is_empty()) {
            params.subject_alt_names.push(match s.parse::<IpAddr>() {
                Ok(ip) => rcgen::SanType::IpAddress(ip),
                Err(_) => rcgen::SanType::DnsName(s.clone().try_into()?),
            });
        }
    }
    let csr_pem = params.serialize_request(&key)?.pem()?;
    Ok(Prepared { kind, csr_pem, key_pem: key.serialize_pem(), public_key_der: key.public_key_der(), name: None })
}

/// bootstrap.go's digestedName: SHA-512/256 over the base64url (unpadded) public key (PKIX DER),
/// CN, each O and each usage, every item followed by `|`; the name is `node-csr-` + the digest in
/// base64url. The same key and subject give the same name after a restart.
pub fn digested_name(public_key_der: &[u8], cn: &str, orgs: &[&str], usages: &[String]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA512_256);
    let mut write = |data: &[u8]| {
        ctx.update(URL_SAFE_NO_PAD.encode(data).as_bytes());
        ctx.update(b"|");
    };
    write(public_key_der);
    write(cn.as_bytes());
    for o in orgs {
        write(o.as_bytes());
    }
    for u in usages {
        write(u.as_bytes());
    }
    format!("node-csr-{}", URL_SAFE_NO_PAD.encode(ctx.finish().as_ref()))
}

/// The CertificateSigningRequest object for a prepared request.
pub fn object(p: &Prepared) -> CertificateSigningRequest {
    let mut csr = CertificateSigningRequest::default();
    match &p.name {
        Some(n) => csr.metadata.name = Some(n.clone()),
        None => csr.metadata.generate_name = Some("csr-".into()),
    }
    csr.spec = CertificateSigningRequestSpec {
        request: ByteString(p.csr_pem.clone().into_bytes()),
        signer_name: p.kind.signer_name().into(),
        usages: Some(p.kind.usages()),
        ..Default::default()
    };
    csr
}

/// The public key (SubjectPublicKeyInfo DER) of a PEM request, for ensureCompatible.
fn request_key(pem: &[u8]) -> Option<Vec<u8>> {
    use rustls::pki_types::pem::PemObject;
    use x509_parser::prelude::FromDer;
    let der = rustls::pki_types::CertificateSigningRequestDer::from_pem_slice(pem).ok()?;
    let (_, req) = x509_parser::certification_request::X509CertificationRequest::from_der(der.as_ref()).ok()?;
    Some(req.certification_request_info.subject_pki.raw.to_vec())
}

/// What a CSR's status says (WaitForCertificate's checks, in its order).
#[derive(Debug, PartialEq)]
pub enum Outcome {
    Pending,
    Issued(String),
    Denied { reason: String, message: String },
    Failed { reason: String, message: String },
}

pub fn outcome(csr: &CertificateSigningRequest) -> Outcome {
    let Some(status) = &csr.status else { return Outcome::Pending };
    let mut approved = false;
    for c in status.conditions.iter().flatten() {
        let text = || (c.reason.clone().unwrap_or_default(), c.message.clone().unwrap_or_default());
        match c.type_.as_str() {
            "Denied" => {
                let (reason, message) = text();
                return Outcome::Denied { reason, message };
            }
            "Failed" => {
                let (reason, message) = text();
                return Outcome::Failed { reason, message };
            }
            "Approved" => approved = true,
            _ => {}
        }
    }
    match &status.certificate {
        Some(cert) if approved && !cert.0.is_empty() => Outcome::Issued(String::from_utf8_lossy(&cert.0).into_owned()),
        _ => Outcome::Pending,
    }
}

/// Sends a request and waits until it is issued (the certificate's PEM), denied or failed.
#[async_trait]
pub trait CsrClient: Send + Sync {
    async fn request_certificate(&self, p: &Prepared, wait: Duration) -> Result<String>;
}

/// The CSR API through kube-rs.
pub struct KubeCsrClient(pub kube::Client);

#[async_trait]
impl CsrClient for KubeCsrClient {
    async fn request_certificate(&self, p: &Prepared, wait: Duration) -> Result<String> {
        let api: kube::Api<CertificateSigningRequest> = kube::Api::all(self.0.clone());
        let api_err = |e: kube::Error| Error::Api(e.to_string());
        let created = match api.create(&Default::default(), &object(p)).await {
            Ok(c) => c,
            // RequestCertificate: a bootstrap request of the same key and subject already exists
            // (an earlier start); it is reused.
            Err(kube::Error::Api(s)) if s.code == 409 && p.name.is_some() => {
                let name = p.name.clone().unwrap_or_default();
                tracing::info!(csr = %name, "certificate signing request for this node already exists, reusing it");
                let existing = api.get(&name).await.map_err(api_err)?;
                if request_key(&existing.spec.request.0).as_deref() != Some(p.public_key_der.as_slice())
                    || existing.spec.signer_name != p.kind.signer_name()
                {
                    return Err(Error::Api(format!("certificate signing request {name} is not compatible")));
                }
                existing
            }
            Err(e) => return Err(api_err(e)),
        };
        let name = created.metadata.name.clone().unwrap_or_default();
        let uid = created.metadata.uid.clone();
        tracing::info!(csr = %name, signer = p.kind.signer_name(), "waiting for the certificate to be issued");
        let done = kube::runtime::wait::await_condition(api, &name, move |o: Option<&CertificateSigningRequest>| {
            o.is_some_and(|o| o.metadata.uid == uid && outcome(o) != Outcome::Pending)
        });
        let csr = match tokio::time::timeout(wait, done).await {
            Err(_) => return Err(Error::Timeout { name, after: wait }),
            Ok(Err(e)) => return Err(Error::Api(e.to_string())),
            Ok(Ok(o)) => o.ok_or_else(|| Error::Api(format!("certificate signing request {name} was deleted")))?,
        };
        match outcome(&csr) {
            Outcome::Issued(pem) => Ok(pem),
            Outcome::Denied { reason, message } => Err(Error::Denied { name, reason, message }),
            Outcome::Failed { reason, message } => Err(Error::Failed { name, reason, message }),
            Outcome::Pending => Err(Error::Api(format!("certificate signing request {name}: no certificate"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::certificates::v1::{CertificateSigningRequestCondition, CertificateSigningRequestStatus};

    #[test]
    fn serving_request_carries_subject_and_addresses() {
        let p = prepare(Kind::Serving, "n1", &["n1.example".into(), "10.0.0.5".into(), "".into()], None).unwrap();
        let der = rustls::pki_types::pem::PemObject::from_pem_slice(p.csr_pem.as_bytes())
            .map(|d: rustls::pki_types::CertificateSigningRequestDer<'static>| d)
            .unwrap();
        use x509_parser::prelude::FromDer;
        let (_, req) = x509_parser::certification_request::X509CertificationRequest::from_der(der.as_ref()).unwrap();
        let subject = &req.certification_request_info.subject;
        assert_eq!(subject.iter_common_name().next().unwrap().as_str().unwrap(), "system:node:n1");
        assert_eq!(subject.iter_organization().next().unwrap().as_str().unwrap(), "system:nodes");
        let text = format!("{:?}", req.requested_extensions().map(|e| e.collect::<Vec<_>>()));
        assert!(text.contains("n1.example") && text.contains("10, 0, 0, 5"), "{text}");
        assert!(p.key_pem.contains("PRIVATE KEY"));
        assert_eq!(request_key(p.csr_pem.as_bytes()).unwrap(), p.public_key_der);
        let obj = object(&p);
        assert_eq!(obj.metadata.generate_name.as_deref(), Some("csr-"));
        assert_eq!(obj.spec.signer_name, "kubernetes.io/kubelet-serving");
        assert_eq!(obj.spec.usages.unwrap(), ["digital signature", "server auth"]);
    }

    #[test]
    fn client_request_has_no_addresses() {
        let p = prepare(Kind::Client, "n1", &["10.0.0.5".into()], None).unwrap();
        let obj = object(&p);
        assert_eq!(obj.spec.signer_name, "kubernetes.io/kube-apiserver-client-kubelet");
        assert_eq!(obj.spec.usages.unwrap(), ["digital signature", "client auth"]);
        assert!(!p.csr_pem.is_empty());
    }

    #[test]
    fn digested_name_is_stable_and_delimited() {
        let usages = Kind::Client.usages();
        let a = digested_name(b"key", "system:node:n1", &["system:nodes"], &usages);
        assert_eq!(a, digested_name(b"key", "system:node:n1", &["system:nodes"], &usages));
        assert!(a.starts_with("node-csr-") && a.len() == "node-csr-".len() + 43, "{a}");
        // The delimiter keeps CN/O boundaries apart.
        assert_ne!(digested_name(b"k", "ab", &["c"], &[]), digested_name(b"k", "a", &["bc"], &[]));
        assert_ne!(a, digested_name(b"other", "system:node:n1", &["system:nodes"], &usages));
    }

    fn with(conds: &[(&str, &str)], cert: &str) -> CertificateSigningRequest {
        CertificateSigningRequest {
            status: Some(CertificateSigningRequestStatus {
                certificate: Some(ByteString(cert.as_bytes().to_vec())),
                conditions: Some(
                    conds
                        .iter()
                        .map(|(t, r)| CertificateSigningRequestCondition {
                            type_: t.to_string(),
                            status: "True".into(),
                            reason: Some(r.to_string()),
                            ..Default::default()
                        })
                        .collect(),
                ),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn outcome_needs_approval_and_a_certificate() {
        assert_eq!(outcome(&CertificateSigningRequest::default()), Outcome::Pending);
        assert_eq!(outcome(&with(&[("Approved", "")], "")), Outcome::Pending);
        assert_eq!(outcome(&with(&[], "PEM")), Outcome::Pending);
        assert_eq!(outcome(&with(&[("Approved", "")], "PEM")), Outcome::Issued("PEM".into()));
        assert!(
            matches!(outcome(&with(&[("Denied", "NoWay")], "")), Outcome::Denied { reason, .. } if reason == "NoWay")
        );
        assert!(matches!(outcome(&with(&[("Approved", ""), ("Failed", "Bad")], "")), Outcome::Failed { .. }));
    }
}
