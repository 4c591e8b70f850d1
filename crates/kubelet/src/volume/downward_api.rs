//! downwardAPI volumes (pkg/volume/downwardapi, pkg/fieldpath): pod metadata and container
//! resources as files. Labels and annotations are rewritten in place when they change (the
//! periodic resync), other fields never change. The values come from `crate::downward`, the
//! resolver env vars use too.

use super::NodeFacts;
use super::atomic_writer::{FileProjection, Payload};
use crate::downward;
use k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, Pod};

/// The selectors a downwardAPI volume could not resolve (all of them, joined by ", ").
#[derive(Debug, thiserror::Error)]
#[error("{}", join(.0, ", "))]
pub struct Error(pub Vec<downward::Error>);

pub(super) fn join<T: std::fmt::Display>(items: &[T], sep: &str) -> String {
    items.iter().map(ToString::to_string).collect::<Vec<_>>().join(sep)
}

/// Upstream's CollectData: every item with its mode; all failures reported together.
pub fn payload(
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    default_mode: i32,
    node: &NodeFacts,
) -> Result<Payload, Error> {
    let mut out = Payload::new();
    let mut errors = Vec::new();
    for item in items {
        let mode = (item.mode.unwrap_or(default_mode) & 0o7777) as u32;
        let value = match (&item.field_ref, &item.resource_field_ref) {
            (Some(f), _) => downward::metadata_field(pod, &f.field_path),
            (None, Some(r)) => downward::resource_field(pod, None, r, node.allocatable()),
            (None, None) => Ok(String::new()),
        };
        match value {
            Ok(v) => {
                out.insert(item.path.clone(), FileProjection::new(v.into_bytes(), mode));
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() { Ok(out) } else { Err(Error(errors)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u1",
                "labels": {"tier": "front", "app": "web"},
                "annotations": {"note": "say \"hi\"\nbye"}},
            "spec": {"containers": [{"name": "c", "image": "i", "resources": {
                "limits": {"memory": "64Mi"}, "requests": {"cpu": "250m", "memory": "32Mi"}}}]}
        }))
        .unwrap()
    }

    fn node() -> NodeFacts {
        NodeFacts { allocatable_cpu_milli: Some(4000), allocatable_memory: Some(8 << 30), ..Default::default() }
    }

    #[test]
    fn payload_collects_items_and_every_error() {
        let items: Vec<DownwardAPIVolumeFile> = serde_json::from_value(serde_json::json!([
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
            {"path": "mem", "mode": 256, "resourceFieldRef": {"containerName": "c", "resource": "limits.memory", "divisor": "1Mi"}}
        ]))
        .unwrap();
        let p = payload(&pod(), &items, 0o644, &node()).unwrap();
        assert_eq!(p["labels"].mode, 0o644);
        assert_eq!((p["mem"].data.as_slice(), p["mem"].mode), (b"64".as_slice(), 0o400));
        let bad: Vec<DownwardAPIVolumeFile> = serde_json::from_value(serde_json::json!([
            {"path": "a", "fieldRef": {"fieldPath": "status.podIP"}},
            {"path": "b", "fieldRef": {"fieldPath": "spec.nodeName"}}
        ]))
        .unwrap();
        let e = payload(&pod(), &bad, 0o644, &node()).unwrap_err().to_string();
        assert!(e.contains("status.podIP") && e.contains("spec.nodeName"), "{e}");
    }
}
