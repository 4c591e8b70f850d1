//! An in-memory CRI runtime for unit tests and benchmarks: containers do nothing until the test
//! says they exited. Every call is recorded so tests can assert on what the kubelet asked for.

use super::{CriError, Result, Runtime, api};
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Default)]
struct State {
    next_id: u64,
    sandboxes: BTreeMap<String, (api::PodSandbox, api::PodSandboxConfig)>,
    containers: BTreeMap<String, api::ContainerStatus>,
    configs: HashMap<String, api::ContainerConfig>,
    container_sandbox: HashMap<String, String>,
    images: HashSet<String>,
    /// The user an image's config names (ImageStatus `uid` / `username`).
    image_users: HashMap<String, (Option<i64>, String)>,
    /// Images a pull may fetch (the "registry").
    registry: HashSet<String>,
    /// Registry images that need these credentials (user, password).
    private: HashMap<String, (String, String)>,
    /// Every public image is pullable (hollow nodes run whatever the API asks for).
    open_registry: bool,
    calls: Vec<String>,
    /// Benchmarks turn the call log off (it grows with every call).
    no_call_log: bool,
    /// Scripted ExecSync answers per container name and command (the last one repeats).
    exec_results: HashMap<(String, Vec<String>), std::collections::VecDeque<super::ExecOutput>>,
    execs: Vec<(String, Vec<String>)>,
    /// How long a pull takes.
    pull_delay: std::time::Duration,
    /// How long RunPodSandbox takes.
    sandbox_delay: std::time::Duration,
    handlers: super::RuntimeHandlers,
    /// Operations that fail with this message the next time they are called.
    failures: HashMap<&'static str, String>,
    /// Usage figures reported by the stats calls, per container id.
    stats: HashMap<String, FakeStats>,
    /// Subscribers of GetContainerEvents (none until the first subscription).
    events: Option<tokio::sync::broadcast::Sender<api::ContainerEventResponse>>,
    /// GetContainerEvents answers Unimplemented (as containerd 1.6 does).
    events_unimplemented: bool,
    /// Events a subscriber may fall behind by (0: [`EVENT_BUFFER`]).
    event_buffer: usize,
    /// RuntimeConfig's cgroup driver; `None`: Unimplemented (as containerd 1.6).
    cgroup_driver: Option<api::CgroupDriver>,
    /// RuntimeConfig fails with this code.
    runtime_config_error: Option<tonic::Code>,
}

impl State {
    /// Sends a container event (for `id` in sandbox `sandbox_id`) to the subscribers.
    fn emit(&self, id: &str, sandbox_id: &str, kind: api::ContainerEventType) {
        let Some(tx) = &self.events else { return };
        let labels = self.sandboxes.get(sandbox_id).map(|(sb, _)| sb.labels.clone()).unwrap_or_default();
        let _ = tx.send(api::ContainerEventResponse {
            container_id: id.to_string(),
            container_event_type: kind as i32,
            created_at: now_nanos(),
            pod_sandbox_status: Some(api::PodSandboxStatus {
                id: sandbox_id.to_string(),
                labels,
                ..Default::default()
            }),
            containers_statuses: Vec::new(),
        });
    }

    fn sandbox_of(&self, id: &str) -> String {
        self.container_sandbox.get(id).cloned().unwrap_or_default()
    }
}

/// The fake runtime. Cloning shares the state.
#[derive(Clone, Default)]
pub struct FakeRuntime {
    state: Arc<Mutex<State>>,
}

fn now_nanos() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

