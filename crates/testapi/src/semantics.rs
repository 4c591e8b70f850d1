//! Per-resource behaviour of the real API server that clients rely on: pod defaults and binding on
//! create, graceful pod deletion, finalizers.

use serde_json::{Value, json};

use crate::discovery::ResourceDef;
use crate::store::now_rfc3339;

/// Defaults and status reset applied when an object is created.
pub fn prepare_create(def: &ResourceDef, obj: &mut Value, bind_to: Option<&str>) {
    match (def.group, def.plural) {
        ("", "pods") => prepare_pod(obj, bind_to),
        ("", "namespaces") => {
            if obj.pointer("/status/phase").is_none() {
                obj["status"] = json!({"phase": "Active"});
            }
            if obj.pointer("/spec/finalizers").is_none() {
                obj["spec"] = json!({"finalizers": ["kubernetes"]});
            }
            let name = obj.pointer("/metadata/name").cloned().unwrap_or(Value::Null);
            if name.is_string() {
                let labels = obj["metadata"]
                    .as_object_mut()
                    .map(|m| m.entry("labels").or_insert_with(|| json!({})))
                    .and_then(Value::as_object_mut);
                if let Some(l) = labels {
                    l.insert("kubernetes.io/metadata.name".into(), name);
                }
            }
        }
        ("", "services") if obj.pointer("/spec/type").is_none() && obj.get("spec").is_some_and(Value::is_object) => {
            obj["spec"]["type"] = json!("ClusterIP");
        }
        _ => {}
    }
}

fn set_default(obj: &mut Value, field: &str, v: Value) {
    if let Some(m) = obj.as_object_mut() {
        m.entry(field).or_insert(v);
    }
}

