//! Building the CRI sandbox and container configs from a pod: hostname, DNS, port mappings,
//! labels and annotations, log paths, command/args/env with `$(VAR)` expansion, mounts.

pub use super::env::expand;
use super::security_context::{self, ImageUser};
use crate::cm::ContainerManager;
use crate::cm::resources::{self, Policy};
use crate::cri::api;
use crate::cri::labels::{self, ContainerType, PodRef};
use k8s_openapi::api::core::v1::{Container, Pod, VolumeMount};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Node-wide settings the configs depend on.
#[derive(Debug, Clone)]
pub struct NodeContext {
    pub node_name: String,
    pub node_ip: Option<String>,
    pub cluster_dns: Vec<String>,
    pub cluster_domain: String,
    pub resolv_conf: PathBuf,
    pub pod_logs_dir: PathBuf,
    pub root_dir: PathBuf,
    /// The container manager (pod cgroups, CFS settings, memory capacity); None runs pods in
    /// the runtime's default cgroup with upstream's default CFS settings.
    pub cgroups: Option<Arc<ContainerManager>>,
    /// seccompDefault: containers without a seccomp profile run with the runtime's default.
    pub seccomp_default: bool,
}

impl NodeContext {
    /// CFS settings and memory capacity for container resources.
    pub fn resource_policy(&self) -> Policy {
        self.cgroups.as_ref().map(|c| c.policy().clone()).unwrap_or_else(crate::cm::default_policy)
    }

    /// `<root-dir>/seccomp`, where Localhost seccomp profiles are (upstream's seccompProfileRoot).
    pub fn seccomp_profile_root(&self) -> PathBuf {
        self.root_dir.join("seccomp")
    }
}

/// A container whose config cannot be built (CreateContainerConfigError).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl From<security_context::Error> for ConfigError {
    fn from(e: security_context::Error) -> Self {
        Self(e.to_string())
    }
}

pub fn pod_ref(pod: &Pod) -> PodRef {
    PodRef {
        name: pod.metadata.name.clone().unwrap_or_default(),
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
    }
}

/// `/var/log/pods/<ns>_<name>_<uid>`
pub fn pod_log_dir(node: &NodeContext, pod: &Pod) -> PathBuf {
    let r = pod_ref(pod);
    node.pod_logs_dir.join(format!("{}_{}_{}", r.namespace, r.name, r.uid))
}

/// `<root>/pods/<uid>`
pub fn pod_dir(node: &NodeContext, uid: &str) -> PathBuf {
    node.root_dir.join("pods").join(uid)
}

fn ns_mode(host: bool) -> i32 {
    if host { api::NamespaceMode::Node as i32 } else { api::NamespaceMode::Pod as i32 }
}

fn namespace_options(pod: &Pod) -> api::NamespaceOption {
    let spec = pod.spec.as_ref();
    let flag = |f: fn(&k8s_openapi::api::core::v1::PodSpec) -> Option<bool>| spec.and_then(f).unwrap_or(false);
    let pid = if flag(|s| s.host_pid) {
        api::NamespaceMode::Node as i32
    } else if flag(|s| s.share_process_namespace) {
        api::NamespaceMode::Pod as i32
    } else {
        api::NamespaceMode::Container as i32
    };
    api::NamespaceOption {
        network: ns_mode(flag(|s| s.host_network)),
        pid,
        ipc: ns_mode(flag(|s| s.host_ipc)),
        ..Default::default()
    }
}

/// An ephemeral container with a target joins the target container's process namespace
/// (NamespaceMode TARGET with its id), as upstream's generateLinuxContainerConfig does — only
/// where each container has its own one: with `hostPID` or `shareProcessNamespace` the
/// ephemeral container already sees the target's processes.
pub fn share_target_pid(config: &mut api::ContainerConfig, target_id: &str) {
    let ns = config.linux.as_mut().and_then(|l| l.security_context.as_mut()).and_then(|s| s.namespace_options.as_mut());
    if let Some(ns) = ns.filter(|ns| ns.pid == api::NamespaceMode::Container as i32) {
        ns.pid = api::NamespaceMode::Target as i32;
        ns.target_id = target_id.to_string();
    }
}

