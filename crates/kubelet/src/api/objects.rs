//! The node's one reader of ConfigMaps, Secrets and Services (upstream's configmap and secret
//! managers, pkg/kubelet/util/manager): env vars, configMap/secret/projected volumes and
//! imagePullSecrets all read through it. Every read asks the API server and decodes the answer
//! once; the last answer per object is kept, so a read during an outage gets what the API said
//! last (upstream reads through watch caches that outlive an outage). Each entry remembers the
//! pods it was read for; [`Objects::retain_pods`] (the dispatcher's housekeeping) forgets the
//! pods that are gone and drops the entries no live pod read, as upstream's managers drop an
//! object when its last pod is unregistered. One per node: hollow nodes in one process share
//! nothing.

use super::{DynApi, Result};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

/// Key → content of a ConfigMap (`data` and `binaryData`) or a Secret (`data`, and `stringData`
/// should a stored object carry it).
pub type Data = BTreeMap<String, Vec<u8>>;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    ConfigMap { namespace: String, name: String },
    Secret { namespace: String, name: String },
    Services { namespace: String },
}

/// A decoded answer: `Data(None)` is "not found".
#[derive(Clone)]
enum Value {
    Data(Option<Arc<Data>>),
    Services(Arc<Vec<Service>>),
}

struct Entry {
    last_good: Value,
    /// The UIDs of the pods it was read for.
    pods: HashSet<String>,
}

/// The cloneable reader; clones share one cache.
#[derive(Clone)]
pub struct Objects {
    api: DynApi,
    cache: Arc<Mutex<HashMap<Key, Entry>>>,
}

fn decode_config_map(cm: ConfigMap) -> Data {
    let mut d: Data = cm.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
    d.extend(cm.binary_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)));
    d
}

fn decode_secret(s: Secret) -> Data {
    let mut d: Data = s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
    d.extend(s.string_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())));
    d
}

