//! The thin executor: performs a [`Plan`] against the runtime, in upstream's order
//! (kill, remove, create sandbox, start), recording per-container failures as waiting reasons.

use super::error::{Error, Result};
use super::observe::{CState, ContainerObs, PodObs};
use super::plan::Plan;
use super::runtime_config::{self, ContainerInput, NodeContext};
use super::security_context::ImageUser;
use super::status::WaitingReasons;
use super::termination_order::Order;
use crate::backoff::Keyed as Backoff;
use crate::clock::DynClock;
use crate::cri::labels::{ContainerAnnotations, ContainerType};
use crate::cri::{DynRuntime, api};
use crate::event_recorder::{Recorder, Type};
use crate::images::Images;
pub(crate) use crate::meta::pod_name;
use crate::pleg::{ContainerRecord, OwnChange, SandboxRecord};
use crate::prober::handlers::{self, Target};
use k8s_openapi::api::core::v1::{Container, Pod};
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Where `/var/log/containers` symlinks go.
pub const CONTAINER_LOGS_DIR: &str = "/var/log/containers";

/// How long a postStart hook may run before it counts as failed.
const POST_START_TIMEOUT: Duration = Duration::from_secs(120);

/// Upstream's floor for a kill's grace period.
const MIN_GRACE_SECS: i64 = 2;

#[derive(Clone)]
pub struct Deps {
    pub runtime: DynRuntime,
    /// The node's reader of ConfigMaps, Secrets and Services (env, imagePullSecrets), when there
    /// is an API server.
    pub objects: Option<crate::api::objects::Objects>,
    pub events: Recorder,
    pub images: Images,
    pub node: Arc<NodeContext>,
    pub clock: DynClock,
    pub container_logs_dir: PathBuf,
    /// Pod starts, image pulls and probes are recorded here.
    pub metrics: crate::metrics::Metrics,
    /// The volume manager: containers start once their pod's volumes are set up.
    pub volumes: crate::volume::VolumeManager,
    /// `spec.runtimeClassName` → the CRI runtime handler of the pod's sandbox.
    pub runtime_classes: crate::runtime_class::RuntimeClasses,
    /// The device plugins' devices, envs and mounts for containers that hold some (None: no
    /// device manager).
    pub devices: Option<crate::cm::devicemanager::DeviceManager>,
    /// The allocation manager: the resources the pod's containers were given and applied.
    pub allocation: crate::allocation::Manager,
    /// Image credential provider plugins, asked after the pod's imagePullSecrets.
    pub credential_providers: Option<crate::credential_provider::Providers>,
}

