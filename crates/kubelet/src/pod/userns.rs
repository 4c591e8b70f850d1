//! User namespaces (`hostUsers: false`; pkg/kubelet/userns, GetOrCreateUserNamespaceMappings and
//! Kubelet.HandlerSupportsUserNamespaces): before a sandbox is made for such a pod, its runtime
//! handler must say it supports user namespaces (CRI Status `runtime_handlers[].features`), or the
//! sandbox is not made, with upstream's messages. A supporting handler gets the pod's ID
//! mappings: 65536 IDs (upstream's default idsPerPod) from the node's range (upstream's default
//! without a `kubelet` entry in /etc/subuid: from 65536 up to 2^32), container ID 0 at a multiple
//! of 65536, the same for UIDs and GIDs, kept in `<root>/pods/<uid>/userns` (upstream's file and
//! JSON) so a new sandbox of the pod, or a restarted kubelet, uses the same range. A range is free
//! again once its pod directory is gone. Most pods on runtimes without support never get here:
//! admission refuses them (`admission::runtime`).

use crate::cri::{CriError, Runtime, api};
use std::path::Path;

/// IDs per pod (upstream's default idsPerPod).
pub const IDS_PER_POD: u32 = 65536;
/// The node's range for pods without /etc/subuid configuration: 65536 up to 2^32.
const FIRST_ID: u32 = 65536;
const MAPPINGS_FILE: &str = "userns";

/// Upstream's on-disk record (`uidMappings` / `gidMappings`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Record {
    #[serde(rename = "uidMappings")]
    uid_mappings: Vec<IdMapping>,
    #[serde(rename = "gidMappings")]
    gid_mappings: Vec<IdMapping>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct IdMapping {
    #[serde(rename = "hostId")]
    host_id: u32,
    #[serde(rename = "containerId")]
    container_id: u32,
    length: u32,
}

/// One allocation at a time on the node.
static ALLOCATE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |e| Error::Io { what, path: path.to_path_buf(), source: std::sync::Arc::new(e) }
}

fn read_record(path: &Path) -> Result<Option<Record>, Error> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::Decode { path: path.to_path_buf(), source: std::sync::Arc::new(e) }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("reading", path)(e)),
    }
}

/// The pod's mappings: the recorded ones, else the lowest free range, recorded now.
pub fn mappings(root_dir: &Path, pod_uid: &str) -> Result<api::UserNamespace, Error> {
    let _one = ALLOCATE.lock().unwrap_or_else(|p| p.into_inner());
    let pods = root_dir.join("pods");
    let file = pods.join(pod_uid).join(MAPPINGS_FILE);
    let record = match read_record(&file)? {
        Some(r) => r,
        None => {
            let mut used = std::collections::BTreeSet::new();
            for e in std::fs::read_dir(&pods).into_iter().flatten().flatten() {
                if let Ok(Some(r)) = read_record(&e.path().join(MAPPINGS_FILE)) {
                    used.extend(r.uid_mappings.iter().map(|m| m.host_id));
                }
            }
            let slots = (u32::MAX - FIRST_ID) / IDS_PER_POD;
            let host_id =
                (0..slots).map(|i| FIRST_ID + i * IDS_PER_POD).find(|id| !used.contains(id)).ok_or(Error::Exhausted)?;
            let m = IdMapping { host_id, container_id: 0, length: IDS_PER_POD };
            let r = Record { uid_mappings: vec![m], gid_mappings: vec![m] };
            let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
            std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
            let bytes = serde_json::to_vec(&r).unwrap_or_default();
            let tmp = file.with_extension("tmp");
            std::fs::write(&tmp, bytes).map_err(io("writing", &tmp))?;
            std::fs::rename(&tmp, &file).map_err(io("renaming", &tmp))?;
            r
        }
    };
    let ids = |l: &[IdMapping]| {
        l.iter()
            .map(|m| api::IdMapping { host_id: m.host_id, container_id: m.container_id, length: m.length })
            .collect()
    };
    Ok(api::UserNamespace {
        mode: api::NamespaceMode::Pod as i32,
        uids: ids(&record.uid_mappings),
        gids: ids(&record.gid_mappings),
    })
}

