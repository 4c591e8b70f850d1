//! Image garbage collection (upstream images/image_gc_manager.go): when the image filesystem is
//! above `imageGCHighThresholdPercent`, unused images are removed, least recently used first,
//! until it is below `imageGCLowThresholdPercent`; images unused for `imageMaximumGCAge` go
//! anyway. An image is in use while any container (running or not) was made from it; images
//! younger than `imageMinimumGCAge`, pinned images and the sandbox image are never removed.
//! First-seen and last-used times live in memory; the first detection after a start dates
//! every image to "long ago", as upstream.

use crate::clock::DynClock;
use crate::cri::{CriError, DynRuntime, api};
use crate::stats::host::{Fs, statvfs};
use kubelet_config::KubeletConfiguration;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub high_percent: i32,
    pub low_percent: i32,
    pub min_age: Duration,
    /// 0 = off.
    pub max_age: Duration,
}

impl Policy {
    pub fn from_kubelet_config(cfg: &KubeletConfiguration) -> Self {
        Self {
            high_percent: cfg.image_gc_high_threshold_percent,
            low_percent: cfg.image_gc_low_threshold_percent,
            min_age: cfg.image_minimum_gc_age.to_std().unwrap_or_default(),
            max_age: cfg.image_maximum_gc_age.to_std().unwrap_or_default(),
        }
    }
}

/// What GC knows of one image.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageInfo {
    pub id: String,
    pub size: u64,
    pub first_detected: SystemTime,
    pub last_used: Option<SystemTime>,
    pub in_use: bool,
    pub pinned: bool,
}

/// The images to remove to free `bytes` (least recently used first, then oldest detection),
/// skipping images in use, pinned, or detected less than `min_age` ago. Pure.
pub fn select(images: &[ImageInfo], bytes: u64, now: SystemTime, min_age: Duration) -> Vec<String> {
    let mut candidates: Vec<&ImageInfo> = images.iter().filter(|i| !i.in_use && !i.pinned).collect();
    candidates.sort_by_key(|i| (i.last_used, i.first_detected));
    let mut freed = 0u64;
    let mut out = Vec::new();
    for i in candidates {
        if freed >= bytes {
            break;
        }
        if now.duration_since(i.first_detected).unwrap_or_default() < min_age {
            continue;
        }
        freed += i.size;
        out.push(i.id.clone());
    }
    out
}

/// Images unused for longer than `max_age` (never used: since first detected). Pure.
pub fn too_old(images: &[ImageInfo], now: SystemTime, max_age: Duration) -> Vec<String> {
    if max_age.is_zero() {
        return Vec::new();
    }
    images
        .iter()
        .filter(|i| !i.in_use && !i.pinned)
        .filter(|i| now.duration_since(i.last_used.unwrap_or(i.first_detected)).unwrap_or_default() > max_age)
        .map(|i| i.id.clone())
        .collect()
}

/// Bytes to free so that usage drops to `low` percent, when usage is at or above `high`.
pub fn bytes_to_free(fs: Fs, high: i32, low: i32) -> Option<u64> {
    if fs.capacity == 0 {
        return None;
    }
    let usage_percent = 100 - (fs.available.saturating_mul(100) / fs.capacity) as i64;
    if usage_percent < i64::from(high) {
        return None;
    }
    let target_available = fs.capacity / 100 * (100 - low.clamp(0, 100) as u64);
    Some(target_available.saturating_sub(fs.available))
}

#[derive(Debug, Clone, Copy)]
struct Record {
    first_detected: SystemTime,
    last_used: Option<SystemTime>,
}

/// Reads the size and free space of the filesystem at a path (statvfs; replaceable in tests).
pub type FsStat = Arc<dyn Fn(&Path) -> Option<Fs> + Send + Sync>;

/// The image GC handle: cloneable; one task runs [`ImageGc::run`], the eviction manager calls
/// [`ImageGc::delete_unused`].
#[derive(Clone)]
pub struct ImageGc {
    runtime: DynRuntime,
    clock: DynClock,
    policy: Policy,
    /// Image names never removed (the sandbox image).
    keep: Arc<Vec<String>>,
    records: Arc<Mutex<Option<HashMap<String, Record>>>>,
    fs_stat: FsStat,
}

impl ImageGc {
    pub fn new(policy: Policy, runtime: DynRuntime, clock: DynClock, keep: Vec<String>) -> Self {
        Self {
            runtime,
            clock,
            policy,
            keep: Arc::new(keep),
            records: Arc::default(),
            fs_stat: Arc::new(|p: &Path| statvfs(p)),
        }
    }

    /// Replaces statvfs (tests).
    pub fn with_fs_stat(mut self, f: FsStat) -> Self {
        self.fs_stat = f;
        self
    }

