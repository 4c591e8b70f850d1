//! Container manager (upstream pkg/kubelet/cm): the QoS cgroup tiers (`<cgroupRoot>/kubepods`,
//! `kubepods/burstable`, `kubepods/besteffort`), pod cgroups (`pod<uid>`, Guaranteed pods
//! directly under kubepods) with pod-level limits, node allocatable on the kubepods cgroup, and
//! the pod cgroup's removal. cgroup v1 (one hierarchy per controller) and v2 (the unified
//! hierarchy) are both handled; which one is detected from the mount. Two drivers (`driver`):
//! cgroupfs writes the cgroup files itself; systemd (`systemd`, `systemd_bus`, `slices`) makes
//! the same cgroups as slices (`kubepods.slice/kubepods-burstable.slice/...`) through systemd's
//! D-Bus API, and reads them at those paths. `admission` is the resource-fit admission check;
//! `resources` holds the formulas.

pub mod admission;
pub mod cpu_manager;
pub mod devicemanager;
pub mod driver;
pub mod fs;
pub mod managers;
pub mod memory_manager;
pub mod qos;
pub mod resources;
mod slices;
pub mod systemd;
pub mod systemd_bus;
pub mod topology;

use driver::Driver;
use fs::CgroupFs;
use k8s_openapi::api::core::v1::Pod;
use kubelet_config::KubeletConfiguration;
use kubelet_config::eviction::{ThresholdValue, parse_threshold};
use kubelet_config::quantity::Quantity;
use resources::{CgroupConfig, Policy};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

pub const CGROUP_MOUNT: &str = "/sys/fs/cgroup";
pub const SYSTEMD_RUN_DIR: &str = "/run/systemd/system";

/// v1 controllers the kubelet creates its cgroups in (those that exist on the machine).
const V1_CONTROLLERS: &[&str] = &["cpu", "cpuacct", "cpuset", "memory", "pids", "hugetlb"];
/// v2 controllers the kubelet enables for its subtree (those the root offers).
const V2_CONTROLLERS: &[&str] = &["cpuset", "cpu", "memory", "pids", "hugetlb"];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cgroupDriver is \"systemd\" but systemd is not running ({SYSTEMD_RUN_DIR} does not exist); set cgroupDriver: cgroupfs (and the runtime's SystemdCgroup = false)"
    )]
    SystemdNotRunning,
    #[error("systemd: {0}")]
    Systemd(#[from] systemd::BusError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("cgroup {0} still has processes or child cgroups")]
    Busy(String),
    #[error(transparent)]
    ResourceManagers(Box<managers::Error>),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

/// Which cgroup hierarchy the machine has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// One mount per controller: (controller, `<mount>/<controller>`).
    V1(Vec<(String, PathBuf)>),
    /// The unified hierarchy at `mount`, with the controllers the root offers.
    V2 { mount: PathBuf, controllers: Vec<String> },
}

impl Hierarchy {
    /// v2 when `<mount>/cgroup.controllers` exists (the unified hierarchy is mounted there);
    /// otherwise v1 with the controllers mounted under `<mount>`: a controller's directory counts
    /// only when a hierarchy is mounted there (it has `cgroup.procs`), not when it is an empty
    /// directory on the cgroup tmpfs (another cgroup manager, e.g. a systemd in a mount
    /// namespace of its own, may leave those). A hybrid machine (v1 plus an empty
    /// `<mount>/unified`) is v1.
    pub fn detect(fs: &dyn CgroupFs, mount: &Path) -> Hierarchy {
        let root = mount.join("cgroup.controllers");
        if fs.exists(&root) {
            let offered = fs.read(&root).unwrap_or_default();
            let controllers = V2_CONTROLLERS
                .iter()
                .filter(|c| offered.split_whitespace().any(|o| o == **c))
                .map(|c| c.to_string())
                .collect();
            return Hierarchy::V2 { mount: mount.to_path_buf(), controllers };
        }
        Hierarchy::V1(
            V1_CONTROLLERS
                .iter()
                .map(|c| (c.to_string(), mount.join(c)))
                .filter(|(_, p)| fs.exists(&p.join("cgroup.procs")))
                .collect(),
        )
    }

