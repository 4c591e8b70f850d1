//! Images: reference parsing, pull policy, pulls with per-pod backoff and a bounded number of
//! parallel pulls. A pod whose image is already present never waits behind another pod's pull
//! (upstream's serial puller makes it wait: k/k #109673). Pulls start within
//! `registryPullQPS`/`registryBurst`, and concurrent pulls of one image (with the same
//! credentials) are one CRI PullImage whose result every waiter gets.

use crate::api::rate::TokenBucket;
use crate::backoff::Keyed;
use crate::clock::DynClock;
use crate::cri::api;
use crate::cri::{CriError, DynRuntime};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{Semaphore, watch};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tag<'a> {
    None,
    Tag(&'a str),
    Digest(&'a str),
}

/// Splits `name[:tag][@digest]` without validating it.
pub fn split_reference(image: &str) -> (&str, Tag<'_>) {
    if let Some((name, digest)) = image.split_once('@') {
        return (name, Tag::Digest(digest));
    }
    // A ':' after the last '/' is a tag; before it, it is a registry port.
    let last_slash = image.rfind('/').map(|i| i + 1).unwrap_or(0);
    match image[last_slash..].rfind(':') {
        Some(i) => (&image[..last_slash + i], Tag::Tag(&image[last_slash + i + 1..])),
        None => (image, Tag::None),
    }
}

/// An image reference that does not parse (the reference as given).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("couldn't parse image name {0:?}: invalid reference format")]
pub struct InvalidReference(pub String);

/// Checks a reference against the distribution reference grammar (simplified but strict on the
/// parts that matter: lower-case path components, tag and digest characters).
pub fn validate_reference(image: &str) -> Result<(), InvalidReference> {
    let invalid = || Err(InvalidReference(image.to_string()));
    let (name, tag) = split_reference(image);
    if name.is_empty() {
        return invalid();
    }
    let mut parts = name.split('/').collect::<Vec<_>>();
    // A first component with '.', ':' or "localhost" is a registry host (may have a port).
    if parts.len() > 1 && (parts[0].contains(['.', ':']) || parts[0] == "localhost") {
        let host = parts.remove(0);
        let ok = host
            .split(':')
            .next()
            .is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'))
            && host.split(':').nth(1).is_none_or(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
        if !ok {
            return invalid();
        }
    }
    let component_ok = |p: &&str| {
        !p.is_empty()
            && p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
            && p.starts_with(|c: char| c.is_ascii_alphanumeric())
            && p.ends_with(|c: char| c.is_ascii_alphanumeric())
    };
    if parts.is_empty() || !parts.iter().all(component_ok) {
        return invalid();
    }
    match tag {
        Tag::Tag(t)
            if t.is_empty()
                || t.len() > 128
                || !t.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
                || t.starts_with(['.', '-']) =>
        {
            invalid()
        }
        Tag::Digest(d) if !d.split_once(':').is_some_and(|(a, h)| !a.is_empty() && h.len() >= 32) => invalid(),
        _ => Ok(()),
    }
}

/// Why a container's image is not ready, with upstream's waiting reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageError {
    pub reason: &'static str,
    pub message: String,
}

/// A present image and whether this call pulled it (and how long that took).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ensured {
    pub image_ref: String,
    pub pulled: Option<std::time::Duration>,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// `serializeImagePulls` / `maxParallelImagePulls` folded into one bound (None = unbounded).
    pub max_parallel_pulls: Option<usize>,
}

/// The image manager's handle: cloneable, shared by all pod workers.
#[derive(Clone)]
pub struct Images {
    runtime: DynRuntime,
    clock: DynClock,
    pulls: Option<Arc<Semaphore>>,
    backoff: Arc<Mutex<Keyed>>,
    queue: Arc<Mutex<PullQueue>>,
    /// `registryPullQPS` / `registryBurst` (unlimited unless set).
    registry: Arc<TokenBucket>,
    /// Pulls in flight by image and credentials: later callers wait for the same result.
    inflight: Arc<Mutex<HashMap<String, watch::Receiver<Option<PullResult>>>>>,
}

type PullResult = Result<String, CriError>;

/// Pulls waiting for a slot and pulls in progress, for "queued behind" messages.
#[derive(Default)]
struct PullQueue {
    next: u64,
    waiting: Vec<(u64, String)>,
    active: Vec<String>,
}

