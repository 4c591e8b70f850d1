//! The kubelet on containerd against raw CRI calls with the same sandbox and container configs.

use crate::fake_scale::{cores_over, rss_kib};
use crate::{Args, ms, percentile};
use k8s_openapi::api::core::v1::Pod;
use kubelet::cri::DynRuntime;
use kubelet::cri::labels::POD_UID;
use kubelet::cri::remote::RemoteRuntime;
use kubelet::pod::env::EnvSources;
use kubelet::pod::runtime_config::{self, ContainerInput, NodeContext};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

const SOCKET: &str = "unix:///run/containerd/containerd.sock";
const POD_LOGS_DIR: &str = "/var/log/pods";

fn manifest(name: &str, image: &str, script: &str, restart: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  restartPolicy: {restart}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: app\n    image: {image}\n    command: [\"sh\", \"-c\", {script:?}]\n"
    )
}

fn node_ctx(dir: &Path) -> NodeContext {
    NodeContext {
        node_name: "bench".into(),
        node_ip: None,
        cluster_dns: vec![],
        cluster_domain: "cluster.local".into(),
        resolv_conf: "/etc/resolv.conf".into(),
        // Where the kubelet under test writes its pods' logs (its default podLogsDir): containerd
        // creates the log files on both sides on the same filesystem.
        pod_logs_dir: POD_LOGS_DIR.into(),
        root_dir: dir.join("root"),
        cgroups: pod_cgroups(),
        seccomp_default: false,
    }
}

/// The kubelet's container manager with the default configuration, so the raw side's pods get
/// the same cgroup parent (`/kubepods/besteffort/pod<uid>`) as the kubelet's: runc then does the
/// same cgroup work on both sides. The raw side does not create the pod cgroup itself (runc
/// makes missing parents); the kubelet does, and that is part of what it costs.
fn pod_cgroups() -> Option<Arc<kubelet::cm::ContainerManager>> {
    match kubelet::cm::ContainerManager::setup(kubelet::cm::Config::from_kubelet(
        &kubelet_config::KubeletConfiguration::default(),
    )) {
        Ok(cm) => Some(cm),
        Err(e) => {
            println!("raw CRI side without pod cgroups (the container manager: {e})");
            None
        }
    }
}

/// A pod as the kubelet would have it (static pod defaulting), for the raw side's configs.
fn raw_pod(i: usize, image: &str) -> Pod {
    use kubelet::sources::manifest::{self as m, Origin};
    let yaml = manifest(&format!("raw{i}"), image, "sleep 3600", "Always");
    let origin = Origin { kind: kubelet::sources::SourceKind::File, location: format!("/raw/{i}") };
    let pod = m::decode(yaml.as_bytes(), &origin).unwrap().remove(0);
    m::prepare(pod, &origin, "bench", "t").unwrap()
}

/// The three calls of a pod start, as the kubelet's `kubelet_runtime_operations_duration_seconds`
/// names them.
const START_OPS: [&str; 3] = ["run_podsandbox", "create_container", "start_container"];

/// RunPodSandbox + CreateContainer + StartContainer, as the kubelet issues them.
async fn raw_start(rt: &DynRuntime, node: &NodeContext, pod: &Pod, image_ref: &str) -> anyhow::Result<String> {
    raw_start_timed(rt, node, pod, image_ref).await.map(|(id, _)| id)
}

