//! Eviction signals, thresholds and what the node shows for each signal (upstream
//! pkg/kubelet/eviction/helpers.go: ParseThresholdConfig, makeSignalObservations, thresholdsMet).

use crate::stats::types::Summary;
use kubelet_config::KubeletConfiguration;
use kubelet_config::eviction::{self as syntax, ThresholdValue};
use std::collections::BTreeMap;
use std::time::Duration;

/// The signals this kubelet observes. `allocatableMemory.available` and the `containerfs`
/// signals are accepted by the configuration but not observed (one filesystem for images and
/// containers, as containerd has).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    MemoryAvailable,
    NodeFsAvailable,
    NodeFsInodesFree,
    ImageFsAvailable,
    ImageFsInodesFree,
    PidAvailable,
}

/// The node condition a signal drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Condition {
    MemoryPressure,
    DiskPressure,
    PIDPressure,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::MemoryPressure => "MemoryPressure",
            Condition::DiskPressure => "DiskPressure",
            Condition::PIDPressure => "PIDPressure",
        }
    }
}

/// What a signal reclaims: upstream's resource names (`memory`, `ephemeral-storage`,
/// `inodes`, `pids`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Memory,
    EphemeralStorage,
    Inodes,
    Pids,
}

impl Resource {
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Memory => "memory",
            Resource::EphemeralStorage => "ephemeral-storage",
            Resource::Inodes => "inodes",
            Resource::Pids => "pids",
        }
    }

    /// How upstream formats quantities of this resource (binary suffixes for bytes).
    pub fn format(self, n: i64) -> String {
        match self {
            Resource::Memory | Resource::EphemeralStorage => format_binary(n),
            Resource::Inodes | Resource::Pids => format_decimal(n),
        }
    }
}

impl Signal {
    pub fn parse(name: &str) -> Option<Signal> {
        Some(match name {
            "memory.available" => Signal::MemoryAvailable,
            "nodefs.available" => Signal::NodeFsAvailable,
            "nodefs.inodesFree" => Signal::NodeFsInodesFree,
            "imagefs.available" => Signal::ImageFsAvailable,
            "imagefs.inodesFree" => Signal::ImageFsInodesFree,
            "pid.available" => Signal::PidAvailable,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory.available",
            Signal::NodeFsAvailable => "nodefs.available",
            Signal::NodeFsInodesFree => "nodefs.inodesFree",
            Signal::ImageFsAvailable => "imagefs.available",
            Signal::ImageFsInodesFree => "imagefs.inodesFree",
            Signal::PidAvailable => "pid.available",
        }
    }

    pub fn condition(self) -> Condition {
        match self {
            Signal::MemoryAvailable => Condition::MemoryPressure,
            Signal::PidAvailable => Condition::PIDPressure,
            _ => Condition::DiskPressure,
        }
    }

    pub fn resource(self) -> Resource {
        match self {
            Signal::MemoryAvailable => Resource::Memory,
            Signal::NodeFsAvailable | Signal::ImageFsAvailable => Resource::EphemeralStorage,
            Signal::NodeFsInodesFree | Signal::ImageFsInodesFree => Resource::Inodes,
            Signal::PidAvailable => Resource::Pids,
        }
    }

    /// Disk signals first try node-level reclaim (dead containers, unused images).
    pub fn is_disk(self) -> bool {
        self.condition() == Condition::DiskPressure
    }
}

/// A threshold value: bytes (or inodes, pids), or a fraction of capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Quantity(i64),
    Percentage(f64),
}

impl Value {
    /// The quantity this value stands for on a resource of `capacity`.
    pub fn quantity(self, capacity: i64) -> i64 {
        match self {
            Value::Quantity(q) => q,
            Value::Percentage(p) => (capacity as f64 * p) as i64,
        }
    }

    fn from_syntax(v: ThresholdValue) -> Value {
        match v {
            ThresholdValue::Quantity(q) => Value::Quantity(q.value().clamp(0, i64::MAX as i128) as i64),
            ThresholdValue::Percentage(p) => Value::Percentage(f64::from(p)),
        }
    }
}