fn parse_resolv_conf(text: &str) -> (Vec<String>, Vec<String>, Vec<String>) {
    let (mut servers, mut searches, mut options) = (Vec::new(), Vec::new(), Vec::new());
    for line in text.lines() {
        let mut f = line.split_whitespace();
        match f.next() {
            Some("nameserver") => servers.extend(f.next().map(str::to_string)),
            Some("search") => searches = f.map(str::to_string).collect(),
            Some("options") => options.extend(f.map(str::to_string)),
            _ => {}
        }
    }
    (servers, searches, options)
}

/// DNS for the sandbox per `dnsPolicy` (upstream pkg/kubelet/network/dns).
pub fn dns_config(pod: &Pod, node: &NodeContext) -> api::DnsConfig {
    let spec = pod.spec.as_ref();
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let mut policy = spec.and_then(|s| s.dns_policy.as_deref()).unwrap_or("ClusterFirst");
    if policy == "ClusterFirst" && host_network {
        policy = "Default";
    }
    if policy.starts_with("ClusterFirst") && node.cluster_dns.is_empty() {
        // As upstream: no cluster DNS configured → fall back to the host's resolver.
        policy = "Default";
    }
    let host = std::fs::read_to_string(&node.resolv_conf).map(|t| parse_resolv_conf(&t)).unwrap_or_default();
    let mut cfg = match policy {
        "Default" => api::DnsConfig { servers: host.0, searches: host.1, options: host.2 },
        "None" => api::DnsConfig::default(),
        _ => {
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            let d = &node.cluster_domain;
            let mut searches = vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.clone()];
            searches.extend(host.1);
            api::DnsConfig { servers: node.cluster_dns.clone(), searches, options: vec!["ndots:5".into()] }
        }
    };
    if let Some(extra) = spec.and_then(|s| s.dns_config.as_ref()) {
        cfg.servers.extend(extra.nameservers.iter().flatten().cloned());
        cfg.searches.extend(extra.searches.iter().flatten().cloned());
        for o in extra.options.iter().flatten() {
            let name = o.name.clone().unwrap_or_default();
            cfg.options.retain(|x| x.split(':').next() != Some(name.as_str()));
            cfg.options.push(match &o.value {
                Some(v) => format!("{name}:{v}"),
                None => name,
            });
        }
    }
    cfg.searches.dedup();
    cfg
}

/// The pod's `spec.overhead` as sandbox resources (informational for the runtime; the pod
/// cgroup already includes it).
fn sandbox_overhead(pod: &Pod, node: &NodeContext) -> Option<api::LinuxContainerResources> {
    let overhead = pod.spec.as_ref()?.overhead.as_ref().filter(|o| !o.is_empty())?;
    let cpu = overhead.get("cpu").map(resources::milli).unwrap_or(0) as i64;
    let memory = resources::units(overhead.get("memory").map(resources::milli).unwrap_or(0));
    let policy = node.resource_policy();
    let period = if policy.cpu_cfs_quota { policy.cpu_cfs_period_us as i64 } else { 0 };
    Some(api::LinuxContainerResources {
        cpu_shares: resources::milli_cpu_to_shares(cpu) as i64,
        cpu_period: period,
        cpu_quota: if period > 0 { resources::milli_cpu_to_quota(cpu, period) } else { 0 },
        memory_limit_in_bytes: memory.max(0),
        ..Default::default()
    })
}

