//! Which devices each container holds (upstream's podDevices, pod_devices.go): pod UID →
//! container → resource → the device IDs by NUMA node and the plugin's AllocateResponse. The
//! checkpoint is made from it and restores it; the container's run options are merged from it.

use super::checkpoint::{Data, Entry};
use super::proto::ContainerAllocateResponse;
use prost::Message as _;
use std::collections::{BTreeMap, BTreeSet};

/// The NUMA key of devices without topology (upstream's nodeWithoutTopology).
pub const NO_TOPOLOGY: i64 = -1;

/// One container's devices of one resource.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Allocation {
    /// NUMA node (or [`NO_TOPOLOGY`]) → device IDs.
    pub by_numa: BTreeMap<i64, Vec<String>>,
    pub response: ContainerAllocateResponse,
    /// Read from the checkpoint at start: the container was admitted by an earlier kubelet.
    pub restored: bool,
}

impl Allocation {
    pub fn ids(&self) -> BTreeSet<String> {
        self.by_numa.values().flatten().cloned().collect()
    }
}

/// What the plugins' AllocateResponses ask of a container's runtime config (upstream's
/// DeviceRunContainerOptions), merged over its resources in name order; the first setting of an
/// env var, mount or device path or annotation wins, as upstream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunOptions {
    pub envs: Vec<(String, String)>,
    /// (container path, host path, read-only).
    pub mounts: Vec<(String, String, bool)>,
    /// (container path, host path, permissions).
    pub devices: Vec<(String, String, String)>,
    pub annotations: Vec<(String, String)>,
    /// Fully qualified CDI device names, each once.
    pub cdi_devices: Vec<String>,
}

type Containers = BTreeMap<String, BTreeMap<String, Allocation>>;

#[derive(Debug, Clone, Default)]
pub struct PodDevices(BTreeMap<String, Containers>);

impl PodDevices {
    pub fn insert(&mut self, uid: &str, container: &str, resource: &str, allocation: Allocation) {
        self.0
            .entry(uid.to_string())
            .or_default()
            .entry(container.to_string())
            .or_default()
            .insert(resource.to_string(), allocation);
    }

    pub fn get(&self, uid: &str, container: &str, resource: &str) -> Option<&Allocation> {
        self.0.get(uid)?.get(container)?.get(resource)
    }

    /// The device IDs `container` holds of `resource` (upstream's containerDevices).
    pub fn container_devices(&self, uid: &str, container: &str, resource: &str) -> Option<BTreeSet<String>> {
        self.get(uid, container, resource).map(Allocation::ids)
    }

    /// Every resource `container` holds devices of.
    pub fn container(&self, uid: &str, container: &str) -> Option<&BTreeMap<String, Allocation>> {
        self.0.get(uid)?.get(container)
    }

    pub fn pods(&self) -> BTreeSet<String> {
        self.0.keys().cloned().collect()
    }

    /// Forgets the pods not in `keep`; whether any was forgotten.
    pub fn retain_pods(&mut self, keep: impl Fn(&str) -> bool) -> bool {
        let before = self.0.len();
        self.0.retain(|uid, _| keep(uid));
        before != self.0.len()
    }

    /// Resource → every device some container holds (upstream's devices()).
    pub fn devices(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (resource, a) in self.0.values().flat_map(|c| c.values()).flat_map(|r| r.iter()) {
            out.entry(resource.clone()).or_default().extend(a.ids());
        }
        out
    }

    /// The checkpoint's entries (None when empty, as Go's nil slice).
    pub fn to_entries(&self) -> Option<Vec<Entry>> {
        let mut out = Vec::new();
        for (uid, containers) in &self.0 {
            for (container, resources) in containers {
                for (resource, a) in resources {
                    out.push(Entry {
                        pod_uid: uid.clone(),
                        container_name: container.clone(),
                        resource_name: resource.clone(),
                        device_ids: a.by_numa.clone(),
                        alloc_resp: Some(a.response.encode_to_vec()),
                    });
                }
            }
        }
        (!out.is_empty()).then_some(out)
    }

    /// Restores from a checkpoint; entries whose response cannot be decoded keep their devices
    /// with an empty response (upstream logs and does the same).
    pub fn from_checkpoint(data: &Data) -> Self {
        let mut out = Self::default();
        for e in data.entries.iter().flatten() {
            let response = e
                .alloc_resp
                .as_deref()
                .and_then(|b| match ContainerAllocateResponse::decode(b) {
                    Ok(r) => Some(r),
                    Err(err) => {
                        tracing::warn!(pod_uid = %e.pod_uid, container = %e.container_name, error = %err, "cannot decode a checkpointed AllocateResponse");
                        None
                    }
                })
                .unwrap_or_default();
            let a = Allocation { by_numa: e.device_ids.clone(), response, restored: true };
            out.insert(&e.pod_uid, &e.container_name, &e.resource_name, a);
        }
        out
    }