/// One threshold: `signal < value`, hard when `grace_period` is zero.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub signal: Signal,
    pub value: Value,
    pub grace_period: Duration,
    pub min_reclaim: Option<Value>,
}

impl Threshold {
    pub fn is_hard(&self) -> bool {
        self.grace_period.is_zero()
    }

    /// Identity for "first observed at" bookkeeping (soft and hard of one signal differ).
    pub fn key(&self) -> (Signal, bool) {
        (self.signal, self.is_hard())
    }
}

/// A bad eviction setting: `field` names it with its signal (`evictionHard[memory.available]`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// Every bad eviction setting at once, joined by "; ".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct ConfigError(pub Vec<FieldError>);

/// Parses evictionHard (merged with the defaults as the config says), evictionSoft with
/// evictionSoftGracePeriod, and evictionMinimumReclaim. Unobserved signals are skipped with a
/// warning; every error is reported at once.
pub fn from_config(cfg: &KubeletConfiguration) -> Result<Vec<Threshold>, ConfigError> {
    let mut errors = Vec::new();
    let mut out = Vec::new();
    let bad = |field: String, message: String| FieldError { field, message };
    let parse_map = |field: &str, map: &BTreeMap<String, String>, errors: &mut Vec<FieldError>| {
        let mut v = Vec::new();
        for (signal, value) in map {
            match syntax::parse_threshold(signal, value) {
                Ok(Some(t)) => match Signal::parse(signal) {
                    Some(s) => v.push((s, Value::from_syntax(t))),
                    None => tracing::warn!(field, signal, "eviction signal is not observed by this kubelet; ignored"),
                },
                Ok(None) => {}
                Err(e) => errors.push(bad(format!("{field}[{signal}]"), e.to_string())),
            }
        }
        v
    };
    for (signal, value) in parse_map("evictionHard", &cfg.effective_eviction_hard(), &mut errors) {
        out.push(Threshold { signal, value, grace_period: Duration::ZERO, min_reclaim: None });
    }
    for (signal, value) in parse_map("evictionSoft", &cfg.eviction_soft, &mut errors) {
        let grace = cfg.eviction_soft_grace_period.get(signal.as_str());
        match grace.map(|g| syntax::parse_grace_period(signal.as_str(), g)) {
            Some(Ok(d)) => {
                let grace_period = d.to_std().unwrap_or_default().max(Duration::from_nanos(1));
                out.push(Threshold { signal, value, grace_period, min_reclaim: None });
            }
            Some(Err(e)) => errors.push(bad(format!("evictionSoftGracePeriod[{}]", signal.as_str()), e.to_string())),
            None => errors.push(bad(
                format!("evictionSoft[{}]", signal.as_str()),
                "grace period must be specified for the soft eviction threshold".into(),
            )),
        }
    }
    for (signal, value) in &cfg.eviction_minimum_reclaim {
        match (syntax::parse_minimum_reclaim(signal, value), Signal::parse(signal)) {
            (Ok(v), Some(s)) => {
                for t in out.iter_mut().filter(|t| t.signal == s) {
                    t.min_reclaim = Some(Value::from_syntax(v.clone()));
                }
            }
            (Ok(_), None) => {}
            (Err(e), _) => errors.push(bad(format!("evictionMinimumReclaim[{signal}]"), e.to_string())),
        }
    }
    if errors.is_empty() { Ok(out) } else { Err(ConfigError(errors)) }
}

/// What the node has of one signal's resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    pub available: i64,
    pub capacity: i64,
}

pub type Observations = BTreeMap<Signal, Observation>;

fn obs(available: Option<u64>, capacity: Option<u64>) -> Option<Observation> {
    Some(Observation { available: available? as i64, capacity: capacity? as i64 })
}

