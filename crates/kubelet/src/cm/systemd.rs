//! The systemd cgroup driver's pure part: cgroup names as systemd slices (upstream
//! `CgroupName.ToSystemd`, libcontainer's `ExpandSlice`), the unit properties libcontainer's
//! systemd managers send for a cgroup's resources (`genV1ResourcesProperties` /
//! `genV2ResourcesProperties`, `addCpuQuota`), and the [`Systemd`] trait: the three calls of
//! systemd's D-Bus API the kubelet makes, with a recording fake for tests. The D-Bus client
//! itself is `systemd_bus.rs`.

use super::CgroupName;
use super::resources::{self, CgroupConfig};
use std::fmt::Debug;
use std::sync::Mutex;

const SLICE: &str = ".slice";

/// `-` inside a name part would read as a slice level, so it becomes `_` (upstream
/// `escapeSystemdCgroupName`).
pub fn escape(part: &str) -> String {
    part.replace('-', "_")
}

/// The reverse of [`escape`] (upstream `unescapeSystemdCgroupName`).
pub fn unescape(part: &str) -> String {
    part.replace('_', "-")
}

/// The slice unit of a cgroup name: its escaped parts joined by `-`, plus `.slice`
/// (`[kubepods, burstable, pod1-2]` → `kubepods-burstable-pod1_2.slice`); the root is `-.slice`.
pub fn slice_name(name: &CgroupName) -> String {
    let parts: Vec<String> = name.0.iter().filter(|p| !p.is_empty()).map(|p| escape(p)).collect();
    if parts.is_empty() {
        return format!("-{SLICE}");
    }
    format!("{}{SLICE}", parts.join("-"))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid slice name: {0}")]
pub struct InvalidSlice(pub String);

/// The cgroup path of a slice unit (libcontainer `ExpandSlice`): every prefix is a parent slice,
/// `a-b-c.slice` → `/a.slice/a-b.slice/a-b-c.slice`; `-.slice` is `/`.
pub fn expand_slice(slice: &str) -> Result<String, InvalidSlice> {
    let invalid = || InvalidSlice(slice.to_string());
    let stem = slice.strip_suffix(SLICE).ok_or_else(invalid)?;
    if slice.contains('/') {
        return Err(invalid());
    }
    if stem == "-" {
        return Ok("/".into());
    }
    let mut path = String::new();
    let mut prefix = String::new();
    for component in stem.split('-') {
        // `a--b.slice`, `-a.slice` and `.slice` are refused, as systemd does.
        if component.is_empty() {
            return Err(invalid());
        }
        path.push('/');
        path.push_str(&prefix);
        path.push_str(component);
        path.push_str(SLICE);
        prefix.push_str(component);
        prefix.push('-');
    }
    Ok(path)
}

/// The cgroup path of a cgroup name under the systemd driver (upstream `CgroupName.ToSystemd`):
/// `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1_2.slice`.
pub fn to_systemd(name: &CgroupName) -> String {
    // The parts are escaped and never empty, so the slice is always valid.
    expand_slice(&slice_name(name)).unwrap_or_else(|_| "/".into())
}

/// The parent slice a slice unit is wanted by (the kubelet's `libctCgroupConfig`: the directory
/// part of the systemd path, `-.slice` at the top).
pub fn parent_slice(name: &CgroupName) -> String {
    let path = to_systemd(name);
    let dir = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    match dir.rsplit('/').next() {
        Some(d) if !d.is_empty() => d.to_string(),
        _ => format!("-{SLICE}"),
    }
}

/// The pod UID of a pod slice's directory name in the tier `tier` (`kubepods-burstable-pod1_2.slice`
/// in `[kubepods, burstable]` → `1-2`), the reverse of the naming above.
pub fn pod_uid_of_slice(tier: &CgroupName, dir_name: &str) -> Option<String> {
    let tier_slice = slice_name(tier);
    let tier_stem = tier_slice.strip_suffix(SLICE)?;
    let rest = dir_name.strip_suffix(SLICE)?;
    let escaped = if tier_stem == "-" {
        rest.strip_prefix("pod")?
    } else {
        rest.strip_prefix(tier_stem)?.strip_prefix("-pod")?
    };
    (!escaped.is_empty() && !escaped.contains('-')).then(|| unescape(escaped))
}

/// A unit property's value, as D-Bus types: `t`, `b`, `s`, `as`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    U64(u64),
    Bool(bool),
    Str(String),
    Strs(Vec<String>),
}