pub fn grace_secs(pod: &Pod) -> i64 {
    pod.metadata
        .deletion_grace_period_seconds
        .or_else(|| pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
        .unwrap_or(30)
        .max(MIN_GRACE_SECS)
}

fn log_symlink(dir: &Path, pod: &Pod, container: &str, id: &str) -> PathBuf {
    let r = runtime_config::pod_ref(pod);
    let mut name = format!("{}_{}_{}-{}", r.name, r.namespace, container, id);
    if name.len() > 251 {
        let mut cut = 251;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
    }
    dir.join(format!("{name}.log"))
}

/// Stops one container: its preStop hook first, inside the grace period it cannot extend, then
/// StopContainer (SIGTERM, SIGKILL when the rest of the grace period is over).
pub async fn stop_container(deps: &Deps, pod: &Pod, c: &ContainerObs, grace: i64, pod_ip: Option<&str>) -> Result<()> {
    stop_in_turn(deps, pod, c, grace, pod_ip, None).await
}

/// [`stop_container`], waiting after the preStop hook for the container's turn in `order` (a pod
/// with sidecars), the wait taken off the grace period, as upstream's killContainer.
async fn stop_in_turn(
    deps: &Deps,
    pod: &Pod,
    c: &ContainerObs,
    grace: i64,
    pod_ip: Option<&str>,
    order: Option<&Order>,
) -> Result<()> {
    let started = std::time::Instant::now();
    // App container or init container (a sidecar has hooks too).
    let spec = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.iter().chain(s.init_containers.iter().flatten()).find(|x| x.name == c.name));
    let pre_stop = spec.and_then(|x| x.lifecycle.as_ref()).and_then(|l| l.pre_stop.as_ref());
    if let Some(h) = pre_stop.filter(|_| c.state == CState::Running) {
        let target = Target {
            runtime: deps.runtime.clone(),
            container_id: c.id.clone(),
            pod_ip: pod_ip.map(str::to_string),
            ports: spec.and_then(|x| x.ports.clone()).unwrap_or_default(),
        };
        let out = handlers::hook(h, &target, Duration::from_secs(grace.max(0) as u64)).await;
        if out.ok {
            tracing::info!(pod = %pod_name(pod), container = %c.name, "preStop hook completed");
        } else {
            tracing::warn!(pod = %pod_name(pod), container = %c.name, "preStop hook failed: {}", out.message);
            let msg = format!("PreStopHook failed: {}", out.message);
            deps.events.pod(pod, Some(&c.name), Type::Warning, "FailedPreStopHook", msg);
        }
    }
    let mut remaining = grace - started.elapsed().as_secs() as i64;
    if let Some(order) = order.filter(|_| remaining > 0) {
        let waited = order.wait_turn(&c.name, Duration::from_secs(remaining as u64)).await;
        remaining -= waited.as_secs() as i64;
    }
    let remaining = remaining.max(MIN_GRACE_SECS);
    tracing::info!(pod = %pod_name(pod), container = %c.name, grace = remaining, "stopping container");
    if c.state == CState::Running {
        deps.events.pod(pod, Some(&c.name), Type::Normal, "Killing", format!("Stopping container {}", c.name));
    }
    let result = match deps.runtime.stop_container(&c.id, remaining).await {
        Err(e) if !e.is_not_found() => Err(e.into()),
        _ => Ok(()),
    };
    if let Some(order) = order {
        order.stopped(&c.name);
    }
    result
}

/// Stops every running container (in parallel, each with the grace period; with sidecars, the
/// app containers first and the sidecars after them in reverse order) and every ready sandbox of
/// the pod.
pub async fn kill_pod(deps: &Deps, pod: &Pod, obs: &PodObs) -> Result<()> {
    let grace = grace_secs(pod);
    let ip = obs.sandbox().and_then(|s| s.ip.clone());
    let running: Vec<&ContainerObs> =
        obs.containers.iter().filter(|c| matches!(c.state, CState::Running | CState::Unknown)).collect();
    // Upstream's killContainersWithSyncResult with a terminationOrdering for pods with sidecars.
    let order = crate::meta::has_sidecar(pod).then(|| {
        let names: Vec<&str> = running.iter().map(|c| c.name.as_str()).collect();
        Order::new(pod, &names)
    });
    let stops = running.iter().map(|c| stop_in_turn(deps, pod, c, grace, ip.as_deref(), order.as_ref()));
    let mut errors: Vec<Error> = futures::future::join_all(stops).await.into_iter().filter_map(Result::err).collect();
    for s in obs.sandboxes.iter().filter(|s| s.ready) {
        if let Err(e) = deps.runtime.stop_pod_sandbox(&s.id).await
            && !e.is_not_found()
        {
            errors.push(e.into());
        }
    }
    Error::all(errors)
}

/// Removes everything the runtime holds for the pod (after [`kill_pod`]).
pub async fn remove_pod(deps: &Deps, pod: &Pod, obs: &PodObs) -> Result<()> {
    let mut errors = Vec::new();
    for c in &obs.containers {
        remove_container(deps, pod, &c.name, &c.id).await.unwrap_or_else(|e| errors.push(e));
    }
    for s in &obs.sandboxes {
        if let Err(e) = deps.runtime.remove_pod_sandbox(&s.id).await
            && !e.is_not_found()
        {
            errors.push(e.into());
        }
    }
    Error::all(errors)
}

