//! Metrics and stats on containerd: `/metrics`, `/metrics/resource`, `/metrics/probes`,
//! `/metrics/cadvisor` parsed with a Prometheus text parser, and `/stats/summary` memory figures
//! checked against a container that holds a known amount of memory.

use crate::LONG;
use crate::harness::*;
use prometheus_parse::{Scrape, Value};
use std::time::Duration;

const MI: f64 = (1u64 << 20) as f64;

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).no_proxy().build().unwrap()
}

async fn get(k: &Kubelet, path: &str) -> Option<String> {
    let r = client().get(format!("http://127.0.0.1:{}{path}", k.ro_port)).send().await.ok()?;
    r.status().is_success().then_some(())?;
    r.text().await.ok()
}

async fn scrape(k: &Kubelet, path: &str) -> Option<Scrape> {
    let body = get(k, path).await?;
    Some(Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap_or_else(|e| panic!("{path}: {e}\n{body}")))
}

fn num(v: &Value) -> f64 {
    match v {
        Value::Counter(x) | Value::Gauge(x) | Value::Untyped(x) => *x,
        _ => f64::NAN,
    }
}

/// The value of `name` whose labels include every pair of `labels`.
fn sample(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| num(&x.value))
}

fn sleeper(name: &str, probe: bool) -> String {
    let probe =
        if probe { "    readinessProbe:\n      exec: {command: [\"true\"]}\n      periodSeconds: 1\n" } else { "" };
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: app\n    image: {img}\n    command: [\"sleep\", \"3600\"]\n{probe}",
        img = image("busybox:1.36")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoints_report_running_pods_runtime_operations_and_usage() {
    let Some(mut k) = Kubelet::start("metrics").await else { return };
    k.write_manifest("m1.yaml", &sleeper("m1", true));
    k.write_manifest("m2.yaml", &sleeper("m2", false));
    for name in ["m1", "m2"] {
        k.wait_pod(name, "running", LONG, |p| is_running(p, "app").then_some(())).await;
    }
    let m1 = format!("m1-{}", k.node);

    // Two pods started by this test: the gauge, computed from the runtime at scrape time, says 2.
    let got = wait_until(LONG, || async {
        // Also wait for a second PLEG relist, so that a relist interval was observed.
        scrape(&k, "/metrics").await.filter(|s| {
            sample(s, "kubelet_running_pods", &[]) == Some(2.0)
                && sample(s, "kubelet_pleg_relist_interval_seconds_count", &[]).is_some_and(|n| n >= 1.0)
        })
    })
    .await;
    let Some(s) = got else {
        panic!(
            "kubelet_running_pods never 2 (or no PLEG interval); last /metrics:\n{}",
            get(&k, "/metrics").await.unwrap_or_default()
        );
    };
    assert_eq!(sample(&s, "kubelet_running_containers", &[("container_state", "running")]), Some(2.0));
    assert_eq!(sample(&s, "kubelet_node_name", &[("node", &k.node)]), Some(1.0));
    for op in ["list_podsandbox", "list_containers", "run_podsandbox", "create_container", "start_container"] {
        let n = sample(&s, "kubelet_runtime_operations_total", &[("operation_type", op)]);
        assert!(n.is_some_and(|n| n >= 1.0), "kubelet_runtime_operations_total{{operation_type={op:?}}}: {n:?}");
        assert!(
            sample(&s, "kubelet_runtime_operations_duration_seconds_count", &[("operation_type", op)]).is_some(),
            "{op} duration"
        );
    }
    assert!(sample(&s, "kubelet_started_pods_total", &[]).is_some_and(|n| n >= 2.0));
    assert!(
        sample(&s, "kubelet_started_containers_total", &[("container_type", "container")]).is_some_and(|n| n >= 2.0)
    );
    assert!(sample(&s, "kubelet_pleg_relist_duration_seconds_count", &[]).is_some_and(|n| n >= 1.0));
    assert!(sample(&s, "kubelet_pleg_relist_interval_seconds_count", &[]).is_some_and(|n| n >= 1.0));
    assert!(sample(&s, "kubelet_pod_start_duration_seconds_count", &[]).is_some_and(|n| n >= 2.0));
    assert!(sample(&s, "kubelet_pod_worker_duration_seconds_count", &[("operation_type", "create")]).is_some());
    let last_seen = sample(&s, "kubelet_pleg_last_seen_seconds", &[]).unwrap_or(0.0);
    assert!((chrono::Utc::now().timestamp() as f64 - last_seen).abs() < 60.0, "pleg last seen {last_seen}");

    // Resource metrics: the running container's working set and CPU, and the node's.
    let labels = [("container", "app"), ("pod", m1.as_str()), ("namespace", "default")];
    let s = wait_until(LONG, || async {
        scrape(&k, "/metrics/resource")
            .await
            .filter(|s| sample(s, "container_memory_working_set_bytes", &labels).is_some())
    })
    .await
    .expect("container_memory_working_set_bytes for m1/app in /metrics/resource");
    assert!(sample(&s, "container_memory_working_set_bytes", &labels).is_some_and(|v| v > 0.0));
    assert!(sample(&s, "container_cpu_usage_seconds_total", &labels).is_some());
    assert!(sample(&s, "container_start_time_seconds", &labels).is_some_and(|v| v > 1.6e9));
    assert!(sample(&s, "pod_memory_working_set_bytes", &[("pod", m1.as_str())]).is_some_and(|v| v > 0.0));
    assert!(sample(&s, "node_cpu_usage_seconds_total", &[]).is_some_and(|v| v > 0.0));
    assert!(sample(&s, "node_memory_working_set_bytes", &[]).is_some_and(|v| v > 0.0));
    assert_eq!(sample(&s, "scrape_error", &[]), Some(0.0));

    // Probe metrics: the exec readiness probe of m1 succeeds every second.
    let probe = [("probe_type", "Readiness"), ("result", "successful"), ("container", "app"), ("pod", m1.as_str())];
    wait_until(LONG, || async {
        scrape(&k, "/metrics/probes").await.and_then(|s| sample(&s, "prober_probe_total", &probe)).filter(|n| *n >= 2.0)
    })
    .await
    .expect("prober_probe_total for m1's readiness probe");

    // The cadvisor subset names the container by its runtime ID and image.
    let s = scrape(&k, "/metrics/cadvisor").await.expect("/metrics/cadvisor");
    let ws = s
        .samples
        .iter()
        .find(|x| {
            x.metric == "container_memory_working_set_bytes"
                && x.labels.get("pod") == Some(m1.as_str())
                && x.labels.get("container") == Some("app")
        })
        .expect("cadvisor working set for m1/app");
    assert!(ws.labels.get("image").is_some_and(|i| i.contains("busybox")), "{:?}", ws.labels);
    assert!(ws.labels.get("name").is_some_and(|n| n.len() == 64), "{:?}", ws.labels);
    k.cleanup().await;
}

fn container<'a>(summary: &'a serde_json::Value, pod: &str, name: &str) -> Option<&'a serde_json::Value> {
    summary["pods"].as_array()?.iter().find(|p| p["podRef"]["name"] == pod)?["containers"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
}

async fn summary(k: &Kubelet, query: &str) -> Option<serde_json::Value> {
    serde_json::from_str(&get(k, &format!("/stats/summary{query}")).await?).ok()
}

async fn working_set(k: &Kubelet, pod: &str) -> Option<f64> {
    container(&summary(k, "").await?, pod, "app")?["memory"]["workingSetBytes"].as_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summary_memory_working_set_follows_what_a_container_holds() {
    let Some(mut k) = Kubelet::start("summary").await else { return };
    // 48 MiB into /dev/shm (a 64 MiB tmpfs per sandbox): shared memory pages stay charged to the
    // container's cgroup and are never inactive file pages, so they count in the working set.
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: mem
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: {img}
    command: ["sh", "-c", "while [ ! -f /trigger/go ]; do sleep 0.2; done; dd if=/dev/zero of=/dev/shm/fill bs=1M count=48; echo filled; sleep 3600"]
    volumeMounts: [{{name: trigger, mountPath: /trigger}}]
  volumes:
  - name: trigger
    emptyDir: {{}}
"#,
        img = image("busybox:1.36")
    );
    k.write_manifest("mem.yaml", &manifest);
    let pod = k.wait_pod("mem", "running", LONG, |p| is_running(p, "app").then(|| p.clone())).await;
    let name = format!("mem-{}", k.node);

    // Baseline: what the idle container holds, once two readings agree within 1 MiB.
    let baseline = wait_until(LONG, || async {
        let a = working_set(&k, &name).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let b = working_set(&k, &name).await?;
        ((a - b).abs() < MI).then_some(b)
    })
    .await
    .expect("a stable baseline working set for mem/app");
    std::fs::write(empty_dir(&k, &pod, "trigger").join("go"), "").unwrap();
    let expected = baseline + 48.0 * MI;
    let got = wait_until(LONG, || async { working_set(&k, &name).await.filter(|v| *v >= baseline + 40.0 * MI) })
        .await
        .unwrap_or_else(|| panic!("working set never grew by 40 MiB over the baseline {baseline}"));
    eprintln!("working set: baseline {baseline}, after writing 48 MiB {got}, expected {expected}");
    assert!(
        (got - expected).abs() <= 0.10 * expected,
        "working set {got} not within 10% of baseline {baseline} + 48 MiB = {expected}"
    );

    let s = summary(&k, "").await.expect("summary");
    let p = s["pods"].as_array().unwrap().iter().find(|p| p["podRef"]["name"] == name.as_str()).unwrap();
    assert_eq!(p["podRef"]["namespace"], "default");
    assert_eq!(p["podRef"]["uid"], uid(&pod).as_str());
    assert!(p["memory"]["workingSetBytes"].as_f64().is_some_and(|v| v >= got - MI), "pod memory {}", p["memory"]);
    assert!(p["startTime"].is_string());
    let c = container(&s, &name, "app").unwrap();
    assert!(c["rootfs"]["usedBytes"].is_u64(), "rootfs {}", c["rootfs"]);
    assert!(c["logs"]["usedBytes"].as_u64().is_some_and(|v| v > 0), "logs {}", c["logs"]);
    assert!(p["volume"].as_array().is_some_and(|v| v.iter().any(|v| v["name"] == "trigger")), "{}", p["volume"]);
    assert!(p["ephemeral-storage"]["usedBytes"].is_u64());
    assert_eq!(s["node"]["nodeName"], k.node.as_str());
    assert!(s["node"]["memory"]["workingSetBytes"].as_f64().is_some_and(|v| v >= got), "{}", s["node"]["memory"]);
    assert!(s["node"]["fs"]["capacityBytes"].as_u64().is_some_and(|v| v > 0));
    assert!(s["node"]["runtime"]["imageFs"]["usedBytes"].as_u64().is_some_and(|v| v > 0));
    assert!(s["node"]["rlimit"]["maxpid"].as_i64().is_some_and(|v| v > 0));

    // usageNanoCores needs two samples: it shows up on a later collection.
    wait_until(LONG, || async { container(&summary(&k, "").await?, &name, "app")?["cpu"]["usageNanoCores"].as_u64() })
        .await
        .expect("usageNanoCores after two samples");

    // only_cpu_and_memory: no filesystems or network.
    let s = summary(&k, "?only_cpu_and_memory=true").await.expect("summary");
    let c = container(&s, &name, "app").unwrap();
    assert!(c["memory"]["workingSetBytes"].is_u64() && c["rootfs"].is_null() && c["logs"].is_null(), "{c}");
    assert!(s["node"]["fs"].is_null() && s["node"]["cpu"]["usageCoreNanoSeconds"].is_u64(), "{}", s["node"]);
    k.cleanup().await;
}
