use super::*;
use std::path::Path;

fn pod(uid: &str, resources: serde_json::Value) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "p", "uid": uid},
        "spec": {"containers": [{"name": "c", "image": "x", "resources": resources}]}
    }))
    .unwrap()
}

fn guaranteed(uid: &str) -> Pod {
    pod(uid, serde_json::json!({"limits": {"cpu": "500m", "memory": "64Mi"}}))
}

fn burstable(uid: &str) -> Pod {
    pod(uid, serde_json::json!({"requests": {"cpu": "100m", "memory": "16Mi"}, "limits": {"memory": "32Mi"}}))
}

fn best_effort(uid: &str) -> Pod {
    pod(uid, serde_json::json!({}))
}

fn config(mount: &Path) -> Config {
    Config {
        cgroup_driver: "cgroupfs".into(),
        cgroup_root: String::new(),
        cgroups_per_qos: true,
        cpu_cfs_quota: true,
        cpu_cfs_quota_period_us: 100_000,
        pod_pids_limit: 1024,
        enforce_node_allocatable: vec!["pods".into()],
        system_reserved: BTreeMap::from([("memory".into(), Quantity::parse("1Gi").unwrap())]),
        kube_reserved: BTreeMap::from([("cpu".into(), Quantity::parse("500m").unwrap())]),
        eviction_hard: BTreeMap::from([("memory.available".into(), "100Mi".into())]),
        mount: mount.to_path_buf(),
        systemd_run_dir: mount.join("no-systemd"),
        systemd_socket: None,
        resource_managers: Default::default(),
    }
}

const CAPACITY: Capacity = Capacity { cpu_milli: 4000, memory: 8 << 30, pids: 4_194_304 };

fn read(p: impl AsRef<Path>) -> String {
    std::fs::read_to_string(p.as_ref()).unwrap_or_else(|e| panic!("{}: {e}", p.as_ref().display())).trim().to_string()
}

/// A v2 root: `cgroup.controllers` at the mount.
fn v2_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cgroup.controllers"), "cpuset cpu io memory hugetlb pids rdma misc\n").unwrap();
    dir
}

/// A v1 (hybrid) tree: one directory per controller plus an empty unified mount.
fn v1_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for c in ["cpu", "cpuacct", "cpuset", "memory", "pids", "devices", "unified"] {
        std::fs::create_dir_all(dir.path().join(c)).unwrap();
        std::fs::write(dir.path().join(c).join("cgroup.procs"), "1\n").unwrap();
    }
    std::fs::write(dir.path().join("cpuset/cpuset.cpus"), "0-3\n").unwrap();
    std::fs::write(dir.path().join("cpuset/cpuset.mems"), "0\n").unwrap();
    dir
}

fn manager(_dir: &Path, cfg: Config) -> ContainerManager {
    ContainerManager::new(cfg, Arc::new(fs::OsFs), CAPACITY).unwrap()
}

#[test]
fn detects_the_hierarchy_from_the_mount() {
    let v2 = v2_tree();
    assert_eq!(
        Hierarchy::detect(&fs::OsFs, v2.path()),
        Hierarchy::V2 {
            mount: v2.path().to_path_buf(),
            controllers: ["cpuset", "cpu", "memory", "pids", "hugetlb"].map(String::from).to_vec()
        }
    );
    let v1 = v1_tree();
    // A directory where no hierarchy is mounted (e.g. left by another cgroup manager on the
    // tmpfs) is not a controller.
    std::fs::create_dir(v1.path().join("hugetlb")).unwrap();
    let Hierarchy::V1(controllers) = Hierarchy::detect(&fs::OsFs, v1.path()) else { panic!("v1 expected") };
    let names: Vec<&str> = controllers.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(names, ["cpu", "cpuacct", "cpuset", "memory", "pids"]);
}