/// Reports a pod's place in the pull queue while it waits ("image pull queued behind …").
pub type QueueObserver<'a> = &'a (dyn Fn(String) + Send + Sync);

impl Images {
    pub fn new(cfg: Config, runtime: DynRuntime, clock: DynClock) -> Self {
        Self {
            runtime,
            clock,
            pulls: cfg.max_parallel_pulls.map(|n| Arc::new(Semaphore::new(n.max(1)))),
            backoff: Arc::new(Mutex::new(Keyed::image_pull())),
            queue: Arc::default(),
            registry: Arc::new(TokenBucket::new(0.0, 1)),
            inflight: Arc::default(),
        }
    }

    /// Limits the rate pulls start at (`registryPullQPS`, `registryBurst`; qps 0 = unlimited).
    pub fn with_registry_limit(mut self, qps: f64, burst: u32) -> Self {
        self.registry = Arc::new(TokenBucket::new(qps, burst));
        self
    }

    /// Makes sure `image` is present per `policy`, returning the image reference to run.
    pub async fn ensure(
        &self,
        pod_uid: &str,
        image: &str,
        policy: &str,
        sandbox: &api::PodSandboxConfig,
    ) -> Result<String, ImageError> {
        self.ensure_reporting(pod_uid, image, policy, sandbox, &[], &|_| {}).await.map(|e| e.image_ref)
    }

    /// As [`Images::ensure`], also telling whether (and how long) it pulled.
    pub async fn ensure_reporting(
        &self,
        pod_uid: &str,
        image: &str,
        policy: &str,
        sandbox: &api::PodSandboxConfig,
        credentials: &[api::AuthConfig],
        on_queued: QueueObserver<'_>,
    ) -> Result<Ensured, ImageError> {
        if let Err(msg) = validate_reference(image) {
            return Err(ImageError {
                reason: "InvalidImageName",
                message: format!("Failed to apply default image tag {image:?}: {msg}"),
            });
        }
        let present = match self.runtime.image_status(image).await {
            Ok(i) => i,
            Err(e) => {
                return Err(ImageError {
                    reason: "ErrImageInspect",
                    message: format!("Failed to inspect image {image:?}: {e}"),
                });
            }
        };
        match (policy, present) {
            ("Never", Some(img)) | ("IfNotPresent", Some(img)) => {
                return Ok(Ensured { image_ref: img.id, pulled: None });
            }
            ("Never", None) => {
                return Err(ImageError {
                    reason: "ErrImageNeverPull",
                    message: format!("Container image {image:?} is not present with pull policy of Never"),
                });
            }
            _ => {}
        }
        let key = format!("{pod_uid}_{image}");
        let now = self.clock.now();
        {
            let b = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
            if b.in_backoff_since_last(&key, now).is_some() {
                return Err(ImageError {
                    reason: "ImagePullBackOff",
                    message: format!("Back-off pulling image {image:?}"),
                });
            }
        }
        let started = std::time::Instant::now();
        let result = self.pull_once(pod_uid, image, sandbox, credentials, on_queued).await;
        match result {
            Ok(r) => {
                tracing::info!(pod_uid, image, elapsed = ?started.elapsed(), "pulled image");
                Ok(Ensured { image_ref: r, pulled: Some(started.elapsed()) })
            }
            Err(e) => {
                let now = self.clock.now();
                self.backoff.lock().unwrap_or_else(|p| p.into_inner()).next(&key, now, now);
                Err(ImageError {
                    reason: "ErrImagePull",
                    message: format!("Failed to pull image {image:?}: {}", e.message),
                })
            }
        }
    }

