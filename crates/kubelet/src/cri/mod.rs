//! The container runtime, seen through the CRI v1 API.
//!
//! Everything in the kubelet talks to the runtime through [`Runtime`]; [`remote`] speaks gRPC to
//! a real runtime (containerd) and [`fake`] keeps an in-memory runtime for unit tests.

pub mod fake;
pub mod labels;
pub mod remote;

use async_trait::async_trait;
use std::sync::Arc;

/// The CRI v1 messages and gRPC client/server, generated in build.rs from the vendored upstream
/// `api.proto` (runtime.v1).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod api {
    tonic::include_proto!("runtime.v1");
}

/// What CRI Status says the runtime supports beyond its conditions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuntimeHandlers {
    pub handlers: Vec<api::RuntimeHandler>,
    pub features: Option<api::RuntimeFeatures>,
}

impl RuntimeHandlers {
    /// The handler by name (`""` is the default one).
    pub fn get(&self, name: &str) -> Option<&api::RuntimeHandler> {
        self.handlers.iter().find(|h| h.name == name)
    }

    /// Whether the handler supports user namespaces (Kubelet.HandlerSupportsUserNamespaces).
    pub fn supports_user_namespaces(&self, handler: &str) -> Result<bool, HandlerError> {
        if self.handlers.is_empty() {
            return Err(HandlerError::NotSet);
        }
        let h = self.get(handler).ok_or_else(|| HandlerError::Unknown(handler.to_string()))?;
        Ok(h.features.as_ref().is_some_and(|f| f.user_namespaces))
    }

    /// Whether the handler supports recursive read-only mounts (an unknown handler does not).
    pub fn supports_recursive_read_only(&self, handler: &str) -> bool {
        self.get(handler).and_then(|h| h.features.as_ref()).is_some_and(|f| f.recursive_read_only_mounts)
    }
}

/// A runtime handler that cannot be asked about its features.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    #[error("runtime handlers are not set")]
    NotSet,
    #[error("the handler {0:?} is not known")]
    Unknown(String),
}

/// What went wrong talking to the runtime.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{op}: {message}")]
pub struct CriError {
    pub op: &'static str,
    pub code: tonic::Code,
    pub message: String,
}

impl CriError {
    pub fn new(op: &'static str, code: tonic::Code, message: impl Into<String>) -> Self {
        Self { op, code, message: message.into() }
    }

    pub fn is_not_found(&self) -> bool {
        self.code == tonic::Code::NotFound
    }
}

pub type Result<T, E = CriError> = std::result::Result<T, E>;

