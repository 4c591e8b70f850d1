//! A container's environment: `value` with `$(VAR)` expansion, `fieldRef`, `resourceFieldRef`,
//! `configMapKeyRef` / `secretKeyRef` and `envFrom` (with prefix) from ConfigMaps and Secrets the
//! executor read beforehand through the node's reader ([`crate::api::objects`]).

use super::runtime_config::{ConfigError, NodeContext};
use crate::api::objects::{Data, Objects};
use k8s_openapi::api::core::v1::{Container, EnvVar, Pod};
use std::collections::{BTreeMap, HashMap};

/// Which object an env source names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    ConfigMap,
    Secret,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::ConfigMap => "configmap",
            Self::Secret => "secret",
        }
    }
}

/// The ConfigMaps and Secrets a container refers to: `None` = not found; no entry = not read
/// (no API server).
#[derive(Debug, Clone, Default)]
pub struct EnvSources(pub HashMap<(Kind, String), Option<BTreeMap<String, String>>>, pub Vec<(String, String)>);

fn referenced(c: &Container) -> Vec<(Kind, String)> {
    let mut out = Vec::new();
    for e in c.env.iter().flatten() {
        if let Some(f) = &e.value_from {
            if let Some(k) = &f.config_map_key_ref {
                out.push((Kind::ConfigMap, k.name.clone()));
            }
            if let Some(k) = &f.secret_key_ref {
                out.push((Kind::Secret, k.name.clone()));
            }
        }
    }
    for f in c.env_from.iter().flatten() {
        if let Some(r) = &f.config_map_ref {
            out.push((Kind::ConfigMap, r.name.clone()));
        }
        if let Some(r) = &f.secret_ref {
            out.push((Kind::Secret, r.name.clone()));
        }
    }
    out.sort_by(|a, b| (a.0 as u8, &a.1).cmp(&(b.0 as u8, &b.1)));
    out.dedup();
    out
}

/// Reads what the container's env refers to through the node's reader. API errors (other than
/// not found) fail the start unless the reader kept an earlier answer.
pub async fn fetch(objects: Option<&Objects>, pod: &Pod, c: &Container) -> Result<EnvSources, ConfigError> {
    let mut out = EnvSources::default();
    let Some(objects) = objects else { return Ok(out) };
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    out.1 = service_env(objects, pod).await.unwrap_or_else(|e| {
        // Service links are best effort: a pod must not stay down because the API is.
        tracing::warn!(pod = %ns, "service link variables unavailable: {}", e.0);
        Vec::new()
    });
    for (kind, name) in referenced(c) {
        let data = match kind {
            Kind::ConfigMap => objects.config_map(uid, ns, &name).await,
            Kind::Secret => objects.secret(uid, ns, &name).await,
        };
        let data = data.map_err(|e| ConfigError(format!("{} {ns}/{name}: {e}", kind.as_str())))?;
        let text = |d: &Data| d.iter().map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned())).collect();
        out.0.insert((kind, name), data.as_deref().map(text));
    }
    Ok(out)
}

/// Service link variables as upstream makes them: the `kubernetes` service in `default` always,
/// the pod's namespace's services when `enableServiceLinks` (the default).
async fn service_env(objects: &Objects, pod: &Pod) -> Result<Vec<(String, String)>, ConfigError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let links = pod.spec.as_ref().and_then(|s| s.enable_service_links).unwrap_or(true);
    let mut services = Vec::new();
    if links {
        let listed = objects.services(uid, ns).await.map_err(|e| ConfigError(format!("services in {ns}: {e}")))?;
        services.extend(listed.iter().cloned());
    }
    if ns != "default" || !links {
        let defaults =
            objects.services(uid, "default").await.map_err(|e| ConfigError(format!("services in default: {e}")))?;
        services.extend(defaults.iter().filter(|s| s.metadata.name.as_deref() == Some("kubernetes")).cloned());
    }
    services.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    Ok(services.iter().flat_map(service_vars).collect())
}