    /// One pull of `image` with `credentials`, shared with every concurrent caller asking for
    /// the same: the first one pulls, the others wait for its result. A caller that goes away
    /// mid-pull hands the pull to a waiter.
    async fn pull_once(
        &self,
        pod_uid: &str,
        image: &str,
        sandbox: &api::PodSandboxConfig,
        credentials: &[api::AuthConfig],
        on_queued: QueueObserver<'_>,
    ) -> PullResult {
        let key = format!("{image}\n{credentials:?}");
        loop {
            let running = self.inflight.lock().unwrap_or_else(|p| p.into_inner()).get(&key).cloned();
            let Some(mut rx) = running else { break };
            on_queued(format!("waiting for another pod's pull of {image}"));
            loop {
                if let Some(r) = rx.borrow().clone() {
                    return r;
                }
                if rx.changed().await.is_err() {
                    if let Some(r) = rx.borrow().clone() {
                        return r;
                    }
                    break;
                }
            }
        }
        let (tx, rx) = watch::channel(None);
        self.inflight.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone(), rx);
        let _inflight = InflightGuard { map: self.inflight.clone(), key };
        let result = self.pull_now(pod_uid, image, sandbox, credentials, on_queued).await;
        let _ = tx.send(Some(result.clone()));
        result
    }

    /// Waits for a pull slot and a registry token, then pulls.
    async fn pull_now(
        &self,
        pod_uid: &str,
        image: &str,
        sandbox: &api::PodSandboxConfig,
        credentials: &[api::AuthConfig],
        on_queued: QueueObserver<'_>,
    ) -> PullResult {
        let _permit = match &self.pulls {
            Some(s) => Some(
                self.wait_for_slot(s, image, on_queued)
                    .await
                    .map_err(|e| CriError::new("PullImage", tonic::Code::Unavailable, e.message))?,
            ),
            None => None,
        };
        self.registry.acquire().await;
        self.lock_queue().active.push(image.to_string());
        let _active = ActiveGuard { queue: self.queue.clone(), image: image.to_string() };
        tracing::info!(pod_uid, image, "pulling image");
        // Each matching credential in order (as upstream's keyring); none → anonymous.
        let mut result = Err(CriError::new("PullImage", tonic::Code::Unknown, "no attempt"));
        let attempts: Vec<Option<api::AuthConfig>> =
            if credentials.is_empty() { vec![None] } else { credentials.iter().cloned().map(Some).collect() };
        for auth in attempts {
            result = self.runtime.pull_image_with_auth(image, auth, Some(sandbox.clone())).await;
            if result.is_ok() {
                break;
            }
        }
        result
    }

    fn lock_queue(&self) -> std::sync::MutexGuard<'_, PullQueue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a pull slot, telling `on_queued` where this pull stands (once a second).
    async fn wait_for_slot(
        &self,
        sem: &Arc<Semaphore>,
        image: &str,
        on_queued: QueueObserver<'_>,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, ImageError> {
        if let Ok(p) = sem.clone().try_acquire_owned() {
            return Ok(p);
        }
        let ticket = {
            let mut q = self.lock_queue();
            q.next += 1;
            let t = q.next;
            q.waiting.push((t, image.to_string()));
            t
        };
        let acquire = sem.clone().acquire_owned();
        tokio::pin!(acquire);
        let result = loop {
            let message = {
                let q = self.lock_queue();
                let pos = q.waiting.iter().position(|(t, _)| *t == ticket).unwrap_or(0);
                let ahead = if pos == 0 { q.active.first().cloned() } else { Some(q.waiting[pos - 1].1.clone()) };
                format!(
                    "image pull queued behind {} (position {})",
                    ahead.unwrap_or_else(|| "another pull".into()),
                    pos + 1
                )
            };
            on_queued(message);
            tokio::select! {
                p = &mut acquire => break p,
                _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            }
        };
        self.lock_queue().waiting.retain(|(t, _)| *t != ticket);
        result.map_err(|_| ImageError { reason: "ErrImagePull", message: "image puller stopped".into() })
    }

    /// Whether the last pull of `image` for this pod failed and is still backing off.
    pub fn in_backoff(&self, pod_uid: &str, image: &str) -> bool {
        let now = self.clock.now();
        let b = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
        b.in_backoff_since_last(&format!("{pod_uid}_{image}"), now).is_some()
    }
}

/// Forgets an in-flight pull when its puller is done (or gone).
struct InflightGuard {
    map: Arc<Mutex<HashMap<String, watch::Receiver<Option<PullResult>>>>>,
    key: String,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.key);
    }
}

