//! The device manager's bookkeeping, pure and synchronous (the parts of upstream's ManagerImpl
//! that need no RPC): devices per resource by health, the plugins' endpoints and when they
//! stopped, which devices containers hold, capacity and allocatable, and the device choice of
//! devicesToAllocate. `mod.rs` wraps it in a mutex and makes the plugin calls between its steps.

use super::checkpoint::Data;
use super::pod_devices::{Allocation, NO_TOPOLOGY, PodDevices};
use super::proto::{self, ContainerAllocateResponse, Device, DevicePluginOptions};
use super::{AllocError, Plugin};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How long a stopped plugin's resource stays in capacity (upstream's endpointStopGracePeriod);
/// then it is deleted and reported as 0.
pub const ENDPOINT_STOP_GRACE: Duration = Duration::from_secs(5 * 60);

/// A plugin that registered for a resource.
#[derive(Clone)]
pub struct Endpoint {
    /// None for a resource known only from the checkpoint (upstream's stopped endpoint).
    pub options: Option<DevicePluginOptions>,
    pub plugin: Option<Arc<dyn Plugin>>,
    /// When its ListAndWatch stream ended (or, for a checkpointed one, when the kubelet started).
    pub stopped_at: Option<SystemTime>,
    /// Which registration this is: a stream that ends after a newer registration is ignored.
    pub generation: u64,
}

impl Endpoint {
    fn grace_expired(&self, now: SystemTime) -> bool {
        self.stopped_at.is_some_and(|t| now.duration_since(t).unwrap_or_default() > ENDPOINT_STOP_GRACE)
    }
}

/// Extended resources for the node status: healthy devices as allocatable, all as capacity;
/// deleted resources as 0 in both (upstream's GetCapacity with the node setter's removal).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capacity {
    pub capacity: BTreeMap<String, i64>,
    pub allocatable: BTreeMap<String, i64>,
}

/// What devicesToAllocate decided before any plugin call.
pub enum Step {
    /// Nothing to do: the container holds its devices already (or was running before a restart).
    Done,
    /// Devices to allocate: `reused` (from the pod's finished init containers) and `needed` more
    /// from `available` (healthy and free); `required` in all.
    Need { reused: BTreeSet<String>, needed: usize, required: usize, available: BTreeSet<String>, endpoint: Endpoint },
}

#[derive(Default)]
pub struct State {
    pub healthy: BTreeMap<String, BTreeSet<String>>,
    pub unhealthy: BTreeMap<String, BTreeSet<String>>,
    /// Every device the plugin listed, for its topology.
    pub all: BTreeMap<String, BTreeMap<String, Device>>,
    pub endpoints: BTreeMap<String, Endpoint>,
    /// Resource → devices held or being allocated.
    pub allocated: BTreeMap<String, BTreeSet<String>>,
    pub pod_devices: PodDevices,
    /// Resources deleted after their grace: reported as 0 until a plugin registers them again.
    pub removed: BTreeSet<String>,
    next_generation: u64,
}

impl State {
    /// After a restart (upstream's readCheckpoint): the kept assignments, and each registered
    /// resource with no devices and a stopped endpoint, so its capacity is 0 until its plugin
    /// registers again (or deleted after the grace period).
    pub fn from_checkpoint(data: &Data, now: SystemTime) -> Self {
        let mut s = Self { pod_devices: PodDevices::from_checkpoint(data), ..Self::default() };
        s.allocated = s.pod_devices.devices();
        for resource in data.registered.iter().flat_map(|r| r.keys()) {
            s.healthy.insert(resource.clone(), BTreeSet::new());
            s.unhealthy.insert(resource.clone(), BTreeSet::new());
            s.endpoints.insert(
                resource.clone(),
                Endpoint { options: None, plugin: None, stopped_at: Some(now), generation: 0 },
            );
        }
        s
    }

    /// The checkpoint: the assignments and each resource's healthy devices.
    pub fn checkpoint(&self) -> Data {
        let registered = self.healthy.iter().map(|(r, ids)| (r.clone(), ids.iter().cloned().collect())).collect();
        Data { entries: self.pod_devices.to_entries(), registered: Some(registered) }
    }

