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
fn systemd_driver_is_refused_clearly() {
    let dir = v1_tree();
    let err = ContainerManager::new(
        Config { cgroup_driver: "systemd".into(), ..config(dir.path()) },
        Arc::new(fs::OsFs),
        CAPACITY,
    )
    .unwrap_err();
    assert!(matches!(err, Error::SystemdNotRunning));
    assert!(err.to_string().contains("systemd is not running"), "{err}");
    std::fs::create_dir_all(dir.path().join("no-systemd")).unwrap();
    let err = ContainerManager::new(
        Config { cgroup_driver: "systemd".into(), ..config(dir.path()) },
        Arc::new(fs::OsFs),
        CAPACITY,
    )
    .unwrap_err();
    assert!(matches!(err, Error::SystemdNotSupported));
}
