//! The nested parts of `KubeletConfiguration`: server authentication and authorization,
//! logging, tracing, taints, memory reservations and the smaller option groups.
//! Every struct rejects unknown fields and fills missing ones with the upstream default.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::duration::{self, Duration};
use crate::quantity::Quantity;

/// `authentication`: how requests to the kubelet's server are authenticated.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubeletAuthentication {
    pub x509: KubeletX509Authentication,
    pub webhook: KubeletWebhookAuthentication,
    pub anonymous: KubeletAnonymousAuthentication,
}

/// `authentication.x509`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubeletX509Authentication {
    /// PEM bundle of CAs whose client certificates are accepted. Default "".
    #[serde(rename = "clientCAFile")]
    pub client_ca_file: String,
}

/// `authentication.webhook`: bearer tokens checked with TokenReview.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubeletWebhookAuthentication {
    /// Default true (the flag's default is false).
    pub enabled: bool,
    /// Default 2m.
    #[serde(rename = "cacheTTL")]
    pub cache_ttl: Duration,
}

impl Default for KubeletWebhookAuthentication {
    fn default() -> Self {
        Self { enabled: true, cache_ttl: Duration::from_mins(2) }
    }
}

/// `authentication.anonymous`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubeletAnonymousAuthentication {
    /// Default false (the flag's default is true).
    pub enabled: bool,
}

/// `authorization`: how authenticated requests are authorized.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubeletAuthorization {
    /// `AlwaysAllow` or `Webhook` (SubjectAccessReview). Default `Webhook`.
    pub mode: String,
    pub webhook: KubeletWebhookAuthorization,
}

impl Default for KubeletAuthorization {
    fn default() -> Self {
        Self { mode: "Webhook".to_string(), webhook: KubeletWebhookAuthorization::default() }
    }
}

/// `authorization.webhook`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubeletWebhookAuthorization {
    /// Default 5m.
    #[serde(rename = "cacheAuthorizedTTL")]
    pub cache_authorized_ttl: Duration,
    /// Default 30s.
    #[serde(rename = "cacheUnauthorizedTTL")]
    pub cache_unauthorized_ttl: Duration,
}

impl Default for KubeletWebhookAuthorization {
    fn default() -> Self {
        Self { cache_authorized_ttl: Duration::from_mins(5), cache_unauthorized_ttl: Duration::from_secs(30) }
    }
}

/// `memorySwap`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct MemorySwapConfiguration {
    /// "", `NoSwap` or `LimitedSwap`.
    pub swap_behavior: String,
}

/// `crashLoopBackOff`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct CrashLoopBackOffConfig {
    /// Cap of the container restart backoff, 1s..300s. Defaults to 300s only when the
    /// KubeletCrashLoopBackOffMax feature gate is on; otherwise it must stay unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_container_restart_period: Option<Duration>,
}

/// `logging` (component-base LoggingConfiguration v1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct LoggingConfiguration {
    /// `text` or `json`. Default `text`.
    pub format: String,
    /// Maximum time between log flushes; a duration string or integer nanoseconds. Default 5s.
    #[serde(deserialize_with = "duration::string_or_nanos")]
    pub flush_frequency: Duration,
    /// Log verbosity threshold (the `-v` flag). Default 0.
    pub verbosity: u32,
    /// Per-file verbosity overrides. Upstream only takes a list of `{filePattern, verbosity}`;
    /// the klog flag spelling `"pattern=N,other=M"` (or `""`) is accepted too, as the seed
    /// examples use it.
    #[serde(deserialize_with = "vmodule")]
    pub vmodule: Vec<VModuleItem>,
    pub options: FormatOptions,
}

impl Default for LoggingConfiguration {
    fn default() -> Self {
        Self {
            format: "text".to_string(),
            flush_frequency: Duration::from_secs(5),
            verbosity: 0,
            vmodule: Vec::new(),
            options: FormatOptions::default(),
        }
    }
}

/// One `logging.vmodule` entry.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct VModuleItem {
    pub file_pattern: String,
    pub verbosity: u32,
}