/// The recorded mappings of a pod whose sandbox has them (for its containers).
pub fn recorded(root_dir: &Path, pod: &Pod) -> Option<api::UserNamespace> {
    if !wants_user_namespace(pod) {
        return None;
    }
    let uid = pod.metadata.uid.as_deref()?;
    let file = root_dir.join("pods").join(uid).join(MAPPINGS_FILE);
    read_record(&file).ok().flatten()?;
    mappings(root_dir, uid).ok()
}
use k8s_openapi::api::core::v1::Pod;

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Handler(#[from] crate::cri::HandlerError),
    #[error("RuntimeClass handler {0:?} does not support user namespaces")]
    Unsupported(String),
    #[error("{what} {}: {source}", path.display())]
    Io { what: &'static str, path: std::path::PathBuf, source: std::sync::Arc<std::io::Error> },
    #[error("{}: {source}", path.display())]
    Decode { path: std::path::PathBuf, source: std::sync::Arc<serde_json::Error> },
    #[error("no free range of {IDS_PER_POD} IDs left for user namespaces")]
    Exhausted,
    #[error(transparent)]
    Runtime(#[from] CriError),
}

/// Whether the pod asks for its own user namespace (`spec.hostUsers: false`).
pub fn wants_user_namespace(pod: &Pod) -> bool {
    pod.spec.as_ref().and_then(|s| s.host_users) == Some(false)
}

/// The sandbox-time check for `pod` on `handler`: None for pods in the host's namespace, the
/// pod's mappings when the handler supports user namespaces, else upstream's error.
pub async fn check(
    pod: &Pod,
    handler: &str,
    runtime: &dyn Runtime,
    root_dir: &Path,
) -> Result<Option<api::UserNamespace>, super::error::Error> {
    if !wants_user_namespace(pod) {
        return Ok(None);
    }
    let fail = super::error::Error::UserNamespace;
    let handlers = runtime.handlers().await.map_err(|e| fail(e.into()))?;
    match handlers.supports_user_namespaces(handler) {
        Ok(true) => {}
        Ok(false) => return Err(fail(Error::Unsupported(handler.to_string()))),
        Err(e) => return Err(fail(e.into())),
    }
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    mappings(root_dir, uid).map(Some).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cri::{RuntimeHandlers, fake::FakeRuntime};

    fn handler(name: &str, userns: bool) -> api::RuntimeHandler {
        api::RuntimeHandler {
            name: name.into(),
            features: Some(api::RuntimeHandlerFeatures { recursive_read_only_mounts: false, user_namespaces: userns }),
        }
    }

    fn pod(host_users: Option<bool>) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "uid": "u1"},
            "spec": {"hostUsers": host_users, "containers": [{"name": "c", "image": "i"}]}
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn a_pod_wanting_a_user_namespace_gets_no_sandbox_with_upstream_messages() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let rt = FakeRuntime::new();
        assert_eq!(check(&pod(None), "", &rt, root).await.unwrap(), None);
        assert_eq!(check(&pod(Some(true)), "", &rt, root).await.unwrap(), None);
        let msg = |e: super::super::error::Error| e.to_string();
        assert_eq!(
            msg(check(&pod(Some(false)), "", &rt, root).await.unwrap_err()),
            "failed to create pod sandbox: runtime handlers are not set"
        );
        rt.set_handlers(RuntimeHandlers { handlers: vec![handler("", false), handler("kata", true)], features: None });
        assert_eq!(
            msg(check(&pod(Some(false)), "", &rt, root).await.unwrap_err()),
            "failed to create pod sandbox: RuntimeClass handler \"\" does not support user namespaces"
        );
        assert_eq!(
            msg(check(&pod(Some(false)), "gone", &rt, root).await.unwrap_err()),
            "failed to create pod sandbox: the handler \"gone\" is not known"
        );
        let ns = check(&pod(Some(false)), "kata", &rt, root).await.unwrap().unwrap();
        assert_eq!(ns.mode, api::NamespaceMode::Pod as i32);
        let one = api::IdMapping { host_id: 65536, container_id: 0, length: 65536 };
        assert_eq!((ns.uids.clone(), ns.gids.clone()), (vec![one], vec![one]));
    }

    #[test]
    fn each_pod_keeps_its_own_range_until_its_directory_goes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let host = |ns: api::UserNamespace| ns.uids[0].host_id;
        assert_eq!(host(mappings(root, "a").unwrap()), 65536);
        assert_eq!(host(mappings(root, "b").unwrap()), 131072);
        assert_eq!(host(mappings(root, "a").unwrap()), 65536, "recorded");
        let file = std::fs::read_to_string(root.join("pods/a/userns")).unwrap();
        assert_eq!(
            file,
            r#"{"uidMappings":[{"hostId":65536,"containerId":0,"length":65536}],"gidMappings":[{"hostId":65536,"containerId":0,"length":65536}]}"#
        );
        std::fs::remove_dir_all(root.join("pods/a")).unwrap();
        assert_eq!(host(mappings(root, "c").unwrap()), 65536, "a's range is free again");
    }
}
