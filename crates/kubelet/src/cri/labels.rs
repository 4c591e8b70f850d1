//! The CRI labels and annotations the kubelet puts on sandboxes and containers, as upstream
//! names them (pkg/kubelet/kuberuntime/labels.go), and reading them back after a restart.

use std::collections::HashMap;

pub const POD_NAME: &str = "io.kubernetes.pod.name";
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const POD_UID: &str = "io.kubernetes.pod.uid";
pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
pub const CONTAINER_HASH: &str = "io.kubernetes.container.hash";
pub const CONTAINER_RESTART_COUNT: &str = "io.kubernetes.container.restartCount";
pub const TERMINATION_MESSAGE_PATH: &str = "io.kubernetes.container.terminationMessagePath";
pub const TERMINATION_MESSAGE_POLICY: &str = "io.kubernetes.container.terminationMessagePolicy";
pub const POD_DELETION_GRACE: &str = "io.kubernetes.pod.deletionGracePeriod";
pub const POD_TERMINATION_GRACE: &str = "io.kubernetes.pod.terminationGracePeriod";
pub const CONTAINER_PRESTOP: &str = "io.kubernetes.container.preStopHandler";
pub const CONTAINER_PORTS: &str = "io.kubernetes.container.ports";
pub const CONTAINER_TYPE: &str = "io.kubernetes.container.type";

/// Who a sandbox or container belongs to, from its labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodRef {
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

impl PodRef {
    pub fn from_labels(labels: &HashMap<String, String>) -> Option<Self> {
        Some(Self {
            name: labels.get(POD_NAME)?.clone(),
            namespace: labels.get(POD_NAMESPACE)?.clone(),
            uid: labels.get(POD_UID)?.clone(),
        })
    }
}

/// Labels of a sandbox: the pod's labels plus the kubelet's three.
pub fn sandbox_labels(
    pod_labels: Option<&std::collections::BTreeMap<String, String>>,
    pod: &PodRef,
) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = pod_labels.map(|l| l.clone().into_iter().collect()).unwrap_or_default();
    labels.insert(POD_NAME.into(), pod.name.clone());
    labels.insert(POD_NAMESPACE.into(), pod.namespace.clone());
    labels.insert(POD_UID.into(), pod.uid.clone());
    labels
}

/// Labels of a container: only the kubelet's four (pod labels are not copied).
pub fn container_labels(pod: &PodRef, container: &str) -> HashMap<String, String> {
    HashMap::from([
        (POD_NAME.into(), pod.name.clone()),
        (POD_NAMESPACE.into(), pod.namespace.clone()),
        (POD_UID.into(), pod.uid.clone()),
        (CONTAINER_NAME.into(), container.into()),
    ])
}

/// Whether a container is an init, regular or ephemeral one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerType {
    Init,
    Regular,
    Ephemeral,
}

impl ContainerType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Init => "init",
            Self::Regular => "container",
            Self::Ephemeral => "ephemeral",
        }
    }
}

/// What the kubelet reads back from a container's annotations.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerAnnotations {
    pub hash: u32,
    pub restart_count: i32,
    pub termination_grace: Option<i64>,
    pub init: bool,
    /// The container's `terminationMessagePath` and `terminationMessagePolicy`, so the message
    /// is found after a kubelet restart too (upstream's getContainerInfoFromAnnotations).
    pub termination_message_path: String,
    pub termination_message_policy: String,
}

impl ContainerAnnotations {
    pub fn parse(annotations: &HashMap<String, String>) -> Self {
        Self {
            hash: annotations.get(CONTAINER_HASH).and_then(|h| u32::from_str_radix(h, 16).ok()).unwrap_or(0),
            // A missing or unreadable count is 0, as upstream.
            restart_count: annotations.get(CONTAINER_RESTART_COUNT).and_then(|c| c.parse().ok()).unwrap_or(0),
            termination_grace: annotations.get(POD_TERMINATION_GRACE).and_then(|g| g.parse().ok()),
            init: annotations.get(CONTAINER_TYPE).is_some_and(|t| t == "init"),
            termination_message_path: annotations.get(TERMINATION_MESSAGE_PATH).cloned().unwrap_or_default(),
            termination_message_policy: annotations.get(TERMINATION_MESSAGE_POLICY).cloned().unwrap_or_default(),
        }
    }
}

