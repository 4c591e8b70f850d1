//! PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902), strategic merge patch (lists merged by
//! their Kubernetes merge keys), and server-side apply (treated as a merge of the applied YAML/JSON).

use serde_json::Value;

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
            strategic_patch::apply(doc, patch);
            Ok(())
        }
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
            "containerStatuses": [{"name": "b", "ready": true}],
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