/// One `(sv)` of a unit's property array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property {
    pub name: &'static str,
    pub value: Value,
}

fn prop(name: &'static str, value: Value) -> Property {
    Property { name, value }
}

/// systemd's USEC_INFINITY / "no limit" for `t` properties (Go's `uint64(-1)`).
pub const INFINITY: u64 = u64::MAX;

/// systemd understands CPUQuotaPeriodUSec since v242 (libcontainer `addCpuQuota`).
const QUOTA_PERIOD_SINCE: u32 = 242;

/// The properties of a new slice besides its resources (libcontainer's `Apply` for a `.slice`
/// unit): a description, `Wants=` its parent slice, accounting on, no default dependencies.
pub fn unit_properties(name: &CgroupName, v2: bool) -> Vec<Property> {
    let unit = slice_name(name);
    vec![
        prop("Description", Value::Str(format!("libcontainer container {unit}"))),
        prop("Wants", Value::Strs(vec![parent_slice(name)])),
        prop("MemoryAccounting", Value::Bool(true)),
        prop("CPUAccounting", Value::Bool(true)),
        prop(if v2 { "IOAccounting" } else { "BlockIOAccounting" }, Value::Bool(true)),
        prop("TasksAccounting", Value::Bool(true)),
        prop("DefaultDependencies", Value::Bool(false)),
    ]
}

/// A cgroup's resources as unit properties (libcontainer `genV1ResourcesProperties` on cgroup v1:
/// MemoryLimit, CPUShares; `genV2ResourcesProperties` on v2: MemoryMax, CPUWeight from the shares
/// as the kubelet converts them; both: CPUQuotaPeriodUSec, CPUQuotaPerSecUSec, TasksMax). An
/// unset field sends nothing; "unlimited" (≤ 0 memory or quota, −1 pids) is systemd's infinity.
pub fn resource_properties(cfg: &CgroupConfig, v2: bool, systemd_version: u32) -> Vec<Property> {
    let mut out = Vec::new();
    if let Some(m) = cfg.memory.filter(|m| *m != 0) {
        let bytes = if m < 0 { INFINITY } else { m as u64 };
        out.push(prop(if v2 { "MemoryMax" } else { "MemoryLimit" }, Value::U64(bytes)));
    }
    if let Some(s) = cfg.cpu_shares.filter(|s| *s != 0) {
        out.push(if v2 {
            prop("CPUWeight", Value::U64(resources::shares_to_weight(s)))
        } else {
            prop("CPUShares", Value::U64(s))
        });
    }
    add_cpu_quota(&mut out, cfg.cpu_quota.unwrap_or(0), cfg.cpu_period.unwrap_or(0), systemd_version);
    // libcontainer sends TasksMax for a positive limit or −1 (infinity), nothing for 0.
    if let Some(p) = cfg.pids.filter(|p| *p != 0) {
        out.push(prop("TasksMax", Value::U64(if p < 0 { INFINITY } else { p as u64 })));
    }
    out
}

