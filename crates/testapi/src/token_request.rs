//! TokenRequest (`POST serviceaccounts/{name}/token`): a JWT-shaped token for a service account,
//! bound to the object the request names, with `status.expirationTimestamp`. The signature is not
//! a real one (nothing here verifies it); the kubelet writes it into projected volumes.

use serde_json::{Value, json};

/// The API's floor for `expirationSeconds` (10 minutes) and its default (1 hour).
pub const MIN_EXPIRATION: i64 = 600;
pub const DEFAULT_EXPIRATION: i64 = 3600;

fn b64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Answers a TokenRequest for `namespace/name` (whose ServiceAccount object is `sa`); Err is a
/// validation message (422).
pub fn answer(
    namespace: &str,
    name: &str,
    sa: &Value,
    req: &Value,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Value, String> {
    let spec = req.get("spec").cloned().unwrap_or(json!({}));
    let secs = spec.get("expirationSeconds").and_then(Value::as_i64).unwrap_or(DEFAULT_EXPIRATION);
    if secs < MIN_EXPIRATION {
        return Err(format!(
            "spec.expirationSeconds: Invalid value: {secs}: may not specify a duration less than 10 minutes"
        ));
    }
    let audiences = match spec.get("audiences").and_then(Value::as_array) {
        Some(a) if !a.is_empty() => Value::Array(a.clone()),
        _ => json!(["https://kubernetes.default.svc.cluster.local"]),
    };
    let exp = now + chrono::Duration::seconds(secs);
    let mut k8s = json!({
        "namespace": namespace,
        "serviceaccount": {"name": name, "uid": sa.pointer("/metadata/uid").cloned().unwrap_or(Value::Null)},
    });
    if let Some(b) = spec.get("boundObjectRef").filter(|b| b.is_object()) {
        let kind = b.get("kind").and_then(Value::as_str).unwrap_or("").to_lowercase();
        k8s[kind] = json!({"name": b.get("name"), "uid": b.get("uid")});
    }
    let claims = json!({
        "aud": audiences, "exp": exp.timestamp(), "iat": now.timestamp(), "nbf": now.timestamp(),
        "iss": "https://testapi", "sub": format!("system:serviceaccount:{namespace}:{name}"),
        "kubernetes.io": k8s,
    });
    let header = json!({"alg": "none", "typ": "JWT", "kid": "testapi"});
    let nanos = now.timestamp_subsec_nanos().to_be_bytes();
    let token = format!(
        "{}.{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes()),
        b64url(&[&nanos[..], name.as_bytes()].concat())
    );
    let mut out_spec = spec.clone();
    out_spec["audiences"] = audiences;
    out_spec["expirationSeconds"] = json!(secs);
    Ok(json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)},
        "spec": out_spec,
        "status": {"token": token, "expirationTimestamp": exp.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_jwt_shaped_with_bound_claims_and_expiry() {
        let now = chrono::DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z").unwrap().with_timezone(&chrono::Utc);
        let sa = json!({"metadata": {"uid": "sa-uid"}});
        let req = json!({"spec": {"audiences": ["vault"], "expirationSeconds": 900,
            "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "web", "uid": "pod-uid"}}});
        let out = answer("ns", "robot", &sa, &req, now).unwrap();
        assert_eq!(out["status"]["expirationTimestamp"], "2024-01-01T00:15:00Z");
        assert_eq!(out["spec"]["expirationSeconds"], 900);
        let token = out["status"]["token"].as_str().unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| !p.is_empty() && !p.contains('=') && !p.contains('+') && !p.contains('/')));
        let defaulted = answer("ns", "robot", &sa, &json!({}), now).unwrap();
        assert_eq!(defaulted["spec"]["expirationSeconds"], 3600);
        assert!(answer("ns", "robot", &sa, &json!({"spec": {"expirationSeconds": 60}}), now).is_err());
        assert_eq!(b64url(b"hello"), "aGVsbG8");
    }
}
