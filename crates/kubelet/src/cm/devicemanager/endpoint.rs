//! The kubelet's side of one registered plugin (upstream's plugin client and endpoint): dialled
//! on its socket, asked for its options, then followed on its ListAndWatch stream until the
//! stream ends, which stops the endpoint (its devices turn unhealthy, see `state.rs`).

use super::proto::device_plugin_client::DevicePluginClient;
use super::proto::{self, Empty};
use super::{DeviceManager, Plugin};
use hyper_util::rt::TokioIo;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint, Uri};

/// Upstream dials a plugin with a 10 s deadline.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// A gRPC channel to the unix socket at `socket` (the URI is a placeholder).
pub async fn dial(socket: &Path) -> Result<Channel, String> {
    let path = socket.to_path_buf();
    let endpoint = Endpoint::from_static("http://[::]:50051").connect_timeout(DIAL_TIMEOUT);
    let connect = endpoint.connect_with_connector(tower::service_fn(move |_: Uri| {
        let path = path.clone();
        async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
    }));
    match tokio::time::timeout(DIAL_TIMEOUT, connect).await {
        Err(_) => Err("context deadline exceeded".into()),
        Ok(Err(e)) => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text = format!("{text}: {s}");
                source = s.source();
            }
            Err(text)
        }
        Ok(Ok(c)) => Ok(c),
    }
}

/// A connected plugin's DevicePlugin service.
#[derive(Clone)]
pub struct PluginClient(DevicePluginClient<Channel>);

#[async_trait::async_trait]
impl Plugin for PluginClient {
    async fn allocate(&self, devices: Vec<String>) -> Result<proto::AllocateResponse, tonic::Status> {
        let req = proto::AllocateRequest {
            container_requests: vec![proto::ContainerAllocateRequest { devices_ids: devices }],
        };
        self.0.clone().allocate(req).await.map(tonic::Response::into_inner)
    }

    async fn preferred_allocation(
        &self,
        available: Vec<String>,
        must_include: Vec<String>,
        size: usize,
    ) -> Result<proto::PreferredAllocationResponse, tonic::Status> {
        let req = proto::PreferredAllocationRequest {
            container_requests: vec![proto::ContainerPreferredAllocationRequest {
                available_device_i_ds: available,
                must_include_device_i_ds: must_include,
                allocation_size: i32::try_from(size).unwrap_or(i32::MAX),
            }],
        };
        self.0.clone().get_preferred_allocation(req).await.map(tonic::Response::into_inner)
    }

    async fn pre_start_container(&self, devices: Vec<String>) -> Result<(), tonic::Status> {
        let req = proto::PreStartContainerRequest { devices_ids: devices };
        self.0.clone().pre_start_container(req).await.map(drop)
    }
}

/// Why a registered plugin could not be connected (upstream's messages).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    #[error("failed to dial device plugin: {0}")]
    Dial(String),
    #[error("failed to get device plugin options: {0}")]
    Options(String),
}

/// Connects to the plugin of `resource` on `socket` (upstream's client Connect +
/// PluginConnected) and follows its ListAndWatch stream in a task of its own until the stream
/// ends or `token` is cancelled.
pub async fn connect(
    manager: &DeviceManager,
    resource: &str,
    socket: &Path,
    token: CancellationToken,
) -> Result<(), ConnectError> {
    let channel = dial(socket).await.map_err(ConnectError::Dial)?;
    let mut client = DevicePluginClient::new(channel);
    let options = tokio::time::timeout(DIAL_TIMEOUT, client.get_device_plugin_options(Empty {}))
        .await
        .map_err(|_| ConnectError::Options("context deadline exceeded".into()))?
        .map_err(|s| ConnectError::Options(super::rpc_error(&s)))?
        .into_inner();
    let generation = manager.plugin_connected(resource, options, Arc::new(PluginClient(client.clone())));
    let (manager, resource) = (manager.clone(), resource.to_string());
    tokio::spawn(async move {
        if token.run_until_cancelled(list_and_watch(&manager, &resource, generation, client)).await.is_some() {
            manager.plugin_disconnected(&resource, generation);
        }
    });
    Ok(())
}

/// Upstream's client Run: every list the plugin sends replaces the resource's devices; returns
/// when the stream ends.
async fn list_and_watch(
    manager: &DeviceManager,
    resource: &str,
    generation: u64,
    mut client: DevicePluginClient<Channel>,
) {
    let mut stream = match client.list_and_watch(Empty {}).await {
        Ok(s) => s.into_inner(),
        Err(s) => {
            tracing::error!(resource, error = %super::rpc_error(&s), "ListAndWatch ended unexpectedly for device plugin");
            return;
        }
    };
    loop {
        match stream.message().await {
            Ok(Some(list)) => manager.devices_updated(resource, generation, list.devices),
            Ok(None) => {
                tracing::warn!(resource, "ListAndWatch ended unexpectedly for device plugin: stream closed");
                return;
            }
            Err(s) => {
                tracing::warn!(resource, error = %super::rpc_error(&s), "ListAndWatch ended unexpectedly for device plugin");
                return;
            }
        }
    }
}
