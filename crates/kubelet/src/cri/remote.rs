//! The CRI runtime over gRPC on a unix socket (containerd, CRI-O).

use super::{CriError, Result, Runtime, api};
use api::image_service_client::ImageServiceClient;
use api::runtime_service_client::RuntimeServiceClient;
use async_trait::async_trait;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint, Uri};

/// A connection to a CRI runtime's RuntimeService and ImageService.
#[derive(Clone)]
pub struct RemoteRuntime {
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    /// `runtimeRequestTimeout`: every call but image pulls is bounded by it.
    timeout: Duration,
}

/// Parses `unix:///path` (or a bare absolute path) into a socket path.
pub fn socket_path(endpoint: &str) -> Result<PathBuf> {
    if let Some(path) = endpoint.strip_prefix("unix://") {
        return Ok(PathBuf::from(path));
    }
    if endpoint.starts_with('/') {
        return Ok(PathBuf::from(endpoint));
    }
    let message = format!("unsupported endpoint {endpoint:?}: only unix:// sockets are supported");
    Err(CriError::new("connect", tonic::Code::InvalidArgument, message))
}

/// A gRPC channel to a unix socket endpoint (also used for containerd's own services).
pub(crate) async fn channel(endpoint: &str) -> Result<Channel> {
    let path = socket_path(endpoint)?;
    // The URI is a placeholder: the connector below always dials the unix socket.
    Endpoint::from_static("http://[::]:50051")
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
        }))
        .await
        .map_err(|e| CriError::new("connect", tonic::Code::Unavailable, format!("{endpoint}: {e}")))
}

impl RemoteRuntime {
    /// Connects to the runtime and image endpoints (the image endpoint defaults to the runtime's).
    pub async fn connect(runtime_endpoint: &str, image_endpoint: Option<&str>, timeout: Duration) -> Result<Self> {
        let rt = channel(runtime_endpoint).await?;
        let im = match image_endpoint {
            Some(ep) if !ep.is_empty() && ep != runtime_endpoint => channel(ep).await?,
            _ => rt.clone(),
        };
        Ok(Self { runtime: RuntimeServiceClient::new(rt), images: ImageServiceClient::new(im), timeout })
    }

    async fn call<T, F>(&self, op: &'static str, timeout: Option<Duration>, fut: F) -> Result<T>
    where
        F: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let res = match timeout {
            Some(t) => tokio::time::timeout(t, fut)
                .await
                .map_err(|_| CriError::new(op, tonic::Code::DeadlineExceeded, format!("timed out after {t:?}")))?,
            None => fut.await,
        };
        res.map(tonic::Response::into_inner).map_err(|s| CriError::new(op, s.code(), s.message().to_string()))
    }
}

#[async_trait]
impl Runtime for RemoteRuntime {
    async fn version(&self) -> Result<api::VersionResponse> {
        let mut c = self.runtime.clone();
        self.call("Version", Some(self.timeout), c.version(api::VersionRequest { version: "v1".into() })).await
    }

    async fn status(&self) -> Result<api::RuntimeStatus> {
        let mut c = self.runtime.clone();
        let r = self.call("Status", Some(self.timeout), c.status(api::StatusRequest { verbose: false })).await?;
        r.status.ok_or_else(|| CriError::new("Status", tonic::Code::Internal, "runtime returned no status"))
    }

    async fn sandbox_image(&self) -> Result<Option<String>> {
        let mut c = self.runtime.clone();
        let r = self.call("Status", Some(self.timeout), c.status(api::StatusRequest { verbose: true })).await?;
        let config: Option<serde_json::Value> = r.info.get("config").and_then(|c| serde_json::from_str(c).ok());
        Ok(config.and_then(|c| c["sandboxImage"].as_str().map(str::to_string)))
    }

    async fn run_pod_sandbox(&self, config: api::PodSandboxConfig) -> Result<String> {
        self.run_pod_sandbox_with_handler(config, "").await
    }

    async fn handlers(&self) -> Result<super::RuntimeHandlers> {
        let mut c = self.runtime.clone();
        let r = self.call("Status", Some(self.timeout), c.status(api::StatusRequest { verbose: false })).await?;
        Ok(super::RuntimeHandlers { handlers: r.runtime_handlers, features: r.features })
    }

    async fn runtime_config(&self) -> Result<Option<api::LinuxRuntimeConfiguration>> {
        let mut c = self.runtime.clone();
        let r = self.call("RuntimeConfig", Some(self.timeout), c.runtime_config(api::RuntimeConfigRequest {})).await?;
        Ok(r.linux)
    }