/// The signals as upstream derives them from the Summary: memory.available = capacity −
/// working set of the root cgroup; filesystems from the node and image filesystems;
/// pid.available = max pids − processes.
pub fn observe(summary: &Summary) -> Observations {
    let mut out = Observations::new();
    let node = &summary.node;
    if let Some(m) = &node.memory
        && let (Some(avail), Some(ws)) = (m.available_bytes, m.working_set_bytes)
    {
        out.insert(Signal::MemoryAvailable, Observation { available: avail as i64, capacity: (avail + ws) as i64 });
    }
    if let Some(fs) = &node.fs {
        out.extend(obs(fs.available_bytes, fs.capacity_bytes).map(|o| (Signal::NodeFsAvailable, o)));
        out.extend(obs(fs.inodes_free, fs.inodes).map(|o| (Signal::NodeFsInodesFree, o)));
    }
    if let Some(fs) = node.runtime.as_ref().and_then(|r| r.image_fs.as_ref()) {
        out.extend(obs(fs.available_bytes, fs.capacity_bytes).map(|o| (Signal::ImageFsAvailable, o)));
        out.extend(obs(fs.inodes_free, fs.inodes).map(|o| (Signal::ImageFsInodesFree, o)));
    }
    if let Some(r) = &node.rlimit
        && let (Some(max), Some(cur)) = (r.maxpid, r.curproc)
    {
        out.insert(Signal::PidAvailable, Observation { available: max - cur, capacity: max });
    }
    out
}

/// The thresholds whose signal is below the threshold; with `enforce_min_reclaim`, below
/// threshold + minimum reclaim (a met threshold stays met until that much is back).
pub fn met(thresholds: &[Threshold], observations: &Observations, enforce_min_reclaim: bool) -> Vec<Threshold> {
    thresholds
        .iter()
        .filter(|t| {
            let Some(o) = observations.get(&t.signal) else { return false };
            let mut q = t.value.quantity(o.capacity);
            if enforce_min_reclaim && let Some(r) = t.min_reclaim {
                q += r.quantity(o.capacity);
            }
            q > o.available
        })
        .cloned()
        .collect()
}

