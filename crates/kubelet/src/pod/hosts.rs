//! The kubelet-managed `/etc/hosts` (upstream pkg/kubelet/kubelet_pods.go: makeHostsMount,
//! ensureHostsFile, managedHostsFileContent, nodeHostsFileContent, hostsEntriesFromHostAliases).
//!
//! Each container start rewrites `<root>/pods/<uid>/etc-hosts` and bind-mounts it on
//! `/etc/hosts`: the pod's IPs with its hostname (and FQDN with `subdomain`), or, with
//! `hostNetwork`, a copy of the node's own file; `hostAliases` follow in both cases.
//! `/etc/hostname` and `resolv.conf` stay the runtime's (from the sandbox config), as upstream.

use crate::cri::api;
use k8s_openapi::api::core::v1::{Container, HostAlias, Pod};
use std::path::{Path, PathBuf};

/// Where the file goes in the container, and the node's own file a host-network pod copies.
pub const ETC_HOSTS: &str = "/etc/hosts";
const HEADER: &str = "# Kubernetes-managed hosts file.\n";
const HEADER_HOST_NETWORK: &str = "# Kubernetes-managed hosts file (host network).\n";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to read the node's hosts file {path}: {source}")]
    ReadNode { path: PathBuf, source: std::io::Error },
    #[error("failed to write the pod's hosts file {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// The pod's hosts file and its mount, or None where upstream mounts none (shouldMountHostsFile
/// and the check in makeMounts): the pod has no IP yet, or the container mounts a volume on
/// `/etc/hosts` itself (the exact path). Upstream's other exception, a Windows pod with a
/// HostProcess container, cannot happen on this Linux node. `pod_ips` are upstream's podIPs: the
/// sandbox's, or the node's for a host-network pod.
pub fn mount(
    pod: &Pod,
    c: &Container,
    pod_ips: &[String],
    pod_dir: &Path,
    cluster_domain: &str,
) -> Result<Option<api::Mount>, Error> {
    let own = c.volume_mounts.iter().flatten().any(|m| m.mount_path == ETC_HOSTS);
    if pod_ips.is_empty() || own {
        return Ok(None);
    }
    let file = pod_dir.join("etc-hosts");
    ensure_file(&file, Path::new(ETC_HOSTS), pod, pod_ips, cluster_domain)?;
    // As makeHostsMount: read-write, SELinux relabelled.
    Ok(Some(api::Mount {
        container_path: ETC_HOSTS.into(),
        host_path: file.display().to_string(),
        readonly: false,
        selinux_relabel: true,
        ..Default::default()
    }))
}

/// Writes the pod's hosts file (mode 0644, rewritten on every container start as upstream's
/// ensureHostsFile); `node_hosts` is the node's file a host-network pod copies.
fn ensure_file(file: &Path, node_hosts: &Path, pod: &Pod, pod_ips: &[String], domain: &str) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let spec = pod.spec.as_ref();
    let aliases = spec.and_then(|s| s.host_aliases.as_deref()).unwrap_or_default();
    let content = if spec.and_then(|s| s.host_network).unwrap_or(false) {
        let node = std::fs::read(node_hosts).map_err(|source| Error::ReadNode { path: node_hosts.into(), source })?;
        node_content(&node, aliases)
    } else {
        let (hostname, host_domain) = hostname_and_domain(pod, domain);
        managed_content(pod_ips, &hostname, &host_domain, aliases).into_bytes()
    };
    let write = |source| Error::Write { path: file.into(), source };
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(write)?;
    }
    std::fs::write(file, content).map_err(write)?;
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).map_err(write)
}

/// The short hostname and the domain, as upstream's GeneratePodHostNameAndDomain: `hostname` or
/// the pod's name, cut to 63 characters (then without trailing `-` / `.`); with a `subdomain`,
/// `<subdomain>.<namespace>.svc.<clusterDomain>`. (Validation has made both DNS labels.)
pub fn hostname_and_domain(pod: &Pod, cluster_domain: &str) -> (String, String) {
    let spec = pod.spec.as_ref();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let mut hostname = spec.and_then(|s| s.hostname.as_deref()).filter(|h| !h.is_empty()).unwrap_or(name).to_string();
    if hostname.len() > 63 {
        hostname = hostname.chars().take(63).collect::<String>().trim_end_matches(['-', '.']).to_string();
    }
    let domain = match spec.and_then(|s| s.subdomain.as_deref()).filter(|s| !s.is_empty()) {
        Some(sub) => {
            let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
            format!("{sub}.{ns}.svc.{cluster_domain}")
        }
        None => String::new(),
    };
    (hostname, domain)
}

