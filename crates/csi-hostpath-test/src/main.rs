//! Test-only CSI node plugin: Identity + Node services on `<root>/plugins/<name>/csi.sock` and the
//! kubelet plugin registration service on `<root>/plugins_registry/<name>-reg.sock`. A volume is
//! the directory `<state>/volumes/<volumeHandle>`, bind-mounted on the staging path
//! (NodeStageVolume) and from there on the target path (NodePublishVolume). Every call is
//! appended to a JSON-lines log so tests can check order and paths.

mod node;

use clap::Parser;
use kubelet::volume::csi::proto::csi::identity_server::{Identity, IdentityServer};
use kubelet::volume::csi::proto::csi::node_server::NodeServer;
use kubelet::volume::csi::proto::csi::{self as pb};
use kubelet::volume::csi::proto::registration as reg;
use kubelet::volume::csi::proto::registration::registration_server::{Registration, RegistrationServer};
use node::{CallLog, HostPathNode};
use std::path::{Path, PathBuf};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

#[derive(Parser, Debug, Clone)]
#[command(about = "Test-only hostpath CSI node plugin")]
struct Args {
    /// The kubelet's root directory (registration socket in plugins_registry/, CSI socket in plugins/).
    #[arg(long)]
    root_dir: PathBuf,
    /// Where the volumes' backing directories live (`<state>/volumes/<volumeHandle>`).
    #[arg(long)]
    state_dir: PathBuf,
    #[arg(long, default_value = "hostpath.test.csi")]
    name: String,
    #[arg(long, default_value = "test-node")]
    node_id: String,
    /// JSON-lines call log (default `<state>/calls.jsonl`).
    #[arg(long)]
    log: Option<PathBuf>,
    /// Do not advertise STAGE_UNSTAGE_VOLUME (publish straight from the backing directory).
    #[arg(long)]
    no_stage: bool,
}

struct IdentityService {
    name: String,
    log: CallLog,
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        _r: Request<pb::GetPluginInfoRequest>,
    ) -> Result<Response<pb::GetPluginInfoResponse>, Status> {
        self.log.record("GetPluginInfo", serde_json::json!({}));
        Ok(Response::new(pb::GetPluginInfoResponse {
            name: self.name.clone(),
            vendor_version: env!("CARGO_PKG_VERSION").into(),
            manifest: Default::default(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _r: Request<pb::GetPluginCapabilitiesRequest>,
    ) -> Result<Response<pb::GetPluginCapabilitiesResponse>, Status> {
        self.log.record("GetPluginCapabilities", serde_json::json!({}));
        Ok(Response::new(pb::GetPluginCapabilitiesResponse { capabilities: vec![] }))
    }

    async fn probe(&self, _r: Request<pb::ProbeRequest>) -> Result<Response<pb::ProbeResponse>, Status> {
        Ok(Response::new(pb::ProbeResponse { ready: Some(true) }))
    }
}

struct RegistrationService {
    name: String,
    endpoint: PathBuf,
    log: CallLog,
}

#[tonic::async_trait]
impl Registration for RegistrationService {
    async fn get_info(&self, _r: Request<reg::InfoRequest>) -> Result<Response<reg::PluginInfo>, Status> {
        self.log.record("GetInfo", serde_json::json!({}));
        Ok(Response::new(reg::PluginInfo {
            r#type: "CSIPlugin".into(),
            name: self.name.clone(),
            endpoint: self.endpoint.display().to_string(),
            supported_versions: vec!["1.0.0".into()],
        }))
    }

    async fn notify_registration_status(
        &self,
        r: Request<reg::RegistrationStatus>,
    ) -> Result<Response<reg::RegistrationStatusResponse>, Status> {
        let s = r.into_inner();
        self.log.record(
            "NotifyRegistrationStatus",
            serde_json::json!({"plugin_registered": s.plugin_registered, "error": s.error}),
        );
        eprintln!("csi-hostpath-test: registered={} {}", s.plugin_registered, s.error);
        Ok(Response::new(reg::RegistrationStatusResponse {}))
    }
}

/// Listens on `path`, which appears only once it accepts connections (bound under a hidden name,
/// then renamed: the kubelet's watcher skips hidden names).
fn listen(path: &Path) -> std::io::Result<UnixListenerStream> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    for p in [path, tmp.as_path()] {
        match std::fs::remove_file(p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    let listener = tokio::net::UnixListener::bind(&tmp)?;
    std::fs::rename(&tmp, path)?;
    Ok(UnixListenerStream::new(listener))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("csi-hostpath-test: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let log = CallLog::open(&args.log.clone().unwrap_or_else(|| args.state_dir.join("calls.jsonl")))?;
    let csi_sock = args.root_dir.join("plugins").join(&args.name).join("csi.sock");
    let reg_sock = args.root_dir.join("plugins_registry").join(format!("{}-reg.sock", args.name));
    let node = HostPathNode {
        state_dir: args.state_dir.clone(),
        node_id: args.node_id.clone(),
        stage: !args.no_stage,
        log: log.clone(),
    };
    let identity = IdentityService { name: args.name.clone(), log: log.clone() };
    let registration = RegistrationService { name: args.name.clone(), endpoint: csi_sock.clone(), log };

    // The CSI socket first: the kubelet calls NodeGetInfo as soon as it sees the registration socket.
    let csi_incoming = listen(&csi_sock).map_err(|e| format!("{}: {e}", csi_sock.display()))?;
    let csi = tonic::transport::Server::builder()
        .add_service(IdentityServer::new(identity))
        .add_service(NodeServer::new(node))
        .serve_with_incoming(csi_incoming);
    let reg_incoming = listen(&reg_sock).map_err(|e| format!("{}: {e}", reg_sock.display()))?;
    let registrar = tonic::transport::Server::builder()
        .add_service(RegistrationServer::new(registration))
        .serve_with_incoming(reg_incoming);
    eprintln!("csi-hostpath-test: serving {} and {}", csi_sock.display(), reg_sock.display());

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("SIGTERM handler: {e}"))?;
    let result = tokio::select! {
        r = csi => r.map_err(|e| format!("CSI server: {e}")),
        r = registrar => r.map_err(|e| format!("registration server: {e}")),
        _ = term.recv() => Ok(()),
        _ = tokio::signal::ctrl_c() => Ok(()),
    };
    // Removing the registration socket deregisters the driver.
    let _ = std::fs::remove_file(&reg_sock);
    let _ = std::fs::remove_file(&csi_sock);
    result
}
