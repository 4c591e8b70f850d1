//! containerd's own task-exit events, for a containerd whose CRI has no container events (1.6):
//! `containerd.services.events.v1.Events/Subscribe` on the runtime's socket, topic `/tasks/exit`
//! in the CRI namespace `k8s.io`. An exit then reaches the PLEG in milliseconds instead of at the
//! next relist (upstream's kubelet waits for the relist there).
//!
//! containerd's CRI plugin updates its container state from the same event, asynchronously, so
//! an exit is forwarded once CRI ContainerStatus agrees (or after ~1 s; the relist corrects
//! anything left). Exec processes (probes) exit too; only a container's init process counts.

use super::cache::{Event, EventKind};
use super::events::{Feed, next_backoff};
use crate::cri::{DynRuntime, api};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use prost::Message;
use std::time::Duration;
use tokio::sync::mpsc;

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto {
    pub mod events {
        tonic::include_proto!("containerd.services.events.v1");
    }
    pub mod task {
        tonic::include_proto!("containerd.events");
    }
}

use proto::events::{Envelope, SubscribeRequest, events_client::EventsClient};

/// The containerd namespace of the CRI plugin's containers.
pub const NAMESPACE: &str = "k8s.io";
const TOPIC: &str = "/tasks/exit";
/// A Subscribe call still pending after this long is established (see [`run`]).
const SUBSCRIBED_AFTER: Duration = Duration::from_secs(1);

/// The container whose init process exited, if `env` says so.
pub fn exited(env: &Envelope) -> Option<String> {
    if env.topic != TOPIC || env.namespace != NAMESPACE {
        return None;
    }
    let exit = proto::task::TaskExit::decode(env.event.as_ref()?.value.as_slice()).ok()?;
    (exit.id.is_empty() || exit.id == exit.container_id).then_some(exit.container_id)
}

/// Waits until CRI no longer reports `id` running: every 5 ms for the first 250 ms (containerd's
/// CRI plugin deletes the task before it updates the state, tens of ms after the exit), then
/// every 50 ms up to about 1 s.
async fn confirm(runtime: DynRuntime, id: String) -> String {
    for attempt in 0..65u32 {
        let done = match runtime.container_status(&id).await {
            Ok(st) => st.state != api::ContainerState::ContainerRunning as i32,
            // The sandbox (pause) container.
            Err(e) if e.is_not_found() => match runtime.pod_sandbox_status(&id).await {
                Ok(s) => s.state != api::PodSandboxState::SandboxReady as i32,
                Err(_) => true,
            },
            Err(_) => true,
        };
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(if attempt < 50 { 5 } else { 50 })).await;
    }
    id
}

async fn subscribe(endpoint: &str) -> Result<tonic::Streaming<Envelope>, tonic::Status> {
    let channel = crate::cri::remote::channel(endpoint).await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let filters = vec![format!("namespace==\"{NAMESPACE}\",topic==\"{TOPIC}\"")];
    Ok(EventsClient::new(channel).subscribe(SubscribeRequest { filters }).await?.into_inner())
}