    pub fn is_v2(&self) -> bool {
        matches!(self, Hierarchy::V2 { .. })
    }
}

/// A cgroup by its path components below the hierarchy root (`["kubepods", "burstable"]`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CgroupName(pub Vec<String>);

impl CgroupName {
    pub fn parse(path: &str) -> Self {
        CgroupName(path.split('/').filter(|s| !s.is_empty()).map(str::to_string).collect())
    }

    pub fn child(&self, name: &str) -> Self {
        let mut v = self.0.clone();
        v.push(name.to_string());
        CgroupName(v)
    }

    /// The cgroupfs path, `/kubepods/burstable`.
    pub fn to_path(&self) -> String {
        format!("/{}", self.0.join("/"))
    }

    fn under(&self, base: &Path) -> PathBuf {
        let mut p = base.to_path_buf();
        p.extend(&self.0);
        p
    }
}

/// What the node has: millicores, bytes of memory, process IDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capacity {
    pub cpu_milli: i64,
    pub memory: i64,
    pub pids: i64,
}

impl Capacity {
    /// From the CPU count, `/proc/meminfo` MemTotal and `/proc/sys/kernel/pid_max`.
    pub fn of_machine() -> Capacity {
        let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1);
        Capacity { cpu_milli: cpus * 1000, memory: machine_memory(), pids: machine_pid_max() }
    }
}

/// MemTotal in bytes (0 if unreadable).
pub fn machine_memory() -> i64 {
    static MEM: OnceLock<i64> = OnceLock::new();
    *MEM.get_or_init(|| {
        let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    })
}

fn machine_pid_max() -> i64 {
    std::fs::read_to_string("/proc/sys/kernel/pid_max").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(32768)
}

/// The container policy when no container manager runs (tests): upstream defaults and the
/// machine's memory.
pub fn default_policy() -> Policy {
    Policy { memory_capacity: machine_memory(), ..Policy::default() }
}

/// The settings of KubeletConfiguration the container manager reads.
#[derive(Debug, Clone)]
pub struct Config {
    pub cgroup_driver: String,
    pub cgroup_root: String,
    pub cgroups_per_qos: bool,
    pub cpu_cfs_quota: bool,
    pub cpu_cfs_quota_period_us: u64,
    pub pod_pids_limit: i64,
    pub enforce_node_allocatable: Vec<String>,
    pub system_reserved: BTreeMap<String, Quantity>,
    pub kube_reserved: BTreeMap<String, Quantity>,
    pub eviction_hard: BTreeMap<String, String>,
    /// `/sys/fs/cgroup`.
    pub mount: PathBuf,
    /// `/run/systemd/system`: present when systemd is PID 1.
    pub systemd_run_dir: PathBuf,
    /// The D-Bus bus socket systemd is on, for the systemd driver; `None`: the system bus.
    pub systemd_socket: Option<PathBuf>,
    /// The CPU and topology managers' settings.
    pub resource_managers: managers::Config,
}

impl Config {
    pub fn from_kubelet(cfg: &KubeletConfiguration) -> Config {
        let period = cfg.cpu_cfs_quota_period.to_std().map(|d| d.as_micros() as u64).filter(|p| *p > 0);
        let (mut system_reserved, mut kube_reserved) = (cfg.system_reserved.clone(), cfg.kube_reserved.clone());
        // reservedSystemCPUs overrides the cpu reservation with its CPU count (upstream's
        // kubelet server: systemReserved.cpu = count, kubeReserved.cpu dropped).
        let reserved_cpus = topology::cpuset::CpuSet::parse(&cfg.reserved_system_cpus).unwrap_or_default();
        if !reserved_cpus.is_empty() {
            kube_reserved.remove("cpu");
            if let Ok(q) = Quantity::parse(&reserved_cpus.len().to_string()) {
                system_reserved.insert("cpu".into(), q);
            }
        }
        Config {
            cgroup_driver: cfg.cgroup_driver.clone(),
            cgroup_root: cfg.cgroup_root.clone(),
            cgroups_per_qos: cfg.cgroups_per_qos,
            cpu_cfs_quota: cfg.cpu_cfs_quota,
            cpu_cfs_quota_period_us: period.unwrap_or(resources::DEFAULT_CFS_PERIOD_US),
            pod_pids_limit: cfg.pod_pids_limit,
            enforce_node_allocatable: cfg.enforce_node_allocatable.clone(),
            system_reserved,
            kube_reserved,
            eviction_hard: cfg.eviction_hard.clone(),
            mount: CGROUP_MOUNT.into(),
            systemd_run_dir: SYSTEMD_RUN_DIR.into(),
            systemd_socket: None,
            resource_managers: managers::Config::from_kubelet(cfg),
        }
    }
}

