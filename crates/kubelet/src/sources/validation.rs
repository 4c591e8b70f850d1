//! Pod validation: the checks upstream's ValidatePod makes that matter to a kubelet, each error
//! naming the field (`spec.containers[1].name: "app": duplicate name`). All errors are collected.

mod kinds;
mod security;

use k8s_openapi::api::core::v1::{Container, Pod, Probe, Volume};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::HashSet;

/// One bad field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub value: String,
    pub reason: String,
}

/// Every bad field of a pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Errors(pub Vec<FieldError>);

impl Errors {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn add(&mut self, field: impl Into<String>, value: impl std::fmt::Debug, reason: impl Into<String>) {
        self.0.push(FieldError { field: field.into(), value: format!("{value:?}"), reason: reason.into() });
    }
}

impl std::fmt::Display for Errors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}: {}", e.field, e.value, e.reason)?;
        }
        Ok(())
    }
}

/// RFC 1123 label: lower case alphanumerics and '-', starting and ending alphanumeric, ≤ 63.
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// RFC 1123 subdomain: dot-separated labels, ≤ 253.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// IANA service name, as container port names must be.
fn is_port_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 15
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.iter().any(|c| c.is_ascii_lowercase())
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && !s.contains("--")
}

/// C identifier-ish env var names: upstream allows any printable ASCII except '='.
fn is_env_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|c| (b' '..=b'~').contains(&c) && c != b'=')
}

const DNS_LABEL_MSG: &str = "must be a lowercase RFC 1123 label (a-z, 0-9 and '-', at most 63 characters)";

/// Validates a defaulted pod. `manifest_name` is the name before the node suffix was added.
pub fn validate_pod(pod: &Pod, manifest_name: &str) -> Errors {
    let mut errs = Errors::default();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    if manifest_name.is_empty() {
        errs.add("metadata.name", "", "name is required");
    } else if !is_dns_subdomain(name) {
        errs.add(
            "metadata.name",
            manifest_name,
            "must be a lowercase RFC 1123 subdomain (with the node name suffix, at most 253 characters)",
        );
    }
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    if !is_dns_label(ns) {
        errs.add("metadata.namespace", ns, DNS_LABEL_MSG);
    }
    let Some(spec) = pod.spec.as_ref() else {
        errs.add("spec", "", "spec is required");
        return errs;
    };
    if spec.containers.is_empty() {
        errs.add("spec.containers", "", "at least one container is required");
    }
    let restart = spec.restart_policy.as_deref().unwrap_or("Always");
    if !["Always", "OnFailure", "Never"].contains(&restart) {
        errs.add("spec.restartPolicy", restart, "supported values: \"Always\", \"OnFailure\", \"Never\"");
    }
    if let Some(g) = spec.termination_grace_period_seconds
        && g < 0
    {
        errs.add("spec.terminationGracePeriodSeconds", g, "must be greater than or equal to 0");
    }
    if let Some(d) = spec.active_deadline_seconds
        && d <= 0
    {
        errs.add("spec.activeDeadlineSeconds", d, "must be greater than 0");
    }
    let dns = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    if !["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"].contains(&dns) {
        errs.add(
            "spec.dnsPolicy",
            dns,
            "supported values: \"ClusterFirst\", \"ClusterFirstWithHostNet\", \"Default\", \"None\"",
        );
    } else if dns == "None" && spec.dns_config.is_none() {
        errs.add("spec.dnsConfig", "", "must be provided when dnsPolicy is None");
    }

    // ValidatePodCreate: ephemeral containers are added to a running pod through the API's
    // `ephemeralcontainers` subresource, never in a pod as created.
    if spec.ephemeral_containers.as_ref().is_some_and(|e| !e.is_empty()) {
        errs.add("spec.ephemeralContainers", "", "cannot be set on create");
    }

    let mut volume_names = HashSet::new();
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        let f = format!("spec.volumes[{i}].name");
        if !is_dns_label(&v.name) {
            errs.add(&f, &v.name, DNS_LABEL_MSG);
        } else if !volume_names.insert(v.name.clone()) {
            errs.add(&f, &v.name, "duplicate volume name");
        }
        match volume_sources(v) {
            0 => errs.add(format!("spec.volumes[{i}]"), &v.name, "must specify a volume type"),
            1 => {}
            _ => errs.add(format!("spec.volumes[{i}]"), &v.name, "may not specify more than 1 volume type"),
        }
    }

    let mut names = HashSet::new();
    let init = spec.init_containers.iter().flatten().enumerate().map(|(i, c)| (format!("spec.initContainers[{i}]"), c));
    let regular = spec.containers.iter().enumerate().map(|(i, c)| (format!("spec.containers[{i}]"), c));
    let mut host_ports = HashSet::new();
    security::validate_pod(&mut errs, spec);
    for (path, c) in init.chain(regular) {
        validate_container(&mut errs, &path, c, &mut names, &volume_names, &mut host_ports);
        security::validate_container(&mut errs, &path, c, spec);
    }
    kinds::validate(&mut errs, spec);
    errs
}

