//! The summary built from fake runtime data and a fake host (helpers shared with the metrics tests).

use super::*;
use crate::cri::Runtime;
use crate::cri::fake::{FakeRuntime, FakeStats};
use crate::cri::labels;

pub(crate) const MI: u64 = 1 << 20;

fn write(root: &std::path::Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// A pod with running containers `names` in the fake runtime; returns the container IDs.
pub(crate) async fn pod(rt: &FakeRuntime, name: &str, uid: &str, names: &[&str]) -> Vec<String> {
    let r = PodRef { name: name.into(), namespace: "default".into(), uid: uid.into() };
    let sb_config = api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: name.into(),
            namespace: "default".into(),
            uid: uid.into(),
            attempt: 0,
        }),
        labels: labels::sandbox_labels(None, &r),
        ..Default::default()
    };
    let sb = rt.run_pod_sandbox(sb_config.clone()).await.unwrap();
    let mut ids = Vec::new();
    for n in names {
        let config = api::ContainerConfig {
            metadata: Some(api::ContainerMetadata { name: n.to_string(), attempt: 0 }),
            image: Some(api::ImageSpec { image: "busybox:1.36".into(), ..Default::default() }),
            labels: labels::container_labels(&r, n),
            ..Default::default()
        };
        let id = rt.create_container(&sb, config, sb_config.clone()).await.unwrap();
        rt.start_container(&id).await.unwrap();
        ids.push(id);
    }
    ids
}

fn host(dir: &std::path::Path) -> HostPaths {
    write(dir, "proc/meminfo", "MemTotal:       1048576 kB\nMemFree:         524288 kB\n");
    write(dir, "proc/stat", "cpu  100 0 100 1000 0 0 0 0 0 0\nbtime 1700000000\n");
    write(dir, "proc/sys/kernel/pid_max", "4194304\n");
    write(dir, "proc/net/dev", "h1\nh2\n  eth0: 10 1 0 0 0 0 0 0 20 2 0 0 0 0 0 0\n");
    write(dir, "cgroup/memory/memory.usage_in_bytes", &format!("{}\n", 300 * MI));
    write(dir, "cgroup/memory/memory.stat", &format!("total_inactive_file {}\ntotal_rss {}\n", 100 * MI, 150 * MI));
    write(dir, "cgroup/cpuacct/cpuacct.usage", "5000000000\n");
    HostPaths { proc: dir.join("proc"), cgroup: dir.join("cgroup") }
}

pub(crate) fn provider(rt: &FakeRuntime, dir: &std::path::Path) -> Provider {
    let cfg = Config {
        node_name: "node-a".into(),
        root_dir: dir.to_path_buf(),
        pod_logs_dir: dir.join("logs"),
        kubepods: None,
        paths: host(dir),
    };
    Provider::new(cfg, Arc::new(rt.clone()))
}

