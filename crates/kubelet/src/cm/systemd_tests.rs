use super::*;

fn name(parts: &[&str]) -> CgroupName {
    CgroupName(parts.iter().map(|s| s.to_string()).collect())
}

fn find(props: &[Property], n: &str) -> Option<Value> {
    props.iter().find(|p| p.name == n).map(|p| p.value.clone())
}

#[test]
fn cgroup_names_become_nested_slices_with_dashes_escaped() {
    let pod = name(&["kubepods", "burstable", "pod1234-abcd-5678"]);
    assert_eq!(slice_name(&pod), "kubepods-burstable-pod1234_abcd_5678.slice");
    assert_eq!(to_systemd(&pod), "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234_abcd_5678.slice");
    assert_eq!(to_systemd(&name(&["kubepods"])), "/kubepods.slice");
    assert_eq!(to_systemd(&name(&["kubepods", "pod1-2"])), "/kubepods.slice/kubepods-pod1_2.slice");
    assert_eq!(to_systemd(&name(&[])), "/");
    assert_eq!(slice_name(&name(&[])), "-.slice");
    // A cgroupRoot with a dash is one level, not two.
    assert_eq!(to_systemd(&name(&["my-root", "kubepods"])), "/my_root.slice/my_root-kubepods.slice");
}

#[test]
fn expand_slice_follows_libcontainer() {
    assert_eq!(expand_slice("-.slice").unwrap(), "/");
    assert_eq!(expand_slice("a.slice").unwrap(), "/a.slice");
    assert_eq!(expand_slice("a-b-c.slice").unwrap(), "/a.slice/a-b.slice/a-b-c.slice");
    for bad in ["a--b.slice", "-a.slice", ".slice", "a.scope", "a/b.slice", "slice"] {
        assert_eq!(expand_slice(bad), Err(InvalidSlice(bad.into())), "{bad}");
    }
}

#[test]
fn parents_and_pod_uids_read_back_from_slice_names() {
    assert_eq!(parent_slice(&name(&["kubepods"])), "-.slice");
    assert_eq!(parent_slice(&name(&["kubepods", "burstable"])), "kubepods.slice");
    assert_eq!(parent_slice(&name(&["kubepods", "burstable", "pod1-2"])), "kubepods-burstable.slice");
    let burstable = name(&["kubepods", "burstable"]);
    assert_eq!(pod_uid_of_slice(&burstable, "kubepods-burstable-pod1_2_3.slice").as_deref(), Some("1-2-3"));
    assert_eq!(pod_uid_of_slice(&name(&["kubepods"]), "kubepods-podab_cd.slice").as_deref(), Some("ab-cd"));
    // The tiers inside kubepods.slice and container scopes are no pods.
    assert_eq!(pod_uid_of_slice(&name(&["kubepods"]), "kubepods-burstable.slice"), None);
    assert_eq!(pod_uid_of_slice(&burstable, "cri-containerd-abc.scope"), None);
    assert_eq!(pod_uid_of_slice(&burstable, "kubepods-besteffort-pod1.slice"), None);
}

#[test]
fn a_new_slice_wants_its_parent_with_accounting_and_no_default_dependencies() {
    let props = unit_properties(&name(&["kubepods", "besteffort"]), false);
    assert_eq!(
        find(&props, "Description"),
        Some(Value::Str("libcontainer container kubepods-besteffort.slice".into()))
    );
    assert_eq!(find(&props, "Wants"), Some(Value::Strs(vec!["kubepods.slice".into()])));
    assert_eq!(find(&props, "DefaultDependencies"), Some(Value::Bool(false)));
    for acct in ["MemoryAccounting", "CPUAccounting", "BlockIOAccounting", "TasksAccounting"] {
        assert_eq!(find(&props, acct), Some(Value::Bool(true)), "{acct}");
    }
    // cgroup v2 calls it IOAccounting; a slice is never delegated (only scopes are).
    let v2 = unit_properties(&name(&["kubepods"]), true);
    assert_eq!(find(&v2, "IOAccounting"), Some(Value::Bool(true)));
    assert_eq!(find(&v2, "BlockIOAccounting"), None);
    assert_eq!(find(&v2, "Delegate"), None);
}

