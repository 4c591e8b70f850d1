//! Kubernetes Events about pods (Pulling, Pulled, Created, Started, Killing, Unhealthy, BackOff,
//! Failed, …), sent by one task within the `eventRecordQPS`/`eventBurst` budget. Recording never
//! blocks a pod worker: when the queue is full, events are dropped and counted.

use crate::api::DynApi;
use crate::api::rate::TokenBucket;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Normal,
    Warning,
}

#[derive(Debug, Clone)]
pub struct Record {
    pub object: ObjectReference,
    pub type_: Type,
    pub reason: String,
    pub message: String,
}

/// The recorder handle; a disabled one (no API server) records nothing.
#[derive(Clone, Default)]
pub struct Recorder {
    tx: Option<mpsc::Sender<Record>>,
    dropped: Arc<AtomicU64>,
}

impl Recorder {
    pub fn disabled() -> Self {
        Self::default()
    }

    /// A recorder and the task that sends its events.
    /// A recorder and its [`Delivery`] (the task that sends its events).
    pub fn new(api: DynApi, node_name: String, qps: f64, burst: u32) -> (Self, Delivery) {
        let (tx, rx) = mpsc::channel(1024);
        let rec = Self { tx: Some(tx), dropped: Arc::default() };
        (rec, Delivery { api, node_name, bucket: TokenBucket::new(qps, burst), rx })
    }

    /// Records an event about a pod, or one of its containers when `container` is given.
    pub fn pod(&self, pod: &Pod, container: Option<&str>, type_: Type, reason: &str, message: impl Into<String>) {
        let Some(tx) = &self.tx else { return };
        let object = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: pod.metadata.name.clone(),
            namespace: pod.metadata.namespace.clone(),
            uid: pod.metadata.uid.clone(),
            field_path: container.map(|c| {
                let init = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.init_containers.as_ref())
                    .is_some_and(|v| v.iter().any(|x| x.name == c));
                format!("spec.{}{{{c}}}", if init { "initContainers" } else { "containers" })
            }),
            ..Default::default()
        };
        let r = Record { object, type_, reason: reason.into(), message: message.into() };
        if tx.try_send(r).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records an event about the node (upstream's nodeRef: kind Node, the name as UID; the
    /// event lives in the default namespace).
    pub fn node(&self, node_name: &str, type_: Type, reason: &str, message: impl Into<String>) {
        let Some(tx) = &self.tx else { return };
        let object = ObjectReference {
            kind: Some("Node".into()),
            name: Some(node_name.into()),
            uid: Some(node_name.into()),
            ..Default::default()
        };
        let r = Record { object, type_, reason: reason.into(), message: message.into() };
        if tx.try_send(r).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

fn event(r: Record, node_name: &str, seq: u64) -> Event {
    let now = crate::meta::time(std::time::SystemTime::now());
    let mut e = Event::default();
    let name = r.object.name.clone().unwrap_or_default();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    e.metadata.name = Some(format!("{name}.{:x}", nanos + u128::from(seq)));
    e.metadata.namespace = r.object.namespace.clone().or_else(|| Some("default".into()));
    e.involved_object = r.object;
    e.reason = Some(r.reason);
    e.message = Some(r.message);
    e.type_ = Some(match r.type_ {
        Type::Normal => "Normal".into(),
        Type::Warning => "Warning".into(),
    });
    e.source = Some(EventSource { component: Some("kubelet".into()), host: Some(node_name.to_string()) });
    e.reporting_component = Some("kubelet".into());
    e.reporting_instance = Some(node_name.to_string());
    e.first_timestamp = Some(now.clone());
    e.last_timestamp = Some(now);
    e.count = Some(1);
    e
}

/// The task that sends a [`Recorder`]'s events.
pub struct Delivery {
    api: DynApi,
    node_name: String,
    bucket: TokenBucket,
    rx: mpsc::Receiver<Record>,
}

impl Delivery {
    /// Sends until `token` is cancelled, then what is already queued (within its rate).
    pub async fn run(self, token: tokio_util::sync::CancellationToken) {
        run(self.api, self.node_name, self.bucket, self.rx, token).await
    }
}

async fn run(
    api: DynApi,
    node_name: String,
    bucket: TokenBucket,
    mut rx: mpsc::Receiver<Record>,
    token: tokio_util::sync::CancellationToken,
) {
    let mut seq = 0u64;
    loop {
        let r = tokio::select! {
            biased;
            r = rx.recv() => r,
            // Stopping: what is queued goes, then the task ends.
            _ = token.cancelled() => rx.try_recv().ok(),
        };
        let Some(r) = r else { return };
        bucket.acquire().await;
        seq += 1;
        if let Err(e) = api.create_event(&event(r, &node_name, seq)).await {
            tracing::debug!(error = %e, "event not recorded");
        }
    }
}
