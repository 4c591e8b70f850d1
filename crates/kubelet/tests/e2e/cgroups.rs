//! Pod cgroups and container resources on containerd (cgroup v1), with both cgroup drivers:
//! cgroupfs on the shared containerd (/sys/fs/cgroup/<controller>/kubepods/...) and systemd on
//! the test systemd's containerd with `SystemdCgroup = true` (hack/env-systemd.sh; slices
//! /sys/fs/cgroup/<controller>/kubepods.slice/...): the files match the pods' specs, and go
//! with the pods.

use crate::LONG;
use crate::harness::*;
use k8s_openapi::api::core::v1::Pod;
use std::path::{Path, PathBuf};
use std::time::Duration;

const MI: i64 = 1 << 20;
/// memory.limit_in_bytes of an unlimited v1 memory cgroup (page-aligned i64::MAX).
const UNLIMITED: i64 = 9_223_372_036_854_771_712;

fn sleeper(name: &str, resources: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: {img}
    command: ["sleep", "3600"]
{resources}"#,
        img = image("busybox:1.36")
    )
}

fn v1_cgroup(controller: &str, cgroup: &str) -> PathBuf {
    Path::new("/sys/fs/cgroup").join(controller).join(cgroup.trim_start_matches('/'))
}

fn value(controller: &str, cgroup: &str, file: &str) -> i64 {
    let path = v1_cgroup(controller, cgroup).join(file);
    let text = read(&path);
    text.trim().parse().unwrap_or_else(|_| panic!("{}: {text:?}", path.display()))
}

fn text(controller: &str, cgroup: &str, file: &str) -> String {
    read(&v1_cgroup(controller, cgroup).join(file)).trim().to_string()
}

fn container_id(p: &Pod) -> String {
    let id = container_status(p, "app").and_then(|c| c.container_id.clone()).expect("container id");
    id.rsplit("://").next().unwrap_or_default().to_string()
}

struct Expect {
    shares: i64,
    quota: i64,
    memory: i64,
}

fn check(what: &str, cgroup: &str, e: &Expect) {
    assert_eq!(value("cpu", cgroup, "cpu.shares"), e.shares, "{what} {cgroup}: cpu.shares");
    assert_eq!(value("cpu", cgroup, "cpu.cfs_quota_us"), e.quota, "{what} {cgroup}: cpu.cfs_quota_us");
    assert_eq!(value("memory", cgroup, "memory.limit_in_bytes"), e.memory, "{what} {cgroup}: memory");
}

/// MemTotal in bytes, the capacity of the Burstable oom_score_adj formula.
fn mem_total() -> i64 {
    let meminfo = read(Path::new("/proc/meminfo"));
    let kb: i64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("MemTotal");
    kb * 1024
}

/// The test systemd's directory (`private` D-Bus socket, `system` marker) and its containerd.
const SYSTEMD_DIR: &str = "/run/krs-systemd";
const SYSTEMD_CONTAINERD: &str = "/run/containerd-systemd/containerd.sock";

#[derive(Clone, Copy, PartialEq)]
enum Driver {
    Cgroupfs,
    Systemd,
}

