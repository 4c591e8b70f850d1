//! A [`Runtime`] that records every call in the kubelet metrics (upstream's instrumented
//! runtime service): `kubelet_runtime_operations_total`, `_duration_seconds` and `_errors_total`
//! by upstream operation type. It also counts `kubelet_started_pods_total` (each RunPodSandbox)
//! and `kubelet_started_containers_total` (each CreateContainer, by container type), the points
//! where upstream counts them.

use super::Metrics;
use crate::cri::labels::CONTAINER_TYPE;
use crate::cri::{DynRuntime, ExecOutput, Result, Runtime, api};
use async_trait::async_trait;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Instrumented {
    inner: DynRuntime,
    metrics: Metrics,
}

impl Instrumented {
    pub fn wrap(inner: DynRuntime, metrics: Metrics) -> DynRuntime {
        Arc::new(Self { inner, metrics })
    }

    async fn record<T>(&self, op: &'static str, fut: impl Future<Output = Result<T>>) -> Result<T> {
        let start = Instant::now();
        let out = fut.await;
        self.metrics.runtime_operation(op, start.elapsed(), out.is_err());
        out
    }
}

#[async_trait]
impl Runtime for Instrumented {
    async fn version(&self) -> Result<api::VersionResponse> {
        self.record("version", self.inner.version()).await
    }

    async fn status(&self) -> Result<api::RuntimeStatus> {
        self.record("status", self.inner.status()).await
    }

    async fn sandbox_image(&self) -> Result<Option<String>> {
        self.record("status", self.inner.sandbox_image()).await
    }

    async fn run_pod_sandbox(&self, config: api::PodSandboxConfig) -> Result<String> {
        self.metrics.started_pod();
        self.record("run_podsandbox", self.inner.run_pod_sandbox(config)).await
    }

    async fn run_pod_sandbox_with_handler(
        &self,
        config: api::PodSandboxConfig,
        runtime_handler: &str,
    ) -> Result<String> {
        self.metrics.started_pod();
        self.record("run_podsandbox", self.inner.run_pod_sandbox_with_handler(config, runtime_handler)).await
    }

    async fn handlers(&self) -> Result<crate::cri::RuntimeHandlers> {
        self.record("status", self.inner.handlers()).await
    }

    async fn runtime_config(&self) -> Result<Option<api::LinuxRuntimeConfiguration>> {
        self.record("runtime_config", self.inner.runtime_config()).await
    }

    async fn stop_pod_sandbox(&self, id: &str) -> Result<()> {
        self.record("stop_podsandbox", self.inner.stop_pod_sandbox(id)).await
    }

    async fn remove_pod_sandbox(&self, id: &str) -> Result<()> {
        self.record("remove_podsandbox", self.inner.remove_pod_sandbox(id)).await
    }

    async fn pod_sandbox_status(&self, id: &str) -> Result<api::PodSandboxStatus> {
        self.record("podsandbox_status", self.inner.pod_sandbox_status(id)).await
    }

    async fn list_pod_sandboxes(&self, filter: Option<api::PodSandboxFilter>) -> Result<Vec<api::PodSandbox>> {
        self.record("list_podsandbox", self.inner.list_pod_sandboxes(filter)).await
    }

    async fn create_container(
        &self,
        sandbox_id: &str,
        config: api::ContainerConfig,
        sandbox_config: api::PodSandboxConfig,
    ) -> Result<String> {
        let kind = match config.annotations.get(CONTAINER_TYPE).map(String::as_str) {
            Some("init") => "init_container",
            Some("ephemeral") => "ephemeral_container",
            _ => "container",
        };
        self.metrics.started_container(kind);
        self.record("create_container", self.inner.create_container(sandbox_id, config, sandbox_config)).await
    }

    async fn start_container(&self, id: &str) -> Result<()> {
        self.record("start_container", self.inner.start_container(id)).await
    }

    async fn update_container_resources(&self, id: &str, linux: api::LinuxContainerResources) -> Result<()> {
        self.record("update_container", self.inner.update_container_resources(id, linux)).await
    }

    async fn stop_container(&self, id: &str, timeout_secs: i64) -> Result<()> {
        self.record("stop_container", self.inner.stop_container(id, timeout_secs)).await
    }

    async fn remove_container(&self, id: &str) -> Result<()> {
        self.record("remove_container", self.inner.remove_container(id)).await
    }

    async fn list_containers(&self, filter: Option<api::ContainerFilter>) -> Result<Vec<api::Container>> {
        self.record("list_containers", self.inner.list_containers(filter)).await
    }

    async fn container_status(&self, id: &str) -> Result<api::ContainerStatus> {
        self.record("container_status", self.inner.container_status(id)).await
    }

