//! configMap volumes (pkg/volume/configmap) and the payload rules secrets share: every key, or
//! only `items` (key → path, per-item mode), `defaultMode` (0644), `optional`.

use super::atomic_writer::{FileProjection, Payload};
use crate::api::objects::Objects;
use k8s_openapi::api::core::v1::KeyToPath;
use std::sync::Arc;

/// The default file mode of configMap, secret, downwardAPI and projected volumes (0644).
pub const DEFAULT_MODE: i32 = 0o644;

/// Key → content of a ConfigMap or Secret.
pub use crate::api::objects::Data;

/// Why a configMap or secret volume (or projection) has no content. `kind` is "configmap" or
/// "secret", as upstream's messages say.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{kind} \"{name}\": {source}")]
    Api { kind: &'static str, name: String, source: crate::api::ApiError },
    #[error("{kind} \"{name}\" not found: no API server to read it from")]
    NoApi { kind: String, name: String },
    #[error("{kind} \"{name}\" not found")]
    NotFound { kind: String, name: String },
    /// `noun` is "config" or "secret".
    #[error("{kind} references non-existent {noun} key: {key}")]
    MissingKey { kind: &'static str, noun: &'static str, key: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A ConfigMap's `data` and `binaryData` (through the node's reader, for the pod `pod_uid`);
/// None when it does not exist.
pub async fn fetch(objects: &Objects, pod_uid: &str, namespace: &str, name: &str) -> Result<Option<Arc<Data>>> {
    objects.config_map(pod_uid, namespace, name).await.map_err(|source| Error::Api {
        kind: "configmap",
        name: name.to_string(),
        source,
    })
}

/// Reads an object for a volume of the pod `pod_uid`: a missing one is an error unless
/// `optional` (then empty). `kind` is "configmap" or "secret", as upstream's messages say.
pub async fn read(
    objects: Option<&Objects>,
    pod_uid: &str,
    kind: &str,
    namespace: &str,
    name: &str,
    optional: bool,
) -> Result<Arc<Data>> {
    let found = match objects {
        Some(objects) if kind == "secret" => super::secret::fetch(objects, pod_uid, namespace, name).await?,
        Some(objects) => fetch(objects, pod_uid, namespace, name).await?,
        None if optional => None,
        None => return Err(Error::NoApi { kind: kind.to_string(), name: name.to_string() }),
    };
    match found {
        Some(d) => Ok(d),
        None if optional => Ok(Arc::default()),
        None => Err(Error::NotFound { kind: kind.to_string(), name: name.to_string() }),
    }
}

/// Upstream's MakePayload: every key with `defaultMode`, or the `items` with their paths and
/// modes. A missing item key fails unless `optional`.
pub fn payload(
    items: Option<&[KeyToPath]>,
    data: &Data,
    default_mode: i32,
    optional: bool,
    kind: &str,
) -> Result<Payload> {
    let mode = |m: Option<i32>| (m.unwrap_or(default_mode) & 0o7777) as u32;
    let mut out = Payload::new();
    match items.filter(|i| !i.is_empty()) {
        None => {
            for (k, v) in data {
                out.insert(k.clone(), FileProjection::new(v.clone(), mode(None)));
            }
        }
        Some(items) => {
            for item in items {
                match data.get(&item.key) {
                    Some(v) => {
                        out.insert(item.path.clone(), FileProjection::new(v.clone(), mode(item.mode)));
                    }
                    None if optional => {}
                    None => {
                        let what = if kind == "secret" { "secret" } else { "configmap" };
                        let noun = if kind == "secret" { "secret" } else { "config" };
                        return Err(Error::MissingKey { kind: what, noun, key: item.key.clone() });
                    }
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::fake::FakeApi;
    use k8s_openapi::api::core::v1::ConfigMap;
    use std::collections::BTreeMap;

    fn data() -> Data {
        Data::from([("a".into(), b"1".to_vec()), ("b".into(), b"2".to_vec())])
    }

    fn item(key: &str, path: &str, mode: Option<i32>) -> KeyToPath {
        KeyToPath { key: key.into(), path: path.into(), mode, ..Default::default() }
    }

    #[test]
    fn all_keys_get_the_default_mode() {
        let p = payload(None, &data(), 0o640, false, "configmap").unwrap();
        assert_eq!(p.len(), 2);
        assert!(p.values().all(|f| f.mode == 0o640));
        assert_eq!(p["b"].data, b"2");
    }

    #[test]
    fn items_pick_keys_paths_and_modes() {
        let items = [item("a", "dir/x", Some(0o400)), item("b", "y", None)];
        let p = payload(Some(&items), &data(), DEFAULT_MODE, false, "configmap").unwrap();
        assert_eq!(p.keys().collect::<Vec<_>>(), ["dir/x", "y"]);
        assert_eq!((p["dir/x"].mode, p["y"].mode), (0o400, 0o644));
        let missing = [item("nope", "z", None)];
        assert_eq!(
            payload(Some(&missing), &data(), DEFAULT_MODE, false, "configmap").unwrap_err().to_string(),
            "configmap references non-existent config key: nope"
        );
        assert_eq!(
            payload(Some(&missing), &data(), DEFAULT_MODE, false, "secret").unwrap_err().to_string(),
            "secret references non-existent secret key: nope"
        );
        assert!(payload(Some(&missing), &data(), DEFAULT_MODE, true, "secret").unwrap().is_empty());
    }

    #[tokio::test]
    async fn missing_objects_fail_unless_optional() {
        let fake = FakeApi::new();
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some("cfg".into());
        cm.metadata.namespace = Some("ns".into());
        cm.data = Some(BTreeMap::from([("k".into(), "v".into())]));
        fake.put_config_map(cm);
        let objects = Objects::new(Arc::new(fake));
        let read = |kind, name, optional| read(Some(&objects), "u1", kind, "ns", name, optional);
        assert_eq!(read("configmap", "cfg", false).await.unwrap()["k"], b"v");
        assert_eq!(read("configmap", "gone", false).await.unwrap_err().to_string(), "configmap \"gone\" not found");
        assert!(read("configmap", "gone", true).await.unwrap().is_empty());
        assert_eq!(read("secret", "gone", false).await.unwrap_err().to_string(), "secret \"gone\" not found");
        assert!(
            super::read(None, "u1", "secret", "ns", "gone", false)
                .await
                .unwrap_err()
                .to_string()
                .contains("no API server")
        );
    }
}
