//! Test-only device plugin: see README.md. One process, one resource; the DevicePlugin service
//! on its socket, registration with the kubelet, file-backed devices, a health control file and
//! a JSON-lines call log.

use clap::Parser;
use kubelet::cm::devicemanager::proto::device_plugin_server::{DevicePlugin, DevicePluginServer};
use kubelet::cm::devicemanager::proto::registration_client::RegistrationClient;
use kubelet::cm::devicemanager::proto::{self as pb};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

#[derive(Parser, Debug, Clone)]
#[command(about = "Test-only device plugin advertising file-backed widgets")]
struct Args {
    /// The kubelet's device plugin directory (holds kubelet.sock).
    #[arg(long, default_value = "/var/lib/kubelet/device-plugins")]
    dir: PathBuf,
    /// Where the devices' files, the health control file and the call log live.
    #[arg(long)]
    state_dir: PathBuf,
    #[arg(long, default_value = "example.com/widget")]
    resource: String,
    #[arg(long, default_value_t = 4)]
    count: usize,
    /// The plugin's socket name in `--dir`.
    #[arg(long, default_value = "widget.sock")]
    socket: String,
    /// The API version sent with Register.
    #[arg(long, default_value = "v1beta1")]
    api_version: String,
    /// Advertise GetPreferredAllocation (the highest IDs are preferred).
    #[arg(long)]
    preferred: bool,
    /// Ask for PreStartContainer before each container start.
    #[arg(long)]
    pre_start: bool,
}

#[derive(Clone)]
struct CallLog(Arc<Mutex<std::fs::File>>);

impl CallLog {
    fn open(path: &Path) -> std::io::Result<Self> {
        let f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self(Arc::new(Mutex::new(f))))
    }

    fn record(&self, method: &str, mut fields: serde_json::Value) {
        fields["method"] = method.into();
        let mut f = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(f, "{fields}");
        let _ = f.flush();
    }
}

fn device_ids(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("widget-{i}")).collect()
}

/// The device list with health from the control file.
fn devices(args: &Args) -> Vec<pb::Device> {
    let unhealthy = std::fs::read_to_string(args.state_dir.join("unhealthy")).unwrap_or_default();
    let unhealthy: Vec<&str> = unhealthy.lines().map(str::trim).collect();
    device_ids(args.count)
        .into_iter()
        .map(|id| pb::Device {
            health: if unhealthy.contains(&id.as_str()) { pb::UNHEALTHY } else { pb::HEALTHY }.into(),
            id,
            topology: None,
        })
        .collect()
}

struct Plugin {
    args: Args,
    log: CallLog,
    devices: watch::Receiver<Vec<pb::Device>>,
    /// Cancelled when this server instance is replaced: its streams end.
    token: CancellationToken,
}

