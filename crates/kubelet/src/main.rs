//! The `kubelet` binary: flags and the KubeletConfiguration, logging, the runtime connection,
//! the API client and signals. The node itself is composed in `kubelet::composition`.

use anyhow::Context;
use kubelet::api::DynApi;
use kubelet::api::kube_client::KubeApi;
use kubelet::backoff::Exponential;
use kubelet::clock::SystemClock;
use kubelet::composition::{self, Identity};
use kubelet::cri::remote::RemoteRuntime;
use kubelet::cri::{DynRuntime, Runtime};
use kubelet::lock_file;
use kubelet_config::{Flags, KubeletConfiguration, NodeOptions, Parsed};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long a stopping kubelet waits for its tasks before aborting them.
const SHUTDOWN_WITHIN: Duration = Duration::from_secs(10);

/// Fields this kubelet acts on; any other field set to a non-default value is reported once
/// as not supported yet.
const IMPLEMENTED: &[&str] = &[
    "apiVersion",
    "kind",
    "staticPodPath",
    "staticPodURL",
    "staticPodURLHeader",
    "syncFrequency",
    "fileCheckFrequency",
    "httpCheckFrequency",
    "readOnlyPort",
    "healthzPort",
    "healthzBindAddress",
    "clusterDNS",
    "clusterDomain",
    "resolvConf",
    "runtimeRequestTimeout",
    "containerRuntimeEndpoint",
    "imageServiceEndpoint",
    "serializeImagePulls",
    "maxParallelImagePulls",
    "podLogsDir",
    "logging",
    "failSwapOn",
    "seccompDefault",
    "nodeIP",
    "kubeAPIQPS",
    "eventRecordQPS",
    "eventBurst",
    "kubeAPIBurst",
    "registerNode",
    "registerWithTaints",
    "nodeStatusUpdateFrequency",
    "nodeStatusReportFrequency",
    "nodeLeaseDurationSeconds",
    "nodeStatusMaxImages",
    "maxPods",
    "port",
    "cgroupDriver",
    "cgroupRoot",
    "cgroupsPerQOS",
    "cpuCFSQuota",
    "cpuCFSQuotaPeriod",
    "podPidsLimit",
    "enforceNodeAllocatable",
    "systemReserved",
    "kubeReserved",
    "containerLogMaxSize",
    "containerLogMaxFiles",
    "containerLogMaxWorkers",
    "containerLogMonitorInterval",
    "enableServer",
    "address",
    "rotateCertificates",
    "serverTLSBootstrap",
    "tlsCertFile",
    "tlsPrivateKeyFile",
    "tlsMinVersion",
    "tlsCipherSuites",
    "authentication",
    "authorization",
    "enableDebuggingHandlers",
    "enableSystemLogHandler",
    "evictionHard",
    "evictionSoft",
    "evictionSoftGracePeriod",
    "evictionPressureTransitionPeriod",
    "evictionMaxPodGracePeriod",
    "evictionMinimumReclaim",
    "mergeDefaultEvictionSettings",
    "imageMinimumGCAge",
    "imageMaximumGCAge",
    "imageGCHighThresholdPercent",
    "imageGCLowThresholdPercent",
    "registryPullQPS",
    "registryBurst",
    "shutdownGracePeriod",
    "shutdownGracePeriodCriticalPods",
    "shutdownGracePeriodByPodPriority",
    "cpuManagerPolicy",
    "cpuManagerPolicyOptions",
    "cpuManagerReconcilePeriod",
    "reservedSystemCPUs",
    "topologyManagerPolicy",
    "topologyManagerScope",
    "topologyManagerPolicyOptions",
    "memoryManagerPolicy",
    "reservedMemory",
    "providerID",
];

/// Says once what is accepted and not acted on: configuration fields (also those set by
/// flags) and flag-only flags.
fn report_unsupported(cfg: &KubeletConfiguration, parsed: &Parsed) {
    for field in kubelet_config::unsupported_fields(cfg, IMPLEMENTED) {
        tracing::warn!(field, "configuration field is accepted but not supported yet");
    }
    for flag in parsed.not_acted_on() {
        tracing::warn!(flag = format!("--{flag}"), "flag is accepted but not supported yet");
    }
}

/// `--lock-file`: held for the kubelet's life; with `--exit-on-lock-contention`, the receiver
/// fires when another process opens the file.
async fn take_lock_file(node: &NodeOptions) -> anyhow::Result<(Option<lock_file::Lock>, Option<Contention>)> {
    if node.exit_on_lock_contention && node.lock_file.is_none() {
        return Err(lock_file::Error::NoLockFile.into());
    }
    let Some(path) = node.lock_file.clone() else { return Ok((None, None)) };
    tracing::info!(path = %path.display(), "acquiring file lock");
    let lock = tokio::task::spawn_blocking({
        let path = path.clone();
        move || lock_file::acquire(&path)
    })
    .await??;
    let contention = if node.exit_on_lock_contention {
        tracing::info!(path = %path.display(), "watching for inotify events");
        Some(lock_file::watch_for_contention(&path)?)
    } else {
        None
    };
    Ok((Some(lock), contention))
}

type Contention = tokio::sync::oneshot::Receiver<()>;

/// Reconnecting to the runtime: 500 ms doubling to 30 s.
const RUNTIME_RETRY: Exponential = Exponential::new(Duration::from_millis(500), Duration::from_secs(30));

