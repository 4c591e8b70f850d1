//! Scale on the in-memory runtime: N pods at once through the real dispatcher, workers, plan and
//! status; time to all Running and the process CPU spent, per pod.

use k8s_openapi::api::core::v1::Pod;
use kubelet::clock::SystemClock;
use kubelet::composition::{self, Identity};
use kubelet::cri::fake::FakeRuntime;
use kubelet::sources::manifest::{self, Origin};
use kubelet::sources::{Snapshot, SourceKind};
use kubelet::status_manager::Statuses;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

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

/// Cores the process used on average over the next `window` (this waits out the window).
pub async fn cores_over(pid: &str, window: Duration) -> f64 {
    let before = cpu_time(pid);
    tokio::time::sleep(window).await;
    (cpu_time(pid) - before).as_secs_f64() / window.as_secs_f64()
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

/// A kubelet's pod machinery on the fake runtime: dispatcher, workers, PLEG and statuses.
struct FakeNode {
    rt: FakeRuntime,
    statuses: Statuses,
    snapshots: mpsc::Sender<Snapshot>,
    _running: composition::Running,
    _dir: tempfile::TempDir,
}

async fn fake_node(events: bool) -> anyhow::Result<FakeNode> {
    let dir = tempfile::tempdir()?;
    let rt = FakeRuntime::without_call_log();
    rt.add_image("img:1");
    rt.set_events_unimplemented(!events);
    let id = Identity { node_name: "bench".into(), node_ip: None };
    let mut cfg = composition::Config::in_process(id, dir.path().join("root"))?;
    cfg.max_pods = 1_000_000;
    cfg.sources.fed = HashSet::from([SourceKind::File]);
    let parts = composition::Parts {
        runtime: Arc::new(rt.clone()),
        api: None,
        clock: Arc::new(SystemClock),
        metrics: Default::default(),
    };
    let running = composition::build(cfg, parts).await?.spawn(CancellationToken::new()).await?;
    Ok(FakeNode {
        rt,
        statuses: running.statuses.clone(),
        snapshots: running.snapshots(),
        _running: running,
        _dir: dir,
    })
}

/// Waits until `f` holds for the statuses, waking on every change.
async fn until(statuses: &Statuses, f: impl Fn(&Statuses) -> bool) {
    let mut version = statuses.subscribe();
    while !f(statuses) {
        let _ = tokio::time::timeout(Duration::from_millis(50), version.changed()).await;
    }
}

/// Churn (leak check, k/k #73587): `rounds` × (create `n` pods, wait until Running, delete them,
/// wait until gone from the runtime and the status manager); RSS after each round.
pub async fn churn(n: usize, rounds: usize) -> anyhow::Result<()> {
    let node = fake_node(true).await?;
    let mut rss = Vec::new();
    let start = Instant::now();
    for round in 0..rounds {
        let pods: Vec<Pod> = (0..n).map(|i| pod(round * n + i)).collect();
        node.snapshots.send(Snapshot { source: SourceKind::File, pods }).await?;
        until(&node.statuses, |s| s.count(|st| st.phase.as_deref() == Some("Running")) == n).await;
        node.snapshots.send(Snapshot { source: SourceKind::File, pods: Vec::new() }).await?;
        until(&node.statuses, |s| s.list().is_empty()).await;
        while node.rt.sandbox_count() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Let the removed workers' tasks finish, then hand freed memory back to the OS so the
        // figure is what is still allocated, not what malloc keeps cached.
        tokio::time::sleep(Duration::from_secs(2)).await;
        unsafe {
            libc::malloc_trim(0);
        }
        rss.push(rss_kib("self"));
    }
    // The first round grows maps and pools to their working size; a leak shows as growth after it.
    let warm = rss.get(1).or(rss.first()).copied().unwrap_or(0);
    let last = rss.last().copied().unwrap_or(0);
    println!(
        "churn on the fake runtime: {rounds} rounds of {n} pods created and deleted in {}; RSS after each round (KiB, after malloc_trim): {rss:?}; growth from round 2 to round {rounds}: {} KiB (goal < 1024)",
        crate::ms(start.elapsed()),
        last as i64 - warm as i64
    );
    Ok(())
}

pub async fn run(n: usize, events: bool) -> anyhow::Result<()> {
    let FakeNode { rt, statuses, snapshots: snap_tx, _running, _dir } = fake_node(events).await?;
    let pods: Vec<Pod> = (0..n).map(pod).collect();
    let uids: Vec<String> = pods.iter().map(|p| p.metadata.uid.clone().unwrap_or_default()).collect();
    let rss_before = rss_kib("self");
    let cpu_before = cpu_time("self");
    let start = Instant::now();
    snap_tx.send(Snapshot { source: SourceKind::File, pods }).await?;
    until(&statuses, |s| s.count(|st| st.phase.as_deref() == Some("Running")) == n).await;
    let took = start.elapsed();
    let cpu_start = cpu_time("self") - cpu_before;
    // Steady state: 5 s of relists and resyncs with every pod running.
    let idle_cores = cores_over("self", Duration::from_secs(5)).await;
    // Status delay at this scale: 20 containers spread over the pods exit one at a time; each
    // exit → its restart visible in the status (restartPolicy Always).
    let mut delays = Vec::new();
    for k in 0..20usize {
        let uid = &uids[k * n / 20];
        let restarts = |s: &Statuses| {
            s.get(uid).and_then(|st| st.container_statuses?.first().map(|c| (c.restart_count, c.container_id.clone())))
        };
        let Some((before, Some(cid))) = restarts(&statuses) else { anyhow::bail!("pod {uid} has no container") };
        let id = cid.rsplit("://").next().unwrap_or_default().to_string();
        let t = Instant::now();
        rt.exit_container(&id, 1);
        until(&statuses, |s| restarts(s).is_some_and(|(r, _)| r > before)).await;
        delays.push(t.elapsed());
    }
    delays.sort();
    println!(
        "fake runtime{}, {n} pods: all Running in {} ({:.1} µs wall per pod, {:.1} µs CPU per pod); idle CPU {:.3} cores; RSS +{} MiB",
        if events { "" } else { " (no events)" },
        crate::ms(took),
        took.as_secs_f64() * 1e6 / n as f64,
        cpu_start.as_secs_f64() * 1e6 / n as f64,
        idle_cores,
        (rss_kib("self").saturating_sub(rss_before)) / 1024
    );
    println!(
        "fake runtime{}, {n} pods: container exit → restart in the status p50 {} p99 {} (20 exits)",
        if events { "" } else { " (no events)" },
        crate::ms(crate::percentile(&delays, 0.5)),
        crate::ms(crate::percentile(&delays, 0.99))
    );
    drop(snap_tx);
    Ok(())
}
