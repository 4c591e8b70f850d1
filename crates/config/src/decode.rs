//! Decoding a configuration file: JSON (content starting with `{`) or YAML, strict about
//! unknown fields (except inside `featureGates`), with `apiVersion` and `kind` required and
//! checked, then upstream defaulting applied.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use crate::types::{API_VERSION, KIND, KubeletConfiguration};

/// Errors from decoding configuration text. Every variant names the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the configuration is empty")]
    Empty,
    #[error("unknown field {field:?}{}", Line(*line))]
    UnknownField { field: String, line: Option<usize> },
    #[error("{field}: {message}{}", Line(*line))]
    Field { field: String, message: String, line: Option<usize> },
    #[error("{message}{}", Line(*line))]
    Syntax { message: String, line: Option<usize> },
    #[error("{field}: required, must be {expected:?}")]
    MissingTypeMeta { field: &'static str, expected: &'static str },
    #[error("{field}: {found:?}: must be {expected:?}")]
    WrongTypeMeta { field: &'static str, found: String, expected: &'static str },
}

/// Renders " (line N)" when a line is known.
struct Line(Option<usize>);

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(line) => write!(f, " (line {line})"),
            None => Ok(()),
        }
    }
}

/// Whether the text is JSON rather than YAML.
fn looks_like_json(text: &str) -> bool {
    text.trim_start().starts_with('{')
}

impl KubeletConfiguration {
    /// Decodes a YAML or JSON `KubeletConfiguration` and applies upstream defaults. Validation
    /// is separate (`validate`), so flags can be applied in between.
    pub fn from_text(text: &str) -> Result<Self, DecodeError> {
        if text.trim().is_empty() {
            return Err(DecodeError::Empty);
        }
        let (mut cfg, keys) = if looks_like_json(text) { decode_json(text)? } else { decode_yaml(text)? };
        check_type_meta(&cfg, &keys)?;
        cfg.fill_unset(&|key| keys.contains(key));
        Ok(cfg)
    }
}

impl FromStr for KubeletConfiguration {
    type Err = DecodeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KubeletConfiguration::from_text(s)
    }
}

fn decode_yaml(text: &str) -> Result<(KubeletConfiguration, BTreeSet<String>), DecodeError> {
    let de = serde_yaml::Deserializer::from_str(text);
    let cfg = serde_path_to_error::deserialize(de).map_err(|e| {
        let line = e.inner().location().map(|l| l.line());
        classify(e.path().to_string(), e.inner().to_string(), line)
    })?;
    let raw: serde_yaml::Value = serde_yaml::from_str(text)
        .map_err(|e| DecodeError::Syntax { message: e.to_string(), line: e.location().map(|l| l.line()) })?;
    let keys = match raw {
        serde_yaml::Value::Mapping(map) => map.keys().filter_map(|k| k.as_str().map(str::to_string)).collect(),
        _ => BTreeSet::new(),
    };
    Ok((cfg, keys))
}

fn decode_json(text: &str) -> Result<(KubeletConfiguration, BTreeSet<String>), DecodeError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let cfg = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let line = Some(e.inner().line()).filter(|l| *l > 0);
        classify(e.path().to_string(), e.inner().to_string(), line)
    })?;
    de.end().map_err(|e| classify(String::new(), e.to_string(), Some(e.line())))?;
    let raw: serde_json::Value =
        serde_json::from_str(text).map_err(|e| DecodeError::Syntax { message: e.to_string(), line: Some(e.line()) })?;
    let keys = raw.as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default();
    Ok((cfg, keys))
}

/// Turns a serde error (with its field path) into a `DecodeError`.
fn classify(path: String, message: String, line: Option<usize>) -> DecodeError {
    // Drop the decoder's own " at line N column M" and "path: " decorations.
    let mut message = match message.rfind(" at line ") {
        Some(at) => message[..at].to_string(),
        None => message,
    };
    let parent = path.rsplit_once(['.', '[']).map_or("", |(p, _)| p);
    for prefix in [path.as_str(), parent] {
        if let Some(rest) =
            message.strip_prefix(prefix).filter(|_| !prefix.is_empty()).and_then(|rest| rest.strip_prefix(": "))
        {
            message = rest.to_string();
            break;
        }
    }
    if message.starts_with("unknown field `") {
        return DecodeError::UnknownField { field: path, line };
    }
    if path.is_empty() || path == "." {
        DecodeError::Syntax { message, line }
    } else {
        DecodeError::Field { field: path, message, line }
    }
}

