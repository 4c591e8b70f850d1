//! The `pods/{name}/ephemeralcontainers` subresource as kube-apiserver serves it: GET answers the
//! pod; PUT (a whole pod) and PATCH (applied to the whole pod) change `spec.ephemeralContainers`
//! and nothing else (EphemeralContainersStrategy's dropNonEphemeralContainerUpdates), defaulted
//! as containers are (SetDefaults_EphemeralContainer) and validated as
//! ValidatePodEphemeralContainersUpdate and validateEphemeralContainers do. A pod cannot be
//! created with ephemeral containers (ValidatePodCreate).

use std::collections::HashSet;

use hyper::{Response, StatusCode};
use serde_json::{Value, json};

use crate::respond::{Body, json_response, status_object};

/// What ephemeral containers may not set ("cannot be set for an Ephemeral Container"), in the
/// order of the Container fields upstream's allow list walks.
const FORBIDDEN: &[&str] = &[
    "ports",
    "resources",
    "resizePolicy",
    "restartPolicy",
    "restartPolicyRules",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "lifecycle",
];

const NOT_FOR_EPHEMERAL: &str = "cannot be set for an Ephemeral Container";

/// One field error, as apimachinery's field.Error prints it (`<field>: <type>: <detail>`).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub field: String,
    /// `FieldValueForbidden`, `FieldValueRequired`, … (the Status cause's reason).
    pub reason: &'static str,
    /// What follows the field: `Forbidden: …`, `Required value`, `Duplicate value: "x"`, ….
    pub body: String,
}

impl FieldError {
    fn forbidden(field: impl Into<String>, detail: &str) -> Self {
        Self { field: field.into(), reason: "FieldValueForbidden", body: format!("Forbidden: {detail}") }
    }
    fn required(field: impl Into<String>) -> Self {
        Self { field: field.into(), reason: "FieldValueRequired", body: "Required value".into() }
    }
    fn duplicate(field: impl Into<String>, value: &str) -> Self {
        Self { field: field.into(), reason: "FieldValueDuplicate", body: format!("Duplicate value: {value:?}") }
    }
    fn not_found(field: impl Into<String>, value: &str) -> Self {
        Self { field: field.into(), reason: "FieldValueNotFound", body: format!("Not found: {value:?}") }
    }
    fn invalid(field: impl Into<String>, value: &str, detail: &str) -> Self {
        Self { field: field.into(), reason: "FieldValueInvalid", body: format!("Invalid value: {value:?}: {detail}") }
    }
}

/// A refused write: kube-apiserver's 422 `Pod "<name>" is invalid: …`.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    pub name: String,
    pub errors: Vec<FieldError>,
}

impl Invalid {
    pub fn message(&self) -> String {
        let all: Vec<String> = self.errors.iter().map(|e| format!("{}: {}", e.field, e.body)).collect();
        let list = if all.len() == 1 { all[0].clone() } else { format!("[{}]", all.join(", ")) };
        format!("Pod {:?} is invalid: {list}", self.name)
    }

    pub fn response(&self) -> Response<Body> {
        let causes: Vec<Value> =
            self.errors.iter().map(|e| json!({"reason": e.reason, "message": e.body, "field": e.field})).collect();
        let details = json!({"name": self.name, "kind": "Pod", "causes": causes});
        json_response(StatusCode::UNPROCESSABLE_ENTITY, &status_object(422, "Invalid", &self.message(), Some(details)))
    }
}

pub(crate) fn name_of(pod: &Value) -> String {
    pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string()
}

/// The pod's `spec.<field>` container list (empty when absent).
pub(crate) fn list<'a>(pod: &'a Value, field: &str) -> &'a [Value] {
    pod.get("spec").and_then(|s| s.get(field)).and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default()
}

/// A pod to be created: refused when it carries ephemeral containers.
pub fn check_create(pod: &Value) -> Result<(), Invalid> {
    if list(pod, "ephemeralContainers").is_empty() {
        return Ok(());
    }
    let errors = vec![FieldError::forbidden("spec.ephemeralContainers", "cannot be set on create")];
    Err(Invalid { name: name_of(pod), errors })
}