async fn remove_container(deps: &Deps, pod: &Pod, name: &str, id: &str) -> Result<()> {
    let _ = std::fs::remove_file(log_symlink(&deps.container_logs_dir, pod, name, id));
    match deps.runtime.remove_container(id).await {
        Err(e) if !e.is_not_found() => Err(e.into()),
        _ => Ok(()),
    }
}

/// Registry credentials for `image`: the pod's imagePullSecrets (read through the node's
/// reader), then the credential provider plugins' (upstream's UnionDockerKeyring order).
async fn pull_credentials(deps: &Deps, pod: &Pod, image: &str) -> Vec<api::AuthConfig> {
    let mut credentials = secret_credentials(deps, pod, image).await;
    if let Some(providers) = &deps.credential_providers {
        credentials.extend(providers.credentials(image).await);
    }
    credentials
}

/// Registry credentials for `image` from the pod's imagePullSecrets.
async fn secret_credentials(deps: &Deps, pod: &Pod, image: &str) -> Vec<api::AuthConfig> {
    let Some(objects) = deps.objects.as_ref() else { return Vec::new() };
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let mut keyring = crate::pull_secrets::Keyring::default();
    for r in pod.spec.as_ref().and_then(|s| s.image_pull_secrets.as_ref()).into_iter().flatten() {
        let warn = |msg: String| {
            tracing::warn!(pod = %pod_name(pod), "{msg}");
            deps.events.pod(pod, None, Type::Warning, "FailedToRetrieveImagePullSecret", msg);
        };
        match objects.secret(uid, ns, &r.name).await {
            Ok(Some(data)) => {
                if let Err(e) = keyring.add_secret(&r.name, &data) {
                    warn(e);
                }
            }
            Ok(None) => warn(format!(
                "Unable to retrieve some image pull secrets ({}); attempting to pull the image may not succeed.",
                r.name
            )),
            Err(e) => warn(format!("image pull secret {}: {e}", r.name)),
        }
    }
    keyring.for_image(image)
}

/// max(N)+1 over `<log dir>/<container>/N.log[.*]`, or 0 (upstream's fallback when the runtime
/// has no earlier instance).
pub fn restart_count_from_logs(log_dir: &str, container: &str) -> i32 {
    let Ok(rd) = std::fs::read_dir(Path::new(log_dir).join(container)) else { return 0 };
    rd.flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let (n, rest) = name.split_once(".log")?;
            (rest.is_empty() || rest.starts_with('.')).then_some(())?;
            n.parse::<i32>().ok()
        })
        .map(|n| n + 1)
        .max()
        .unwrap_or(0)
}

