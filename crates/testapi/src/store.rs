//! Generic JSON object store: objects keyed by resource ("group/version/plural"), namespace and name;
//! one global resourceVersion counter; a bounded history of change events for watches.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::broadcast;

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum StoreError {
    #[error("{resource} \"{name}\" not found")]
    NotFound { resource: String, name: String },
    #[error("{resource} \"{name}\" already exists")]
    AlreadyExists { resource: String, name: String },
    #[error(
        "Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
    )]
    Conflict { resource: String, name: String },
    #[error("too old resource version: {requested} ({oldest})")]
    Expired { requested: u64, oldest: u64 },
    #[error("{0}")]
    Invalid(String),
}

/// Identifies one object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Key {
    pub resource: String,
    pub namespace: String,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as kept in the history and sent to watchers.
#[derive(Debug, Clone)]
pub struct Event {
    pub rv: u64,
    pub typ: EventType,
    pub key: Key,
    pub object: Value,
    /// The object before a modification (for selector transitions).
    pub previous: Option<Value>,
}

#[derive(Serialize, Deserialize, Default)]
struct Persisted {
    rv: u64,
    objects: Vec<(Key, Value)>,
}

struct Inner {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    history: VecDeque<Arc<Event>>,
    /// Highest resourceVersion dropped from the history (watches from before it get 410).
    compacted: u64,
}

pub struct Store {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<Event>>,
    history_limit: usize,
    persist: Option<PathBuf>,
}

fn meta(obj: &Value, field: &str) -> Option<String> {
    obj.get("metadata")?.get(field)?.as_str().map(str::to_string)
}

pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn random_suffix(n: usize) -> String {
    // Same alphabet as Kubernetes' generateName (no vowels, no confusable digits).
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut seed = {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
        h.finish()
    };
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            ALPHA[(seed % ALPHA.len() as u64) as usize] as char
        })
        .collect()
}

pub fn new_uid() -> String {
    let hex: String = (0..4).map(|_| random_suffix(8)).collect::<String>();
    let bytes: Vec<u8> = hex.bytes().collect();
    let h = |i: usize| format!("{:02x}", bytes[i]);
    let s: String = (0..16).map(h).collect();
    format!("{}-{}-{}-{}-{}", &s[0..8], &s[8..12], &s[12..16], &s[16..20], &s[20..32])
}