    /// Lists images and containers and updates first-seen / last-used.
    async fn detect(&self) -> Result<Vec<ImageInfo>, CriError> {
        let (images, containers) = tokio::try_join!(self.runtime.list_images(), self.runtime.list_containers(None))?;
        let now = self.clock.now();
        let mut used: HashSet<&str> = HashSet::new();
        for c in &containers {
            used.insert(c.image_ref.as_str());
            if let Some(i) = &c.image {
                used.insert(i.image.as_str());
            }
        }
        let is_used = |i: &api::Image| {
            used.contains(i.id.as_str())
                || i.repo_tags.iter().chain(i.repo_digests.iter()).any(|n| used.contains(n.as_str()))
        };
        let keep = |i: &api::Image| i.pinned || i.repo_tags.iter().any(|t| self.keep.iter().any(|k| names_match(k, t)));
        let mut guard = self.records.lock().unwrap_or_else(|p| p.into_inner());
        // The first detection after a start cannot know when images came: "long ago".
        let first = guard.is_none();
        let records = guard.get_or_insert_with(HashMap::new);
        records.retain(|id, _| images.iter().any(|i| &i.id == id));
        let mut out = Vec::new();
        for i in &images {
            let r = records.entry(i.id.clone()).or_insert(Record {
                first_detected: if first { SystemTime::UNIX_EPOCH } else { now },
                last_used: None,
            });
            let in_use = is_used(i);
            tracing::debug!(image = %i.id, tags = ?i.repo_tags, in_use, pinned = keep(i), "image GC: image");
            if in_use {
                r.last_used = Some(now);
            }
            out.push(ImageInfo {
                id: i.id.clone(),
                size: i.size,
                first_detected: r.first_detected,
                last_used: r.last_used,
                in_use,
                pinned: keep(i),
            });
        }
        Ok(out)
    }

    async fn remove(&self, ids: &[String], why: &str) -> u64 {
        let mut freed = 0;
        for id in ids {
            match self.runtime.remove_image(id).await {
                Ok(()) => {
                    tracing::info!(image = %id, why, "image GC removed image");
                    if let Some(r) = self.records.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
                        r.remove(id);
                    }
                    freed += 1;
                }
                Err(e) => tracing::warn!(image = %id, error = %e, "image GC: cannot remove image"),
            }
        }
        freed
    }

    /// The image filesystem's size and free space (ImageFsInfo's mountpoint, statvfs).
    async fn image_fs(&self) -> Option<Fs> {
        let info = self.runtime.image_fs_info().await.map_err(|e| tracing::debug!(error = %e, "image fs info")).ok()?;
        let mount = info.image_filesystems.first()?.fs_id.as_ref()?.mountpoint.clone();
        (self.fs_stat)(Path::new(&mount))
    }

    /// One periodic collection: old images beyond the maximum age, then down to the low
    /// threshold when above the high one. Returns how many images were removed.
    pub async fn collect(&self) -> Result<usize, CriError> {
        let images = self.detect().await?;
        let now = self.clock.now();
        let mut removed =
            self.remove(&too_old(&images, now, self.policy.max_age), "unused for imageMaximumGCAge").await;
        if let Some(fs) = self.image_fs().await
            && let Some(bytes) = bytes_to_free(fs, self.policy.high_percent, self.policy.low_percent)
        {
            let images = self.detect().await?;
            let ids = select(&images, bytes, now, self.policy.min_age);
            tracing::info!(
                bytes_to_free = bytes,
                candidates = ids.len(),
                high = self.policy.high_percent,
                "image filesystem above imageGCHighThresholdPercent"
            );
            removed += self.remove(&ids, "image filesystem above imageGCHighThresholdPercent").await;
        }
        Ok(removed as usize)
    }

    /// Removes every unused image past the minimum age (node-level reclaim under disk pressure).
    pub async fn delete_unused(&self) -> Result<usize, CriError> {
        let images = self.detect().await?;
        let ids = select(&images, u64::MAX, self.clock.now(), self.policy.min_age);
        Ok(self.remove(&ids, "disk pressure").await as usize)
    }

    /// Collects every `period` (the first time right away, as upstream).
    /// Until `token` is cancelled (a collection in flight completes).
    pub async fn run(self, period: Duration, token: tokio_util::sync::CancellationToken) {
        loop {
            if let Err(e) = self.collect().await {
                tracing::warn!(error = %e, "image GC failed");
            }
            if token.run_until_cancelled(tokio::time::sleep(period)).await.is_none() {
                return;
            }
        }
    }
}