/// How many volume sources a volume names (exactly one is valid).
fn volume_sources(v: &Volume) -> usize {
    [
        v.empty_dir.is_some(),
        v.host_path.is_some(),
        v.config_map.is_some(),
        v.secret.is_some(),
        v.projected.is_some(),
        v.downward_api.is_some(),
        v.persistent_volume_claim.is_some(),
        v.csi.is_some(),
        v.ephemeral.is_some(),
        v.nfs.is_some(),
        v.iscsi.is_some(),
        v.fc.is_some(),
        v.image.is_some(),
        v.aws_elastic_block_store.is_some(),
        v.azure_disk.is_some(),
        v.azure_file.is_some(),
        v.cephfs.is_some(),
        v.cinder.is_some(),
        v.flex_volume.is_some(),
        v.flocker.is_some(),
        v.gce_persistent_disk.is_some(),
        v.git_repo.is_some(),
        v.glusterfs.is_some(),
        v.photon_persistent_disk.is_some(),
        v.portworx_volume.is_some(),
        v.quobyte.is_some(),
        v.rbd.is_some(),
        v.scale_io.is_some(),
        v.storageos.is_some(),
        v.vsphere_volume.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count()
}

/// A probe as upstream validates it: one handler, sane numbers, a valid port.
fn validate_probe(errs: &mut Errors, path: &str, p: &Probe, liveness_or_startup: bool) {
    let handlers = [p.exec.is_some(), p.http_get.is_some(), p.tcp_socket.is_some(), p.grpc.is_some()];
    match handlers.iter().filter(|b| **b).count() {
        0 => errs.add(path, "", "must specify a handler type (exec, httpGet, tcpSocket or grpc)"),
        1 => {}
        _ => errs.add(path, "", "may not specify more than 1 handler type"),
    }
    let non_negative = [("initialDelaySeconds", p.initial_delay_seconds)];
    for (f, v) in non_negative {
        if let Some(v) = v.filter(|v| *v < 0) {
            errs.add(format!("{path}.{f}"), v, "must be greater than or equal to 0");
        }
    }
    let positive = [
        ("timeoutSeconds", p.timeout_seconds),
        ("periodSeconds", p.period_seconds),
        ("successThreshold", p.success_threshold),
        ("failureThreshold", p.failure_threshold),
    ];
    for (f, v) in positive {
        if let Some(v) = v.filter(|v| *v < 1) {
            errs.add(format!("{path}.{f}"), v, "must be greater than or equal to 1");
        }
    }
    if liveness_or_startup && p.success_threshold.is_some_and(|v| v != 1) {
        errs.add(format!("{path}.successThreshold"), p.success_threshold.unwrap_or(1), "must be 1");
    }
    if let Some(g) = p.termination_grace_period_seconds.filter(|g| *g < 1) {
        errs.add(format!("{path}.terminationGracePeriodSeconds"), g, "must be greater than 0");
    }
    let mut port = |f: String, v: &IntOrString| match v {
        IntOrString::Int(n) if !(1..=65535).contains(n) => errs.add(f, n, "must be between 1 and 65535, inclusive"),
        IntOrString::String(s) if !is_port_name(s) && s.parse::<i32>().is_err() => {
            errs.add(f, s, "must be a port number or an IANA service name")
        }
        _ => {}
    };
    if let Some(h) = &p.http_get {
        port(format!("{path}.httpGet.port"), &h.port);
    }
    if let Some(t) = &p.tcp_socket {
        port(format!("{path}.tcpSocket.port"), &t.port);
    }
    if let Some(g) = &p.grpc
        && !(1..=65535).contains(&g.port)
    {
        errs.add(format!("{path}.grpc.port"), g.port, "must be between 1 and 65535, inclusive");
    }
}

/// Resource quantities parse, and requests do not exceed limits.
fn validate_resources(errs: &mut Errors, path: &str, c: &Container) {
    use kubelet_config::quantity::Quantity;
    let Some(r) = &c.resources else { return };
    let mut parsed = |kind: &str,
                      m: &Option<
        std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >| {
        let mut out = std::collections::BTreeMap::new();
        for (name, q) in m.iter().flatten() {
            match Quantity::parse(&q.0) {
                Ok(v) if v.milli_value() < 0 => {
                    errs.add(format!("{path}.resources.{kind}.{name}"), &q.0, "must be greater than or equal to 0")
                }
                Ok(v) => {
                    out.insert(name.clone(), v.milli_value());
                }
                Err(e) => errs.add(format!("{path}.resources.{kind}.{name}"), &q.0, e.to_string()),
            }
        }
        out
    };
    let requests = parsed("requests", &r.requests);
    let limits = parsed("limits", &r.limits);
    for (name, req) in &requests {
        if let Some(lim) = limits.get(name)
            && req > lim
        {
            errs.add(
                format!("{path}.resources.requests.{name}"),
                name,
                format!("must be less than or equal to {name} limit"),
            );
        }
    }
}

fn validate_container(
    errs: &mut Errors,
    path: &str,
    c: &Container,
    names: &mut HashSet<String>,
    volumes: &HashSet<String>,
    host_ports: &mut HashSet<(i32, String)>,
) {
    if !is_dns_label(&c.name) {
        errs.add(format!("{path}.name"), &c.name, DNS_LABEL_MSG);
    } else if !names.insert(c.name.clone()) {
        errs.add(format!("{path}.name"), &c.name, "duplicate name: container names must be unique in the pod");
    }
    match c.image.as_deref() {
        None | Some("") => errs.add(format!("{path}.image"), "", "image is required"),
        Some(img) if img.trim() != img || img.contains(char::is_whitespace) => {
            errs.add(format!("{path}.image"), img, "must not contain spaces")
        }
        _ => {}
    }
    if let Some(p) = c.image_pull_policy.as_deref()
        && !["Always", "IfNotPresent", "Never"].contains(&p)
    {
        errs.add(format!("{path}.imagePullPolicy"), p, "supported values: \"Always\", \"IfNotPresent\", \"Never\"");
    }
    let mut port_names = HashSet::new();
    for (j, p) in c.ports.iter().flatten().enumerate() {
        let pp = format!("{path}.ports[{j}]");
        if !(1..=65535).contains(&p.container_port) {
            errs.add(format!("{pp}.containerPort"), p.container_port, "must be between 1 and 65535, inclusive");
        }
        if let Some(h) = p.host_port {
            if !(0..=65535).contains(&h) {
                errs.add(format!("{pp}.hostPort"), h, "must be between 0 and 65535, inclusive");
            } else if h > 0 && !host_ports.insert((h, p.protocol.clone().unwrap_or_default())) {
                errs.add(format!("{pp}.hostPort"), h, "duplicate host port in the pod");
            }
        }
        if let Some(proto) = p.protocol.as_deref()
            && !["TCP", "UDP", "SCTP"].contains(&proto)
        {
            errs.add(format!("{pp}.protocol"), proto, "supported values: \"SCTP\", \"TCP\", \"UDP\"");
        }
        if let Some(n) = p.name.as_deref() {
            if !is_port_name(n) {
                errs.add(
                    format!("{pp}.name"),
                    n,
                    "must be an IANA service name (at most 15 lowercase characters, a-z, 0-9 and '-')",
                );
            } else if !port_names.insert(n.to_string()) {
                errs.add(format!("{pp}.name"), n, "duplicate port name in the container");
            }
        }
    }
    for (kind, p, strict) in [
        ("livenessProbe", &c.liveness_probe, true),
        ("readinessProbe", &c.readiness_probe, false),
        ("startupProbe", &c.startup_probe, true),
    ] {
        if let Some(p) = p {
            validate_probe(errs, &format!("{path}.{kind}"), p, strict);
        }
    }
    validate_resources(errs, path, c);
    for (j, e) in c.env.iter().flatten().enumerate() {
        if !is_env_name(&e.name) {
            errs.add(format!("{path}.env[{j}].name"), &e.name, "must be printable ASCII without '='");
        }
    }
    for (j, m) in c.volume_mounts.iter().flatten().enumerate() {
        if !volumes.contains(&m.name) {
            errs.add(format!("{path}.volumeMounts[{j}].name"), &m.name, "not found among spec.volumes");
        }
        if !m.mount_path.starts_with('/') {
            errs.add(format!("{path}.volumeMounts[{j}].mountPath"), &m.mount_path, "must be an absolute path");
        }
        if let Some(sp) = m.sub_path.as_deref()
            && (sp.starts_with('/') || sp.split('/').any(|s| s == ".."))
        {
            errs.add(format!("{path}.volumeMounts[{j}].subPath"), sp, "must be a relative path without '..'");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_label_rules() {
        assert!(is_dns_label("web-1"));
        assert!(!is_dns_label("Web"));
        assert!(!is_dns_label("-web"));
        assert!(!is_dns_label(""));
        assert!(!is_dns_label(&"a".repeat(64)));
        assert!(is_dns_subdomain("a.b-c.d"));
        assert!(!is_dns_subdomain("a..b"));
    }

    #[test]
    fn a_static_pod_cannot_carry_ephemeral_containers() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-n1", "namespace": "default"},
            "spec": {"containers": [{"name": "app", "image": "busybox"}],
                     "ephemeralContainers": [{"name": "debugger", "image": "busybox"}]}
        }))
        .unwrap();
        let errs = validate_pod(&pod, "web");
        assert_eq!(errs.to_string(), "spec.ephemeralContainers: \"\": cannot be set on create");
    }

    #[test]
    fn port_names_follow_iana() {
        assert!(is_port_name("http"));
        assert!(!is_port_name("8080"));
        assert!(!is_port_name("a--b"));
        assert!(!is_port_name("averyveryverylongname"));
    }
}