fn vmodule<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<VModuleItem>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        List(Vec<VModuleItem>),
        Flag(String),
        Null(()),
    }
    match Raw::deserialize(d)? {
        Raw::List(items) => Ok(items),
        Raw::Null(()) => Ok(Vec::new()),
        Raw::Flag(text) => text
            .split(',')
            .filter(|part| !part.trim().is_empty())
            .map(|part| {
                let (pattern, level) = part
                    .split_once('=')
                    .ok_or_else(|| serde::de::Error::custom(format!("vmodule entry {part:?} is not pattern=N")))?;
                let verbosity = level
                    .trim()
                    .parse()
                    .map_err(|_| serde::de::Error::custom(format!("vmodule entry {part:?} is not pattern=N")))?;
                Ok(VModuleItem { file_pattern: pattern.trim().to_string(), verbosity })
            })
            .collect(),
    }
}

/// `logging.options`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FormatOptions {
    pub text: OutputRoutingOptions,
    pub json: OutputRoutingOptions,
}

/// `logging.options.text` / `logging.options.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct OutputRoutingOptions {
    pub split_stream: bool,
    /// Default "0" (no buffering).
    pub info_buffer_size: Quantity,
}

impl Default for OutputRoutingOptions {
    fn default() -> Self {
        Self { split_stream: false, info_buffer_size: Quantity::from_units(0) }
    }
}

/// One `shutdownGracePeriodByPodPriority` entry.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ShutdownGracePeriodByPodPriority {
    pub priority: i32,
    pub shutdown_grace_period_seconds: i64,
}

/// One `reservedMemory` entry: memory held back from the memory manager on a NUMA node.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct MemoryReservation {
    pub numa_node: i32,
    /// `memory` and `hugepages-<size>` quantities.
    pub limits: BTreeMap<String, Quantity>,
}

/// A node taint (`registerWithTaints`), as core/v1 Taint.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Taint {
    pub key: String,
    pub value: String,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: String,
    /// Must be unset in configuration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_added: Option<String>,
}

/// `tracing` (component-base TracingConfiguration v1).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct TracingConfiguration {
    /// OTLP collector endpoint, e.g. `localhost:4317`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Spans sampled per million, 0..=1000000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sampling_rate_per_million: Option<i32>,
}

/// `userNamespaces`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct UserNamespaces {
    /// UIDs/GIDs mapped per pod; a multiple of 65536. Default 65536 when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ids_per_pod: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_sections_keep_upstream_defaults() {
        let a: KubeletAuthentication = serde_yaml::from_str("x509:\n  clientCAFile: /ca.crt\n").unwrap();
        assert_eq!(a.x509.client_ca_file, "/ca.crt");
        assert!(a.webhook.enabled);
        assert_eq!(a.webhook.cache_ttl, Duration::from_mins(2));
        assert!(!a.anonymous.enabled);
    }

    #[test]
    fn vmodule_accepts_list_or_flag_spelling() {
        let l: LoggingConfiguration = serde_yaml::from_str("vmodule:\n- filePattern: pod*\n  verbosity: 4\n").unwrap();
        assert_eq!(l.vmodule[0].file_pattern, "pod*");
        let l: LoggingConfiguration = serde_yaml::from_str("vmodule: \"pod*=4,cri=2\"").unwrap();
        assert_eq!(l.vmodule.len(), 2);
        assert_eq!(l.vmodule[1].verbosity, 2);
        let l: LoggingConfiguration = serde_yaml::from_str("vmodule: \"\"").unwrap();
        assert!(l.vmodule.is_empty());
        assert!(serde_yaml::from_str::<LoggingConfiguration>("vmodule: nonsense").is_err());
    }

    #[test]
    fn unknown_nested_field_is_rejected() {
        let err = serde_yaml::from_str::<KubeletAuthorization>("mode: Webhook\nmodes: x\n").unwrap_err().to_string();
        assert!(err.contains("unknown field `modes`"), "{err}");
    }
}
