//! CertificateSigningRequests (certificates.k8s.io/v1): what kube-apiserver's registry does on
//! create and on the `status` / `approval` subresources, kube-controller-manager's signer for the
//! two kubelet signers (pkg/controller/certificates/signer) and, optionally, its csrapproving
//! controller for a node's own certificates. Bootstrap tokens (`bootstrap-token-<id>` Secrets in
//! kube-system) authenticate the first request of a node.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::auth::Identity;
use crate::store::{Key, Store};
use crate::tls::Ca;

pub const RESOURCE: &str = "certificates.k8s.io/v1/certificatesigningrequests";
const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
const SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";

/// The signer's and approver's settings (`testapi serve --csr-*`).
#[derive(Debug, Clone)]
pub struct Options {
    /// The longest life of an issued certificate (kube-controller-manager's
    /// --cluster-signing-duration, one year by default); a request's `expirationSeconds` may
    /// shorten it.
    pub signing_duration: Duration,
    /// Approve kubelet client requests of a bootstrap token or of the node itself, and kubelet
    /// serving requests of the node itself.
    pub auto_approve: bool,
}

/// Registry create (PrepareForCreate + validation): the requester's identity into the spec,
/// status cleared; the request, signer and usages checked.
pub fn prepare_create(obj: &mut Value, ident: &Identity, min_expiration: Duration) -> Result<(), String> {
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    let signer = spec.get("signerName").and_then(Value::as_str).unwrap_or("");
    if signer.is_empty() {
        return Err("spec.signerName: Required value".into());
    }
    let request = spec.get("request").and_then(Value::as_str).unwrap_or("");
    if parse_request(request).is_none() {
        return Err("spec.request: Invalid value: []byte{...}: PEM block type must be CERTIFICATE REQUEST".into());
    }
    if spec.get("usages").and_then(Value::as_array).is_none_or(|u| u.is_empty()) {
        return Err("spec.usages: Required value".into());
    }
    if let Some(e) = spec.get("expirationSeconds").and_then(Value::as_i64)
        && e < min_expiration.as_secs() as i64
    {
        return Err(format!(
            "spec.expirationSeconds: Invalid value: {e}: may not specify a duration less than 600 seconds (10 minutes)"
        ));
    }
    obj["spec"]["username"] = json!(ident.user);
    obj["spec"]["groups"] = json!(ident.groups);
    obj["spec"]["uid"] = json!(ident.uid);
    if let Some(o) = obj.as_object_mut() {
        o.remove("status");
    }
    Ok(())
}

/// Base64 of the PEM request (as JSON carries `[]byte`) → the parsed request.
fn parse_request(b64: &str) -> Option<rcgen::CertificateSigningRequestParams> {
    let pem = crate::tls::unb64(b64)?;
    rcgen::CertificateSigningRequestParams::from_pem(std::str::from_utf8(&pem).ok()?).ok()
}

fn conditions(obj: &Value) -> Vec<Value> {
    obj.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default()
}

fn has(obj: &Value, typ: &str) -> bool {
    conditions(obj).iter().any(|c| c["type"] == typ && c["status"] != "False")
}

/// A subresource write (registry strategies): `approval` changes the conditions alone;
/// `status` changes the status but keeps the Approved/Denied conditions; the spec never changes.
pub fn subresource_write(sub: &str, old: &Value, new: &Value) -> Value {
    let mut out = old.clone();
    let now = crate::store::now_rfc3339();
    let stamp = |mut c: Value| {
        if c.get("lastUpdateTime").is_none_or(Value::is_null) {
            c["lastUpdateTime"] = json!(now);
        }
        if c.get("lastTransitionTime").is_none_or(Value::is_null) {
            c["lastTransitionTime"] = json!(now);
        }
        c
    };
    match sub {
        "approval" => {
            let conds: Vec<Value> = conditions(new).into_iter().map(stamp).collect();
            out["status"]["conditions"] = json!(conds);
        }
        _ => {
            let mut status = new.get("status").cloned().unwrap_or(json!({}));
            let kept: Vec<Value> = conditions(old)
                .into_iter()
                .filter(|c| c["type"] == "Approved" || c["type"] == "Denied")
                .chain(
                    conditions(new).into_iter().filter(|c| c["type"] != "Approved" && c["type"] != "Denied").map(stamp),
                )
                .collect();
            status["conditions"] = json!(kept);
            out["status"] = status;
        }
    }
    if let Some(rv) = new.pointer("/metadata/resourceVersion") {
        out["metadata"]["resourceVersion"] = rv.clone();
    }
    out
}