#[test]
fn qos_tier_and_pod_cgroup_names() {
    let dir = v1_tree();
    let cm = manager(dir.path(), config(dir.path()));
    assert_eq!(cm.cgroup_parent(&guaranteed("g1")), "/kubepods/podg1");
    assert_eq!(cm.cgroup_parent(&burstable("b1")), "/kubepods/burstable/podb1");
    assert_eq!(cm.cgroup_parent(&best_effort("e1")), "/kubepods/besteffort/pode1");
    let rooted = manager(dir.path(), Config { cgroup_root: "/custom/".into(), ..config(dir.path()) });
    assert_eq!(rooted.cgroup_parent(&burstable("b1")), "/custom/kubepods/burstable/podb1");
    // No cgroupsPerQOS: no tiers, pods go under cgroupRoot (or the runtime's default).
    let flat = manager(dir.path(), Config { cgroups_per_qos: false, ..config(dir.path()) });
    assert_eq!(flat.cgroup_parent(&burstable("b1")), "");
    assert!(flat.pod_cgroup(&burstable("b1")).is_none());
    let flat_root =
        manager(dir.path(), Config { cgroups_per_qos: false, cgroup_root: "/pods".into(), ..config(dir.path()) });
    assert_eq!(flat_root.cgroup_parent(&burstable("b1")), "/pods");
    flat_root.start().unwrap();
    flat_root.ensure_pod_cgroup(&burstable("b1")).unwrap();
    assert!(!dir.path().join("cpu/pods").exists() && !dir.path().join("cpu/kubepods").exists());
}

#[test]
fn v1_tiers_pod_cgroups_and_removal() {
    let dir = v1_tree();
    let d = dir.path();
    let cm = manager(d, config(d));
    cm.start().unwrap();
    for c in ["cpu", "cpuacct", "cpuset", "memory", "pids"] {
        assert!(d.join(c).join("kubepods/burstable").is_dir(), "{c}");
        assert!(d.join(c).join("kubepods/besteffort").is_dir(), "{c}");
    }
    assert!(!d.join("devices/kubepods").exists(), "only the controllers that matter");
    // Node allocatable: 4 cpus − 500m kubeReserved; 8Gi − 1Gi systemReserved.
    assert_eq!(read(d.join("cpu/kubepods/cpu.shares")), "3584");
    assert_eq!(read(d.join("memory/kubepods/memory.limit_in_bytes")), (7i64 << 30).to_string());
    assert_eq!(read(d.join("cpu/kubepods/besteffort/cpu.shares")), "2");
    assert_eq!(read(d.join("cpuset/kubepods/besteffort/cpuset.cpus")), "0-3");
    assert_eq!(read(d.join("cpuset/kubepods/besteffort/cpuset.mems")), "0");

    cm.ensure_pod_cgroup(&guaranteed("g1")).unwrap();
    let g = |f: &str| read(d.join(f));
    assert_eq!(g("cpu/kubepods/podg1/cpu.shares"), "512");
    assert_eq!(g("cpu/kubepods/podg1/cpu.cfs_quota_us"), "50000");
    assert_eq!(g("cpu/kubepods/podg1/cpu.cfs_period_us"), "100000");
    assert_eq!(g("memory/kubepods/podg1/memory.limit_in_bytes"), (64 << 20).to_string());
    assert_eq!(g("pids/kubepods/podg1/pids.max"), "1024");

    cm.ensure_pod_cgroup(&burstable("b1")).unwrap();
    assert_eq!(g("cpu/kubepods/burstable/podb1/cpu.shares"), "102");
    assert!(!d.join("cpu/kubepods/burstable/podb1/cpu.cfs_quota_us").exists(), "no cpu limit, no quota");
    assert_eq!(g("memory/kubepods/burstable/podb1/memory.limit_in_bytes"), (32 << 20).to_string());
    assert_eq!(g("cpu/kubepods/burstable/cpu.shares"), "102", "the tier follows its pods' requests");

    cm.ensure_pod_cgroup(&best_effort("e1")).unwrap();
    assert_eq!(g("cpu/kubepods/besteffort/pode1/cpu.shares"), "2");
    assert!(!d.join("memory/kubepods/besteffort/pode1/memory.limit_in_bytes").exists());

    // A process left (a real cgroup.procs lists it): busy, nothing removed.
    std::fs::create_dir_all(d.join("cpu/kubepods/burstable/podb1/ctr")).unwrap();
    std::fs::write(d.join("cpu/kubepods/burstable/podb1/ctr/cgroup.procs"), "4242\n").unwrap();
    assert!(matches!(cm.remove_pod_cgroup("b1"), Err(Error::Busy(_))));
    assert!(d.join("memory/kubepods/burstable/podb1").is_dir());
    // Gone: removed from every hierarchy, runc's leftovers in others too. (In a plain directory
    // tree the control files must go first; cgroupfs has no such files to delete.)
    std::fs::create_dir_all(d.join("devices/kubepods/burstable/podb1/ctr")).unwrap();
    std::fs::create_dir_all(d.join("unified/kubepods/burstable/podb1/ctr")).unwrap();
    std::fs::remove_dir_all(d.join("cpu/kubepods/burstable/podb1")).unwrap();
    for c in ["cpuacct", "cpuset", "memory", "pids"] {
        std::fs::remove_dir_all(d.join(c).join("kubepods/burstable/podb1")).unwrap();
        std::fs::create_dir_all(d.join(c).join("kubepods/burstable/podb1")).unwrap();
    }
    cm.remove_pod_cgroup("b1").unwrap();
    for c in ["cpu", "cpuacct", "cpuset", "memory", "pids", "devices", "unified"] {
        assert!(!d.join(c).join("kubepods/burstable/podb1").exists(), "{c}");
    }
    assert_eq!(g("cpu/kubepods/burstable/cpu.shares"), "2", "no burstable pods left");
    // Removing what is not there is fine.
    cm.remove_pod_cgroup("nope").unwrap();

    // At start-up, pod cgroups nothing runs in are removed; a running pod keeps its own.
    std::fs::create_dir_all(d.join("cpu/kubepods/besteffort/podold")).unwrap();
    std::fs::create_dir_all(d.join("memory/kubepods/besteffort/podold")).unwrap();
    std::fs::create_dir_all(d.join("cpu/kubepods/podrunning")).unwrap();
    std::fs::write(d.join("cpu/kubepods/podrunning/cgroup.procs"), "1\n").unwrap();
    cm.start().unwrap();
    assert!(!d.join("cpu/kubepods/besteffort/podold").exists());
    assert!(!d.join("memory/kubepods/besteffort/podold").exists());
    assert!(d.join("cpu/kubepods/podrunning").exists());

    // After a restart, a burstable pod that still runs counts for the tier's shares again.
    cm.ensure_pod_cgroup(&burstable("b2")).unwrap();
    std::fs::write(d.join("cpu/kubepods/burstable/podb2/cgroup.procs"), "7\n").unwrap();
    let restarted = manager(d, config(d));
    std::fs::write(d.join("cpu/kubepods/burstable/cpu.shares"), "2").unwrap();
    restarted.start().unwrap();
    assert_eq!(g("cpu/kubepods/burstable/cpu.shares"), "102");
}

