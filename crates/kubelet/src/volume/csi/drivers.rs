//! The registered CSI drivers (upstream's csiDrivers store): name → endpoint, node ID and
//! topology, filled by the plugin watcher and read by the volume set-up; plus the validation of a
//! plugin's registration info and the CSINode object that advertises the drivers.

use super::proto::registration::PluginInfo;
use super::{Error, Result};
use crate::api::{ApiError, DynApi};
use k8s_openapi::api::storage::v1::{CSINode, CSINodeDriver, CSINodeSpec, VolumeNodeResources};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The plugin type CSI drivers register with.
pub const CSI_PLUGIN_TYPE: &str = "CSIPlugin";

/// One registered driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Driver {
    pub name: String,
    /// The driver's CSI socket.
    pub endpoint: PathBuf,
    pub versions: Vec<String>,
    /// From NodeGetInfo.
    pub node_id: String,
    pub topology_keys: Vec<String>,
    pub max_volumes: i64,
    /// The registration socket it came through (its removal deregisters the driver).
    pub socket: PathBuf,
}

/// The drivers registered on this node. Cloneable: the watcher writes, set-up reads.
#[derive(Clone, Default)]
pub struct Drivers {
    inner: Arc<RwLock<BTreeMap<String, Driver>>>,
}

impl Drivers {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, name: &str) -> Option<Driver> {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    pub fn names(&self) -> Vec<String> {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect()
    }

    /// Adds or replaces a driver (a restarted plugin registers again).
    pub fn insert(&self, d: Driver) {
        self.inner.write().unwrap_or_else(|p| p.into_inner()).insert(d.name.clone(), d);
    }

    /// Removes the driver registered through `socket`, if any.
    pub fn remove_socket(&self, socket: &std::path::Path) -> Option<Driver> {
        let mut m = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let name = m.values().find(|d| d.socket == socket)?.name.clone();
        m.remove(&name)
    }