pub fn sandbox_config(pod: &Pod, node: &NodeContext, attempt: u32) -> api::PodSandboxConfig {
    let r = pod_ref(pod);
    let spec = pod.spec.clone().unwrap_or_default();
    let host_network = spec.host_network.unwrap_or(false);
    let hostname = if host_network {
        String::new()
    } else {
        let h = spec.hostname.clone().unwrap_or_else(|| r.name.clone());
        h.chars().take(63).collect::<String>().trim_end_matches(['-', '.']).to_string()
    };
    let mut port_mappings = Vec::new();
    for c in &spec.containers {
        for p in c.ports.iter().flatten() {
            let protocol = match p.protocol.as_deref() {
                Some("UDP") => api::Protocol::Udp,
                Some("SCTP") => api::Protocol::Sctp,
                _ => api::Protocol::Tcp,
            };
            port_mappings.push(api::PortMapping {
                protocol: protocol as i32,
                container_port: p.container_port,
                host_port: p.host_port.unwrap_or(0),
                host_ip: p.host_ip.clone().unwrap_or_default(),
            });
        }
    }
    let privileged = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .any(|c| c.security_context.as_ref().and_then(|s| s.privileged).unwrap_or(false));
    let psc = spec.security_context.clone().unwrap_or_default();
    api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: r.name.clone(),
            uid: r.uid.clone(),
            namespace: r.namespace.clone(),
            attempt,
        }),
        hostname,
        log_directory: pod_log_dir(node, pod).display().to_string(),
        dns_config: Some(dns_config(pod, node)),
        port_mappings,
        labels: labels::sandbox_labels(pod.metadata.labels.as_ref(), &r),
        annotations: pod.metadata.annotations.clone().unwrap_or_default().into_iter().collect(),
        linux: Some(api::LinuxPodSandboxConfig {
            cgroup_parent: node.cgroups.as_ref().map(|c| c.cgroup_parent(pod)).unwrap_or_default(),
            overhead: sandbox_overhead(pod, node),
            security_context: Some(sandbox_security_context(pod, &psc, privileged)),
            // Slash-separated names go to the runtime dot-separated, as upstream converts them
            // (ConvertPodSysctlsVariableToDotsSeparator).
            sysctls: psc
                .sysctls
                .iter()
                .flatten()
                .map(|s| (crate::admission::sysctl::normalize(&s.name), s.value.clone()))
                .collect(),
            ..Default::default()
        }),
        windows: None,
    }
}

/// Upstream's generatePodSandboxLinuxConfig security context: the sandbox always runs with the
/// runtime's default seccomp profile (so least-privileged pod profiles work, k/k #84623), the
/// pod's user and group, fsGroup then supplementalGroups and their policy, SELinux options.
fn sandbox_security_context(
    pod: &Pod,
    psc: &k8s_openapi::api::core::v1::PodSecurityContext,
    privileged: bool,
) -> api::LinuxSandboxSecurityContext {
    api::LinuxSandboxSecurityContext {
        namespace_options: Some(namespace_options(pod)),
        run_as_user: psc.run_as_user.map(|value| api::Int64Value { value }),
        run_as_group: psc.run_as_group.map(|value| api::Int64Value { value }),
        supplemental_groups: psc
            .fs_group
            .into_iter()
            .chain(psc.supplemental_groups.iter().flatten().copied())
            .collect(),
        // An unknown policy fails each container's config (CreateContainerConfigError); the
        // sandbox itself runs only the pause process.
        supplemental_groups_policy: security_context::supplemental_groups_policy(Some(psc)).unwrap_or_default(),
        selinux_options: psc.se_linux_options.as_ref().map(|o| api::SeLinuxOption {
            user: o.user.clone().unwrap_or_default(),
            role: o.role.clone().unwrap_or_default(),
            r#type: o.type_.clone().unwrap_or_default(),
            level: o.level.clone().unwrap_or_default(),
        }),
        privileged,
        seccomp: Some(api::SecurityProfile {
            profile_type: api::security_profile::ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        }),
        ..Default::default()
    }
}

pub struct ContainerInput<'a> {
    /// ConfigMaps and Secrets the container's env refers to, read from the API beforehand.
    pub env_sources: &'a super::env::EnvSources,
    pub pod: &'a Pod,
    pub container: &'a Container,
    pub kind: ContainerType,
    pub restart_count: i32,
    pub image_ref: &'a str,
    /// Upstream's podIPs: the sandbox's, or the node's for a host-network pod.
    pub pod_ips: &'a [String],
    /// The pod's volumes as the volume manager set them up.
    pub volumes: &'a crate::volume::PodVolumes,
    /// The user the image runs as (CRI ImageStatus), for runAsNonRoot and a missing runAsUser.
    pub image_user: &'a ImageUser,
    /// Whether the pod's runtime handler supports recursive read-only mounts (CRI Status
    /// `runtime_handlers[].features`).
    pub recursive_read_only: bool,
}