/// The stored pod after a write to its `ephemeralcontainers` subresource: `old` with `new`'s
/// ephemeral containers (defaulted) and resourceVersion (a precondition when set), or why
/// kube-apiserver would refuse it.
pub fn update(old: &Value, new: &Value) -> Result<Value, Invalid> {
    let mut out = old.clone();
    let mut ecs: Vec<Value> = list(new, "ephemeralContainers").to_vec();
    ecs.iter_mut().for_each(crate::semantics::default_container);
    let name = name_of(old);
    // Static pods' mirrors cannot be debugged this way (#113935): the only error then.
    let mirror = old.pointer("/metadata/annotations").and_then(|a| a.get("kubernetes.io/config.mirror")).is_some();
    if mirror {
        let errors = vec![FieldError::forbidden("", "static pods do not support ephemeral containers")];
        return Err(Invalid { name, errors });
    }
    let mut errors = validate(old, &ecs);
    errors.extend(unchanged(list(old, "ephemeralContainers"), &ecs));
    if !errors.is_empty() {
        return Err(Invalid { name, errors });
    }
    if !out.get("spec").is_some_and(Value::is_object) {
        out["spec"] = json!({});
    }
    out["spec"]["ephemeralContainers"] = Value::Array(ecs);
    take_resource_version(&mut out, new);
    Ok(out)
}

/// A subresource write's precondition: the result carries the request's resourceVersion (or
/// none, for an unconditional write), which the store then checks.
pub(crate) fn take_resource_version(out: &mut Value, new: &Value) {
    match new.pointer("/metadata/resourceVersion") {
        Some(rv) => out["metadata"]["resourceVersion"] = rv.clone(),
        None => {
            if let Some(m) = out.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("resourceVersion");
            }
        }
    }
}

/// validateEphemeralContainers: each one a valid container with a name unique in the pod, a
/// target among the pod's (non-ephemeral) containers, none of the forbidden fields, and no
/// subPath mounts.
fn validate(pod: &Value, ecs: &[Value]) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let names = |field| list(pod, field).iter().filter_map(|c| c.get("name")?.as_str()).map(str::to_string);
    let others: HashSet<String> = names("containers").chain(names("initContainers")).collect();
    let volumes: HashSet<String> = names("volumes").collect();
    let mut all = others.clone();
    for (i, ec) in ecs.iter().enumerate() {
        let path = format!("spec.ephemeralContainers[{i}]");
        let name = ec.get("name").and_then(Value::as_str).unwrap_or("");
        if name.is_empty() {
            errors.push(FieldError::required(format!("{path}.name")));
        } else if let Some(why) = dns_label_problem(name) {
            errors.push(FieldError::invalid(format!("{path}.name"), name, &why));
        }
        if ec.get("image").and_then(Value::as_str).is_none_or(|i| i.trim().is_empty()) {
            errors.push(FieldError::required(format!("{path}.image")));
        }
        for (j, m) in ec.get("volumeMounts").and_then(Value::as_array).into_iter().flatten().enumerate() {
            let vol = m.get("name").and_then(Value::as_str).unwrap_or("");
            if !volumes.contains(vol) {
                errors.push(FieldError::not_found(format!("{path}.volumeMounts[{j}].name"), vol));
            }
        }
        if !name.is_empty() && !all.insert(name.to_string()) {
            errors.push(FieldError::duplicate(format!("{path}.name"), name));
        }
        let target = ec.get("targetContainerName").and_then(Value::as_str).unwrap_or("");
        if !target.is_empty() && !others.contains(target) {
            errors.push(FieldError::not_found(format!("{path}.targetContainerName"), target));
        }
        for field in FORBIDDEN {
            if ec.get(*field).is_some_and(|v| !is_zero(v)) {
                errors.push(FieldError::forbidden(format!("{path}.{field}"), NOT_FOR_EPHEMERAL));
            }
        }
        for (j, m) in ec.get("volumeMounts").and_then(Value::as_array).into_iter().flatten().enumerate() {
            for field in ["subPath", "subPathExpr"] {
                if m.get(field).and_then(Value::as_str).is_some_and(|s| !s.is_empty()) {
                    errors.push(FieldError::forbidden(format!("{path}.volumeMounts[{j}].{field}"), NOT_FOR_EPHEMERAL));
                }
            }
        }
    }
    errors
}