async fn connect_runtime(cfg: &KubeletConfiguration, timeout: Duration) -> DynRuntime {
    let image_ep = cfg.effective_image_service_endpoint().to_string();
    let mut delay = RUNTIME_RETRY.initial;
    loop {
        match RemoteRuntime::connect(&cfg.container_runtime_endpoint, Some(&image_ep), timeout).await {
            Ok(rt) => match rt.version().await {
                Ok(v) => {
                    tracing::info!(
                        runtime = %v.runtime_name,
                        version = %v.runtime_version,
                        api = %v.runtime_api_version,
                        endpoint = %cfg.container_runtime_endpoint,
                        "connected to container runtime"
                    );
                    match rt.status().await {
                        Ok(st) => {
                            for c in st.conditions.iter().filter(|c| !c.status) {
                                tracing::warn!(condition = %c.r#type, reason = %c.reason, "runtime not ready: {}", c.message);
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "runtime status"),
                    }
                    return Arc::new(rt);
                }
                Err(e) => tracing::warn!(error = %e, retry_in = ?delay, "container runtime not answering"),
            },
            Err(e) => tracing::warn!(error = %e, retry_in = ?delay, "container runtime not reachable"),
        }
        tokio::time::sleep(delay).await;
        delay = RUNTIME_RETRY.after(delay);
    }
}

fn main() -> std::process::ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kubelet: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line with the whole chain, no backtrace: these are user-facing errors.
            eprintln!("kubelet: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let parsed = Flags::parse_env();
    // pflag prints these while parsing, before logging is set up.
    for warning in parsed.deprecation_warnings() {
        eprintln!("{warning}");
    }
    // The load error already lists every bad field; keep it as one message.
    let (cfg, node) = kubelet_config::load_with_flags(&parsed.flags).map_err(|e| anyhow::anyhow!("{e}"))?;
    kubelet::logging::init(&cfg.logging);
    report_unsupported(&cfg, &parsed);
    let (_lock, contention) = take_lock_file(&node).await?;
    let config = composition::Config::from_kubelet_config(&cfg, &node, Identity::of_host(&node)?)?;
    config.prepare_host()?;
    tracing::info!(node = %config.node_name, root_dir = %config.root_dir.display(), "starting kubelet");

    let request_timeout =
        cfg.runtime_request_timeout.to_std().context("runtimeRequestTimeout: must not be negative")?;
    let metrics = kubelet::metrics::Metrics::new();
    // Every CRI call is counted and timed (kubelet_runtime_operations_*).
    let runtime = kubelet::metrics::instrumented::Instrumented::wrap(
        connect_runtime(&cfg, request_timeout).await,
        metrics.clone(),
    );
    let mut config = config;
    let certs_token = CancellationToken::new();
    let api: Option<DynApi> = match &node.kubeconfig {
        Some(path) if node.bootstrap_kubeconfig.is_some() || cfg.rotate_certificates || cfg.server_tls_bootstrap => {
            // TLS bootstrap and certificate rotation (kubelet::certificate).
            let Some(certs) =
                kubelet::certificate::start(certificate_options(&cfg, &node, &config, path), certs_token.clone())
                    .await?
            else {
                return Ok(());
            };
            if let (Some(resolver), Some(server)) =
                (certs.serving, config.host.as_mut().and_then(|h| h.kubelet_server.as_mut()))
            {
                server.tls.cert_resolver = Some(resolver);
            }
            tracing::info!(kubeconfig = %path.display(), "API server mode");
            let (qps, burst) = (f64::from(cfg.kube_api_qps), cfg.kube_api_burst.max(1) as u32);
            Some(Arc::new(KubeApi::from_client(certs.client, qps, burst)))
        }
        Some(path) => {
            let client = KubeApi::from_kubeconfig(path, f64::from(cfg.kube_api_qps), cfg.kube_api_burst.max(1) as u32)
                .await
                .map_err(|e| anyhow::anyhow!(e))?;
            tracing::info!(kubeconfig = %path.display(), "API server mode");
            Some(Arc::new(client))
        }
        None => None,
    };
    let parts = composition::Parts { runtime, api, clock: Arc::new(SystemClock), metrics };
    let running = composition::build(config, parts).await?.spawn(CancellationToken::new()).await?;

    // SIGTERM/SIGINT stop the kubelet; pods keep running and are adopted on the next start.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let contended = async move {
        // A watch that failed (sender gone) is not contention.
        if let Some(rx) = contention
            && rx.await.is_ok()
        {
            return;
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = contended => tracing::info!("another process opened the lock file; exiting"),
    }
    tracing::info!("shutting down; pods are left running");
    running.shutdown(SHUTDOWN_WITHIN).await;
    certs_token.cancel();
    Ok(())
}

/// What `kubelet::certificate::start` needs: the flags' paths, rotateCertificates,
/// serverTLSBootstrap and the node's names and addresses (the serving certificate's SANs).
fn certificate_options(
    cfg: &KubeletConfiguration,
    node: &kubelet_config::NodeOptions,
    config: &composition::Config,
    kubeconfig: &std::path::Path,
) -> kubelet::certificate::Options {
    let mut sans = vec![config.node_name.clone()];
    sans.extend(config.node_ip.iter().flat_map(|ips| ips.split(',')).map(|ip| ip.trim().to_string()));
    kubelet::certificate::Options {
        kubeconfig: kubeconfig.to_path_buf(),
        bootstrap_kubeconfig: node.bootstrap_kubeconfig.clone(),
        cert_dir: node.cert_dir.clone(),
        node_name: config.node_name.clone(),
        rotate_client: cfg.rotate_certificates,
        serving: cfg.server_tls_bootstrap,
        serving_sans: sans,
        clock: Arc::new(SystemClock),
    }
}
