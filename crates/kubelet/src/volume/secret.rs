//! secret volumes (pkg/volume/secret): the configMap rules (see [`super::configmap`]) over a
//! Secret's decoded `data`, always on a tmpfs so secrets never reach the node's disk.

use super::configmap::{self, Data};
use crate::api::objects::Objects;
use std::sync::Arc;

/// A Secret's `data` (and `stringData`, should a stored object carry it), through the node's
/// reader for the pod `pod_uid`; None when missing.
pub async fn fetch(
    objects: &Objects,
    pod_uid: &str,
    namespace: &str,
    name: &str,
) -> configmap::Result<Option<Arc<Data>>> {
    objects.secret(pod_uid, namespace, name).await.map_err(|source| configmap::Error::Api {
        kind: "secret",
        name: name.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::fake::FakeApi;
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;
    use std::collections::BTreeMap;

    #[tokio::test]
    async fn secret_data_is_decoded_bytes() {
        let fake = FakeApi::new();
        let mut s = Secret::default();
        s.metadata.name = Some("creds".into());
        s.metadata.namespace = Some("ns".into());
        s.data = Some(BTreeMap::from([("password".into(), ByteString(b"hunter2".to_vec()))]));
        fake.put_secret(s);
        let objects = Objects::new(Arc::new(fake));
        let d = fetch(&objects, "u1", "ns", "creds").await.unwrap().unwrap();
        assert_eq!(d["password"], b"hunter2");
        assert!(fetch(&objects, "u1", "ns", "other").await.unwrap().is_none());
    }
}