/// Performs the plan. Failures to start a container are recorded in `waiting`; other failures
/// are returned so the worker retries the sync. `volumes` are the pod's volumes, set up.
#[allow(clippy::too_many_arguments)]
pub async fn execute(
    deps: &Deps,
    pod: &Pod,
    obs: &PodObs,
    plan: &Plan,
    backoff: &mut Backoff,
    waiting: &mut WaitingReasons,
    on_queued: crate::images::QueueObserver<'_>,
    volumes: &crate::volume::PodVolumes,
    stop: &tokio_util::sync::CancellationToken,
) -> Result<Done> {
    let name = pod_name(pod);
    let grace = grace_secs(pod);
    // A stop's outcome (exit code, time) is the runtime's to tell: then the worker relists.
    let mut done = Done { known: !plan.kill_pod && plan.kill.is_empty(), ..Default::default() };
    if plan.create_sandbox.is_some() && obs.sandbox().is_some() {
        let msg = "Pod sandbox changed, it will be killed and re-created.".to_string();
        deps.events.pod(pod, None, Type::Normal, "SandboxChanged", msg);
    }
    if plan.kill_pod {
        kill_pod(deps, pod, obs).await?;
    }
    let ip = obs.sandbox().and_then(|s| s.ip.clone());
    for k in &plan.kill {
        tracing::info!(pod = %name, container = %k.name, reason = %k.reason, "killing container");
        if let Some(c) = obs.containers.iter().find(|c| c.id == k.id) {
            stop_container(deps, pod, c, grace, ip.as_deref()).await?;
        }
    }
    for id in &plan.remove_containers {
        let cname = obs.containers.iter().find(|c| &c.id == id).map(|c| c.name.as_str()).unwrap_or("");
        remove_container(deps, pod, cname, id).await?;
        done.change.removed.push(id.clone());
    }
    for id in &plan.remove_sandboxes {
        if let Err(e) = deps.runtime.remove_pod_sandbox(id).await
            && !e.is_not_found()
        {
            return Err(e.into());
        }
        done.change.removed.push(id.clone());
    }

    let existing =
        obs.sandbox().filter(|s| s.ready).map(|s| (s.id.clone(), s.attempt, (s.ip.clone(), s.additional_ips.clone())));
    let Some(attempt) = plan.create_sandbox.or(existing.as_ref().map(|s| s.1)) else {
        return Ok(done);
    };
    let sandbox_config = runtime_config::sandbox_config(pod, &deps.node, attempt);
    // The images are looked up (and pulled) while the sandbox is made: neither needs the other.
    // When the kubelet stops, a pull is abandoned; a sandbox being made is finished (it is
    // labelled with its pod, so the next start adopts it).
    let config = &sandbox_config;
    let launches = Launch::of(plan);
    let images = futures::future::join_all(launches.iter().map(|l| async move {
        let abandoned = || StartError::from(("ContainerCreating", "the kubelet is stopping".to_string()));
        stop.run_until_cancelled(ensure_image(deps, pod, l, config, on_queued))
            .await
            .unwrap_or_else(|| Err(abandoned()))
    }));
    let make = async {
        match plan.create_sandbox {
            Some(_) if stop.is_cancelled() => Err(Error::StoppingBefore("no new sandbox")),
            Some(_) => create_sandbox(deps, pod, &sandbox_config, attempt).await.map(Some),
            None => Ok(None),
        }
    };
    let (made, images) = tokio::join!(make, images);
    let (sandbox_id, ips) = match made? {
        Some((record, ips)) => {
            let id = record.id.clone();
            done.change.created.sandboxes.push(record);
            // IPs the runtime did not tell are not recorded: the next observation asks again
            // (an IP-less sandbox is replaced, so a failed PodSandboxStatus must not pass for one).
            done.sandbox_ips = ips.clone().map(|ips| (id.clone(), ips));
            (id, ips.unwrap_or_default())
        }
        None => match existing {
            Some((id, _, ips)) => (id, ips),
            None => return Ok(done),
        },
    };
    let pod_ips = pod_ips(pod, &deps.node, ips);
    // A clean point: the sandbox is made and recorded, no container is half-made. A stopping
    // kubelet starts no container; the next start plans them again.
    if stop.is_cancelled() {
        tracing::info!(pod = %name, "the kubelet is stopping: containers not started");
        return Ok(done);
    }
    let starts = launches.iter().zip(images).map(|(l, image)| {
        let (sandbox_config, sandbox_id, pod_ips) = (&sandbox_config, &sandbox_id, &pod_ips);
        async move {
            let result = match image {
                Ok(image_ref) => {
                    let at = Where { sandbox_id, sandbox_config, pod_ips, obs };
                    start_container(deps, pod, l, &at, &image_ref, volumes).await
                }
                Err(e) => Err(e),
            };
            (l.start, result)
        }
    });
    // Ephemeral containers, then init containers (sidecars among them) one after another in the
    // spec's order, then the app containers together (upstream SyncPod's steps 5, 6 and 8).
    let mut results = Vec::with_capacity(launches.len());
    let mut apps = Vec::new();
    for (l, start) in launches.iter().zip(starts) {
        if matches!(l.kind, ContainerType::Regular) {
            apps.push(start);
        } else {
            results.push(start.await);
        }
    }
    results.extend(futures::future::join_all(apps).await);
    for (s, result) in results {
        match result {
            Ok(record) => {
                waiting.remove(&s.name);
                done.change.created.containers.push(record);
            }
            Err(e) => {
                tracing::warn!(pod = %name, container = %s.name, reason = e.reason, "{}", e.message);
                waiting.insert(s.name.clone(), (e.reason.to_string(), e.message));
                // Created but not (or no longer) running: in what state, the runtime tells.
                done.known &= !e.created;
            }
        }
        if let Some((key, at)) = &s.arm_backoff {
            // The entry's last update is this restart (upstream's lastUpdate), the failure's
            // time only decides whether the entry starts over.
            backoff.next(key, *at, deps.clock.now());
        }
    }
    Ok(done)
}