impl FakeRuntime {
    /// A fake that keeps no call log, for long benchmark runs (`calls()` stays empty).
    pub fn without_call_log() -> Self {
        let f = Self::default();
        f.lock().no_call_log = true;
        f
    }

    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn enter(&self, op: &'static str) -> Result<MutexGuard<'_, State>> {
        let mut s = self.lock();
        if !s.no_call_log {
            s.calls.push(op.to_string());
        }
        match s.failures.remove(op) {
            Some(msg) => Err(CriError::new(op, tonic::Code::Unknown, msg)),
            None => Ok(s),
        }
    }

    /// Puts an image in the runtime's store.
    pub fn add_image(&self, image: &str) {
        self.lock().images.insert(image.to_string());
    }

    /// The user `image`'s config names: a uid, or a user name.
    pub fn set_image_user(&self, image: &str, uid: Option<i64>, username: &str) {
        self.lock().image_users.insert(image.to_string(), (uid, username.to_string()));
    }

    /// Makes an image pullable.
    pub fn add_registry_image(&self, image: &str) {
        self.lock().registry.insert(image.to_string());
    }

    /// Makes every image pullable (except private ones without their credentials).
    pub fn open_registry(&self) {
        self.lock().open_registry = true;
    }

    /// Makes every pull take `d` (tokio time, so paused-time tests stay instant).
    pub fn set_pull_delay(&self, d: std::time::Duration) {
        self.lock().pull_delay = d;
    }

    /// Makes every RunPodSandbox take `d` (tokio time).
    /// What `handlers` (CRI Status runtime_handlers / features) answers.
    pub fn set_handlers(&self, h: super::RuntimeHandlers) {
        self.lock().handlers = h;
    }

    /// The runtime handler each sandbox was made with, by sandbox id.
    pub fn sandbox_handler(&self, id: &str) -> Option<String> {
        self.lock().sandboxes.get(id).map(|(sb, _)| sb.runtime_handler.clone())
    }

    pub fn set_sandbox_delay(&self, d: std::time::Duration) {
        self.lock().sandbox_delay = d;
    }

    /// Makes an image pullable only with these credentials.
    pub fn add_private_image(&self, image: &str, user: &str, password: &str) {
        let mut s = self.lock();
        s.registry.insert(image.to_string());
        s.private.insert(image.to_string(), (user.to_string(), password.to_string()));
    }

    /// The next call of `op` (e.g. "CreateContainer") fails with `message`.
    pub fn fail_next(&self, op: &'static str, message: &str) {
        self.lock().failures.insert(op, message.to_string());
    }

    /// What RuntimeConfig reports (`None`: Unimplemented).
    pub fn set_cgroup_driver(&self, d: Option<api::CgroupDriver>) {
        self.lock().cgroup_driver = d;
    }

    /// RuntimeConfig fails with `code` (`None`: answers again).
    pub fn set_runtime_config_error(&self, code: Option<tonic::Code>) {
        self.lock().runtime_config_error = code;
    }

    /// The names of the calls made so far.
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    /// What ExecSync of `cmd` in containers named `name` returns (queued in order; the last one
    /// repeats; unscripted commands succeed).
    pub fn script_exec(&self, name: &str, cmd: &[&str], exit_codes: &[i32]) {
        let key = (name.to_string(), cmd.iter().map(|s| s.to_string()).collect());
        let outs = exit_codes.iter().map(|c| super::ExecOutput { exit_code: *c, ..Default::default() });
        self.lock().exec_results.entry(key).or_default().extend(outs);
    }

    /// Every ExecSync made: (container id, command).
    pub fn execs(&self) -> Vec<(String, Vec<String>)> {
        self.lock().execs.clone()
    }

    /// Marks a running container as exited with `code`.
    pub fn exit_container(&self, id: &str, code: i32) {
        let mut s = self.lock();
        if let Some(c) = s.containers.get_mut(id) {
            c.state = api::ContainerState::ContainerExited as i32;
            c.exit_code = code;
            c.finished_at = now_nanos();
            c.reason = if code == 0 { "Completed".into() } else { "Error".into() };
            let sandbox = s.sandbox_of(id);
            s.emit(id, &sandbox, api::ContainerEventType::ContainerStoppedEvent);
        }
    }

    /// How many events a GetContainerEvents subscriber may fall behind by before its stream
    /// breaks (default 4,096). The buffer is allocated whole: a hollow node, with a few dozen
    /// pods, wants a small one (4,096 slots of `ContainerEventResponse` are ~1.6 MiB).
    pub fn set_event_buffer(&self, events: usize) {
        self.lock().event_buffer = events.max(1);
    }

    /// Makes GetContainerEvents answer Unimplemented (containerd 1.6) or work again.
    pub fn set_events_unimplemented(&self, unimplemented: bool) {
        self.lock().events_unimplemented = unimplemented;
    }

    /// Ends every open GetContainerEvents stream (as a runtime restart would).
    pub fn break_event_streams(&self) {
        self.lock().events = None;
    }

    /// The config a container was created with.
    pub fn config(&self, id: &str) -> Option<api::ContainerConfig> {
        self.lock().configs.get(id).cloned()
    }

    /// Ids of the containers named `name`, oldest first.
    pub fn containers_named(&self, name: &str) -> Vec<String> {
        let s = self.lock();
        let mut v: Vec<_> = s
            .containers
            .values()
            .filter(|c| c.metadata.as_ref().is_some_and(|m| m.name == name))
            .map(|c| (c.created_at, c.id.clone()))
            .collect();
        v.sort();
        v.into_iter().map(|(_, id)| id).collect()
    }

    /// Sets the usage the stats calls report for a container.
    pub fn set_stats(&self, id: &str, stats: FakeStats) {
        self.lock().stats.insert(id.to_string(), stats);
    }

    pub fn sandbox_count(&self) -> usize {
        self.lock().sandboxes.len()
    }
}

fn not_found(op: &'static str, what: &str) -> CriError {
    CriError::new(op, tonic::Code::NotFound, format!("{what} not found"))
}

#[async_trait]
impl Runtime for FakeRuntime {
    async fn version(&self) -> Result<api::VersionResponse> {
        drop(self.enter("Version")?);
        Ok(api::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "fake".into(),
            runtime_version: "0.0.0".into(),
            runtime_api_version: "v1".into(),
        })
    }