    /// A plugin connected (upstream's registerEndpoint); its generation.
    pub fn register(&mut self, resource: &str, options: DevicePluginOptions, plugin: Arc<dyn Plugin>) -> u64 {
        self.next_generation += 1;
        let generation = self.next_generation;
        self.endpoints.insert(
            resource.to_string(),
            Endpoint { options: Some(options), plugin: Some(plugin), stopped_at: None, generation },
        );
        self.removed.remove(resource);
        generation
    }

    /// A ListAndWatch update: the plugin's whole device list (upstream's
    /// genericDeviceUpdateCallback).
    pub fn update_devices(&mut self, resource: &str, devices: Vec<Device>) {
        let (mut healthy, mut unhealthy) = (BTreeSet::new(), BTreeSet::new());
        let mut all = BTreeMap::new();
        for d in devices {
            if d.health == proto::HEALTHY {
                healthy.insert(d.id.clone());
            } else {
                unhealthy.insert(d.id.clone());
            }
            all.insert(d.id.clone(), d);
        }
        self.healthy.insert(resource.to_string(), healthy);
        self.unhealthy.insert(resource.to_string(), unhealthy);
        self.all.insert(resource.to_string(), all);
    }

    /// The plugin's stream ended (upstream's PluginDisconnected): every device of the resource
    /// unhealthy, the endpoint stopped now. Ignored for an older registration.
    pub fn disconnected(&mut self, resource: &str, generation: u64, now: SystemTime) -> bool {
        match self.endpoints.get_mut(resource) {
            Some(e) if e.generation == generation && e.stopped_at.is_none() => {
                e.stopped_at = Some(now);
                let healthy = std::mem::take(self.healthy.entry(resource.to_string()).or_default());
                self.unhealthy.entry(resource.to_string()).or_default().extend(healthy);
                true
            }
            _ => false,
        }
    }

    /// Capacity and allocatable (upstream's GetCapacity): resources whose endpoint stopped more
    /// than the grace period ago (or vanished) are deleted; whether anything was.
    pub fn capacity(&mut self, now: SystemTime) -> (Capacity, bool) {
        let mut out = Capacity::default();
        let resources: BTreeSet<String> = self.healthy.keys().chain(self.unhealthy.keys()).cloned().collect();
        let mut deleted = false;
        for r in resources {
            if self.endpoints.get(&r).is_none_or(|e| e.grace_expired(now)) {
                self.endpoints.remove(&r);
                self.healthy.remove(&r);
                self.unhealthy.remove(&r);
                self.all.remove(&r);
                self.removed.insert(r);
                deleted = true;
                continue;
            }
            let healthy = self.healthy.get(&r).map_or(0, BTreeSet::len) as i64;
            let unhealthy = self.unhealthy.get(&r).map_or(0, BTreeSet::len) as i64;
            out.capacity.insert(r.clone(), healthy + unhealthy);
            out.allocatable.insert(r, healthy);
        }
        for r in &self.removed {
            out.capacity.entry(r.clone()).or_insert(0);
            out.allocatable.entry(r.clone()).or_insert(0);
        }
        (out, deleted)
    }

    /// Upstream's isDevicePluginResource: registered (or known from the checkpoint) or held.
    pub fn is_device_plugin_resource(&self, resource: &str) -> bool {
        self.healthy.contains_key(resource) || self.allocated.contains_key(resource)
    }

    /// Frees the devices of pods that are no longer active (upstream's UpdateAllocatedDevices);
    /// whether any pod was forgotten.
    pub fn update_allocated(&mut self, active: &dyn Fn(&str) -> bool) -> bool {
        let changed = self.pod_devices.retain_pods(active);
        self.allocated = self.pod_devices.devices();
        changed
    }

