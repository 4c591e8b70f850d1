//! The v1beta1 Registration service on `<root-dir>/device-plugins/kubelet.sock` (upstream's
//! plugin/v1beta1 server): a plugin names its API version, its socket (relative to the
//! directory) and its resource; a bad version or resource name is refused with upstream's
//! message and disturbs nothing else; otherwise the kubelet dials the plugin before answering.
//! At start the directory's stale sockets are removed (upstream's CleanupPluginDirectory: the
//! checkpoint and other files stay), which is what tells running plugins to register again.

use super::DeviceManager;
use super::proto::registration_server::{Registration, RegistrationServer};
use super::proto::{self, Empty, RegisterRequest};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

/// Why a registration was refused (upstream's messages).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    #[error("requested API version {0:?} is not supported by kubelet. Supported versions are [{v:?}]", v = proto::VERSION)]
    UnsupportedVersion(String),
    #[error("the ResourceName {0:?} is invalid")]
    InvalidResourceName(String),
    #[error(transparent)]
    Connect(#[from] super::endpoint::ConnectError),
}

fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// apimachinery's IsQualifiedName: `[prefix/]name`, the prefix a DNS subdomain, the name at
/// most 63 alphanumerics, `-`, `_` or `.`, starting and ending alphanumeric.
fn is_qualified_name(s: &str) -> bool {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if name.contains('/') || prefix.is_some_and(|p| !is_dns1123_subdomain(p)) {
        return false;
    }
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// v1helper.IsExtendedResourceName: outside the `kubernetes.io/` namespace, with a `/`, not
/// prefixed `requests.`, and a qualified name once prefixed `requests.` (the quota name).
pub fn is_extended_resource_name(name: &str) -> bool {
    let native = !name.contains('/') || name.contains("kubernetes.io/");
    if native || name.starts_with("requests.") {
        return false;
    }
    is_qualified_name(&format!("requests.{name}"))
}

/// The checks upstream's Register makes before dialling: version, then resource name.
pub fn validate(r: &RegisterRequest) -> Result<(), RegisterError> {
    if r.version != proto::VERSION {
        return Err(RegisterError::UnsupportedVersion(r.version.clone()));
    }
    if !is_extended_resource_name(&r.resource_name) {
        return Err(RegisterError::InvalidResourceName(r.resource_name.clone()));
    }
    Ok(())
}

/// Go's `filepath.Join(dir, endpoint)`: the endpoint is appended (even when absolute) and the
/// result cleaned.
pub fn endpoint_socket(dir: &Path, endpoint: &str) -> PathBuf {
    let mut out = PathBuf::from("/");
    let joined = format!("{}/{endpoint}", dir.display());
    for c in Path::new(&joined).components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(p) => out.push(p),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

struct Service {
    manager: DeviceManager,
    token: CancellationToken,
}

#[tonic::async_trait]
impl Registration for Service {
    async fn register(&self, request: Request<RegisterRequest>) -> Result<Response<Empty>, Status> {
        let r = request.into_inner();
        tracing::info!(resource = %r.resource_name, endpoint = %r.endpoint, version = %r.version, "got registration request from device plugin");
        let result = match validate(&r) {
            Ok(()) => {
                let socket = endpoint_socket(self.manager.dir(), &r.endpoint);
                super::endpoint::connect(&self.manager, &r.resource_name, &socket, self.token.child_token())
                    .await
                    .map_err(RegisterError::from)
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => Ok(Response::new(Empty {})),
            Err(e) => {
                tracing::warn!(resource = %r.resource_name, error = %e, "bad registration request from device plugin");
                // Go returns a plain error, which gRPC sends as Unknown.
                Err(Status::unknown(e.to_string()))
            }
        }
    }
}

/// Removes the sockets in `dir` (upstream's CleanupPluginDirectory: only sockets; the checkpoint
/// and other files are kept).
fn cleanup(dir: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)?.flatten() {
        if e.file_type().is_ok_and(|t| t.is_socket()) {
            let _ = std::fs::remove_file(e.path());
        }
    }
    Ok(())
}

/// Creates the directory (0750), removes stale sockets and binds the registration socket.
pub fn bind(manager: &DeviceManager) -> std::io::Result<tokio::net::UnixListener> {
    let dir = manager.dir();
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))?;
    cleanup(dir)?;
    tokio::net::UnixListener::bind(manager.socket_path())
}

/// Serves registrations on `listener` until `token` is cancelled; the socket is removed then
/// (as Go's listener does when closed).
pub async fn serve_on(manager: DeviceManager, listener: tokio::net::UnixListener, token: CancellationToken) {
    let socket = manager.socket_path();
    let service = Service { manager, token: token.clone() };
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    tracing::info!(socket = %socket.display(), "device plugin registration server listening");
    if let Err(e) = tonic::transport::Server::builder()
        .add_service(RegistrationServer::new(service))
        .serve_with_incoming_shutdown(incoming, token.cancelled())
        .await
    {
        tracing::error!(error = %e, "device plugin registration server failed");
    }
    let _ = std::fs::remove_file(&socket);
}

/// Binds and serves (see [`bind`], [`serve_on`]); a bind failure is logged.
pub async fn serve(manager: DeviceManager, token: CancellationToken) {
    match bind(&manager) {
        Ok(listener) => serve_on(manager, listener, token).await,
        Err(e) => {
            tracing::error!(socket = %manager.socket_path().display(), error = %e, "cannot start the device plugin registration server")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(version: &str, resource: &str) -> RegisterRequest {
        RegisterRequest {
            version: version.into(),
            endpoint: "widget.sock".into(),
            resource_name: resource.into(),
            options: None,
        }
    }

    #[test]
    fn a_bad_version_is_refused_with_upstreams_message() {
        let e = validate(&req("v1alpha", "example.com/widget")).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"requested API version "v1alpha" is not supported by kubelet. Supported versions are ["v1beta1"]"#
        );
        // The version is checked first.
        assert!(matches!(validate(&req("", "cpu")), Err(RegisterError::UnsupportedVersion(_))));
    }

    #[test]
    fn resource_names_follow_the_extended_resource_rules() {
        for good in ["example.com/widget", "nvidia.com/gpu", "a.b-c.io/x_y.z", "intel.com/sriov_net_A"] {
            assert_eq!(validate(&req("v1beta1", good)), Ok(()), "{good}");
        }
        for bad in [
            "widget",
            "cpu",
            "kubernetes.io/widget",
            "example.kubernetes.io/widget",
            "requests.example.com/widget",
            "Example.com/widget",
            "example.com/",
            "example.com/-widget",
            "example.com/a/b",
            "",
        ] {
            let e = validate(&req("v1beta1", bad)).unwrap_err();
            assert_eq!(e.to_string(), format!("the ResourceName {bad:?} is invalid"));
        }
        let long = format!("example.com/{}", "w".repeat(64));
        assert!(validate(&req("v1beta1", &long)).is_err());
    }

    #[test]
    fn the_endpoint_is_joined_to_the_directory_as_go_does() {
        let dir = Path::new("/var/lib/kubelet/device-plugins");
        assert_eq!(endpoint_socket(dir, "widget.sock"), dir.join("widget.sock"));
        assert_eq!(endpoint_socket(dir, "/widget.sock"), dir.join("widget.sock"));
        assert_eq!(endpoint_socket(dir, "./a/../w.sock"), dir.join("w.sock"));
    }
}
