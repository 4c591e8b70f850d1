//! Hollow nodes against testapi: `kubelet-hollow --nodes N` in its own process, pods created
//! through the API bound round-robin to the nodes. Reports RSS and CPU per hollow node (the
//! process with N nodes minus one with none), pods per second sustained from the first create to
//! the last pod seen Running through a watch, per-pod latency, and node Ready / lease renewals.

use crate::fake_scale::{cores_over, cpu_time, rss_kib};
use crate::{ms, percentile};
use k8s_openapi::api::core::v1::Pod;
use kubelet::api::DynApi;
use kubelet::api::kube_client::KubeApi;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a hollow run needs: the two binaries and the pods per node.
pub struct Options {
    pub testapi: PathBuf,
    pub hollow: PathBuf,
    pub pods_per_node: usize,
    /// Pod creations in flight at once.
    pub concurrency: usize,
}

/// A binary next to this one (`target/<profile>/NAME`).
pub fn sibling(name: &str) -> PathBuf {
    std::env::current_exe().ok().and_then(|p| p.parent().map(|d| d.join(name))).unwrap_or_else(|| PathBuf::from(name))
}

struct Proc(Child);

impl Proc {
    fn pid(&self) -> String {
        self.0.id().to_string()
    }

    /// SIGTERM (the hollow binary removes its directories), then wait.
    fn stop(mut self) {
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_testapi(bin: &Path, dir: &Path) -> anyhow::Result<(Proc, PathBuf)> {
    let log = std::fs::File::create(dir.join("testapi.log"))?;
    let child = Command::new(bin)
        .args(["serve", "--dir"])
        .arg(dir)
        .args(["--listen", "127.0.0.1:0", "--history", "200000"])
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .spawn()
        .map_err(|e| anyhow::anyhow!("{}: {e}", bin.display()))?;
    let p = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !dir.join("ready").exists() {
        anyhow::ensure!(Instant::now() < deadline, "testapi did not become ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((p, dir.join("admin.kubeconfig")))
}

/// Starts `kubelet-hollow` and waits for its `ready N` line.
fn start_hollow(bin: &Path, nodes: usize, prefix: &str, kubeconfig: &Path, dir: &Path) -> anyhow::Result<Proc> {
    let log = std::fs::File::create(dir.join(format!("{prefix}{nodes}.log")))?;
    let mut child = Command::new(bin)
        .args(["--nodes", &nodes.to_string(), "--name-prefix", prefix, "--kubeconfig"])
        .arg(kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .map_err(|e| anyhow::anyhow!("{}: {e}", bin.display()))?;
    let stdout = child.stdout.take();
    let p = Proc(child);
    let mut line = String::new();
    if let Some(out) = stdout {
        BufReader::new(out).read_line(&mut line)?;
    }
    anyhow::ensure!(line.trim() == format!("ready {nodes}"), "kubelet-hollow did not start: {line:?}");
    Ok(p)
}

fn pod(name: &str, node: &str) -> Pod {
    let v = serde_json::json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]}
    });
    serde_json::from_value(v).unwrap_or_default()
}

fn is_ready(n: &k8s_openapi::api::core::v1::Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn ready_nodes(api: &DynApi, names: &[String]) -> usize {
    let mut n = 0;
    for name in names {
        if api.get_node(name).await.ok().flatten().is_some_and(|n| is_ready(&n)) {
            n += 1;
        }
    }
    n
}

async fn renew_times(api: &DynApi, names: &[String]) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for name in names {
        let t = api.get_lease(name).await.ok().flatten().and_then(|l| l.spec?.renew_time).map(|t| format!("{t:?}"));
        out.push(t);
    }
    out
}

/// RSS of `kubelet-hollow --nodes 0` after it settled: the empty process.
pub fn baseline(opts: &Options, kubeconfig: &Path, dir: &Path) -> anyhow::Result<u64> {
    let p = start_hollow(&opts.hollow, 0, "empty-", kubeconfig, dir)?;
    std::thread::sleep(Duration::from_secs(3));
    let rss = rss_kib(&p.pid());
    p.stop();
    Ok(rss)
}

pub async fn run(opts: &Options, counts: &[usize]) -> anyhow::Result<()> {
    let mut empty = None;
    for &n in counts {
        round(opts, n, &mut empty).await?;
    }
    Ok(())
}

/// One count of nodes against a fresh testapi (earlier rounds' pods would stay bound to nodes
/// that are gone).
async fn round(opts: &Options, n: usize, empty: &mut Option<u64>) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("bench-hollow-").tempdir()?;
    let (server, kubeconfig) = start_testapi(&opts.testapi, dir.path())?;
    let admin: DynApi =
        Arc::new(KubeApi::from_kubeconfig(&kubeconfig, 10_000.0, 10_000).await.map_err(|e| anyhow::anyhow!(e))?);
    let empty = match *empty {
        Some(e) => e,
        None => {
            let e = baseline(opts, &kubeconfig, dir.path())?;
            println!("hollow: empty kubelet-hollow process RSS {:.1} MiB", e as f64 / 1024.0);
            *empty = Some(e);
            e
        }
    };
    let prefix = "hollow-";
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
    let start = Instant::now();
    let p = start_hollow(&opts.hollow, n, prefix, &kubeconfig, dir.path())?;
    let pid = p.pid();
    while ready_nodes(&admin, &names).await < n {
        anyhow::ensure!(start.elapsed() < Duration::from_secs(300), "hollow nodes did not all become Ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let registered = start.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_idle = rss_kib(&pid);
    let idle_cores = cores_over(&pid, Duration::from_secs(10)).await;

    // Pods: watch every node's pods (as the scheduler-side observer would), then create.
    let total = n * opts.pods_per_node;
    let running_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut watches = tokio::task::JoinSet::new();
    for name in &names {
        let mut rx = admin.watch_node_pods(name);
        let running_at = running_at.clone();
        watches.spawn(async move {
            while let Some(pods) = rx.recv().await {
                let now = Instant::now();
                let mut m = running_at.lock().unwrap_or_else(|p| p.into_inner());
                for p in pods {
                    if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") {
                        m.entry(p.metadata.name.unwrap_or_default()).or_insert(now);
                    }
                }
            }
        });
    }
    let created_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let cpu_pods0 = cpu_time(&pid);
    let api_cpu0 = cpu_time(&server.pid());
    let bench_cpu0 = cpu_time("self");
    let t0 = Instant::now();
    let mut creators = tokio::task::JoinSet::new();
    for c in 0..opts.concurrency.max(1) {
        let admin = admin.clone();
        let names = names.clone();
        let created_at = created_at.clone();
        let step = opts.concurrency.max(1);
        creators.spawn(async move {
            let mut i = c;
            while i < total {
                let name = format!("p{i}");
                let node = &names[i % names.len()];
                let sent = Instant::now();
                admin.create_pod(&pod(&name, node)).await.map_err(|e| anyhow::anyhow!("create pod {name}: {e}"))?;
                created_at.lock().unwrap_or_else(|p| p.into_inner()).insert(name, sent);
                i += step;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = creators.join_next().await {
        r??;
    }
    let created = t0.elapsed();
    loop {
        let count = running_at.lock().unwrap_or_else(|p| p.into_inner()).len();
        if count >= total {
            break;
        }
        anyhow::ensure!(t0.elapsed() < Duration::from_secs(600), "only {count} of {total} pods Running after 600 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all_running = t0.elapsed();
    let cpu_pods = cpu_time(&pid) - cpu_pods0;
    let api_cpu = cpu_time(&server.pid()) - api_cpu0;
    let bench_cpu = cpu_time("self") - bench_cpu0;
    let mut lat: Vec<Duration> = {
        let r = running_at.lock().unwrap_or_else(|p| p.into_inner());
        let c = created_at.lock().unwrap_or_else(|p| p.into_inner());
        c.iter().filter_map(|(k, t)| r.get(k).map(|rt| rt.saturating_duration_since(*t))).collect()
    };
    lat.sort();
    watches.abort_all();

    // Steady state with the pods: RSS, CPU, and every lease renewed in a 12 s window
    // (renewed every 10 s).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_pods = rss_kib(&pid);
    let leases0 = renew_times(&admin, &names).await;
    let cpu1 = cpu_time(&pid);
    tokio::time::sleep(Duration::from_secs(12)).await;
    let busy_cores = (cpu_time(&pid) - cpu1).as_secs_f64() / 12.0;
    let leases1 = renew_times(&admin, &names).await;
    let renewed = leases0.iter().zip(&leases1).filter(|(a, b)| a.is_some() && b.is_some() && a != b).count();
    let ready = ready_nodes(&admin, &names).await;

    let per_node = (rss_idle.saturating_sub(empty)) as f64 / n as f64 / 1024.0;
    let per_pod = (rss_pods.saturating_sub(rss_idle)) as f64 / total as f64;
    println!(
        "hollow, {n} nodes: all Ready in {}; RSS {:.1} MiB = {per_node:.2} MiB per node over the empty process; \
         idle CPU {:.4} cores ({:.5} per node)",
        ms(registered),
        rss_idle as f64 / 1024.0,
        idle_cores,
        idle_cores / n as f64
    );
    println!(
        "hollow, {n} nodes, {total} pods ({} per node, {} creators): created in {}, all Running in {} = {:.0} pods/s \
         sustained; create→Running (watch) p50 {} p99 {}; CPU per pod: hollow {:.1} ms, testapi {:.1} ms, this bench (creates and watches) {:.1} ms",
        opts.pods_per_node,
        opts.concurrency,
        ms(created),
        ms(all_running),
        total as f64 / all_running.as_secs_f64(),
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99)),
        cpu_pods.as_secs_f64() * 1000.0 / total as f64,
        api_cpu.as_secs_f64() * 1000.0 / total as f64,
        bench_cpu.as_secs_f64() * 1000.0 / total as f64
    );
    println!(
        "hollow, {n} nodes with {total} pods: RSS {:.1} MiB (+{per_pod:.1} KiB per pod), {:.2} MiB per node all in; \
         CPU {:.4} cores ({:.5} per node); {ready}/{n} nodes Ready; {renewed}/{n} leases renewed in 12 s",
        rss_pods as f64 / 1024.0,
        (rss_pods.saturating_sub(empty)) as f64 / n as f64 / 1024.0,
        busy_cores,
        busy_cores / n as f64
    );
    p.stop();
    drop(server);
    // What went wrong along the way (watch restarts, failed writes) is in the hollow log.
    let log = std::fs::read_to_string(dir.path().join(format!("{prefix}{n}.log"))).unwrap_or_default();
    let warns: Vec<&str> =
        log.lines().filter(|l| l.contains(" WARN ") && !l.contains("hollow nodes started")).collect();
    if !warns.is_empty() {
        println!("hollow, {n} nodes: {} warnings in the log, first: {}", warns.len(), warns[0]);
    }
    Ok(())
}
