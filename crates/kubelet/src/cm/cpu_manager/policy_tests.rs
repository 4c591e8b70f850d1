//! Scenarios from upstream's policy_static_test.go on fake sysfs machines.

use super::*;
use crate::cm::topology::fake::FakeSys;
use k8s_openapi::api::core::v1::{PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

fn topo(sys: FakeSys) -> CpuTopology {
    CpuTopology::discover(sys.path()).unwrap()
}

pub(crate) fn container(name: &str, cpu: &str, mem: &str, limits: bool) -> Container {
    let q = |cpu: &str, mem: &str| {
        BTreeMap::from([("cpu".to_string(), Quantity(cpu.into())), ("memory".to_string(), Quantity(mem.into()))])
    };
    Container {
        name: name.into(),
        resources: Some(ResourceRequirements {
            requests: Some(q(cpu, mem)),
            limits: limits.then(|| q(cpu, mem)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(crate) fn pod(uid: &str, init: Vec<Container>, containers: Vec<Container>) -> Pod {
    Pod {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            uid: Some(uid.into()),
            name: Some(uid.into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(PodSpec { init_containers: Some(init), containers, ..Default::default() }),
        ..Default::default()
    }
}

fn static_policy(sys: FakeSys, reserved: usize, options: Options) -> (StaticPolicy, State) {
    let p = StaticPolicy::new(topo(sys), reserved, None, options).unwrap();
    let mut s = State::default();
    p.start(&mut s).unwrap();
    (p, s)
}

#[test]
fn reserved_cpus_are_taken_by_topology_and_start_fills_the_shared_pool() {
    let (p, s) = static_policy(FakeSys::dual_socket_ht(), 2, Options::default());
    assert_eq!(p.reserved.to_string(), "0,6");
    assert_eq!(s.default_cpu_set.to_string(), "0-11");
    let (p, s) =
        static_policy(FakeSys::dual_socket_ht(), 1, Options { strict_cpu_reservation: true, ..Default::default() });
    assert_eq!(p.reserved.to_string(), "0");
    assert_eq!(s.default_cpu_set.to_string(), "1-11");
    assert_eq!(
        StaticPolicy::new(topo(FakeSys::two_cpus()), 0, None, Options::default()).unwrap_err().to_string(),
        "[cpumanager] the static policy requires systemreserved.cpu + kubereserved.cpu to be greater than zero"
    );
}

#[test]
fn a_restored_state_is_validated_against_the_machine() {
    let p = StaticPolicy::new(topo(FakeSys::dual_socket_ht()), 2, None, Options::default()).unwrap();
    let mut s = State { default_cpu_set: CpuSet::parse("0-1").unwrap(), ..Default::default() };
    assert_eq!(
        p.start(&mut s).unwrap_err().to_string(),
        r#"not all reserved cpus: "0,6" are present in defaultCpuSet: "0-1""#
    );
    let strict = StaticPolicy::new(
        topo(FakeSys::dual_socket_ht()),
        2,
        None,
        Options { strict_cpu_reservation: true, ..Default::default() },
    )
    .unwrap();
    let mut s = State { default_cpu_set: CpuSet::parse("0-1").unwrap(), ..Default::default() };
    assert_eq!(
        strict.start(&mut s).unwrap_err().to_string(),
        r#"some of strictly reserved cpus: "0" are present in defaultCpuSet: "0-1""#
    );
    let mut s = State { default_cpu_set: CpuSet::parse("0-1,3-11").unwrap(), ..Default::default() };
    s.set("fakePod", "0", CpuSet::parse("0-2").unwrap());
    assert_eq!(
        p.start(&mut s).unwrap_err().to_string(),
        r#"pod: fakePod, container: 0 cpuset: "0-2" overlaps with default cpuset "0-1,3-11""#
    );
    let mut s = State { default_cpu_set: CpuSet::parse("0-6").unwrap(), ..Default::default() };
    assert_eq!(
        p.start(&mut s).unwrap_err().to_string(),
        r#"current set of available CPUs "0-11" doesn't match with CPUs in state "0-6""#
    );
}

#[test]
fn guaranteed_integer_containers_get_exclusive_cpus_and_give_them_back() {
    let (mut p, mut s) = static_policy(FakeSys::dual_socket_ht(), 1, Options::default());
    let g = pod("g", vec![], vec![container("c", "2", "1Gi", true)]);
    p.allocate(&mut s, &g, &g.spec.as_ref().unwrap().containers[0], TopologyHint::default()).unwrap();
    // Reserved is CPU 0; a free core on the emptier socket... the packing takes core 1 (1,7).
    let got = s.get("g", "c").unwrap().clone();
    assert_eq!(got.len(), 2);
    assert!(!got.contains(0));
    assert!(got.intersection(&s.default_cpu_set).is_empty());
    StaticPolicy::remove_container(&mut s, "g", "c");
    assert_eq!(s.default_cpu_set.to_string(), "0-11");
    // Burstable, fractional and BestEffort containers stay in the shared pool.
    for (cpu, limits) in [("2", false), ("1500m", true)] {
        let b = pod("b", vec![], vec![container("c", cpu, "1Gi", limits)]);
        p.allocate(&mut s, &b, &b.spec.as_ref().unwrap().containers[0], TopologyHint::default()).unwrap();
        assert!(s.get("b", "c").is_none());
    }
}

#[test]
fn allocation_follows_the_hint_and_refuses_what_does_not_fit() {
    let (mut p, mut s) = static_policy(FakeSys::dual_socket_ht(), 1, Options::default());
    let g = pod("g", vec![], vec![container("c", "2", "1Gi", true)]);
    let c = &g.spec.as_ref().unwrap().containers[0];
    p.allocate(&mut s, &g, c, TopologyHint::new(BitMask::of(&[1]), true)).unwrap();
    assert!(s.get("g", "c").unwrap().is_subset_of(&p.topology.details.cpus_in_numa_nodes(&[1])));
    let big = pod("big", vec![], vec![container("c", "10", "1Gi", true)]);
    let err = p.allocate(&mut s, &big, &big.spec.as_ref().unwrap().containers[0], TopologyHint::default()).unwrap_err();
    assert_eq!(err.reason, "UnexpectedAdmissionError");
    assert_eq!(
        err.message,
        "Allocate failed due to not enough cpus available to satisfy request: requested=10, available=9, which is unexpected"
    );
}

#[test]
fn full_pcpus_only_refuses_odd_requests_with_smt_alignment_error() {
    let opts = Options { full_pcpus_only: true, ..Default::default() };
    let (mut p, mut s) = static_policy(FakeSys::dual_socket_ht(), 1, opts);
    let g = pod("g", vec![], vec![container("c", "1", "1Gi", true)]);
    let err = p.allocate(&mut s, &g, &g.spec.as_ref().unwrap().containers[0], TopologyHint::default()).unwrap_err();
    assert_eq!(err.reason, "SMTAlignmentError");
    assert_eq!(err.message, "SMT Alignment Error: requested 1 cpus not multiple cpus per core = 2");
    // The reserved CPU 0 takes its sibling 6 out of the physical CPUs: 10 are left.
    let g = pod("g2", vec![], vec![container("c", "12", "1Gi", true)]);
    let err = p.allocate(&mut s, &g, &g.spec.as_ref().unwrap().containers[0], TopologyHint::default()).unwrap_err();
    assert_eq!(
        err.message,
        "SMT Alignment Error: not enough free physical CPUs: available physical CPUs = 10, requested CPUs = 12, CPUs per core = 2"
    );
    let g = pod("g3", vec![], vec![container("c", "2", "1Gi", true)]);
    p.allocate(&mut s, &g, &g.spec.as_ref().unwrap().containers[0], TopologyHint::default()).unwrap();
    let got = s.get("g3", "c").unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(p.topology.core_of(got.to_vec()[0]), p.topology.core_of(got.to_vec()[1]), "one whole core: {got}");
}

#[test]
fn init_container_cpus_are_reused_by_the_app_containers() {
    let (mut p, mut s) = static_policy(FakeSys::dual_socket_ht(), 1, Options::default());
    let g = pod("g", vec![container("init", "4", "1Gi", true)], vec![container("app", "4", "1Gi", true)]);
    let spec = g.spec.clone().unwrap();
    p.allocate(&mut s, &g, &spec.init_containers.as_ref().unwrap()[0], TopologyHint::default()).unwrap();
    p.allocate(&mut s, &g, &spec.containers[0], TopologyHint::default()).unwrap();
    assert_eq!(s.get("g", "init"), s.get("g", "app"));
    assert_eq!(StaticPolicy::pod_guaranteed_cpus(&g), 4);
    // Removing one keeps the CPUs out of the shared pool while the sibling holds them.
    StaticPolicy::remove_container(&mut s, "g", "init");
    assert!(s.get("g", "app").unwrap().intersection(&s.default_cpu_set).is_empty());
}

#[test]
fn hints_prefer_the_narrowest_numa_masks() {
    let (p, s) = static_policy(FakeSys::dual_socket_ht(), 1, Options::default());
    let g = pod("g", vec![], vec![container("c", "2", "1Gi", true)]);
    let hints = p.container_hints(&s, &g, &g.spec.as_ref().unwrap().containers[0]).unwrap();
    let view: Vec<(u64, bool)> = hints.iter().map(|h| (h.affinity.unwrap().0, h.preferred)).collect();
    assert_eq!(view, vec![(0b01, true), (0b10, true), (0b11, false)]);
    let big = pod("g", vec![], vec![container("c", "7", "1Gi", true)]);
    let hints = p.container_hints(&s, &big, &big.spec.as_ref().unwrap().containers[0]).unwrap();
    let view: Vec<(u64, bool)> = hints.iter().map(|h| (h.affinity.unwrap().0, h.preferred)).collect();
    assert_eq!(view, vec![(0b11, true)]);
    let be = pod("b", vec![], vec![container("c", "2", "1Gi", false)]);
    assert!(p.container_hints(&s, &be, &be.spec.as_ref().unwrap().containers[0]).is_none());
}

#[test]
fn options_are_gated_as_upstream() {
    let opts = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
    let none = |_: &str| false;
    let beta = |g: &str| g == "CPUManagerPolicyBetaOptions";
    assert!(Options::parse(&opts("full-pcpus-only", "true"), none).unwrap().full_pcpus_only);
    assert_eq!(
        Options::parse(&opts("strict-cpu-reservation", "true"), none).unwrap_err().to_string(),
        r#"CPU Manager Policy Beta-level Options not enabled, but option "strict-cpu-reservation" provided"#
    );
    assert!(Options::parse(&opts("distribute-cpus-across-numa", "true"), beta).unwrap().distribute_cpus_across_numa);
    assert_eq!(
        Options::parse(&opts("align-by-socket", "true"), beta).unwrap_err().to_string(),
        r#"CPU Manager Policy Alpha-level Options not enabled, but option "align-by-socket" provided"#
    );
    assert_eq!(
        Options::parse(&opts("bogus", "true"), beta).unwrap_err().to_string(),
        r#"unknown CPU Manager Policy option: "bogus""#
    );
    assert!(Options::parse(&opts("full-pcpus-only", "yes"), beta).is_err());
}