/// `{NAME}_SERVICE_HOST`, `{NAME}_SERVICE_PORT[_{PORT}]` and the docker-link `{NAME}_PORT…` set.
pub fn service_vars(s: &k8s_openapi::api::core::v1::Service) -> Vec<(String, String)> {
    let Some(spec) = s.spec.as_ref() else { return Vec::new() };
    let ip = spec.cluster_ip.clone().unwrap_or_default();
    if ip.is_empty() || ip == "None" {
        return Vec::new();
    }
    let name = s.metadata.name.clone().unwrap_or_default().to_uppercase().replace('-', "_");
    let ports = spec.ports.clone().unwrap_or_default();
    let mut out = vec![(format!("{name}_SERVICE_HOST"), ip.clone())];
    let Some(first) = ports.first() else { return out };
    out.push((format!("{name}_SERVICE_PORT"), first.port.to_string()));
    for p in &ports {
        if let Some(pn) = p.name.as_deref().filter(|n| !n.is_empty()) {
            out.push((format!("{name}_SERVICE_PORT_{}", pn.to_uppercase().replace('-', "_")), p.port.to_string()));
        }
    }
    let proto = |p: &k8s_openapi::api::core::v1::ServicePort| p.protocol.clone().unwrap_or_else(|| "TCP".into());
    out.push((format!("{name}_PORT"), format!("{}://{ip}:{}", proto(first).to_lowercase(), first.port)));
    for p in &ports {
        let pr = proto(p);
        let prefix = format!("{name}_PORT_{}_{pr}", p.port);
        out.push((prefix.clone(), format!("{}://{ip}:{}", pr.to_lowercase(), p.port)));
        out.push((format!("{prefix}_PROTO"), pr.to_lowercase()));
        out.push((format!("{prefix}_PORT"), p.port.to_string()));
        out.push((format!("{prefix}_ADDR"), ip.clone()));
    }
    out
}

/// Expands `$(VAR)` from `vars`; `$$` escapes; unknown references stay as written.
pub fn expand(input: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(input.len());
    let b = input.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            if b[i + 1] == b'$' {
                out.push('$');
                i += 2;
                continue;
            }
            if b[i + 1] == b'('
                && let Some(end) = input[i + 2..].find(')')
            {
                let name = &input[i + 2..i + 2 + end];
                match vars.get(name) {
                    Some(v) => out.push_str(v),
                    None => out.push_str(&input[i..i + 3 + end]),
                }
                i += 3 + end;
                continue;
            }
        }
        let ch = input[i..].chars().next().unwrap_or('\u{fffd}');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// A fieldRef or resourceFieldRef of this container's env, through the resolver downwardAPI
/// volumes use (`crate::downward`).
fn downward_value(
    pod: &Pod,
    c: &Container,
    from: &k8s_openapi::api::core::v1::EnvVarSource,
    node: &NodeContext,
    pod_ips: &[String],
) -> Option<Result<String, ConfigError>> {
    let error = |e: crate::downward::Error| ConfigError(e.to_string());
    if let Some(f) = &from.field_ref {
        let host_ips: Vec<String> = node.node_ip.iter().cloned().collect();
        let addresses = crate::downward::Addresses { host_ips: &host_ips, pod_ips };
        return Some(crate::downward::env_field(pod, &f.field_path, addresses).map_err(error));
    }
    let r = from.resource_field_ref.as_ref()?;
    let allocatable = node.cgroups.as_ref().map(|cm| cm.allocatable());
    let node_facts = crate::downward::Allocatable {
        cpu_milli: allocatable.map(|a| a.cpu_milli),
        memory: allocatable.map(|a| a.memory),
    };
    Some(crate::downward::resource_field(pod, Some(c), r, node_facts).map_err(error))
}

fn lookup(
    sources: &EnvSources,
    kind: Kind,
    name: &str,
    key: &str,
    ns: &str,
    optional: bool,
) -> Result<Option<String>, ConfigError> {
    match sources.0.get(&(kind, name.to_string())) {
        Some(Some(data)) => match data.get(key) {
            Some(v) => Ok(Some(v.clone())),
            None if optional => Ok(None),
            None => Err(ConfigError(format!(
                "couldn't find key {key} in {} {ns}/{name}",
                if kind == Kind::ConfigMap { "ConfigMap" } else { "Secret" }
            ))),
        },
        Some(None) if optional => Ok(None),
        Some(None) => Err(ConfigError(format!("{} {name:?} not found", kind.as_str()))),
        None if optional => Ok(None),
        None => Err(ConfigError(format!("{} {name:?} not found: no API server to read it from", kind.as_str()))),
    }
}

