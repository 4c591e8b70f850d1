//! Kubernetes strategic merge patch on `serde_json` values: [`diff`] creates a two-way patch (what
//! apimachinery's `CreateTwoWayMergePatch` makes, and the Go kubelet sends as a pod-status PATCH),
//! [`apply`] applies one (what kube-apiserver does with `application/strategic-merge-patch+json`).
//!
//! Written here because no crate does this: kube-rs sends patches it is given, and the few crates
//! that apply strategic patches do not create them. The schema is the merge-key table of
//! [`merge_key`] (by field name, from the `patchMergeKey` tags of the core API types); lists
//! without a merge key are atomic and replaced whole, as upstream.
//!
//! Directives understood: `$patch: delete|replace|merge` on maps and list elements,
//! `$setElementOrder/<list>`, `$retainKeys` and `$deleteFromPrimitiveList/<list>`.

use serde_json::{Map, Value};

/// The merge key of a list field, by the field's name, as the `patchMergeKey` tags of the core
/// API types give it; `None` for atomic lists (replaced whole). `containerStatuses`,
/// `initContainerStatuses` and `ephemeralContainerStatuses` carry no merge strategy upstream, so
/// a pod-status patch replaces them whole.
pub fn merge_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "conditions" | "addresses" => "type",
        "containers" | "initContainers" | "ephemeralContainers" | "volumes" | "env" | "imagePullSecrets" => "name",
        "volumeDevices" | "resourceClaims" | "readinessGates" | "resourceClaimStatuses" => "name",
        "ports" => "containerPort",
        "volumeMounts" => "mountPath",
        "podIPs" | "hostIPs" => "ip",
        "taints" | "tolerations" => "key",
        "ownerReferences" => "uid",
        _ => return None,
    })
}

const SET_ORDER: &str = "$setElementOrder/";
const DELETE_PRIMITIVE: &str = "$deleteFromPrimitiveList/";

/// A two-way strategic merge patch that turns `old` into `new`: changed and added keys, `null`
/// for removed keys, merge-keyed lists element by element (with `$patch: delete` for removed
/// elements and `$setElementOrder/<list>` giving the new order), other lists and scalars whole.
/// Equal documents give an empty map.
pub fn diff(old: &Value, new: &Value) -> Value {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => Value::Object(diff_maps(o, n)),
        _ => new.clone(),
    }
}

fn diff_maps(old: &Map<String, Value>, new: &Map<String, Value>) -> Map<String, Value> {
    let mut patch = Map::new();
    for (k, nv) in new {
        match old.get(k) {
            None => {
                patch.insert(k.clone(), nv.clone());
            }
            Some(ov) if ov == nv => {}
            Some(ov) => match (ov, nv) {
                (Value::Object(o), Value::Object(n)) => {
                    patch.insert(k.clone(), Value::Object(diff_maps(o, n)));
                }
                (Value::Array(o), Value::Array(n)) => match merge_key(k).filter(|mk| keyed(o, mk) && keyed(n, mk)) {
                    Some(mk) => {
                        let (items, order) = diff_list(o, n, mk);
                        if order.is_some() {
                            patch.insert(format!("{SET_ORDER}{k}"), Value::Array(order.unwrap_or_default()));
                        }
                        if !items.is_empty() {
                            patch.insert(k.clone(), Value::Array(items));
                        }
                    }
                    None => {
                        patch.insert(k.clone(), nv.clone());
                    }
                },
                _ => {
                    patch.insert(k.clone(), nv.clone());
                }
            },
        }
    }
    for k in old.keys() {
        if !new.contains_key(k) {
            patch.insert(k.clone(), Value::Null);
        }
    }
    patch
}

/// Whether every element is a map carrying the merge key (otherwise the list is treated as atomic).
fn keyed(list: &[Value], mk: &str) -> bool {
    list.iter().all(|e| e.get(mk).is_some())
}

