//! secret volumes (pkg/volume/secret): the configMap rules (see [`super::configmap`]) over a
//! Secret's decoded `data`, always on a tmpfs so secrets never reach the node's disk.

use super::configmap::{self, Data};
use crate::api::DynApi;

/// A Secret's `data` (and `stringData`, should a stored object carry it); None when missing.
pub async fn fetch(api: &DynApi, namespace: &str, name: &str) -> configmap::Result<Option<Data>> {
    let s = api.get_secret(namespace, name).await.map_err(|source| configmap::Error::Api {
        kind: "secret",
        name: name.to_string(),
        source,
    })?;
    Ok(s.map(|s| {
        let mut d: Data = s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
        d.extend(s.string_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())));
        d
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::fake::FakeApi;
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    #[tokio::test]
    async fn secret_data_is_decoded_bytes() {
        let fake = FakeApi::new();
        let mut s = Secret::default();
        s.metadata.name = Some("creds".into());
        s.metadata.namespace = Some("ns".into());
        s.data = Some(BTreeMap::from([("password".into(), ByteString(b"hunter2".to_vec()))]));
        fake.put_secret(s);
        let api: DynApi = Arc::new(fake);
        let d = fetch(&api, "ns", "creds").await.unwrap().unwrap();
        assert_eq!(d["password"], b"hunter2");
        assert!(fetch(&api, "ns", "other").await.unwrap().is_none());
    }
}
