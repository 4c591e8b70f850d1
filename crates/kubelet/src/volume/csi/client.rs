//! A CSI driver's Node service (and the registration socket) over gRPC on a unix socket.

use super::proto::csi;
use super::proto::csi::node_client::NodeClient;
use super::proto::csi::node_service_capability::rpc::Type as RpcType;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint, Uri};

/// Upstream's csiTimeout: every CSI call is bounded by it.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(120);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A failed call to a CSI driver or plugin registration socket.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("endpoint {0:?}: only unix sockets with an absolute path are supported")]
    Endpoint(String),
    #[error("connecting to {}: {source}", socket.display())]
    Connect { socket: PathBuf, source: tonic::transport::Error },
    #[error("CSI driver {driver}: {source}")]
    Driver { driver: String, source: Box<Error> },
    #[error("{op}: timed out after {timeout:?}")]
    TimedOut { op: String, timeout: Duration },
    #[error("{op} failed: rpc error: code = {:?} desc = {}", status.code(), status.message())]
    Rpc { op: String, status: tonic::Status },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Parses a CSI or registration endpoint: `unix:///path`, `unix:/path` or a bare absolute path.
pub fn endpoint_path(endpoint: &str) -> Result<PathBuf> {
    let path = endpoint.strip_prefix("unix://").or_else(|| endpoint.strip_prefix("unix:")).unwrap_or(endpoint);
    if path.starts_with('/') { Ok(PathBuf::from(path)) } else { Err(Error::Endpoint(endpoint.to_string())) }
}

/// A channel to a unix socket (the URI is a placeholder: the connector always dials the socket).
pub async fn channel(socket: &Path) -> Result<Channel> {
    let path = socket.to_path_buf();
    Endpoint::from_static("http://[::]:50051")
        .connect_timeout(CONNECT_TIMEOUT)
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
        }))
        .await
        .map_err(|source| Error::Connect { socket: socket.to_path_buf(), source })
}

/// Bounds a gRPC call by `timeout` and turns its status into a message naming the call.
pub async fn call<T, F>(op: &str, timeout: Duration, fut: F) -> Result<T>
where
    F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    match tokio::time::timeout(timeout, fut).await {
        Err(_) => Err(Error::TimedOut { op: op.to_string(), timeout }),
        Ok(Err(status)) => Err(Error::Rpc { op: op.to_string(), status }),
        Ok(Ok(r)) => Ok(r.into_inner()),
    }
}

/// The Node capabilities the kubelet acts on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeCapabilities {
    pub stage_unstage: bool,
    pub volume_stats: bool,
    /// VOLUME_MOUNT_GROUP: the driver applies the pod's fsGroup itself.
    pub volume_mount_group: bool,
}

/// What NodeStageVolume / NodePublishVolume need beyond the paths.
#[derive(Debug, Clone, Default)]
pub struct VolumeRequest {
    pub volume_id: String,
    pub publish_context: HashMap<String, String>,
    pub capability: csi::VolumeCapability,
    pub secrets: HashMap<String, String>,
    pub volume_context: HashMap<String, String>,
}

/// The usage NodeGetVolumeStats reports (None where the driver left it out).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VolumeStats {
    pub capacity_bytes: Option<u64>,
    pub available_bytes: Option<u64>,
    pub used_bytes: Option<u64>,
    pub inodes: Option<u64>,
    pub inodes_free: Option<u64>,
    pub inodes_used: Option<u64>,
}

/// A connection to one driver's Node service.
#[derive(Clone)]
pub struct Node {
    client: NodeClient<Channel>,
    driver: String,
}

impl Node {
    pub async fn connect(driver: &str, endpoint: &Path) -> Result<Self> {
        let ch = channel(endpoint).await.map_err(|e| Error::Driver { driver: driver.to_string(), source: e.into() })?;
        Ok(Self { client: NodeClient::new(ch), driver: driver.to_string() })
    }

    fn op(&self, name: &str) -> String {
        format!("CSI driver {}: {name}", self.driver)
    }

    pub async fn get_info(&self) -> Result<csi::NodeGetInfoResponse> {
        let mut c = self.client.clone();
        call(&self.op("NodeGetInfo"), CALL_TIMEOUT, c.node_get_info(csi::NodeGetInfoRequest {})).await
    }

    pub async fn capabilities(&self) -> Result<NodeCapabilities> {
        let mut c = self.client.clone();
        let r = call(
            &self.op("NodeGetCapabilities"),
            CALL_TIMEOUT,
            c.node_get_capabilities(csi::NodeGetCapabilitiesRequest {}),
        )
        .await?;
        let mut caps = NodeCapabilities::default();
        for cap in r.capabilities {
            let Some(csi::node_service_capability::Type::Rpc(rpc)) = cap.r#type else { continue };
            match RpcType::try_from(rpc.r#type) {
                Ok(RpcType::StageUnstageVolume) => caps.stage_unstage = true,
                Ok(RpcType::GetVolumeStats) => caps.volume_stats = true,
                Ok(RpcType::VolumeMountGroup) => caps.volume_mount_group = true,
                _ => {}
            }
        }
        Ok(caps)
    }