/// The IPs containers are started with, as upstream's podIPs: the sandbox's (primary first), or
/// for a host-network pod the node's (SyncPod takes them from the API status, which has the
/// host IPs).
fn pod_ips(pod: &Pod, node: &NodeContext, (ip, additional): super::observe::SandboxIps) -> Vec<String> {
    if pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false) {
        return node.node_ip.iter().cloned().collect();
    }
    ip.into_iter().chain(additional).collect()
}

/// What [`execute`] did: the sandboxes and containers it made and removed, for the PLEG cache
/// ([`crate::pleg::Cache::record_own`]), and the new sandbox's IPs.
#[derive(Debug, Default)]
pub struct Done {
    pub change: OwnChange,
    /// Every outcome is in `change`: nothing was stopped and nothing was left half-made. When
    /// false, only a relist tells the pod's state.
    pub known: bool,
    /// The new sandbox's id and IPs (primary, additional), as PodSandboxStatus gave them.
    pub sandbox_ips: Option<(String, super::observe::SandboxIps)>,
}

/// Why a container did not start, and whether it was created all the same.
struct StartError {
    reason: &'static str,
    message: String,
    created: bool,
}

impl From<(&'static str, String)> for StartError {
    fn from((reason, message): (&'static str, String)) -> Self {
        Self { reason, message, created: false }
    }
}

/// Creates the pod's log directory, its cgroup and its sandbox; returns the sandbox's record and
/// IPs (from PodSandboxStatus).
async fn create_sandbox(
    deps: &Deps,
    pod: &Pod,
    config: &api::PodSandboxConfig,
    attempt: u32,
) -> Result<(SandboxRecord, Option<super::observe::SandboxIps>)> {
    // createPodSandbox: the user namespace check of the sandbox config, the runtime handler,
    // then RunPodSandbox; a failure is a FailedCreatePodSandBox event and a retry.
    let made = async {
        let handler = deps.runtime_classes.handler(pod).await.map_err(Error::RuntimeHandler)?;
        let userns = super::userns::check(pod, &handler, &*deps.runtime, &deps.node.root_dir).await?;
        let mut config = config.clone();
        set_user_namespace(&mut config.linux, userns);
        std::fs::create_dir_all(&config.log_directory)
            .map_err(|source| Error::LogDirectory { path: config.log_directory.clone(), source })?;
        if let Some(cm) = &deps.node.cgroups {
            cm.ensure_pod_cgroup(pod).map_err(Error::PodCgroup)?;
        }
        tracing::info!(pod = %pod_name(pod), attempt, runtime_handler = %handler, "creating pod sandbox");
        deps.runtime.run_pod_sandbox_with_handler(config, &handler).await.map_err(Error::CreateSandbox)
    };
    let id = match made.await {
        Ok(id) => id,
        Err(e) => {
            if let Some(msg) = e.sandbox_event() {
                deps.events.pod(pod, None, crate::event_recorder::Type::Warning, "FailedCreatePodSandBox", msg);
            }
            return Err(e);
        }
    };
    let status = deps.runtime.pod_sandbox_status(&id).await.ok();
    let ips = status.as_ref().map(super::observe::sandbox_ips);
    let created_at = status.as_ref().map(|s| s.created_at).unwrap_or_else(crate::stats::now_nanos);
    Ok((SandboxRecord { id, attempt, ready: true, created_at }, ips))
}

/// One container start of a plan and its kind: the plan's ephemeral containers first, then its
/// init or regular ones (upstream's SyncPod starts ephemeral containers before init containers,
/// so a pod whose initialization fails can still be debugged).
struct Launch<'a> {
    start: &'a super::plan::Start,
    kind: ContainerType,
}