fn env_value(
    pod: &Pod,
    c: &Container,
    e: &EnvVar,
    node: &NodeContext,
    pod_ips: &[String],
    vars: &HashMap<String, String>,
    sources: &EnvSources,
) -> Result<Option<String>, ConfigError> {
    let Some(from) = e.value_from.as_ref() else {
        return Ok(Some(expand(e.value.as_deref().unwrap_or_default(), vars)));
    };
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    if let Some(value) = downward_value(pod, c, from, node, pod_ips) {
        return value.map(Some);
    }
    if let Some(k) = &from.config_map_key_ref {
        return lookup(sources, Kind::ConfigMap, &k.name, &k.key, ns, k.optional.unwrap_or(false));
    }
    if let Some(k) = &from.secret_key_ref {
        return lookup(sources, Kind::Secret, &k.name, &k.key, ns, k.optional.unwrap_or(false));
    }
    Err(ConfigError(format!("env {}: valueFrom has no source", e.name)))
}

/// Environment variables in order: `envFrom` first, then `env` (later entries win), with
/// `$(VAR)` references to earlier ones expanded. `pod_ips` are upstream's podIPs (the sandbox's,
/// or the node's for a host-network pod).
pub fn env(
    pod: &Pod,
    c: &Container,
    node: &NodeContext,
    pod_ips: &[String],
    sources: &EnvSources,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut vars = HashMap::new();
    let mut out: Vec<(String, String)> = Vec::new();
    let set = |out: &mut Vec<(String, String)>, vars: &mut HashMap<String, String>, k: String, v: String| {
        vars.insert(k.clone(), v.clone());
        out.retain(|(x, _)| x != &k);
        out.push((k, v));
    };
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    for (k, v) in &sources.1 {
        set(&mut out, &mut vars, k.clone(), v.clone());
    }
    for f in c.env_from.iter().flatten() {
        let prefix = f.prefix.clone().unwrap_or_default();
        let (kind, name, optional) = match (&f.config_map_ref, &f.secret_ref) {
            (Some(r), _) => (Kind::ConfigMap, r.name.clone(), r.optional.unwrap_or(false)),
            (None, Some(r)) => (Kind::Secret, r.name.clone(), r.optional.unwrap_or(false)),
            _ => continue,
        };
        match sources.0.get(&(kind, name.clone())) {
            Some(Some(data)) => {
                for (k, v) in data {
                    set(&mut out, &mut vars, format!("{prefix}{k}"), v.clone());
                }
            }
            _ if optional => {}
            Some(None) => return Err(ConfigError(format!("{} {ns}/{name} not found", kind.as_str()))),
            None => {
                return Err(ConfigError(format!(
                    "{} {name:?} not found: no API server to read it from",
                    kind.as_str()
                )));
            }
        }
    }
    for e in c.env.iter().flatten() {
        if let Some(v) = env_value(pod, c, e, node, pod_ips, &vars, sources)? {
            set(&mut out, &mut vars, e.name.clone(), v);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodeContext {
        NodeContext {
            node_name: "n1".into(),
            node_ip: Some("192.0.2.1".into()),
            cluster_dns: vec![],
            cluster_domain: "cluster.local".into(),
            resolv_conf: "/nonexistent".into(),
            pod_logs_dir: "/var/log/pods".into(),
            root_dir: "/var/lib/kubelet".into(),
            cgroups: None,
            seccomp_default: false,
        }
    }

    fn pod_and_container(env: serde_json::Value, env_from: serde_json::Value) -> (Pod, Container) {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "i", "env": env, "envFrom": env_from}]}
        }))
        .unwrap();
        let c = pod.spec.as_ref().unwrap().containers[0].clone();
        (pod, c)
    }

    #[test]
    fn config_maps_secrets_and_field_refs_resolve_in_order() {
        let (pod, c) = pod_and_container(
            serde_json::json!([
                {"name": "COLOR", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "color"}}},
                {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "password"}}},
                {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                {"name": "BOTH", "value": "$(COLOR)-$(APP)"},
                {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "x", "optional": true}}}
            ]),
            serde_json::json!([{"prefix": "CFG_", "configMapRef": {"name": "cfg"}}]),
        );
        let mut s = EnvSources::default();
        s.0.insert((Kind::ConfigMap, "cfg".into()), Some(BTreeMap::from([("color".into(), "blue".into())])));
        s.0.insert((Kind::Secret, "sec".into()), Some(BTreeMap::from([("password".into(), "hunter2".into())])));
        s.0.insert((Kind::ConfigMap, "absent".into()), None);
        let got = env(&pod, &c, &node(), &[], &s).unwrap();
        let want: Vec<(String, String)> =
            [("CFG_color", "blue"), ("COLOR", "blue"), ("PASS", "hunter2"), ("APP", "web"), ("BOTH", "blue-web")]
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn resource_and_field_refs_resolve_as_downward_api_volumes_do() {
        let (mut pod, _) = pod_and_container(
            serde_json::json!([
                {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu"}}},
                {"name": "CPU_M", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1m"}}},
                {"name": "MEM_MI", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                {"name": "LABELS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels"}}},
                {"name": "IPS", "valueFrom": {"fieldRef": {"fieldPath": "status.podIPs"}}},
                {"name": "HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}}
            ]),
            serde_json::json!([]),
        );
        let spec = pod.spec.as_mut().unwrap();
        spec.containers[0].resources = Some(
            serde_json::from_value(serde_json::json!({
                "limits": {"cpu": "1500m", "memory": "100M"}, "requests": {"cpu": "250m"}
            }))
            .unwrap(),
        );
        let c = spec.containers[0].clone();
        let got: BTreeMap<String, String> =
            env(&pod, &c, &node(), &["10.88.0.9".into()], &EnvSources::default()).unwrap().into_iter().collect();
        // 250m in whole cores rounds up to 1 (upstream); 100M over 1Mi rounds up to 96.
        assert_eq!(got["CPU"], "1");
        assert_eq!(got["CPU_M"], "1500");
        assert_eq!(got["MEM_MI"], "96");
        assert_eq!(got["LABELS"], "app=\"web\"");
        assert_eq!(got["IPS"], "10.88.0.9");
        assert_eq!(got["HOST"], "192.0.2.1");
        let (pod, c) = pod_and_container(
            serde_json::json!([{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "status.phase"}}}]),
            serde_json::json!([]),
        );
        assert_eq!(
            env(&pod, &c, &node(), &[], &EnvSources::default()).unwrap_err().0,
            "unsupported fieldPath: status.phase"
        );
    }

    #[test]
    fn a_missing_required_key_is_a_config_error() {
        let (pod, c) = pod_and_container(
            serde_json::json!([{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "nope"}}}]),
            serde_json::json!([]),
        );
        let mut s = EnvSources::default();
        s.0.insert((Kind::ConfigMap, "cfg".into()), Some(BTreeMap::new()));
        assert_eq!(env(&pod, &c, &node(), &[], &s).unwrap_err().0, "couldn't find key nope in ConfigMap ns/cfg");
        s.0.insert((Kind::ConfigMap, "cfg".into()), None);
        assert_eq!(env(&pod, &c, &node(), &[], &s).unwrap_err().0, "configmap \"cfg\" not found");
    }
}