#[tokio::test]
async fn summary_has_node_pods_and_containers_from_runtime_and_host() {
    let d = tempfile::tempdir().unwrap();
    let rt = FakeRuntime::new();
    let ids = pod(&rt, "web", "u1", &["app", "sidecar"]).await;
    rt.set_stats(&ids[0], FakeStats { cpu_nanos: 2_000_000_000, memory_bytes: 48 * MI, writable_bytes: 4096 });
    rt.set_stats(&ids[1], FakeStats { cpu_nanos: 1_000_000_000, memory_bytes: 2 * MI, writable_bytes: 0 });
    write(d.path(), "logs/default_web_u1/app/0.log", &"x".repeat(5000));
    write(d.path(), "pods/u1/volumes/kubernetes.io~empty-dir/cache/data", &"y".repeat(9000));
    let p = provider(&rt, d.path());
    let c = p.collect(false).await.unwrap();
    let s = &c.summary;

    assert_eq!(s.node.node_name, "node-a");
    let mem = s.node.memory.as_ref().unwrap();
    assert_eq!(mem.working_set_bytes, Some(200 * MI), "root usage − total_inactive_file");
    assert_eq!(mem.available_bytes, Some(1024 * MI - 200 * MI), "MemTotal − working set");
    assert_eq!(mem.rss_bytes, Some(150 * MI));
    assert_eq!(s.node.cpu.as_ref().unwrap().usage_core_nano_seconds, Some(5_000_000_000));
    assert_eq!(s.node.network.as_ref().unwrap().default.rx_bytes, Some(10));
    assert!(s.node.fs.as_ref().unwrap().capacity_bytes.unwrap() > 0);
    assert_eq!(s.node.rlimit.as_ref().unwrap().maxpid, Some(4194304));
    let image_fs = s.node.runtime.as_ref().unwrap().image_fs.as_ref().unwrap();
    assert_eq!(image_fs.used_bytes, Some(0), "fake has no images yet");

    assert_eq!(s.pods.len(), 1);
    let pod = &s.pods[0];
    assert_eq!((pod.pod_ref.name.as_str(), pod.pod_ref.uid.as_str()), ("web", "u1"));
    assert!(pod.start_time.is_some());
    let app = pod.containers.iter().find(|c| c.name == "app").unwrap();
    assert_eq!(app.memory.as_ref().unwrap().working_set_bytes, Some(48 * MI));
    assert_eq!(app.cpu.as_ref().unwrap().usage_core_nano_seconds, Some(2_000_000_000));
    assert_eq!(app.rootfs.as_ref().unwrap().used_bytes, Some(4096));
    assert!(app.logs.as_ref().unwrap().used_bytes.unwrap() >= 5000);
    // Pod figures from ListPodSandboxStats (the fake sums its containers).
    assert_eq!(pod.memory.as_ref().unwrap().working_set_bytes, Some(50 * MI));
    assert_eq!(pod.cpu.as_ref().unwrap().usage_core_nano_seconds, Some(3_000_000_000));
    let vols = pod.volume.as_ref().unwrap();
    assert_eq!(vols.len(), 1);
    assert_eq!(vols[0].name, "cache");
    assert!(vols[0].fs.used_bytes.unwrap() >= 9000);
    let eph = pod.ephemeral_storage.as_ref().unwrap().used_bytes.unwrap();
    assert!(eph >= 4096 + 5000 + 9000, "rootfs + logs + emptyDir: {eph}");

    // Upstream JSON names.
    let json = serde_json::to_value(s).unwrap();
    assert_eq!(json["node"]["nodeName"], "node-a");
    assert_eq!(json["pods"][0]["podRef"]["namespace"], "default");
    assert_eq!(json["pods"][0]["containers"][0]["memory"]["workingSetBytes"], 48 * MI);
    assert!(json["pods"][0]["ephemeral-storage"]["usedBytes"].is_u64());
    assert!(json["node"]["runtime"]["imageFs"].is_object());
    assert!(json["node"]["rlimit"]["maxpid"].is_i64());
    assert!(json["node"]["network"]["name"].is_string(), "default interface inline");

    // CPU nano-cores: a second sample after usage grew.
    assert_eq!(app.cpu.as_ref().unwrap().usage_nano_cores, None, "one sample is not a rate");
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    rt.set_stats(&ids[0], FakeStats { cpu_nanos: 2_500_000_000, memory_bytes: 48 * MI, writable_bytes: 4096 });
    let again = p.collect(true).await.unwrap();
    let app = again.summary.pods[0].containers.iter().find(|c| c.name == "app").unwrap();
    assert!(app.cpu.as_ref().unwrap().usage_nano_cores.is_some_and(|n| n > 0));
    assert!(app.rootfs.is_none() && app.logs.is_none(), "only cpu and memory");
    assert!(again.summary.node.fs.is_none() && again.summary.pods[0].network.is_none());
}

#[tokio::test]
async fn pods_fall_back_to_their_containers_without_sandbox_stats_and_gone_containers_are_forgotten() {
    let d = tempfile::tempdir().unwrap();
    let rt = FakeRuntime::new();
    let ids = pod(&rt, "db", "u2", &["a", "b"]).await;
    rt.set_stats(&ids[0], FakeStats { cpu_nanos: 10, memory_bytes: 3 * MI, writable_bytes: 0 });
    rt.set_stats(&ids[1], FakeStats { cpu_nanos: 20, memory_bytes: 4 * MI, writable_bytes: 0 });
    let p = provider(&rt, d.path());
    rt.fail_next("ListPodSandboxStats", "unimplemented");
    let c = p.collect(true).await.unwrap();
    let pod = &c.summary.pods[0];
    assert_eq!(pod.memory.as_ref().unwrap().working_set_bytes, Some(7 * MI));
    assert_eq!(pod.cpu.as_ref().unwrap().usage_core_nano_seconds, Some(30));
    // Keys: two containers, the node and the pod (from sandbox stats on this round or not).
    let before = p.rates.len();
    assert!(before >= 3, "{before}");
    rt.stop_container(&ids[1], 0).await.unwrap();
    rt.fail_next("ListPodSandboxStats", "unimplemented");
    let c = p.collect(true).await.unwrap();
    assert_eq!(c.summary.pods[0].containers.len(), 1);
    assert_eq!(p.rates.len(), before - 1, "the stopped container's sample is dropped");
}
