//! `/metrics/resource` (upstream's resource metrics collector) and `/metrics/cadvisor` (a
//! cadvisor-compatible subset), both built from one stats collection.

use super::text::{Family, Kind};
use crate::stats::Collected;
use crate::stats::types::{CpuStats, MemoryStats};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

fn ms(t: &Option<Time>) -> Option<i64> {
    t.as_ref().map(|t| t.0.as_millisecond())
}

fn secs(t: &Time) -> f64 {
    t.0.as_nanosecond() as f64 / 1e9
}

fn cpu_secs(c: &Option<CpuStats>) -> Option<(f64, Option<i64>)> {
    let c = c.as_ref()?;
    Some((c.usage_core_nano_seconds? as f64 / 1e9, ms(&c.time)))
}

fn working_set(m: &Option<MemoryStats>) -> Option<(f64, Option<i64>)> {
    let m = m.as_ref()?;
    Some((m.working_set_bytes? as f64, ms(&m.time)))
}

/// The resource metrics; `None` (a failed collection) gives only `scrape_error 1`.
pub fn resource_families(c: Option<&Collected>) -> Vec<Family> {
    let mut node_cpu = Family::new(
        "node_cpu_usage_seconds_total",
        "[STABLE] Cumulative cpu time consumed by the node in core-seconds",
        Kind::Counter,
    );
    let mut node_mem =
        Family::new("node_memory_working_set_bytes", "[STABLE] Current working set of the node in bytes", Kind::Gauge);
    let mut c_start = Family::new(
        "container_start_time_seconds",
        "[STABLE] Start time of the container since unix epoch in seconds",
        Kind::Gauge,
    );
    let mut c_cpu = Family::new(
        "container_cpu_usage_seconds_total",
        "[STABLE] Cumulative cpu time consumed by the container in core-seconds",
        Kind::Counter,
    );
    let mut c_mem = Family::new(
        "container_memory_working_set_bytes",
        "[STABLE] Current working set of the container in bytes",
        Kind::Gauge,
    );
    let mut p_cpu = Family::new(
        "pod_cpu_usage_seconds_total",
        "[STABLE] Cumulative cpu time consumed by the pod in core-seconds",
        Kind::Counter,
    );
    let mut p_mem =
        Family::new("pod_memory_working_set_bytes", "[STABLE] Current working set of the pod in bytes", Kind::Gauge);
    let mut scrape = Family::new(
        "scrape_error",
        "[ALPHA] 1 if there was an error while getting container metrics, 0 otherwise",
        Kind::Gauge,
    );
    let mut resource_scrape = Family::new(
        "resource_scrape_error",
        "[STABLE] 1 if there was an error while getting container metrics, 0 otherwise",
        Kind::Gauge,
    );
    let error = if c.is_some() { 0.0 } else { 1.0 };
    scrape.push(vec![], error, None);
    resource_scrape.push(vec![], error, None);
    if let Some(c) = c {
        let s = &c.summary;
        if let Some((v, t)) = cpu_secs(&s.node.cpu) {
            node_cpu.push(vec![], v, t);
        }
        if let Some((v, t)) = working_set(&s.node.memory) {
            node_mem.push(vec![], v, t);
        }
        for p in &s.pods {
            let (pod, ns) = (p.pod_ref.name.clone(), p.pod_ref.namespace.clone());
            for ct in &p.containers {
                let labels = || vec![("container", ct.name.clone()), ("pod", pod.clone()), ("namespace", ns.clone())];
                if let Some(st) = &ct.start_time {
                    c_start.push(labels(), secs(st), None);
                }
                if let Some((v, t)) = cpu_secs(&ct.cpu) {
                    c_cpu.push(labels(), v, t);
                }
                if let Some((v, t)) = working_set(&ct.memory) {
                    c_mem.push(labels(), v, t);
                }
            }
            if let Some((v, t)) = cpu_secs(&p.cpu) {
                p_cpu.push(vec![("pod", pod.clone()), ("namespace", ns.clone())], v, t);
            }
            if let Some((v, t)) = working_set(&p.memory) {
                p_mem.push(vec![("pod", pod.clone()), ("namespace", ns.clone())], v, t);
            }
        }
    }
    vec![c_cpu, c_mem, c_start, node_cpu, node_mem, p_cpu, p_mem, resource_scrape, scrape]
}

