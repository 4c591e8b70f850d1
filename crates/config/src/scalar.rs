//! Lenient string decoding. The upstream YAML decoder (sigs.k8s.io/yaml) turns any scalar into
//! a string when the Go field is a string, so `cpu: 2`, `full-pcpus-only: true` and
//! `showHiddenMetricsForVersion: 1.16` are all accepted there. These helpers do the same.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserializer;
use serde::de::{self, Visitor};

/// Visitor that renders any scalar (string, integer, float, bool) as text.
pub(crate) struct ScalarText;

impl<'de> Visitor<'de> for ScalarText {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or a number")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }
}

/// A string field that also accepts a bare number or bool.
pub(crate) fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    d.deserialize_any(ScalarText)
}

/// A `map[string]string` field whose values may be written as bare numbers or bools.
pub(crate) fn string_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    struct MapVisitor;
    impl<'de> Visitor<'de> for MapVisitor {
        type Value = BTreeMap<String, String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map of strings")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(BTreeMap::new())
        }
        fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(key) = map.next_key::<String>()? {
                let value = map.next_value::<Lenient>()?.0;
                out.insert(key, value);
            }
            Ok(out)
        }
    }
    d.deserialize_any(MapVisitor)
}

struct Lenient(String);

impl<'de> de::Deserialize<'de> for Lenient {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarText).map(Lenient)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct T {
        #[serde(deserialize_with = "string")]
        s: String,
        #[serde(deserialize_with = "string_map")]
        m: BTreeMap<String, String>,
    }

    #[test]
    fn scalars_become_strings_like_upstream_yaml() {
        let t: T = serde_yaml::from_str("s: 1.16\nm:\n  a: true\n  b: 2\n  c: x\n").unwrap();
        assert_eq!(t.s, "1.16");
        assert_eq!(t.m["a"], "true");
        assert_eq!(t.m["b"], "2");
        assert_eq!(t.m["c"], "x");
    }

    #[test]
    fn nested_values_are_still_rejected() {
        assert!(serde_yaml::from_str::<T>("s: x\nm:\n  a: [1]\n").is_err());
    }
}
