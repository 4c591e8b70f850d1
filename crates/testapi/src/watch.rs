//! Watch streams: newline-delimited JSON watch events from the store's history and live changes,
//! BOOKMARKs, 410 Expired as an ERROR event, timeoutSeconds.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::{Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::respond::{Body, store_error_status};
use crate::selectors::Selector;
use crate::store::{Event, EventType, Store};

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("watch client went away")]
    Closed,
}

#[derive(Debug, Clone)]
pub struct WatchParams {
    pub resource: String,
    pub namespace: Option<String>,
    pub labels: Selector,
    pub fields: Selector,
    /// Start after this resourceVersion; None or 0 starts with ADDED events for the current objects.
    pub resource_version: Option<u64>,
    pub bookmarks: bool,
    pub send_initial_events: bool,
    pub timeout: Option<Duration>,
    pub kind: String,
    pub api_version: String,
    /// Send each object as a one-row Table (kubectl's `get -w`).
    pub table: Option<crate::table::Include>,
}

impl WatchParams {
    fn matches(&self, obj: &Value) -> bool {
        let ns_ok = self.namespace.as_ref().is_none_or(|ns| {
            obj.get("metadata").and_then(|m| m.get("namespace")).and_then(Value::as_str) == Some(ns.as_str())
        });
        ns_ok && self.labels.matches_labels(obj) && self.fields.matches_fields(obj)
    }
}

/// The watch event to send for a store event, if any (selector transitions become ADDED/DELETED).
pub fn transform(ev: &Event, p: &WatchParams) -> Option<(&'static str, Value)> {
    if ev.key.resource != p.resource {
        return None;
    }
    let now = p.matches(&ev.object);
    match ev.typ {
        EventType::Added | EventType::Deleted => now.then(|| (ev.typ.as_str(), ev.object.clone())),
        EventType::Modified => {
            let before = ev.previous.as_ref().is_some_and(|o| p.matches(o));
            match (before, now) {
                (true, true) => Some(("MODIFIED", ev.object.clone())),
                (false, true) => Some(("ADDED", ev.object.clone())),
                (true, false) => Some(("DELETED", ev.object.clone())),
                (false, false) => None,
            }
        }
    }
}

/// Renders a watch event line, as a Table when asked (column definitions only in the first one).
fn render(p: &WatchParams, first: &mut bool, typ: &str, obj: &Value) -> Bytes {
    match p.table {
        Some(include) => {
            let rv = obj.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or("");
            let t = crate::table::table(&p.kind, std::slice::from_ref(obj), rv, include, *first);
            *first = false;
            line(typ, &t)
        }
        None => line(typ, obj),
    }
}

fn line(typ: &str, obj: &Value) -> Bytes {
    let mut v = serde_json::to_vec(&json!({"type": typ, "object": obj})).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

fn bookmark(p: &WatchParams, rv: u64, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line("BOOKMARK", &json!({"kind": p.kind, "apiVersion": p.api_version, "metadata": meta}))
}

fn streaming_response(rx: mpsc::Receiver<Bytes>) -> Response<Body> {
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::io::Error>(Frame::data(b)), rx))
    });
    let mut r = Response::new(StreamBody::new(stream).boxed());
    *r.status_mut() = StatusCode::OK;
    r.headers_mut().insert("content-type", "application/json".parse().unwrap());
    r.headers_mut().insert("transfer-encoding", "chunked".parse().unwrap());
    r
}

/// Starts a watch and returns the streaming response.
pub fn watch(store: Arc<Store>, p: WatchParams, bookmark_every: Duration) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let live = store.subscribe();
    let start_rv = p.resource_version.unwrap_or(0);
    let mut initial = Vec::new();
    let mut first = true;
    let last_rv;
    if start_rv == 0 || p.send_initial_events {
        let (items, rv) = store.list(&p.resource, p.namespace.as_deref());
        for o in items.iter().filter(|o| p.matches(o)) {
            initial.push(render(&p, &mut first, "ADDED", o));
        }
        if p.send_initial_events {
            initial.push(bookmark(&p, rv, true));
        }
        last_rv = rv;
    } else {
        match store.events_since(start_rv) {
            Ok(evs) => {
                for (t, o) in evs.iter().filter_map(|e| transform(e, &p)) {
                    initial.push(render(&p, &mut first, t, &o));
                }
                last_rv = evs.last().map(|e| e.rv).unwrap_or(start_rv);
            }
            Err(e) => {
                initial.push(line("ERROR", &store_error_status(&e)));
                tokio::spawn(async move {
                    for b in initial {
                        let _ = tx.send(b).await;
                    }
                });
                return streaming_response(rx);
            }
        }
    }
    tokio::spawn(async move {
        let _ = run(store, p, live, tx, initial, (last_rv, first), bookmark_every).await;
    });
    streaming_response(rx)
}

