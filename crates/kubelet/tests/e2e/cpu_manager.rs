//! The static CPU manager on containerd (this machine: 1 NUMA node, 2 CPUs): with
//! `reservedSystemCPUs: "0"` a Guaranteed 1-CPU container gets CPU 1 to itself, a BestEffort
//! one runs on the shared pool (CPU 0) and gets CPU 1 back once the Guaranteed pod is gone; the
//! state file has upstream's format and checksum and survives a restart; a second Guaranteed
//! pod is refused as upstream refuses it.

use crate::LONG;
use crate::harness::*;
use std::path::{Path, PathBuf};

fn pod(name: &str, resources: &str) -> String {
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
    command: ["sh", "-c", "while true; do grep Cpus_allowed_list /proc/self/status; sleep 1; done"]
{resources}"#,
        img = image("busybox:1.36")
    )
}

const ONE_CPU: &str =
    "    resources:\n      requests: {cpu: \"1\", memory: 32Mi}\n      limits: {cpu: \"1\", memory: 32Mi}\n";

/// The last `Cpus_allowed_list` the container printed.
fn allowed(k: &Kubelet, name: &str, uid: &str) -> Option<String> {
    let log = PathBuf::from(format!("/var/log/pods/default_{name}-{}_{uid}/app/0.log", k.node));
    read(&log).lines().rev().find_map(|l| l.split("Cpus_allowed_list:").nth(1).map(|v| v.trim().to_string()))
}

async fn wait_allowed(k: &Kubelet, name: &str, uid: &str, want: &str) {
    let got = wait_until(LONG, || async { (allowed(k, name, uid).as_deref() == Some(want)).then_some(()) }).await;
    if got.is_none() {
        panic!(
            "{name}: Cpus_allowed_list stayed {:?}, want {want}\nkubelet log (tail):\n{}",
            allowed(k, name, uid),
            tail(&k.log(), 60)
        );
    }
}

fn fnv32a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(*b)).wrapping_mul(0x0100_0193))
}

/// Checks the file is upstream's v2 checkpoint with a checksum a Go kubelet accepts (FNV-32a
/// over go-spew's rendering), and returns it.
fn state(k: &Kubelet) -> serde_json::Value {
    let text = read(&k.dir.path().join("root/cpu_manager_state"));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let entries = v["entries"].as_object().cloned().unwrap_or_default();
    let render = |m: &serde_json::Map<String, serde_json::Value>, f: &dyn Fn(&serde_json::Value) -> String| {
        let mut keys: Vec<&String> = m.keys().collect();
        keys.sort();
        format!("map[{}]", keys.iter().map(|k| format!("{k}:{}", f(&m[*k]))).collect::<Vec<_>>().join(" "))
    };
    let inner = |v: &serde_json::Value| render(v.as_object().unwrap(), &|s| s.as_str().unwrap().to_string());
    let spew = format!(
        "(*state.CPUManagerCheckpoint){{PolicyName:(string){} DefaultCPUSet:(string){} Entries:(map[string]map[string]string){} Checksum:(checksum.Checksum)0}}",
        v["policyName"].as_str().unwrap(),
        v["defaultCpuSet"].as_str().unwrap(),
        render(&entries, &inner)
    );
    assert_eq!(v["checksum"].as_u64(), Some(u64::from(fnv32a(spew.as_bytes()))), "checksum of {text}");
    v
}