impl<'a> Launch<'a> {
    fn of(plan: &'a Plan) -> Vec<Self> {
        let ephemeral = plan.start_ephemeral.iter().map(|start| Launch { start, kind: ContainerType::Ephemeral });
        let others = plan
            .start
            .iter()
            .map(|start| Launch { start, kind: if start.init { ContainerType::Init } else { ContainerType::Regular } });
        ephemeral.chain(others).collect()
    }
}

/// Where a container starts: the pod's sandbox, the IPs it is started with, and the pod's
/// runtime state (an ephemeral container's target is found there).
struct Where<'a> {
    sandbox_id: &'a str,
    sandbox_config: &'a api::PodSandboxConfig,
    pod_ips: &'a [String],
    obs: &'a PodObs,
}

/// The pod's user namespace (`hostUsers: false`) into a sandbox's or container's namespace
/// options, as upstream's NamespacesForPod gives both the same.
fn set_user_namespace<L: HasNamespaces>(linux: &mut Option<L>, userns: Option<api::UserNamespace>) {
    let Some(userns) = userns else { return };
    if let Some(ns) = linux.as_mut().and_then(HasNamespaces::namespaces) {
        ns.userns_options = Some(userns);
    }
}

trait HasNamespaces {
    fn namespaces(&mut self) -> Option<&mut api::NamespaceOption>;
}

impl HasNamespaces for api::LinuxPodSandboxConfig {
    fn namespaces(&mut self) -> Option<&mut api::NamespaceOption> {
        self.security_context.as_mut()?.namespace_options.as_mut()
    }
}

impl HasNamespaces for api::LinuxContainerConfig {
    fn namespaces(&mut self) -> Option<&mut api::NamespaceOption> {
        self.security_context.as_mut()?.namespace_options.as_mut()
    }
}

/// runtimeClassSupportsRecursiveReadOnlyMounts: whether the pod's runtime handler supports
/// recursive read-only mounts; asked only for a container that wants one (a RuntimeClass lookup
/// and a CRI Status). A failed lookup counts as no support, as upstream.
async fn supports_recursive_read_only(deps: &Deps, pod: &Pod, c: &k8s_openapi::api::core::v1::Container) -> bool {
    let wanted =
        c.volume_mounts.iter().flatten().any(|m| m.recursive_read_only.as_deref().is_some_and(|r| r != "Disabled"));
    if !wanted {
        return false;
    }
    let Ok(handler) = deps.runtime_classes.handler(pod).await else { return false };
    deps.runtime.handlers().await.is_ok_and(|h| h.supports_recursive_read_only(&handler))
}

/// The container to start, from the pod's spec (an ephemeral container as the container it
/// runs as).
fn container_of<'a>(pod: &'a Pod, l: &Launch) -> Result<Cow<'a, Container>, StartError> {
    let spec = pod.spec.as_ref().ok_or(("CreateContainerConfigError", "pod has no spec".to_string()))?;
    let name = &l.start.name;
    let missing = || StartError::from(("CreateContainerConfigError", format!("container {name} not in spec")));
    let list = match l.kind {
        ContainerType::Ephemeral => {
            let ec = super::ephemeral::find(pod, name).ok_or_else(missing)?;
            return Ok(Cow::Owned(super::ephemeral::as_container(ec)));
        }
        ContainerType::Init => spec.init_containers.as_deref().unwrap_or_default(),
        ContainerType::Regular => &spec.containers[..],
    };
    list.iter().find(|c| &c.name == name).map(Cow::Borrowed).ok_or_else(missing)
}