type ListStream = Pin<Box<dyn futures::Stream<Item = Result<pb::ListAndWatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl DevicePlugin for Plugin {
    type ListAndWatchStream = ListStream;

    async fn get_device_plugin_options(
        &self,
        _r: Request<pb::Empty>,
    ) -> Result<Response<pb::DevicePluginOptions>, Status> {
        self.log.record("GetDevicePluginOptions", serde_json::json!({}));
        Ok(Response::new(pb::DevicePluginOptions {
            pre_start_required: self.args.pre_start,
            get_preferred_allocation_available: self.args.preferred,
        }))
    }

    async fn list_and_watch(&self, _r: Request<pb::Empty>) -> Result<Response<Self::ListAndWatchStream>, Status> {
        self.log.record("ListAndWatch", serde_json::json!({}));
        let (rx, token, log) = (self.devices.clone(), self.token.clone(), self.log.clone());
        let stream = futures::stream::unfold((rx, token, log, true), |(mut rx, token, log, first)| async move {
            if !first {
                tokio::select! {
                    changed = rx.changed() => changed.ok()?,
                    _ = token.cancelled() => return None,
                }
            }
            let devices = rx.borrow_and_update().clone();
            let health: Vec<String> = devices.iter().map(|d| format!("{}={}", d.id, d.health)).collect();
            log.record("ListAndWatchSend", serde_json::json!({"devices": health}));
            Some((Ok(pb::ListAndWatchResponse { devices }), (rx, token, log, false)))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_preferred_allocation(
        &self,
        r: Request<pb::PreferredAllocationRequest>,
    ) -> Result<Response<pb::PreferredAllocationResponse>, Status> {
        let r = r.into_inner();
        let mut responses = Vec::new();
        for c in r.container_requests {
            self.log.record(
                "GetPreferredAllocation",
                serde_json::json!({"available": c.available_device_i_ds, "must_include": c.must_include_device_i_ds, "size": c.allocation_size}),
            );
            let mut ids = c.available_device_i_ds.clone();
            ids.sort();
            ids.reverse();
            ids.truncate(c.allocation_size.max(0) as usize);
            responses.push(pb::ContainerPreferredAllocationResponse { device_i_ds: ids });
        }
        Ok(Response::new(pb::PreferredAllocationResponse { container_responses: responses }))
    }

    async fn allocate(&self, r: Request<pb::AllocateRequest>) -> Result<Response<pb::AllocateResponse>, Status> {
        let r = r.into_inner();
        let mut responses = Vec::new();
        for c in r.container_requests {
            let mut ids = c.devices_ids.clone();
            ids.sort();
            self.log.record("Allocate", serde_json::json!({"devices": ids}));
            let known = device_ids(self.args.count);
            if let Some(bad) = ids.iter().find(|id| !known.contains(id)) {
                return Err(Status::invalid_argument(format!("unknown device {bad}")));
            }
            let joined = ids.join(",");
            responses.push(pb::ContainerAllocateResponse {
                envs: [("WIDGET_IDS".to_string(), joined.clone())].into(),
                mounts: ids
                    .iter()
                    .map(|id| pb::Mount {
                        container_path: format!("/widgets/{id}"),
                        host_path: self.args.state_dir.join("devices").join(id).display().to_string(),
                        read_only: true,
                    })
                    .collect(),
                devices: vec![],
                annotations: [("example.com/widgets".to_string(), joined)].into(),
                cdi_devices: vec![],
            });
        }
        Ok(Response::new(pb::AllocateResponse { container_responses: responses }))
    }

    async fn pre_start_container(
        &self,
        r: Request<pb::PreStartContainerRequest>,
    ) -> Result<Response<pb::PreStartContainerResponse>, Status> {
        let mut ids = r.into_inner().devices_ids;
        ids.sort();
        self.log.record("PreStartContainer", serde_json::json!({"devices": ids}));
        Ok(Response::new(pb::PreStartContainerResponse {}))
    }
}

fn inode(p: &Path) -> Option<u64> {
    std::fs::metadata(p).ok().map(|m| m.ino())
}

/// Registers with the kubelet; the kubelet's error text on refusal.
async fn register(args: &Args) -> Result<(), String> {
    let channel = kubelet::cm::devicemanager::endpoint::dial(&args.dir.join("kubelet.sock")).await?;
    let req = pb::RegisterRequest {
        version: args.api_version.clone(),
        endpoint: args.socket.clone(),
        resource_name: args.resource.clone(),
        options: Some(pb::DevicePluginOptions {
            pre_start_required: args.pre_start,
            get_preferred_allocation_available: args.preferred,
        }),
    };
    RegistrationClient::new(channel).register(req).await.map(drop).map_err(|s| s.message().to_string())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("device-plugin-test: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let dev_dir = args.state_dir.join("devices");
    std::fs::create_dir_all(&dev_dir).map_err(|e| format!("{}: {e}", dev_dir.display()))?;
    for id in device_ids(args.count) {
        std::fs::write(dev_dir.join(&id), format!("{id}\n")).map_err(|e| format!("{id}: {e}"))?;
    }
    let log = CallLog::open(&args.state_dir.join("calls.jsonl")).map_err(|e| format!("call log: {e}"))?;
    let (tx, rx) = watch::channel(devices(&args));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("SIGTERM handler: {e}"))?;
    let own = args.dir.join(&args.socket);
    let kubelet_sock = args.dir.join("kubelet.sock");
    loop {
        // Serve on our socket, then register.
        let _ = std::fs::remove_file(&own);
        std::fs::create_dir_all(&args.dir).map_err(|e| format!("{}: {e}", args.dir.display()))?;
        let listener = tokio::net::UnixListener::bind(&own).map_err(|e| format!("{}: {e}", own.display()))?;
        let token = CancellationToken::new();
        let plugin = Plugin { args: args.clone(), log: log.clone(), devices: rx.clone(), token: token.clone() };
        let server = tonic::transport::Server::builder()
            .add_service(DevicePluginServer::new(plugin))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::UnixListenerStream::new(listener),
                token.clone().cancelled_owned(),
            );
        let server = tokio::spawn(server);
        let registered_with = loop {
            let before = inode(&kubelet_sock);
            if before.is_some() {
                match register(&args).await {
                    Ok(()) => {
                        log.record("Register", serde_json::json!({"ok": true, "version": args.api_version}));
                        eprintln!("device-plugin-test: registered {} on {}", args.resource, own.display());
                        break before;
                    }
                    Err(e) => {
                        log.record("Register", serde_json::json!({"ok": false, "error": e}));
                        if e.contains("is not supported by kubelet") || e.contains("is invalid") {
                            // Refused for good, as real plugins do: exit.
                            token.cancel();
                            return Err(format!("registration refused: {e}"));
                        }
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                _ = term.recv() => return Ok(()),
            }
        };
        // Watch health, the kubelet's socket and our own.
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = term.recv() => {
                    token.cancel();
                    let _ = std::fs::remove_file(&own);
                    return Ok(());
                }
            }
            let now = devices(&args);
            if *tx.borrow() != now {
                let _ = tx.send(now);
            }
            let kubelet_now = inode(&kubelet_sock);
            if kubelet_now.is_some() && kubelet_now != registered_with || !own.exists() {
                log.record("Reregister", serde_json::json!({"kubelet_socket_changed": kubelet_now != registered_with}));
                break;
            }
        }
        token.cancel();
        let _ = server.await;
    }
}