/// The cgroup names of one driver: pod cgroups, QoS tiers, container cgroups.
impl Driver {
    fn kubepods(self) -> &'static str {
        match self {
            Driver::Cgroupfs => "/kubepods",
            Driver::Systemd => "/kubepods.slice",
        }
    }

    fn besteffort(self) -> &'static str {
        match self {
            Driver::Cgroupfs => "/kubepods/besteffort",
            Driver::Systemd => "/kubepods.slice/kubepods-besteffort.slice",
        }
    }

    /// The pod cgroups of a Guaranteed, a Burstable and a BestEffort pod.
    fn pod_cgroups(self, pods: &[Pod]) -> [String; 3] {
        match self {
            Driver::Cgroupfs => [
                format!("/kubepods/pod{}", uid(&pods[0])),
                format!("/kubepods/burstable/pod{}", uid(&pods[1])),
                format!("/kubepods/besteffort/pod{}", uid(&pods[2])),
            ],
            Driver::Systemd => {
                let u = |p: &Pod| uid(p).replace('-', "_");
                [
                    format!("/kubepods.slice/kubepods-pod{}.slice", u(&pods[0])),
                    format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice", u(&pods[1])),
                    format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice", u(&pods[2])),
                ]
            }
        }
    }

    /// runc's cgroup for a container: `<id>` (cgroupfs) or the scope `cri-containerd-<id>.scope`.
    fn container(self, pod_cgroup: &str, id: &str) -> String {
        match self {
            Driver::Cgroupfs => format!("{pod_cgroup}/{id}"),
            Driver::Systemd => format!("{pod_cgroup}/cri-containerd-{id}.scope"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_and_container_cgroups_follow_qos_and_resources() {
    pod_and_container_cgroups(Driver::Cgroupfs).await;
}

/// The same pods on the systemd driver: slices made through systemd's D-Bus API, the
/// runtime's containers in scopes inside them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_and_container_cgroups_follow_qos_and_resources_with_the_systemd_driver() {
    pod_and_container_cgroups(Driver::Systemd).await;
}

async fn pod_and_container_cgroups(driver: Driver) {
    if !Path::new("/sys/fs/cgroup/cpu/cpu.shares").exists() {
        eprintln!("SKIPPED cgroups: this test reads cgroup v1 files");
        return;
    }
    let base = "podPidsLimit: 256\nkubeReserved: {memory: 100Mi}\n";
    let started = match driver {
        Driver::Cgroupfs => Kubelet::start_with("cgroups", base).await,
        Driver::Systemd => {
            if !Path::new(SYSTEMD_DIR).join("system").is_dir() && !required() {
                eprintln!("SKIPPED cgroups (systemd): no test systemd at {SYSTEMD_DIR} (run hack/env-up.sh first)");
                return;
            }
            // containerd 1.6 does not implement RuntimeConfig: the configured driver is used.
            let extra = format!("{base}cgroupDriver: systemd\ncontainerRuntimeEndpoint: unix://{SYSTEMD_CONTAINERD}\n");
            let args = [format!("--systemd-dir-for-tests={SYSTEMD_DIR}")];
            Kubelet::start_on("cgroups-systemd", SYSTEMD_CONTAINERD, &extra, &args).await
        }
    };
    let Some(mut k) = started else { return };
    k.write_manifest("g.yaml", &sleeper("guaranteed", "    resources:\n      limits: {cpu: 200m, memory: 64Mi}\n"));
    k.write_manifest(
        "b.yaml",
        &sleeper(
            "burstable",
            "    resources:\n      requests: {cpu: 100m, memory: 32Mi}\n      limits: {memory: 64Mi}\n",
        ),
    );
    k.write_manifest("e.yaml", &sleeper("besteffort", ""));
    let mut pods = Vec::new();
    for name in ["guaranteed", "burstable", "besteffort"] {
        pods.push(k.wait_pod(name, "running", LONG, |p| is_running(p, "app").then(|| p.clone())).await);
    }
    let qos: Vec<&str> =
        pods.iter().map(|p| p.status.as_ref().and_then(|s| s.qos_class.as_deref()).unwrap_or("")).collect();
    assert_eq!(qos, ["Guaranteed", "Burstable", "BestEffort"]);
    let pod_cgroups = driver.pod_cgroups(&pods);
    let expect = [
        // 200m: shares 204, quota 20000 of 100000; 64Mi.
        Expect { shares: 204, quota: 20_000, memory: 64 * MI },
        // Requests 100m, no cpu limit: shares 102, no quota; every container has a memory limit.
        Expect { shares: 102, quota: -1, memory: 64 * MI },
        Expect { shares: 2, quota: -1, memory: UNLIMITED },
    ];
    for ((pod, cgroup), e) in pods.iter().zip(&pod_cgroups).zip(&expect) {
        let name = pod.metadata.name.clone().unwrap_or_default();
        check(&format!("pod {name}"), cgroup, e);
        assert_eq!(text("pids", cgroup, "pids.max"), "256", "{name}: podPidsLimit");
        assert_eq!(value("cpu", cgroup, "cpu.cfs_period_us"), 100_000, "{name}: period");
        // The container's cgroup is the runtime's, inside the pod cgroup; the same limits
        // arrive there through CRI.
        let container = driver.container(cgroup, &container_id(pod));
        assert!(v1_cgroup("memory", &container).is_dir(), "{name}: container cgroup {container}");
        check(&format!("container of {name}"), &container, e);
        // oom_score_adj of the container's process: BestEffort 1000, Burstable by the formula.
        // (Guaranteed asks for −997, which containerd's restrict_oom_score_adj clamps here.)
        let pid = text("memory", &container, "cgroup.procs").lines().next().map(str::to_string).expect("a pid");
        let adj: i64 = read(Path::new(&format!("/proc/{pid}/oom_score_adj"))).trim().parse().unwrap();
        match name.split('-').next() {
            Some("besteffort") => assert_eq!(adj, 1000),
            Some("burstable") => assert_eq!(adj, (1000 - 1000 * 32 * MI / mem_total()).clamp(3, 999)),
            _ => assert!(adj <= 0, "guaranteed: {adj}"),
        }
    }
    // The QoS tiers: BestEffort at 2 shares, kubepods limited to node allocatable.
    assert_eq!(value("cpu", driver.besteffort(), "cpu.shares"), 2);
    // enforceNodeAllocatable [pods]: capacity − kubeReserved (page-aligned by the kernel).
    assert_eq!(value("memory", driver.kubepods(), "memory.limit_in_bytes"), (mem_total() - 100 * MI) / 4096 * 4096);
    // The node's "pods" container in the Summary is read from the kubepods cgroup's files.
    let body = reqwest::get(format!("http://127.0.0.1:{}/stats/summary", k.ro_port))
        .await
        .expect("summary")
        .text()
        .await
        .expect("summary body");
    let summary: serde_json::Value = serde_json::from_str(&body).expect("summary json");
    let pods_container =
        summary["node"]["systemContainers"].as_array().and_then(|c| c.iter().find(|c| c["name"] == "pods"));
    let usage = pods_container.and_then(|c| c["memory"]["usageBytes"].as_u64()).unwrap_or(0);
    assert!(usage > 0, "the pods container's memory from {}: {pods_container:?}", driver.kubepods());
    if driver == Driver::Systemd {
        assert!(k.log().contains("does not implement RuntimeConfig"), "{}", tail(&k.log(), 30));
    }

    k.cleanup().await;
    let gone = wait_until(Duration::from_secs(60), || async {
        // Every hierarchy: the kubelet's controllers and those runc used too (unified, systemd).
        let hierarchies: Vec<String> = std::fs::read_dir("/sys/fs/cgroup")
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        pod_cgroups.iter().all(|c| hierarchies.iter().all(|h| !v1_cgroup(h, c).exists())).then_some(())
    })
    .await;
    assert!(gone.is_some(), "pod cgroups removed with the pods: {pod_cgroups:?}\n{}", tail(&k.log(), 30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_systemd_driver_without_systemd_is_a_clear_start_up_error() {
    if Path::new("/run/systemd/system").exists() {
        eprintln!("SKIPPED systemd driver: systemd runs here");
        return;
    }
    // The check comes after the runtime connection, so it needs containerd up.
    if runtime_or_skip("systemd_driver").await.is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncgroupDriver: systemd\nhealthzPort: 0\nreadOnlyPort: 0\n",
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubelet"))
        .arg("--config")
        .arg(&config)
        .arg("--root-dir")
        .arg(dir.path().join("root"))
        .arg("--fail-swap-on=false")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start kubelet");
    let mut stderr = child.stderr.take().unwrap();
    let out = tokio::time::timeout(LONG, async {
        use tokio::io::AsyncReadExt;
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s).await;
        (child.wait().await.unwrap(), s)
    })
    .await;
    let (status, stderr) = out.expect("the kubelet exits");
    assert!(!status.success());
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("kubelet: container manager: cgroupDriver is \"systemd\" but systemd is not running"),
        "{stderr}"
    );
}
