//! `kubelet-hollow`: many hollow nodes in one process, each with the kubelet's own pod, status,
//! lease and probe logic on an in-memory runtime, against an API server (a cheaper kubemark).
//!
//! ```sh
//! kubelet-hollow --nodes 100 --kubeconfig admin.kubeconfig --name-prefix hollow-
//! ```
//!
//! Every node gets its own API client (connections, rate limit, watch) built from the one
//! kubeconfig, so the identity must be allowed to act for all of them (testapi's `admin` is in
//! `system:masters`). Prints `ready N` on stdout once every node has started.

use anyhow::Context;
use clap::Parser;
use kubelet::api::DynApi;
use kubelet::api::kube_client::KubeApi;
use kubelet::cri::DynRuntime;
use kubelet::cri::fake::FakeRuntime;
use kubelet_config::duration::Duration as GoDuration;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(name = "kubelet-hollow", about = "Many hollow kubelet nodes on an in-memory runtime")]
struct Args {
    /// How many nodes to run.
    #[arg(long)]
    nodes: usize,
    /// kubeconfig for the API server, used by every node.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Node names are this prefix followed by 0, 1, …
    #[arg(long, default_value = "hollow-")]
    name_prefix: String,
    /// Parent of the nodes' directories [default: a fresh directory in /dev/shm, else $TMPDIR,
    /// removed at exit].
    #[arg(long)]
    root_dir: Option<PathBuf>,
    /// kubeAPIQPS per node.
    #[arg(long, default_value_t = 50.0)]
    kube_api_qps: f64,
    /// kubeAPIBurst per node.
    #[arg(long, default_value_t = 100)]
    kube_api_burst: u32,
    /// maxPods per node.
    #[arg(long, default_value_t = 110)]
    max_pods: i64,
    /// nodeStatusUpdateFrequency.
    #[arg(long, default_value = "10s")]
    node_status_update_frequency: GoDuration,
    /// nodeLeaseDurationSeconds (the lease is renewed every quarter of it).
    #[arg(long, default_value_t = 40)]
    node_lease_duration_seconds: i32,
    /// Log verbosity (as the kubelet's -v).
    #[arg(short = 'v', long = "v", default_value_t = 0)]
    verbosity: u32,
}

fn std_duration(d: GoDuration, flag: &str) -> anyhow::Result<Duration> {
    d.to_std().with_context(|| format!("--{flag}: must not be negative"))
}

fn main() -> std::process::ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kubelet-hollow: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(Args::parse())) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kubelet-hollow: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let level = if args.verbosity >= 3 { "debug" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{level},h2=info,hyper=info,tower=info")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();

    let (root, remove_root) = match &args.root_dir {
        Some(d) => (d.clone(), false),
        // tmpfs when there is one: pod directories are created and removed at a high rate, and
        // on ext4 that cost more CPU than the kubelet logic (inode allocation).
        None => {
            let shm = PathBuf::from("/dev/shm");
            let parent = if shm.is_dir() { shm } else { std::env::temp_dir() };
            (parent.join(format!("kubelet-hollow-{}", std::process::id())), true)
        }
    };
    let status_update = std_duration(args.node_status_update_frequency, "node-status-update-frequency")?;
    let mut nodes = Vec::with_capacity(args.nodes);
    for i in 0..args.nodes {
        let name = format!("{}{i}", args.name_prefix);
        let client = KubeApi::from_kubeconfig(&args.kubeconfig, args.kube_api_qps, args.kube_api_burst.max(1))
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        let api: DynApi = Arc::new(client);
        let fake = FakeRuntime::without_call_log();
        fake.open_registry();
        // Room for every event of a node at --max-pods (create and start of a sandbox and a
        // container per pod), not the fake's 4,096-slot default allocated per node.
        fake.set_event_buffer((args.max_pods.max(1) as usize).saturating_mul(4).min(4096));
        let runtime: DynRuntime = Arc::new(fake);
        let mut cfg = kubelet::hollow::Config::new(name.clone(), root.join(&name));
        cfg.max_pods = args.max_pods;
        cfg.status_update = status_update;
        cfg.lease_duration_secs = args.node_lease_duration_seconds;
        nodes.push(kubelet::hollow::start(cfg, runtime, api).await?);
    }
    tracing::warn!(nodes = nodes.len(), root = %root.display(), "hollow nodes started");
    println!("ready {}", nodes.len());

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    for n in nodes {
        n.stop();
    }
    if remove_root {
        let _ = std::fs::remove_dir_all(&root);
    }
    Ok(())
}