/// resolveRecursiveReadOnly (kubelet_pods.go): whether a mount is made recursively read-only.
/// `Disabled` (or unset) never; it needs `readOnly` and no propagation; `IfPossible` when the
/// runtime handler supports it (else a plain read-only mount); `Enabled` only then, else the
/// container fails (CreateContainerConfigError).
pub fn recursive_read_only(m: &VolumeMount, supported: bool) -> Result<bool, String> {
    let mode = match m.recursive_read_only.as_deref() {
        None | Some("Disabled") => return Ok(false),
        Some(mode) => mode,
    };
    if !m.read_only.unwrap_or(false) {
        return Err(format!("volume {:?} requested recursive read-only mode, but it is not read-only", m.name));
    }
    if let Some(p) = m.mount_propagation.as_deref().filter(|p| *p != "None") {
        return Err(format!(
            "volume {:?} requested recursive read-only mode, but it is not compatible with propagation {p:?}",
            m.name
        ));
    }
    match mode {
        "IfPossible" => Ok(supported),
        "Enabled" if supported => Ok(true),
        "Enabled" => Err(format!(
            "volume {:?} requested recursive read-only mode, but it is not supported by the runtime",
            m.name
        )),
        other => Err(format!("unknown recursive read-only mode {other:?}")),
    }
}

pub fn container_config(input: &ContainerInput, node: &NodeContext) -> Result<api::ContainerConfig, ConfigError> {
    let ContainerInput { pod, container: c, kind, restart_count, image_ref, pod_ips, .. } = *input;
    // Upstream verifies runAsNonRoot first, right after looking up the image's user.
    security_context::verify_run_as_non_root(pod, c, input.image_user)?;
    let r = pod_ref(pod);
    let envs = super::env::env(pod, c, node, pod_ips, input.env_sources)?;
    let vars: HashMap<String, String> = envs.iter().cloned().collect();
    let expand_all = |v: &Option<Vec<String>>| v.iter().flatten().map(|s| expand(s, &vars)).collect::<Vec<_>>();

    let mut mounts = Vec::new();
    let volumes_pod_dir = pod_dir(node, &r.uid);
    for (index, m) in c.volume_mounts.iter().flatten().enumerate() {
        let volume = input
            .volumes
            .host_path(&m.name)
            .ok_or_else(|| ConfigError(format!("volume {:?} is not set up", m.name)))?;
        let sub = match (m.sub_path.as_deref(), m.sub_path_expr.as_deref()) {
            (Some(s), _) if !s.is_empty() => Some(s.to_string()),
            (_, Some(e)) if !e.is_empty() => Some(expand(e, &vars)),
            _ => None,
        };
        // subPath: resolved inside the volume and bind-mounted, so no symlink can lead out.
        let host = match sub {
            Some(sub_path) => {
                let req = crate::volume::subpath::Request {
                    pod_dir: &volumes_pod_dir,
                    volume: &m.name,
                    volume_path: volume,
                    sub_path: &sub_path,
                    container: &c.name,
                    index,
                };
                crate::volume::subpath::prepare(&req).map_err(|e| ConfigError(e.to_string()))?
            }
            None => volume.to_path_buf(),
        };
        let propagation = match m.mount_propagation.as_deref() {
            Some("HostToContainer") => api::MountPropagation::PropagationHostToContainer,
            Some("Bidirectional") => api::MountPropagation::PropagationBidirectional,
            _ => api::MountPropagation::PropagationPrivate,
        };
        let rro = recursive_read_only(m, input.recursive_read_only)
            .map_err(|e| ConfigError(format!("failed to resolve recursive read-only mode: {e}")))?;
        mounts.push(api::Mount {
            container_path: m.mount_path.clone(),
            host_path: host.display().to_string(),
            readonly: m.read_only.unwrap_or(false),
            recursive_read_only: rro,
            propagation: propagation as i32,
            ..Default::default()
        });
    }
    let hosts = super::hosts::mount(pod, c, pod_ips, &volumes_pod_dir, &node.cluster_domain);
    mounts.extend(hosts.map_err(|e| ConfigError(e.to_string()))?);
    let termination_path = c.termination_message_path.as_deref().unwrap_or("");
    mounts.extend(super::termination_message::mount(&volumes_pod_dir, &c.name, termination_path));

    let mut annotations = HashMap::from([
        (labels::CONTAINER_HASH.to_string(), format!("{:x}", labels::container_hash(c))),
        (labels::CONTAINER_RESTART_COUNT.to_string(), restart_count.to_string()),
        (labels::TERMINATION_MESSAGE_PATH.to_string(), c.termination_message_path.clone().unwrap_or_default()),
        (labels::TERMINATION_MESSAGE_POLICY.to_string(), c.termination_message_policy.clone().unwrap_or_default()),
        (labels::CONTAINER_TYPE.to_string(), kind.as_str().to_string()),
    ]);
    if let Some(g) = pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds) {
        annotations.insert(labels::POD_TERMINATION_GRACE.into(), g.to_string());
    }
    if let Some(g) = pod.metadata.deletion_grace_period_seconds {
        annotations.insert(labels::POD_DELETION_GRACE.into(), g.to_string());
    }
    if let Some(ps) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()) {
        annotations.insert(labels::CONTAINER_PRESTOP.into(), serde_json::to_string(ps).unwrap_or_default());
    }
    if let Some(ports) = c.ports.as_ref().filter(|p| !p.is_empty()) {
        annotations.insert(labels::CONTAINER_PORTS.into(), serde_json::to_string(ports).unwrap_or_default());
    }

    let seccomp = security_context::Seccomp {
        default_runtime_default: node.seccomp_default,
        profile_root: &node.seccomp_profile_root(),
    };
    let security = api::LinuxContainerSecurityContext {
        namespace_options: Some(namespace_options(pod)),
        ..security_context::container_context(pod, c, input.image_user, seccomp)?
    };
    Ok(api::ContainerConfig {
        metadata: Some(api::ContainerMetadata { name: c.name.clone(), attempt: restart_count as u32 }),
        image: Some(api::ImageSpec {
            image: image_ref.to_string(),
            user_specified_image: c.image.clone().unwrap_or_default(),
            ..Default::default()
        }),
        command: expand_all(&c.command),
        args: expand_all(&c.args),
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs: envs.into_iter().map(|(key, value)| api::KeyValue { key, value }).collect(),
        mounts,
        labels: labels::container_labels(&r, &c.name),
        annotations,
        log_path: format!("{}/{}.log", c.name, restart_count),
        stdin: c.stdin.unwrap_or(false),
        stdin_once: c.stdin_once.unwrap_or(false),
        tty: c.tty.unwrap_or(false),
        linux: Some(api::LinuxContainerConfig {
            resources: Some(container_resources(pod, c, node)),
            security_context: Some(security),
        }),
        ..Default::default()
    })
}

