//! The PLEG's cache: what the runtime runs, per pod, as the last relist found it (patched by
//! runtime events in between). Pod workers read it instead of listing their pod, so a sync costs
//! no list call and the relist is the only O(all pods) work. One writer (the PLEG), many readers.
//!
//! Staleness: a worker that changed the runtime (created, started, stopped or removed something)
//! calls [`Cache::invalidate`]; its next [`Cache::get_fresh`] waits for a relist that *started*
//! after that (upstream's `GetNewerThan`) and asks the PLEG to relist now instead of at its
//! period. Runtime events patch states but never count as fresh: only a full relist does.
//!
//! A worker whose changes are all known by their answers (sandboxes and containers it created
//! and started, instances it removed) records them instead with [`Cache::record_own`]: its next
//! read is fresh at once, without a relist. What it does not know of (an exit meanwhile) comes as
//! an event, as it would after any read.

use crate::cri::api;
use crate::cri::labels::{ContainerAnnotations, POD_UID};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// A sandbox as a list call reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxRecord {
    pub id: String,
    pub attempt: u32,
    pub ready: bool,
    pub created_at: i64,
}

/// A container as a list call reports it (annotations already read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRecord {
    pub id: String,
    pub sandbox_id: String,
    pub name: String,
    /// `api::ContainerState` as i32.
    pub state: i32,
    pub created_at: i64,
    pub annotations: ContainerAnnotations,
}

/// One pod's sandboxes and containers, each sorted by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodRecord {
    pub sandboxes: Vec<SandboxRecord>,
    pub containers: Vec<ContainerRecord>,
}

impl SandboxRecord {
    pub fn from_api(s: &api::PodSandbox) -> Self {
        Self {
            id: s.id.clone(),
            attempt: s.metadata.as_ref().map(|m| m.attempt).unwrap_or(0),
            ready: s.state == api::PodSandboxState::SandboxReady as i32,
            created_at: s.created_at,
        }
    }
}

impl ContainerRecord {
    pub fn from_api(c: &api::Container) -> Self {
        Self {
            id: c.id.clone(),
            sandbox_id: c.pod_sandbox_id.clone(),
            name: c.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default(),
            state: c.state,
            created_at: c.created_at,
            annotations: ContainerAnnotations::parse(&c.annotations),
        }
    }
}

impl PodRecord {
    /// One pod's record from lists that hold only that pod's objects.
    pub fn from_lists(sandboxes: &[api::PodSandbox], containers: &[api::Container]) -> Self {
        let mut r = Self {
            sandboxes: sandboxes.iter().map(SandboxRecord::from_api).collect(),
            containers: containers.iter().map(ContainerRecord::from_api).collect(),
        };
        r.sort();
        r
    }

    /// Groups a full relist by the pod UID label (objects without one are not the kubelet's).
    pub fn group(sandboxes: &[api::PodSandbox], containers: &[api::Container]) -> HashMap<String, PodRecord> {
        let mut pods: HashMap<String, PodRecord> = HashMap::new();
        for s in sandboxes {
            if let Some(uid) = s.labels.get(POD_UID) {
                pods.entry(uid.clone()).or_default().sandboxes.push(SandboxRecord::from_api(s));
            }
        }
        for c in containers {
            if let Some(uid) = c.labels.get(POD_UID) {
                pods.entry(uid.clone()).or_default().containers.push(ContainerRecord::from_api(c));
            }
        }
        for r in pods.values_mut() {
            r.sort();
        }
        pods
    }

    fn sort(&mut self) {
        self.sandboxes.sort_by(|a, b| a.id.cmp(&b.id));
        self.containers.sort_by(|a, b| a.id.cmp(&b.id));
    }

    /// Whether the same instances exist in the same states (what the PLEG reports as a change).
    pub fn same_states(&self, other: &PodRecord) -> bool {
        self.sandboxes.len() == other.sandboxes.len()
            && self.containers.len() == other.containers.len()
            && self.sandboxes.iter().zip(&other.sandboxes).all(|(a, b)| a.id == b.id && a.ready == b.ready)
            && self.containers.iter().zip(&other.containers).all(|(a, b)| a.id == b.id && a.state == b.state)
    }
}

