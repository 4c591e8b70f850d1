//! The `pods/{name}/resize` subresource as kube-apiserver serves it (in-place pod resize): GET
//! answers the pod; PUT (a whole pod) and PATCH (applied to the whole pod) change the containers'
//! `resources` and `resizePolicy` and nothing else (upstream's podResizeStrategy:
//! dropNonResizeUpdates), validated as ValidatePodResize does: only cpu and memory requests and
//! limits of containers and sidecars may change, none may be removed, the QoS class stays, the
//! containers keep their names and order, mirror pods and pods with pod-level resources are not
//! resized (InPlacePodLevelResourcesVerticalScaling is alpha and off).

use serde_json::{Value, json};

use crate::ephemeral::{FieldError, Invalid, list as containers, name_of, take_resource_version};

fn is_sidecar(c: &Value) -> bool {
    c.get("restartPolicy").and_then(Value::as_str) == Some("Always")
}

fn forbidden(field: &str, detail: &str) -> FieldError {
    FieldError { field: field.into(), reason: "FieldValueForbidden", body: format!("Forbidden: {detail}") }
}

/// The container with its cpu and memory requests and limits and its resizePolicy taken from
/// `old` (upstream's dropCPUMemoryResourcesFromContainer): what is left must not have changed.
fn without_cpu_memory(c: &Value, old: &Value) -> Value {
    let mut c = c.clone();
    for kind in ["requests", "limits"] {
        for r in ["cpu", "memory"] {
            let from_old = old.pointer(&format!("/resources/{kind}/{r}")).cloned();
            let Some(obj) = c.as_object_mut() else { continue };
            let res = obj.entry("resources").or_insert_with(|| json!({}));
            if !res.is_object() {
                *res = json!({});
            }
            let list = res.as_object_mut().unwrap().entry(kind).or_insert_with(|| json!({}));
            if !list.is_object() {
                *list = json!({});
            }
            let list = list.as_object_mut().unwrap();
            match from_old {
                Some(v) => list.insert(r.to_string(), v),
                None => list.remove(r),
            };
        }
    }
    match old.get("resizePolicy") {
        Some(p) => c["resizePolicy"] = p.clone(),
        None => {
            if let Some(o) = c.as_object_mut() {
                o.remove("resizePolicy");
            }
        }
    }
    normalized(&c)
}

/// Go's zero values dropped (absent, null, empty), so `{}` and a missing field compare equal.
fn normalized(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), normalized(v)))
                .filter(|(_, v)| !matches!(v, Value::Null) && v != &json!({}) && v != &json!([]))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(normalized).collect()),
        other => other.clone(),
    }
}