/// The device plugins' part of the container's config (upstream's GenerateRunContainerOptions
/// with the device manager's options): their env vars before the container's own (which win
/// where both set one), their mounts before the volumes', their devices and CDI devices, and
/// their annotations where the kubelet sets none of its own.
pub fn apply_devices(config: &mut api::ContainerConfig, opts: &crate::cm::devicemanager::RunOptions) {
    let envs = opts.envs.iter().map(|(key, value)| api::KeyValue { key: key.clone(), value: value.clone() });
    config.envs = envs.chain(std::mem::take(&mut config.envs)).collect();
    let mounts = opts.mounts.iter().map(|(container_path, host_path, readonly)| api::Mount {
        container_path: container_path.clone(),
        host_path: host_path.clone(),
        readonly: *readonly,
        ..Default::default()
    });
    config.mounts = mounts.chain(std::mem::take(&mut config.mounts)).collect();
    config.devices.extend(opts.devices.iter().map(|(container_path, host_path, permissions)| api::Device {
        container_path: container_path.clone(),
        host_path: host_path.clone(),
        permissions: permissions.clone(),
    }));
    config.cdi_devices.extend(opts.cdi_devices.iter().map(|name| api::CdiDevice { name: name.clone() }));
    for (k, v) in &opts.annotations {
        config.annotations.entry(k.clone()).or_insert_with(|| v.clone());
    }
}