const BINARY: [(&str, u32); 6] = [("Ei", 60), ("Pi", 50), ("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)];

/// `n` as Kubernetes formats a BinarySI quantity: the largest binary suffix that divides it.
pub fn format_binary(n: i64) -> String {
    if n != 0 {
        for (suffix, shift) in BINARY {
            let unit = 1i64 << shift;
            if n % unit == 0 {
                return format!("{}{suffix}", n / unit);
            }
        }
    }
    n.to_string()
}

/// `n` as a DecimalSI quantity (`k`, `M`, `G`, …).
pub fn format_decimal(n: i64) -> String {
    if n != 0 {
        for (suffix, unit) in [
            ("E", 1e18 as i64),
            ("P", 1e15 as i64),
            ("T", 1e12 as i64),
            ("G", 1e9 as i64),
            ("M", 1e6 as i64),
            ("k", 1000),
        ] {
            if n % unit == 0 {
                return format!("{}{suffix}", n / unit);
            }
        }
    }
    n.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::types::*;

    fn cfg(yaml: &str) -> KubeletConfiguration {
        let mut c = KubeletConfiguration::default();
        let v: serde_json::Value = serde_yaml::from_str(yaml).unwrap();
        for (k, val) in v.as_object().unwrap() {
            let map: BTreeMap<String, String> = serde_json::from_value(val.clone()).unwrap();
            match k.as_str() {
                "evictionHard" => c.eviction_hard = map,
                "evictionSoft" => c.eviction_soft = map,
                "evictionSoftGracePeriod" => c.eviction_soft_grace_period = map,
                "evictionMinimumReclaim" => c.eviction_minimum_reclaim = map,
                _ => panic!("{k}"),
            }
        }
        c
    }

    #[test]
    fn defaults_are_upstreams_hard_thresholds() {
        let t = from_config(&KubeletConfiguration::default()).unwrap();
        let got: Vec<(Signal, Value)> = t.iter().map(|t| (t.signal, t.value)).collect();
        assert!(got.contains(&(Signal::MemoryAvailable, Value::Quantity(100 << 20))));
        assert!(got.contains(&(Signal::NodeFsAvailable, Value::Percentage(0.1f32 as f64))));
        assert!(got.contains(&(Signal::NodeFsInodesFree, Value::Percentage(0.05f32 as f64))));
        assert!(got.contains(&(Signal::ImageFsAvailable, Value::Percentage(0.15f32 as f64))));
        assert!(t.iter().all(Threshold::is_hard));
    }

    #[test]
    fn quantities_percentages_soft_and_min_reclaim_parse() {
        let c =
            cfg("{evictionHard: {memory.available: 1Gi, pid.available: 10%}, evictionSoft: {nodefs.available: 20%}, \
             evictionSoftGracePeriod: {nodefs.available: 1m30s}, evictionMinimumReclaim: {memory.available: 500Mi}}");
        let t = from_config(&c).unwrap();
        let mem = t.iter().find(|t| t.signal == Signal::MemoryAvailable).unwrap();
        assert_eq!(mem.value, Value::Quantity(1 << 30));
        assert_eq!(mem.min_reclaim, Some(Value::Quantity(500 << 20)));
        let soft = t.iter().find(|t| t.signal == Signal::NodeFsAvailable).unwrap();
        assert_eq!(soft.grace_period, Duration::from_secs(90));
        assert!(!soft.is_hard());
        assert_eq!(Value::Percentage(0.1).quantity(1000), 100);
        // Only the given hard thresholds: a partial evictionHard drops the other defaults.
        assert_eq!(t.iter().filter(|t| t.is_hard()).count(), 2);
    }

    #[test]
    fn a_soft_threshold_without_grace_period_and_bad_values_are_errors() {
        let c = cfg("{evictionSoft: {memory.available: 1Gi}, evictionHard: {memory.available: lots}}");
        let e = from_config(&c).unwrap_err().to_string();
        assert!(e.contains("evictionHard[memory.available]: must be a percentage or a quantity"), "{e}");
        assert!(e.contains("grace period must be specified"), "{e}");
    }

    #[test]
    fn signals_come_from_the_summary_as_upstream() {
        let summary = Summary {
            node: NodeStats {
                memory: Some(MemoryStats {
                    available_bytes: Some(300),
                    working_set_bytes: Some(700),
                    ..Default::default()
                }),
                fs: Some(FsStats {
                    available_bytes: Some(10),
                    capacity_bytes: Some(100),
                    inodes_free: Some(5),
                    inodes: Some(50),
                    ..Default::default()
                }),
                rlimit: Some(RlimitStats { time: None, maxpid: Some(1000), curproc: Some(400) }),
                ..Default::default()
            },
            pods: vec![],
        };
        let o = observe(&summary);
        assert_eq!(o[&Signal::MemoryAvailable], Observation { available: 300, capacity: 1000 });
        assert_eq!(o[&Signal::NodeFsAvailable], Observation { available: 10, capacity: 100 });
        assert_eq!(o[&Signal::NodeFsInodesFree], Observation { available: 5, capacity: 50 });
        assert_eq!(o[&Signal::PidAvailable], Observation { available: 600, capacity: 1000 });
        assert!(!o.contains_key(&Signal::ImageFsAvailable));
    }

    #[test]
    fn met_compares_below_threshold_and_min_reclaim_raises_the_bar() {
        let t = Threshold {
            signal: Signal::MemoryAvailable,
            value: Value::Quantity(100),
            grace_period: Duration::ZERO,
            min_reclaim: Some(Value::Percentage(0.1)),
        };
        let at =
            |avail| Observations::from([(Signal::MemoryAvailable, Observation { available: avail, capacity: 1000 })]);
        assert_eq!(met(std::slice::from_ref(&t), &at(99), false).len(), 1);
        assert!(met(std::slice::from_ref(&t), &at(100), false).is_empty());
        assert_eq!(met(std::slice::from_ref(&t), &at(150), true).len(), 1, "100 + 10% of 1000 = 200");
        assert!(met(std::slice::from_ref(&t), &at(200), true).is_empty());
        assert!(met(&[t], &Observations::new(), false).is_empty(), "no observation, nothing met");
    }

    #[test]
    fn quantities_format_as_kubernetes_does() {
        assert_eq!(format_binary(100 << 20), "100Mi");
        assert_eq!(format_binary(1536), "1536");
        assert_eq!(format_binary(3 << 10), "3Ki");
        assert_eq!(format_binary(123), "123");
        assert_eq!(format_binary(0), "0");
        assert_eq!(format_decimal(5000), "5k");
        assert_eq!(format_decimal(1234), "1234");
    }
}