async fn run(
    store: Arc<Store>,
    p: WatchParams,
    mut live: broadcast::Receiver<Arc<Event>>,
    tx: mpsc::Sender<Bytes>,
    initial: Vec<Bytes>,
    (mut last_rv, mut first): (u64, bool),
    bookmark_every: Duration,
) -> Result<(), WatchError> {
    for b in initial {
        tx.send(b).await.map_err(|_| WatchError::Closed)?;
    }
    let deadline = p.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + bookmark_every, bookmark_every);
    loop {
        let sleep_until = deadline.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86400 * 365));
        tokio::select! {
            ev = live.recv() => match ev {
                Ok(ev) => {
                    if ev.rv <= last_rv {
                        continue;
                    }
                    last_rv = ev.rv;
                    if let Some((t, o)) = transform(&ev, &p) {
                        tx.send(render(&p, &mut first, t, &o)).await.map_err(|_| WatchError::Closed)?;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let s = store_error_status(&crate::store::StoreError::Expired { requested: last_rv, oldest: store.current_rv() });
                    let _ = tx.send(line("ERROR", &s)).await;
                    return Ok(());
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            _ = tick.tick(), if p.bookmarks => {
                // Everything up to `rv` has been broadcast already: drain it before the bookmark.
                let rv = store.current_rv();
                while let Ok(ev) = live.try_recv() {
                    if ev.rv <= last_rv {
                        continue;
                    }
                    last_rv = ev.rv;
                    if let Some((t, o)) = transform(&ev, &p) {
                        tx.send(render(&p, &mut first, t, &o)).await.map_err(|_| WatchError::Closed)?;
                    }
                }
                last_rv = last_rv.max(rv);
                tx.send(bookmark(&p, last_rv, false)).await.map_err(|_| WatchError::Closed)?;
            }
            _ = tokio::time::sleep_until(sleep_until), if deadline.is_some() => return Ok(()),
            _ = tx.closed() => return Err(WatchError::Closed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Key;

    fn params(fields: &str) -> WatchParams {
        WatchParams {
            resource: "/v1/pods".into(),
            namespace: Some("default".into()),
            labels: Selector::default(),
            fields: Selector::parse_fields(fields).unwrap(),
            resource_version: None,
            bookmarks: true,
            send_initial_events: false,
            timeout: Some(Duration::from_secs(2)),
            kind: "Pod".into(),
            api_version: "v1".into(),
            table: None,
        }
    }

    fn pod(node: &str) -> Value {
        json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {"nodeName": node}})
    }

    #[test]
    fn selector_transitions() {
        let p = params("spec.nodeName=n1");
        let key = Key { resource: "/v1/pods".into(), namespace: "default".into(), name: "p".into() };
        let ev = |typ, obj, previous| Event { rv: 5, typ, key: key.clone(), object: obj, previous };
        assert_eq!(transform(&ev(EventType::Modified, pod("n1"), Some(pod(""))), &p).unwrap().0, "ADDED");
        assert_eq!(transform(&ev(EventType::Modified, pod(""), Some(pod("n1"))), &p).unwrap().0, "DELETED");
        assert_eq!(transform(&ev(EventType::Modified, pod("n1"), Some(pod("n1"))), &p).unwrap().0, "MODIFIED");
        assert!(transform(&ev(EventType::Added, pod("n2"), None), &p).is_none());
    }

    async fn collect(resp: Response<Body>) -> Vec<Value> {
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        body.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(|l| serde_json::from_slice(l).unwrap()).collect()
    }

    #[tokio::test]
    async fn history_live_events_bookmarks_and_timeout() {
        let store = Arc::new(Store::new(100, None));
        store.create("/v1/pods", "default", pod("n1")).unwrap(); // rv 2
        let mut p = params("");
        p.resource_version = Some(1);
        p.timeout = Some(Duration::from_millis(400));
        let resp = watch(store.clone(), p, Duration::from_millis(150));
        let key = Key { resource: "/v1/pods".into(), namespace: "default".into(), name: "p".into() };
        store.delete(&key).unwrap(); // rv 3
        let events = collect(resp).await;
        assert_eq!(events[0]["type"], "ADDED");
        assert_eq!(events[1]["type"], "DELETED");
        assert!(
            events[2..].iter().any(|e| e["type"] == "BOOKMARK" && e["object"]["metadata"]["resourceVersion"] == "3")
        );
    }

    #[tokio::test]
    async fn too_old_resource_version_gives_expired_error_event() {
        let store = Arc::new(Store::new(2, None));
        for i in 0..5 {
            let mut o = pod("n1");
            o["metadata"]["name"] = json!(format!("p{i}"));
            store.create("/v1/pods", "default", o).unwrap();
        }
        let mut p = params("");
        p.resource_version = Some(2);
        let events = collect(watch(store, p, Duration::from_secs(5))).await;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["type"], "ERROR");
        assert_eq!(events[0]["object"]["code"], 410);
    }
}