#[test]
fn v2_files_in_a_directory_tree() {
    let dir = v2_tree();
    let d = dir.path();
    let cm = manager(d, config(d));
    assert!(cm.hierarchy().is_v2());
    cm.start().unwrap();
    let enabled = "+cpuset +cpu +memory +pids +hugetlb";
    assert_eq!(read(d.join("cgroup.subtree_control")), enabled);
    assert_eq!(read(d.join("kubepods/cgroup.subtree_control")), enabled);
    assert_eq!(read(d.join("kubepods/cpu.weight")), "137");
    assert_eq!(read(d.join("kubepods/memory.max")), (7i64 << 30).to_string());
    assert_eq!(read(d.join("kubepods/besteffort/cpu.weight")), "1");

    cm.ensure_pod_cgroup(&guaranteed("g1")).unwrap();
    assert_eq!(read(d.join("kubepods/podg1/cpu.weight")), "20");
    assert_eq!(read(d.join("kubepods/podg1/cpu.max")), "50000 100000");
    assert_eq!(read(d.join("kubepods/podg1/memory.max")), (64 << 20).to_string());
    assert_eq!(read(d.join("kubepods/podg1/pids.max")), "1024");

    cm.ensure_pod_cgroup(&burstable("b1")).unwrap();
    assert_eq!(read(d.join("kubepods/burstable/cgroup.subtree_control")), enabled);
    assert_eq!(read(d.join("kubepods/burstable/podb1/cpu.weight")), "4");
    assert!(!d.join("kubepods/burstable/podb1/cpu.max").exists());
    assert_eq!(read(d.join("kubepods/burstable/podb1/memory.max")), (32 << 20).to_string());

    let off = manager(d, Config { cpu_cfs_quota: false, pod_pids_limit: -1, ..config(d) });
    off.ensure_pod_cgroup(&guaranteed("g2")).unwrap();
    assert_eq!(read(d.join("kubepods/podg2/cpu.max")), "max 100000");
    assert!(!d.join("kubepods/podg2/pids.max").exists());

    std::fs::remove_dir_all(d.join("kubepods/podg1")).unwrap();
    std::fs::create_dir(d.join("kubepods/podg1")).unwrap();
    cm.remove_pod_cgroup("g1").unwrap();
    assert!(!d.join("kubepods/podg1").exists());
}