    async fn run_pod_sandbox_with_handler(
        &self,
        config: api::PodSandboxConfig,
        runtime_handler: &str,
    ) -> Result<String> {
        let mut c = self.runtime.clone();
        let req = api::RunPodSandboxRequest { config: Some(config), runtime_handler: runtime_handler.to_string() };
        // Sandbox creation includes CNI setup; upstream gives it the full request timeout too.
        Ok(self.call("RunPodSandbox", Some(self.timeout), c.run_pod_sandbox(req)).await?.pod_sandbox_id)
    }

    async fn stop_pod_sandbox(&self, id: &str) -> Result<()> {
        let mut c = self.runtime.clone();
        let req = api::StopPodSandboxRequest { pod_sandbox_id: id.into() };
        self.call("StopPodSandbox", Some(self.timeout), c.stop_pod_sandbox(req)).await.map(drop)
    }

    async fn remove_pod_sandbox(&self, id: &str) -> Result<()> {
        let mut c = self.runtime.clone();
        let req = api::RemovePodSandboxRequest { pod_sandbox_id: id.into() };
        self.call("RemovePodSandbox", Some(self.timeout), c.remove_pod_sandbox(req)).await.map(drop)
    }

    async fn pod_sandbox_status(&self, id: &str) -> Result<api::PodSandboxStatus> {
        let mut c = self.runtime.clone();
        let req = api::PodSandboxStatusRequest { pod_sandbox_id: id.into(), verbose: false };
        let r = self.call("PodSandboxStatus", Some(self.timeout), c.pod_sandbox_status(req)).await?;
        r.status.ok_or_else(|| CriError::new("PodSandboxStatus", tonic::Code::NotFound, format!("sandbox {id}")))
    }

    async fn list_pod_sandboxes(&self, filter: Option<api::PodSandboxFilter>) -> Result<Vec<api::PodSandbox>> {
        let mut c = self.runtime.clone();
        let req = api::ListPodSandboxRequest { filter };
        Ok(self.call("ListPodSandbox", Some(self.timeout), c.list_pod_sandbox(req)).await?.items)
    }

    async fn create_container(
        &self,
        sandbox_id: &str,
        config: api::ContainerConfig,
        sandbox_config: api::PodSandboxConfig,
    ) -> Result<String> {
        let mut c = self.runtime.clone();
        let req = api::CreateContainerRequest {
            pod_sandbox_id: sandbox_id.into(),
            config: Some(config),
            sandbox_config: Some(sandbox_config),
        };
        Ok(self.call("CreateContainer", Some(self.timeout), c.create_container(req)).await?.container_id)
    }

    async fn start_container(&self, id: &str) -> Result<()> {
        let mut c = self.runtime.clone();
        let req = api::StartContainerRequest { container_id: id.into() };
        self.call("StartContainer", Some(self.timeout), c.start_container(req)).await.map(drop)
    }

    async fn update_container_resources(&self, id: &str, linux: api::LinuxContainerResources) -> Result<()> {
        let mut c = self.runtime.clone();
        let req =
            api::UpdateContainerResourcesRequest { container_id: id.into(), linux: Some(linux), ..Default::default() };
        self.call("UpdateContainerResources", Some(self.timeout), c.update_container_resources(req)).await.map(drop)
    }

    async fn stop_container(&self, id: &str, timeout_secs: i64) -> Result<()> {
        let mut c = self.runtime.clone();
        let req = api::StopContainerRequest { container_id: id.into(), timeout: timeout_secs };
        // As upstream: the request may take the grace period on top of the usual timeout.
        let t = self.timeout + Duration::from_secs(timeout_secs.max(0) as u64);
        self.call("StopContainer", Some(t), c.stop_container(req)).await.map(drop)
    }

    async fn remove_container(&self, id: &str) -> Result<()> {
        let mut c = self.runtime.clone();
        let req = api::RemoveContainerRequest { container_id: id.into() };
        self.call("RemoveContainer", Some(self.timeout), c.remove_container(req)).await.map(drop)
    }

    async fn list_containers(&self, filter: Option<api::ContainerFilter>) -> Result<Vec<api::Container>> {
        let mut c = self.runtime.clone();
        let req = api::ListContainersRequest { filter };
        Ok(self.call("ListContainers", Some(self.timeout), c.list_containers(req)).await?.containers)
    }

    async fn container_status(&self, id: &str) -> Result<api::ContainerStatus> {
        let mut c = self.runtime.clone();
        let req = api::ContainerStatusRequest { container_id: id.into(), verbose: false };
        let r = self.call("ContainerStatus", Some(self.timeout), c.container_status(req)).await?;
        r.status.ok_or_else(|| CriError::new("ContainerStatus", tonic::Code::NotFound, format!("container {id}")))
    }

