//! Property-based fuzzing of KubeletConfiguration decoding and validation: arbitrary text and
//! mutated real configurations give a value or an error naming a field, never a panic. Bounded
//! (a fixed number of cases) so it runs in CI on every change.

use kubelet_config::KubeletConfiguration;
use proptest::prelude::*;
use serde_json::Value;

const SEED: &str = include_str!("../../../examples/kubelet-config.yaml");
const FULL: &str = r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 0.0.0.0
port: 10250
readOnlyPort: 0
staticPodPath: /etc/kubernetes/manifests
syncFrequency: 1m
fileCheckFrequency: 20s
clusterDNS: [10.96.0.10]
clusterDomain: cluster.local
maxPods: 110
podPidsLimit: -1
cgroupDriver: cgroupfs
cpuCFSQuotaPeriod: 100ms
evictionHard: {memory.available: 100Mi, nodefs.available: 10%}
evictionSoft: {memory.available: 200Mi}
evictionSoftGracePeriod: {memory.available: 1m30s}
systemReserved: {cpu: 100m, memory: 100Mi}
kubeReserved: {cpu: 100m}
imageGCHighThresholdPercent: 85
imageGCLowThresholdPercent: 80
containerLogMaxSize: 10Mi
containerLogMaxFiles: 5
authentication: {anonymous: {enabled: false}, webhook: {enabled: true, cacheTTL: 2m}, x509: {clientCAFile: /etc/ca.crt}}
authorization: {mode: Webhook, webhook: {cacheAuthorizedTTL: 5m, cacheUnauthorizedTTL: 30s}}
registerWithTaints: [{key: a, value: b, effect: NoSchedule}]
tlsMinVersion: VersionTLS12
featureGates: {A: true}
"#;

fn check(text: &str) {
    if let Ok(cfg) = KubeletConfiguration::from_text(text) {
        let _ = cfg.validate();
    }
}

#[test]
fn the_seeds_are_valid() {
    for text in [SEED, FULL] {
        let cfg = KubeletConfiguration::from_text(text).unwrap();
        cfg.validate().unwrap();
    }
}

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "-?[0-9]{1,20}(ms|s|m|h|Mi|Gi|%|)".prop_map(Value::String),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z.]{1,12}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        check(&text);
    }

    /// One top-level or nested field of a real configuration replaced by an arbitrary value.
    #[test]
    fn mutated_configurations_never_panic(which in any::<bool>(), key in any::<prop::sample::Index>(), nested in any::<prop::sample::Index>(), new in json()) {
        let mut doc: Value = serde_yaml::from_str(if which { SEED } else { FULL }).unwrap();
        let obj = doc.as_object_mut().unwrap();
        let keys: Vec<String> = obj.keys().cloned().collect();
        let k = key.get(&keys).clone();
        match obj.get_mut(&k) {
            Some(Value::Object(inner)) if !inner.is_empty() => {
                let ks: Vec<String> = inner.keys().cloned().collect();
                let n = nested.get(&ks).clone();
                inner.insert(n, new);
            }
            Some(v) => *v = new,
            None => {}
        }
        check(&serde_json::to_string(&doc).unwrap());
        check(&serde_yaml::to_string(&doc).unwrap());
    }
}
