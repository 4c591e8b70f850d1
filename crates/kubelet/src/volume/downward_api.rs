//! downwardAPI volumes (pkg/volume/downwardapi, pkg/fieldpath): pod metadata and container
//! resources as files. Labels and annotations are rewritten in place when they change (the
//! periodic resync), other fields never change.

use super::NodeFacts;
use super::atomic_writer::{FileProjection, Payload};
use crate::cm::resources;
use k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, Pod, ResourceFieldSelector};
use std::collections::BTreeMap;

/// Go's `%q` (strconv.Quote): quotes, backslash escapes, `\xNN`/`\uNNNN` for the unprintable.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{07}' => out.push_str("\\a"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\u{0b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Upstream's FormatMap: `key="value"` lines in key order, no trailing newline.
pub fn format_map(m: Option<&BTreeMap<String, String>>) -> String {
    m.into_iter().flatten().map(|(k, v)| format!("{k}={}", go_quote(v))).collect::<Vec<_>>().join("\n")
}

/// A fieldRef's value (ExtractFieldPathAsString): only metadata fields exist for volumes.
pub fn field_value(pod: &Pod, path: &str) -> Result<String, String> {
    let m = &pod.metadata;
    let subscript = |prefix: &str| path.strip_prefix(prefix).and_then(|r| r.strip_suffix("']"));
    if let Some(k) = subscript("metadata.labels['") {
        return Ok(m.labels.as_ref().and_then(|l| l.get(k)).cloned().unwrap_or_default());
    }
    if let Some(k) = subscript("metadata.annotations['") {
        return Ok(m.annotations.as_ref().and_then(|a| a.get(k)).cloned().unwrap_or_default());
    }
    Ok(match path {
        "metadata.labels" => format_map(m.labels.as_ref()),
        "metadata.annotations" => format_map(m.annotations.as_ref()),
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        other => return Err(format!("unsupported fieldPath: {other}")),
    })
}

/// A resourceFieldRef's value (ExtractResourceValueByContainerNameAndNodeAllocatable): limits
/// default to the node's allocatable, values are divided by the divisor (default 1) and rounded up.
pub fn resource_value(pod: &Pod, sel: &ResourceFieldSelector, node: &NodeFacts) -> Result<String, String> {
    let cname = sel.container_name.as_deref().unwrap_or_default();
    let spec = pod.spec.as_ref().ok_or("pod has no spec")?;
    let c = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == cname)
        .ok_or_else(|| format!("container {cname:?} not found"))?;
    let divisor = sel.divisor.as_ref().map(resources::milli).filter(|d| *d > 0).unwrap_or(1000);
    let (kind, name) =
        sel.resource.split_once('.').ok_or_else(|| format!("unsupported container resource : {}", sel.resource))?;
    let mut limits = resources::container_limits(c);
    let requests = resources::container_requests(c);
    if let Some(cpu) = node.allocatable_cpu_milli {
        limits.entry("cpu".into()).or_insert(i128::from(cpu));
    }
    if let Some(mem) = node.allocatable_memory {
        limits.entry("memory".into()).or_insert(i128::from(mem) * 1000);
    }
    let list = match kind {
        "limits" => &limits,
        "requests" => &requests,
        _ => return Err(format!("unsupported container resource : {}", sel.resource)),
    };
    if !(name == "cpu" || name == "memory" || name == "ephemeral-storage" || name.starts_with("hugepages-")) {
        return Err(format!("unsupported container resource : {}", sel.resource));
    }
    let value = list.get(name).copied().unwrap_or(0);
    let ceil_div = |a: i128, b: i128| if b == 0 { 0 } else { (a + b - 1).div_euclid(b) };
    Ok(if name == "cpu" {
        ceil_div(value, divisor).to_string()
    } else {
        // Bytes (Quantity.Value() rounds up) over the divisor's bytes.
        let bytes = i128::from(resources::units(value));
        let div = i128::from(resources::units(divisor)).max(1);
        ceil_div(bytes, div).to_string()
    })
}

/// Upstream's CollectData: every item with its mode; all failures reported together.
pub fn payload(
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    default_mode: i32,
    node: &NodeFacts,
) -> Result<Payload, String> {
    let mut out = Payload::new();
    let mut errors = Vec::new();
    for item in items {
        let mode = (item.mode.unwrap_or(default_mode) & 0o7777) as u32;
        let value = match (&item.field_ref, &item.resource_field_ref) {
            (Some(f), _) => field_value(pod, &f.field_path),
            (None, Some(r)) => resource_value(pod, r, node),
            (None, None) => Ok(String::new()),
        };
        match value {
            Ok(v) => {
                out.insert(item.path.clone(), FileProjection { data: v.into_bytes(), mode });
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() { Ok(out) } else { Err(errors.join(", ")) }
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
    fn labels_and_annotations_are_formatted_like_go() {
        let p = pod();
        assert_eq!(field_value(&p, "metadata.labels").unwrap(), "app=\"web\"\ntier=\"front\"");
        assert_eq!(field_value(&p, "metadata.annotations").unwrap(), "note=\"say \\\"hi\\\"\\nbye\"");
        assert_eq!(field_value(&p, "metadata.labels['tier']").unwrap(), "front");
        assert_eq!(field_value(&p, "metadata.uid").unwrap(), "u1");
        assert_eq!(field_value(&p, "spec.nodeName").unwrap_err(), "unsupported fieldPath: spec.nodeName");
        assert_eq!(go_quote("tab\there\u{1}é"), "\"tab\\there\\x01é\"");
    }

    #[test]
    fn resources_use_divisors_and_default_to_node_allocatable() {
        let p = pod();
        let sel = |r: &str, d: Option<&str>| ResourceFieldSelector {
            container_name: Some("c".into()),
            resource: r.into(),
            divisor: d.map(|d| k8s_openapi::apimachinery::pkg::api::resource::Quantity(d.into())),
        };
        let n = node();
        assert_eq!(resource_value(&p, &sel("limits.memory", None), &n).unwrap(), (64u64 << 20).to_string());
        assert_eq!(resource_value(&p, &sel("limits.memory", Some("1Mi")), &n).unwrap(), "64");
        assert_eq!(resource_value(&p, &sel("requests.cpu", Some("1m")), &n).unwrap(), "250");
        // 250m in whole cores rounds up.
        assert_eq!(resource_value(&p, &sel("requests.cpu", None), &n).unwrap(), "1");
        // No cpu limit: the node's allocatable.
        assert_eq!(resource_value(&p, &sel("limits.cpu", None), &n).unwrap(), "4");
        assert!(resource_value(&p, &sel("limits.gpu", None), &n).is_err());
        let other = ResourceFieldSelector { container_name: Some("x".into()), ..sel("limits.cpu", None) };
        assert!(resource_value(&p, &other, &n).unwrap_err().contains("not found"));
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
        let e = payload(&pod(), &bad, 0o644, &node()).unwrap_err();
        assert!(e.contains("status.podIP") && e.contains("spec.nodeName"), "{e}");
    }
}