    async fn status(&self) -> Result<api::RuntimeStatus> {
        drop(self.enter("Status")?);
        let cond = |t: &str| api::RuntimeCondition { r#type: t.into(), status: true, ..Default::default() };
        Ok(api::RuntimeStatus { conditions: vec![cond("RuntimeReady"), cond("NetworkReady")] })
    }

    async fn run_pod_sandbox(&self, config: api::PodSandboxConfig) -> Result<String> {
        self.run_pod_sandbox_with_handler(config, "").await
    }

    async fn runtime_config(&self) -> Result<Option<api::LinuxRuntimeConfiguration>> {
        let s = self.enter("RuntimeConfig")?;
        if let Some(code) = s.runtime_config_error {
            return Err(CriError::new("RuntimeConfig", code, "runtime config unavailable"));
        }
        match s.cgroup_driver {
            Some(d) => Ok(Some(api::LinuxRuntimeConfiguration { cgroup_driver: d as i32 })),
            None => Err(CriError::new("RuntimeConfig", tonic::Code::Unimplemented, "unknown method RuntimeConfig")),
        }
    }

    async fn handlers(&self) -> Result<super::RuntimeHandlers> {
        drop(self.enter("Status")?);
        Ok(self.lock().handlers.clone())
    }

    async fn run_pod_sandbox_with_handler(
        &self,
        config: api::PodSandboxConfig,
        runtime_handler: &str,
    ) -> Result<String> {
        let delay = self.lock().sandbox_delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut s = self.enter("RunPodSandbox")?;
        s.next_id += 1;
        let id = format!("sandbox-{}", s.next_id);
        let sandbox = api::PodSandbox {
            id: id.clone(),
            metadata: config.metadata.clone(),
            state: api::PodSandboxState::SandboxReady as i32,
            created_at: now_nanos() + s.next_id as i64,
            labels: config.labels.clone(),
            annotations: config.annotations.clone(),
            runtime_handler: runtime_handler.to_string(),
        };
        s.sandboxes.insert(id.clone(), (sandbox, config));
        s.emit(&id, &id, api::ContainerEventType::ContainerStartedEvent);
        Ok(id)
    }

    async fn stop_pod_sandbox(&self, id: &str) -> Result<()> {
        let mut s = self.enter("StopPodSandbox")?;
        let ids: Vec<String> =
            s.container_sandbox.iter().filter(|(_, sb)| sb.as_str() == id).map(|(c, _)| c.clone()).collect();
        for cid in ids {
            if let Some(c) = s.containers.get_mut(&cid)
                && c.state != api::ContainerState::ContainerExited as i32
            {
                c.state = api::ContainerState::ContainerExited as i32;
                c.exit_code = 137;
                c.finished_at = now_nanos();
                s.emit(&cid, id, api::ContainerEventType::ContainerStoppedEvent);
            }
        }
        if let Some((sb, _)) = s.sandboxes.get_mut(id) {
            sb.state = api::PodSandboxState::SandboxNotready as i32;
            s.emit(id, id, api::ContainerEventType::ContainerStoppedEvent);
        }
        Ok(())
    }

    async fn remove_pod_sandbox(&self, id: &str) -> Result<()> {
        let mut s = self.enter("RemovePodSandbox")?;
        let ids: Vec<String> =
            s.container_sandbox.iter().filter(|(_, sb)| sb.as_str() == id).map(|(c, _)| c.clone()).collect();
        for cid in &ids {
            s.emit(cid, id, api::ContainerEventType::ContainerDeletedEvent);
        }
        if s.sandboxes.contains_key(id) {
            s.emit(id, id, api::ContainerEventType::ContainerDeletedEvent);
        }
        s.sandboxes.remove(id);
        for cid in ids {
            s.containers.remove(&cid);
            s.container_sandbox.remove(&cid);
            s.configs.remove(&cid);
            s.stats.remove(&cid);
        }
        Ok(())
    }

    async fn pod_sandbox_status(&self, id: &str) -> Result<api::PodSandboxStatus> {
        let s = self.enter("PodSandboxStatus")?;
        let (sb, config) = s.sandboxes.get(id).ok_or_else(|| not_found("PodSandboxStatus", id))?;
        Ok(api::PodSandboxStatus {
            id: sb.id.clone(),
            metadata: sb.metadata.clone(),
            state: sb.state,
            created_at: sb.created_at,
            network: Some(api::PodSandboxNetworkStatus { ip: "10.0.0.2".into(), additional_ips: vec![] }),
            labels: config.labels.clone(),
            annotations: config.annotations.clone(),
            ..Default::default()
        })
    }

    async fn list_pod_sandboxes(&self, filter: Option<api::PodSandboxFilter>) -> Result<Vec<api::PodSandbox>> {
        let s = self.enter("ListPodSandbox")?;
        let want = filter.map(|f| f.label_selector).unwrap_or_default();
        Ok(s.sandboxes
            .values()
            .map(|(sb, _)| sb.clone())
            .filter(|sb| want.iter().all(|(k, v)| sb.labels.get(k) == Some(v)))
            .collect())
    }

    async fn create_container(
        &self,
        sandbox_id: &str,
        config: api::ContainerConfig,
        sandbox_config: api::PodSandboxConfig,
    ) -> Result<String> {
        let mut s = self.enter("CreateContainer")?;
        if !s.sandboxes.contains_key(sandbox_id) {
            return Err(not_found("CreateContainer", sandbox_id));
        }
        s.next_id += 1;
        let id = format!("container-{}", s.next_id);
        let status = api::ContainerStatus {
            id: id.clone(),
            metadata: config.metadata.clone(),
            state: api::ContainerState::ContainerCreated as i32,
            created_at: now_nanos() + s.next_id as i64,
            image: config.image.clone(),
            image_ref: config.image.as_ref().map(|i| format!("sha256:{}", i.image)).unwrap_or_default(),
            labels: config.labels.clone(),
            annotations: config.annotations.clone(),
            // As containerd: the log path under the sandbox's log directory, and the mounts.
            log_path: match sandbox_config.log_directory.as_str() {
                "" => config.log_path.clone(),
                dir => std::path::Path::new(dir).join(&config.log_path).display().to_string(),
            },
            mounts: config.mounts.clone(),
            ..Default::default()
        };
        s.containers.insert(id.clone(), status);
        s.configs.insert(id.clone(), config);
        s.container_sandbox.insert(id.clone(), sandbox_id.to_string());
        s.emit(&id, sandbox_id, api::ContainerEventType::ContainerCreatedEvent);
        Ok(id)
    }

    async fn start_container(&self, id: &str) -> Result<()> {
        let mut s = self.enter("StartContainer")?;
        let c = s.containers.get_mut(id).ok_or_else(|| not_found("StartContainer", id))?;
        c.state = api::ContainerState::ContainerRunning as i32;
        c.started_at = now_nanos();
        let sandbox = s.sandbox_of(id);
        s.emit(id, &sandbox, api::ContainerEventType::ContainerStartedEvent);
        Ok(())
    }

    async fn stop_container(&self, id: &str, _timeout_secs: i64) -> Result<()> {
        let mut s = self.enter("StopContainer")?;
        let c = s.containers.get_mut(id).ok_or_else(|| not_found("StopContainer", id))?;
        if c.state == api::ContainerState::ContainerRunning as i32 {
            c.state = api::ContainerState::ContainerExited as i32;
            c.exit_code = 137;
            c.finished_at = now_nanos();
            let sandbox = s.sandbox_of(id);
            s.emit(id, &sandbox, api::ContainerEventType::ContainerStoppedEvent);
        }
        Ok(())
    }

    async fn remove_container(&self, id: &str) -> Result<()> {
        let mut s = self.enter("RemoveContainer")?;
        if s.containers.contains_key(id) {
            let sandbox = s.sandbox_of(id);
            s.emit(id, &sandbox, api::ContainerEventType::ContainerDeletedEvent);
        }
        s.containers.remove(id);
        s.container_sandbox.remove(id);
        s.configs.remove(id);
        s.stats.remove(id);
        Ok(())
    }

    async fn list_containers(&self, filter: Option<api::ContainerFilter>) -> Result<Vec<api::Container>> {
        let s = self.enter("ListContainers")?;
        let want = filter.map(|f| f.label_selector).unwrap_or_default();
        Ok(s.containers
            .values()
            .filter(|c| want.iter().all(|(k, v)| c.labels.get(k) == Some(v)))
            .map(|c| api::Container {
                id: c.id.clone(),
                pod_sandbox_id: s.container_sandbox.get(&c.id).cloned().unwrap_or_default(),
                metadata: c.metadata.clone(),
                image: c.image.clone(),
                image_ref: c.image_ref.clone(),
                state: c.state,
                created_at: c.created_at,
                labels: c.labels.clone(),
                annotations: c.annotations.clone(),
                image_id: String::new(),
            })
            .collect())
    }

    async fn container_status(&self, id: &str) -> Result<api::ContainerStatus> {
        let s = self.enter("ContainerStatus")?;
        s.containers.get(id).cloned().ok_or_else(|| not_found("ContainerStatus", id))
    }

    async fn exec_sync(&self, id: &str, cmd: Vec<String>, _timeout: std::time::Duration) -> Result<super::ExecOutput> {
        let mut s = self.enter("ExecSync")?;
        let name = match s.containers.get(id) {
            Some(c) if c.state == api::ContainerState::ContainerRunning as i32 => {
                c.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default()
            }
            _ => {
                return Err(CriError::new("ExecSync", tonic::Code::NotFound, format!("container {id} is not running")));
            }
        };
        s.execs.push((id.to_string(), cmd.clone()));
        let q = s.exec_results.entry((name, cmd)).or_default();
        let out = if q.len() > 1 { q.pop_front() } else { q.front().cloned() };
        Ok(out.unwrap_or_default())
    }

    async fn image_status(&self, image: &str) -> Result<Option<api::Image>> {
        let s = self.enter("ImageStatus")?;
        // By name or by the ID PullImage / ListImages give.
        let name = image.strip_prefix("sha256:").unwrap_or(image);
        let (uid, username) = s.image_users.get(name).cloned().unwrap_or_default();
        Ok(s.images.contains(name).then(|| api::Image {
            id: format!("sha256:{name}"),
            repo_tags: vec![name.to_string()],
            uid: uid.map(|value| api::Int64Value { value }),
            username,
            ..Default::default()
        }))
    }

    async fn pull_image(&self, image: &str, sandbox_config: Option<api::PodSandboxConfig>) -> Result<String> {
        self.pull_image_with_auth(image, None, sandbox_config).await
    }

    async fn pull_image_with_auth(
        &self,
        image: &str,
        auth: Option<api::AuthConfig>,
        _sandbox_config: Option<api::PodSandboxConfig>,
    ) -> Result<String> {
        let delay = self.lock().pull_delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut s = self.enter("PullImage")?;
        if let Some((user, pass)) = s.private.get(image) {
            let ok = auth.as_ref().is_some_and(|a| &a.username == user && &a.password == pass);
            if !ok {
                return Err(CriError::new("PullImage", tonic::Code::Unknown, format!("{image}: 401 Unauthorized")));
            }
        }
        if !s.open_registry && !s.registry.contains(image) {
            return Err(CriError::new("PullImage", tonic::Code::NotFound, format!("{image}: not found")));
        }
        s.images.insert(image.to_string());
        Ok(format!("sha256:{image}"))
    }

    async fn list_images(&self) -> Result<Vec<api::Image>> {
        let s = self.enter("ListImages")?;
        Ok(s.images
            .iter()
            .map(|i| api::Image { id: format!("sha256:{i}"), repo_tags: vec![i.clone()], ..Default::default() })
            .collect())
    }

    async fn remove_image(&self, image: &str) -> Result<()> {
        // By name or by the ID ListImages gives.
        self.enter("RemoveImage")?.images.remove(image.strip_prefix("sha256:").unwrap_or(image));
        Ok(())
    }

    async fn image_fs_info(&self) -> Result<api::ImageFsInfoResponse> {
        let s = self.enter("ImageFsInfo")?;
        let usage = api::FilesystemUsage {
            timestamp: now_nanos(),
            fs_id: Some(api::FilesystemIdentifier { mountpoint: "/fake/images".into() }),
            used_bytes: Some(api::UInt64Value { value: FAKE_IMAGE_SIZE * s.images.len() as u64 }),
            inodes_used: Some(api::UInt64Value { value: s.images.len() as u64 }),
        };
        Ok(api::ImageFsInfoResponse { image_filesystems: vec![usage], container_filesystems: vec![] })
    }

    async fn exec(&self, req: api::ExecRequest) -> Result<String> {
        let s = self.enter("Exec")?;
        running(&s, "Exec", &req.container_id)?;
        Ok(format!("http://127.0.0.1:0/exec/{}", req.container_id))
    }

    async fn attach(&self, req: api::AttachRequest) -> Result<String> {
        let s = self.enter("Attach")?;
        running(&s, "Attach", &req.container_id)?;
        Ok(format!("http://127.0.0.1:0/attach/{}", req.container_id))
    }

    async fn port_forward(&self, req: api::PortForwardRequest) -> Result<String> {
        let s = self.enter("PortForward")?;
        if !s.sandboxes.contains_key(&req.pod_sandbox_id) {
            return Err(not_found("PortForward", &req.pod_sandbox_id));
        }
        Ok(format!("http://127.0.0.1:0/portforward/{}", req.pod_sandbox_id))
    }

    async fn list_container_stats(
        &self,
        filter: Option<api::ContainerStatsFilter>,
    ) -> Result<Vec<api::ContainerStats>> {
        let s = self.enter("ListContainerStats")?;
        let f = filter.unwrap_or_default();
        Ok(s.containers
            .iter()
            .filter(|(id, c)| {
                c.state == api::ContainerState::ContainerRunning as i32
                    && (f.id.is_empty() || &f.id == *id)
                    && (f.pod_sandbox_id.is_empty() || s.container_sandbox.get(*id) == Some(&f.pod_sandbox_id))
                    && f.label_selector.iter().all(|(k, v)| c.labels.get(k) == Some(v))
            })
            .map(|(id, c)| fake_container_stats(id, c, s.stats.get(id).copied().unwrap_or_default()))
            .collect())
    }

    async fn list_pod_sandbox_stats(
        &self,
        filter: Option<api::PodSandboxStatsFilter>,
    ) -> Result<Vec<api::PodSandboxStats>> {
        let s = self.enter("ListPodSandboxStats")?;
        let f = filter.unwrap_or_default();
        Ok(s.sandboxes
            .iter()
            .filter(|(id, (sb, _))| {
                sb.state == api::PodSandboxState::SandboxReady as i32
                    && (f.id.is_empty() || &f.id == *id)
                    && f.label_selector.iter().all(|(k, v)| sb.labels.get(k) == Some(v))
            })
            .map(|(id, (sb, _))| {
                let containers: Vec<api::ContainerStats> = s
                    .containers
                    .iter()
                    .filter(|(cid, c)| {
                        s.container_sandbox.get(*cid) == Some(id)
                            && c.state == api::ContainerState::ContainerRunning as i32
                    })
                    .map(|(cid, c)| fake_container_stats(cid, c, s.stats.get(cid).copied().unwrap_or_default()))
                    .collect();
                let sum = |f: fn(&FakeStats) -> u64| {
                    containers
                        .iter()
                        .map(|c| {
                            let st = s.stats.get(&c.attributes.as_ref().map(|a| a.id.clone()).unwrap_or_default());
                            st.map(f).unwrap_or(0)
                        })
                        .sum::<u64>()
                };
                let ts = now_nanos();
                api::PodSandboxStats {
                    attributes: Some(api::PodSandboxAttributes {
                        id: id.clone(),
                        metadata: sb.metadata.clone(),
                        labels: sb.labels.clone(),
                        annotations: sb.annotations.clone(),
                    }),
                    linux: Some(api::LinuxPodSandboxStats {
                        cpu: Some(api::CpuUsage {
                            timestamp: ts,
                            usage_core_nano_seconds: Some(api::UInt64Value { value: sum(|s| s.cpu_nanos) }),
                            usage_nano_cores: None,
                        }),
                        memory: Some(api::MemoryUsage {
                            timestamp: ts,
                            working_set_bytes: Some(api::UInt64Value { value: sum(|s| s.memory_bytes) }),
                            ..Default::default()
                        }),
                        containers,
                        ..Default::default()
                    }),
                    windows: None,
                }
            })
            .collect())
    }

    async fn reopen_container_log(&self, id: &str) -> Result<()> {
        let s = self.enter("ReopenContainerLog")?;
        running(&s, "ReopenContainerLog", id)
    }

    /// Merges the non-zero fields into the container's recorded config, as containerd does.
    async fn update_container_resources(&self, id: &str, linux: api::LinuxContainerResources) -> Result<()> {
        let mut s = self.enter("UpdateContainerResources")?;
        if !s.containers.contains_key(id) {
            return Err(not_found("UpdateContainerResources", id));
        }
        let cfg = s.configs.entry(id.to_string()).or_default();
        let res = cfg.linux.get_or_insert_with(Default::default).resources.get_or_insert_with(Default::default);
        merge_resources(res, linux);
        Ok(())
    }

    async fn container_events(&self) -> Result<super::ContainerEvents> {
        use futures::StreamExt;
        use tokio::sync::broadcast::error::RecvError;
        let mut s = self.enter("GetContainerEvents")?;
        if s.events_unimplemented {
            return Err(CriError::new("GetContainerEvents", tonic::Code::Unimplemented, "unknown method"));
        }
        let buffer = if s.event_buffer == 0 { EVENT_BUFFER } else { s.event_buffer };
        let rx = s.events.get_or_insert_with(|| tokio::sync::broadcast::Sender::new(buffer)).subscribe();
        Ok(futures::stream::unfold(rx, |mut rx| async move {
            match rx.recv().await {
                Ok(ev) => Some((Ok(ev), rx)),
                // A subscriber too slow for the buffer has missed events: its stream breaks.
                Err(RecvError::Lagged(n)) => {
                    let e = CriError::new("GetContainerEvents", tonic::Code::DataLoss, format!("{n} events missed"));
                    Some((Err(e), rx))
                }
                Err(RecvError::Closed) => None,
            }
        })
        .boxed())
    }
}

/// Events a GetContainerEvents subscriber may fall behind by before its stream breaks.
const EVENT_BUFFER: usize = 4096;

/// The size the fake reports for every image.
pub const FAKE_IMAGE_SIZE: u64 = 1 << 20;

/// Usage figures a test sets for a container ([`FakeRuntime::set_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FakeStats {
    pub cpu_nanos: u64,
    pub memory_bytes: u64,
    pub writable_bytes: u64,
}

