//! The sysctl admit handler (upstream's pkg/kubelet/sysctl): a pod's `securityContext.sysctls`
//! must each be allowlisted — the safe set for this kernel plus `allowedUnsafeSysctls` (names or
//! `prefix*` patterns) — and a namespaced one is refused when the pod shares that namespace with
//! the host. Refusals are `SysctlForbidden` with upstream's messages.

use super::{Handler, Rejection};
use k8s_openapi::api::core::v1::Pod;
use std::collections::BTreeMap;
use std::fmt;

/// The kernel namespace a sysctl lives in (upstream's NamespacedBy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespace {
    Ipc,
    Net,
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ipc => "ipc",
            Self::Net => "net",
        })
    }
}

/// The namespace of `name`, None when it is not known to be namespaced: `kernel.sem` exactly,
/// `kernel.shm*`, `kernel.msg*`, `fs.mqueue.*` (ipc) and `net.*` (net).
pub fn namespaced_by(name: &str) -> Option<Namespace> {
    if name == "kernel.sem" {
        return Some(Namespace::Ipc);
    }
    [
        ("kernel.shm", Namespace::Ipc),
        ("kernel.msg", Namespace::Ipc),
        ("fs.mqueue.", Namespace::Ipc),
        ("net.", Namespace::Net),
    ]
    .into_iter()
    .find_map(|(prefix, ns)| name.starts_with(prefix).then_some(ns))
}

/// `kernel/msgmax` as `kernel.msgmax` (component-helpers' NormalizeName): when the first separator
/// is `/`, dots and slashes swap (`net/ipv4/conf/eno2.100/rp_filter` →
/// `net.ipv4.conf.eno2/100.rp_filter`).
pub fn normalize(name: &str) -> String {
    match name.find(['.', '/']) {
        Some(i) if name.as_bytes()[i] == b'/' => name
            .chars()
            .map(|c| match c {
                '.' => '/',
                '/' => '.',
                c => c,
            })
            .collect(),
        _ => name.to_string(),
    }
}

/// Upstream's safe sysctls with the kernel (major, minor) that namespaced each (none: always).
const SAFE: &[(&str, Option<(u32, u32)>)] = &[
    ("kernel.shm_rmid_forced", None),
    ("net.ipv4.ip_local_port_range", None),
    ("net.ipv4.tcp_syncookies", None),
    ("net.ipv4.ping_group_range", None),
    ("net.ipv4.ip_unprivileged_port_start", None),
    ("net.ipv4.ip_local_reserved_ports", Some((3, 16))),
    ("net.ipv4.tcp_keepalive_time", Some((4, 5))),
    ("net.ipv4.tcp_fin_timeout", Some((4, 6))),
    ("net.ipv4.tcp_keepalive_intvl", Some((4, 5))),
    ("net.ipv4.tcp_keepalive_probes", Some((4, 5))),
    ("net.ipv4.tcp_rmem", None),
    ("net.ipv4.tcp_wmem", None),
];

/// The safe set on a kernel of this version (SafeSysctlAllowlist): one that needs a newer kernel,
/// or any version when it is unknown, is left out.
pub fn safe_sysctls(kernel: Option<(u32, u32)>) -> Vec<&'static str> {
    SAFE.iter()
        .filter(|(_, min)| min.is_none_or(|min| kernel.is_some_and(|k| k >= min)))
        .map(|(name, _)| *name)
        .collect()
}

/// This host's kernel (major, minor), from `/proc/sys/kernel/osrelease`.
pub fn host_kernel() -> Option<(u32, u32)> {
    parse_kernel(&std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?)
}

fn parse_kernel(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("allowedUnsafeSysctls: {0:?}: not known to be namespaced")]
    NotNamespaced(String),
}

/// The allowlist (upstream's patternAllowlist): exact names and `prefix*` patterns, each with
/// its namespace.
#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    sysctls: BTreeMap<String, Namespace>,
    prefixes: BTreeMap<String, Namespace>,
}

impl Allowlist {
    /// From names and `prefix*` patterns (NewAllowlist): each must be known to be namespaced. The
    /// kubelet builds it from the safe set plus `allowedUnsafeSysctls`.
    pub fn new<S: AsRef<str>>(patterns: impl IntoIterator<Item = S>) -> Result<Self, Error> {
        let mut w = Self::default();
        for p in patterns {
            let p = normalize(p.as_ref());
            let (name, map) = match p.strip_suffix('*') {
                Some(prefix) => (prefix, &mut w.prefixes),
                None => (p.as_str(), &mut w.sysctls),
            };
            let ns = namespaced_by(name).ok_or_else(|| Error::NotNamespaced(p.clone()))?;
            map.insert(name.to_string(), ns);
        }
        Ok(w)
    }

    /// Why `sysctl` may not be set by a pod with these host namespaces (validateSysctl's message),
    /// if it may not.
    pub fn check(&self, sysctl: &str, host_network: bool, host_ipc: bool) -> Result<(), String> {
        let sysctl = normalize(sysctl);
        let ns = self
            .sysctls
            .get(&sysctl)
            .or_else(|| self.prefixes.iter().find_map(|(p, ns)| sysctl.starts_with(p.as_str()).then_some(ns)));
        match ns {
            None => Err(format!("{sysctl:?} not allowlisted")),
            Some(ns @ Namespace::Ipc) if host_ipc => Err(format!("{sysctl:?} not allowed with host {ns} enabled")),
            Some(ns @ Namespace::Net) if host_network => Err(format!("{sysctl:?} not allowed with host {ns} enabled")),
            Some(_) => Ok(()),
        }
    }
}