/// Existing ephemeral containers may be neither removed nor changed (matched by name: a patch
/// need not keep the order). Upstream appends a diff of the change to the message; this server
/// does not.
fn unchanged(old: &[Value], new: &[Value]) -> Vec<FieldError> {
    let mut errors = Vec::new();
    for o in old {
        let name = o.get("name").and_then(Value::as_str).unwrap_or("");
        match new.iter().find(|n| n.get("name").and_then(Value::as_str) == Some(name)) {
            None => errors.push(FieldError::forbidden(
                "spec.ephemeralContainers",
                &format!("existing ephemeral containers {name:?} may not be removed\n"),
            )),
            Some(n) if normalized(n) != normalized(o) => errors.push(FieldError::forbidden(
                format!("spec.ephemeralContainers[{name}]"),
                &format!("existing ephemeral containers {name:?} may not be changed\n"),
            )),
            Some(_) => {}
        }
    }
    errors
}

/// Go's zero values (what a typed object leaves out or writes as `{}`): absent, null, empty
/// objects, lists and strings, false.
fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.values().all(is_zero),
        Value::Number(_) => false,
    }
}

/// A container without its zero-valued fields, so that semantically equal ones compare equal
/// however a client spelled them (upstream compares the decoded structs).
fn normalized(v: &Value) -> Value {
    match v {
        Value::Object(o) => {
            Value::Object(o.iter().filter(|(_, v)| !is_zero(v)).map(|(k, v)| (k.clone(), normalized(v))).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(normalized).collect()),
        other => other.clone(),
    }
}

/// Why `name` is not a DNS-1123 label (IsDNS1123Label's messages), if it is not.
fn dns_label_problem(name: &str) -> Option<String> {
    if name.len() > 63 {
        return Some("must be no more than 63 characters".into());
    }
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let valid = name.chars().all(|c| ok_char(c) || c == '-')
        && name.chars().next().is_some_and(ok_char)
        && name.chars().last().is_some_and(ok_char);
    (!valid).then(|| {
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and \
         end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is \
         '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
            .into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Value {
        json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1", "resourceVersion": "7"},
            "spec": {
                "containers": [{"name": "app", "image": "busybox"}],
                "initContainers": [{"name": "setup", "image": "busybox"}],
                "volumes": [{"name": "data", "emptyDir": {}}],
            },
            "status": {"phase": "Running"},
        })
    }

    fn with(ecs: Value) -> Value {
        let mut p = pod();
        p["spec"]["ephemeralContainers"] = ecs;
        p
    }

    fn debugger() -> Value {
        // What kubectl debug sends: typed JSON with an empty `resources`.
        json!({"name": "debugger", "image": "busybox:1.36", "targetContainerName": "app", "resources": {},
               "terminationMessagePolicy": "File", "stdin": false, "tty": false})
    }

    fn messages(e: Invalid) -> Vec<String> {
        e.errors.iter().map(|e| format!("{}: {}", e.field, e.body)).collect()
    }

    #[test]
    fn only_the_ephemeral_containers_change_defaulted() {
        let mut new = with(json!([debugger()]));
        new["spec"]["containers"][0]["image"] = json!("nginx");
        new["metadata"]["labels"] = json!({"x": "y"});
        let out = update(&pod(), &new).unwrap();
        assert_eq!(out["spec"]["containers"], pod()["spec"]["containers"], "other changes are dropped");
        assert!(out["metadata"].get("labels").is_none());
        assert_eq!(out["status"], pod()["status"]);
        let ec = &out["spec"]["ephemeralContainers"][0];
        assert_eq!(ec["name"], "debugger");
        assert_eq!(ec["imagePullPolicy"], "IfNotPresent");
        assert_eq!(ec["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(out["metadata"]["resourceVersion"], "7", "a PUT's resourceVersion is its precondition");
        let mut no_rv = new.clone();
        no_rv["metadata"].as_object_mut().unwrap().remove("resourceVersion");
        assert!(update(&pod(), &no_rv).unwrap()["metadata"].get("resourceVersion").is_none());
    }

    #[test]
    fn forbidden_fields_duplicates_and_unknown_targets_are_refused_as_upstream() {
        let bad = json!([
            {"name": "app", "image": "busybox"},
            {"name": "probe", "image": "busybox", "ports": [{"containerPort": 80}],
             "readinessProbe": {"exec": {"command": ["true"]}}, "lifecycle": {"preStop": {"exec": {"command": ["x"]}}},
             "resources": {"limits": {"cpu": "1"}}},
            {"name": "t", "image": "busybox", "targetContainerName": "nope"},
            {"name": "setup", "image": "", "volumeMounts": [{"name": "data", "mountPath": "/d", "subPath": "x"}]},
        ]);
        let e = update(&pod(), &with(bad)).unwrap_err();
        assert_eq!(
            messages(e.clone()),
            [
                "spec.ephemeralContainers[0].name: Duplicate value: \"app\"",
                "spec.ephemeralContainers[1].ports: Forbidden: cannot be set for an Ephemeral Container",
                "spec.ephemeralContainers[1].resources: Forbidden: cannot be set for an Ephemeral Container",
                "spec.ephemeralContainers[1].readinessProbe: Forbidden: cannot be set for an Ephemeral Container",
                "spec.ephemeralContainers[1].lifecycle: Forbidden: cannot be set for an Ephemeral Container",
                "spec.ephemeralContainers[2].targetContainerName: Not found: \"nope\"",
                "spec.ephemeralContainers[3].image: Required value",
                "spec.ephemeralContainers[3].name: Duplicate value: \"setup\"",
                "spec.ephemeralContainers[3].volumeMounts[0].subPath: Forbidden: cannot be set for an Ephemeral Container",
            ]
        );
        assert!(e.message().starts_with("Pod \"web\" is invalid: [spec.ephemeralContainers[0].name: Duplicate"));
        let one = update(&pod(), &with(json!([{"name": "Bad_Name", "image": "b"}]))).unwrap_err();
        assert!(one.message().starts_with(
            "Pod \"web\" is invalid: spec.ephemeralContainers[0].name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 label"
        ));
    }

    #[test]
    fn existing_ephemeral_containers_cannot_be_changed_or_removed() {
        let stored = update(&pod(), &with(json!([debugger()]))).unwrap();
        // Re-sent as another client spells it (no empty fields): unchanged, so accepted.
        let same = json!({"name": "debugger", "image": "busybox:1.36", "targetContainerName": "app"});
        let mut second = json!({"name": "second", "image": "busybox:1.36"});
        assert!(update(&stored, &with(json!([same, second.clone()]))).is_ok());
        let changed = json!({"name": "debugger", "image": "busybox:1.37", "targetContainerName": "app"});
        let e = update(&stored, &with(json!([changed]))).unwrap_err();
        assert_eq!(
            messages(e),
            [
                "spec.ephemeralContainers[debugger]: Forbidden: existing ephemeral containers \"debugger\" may not be changed\n"
            ]
        );
        second["name"] = json!("other");
        let e = update(&stored, &with(json!([second]))).unwrap_err();
        assert_eq!(
            messages(e),
            ["spec.ephemeralContainers: Forbidden: existing ephemeral containers \"debugger\" may not be removed\n"]
        );
    }

    #[test]
    fn mirror_pods_cannot_be_debugged_and_pods_are_not_created_with_ephemeral_containers() {
        let mut mirror = pod();
        mirror["metadata"]["annotations"] = json!({"kubernetes.io/config.mirror": "abc"});
        let e = update(&mirror, &with(json!([debugger()]))).unwrap_err();
        assert_eq!(e.message(), "Pod \"web\" is invalid: : Forbidden: static pods do not support ephemeral containers");
        let e = check_create(&with(json!([debugger()]))).unwrap_err();
        assert_eq!(e.message(), "Pod \"web\" is invalid: spec.ephemeralContainers: Forbidden: cannot be set on create");
        assert!(check_create(&pod()).is_ok());
    }
}