/// [`raw_start`], with each call's duration (in [`START_OPS`] order).
async fn raw_start_timed(
    rt: &DynRuntime,
    node: &NodeContext,
    pod: &Pod,
    image_ref: &str,
) -> anyhow::Result<(String, [Duration; 3])> {
    let mut took = [Duration::ZERO; 3];
    let mut sb = runtime_config::sandbox_config(pod, node, 0);
    // Without the pod UID label the kubelet running beside does not take the pod for its own.
    sb.labels.remove(POD_UID);
    std::fs::create_dir_all(&sb.log_directory)?;
    let t = Instant::now();
    let id = rt.run_pod_sandbox(sb.clone()).await?;
    took[0] = t.elapsed();
    let c = &pod.spec.as_ref().unwrap().containers[0];
    let env = EnvSources::default();
    let input = ContainerInput {
        env_sources: &env,
        pod,
        container: c,
        kind: kubelet::cri::labels::ContainerType::Regular,
        restart_count: 0,
        image_ref,
        pod_ips: &[],
        volumes: &Default::default(),
        image_user: &kubelet::pod::security_context::ImageUser::Uid(0),
        recursive_read_only: false,
    };
    let mut cfg = runtime_config::container_config(&input, node).map_err(|e| anyhow::anyhow!(e.0))?;
    cfg.labels.remove(POD_UID);
    let t = Instant::now();
    let cid = rt.create_container(&id, cfg, sb).await?;
    took[1] = t.elapsed();
    let t = Instant::now();
    rt.start_container(&cid).await?;
    took[2] = t.elapsed();
    Ok((id, took))
}

/// Mean duration of each of [`START_OPS`] from the kubelet's own runtime operation metrics.
async fn kubelet_start_ops(k: &Kubelet) -> Option<[Duration; 3]> {
    let text = k.http.get(format!("http://127.0.0.1:{}/metrics", k.port)).send().await.ok()?.text().await.ok()?;
    let value = |series: &str, op: &str| -> Option<f64> {
        let key = format!("kubelet_runtime_operations_duration_seconds_{series}{{operation_type=\"{op}\"}} ");
        text.lines().find_map(|l| l.strip_prefix(&key)).and_then(|v| v.trim().parse().ok())
    };
    let mut out = [Duration::ZERO; 3];
    for (o, op) in out.iter_mut().zip(START_OPS) {
        *o = Duration::from_secs_f64(value("sum", op)? / value("count", op)?.max(1.0));
    }
    Some(out)
}

fn mean(ds: &[Duration]) -> Duration {
    ds.iter().sum::<Duration>() / ds.len().max(1) as u32
}

async fn raw_cleanup(rt: &DynRuntime, node: &NodeContext, ids: &[String]) {
    for id in ids {
        let meta = rt.pod_sandbox_status(id).await.ok().and_then(|s| s.metadata);
        let _ = rt.stop_pod_sandbox(id).await;
        let _ = rt.remove_pod_sandbox(id).await;
        let Some(m) = meta else { continue };
        let _ = std::fs::remove_dir_all(node.pod_logs_dir.join(format!("{}_{}_{}", m.namespace, m.name, m.uid)));
        if let Some(cm) = &node.cgroups {
            let _ = cm.remove_pod_cgroup(&m.uid);
        }
    }
}

struct Kubelet {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    http: reqwest::Client,
}