/// Makes sure the container's image is there (by its pull policy); returns its reference.
async fn ensure_image(
    deps: &Deps,
    pod: &Pod,
    l: &Launch<'_>,
    sandbox_config: &api::PodSandboxConfig,
    on_queued: crate::images::QueueObserver<'_>,
) -> Result<String, StartError> {
    let c = container_of(pod, l)?;
    let image = c.image.as_deref().unwrap_or_default();
    let policy = c.image_pull_policy.as_deref().unwrap_or("IfNotPresent");
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let ev = |t: Type, reason: &str, msg: String| deps.events.pod(pod, Some(&c.name), t, reason, msg);
    let credentials = pull_credentials(deps, pod, image).await;
    match deps.images.ensure_reporting(uid, image, policy, sandbox_config, &credentials, on_queued).await {
        Ok(e) => {
            match e.pulled {
                Some(took) => {
                    deps.metrics.pod_pulled(uid, took);
                    ev(Type::Normal, "Pulling", format!("Pulling image {image:?}"));
                    ev(Type::Normal, "Pulled", format!("Successfully pulled image {image:?} in {took:.3?}"));
                }
                None => ev(Type::Normal, "Pulled", format!("Container image {image:?} already present on machine")),
            }
            Ok(e.image_ref)
        }
        Err(e) => {
            if e.reason == "ImagePullBackOff" {
                ev(Type::Normal, "BackOff", e.message.clone());
            } else {
                ev(Type::Warning, "Failed", e.message.clone());
                ev(Type::Warning, "Failed", format!("Error: {}", e.reason));
            }
            Err((e.reason, e.message).into())
        }
    }
}

