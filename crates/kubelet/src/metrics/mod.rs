//! Kubelet metrics with the upstream names (pkg/kubelet/metrics, prober metrics).
//!
//! [`Metrics`] is a cloneable handle: the subsystems that know when something happened (the
//! instrumented runtime, PLEG, pod workers, probes) record through it; the HTTP routes in
//! [`routes`] encode it. Figures that describe the present (running pods and containers, resource
//! usage) are not kept here: they are computed at scrape time from the runtime.

pub mod instrumented;
pub mod resource;
pub mod routes;
pub mod text;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Prometheus' default buckets (`prometheus.DefBuckets`).
const DEF_BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Upstream's pod startup buckets.
const POD_START_BUCKETS: [f64; 25] = [
    0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 20.0, 30.0, 45.0, 60.0, 120.0, 180.0, 240.0, 300.0, 360.0, 480.0,
    600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationType {
    operation_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabel {
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ContainerTypeLabel {
    container_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StaticLabel {
    r#static: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FirstWithNetwork {
    first_with_network: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ProbeResultLabels {
    probe_type: String,
    result: String,
    container: String,
    pod: String,
    namespace: String,
    pod_uid: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ProbeDurationLabels {
    probe_type: String,
    container: String,
    pod: String,
    namespace: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn def_histogram() -> Histogram {
    Histogram::new(DEF_BUCKETS)
}

fn runtime_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.5, 14))
}

fn pod_start_histogram() -> Histogram {
    Histogram::new(POD_START_BUCKETS)
}

/// Which pod a probe belongs to, for the probe metrics' labels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeTarget {
    pub probe_type: &'static str,
    pub container: String,
    pub pod: String,
    pub namespace: String,
    pub pod_uid: String,
}

struct Inner {
    kubelet: Registry,
    probes: Registry,
    node_name: Family<NodeLabel, Gauge>,
    runtime_ops: Family<OperationType, Counter>,
    runtime_errors: Family<OperationType, Counter>,
    runtime_duration: HistogramFamily<OperationType>,
    pleg_relist_duration: Histogram,
    pleg_relist_interval: Histogram,
    pleg_last_seen: Gauge<f64, AtomicU64>,
    pod_start: Histogram,
    pod_start_sli: HistogramFamily<FirstWithNetwork>,
    pod_worker: HistogramFamily<OperationType>,
    started_pods: Counter,
    started_containers: Family<ContainerTypeLabel, Counter>,
    restarted_pods: Family<StaticLabel, Counter>,
    image_pull: Histogram,
    /// The last graceful node shutdown (upstream's GracefulShutdownStartTime / EndTime).
    graceful_shutdown_start: Gauge<f64, AtomicU64>,
    graceful_shutdown_end: Gauge<f64, AtomicU64>,
    probe_total: Family<ProbeResultLabels, Counter>,
    probe_duration: HistogramFamily<ProbeDurationLabels>,
    /// `kubelet_evictions` by signal (written by [`text`]: upstream's name has no `_total`).
    evictions: Mutex<BTreeMap<String, u64>>,
    /// Image pull time per pod UID, subtracted from the pod start SLI.
    pulling: Mutex<HashMap<String, Duration>>,
    /// Whether a pod with its own network already started (the SLI's `first_with_network`).
    network_pod_started: std::sync::atomic::AtomicBool,
}

/// The kubelet's metrics. Cloning shares them; `Default` gives a fresh, independent set (tests).
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut kubelet = Registry::default();
        let node_name = Family::<NodeLabel, Gauge>::default();
        kubelet.register("kubelet_node_name", "The node's name. The count is always 1.", node_name.clone());
        let runtime_ops = Family::<OperationType, Counter>::default();
        kubelet.register(
            "kubelet_runtime_operations",
            "Cumulative number of runtime operations by operation type.",
            runtime_ops.clone(),
        );
        let runtime_errors = Family::<OperationType, Counter>::default();
        kubelet.register(
            "kubelet_runtime_operations_errors",
            "Cumulative number of runtime operation errors by operation type.",
            runtime_errors.clone(),
        );
        let runtime_duration: HistogramFamily<OperationType> = Family::new_with_constructor(runtime_histogram);
        kubelet.register(
            "kubelet_runtime_operations_duration_seconds",
            "Duration in seconds of runtime operations. Broken down by operation type.",
            runtime_duration.clone(),
        );
        let pleg_relist_duration = def_histogram();
        kubelet.register(
            "kubelet_pleg_relist_duration_seconds",
            "Duration in seconds for relisting pods in PLEG.",
            pleg_relist_duration.clone(),
        );
        let pleg_relist_interval = def_histogram();
        kubelet.register(
            "kubelet_pleg_relist_interval_seconds",
            "Interval in seconds between relisting in PLEG.",
            pleg_relist_interval.clone(),
        );
        let pleg_last_seen = Gauge::<f64, AtomicU64>::default();
        kubelet.register(
            "kubelet_pleg_last_seen_seconds",
            "Timestamp in seconds when PLEG was last seen active.",
            pleg_last_seen.clone(),
        );
        let pod_start = pod_start_histogram();
        kubelet.register(
            "kubelet_pod_start_duration_seconds",
            "Duration in seconds from kubelet seeing a pod for the first time to the pod starting to run",
            pod_start.clone(),
        );
        let pod_start_sli: HistogramFamily<FirstWithNetwork> = Family::new_with_constructor(pod_start_histogram);
        kubelet.register(
            "kubelet_pod_start_sli_duration_seconds",
            "Duration in seconds to start a pod, excluding time to pull images and run init containers, measured from pod creation timestamp to when all its containers are reported as started and observed via watch",
            pod_start_sli.clone(),
        );
        let pod_worker: HistogramFamily<OperationType> = Family::new_with_constructor(def_histogram);
        kubelet.register(
            "kubelet_pod_worker_duration_seconds",
            "Duration in seconds to sync a single pod. Broken down by operation type: create, update, or sync",
            pod_worker.clone(),
        );
        let started_pods = Counter::default();
        kubelet.register("kubelet_started_pods", "Cumulative number of pods started", started_pods.clone());
        let started_containers = Family::<ContainerTypeLabel, Counter>::default();
        kubelet.register(
            "kubelet_started_containers",
            "Cumulative number of containers started",
            started_containers.clone(),
        );
        let restarted_pods = Family::<StaticLabel, Counter>::default();
        kubelet.register(
            "kubelet_restarted_pods",
            "Number of pods that have been restarted because they were deleted and recreated with the same UID while the kubelet was watching them (common for static pods, extremely uncommon for API pods)",
            restarted_pods.clone(),
        );
        let image_pull = pod_start_histogram();
        kubelet.register(
            "kubelet_image_pull_duration_seconds",
            "Duration in seconds to pull an image.",
            image_pull.clone(),
        );
        let graceful_shutdown_start = Gauge::<f64, AtomicU64>::default();
        kubelet.register(
            "kubelet_graceful_shutdown_start_time_seconds",
            "Last graceful shutdown start time since unix epoch in seconds",
            graceful_shutdown_start.clone(),
        );
        let graceful_shutdown_end = Gauge::<f64, AtomicU64>::default();
        kubelet.register(
            "kubelet_graceful_shutdown_end_time_seconds",
            "Last graceful shutdown end time since unix epoch in seconds",
            graceful_shutdown_end.clone(),
        );

        let mut probes = Registry::default();
        let probe_total = Family::<ProbeResultLabels, Counter>::default();
        probes.register(
            "prober_probe",
            "Cumulative number of a liveness, readiness or startup probe for a container by result.",
            probe_total.clone(),
        );
        let probe_duration: HistogramFamily<ProbeDurationLabels> = Family::new_with_constructor(def_histogram);
        probes.register(
            "prober_probe_duration_seconds",
            "Duration in seconds for a probe response.",
            probe_duration.clone(),
        );

        Self(Arc::new(Inner {
            kubelet,
            probes,
            node_name,
            runtime_ops,
            runtime_errors,
            runtime_duration,
            pleg_relist_duration,
            pleg_relist_interval,
            pleg_last_seen,
            pod_start,
            pod_start_sli,
            pod_worker,
            started_pods,
            started_containers,
            restarted_pods,
            image_pull,
            graceful_shutdown_start,
            graceful_shutdown_end,
            probe_total,
            probe_duration,
            evictions: Mutex::default(),
            pulling: Mutex::default(),
            network_pod_started: Default::default(),
        }))
    }

    /// The last graceful node shutdown's start and end (seconds since the epoch; 0: not ended).
    pub fn graceful_shutdown(&self, start: Option<f64>, end: Option<f64>) {
        if let Some(s) = start {
            self.0.graceful_shutdown_start.set(s);
        }
        if let Some(e) = end {
            self.0.graceful_shutdown_end.set(e);
        }
    }

    /// `kubelet_node_name{node}` = 1.
    pub fn set_node_name(&self, node: &str) {
        self.0.node_name.get_or_create(&NodeLabel { node: node.to_string() }).set(1);
    }

    /// One CRI call: `kubelet_runtime_operations_total`, `_duration_seconds`, `_errors_total`.
    pub fn runtime_operation(&self, operation: &'static str, took: Duration, failed: bool) {
        let l = OperationType { operation_type: operation.to_string() };
        self.0.runtime_ops.get_or_create(&l).inc();
        self.0.runtime_duration.get_or_create(&l).observe(took.as_secs_f64());
        if failed {
            self.0.runtime_errors.get_or_create(&l).inc();
        }
    }

    /// A PLEG relist: how long it took, the time since the previous one started, and when.
    pub fn pleg_relist(&self, took: Duration, interval: Option<Duration>, now_unix_secs: f64) {
        self.0.pleg_relist_duration.observe(took.as_secs_f64());
        if let Some(i) = interval {
            self.0.pleg_relist_interval.observe(i.as_secs_f64());
        }
        self.0.pleg_last_seen.set(now_unix_secs);
    }

    /// A pod's containers all run for the first time. `since_seen` counts from the kubelet first
    /// seeing the pod, `since_created` from its creation; image pulls recorded with
    /// [`Metrics::pod_pulled`] are taken out of the SLI.
    pub fn pod_started(&self, uid: &str, since_seen: Duration, since_created: Duration, host_network: bool) {
        self.0.pod_start.observe(since_seen.as_secs_f64());
        let pulled = self.lock_pulling().remove(uid).unwrap_or_default();
        let first_with_network =
            !host_network && !self.0.network_pod_started.swap(true, std::sync::atomic::Ordering::Relaxed);
        let l = FirstWithNetwork { first_with_network: first_with_network.to_string() };
        self.0.pod_start_sli.get_or_create(&l).observe(since_created.saturating_sub(pulled).as_secs_f64());
    }

    /// Time spent pulling an image for a pod (taken out of the start SLI).
    pub fn pod_pulled(&self, uid: &str, took: Duration) {
        self.0.image_pull.observe(took.as_secs_f64());
        let mut m = self.lock_pulling();
        // Bounded: a pod that never starts must not grow this forever.
        if m.len() >= 10_000 && !m.contains_key(uid) {
            m.clear();
        }
        *m.entry(uid.to_string()).or_default() += took;
    }

    /// The pod is gone: forget what was kept for its start.
    pub fn pod_forgotten(&self, uid: &str) {
        self.lock_pulling().remove(uid);
    }

    fn lock_pulling(&self) -> std::sync::MutexGuard<'_, HashMap<String, Duration>> {
        self.0.pulling.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One pod sync: `operation` is `create`, `update` or `sync`.
    pub fn pod_worker(&self, operation: &'static str, took: Duration) {
        let l = OperationType { operation_type: operation.to_string() };
        self.0.pod_worker.get_or_create(&l).observe(took.as_secs_f64());
    }

    pub fn started_pod(&self) {
        self.0.started_pods.inc();
    }

    /// `container_type`: `container`, `init_container` or `ephemeral_container`.
    pub fn started_container(&self, container_type: &'static str) {
        self.0.started_containers.get_or_create(&ContainerTypeLabel { container_type: container_type.into() }).inc();
    }

    /// A pod deleted and recreated with the same UID while the kubelet watched it.
    pub fn restarted_pod(&self, is_static: bool) {
        let l = StaticLabel { r#static: is_static.to_string() };
        self.0.restarted_pods.get_or_create(&l).inc();
    }

    /// An eviction by signal (e.g. `memory.available`).
    pub fn eviction(&self, signal: &str) {
        *self.0.evictions.lock().unwrap_or_else(|p| p.into_inner()).entry(signal.to_string()).or_default() += 1;
    }

    /// One probe run: `result` is `successful`, `failed` or `unknown`.
    pub fn probe(&self, t: &ProbeTarget, result: &'static str, took: Duration) {
        self.0.probe_total.get_or_create(&probe_result_labels(t, result)).inc();
        self.0.probe_duration.get_or_create(&probe_duration_labels(t)).observe(took.as_secs_f64());
    }

    /// Drops a probe's series (its container instance is gone), as upstream does when a probe
    /// worker stops.
    pub fn probe_removed(&self, t: &ProbeTarget) {
        for result in ["successful", "failed", "unknown"] {
            self.0.probe_total.remove(&probe_result_labels(t, result));
        }
        self.0.probe_duration.remove(&probe_duration_labels(t));
    }

    /// The `/metrics` body: the registry plus the families computed for this scrape.
    pub fn encode_kubelet(&self, scraped: &[text::Family]) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.0.kubelet) {
            tracing::warn!(error = %e, "encoding kubelet metrics");
        }
        let mut evictions = text::Family::new(
            "kubelet_evictions",
            "Cumulative number of pod evictions by eviction signal",
            text::Kind::Counter,
        );
        for (signal, n) in self.0.evictions.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            evictions.push(vec![("eviction_signal", signal.clone())], *n as f64, None);
        }
        text::encode(&mut out, scraped);
        text::encode(&mut out, &[evictions]);
        out
    }

    /// The `/metrics/probes` body.
    pub fn encode_probes(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.0.probes) {
            tracing::warn!(error = %e, "encoding probe metrics");
        }
        out
    }
}

