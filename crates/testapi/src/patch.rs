//! PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902), strategic merge patch (lists merged by
//! their Kubernetes merge keys), and server-side apply (treated as a merge of the applied YAML/JSON).

use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error("unsupported patch content type {0:?}")]
    UnsupportedType(String),
    #[error("invalid patch body: {0}")]
    Body(String),
    #[error("the JSON patch could not be applied: {0}")]
    Apply(String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PatchType {
    Merge,
    Json,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Result<Self, PatchError> {
        let base = ct.split(';').next().unwrap_or("").trim();
        match base {
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Ok(PatchType::Apply),
            other => Err(PatchError::UnsupportedType(other.to_string())),
        }
    }
}

/// Parses the body of a patch of the given type.
pub fn parse_body(pt: PatchType, body: &[u8]) -> Result<Value, PatchError> {
    match pt {
        PatchType::Apply => serde_yaml::from_slice(body).map_err(|e| PatchError::Body(e.to_string())),
        _ => serde_json::from_slice(body).map_err(|e| PatchError::Body(e.to_string())),
    }
}

/// Applies a parsed patch to `doc` in place.
pub fn apply(pt: PatchType, doc: &mut Value, patch: &Value) -> Result<(), PatchError> {
    match pt {
        PatchType::Merge => {
            json_patch::merge(doc, patch);
            Ok(())
        }
        PatchType::Json => {
            let ops: json_patch::Patch =
                serde_json::from_value(patch.clone()).map_err(|e| PatchError::Body(e.to_string()))?;
            json_patch::patch(doc, &ops).map_err(|e| PatchError::Apply(e.to_string()))
        }
        PatchType::Strategic | PatchType::Apply => {
            strategic_merge(doc, patch, "");
            Ok(())
        }
    }
}

/// The merge key of a list field (by the field's name), as in the Kubernetes API's patchMergeKey tags.
fn merge_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "conditions" | "addresses" => "type",
        "containerStatuses" | "initContainerStatuses" | "ephemeralContainerStatuses" => "name",
        "containers" | "initContainers" | "ephemeralContainers" | "volumes" | "env" | "imagePullSecrets" => "name",
        "volumeDevices" | "resourceClaims" | "readinessGates" => "name",
        "ports" => "containerPort",
        "volumeMounts" => "mountPath",
        "podIPs" | "hostIPs" => "ip",
        "taints" => "key",
        "tolerations" => "key",
        "ownerReferences" => "uid",
        _ => return None,
    })
}

/// Strategic merge: maps merge recursively (null deletes a key), lists with a known merge key merge
/// element-wise (`$patch: delete` removes an element), other lists replace. `$`-directives are dropped.
pub fn strategic_merge(doc: &mut Value, patch: &Value, field: &str) {
    match patch {
        Value::Object(p) => {
            if p.get("$patch").and_then(Value::as_str) == Some("replace") {
                *doc = strip_directives(patch);
                return;
            }
            if !doc.is_object() {
                *doc = Value::Object(Map::new());
            }
            let d = doc.as_object_mut().unwrap();
            for (k, v) in p {
                if k.starts_with('$') {
                    continue;
                }
                if v.is_null() {
                    d.remove(k);
                    continue;
                }
                match (d.get_mut(k), v) {
                    (Some(existing), Value::Object(_)) if existing.is_object() => strategic_merge(existing, v, k),
                    (Some(existing @ Value::Array(_)), Value::Array(items)) => match merge_key(k) {
                        Some(mk) => merge_list(existing, items, mk),
                        None => *existing = strip_directives(v),
                    },
                    _ => {
                        d.insert(k.clone(), strip_directives(v));
                    }
                }
            }
        }
        _ => {
            let _ = field;
            *doc = strip_directives(patch);
        }
    }
}

fn merge_list(existing: &mut Value, items: &[Value], mk: &str) {
    let list = existing.as_array_mut().unwrap();
    for item in items {
        let key = item.get(mk);
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        let pos = key.and_then(|k| list.iter().position(|e| e.get(mk) == Some(k)));
        match (pos, delete) {
            (Some(i), true) => {
                list.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic_merge(&mut list[i], item, ""),
            (None, false) => list.push(strip_directives(item)),
        }
    }
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter().filter(|(k, _)| !k.starts_with('$')).map(|(k, v)| (k.clone(), strip_directives(v))).collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_rfc7386() {
        let mut d = json!({"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]});
        apply(PatchType::Merge, &mut d, &json!({"a": "z", "c": {"f": null}, "l": [3]})).unwrap();
        assert_eq!(d, json!({"a": "z", "c": {"d": "e"}, "l": [3]}));
    }

    #[test]
    fn json_patch_rfc6902() {
        let mut d = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"x": [1, 2]}});
        let p = json!([
            {"op": "add", "path": "/metadata/labels/b", "value": "2"},
            {"op": "remove", "path": "/metadata/labels/a"},
            {"op": "replace", "path": "/spec/x/0", "value": 9},
            {"op": "test", "path": "/spec/x/1", "value": 2}
        ]);
        apply(PatchType::Json, &mut d, &p).unwrap();
        assert_eq!(d, json!({"metadata": {"labels": {"b": "2"}}, "spec": {"x": [9, 2]}}));
        let bad = json!([{"op": "test", "path": "/spec/x/1", "value": 3}]);
        assert!(apply(PatchType::Json, &mut d, &bad).is_err());
    }

    #[test]
    fn strategic_merges_conditions_by_type() {
        let mut d = json!({"status": {
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "False"}],
            "containerStatuses": [{"name": "a", "ready": false}, {"name": "b", "ready": false}],
            "hostIPs": [{"ip": "10.0.0.1"}]
        }});
        let p = json!({"status": {
            "$setElementOrder/conditions": [{"type": "PodScheduled"}, {"type": "Ready"}, {"type": "Initialized"}],
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}, {"type": "Initialized", "status": "True"}],
            "containerStatuses": [{"name": "b", "ready": true}, {"name": "a", "$patch": "delete"}],
            "hostIPs": [{"ip": "10.0.0.1"}]
        }});
        apply(PatchType::Strategic, &mut d, &p).unwrap();
        assert_eq!(
            d,
            json!({"status": {
                "phase": "Running",
                "conditions": [
                    {"type": "PodScheduled", "status": "True"},
                    {"type": "Ready", "status": "True"},
                    {"type": "Initialized", "status": "True"}
                ],
                "containerStatuses": [{"name": "b", "ready": true}],
                "hostIPs": [{"ip": "10.0.0.1"}]
            }})
        );
    }

    #[test]
    fn strategic_replaces_plain_lists_and_honours_replace() {
        let mut d = json!({"spec": {"args": ["a", "b"], "m": {"x": 1, "y": 2}}});
        apply(PatchType::Strategic, &mut d, &json!({"spec": {"args": ["c"], "m": {"$patch": "replace", "z": 3}}}))
            .unwrap();
        assert_eq!(d, json!({"spec": {"args": ["c"], "m": {"z": 3}}}));
    }

    #[test]
    fn content_types() {
        assert_eq!(PatchType::from_content_type("application/merge-patch+json").unwrap(), PatchType::Merge);
        assert_eq!(
            PatchType::from_content_type("application/strategic-merge-patch+json; charset=utf-8").unwrap(),
            PatchType::Strategic
        );
        assert!(PatchType::from_content_type("text/plain").is_err());
        let v = parse_body(PatchType::Apply, b"metadata:\n  name: x\n").unwrap();
        assert_eq!(v["metadata"]["name"], "x");
    }
}