/// The cadvisor subset: per container (and per pod cgroup, with `container=""`), labels
/// container, id, image, name, namespace, pod.
pub fn cadvisor_families(c: &Collected) -> Vec<Family> {
    let mut cpu =
        Family::new("container_cpu_usage_seconds_total", "Cumulative cpu time consumed in seconds.", Kind::Counter);
    let mut ws = Family::new("container_memory_working_set_bytes", "Current working set in bytes.", Kind::Gauge);
    let mut usage = Family::new(
        "container_memory_usage_bytes",
        "Current memory usage in bytes, including all memory regardless of when it was accessed",
        Kind::Gauge,
    );
    let mut rss = Family::new("container_memory_rss", "Size of RSS in bytes.", Kind::Gauge);
    let mut fs = Family::new(
        "container_fs_usage_bytes",
        "Number of bytes that are consumed by the container on this filesystem.",
        Kind::Gauge,
    );
    let mut start = Family::new(
        "container_start_time_seconds",
        "Start time of the container since unix epoch in seconds.",
        Kind::Gauge,
    );
    let mut rx =
        Family::new("container_network_receive_bytes_total", "Cumulative count of bytes received", Kind::Counter);
    let mut tx =
        Family::new("container_network_transmit_bytes_total", "Cumulative count of bytes transmitted", Kind::Counter);
    for p in &c.summary.pods {
        let (pod, ns) = (&p.pod_ref.name, &p.pod_ref.namespace);
        let mut pod_cgroup = None;
        for ct in &p.containers {
            let Some(info) =
                c.containers.iter().find(|i| &i.pod == pod && &i.namespace == ns && i.container == ct.name)
            else {
                continue;
            };
            if let Some((parent, _)) = info.cgroup.rsplit_once('/').filter(|(p, _)| !p.is_empty()) {
                pod_cgroup = Some(parent.to_string());
            }
            let labels = |extra: Option<(&'static str, String)>| {
                let mut l = vec![
                    ("container", ct.name.clone()),
                    ("id", info.cgroup.clone()),
                    ("image", info.image.clone()),
                    ("name", info.id.clone()),
                    ("namespace", ns.clone()),
                    ("pod", pod.clone()),
                ];
                l.extend(extra);
                l
            };
            if let Some((v, t)) = cpu_secs(&ct.cpu) {
                cpu.push(labels(Some(("cpu", "total".into()))), v, t);
            }
            if let Some(m) = &ct.memory {
                let t = ms(&m.time);
                if let Some(v) = m.working_set_bytes {
                    ws.push(labels(None), v as f64, t);
                }
                if let Some(v) = m.usage_bytes {
                    usage.push(labels(None), v as f64, t);
                }
                if let Some(v) = m.rss_bytes {
                    rss.push(labels(None), v as f64, t);
                }
            }
            if let Some(f) = &ct.rootfs
                && let Some(v) = f.used_bytes
            {
                fs.push(labels(None), v as f64, ms(&f.time));
            }
            if let Some(st) = &ct.start_time {
                start.push(labels(None), secs(st), None);
            }
        }
        // The pod cgroup itself, as cadvisor reports it (no container name).
        let id = pod_cgroup.unwrap_or_default();
        let labels = |extra: Option<(&'static str, String)>| {
            let mut l = vec![
                ("container", String::new()),
                ("id", id.clone()),
                ("image", String::new()),
                ("name", String::new()),
                ("namespace", ns.clone()),
                ("pod", pod.clone()),
            ];
            l.extend(extra);
            l
        };
        if let Some((v, t)) = cpu_secs(&p.cpu) {
            cpu.push(labels(Some(("cpu", "total".into()))), v, t);
        }
        if let Some(m) = &p.memory {
            let t = ms(&m.time);
            if let Some(v) = m.working_set_bytes {
                ws.push(labels(None), v as f64, t);
            }
            if let Some(v) = m.usage_bytes {
                usage.push(labels(None), v as f64, t);
            }
            if let Some(v) = m.rss_bytes {
                rss.push(labels(None), v as f64, t);
            }
        }
        if let Some(n) = &p.network {
            let t = ms(&n.time);
            for i in &n.interfaces {
                if let Some(v) = i.rx_bytes {
                    rx.push(labels(Some(("interface", i.name.clone()))), v as f64, t);
                }
                if let Some(v) = i.tx_bytes {
                    tx.push(labels(Some(("interface", i.name.clone()))), v as f64, t);
                }
            }
        }
    }
    vec![cpu, fs, usage, rss, ws, rx, tx, start]
}