fn prepare_pod(pod: &mut Value, bind_to: Option<&str>) {
    if !pod.get("spec").is_some_and(Value::is_object) {
        pod["spec"] = json!({});
    }
    let spec = &mut pod["spec"];
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "enableServiceLinks", json!(true));
    set_default(spec, "priority", json!(0));
    for list in ["containers", "initContainers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            cs.iter_mut().for_each(default_container);
        }
    }
    let unbound = spec.get("nodeName").and_then(Value::as_str).is_none_or(str::is_empty);
    if unbound && let Some(node) = bind_to {
        spec["nodeName"] = json!(node);
    }
    let bound = spec.get("nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty());
    let mut status = json!({"phase": "Pending", "qosClass": qos_class(spec)});
    if bound {
        status["conditions"] = json!([{"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now_rfc3339()}]);
    }
    pod["status"] = status;
}

/// SetDefaults_Container (also what ephemeral containers get): the pull policy from the tag,
/// the termination message path and policy.
pub fn default_container(c: &mut Value) {
    let image = c.get("image").and_then(Value::as_str).unwrap_or("").to_string();
    let tag = image.rsplit('/').next().unwrap_or("");
    let latest = !tag.contains(':') && !image.contains('@') || tag.ends_with(":latest");
    set_default(c, "imagePullPolicy", json!(if latest { "Always" } else { "IfNotPresent" }));
    set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(c, "terminationMessagePolicy", json!("File"));
}

/// QoS class from the containers' requests and limits (Guaranteed, Burstable, BestEffort).
pub fn qos_class(spec: &Value) -> &'static str {
    // Pod-level resources (PodLevelResources, on by default) decide when they set cpu or memory
    // (ComputePodQOS); requests default to limits.
    let pick = |kind: &str| -> Vec<(&str, Value)> {
        ["cpu", "memory"]
            .into_iter()
            .filter_map(|r| Some((r, spec.pointer(&format!("/resources/{kind}/{r}"))?.clone())))
            .collect()
    };
    let (limits, explicit) = (pick("limits"), pick("requests"));
    if !limits.is_empty() || !explicit.is_empty() {
        let mut requests = limits.clone();
        for (r, v) in explicit {
            requests.retain(|(n, _)| *n != r);
            requests.push((r, v));
        }
        requests.sort_by_key(|(n, _)| *n);
        return if limits.len() == 2 && requests == limits { "Guaranteed" } else { "Burstable" };
    }
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .filter_map(|l| spec.get(*l).and_then(Value::as_array))
        .flatten()
        .collect();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in &containers {
        let req = c.pointer("/resources/requests").and_then(Value::as_object);
        let lim = c.pointer("/resources/limits").and_then(Value::as_object);
        any |= req.is_some_and(|r| !r.is_empty()) || lim.is_some_and(|l| !l.is_empty());
        for r in ["cpu", "memory"] {
            let l = lim.and_then(|l| l.get(r));
            let q = req.and_then(|q| q.get(r)).or(l);
            if l.is_none() || q != l {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// For a DELETE: Some(object marked for deletion) when the object must stay (bound pod with a
/// non-zero grace period, or finalizers); None when it can be removed now.
pub fn graceful_delete(def: &ResourceDef, obj: &Value, grace: Option<i64>) -> Option<Value> {
    let has_finalizers = obj.pointer("/metadata/finalizers").and_then(Value::as_array).is_some_and(|f| !f.is_empty());
    let is_pod = def.group.is_empty() && def.plural == "pods";
    let bound = obj.pointer("/spec/nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty());
    let terminal = matches!(obj.pointer("/status/phase").and_then(Value::as_str), Some("Succeeded" | "Failed"));
    let already = obj.pointer("/metadata/deletionTimestamp").is_some();
    let grace = if is_pod {
        let default = obj.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(30);
        let g = grace.unwrap_or(default).max(0);
        if !bound || terminal { 0 } else { g }
    } else {
        0
    };
    if grace == 0 && !has_finalizers {
        return None;
    }
    let mut marked = obj.clone();
    if already {
        // A shorter grace period can be set on an object already being deleted.
        let current = obj.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(0);
        if grace < current {
            marked["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        }
        return Some(marked);
    }
    marked["metadata"]["deletionTimestamp"] = json!(
        (chrono::Utc::now() + chrono::Duration::seconds(grace)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    marked["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
    Some(marked)
}

/// True when an object being deleted has lost its last finalizer (and is not a pod still in its grace period).
pub fn deletion_complete(def: &ResourceDef, obj: &Value) -> bool {
    let deleting = obj.pointer("/metadata/deletionTimestamp").is_some();
    let has_finalizers = obj.pointer("/metadata/finalizers").and_then(Value::as_array).is_some_and(|f| !f.is_empty());
    let grace = obj.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(0);
    let is_pod = def.group.is_empty() && def.plural == "pods";
    deleting && !has_finalizers && (!is_pod || grace == 0)
}

/// The fields of a pod's spec an update may change, as kube-apiserver words it.
const POD_UPDATE_FORBIDDEN: &str = "pod updates may not change fields other than `spec.containers[*].image`,\
`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing \
tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// kube-apiserver's ValidatePodUpdate for a write to the pod itself (not a subresource): the
/// spec is immutable but for container images, a lowered or newly set activeDeadlineSeconds,
/// added tolerations, a negative terminationGracePeriodSeconds set to 1 and removed scheduling
/// gates. Ephemeral containers change only through their own subresource: a pod update that
/// changes them is refused like any other spec change.
/// Err is the Invalid status message.
pub fn validate_pod_update(old: &Value, new: &Value) -> Result<(), String> {
    let name = new.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let invalid = |detail: String| format!("Pod \"{name}\" is invalid: {detail}");
    let (old_spec, new_spec) = (&old["spec"], &new["spec"]);
    let deadline = |s: &Value| s.get("activeDeadlineSeconds").and_then(Value::as_i64);
    match (deadline(old_spec), deadline(new_spec)) {
        (_, Some(n)) if !(0..=i64::from(i32::MAX)).contains(&n) => {
            return Err(invalid(format!(
                "spec.activeDeadlineSeconds: Invalid value: {n}: must be between 0 and 2147483647, inclusive"
            )));
        }
        (Some(o), Some(n)) if n > o => {
            return Err(invalid(format!(
                "spec.activeDeadlineSeconds: Invalid value: {n}: must be less than or equal to previous value"
            )));
        }
        (Some(_), None) => {
            return Err(invalid(
                "spec.activeDeadlineSeconds: Invalid value: \"null\": must not update from a positive integer to nil value"
                    .into(),
            ));
        }
        _ => {}
    }
    // Tolerations: only additions (validateOnlyAddedTolerations; tolerationSeconds may change).
    let tolerations = |s: &Value| s.get("tolerations").and_then(Value::as_array).cloned().unwrap_or_default();
    let without_seconds = |t: &Value| {
        let mut t = strip_nulls(t);
        if let Some(m) = t.as_object_mut() {
            m.remove("tolerationSeconds");
        }
        t
    };
    let new_tolerations: Vec<Value> = tolerations(new_spec).iter().map(without_seconds).collect();
    if let Some(gone) = tolerations(old_spec).iter().map(without_seconds).find(|t| !new_tolerations.contains(t)) {
        return Err(invalid(format!(
            "spec.tolerations: Forbidden: existing toleration can not be modified except its tolerationSeconds: {gone}"
        )));
    }
    // Scheduling gates may only be removed.
    let gates = |s: &Value| s.get("schedulingGates").and_then(Value::as_array).cloned().unwrap_or_default();
    let old_gates = gates(old_spec);
    if gates(new_spec).iter().any(|g| !old_gates.contains(g)) {
        return Err(invalid(
            "spec.schedulingGates: Forbidden: only deletion is allowed, but found new scheduling gate".into(),
        ));
    }
    // Everything else must be unchanged: the mutable fields are taken from the old spec.
    let mut munged = strip_nulls(new_spec);
    for list in ["containers", "initContainers"] {
        let old_list = old_spec.get(list).and_then(Value::as_array);
        if let (Some(cs), Some(olds)) = (munged.get_mut(list).and_then(Value::as_array_mut), old_list) {
            for (c, o) in cs.iter_mut().zip(olds) {
                if let (Some(c), Some(image)) = (c.as_object_mut(), o.get("image")) {
                    c.insert("image".into(), image.clone());
                }
            }
        }
    }
    let grace = |s: &Value| s.get("terminationGracePeriodSeconds").and_then(Value::as_i64);
    let grace_fixed = grace(old_spec).is_some_and(|g| g < 0) && grace(new_spec) == Some(1);
    let mut old_munged = strip_nulls(old_spec);
    for field in ["activeDeadlineSeconds", "tolerations", "schedulingGates"]
        .into_iter()
        .chain(grace_fixed.then_some("terminationGracePeriodSeconds"))
    {
        for s in [&mut munged, &mut old_munged] {
            if let Some(m) = s.as_object_mut() {
                m.remove(field);
            }
        }
    }
    if munged != old_munged {
        return Err(invalid(format!("spec: Forbidden: {POD_UPDATE_FORBIDDEN}")));
    }
    Ok(())
}

/// The value without null members (a null field and an absent one are the same to the server).
fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            Value::Object(m.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), strip_nulls(v))).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(strip_nulls).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::find;

    #[test]
    fn pod_create_binds_and_defaults() {
        let pods = find("", "v1", "pods").unwrap();
        let mut p = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]},
                           "status": {"phase": "Running"}});
        prepare_create(pods, &mut p, Some("n1"));
        assert_eq!(p["spec"]["nodeName"], "n1");
        assert_eq!(p["status"]["phase"], "Pending");
        assert_eq!(p["status"]["conditions"][0]["type"], "PodScheduled");
        assert_eq!(p["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(p["status"]["qosClass"], "BestEffort");
        let mut q = json!({"metadata": {"name": "q"}, "spec": {"containers": [{"name": "c", "image": "x:1.0"}]}});
        prepare_create(pods, &mut q, None);
        assert!(q["spec"].get("nodeName").is_none());
        assert_eq!(q["spec"]["containers"][0]["imagePullPolicy"], "IfNotPresent");
    }

    #[test]
    fn graceful_pod_deletion() {
        let pods = find("", "v1", "pods").unwrap();
        let bound = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 10}});
        let m = graceful_delete(pods, &bound, None).unwrap();
        assert_eq!(m["metadata"]["deletionGracePeriodSeconds"], 10);
        assert!(m["metadata"]["deletionTimestamp"].is_string());
        assert_eq!(graceful_delete(pods, &bound, Some(5)).unwrap()["metadata"]["deletionGracePeriodSeconds"], 5);
        assert!(graceful_delete(pods, &bound, Some(0)).is_none());
        assert!(graceful_delete(pods, &m, Some(0)).is_none());
        let unbound = json!({"metadata": {"name": "p"}, "spec": {}});
        assert!(graceful_delete(pods, &unbound, None).is_none());
        let cms = find("", "v1", "configmaps").unwrap();
        assert!(graceful_delete(cms, &json!({"metadata": {"name": "c"}}), None).is_none());
        let fin = json!({"metadata": {"name": "c", "finalizers": ["x"]}});
        let marked = graceful_delete(cms, &fin, None).unwrap();
        assert!(!deletion_complete(cms, &marked));
        let mut cleared = marked.clone();
        cleared["metadata"]["finalizers"] = json!([]);
        assert!(deletion_complete(cms, &cleared));
    }

    #[test]
    fn qos() {
        let g = json!({"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]});
        assert_eq!(qos_class(&g), "Guaranteed");
        let b = json!({"containers": [{"resources": {"requests": {"cpu": "1"}}}]});
        assert_eq!(qos_class(&b), "Burstable");
    }

    #[test]
    fn pod_updates_change_only_what_kube_apiserver_allows() {
        let old = json!({"metadata": {"name": "p"}, "spec": {
            "containers": [{"name": "c", "image": "busybox:1", "resources": {"limits": {"cpu": "1"}}}],
            "tolerations": [{"key": "k", "operator": "Exists", "tolerationSeconds": 5}],
            "activeDeadlineSeconds": 30}});
        let with = |f: &dyn Fn(&mut Value)| {
            let mut n = old.clone();
            f(&mut n);
            n
        };
        assert_eq!(validate_pod_update(&old, &old), Ok(()));
        let image = with(&|n| n["spec"]["containers"][0]["image"] = json!("busybox:2"));
        assert_eq!(validate_pod_update(&old, &image), Ok(()));
        let lower = with(&|n| n["spec"]["activeDeadlineSeconds"] = json!(10));
        assert_eq!(validate_pod_update(&old, &lower), Ok(()));
        let added = with(&|n| {
            n["spec"]["tolerations"][0]["tolerationSeconds"] = json!(60);
            n["spec"]["tolerations"].as_array_mut().unwrap().push(json!({"key": "x", "operator": "Exists"}));
        });
        assert_eq!(validate_pod_update(&old, &added), Ok(()));
        let resources = with(&|n| n["spec"]["containers"][0]["resources"]["limits"]["cpu"] = json!("2"));
        let err = validate_pod_update(&old, &resources).unwrap_err();
        assert!(err.starts_with("Pod \"p\" is invalid: spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`"), "{err}");
        let higher = with(&|n| n["spec"]["activeDeadlineSeconds"] = json!(60));
        assert!(
            validate_pod_update(&old, &higher).unwrap_err().contains("must be less than or equal to previous value")
        );
        let unset = with(&|n| n["spec"]["activeDeadlineSeconds"] = Value::Null);
        assert!(
            validate_pod_update(&old, &unset)
                .unwrap_err()
                .contains("must not update from a positive integer to nil value")
        );
        let debugger = with(&|n| n["spec"]["ephemeralContainers"] = json!([{"name": "d", "image": "busybox"}]));
        assert!(
            validate_pod_update(&old, &debugger).unwrap_err().contains("spec: Forbidden: pod updates may not change")
        );
        let removed = with(&|n| n["spec"]["tolerations"] = json!([]));
        assert!(validate_pod_update(&old, &removed).unwrap_err().contains("existing toleration can not be modified"));
    }
}