/// Whether a configured name (`registry/pause:3.10`, maybe without tag or registry) names the
/// tag `t`.
fn names_match(configured: &str, t: &str) -> bool {
    let normalize = |s: &str| {
        let s = s.strip_prefix("docker.io/").unwrap_or(s);
        let s = s.strip_prefix("library/").unwrap_or(s);
        if crate::images::split_reference(s).1 == crate::images::Tag::None {
            format!("{s}:latest")
        } else {
            s.to_string()
        }
    };
    normalize(configured) == normalize(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;
    use crate::cri::Runtime;
    use crate::cri::fake::FakeRuntime;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
    }

    fn img(id: &str, size: u64, first: u64, last: Option<u64>) -> ImageInfo {
        ImageInfo {
            id: id.into(),
            size,
            first_detected: t(first),
            last_used: last.map(t),
            in_use: false,
            pinned: false,
        }
    }

    #[test]
    fn least_recently_used_unused_images_go_first_until_enough_is_freed() {
        let mut images = vec![
            img("recent", 100, 0, Some(500)),
            img("never-used", 100, 0, None),
            img("old", 100, 0, Some(100)),
            img("in-use", 1000, 0, Some(900)),
            img("young", 1000, 950, None),
            img("pinned", 1000, 0, None),
        ];
        images[3].in_use = true;
        images[5].pinned = true;
        // Never used sorts before used; then by last use.
        assert_eq!(select(&images, 150, t(1000), Duration::from_secs(120)), ["never-used", "old"]);
        assert_eq!(select(&images, u64::MAX, t(1000), Duration::from_secs(120)), ["never-used", "old", "recent"]);
        // With no minimum age, the young image may go too.
        assert_eq!(select(&images, u64::MAX, t(1000), Duration::ZERO).len(), 4);
        assert!(select(&images, 0, t(1000), Duration::ZERO).is_empty());
    }

    #[test]
    fn thresholds_and_maximum_age() {
        let fs = |avail| Fs { capacity: 1000, available: avail, used: 1000 - avail, inodes: 0, inodes_free: 0 };
        assert_eq!(bytes_to_free(fs(200), 85, 80), None, "80% used is below 85%");
        assert_eq!(bytes_to_free(fs(100), 85, 80), Some(100), "90% used: free down to 80%");
        assert_eq!(bytes_to_free(fs(150), 85, 80), Some(50));
        let images = vec![img("stale", 1, 0, Some(0)), img("fresh", 1, 0, Some(900)), img("unused", 1, 100, None)];
        assert_eq!(too_old(&images, t(1000), Duration::from_secs(500)), ["stale", "unused"]);
        assert!(too_old(&images, t(1000), Duration::ZERO).is_empty());
    }

    #[test]
    fn the_sandbox_image_is_matched_with_or_without_registry_defaults() {
        assert!(names_match("127.0.0.1:5000/pause:3.10", "127.0.0.1:5000/pause:3.10"));
        assert!(names_match("pause", "docker.io/library/pause:latest"));
        assert!(!names_match("127.0.0.1:5000/pause:3.10", "127.0.0.1:5000/busybox:1.36"));
    }

    #[tokio::test]
    async fn collection_keeps_images_in_use_and_the_sandbox_image() {
        let rt = FakeRuntime::new();
        for i in ["in-use:1", "unused:1", "pause:3.10"] {
            rt.add_image(i);
        }
        let dyn_rt: DynRuntime = Arc::new(rt.clone());
        // A container (exited or not, it counts) made from in-use:1.
        let sb = rt.run_pod_sandbox(api::PodSandboxConfig::default()).await.unwrap();
        let cfg = api::ContainerConfig {
            image: Some(api::ImageSpec { image: "sha256:in-use:1".into(), ..Default::default() }),
            metadata: Some(api::ContainerMetadata { name: "c".into(), attempt: 0 }),
            ..Default::default()
        };
        rt.create_container(&sb, cfg, api::PodSandboxConfig::default()).await.unwrap();
        let clock = FakeClock::new(t(0));
        let full: FsStat =
            Arc::new(|_: &Path| Some(Fs { capacity: 100, available: 5, used: 95, inodes: 0, inodes_free: 0 }));
        let policy =
            Policy { high_percent: 85, low_percent: 80, min_age: Duration::from_secs(120), max_age: Duration::ZERO };
        let gc = ImageGc::new(policy, dyn_rt, Arc::new(clock.clone()), vec!["pause:3.10".into()]).with_fs_stat(full);
        assert_eq!(gc.collect().await.unwrap(), 1);
        let mut left: Vec<String> = rt.list_images().await.unwrap().into_iter().flat_map(|i| i.repo_tags).collect();
        left.sort();
        assert_eq!(left, ["in-use:1", "pause:3.10"]);
        // An image that appears later is too young until imageMinimumGCAge has passed.
        rt.add_image("new:1");
        assert_eq!(gc.delete_unused().await.unwrap(), 0);
        clock.advance(Duration::from_secs(121));
        assert_eq!(gc.delete_unused().await.unwrap(), 1);
    }
}