/// FNV-32a, the hash upstream uses for `io.kubernetes.container.hash` (over name and image).
/// Written out (eight lines) rather than pulling a crate for one function.
pub fn fnv32a(parts: &[&[u8]]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for part in parts {
        for b in *part {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    }
    h
}

/// The hash of a container spec: a change means the container must be replaced. As upstream's
/// HashContainer (pkg/kubelet/container/helpers.go, pickFieldsToHash) it covers only the name and
/// the image — the only container fields of an API pod that can change without the kubelet
/// acting on them in place — so an in-place resize (resources, resizePolicy) is not a spec
/// change. The bytes hashed are what upstream's DeepHashObject prints for the JSON of
/// `{"image","name"}` (spew's `%#v` of a byte slice), so the values are meant to equal a Go
/// kubelet's; that equality is not checked against one.
pub fn container_hash(c: &k8s_openapi::api::core::v1::Container) -> u32 {
    let picked = serde_json::json!({"image": c.image.as_deref().unwrap_or(""), "name": c.name});
    let json = serde_json::to_vec(&picked).unwrap_or_default();
    let bytes: Vec<String> = json.iter().map(u8::to_string).collect();
    fnv32a(&[b"([]uint8)[", bytes.join(" ").as_bytes(), b"]"])
}

/// The hash this kubelet wrote before it followed upstream's name-and-image hash: FNV-32a over
/// the whole container's JSON. A container it created still counts as unchanged while its spec
/// is (upstream relies on draining a node before a kubelet upgrade instead, see k/k #129385; we
/// keep running containers across our own upgrade). Such a container is replaced once when it
/// is resized.
pub fn legacy_container_hash(c: &k8s_openapi::api::core::v1::Container) -> u32 {
    let spec = serde_json::to_vec(c).unwrap_or_default();
    fnv32a(&[&spec])
}

/// Whether a running container's recorded hash still matches its desired spec.
pub fn hash_matches(recorded: u32, c: &k8s_openapi::api::core::v1::Container) -> bool {
    recorded == container_hash(c) || recorded == legacy_container_hash(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv32a_matches_reference_vectors() {
        assert_eq!(fnv32a(&[b""]), 0x811c9dc5);
        assert_eq!(fnv32a(&[b"a"]), 0xe40c292c);
        assert_eq!(fnv32a(&[b"foobar"]), 0xbf9cf968);
    }

    #[test]
    fn hash_leaves_resources_out_and_accepts_the_legacy_hash() {
        let c: k8s_openapi::api::core::v1::Container =
            serde_json::from_value(serde_json::json!({"name": "app", "image": "busybox"})).unwrap();
        let mut resized = c.clone();
        resized.resources = serde_json::from_value(serde_json::json!({"limits": {"cpu": "1"}})).unwrap();
        assert_eq!(container_hash(&c), container_hash(&resized));
        let mut other = c.clone();
        other.image = Some("busybox:2".into());
        assert_ne!(container_hash(&c), container_hash(&other));
        assert!(hash_matches(legacy_container_hash(&c), &c));
        assert!(!hash_matches(legacy_container_hash(&c), &other));
    }

    #[test]
    fn annotations_read_back_with_missing_count_as_zero() {
        let mut a = HashMap::new();
        a.insert(CONTAINER_HASH.to_string(), "bf9cf968".to_string());
        a.insert(CONTAINER_TYPE.to_string(), "init".to_string());
        let parsed = ContainerAnnotations::parse(&a);
        assert_eq!(parsed.hash, 0xbf9cf968);
        assert_eq!(parsed.restart_count, 0);
        assert!(parsed.init);
        a.insert(CONTAINER_RESTART_COUNT.to_string(), "4".to_string());
        assert_eq!(ContainerAnnotations::parse(&a).restart_count, 4);
        a.insert(TERMINATION_MESSAGE_PATH.to_string(), "/dev/termination-log".to_string());
        a.insert(TERMINATION_MESSAGE_POLICY.to_string(), "FallbackToLogsOnError".to_string());
        let parsed = ContainerAnnotations::parse(&a);
        assert_eq!(parsed.termination_message_path, "/dev/termination-log");
        assert_eq!(parsed.termination_message_policy, "FallbackToLogsOnError");
    }
}