/// managedHostsFileContent: the header, localhost and the IPv6 names, one line per pod IP with
/// the FQDN (when there is a domain) and the hostname, then the aliases.
pub fn managed_content(pod_ips: &[String], hostname: &str, domain: &str, aliases: &[HostAlias]) -> String {
    let mut out = String::from(HEADER);
    out.push_str("127.0.0.1\tlocalhost\n");
    out.push_str("::1\tlocalhost ip6-localhost ip6-loopback\n");
    out.push_str("fe00::0\tip6-localnet\n");
    out.push_str("fe00::0\tip6-mcastprefix\n");
    out.push_str("fe00::1\tip6-allnodes\n");
    out.push_str("fe00::2\tip6-allrouters\n");
    for ip in pod_ips {
        if domain.is_empty() {
            out.push_str(&format!("{ip}\t{hostname}\n"));
        } else {
            out.push_str(&format!("{ip}\t{hostname}.{domain}\t{hostname}\n"));
        }
    }
    out.push_str(&alias_entries(aliases));
    out
}

/// nodeHostsFileContent: the host-network header, the node's file as it is, then the aliases.
pub fn node_content(node_hosts: &[u8], aliases: &[HostAlias]) -> Vec<u8> {
    let mut out = HEADER_HOST_NETWORK.as_bytes().to_vec();
    out.extend_from_slice(node_hosts);
    out.extend_from_slice(alias_entries(aliases).as_bytes());
    out
}