fn check_type_meta(cfg: &KubeletConfiguration, keys: &BTreeSet<String>) -> Result<(), DecodeError> {
    for (field, found, expected) in [("apiVersion", &cfg.api_version, API_VERSION), ("kind", &cfg.kind, KIND)] {
        if !keys.contains(field) {
            return Err(DecodeError::MissingTypeMeta { field, expected });
        }
        if found != expected {
            return Err(DecodeError::WrongTypeMeta { field, found: found.clone(), expected });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::duration::Duration;

    const HEAD: &str = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n";

    fn yaml(body: &str) -> Result<KubeletConfiguration, DecodeError> {
        KubeletConfiguration::from_text(&format!("{HEAD}{body}"))
    }

    #[test]
    fn minimal_file_decodes_to_defaults() {
        assert_eq!(yaml("").unwrap(), KubeletConfiguration::default());
    }

    #[test]
    fn unknown_field_rejected_with_its_name() {
        let err = yaml("maxPods: 10\nmaxPodz: 11\n").unwrap_err();
        assert_eq!(err, DecodeError::UnknownField { field: "maxPodz".into(), line: Some(4) });
        assert_eq!(err.to_string(), "unknown field \"maxPodz\" (line 4)");
    }

    #[test]
    fn unknown_nested_field_is_named_with_its_path() {
        let err = yaml("authentication:\n  webhook:\n    enabeld: true\n").unwrap_err();
        assert_eq!(err.to_string(), "unknown field \"authentication.webhook.enabeld\" (line 5)");
        let err = KubeletConfiguration::from_text(
            r#"{"apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
                "authorization": {"webhook": {"cacheTTL": "1s"}}}"#,
        )
        .unwrap_err();
        assert!(
            matches!(&err, DecodeError::UnknownField { field, .. } if field == "authorization.webhook.cacheTTL"),
            "{err}"
        );
    }

    #[test]
    fn feature_gates_accept_any_name() {
        let cfg = yaml("featureGates:\n  SomeFutureGate: true\n  Other: false\n").unwrap();
        assert!(cfg.feature_gates["SomeFutureGate"]);
        assert!(!cfg.feature_gates["Other"]);
    }

    #[test]
    fn json_is_detected_and_decoded() {
        let cfg = KubeletConfiguration::from_text(
            r#"{"apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
                "maxPods": 42, "syncFrequency": "30s", "evictionHard": {"memory.available": "1Gi"}}"#,
        )
        .unwrap();
        assert_eq!(cfg.max_pods, 42);
        assert_eq!(cfg.sync_frequency, Duration::from_secs(30));
        assert_eq!(cfg.eviction_hard.len(), 1);
    }

    #[test]
    fn wrong_types_name_the_field() {
        let err = yaml("maxPods: lots\n").unwrap_err();
        assert!(matches!(&err, DecodeError::Field { field, .. } if field == "maxPods"), "{err}");
        assert!(err.to_string().starts_with("maxPods: invalid type"), "{err}");
        let err = yaml("syncFrequency: 10\n").unwrap_err();
        assert!(err.to_string().starts_with("syncFrequency: "), "{err}");
        let err = yaml("systemReserved:\n  memory: 1Gx\n").unwrap_err();
        assert!(err.to_string().contains("1Gx"), "{err}");
    }

    #[test]
    fn api_version_and_kind_are_required_and_checked() {
        let err = KubeletConfiguration::from_text("kind: KubeletConfiguration\n").unwrap_err();
        assert_eq!(err.to_string(), "apiVersion: required, must be \"kubelet.config.k8s.io/v1beta1\"");
        let err =
            KubeletConfiguration::from_text("apiVersion: kubelet.config.k8s.io/v1alpha1\nkind: KubeletConfiguration\n")
                .unwrap_err();
        assert!(matches!(err, DecodeError::WrongTypeMeta { field: "apiVersion", .. }));
        let err =
            KubeletConfiguration::from_text("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: Pod\n").unwrap_err();
        assert_eq!(err.to_string(), "kind: \"Pod\": must be \"KubeletConfiguration\"");
        assert_eq!(KubeletConfiguration::from_text(" \n"), Err(DecodeError::Empty));
    }

    #[test]
    fn explicit_zero_of_pointer_fields_is_kept() {
        let cfg = yaml("healthzPort: 0\nregistryPullQPS: 0\nenableServer: false\nevictionHard: {}\n").unwrap();
        assert_eq!(cfg.healthz_port, 0);
        assert_eq!(cfg.registry_pull_qps, 0);
        assert!(!cfg.enable_server);
        assert!(cfg.eviction_hard.is_empty());
    }

    #[test]
    fn partial_eviction_hard_replaces_the_defaults() {
        let cfg = yaml("evictionHard:\n  memory.available: 1Gi\n").unwrap();
        assert_eq!(cfg.eviction_hard.len(), 1);
    }

    #[test]
    fn serialized_config_decodes_back_to_itself() {
        let cfg = yaml("maxPods: 7\nlogging:\n  verbosity: 3\nsystemReserved:\n  cpu: 500m\n").unwrap();
        let text = serde_yaml::to_string(&cfg).unwrap();
        assert_eq!(KubeletConfiguration::from_text(&text).unwrap(), cfg);
        let json = serde_json::to_string(&cfg).unwrap();
        assert_eq!(KubeletConfiguration::from_text(&json).unwrap(), cfg);
    }
}
