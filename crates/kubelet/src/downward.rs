//! The downward API's values, one resolver for env vars and downwardAPI volume files (upstream:
//! pkg/fieldpath, pkg/api/v1/resource and the kubelet's podFieldSelectorRuntimeValue /
//! containerResourceRuntimeValue). Env vars and volumes used to resolve them apart and drifted
//! (the env side ignored `divisor`, rounding and the allocatable default); both call this now.

use crate::cm::resources;
use k8s_openapi::api::core::v1::{Container, Pod, ResourceFieldSelector};
use std::collections::BTreeMap;

/// A selector this resolver cannot answer, with upstream's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("unsupported fieldPath: {0}")]
    UnsupportedField(String),
    #[error("unsupported container resource : {0}")]
    UnsupportedResource(String),
    #[error("container {0:?} not found")]
    ContainerNotFound(String),
    #[error("pod has no spec")]
    NoSpec,
}

/// The node's allocatable cpu (millicores) and memory (bytes): a container without a cpu or
/// memory limit sees these as its limits (upstream's defaultPodLimitsForDownwardAPI). `None`
/// when the node does not know them (no container manager): the limit reads as 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Allocatable {
    pub cpu_milli: Option<i64>,
    pub memory: Option<i64>,
}

/// What a pod's env fieldRefs read beyond the pod object: the node's and the pod's IPs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Addresses<'a> {
    pub host_ips: &'a [String],
    pub pod_ips: &'a [String],
}

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

/// A metadata fieldRef (ExtractFieldPathAsString): what downwardAPI volumes may select, and what
/// env vars read for every path the kubelet does not answer itself.
pub fn metadata_field(pod: &Pod, path: &str) -> Result<String, Error> {
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
        other => return Err(Error::UnsupportedField(other.to_string())),
    })
}

/// An env var's fieldRef (podFieldSelectorRuntimeValue): the spec and status fields the kubelet
/// knows, then the metadata fields. IP lists are comma-joined; the single IPs are the first.
pub fn env_field(pod: &Pod, path: &str, addresses: Addresses<'_>) -> Result<String, Error> {
    let spec = pod.spec.as_ref();
    let first = |ips: &[String]| ips.first().cloned().unwrap_or_default();
    Ok(match path {
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()).unwrap_or_default(),
        "status.hostIP" => first(addresses.host_ips),
        "status.hostIPs" => addresses.host_ips.join(","),
        "status.podIP" => first(addresses.pod_ips),
        "status.podIPs" => addresses.pod_ips.join(","),
        other => return metadata_field(pod, other),
    })
}

/// A resourceFieldRef for a container of the pod: the named one (`containerName`, as volumes
/// require), or `current` when the selector names none (env vars of that container).
pub fn resource_field(
    pod: &Pod,
    current: Option<&Container>,
    sel: &ResourceFieldSelector,
    node: Allocatable,
) -> Result<String, Error> {
    let name = sel.container_name.as_deref().unwrap_or_default();
    let c = match current {
        Some(c) if name.is_empty() || name == c.name => c,
        _ => {
            let spec = pod.spec.as_ref().ok_or(Error::NoSpec)?;
            spec.containers
                .iter()
                .chain(spec.init_containers.iter().flatten())
                .find(|c| c.name == name)
                .ok_or_else(|| Error::ContainerNotFound(name.to_string()))?
        }
    };
    container_resource(c, sel, node)
}