#[cfg(test)]
mod service_tests {
    use super::*;

    #[test]
    fn service_links_follow_the_docker_link_names() {
        let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "redis-primary", "namespace": "ns"},
            "spec": {"clusterIP": "10.0.0.11", "ports": [{"name": "db", "port": 6379, "protocol": "TCP"}]}
        }))
        .unwrap();
        let vars: BTreeMap<String, String> = service_vars(&svc).into_iter().collect();
        assert_eq!(vars["REDIS_PRIMARY_SERVICE_HOST"], "10.0.0.11");
        assert_eq!(vars["REDIS_PRIMARY_SERVICE_PORT"], "6379");
        assert_eq!(vars["REDIS_PRIMARY_SERVICE_PORT_DB"], "6379");
        assert_eq!(vars["REDIS_PRIMARY_PORT"], "tcp://10.0.0.11:6379");
        assert_eq!(vars["REDIS_PRIMARY_PORT_6379_TCP"], "tcp://10.0.0.11:6379");
        assert_eq!(vars["REDIS_PRIMARY_PORT_6379_TCP_PROTO"], "tcp");
        assert_eq!(vars["REDIS_PRIMARY_PORT_6379_TCP_PORT"], "6379");
        assert_eq!(vars["REDIS_PRIMARY_PORT_6379_TCP_ADDR"], "10.0.0.11");
        let headless: k8s_openapi::api::core::v1::Service =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "h"}, "spec": {"clusterIP": "None"}}))
                .unwrap();
        assert!(service_vars(&headless).is_empty());
    }
}