/// Pods whose sandboxes or containers appeared, disappeared or changed state.
pub fn changed_pods(old: &HashMap<String, Arc<PodRecord>>, new: &HashMap<String, Arc<PodRecord>>) -> Vec<String> {
    let mut out: Vec<String> =
        new.iter().filter(|(uid, r)| old.get(*uid).is_none_or(|o| !o.same_states(r))).map(|(u, _)| u.clone()).collect();
    out.extend(old.keys().filter(|u| !new.contains_key(*u)).cloned());
    out
}

/// What a runtime event says happened to a container or sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Created,
    Started,
    Stopped,
    Deleted,
}

/// A runtime event: the instance, its pod when the event says, and what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: String,
    pub uid: Option<String>,
    pub kind: EventKind,
}

/// What a worker did to its pod in the runtime, every outcome known from the runtime's answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnChange {
    /// New sandboxes and containers, in the state the worker left them.
    pub created: PodRecord,
    /// Sandboxes and containers it removed.
    pub removed: Vec<String>,
}

impl OwnChange {
    pub fn is_empty(&self) -> bool {
        self.created.sandboxes.is_empty() && self.created.containers.is_empty() && self.removed.is_empty()
    }
}

/// What a relist's result may predate and must have applied on top of it.
#[derive(Debug, Clone)]
enum Replay {
    Event(Event),
    Own(String, OwnChange),
}

/// What applying an event to the cache did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The pod's record changed: tell its worker.
    Changed(String),
    /// Nothing new (the cache already had that state).
    Unchanged,
    /// The instance is not in the cache (created since the last relist, or not the kubelet's):
    /// only a relist can place it.
    Unknown,
}

#[derive(Default)]
struct State {
    pods: HashMap<String, Arc<PodRecord>>,
    /// Sandbox and container id → pod UID, for events that name only the instance.
    owners: HashMap<String, String>,
    /// Relists started so far; relist `n` is the n-th.
    started: u64,
    /// The newest relist that completed (0: none yet).
    completed: u64,
    /// Pod UID → the relist a read of that pod must wait for (set by `invalidate`).
    needed: HashMap<String, u64>,
    /// Events and own changes applied while a relist was listing: its result may predate them,
    /// so they are applied again on top of it (states only move forward, so a replay is
    /// harmless).
    replay: Vec<Replay>,
}

struct Inner {
    state: Mutex<State>,
    completed: watch::Sender<u64>,
    kick: Notify,
}

/// The shared cache. Cloning shares it.
#[derive(Clone)]
pub struct Cache(Arc<Inner>);

impl Default for Cache {
    fn default() -> Self {
        Self::new()
    }
}