/// The CRI RuntimeService and ImageService calls the kubelet makes.
#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    async fn version(&self) -> Result<api::VersionResponse>;
    async fn status(&self) -> Result<api::RuntimeStatus>;
    /// The runtime's sandbox ("pause") image, when its verbose status says (containerd's
    /// `config.sandboxImage`); image GC never removes it.
    async fn sandbox_image(&self) -> Result<Option<String>> {
        Ok(None)
    }

    async fn run_pod_sandbox(&self, config: api::PodSandboxConfig) -> Result<String>;
    /// RunPodSandbox with a RuntimeClass's handler (`""`: the runtime's default handler). A
    /// runtime that knows no handlers refuses any other.
    async fn run_pod_sandbox_with_handler(
        &self,
        config: api::PodSandboxConfig,
        runtime_handler: &str,
    ) -> Result<String> {
        if runtime_handler.is_empty() {
            return self.run_pod_sandbox(config).await;
        }
        Err(CriError::new(
            "RunPodSandbox",
            tonic::Code::Unimplemented,
            format!("runtime handler {runtime_handler:?} not supported"),
        ))
    }
    /// The runtime's handlers and features (CRI Status `runtime_handlers` and `features`; empty
    /// for runtimes that report none, as containerd 1.6).
    async fn handlers(&self) -> Result<RuntimeHandlers> {
        Ok(RuntimeHandlers::default())
    }
    /// CRI RuntimeConfig: the runtime's linux configuration (its cgroup driver), `None` when it
    /// reports none. Runtimes without the call answer Unimplemented (containerd 1.6), as does
    /// the default.
    async fn runtime_config(&self) -> Result<Option<api::LinuxRuntimeConfiguration>> {
        Err(CriError::new("RuntimeConfig", tonic::Code::Unimplemented, "RuntimeConfig is not implemented"))
    }
    async fn stop_pod_sandbox(&self, id: &str) -> Result<()>;
    async fn remove_pod_sandbox(&self, id: &str) -> Result<()>;
    async fn pod_sandbox_status(&self, id: &str) -> Result<api::PodSandboxStatus>;
    async fn list_pod_sandboxes(&self, filter: Option<api::PodSandboxFilter>) -> Result<Vec<api::PodSandbox>>;

    async fn create_container(
        &self,
        sandbox_id: &str,
        config: api::ContainerConfig,
        sandbox_config: api::PodSandboxConfig,
    ) -> Result<String>;
    async fn start_container(&self, id: &str) -> Result<()>;
    /// Stops a container: SIGTERM (or the image's stop signal), SIGKILL after `timeout_secs`.
    async fn stop_container(&self, id: &str, timeout_secs: i64) -> Result<()>;
    async fn remove_container(&self, id: &str) -> Result<()>;
    async fn list_containers(&self, filter: Option<api::ContainerFilter>) -> Result<Vec<api::Container>>;
    async fn container_status(&self, id: &str) -> Result<api::ContainerStatus>;

    /// Runs a command in a container and waits for it (probes, hooks), bounded by `timeout`.
    async fn exec_sync(&self, id: &str, cmd: Vec<String>, timeout: std::time::Duration) -> Result<ExecOutput>;

    /// The image if the runtime has it.
    async fn image_status(&self, image: &str) -> Result<Option<api::Image>>;
    /// Pulls an image and returns its reference (image ID).
    async fn pull_image(&self, image: &str, sandbox_config: Option<api::PodSandboxConfig>) -> Result<String>;
    /// Pulls with registry credentials (from the pod's imagePullSecrets).
    async fn pull_image_with_auth(
        &self,
        image: &str,
        auth: Option<api::AuthConfig>,
        sandbox_config: Option<api::PodSandboxConfig>,
    ) -> Result<String> {
        let _ = auth;
        self.pull_image(image, sandbox_config).await
    }
    async fn list_images(&self) -> Result<Vec<api::Image>>;
    async fn remove_image(&self, image: &str) -> Result<()>;
    /// Filesystem usage of the runtime's image (and container) filesystems.
    async fn image_fs_info(&self) -> Result<api::ImageFsInfoResponse>;

    /// Streaming: the URL of the runtime's streaming server for this exec session.
    async fn exec(&self, req: api::ExecRequest) -> Result<String>;
    /// Streaming: the URL of the runtime's streaming server for this attach session.
    async fn attach(&self, req: api::AttachRequest) -> Result<String>;
    /// Streaming: the URL of the runtime's streaming server for port forwarding into a sandbox.
    async fn port_forward(&self, req: api::PortForwardRequest) -> Result<String>;

    /// Resource usage of containers (cpu, memory, writable layer).
    async fn list_container_stats(&self, filter: Option<api::ContainerStatsFilter>)
    -> Result<Vec<api::ContainerStats>>;
    /// Resource usage of sandboxes (pod-level cpu, memory, network); runtimes may answer Unimplemented.
    async fn list_pod_sandbox_stats(
        &self,
        filter: Option<api::PodSandboxStatsFilter>,
    ) -> Result<Vec<api::PodSandboxStats>>;
    /// Asks the runtime to reopen a container's log file (after the kubelet rotated it).
    async fn reopen_container_log(&self, id: &str) -> Result<()>;
    /// Changes a container's Linux resources in place (CRI UpdateContainerResources: in-place pod
    /// resize, the CPU manager's cpusets); fields left at zero are kept by the runtime.
    async fn update_container_resources(&self, id: &str, linux: api::LinuxContainerResources) -> Result<()>;

    /// Streaming: container lifecycle events (CRI GetContainerEvents) until the stream breaks.
    /// Runtimes without them answer Unimplemented (containerd before 1.7), as does the default.
    async fn container_events(&self) -> Result<ContainerEvents> {
        Err(CriError::new("GetContainerEvents", tonic::Code::Unimplemented, "container events are not implemented"))
    }
}

pub type DynRuntime = Arc<dyn Runtime>;

/// The stream [`Runtime::container_events`] returns.
pub type ContainerEvents = futures::stream::BoxStream<'static, Result<api::ContainerEventResponse>>;

/// What an ExecSync returned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
}

/// Nanoseconds since the epoch, as CRI reports times, to a wall-clock time.
pub fn nanos_to_time(nanos: i64) -> Option<std::time::SystemTime> {
    (nanos > 0).then(|| std::time::UNIX_EPOCH + std::time::Duration::from_nanos(nanos as u64))
}
