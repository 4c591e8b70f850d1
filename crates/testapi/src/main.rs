//! testapi: an in-memory Kubernetes API server for tests and demos.

mod auth;
mod csr;
mod discovery;
mod ephemeral;
mod handlers;
mod patch;
mod protobuf;
mod proxy;
mod resize;
mod respond;
mod selectors;
mod semantics;
mod store;
mod table;
mod tls;
mod token_request;
mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
}

#[derive(Parser, Debug)]
#[command(name = "testapi", about = "In-memory Kubernetes API server for tests and demos")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Serve the API over TLS.
    Serve(ServeArgs),
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// State directory: CA, serving cert, kubeconfigs, ready file.
    #[arg(long)]
    dir: PathBuf,
    /// Address to listen on (port 0 picks a free port; see <dir>/ready).
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Set spec.nodeName of pods created without one (no scheduler needed).
    #[arg(long)]
    bind_unscheduled_to: Option<String>,
    /// Write <dir>/kubelet-<NAME>.kubeconfig (CN=system:node:<NAME>, O=system:nodes). Repeatable.
    #[arg(long = "kubelet-node")]
    kubelet_nodes: Vec<String>,
    /// Bearer token TOKEN:USER[:GROUP1,GROUP2]. Repeatable.
    #[arg(long = "token")]
    tokens: Vec<String>,
    /// Static token file (Kubernetes format: token,user,uid,"group1,group2").
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// YAML list of allow rules {user|group, verbs, resources, subresources, namespaces} for SubjectAccessReviews.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Persist the store to this JSON file on every change and load it at start.
    #[arg(long)]
    persist: Option<PathBuf>,
    /// While this file exists, requests from node identities (`system:node:*`) are answered with
    /// the HTTP status it holds (e.g. `503`, `429`, `500`): API faults for kubelet tests.
    #[arg(long)]
    fault_file: Option<PathBuf>,
    /// Extra SANs for the serving certificate (host names or IPs).
    #[arg(long = "san")]
    sans: Vec<String>,
    /// Watch events kept for resuming watches; older resourceVersions get 410 Expired.
    #[arg(long, default_value_t = 10000)]
    history: usize,
    /// Longest life of certificates issued for CertificateSigningRequests, in seconds
    /// (kube-controller-manager's --cluster-signing-duration; one year).
    #[arg(long, default_value_t = 31_536_000)]
    csr_signing_seconds: u64,
    /// Shortest `expirationSeconds` a request may ask for (upstream: 600).
    #[arg(long, default_value_t = 600)]
    csr_min_expiration_seconds: u64,
    /// Approve kubelet client requests from bootstrap tokens or the node itself and kubelet
    /// serving requests from the node itself (kube-controller-manager's csrapproving).
    #[arg(long)]
    csr_auto_approve: bool,
    /// Interval of BOOKMARK events on watches that allow them.
    #[arg(long, default_value_t = 5)]
    bookmark_seconds: u64,
}

fn seed(store: &store::Store) {
    for ns in ["default", "kube-system", "kube-node-lease", "kube-public"] {
        let k = store::Key { resource: "/v1/namespaces".into(), namespace: String::new(), name: ns.into() };
        if !store.contains(&k) {
            let mut obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            semantics::prepare_create(discovery::find("", "v1", "namespaces").unwrap(), &mut obj, None);
            let _ = store.create("/v1/namespaces", "", obj);
        }
        let sa = store::Key { resource: "/v1/serviceaccounts".into(), namespace: ns.into(), name: "default".into() };
        if !store.contains(&sa) {
            let obj = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}});
            let _ = store.create("/v1/serviceaccounts", ns, obj);
        }
    }
}

async fn serve(a: ServeArgs) -> Result<(), ServeError> {
    let io = |what: &str| {
        let what = what.to_string();
        move |e| ServeError::Io(what, e)
    };
    std::fs::create_dir_all(&a.dir).map_err(io("creating --dir"))?;
    let listener = tokio::net::TcpListener::bind(a.listen).await.map_err(io("listen"))?;
    let local = listener.local_addr().map_err(io("listen"))?;
    let server = format!("https://{local}");

    let ca = tls::Ca::load_or_create(&a.dir)?;
    let serving = ca.server_cert(&a.sans)?;
    std::fs::write(a.dir.join("apiserver.crt"), &serving.cert_pem).map_err(io("apiserver.crt"))?;
    std::fs::write(a.dir.join("apiserver.key"), &serving.key_pem).map_err(io("apiserver.key"))?;
    tls::write_kubeconfig(&a.dir, "admin", &server, &ca, "admin", Some("system:masters"))?;
    for n in &a.kubelet_nodes {
        tls::write_kubeconfig(
            &a.dir,
            &format!("kubelet-{n}"),
            &server,
            &ca,
            &format!("system:node:{n}"),
            Some("system:nodes"),
        )?;
    }
    let mut tokens = auth::Tokens::default();
    for t in &a.tokens {
        tokens.add_flag(t)?;
    }
    if let Some(f) = &a.token_file {
        tokens.load_csv(f)?;
    }
    let policy = match &a.policy {
        Some(p) => auth::Policy::load(p)?,
        None => auth::Policy::default(),
    };
    let store = Arc::new(store::Store::new(a.history, a.persist.clone()));
    seed(&store);
    let app = Arc::new(handlers::App {
        store,
        tokens,
        policy,
        bind_unscheduled_to: a.bind_unscheduled_to.clone(),
        server_addr: local.to_string(),
        kubelet_tls: Arc::new(tls::kubelet_client_config(&ca)?),
        bookmark_every: Duration::from_secs(a.bookmark_seconds.max(1)),
        fault_file: a.fault_file.clone(),
        csr_min_expiration: Duration::from_secs(a.csr_min_expiration_seconds),
    });
    let csr_options =
        csr::Options { signing_duration: Duration::from_secs(a.csr_signing_seconds), auto_approve: a.csr_auto_approve };
    let ca = Arc::new(ca);
    tokio::spawn(csr::run(app.store.clone(), ca.clone(), csr_options));
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls::server_config(&ca, &serving)?));

    std::fs::write(a.dir.join("ready"), format!("{server}\n")).map_err(io("ready file"))?;
    println!("ready {server}");
    tracing::info!(%server, dir = %a.dir.display(), "listening");

    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accept");
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let stream = match acceptor.accept(tcp).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
            };
            let ident = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| tls::subject_names(c))
                .map(|(cn, orgs)| auth::Identity::new(&cn, orgs));
            let svc = service_fn(move |req| {
                let app = app.clone();
                let ident = ident.clone();
                async move { Ok::<_, std::convert::Infallible>(handlers::handle(app, ident, req).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades()
                .await
            {
                tracing::debug!(%peer, error = %e, "connection");
            }
        });
    }
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "testapi=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Serve(a) => serve(a).await,
    };
    if let Err(e) = result {
        eprintln!("testapi: {e}");
        std::process::exit(1);
    }
}