    /// The first part of upstream's devicesToAllocate: reuse, the registration and health
    /// checks, and the free healthy devices.
    pub fn step(
        &mut self,
        uid: &str,
        container: &str,
        resource: &str,
        required: usize,
        reusable: &BTreeSet<String>,
    ) -> Result<Step, AllocError> {
        let held = self.pod_devices.get(uid, container, resource);
        let mut needed = required;
        if let Some(a) = held {
            let ids = a.ids();
            if ids.len() != required {
                return Err(AllocError::RequestChanged {
                    pod_uid: uid.into(),
                    container: container.into(),
                    resource: resource.into(),
                    from: ids.len(),
                    to: required,
                });
            }
            // Upstream's kubelet-restart case (sources not ready, container running): the
            // containers admitted by the previous kubelet keep their devices without their
            // plugin being back yet. Restored entries are exactly those.
            if a.restored {
                return Ok(Step::Done);
            }
            needed = 0;
        }
        let Some(healthy) = self.healthy.get(resource) else {
            return Err(AllocError::Unregistered(resource.into()));
        };
        if healthy.is_empty() {
            return Err(AllocError::NoHealthy(resource.into()));
        }
        if let Some(ids) = self.pod_devices.container_devices(uid, container, resource)
            && !ids.is_subset(healthy)
        {
            return Err(AllocError::PreviouslyUnhealthy(resource.into()));
        }
        if needed == 0 {
            return Ok(Step::Done);
        }
        let endpoint =
            || self.endpoints.get(resource).cloned().ok_or_else(|| AllocError::UnknownPlugin(resource.into()));
        // Devices of the pod's finished init containers first.
        let reused: BTreeSet<String> = reusable.iter().take(needed).cloned().collect();
        needed -= reused.len();
        if needed == 0 {
            return Ok(Step::Need { reused, needed, required, available: BTreeSet::new(), endpoint: endpoint()? });
        }
        let in_use = self.allocated.get(resource).cloned().unwrap_or_default();
        let available: BTreeSet<String> = healthy.difference(&in_use).cloned().collect();
        if available.len() < needed {
            return Err(AllocError::Unavailable {
                resource: resource.into(),
                requested: needed,
                available: available.len(),
            });
        }
        Ok(Step::Need { reused, needed, required, available, endpoint: endpoint()? })
    }

    /// The rest of devicesToAllocate without a topology hint: the plugin's preferred devices
    /// first (those still free), then the others in ID order. The chosen devices are reserved.
    pub fn choose(
        &mut self,
        resource: &str,
        needed: usize,
        available: &BTreeSet<String>,
        preferred: &[String],
    ) -> Result<BTreeSet<String>, AllocError> {
        let in_use = self.allocated.get(resource).cloned().unwrap_or_default();
        let free: Vec<&String> = preferred
            .iter()
            .filter(|d| available.contains(*d))
            .chain(available.iter())
            .filter(|d| !in_use.contains(*d))
            .collect();
        let mut chosen = BTreeSet::new();
        for d in free {
            if chosen.len() == needed {
                break;
            }
            chosen.insert(d.clone());
        }
        if chosen.len() < needed {
            return Err(AllocError::Short { requested: needed, got: chosen.len() });
        }
        self.allocated.entry(resource.to_string()).or_default().extend(chosen.iter().cloned());
        Ok(chosen)
    }

    /// Records an allocation the plugin accepted, with the devices' NUMA nodes.
    pub fn commit(
        &mut self,
        uid: &str,
        container: &str,
        resource: &str,
        devices: &BTreeSet<String>,
        response: ContainerAllocateResponse,
    ) {
        let mut by_numa: BTreeMap<i64, Vec<String>> = BTreeMap::new();
        for d in devices {
            let nodes = self
                .all
                .get(resource)
                .and_then(|all| all.get(d))
                .and_then(|dev| dev.topology.as_ref())
                .map(|t| t.nodes.iter().map(|n| n.id).collect::<Vec<_>>())
                .unwrap_or_default();
            if nodes.is_empty() {
                by_numa.entry(NO_TOPOLOGY).or_default().push(d.clone());
            }
            for n in nodes {
                by_numa.entry(n).or_default().push(d.clone());
            }
        }
        self.pod_devices.insert(uid, container, resource, Allocation { by_numa, response, restored: false });
    }

    /// After a failed plugin call: what is held again from the assignments (upstream resets
    /// allocatedDevices from podDevices).
    pub fn rollback(&mut self) {
        self.allocated = self.pod_devices.devices();
    }
}