fn memory_state(k: &Kubelet) -> serde_json::Value {
    let text = read(&k.dir.path().join("root/memory_manager_state"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_policy_pins_guaranteed_containers_and_reconciles_the_shared_pool() {
    let cpus = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    if cpus.trim() != "0-1" || !Path::new("/sys/fs/cgroup/cpuset").exists() {
        eprintln!("SKIPPED cpu_manager: needs CPUs 0-1 online and the v1 cpuset controller (found {cpus:?})");
        return;
    }
    // The memory manager too: its reservation must equal node allocatable's (the harness's
    // evictionHard memory.available: 100Mi).
    let config = "cpuManagerPolicy: static\nreservedSystemCPUs: \"0\"\ncpuManagerReconcilePeriod: 1s\n\
                  memoryManagerPolicy: Static\nreservedMemory:\n- numaNode: 0\n  limits: {memory: 100Mi}\n";
    let Some(mut k) = Kubelet::start_with("cpu_manager", config).await else { return };

    // The BestEffort pod starts on both CPUs; the Guaranteed one then takes CPU 1 for itself and
    // the reconcile loop shrinks the shared pool under the BestEffort container.
    k.write_manifest("shared.yaml", &pod("shared", ""));
    let shared = k.wait_pod("shared", "running", LONG, |p| is_running(p, "app").then(|| uid(p))).await;
    wait_allowed(&k, "shared", &shared, "0-1").await;
    k.write_manifest("pinned.yaml", &pod("pinned", ONE_CPU));
    let pinned = k.wait_pod("pinned", "running", LONG, |p| is_running(p, "app").then(|| uid(p))).await;
    wait_allowed(&k, "pinned", &pinned, "1").await;
    wait_allowed(&k, "shared", &shared, "0").await;
    let st = state(&k);
    assert_eq!(st["policyName"], "static");
    assert_eq!(st["defaultCpuSet"], "0");
    assert_eq!(st["entries"][&pinned]["app"], "1", "{st}");
    let mem = memory_state(&k);
    assert_eq!(mem["policyName"], "Static");
    assert_eq!(
        mem["entries"][&pinned]["app"],
        serde_json::json!([{"numaAffinity": [0], "type": "memory", "size": 33554432}])
    );
    assert!(mem["entries"].get(&shared).is_none(), "BestEffort pods get no NUMA memory: {mem}");

    // No CPU is left for a second one: refused before it runs, with upstream's reason.
    k.write_manifest("pinned2.yaml", &pod("pinned2", ONE_CPU));
    let refused = k.wait_pod("pinned2", "refused", LONG, |p| (phase(p) == "Failed").then(|| p.clone())).await;
    let status = refused.status.clone().unwrap_or_default();
    assert_eq!(status.reason.as_deref(), Some("UnexpectedAdmissionError"), "{status:?}");
    assert_eq!(
        status.message.as_deref(),
        Some(
            "Pod was rejected: Allocate failed due to not enough cpus available to satisfy request: requested=1, available=0, which is unexpected"
        )
    );

    // A restart keeps the assignment: restored from the file, written back to each container.
    let updates_before = k.log().matches("updated container cpuset").count();
    k.restart(libc::SIGTERM).await;
    let again = wait_until(LONG, || async {
        (k.log().matches("updated container cpuset").count() >= updates_before + 2).then_some(())
    })
    .await;
    assert!(again.is_some(), "no reconcile after the restart:\n{}", tail(&k.log(), 40));
    assert_eq!(state(&k)["entries"][&pinned]["app"], "1");
    assert_eq!(allowed(&k, "pinned", &pinned).as_deref(), Some("1"));
    assert_eq!(allowed(&k, "shared", &shared).as_deref(), Some("0"));

    // The Guaranteed pod goes: its CPU returns to the shared pool and the BestEffort container.
    k.remove_manifest("pinned.yaml");
    wait_until(LONG, || async { k.pod("pinned").await.is_none().then_some(()) }).await.expect("pinned removed");
    wait_allowed(&k, "shared", &shared, "0-1").await;
    let st = state(&k);
    assert_eq!(st["defaultCpuSet"], "0-1");
    assert!(st.get("entries").is_none(), "{st}");
    let released = wait_until(LONG, || async { memory_state(&k).get("entries").is_none().then_some(()) }).await;
    assert!(released.is_some(), "memory not released: {}", memory_state(&k));

    k.remove_manifest("pinned2.yaml");
    k.remove_manifest("shared.yaml");
    wait_until(LONG, || async { k.pod("shared").await.is_none().then_some(()) }).await.expect("shared removed");
    k.cleanup().await;
}