impl Kubelet {
    async fn start(bin: &Path) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        // Both listeners held until both ports are chosen, so the two differ.
        let (a, b) = (std::net::TcpListener::bind("127.0.0.1:0")?, std::net::TcpListener::bind("127.0.0.1:0")?);
        let (port, hz) = (a.local_addr()?.port(), b.local_addr()?.port());
        drop((a, b));
        std::fs::create_dir_all(dir.path().join("manifests"))?;
        let config = format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nstaticPodPath: {}\nreadOnlyPort: {port}\nhealthzPort: {hz}\nserializeImagePulls: false\nmaxPods: 250\n",
            dir.path().join("manifests").display()
        );
        std::fs::write(dir.path().join("config.yaml"), config)?;
        let log = std::fs::File::create(dir.path().join("kubelet.log"))?;
        let child = Command::new(bin)
            .arg("--config")
            .arg(dir.path().join("config.yaml"))
            .arg("--root-dir")
            .arg(dir.path().join("root"))
            .arg("--hostname-override")
            .arg("bench")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| anyhow::anyhow!("{}: {e} (build it with cargo build --release)", bin.display()))?;
        let k = Self { child, dir, port, http: reqwest::Client::new() };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if k.pods().await.is_some() {
                return Ok(k);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("kubelet did not start")
    }

    async fn pods(&self) -> Option<Vec<Pod>> {
        let r = self.http.get(format!("http://127.0.0.1:{}/pods", self.port)).send().await.ok()?;
        let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.ok()?).ok()?;
        serde_json::from_value(v["items"].clone()).ok()
    }

    fn write(&self, name: &str, yaml: &str) {
        let tmp = self.dir.path().join(format!(".{name}"));
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(tmp, self.dir.path().join("manifests").join(format!("{name}.yaml"))).unwrap();
    }

    fn remove_all(&self) {
        for e in std::fs::read_dir(self.dir.path().join("manifests")).unwrap().flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }

    /// Polls /pods until `n` pods run their container: every 2 ms for one pod, every 50 ms for
    /// more (100 pods' statuses are ~100 KiB of JSON: encoding and parsing them every 2 ms took
    /// a good part of a core from the runtime being measured; 50 ms is 0.5 % of a burst).
    async fn wait_running(&self, n: usize) -> Instant {
        let every = Duration::from_millis(if n > 1 { 50 } else { 2 });
        loop {
            if let Some(pods) = self.pods().await {
                let running = pods.iter().filter(|p| container_running(p)).count();
                if running >= n {
                    return Instant::now();
                }
            }
            tokio::time::sleep(every).await;
        }
    }

    async fn wait_empty(&self, rt: &DynRuntime) {
        loop {
            let none = self.pods().await.is_some_and(|p| p.is_empty());
            let sandboxes = rt.list_pod_sandboxes(None).await.unwrap_or_default();
            if none && !sandboxes.iter().any(|s| s.metadata.as_ref().is_some_and(|m| m.name.ends_with("-bench"))) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

fn container_running(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .is_some_and(|cs| !cs.is_empty() && cs.iter().all(|c| c.state.as_ref().is_some_and(|s| s.running.is_some())))
}

fn report(label: &str, kubelet: &mut [Duration], raw: &mut [Duration]) {
    kubelet.sort();
    raw.sort();
    let (k50, k99, r50, r99) =
        (percentile(kubelet, 0.5), percentile(kubelet, 0.99), percentile(raw, 0.5), percentile(raw, 0.99));
    println!(
        "{label}: kubelet p50 {} p99 {} | raw CRI p50 {} p99 {} | ratio p50 {:.2}× p99 {:.2}×",
        ms(k50),
        ms(k99),
        ms(r50),
        ms(r99),
        k50.as_secs_f64() / r50.as_secs_f64().max(1e-9),
        k99.as_secs_f64() / r99.as_secs_f64().max(1e-9)
    );
}

pub async fn run(args: &Args) -> anyhow::Result<()> {
    let rt: DynRuntime = Arc::new(RemoteRuntime::connect(SOCKET, None, Duration::from_secs(120)).await?);
    let image_ref = rt.pull_image(&args.image, None).await?;
    let scratch = tempfile::tempdir()?;
    let node = node_ctx(scratch.path());

    let k = Kubelet::start(&args.kubelet).await?;
    let pid = k.pid();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_idle = rss_kib(&pid);
    let cpu_idle = cores_over(&pid, Duration::from_secs(10)).await;

    // 1. One pod at a time, raw and through the kubelet in turn: whatever the runtime or the
    // machine drifts through (containerd's garbage collection after removals, other load) hits
    // both sides alike. The raw pods carry no pod UID label, so the kubelet leaves them alone.
    let mut raw = Vec::new();
    let mut raw_ops: [Vec<Duration>; 3] = Default::default();
    let mut kub = Vec::new();
    for i in 0..args.runs {
        let pod = raw_pod(i, &args.image);
        let t = Instant::now();
        let (id, ops) = raw_start_timed(&rt, &node, &pod, &image_ref).await?;
        raw.push(t.elapsed());
        for (all, op) in raw_ops.iter_mut().zip(ops) {
            all.push(op);
        }
        raw_cleanup(&rt, &node, &[id]).await;

        let t = Instant::now();
        k.write(&format!("one{i}"), &manifest(&format!("one{i}"), &args.image, "sleep 3600", "Always"));
        kub.push(k.wait_running(1).await - t);
        k.remove_all();
        k.wait_empty(&rt).await;
    }
    report("pod start (1 pod)", &mut kub, &mut raw);
    // Where the difference is: the same three calls, as the runtime answered each side.
    if let Some(kops) = kubelet_start_ops(&k).await {
        let line: Vec<String> = START_OPS
            .iter()
            .zip(kops.iter().zip(&raw_ops))
            .map(|(op, (kd, rd))| format!("{op} {} vs {}", ms(*kd), ms(mean(rd))))
            .collect();
        println!("  runtime calls, mean (kubelet's vs raw): {}", line.join(", "));
    }

    // 2. A burst of pods at once, raw at the same concurrency (the kubelet idle beside it).
    let n = args.burst;
    let t = Instant::now();
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let rt = rt.clone();
            let node = node.clone();
            let pod = raw_pod(10_000 + i, &args.image);
            let image_ref = image_ref.clone();
            tokio::spawn(async move { raw_start(&rt, &node, &pod, &image_ref).await })
        })
        .collect();
    let mut ids = Vec::new();
    let mut failed = 0;
    for h in handles {
        match h.await? {
            Ok(id) => ids.push(id),
            Err(e) => {
                failed += 1;
                eprintln!("raw burst: {e}");
            }
        }
    }
    let raw_burst = t.elapsed();
    if failed > 0 {
        println!("raw CRI burst: {failed} of {n} pods failed in the runtime");
    }
    raw_cleanup(&rt, &node, &ids).await;

    // 2b. The same burst through the kubelet.

    let t = Instant::now();
    for i in 0..n {
        k.write(&format!("burst{i}"), &manifest(&format!("burst{i}"), &args.image, "sleep 3600", "Always"));
    }
    let kub_burst = k.wait_running(n).await - t;
    println!(
        "{n} pods at once: kubelet {} | raw CRI {} | ratio {:.2}×",
        ms(kub_burst),
        ms(raw_burst),
        kub_burst.as_secs_f64() / raw_burst.as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_busy = rss_kib(&pid);
    let cpu_busy = cores_over(&pid, Duration::from_secs(10)).await;
    println!(
        "kubelet footprint: idle RSS {:.1} MiB, CPU {cpu_idle:.4} cores | {n} pods RSS {:.1} MiB, CPU {cpu_busy:.4} cores",
        rss_idle as f64 / 1024.0,
        rss_busy as f64 / 1024.0
    );
    k.remove_all();
    k.wait_empty(&rt).await;

    // 3. Container exit → terminated state visible on /pods.
    let mut lat = Vec::new();
    for i in 0..args.runs.min(10) {
        k.write(&format!("exit{i}"), &manifest(&format!("exit{i}"), &args.image, "sleep 1", "Never"));
        let seen = loop {
            let pods = k.pods().await.unwrap_or_default();
            let done = pods.iter().find(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.state.as_ref().is_some_and(|s| s.terminated.is_some())))
            });
            if let Some(p) = done {
                break (SystemTime::now(), p.clone());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let cid = seen.1.status.unwrap().container_statuses.unwrap()[0].container_id.clone().unwrap_or_default();
        let cid = cid.split("://").nth(1).unwrap_or_default().to_string();
        if let Ok(st) = rt.container_status(&cid).await
            && let Some(finished) = kubelet::cri::nanos_to_time(st.finished_at)
        {
            lat.push(seen.0.duration_since(finished).unwrap_or_default());
        }
        k.remove_all();
        k.wait_empty(&rt).await;
    }
    lat.sort();
    println!(
        "container exit → status visible: p50 {} p99 {} (PLEG runtime events; relist as backstop)",
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99))
    );
    Ok(())
}