/// csrapproving's recognizers: a kubelet client request (CN `system:node:<n>`, O
/// `system:nodes`, no SANs) from a bootstrap token or from that node; a serving request from
/// that node (testapi's own rule: upstream leaves serving requests to an external approver).
fn approvable(obj: &Value) -> Option<&'static str> {
    let spec = obj.get("spec")?;
    let req = parse_request(spec.get("request")?.as_str()?)?;
    let dn = &req.params.distinguished_name;
    let text = |t: rcgen::DnType| match dn.get(&t)? {
        rcgen::DnValue::PrintableString(s) => Some(s.as_str().to_string()),
        rcgen::DnValue::Utf8String(s) => Some(s.clone()),
        _ => None,
    };
    let cn = text(rcgen::DnType::CommonName)?;
    if !cn.starts_with("system:node:") || text(rcgen::DnType::OrganizationName).as_deref() != Some("system:nodes") {
        return None;
    }
    let user = spec.get("username").and_then(Value::as_str).unwrap_or("");
    let groups: Vec<&str> = spec
        .get("groups")
        .and_then(Value::as_array)
        .map(|g| g.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    match spec.get("signerName").and_then(Value::as_str)? {
        CLIENT_SIGNER if req.params.subject_alt_names.is_empty() => {
            if user == cn {
                Some("Auto approving self kubelet client certificate after SubjectAccessReview.")
            } else if groups.contains(&"system:bootstrappers") {
                Some("Auto approving kubelet client certificate after SubjectAccessReview.")
            } else {
                None
            }
        }
        SERVING_SIGNER if user == cn => {
            Some("Auto approving kubelet serving certificate (testapi --csr-auto-approve).")
        }
        _ => None,
    }
}

/// The certificate for an approved request of a known signer: subject and SANs from the
/// request, key usages from `spec.usages`, life = min(expirationSeconds, signing duration),
/// backdated like kube-controller-manager's signer (5 min, or 10 % of a life under 8 h).
fn sign(ca: &Ca, obj: &Value, opts: &Options) -> Result<String, String> {
    let spec = obj.get("spec").ok_or("no spec")?;
    let mut req = parse_request(spec["request"].as_str().unwrap_or("")).ok_or("invalid request")?;
    let mut life = opts.signing_duration;
    if let Some(e) = spec.get("expirationSeconds").and_then(Value::as_u64) {
        life = life.min(Duration::from_secs(e));
    }
    let backdate = if life < Duration::from_secs(8 * 3600) { life / 10 } else { Duration::from_secs(300) };
    let now = time::OffsetDateTime::now_utc();
    req.params.not_before = now - backdate;
    req.params.not_after = now - backdate + life;
    req.params.key_usages.clear();
    req.params.extended_key_usages.clear();
    for u in spec.get("usages").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
        match u {
            "digital signature" => req.params.key_usages.push(rcgen::KeyUsagePurpose::DigitalSignature),
            "key encipherment" => req.params.key_usages.push(rcgen::KeyUsagePurpose::KeyEncipherment),
            "client auth" => req.params.extended_key_usages.push(rcgen::ExtendedKeyUsagePurpose::ClientAuth),
            "server auth" => req.params.extended_key_usages.push(rcgen::ExtendedKeyUsagePurpose::ServerAuth),
            other => return Err(format!("unsupported usage {other:?}")),
        }
    }
    let mut serial = [0u8; 16];
    for (i, b) in crate::store::new_uid().bytes().filter(u8::is_ascii_hexdigit).take(16).enumerate() {
        serial[i] = b;
    }
    req.params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    let cert = req.signed_by(&ca.cert, &ca.key).map_err(|e| e.to_string())?;
    Ok(cert.pem())
}