/// The changed elements of a merge-keyed list, and the `$setElementOrder` list when anything
/// changed (upstream sends the order with every patched merge-keyed list).
fn diff_list(old: &[Value], new: &[Value], mk: &str) -> (Vec<Value>, Option<Vec<Value>>) {
    let mut items = Vec::new();
    for n in new {
        let key = &n[mk];
        match old.iter().find(|o| &o[mk] == key) {
            None => items.push(n.clone()),
            Some(o) if o == n => {}
            Some(o) => {
                let mut d = diff(o, n);
                d[mk] = key.clone();
                items.push(d);
            }
        }
    }
    for o in old {
        let key = &o[mk];
        if !new.iter().any(|n| &n[mk] == key) {
            let mut del = Map::new();
            del.insert(mk.to_string(), key.clone());
            del.insert("$patch".into(), Value::from("delete"));
            items.push(Value::Object(del));
        }
    }
    let old_keys: Vec<&Value> = old.iter().map(|o| &o[mk]).collect();
    let new_keys: Vec<&Value> = new.iter().map(|n| &n[mk]).collect();
    let order = (!items.is_empty() || old_keys != new_keys).then(|| {
        new_keys
            .into_iter()
            .map(|k| {
                let mut m = Map::new();
                m.insert(mk.to_string(), k.clone());
                Value::Object(m)
            })
            .collect()
    });
    (items, order)
}

/// Applies a strategic merge patch to `doc` in place: maps merge recursively (`null` deletes a
/// key), merge-keyed lists merge element by element, other lists and scalars are replaced.
pub fn apply(doc: &mut Value, patch: &Value) {
    apply_field(doc, patch);
}