    /// Waits up to `timeout` for `name` to be registered (for tests and start-up ordering).
    pub async fn wait_for(&self, name: &str, timeout: Duration) -> Option<Driver> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(d) = self.get(name) {
                return Some(d);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Checks a plugin's GetInfo answer as the CSI registration handler does: the CSIPlugin type, a
/// name, a unix socket endpoint and a supported (1.x) CSI version.
pub fn validate(info: &PluginInfo) -> Result<PathBuf> {
    if info.r#type != CSI_PLUGIN_TYPE {
        return Err(Error::Registration(format!("no handler registered for plugin type: {:?}", info.r#type)));
    }
    if info.name.is_empty() {
        return Err(Error::Registration("plugin name is empty".into()));
    }
    if !info.supported_versions.iter().any(|v| major_version(v) == Some(1)) {
        return Err(Error::Registration(format!(
            "none of the CSI versions reported by this driver are supported: {:?} (supported: 1.x)",
            info.supported_versions
        )));
    }
    super::client::endpoint_path(&info.endpoint)
        .map_err(|e| Error::from(e).context(format!("CSI driver {}", info.name)))
}

/// The major number of a version like `1.0.0`, `v1.2` or `1`.
fn major_version(v: &str) -> Option<u64> {
    v.trim().trim_start_matches('v').split('.').next()?.parse().ok()
}

/// Adds (or updates) the driver in this node's CSINode, creating the object when missing (owned
/// by the Node, as upstream). Retries on conflicts.
pub async fn add_to_csi_node(api: &DynApi, node_name: &str, d: &Driver) -> Result<()> {
    let entry = CSINodeDriver {
        name: d.name.clone(),
        node_id: d.node_id.clone(),
        topology_keys: Some(d.topology_keys.clone()).filter(|k| !k.is_empty()),
        allocatable: (d.max_volumes > 0).then(|| VolumeNodeResources { count: i32::try_from(d.max_volumes).ok() }),
    };
    update_csi_node(api, node_name, |drivers| match drivers.iter_mut().find(|x| x.name == entry.name) {
        Some(x) => *x = entry.clone(),
        None => drivers.push(entry.clone()),
    })
    .await
}

/// The Node annotation mapping each registered CSI driver to its node ID (upstream's
/// nodeinfomanager: a JSON object, keys sorted as Go's encoding/json writes a map).
pub const NODE_ID_ANNOTATION: &str = "csi.volume.kubernetes.io/nodeid";

/// Sets (`Some`) or removes (`None`) the driver's entry in the Node's node-ID annotation; the
/// annotation goes when its last entry does. A missing Node is an error, so the registration is
/// retried once the node is registered, as upstream.
pub async fn set_node_id(api: &DynApi, node_name: &str, driver: &str, node_id: Option<&str>) -> Result<()> {
    let err = |source: ApiError| Error::Api { what: format!("Node {node_name}"), source };
    let node = api.get_node(node_name).await.map_err(err)?.ok_or_else(|| err(ApiError::NotFound))?;
    let current = node.metadata.annotations.as_ref().and_then(|a| a.get(NODE_ID_ANNOTATION));
    let mut ids: BTreeMap<String, String> = current.and_then(|v| serde_json::from_str(v).ok()).unwrap_or_default();
    let before = ids.clone();
    match node_id {
        Some(id) => ids.insert(driver.to_string(), id.to_string()),
        None => ids.remove(driver),
    };
    if ids == before && current.is_some() != ids.is_empty() {
        return Ok(());
    }
    let value = (!ids.is_empty()).then(|| serde_json::to_string(&ids).unwrap_or_default());
    let patch = serde_json::json!({"metadata": {"annotations": {NODE_ID_ANNOTATION: value}}});
    api.patch_node(node_name, &patch).await.map(drop).map_err(err)
}

/// Removes the driver from this node's CSINode (nothing to do when the object is missing).
pub async fn remove_from_csi_node(api: &DynApi, node_name: &str, driver: &str) -> Result<()> {
    update_csi_node(api, node_name, |drivers| drivers.retain(|x| x.name != driver)).await
}

async fn update_csi_node(api: &DynApi, node_name: &str, change: impl Fn(&mut Vec<CSINodeDriver>)) -> Result<()> {
    let err = |source: ApiError| Error::Api { what: format!("CSINode {node_name}"), source };
    for _ in 0..5 {
        match api.get_csi_node(node_name).await.map_err(err)? {
            Some(mut n) => {
                let before = n.spec.drivers.clone();
                change(&mut n.spec.drivers);
                if n.spec.drivers == before {
                    return Ok(());
                }
                match api.replace_csi_node(&n).await {
                    Ok(_) => return Ok(()),
                    Err(ApiError::Conflict(_)) => continue,
                    Err(e) => return Err(err(e)),
                }
            }
            None => {
                let mut drivers = Vec::new();
                change(&mut drivers);
                let owner = node_uid(api, node_name).await.map(|uid| OwnerReference {
                    api_version: "v1".into(),
                    kind: "Node".into(),
                    name: node_name.to_string(),
                    uid,
                    ..Default::default()
                });
                let n = CSINode {
                    metadata: ObjectMeta {
                        name: Some(node_name.to_string()),
                        owner_references: owner.map(|o| vec![o]),
                        ..Default::default()
                    },
                    spec: CSINodeSpec { drivers },
                    status: None,
                };
                match api.create_csi_node(&n).await {
                    Ok(_) => return Ok(()),
                    Err(ApiError::Conflict(_)) => continue,
                    Err(e) => return Err(err(e)),
                }
            }
        }
    }
    Err(Error::Conflicting(node_name.to_string()))
}

/// The Node's UID, waiting a few seconds for a kubelet that is registering it right now (the
/// CSINode is owned by the Node; without one it is created unowned).
async fn node_uid(api: &DynApi, node_name: &str) -> Option<String> {
    for attempt in 0..10 {
        if let Ok(Some(node)) = api.get_node(node_name).await {
            return node.metadata.uid;
        }
        if attempt < 9 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    tracing::warn!(node = node_name, "Node not registered: creating its CSINode without an owner");
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::DynApi;
    use crate::api::fake::FakeApi;

    fn info(t: &str, name: &str, endpoint: &str, versions: &[&str]) -> PluginInfo {
        PluginInfo {
            r#type: t.into(),
            name: name.into(),
            endpoint: endpoint.into(),
            supported_versions: versions.iter().map(|v| v.to_string()).collect(),
        }
    }

    #[test]
    fn registration_validation_follows_the_csi_handler() {
        let ok = info("CSIPlugin", "d.example.com", "/plugins/d/csi.sock", &["1.0.0"]);
        assert_eq!(validate(&ok).unwrap(), PathBuf::from("/plugins/d/csi.sock"));
        assert!(validate(&info("CSIPlugin", "d", "unix:///p/csi.sock", &["0.3.0", "v1.2"])).is_ok());
        let e = validate(&info("DevicePlugin", "d", "/p.sock", &["1.0.0"])).unwrap_err().to_string();
        assert!(e.contains("no handler registered for plugin type"), "{e}");
        assert!(
            validate(&info("CSIPlugin", "", "/p.sock", &["1.0.0"])).unwrap_err().to_string().contains("name is empty")
        );
        let e = validate(&info("CSIPlugin", "d", "/p.sock", &["0.3.0", "2.0.0"])).unwrap_err().to_string();
        assert!(e.contains("none of the CSI versions"), "{e}");
        assert!(validate(&info("CSIPlugin", "d", "tcp://1.2.3.4:5", &["1.0.0"])).is_err());
        assert!(validate(&info("CSIPlugin", "d", "", &["1.0.0"])).is_err());
    }

    fn driver(name: &str, socket: &str) -> Driver {
        Driver {
            name: name.into(),
            endpoint: "/e.sock".into(),
            versions: vec!["1.0.0".into()],
            node_id: "n1".into(),
            topology_keys: vec!["topology.example.com/zone".into()],
            max_volumes: 0,
            socket: socket.into(),
        }
    }

    #[tokio::test]
    async fn drivers_are_removed_by_their_registration_socket() {
        let d = Drivers::new();
        d.insert(driver("a", "/reg/a.sock"));
        d.insert(driver("b", "/reg/b.sock"));
        assert_eq!(d.names(), vec!["a", "b"]);
        assert_eq!(d.remove_socket(std::path::Path::new("/reg/a.sock")).unwrap().name, "a");
        assert!(d.remove_socket(std::path::Path::new("/reg/a.sock")).is_none());
        assert!(d.wait_for("b", Duration::from_millis(10)).await.is_some());
        assert!(d.wait_for("a", Duration::from_millis(10)).await.is_none());
    }

    #[tokio::test]
    async fn csi_node_lists_registered_drivers() {
        let fake = FakeApi::new();
        let api: DynApi = std::sync::Arc::new(fake.clone());
        api.create_node(&k8s_openapi::api::core::v1::Node {
            metadata: ObjectMeta { name: Some("n".into()), ..Default::default() },
            ..Default::default()
        })
        .await
        .unwrap();
        add_to_csi_node(&api, "n", &driver("a", "/a")).await.unwrap();
        add_to_csi_node(&api, "n", &driver("b", "/b")).await.unwrap();
        add_to_csi_node(&api, "n", &driver("a", "/a")).await.unwrap();
        let n = fake.csi_node("n").unwrap();
        let names: Vec<&str> = n.spec.drivers.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, vec!["a", "b"]);
        assert_eq!(n.spec.drivers[0].node_id, "n1");
        assert_eq!(n.metadata.owner_references.unwrap()[0].kind, "Node");
        remove_from_csi_node(&api, "n", "a").await.unwrap();
        assert_eq!(fake.csi_node("n").unwrap().spec.drivers.len(), 1);
    }

    #[tokio::test]
    async fn the_node_id_annotation_maps_each_driver_to_its_node_id() {
        let fake = FakeApi::new();
        let api: DynApi = std::sync::Arc::new(fake.clone());
        // No Node yet: an error, so the registration is retried.
        assert!(set_node_id(&api, "n", "a", Some("id-a")).await.is_err());
        api.create_node(&k8s_openapi::api::core::v1::Node {
            metadata: ObjectMeta { name: Some("n".into()), ..Default::default() },
            ..Default::default()
        })
        .await
        .unwrap();
        let annotation =
            || fake.node("n").unwrap().metadata.annotations.unwrap_or_default().get(NODE_ID_ANNOTATION).cloned();
        set_node_id(&api, "n", "b.example.com", Some("id-b")).await.unwrap();
        set_node_id(&api, "n", "a.example.com", Some("id-a")).await.unwrap();
        assert_eq!(annotation().as_deref(), Some(r#"{"a.example.com":"id-a","b.example.com":"id-b"}"#));
        set_node_id(&api, "n", "b.example.com", None).await.unwrap();
        assert_eq!(annotation().as_deref(), Some(r#"{"a.example.com":"id-a"}"#));
        set_node_id(&api, "n", "a.example.com", None).await.unwrap();
        assert_eq!(annotation(), None, "the last entry takes the annotation with it");
    }
}