async fn start_container(
    deps: &Deps,
    pod: &Pod,
    l: &Launch<'_>,
    at: &Where<'_>,
    image_ref: &str,
    volumes: &crate::volume::PodVolumes,
) -> Result<ContainerRecord, StartError> {
    let Where { sandbox_id, sandbox_config, pod_ips, obs } = *at;
    let s = l.start;
    let c = &*container_of(pod, l)?;
    let ev = |t: Type, reason: &str, msg: String| deps.events.pod(pod, Some(&c.name), t, reason, msg);
    // With no earlier instance in the runtime, the log files remember how often it ran.
    let restart_count = s.restart_count.max(restart_count_from_logs(&sandbox_config.log_directory, &c.name));
    let config_error = |e: super::runtime_config::ConfigError| {
        ev(Type::Warning, "Failed", format!("Error: {}", e.0));
        ("CreateContainerConfigError", e.0)
    };
    // Upstream's getTargetID, once the image is there and before the config is made: an
    // ephemeral container whose target has no instance fails to start.
    let target = match l.kind {
        ContainerType::Ephemeral => super::ephemeral::target_id(pod, &c.name, obs)
            .map_err(|m| config_error(super::runtime_config::ConfigError(m)))?,
        _ => None,
    };
    let env_sources = super::env::fetch(deps.objects.as_ref(), pod, c).await.map_err(config_error)?;
    // The image's user, for runAsNonRoot and a missing runAsUser (upstream's getImageUser); a
    // failed lookup fails the config as upstream's does.
    let image = deps
        .runtime
        .image_status(image_ref)
        .await
        .map_err(|e| config_error(super::runtime_config::ConfigError(e.message)))?;
    let image_user = ImageUser::of(image.as_ref());
    let input = ContainerInput {
        env_sources: &env_sources,
        pod,
        container: c,
        kind: l.kind,
        restart_count,
        image_ref,
        pod_ips,
        volumes,
        image_user: &image_user,
        recursive_read_only: supports_recursive_read_only(deps, pod, c).await,
    };
    let mut config = runtime_config::container_config(&input, &deps.node).map_err(config_error)?;
    // Upstream's GetResources in GenerateRunContainerOptions: PreStartContainer, then the
    // plugins' options; a failure is a config error.
    if let Some(devices) = &deps.devices {
        let opts = devices
            .run_options(pod, c)
            .await
            .map_err(|e| config_error(super::runtime_config::ConfigError(e.to_string())))?;
        runtime_config::apply_devices(&mut config, &opts);
    }
    if let Some(id) = target {
        runtime_config::share_target_pid(&mut config, &id);
    }
    set_user_namespace(&mut config.linux, super::userns::recorded(&deps.node.root_dir, pod));
    let log_path = PathBuf::from(&sandbox_config.log_directory).join(&config.log_path);
    let annotations = ContainerAnnotations::parse(&config.annotations);
    let id = deps.runtime.create_container(sandbox_id, config, sandbox_config.clone()).await.map_err(|e| {
        ev(Type::Warning, "Failed", format!("Error: {}", e.message));
        ("CreateContainerError", e.message)
    })?;
    let created_at = crate::stats::now_nanos();
    ev(Type::Normal, "Created", format!("Created container {}", c.name));
    // The /var/log/containers symlink, as upstream makes it.
    let link = log_symlink(&deps.container_logs_dir, pod, &c.name, &id);
    if std::fs::create_dir_all(&deps.container_logs_dir).is_ok() {
        let _ = std::fs::remove_file(&link);
        if let Err(e) = std::os::unix::fs::symlink(&log_path, &link) {
            tracing::warn!(link = %link.display(), error = %e, "cannot create container log symlink");
        }
    }
    tracing::info!(pod = %pod_name(pod), container = %c.name, id = %id, restart_count, "starting container");
    deps.runtime.start_container(&id).await.map_err(|e| {
        ev(Type::Warning, "Failed", format!("Error: {}", e.message));
        StartError { reason: "RunContainerError", message: e.message, created: true }
    })?;
    ev(Type::Normal, "Started", format!("Started container {}", c.name));
    if let Some(h) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) {
        let target = Target {
            runtime: deps.runtime.clone(),
            container_id: id.clone(),
            pod_ip: pod_ips.first().cloned(),
            ports: c.ports.clone().unwrap_or_default(),
        };
        let out = handlers::hook(h, &target, POST_START_TIMEOUT).await;
        if !out.ok {
            // As upstream: a failed postStart hook kills the container (FailedPostStartHook).
            tracing::warn!(pod = %pod_name(pod), container = %c.name, "FailedPostStartHook: {}", out.message);
            ev(Type::Warning, "FailedPostStartHook", format!("PostStartHook failed: {}", out.message));
            let _ = deps.runtime.stop_container(&id, grace_secs(pod)).await;
            let message = format!("PostStartHook failed: {}", out.message);
            return Err(StartError { reason: "PostStartHookError", message, created: true });
        }
        tracing::info!(pod = %pod_name(pod), container = %c.name, "postStart hook completed");
    }
    Ok(ContainerRecord {
        id,
        sandbox_id: sandbox_id.to_string(),
        name: c.name.clone(),
        state: api::ContainerState::ContainerRunning as i32,
        created_at,
        annotations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_count_is_recovered_from_log_file_names() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        assert_eq!(restart_count_from_logs(d, "app"), 0);
        std::fs::create_dir_all(dir.path().join("app")).unwrap();
        for f in ["0.log", "3.log.20240101-000000", "2.log", "x.log", "7.logs"] {
            std::fs::write(dir.path().join("app").join(f), "").unwrap();
        }
        assert_eq!(restart_count_from_logs(d, "app"), 4);
    }
}