/// Resources left for pods: capacity minus systemReserved, kubeReserved and (for memory and
/// pids) the hard eviction threshold. Millicores, bytes, process IDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Allocatable {
    pub cpu_milli: i64,
    pub memory: i64,
    pub pids: i64,
}

fn reserved(cfg: &Config, name: &str) -> i64 {
    [&cfg.system_reserved, &cfg.kube_reserved]
        .into_iter()
        .filter_map(|m| m.get(name))
        .map(|q| if name == "cpu" { q.milli_value() as i64 } else { q.value() as i64 })
        .sum()
}

fn eviction_threshold(cfg: &Config, signal: &str, capacity: i64) -> i64 {
    match cfg.eviction_hard.get(signal).and_then(|v| parse_threshold(signal, v).ok().flatten()) {
        Some(ThresholdValue::Quantity(q)) => q.value() as i64,
        Some(ThresholdValue::Percentage(p)) => (f64::from(p) * capacity as f64) as i64,
        None => 0,
    }
}

/// `kubepods`, `pod<uid>` and friends on one hierarchy.
#[derive(Debug)]
pub struct ContainerManager {
    cfg: Config,
    fs: Arc<dyn CgroupFs>,
    hierarchy: Hierarchy,
    capacity: Capacity,
    policy: Policy,
    /// Burstable pods with their cpu requests (millicores), for the burstable tier's shares.
    burstable: Mutex<BTreeMap<String, i64>>,
    driver: Driver,
    /// systemd's D-Bus API, with the systemd driver.
    systemd: Option<Arc<dyn systemd::Systemd>>,
    /// The CPU and topology managers (set by `setup`).
    managers: Option<Arc<managers::ResourceManagers>>,
}

impl ContainerManager {
    /// Checks the driver and detects the hierarchy; touches nothing (see [`Self::start`]).
    /// With the systemd driver, systemd must run (libcontainer's `IsRunningSystemd`) and
    /// [`Self::with_systemd`] give its API.
    pub fn new(cfg: Config, fs: Arc<dyn CgroupFs>, capacity: Capacity) -> Result<Self, Error> {
        let driver = Driver::parse(&cfg.cgroup_driver);
        if driver == Driver::Systemd && !fs.exists(&cfg.systemd_run_dir) {
            return Err(Error::SystemdNotRunning);
        }
        let hierarchy = Hierarchy::detect(fs.as_ref(), &cfg.mount);
        let policy = Policy {
            cpu_cfs_quota: cfg.cpu_cfs_quota,
            cpu_cfs_period_us: cfg.cpu_cfs_quota_period_us,
            pod_pids_limit: cfg.pod_pids_limit,
            memory_capacity: capacity.memory,
        };
        Ok(ContainerManager {
            cfg,
            fs,
            hierarchy,
            capacity,
            policy,
            burstable: Mutex::new(BTreeMap::new()),
            driver,
            systemd: None,
            managers: None,
        })
    }

    /// The systemd API the systemd driver makes its slices with.
    pub fn with_systemd(mut self, systemd: Arc<dyn systemd::Systemd>) -> Self {
        self.systemd = Some(systemd);
        self
    }

    /// The kubelet's container manager on this machine: checks, connects to systemd (systemd
    /// driver), then creates the QoS tiers.
    pub fn setup(cfg: Config) -> Result<Arc<Self>, Error> {
        let socket = cfg.systemd_socket.clone();
        let mut cm = ContainerManager::new(cfg, Arc::new(fs::OsFs), Capacity::of_machine())?;
        if cm.driver == Driver::Systemd {
            cm = cm.with_systemd(Arc::new(systemd_bus::Bus::connect(socket.as_deref())?));
        }
        cm.start()?;
        cm.managers = Some(Arc::new(
            managers::start(&cm.cfg.resource_managers).map_err(|e| Error::ResourceManagers(Box::new(e)))?,
        ));
        Ok(Arc::new(cm))
    }