/// One pass over a request: approve it (with auto-approve), then issue its certificate once
/// approved. Returns the object to write, if anything changed.
pub fn reconcile(ca: &Ca, obj: &Value, opts: &Options) -> Option<Value> {
    let denied_or_failed = has(obj, "Denied") || has(obj, "Failed");
    let issued = obj.pointer("/status/certificate").and_then(Value::as_str).is_some_and(|c| !c.is_empty());
    if denied_or_failed || issued {
        return None;
    }
    let signer = obj.pointer("/spec/signerName").and_then(Value::as_str).unwrap_or("");
    if signer != CLIENT_SIGNER && signer != SERVING_SIGNER {
        return None;
    }
    let mut out = obj.clone();
    let now = crate::store::now_rfc3339();
    if !has(obj, "Approved") {
        let message = approvable(obj).filter(|_| opts.auto_approve)?;
        let mut conds = conditions(obj);
        conds.push(json!({"type": "Approved", "status": "True", "reason": "AutoApproved", "message": message,
            "lastUpdateTime": now, "lastTransitionTime": now}));
        out["status"]["conditions"] = json!(conds);
    }
    match sign(ca, &out, opts) {
        Ok(pem) => out["status"]["certificate"] = json!(crate::tls::b64(pem.as_bytes())),
        Err(e) => {
            let mut conds = conditions(&out);
            conds.push(json!({"type": "Failed", "status": "True", "reason": "SignerValidationFailure", "message": e,
                "lastUpdateTime": now, "lastTransitionTime": now}));
            out["status"]["conditions"] = json!(conds);
        }
    }
    Some(out)
}