fn apply_field(doc: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *doc = strip(patch);
        return;
    };
    match p.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            *doc = strip(patch);
            return;
        }
        Some("delete") => {
            *doc = Value::Object(Map::new());
            return;
        }
        _ => {}
    }
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    let d = doc.as_object_mut().expect("made an object above");
    if let Some(Value::Array(keep)) = p.get("$retainKeys") {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        d.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (k, v) in p {
        if let Some(list) = k.strip_prefix(DELETE_PRIMITIVE) {
            if let (Some(Value::Array(existing)), Value::Array(gone)) = (d.get_mut(list), v) {
                existing.retain(|e| !gone.contains(e));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        if v.is_null() {
            d.remove(k);
            continue;
        }
        match (d.get_mut(k), v) {
            (Some(existing), Value::Object(_)) if existing.is_object() => apply_field(existing, v),
            (Some(Value::Array(existing)), Value::Array(items)) => match merge_key(k) {
                Some(mk) => merge_list(existing, items, mk),
                None => *existing = items.iter().map(strip).collect(),
            },
            // A new key: a map is built by applying the patch to an empty map (so nested nulls
            // and directives vanish); a merge-keyed list drops its delete directives.
            (_, Value::Object(_)) => {
                let mut fresh = Value::Object(Map::new());
                apply_field(&mut fresh, v);
                d.insert(k.clone(), fresh);
            }
            (_, Value::Array(items)) if merge_key(k).is_some() => {
                let mut list = Vec::new();
                merge_list(&mut list, items, merge_key(k).unwrap_or_default());
                d.insert(k.clone(), Value::Array(list));
            }
            _ => {
                d.insert(k.clone(), strip(v));
            }
        }
    }
    // `$setElementOrder/<list>`: the listed elements first, in that order; others keep their place after.
    for (k, order) in p {
        let Some(list) = k.strip_prefix(SET_ORDER) else { continue };
        let (Some(mk), Some(Value::Array(existing)), Value::Array(order)) = (merge_key(list), d.get_mut(list), order)
        else {
            continue;
        };
        let mut sorted: Vec<Value> = Vec::with_capacity(existing.len());
        for want in order {
            if let Some(i) = existing.iter().position(|e| e.get(mk).is_some() && e.get(mk) == want.get(mk)) {
                sorted.push(existing.remove(i));
            }
        }
        sorted.append(existing);
        *existing = sorted;
    }
}

fn merge_list(list: &mut Vec<Value>, items: &[Value], mk: &str) {
    for item in items {
        let key = item.get(mk);
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        let pos = key.and_then(|k| list.iter().position(|e| e.get(mk) == Some(k)));
        match (pos, delete) {
            (Some(i), true) => {
                list.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => apply_field(&mut list[i], item),
            (None, false) => list.push(strip(item)),
        }
    }
}

/// The value without `$` directives.
fn strip(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            Value::Object(m.iter().filter(|(k, _)| !k.starts_with('$')).map(|(k, v)| (k.clone(), strip(v))).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(strip).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn round_trip(old: Value, new: Value) -> Value {
        let p = diff(&old, &new);
        let mut d = old;
        apply(&mut d, &p);
        assert_eq!(d, new, "applying {p} must give the new document");
        p
    }

    #[test]
    fn equal_documents_give_an_empty_patch() {
        let v = json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}});
        assert_eq!(diff(&v, &v), json!({}));
    }

    #[test]
    fn a_field_that_became_empty_is_deleted_with_null() {
        let p = round_trip(
            json!({"status": {"phase": "Pending", "message": "creating pod sandbox", "reason": "X"}}),
            json!({"status": {"phase": "Running"}}),
        );
        assert_eq!(p, json!({"status": {"phase": "Running", "message": null, "reason": null}}));
    }

    #[test]
    fn conditions_merge_by_type_with_the_new_order_and_deletes() {
        let old = json!({"status": {"conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Ready", "status": "False", "reason": "ContainersNotReady"},
            {"type": "Gone", "status": "True"}
        ]}});
        let new = json!({"status": {"conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Initialized", "status": "True"},
            {"type": "Ready", "status": "True"}
        ]}});
        let p = round_trip(old, new);
        assert_eq!(
            p,
            json!({"status": {
                "$setElementOrder/conditions": [{"type": "PodScheduled"}, {"type": "Initialized"}, {"type": "Ready"}],
                "conditions": [
                    {"type": "Initialized", "status": "True"},
                    {"type": "Ready", "status": "True", "reason": null},
                    {"type": "Gone", "$patch": "delete"}
                ]
            }})
        );
    }

    #[test]
    fn container_statuses_are_atomic_and_replaced_whole() {
        let old =
            json!({"status": {"containerStatuses": [{"name": "a", "ready": false}, {"name": "b", "ready": true}]}});
        let new =
            json!({"status": {"containerStatuses": [{"name": "a", "ready": true}, {"name": "b", "ready": true}]}});
        let p = round_trip(old, new.clone());
        assert_eq!(p, new);
    }

    #[test]
    fn applying_leaves_elements_the_patch_does_not_name() {
        // A condition another actor owns (DisruptionTarget) survives a kubelet patch of its own ones.
        let mut d = json!({"status": {"conditions": [
            {"type": "DisruptionTarget", "status": "True"}, {"type": "Ready", "status": "False"}
        ]}});
        apply(
            &mut d,
            &json!({"status": {
                "$setElementOrder/conditions": [{"type": "Ready"}],
                "conditions": [{"type": "Ready", "status": "True"}]
            }}),
        );
        assert_eq!(
            d,
            json!({"status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "DisruptionTarget", "status": "True"}]}})
        );
    }

    #[test]
    fn nested_maps_patch_only_what_changed() {
        let p = round_trip(
            json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"x": 1}}),
            json!({"metadata": {"labels": {"a": "1", "c": "3"}}, "spec": {"x": 1}}),
        );
        assert_eq!(p, json!({"metadata": {"labels": {"b": null, "c": "3"}}}));
    }

    #[test]
    fn directives_replace_retain_and_delete_from_primitive_lists() {
        let mut d =
            json!({"spec": {"args": ["a", "b"], "m": {"x": 1, "y": 2}, "r": {"p": 1, "q": 2}, "f": ["x", "y", "z"]}});
        apply(
            &mut d,
            &json!({"spec": {
                "args": ["c"],
                "m": {"$patch": "replace", "z": 3},
                "r": {"$retainKeys": ["q", "s"], "s": 4},
                "$deleteFromPrimitiveList/f": ["y"]
            }}),
        );
        assert_eq!(d, json!({"spec": {"args": ["c"], "m": {"z": 3}, "r": {"q": 2, "s": 4}, "f": ["x", "z"]}}));
    }

    #[test]
    fn a_patched_list_missing_in_the_document_is_created_without_directives() {
        let mut d = json!({"status": {}});
        apply(
            &mut d,
            &json!({"status": {
                "$setElementOrder/podIPs": [{"ip": "10.0.0.2"}],
                "podIPs": [{"ip": "10.0.0.2"}, {"ip": "10.0.0.9", "$patch": "delete"}]
            }}),
        );
        assert_eq!(d, json!({"status": {"podIPs": [{"ip": "10.0.0.2"}]}}));
    }

    #[test]
    fn a_reorder_alone_sends_only_the_order() {
        let p = round_trip(
            json!({"status": {"podIPs": [{"ip": "a"}, {"ip": "b"}]}}),
            json!({"status": {"podIPs": [{"ip": "b"}, {"ip": "a"}]}}),
        );
        assert_eq!(p, json!({"status": {"$setElementOrder/podIPs": [{"ip": "b"}, {"ip": "a"}]}}));
    }
}
