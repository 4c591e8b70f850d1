//! The CSI Node service: bind mounts of `<state>/volumes/<volumeHandle>`, and the call log.

use kubelet::volume::csi::paths::is_mount_point;
use kubelet::volume::csi::proto::csi::node_server::Node;
use kubelet::volume::csi::proto::csi::node_service_capability::rpc::Type as Cap;
use kubelet::volume::csi::proto::csi::{self as pb};
use std::ffi::CString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tonic::{Request, Response, Status};

/// Appends one JSON object per call: `{"method": ..., <fields>}`.
#[derive(Clone)]
pub struct CallLog(Arc<Mutex<std::fs::File>>);

impl CallLog {
    pub fn open(path: &Path) -> Result<Self, String> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Self(Arc::new(Mutex::new(f))))
    }

    pub fn record(&self, method: &str, mut fields: serde_json::Value) {
        fields["method"] = method.into();
        let mut f = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(f, "{fields}");
        let _ = f.flush();
    }
}

pub struct HostPathNode {
    pub state_dir: PathBuf,
    pub node_id: String,
    pub stage: bool,
    pub log: CallLog,
}

fn cstr(p: &Path) -> Result<CString, Status> {
    CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| Status::invalid_argument("path contains NUL"))
}

fn internal(what: &str, p: &Path, e: impl std::fmt::Display) -> Status {
    Status::internal(format!("{what} {}: {e}", p.display()))
}

/// `mount --bind src dst`, then a read-only remount when asked.
fn bind(src: &Path, dst: &Path, readonly: bool) -> Result<(), Status> {
    let (s, d) = (cstr(src)?, cstr(dst)?);
    // SAFETY: valid NUL-terminated paths; null fstype/data are allowed for bind mounts.
    let rc = unsafe { libc::mount(s.as_ptr(), d.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null()) };
    if rc != 0 {
        return Err(internal("bind mount on", dst, std::io::Error::last_os_error()));
    }
    if readonly {
        let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
        // SAFETY: as above.
        let rc = unsafe { libc::mount(s.as_ptr(), d.as_ptr(), std::ptr::null(), flags, std::ptr::null()) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            unmount(dst)?;
            return Err(internal("read-only remount of", dst, e));
        }
    }
    Ok(())
}

fn unmount(p: &Path) -> Result<(), Status> {
    let c = cstr(p)?;
    // SAFETY: valid NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), 0) } != 0 {
        return Err(internal("unmount", p, std::io::Error::last_os_error()));
    }
    Ok(())
}

fn required(v: &str, field: &str) -> Result<PathBuf, Status> {
    if v.is_empty() { Err(Status::invalid_argument(format!("{field} is required"))) } else { Ok(PathBuf::from(v)) }
}

impl HostPathNode {
    fn backing(&self, volume_id: &str) -> PathBuf {
        self.state_dir.join("volumes").join(volume_id.replace('/', "_"))
    }
}

#[tonic::async_trait]
impl Node for HostPathNode {
    async fn node_stage_volume(
        &self,
        r: Request<pb::NodeStageVolumeRequest>,
    ) -> Result<Response<pb::NodeStageVolumeResponse>, Status> {
        let r = r.into_inner();
        self.log.record(
            "NodeStageVolume",
            serde_json::json!({"volume_id": r.volume_id, "staging_target_path": r.staging_target_path,
                "volume_context": r.volume_context, "publish_context": r.publish_context}),
        );
        required(&r.volume_id, "volume_id")?;
        let staging = required(&r.staging_target_path, "staging_target_path")?;
        if r.volume_capability.is_none() {
            return Err(Status::invalid_argument("volume_capability is required"));
        }
        if !self.stage {
            return Err(Status::failed_precondition("STAGE_UNSTAGE_VOLUME is not advertised"));
        }
        let backing = self.backing(&r.volume_id);
        std::fs::create_dir_all(&backing).map_err(|e| internal("creating", &backing, e))?;
        std::fs::create_dir_all(&staging).map_err(|e| internal("creating", &staging, e))?;
        if !is_mount_point(&staging) {
            bind(&backing, &staging, false)?;
        }
        Ok(Response::new(pb::NodeStageVolumeResponse {}))
    }

    async fn node_unstage_volume(
        &self,
        r: Request<pb::NodeUnstageVolumeRequest>,
    ) -> Result<Response<pb::NodeUnstageVolumeResponse>, Status> {
        let r = r.into_inner();
        self.log.record(
            "NodeUnstageVolume",
            serde_json::json!({"volume_id": r.volume_id, "staging_target_path": r.staging_target_path}),
        );
        required(&r.volume_id, "volume_id")?;
        let staging = required(&r.staging_target_path, "staging_target_path")?;
        while is_mount_point(&staging) {
            unmount(&staging)?;
        }
        Ok(Response::new(pb::NodeUnstageVolumeResponse {}))
    }

