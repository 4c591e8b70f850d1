//! Merging and admission, after upstream's topologymanager policy and scope tests.

use super::*;
use k8s_openapi::api::core::v1::PodSpec;

fn mask(bits: &[usize]) -> BitMask {
    BitMask::of(bits)
}

fn hint(bits: &[usize], preferred: bool) -> TopologyHint {
    TopologyHint::new(mask(bits), preferred)
}

fn cpu(hints: Vec<TopologyHint>) -> Hints {
    Hints::from([("cpu".to_string(), Some(hints))])
}

fn manager(policy: Policy, nodes: usize) -> TopologyManager {
    let numa = NumaInfo { nodes: (0..nodes).collect(), distances: BTreeMap::new() };
    TopologyManager::new(policy, Scope::Container, Options::default(), numa, Arc::default()).unwrap()
}

#[test]
fn best_effort_takes_the_narrowest_preferred_hint_all_providers_share() {
    let m = manager(Policy::BestEffort, 2);
    let a = cpu(vec![hint(&[0], true), hint(&[1], true), hint(&[0, 1], false)]);
    let b = Hints::from([("memory".to_string(), Some(vec![hint(&[1], true), hint(&[0, 1], false)]))]);
    assert_eq!(m.merge(&[a.clone(), b]), (hint(&[1], true), true));
    // No preference from anyone: every node, preferred.
    assert_eq!(m.merge(&[Hints::new()]), (hint(&[0, 1], true), true));
    // A provider that cannot be satisfied makes the merge non-preferred; best-effort admits.
    let none = Hints::from([("cpu".to_string(), Some(vec![]))]);
    assert_eq!(m.merge(&[a, none]), (hint(&[0], false), true));
}

#[test]
fn restricted_and_single_numa_node_refuse_what_is_not_preferred() {
    let m = manager(Policy::Restricted, 2);
    assert_eq!(m.merge(&[cpu(vec![hint(&[0, 1], false)])]), (hint(&[0, 1], false), false));
    assert_eq!(m.merge(&[cpu(vec![hint(&[0, 1], true)])]), (hint(&[0, 1], true), true));
    let m = manager(Policy::SingleNumaNode, 2);
    // Only single-node preferred hints survive; a preferred two-node hint does not.
    assert!(!m.merge(&[cpu(vec![hint(&[0, 1], true)])]).1);
    assert_eq!(m.merge(&[cpu(vec![hint(&[1], true), hint(&[0, 1], false)])]), (hint(&[1], true), true));
    // "Any node" from everyone is the default affinity, reported as no affinity.
    assert_eq!(m.merge(&[Hints::new()]), (TopologyHint { affinity: None, preferred: true }, true));
}

#[test]
fn prefer_closest_numa_nodes_breaks_ties_by_distance() {
    let distances = BTreeMap::from([
        (0, vec![10, 11, 21, 21]),
        (1, vec![11, 10, 21, 21]),
        (2, vec![21, 21, 10, 11]),
        (3, vec![21, 21, 11, 10]),
    ]);
    let numa = NumaInfo { nodes: vec![0, 1, 2, 3], distances };
    let opts = Options { prefer_closest_numa: true, ..Default::default() };
    let m = TopologyManager::new(Policy::BestEffort, Scope::Container, opts, numa.clone(), Arc::default()).unwrap();
    let hints = cpu(vec![hint(&[0, 2], true), hint(&[2, 3], true)]);
    // 0b0101 is "less than" 0b1100 but nodes 2 and 3 are closer together.
    assert_eq!(m.merge(std::slice::from_ref(&hints)).0, hint(&[2, 3], true));
    let reversed = cpu(vec![hint(&[2, 3], true), hint(&[0, 2], true)]);
    assert_eq!(m.merge(&[reversed]).0, hint(&[2, 3], true));
    let plain =
        TopologyManager::new(Policy::BestEffort, Scope::Container, Options::default(), numa, Arc::default()).unwrap();
    assert_eq!(plain.merge(&[hints]).0, hint(&[0, 2], true));
}