    /// The container's run options from every resource it holds (upstream's
    /// deviceRunContainerOptions; resources in name order rather than Go's map order).
    pub fn run_options(&self, uid: &str, container: &str) -> RunOptions {
        let mut opts = RunOptions::default();
        let Some(resources) = self.container(uid, container) else { return opts };
        let mut envs = BTreeMap::new();
        let mut mounts = BTreeMap::new();
        let mut devices = BTreeMap::new();
        let mut annotations = BTreeMap::new();
        let mut cdi = BTreeSet::new();
        for (resource, a) in resources {
            let r = &a.response;
            // Go's map order is random; sorted here so the config is stable.
            let sorted = |m: &std::collections::HashMap<String, String>| {
                m.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<BTreeMap<_, _>>()
            };
            for (k, v) in sorted(&r.envs) {
                match envs.get(&k) {
                    Some(old) if old != &v => {
                        tracing::warn!(resource, env = %k, "environment variable has conflicting settings; keeping the first")
                    }
                    Some(_) => {}
                    None => {
                        envs.insert(k.clone(), v.clone());
                        opts.envs.push((k, v));
                    }
                }
            }
            for d in &r.devices {
                if devices.insert(d.container_path.clone(), d.host_path.clone()).is_none() {
                    opts.devices.push((d.container_path.clone(), d.host_path.clone(), d.permissions.clone()));
                }
            }
            for m in &r.mounts {
                if mounts.insert(m.container_path.clone(), m.host_path.clone()).is_none() {
                    opts.mounts.push((m.container_path.clone(), m.host_path.clone(), m.read_only));
                }
            }
            for (k, v) in sorted(&r.annotations) {
                if annotations.insert(k.clone(), v.clone()).is_none() {
                    opts.annotations.push((k, v));
                }
            }
            for d in &r.cdi_devices {
                if cdi.insert(d.name.clone()) {
                    opts.cdi_devices.push(d.name.clone());
                }
            }
        }
        opts
    }
}

#[cfg(test)]
mod tests {
    use super::super::proto::{CdiDevice, DeviceSpec, Mount};
    use super::*;

    fn alloc(ids: &[&str], envs: &[(&str, &str)], mount: &str) -> Allocation {
        Allocation {
            by_numa: BTreeMap::from([(NO_TOPOLOGY, ids.iter().map(|s| s.to_string()).collect())]),
            response: ContainerAllocateResponse {
                envs: envs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                mounts: vec![Mount {
                    container_path: mount.into(),
                    host_path: format!("/host{mount}"),
                    read_only: true,
                }],
                devices: vec![DeviceSpec {
                    container_path: "/dev/shared".into(),
                    host_path: "/dev/null".into(),
                    permissions: "rw".into(),
                }],
                annotations: Default::default(),
                cdi_devices: vec![CdiDevice { name: "example.com/widget=w0".into() }],
            },
            restored: false,
        }
    }

    #[test]
    fn run_options_merge_resources_and_keep_the_first_setting() {
        let mut pd = PodDevices::default();
        pd.insert("u", "c", "a.com/x", alloc(&["x0"], &[("IDS", "x0"), ("A", "1")], "/x"));
        pd.insert("u", "c", "b.com/y", alloc(&["y0", "y1"], &[("IDS", "y0,y1"), ("B", "2")], "/y"));
        let o = pd.run_options("u", "c");
        assert_eq!(o.envs, vec![("A".into(), "1".into()), ("IDS".into(), "x0".into()), ("B".into(), "2".into())]);
        assert_eq!(o.mounts, vec![("/x".into(), "/host/x".into(), true), ("/y".into(), "/host/y".into(), true)]);
        assert_eq!(o.devices.len(), 1, "one device per container path");
        assert_eq!(o.cdi_devices, vec!["example.com/widget=w0".to_string()]);
        assert_eq!(pd.run_options("u", "other"), RunOptions::default());
    }

    #[test]
    fn the_checkpoint_entries_restore_the_same_assignments() {
        let mut pd = PodDevices::default();
        pd.insert("u", "c", "a.com/x", alloc(&["x0", "x1"], &[("IDS", "x0,x1")], "/x"));
        let data = Data { entries: pd.to_entries(), registered: Some(BTreeMap::new()) };
        let back = PodDevices::from_checkpoint(&data);
        let a = back.get("u", "c", "a.com/x").unwrap();
        assert!(a.restored);
        assert_eq!(a.ids(), BTreeSet::from(["x0".to_string(), "x1".to_string()]));
        assert_eq!(a.response, pd.get("u", "c", "a.com/x").unwrap().response);
        assert_eq!(back.devices()["a.com/x"].len(), 2);
        assert_eq!(PodDevices::default().to_entries(), None);
    }
}