/// hostsEntriesFromHostAliases: nothing without aliases; else a blank line, a comment and one
/// tab-separated line per alias (its IP, then every hostname).
fn alias_entries(aliases: &[HostAlias]) -> String {
    if aliases.is_empty() {
        return String::new();
    }
    let mut out = String::from("\n# Entries added by HostAliases.\n");
    for a in aliases {
        let names = a.hostnames.as_deref().unwrap_or_default().join("\t");
        out.push_str(&format!("{}\t{names}\n", a.ip));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFIX: &str = "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost \
        ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n";

    fn alias(ip: &str, names: &[&str]) -> HostAlias {
        HostAlias { ip: ip.into(), hostnames: Some(names.iter().map(|n| n.to_string()).collect()) }
    }

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn managed_content_has_the_pod_ip_and_hostname() {
        let got = managed_content(&["123.45.67.89".into()], "podFoo", "", &[]);
        assert_eq!(got, format!("{PREFIX}123.45.67.89\tpodFoo\n"));
    }

    #[test]
    fn managed_content_puts_the_fqdn_before_the_hostname() {
        let got = managed_content(&["203.0.113.1".into()], "podFoo", "domainFoo", &[]);
        assert_eq!(got, format!("{PREFIX}203.0.113.1\tpodFoo.domainFoo\tpodFoo\n"));
    }

    #[test]
    fn managed_content_appends_host_aliases_one_line_per_ip() {
        let aliases = [alias("123.45.67.89", &["foo", "bar", "baz"]), alias("456.78.90.123", &["park", "doo", "boo"])];
        let got = managed_content(&["203.0.113.1".into()], "podFoo", "domainFoo", &aliases);
        let want = format!(
            "{PREFIX}203.0.113.1\tpodFoo.domainFoo\tpodFoo\n\n# Entries added by HostAliases.\n\
             123.45.67.89\tfoo\tbar\tbaz\n456.78.90.123\tpark\tdoo\tboo\n"
        );
        assert_eq!(got, want);
    }

    #[test]
    fn managed_content_has_a_line_for_every_pod_ip() {
        let ips = ["203.0.113.1".to_string(), "fd00::6".to_string()];
        let got = managed_content(&ips, "podFoo", "domainFoo", &[]);
        assert_eq!(got, format!("{PREFIX}203.0.113.1\tpodFoo.domainFoo\tpodFoo\nfd00::6\tpodFoo.domainFoo\tpodFoo\n"));
        assert_eq!(managed_content(&ips, "podFoo", "", &[]), format!("{PREFIX}203.0.113.1\tpodFoo\nfd00::6\tpodFoo\n"));
    }

    #[test]
    fn node_content_copies_the_node_file_under_its_own_header() {
        let node = b"127.0.0.1\tlocalhost\n::1\tlocalhost\n10.0.0.5\tnode-a\n";
        let got = node_content(node, &[]);
        assert_eq!(
            String::from_utf8(got).unwrap(),
            "# Kubernetes-managed hosts file (host network).\n127.0.0.1\tlocalhost\n::1\tlocalhost\n10.0.0.5\tnode-a\n"
        );
        let got = node_content(node, &[alias("1.2.3.4", &["a", "b"])]);
        assert_eq!(
            String::from_utf8(got).unwrap(),
            "# Kubernetes-managed hosts file (host network).\n127.0.0.1\tlocalhost\n::1\tlocalhost\n10.0.0.5\tnode-a\n\
             \n# Entries added by HostAliases.\n1.2.3.4\ta\tb\n"
        );
    }

    #[test]
    fn hostname_is_the_spec_hostname_or_the_pod_name_and_the_domain_needs_a_subdomain() {
        let p = pod(serde_json::json!({"metadata": {"name": "web", "namespace": "ns"}, "spec": {"containers": []}}));
        assert_eq!(hostname_and_domain(&p, "cluster.local"), ("web".into(), String::new()));
        let p = pod(serde_json::json!({"metadata": {"name": "web", "namespace": "ns"},
            "spec": {"hostname": "h", "subdomain": "sub", "containers": []}}));
        assert_eq!(hostname_and_domain(&p, "cluster.local"), ("h".into(), "sub.ns.svc.cluster.local".into()));
        // A subdomain without a hostname: the pod's name with the FQDN.
        let p = pod(serde_json::json!({"metadata": {"name": "web", "namespace": "ns"},
            "spec": {"subdomain": "sub", "containers": []}}));
        assert_eq!(hostname_and_domain(&p, "example.org"), ("web".into(), "sub.ns.svc.example.org".into()));
        // Longer than 63: cut, then trailing '-' and '.' dropped.
        let long = format!("{}-.x", "a".repeat(61));
        let p = pod(serde_json::json!({"metadata": {"name": long, "namespace": "ns"}, "spec": {"containers": []}}));
        assert_eq!(hostname_and_domain(&p, "cluster.local").0, "a".repeat(61));
    }

    #[test]
    fn the_file_is_mounted_read_write_unless_the_container_mounts_etc_hosts_or_the_pod_has_no_ip() {
        let dir = tempfile::tempdir().unwrap();
        let p = pod(serde_json::json!({"metadata": {"name": "web", "namespace": "ns", "uid": "u"},
            "spec": {"hostAliases": [{"ip": "1.2.3.4", "hostnames": ["a"]}], "containers": [
                {"name": "plain"},
                {"name": "own", "volumeMounts": [{"name": "v", "mountPath": "/etc/hosts"}]},
                {"name": "near", "volumeMounts": [{"name": "v", "mountPath": "/etc/hosts-original"}]}]}}));
        let cs = &p.spec.as_ref().unwrap().containers;
        let ips = ["10.1.0.7".to_string()];
        let m = mount(&p, &cs[0], &ips, dir.path(), "cluster.local").unwrap().unwrap();
        let file = dir.path().join("etc-hosts");
        assert_eq!(m.container_path, "/etc/hosts");
        assert_eq!(m.host_path, file.display().to_string());
        assert!(!m.readonly && m.selinux_relabel);
        assert_eq!(m.propagation, api::MountPropagation::PropagationPrivate as i32);
        let want = format!("{PREFIX}10.1.0.7\tweb\n\n# Entries added by HostAliases.\n1.2.3.4\ta\n");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), want);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o644);
        assert!(mount(&p, &cs[1], &ips, dir.path(), "cluster.local").unwrap().is_none());
        assert!(mount(&p, &cs[2], &ips, dir.path(), "cluster.local").unwrap().is_some());
        assert!(mount(&p, &cs[0], &[], dir.path(), "cluster.local").unwrap().is_none());
    }

    #[test]
    fn a_host_network_pod_gets_the_node_file_with_its_aliases() {
        let dir = tempfile::tempdir().unwrap();
        let node = dir.path().join("node-hosts");
        std::fs::write(&node, "127.0.0.1 localhost\n").unwrap();
        let p = pod(serde_json::json!({"metadata": {"name": "web", "namespace": "ns"},
            "spec": {"hostNetwork": true, "hostAliases": [{"ip": "1.2.3.4", "hostnames": ["a", "b"]}],
                "containers": []}}));
        let file = dir.path().join("pod").join("etc-hosts");
        ensure_file(&file, &node, &p, &["192.0.2.1".into()], "cluster.local").unwrap();
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "# Kubernetes-managed hosts file (host network).\n127.0.0.1 localhost\n\n# Entries added by HostAliases.\n1.2.3.4\ta\tb\n"
        );
        let missing = ensure_file(&file, &dir.path().join("none"), &p, &["192.0.2.1".into()], "cluster.local");
        assert!(matches!(missing, Err(Error::ReadNode { .. })));
    }
}
