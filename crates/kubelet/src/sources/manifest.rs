//! Turning a static pod manifest into a pod: decoding (YAML or JSON, one Pod per file), upstream
//! defaulting for static pods (name suffix, UID from the manifest, annotations), validation.

use super::{SourceKind, validation};
use k8s_openapi::api::core::v1::{Pod, Toleration};
use md5::{Digest, Md5};

pub const CONFIG_HASH: &str = "kubernetes.io/config.hash";
pub const CONFIG_SOURCE: &str = "kubernetes.io/config.source";
pub const CONFIG_SEEN: &str = "kubernetes.io/config.seen";
pub const CONFIG_MIRROR: &str = "kubernetes.io/config.mirror";

/// Manifests larger than this are refused rather than parsed.
pub const MAX_MANIFEST_BYTES: usize = 10 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{origin}: {message}")]
    Decode { origin: String, message: String },
    #[error("{origin}: pod {pod}: {errors}")]
    Invalid { origin: String, pod: String, errors: validation::Errors },
    #[error("{origin}: {source}")]
    Read { origin: String, source: std::io::Error },
    #[error("{origin}: manifest is {bytes} bytes, more than the {MAX_MANIFEST_BYTES} allowed")]
    TooLarge { origin: String, bytes: u64 },
    #[error("{origin}: no pod")]
    NoPod { origin: String },
    #[error("{origin}: pod {name} is already defined by another manifest; ignored")]
    Duplicate { origin: String, name: String },
    #[error("{origin}: {source}")]
    Fetch { origin: String, source: reqwest::Error },
    #[error("{origin}: HTTP {status}")]
    Status { origin: String, status: reqwest::StatusCode },
}

/// Where a manifest came from: a file path or a URL.
#[derive(Debug, Clone)]
pub struct Origin {
    pub kind: SourceKind,
    pub location: String,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", if self.kind == SourceKind::File { "file" } else { "url" }, self.location)
    }
}

/// Decodes one or more pods (a Pod, or for URLs a PodList) from YAML or JSON bytes.
pub fn decode(bytes: &[u8], origin: &Origin) -> Result<Vec<Pod>, ManifestError> {
    let err = |message: String| ManifestError::Decode { origin: origin.to_string(), message };
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(err(format!("manifest is {} bytes, more than the {MAX_MANIFEST_BYTES} allowed", bytes.len())));
    }
    // YAML is a superset of JSON, so one decoder reads both.
    let value: serde_json::Value =
        serde_yaml::from_slice(bytes).map_err(|e| err(format!("not valid YAML or JSON: {e}")))?;
    let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or_default().to_string();
    let api_version = value.get("apiVersion").and_then(|k| k.as_str()).unwrap_or_default();
    if api_version != "v1" {
        return Err(err(format!("apiVersion: {api_version:?}: must be \"v1\"")));
    }
    match kind.as_str() {
        "Pod" => Ok(vec![decode_pod(value).map_err(|e| err(field_error(&e)))?]),
        "PodList" if origin.kind == SourceKind::Http => {
            let items = value.get("items").and_then(|i| i.as_array()).cloned().unwrap_or_default();
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| decode_pod(item).map_err(|e| err(format!("items[{i}].{}", field_error(&e)))))
                .collect()
        }
        other => Err(err(format!("kind: {other:?}: must be \"Pod\""))),
    }
}

fn decode_pod(value: serde_json::Value) -> Result<Pod, serde_path_to_error::Error<serde_json::Error>> {
    serde_path_to_error::deserialize(value)
}

/// `spec.containers[0].ports: invalid type ...`
fn field_error(e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    format!("{}: {}", e.path(), e.inner())
}

/// Applies upstream static-pod defaulting and validates the result.
pub fn prepare(mut pod: Pod, origin: &Origin, node_name: &str, seen: &str) -> Result<Pod, ManifestError> {
    let original_name = pod.metadata.name.clone().unwrap_or_default();
    if pod.metadata.uid.as_deref().unwrap_or_default().is_empty() {
        pod.metadata.uid = Some(manifest_uid(&pod, origin, node_name));
    }
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    if !original_name.is_empty() {
        pod.metadata.name = Some(format!("{original_name}-{}", node_name.to_lowercase()));
    }
    if pod.metadata.namespace.as_deref().unwrap_or_default().is_empty() {
        pod.metadata.namespace = Some("default".into());
    }
    let annotations = pod.metadata.annotations.get_or_insert_with(Default::default);
    annotations.insert(CONFIG_HASH.into(), uid);
    annotations.insert(CONFIG_SOURCE.into(), origin.kind.as_str().into());
    annotations.entry(CONFIG_SEEN.into()).or_insert_with(|| seen.to_string());
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.node_name = Some(node_name.to_string());
    if origin.kind == SourceKind::File {
        let tolerate_all =
            Toleration { operator: Some("Exists".into()), effect: Some("NoExecute".into()), ..Default::default() };
        let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
        if !tolerations.contains(&tolerate_all) {
            tolerations.push(tolerate_all);
        }
    }
    super::defaults::apply(&mut pod);
    let errors = validation::validate_pod(&pod, &original_name);
    if !errors.is_empty() {
        let name = format!("{}/{}", pod.metadata.namespace.as_deref().unwrap_or(""), original_name);
        return Err(ManifestError::Invalid { origin: origin.to_string(), pod: name, errors });
    }
    Ok(pod)
}