/// The controller: reconciles every request at start and on each change.
pub async fn run(store: Arc<Store>, ca: Arc<Ca>, opts: Options) {
    let mut events = store.subscribe();
    let pass = |store: &Store| {
        for obj in store.list(RESOURCE, None).0 {
            write(store, &ca, &obj, &opts);
        }
    };
    pass(&store);
    loop {
        match events.recv().await {
            Ok(ev) if ev.key.resource == RESOURCE && ev.typ != crate::store::EventType::Deleted => {
                if let Ok(obj) = store.get(&ev.key) {
                    write(&store, &ca, &obj, &opts);
                }
            }
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => pass(&store),
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

fn write(store: &Store, ca: &Ca, obj: &Value, opts: &Options) {
    let Some(new) = reconcile(ca, obj, opts) else { return };
    let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
    let key = Key { resource: RESOURCE.into(), namespace: String::new(), name: name.clone() };
    match store.update(&key, new) {
        Ok(_) => tracing::info!(csr = %name, "certificate signing request reconciled"),
        // A newer version came in: its own event reconciles it.
        Err(e) => tracing::debug!(csr = %name, error = %e, "certificate signing request not updated"),
    }
}

/// A bootstrap token `<id>.<secret>`: the `bootstrap-token-<id>` Secret in kube-system of type
/// `bootstrap.kubernetes.io/token` with that `token-secret`, `usage-bootstrap-authentication:
/// true` and no past `expiration` authenticates as `system:bootstrap:<id>` in
/// `system:bootstrappers` plus its `auth-extra-groups` (plugin/pkg/auth/authenticator/token/bootstrap).
pub fn bootstrap_token(store: &Store, token: &str) -> Option<Identity> {
    let (id, secret) = token.split_once('.')?;
    let shape = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !shape(id, 6) || !shape(secret, 16) {
        return None;
    }
    let key =
        Key { resource: "/v1/secrets".into(), namespace: "kube-system".into(), name: format!("bootstrap-token-{id}") };
    let obj = store.get(&key).ok()?;
    if obj.get("type").and_then(Value::as_str) != Some("bootstrap.kubernetes.io/token") {
        return None;
    }
    let field = |name: &str| -> Option<String> {
        if let Some(v) = obj.pointer(&format!("/stringData/{name}")).and_then(Value::as_str) {
            return Some(v.to_string());
        }
        let raw = crate::tls::unb64(obj.pointer(&format!("/data/{name}"))?.as_str()?)?;
        String::from_utf8(raw).ok()
    };
    if field("token-id").as_deref() != Some(id)
        || field("token-secret").as_deref() != Some(secret)
        || field("usage-bootstrap-authentication").as_deref() != Some("true")
    {
        return None;
    }
    if let Some(exp) = field("expiration")
        && chrono::DateTime::parse_from_rfc3339(&exp).is_ok_and(|t| t < chrono::Utc::now())
    {
        return None;
    }
    let mut groups = vec!["system:bootstrappers".to_string()];
    groups.extend(
        field("auth-extra-groups").into_iter().flat_map(|g| {
            g.split(',').map(str::trim).filter(|g| !g.is_empty()).map(str::to_string).collect::<Vec<_>>()
        }),
    );
    Some(Identity::new(&format!("system:bootstrap:{id}"), groups))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(cn: &str, sans: &[&str]) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(rcgen::DnType::OrganizationName, "system:nodes");
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        crate::tls::b64(p.serialize_request(&key).unwrap().pem().unwrap().as_bytes())
    }

    fn csr(signer: &str, req: String, usages: &[&str]) -> Value {
        json!({"metadata": {"name": "c1"}, "spec": {"signerName": signer, "request": req, "usages": usages}})
    }

    fn opts(auto: bool) -> Options {
        Options { signing_duration: Duration::from_secs(120), auto_approve: auto }
    }

    fn ca() -> Ca {
        Ca::load_or_create(tempfile::tempdir().unwrap().path()).unwrap()
    }

    #[test]
    fn create_records_the_requester_and_validates() {
        let ident = Identity::new("system:bootstrap:abcdef", vec!["system:bootstrappers".into()]);
        let mut obj = csr(CLIENT_SIGNER, request("system:node:n1", &[]), &["digital signature", "client auth"]);
        obj["status"] = json!({"certificate": "eA=="});
        prepare_create(&mut obj, &ident, Duration::from_secs(600)).unwrap();
        assert_eq!(obj["spec"]["username"], "system:bootstrap:abcdef");
        assert!(obj["spec"]["groups"].as_array().unwrap().contains(&json!("system:bootstrappers")));
        assert!(obj.get("status").is_none());
        let mut bad = csr(CLIENT_SIGNER, "bm90IGEgcmVxdWVzdA==".into(), &["client auth"]);
        assert!(prepare_create(&mut bad, &ident, Duration::from_secs(600)).unwrap_err().contains("spec.request"));
        let mut short = csr(CLIENT_SIGNER, request("system:node:n1", &[]), &["client auth"]);
        short["spec"]["expirationSeconds"] = json!(60);
        assert!(prepare_create(&mut short, &ident, Duration::from_secs(600)).unwrap_err().contains("600 seconds"));
    }

    #[test]
    fn approval_changes_conditions_only_and_status_keeps_approval() {
        let old =
            json!({"spec": {"signerName": "x"}, "status": {"conditions": [{"type": "Approved", "status": "True"}]}});
        let approval = json!({"spec": {"signerName": "y"}, "status": {"certificate": "Zm9v", "conditions": [
            {"type": "Approved", "status": "True"}, {"type": "Denied", "status": "True"}]}});
        let out = subresource_write("approval", &old, &approval);
        assert_eq!(out["spec"]["signerName"], "x");
        assert!(out["status"].get("certificate").is_none());
        assert_eq!(out["status"]["conditions"].as_array().unwrap().len(), 2);
        let status = json!({"status": {"certificate": "Zm9v", "conditions": []}});
        let out = subresource_write("status", &old, &status);
        assert_eq!(out["status"]["certificate"], "Zm9v");
        assert_eq!(out["status"]["conditions"][0]["type"], "Approved");
    }

    #[test]
    fn auto_approve_issues_node_certificates_only() {
        let ca = ca();
        let mut obj = csr(CLIENT_SIGNER, request("system:node:n1", &[]), &["digital signature", "client auth"]);
        obj["spec"]["username"] = json!("system:bootstrap:abcdef");
        obj["spec"]["groups"] = json!(["system:bootstrappers"]);
        assert!(reconcile(&ca, &obj, &opts(false)).is_none(), "nothing without approval");
        let out = reconcile(&ca, &obj, &opts(true)).unwrap();
        assert_eq!(out["status"]["conditions"][0]["type"], "Approved");
        let pem = crate::tls::unb64(out["status"]["certificate"].as_str().unwrap()).unwrap();
        use rustls::pki_types::pem::PemObject;
        let der = rustls::pki_types::CertificateDer::from_pem_slice(&pem).unwrap();
        let (cn, orgs) = crate::tls::subject_names(&der).unwrap();
        assert_eq!((cn.as_str(), orgs), ("system:node:n1", vec!["system:nodes".to_string()]));
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        let life = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
        assert_eq!(life, 120);
        assert!(reconcile(&ca, &out, &opts(true)).is_none(), "issued once");
        // Another user asking for a node's certificate is not approved.
        obj["spec"]["username"] = json!("mallory");
        obj["spec"]["groups"] = json!(["system:authenticated"]);
        assert!(reconcile(&ca, &obj, &opts(true)).is_none());
        // Serving: from the node itself, with its addresses.
        let mut serving =
            csr(SERVING_SIGNER, request("system:node:n1", &["n1", "10.0.0.5"]), &["digital signature", "server auth"]);
        serving["spec"]["username"] = json!("system:node:n1");
        assert!(reconcile(&ca, &serving, &opts(true)).unwrap()["status"]["certificate"].is_string());
        // Denied stays denied.
        let mut denied = obj.clone();
        denied["status"] =
            json!({"conditions": [{"type": "Denied", "status": "True"}, {"type": "Approved", "status": "True"}]});
        assert!(reconcile(&ca, &denied, &opts(true)).is_none());
    }

    #[test]
    fn bootstrap_tokens_authenticate_from_their_secret() {
        let store = Store::new(100, None);
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
            "metadata": {"name": "bootstrap-token-abcdef", "namespace": "kube-system"},
            "data": {"token-id": crate::tls::b64(b"abcdef"), "token-secret": crate::tls::b64(b"0123456789abcdef"),
                     "usage-bootstrap-authentication": crate::tls::b64(b"true"),
                     "auth-extra-groups": crate::tls::b64(b"system:bootstrappers:kubeadm:default-node-token")}});
        store.create("/v1/secrets", "kube-system", secret).unwrap();
        let id = bootstrap_token(&store, "abcdef.0123456789abcdef").unwrap();
        assert_eq!(id.user, "system:bootstrap:abcdef");
        assert!(id.groups.contains(&"system:bootstrappers".to_string()));
        assert!(id.groups.contains(&"system:bootstrappers:kubeadm:default-node-token".to_string()));
        assert!(bootstrap_token(&store, "abcdef.0123456789abcdee").is_none());
        assert!(bootstrap_token(&store, "zzzzzz.0123456789abcdef").is_none());
        assert!(bootstrap_token(&store, "not-a-token").is_none());
    }
}
