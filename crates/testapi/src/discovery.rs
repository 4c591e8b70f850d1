//! The served resources and the legacy discovery documents kubectl reads (/api, /api/v1, /apis, /apis/g/v).

use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("the server could not find the requested resource")]
    NotFound,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResourceDef {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub subresources: &'static [&'static str],
    /// Has a status subresource: main-resource writes keep the stored status.
    pub status: bool,
}

impl ResourceDef {
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.group, self.version, self.plural)
    }
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.to_string() } else { format!("{}/{}", self.group, self.version) }
    }
    /// Create-only review resources (TokenReview, SubjectAccessReview) are not stored.
    pub fn is_review(&self) -> bool {
        self.plural.ends_with("reviews")
    }
}

#[allow(clippy::too_many_arguments)]
const fn def(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    subresources: &'static [&'static str],
    status: bool,
) -> ResourceDef {
    ResourceDef { group, version, plural, singular, kind, namespaced, short_names, subresources, status }
}

pub const RESOURCES: &[ResourceDef] = &[
    def("", "v1", "namespaces", "namespace", "Namespace", false, &["ns"], &["status", "finalize"], true),
    def("", "v1", "nodes", "node", "Node", false, &["no"], &["status", "proxy"], true),
    def(
        "",
        "v1",
        "pods",
        "pod",
        "Pod",
        true,
        &["po"],
        &["status", "log", "exec", "attach", "portforward", "ephemeralcontainers", "resize"],
        true,
    ),
    def("", "v1", "configmaps", "configmap", "ConfigMap", true, &["cm"], &[], false),
    def("", "v1", "secrets", "secret", "Secret", true, &[], &[], false),
    def("", "v1", "services", "service", "Service", true, &["svc"], &["status"], true),
    def("", "v1", "serviceaccounts", "serviceaccount", "ServiceAccount", true, &["sa"], &["token"], false),
    def("", "v1", "events", "event", "Event", true, &["ev"], &[], false),
    def("", "v1", "endpoints", "endpoints", "Endpoints", true, &["ep"], &[], false),
    def(
        "",
        "v1",
        "persistentvolumeclaims",
        "persistentvolumeclaim",
        "PersistentVolumeClaim",
        true,
        &["pvc"],
        &[],
        false,
    ),
    def("", "v1", "persistentvolumes", "persistentvolume", "PersistentVolume", false, &["pv"], &[], false),
    def("coordination.k8s.io", "v1", "leases", "lease", "Lease", true, &[], &[], false),
    def("storage.k8s.io", "v1", "csidrivers", "csidriver", "CSIDriver", false, &[], &[], false),
    def("storage.k8s.io", "v1", "csinodes", "csinode", "CSINode", false, &[], &[], false),
    def(
        "storage.k8s.io",
        "v1",
        "volumeattachments",
        "volumeattachment",
        "VolumeAttachment",
        false,
        &[],
        &["status"],
        true,
    ),
    def(
        "certificates.k8s.io",
        "v1",
        "certificatesigningrequests",
        "certificatesigningrequest",
        "CertificateSigningRequest",
        false,
        &["csr"],
        &["status", "approval"],
        true,
    ),
    def("node.k8s.io", "v1", "runtimeclasses", "runtimeclass", "RuntimeClass", false, &[], &[], false),
    def("events.k8s.io", "v1", "events", "event", "Event", true, &["ev"], &[], false),
    def("authentication.k8s.io", "v1", "tokenreviews", "tokenreview", "TokenReview", false, &[], &[], false),
    def(
        "authorization.k8s.io",
        "v1",
        "subjectaccessreviews",
        "subjectaccessreview",
        "SubjectAccessReview",
        false,
        &[],
        &[],
        false,
    ),
    def(
        "authorization.k8s.io",
        "v1",
        "selfsubjectaccessreviews",
        "selfsubjectaccessreview",
        "SelfSubjectAccessReview",
        false,
        &[],
        &[],
        false,
    ),
    def(
        "authentication.k8s.io",
        "v1",
        "selfsubjectreviews",
        "selfsubjectreview",
        "SelfSubjectReview",
        false,
        &[],
        &[],
        false,
    ),
];

pub const GROUPS: &[&str] = &[
    "coordination.k8s.io",
    "events.k8s.io",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "storage.k8s.io",
    "node.k8s.io",
    "certificates.k8s.io",
];

pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceDef> {
    RESOURCES.iter().find(|r| r.group == group && r.version == version && r.plural == plural)
}

pub fn version() -> Value {
    json!({
        "major": "1", "minor": "32", "gitVersion": "v1.32.0-testapi", "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean", "buildDate": "2024-12-11T00:00:00Z", "goVersion": "go1.23.4", "compiler": "gc",
        "platform": "linux/amd64"
    })
}

pub fn api_versions(server_addr: &str) -> Value {
    json!({
        "kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_addr}]
    })
}