#[test]
fn v1_resources_are_cpu_shares_memory_limit_quota_and_tasks() {
    // A Guaranteed 200m / 64Mi pod with podPidsLimit 256.
    let cfg = CgroupConfig {
        cpu_shares: Some(204),
        cpu_quota: Some(20_000),
        cpu_period: Some(100_000),
        memory: Some(64 << 20),
        pids: Some(256),
        ..Default::default()
    };
    let props = resource_properties(&cfg, false, 252);
    assert_eq!(
        props,
        vec![
            Property { name: "MemoryLimit", value: Value::U64(64 << 20) },
            Property { name: "CPUShares", value: Value::U64(204) },
            Property { name: "CPUQuotaPeriodUSec", value: Value::U64(100_000) },
            // 20000 µs per 100 ms = 200 ms per second.
            Property { name: "CPUQuotaPerSecUSec", value: Value::U64(200_000) },
            Property { name: "TasksMax", value: Value::U64(256) },
        ]
    );
    // systemd before 242 has no CPUQuotaPeriodUSec.
    assert_eq!(find(&resource_properties(&cfg, false, 241), "CPUQuotaPeriodUSec"), None);
}

#[test]
fn v2_resources_are_cpu_weight_and_memory_max() {
    let cfg = CgroupConfig { cpu_shares: Some(1024), memory: Some(1 << 30), ..Default::default() };
    let props = resource_properties(&cfg, true, 252);
    assert_eq!(find(&props, "CPUWeight"), Some(Value::U64(resources::shares_to_weight(1024))));
    assert_eq!(find(&props, "CPUWeight"), Some(Value::U64(39)));
    assert_eq!(find(&props, "MemoryMax"), Some(Value::U64(1 << 30)));
    assert_eq!(find(&props, "CPUShares"), None);
    assert_eq!(find(&props, "MemoryLimit"), None);
    // Minimum shares (BestEffort tier) is weight 1.
    let be = resource_properties(&CgroupConfig { cpu_shares: Some(2), ..Default::default() }, true, 252);
    assert_eq!(be, vec![Property { name: "CPUWeight", value: Value::U64(1) }]);
}

#[test]
fn unlimited_values_are_infinity_and_unset_ones_are_not_sent() {
    // Burstable without cpu limit: quota −1 → infinity; memory unlimited → infinity.
    let cfg = CgroupConfig {
        cpu_quota: Some(-1),
        cpu_period: Some(100_000),
        memory: Some(-1),
        pids: Some(-1),
        ..Default::default()
    };
    let props = resource_properties(&cfg, false, 252);
    assert_eq!(find(&props, "CPUQuotaPerSecUSec"), Some(Value::U64(INFINITY)));
    assert_eq!(find(&props, "MemoryLimit"), Some(Value::U64(INFINITY)));
    assert_eq!(find(&props, "TasksMax"), Some(Value::U64(INFINITY)));
    assert!(resource_properties(&CgroupConfig::default(), false, 252).is_empty());
    // pids 0 is "no limit set": nothing sent, as libcontainer.
    assert!(resource_properties(&CgroupConfig { pids: Some(0), ..Default::default() }, false, 252).is_empty());
}

#[test]
fn a_quota_is_rounded_up_to_whole_10ms_per_second() {
    let quota = |q: i64, period: u64| {
        let cfg = CgroupConfig { cpu_quota: Some(q), cpu_period: Some(period), ..Default::default() };
        find(&resource_properties(&cfg, false, 252), "CPUQuotaPerSecUSec")
    };
    // 1000 µs (the minimum quota) per 100 ms = 10 ms per second exactly.
    assert_eq!(quota(1000, 100_000), Some(Value::U64(10_000)));
    // 1500 µs per 100 ms = 15 ms/s → 20 ms/s.
    assert_eq!(quota(1500, 100_000), Some(Value::U64(20_000)));
    // 2 cpus with a 50 ms period: 100000 per 50000 → 2 s per second.
    assert_eq!(quota(100_000, 50_000), Some(Value::U64(2_000_000)));
    // No period given: the default 100 ms, and no period property.
    let cfg = CgroupConfig { cpu_quota: Some(50_000), ..Default::default() };
    let props = resource_properties(&cfg, false, 252);
    assert_eq!(props, vec![Property { name: "CPUQuotaPerSecUSec", value: Value::U64(500_000) }]);
}

#[test]
fn the_recording_systemd_makes_and_removes_slice_directories() {
    let dir = tempfile::tempdir().unwrap();
    let sd = Recording::new(252, vec![dir.path().join("cpu"), dir.path().join("memory")]);
    sd.start_transient_unit("kubepods.slice", &[]).unwrap();
    sd.start_transient_unit("kubepods-burstable.slice", &[]).unwrap();
    assert!(dir.path().join("memory/kubepods.slice/kubepods-burstable.slice").is_dir());
    assert_eq!(sd.start_transient_unit("kubepods.slice", &[]), Err(BusError::UnitExists("kubepods.slice".into())));
    sd.stop_unit("kubepods-burstable.slice").unwrap();
    assert!(!dir.path().join("cpu/kubepods.slice/kubepods-burstable.slice").exists());
    assert_eq!(sd.stop_unit("x.slice"), Err(BusError::NoSuchUnit("x.slice".into())));
}