    pub async fn stage(&self, req: &VolumeRequest, staging: &Path) -> Result<()> {
        let mut c = self.client.clone();
        let r = csi::NodeStageVolumeRequest {
            volume_id: req.volume_id.clone(),
            publish_context: req.publish_context.clone(),
            staging_target_path: staging.display().to_string(),
            volume_capability: Some(req.capability.clone()),
            secrets: req.secrets.clone(),
            volume_context: req.volume_context.clone(),
        };
        call(&self.op("NodeStageVolume"), CALL_TIMEOUT, c.node_stage_volume(r)).await.map(|_| ())
    }

    pub async fn unstage(&self, volume_id: &str, staging: &Path) -> Result<()> {
        let mut c = self.client.clone();
        let r = csi::NodeUnstageVolumeRequest {
            volume_id: volume_id.to_string(),
            staging_target_path: staging.display().to_string(),
        };
        call(&self.op("NodeUnstageVolume"), CALL_TIMEOUT, c.node_unstage_volume(r)).await.map(|_| ())
    }

    pub async fn publish(
        &self,
        req: &VolumeRequest,
        staging: Option<&Path>,
        target: &Path,
        readonly: bool,
    ) -> Result<()> {
        let mut c = self.client.clone();
        let r = csi::NodePublishVolumeRequest {
            volume_id: req.volume_id.clone(),
            publish_context: req.publish_context.clone(),
            staging_target_path: staging.map(|p| p.display().to_string()).unwrap_or_default(),
            target_path: target.display().to_string(),
            volume_capability: Some(req.capability.clone()),
            readonly,
            secrets: req.secrets.clone(),
            volume_context: req.volume_context.clone(),
        };
        call(&self.op("NodePublishVolume"), CALL_TIMEOUT, c.node_publish_volume(r)).await.map(|_| ())
    }

    pub async fn unpublish(&self, volume_id: &str, target: &Path) -> Result<()> {
        let mut c = self.client.clone();
        let r = csi::NodeUnpublishVolumeRequest {
            volume_id: volume_id.to_string(),
            target_path: target.display().to_string(),
        };
        call(&self.op("NodeUnpublishVolume"), CALL_TIMEOUT, c.node_unpublish_volume(r)).await.map(|_| ())
    }

    pub async fn volume_stats(&self, volume_id: &str, path: &Path, staging: Option<&Path>) -> Result<VolumeStats> {
        let mut c = self.client.clone();
        let r = csi::NodeGetVolumeStatsRequest {
            volume_id: volume_id.to_string(),
            volume_path: path.display().to_string(),
            staging_target_path: staging.map(|p| p.display().to_string()).unwrap_or_default(),
        };
        let r = call(&self.op("NodeGetVolumeStats"), CALL_TIMEOUT, c.node_get_volume_stats(r)).await?;
        Ok(stats_from(&r.usage))
    }
}

fn stats_from(usage: &[csi::VolumeUsage]) -> VolumeStats {
    use csi::volume_usage::Unit;
    let pos = |v: i64| u64::try_from(v).ok();
    let mut s = VolumeStats::default();
    for u in usage {
        match Unit::try_from(u.unit) {
            Ok(Unit::Bytes) => {
                s.capacity_bytes = pos(u.total);
                s.available_bytes = pos(u.available);
                s.used_bytes = pos(u.used);
            }
            Ok(Unit::Inodes) => {
                s.inodes = pos(u.total);
                s.inodes_free = pos(u.available);
                s.inodes_used = pos(u.used);
            }
            _ => {}
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_unix_sockets() {
        assert_eq!(endpoint_path("unix:///csi/csi.sock").unwrap(), PathBuf::from("/csi/csi.sock"));
        assert_eq!(endpoint_path("unix:/csi/csi.sock").unwrap(), PathBuf::from("/csi/csi.sock"));
        assert_eq!(endpoint_path("/csi/csi.sock").unwrap(), PathBuf::from("/csi/csi.sock"));
        assert!(endpoint_path("tcp://127.0.0.1:10000").is_err());
        assert!(endpoint_path("csi.sock").is_err());
    }

    #[test]
    fn usage_maps_bytes_and_inodes() {
        use csi::volume_usage::Unit;
        let s = stats_from(&[
            csi::VolumeUsage { available: 10, total: 30, used: 20, unit: Unit::Bytes as i32 },
            csi::VolumeUsage { available: 1, total: 3, used: 2, unit: Unit::Inodes as i32 },
        ]);
        assert_eq!((s.capacity_bytes, s.available_bytes, s.used_bytes), (Some(30), Some(10), Some(20)));
        assert_eq!((s.inodes, s.inodes_free, s.inodes_used), (Some(3), Some(1), Some(2)));
    }
}