pub fn api_group_list() -> Value {
    let groups: Vec<Value> = GROUPS.iter().map(|g| group_doc(g)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn api_group(group: &str) -> Result<Value, DiscoveryError> {
    if GROUPS.contains(&group) {
        let mut doc = group_doc(group);
        doc["kind"] = json!("APIGroup");
        doc["apiVersion"] = json!("v1");
        Ok(doc)
    } else {
        Err(DiscoveryError::NotFound)
    }
}

fn group_doc(group: &str) -> Value {
    let gv = json!({"groupVersion": format!("{group}/v1"), "version": "v1"});
    json!({"name": group, "versions": [gv.clone()], "preferredVersion": gv})
}

fn verbs(r: &ResourceDef) -> Vec<&'static str> {
    if r.is_review() {
        vec!["create"]
    } else {
        vec!["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
    }
}

fn sub_verbs(sub: &str) -> Vec<&'static str> {
    match sub {
        "status" | "ephemeralcontainers" | "resize" => vec!["get", "patch", "update"],
        "log" => vec!["get"],
        "exec" | "attach" | "portforward" => vec!["create", "get"],
        "proxy" => vec!["create", "delete", "get", "patch", "update"],
        "finalize" => vec!["update"],
        _ => vec!["create"],
    }
}

/// APIResourceList for a group version (group "" is the core /api/v1).
pub fn resource_list(group: &str, version: &str) -> Result<Value, DiscoveryError> {
    let mut resources = Vec::new();
    for r in RESOURCES.iter().filter(|r| r.group == group && r.version == version) {
        let mut entry = json!({
            "name": r.plural, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind,
            "verbs": verbs(r),
        });
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if r.plural == "pods" {
            entry["categories"] = json!(["all"]);
        }
        resources.push(entry);
        for sub in r.subresources {
            let kind = match *sub {
                "log" | "exec" | "attach" | "portforward" => "PodExecOptions",
                "eviction" => "Eviction",
                "binding" => "Binding",
                "proxy" => "NodeProxyOptions",
                "token" => "TokenRequest",
                _ => r.kind,
            };
            let kind = if *sub == "log" { "Pod" } else { kind };
            resources.push(json!({
                "name": format!("{}/{}", r.plural, sub), "singularName": "", "namespaced": r.namespaced,
                "kind": kind, "verbs": sub_verbs(sub),
            }));
        }
    }
    if resources.is_empty() {
        return Err(DiscoveryError::NotFound);
    }
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Ok(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}))
}

/// /openapi/v3: one entry per group version.
pub fn openapi_v3_root() -> Value {
    let mut paths = serde_json::Map::new();
    let mut gvs: Vec<(&str, &str)> = RESOURCES.iter().map(|r| (r.group, r.version)).collect();
    gvs.dedup();
    for (g, v) in gvs {
        let p = if g.is_empty() { format!("api/{v}") } else { format!("apis/{g}/{v}") };
        paths.insert(p.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash=testapi")}));
    }
    json!({"paths": paths})
}

/// /openapi/v3/<api|apis/g>/<v>: a minimal document with the PATCH operations and their
/// `fieldValidation` parameter, which is what kubectl checks before using server-side validation.
pub fn openapi_v3_doc(path: &str) -> Result<Value, DiscoveryError> {
    let (group, version) = match path.trim_matches('/').split('/').collect::<Vec<_>>().as_slice() {
        ["api", v] => ("", v.to_string()),
        ["apis", g, v] => (*g, v.to_string()),
        _ => return Err(DiscoveryError::NotFound),
    };
    let mut paths = serde_json::Map::new();
    for r in RESOURCES.iter().filter(|r| r.group == group && r.version == version) {
        let prefix = if group.is_empty() { format!("/api/{version}") } else { format!("/apis/{group}/{version}") };
        let ns = if r.namespaced { "/namespaces/{namespace}" } else { "" };
        let op = json!({
            "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
            "x-kubernetes-action": "patch",
            "parameters": [
                {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
                {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
                {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
                {"name": "force", "in": "query", "schema": {"type": "boolean"}}
            ],
            "responses": {"200": {"description": "OK"}}
        });
        paths.insert(format!("{prefix}{ns}/{}/{{name}}", r.plural), json!({"patch": op}));
    }
    if paths.is_empty() {
        return Err(DiscoveryError::NotFound);
    }
    Ok(json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.32.0"}, "paths": paths}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_list_has_short_names_and_subresources() {
        let l = resource_list("", "v1").unwrap();
        let names: Vec<&str> = l["resources"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
        for n in ["pods", "pods/status", "pods/log", "pods/exec", "pods/portforward", "nodes/status", "nodes/proxy"] {
            assert!(names.contains(&n), "{n}");
        }
        let pods = l["resources"].as_array().unwrap().iter().find(|r| r["name"] == "pods").unwrap();
        assert_eq!(pods["shortNames"], json!(["po"]));
        assert!(resource_list("nope", "v1").is_err());
        assert_eq!(api_group_list()["groups"].as_array().unwrap().len(), GROUPS.len());
        assert_eq!(find("coordination.k8s.io", "v1", "leases").unwrap().kind, "Lease");
        let storage = resource_list("storage.k8s.io", "v1").unwrap();
        let names: Vec<&str> =
            storage["resources"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
        assert_eq!(names, vec!["csidrivers", "csinodes", "volumeattachments", "volumeattachments/status"]);
        assert_eq!(find("node.k8s.io", "v1", "runtimeclasses").unwrap().kind, "RuntimeClass");
    }
}
