//! Small syntax checks used by validation: cpusets, Kubernetes names and label values, TLS
//! names, IP addresses and clean absolute paths.

use std::net::IpAddr;

/// Go `crypto/tls` cipher suite names (secure and insecure) accepted by `--tls-cipher-suites`.
pub const TLS_CIPHER_SUITES: &[&str] = &[
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_RSA_WITH_RC4_128_SHA",
];

/// Names accepted by `--tls-min-version`.
pub const TLS_VERSIONS: &[&str] = &["VersionTLS10", "VersionTLS11", "VersionTLS12", "VersionTLS13"];

/// Parses a Linux cpuset list such as `0-1,4,6-7` into sorted, de-duplicated CPU ids.
pub fn parse_cpuset(text: &str) -> Result<Vec<u32>, String> {
    let mut cpus = Vec::new();
    if text.is_empty() {
        return Ok(cpus);
    }
    for part in text.split(',') {
        let range = match part.split_once('-') {
            Some((a, b)) => (a.parse::<u32>(), b.parse::<u32>()),
            None => (part.parse::<u32>(), part.parse::<u32>()),
        };
        match range {
            (Ok(a), Ok(b)) if a <= b => cpus.extend(a..=b),
            (Ok(a), Ok(b)) => return Err(format!("range {a}-{b} is backwards")),
            _ => return Err(format!("{part:?} is not a cpu number or range")),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

fn is_dns1123_label_or_name_part(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// A qualified name (`prefix/name` or `name`), as label and taint keys.
pub fn is_qualified_name(s: &str) -> bool {
    match s.split_once('/') {
        Some((prefix, name)) => is_dns1123_subdomain(prefix) && is_dns1123_label_or_name_part(name, 63),
        None => is_dns1123_label_or_name_part(s, 63),
    }
}

/// A label value: empty, or a name part of at most 63 characters.
pub fn is_label_value(s: &str) -> bool {
    s.is_empty() || is_dns1123_label_or_name_part(s, 63)
}

pub fn is_ip(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
}

/// Absolute and already normalized (no `.`/`..`/empty segments, no trailing slash).
pub fn is_clean_absolute_path(s: &str) -> bool {
    if s == "/" {
        return true;
    }
    s.starts_with('/') && !s.ends_with('/') && s[1..].split('/').all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

/// A sysctl name or `prefix*` pattern.
pub fn is_sysctl_pattern(s: &str) -> bool {
    let name = s.strip_suffix('*').unwrap_or(s);
    !name.is_empty()
        && s.len() <= 253
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-' | b'/'))
        && name.as_bytes()[0].is_ascii_lowercase()
}

/// `<major>.<minor>`, as showHiddenMetricsForVersion.
pub fn is_major_minor(s: &str) -> bool {
    match s.split_once('.') {
        Some((a, b)) => {
            !a.is_empty()
                && !b.is_empty()
                && a.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpusets_parse_lists_and_ranges() {
        assert_eq!(parse_cpuset("0-1").unwrap(), vec![0, 1]);
        assert_eq!(parse_cpuset("0-1,4,6-7,1").unwrap(), vec![0, 1, 4, 6, 7]);
        assert_eq!(parse_cpuset("").unwrap(), Vec::<u32>::new());
        assert!(parse_cpuset("3-1").is_err());
        assert!(parse_cpuset("a").is_err());
        assert!(parse_cpuset("1,,2").is_err());
    }

    #[test]
    fn names_and_values() {
        assert!(is_qualified_name("node.kubernetes.io/not-ready"));
        assert!(is_qualified_name("dedicated"));
        assert!(!is_qualified_name("-bad"));
        assert!(!is_qualified_name("Bad.Prefix/x"));
        assert!(!is_qualified_name(""));
        assert!(is_label_value(""));
        assert!(is_label_value("gpu_1.x"));
        assert!(!is_label_value("a b"));
    }

    #[test]
    fn paths_ips_and_versions() {
        assert!(is_clean_absolute_path("/var/log/pods"));
        assert!(is_clean_absolute_path("/"));
        assert!(!is_clean_absolute_path("var/log"));
        assert!(!is_clean_absolute_path("/var/log/"));
        assert!(!is_clean_absolute_path("/var/../log"));
        assert!(!is_clean_absolute_path("/var//log"));
        assert!(is_ip("10.96.0.10") && is_ip("::1") && !is_ip("10.96.0"));
        assert!(is_major_minor("1.31") && !is_major_minor("1.31.0") && !is_major_minor("v1"));
        assert!(is_sysctl_pattern("kernel.shm*") && is_sysctl_pattern("net.ipv4.route.min_pmtu"));
        assert!(!is_sysctl_pattern("*"));
    }
}
