//! Scale on the in-memory runtime: N pods at once through the real dispatcher, workers, plan and
//! status; time to all Running and the process CPU spent, per pod.

use k8s_openapi::api::core::v1::Pod;
use kubelet::clock::SystemClock;
use kubelet::cri::DynRuntime;
use kubelet::cri::fake::FakeRuntime;
use kubelet::events::Recorder;
use kubelet::images::{self, Images};
use kubelet::pod::admission::NodeInfo;
use kubelet::pod::dispatcher;
use kubelet::pod::executor::Deps;
use kubelet::pod::runtime_config::NodeContext;
use kubelet::pod::worker::WorkerConfig;
use kubelet::sources::manifest::{self, Origin};
use kubelet::sources::{Snapshot, SourceKind};
use kubelet::status_manager::Statuses;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// User+system CPU of this process so far.
pub fn cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<u64> = after.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the state field is skipped.
    let ticks = f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0);
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

pub fn rss_kib(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn pod(i: usize) -> Pod {
    let v = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("p{i}")},
        "spec": {"containers": [{"name": "app", "image": "img:1"}]}});
    let origin = Origin { kind: SourceKind::File, location: format!("/m/p{i}.yaml") };
    manifest::prepare(serde_json::from_value(v).unwrap(), &origin, "bench", "t").unwrap()
}

pub async fn run(n: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let rt = FakeRuntime::new();
    rt.add_image("img:1");
    let runtime: DynRuntime = Arc::new(rt.clone());
    let statuses = Statuses::new();
    let images = Images::new(images::Config { max_parallel_pulls: None }, runtime.clone(), Arc::new(SystemClock));
    let node = Arc::new(NodeContext {
        node_name: "bench".into(),
        node_ip: None,
        cluster_dns: vec![],
        cluster_domain: "cluster.local".into(),
        resolv_conf: "/nonexistent".into(),
        pod_logs_dir: dir.path().join("logs"),
        root_dir: dir.path().join("root"),
        cgroups: None,
    });
    let deps = Deps {
        api: None,
        events: Recorder::disabled(),
        runtime: runtime.clone(),
        images,
        node,
        clock: Arc::new(SystemClock),
        container_logs_dir: dir.path().join("containers"),
        metrics: Default::default(),
    };
    let worker =
        WorkerConfig { deps, statuses: statuses.clone(), runtime_name: "fake".into(), resync: Duration::from_secs(60) };
    let (snap_tx, snap_rx) = mpsc::channel(4);
    let (pleg_tx, pleg_rx) = mpsc::channel(4096);
    let health = kubelet::pleg::Health::default();
    tokio::spawn(kubelet::pleg::run(
        kubelet::pleg::Config { relist_period: Duration::from_secs(1), metrics: Default::default() },
        runtime,
        health,
        pleg_tx,
    ));
    let cfg = dispatcher::Config {
        worker,
        node: NodeInfo { name: "bench".into(), ..Default::default() },
        max_pods: 1_000_000,
        sources: HashSet::from([SourceKind::File]),
        housekeeping: Duration::from_secs(10),
    };
    tokio::spawn(dispatcher::run(cfg, snap_rx, pleg_rx));
    let pods: Vec<Pod> = (0..n).map(pod).collect();
    let rss_before = rss_kib("self");
    let cpu_before = cpu_time("self");
    let start = Instant::now();
    snap_tx.send(Snapshot { source: SourceKind::File, pods }).await?;
    let mut version = statuses.subscribe();
    loop {
        let running = statuses.count(|s| s.phase.as_deref() == Some("Running"));
        if running == n {
            break;
        }
        let _ = tokio::time::timeout(Duration::from_millis(50), version.changed()).await;
    }
    let took = start.elapsed();
    let cpu_start = cpu_time("self") - cpu_before;
    // Steady state: 5 s of relists and resyncs with every pod running.
    let cpu0 = cpu_time("self");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle = cpu_time("self") - cpu0;
    println!(
        "fake runtime, {n} pods: all Running in {} ({:.1} µs wall per pod, {:.1} µs CPU per pod); idle CPU {:.3} cores; RSS +{} MiB",
        crate::ms(took),
        took.as_secs_f64() * 1e6 / n as f64,
        cpu_start.as_secs_f64() * 1e6 / n as f64,
        idle.as_secs_f64() / 5.0,
        (rss_kib("self").saturating_sub(rss_before)) / 1024
    );
    drop(snap_tx);
    Ok(())
}