fn running(s: &State, op: &'static str, id: &str) -> Result<()> {
    match s.containers.get(id) {
        Some(c) if c.state == api::ContainerState::ContainerRunning as i32 => Ok(()),
        Some(_) => Err(CriError::new(op, tonic::Code::FailedPrecondition, format!("container {id} is not running"))),
        None => Err(not_found(op, id)),
    }
}

fn fake_container_stats(id: &str, c: &api::ContainerStatus, st: FakeStats) -> api::ContainerStats {
    let ts = now_nanos();
    api::ContainerStats {
        attributes: Some(api::ContainerAttributes {
            id: id.to_string(),
            metadata: c.metadata.clone(),
            labels: c.labels.clone(),
            annotations: c.annotations.clone(),
        }),
        cpu: Some(api::CpuUsage {
            timestamp: ts,
            usage_core_nano_seconds: Some(api::UInt64Value { value: st.cpu_nanos }),
            usage_nano_cores: None,
        }),
        memory: Some(api::MemoryUsage {
            timestamp: ts,
            working_set_bytes: Some(api::UInt64Value { value: st.memory_bytes }),
            ..Default::default()
        }),
        writable_layer: Some(api::FilesystemUsage {
            timestamp: ts,
            fs_id: Some(api::FilesystemIdentifier { mountpoint: "/fake/containers".into() }),
            used_bytes: Some(api::UInt64Value { value: st.writable_bytes }),
            inodes_used: None,
        }),
        swap: None,
    }
}

/// containerd's UpdateContainerResources: each field the request sets (non-zero, non-empty)
/// replaces the container's.
fn merge_resources(res: &mut api::LinuxContainerResources, new: api::LinuxContainerResources) {
    fn is_set<T: Default + PartialEq>(v: &T) -> bool {
        *v != T::default()
    }
    macro_rules! take {
        ($($f:ident),*) => {$(if is_set(&new.$f) { res.$f = new.$f; })*};
    }
    take!(
        cpu_period,
        cpu_quota,
        cpu_shares,
        memory_limit_in_bytes,
        oom_score_adj,
        cpuset_cpus,
        cpuset_mems,
        memory_swap_limit_in_bytes,
        hugepage_limits,
        unified
    );
}