impl Store {
    pub fn new(history_limit: usize, persist: Option<PathBuf>) -> Self {
        let (tx, _) = broadcast::channel(8192);
        let mut inner = Inner { rv: 1, objects: BTreeMap::new(), history: VecDeque::new(), compacted: 0 };
        if let Some(path) = &persist
            && let Ok(text) = std::fs::read_to_string(path)
            && let Ok(p) = serde_json::from_str::<Persisted>(&text)
        {
            inner.rv = p.rv;
            inner.compacted = p.rv;
            inner.objects = p.objects.into_iter().collect();
        }
        Store { inner: Mutex::new(inner), tx, history_limit, persist }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    pub fn current_rv(&self) -> u64 {
        self.inner.lock().unwrap().rv
    }

    pub fn get(&self, key: &Key) -> Result<Value, StoreError> {
        let inner = self.inner.lock().unwrap();
        inner.objects.get(key).cloned().ok_or_else(|| not_found(key))
    }

    pub fn contains(&self, key: &Key) -> bool {
        self.inner.lock().unwrap().objects.contains_key(key)
    }

    /// All objects of a resource (in one namespace when given) and the list's resourceVersion.
    pub fn list(&self, resource: &str, namespace: Option<&str>) -> (Vec<Value>, u64) {
        let inner = self.inner.lock().unwrap();
        let items = inner
            .objects
            .iter()
            .filter(|(k, _)| k.resource == resource && namespace.is_none_or(|ns| k.namespace == ns))
            .map(|(_, v)| v.clone())
            .collect();
        (items, inner.rv)
    }

    /// Fails with Expired when `rv` is older than the retained history.
    pub fn check_rv(&self, rv: u64) -> Result<(), StoreError> {
        let inner = self.inner.lock().unwrap();
        if rv != 0 && rv < inner.compacted {
            return Err(StoreError::Expired { requested: rv, oldest: inner.compacted });
        }
        Ok(())
    }

    /// Events after `rv` still in the history (Expired if some were dropped).
    pub fn events_since(&self, rv: u64) -> Result<Vec<Arc<Event>>, StoreError> {
        let inner = self.inner.lock().unwrap();
        if rv < inner.compacted {
            return Err(StoreError::Expired { requested: rv, oldest: inner.compacted });
        }
        Ok(inner.history.iter().filter(|e| e.rv > rv).cloned().collect())
    }

    /// Creates an object: fills name (generateName), namespace, uid, creationTimestamp, resourceVersion.
    pub fn create(&self, resource: &str, namespace: &str, mut obj: Value) -> Result<Value, StoreError> {
        let mut inner = self.inner.lock().unwrap();
        let m = obj.get_mut("metadata").and_then(Value::as_object_mut).ok_or_else(|| {
            StoreError::Invalid(format!("{resource}: metadata.name: Required value: name or generateName is required"))
        })?;
        let name = match m.get("name").and_then(Value::as_str).filter(|s| !s.is_empty()) {
            Some(n) => n.to_string(),
            None => match m.get("generateName").and_then(Value::as_str).filter(|s| !s.is_empty()) {
                Some(prefix) => loop {
                    let candidate = format!("{prefix}{}", random_suffix(5));
                    let k = Key { resource: resource.into(), namespace: namespace.into(), name: candidate.clone() };
                    if !inner.objects.contains_key(&k) {
                        break candidate;
                    }
                },
                None => {
                    return Err(StoreError::Invalid(format!(
                        "{resource}: metadata.name: Required value: name or generateName is required"
                    )));
                }
            },
        };
        let key = Key { resource: resource.into(), namespace: namespace.into(), name: name.clone() };
        if inner.objects.contains_key(&key) {
            return Err(StoreError::AlreadyExists { resource: plural(resource), name });
        }
        m.insert("name".into(), json!(name));
        if !namespace.is_empty() {
            m.insert("namespace".into(), json!(namespace));
        }
        m.insert("uid".into(), json!(new_uid()));
        m.insert("creationTimestamp".into(), json!(now_rfc3339()));
        m.remove("deletionTimestamp");
        m.remove("deletionGracePeriodSeconds");
        let rv = inner.rv + 1;
        m.insert("resourceVersion".into(), json!(rv.to_string()));
        if !m.contains_key("generation") && !resource.ends_with("/events") {
            m.insert("generation".into(), json!(1));
        }
        inner.rv = rv;
        inner.objects.insert(key.clone(), obj.clone());
        self.record(&mut inner, EventType::Added, key, obj.clone(), None);
        Ok(obj)
    }

    /// Replaces an object. A non-empty metadata.resourceVersion must match the stored one (else Conflict).
    /// Identity fields (uid, creationTimestamp, name, namespace) are kept from the stored object.
    pub fn update(&self, key: &Key, obj: Value) -> Result<Value, StoreError> {
        self.write(key, obj, false)
    }

    /// Like `update`, but takes deletionTimestamp/deletionGracePeriodSeconds from `obj` (graceful deletion).
    pub fn update_deletion(&self, key: &Key, obj: Value) -> Result<Value, StoreError> {
        self.write(key, obj, true)
    }

    fn write(&self, key: &Key, mut obj: Value, deletion: bool) -> Result<Value, StoreError> {
        let mut inner = self.inner.lock().unwrap();
        let old = inner.objects.get(key).cloned().ok_or_else(|| not_found(key))?;
        if let Some(rv) = meta(&obj, "resourceVersion").filter(|s| !s.is_empty())
            && Some(rv) != meta(&old, "resourceVersion")
        {
            return Err(StoreError::Conflict { resource: plural(&key.resource), name: key.name.clone() });
        }
        if obj.get("metadata").and_then(Value::as_object).is_none() {
            obj["metadata"] = json!({});
        }
        let m = obj["metadata"].as_object_mut().unwrap();
        let kept: &[&str] = if deletion {
            &["uid", "creationTimestamp"]
        } else {
            &["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds"]
        };
        for f in kept.iter().copied() {
            match old["metadata"].get(f) {
                Some(v) => m.insert(f.into(), v.clone()),
                None => m.remove(f),
            };
        }
        m.insert("name".into(), json!(key.name));
        if !key.namespace.is_empty() {
            m.insert("namespace".into(), json!(key.namespace));
        }
        // generation follows spec changes.
        let gen_old = old["metadata"].get("generation").and_then(Value::as_i64).unwrap_or(1);
        let gen_new = if old.get("spec") != obj.get("spec") { gen_old + 1 } else { gen_old };
        if old["metadata"].get("generation").is_some() {
            obj["metadata"]["generation"] = json!(gen_new);
        }
        let mut without_rv = obj.clone();
        without_rv["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        if without_rv == old {
            return Ok(old); // no-op writes keep the resourceVersion, like Kubernetes
        }
        let rv = inner.rv + 1;
        inner.rv = rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        inner.objects.insert(key.clone(), obj.clone());
        self.record(&mut inner, EventType::Modified, key.clone(), obj.clone(), Some(old));
        Ok(obj)
    }

    /// Removes an object; the DELETED event carries it with a fresh resourceVersion.
    pub fn delete(&self, key: &Key) -> Result<Value, StoreError> {
        let mut inner = self.inner.lock().unwrap();
        let mut old = inner.objects.remove(key).ok_or_else(|| not_found(key))?;
        let rv = inner.rv + 1;
        inner.rv = rv;
        old["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.record(&mut inner, EventType::Deleted, key.clone(), old.clone(), None);
        Ok(old)
    }

    /// Deletes every object in a namespace (namespace deletion).
    pub fn delete_namespace_contents(&self, namespace: &str) {
        let keys: Vec<Key> = {
            let inner = self.inner.lock().unwrap();
            inner.objects.keys().filter(|k| k.namespace == namespace).cloned().collect()
        };
        for k in keys {
            let _ = self.delete(&k);
        }
    }

    fn record(&self, inner: &mut Inner, typ: EventType, key: Key, object: Value, previous: Option<Value>) {
        let ev = Arc::new(Event { rv: inner.rv, typ, key, object, previous });
        inner.history.push_back(ev.clone());
        while inner.history.len() > self.history_limit {
            if let Some(e) = inner.history.pop_front() {
                inner.compacted = e.rv;
            }
        }
        let _ = self.tx.send(ev);
        if let Some(path) = &self.persist {
            let p = Persisted {
                rv: inner.rv,
                objects: inner.objects.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            };
            if let Ok(text) = serde_json::to_string(&p) {
                let tmp = path.with_extension("tmp");
                if std::fs::write(&tmp, text).is_ok() {
                    let _ = std::fs::rename(&tmp, path);
                }
            }
        }
    }
}

/// "group/version/plural" → "plural"
pub fn plural(resource: &str) -> String {
    resource.rsplit('/').next().unwrap_or(resource).to_string()
}

fn not_found(key: &Key) -> StoreError {
    StoreError::NotFound { resource: plural(&key.resource), name: key.name.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cm(name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"a": "1"}})
    }