impl Cache {
    pub fn new() -> Self {
        Self(Arc::new(Inner { state: Mutex::default(), completed: watch::Sender::new(0), kick: Notify::new() }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The pod's record as the cache has it now (empty for a pod the runtime does not run), or
    /// `None` before the first relist.
    pub fn get(&self, uid: &str) -> Option<Arc<PodRecord>> {
        let s = self.lock();
        (s.completed > 0).then(|| s.pods.get(uid).cloned().unwrap_or_default())
    }

    /// The pod's record from a relist that started after the pod's last [`invalidate`](Self::invalidate)
    /// (or after none, if it was never invalidated, once the first relist is done). Waits at
    /// most `max_wait`; `None` then, and the caller lists the pod itself.
    pub async fn get_fresh(&self, uid: &str, max_wait: Duration) -> Option<Arc<PodRecord>> {
        let mut rx = self.0.completed.subscribe();
        let wait = async {
            loop {
                {
                    let s = self.lock();
                    let need = s.needed.get(uid).copied().unwrap_or(1);
                    if s.completed >= need {
                        return s.pods.get(uid).cloned().unwrap_or_default();
                    }
                }
                // Ask for a relist now rather than at the period (kicks coalesce).
                self.0.kick.notify_one();
                if rx.changed().await.is_err() {
                    // Cannot happen while `self` holds the sender; wait out the deadline.
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(max_wait, wait).await.ok()
    }

    /// The worker changed the pod's runtime state: its next read waits for a relist that starts
    /// after now.
    pub fn invalidate(&self, uid: &str) {
        let mut s = self.lock();
        let next = s.started + 1;
        s.needed.insert(uid.to_string(), next);
    }

    /// The worker changed the pod's runtime state and knows every outcome: the cache takes them
    /// as they are, and the pod's next read is fresh at once (instead of after a relist, as with
    /// [`invalidate`](Self::invalidate)). Creations only move states forward, so an exit the PLEG
    /// applied first stays.
    pub fn record_own(&self, uid: &str, change: OwnChange) {
        if change.is_empty() {
            return;
        }
        let mut s = self.lock();
        merge_locked(&mut s, uid, &change);
        if s.started > s.completed {
            s.replay.push(Replay::Own(uid.to_string(), change));
        }
    }

    /// The pod an instance belongs to, if the cache knows it (tests: events resolve owners
    /// inside `apply`).
    #[cfg(test)]
    fn uid_of(&self, id: &str) -> Option<String> {
        self.lock().owners.get(id).cloned()
    }

    /// Every pod the cache knows, with its record.
    pub fn pods(&self) -> HashMap<String, Arc<PodRecord>> {
        self.lock().pods.clone()
    }

    /// PLEG side: resolves when a worker asked for a relist.
    pub(crate) async fn kicked(&self) {
        self.0.kick.notified().await
    }

    /// PLEG side: a relist is about to list the runtime. Returns its number.
    pub(crate) fn begin_relist(&self) -> u64 {
        let mut s = self.lock();
        s.started += 1;
        s.replay.clear();
        s.started
    }

    /// Asks the PLEG to relist soon (an event named an instance only a relist can place).
    pub(crate) fn ask_relist(&self) {
        self.0.kick.notify_one();
    }

    /// PLEG side: relist `n` found `pods`. Returns the pods that changed since the cache's view.
    pub(crate) fn finish_relist(&self, n: u64, pods: HashMap<String, PodRecord>) -> Vec<String> {
        let pods: HashMap<String, Arc<PodRecord>> = pods.into_iter().map(|(u, r)| (u, Arc::new(r))).collect();
        let mut owners = HashMap::with_capacity(pods.len() * 2);
        for (uid, r) in &pods {
            for id in r.sandboxes.iter().map(|s| &s.id).chain(r.containers.iter().map(|c| &c.id)) {
                owners.insert(id.clone(), uid.clone());
            }
        }
        let changed = {
            let mut s = self.lock();
            let old = std::mem::replace(&mut s.pods, pods);
            s.owners = owners;
            // An exit or a worker's own change seen while the lists were in flight must not be
            // undone by them. Whoever needed to hear of them heard when they were applied.
            for r in std::mem::take(&mut s.replay) {
                match r {
                    Replay::Event(ev) => {
                        apply_locked(&mut s, &ev);
                    }
                    Replay::Own(uid, change) => merge_locked(&mut s, &uid, &change),
                }
            }
            let changed = changed_pods(&old, &s.pods);
            s.completed = s.completed.max(n);
            let done = s.completed;
            s.needed.retain(|_, need| *need > done);
            changed
        };
        self.0.completed.send_replace(n);
        changed
    }

    /// PLEG side: patches the cache with a runtime event. States only move forward (created,
    /// running, exited; a sandbox from ready to not ready): an event older than the relist
    /// that already saw a later state changes nothing.
    pub(crate) fn apply(&self, ev: &Event) -> Applied {
        let mut s = self.lock();
        if s.started > s.completed {
            s.replay.push(Replay::Event(ev.clone()));
        }
        apply_locked(&mut s, ev)
    }
}

fn merge_locked(s: &mut State, uid: &str, change: &OwnChange) {
    let mut r = s.pods.get(uid).map(|r| (**r).clone()).unwrap_or_default();
    for id in &change.removed {
        r.sandboxes.retain(|x| &x.id != id);
        r.containers.retain(|x| &x.id != id);
        s.owners.remove(id);
    }
    for sb in &change.created.sandboxes {
        if !r.sandboxes.iter().any(|x| x.id == sb.id) {
            r.sandboxes.push(sb.clone());
        }
        s.owners.insert(sb.id.clone(), uid.to_string());
    }
    for c in &change.created.containers {
        match r.containers.iter_mut().find(|x| x.id == c.id) {
            Some(x) if rank(c.state) > rank(x.state) => x.state = c.state,
            Some(_) => {}
            None => r.containers.push(c.clone()),
        }
        s.owners.insert(c.id.clone(), uid.to_string());
    }
    r.sort();
    s.pods.insert(uid.to_string(), Arc::new(r));
}

fn apply_locked(s: &mut State, ev: &Event) -> Applied {
    let Some(uid) = s.owners.get(&ev.id).cloned().or_else(|| ev.uid.clone()) else { return Applied::Unknown };
    let Some(record) = s.pods.get(&uid) else { return Applied::Unknown };
    let mut r = (**record).clone();
    if let Some(i) = r.containers.iter().position(|c| c.id == ev.id) {
        let state = match ev.kind {
            EventKind::Created => api::ContainerState::ContainerCreated,
            EventKind::Started => api::ContainerState::ContainerRunning,
            EventKind::Stopped => api::ContainerState::ContainerExited,
            EventKind::Deleted => {
                r.containers.remove(i);
                api::ContainerState::ContainerUnknown
            }
        };
        if ev.kind != EventKind::Deleted {
            if rank(state as i32) <= rank(r.containers[i].state) {
                return Applied::Unchanged;
            }
            r.containers[i].state = state as i32;
        }
    } else if let Some(i) = r.sandboxes.iter().position(|x| x.id == ev.id) {
        match ev.kind {
            EventKind::Created | EventKind::Started => return Applied::Unchanged,
            EventKind::Stopped if !r.sandboxes[i].ready => return Applied::Unchanged,
            EventKind::Stopped => r.sandboxes[i].ready = false,
            EventKind::Deleted => {
                r.sandboxes.remove(i);
            }
        }
    } else {
        return Applied::Unknown;
    }
    if ev.kind == EventKind::Deleted {
        s.owners.remove(&ev.id);
    }
    s.pods.insert(uid.clone(), Arc::new(r));
    Applied::Changed(uid)
}

/// The order container states go through.
fn rank(state: i32) -> u8 {
    match api::ContainerState::try_from(state) {
        Ok(api::ContainerState::ContainerCreated) => 1,
        Ok(api::ContainerState::ContainerRunning) => 2,
        Ok(api::ContainerState::ContainerExited) => 3,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(id: &str, state: i32) -> ContainerRecord {
        ContainerRecord {
            id: id.into(),
            sandbox_id: "s".into(),
            name: "app".into(),
            state,
            created_at: 1,
            annotations: Default::default(),
        }
    }

    fn record(containers: &[(&str, i32)]) -> PodRecord {
        PodRecord {
            sandboxes: vec![SandboxRecord { id: "s".into(), attempt: 0, ready: true, created_at: 1 }],
            containers: containers.iter().map(|(id, st)| container(id, *st)).collect(),
        }
    }

    const RUNNING: i32 = api::ContainerState::ContainerRunning as i32;
    const EXITED: i32 = api::ContainerState::ContainerExited as i32;

    #[test]
    fn changes_and_removals_are_reported_once_per_pod() {
        let arc = |r: PodRecord| Arc::new(r);
        let old = HashMap::from([
            ("a".to_string(), arc(record(&[("c1", RUNNING)]))),
            ("b".to_string(), arc(record(&[("c2", RUNNING)]))),
            ("c".to_string(), arc(record(&[("c3", RUNNING)]))),
        ]);
        let new = HashMap::from([
            ("a".to_string(), arc(record(&[("c1", RUNNING)]))),
            ("b".to_string(), arc(record(&[("c2", EXITED)]))),
            ("d".to_string(), arc(record(&[("c4", RUNNING)]))),
        ]);
        let mut got = changed_pods(&old, &new);
        got.sort();
        assert_eq!(got, vec!["b", "c", "d"]);
    }

    #[tokio::test(start_paused = true)]
    async fn reads_wait_for_the_first_relist() {
        let cache = Cache::new();
        assert!(cache.get("a").is_none());
        assert!(cache.get_fresh("a", Duration::from_secs(1)).await.is_none(), "no relist yet");
        let n = cache.begin_relist();
        cache.finish_relist(n, HashMap::from([("a".to_string(), record(&[("c1", RUNNING)]))]));
        let r = cache.get_fresh("a", Duration::from_secs(1)).await.unwrap();
        assert_eq!(r.containers[0].id, "c1");
        assert_eq!(*cache.get_fresh("unknown", Duration::from_secs(1)).await.unwrap(), PodRecord::default());
    }

    #[tokio::test(start_paused = true)]
    async fn after_an_invalidation_only_a_relist_started_later_is_fresh() {
        let cache = Cache::new();
        let n = cache.begin_relist();
        cache.finish_relist(n, HashMap::new());
        // A relist is under way when the worker acts: its lists may predate the action.
        let in_flight = cache.begin_relist();
        cache.invalidate("a");
        let reader = tokio::spawn({
            let cache = cache.clone();
            async move { cache.get_fresh("a", Duration::from_secs(5)).await }
        });
        tokio::task::yield_now().await;
        cache.finish_relist(in_flight, HashMap::new());
        tokio::task::yield_now().await;
        assert!(!reader.is_finished(), "the in-flight relist does not count");
        // The reader asked for a relist; the PLEG sees the kick.
        tokio::time::timeout(Duration::from_millis(1), cache.kicked()).await.expect("kicked");
        let next = cache.begin_relist();
        cache.finish_relist(next, HashMap::from([("a".to_string(), record(&[("c1", RUNNING)]))]));
        let got = reader.await.unwrap().expect("fresh");
        assert_eq!(got.containers.len(), 1);
        // Other pods were never invalidated: any relist will do.
        assert!(cache.get_fresh("b", Duration::ZERO).await.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_gives_up_after_its_deadline() {
        let cache = Cache::new();
        let n = cache.begin_relist();
        cache.finish_relist(n, HashMap::new());
        cache.invalidate("a");
        let started = tokio::time::Instant::now();
        assert!(cache.get_fresh("a", Duration::from_secs(2)).await.is_none());
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }

    #[test]
    fn an_exit_seen_while_a_relist_lists_is_not_undone_by_its_older_result() {
        let cache = Cache::new();
        let n = cache.begin_relist();
        cache.finish_relist(n, HashMap::from([("a".to_string(), record(&[("c1", RUNNING)]))]));
        let n = cache.begin_relist();
        // The lists ran before the exit; the event comes before they are stored.
        let ev = Event { id: "c1".into(), uid: None, kind: EventKind::Stopped };
        assert_eq!(cache.apply(&ev), Applied::Changed("a".into()));
        let changed = cache.finish_relist(n, HashMap::from([("a".to_string(), record(&[("c1", RUNNING)]))]));
        assert_eq!(cache.get("a").unwrap().containers[0].state, EXITED, "the exit stays");
        assert!(changed.is_empty(), "the worker heard of the exit when it was applied: {changed:?}");
        // The next relist replays nothing: it lists after the exit.
        let n = cache.begin_relist();
        assert!(cache.finish_relist(n, HashMap::from([("a".to_string(), record(&[("c1", EXITED)]))])).is_empty());
    }

    fn own(created: &[(&str, i32)], removed: &[&str]) -> OwnChange {
        OwnChange {
            created: PodRecord {
                sandboxes: vec![],
                containers: created.iter().map(|(id, st)| container(id, *st)).collect(),
            },
            removed: removed.iter().map(|r| r.to_string()).collect(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_workers_own_known_changes_are_fresh_without_a_relist() {
        let cache = Cache::new();
        let n = cache.begin_relist();
        cache.finish_relist(n, HashMap::from([("a".to_string(), record(&[("c1", EXITED), ("c0", EXITED)]))]));
        cache.record_own("a", own(&[("c2", RUNNING)], &["c0"]));
        let got = cache.get_fresh("a", Duration::ZERO).await.expect("fresh at once");
        let ids: Vec<(&str, i32)> = got.containers.iter().map(|c| (c.id.as_str(), c.state)).collect();
        assert_eq!(ids, [("c1", EXITED), ("c2", RUNNING)]);
        // Events now find the new instance: its exit reaches the worker.
        let ev = Event { id: "c2".into(), uid: None, kind: EventKind::Stopped };
        assert_eq!(cache.apply(&ev), Applied::Changed("a".into()));
        assert_eq!(cache.apply(&Event { id: "c0".into(), uid: None, kind: EventKind::Stopped }), Applied::Unknown);
    }

    #[test]
    fn own_changes_made_while_a_relist_lists_survive_its_older_result() {
        let cache = Cache::new();
        let n = cache.begin_relist();
        cache.finish_relist(n, HashMap::from([("a".to_string(), record(&[("c0", EXITED)]))]));
        let n = cache.begin_relist();
        // The lists ran before the worker removed c0 and started c2.
        cache.record_own("a", own(&[("c2", RUNNING)], &["c0"]));
        let changed = cache.finish_relist(n, HashMap::from([("a".to_string(), record(&[("c0", EXITED)]))]));
        let got = cache.get("a").unwrap();
        assert_eq!(got.containers.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["c2"]);
        assert!(changed.is_empty(), "the worker knows its own changes: {changed:?}");
    }

    #[test]
    fn an_own_start_does_not_undo_an_exit_applied_before_it() {
        let cache = Cache::new();
        let n = cache.begin_relist();
        cache.finish_relist(n, HashMap::from([("a".to_string(), record(&[]))]));
        // The container exited before its creator recorded it; a relist listed it exited.
        let n = cache.begin_relist();
        cache.finish_relist(n, HashMap::from([("a".to_string(), record(&[("c2", EXITED)]))]));
        cache.record_own("a", own(&[("c2", RUNNING)], &[]));
        assert_eq!(cache.get("a").unwrap().containers[0].state, EXITED);
    }

    #[test]
    fn events_patch_known_instances_and_leave_unknown_ones_to_the_relist() {
        let cache = Cache::new();
        let n = cache.begin_relist();
        cache.finish_relist(n, HashMap::from([("a".to_string(), record(&[("c1", RUNNING)]))]));
        let ev = |id: &str, kind| Event { id: id.into(), uid: None, kind };
        assert_eq!(cache.apply(&ev("c1", EventKind::Stopped)), Applied::Changed("a".into()));
        assert_eq!(cache.get("a").unwrap().containers[0].state, EXITED);
        assert_eq!(cache.apply(&ev("c1", EventKind::Stopped)), Applied::Unchanged);
        // A late "started" does not take an exited container back.
        assert_eq!(cache.apply(&ev("c1", EventKind::Started)), Applied::Unchanged);
        assert_eq!(cache.get("a").unwrap().containers[0].state, EXITED);
        assert_eq!(cache.apply(&ev("c9", EventKind::Started)), Applied::Unknown);
        assert_eq!(cache.apply(&ev("s", EventKind::Stopped)), Applied::Changed("a".into()));
        assert!(!cache.get("a").unwrap().sandboxes[0].ready);
        assert_eq!(cache.apply(&ev("c1", EventKind::Deleted)), Applied::Changed("a".into()));
        assert!(cache.get("a").unwrap().containers.is_empty());
        assert_eq!(cache.uid_of("c1"), None);
        // A relist that agrees with the patched cache reports nothing new.
        let n = cache.begin_relist();
        let mut agreed = record(&[]);
        agreed.sandboxes[0].ready = false;
        assert!(cache.finish_relist(n, HashMap::from([("a".to_string(), agreed)])).is_empty());
    }
}
