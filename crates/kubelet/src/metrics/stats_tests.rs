//! The resource/cadvisor metrics and the running counts, over a stats collection from fake
//! runtime data and a fake host (the stats tests' helpers).

use super::{parse, resource, text};
use crate::cri::fake::{FakeRuntime, FakeStats};
use crate::stats::tests::{MI, pod, provider};
use std::sync::Arc;

#[tokio::test]
async fn resource_and_cadvisor_metrics_parse_with_upstream_names() {
    let d = tempfile::tempdir().unwrap();
    let rt = FakeRuntime::new();
    let ids = pod(&rt, "web", "u1", &["app"]).await;
    rt.set_stats(&ids[0], FakeStats { cpu_nanos: 1_500_000_000, memory_bytes: 48 * MI, writable_bytes: 8192 });
    let p = provider(&rt, d.path());
    let c = p.collect(false).await.unwrap();

    let mut out = String::new();
    text::encode(&mut out, &resource::resource_families(Some(&c)));
    let s = parse(&out);
    let find = |name: &str| s.samples.iter().find(|x| x.metric == name).unwrap_or_else(|| panic!("{name} in {out}"));
    let ws = find("container_memory_working_set_bytes");
    assert_eq!(ws.value, prometheus_parse::Value::Gauge((48 * MI) as f64));
    assert_eq!(ws.labels.get("container"), Some("app"));
    assert_eq!(ws.labels.get("pod"), Some("web"));
    assert_eq!(ws.labels.get("namespace"), Some("default"));
    assert!(
        out.lines().any(|l| l.starts_with("container_memory_working_set_bytes{") && l.split(' ').count() == 3),
        "timestamp: {out}"
    );
    assert_eq!(find("container_cpu_usage_seconds_total").value, prometheus_parse::Value::Counter(1.5));
    assert_eq!(find("node_memory_working_set_bytes").value, prometheus_parse::Value::Gauge((200 * MI) as f64));
    assert_eq!(find("node_cpu_usage_seconds_total").value, prometheus_parse::Value::Counter(5.0));
    assert_eq!(find("pod_memory_working_set_bytes").value, prometheus_parse::Value::Gauge((48 * MI) as f64));
    assert!(matches!(find("container_start_time_seconds").value, prometheus_parse::Value::Gauge(v) if v > 1.6e9));
    assert_eq!(find("scrape_error").value, prometheus_parse::Value::Gauge(0.0));

    let mut failed = String::new();
    text::encode(&mut failed, &resource::resource_families(None));
    assert!(failed.contains("\nscrape_error 1\n"), "{failed}");

    let mut out = String::new();
    text::encode(&mut out, &resource::cadvisor_families(&c));
    let s = parse(&out);
    let app: Vec<_> = s
        .samples
        .iter()
        .filter(|x| x.metric == "container_memory_working_set_bytes" && x.labels.get("container") == Some("app"))
        .collect();
    assert_eq!(app.len(), 1, "{out}");
    assert_eq!(app[0].labels.get("name"), Some(ids[0].as_str()));
    assert_eq!(app[0].labels.get("image"), Some("busybox:1.36"));
    assert!(
        s.samples
            .iter()
            .any(|x| x.metric == "container_fs_usage_bytes" && x.value == prometheus_parse::Value::Gauge(8192.0))
    );
    assert!(
        s.samples
            .iter()
            .any(|x| x.metric == "container_memory_working_set_bytes" && x.labels.get("container") == Some("")),
        "pod-level series"
    );
}

#[tokio::test]
async fn running_pods_and_containers_are_counted_from_the_runtime() {
    let rt = FakeRuntime::new();
    pod(&rt, "a", "u1", &["x", "y"]).await;
    let ids = pod(&rt, "b", "u2", &["z"]).await;
    rt.exit_container(&ids[0], 1);
    let dynrt: crate::cri::DynRuntime = Arc::new(rt.clone());
    let fams = crate::metrics::routes::running_families(&dynrt).await.unwrap();
    let m = crate::metrics::Metrics::new();
    let s = parse(&m.encode_kubelet(&fams));
    let v = |name: &str, state: Option<&str>| {
        s.samples
            .iter()
            .find(|x| x.metric == name && state.is_none_or(|st| x.labels.get("container_state") == Some(st)))
            .map(|x| x.value.clone())
    };
    assert_eq!(v("kubelet_running_pods", None), Some(prometheus_parse::Value::Gauge(2.0)));
    assert_eq!(v("kubelet_running_containers", Some("running")), Some(prometheus_parse::Value::Gauge(2.0)));
    assert_eq!(v("kubelet_running_containers", Some("exited")), Some(prometheus_parse::Value::Gauge(1.0)));
}