#[test]
fn options_and_machine_size_are_checked_at_start() {
    let opts = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
    let on = |_: &str| true;
    assert_eq!(Options::parse(&opts("max-allowable-numa-nodes", "16"), on).unwrap().max_allowable_numa_nodes, 16);
    assert_eq!(
        Options::parse(&opts("max-allowable-numa-nodes", "4"), on).unwrap_err().to_string(),
        r#"the minimum value of "max-allowable-numa-nodes" should not be less than 8"#
    );
    assert_eq!(
        Options::parse(&opts("max-allowable-numa-nodes", "16"), |_: &str| false).unwrap_err().to_string(),
        r#"Topology Manager Policy Beta-level Options not enabled, but option "max-allowable-numa-nodes" provided"#
    );
    assert!(Options::parse(&opts("nope", "1"), on).is_err());
    let numa = NumaInfo { nodes: (0..9).collect(), distances: BTreeMap::new() };
    let err = TopologyManager::new(Policy::BestEffort, Scope::Pod, Options::default(), numa, Arc::default());
    assert_eq!(err.err().unwrap().to_string(), "unsupported on machines with more than 8 NUMA Nodes");
}

struct Fake {
    hints: Hints,
    allocated: Mutex<Vec<(String, TopologyHint)>>,
    store: Arc<AffinityStore>,
    fail: bool,
}

impl HintProvider for Fake {
    fn topology_hints(&self, _: &Pod, _: &Container) -> Hints {
        self.hints.clone()
    }
    fn pod_topology_hints(&self, _: &Pod) -> Hints {
        self.hints.clone()
    }
    fn allocate(&self, pod: &Pod, c: &Container) -> Result<(), AdmitError> {
        if self.fail {
            return Err(AdmitError::unexpected("no luck"));
        }
        let hint = self.store.get(pod.metadata.uid.as_deref().unwrap(), &c.name);
        self.allocated.lock().unwrap().push((c.name.clone(), hint));
        Ok(())
    }
}

fn two_container_pod() -> Pod {
    let c = |n: &str| Container { name: n.into(), ..Default::default() };
    Pod {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            uid: Some("u".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            init_containers: Some(vec![c("init")]),
            containers: vec![c("app")],
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn admission_stores_the_hint_then_allocates_or_refuses_with_upstreams_reasons() {
    for scope in [Scope::Container, Scope::Pod] {
        let store = Arc::new(AffinityStore::default());
        let numa = NumaInfo { nodes: vec![0, 1], distances: BTreeMap::new() };
        let mut m = TopologyManager::new(Policy::Restricted, scope, Options::default(), numa, store.clone()).unwrap();
        let fake = Arc::new(Fake {
            hints: cpu(vec![hint(&[1], true)]),
            allocated: Mutex::default(),
            store: store.clone(),
            fail: false,
        });
        m.add_provider(fake.clone());
        m.admit(&two_container_pod(), &[]).unwrap();
        let got = fake.allocated.lock().unwrap().clone();
        assert_eq!(got, vec![("init".to_string(), hint(&[1], true)), ("app".to_string(), hint(&[1], true))]);
    }
    let numa = NumaInfo { nodes: vec![0, 1], distances: BTreeMap::new() };
    let store = Arc::new(AffinityStore::default());
    let mut m =
        TopologyManager::new(Policy::Restricted, Scope::Container, Options::default(), numa, store.clone()).unwrap();
    m.add_provider(Arc::new(Fake {
        hints: cpu(vec![hint(&[0, 1], false)]),
        allocated: Mutex::default(),
        store: store.clone(),
        fail: false,
    }));
    let r = m.admit(&two_container_pod(), &[]).unwrap_err();
    assert_eq!(
        (r.reason.as_str(), r.message.as_str()),
        ("TopologyAffinityError", "Resources cannot be allocated with Topology locality")
    );
    let mut none = manager(Policy::None, 1);
    none.add_provider(Arc::new(Fake { hints: Hints::new(), allocated: Mutex::default(), store, fail: true }));
    let r = none.admit(&two_container_pod(), &[]).unwrap_err();
    assert_eq!(
        (r.reason.as_str(), r.message.as_str()),
        ("UnexpectedAdmissionError", "Allocate failed due to no luck, which is unexpected")
    );
}