impl Handler for Allowlist {
    fn admit(&self, pod: &Pod, _admitted: &[&Pod]) -> Result<(), Rejection> {
        let Some(spec) = pod.spec.as_ref() else { return Ok(()) };
        let sysctls = spec.security_context.as_ref().and_then(|s| s.sysctls.as_deref()).unwrap_or_default();
        let (host_network, host_ipc) = (spec.host_network.unwrap_or(false), spec.host_ipc.unwrap_or(false));
        // The first refused sysctl, in the pod's order.
        sysctls.iter().try_for_each(|s| {
            self.check(&s.name, host_network, host_ipc).map_err(|why| Rejection {
                reason: "SysctlForbidden".into(),
                message: format!("forbidden sysctl: {why}"),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_list(unsafe_: &[&str]) -> Allowlist {
        Allowlist::new(safe_sysctls(Some((6, 8))).into_iter().chain(unsafe_.iter().copied())).unwrap()
    }

    #[test]
    fn the_safe_set_depends_on_the_kernel() {
        let new = safe_sysctls(Some((6, 8)));
        assert_eq!(new.len(), 12);
        let old = safe_sysctls(Some((4, 5)));
        assert!(old.contains(&"net.ipv4.tcp_keepalive_time") && !old.contains(&"net.ipv4.tcp_fin_timeout"));
        let unknown = safe_sysctls(None);
        assert!(unknown.contains(&"net.ipv4.tcp_syncookies") && !unknown.contains(&"net.ipv4.ip_local_reserved_ports"));
        assert_eq!(parse_kernel("6.8.0-45-generic\n"), Some((6, 8)));
        assert_eq!(parse_kernel("5.15.153.1-microsoft-standard-WSL2"), Some((5, 15)));
    }

    #[test]
    fn safe_and_wildcard_sysctls_are_allowed_and_others_refused() {
        let w = node_list(&["kernel.msg*", "net.core.somaxconn"]);
        assert_eq!(w.check("net.ipv4.tcp_syncookies", false, false), Ok(()));
        assert_eq!(w.check("kernel.msgmax", false, false), Ok(()));
        assert_eq!(w.check("kernel.msgmnb", false, false), Ok(()));
        assert_eq!(w.check("net.core.somaxconn", false, false), Ok(()));
        assert_eq!(w.check("kernel.shmmax", false, false), Err(r#""kernel.shmmax" not allowlisted"#.into()));
        assert_eq!(
            w.check("net.core.somaxconn2", false, false),
            Err(r#""net.core.somaxconn2" not allowlisted"#.into())
        );
        // Slash-separated names are normalised first.
        assert_eq!(w.check("kernel/msgmax", false, false), Ok(()));
        assert_eq!(normalize("net/ipv4/conf/eno2.100/rp_filter"), "net.ipv4.conf.eno2/100.rp_filter");
        assert_eq!(normalize("net.ipv4.conf.eno2/100.rp_filter"), "net.ipv4.conf.eno2/100.rp_filter");
    }

    #[test]
    fn namespaced_sysctls_are_refused_when_shared_with_the_host() {
        let w = node_list(&["kernel.msg*", "kernel.sem", "fs.mqueue.*"]);
        let net = r#""net.ipv4.tcp_syncookies" not allowed with host net enabled"#;
        assert_eq!(w.check("net.ipv4.tcp_syncookies", true, false), Err(net.into()));
        assert_eq!(w.check("net.ipv4.tcp_syncookies", false, true), Ok(()));
        let ipc = r#""kernel.msgmax" not allowed with host ipc enabled"#;
        assert_eq!(w.check("kernel.msgmax", false, true), Err(ipc.into()));
        assert!(w.check("kernel.shm_rmid_forced", false, true).is_err());
        assert!(w.check("kernel.sem", false, true).is_err());
        assert!(w.check("fs.mqueue.msg_max", false, true).is_err());
        assert_eq!(w.check("kernel.msgmax", true, false), Ok(()));
    }

    #[test]
    fn unnamespaced_patterns_are_refused_at_startup() {
        assert_eq!(Allowlist::new(["kernel.panic"]).unwrap_err(), Error::NotNamespaced("kernel.panic".into()));
        assert_eq!(Allowlist::new(["vm.*"]).unwrap_err(), Error::NotNamespaced("vm.*".into()));
        assert!(Allowlist::new(["net.*", "kernel.shm*", "kernel.sem"]).is_ok());
    }

    #[test]
    fn the_handler_refuses_the_first_forbidden_sysctl() {
        let w = node_list(&[]);
        let pod = |sysctls: serde_json::Value, host_network: bool| -> Pod {
            serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}, "spec": {
                "containers": [{"name": "c", "image": "i"}], "hostNetwork": host_network,
                "securityContext": {"sysctls": sysctls}}}))
            .unwrap()
        };
        let ok = serde_json::json!([{"name": "net.ipv4.ip_local_port_range", "value": "1024 65000"}]);
        assert!(w.admit(&pod(ok.clone(), false), &[]).is_ok());
        let r = w.admit(&pod(ok, true), &[]).unwrap_err();
        assert_eq!(r.reason, "SysctlForbidden");
        assert_eq!(r.message, r#"forbidden sysctl: "net.ipv4.ip_local_port_range" not allowed with host net enabled"#);
        let bad = serde_json::json!([{"name": "kernel.msgmax", "value": "1"}, {"name": "kernel.shmmax", "value": "1"}]);
        let r = w.admit(&pod(bad, false), &[]).unwrap_err();
        assert_eq!(r.message, r#"forbidden sysctl: "kernel.msgmax" not allowlisted"#);
    }
}
