//! The node's certificates (upstream pkg/kubelet/certificate and client-go util/certificate):
//! TLS bootstrap of the API client identity, its rotation, and the serving certificate of the
//! 10250 server from a `kubernetes.io/kubelet-serving` request.
//!
//! - `store.rs` the pairs on disk (upstream's FileStore names and symlink);
//! - `csr.rs` keys, requests and the CSR API (create, wait for Approved + issued);
//! - `bootstrap.rs` LoadClientCert and the kubeconfig it writes;
//! - `rotation.rs` the certificate manager (jittered 70–90 % deadline, fallback to the bootstrap
//!   credentials when the certificate expired);
//! - `client.rs` the API client that follows the rotating certificate;
//! - `serving.rs` the server's certificate resolver.
//!
//! [`start`] is what the binary calls: it wires them for one node.

pub mod bootstrap;
pub mod client;
pub mod csr;
pub mod rotation;
pub mod serving;
pub mod store;

use crate::clock::DynClock;
use csr::{CsrClient, Kind, KubeCsrClient};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use store::FileStore;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {message}", path.display())]
    BadPair { path: PathBuf, message: String },
    #[error("kubeconfig {}: {message}", path.display())]
    Kubeconfig { path: PathBuf, message: String },
    #[error("failed to make a certificate request: {0}")]
    Request(#[from] rcgen::Error),
    #[error("certificate signing request: {0}")]
    Api(String),
    #[error("certificate signing request {name} is denied, reason: {reason}, message: {message}")]
    Denied { name: String, reason: String, message: String },
    #[error("certificate signing request {name} failed, reason: {reason}, message: {message}")]
    Failed { name: String, reason: String, message: String },
    #[error("timed out after {after:?} waiting for certificate signing request {name} to be issued")]
    Timeout { name: String, after: Duration },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the node's certificates are made from.
pub struct Options {
    pub kubeconfig: PathBuf,
    pub bootstrap_kubeconfig: Option<PathBuf>,
    pub cert_dir: PathBuf,
    pub node_name: String,
    /// rotateCertificates.
    pub rotate_client: bool,
    /// serverTLSBootstrap.
    pub serving: bool,
    /// The node's host names and addresses (the serving certificate's SANs).
    pub serving_sans: Vec<String>,
    pub clock: DynClock,
}

/// The node's API client and, with serverTLSBootstrap, the 10250 server's certificate source.
pub struct Started {
    pub client: kube::Client,
    pub serving: Option<Arc<serving::Resolver>>,
}

async fn kube_client(path: &Path) -> Result<kube::Client> {
    let k = bootstrap::read_kubeconfig(path)?;
    let err = |e: &dyn std::fmt::Display| Error::Kubeconfig { path: path.into(), message: e.to_string() };
    let config = kube::Config::from_custom_kubeconfig(k, &Default::default()).await.map_err(|e| err(&e))?;
    kube::Client::try_from(config).map_err(|e| err(&e))
}

async fn kube_config(path: &Path) -> Result<kube::Config> {
    let k = bootstrap::read_kubeconfig(path)?;
    kube::Config::from_custom_kubeconfig(k, &Default::default())
        .await
        .map_err(|e| Error::Kubeconfig { path: path.into(), message: e.to_string() })
}

/// Rotates until it has a pair (the first request of a node, or after an expired one), retrying
/// 2 s doubling to 128 s; `None` once `token` is cancelled.
async fn first_pair(m: &rotation::Manager, token: &CancellationToken) -> Option<()> {
    let mut retry = Duration::from_secs(2);
    loop {
        let r = tokio::select! {
            _ = token.cancelled() => return None,
            r = m.rotate() => r,
        };
        match r {
            Ok(_) => return Some(()),
            Err(e) => tracing::warn!(error = %e, retry = ?retry, "no client certificate yet"),
        }
        tokio::select! {
            _ = token.cancelled() => return None,
            _ = tokio::time::sleep(retry) => {}
        }
        retry = (retry * 2).min(Duration::from_secs(128));
    }
}

/// Wires the node's certificates as upstream's kubelet server.go does (buildKubeletClientConfig):
/// - rotateCertificates: `--kubeconfig` is kept if valid, else written to point at
///   `kubelet-client-current.pem` (LoadClientConfig); the client certificate manager gets a
///   first certificate (with the bootstrap credentials when there is none or it expired) and
///   rotates it; the API client follows it;
/// - without rotation, `--bootstrap-kubeconfig` gets a certificate once (LoadClientCert) and the
///   client is `--kubeconfig`'s;
/// - serverTLSBootstrap: a serving certificate manager (started at once; until it has a
///   certificate, TLS handshakes on 10250 fail as upstream's GetCertificate does).
///
/// The managers' tasks run until `token` is cancelled.
pub async fn start(o: Options, token: CancellationToken) -> Result<Option<Started>> {
    let client_store = FileStore::new(&o.cert_dir, Kind::Client.prefix());
    let bootstrap = match &o.bootstrap_kubeconfig {
        Some(p) => Some((bootstrap::read_kubeconfig(p)?, p.clone())),
        None => None,
    };
    let client = 'client: {
        if !o.rotate_client {
            if let Some((k, path)) = &bootstrap {
                let csr_client = KubeCsrClient(kube_client(path).await?);
                let now = o.clock.now();
                bootstrap::load_client_cert(
                    &o.kubeconfig,
                    k,
                    &client_store,
                    &o.cert_dir,
                    &o.node_name,
                    &csr_client,
                    now,
                )
                .await?;
            }
            break 'client kube_client(&o.kubeconfig).await?;
        }
        let mut store = client_store;
        let bootstrap_csr: Option<Arc<dyn CsrClient>> = match &bootstrap {
            Some((k, path)) => {
                if !bootstrap::kubeconfig_valid(&o.kubeconfig, o.clock.now()) {
                    bootstrap::write_kubeconfig(k, &o.kubeconfig, &store.current_path())?;
                }
                Some(Arc::new(KubeCsrClient(kube_client(path).await?)))
            }
            None => {
                let k = bootstrap::read_kubeconfig(&o.kubeconfig)?;
                match bootstrap::client_cert_files(&k) {
                    Some((cert, key)) => store = store.with_fallback(cert, key),
                    // A kubeconfig without a client certificate (a token): nothing to rotate.
                    None => break 'client kube_client(&o.kubeconfig).await?,
                }
                None
            }
        };
        let initial = store.current().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "the current client certificate is unusable");
            None
        });
        let (publish, current) = rotation::channel(initial);
        let (client, connections) = client::rotating_client(kube_config(&o.kubeconfig).await?, current.clone())?;
        let clients = rotation::Clients { current: Arc::new(KubeCsrClient(client.clone())), bootstrap: bootstrap_csr };
        let manager =
            rotation::Manager::new(Kind::Client, &o.node_name, vec![], store, clients, o.clock.clone(), publish);
        let valid = current.borrow().as_ref().is_some_and(|p| p.valid_at(o.clock.now()));
        if !valid && first_pair(&manager, &token).await.is_none() {
            return Ok(None);
        }
        tokio::spawn(client::close_on_rotation(current, connections, token.clone()));
        tokio::spawn(manager.run(token.clone()));
        client
    };
    let serving = if o.serving {
        let store = FileStore::new(&o.cert_dir, Kind::Serving.prefix());
        let initial = store.current().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "the current serving certificate is unusable");
            None
        });
        let clients = rotation::Clients { current: Arc::new(KubeCsrClient(client.clone())), bootstrap: None };
        let (publish, current) = rotation::channel(initial);
        let sans = o.serving_sans.clone();
        let manager =
            rotation::Manager::new(Kind::Serving, &o.node_name, sans, store, clients, o.clock.clone(), publish);
        tokio::spawn(manager.run(token.clone()));
        Some(Arc::new(serving::Resolver::new(current)))
    } else {
        None
    };
    Ok(Some(Started { client, serving }))
}