fn probe_result_labels(t: &ProbeTarget, result: &'static str) -> ProbeResultLabels {
    ProbeResultLabels {
        probe_type: t.probe_type.to_string(),
        result: result.to_string(),
        container: t.container.clone(),
        pod: t.pod.clone(),
        namespace: t.namespace.clone(),
        pod_uid: t.pod_uid.clone(),
    }
}

fn probe_duration_labels(t: &ProbeTarget) -> ProbeDurationLabels {
    ProbeDurationLabels {
        probe_type: t.probe_type.to_string(),
        container: t.container.clone(),
        pod: t.pod.clone(),
        namespace: t.namespace.clone(),
    }
}

#[cfg(test)]
mod stats_tests;

/// Parses an exposition body (tests).
#[cfg(test)]
pub(crate) fn parse(body: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("valid exposition")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(s: &prometheus_parse::Scrape, name: &str, label: (&str, &str)) -> Option<f64> {
        s.samples.iter().find(|x| x.metric == name && x.labels.get(label.0) == Some(label.1)).map(|x| match x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
    }

    #[test]
    fn kubelet_metrics_have_upstream_names_and_labels() {
        let m = Metrics::new();
        m.set_node_name("node-a");
        m.runtime_operation("list_podsandbox", Duration::from_millis(3), false);
        m.runtime_operation("list_podsandbox", Duration::from_millis(3), true);
        m.started_pod();
        m.started_container("init_container");
        m.restarted_pod(true);
        m.eviction("memory.available");
        m.pleg_relist(Duration::from_millis(5), Some(Duration::from_secs(1)), 1_700_000_000.0);
        m.pod_pulled("u1", Duration::from_secs(3));
        m.pod_started("u1", Duration::from_secs(5), Duration::from_secs(6), false);
        m.pod_worker("create", Duration::from_millis(20));
        let body = m.encode_kubelet(&[]);
        let s = parse(&body);
        assert_eq!(value(&s, "kubelet_node_name", ("node", "node-a")), Some(1.0));
        assert_eq!(value(&s, "kubelet_runtime_operations_total", ("operation_type", "list_podsandbox")), Some(2.0));
        assert_eq!(
            value(&s, "kubelet_runtime_operations_errors_total", ("operation_type", "list_podsandbox")),
            Some(1.0)
        );
        assert_eq!(value(&s, "kubelet_started_containers_total", ("container_type", "init_container")), Some(1.0));
        assert_eq!(value(&s, "kubelet_restarted_pods_total", ("static", "true")), Some(1.0));
        assert_eq!(value(&s, "kubelet_evictions", ("eviction_signal", "memory.available")), Some(1.0));
        assert!(body.contains("kubelet_started_pods_total 1\n"), "{body}");
        assert!(body.contains("kubelet_pleg_last_seen_seconds 1700000000"), "{body}");
        // The SLI excludes the 3 s of pulling: 6 - 3 = 3 s.
        assert!(body.contains("kubelet_pod_start_sli_duration_seconds_sum{first_with_network=\"true\"} 3.0"), "{body}");
        assert!(body.contains("kubelet_pod_start_duration_seconds_sum 5.0"), "{body}");
        assert!(body.contains("kubelet_pod_worker_duration_seconds_count{operation_type=\"create\"} 1"), "{body}");
        assert!(
            body.contains(
                "kubelet_runtime_operations_duration_seconds_bucket{le=\"0.005\",operation_type=\"list_podsandbox\"} 2"
            ) || body.contains(
                "kubelet_runtime_operations_duration_seconds_bucket{operation_type=\"list_podsandbox\",le=\"0.005\"} 2"
            ),
            "{body}"
        );
    }

    #[test]
    fn probe_series_go_with_their_container() {
        let m = Metrics::new();
        let t = ProbeTarget {
            probe_type: "Readiness",
            container: "app".into(),
            pod: "web".into(),
            namespace: "default".into(),
            pod_uid: "u1".into(),
        };
        m.probe(&t, "successful", Duration::from_millis(2));
        m.probe(&t, "failed", Duration::from_millis(2));
        let s = parse(&m.encode_probes());
        let total: Vec<_> = s.samples.iter().filter(|x| x.metric == "prober_probe_total").collect();
        assert_eq!(total.len(), 2);
        assert!(
            total
                .iter()
                .all(|x| x.labels.get("pod_uid") == Some("u1") && x.labels.get("probe_type") == Some("Readiness"))
        );
        assert!(s.samples.iter().any(|x| x.metric == "prober_probe_duration_seconds_count"));
        m.probe_removed(&t);
        let s = parse(&m.encode_probes());
        assert!(s.samples.is_empty(), "{:?}", s.samples);
    }
}
