//! Runtime events for the PLEG: the CRI GetContainerEvents stream, kept open (resubscribed with
//! backoff when it breaks) and turned into [`Feed`] items. The PLEG applies events to its cache
//! at once and relists less often while a stream is up; a runtime that answers Unimplemented
//! (containerd 1.6) leaves it on the 1 s relist.

use super::cache::{Event, EventKind};
use crate::backoff::Exponential;
use crate::cri::labels::POD_UID;
use crate::cri::{DynRuntime, api};
use futures::StreamExt;
use std::time::Duration;
use tokio::sync::mpsc;

/// What an event source tells the PLEG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Feed {
    /// The stream is open: events from now on will come.
    Up,
    Event(Event),
    /// The stream broke; events may have been missed (relist) until it is back up.
    Down,
    /// The runtime has no such events: do not wait for them.
    Unavailable,
}

/// Backoff between resubscriptions: 1 s doubling to 30 s.
pub(crate) fn next_backoff(d: Duration) -> Duration {
    const RESUBSCRIBE: Exponential = Exponential::new(Duration::from_secs(1), Duration::from_secs(30));
    RESUBSCRIBE.after(d)
}

/// A CRI container event as the PLEG's cache event (`None` for an unknown event type).
pub fn from_cri(ev: &api::ContainerEventResponse) -> Option<Event> {
    let kind = match api::ContainerEventType::try_from(ev.container_event_type).ok()? {
        api::ContainerEventType::ContainerCreatedEvent => EventKind::Created,
        api::ContainerEventType::ContainerStartedEvent => EventKind::Started,
        api::ContainerEventType::ContainerStoppedEvent => EventKind::Stopped,
        api::ContainerEventType::ContainerDeletedEvent => EventKind::Deleted,
    };
    let uid = ev.pod_sandbox_status.as_ref().and_then(|s| s.labels.get(POD_UID).cloned());
    Some(Event { id: ev.container_id.clone(), uid, kind })
}

/// Keeps a CRI GetContainerEvents stream open and forwards it; returns when the runtime has no
/// events (true) or the PLEG is gone (false).
pub async fn cri(runtime: DynRuntime, tx: mpsc::Sender<Feed>) -> bool {
    let mut backoff = Duration::ZERO;
    let mut warned = false;
    loop {
        match runtime.container_events().await {
            Ok(mut stream) => {
                if tx.send(Feed::Up).await.is_err() {
                    return false;
                }
                tracing::info!("subscribed to the runtime's container events");
                let mut delivered = false;
                let ended = loop {
                    match stream.next().await {
                        Some(Ok(ev)) => {
                            delivered = true;
                            let Some(ev) = from_cri(&ev) else { continue };
                            if tx.send(Feed::Event(ev)).await.is_err() {
                                return false;
                            }
                        }
                        Some(Err(e)) => break Some(e),
                        None => break None,
                    }
                };
                // Some servers answer Unimplemented only on the stream's first read.
                if let Some(e) = &ended
                    && e.code == tonic::Code::Unimplemented
                    && !delivered
                {
                    let _ = tx.send(Feed::Unavailable).await;
                    tracing::info!("the runtime has no container events (CRI GetContainerEvents)");
                    return true;
                }
                match ended {
                    Some(e) => tracing::warn!(error = %e, "container event stream broke; relisting until it is back"),
                    None => tracing::warn!("container event stream ended; relisting until it is back"),
                }
                if tx.send(Feed::Down).await.is_err() {
                    return false;
                }
                // A stream that delivered was healthy: retry soon.
                if delivered {
                    backoff = Duration::ZERO;
                }
                warned = false;
            }
            Err(e) if e.code == tonic::Code::Unimplemented => {
                let _ = tx.send(Feed::Unavailable).await;
                tracing::info!("the runtime has no container events (CRI GetContainerEvents)");
                return true;
            }
            Err(e) => {
                if !warned {
                    tracing::warn!(error = %e, "cannot subscribe to container events; retrying");
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
    use crate::cri::fake::FakeRuntime;
    use std::sync::Arc;

    #[test]
    fn backoff_doubles_from_one_second_to_thirty() {
        let mut d = Duration::ZERO;
        let mut seen = Vec::new();
        for _ in 0..7 {
            d = next_backoff(d);
            seen.push(d.as_secs());
        }
        assert_eq!(seen, vec![1, 2, 4, 8, 16, 30, 30]);
    }

    #[test]
    fn cri_events_name_the_instance_and_the_pod() {
        let ev = api::ContainerEventResponse {
            container_id: "c1".into(),
            container_event_type: api::ContainerEventType::ContainerStoppedEvent as i32,
            pod_sandbox_status: Some(api::PodSandboxStatus {
                labels: [(POD_UID.to_string(), "u1".to_string())].into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(from_cri(&ev), Some(Event { id: "c1".into(), uid: Some("u1".into()), kind: EventKind::Stopped }));
        let unknown = api::ContainerEventResponse { container_event_type: 42, ..Default::default() };
        assert_eq!(from_cri(&unknown), None);
    }

    #[tokio::test(start_paused = true)]
    async fn unimplemented_is_reported_once_and_not_retried() {
        let fake = FakeRuntime::new();
        fake.set_events_unimplemented(true);
        let (tx, mut rx) = mpsc::channel(8);
        assert!(cri(Arc::new(fake.clone()), tx).await);
        assert_eq!(rx.recv().await, Some(Feed::Unavailable));
        assert_eq!(rx.recv().await, None, "the feed ended");
        assert_eq!(fake.calls(), vec!["GetContainerEvents"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_broken_stream_is_reported_and_resubscribed() {
        let fake = FakeRuntime::new();
        let (tx, mut rx) = mpsc::channel(8);
        tokio::spawn(cri(Arc::new(fake.clone()), tx));
        assert_eq!(rx.recv().await, Some(Feed::Up));
        let sb = crate::cri::Runtime::run_pod_sandbox(&fake, Default::default()).await.unwrap();
        assert!(matches!(rx.recv().await, Some(Feed::Event(Event { id, kind: EventKind::Started, .. })) if id == sb));
        fake.break_event_streams();
        assert_eq!(rx.recv().await, Some(Feed::Down));
        let start = tokio::time::Instant::now();
        assert_eq!(rx.recv().await, Some(Feed::Up));
        assert_eq!(start.elapsed(), Duration::from_secs(1), "resubscribed after the first backoff");
    }
}