    async fn exec_sync(&self, id: &str, cmd: Vec<String>, timeout: Duration) -> Result<ExecOutput> {
        self.record("exec_sync", self.inner.exec_sync(id, cmd, timeout)).await
    }

    async fn image_status(&self, image: &str) -> Result<Option<api::Image>> {
        self.record("image_status", self.inner.image_status(image)).await
    }

    async fn pull_image(&self, image: &str, sandbox_config: Option<api::PodSandboxConfig>) -> Result<String> {
        self.record("pull_image", self.inner.pull_image(image, sandbox_config)).await
    }

    async fn pull_image_with_auth(
        &self,
        image: &str,
        auth: Option<api::AuthConfig>,
        sandbox_config: Option<api::PodSandboxConfig>,
    ) -> Result<String> {
        self.record("pull_image", self.inner.pull_image_with_auth(image, auth, sandbox_config)).await
    }

    async fn list_images(&self) -> Result<Vec<api::Image>> {
        self.record("list_images", self.inner.list_images()).await
    }

    async fn remove_image(&self, image: &str) -> Result<()> {
        self.record("remove_image", self.inner.remove_image(image)).await
    }

    async fn image_fs_info(&self) -> Result<api::ImageFsInfoResponse> {
        self.record("image_fs_info", self.inner.image_fs_info()).await
    }

    async fn exec(&self, req: api::ExecRequest) -> Result<String> {
        self.record("exec", self.inner.exec(req)).await
    }

    async fn attach(&self, req: api::AttachRequest) -> Result<String> {
        self.record("attach", self.inner.attach(req)).await
    }

    async fn port_forward(&self, req: api::PortForwardRequest) -> Result<String> {
        self.record("port_forward", self.inner.port_forward(req)).await
    }

    async fn list_container_stats(
        &self,
        filter: Option<api::ContainerStatsFilter>,
    ) -> Result<Vec<api::ContainerStats>> {
        self.record("list_container_stats", self.inner.list_container_stats(filter)).await
    }

    async fn list_pod_sandbox_stats(
        &self,
        filter: Option<api::PodSandboxStatsFilter>,
    ) -> Result<Vec<api::PodSandboxStats>> {
        self.record("list_podsandbox_stats", self.inner.list_pod_sandbox_stats(filter)).await
    }

    async fn reopen_container_log(&self, id: &str) -> Result<()> {
        self.record("reopen_container_log", self.inner.reopen_container_log(id)).await
    }

    /// Counts the subscription, not the events.
    async fn container_events(&self) -> Result<crate::cri::ContainerEvents> {
        self.record("get_container_events", self.inner.container_events()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cri::fake::FakeRuntime;

    #[tokio::test]
    async fn every_call_is_counted_with_upstream_operation_types() {
        let fake = FakeRuntime::new();
        let metrics = Metrics::new();
        let rt = Instrumented::wrap(Arc::new(fake.clone()), metrics.clone());
        let sb = rt.run_pod_sandbox(api::PodSandboxConfig::default()).await.unwrap();
        let mut config = api::ContainerConfig::default();
        config.annotations.insert(CONTAINER_TYPE.into(), "init".into());
        rt.create_container(&sb, config, api::PodSandboxConfig::default()).await.unwrap();
        rt.list_pod_sandboxes(None).await.unwrap();
        fake.fail_next("ListContainers", "boom");
        assert!(rt.list_containers(None).await.is_err());
        assert!(rt.pull_image_with_auth("nope:1", None, None).await.is_err());
        let s = crate::metrics::parse(&metrics.encode_kubelet(&[]));
        let get = |name: &str, op: &str| {
            s.samples.iter().find(|x| x.metric == name && x.labels.get("operation_type") == Some(op)).map(|x| {
                match x.value {
                    prometheus_parse::Value::Counter(v) => v,
                    _ => f64::NAN,
                }
            })
        };
        for op in ["run_podsandbox", "create_container", "list_podsandbox", "list_containers", "pull_image"] {
            assert_eq!(get("kubelet_runtime_operations_total", op), Some(1.0), "{op}");
        }
        assert_eq!(get("kubelet_runtime_operations_errors_total", "list_containers"), Some(1.0));
        assert_eq!(get("kubelet_runtime_operations_errors_total", "pull_image"), Some(1.0));
        assert_eq!(get("kubelet_runtime_operations_errors_total", "list_podsandbox"), None);
        let started = |name: &str| s.samples.iter().find(|x| x.metric == name).map(|x| x.labels.clone());
        assert!(started("kubelet_started_pods_total").is_some());
        assert_eq!(
            started("kubelet_started_containers_total").and_then(|l| l.get("container_type").map(str::to_string)),
            Some("init_container".to_string())
        );
    }
}