#[test]
fn allocatable_subtracts_reservations_and_hard_eviction() {
    let dir = v1_tree();
    let cm = manager(dir.path(), config(dir.path()));
    let a = cm.allocatable();
    assert_eq!(a.cpu_milli, 3500);
    assert_eq!(a.memory, (8i64 << 30) - (1 << 30) - (100 << 20));
    let pct = manager(
        dir.path(),
        Config { eviction_hard: BTreeMap::from([("memory.available".into(), "10%".into())]), ..config(dir.path()) },
    );
    assert_eq!(pct.allocatable().memory, (8i64 << 30) - (1 << 30) - ((8i64 << 30) as f64 * 0.1f32 as f64) as i64);
    // Without enforceNodeAllocatable: pods kubepods gets the whole machine.
    let none = manager(dir.path(), Config { enforce_node_allocatable: vec!["none".into()], ..config(dir.path()) });
    assert_eq!(none.kubepods_config().memory, Some(8 << 30));
    assert_eq!(none.kubepods_config().cpu_shares, Some(4096));
}

#[test]
fn the_systemd_driver_needs_systemd_running() {
    let dir = v1_tree();
    let err = ContainerManager::new(
        Config { cgroup_driver: "systemd".into(), ..config(dir.path()) },
        Arc::new(fs::OsFs),
        CAPACITY,
    )
    .unwrap_err();
    assert!(matches!(err, Error::SystemdNotRunning));
    assert!(err.to_string().contains("systemd is not running"), "{err}");
    // Running, but no connection given: a clear error at the first slice.
    std::fs::create_dir_all(dir.path().join("no-systemd")).unwrap();
    let cm = ContainerManager::new(
        Config { cgroup_driver: "systemd".into(), ..config(dir.path()) },
        Arc::new(fs::OsFs),
        CAPACITY,
    )
    .unwrap();
    assert!(cm.start().unwrap_err().to_string().contains("no systemd connection"));
}

/// A systemd-driver manager on a v1 tree with a recording systemd that makes the slices'
/// directories in the cpu, memory and pids hierarchies.
fn systemd_manager(d: &Path) -> (ContainerManager, Arc<systemd::Recording>) {
    std::fs::create_dir_all(d.join("no-systemd")).unwrap();
    let bases = ["cpu", "memory", "pids"].iter().map(|c| d.join(c)).collect();
    let sd = Arc::new(systemd::Recording::new(252, bases));
    let cm =
        ContainerManager::new(Config { cgroup_driver: "systemd".into(), ..config(d) }, Arc::new(fs::OsFs), CAPACITY)
            .unwrap()
            .with_systemd(sd.clone());
    (cm, sd)
}

fn u64_prop(props: &[systemd::Property], name: &str) -> Option<u64> {
    props.iter().find(|p| p.name == name).and_then(|p| match p.value {
        systemd::Value::U64(v) => Some(v),
        _ => None,
    })
}

#[test]
fn the_systemd_driver_makes_the_qos_tiers_as_slices_with_node_allocatable() {
    use systemd::Call;
    let dir = v1_tree();
    let (cm, sd) = systemd_manager(dir.path());
    cm.start().unwrap();
    let calls = sd.calls();
    let units: Vec<String> = calls
        .iter()
        .map(|c| match c {
            Call::Start(u, _) => format!("start {u}"),
            Call::Set(u, _) => format!("set {u}"),
            Call::Stop(u) => format!("stop {u}"),
        })
        .collect();
    assert_eq!(
        units,
        [
            "start kubepods.slice",
            "set kubepods.slice",
            "start kubepods-burstable.slice",
            "start kubepods-besteffort.slice",
            "set kubepods-besteffort.slice"
        ]
    );
    let Call::Start(_, kubepods) = &calls[0] else { panic!() };
    // Node allocatable on kubepods.slice: 4 cpus − 500m; 8Gi − 1Gi.
    assert_eq!(u64_prop(kubepods, "CPUShares"), Some(3584));
    assert_eq!(u64_prop(kubepods, "MemoryLimit"), Some(7 << 30));
    assert!(
        kubepods.contains(&systemd::Property { name: "Wants", value: systemd::Value::Strs(vec!["-.slice".into()]) })
    );
    let Call::Set(_, besteffort) = &calls[4] else { panic!() };
    assert_eq!(u64_prop(besteffort, "CPUShares"), Some(2));
    assert!(dir.path().join("memory/kubepods.slice/kubepods-burstable.slice").is_dir());
    assert_eq!(cm.name(&cm.kubepods()), "/kubepods.slice");
}