impl Objects {
    pub fn new(api: DynApi) -> Self {
        Self { api, cache: Default::default() }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Key, Entry>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A ConfigMap's decoded data for `pod_uid`'s pod; `None` when it does not exist. An API
    /// error is returned only when there is no earlier answer.
    pub async fn config_map(&self, pod_uid: &str, namespace: &str, name: &str) -> Result<Option<Arc<Data>>> {
        let fetched = self.api.get_config_map(namespace, name).await;
        let fetched = fetched.map(|cm| Value::Data(cm.map(|cm| Arc::new(decode_config_map(cm)))));
        let key = Key::ConfigMap { namespace: namespace.into(), name: name.into() };
        match self.remember(key, pod_uid, fetched)? {
            Value::Data(d) => Ok(d),
            Value::Services(_) => unreachable!("a ConfigMap key holds data"),
        }
    }

    /// A Secret's decoded data, as [`Self::config_map`].
    pub async fn secret(&self, pod_uid: &str, namespace: &str, name: &str) -> Result<Option<Arc<Data>>> {
        let fetched = self.api.get_secret(namespace, name).await;
        let fetched = fetched.map(|s| Value::Data(s.map(|s| Arc::new(decode_secret(s)))));
        let key = Key::Secret { namespace: namespace.into(), name: name.into() };
        match self.remember(key, pod_uid, fetched)? {
            Value::Data(d) => Ok(d),
            Value::Services(_) => unreachable!("a Secret key holds data"),
        }
    }

    /// The Services of a namespace (service link env vars), as [`Self::config_map`].
    pub async fn services(&self, pod_uid: &str, namespace: &str) -> Result<Arc<Vec<Service>>> {
        let fetched = self.api.list_services(namespace).await.map(|s| Value::Services(Arc::new(s)));
        match self.remember(Key::Services { namespace: namespace.into() }, pod_uid, fetched)? {
            Value::Services(s) => Ok(s),
            Value::Data(_) => unreachable!("a Services key holds services"),
        }
    }

    /// Keeps a fresh answer as the last good one, or answers an error with the last good one.
    fn remember(&self, key: Key, pod_uid: &str, fetched: Result<Value>) -> Result<Value> {
        let mut cache = self.lock();
        match fetched {
            Ok(value) => {
                let entry =
                    cache.entry(key).or_insert_with(|| Entry { last_good: value.clone(), pods: HashSet::new() });
                entry.last_good = value.clone();
                entry.pods.insert(pod_uid.to_string());
                Ok(value)
            }
            Err(e) => match cache.get_mut(&key) {
                Some(entry) => {
                    tracing::debug!(object = ?key, error = %e, "API read failed; using the last answer");
                    entry.pods.insert(pod_uid.to_string());
                    Ok(entry.last_good.clone())
                }
                None => Err(e),
            },
        }
    }

    /// Forgets every pod not in `live` and drops the objects no remaining pod has read.
    pub fn retain_pods(&self, live: &HashSet<String>) {
        self.lock().retain(|_, entry| {
            entry.pods.retain(|uid| live.contains(uid));
            !entry.pods.is_empty()
        });
    }

    /// How many objects are kept.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Debug for Objects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Objects").field("kept", &self.len()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::fake::FakeApi;
    use k8s_openapi::ByteString;

    fn config_map(name: &str, value: &str) -> ConfigMap {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some(name.into());
        cm.metadata.namespace = Some("ns".into());
        cm.data = Some(BTreeMap::from([("k".into(), value.into())]));
        cm.binary_data = Some(BTreeMap::from([("bin".into(), ByteString(vec![0, 1]))]));
        cm
    }

    fn secret(name: &str) -> Secret {
        let mut s = Secret::default();
        s.metadata.name = Some(name.into());
        s.metadata.namespace = Some("ns".into());
        s.data = Some(BTreeMap::from([("password".into(), ByteString(b"hunter2".to_vec()))]));
        s
    }

    #[tokio::test]
    async fn config_maps_and_secrets_are_decoded_to_bytes() {
        let fake = FakeApi::new();
        fake.put_config_map(config_map("cfg", "v"));
        fake.put_secret(secret("creds"));
        let objects = Objects::new(Arc::new(fake));
        let cm = objects.config_map("u1", "ns", "cfg").await.unwrap().unwrap();
        assert_eq!((cm["k"].as_slice(), cm["bin"].as_slice()), (&b"v"[..], &[0u8, 1][..]));
        let s = objects.secret("u1", "ns", "creds").await.unwrap().unwrap();
        assert_eq!(s["password"], b"hunter2");
        assert!(objects.secret("u1", "ns", "other").await.unwrap().is_none());
        assert!(objects.config_map("u1", "other-ns", "cfg").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn an_outage_keeps_the_last_good_answer() {
        let fake = FakeApi::new();
        fake.put_config_map(config_map("cfg", "v1"));
        fake.put_secret(secret("creds"));
        let objects = Objects::new(Arc::new(fake.clone()));
        objects.config_map("u1", "ns", "cfg").await.unwrap();
        objects.secret("u1", "ns", "creds").await.unwrap();
        objects.services("u1", "ns").await.unwrap();
        fake.put_config_map(config_map("cfg", "v2"));
        fake.set_down(true);
        // The last answer, for this pod and for another one; nothing earlier: the API's error.
        assert_eq!(objects.config_map("u1", "ns", "cfg").await.unwrap().unwrap()["k"], b"v1");
        assert_eq!(objects.secret("u2", "ns", "creds").await.unwrap().unwrap()["password"], b"hunter2");
        assert!(objects.services("u1", "ns").await.unwrap().is_empty());
        assert!(objects.config_map("u1", "ns", "never-read").await.is_err());
        fake.set_down(false);
        assert_eq!(objects.config_map("u1", "ns", "cfg").await.unwrap().unwrap()["k"], b"v2");
    }

    #[tokio::test]
    async fn an_object_is_dropped_once_no_live_pod_read_it() {
        let fake = FakeApi::new();
        fake.put_config_map(config_map("shared", "v"));
        fake.put_secret(secret("only-u1"));
        let objects = Objects::new(Arc::new(fake.clone()));
        objects.config_map("u1", "ns", "shared").await.unwrap();
        objects.config_map("u2", "ns", "shared").await.unwrap();
        objects.secret("u1", "ns", "only-u1").await.unwrap();
        assert_eq!(objects.len(), 2);
        // u1 is gone: its secret is dropped, the ConfigMap u2 read stays.
        objects.retain_pods(&HashSet::from(["u2".to_string()]));
        assert_eq!(objects.len(), 1);
        fake.set_down(true);
        assert!(objects.secret("u2", "ns", "only-u1").await.is_err(), "the secret's data is forgotten");
        assert!(objects.config_map("u2", "ns", "shared").await.is_ok());
        objects.retain_pods(&HashSet::new());
        assert!(objects.is_empty());
    }

    #[tokio::test]
    async fn two_nodes_share_nothing() {
        let fake = FakeApi::new();
        fake.put_secret(secret("creds"));
        let api: DynApi = Arc::new(fake.clone());
        let (node_a, node_b) = (Objects::new(api.clone()), Objects::new(api));
        node_a.secret("u1", "ns", "creds").await.unwrap();
        fake.set_down(true);
        assert!(node_a.clone().secret("u1", "ns", "creds").await.unwrap().is_some(), "clones share the cache");
        assert!(node_b.secret("u1", "ns", "creds").await.is_err(), "another node has no answer kept");
        assert!(node_b.is_empty());
    }
}