/// libcontainer `addCpuQuota`: the period (systemd ≥ 242) and the quota as µs per CPU second,
/// rounded up to whole 10 ms (systemd stores a percentage, so a child's quota must still fit).
fn add_cpu_quota(out: &mut Vec<Property>, quota: i64, period: u64, systemd_version: u32) {
    if period != 0 && systemd_version >= QUOTA_PERIOD_SINCE {
        out.push(prop("CPUQuotaPeriodUSec", Value::U64(period)));
    }
    if quota == 0 && period == 0 {
        return;
    }
    let mut per_sec = INFINITY;
    if quota > 0 {
        let period = if period == 0 { resources::DEFAULT_CFS_PERIOD_US } else { period };
        per_sec = (quota as u64).saturating_mul(1_000_000) / period;
        if !per_sec.is_multiple_of(10_000) {
            per_sec = (per_sec / 10_000 + 1) * 10_000;
        }
    }
    out.push(prop("CPUQuotaPerSecUSec", Value::U64(per_sec)));
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    #[error("cannot connect to systemd over D-Bus ({address}): {message}")]
    Connect { address: String, message: String },
    /// org.freedesktop.systemd1.UnitExists.
    #[error("unit {0} already exists")]
    UnitExists(String),
    /// org.freedesktop.systemd1.NoSuchUnit.
    #[error("unit {0} not loaded")]
    NoSuchUnit(String),
    #[error("error creating systemd unit `{unit}`: got `{state}`")]
    Failed { unit: String, state: String },
    #[error("timeout waiting for systemd to {what} {unit}")]
    Timeout { what: &'static str, unit: String },
    #[error("systemd {method} {unit}: {message}")]
    Call { method: &'static str, unit: String, message: String },
}

/// The calls of org.freedesktop.systemd1.Manager the kubelet makes. Blocking: the container
/// manager is synchronous (its cgroupfs twin writes files).
pub trait Systemd: Send + Sync + Debug {
    /// systemd's version (Manager.Version's leading number).
    fn version(&self) -> u32;
    /// StartTransientUnit(name, "replace", properties) and wait until the unit is active.
    fn start_transient_unit(&self, unit: &str, properties: &[Property]) -> Result<(), BusError>;
    /// SetUnitProperties(name, runtime = true, properties).
    fn set_unit_properties(&self, unit: &str, properties: &[Property]) -> Result<(), BusError>;
    /// StopUnit(name, "replace") and wait until the unit is gone.
    fn stop_unit(&self, unit: &str) -> Result<(), BusError>;
}

/// One recorded call of [`Recording`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Start(String, Vec<Property>),
    Set(String, Vec<Property>),
    Stop(String),
}

/// A fake systemd for tests: records the calls, answers UnitExists for a unit started twice
/// and NoSuchUnit for stopping one never started, and (optionally) makes the slice's cgroup
/// directories under every hierarchy base as systemd would.
#[derive(Debug, Default)]
pub struct Recording {
    pub calls: Mutex<Vec<Call>>,
    active: Mutex<Vec<String>>,
    bases: Vec<std::path::PathBuf>,
    version: u32,
}

impl Recording {
    /// A systemd of version `version` that makes directories under `bases` (none: nothing).
    pub fn new(version: u32, bases: Vec<std::path::PathBuf>) -> Self {
        Recording { version, bases, ..Default::default() }
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn dirs(&self, unit: &str) -> Vec<std::path::PathBuf> {
        let path = expand_slice(unit).unwrap_or_default();
        self.bases.iter().map(|b| b.join(path.trim_start_matches('/'))).collect()
    }
}

impl Systemd for Recording {
    fn version(&self) -> u32 {
        self.version
    }

    fn start_transient_unit(&self, unit: &str, properties: &[Property]) -> Result<(), BusError> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).push(Call::Start(unit.into(), properties.to_vec()));
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        if active.iter().any(|u| u == unit) {
            return Err(BusError::UnitExists(unit.into()));
        }
        active.push(unit.into());
        for d in self.dirs(unit) {
            let _ = std::fs::create_dir_all(d);
        }
        Ok(())
    }

    fn set_unit_properties(&self, unit: &str, properties: &[Property]) -> Result<(), BusError> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).push(Call::Set(unit.into(), properties.to_vec()));
        Ok(())
    }

    fn stop_unit(&self, unit: &str) -> Result<(), BusError> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).push(Call::Stop(unit.into()));
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        let Some(i) = active.iter().position(|u| u == unit) else {
            return Err(BusError::NoSuchUnit(unit.into()));
        };
        active.remove(i);
        for d in self.dirs(unit) {
            let _ = std::fs::remove_dir(d);
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "systemd_tests.rs"]
mod tests;