    async fn exec_sync(&self, id: &str, cmd: Vec<String>, timeout: Duration) -> Result<super::ExecOutput> {
        let mut c = self.runtime.clone();
        // CRI takes whole seconds; 0 would mean "no timeout", so round up.
        let secs = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
        let req = api::ExecSyncRequest { container_id: id.into(), cmd, timeout: secs.max(1) as i64 };
        let r = self.call("ExecSync", Some(timeout + Duration::from_secs(2)), c.exec_sync(req)).await?;
        Ok(super::ExecOutput { stdout: r.stdout, stderr: r.stderr, exit_code: r.exit_code })
    }

    async fn image_status(&self, image: &str) -> Result<Option<api::Image>> {
        let mut c = self.images.clone();
        let req = api::ImageStatusRequest { image: Some(image_spec(image)), verbose: false };
        Ok(self.call("ImageStatus", Some(self.timeout), c.image_status(req)).await?.image)
    }

    async fn pull_image(&self, image: &str, sandbox_config: Option<api::PodSandboxConfig>) -> Result<String> {
        self.pull_image_with_auth(image, None, sandbox_config).await
    }

    async fn pull_image_with_auth(
        &self,
        image: &str,
        auth: Option<api::AuthConfig>,
        sandbox_config: Option<api::PodSandboxConfig>,
    ) -> Result<String> {
        let mut c = self.images.clone();
        let req = api::PullImageRequest { image: Some(image_spec(image)), auth, sandbox_config };
        // No deadline: a large image may take long; progress is the runtime's business.
        Ok(self.call("PullImage", None, c.pull_image(req)).await?.image_ref)
    }

    async fn list_images(&self) -> Result<Vec<api::Image>> {
        let mut c = self.images.clone();
        let req = api::ListImagesRequest { filter: None };
        Ok(self.call("ListImages", Some(self.timeout), c.list_images(req)).await?.images)
    }

    async fn remove_image(&self, image: &str) -> Result<()> {
        let mut c = self.images.clone();
        let req = api::RemoveImageRequest { image: Some(image_spec(image)) };
        self.call("RemoveImage", Some(self.timeout), c.remove_image(req)).await.map(drop)
    }

    async fn image_fs_info(&self) -> Result<api::ImageFsInfoResponse> {
        let mut c = self.images.clone();
        self.call("ImageFsInfo", Some(self.timeout), c.image_fs_info(api::ImageFsInfoRequest {})).await
    }

    async fn exec(&self, req: api::ExecRequest) -> Result<String> {
        let mut c = self.runtime.clone();
        Ok(self.call("Exec", Some(self.timeout), c.exec(req)).await?.url)
    }

    async fn attach(&self, req: api::AttachRequest) -> Result<String> {
        let mut c = self.runtime.clone();
        Ok(self.call("Attach", Some(self.timeout), c.attach(req)).await?.url)
    }

    async fn port_forward(&self, req: api::PortForwardRequest) -> Result<String> {
        let mut c = self.runtime.clone();
        Ok(self.call("PortForward", Some(self.timeout), c.port_forward(req)).await?.url)
    }

    async fn list_container_stats(
        &self,
        filter: Option<api::ContainerStatsFilter>,
    ) -> Result<Vec<api::ContainerStats>> {
        let mut c = self.runtime.clone();
        let req = api::ListContainerStatsRequest { filter };
        Ok(self.call("ListContainerStats", Some(self.timeout), c.list_container_stats(req)).await?.stats)
    }

    async fn list_pod_sandbox_stats(
        &self,
        filter: Option<api::PodSandboxStatsFilter>,
    ) -> Result<Vec<api::PodSandboxStats>> {
        let mut c = self.runtime.clone();
        let req = api::ListPodSandboxStatsRequest { filter };
        Ok(self.call("ListPodSandboxStats", Some(self.timeout), c.list_pod_sandbox_stats(req)).await?.stats)
    }

    async fn reopen_container_log(&self, id: &str) -> Result<()> {
        let mut c = self.runtime.clone();
        let req = api::ReopenContainerLogRequest { container_id: id.into() };
        self.call("ReopenContainerLog", Some(self.timeout), c.reopen_container_log(req)).await.map(drop)
    }

    async fn container_events(&self) -> Result<super::ContainerEvents> {
        use futures::StreamExt;
        let mut c = self.runtime.clone();
        // No deadline: the stream lasts as long as the runtime keeps it open.
        let stream = self.call("GetContainerEvents", None, c.get_container_events(api::GetEventsRequest {})).await?;
        let op = "GetContainerEvents";
        Ok(stream.map(move |r| r.map_err(|s| CriError::new(op, s.code(), s.message().to_string()))).boxed())
    }
}

fn image_spec(image: &str) -> api::ImageSpec {
    api::ImageSpec { image: image.into(), ..Default::default() }
}
