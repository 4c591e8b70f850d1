//! Which configured fields the kubelet does not act on yet, so the binary can say so once.
//!
//! Each top-level field is compared (as JSON) with `KubeletConfiguration::default()`; the field
//! names come from serde itself, so nothing here lists the fields a second time.

use serde::de::{self, Deserialize, Deserializer, Visitor};

use crate::types::KubeletConfiguration;

/// Fields that describe the document rather than the kubelet.
const TYPE_META: &[&str] = &["apiVersion", "kind"];

/// The camelCase names of `KubeletConfiguration`'s top-level fields, in declaration order.
pub fn field_names() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    let _ = KubeletConfiguration::deserialize(FieldNames(&mut fields));
    fields
}

/// Names of fields set to a non-default value that are not in `implemented`, in declaration
/// order. Nested sections count as one field (`authentication`, `logging`, …).
pub fn unsupported_fields(cfg: &KubeletConfiguration, implemented: &[&str]) -> Vec<&'static str> {
    let value = serde_json::to_value(cfg).unwrap_or_default();
    let default = serde_json::to_value(KubeletConfiguration::default()).unwrap_or_default();
    field_names()
        .iter()
        .copied()
        .filter(|name| !TYPE_META.contains(name) && !implemented.contains(name))
        .filter(|name| value.get(name) != default.get(name))
        .collect()
}

/// A deserializer that records the field list serde passes to `deserialize_struct`, then stops.
struct FieldNames<'a>(&'a mut &'static [&'static str]);

#[derive(Debug)]
struct Stop;

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("field names collected")
    }
}
impl std::error::Error for Stop {}
impl de::Error for Stop {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Stop
    }
}

impl<'de> Deserializer<'de> for FieldNames<'_> {
    type Error = Stop;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        Err(Stop)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Stop> {
        *self.0 = fields;
        Err(Stop)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::duration::Duration;

    #[test]
    fn field_names_come_from_serde() {
        let names = field_names();
        assert!(names.len() > 130, "{}", names.len());
        for name in ["apiVersion", "staticPodURL", "clusterDNS", "imageGCHighThresholdPercent", "nodeIP", "cniBinDir"] {
            assert!(names.contains(&name), "{name}");
        }
    }

    #[test]
    fn default_config_has_nothing_unsupported() {
        assert!(unsupported_fields(&KubeletConfiguration::default(), &[]).is_empty());
    }

    #[test]
    fn changed_fields_not_implemented_are_reported_once() {
        let mut cfg = KubeletConfiguration {
            max_pods: 50,
            cpu_manager_policy: "static".into(),
            sync_frequency: Duration::from_secs(30),
            ..Default::default()
        };
        cfg.authentication.webhook.enabled = false;
        cfg.feature_gates.insert("Foo".into(), true);
        let unsupported = unsupported_fields(&cfg, &["maxPods", "syncFrequency"]);
        assert_eq!(unsupported, vec!["authentication", "cpuManagerPolicy", "featureGates"]);
    }
}