/// The container's CRI resources plus, under the static CPU and memory manager policies, its
/// cpuset and memory nodes (upstream's PreCreateContainer).
fn container_resources(pod: &Pod, c: &Container, node: &NodeContext) -> api::LinuxContainerResources {
    let mut res = resources::container_resources(pod, c, &node.resource_policy());
    if let Some(cpus) = node.cgroups.as_ref().and_then(|cm| cm.container_cpuset(pod, &c.name)) {
        res.cpuset_cpus = cpus;
    }
    if let Some(mems) = node.cgroups.as_ref().and_then(|cm| cm.container_mems(pod, &c.name)) {
        res.cpuset_mems = mems;
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node without cluster DNS or cgroups, at the default paths.
    fn plain_node() -> NodeContext {
        NodeContext {
            node_name: "n".into(),
            node_ip: None,
            cluster_dns: vec![],
            cluster_domain: "cluster.local".into(),
            resolv_conf: "/nonexistent".into(),
            pod_logs_dir: "/var/log/pods".into(),
            root_dir: "/var/lib/kubelet".into(),
            cgroups: None,
            seccomp_default: false,
        }
    }

    #[test]
    fn expansion_follows_upstream_rules() {
        let vars = HashMap::from([("A".to_string(), "x".to_string())]);
        assert_eq!(expand("$(A)-$(B)-$$(A)-$", &vars), "x-$(B)-$(A)-$");
        assert_eq!(expand("plain", &vars), "plain");
    }

    #[test]
    fn cluster_first_dns_uses_cluster_servers_and_searches() {
        let pod: Pod = serde_json::from_value(
            serde_json::json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": {"containers": []}}),
        )
        .unwrap();
        let node = NodeContext { cluster_dns: vec!["10.96.0.10".into()], ..plain_node() };
        let d = dns_config(&pod, &node);
        assert_eq!(d.servers, vec!["10.96.0.10"]);
        assert_eq!(d.searches, vec!["ns.svc.cluster.local", "svc.cluster.local", "cluster.local"]);
        assert_eq!(d.options, vec!["ndots:5"]);
        let no_dns = NodeContext { cluster_dns: vec![], ..node };
        assert!(dns_config(&pod, &no_dns).servers.is_empty());
    }

    #[test]
    fn slash_separated_sysctls_reach_the_runtime_dot_separated() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
            "spec": {"containers": [], "securityContext": {"sysctls": [
                {"name": "kernel/shm_rmid_forced", "value": "1"},
                {"name": "net/ipv4/conf/eno2.100/rp_filter", "value": "0"},
                {"name": "net.ipv4.ip_local_port_range", "value": "1024 65535"}
            ]}}
        }))
        .unwrap();
        let node = plain_node();
        let sysctls = sandbox_config(&pod, &node, 0).linux.unwrap().sysctls;
        let mut names: Vec<&str> = sysctls.keys().map(String::as_str).collect();
        names.sort();
        assert_eq!(
            names,
            ["kernel.shm_rmid_forced", "net.ipv4.conf.eno2/100.rp_filter", "net.ipv4.ip_local_port_range"]
        );
    }

    #[test]
    fn sandbox_goes_in_the_pod_cgroup_and_containers_get_resources() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = crate::cm::Config {
            cgroup_driver: "cgroupfs".into(),
            cgroup_root: String::new(),
            cgroups_per_qos: true,
            cpu_cfs_quota: true,
            cpu_cfs_quota_period_us: 100_000,
            pod_pids_limit: -1,
            enforce_node_allocatable: vec!["pods".into()],
            system_reserved: Default::default(),
            kube_reserved: Default::default(),
            eviction_hard: Default::default(),
            mount: dir.path().join("cgroup"),
            systemd_run_dir: dir.path().join("systemd"),
            systemd_socket: None,
            resource_managers: Default::default(),
        };
        let capacity = crate::cm::Capacity { cpu_milli: 2000, memory: 1000 << 20, pids: 1000 };
        let cm = ContainerManager::new(cfg, Arc::new(crate::cm::fs::OsFs), capacity).unwrap();
        let node = NodeContext {
            pod_logs_dir: dir.path().join("logs"),
            root_dir: dir.path().join("root"),
            cgroups: Some(Arc::new(cm)),
            ..plain_node()
        };
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
            "spec": {
                "overhead": {"cpu": "100m", "memory": "10Mi"},
                "containers": [{"name": "c", "image": "i",
                "resources": {"requests": {"cpu": "250m", "memory": "100Mi"}, "limits": {"cpu": "500m"}}}]}
        }))
        .unwrap();
        let sb = sandbox_config(&pod, &node, 0);
        let linux = sb.linux.unwrap();
        assert_eq!(linux.cgroup_parent, "/kubepods/burstable/podu1");
        let overhead = linux.overhead.unwrap();
        assert_eq!((overhead.cpu_shares, overhead.memory_limit_in_bytes), (102, 10 << 20));
        let c = &pod.spec.as_ref().unwrap().containers[0];
        let env_sources = Default::default();
        let input = ContainerInput {
            env_sources: &env_sources,
            pod: &pod,
            container: c,
            kind: ContainerType::Regular,
            restart_count: 0,
            image_ref: "i",
            pod_ips: &[],
            volumes: &Default::default(),
            image_user: &ImageUser::Uid(0),
            recursive_read_only: false,
        };
        let r = container_config(&input, &node).unwrap().linux.unwrap().resources.unwrap();
        assert_eq!((r.cpu_shares, r.cpu_quota, r.cpu_period, r.memory_limit_in_bytes), (256, 50_000, 100_000, 0));
        // Burstable: 1000 − 1000×100Mi/1000Mi.
        assert_eq!(r.oom_score_adj, 900);
        // Without a container manager: the runtime's default cgroup, resources still set.
        let plain = NodeContext { cgroups: None, ..node };
        assert_eq!(sandbox_config(&pod, &plain, 0).linux.unwrap().cgroup_parent, "");
        assert!(container_config(&input, &plain).unwrap().linux.unwrap().resources.is_some());
    }

    #[test]
    fn recursive_read_only_follows_upstream_resolution() {
        let m = |v: serde_json::Value| -> VolumeMount {
            let mut base = serde_json::json!({"name": "mnt", "mountPath": "/mnt"});
            base.as_object_mut().unwrap().extend(v.as_object().unwrap().clone());
            serde_json::from_value(base).unwrap()
        };
        assert_eq!(recursive_read_only(&m(serde_json::json!({"readOnly": true})), true), Ok(false));
        let disabled = m(serde_json::json!({"readOnly": true, "recursiveReadOnly": "Disabled"}));
        assert_eq!(recursive_read_only(&disabled, true), Ok(false));
        let if_possible = m(serde_json::json!({"readOnly": true, "recursiveReadOnly": "IfPossible"}));
        assert_eq!(recursive_read_only(&if_possible, true), Ok(true));
        assert_eq!(recursive_read_only(&if_possible, false), Ok(false), "a plain read-only mount");
        let enabled = m(serde_json::json!({"readOnly": true, "recursiveReadOnly": "Enabled"}));
        assert_eq!(recursive_read_only(&enabled, true), Ok(true));
        assert_eq!(
            recursive_read_only(&enabled, false).unwrap_err(),
            "volume \"mnt\" requested recursive read-only mode, but it is not supported by the runtime"
        );
        let writable = m(serde_json::json!({"recursiveReadOnly": "IfPossible"}));
        assert!(recursive_read_only(&writable, true).unwrap_err().ends_with("but it is not read-only"));
        let propagating = m(
            serde_json::json!({"readOnly": true, "recursiveReadOnly": "Enabled", "mountPropagation": "HostToContainer"}),
        );
        assert!(recursive_read_only(&propagating, true).unwrap_err().contains("propagation \"HostToContainer\""));
    }

    #[test]
    fn device_options_come_before_the_containers_own_and_never_override_the_kubelets() {
        let mut config = api::ContainerConfig {
            envs: vec![api::KeyValue { key: "WIDGET_IDS".into(), value: "mine".into() }],
            mounts: vec![api::Mount { container_path: "/data".into(), ..Default::default() }],
            annotations: HashMap::from([(labels::CONTAINER_TYPE.to_string(), "container".to_string())]),
            ..Default::default()
        };
        let opts = crate::cm::devicemanager::RunOptions {
            envs: vec![("WIDGET_IDS".into(), "w0,w1".into())],
            mounts: vec![("/widgets/w0".into(), "/state/w0".into(), true)],
            devices: vec![("/dev/widget0".into(), "/dev/null".into(), "rw".into())],
            annotations: vec![
                ("example.com/widgets".into(), "w0,w1".into()),
                (labels::CONTAINER_TYPE.into(), "forged".into()),
            ],
            cdi_devices: vec!["example.com/widget=w0".into()],
        };
        apply_devices(&mut config, &opts);
        let envs: Vec<(&str, &str)> = config.envs.iter().map(|e| (e.key.as_str(), e.value.as_str())).collect();
        assert_eq!(
            envs,
            vec![("WIDGET_IDS", "w0,w1"), ("WIDGET_IDS", "mine")],
            "the container's own comes last and wins"
        );
        assert_eq!(config.mounts[0].container_path, "/widgets/w0");
        assert!(config.mounts[0].readonly);
        assert_eq!(config.mounts[1].container_path, "/data");
        assert_eq!(config.devices[0].host_path, "/dev/null");
        assert_eq!(config.cdi_devices[0].name, "example.com/widget=w0");
        assert_eq!(config.annotations["example.com/widgets"], "w0,w1");
        assert_eq!(config.annotations[labels::CONTAINER_TYPE], "container");
    }
}