/// Takes an image off the active list when its pull ends, however it ends.
struct ActiveGuard {
    queue: Arc<Mutex<PullQueue>>,
    image: String,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = q.active.iter().position(|x| *x == self.image) {
            q.active.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;
    use crate::cri::fake::FakeRuntime;
    use std::time::{Duration, SystemTime};

    #[test]
    fn references_split_tags_from_ports() {
        assert_eq!(split_reference("busybox"), ("busybox", Tag::None));
        assert_eq!(split_reference("127.0.0.1:5000/busybox"), ("127.0.0.1:5000/busybox", Tag::None));
        assert_eq!(split_reference("127.0.0.1:5000/busybox:1.36"), ("127.0.0.1:5000/busybox", Tag::Tag("1.36")));
        assert_eq!(split_reference("a/b@sha256:00"), ("a/b", Tag::Digest("sha256:00")));
    }

    #[test]
    fn invalid_references_are_refused() {
        for ok in
            ["busybox", "busybox:1.36", "127.0.0.1:5000/a/b:c", "localhost/x", "docker.io/library/nginx:1.25-alpine"]
        {
            assert!(validate_reference(ok).is_ok(), "{ok}");
        }
        for bad in ["", "BusyBox", "busybox:", "a//b", "busybox:-x", "x@sha256", "has space"] {
            assert!(validate_reference(bad).is_err(), "{bad}");
        }
    }

    fn manager(rt: &FakeRuntime, clock: &FakeClock) -> Images {
        Images::new(Config { max_parallel_pulls: Some(1) }, Arc::new(rt.clone()), Arc::new(clock.clone()))
    }

    #[tokio::test]
    async fn pull_policies_decide_whether_to_pull() {
        let rt = FakeRuntime::new();
        let clock = FakeClock::new(SystemTime::now());
        let im = manager(&rt, &clock);
        let sb = api::PodSandboxConfig::default();
        rt.add_image("present:1");
        assert!(im.ensure("u", "present:1", "IfNotPresent", &sb).await.is_ok());
        assert!(im.ensure("u", "present:1", "Never", &sb).await.is_ok());
        assert!(!rt.calls().contains(&"PullImage".to_string()));
        // Always pulls even when present; a missing registry image fails the pull.
        let err = im.ensure("u", "present:1", "Always", &sb).await.unwrap_err();
        assert_eq!(err.reason, "ErrImagePull");
        let err = im.ensure("u", "absent:1", "Never", &sb).await.unwrap_err();
        assert_eq!(err.reason, "ErrImageNeverPull");
    }

    #[tokio::test]
    async fn failed_pull_backs_off_then_retries() {
        let rt = FakeRuntime::new();
        let clock = FakeClock::new(SystemTime::now());
        let im = manager(&rt, &clock);
        let sb = api::PodSandboxConfig::default();
        assert_eq!(im.ensure("u", "img:1", "IfNotPresent", &sb).await.unwrap_err().reason, "ErrImagePull");
        assert_eq!(im.ensure("u", "img:1", "IfNotPresent", &sb).await.unwrap_err().reason, "ImagePullBackOff");
        // Another pod is not held back by this pod's backoff.
        assert_eq!(im.ensure("v", "img:1", "IfNotPresent", &sb).await.unwrap_err().reason, "ErrImagePull");
        rt.add_registry_image("img:1");
        clock.advance(Duration::from_secs(11));
        assert!(im.ensure("u", "img:1", "IfNotPresent", &sb).await.is_ok());
    }

    #[tokio::test]
    async fn invalid_name_is_reported_without_a_pull() {
        let rt = FakeRuntime::new();
        let im = manager(&rt, &FakeClock::new(SystemTime::now()));
        let err = im.ensure("u", "Bad:Name", "IfNotPresent", &api::PodSandboxConfig::default()).await.unwrap_err();
        assert_eq!(err.reason, "InvalidImageName");
        assert!(rt.calls().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn queued_pulls_report_their_place_and_cached_images_never_wait() {
        let rt = FakeRuntime::new();
        rt.set_pull_delay(Duration::from_secs(10));
        for i in ["slow:1", "slow:2", "slow:3"] {
            rt.add_registry_image(i);
        }
        rt.add_image("cached:1");
        let im = manager(&rt, &FakeClock::new(SystemTime::now()));
        let sb = api::PodSandboxConfig::default();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let record = |s: &Arc<Mutex<Vec<String>>>| {
            let s = s.clone();
            move |m: String| s.lock().unwrap().push(m)
        };
        let (im1, im2, im3) = (im.clone(), im.clone(), im.clone());
        let (sb1, sb2, sb3) = (sb.clone(), sb.clone(), sb.clone());
        let first = tokio::spawn(async move { im1.ensure("a", "slow:1", "IfNotPresent", &sb1).await });
        tokio::task::yield_now().await;
        let obs2 = record(&seen);
        let second =
            tokio::spawn(async move { im2.ensure_reporting("b", "slow:2", "IfNotPresent", &sb2, &[], &obs2).await });
        tokio::task::yield_now().await;
        let third_seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let obs3 = record(&third_seen);
        let third =
            tokio::spawn(async move { im3.ensure_reporting("c", "slow:3", "IfNotPresent", &sb3, &[], &obs3).await });
        tokio::task::yield_now().await;
        // A cached image does not queue behind the pulls.
        let t = tokio::time::Instant::now();
        assert!(im.ensure("d", "cached:1", "IfNotPresent", &sb).await.is_ok());
        assert_eq!(t.elapsed(), Duration::ZERO);
        assert_eq!(
            seen.lock().unwrap().first().map(String::as_str),
            Some("image pull queued behind slow:1 (position 1)")
        );
        assert_eq!(
            third_seen.lock().unwrap().first().map(String::as_str),
            Some("image pull queued behind slow:2 (position 2)")
        );
        assert!(first.await.unwrap().is_ok());
        for h in [second, third] {
            assert!(h.await.unwrap().unwrap().pulled.is_some());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_pulls_of_one_image_are_one_pull_and_share_the_result() {
        let rt = FakeRuntime::new();
        rt.set_pull_delay(Duration::from_secs(5));
        rt.add_registry_image("shared:1");
        let im = Images::new(
            Config { max_parallel_pulls: None },
            Arc::new(rt.clone()),
            Arc::new(FakeClock::new(SystemTime::now())),
        );
        let sb = api::PodSandboxConfig::default();
        let t = tokio::time::Instant::now();
        let pulls = (0..4).map(|i| {
            let (im, sb) = (im.clone(), sb.clone());
            tokio::spawn(async move { im.ensure(&format!("pod{i}"), "shared:1", "Always", &sb).await })
        });
        for r in futures::future::join_all(pulls).await {
            assert_eq!(r.unwrap().unwrap(), "sha256:shared:1");
        }
        assert_eq!(t.elapsed(), Duration::from_secs(5), "everyone waited for the one pull");
        assert_eq!(rt.calls().iter().filter(|c| *c == "PullImage").count(), 1);
        // A failed shared pull fails every waiter (each pod then backs off on its own).
        let pulls = (0..2).map(|i| {
            let (im, sb) = (im.clone(), sb.clone());
            tokio::spawn(async move { im.ensure(&format!("pod{i}"), "missing:1", "IfNotPresent", &sb).await })
        });
        for r in futures::future::join_all(pulls).await {
            assert_eq!(r.unwrap().unwrap_err().reason, "ErrImagePull");
        }
        assert_eq!(rt.calls().iter().filter(|c| *c == "PullImage").count(), 2);
        assert!(im.in_backoff("pod0", "missing:1") && im.in_backoff("pod1", "missing:1"));
    }

    #[tokio::test(start_paused = true)]
    async fn registry_qps_spaces_pull_starts_after_the_burst() {
        let rt = FakeRuntime::new();
        for i in 0..4 {
            rt.add_registry_image(&format!("img:{i}"));
        }
        let im = Images::new(
            Config { max_parallel_pulls: None },
            Arc::new(rt.clone()),
            Arc::new(FakeClock::new(SystemTime::now())),
        )
        .with_registry_limit(2.0, 2);
        let sb = api::PodSandboxConfig::default();
        let t = tokio::time::Instant::now();
        for i in 0..2 {
            im.ensure("p", &format!("img:{i}"), "IfNotPresent", &sb).await.unwrap();
        }
        assert_eq!(t.elapsed(), Duration::ZERO, "the burst is free");
        for i in 2..4 {
            im.ensure("p", &format!("img:{i}"), "IfNotPresent", &sb).await.unwrap();
        }
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(990) && took <= Duration::from_millis(1100),
            "two more at 2 qps: {took:?}"
        );
    }
}