/// Keeps a subscription to containerd's task exits open (resubscribing with backoff) and
/// forwards the exits of containers the PLEG knows. Returns if containerd has no such service
/// or the PLEG is gone.
pub async fn run(endpoint: String, runtime: DynRuntime, tx: mpsc::Sender<Feed>) {
    let mut backoff = Duration::ZERO;
    let mut warned = false;
    loop {
        // containerd sends the stream's response headers only with its first event, so the call
        // stays pending on an idle node; one still open after SUBSCRIBED_AFTER is subscribed (an
        // event from then on arrives as the stream's first message).
        let call = subscribe(&endpoint);
        tokio::pin!(call);
        let mut up = false;
        let result = loop {
            tokio::select! {
                r = &mut call => break r,
                _ = tokio::time::sleep(SUBSCRIBED_AFTER), if !up => {
                    if tx.send(Feed::Up).await.is_err() {
                        return;
                    }
                    tracing::info!("subscribed to containerd's task exit events");
                    up = true;
                }
            }
        };
        if up && result.is_err() && tx.send(Feed::Down).await.is_err() {
            return;
        }
        match result {
            Ok(mut stream) => {
                if !up {
                    if tx.send(Feed::Up).await.is_err() {
                        return;
                    }
                    tracing::info!("subscribed to containerd's task exit events");
                }
                warned = false;
                let mut delivered = false;
                let mut confirming = FuturesUnordered::new();
                let ended = loop {
                    tokio::select! {
                        item = stream.next() => match item {
                            Some(Ok(env)) => {
                                delivered = true;
                                // Every CRI container's exit, also of those created since the
                                // last relist: the PLEG relists for an instance it does not know.
                                if let Some(id) = exited(&env) {
                                    confirming.push(confirm(runtime.clone(), id));
                                }
                            }
                            Some(Err(e)) => break Some(e),
                            None => break None,
                        },
                        Some(id) = confirming.next() => {
                            let ev = Event { id, uid: None, kind: EventKind::Stopped };
                            if tx.send(Feed::Event(ev)).await.is_err() {
                                return;
                            }
                        }
                    }
                };
                match ended {
                    Some(e) => tracing::warn!(error = %e, "containerd event stream broke; relisting until it is back"),
                    None => tracing::warn!("containerd event stream ended; relisting until it is back"),
                }
                if tx.send(Feed::Down).await.is_err() {
                    return;
                }
                if delivered {
                    backoff = Duration::ZERO;
                }
            }
            Err(e) if e.code() == tonic::Code::Unimplemented => {
                let _ = tx.send(Feed::Unavailable).await;
                tracing::info!("containerd has no events service; relisting instead");
                return;
            }
            Err(e) => {
                if !warned {
                    tracing::warn!(error = %e, "cannot subscribe to containerd's events; retrying");
                    warned = true;
                }
            }
        }
        backoff = next_backoff(backoff);
        tokio::time::sleep(backoff).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::events::events_server::{Events, EventsServer};
    use std::sync::Arc;

    fn envelope(topic: &str, namespace: &str, container: &str, process: &str) -> Envelope {
        let exit = proto::task::TaskExit {
            container_id: container.into(),
            id: process.into(),
            exit_status: 1,
            ..Default::default()
        };
        Envelope {
            timestamp: None,
            namespace: namespace.into(),
            topic: topic.into(),
            event: Some(prost_types::Any {
                type_url: "containerd.events.TaskExit".into(),
                value: exit.encode_to_vec(),
            }),
        }
    }

    #[test]
    fn only_init_process_exits_in_the_cri_namespace_count() {
        assert_eq!(exited(&envelope(TOPIC, NAMESPACE, "c1", "c1")), Some("c1".into()));
        assert_eq!(exited(&envelope(TOPIC, NAMESPACE, "c1", "exec-42")), None, "a probe's exec");
        assert_eq!(exited(&envelope(TOPIC, "moby", "c1", "c1")), None);
        assert_eq!(exited(&envelope("/tasks/start", NAMESPACE, "c1", "c1")), None);
    }

    /// A containerd events service that sends what the test gives it.
    struct Server(tokio::sync::Mutex<Option<mpsc::Receiver<Envelope>>>);

    #[tonic::async_trait]
    impl Events for Server {
        type SubscribeStream = futures::stream::BoxStream<'static, Result<Envelope, tonic::Status>>;
        async fn subscribe(
            &self,
            req: tonic::Request<SubscribeRequest>,
        ) -> Result<tonic::Response<Self::SubscribeStream>, tonic::Status> {
            assert_eq!(req.get_ref().filters, vec![r#"namespace=="k8s.io",topic=="/tasks/exit""#.to_string()]);
            let rx = self.0.lock().await.take().ok_or_else(|| tonic::Status::unavailable("once"))?;
            let s = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) });
            Ok(tonic::Response::new(s.boxed()))
        }
    }

    /// Serves `events` on a fresh unix socket; the directory keeps the socket, the endpoint
    /// names it.
    fn serve(events: impl Events) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("containerd.sock");
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        let incoming = futures::stream::unfold(listener, |l| async move {
            let conn = l.accept().await.map(|(s, _)| s);
            Some((conn, l))
        });
        let server = tonic::transport::Server::builder().add_service(EventsServer::new(events));
        tokio::spawn(server.serve_with_incoming(incoming));
        (dir, format!("unix://{}", sock.display()))
    }

    #[tokio::test]
    async fn an_exit_is_forwarded_once_cri_says_the_container_stopped() {
        let (env_tx, env_rx) = mpsc::channel(8);
        let (_dir, endpoint) = serve(Server(tokio::sync::Mutex::new(Some(env_rx))));

        let fake = crate::cri::fake::FakeRuntime::new();
        let runtime: DynRuntime = Arc::new(fake.clone());
        let mut sandbox = api::PodSandboxConfig::default();
        sandbox.labels.insert(crate::cri::labels::POD_UID.into(), "u1".into());
        let sb = runtime.run_pod_sandbox(sandbox).await.unwrap();
        let mut config = api::ContainerConfig::default();
        config.labels.insert(crate::cri::labels::POD_UID.into(), "u1".into());
        let c = runtime.create_container(&sb, config, Default::default()).await.unwrap();
        runtime.start_container(&c).await.unwrap();

        let (tx, mut rx) = mpsc::channel(8);
        tokio::spawn(run(endpoint, runtime.clone(), tx));
        assert_eq!(rx.recv().await, Some(Feed::Up));
        // An instance CRI does not know (yet) is forwarded at once: the PLEG relists for it.
        env_tx.send(envelope(TOPIC, NAMESPACE, "unknown", "unknown")).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await.unwrap();
        assert_eq!(got, Some(Feed::Event(Event { id: "unknown".into(), uid: None, kind: EventKind::Stopped })));
        // containerd reports the exit before its CRI plugin has caught up.
        env_tx.send(envelope(TOPIC, NAMESPACE, &c, &c)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(rx.try_recv().is_err(), "CRI still says running");
        fake.exit_container(&c, 1);
        let got = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await.unwrap();
        assert_eq!(got, Some(Feed::Event(Event { id: c, uid: None, kind: EventKind::Stopped })));
        drop(env_tx);
        assert_eq!(rx.recv().await, Some(Feed::Down), "the stream ended");
    }

    /// containerd answers Subscribe only with its first event (grpc-go sends the headers with
    /// the first message): a server that never answers.
    struct Idle;

    #[tonic::async_trait]
    impl Events for Idle {
        type SubscribeStream = futures::stream::BoxStream<'static, Result<Envelope, tonic::Status>>;
        async fn subscribe(
            &self,
            _: tonic::Request<SubscribeRequest>,
        ) -> Result<tonic::Response<Self::SubscribeStream>, tonic::Status> {
            std::future::pending().await
        }
    }

    #[tokio::test]
    async fn a_subscription_without_events_yet_counts_as_up() {
        let (_dir, endpoint) = serve(Idle);
        let runtime: DynRuntime = Arc::new(crate::cri::fake::FakeRuntime::new());
        let (tx, mut rx) = mpsc::channel(8);
        let started = std::time::Instant::now();
        tokio::spawn(run(endpoint, runtime, tx));
        let got = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap();
        assert_eq!(got, Some(Feed::Up));
        assert!(started.elapsed() >= SUBSCRIBED_AFTER, "up only once the call stayed open");
    }
}