    pub fn driver(&self) -> Driver {
        self.driver
    }

    /// Sets the resource managers (tests).
    pub fn with_resource_managers(mut self, m: managers::ResourceManagers) -> Self {
        self.managers = Some(Arc::new(m));
        self
    }

    pub fn resource_managers(&self) -> Option<&Arc<managers::ResourceManagers>> {
        self.managers.as_ref()
    }

    /// The cpuset a container is created with (PreCreateContainer): exclusive CPUs or the
    /// shared pool under the static CPU manager policy, else none.
    pub fn container_cpuset(&self, pod: &Pod, container: &str) -> Option<String> {
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        self.managers.as_ref()?.cpu.cpuset_for(uid, container).map(|s| s.to_string())
    }

    /// The container's `cpuset.mems` (PreCreateContainer): its NUMA nodes under the Static
    /// memory manager policy, else none.
    pub fn container_mems(&self, pod: &Pod, container: &str) -> Option<String> {
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        self.managers.as_ref()?.container_mems(uid, container)
    }

    pub fn hierarchy(&self) -> &Hierarchy {
        &self.hierarchy
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn capacity(&self) -> Capacity {
        self.capacity
    }

    fn root(&self) -> CgroupName {
        CgroupName::parse(&self.cfg.cgroup_root)
    }

    /// `<cgroupRoot>/kubepods`.
    pub fn kubepods(&self) -> CgroupName {
        self.root().child("kubepods")
    }

    /// The parent of a pod cgroup for a QoS class.
    pub fn qos_cgroup(&self, qos: &str) -> CgroupName {
        match qos {
            "Burstable" => self.kubepods().child("burstable"),
            "BestEffort" => self.kubepods().child("besteffort"),
            _ => self.kubepods(),
        }
    }

    /// The pod's cgroup, or None without cgroupsPerQOS (pods then go right under cgroupRoot).
    pub fn pod_cgroup(&self, pod: &Pod) -> Option<CgroupName> {
        if !self.cfg.cgroups_per_qos {
            return None;
        }
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        Some(self.qos_cgroup(qos::qos_class(pod)).child(&format!("pod{uid}")))
    }

    /// `linux.cgroup_parent` for the pod's sandbox: the pod cgroup's [`Self::name`] (upstream
    /// GetPodCgroupParent; containerd's systemd mode takes the last slice of it).
    pub fn cgroup_parent(&self, pod: &Pod) -> String {
        match self.pod_cgroup(pod) {
            Some(name) => self.name(&name),
            None if self.cfg.cgroup_root.is_empty() => String::new(),
            None => self.name(&self.root()),
        }
    }

    /// A cgroup's path as the driver names it (upstream `cgroupManager.Name`): `/kubepods/burstable`
    /// or `/kubepods.slice/kubepods-burstable.slice`.
    pub fn name(&self, name: &CgroupName) -> String {
        match self.driver {
            Driver::Cgroupfs => name.to_path(),
            Driver::Systemd => systemd::to_systemd(name),
        }
    }

    /// The cgroup's directory in the hierarchy rooted at `base`.
    fn dir(&self, name: &CgroupName, base: &Path) -> PathBuf {
        match self.driver {
            Driver::Cgroupfs => name.under(base),
            Driver::Systemd => base.join(systemd::to_systemd(name).trim_start_matches('/')),
        }
    }

    /// The pod UID of a pod cgroup's directory name in a QoS tier.
    fn pod_uid_of_dir(&self, tier: &CgroupName, dir: &Path) -> Option<String> {
        let name = dir.file_name()?.to_str()?;
        match self.driver {
            Driver::Cgroupfs => name.strip_prefix("pod").map(str::to_string),
            Driver::Systemd => systemd::pod_uid_of_slice(tier, name),
        }
    }

    /// Allocatable for admission and the node status: capacity − systemReserved − kubeReserved
    /// − evictionHard (memory.available, pid.available).
    pub fn allocatable(&self) -> Allocatable {
        let c = self.capacity;
        Allocatable {
            cpu_milli: (c.cpu_milli - reserved(&self.cfg, "cpu")).max(0),
            memory: (c.memory
                - reserved(&self.cfg, "memory")
                - eviction_threshold(&self.cfg, "memory.available", c.memory))
            .max(0),
            pids: (c.pids - reserved(&self.cfg, "pid") - eviction_threshold(&self.cfg, "pid.available", c.pids)).max(0),
        }
    }

    /// The kubepods cgroup's limits. With `enforceNodeAllocatable: [pods]` they are capacity
    /// minus the reservations (as upstream, the hard eviction threshold is left to the eviction
    /// manager); otherwise the whole capacity.
    pub fn kubepods_config(&self) -> CgroupConfig {
        let c = self.capacity;
        let enforce = self.cfg.enforce_node_allocatable.iter().any(|k| k == "pods");
        let (cpu, memory, pids) = if enforce {
            (
                (c.cpu_milli - reserved(&self.cfg, "cpu")).max(0),
                (c.memory - reserved(&self.cfg, "memory")).max(0),
                (c.pids - reserved(&self.cfg, "pid")).max(0),
            )
        } else {
            (c.cpu_milli, c.memory, c.pids)
        };
        let pid_reserved = reserved(&self.cfg, "pid") > 0;
        CgroupConfig {
            cpu_shares: Some(resources::milli_cpu_to_shares(cpu)),
            memory: Some(memory),
            pids: (enforce && pid_reserved).then_some(pids),
            ..Default::default()
        }
    }

    /// Creates the QoS tiers (with cgroupsPerQOS) and applies node allocatable to kubepods.
    pub fn start(&self) -> Result<(), Error> {
        if !self.cfg.cgroups_per_qos {
            return Ok(());
        }
        let kubepods = self.kubepods();
        self.create_with(&kubepods, &self.kubepods_config())?;
        self.create_with(&self.qos_cgroup("Burstable"), &CgroupConfig::default())?;
        let besteffort = self.qos_cgroup("BestEffort");
        self.create_with(&besteffort, &CgroupConfig { cpu_shares: Some(resources::MIN_SHARES), ..Default::default() })?;
        self.remove_empty_pod_cgroups();
        self.reread_burstable_pods();
        tracing::info!(
            hierarchy = if self.hierarchy.is_v2() { "v2" } else { "v1" },
            driver = self.driver.as_str(),
            kubepods = %self.name(&kubepods),
            "QoS cgroups ready"
        );
        Ok(())
    }

    /// Creates the pod's cgroup with its pod-level limits (before RunPodSandbox).
    pub fn ensure_pod_cgroup(&self, pod: &Pod) -> Result<(), Error> {
        let Some(name) = self.pod_cgroup(pod) else { return Ok(()) };
        self.create_with(&name, &resources::pod_cgroup_config(pod, &self.policy))?;
        if qos::qos_class(pod) == "Burstable" {
            let cpu = resources::pod_requests(pod).get("cpu").copied().unwrap_or(0) as i64;
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            self.burstable.lock().unwrap_or_else(|e| e.into_inner()).insert(uid, cpu);
            self.update_burstable_shares()?;
        }
        Ok(())
    }

    /// Memory the pod's cgroup uses now (v1 `memory.usage_in_bytes`, v2 `memory.current`), for
    /// a resize that lowers the pod's memory limit.
    pub fn pod_memory_usage(&self, pod: &Pod) -> Option<i64> {
        let name = self.pod_cgroup(pod)?;
        let file = match &self.hierarchy {
            Hierarchy::V1(c) => name.under(&c.iter().find(|(n, _)| n == "memory")?.1).join("memory.usage_in_bytes"),
            Hierarchy::V2 { mount, .. } => name.under(mount).join("memory.current"),
        };
        self.fs.read(&file).ok()?.trim().parse().ok()
    }

    /// The burstable tier's shares follow the cpu requests of the burstable pods, as upstream.
    fn update_burstable_shares(&self) -> Result<(), Error> {
        let total: i64 = self.burstable.lock().unwrap_or_else(|e| e.into_inner()).values().sum();
        let shares = resources::milli_cpu_to_shares(total);
        self.apply(&self.qos_cgroup("Burstable"), &CgroupConfig { cpu_shares: Some(shares), ..Default::default() })
    }

    /// The hierarchy roots a cgroup lives in: every v1 controller mount, or the v2 mount.
    fn bases(&self) -> Vec<PathBuf> {
        match &self.hierarchy {
            Hierarchy::V1(c) => c.iter().map(|(_, p)| p.clone()).collect(),
            Hierarchy::V2 { mount, .. } => vec![mount.clone()],
        }
    }

    /// Creates the cgroup with its limits (upstream cgroupManager.Create: with systemd a
    /// transient slice, see `slices.rs`).
    fn create_with(&self, name: &CgroupName, cfg: &CgroupConfig) -> Result<(), Error> {
        if self.driver == Driver::Systemd {
            return self.create_slice(name, cfg);
        }
        self.create(name)?;
        self.apply(name, cfg)
    }

    fn create(&self, name: &CgroupName) -> Result<(), Error> {
        match &self.hierarchy {
            Hierarchy::V1(controllers) => {
                for (controller, base) in controllers {
                    let path = name.under(base);
                    self.fs.create_dir_all(&path).map_err(io_err(&path))?;
                    if controller == "cpuset" {
                        self.init_cpuset(base, name)?;
                    }
                }
            }
            Hierarchy::V2 { mount, controllers } => {
                let enable = controllers.iter().map(|c| format!("+{c}")).collect::<Vec<_>>().join(" ");
                // Controllers must be enabled in every ancestor for the leaf to get their files.
                let mut dir = mount.clone();
                for part in &name.0 {
                    if !enable.is_empty() {
                        let file = dir.join("cgroup.subtree_control");
                        self.fs.write(&file, &enable).map_err(io_err(&file))?;
                    }
                    dir.push(part);
                    self.fs.create_dir_all(&dir).map_err(io_err(&dir))?;
                }
            }
        }
        Ok(())
    }

    /// A new v1 cpuset cgroup starts with no cpus and mems; copy the parent's down.
    fn init_cpuset(&self, base: &Path, name: &CgroupName) -> Result<(), Error> {
        let mut dir = base.to_path_buf();
        for part in &name.0 {
            let parent = dir.clone();
            dir.push(part);
            for file in ["cpuset.cpus", "cpuset.mems"] {
                let own = self.fs.read(&dir.join(file)).unwrap_or_default();
                if own.trim().is_empty() {
                    let value = self.fs.read(&parent.join(file)).unwrap_or_default();
                    if !value.trim().is_empty() {
                        let path = dir.join(file);
                        self.fs.write(&path, value.trim()).map_err(io_err(&path))?;
                    }
                }
            }
        }
        Ok(())
    }

    fn write(&self, path: PathBuf, value: String) -> Result<(), Error> {
        tracing::debug!(path = %path.display(), %value, "cgroup write");
        self.fs.write(&path, &value).map_err(io_err(&path))
    }

    /// Sets a cgroup's limits: the hierarchy's files, or with systemd the slice's properties.
    pub fn apply(&self, name: &CgroupName, cfg: &CgroupConfig) -> Result<(), Error> {
        if self.driver == Driver::Systemd {
            return self.update_slice(name, cfg);
        }
        match &self.hierarchy {
            Hierarchy::V1(controllers) => {
                let base = |c: &str| controllers.iter().find(|(n, _)| n == c).map(|(_, p)| self.dir(name, p));
                if let Some(dir) = base("cpu") {
                    if let Some(s) = cfg.cpu_shares {
                        self.write(dir.join("cpu.shares"), s.to_string())?;
                    }
                    if let Some(p) = cfg.cpu_period {
                        self.write(dir.join("cpu.cfs_period_us"), p.to_string())?;
                    }
                    if let Some(q) = cfg.cpu_quota {
                        self.write(dir.join("cpu.cfs_quota_us"), if q <= 0 { "-1".into() } else { q.to_string() })?;
                    }
                }
                if let (Some(dir), Some(m)) = (base("memory"), cfg.memory) {
                    self.write(dir.join("memory.limit_in_bytes"), if m <= 0 { "-1".into() } else { m.to_string() })?;
                }
                if let (Some(dir), Some(p)) = (base("pids"), cfg.pids) {
                    self.write(dir.join("pids.max"), if p <= 0 { "max".into() } else { p.to_string() })?;
                }
                if let Some(dir) = base("hugetlb") {
                    for (size, limit) in &cfg.hugepages {
                        let file = format!("hugetlb.{}.limit_in_bytes", resources::hugepage_size_name(*size));
                        self.write(dir.join(file), limit.to_string())?;
                    }
                }
            }
            Hierarchy::V2 { mount, controllers } => {
                let dir = self.dir(name, mount);
                let has = |c: &str| controllers.iter().any(|x| x == c);
                if has("cpu") {
                    if let Some(s) = cfg.cpu_shares {
                        self.write(dir.join("cpu.weight"), resources::shares_to_weight(s).to_string())?;
                    }
                    if cfg.cpu_quota.is_some() || cfg.cpu_period.is_some() {
                        let period = cfg.cpu_period.unwrap_or(resources::DEFAULT_CFS_PERIOD_US);
                        let quota = match cfg.cpu_quota {
                            Some(q) if q > 0 => q.to_string(),
                            _ => "max".into(),
                        };
                        self.write(dir.join("cpu.max"), format!("{quota} {period}"))?;
                    }
                }
                if let (true, Some(m)) = (has("memory"), cfg.memory) {
                    self.write(dir.join("memory.max"), if m <= 0 { "max".into() } else { m.to_string() })?;
                }
                if let (true, Some(p)) = (has("pids"), cfg.pids) {
                    self.write(dir.join("pids.max"), if p <= 0 { "max".into() } else { p.to_string() })?;
                }
                if has("hugetlb") {
                    for (size, limit) in &cfg.hugepages {
                        let file = format!("hugetlb.{}.max", resources::hugepage_size_name(*size));
                        self.write(dir.join(file), limit.to_string())?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether any process is left in the cgroup or below it.
    fn has_processes(&self, dir: &Path) -> bool {
        let own = self.fs.read(&dir.join("cgroup.procs")).unwrap_or_default();
        !own.trim().is_empty() || self.fs.sub_dirs(dir).unwrap_or_default().iter().any(|d| self.has_processes(d))
    }

    /// Removes `dir` and its child cgroups, deepest first.
    fn remove_tree(&self, dir: &Path) -> Result<(), Error> {
        for sub in self.fs.sub_dirs(dir).unwrap_or_default() {
            self.remove_tree(&sub)?;
        }
        match self.fs.remove_dir(dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Err(Error::Busy(dir.display().to_string())),
            Err(e) => Err(Error::Io { path: dir.to_path_buf(), source: e }),
        }
    }

    /// Every place a pod cgroup for `uid` may be (any tier: the QoS class is not needed).
    fn pod_cgroup_candidates(&self, uid: &str) -> Vec<CgroupName> {
        let leaf = format!("pod{uid}");
        ["Guaranteed", "Burstable", "BestEffort"].iter().map(|q| self.qos_cgroup(q).child(&leaf)).collect()
    }

    /// Removes the pod's cgroup once nothing runs in it. `Err(Busy)` means try again later.
    /// On v1 the pod's cgroup goes from every mounted hierarchy (runc creates container cgroups
    /// in those the kubelet does not use too, the hybrid `unified` one included).
    pub fn remove_pod_cgroup(&self, uid: &str) -> Result<(), Error> {
        if !self.cfg.cgroups_per_qos || uid.is_empty() {
            return Ok(());
        }
        let mut bases = self.bases();
        if let Hierarchy::V1(_) = self.hierarchy {
            for d in self.fs.sub_dirs(&self.cfg.mount).unwrap_or_default() {
                if !bases.contains(&d) {
                    bases.push(d);
                }
            }
        }
        let dirs: Vec<PathBuf> = self
            .pod_cgroup_candidates(uid)
            .iter()
            .flat_map(|n| bases.iter().map(|b| self.dir(n, b)).collect::<Vec<_>>())
            .filter(|d| self.fs.exists(d))
            .collect();
        if let Some(d) = dirs.iter().find(|d| self.has_processes(d)) {
            return Err(Error::Busy(d.display().to_string()));
        }
        if self.driver == Driver::Systemd {
            // The slice goes through systemd (libcontainer's Destroy: StopUnit), which removes
            // its directories; what is left (hierarchies systemd does not manage) below.
            for name in self.pod_cgroup_candidates(uid) {
                if bases.iter().any(|b| self.fs.exists(&self.dir(&name, b))) {
                    self.stop_slice(&name)?;
                }
            }
        }
        for d in &dirs {
            self.remove_tree(d)?;
        }
        let was_burstable = self.burstable.lock().unwrap_or_else(|e| e.into_inner()).remove(uid).is_some();
        if was_burstable {
            self.update_burstable_shares()?;
        }
        Ok(())
    }

    /// At start-up, before any pod is synced: pod cgroups with no process left (pods removed
    /// while no kubelet ran) go. A pod that still runs keeps its cgroup.
    fn remove_empty_pod_cgroups(&self) {
        let Some(base) = self.bases().into_iter().next() else { return };
        for tier in ["Guaranteed", "Burstable", "BestEffort"] {
            let tier = self.qos_cgroup(tier);
            for dir in self.fs.sub_dirs(&self.dir(&tier, &base)).unwrap_or_default() {
                let Some(uid) = self.pod_uid_of_dir(&tier, &dir) else { continue };
                match self.remove_pod_cgroup(&uid) {
                    Ok(()) => tracing::info!(pod_uid = %uid, "removed the cgroup of a pod that is gone"),
                    Err(Error::Busy(_)) => {}
                    Err(e) => tracing::warn!(pod_uid = %uid, error = %e, "cannot remove an orphaned pod cgroup"),
                }
            }
        }
    }

    /// After a restart the burstable pods that still run are counted again (their cpu request
    /// read back from their cgroup's shares or weight) so the tier's shares stay right.
    fn reread_burstable_pods(&self) {
        let Some(base) = self.bases().into_iter().next() else { return };
        let tier = self.qos_cgroup("Burstable");
        let mut found = BTreeMap::new();
        for dir in self.fs.sub_dirs(&self.dir(&tier, &base)).unwrap_or_default() {
            let Some(uid) = self.pod_uid_of_dir(&tier, &dir) else { continue };
            let read = |f: &str| self.fs.read(&dir.join(f)).ok().and_then(|v| v.trim().parse::<u64>().ok());
            let shares = match &self.hierarchy {
                Hierarchy::V1(_) => read("cpu.shares"),
                Hierarchy::V2 { .. } => read("cpu.weight").map(|w| 2 + (w.saturating_sub(1) * 262_142).div_ceil(9999)),
            };
            if let Some(shares) = shares {
                let milli = if shares <= resources::MIN_SHARES { 0 } else { (shares * 1000).div_ceil(1024) as i64 };
                found.insert(uid.to_string(), milli);
            }
        }
        if found.is_empty() {
            return;
        }
        *self.burstable.lock().unwrap_or_else(|e| e.into_inner()) = found;
        if let Err(e) = self.update_burstable_shares() {
            tracing::warn!(error = %e, "cannot set the burstable tier's cpu shares");
        }
    }

    /// Removes the pod's cgroup now or, while processes are still leaving, retries in the
    /// background (every second, for up to two minutes).
    pub fn remove_pod_cgroup_eventually(self: &Arc<Self>, uid: &str) {
        match self.remove_pod_cgroup(uid) {
            Ok(()) => {}
            Err(Error::Busy(_)) => {
                let cm = self.clone();
                let uid = uid.to_string();
                tokio::spawn(async move {
                    for _ in 0..120 {
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        match cm.remove_pod_cgroup(&uid) {
                            Ok(()) => return,
                            Err(Error::Busy(_)) => continue,
                            Err(e) => {
                                tracing::warn!(pod_uid = %uid, error = %e, "cannot remove pod cgroup");
                                return;
                            }
                        }
                    }
                    tracing::warn!(pod_uid = %uid, "pod cgroup still busy after 2 minutes; left in place");
                });
            }
            Err(e) => tracing::warn!(pod_uid = %uid, error = %e, "cannot remove pod cgroup"),
        }
    }
}

#[cfg(test)]
mod tests;