    fn key(name: &str) -> Key {
        Key { resource: "/v1/configmaps".into(), namespace: "default".into(), name: name.into() }
    }

    #[test]
    fn create_fills_metadata_and_rejects_duplicates() {
        let s = Store::new(100, None);
        let o = s.create("/v1/configmaps", "default", cm("a")).unwrap();
        assert_eq!(o["metadata"]["namespace"], "default");
        assert!(o["metadata"]["uid"].as_str().unwrap().len() == 36);
        assert!(o["metadata"]["creationTimestamp"].is_string());
        assert_eq!(o["metadata"]["resourceVersion"], "2");
        let err = s.create("/v1/configmaps", "default", cm("a")).unwrap_err();
        assert!(matches!(err, StoreError::AlreadyExists { .. }));
        let g = s.create("/v1/configmaps", "default", json!({"metadata": {"generateName": "x-"}})).unwrap();
        assert!(g["metadata"]["name"].as_str().unwrap().starts_with("x-"));
        assert_eq!(g["metadata"]["name"].as_str().unwrap().len(), 7);
    }

    #[test]
    fn stale_resource_version_conflicts() {
        let s = Store::new(100, None);
        let o = s.create("/v1/configmaps", "default", cm("a")).unwrap();
        let mut o2 = o.clone();
        o2["data"]["a"] = json!("2");
        let updated = s.update(&key("a"), o2.clone()).unwrap();
        assert_eq!(updated["metadata"]["resourceVersion"], "3");
        // o2 still carries resourceVersion 2
        o2["data"]["a"] = json!("3");
        assert!(matches!(s.update(&key("a"), o2.clone()).unwrap_err(), StoreError::Conflict { .. }));
        // without a resourceVersion the update is unconditional
        o2["metadata"].as_object_mut().unwrap().remove("resourceVersion");
        assert_eq!(s.update(&key("a"), o2).unwrap()["data"]["a"], "3");
        assert!(matches!(s.update(&key("zz"), cm("zz")).unwrap_err(), StoreError::NotFound { .. }));
    }

    #[test]
    fn history_window_and_expiry() {
        let s = Store::new(3, None);
        for i in 0..5 {
            s.create("/v1/configmaps", "default", cm(&format!("c{i}"))).unwrap();
        }
        // rvs 2..=6 were written; only 4,5,6 kept; 3 dropped last
        assert_eq!(s.current_rv(), 6);
        assert!(matches!(s.events_since(2).unwrap_err(), StoreError::Expired { .. }));
        assert_eq!(s.events_since(3).unwrap().len(), 3);
        assert_eq!(s.events_since(5).unwrap().len(), 1);
        assert!(s.check_rv(1).is_err());
        assert!(s.check_rv(0).is_ok());
    }

    #[test]
    fn persistence_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        {
            let s = Store::new(10, Some(path.clone()));
            s.create("/v1/configmaps", "default", cm("a")).unwrap();
        }
        let s = Store::new(10, Some(path));
        assert_eq!(s.get(&key("a")).unwrap()["data"]["a"], "1");
        assert_eq!(s.current_rv(), 2);
    }
}