#[test]
fn the_systemd_driver_makes_updates_and_stops_pod_slices() {
    use systemd::Call;
    let dir = v1_tree();
    let d = dir.path();
    let (cm, sd) = systemd_manager(d);
    cm.start().unwrap();
    let before = sd.calls().len();
    let pod = burstable("1234-ab");
    assert_eq!(cm.cgroup_parent(&pod), "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234_ab.slice");
    assert_eq!(cm.cgroup_parent(&guaranteed("g-1")), "/kubepods.slice/kubepods-podg_1.slice");
    cm.ensure_pod_cgroup(&pod).unwrap();
    let calls = sd.calls()[before..].to_vec();
    let Call::Start(unit, props) = &calls[0] else { panic!("{calls:?}") };
    assert_eq!(unit, "kubepods-burstable-pod1234_ab.slice");
    assert!(props.contains(&systemd::Property {
        name: "Wants",
        value: systemd::Value::Strs(vec!["kubepods-burstable.slice".into()])
    }));
    // Burstable 100m request, 32Mi limit, podPidsLimit 1024, no cpu limit.
    assert_eq!(u64_prop(props, "CPUShares"), Some(102));
    assert_eq!(u64_prop(props, "MemoryLimit"), Some(32 << 20));
    assert_eq!(u64_prop(props, "TasksMax"), Some(1024));
    // No cpu limit: no quota is sent (upstream sets none for such a Burstable pod).
    assert_eq!(u64_prop(props, "CPUQuotaPerSecUSec"), None);
    assert!(matches!(&calls[1], Call::Set(u, _) if u == unit));
    // The burstable tier's shares follow the pod's request.
    let Call::Set(tier, tier_props) = &calls[2] else { panic!("{calls:?}") };
    assert_eq!((tier.as_str(), u64_prop(tier_props, "CPUShares")), ("kubepods-burstable.slice", Some(102)));
    let slice = d.join("memory/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234_ab.slice");
    assert!(slice.is_dir());

    // A process left: busy, systemd not asked.
    std::fs::write(slice.join("cgroup.procs"), "42\n").unwrap();
    let n = sd.calls().len();
    assert!(matches!(cm.remove_pod_cgroup("1234-ab"), Err(Error::Busy(_))));
    assert_eq!(sd.calls().len(), n);
    std::fs::remove_file(slice.join("cgroup.procs")).unwrap();
    cm.remove_pod_cgroup("1234-ab").unwrap();
    let calls = sd.calls()[n..].to_vec();
    assert_eq!(calls[0], Call::Stop("kubepods-burstable-pod1234_ab.slice".into()));
    assert!(!slice.exists());
    let Call::Set(_, tier_props) = &calls[1] else { panic!("{calls:?}") };
    assert_eq!(u64_prop(tier_props, "CPUShares"), Some(2));
}

#[test]
fn the_systemd_driver_removes_empty_pod_slices_left_from_before_a_restart() {
    let dir = v1_tree();
    let d = dir.path();
    let (cm, sd) = systemd_manager(d);
    let orphan = d.join("cpu/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podaa_bb.slice");
    let running = d.join("cpu/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podcc.slice");
    std::fs::create_dir_all(&orphan).unwrap();
    std::fs::create_dir_all(&running).unwrap();
    std::fs::write(running.join("cgroup.procs"), "7\n").unwrap();
    std::fs::write(running.join("cpu.shares"), "512\n").unwrap();
    cm.start().unwrap();
    assert!(sd.calls().contains(&systemd::Call::Stop("kubepods-besteffort-podaa_bb.slice".into())));
    assert!(!orphan.exists());
    assert!(running.exists());
    // The running burstable pod counts again for the tier's shares (512 shares = 500m).
    assert_eq!(cm.burstable.lock().unwrap().get("cc"), Some(&500));
}