    async fn node_publish_volume(
        &self,
        r: Request<pb::NodePublishVolumeRequest>,
    ) -> Result<Response<pb::NodePublishVolumeResponse>, Status> {
        let r = r.into_inner();
        self.log.record(
            "NodePublishVolume",
            serde_json::json!({"volume_id": r.volume_id, "staging_target_path": r.staging_target_path,
                "target_path": r.target_path, "readonly": r.readonly, "volume_context": r.volume_context,
                "publish_context": r.publish_context}),
        );
        required(&r.volume_id, "volume_id")?;
        let target = required(&r.target_path, "target_path")?;
        if r.volume_capability.is_none() {
            return Err(Status::invalid_argument("volume_capability is required"));
        }
        let source = if self.stage {
            let staging = required(&r.staging_target_path, "staging_target_path")?;
            if !is_mount_point(&staging) {
                return Err(Status::failed_precondition(format!("{} is not staged", staging.display())));
            }
            staging
        } else {
            let backing = self.backing(&r.volume_id);
            std::fs::create_dir_all(&backing).map_err(|e| internal("creating", &backing, e))?;
            backing
        };
        std::fs::create_dir_all(&target).map_err(|e| internal("creating", &target, e))?;
        if !is_mount_point(&target) {
            bind(&source, &target, r.readonly)?;
        }
        Ok(Response::new(pb::NodePublishVolumeResponse {}))
    }

    async fn node_unpublish_volume(
        &self,
        r: Request<pb::NodeUnpublishVolumeRequest>,
    ) -> Result<Response<pb::NodeUnpublishVolumeResponse>, Status> {
        let r = r.into_inner();
        self.log
            .record("NodeUnpublishVolume", serde_json::json!({"volume_id": r.volume_id, "target_path": r.target_path}));
        required(&r.volume_id, "volume_id")?;
        let target = required(&r.target_path, "target_path")?;
        while is_mount_point(&target) {
            unmount(&target)?;
        }
        match std::fs::remove_dir(&target) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(internal("removing", &target, e)),
            _ => {}
        }
        Ok(Response::new(pb::NodeUnpublishVolumeResponse {}))
    }

    async fn node_get_volume_stats(
        &self,
        r: Request<pb::NodeGetVolumeStatsRequest>,
    ) -> Result<Response<pb::NodeGetVolumeStatsResponse>, Status> {
        let r = r.into_inner();
        self.log.record(
            "NodeGetVolumeStats",
            serde_json::json!({"volume_id": r.volume_id, "volume_path": r.volume_path,
                "staging_target_path": r.staging_target_path}),
        );
        let path = required(&r.volume_path, "volume_path")?;
        if !path.exists() {
            return Err(Status::not_found(format!("{} does not exist", path.display())));
        }
        let c = cstr(&path)?;
        // SAFETY: statvfs fills the zeroed struct for a valid path.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
            return Err(internal("statvfs", &path, std::io::Error::last_os_error()));
        }
        let bs = st.f_frsize as i64;
        let (total, avail) = (st.f_blocks as i64 * bs, st.f_bavail as i64 * bs);
        let used = (st.f_blocks as i64 - st.f_bfree as i64) * bs;
        let (inodes, ifree) = (st.f_files as i64, st.f_ffree as i64);
        use pb::volume_usage::Unit;
        Ok(Response::new(pb::NodeGetVolumeStatsResponse {
            usage: vec![
                pb::VolumeUsage { available: avail, total, used, unit: Unit::Bytes as i32 },
                pb::VolumeUsage { available: ifree, total: inodes, used: inodes - ifree, unit: Unit::Inodes as i32 },
            ],
            volume_condition: None,
        }))
    }

    async fn node_expand_volume(
        &self,
        _r: Request<pb::NodeExpandVolumeRequest>,
    ) -> Result<Response<pb::NodeExpandVolumeResponse>, Status> {
        Err(Status::unimplemented("NodeExpandVolume"))
    }

    async fn node_get_capabilities(
        &self,
        _r: Request<pb::NodeGetCapabilitiesRequest>,
    ) -> Result<Response<pb::NodeGetCapabilitiesResponse>, Status> {
        self.log.record("NodeGetCapabilities", serde_json::json!({}));
        let mut caps = vec![Cap::GetVolumeStats];
        if self.stage {
            caps.push(Cap::StageUnstageVolume);
        }
        let capabilities = caps
            .into_iter()
            .map(|t| pb::NodeServiceCapability {
                r#type: Some(pb::node_service_capability::Type::Rpc(pb::node_service_capability::Rpc {
                    r#type: t as i32,
                })),
            })
            .collect();
        Ok(Response::new(pb::NodeGetCapabilitiesResponse { capabilities }))
    }

    async fn node_get_info(
        &self,
        _r: Request<pb::NodeGetInfoRequest>,
    ) -> Result<Response<pb::NodeGetInfoResponse>, Status> {
        self.log.record("NodeGetInfo", serde_json::json!({}));
        Ok(Response::new(pb::NodeGetInfoResponse {
            node_id: self.node_id.clone(),
            max_volumes_per_node: 0,
            accessible_topology: Some(pb::Topology {
                segments: [("topology.hostpath.test.csi/node".to_string(), self.node_id.clone())].into(),
            }),
        }))
    }
}