/// A UID stable for the same manifest on the same node: md5 over the node, the origin and the pod.
pub fn manifest_uid(pod: &Pod, origin: &Origin, node_name: &str) -> String {
    let mut h = Md5::new();
    h.update(format!("host:{node_name}"));
    match origin.kind {
        SourceKind::File => h.update(format!("file:{}", origin.location)),
        SourceKind::Http | SourceKind::Api => h.update(format!("url:{}", origin.location)),
    }
    // serde_json's Value keeps keys sorted, so equal pods hash equally.
    let canonical = serde_json::to_value(pod).map(|v| v.to_string()).unwrap_or_default();
    h.update(canonical);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str) -> Origin {
        Origin { kind: SourceKind::File, location: path.into() }
    }

    const NGINX: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: app\n    image: nginx:1.25\n";

    #[test]
    fn static_pod_gets_node_suffix_namespace_and_stable_uid() {
        let o = file("/etc/kubernetes/manifests/web.yaml");
        let pod = decode(NGINX.as_bytes(), &o).unwrap().remove(0);
        let a = prepare(pod.clone(), &o, "Node-1", "t").unwrap();
        let b = prepare(pod, &o, "Node-1", "t").unwrap();
        assert_eq!(a.metadata.name.as_deref(), Some("web-node-1"));
        assert_eq!(a.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(a.metadata.uid, b.metadata.uid);
        assert_eq!(a.metadata.uid.as_ref().unwrap().len(), 32);
        let ann = a.metadata.annotations.as_ref().unwrap();
        assert_eq!(ann.get(CONFIG_HASH), a.metadata.uid.as_ref());
        assert_eq!(ann.get(CONFIG_SOURCE).map(String::as_str), Some("file"));
        assert_eq!(a.spec.as_ref().unwrap().node_name.as_deref(), Some("Node-1"));
        let tol = a.spec.as_ref().unwrap().tolerations.as_ref().unwrap();
        assert!(
            tol.iter().any(|t| t.operator.as_deref() == Some("Exists") && t.effect.as_deref() == Some("NoExecute"))
        );
    }

    #[test]
    fn uid_depends_on_node_path_and_content() {
        let pod = decode(NGINX.as_bytes(), &file("a")).unwrap().remove(0);
        let base = manifest_uid(&pod, &file("/m/web.yaml"), "n1");
        assert_ne!(base, manifest_uid(&pod, &file("/m/other.yaml"), "n1"));
        assert_ne!(base, manifest_uid(&pod, &file("/m/web.yaml"), "n2"));
        let changed = decode(NGINX.replace("1.25", "1.26").as_bytes(), &file("a")).unwrap().remove(0);
        assert_ne!(base, manifest_uid(&changed, &file("/m/web.yaml"), "n1"));
    }

    #[test]
    fn json_manifest_decodes_like_yaml() {
        let json = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web"},"spec":{"containers":[{"name":"app","image":"nginx:1.25"}]}}"#;
        let a = decode(json.as_bytes(), &file("a")).unwrap();
        let b = decode(NGINX.as_bytes(), &file("a")).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn wrong_type_names_the_field() {
        let bad = NGINX.replace("spec:\n", "spec:\n  terminationGracePeriodSeconds: soon\n");
        let err = decode(bad.as_bytes(), &file("/m/bad.yaml")).unwrap_err().to_string();
        assert!(err.contains("/m/bad.yaml"), "{err}");
        assert!(err.contains("spec.terminationGracePeriodSeconds"), "{err}");
    }

    #[test]
    fn other_kinds_are_refused() {
        let bad = NGINX.replace("kind: Pod", "kind: Deployment");
        let err = decode(bad.as_bytes(), &file("f")).unwrap_err().to_string();
        assert!(err.contains("kind: \"Deployment\""), "{err}");
    }

    #[test]
    fn invalid_pod_reports_every_field() {
        let bad = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: Bad_Name\nspec:\n  restartPolicy: Sometimes\n  containers:\n  - name: app\n    image: ''\n  - name: app\n    image: x\n";
        let o = file("/m/bad.yaml");
        let pod = decode(bad.as_bytes(), &o).unwrap().remove(0);
        let err = prepare(pod, &o, "n", "t").unwrap_err().to_string();
        for needle in [
            "/m/bad.yaml",
            "metadata.name",
            "spec.restartPolicy",
            "spec.containers[0].image",
            "spec.containers[1].name",
        ] {
            assert!(err.contains(needle), "{needle} missing from {err}");
        }
    }
}