/// ExtractContainerResourceValue over the container's limits defaulted to the node's
/// allocatable: the value divided by the divisor (default 1), rounded up; cpu in millicores over
/// the divisor's millicores, the others in whole units over the divisor's units.
pub fn container_resource(c: &Container, sel: &ResourceFieldSelector, node: Allocatable) -> Result<String, Error> {
    let unsupported = || Error::UnsupportedResource(sel.resource.clone());
    let (kind, name) = sel.resource.split_once('.').ok_or_else(unsupported)?;
    if !(name == "cpu" || name == "memory" || name == "ephemeral-storage" || name.starts_with("hugepages-")) {
        return Err(unsupported());
    }
    let list = match kind {
        "limits" => {
            let mut limits = resources::container_limits(c);
            if let Some(cpu) = node.cpu_milli {
                limits.entry("cpu".into()).or_insert(i128::from(cpu));
            }
            if let Some(mem) = node.memory {
                limits.entry("memory".into()).or_insert(i128::from(mem) * 1000);
            }
            limits
        }
        "requests" => resources::container_requests(c),
        _ => return Err(unsupported()),
    };
    let value = list.get(name).copied().unwrap_or(0);
    let divisor = sel.divisor.as_ref().map(resources::milli).filter(|d| *d > 0).unwrap_or(1000);
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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u1",
                "labels": {"tier": "front", "app": "web"},
                "annotations": {"note": "say \"hi\"\nbye"}},
            "spec": {"nodeName": "node-a", "serviceAccountName": "sa",
                "containers": [{"name": "c", "image": "i", "resources": {
                "limits": {"memory": "64Mi"}, "requests": {"cpu": "250m", "memory": "32Mi"}}},
                {"name": "d", "image": "i", "resources": {"limits": {"cpu": "1500m"}}}]}
        }))
        .unwrap()
    }

    fn node() -> Allocatable {
        Allocatable { cpu_milli: Some(4000), memory: Some(8 << 30) }
    }

    fn sel(container: &str, r: &str, d: Option<&str>) -> ResourceFieldSelector {
        ResourceFieldSelector {
            container_name: Some(container.into()).filter(|c: &String| !c.is_empty()),
            resource: r.into(),
            divisor: d.map(|d| Quantity(d.into())),
        }
    }

    #[test]
    fn metadata_fields_are_formatted_like_go() {
        let p = pod();
        assert_eq!(metadata_field(&p, "metadata.labels").unwrap(), "app=\"web\"\ntier=\"front\"");
        assert_eq!(metadata_field(&p, "metadata.annotations").unwrap(), "note=\"say \\\"hi\\\"\\nbye\"");
        assert_eq!(metadata_field(&p, "metadata.labels['tier']").unwrap(), "front");
        assert_eq!(metadata_field(&p, "metadata.labels['absent']").unwrap(), "");
        assert_eq!(metadata_field(&p, "metadata.uid").unwrap(), "u1");
        assert_eq!(
            metadata_field(&p, "spec.nodeName").unwrap_err().to_string(),
            "unsupported fieldPath: spec.nodeName"
        );
        assert_eq!(go_quote("tab\there\u{1}é"), "\"tab\\there\\x01é\"");
    }

    #[test]
    fn env_fields_read_spec_status_then_metadata() {
        let p = pod();
        let hosts = ["10.0.0.5".to_string(), "fd00::5".to_string()];
        let pods = ["10.88.0.7".to_string(), "fd01::7".to_string()];
        let a = Addresses { host_ips: &hosts, pod_ips: &pods };
        assert_eq!(env_field(&p, "spec.nodeName", a).unwrap(), "node-a");
        assert_eq!(env_field(&p, "spec.serviceAccountName", a).unwrap(), "sa");
        assert_eq!(env_field(&p, "status.hostIP", a).unwrap(), "10.0.0.5");
        assert_eq!(env_field(&p, "status.hostIPs", a).unwrap(), "10.0.0.5,fd00::5");
        assert_eq!(env_field(&p, "status.podIP", a).unwrap(), "10.88.0.7");
        assert_eq!(env_field(&p, "status.podIPs", a).unwrap(), "10.88.0.7,fd01::7");
        // The whole label map, as upstream's env vars can read it too.
        assert_eq!(env_field(&p, "metadata.labels", a).unwrap(), "app=\"web\"\ntier=\"front\"");
        assert_eq!(env_field(&p, "status.podIP", Addresses::default()).unwrap(), "");
        assert!(matches!(env_field(&p, "status.phase", a), Err(Error::UnsupportedField(_))));
    }

    #[test]
    fn resources_use_divisors_round_up_and_default_to_node_allocatable() {
        let p = pod();
        let n = node();
        let v = |c: &str, r: &str, d: Option<&str>| resource_field(&p, None, &sel(c, r, d), n);
        assert_eq!(v("c", "limits.memory", None).unwrap(), (64u64 << 20).to_string());
        assert_eq!(v("c", "limits.memory", Some("1Mi")).unwrap(), "64");
        assert_eq!(v("c", "requests.cpu", Some("1m")).unwrap(), "250");
        // 250m in whole cores rounds up.
        assert_eq!(v("c", "requests.cpu", None).unwrap(), "1");
        // No cpu limit: the node's allocatable.
        assert_eq!(v("c", "limits.cpu", None).unwrap(), "4");
        assert_eq!(v("d", "limits.cpu", None).unwrap(), "2");
        assert_eq!(v("d", "limits.memory", Some("1Gi")).unwrap(), "8");
        assert!(matches!(v("c", "limits.gpu", None), Err(Error::UnsupportedResource(_))));
        assert_eq!(v("x", "limits.cpu", None).unwrap_err(), Error::ContainerNotFound("x".into()));
        // Without the node's figures a missing limit reads 0.
        assert_eq!(resource_field(&p, None, &sel("c", "limits.cpu", None), Allocatable::default()).unwrap(), "0");
    }

    #[test]
    fn an_env_selector_without_a_container_name_reads_its_own_container() {
        let p = pod();
        let d = &p.spec.as_ref().unwrap().containers[1];
        assert_eq!(resource_field(&p, Some(d), &sel("", "limits.cpu", Some("1m")), node()).unwrap(), "1500");
        // A named container wins over the current one.
        assert_eq!(resource_field(&p, Some(d), &sel("c", "requests.cpu", Some("1m")), node()).unwrap(), "250");
    }
}