/// Resource names present in `old` and missing from `new` (upstream's resourcesRemoved).
fn removed(old: &Value, new: &Value, kind: &str) -> bool {
    let names = |c: &Value| {
        c.pointer(&format!("/resources/{kind}"))
            .and_then(Value::as_object)
            .map(|m| m.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let new_names = names(new);
    names(old).iter().any(|n| !new_names.contains(n))
}

fn pod_level_set(pod: &Value) -> bool {
    ["requests", "limits"]
        .iter()
        .any(|k| pod.pointer(&format!("/spec/resources/{k}")).and_then(Value::as_object).is_some_and(|m| !m.is_empty()))
}

/// The stored pod after a write to its `resize` subresource: `old` with `new`'s containers'
/// resources and resize policies (matched by name), the generation bumped by the store when the
/// spec changed, or why kube-apiserver would refuse it.
pub fn update(old: &Value, new: &Value) -> Result<Value, Invalid> {
    let name = name_of(old);
    let fail = |errors: Vec<FieldError>| Err(Invalid { name: name.clone(), errors });
    // dropNonResizeUpdates: only the containers' resources and resizePolicy are taken.
    let mut out = old.clone();
    for list in ["containers", "initContainers"] {
        let news = containers(new, list).to_vec();
        if let Some(cs) = out.pointer_mut(&format!("/spec/{list}")).and_then(Value::as_array_mut) {
            for c in cs.iter_mut() {
                let Some(n) = news.iter().find(|n| n.get("name") == c.get("name")) else { continue };
                for field in ["resources", "resizePolicy"] {
                    match n.get(field) {
                        Some(v) => c[field] = v.clone(),
                        None => {
                            if let Some(o) = c.as_object_mut() {
                                o.remove(field);
                            }
                        }
                    }
                }
            }
        }
    }
    // Pod-level resources are not resized (the InPlacePodLevelResourcesVerticalScaling gate is
    // off, as upstream's default), nor are static pods' mirrors or Windows pods.
    if pod_level_set(old) {
        return fail(vec![forbidden("", "pods with pod-level resources cannot be resized")]);
    }
    let annotations = old.pointer("/metadata/annotations");
    if annotations.and_then(|a| a.get("kubernetes.io/config.mirror")).is_some() {
        return fail(vec![forbidden("", "static pods cannot be resized")]);
    }
    if old.pointer("/spec/os/name").and_then(Value::as_str) == Some("windows") {
        return fail(vec![forbidden("", "windows pods cannot be resized")]);
    }
    let mut errors = Vec::new();
    let (old_qos, new_qos) = (crate::semantics::qos_class(&old["spec"]), crate::semantics::qos_class(&out["spec"]));
    if old_qos != new_qos {
        errors.push(FieldError {
            field: "spec".into(),
            reason: "FieldValueInvalid",
            body: format!("Invalid value: {old_qos:?}: Pod QOS Class may not change as a result of resizing"),
        });
    }
    for (list, field) in [("initContainers", "initContainers"), ("containers", "containers")] {
        for (i, (o, n)) in containers(old, list).iter().zip(containers(&out, list)).enumerate() {
            if list == "initContainers" && !is_sidecar(o) {
                continue;
            }
            for (kind, what) in [("requests", "resource requests"), ("limits", "resource limits")] {
                if removed(o, n, kind) {
                    errors.push(forbidden(
                        &format!("spec.{field}[{i}].resources.{kind}"),
                        &format!("{what} cannot be removed"),
                    ));
                }
            }
        }
    }
    for (o, n) in containers(old, "containers").iter().zip(containers(&out, "containers")) {
        if without_cpu_memory(n, o) != normalized(o) {
            errors.push(forbidden("spec", "only cpu and memory resources are mutable"));
        }
    }
    for (o, n) in containers(old, "initContainers").iter().zip(containers(&out, "initContainers")) {
        if is_sidecar(o) {
            if without_cpu_memory(n, o) != normalized(o) {
                errors.push(forbidden("spec", "only cpu and memory resources for sidecar containers are mutable"));
            }
        } else if normalized(n) != normalized(o) {
            errors.push(forbidden("spec", "resources for non-sidecar init containers are immutable"));
        }
    }
    if !errors.is_empty() {
        return fail(errors);
    }
    take_resource_version(&mut out, new);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(cpu_req: &str, cpu_lim: &str, mem: &str) -> Value {
        json!({
            "metadata": {"name": "web", "resourceVersion": "5"},
            "spec": {"containers": [{
                "name": "app", "image": "busybox",
                "resources": {"requests": {"cpu": cpu_req, "memory": mem}, "limits": {"cpu": cpu_lim, "memory": mem}}
            }]}
        })
    }

    fn messages(e: Invalid) -> String {
        e.message()
    }

    #[test]
    fn cpu_and_memory_change_and_nothing_else_is_taken() {
        let old = pod("100m", "200m", "64Mi");
        let mut new = pod("150m", "300m", "96Mi");
        new["spec"]["containers"][0]["image"] = json!("other");
        new["spec"]["containers"][0]["resizePolicy"] =
            json!([{"resourceName": "memory", "restartPolicy": "RestartContainer"}]);
        new["metadata"]["labels"] = json!({"a": "b"});
        let out = update(&old, &new).unwrap();
        let c = &out["spec"]["containers"][0];
        assert_eq!(c["image"], "busybox");
        assert_eq!(c["resources"]["limits"]["cpu"], "300m");
        assert_eq!(c["resources"]["requests"]["memory"], "96Mi");
        assert_eq!(c["resizePolicy"][0]["restartPolicy"], "RestartContainer");
        assert!(out["metadata"].get("labels").is_none());
    }

    #[test]
    fn qos_change_removal_and_other_resources_are_refused_as_upstream() {
        let old = pod("100m", "100m", "64Mi");
        let new = pod("100m", "200m", "64Mi");
        assert_eq!(
            messages(update(&old, &new).unwrap_err()),
            "Pod \"web\" is invalid: spec: Invalid value: \"Guaranteed\": Pod QOS Class may not change as a result of resizing"
        );
        let old = pod("100m", "200m", "64Mi");
        let mut new = old.clone();
        new["spec"]["containers"][0]["resources"]["limits"].as_object_mut().unwrap().remove("cpu");
        assert!(
            messages(update(&old, &new).unwrap_err())
                .contains("spec.containers[0].resources.limits: Forbidden: resource limits cannot be removed")
        );
        let mut new = old.clone();
        new["spec"]["containers"][0]["resources"]["limits"]["ephemeral-storage"] = json!("1Gi");
        assert_eq!(
            messages(update(&old, &new).unwrap_err()),
            "Pod \"web\" is invalid: spec: Forbidden: only cpu and memory resources are mutable"
        );
    }

    #[test]
    fn init_containers_mirror_pods_and_pod_level_resources() {
        let mut old = pod("100m", "200m", "64Mi");
        old["spec"]["initContainers"] =
            json!([{"name": "init", "image": "x", "resources": {"requests": {"cpu": "10m"}}}]);
        let mut new = old.clone();
        new["spec"]["initContainers"][0]["resources"]["requests"]["cpu"] = json!("20m");
        assert!(
            messages(update(&old, &new).unwrap_err())
                .contains("resources for non-sidecar init containers are immutable")
        );
        old["spec"]["initContainers"][0]["restartPolicy"] = json!("Always");
        new["spec"]["initContainers"][0]["restartPolicy"] = json!("Always");
        assert!(update(&old, &new).is_ok());

        let mut mirror = pod("100m", "200m", "64Mi");
        mirror["metadata"]["annotations"] = json!({"kubernetes.io/config.mirror": "h"});
        assert!(messages(update(&mirror, &mirror).unwrap_err()).ends_with("Forbidden: static pods cannot be resized"));
        let mut pl = pod("100m", "200m", "64Mi");
        pl["spec"]["resources"] = json!({"limits": {"cpu": "1"}});
        assert!(
            messages(update(&pl, &pl).unwrap_err())
                .ends_with("Forbidden: pods with pod-level resources cannot be resized")
        );
    }
}
