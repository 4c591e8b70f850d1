//! Bad input: the malformed-manifest corpus (tests/corpus/manifests, each file says which field its
//! error must name) and property-based fuzzing of manifest decoding, static-pod preparation and
//! validation. Bounded (a fixed number of cases) so it runs in CI on every change.

use kubelet::sources::SourceKind;
use kubelet::sources::manifest::{self, MAX_MANIFEST_BYTES, Origin};
use proptest::prelude::*;
use serde_json::Value;
use std::path::PathBuf;

fn corpus() -> Vec<(PathBuf, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/manifests");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files.into_iter().map(|p| (p.clone(), std::fs::read_to_string(&p).unwrap())).collect()
}

fn origin(name: &str) -> Origin {
    Origin { kind: SourceKind::File, location: format!("/etc/kubernetes/manifests/{name}") }
}

/// Decode and prepare as the file source does; the error text as the kubelet logs it.
fn admit(bytes: &[u8], name: &str) -> Result<(), String> {
    let o = origin(name);
    let pods = manifest::decode(bytes, &o).map_err(|e| e.to_string())?;
    for pod in pods {
        manifest::prepare(pod, &o, "node-a", "2026-01-01T00:00:00Z").map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[test]
fn every_corpus_manifest_is_refused_naming_its_field() {
    let files = corpus();
    assert!(files.len() >= 20, "corpus missing: {}", files.len());
    for (path, text) in files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{name}: first line must be '# expect: <text>'"));
        match admit(text.as_bytes(), &name) {
            Ok(()) => panic!("{name} was accepted"),
            Err(e) => {
                assert!(e.contains(expect), "{name}: error does not name {expect:?}:\n  {e}");
                assert!(e.contains(&name), "{name}: error does not name the file:\n  {e}");
            }
        }
    }
}

#[test]
fn oversized_manifests_are_refused_before_parsing() {
    let mut big = b"apiVersion: v1\nkind: Pod\nmetadata: {name: big}\n# ".to_vec();
    big.resize(MAX_MANIFEST_BYTES + 1, b'x');
    let e = admit(&big, "big.yaml").unwrap_err();
    assert!(e.contains("more than the 10485760 allowed"), "{e}");
}

#[test]
fn a_valid_manifest_passes() {
    let ok = "apiVersion: v1\nkind: Pod\nmetadata: {name: fine}\nspec:\n  containers: [{name: app, image: busybox, livenessProbe: {tcpSocket: {port: http}}, ports: [{name: http, containerPort: 80}], resources: {requests: {cpu: 100m}, limits: {cpu: 200m}}}]\n  volumes: [{name: v, emptyDir: {}}]\n";
    admit(ok.as_bytes(), "fine.yaml").unwrap();
}

/// Arbitrary JSON values, a few levels deep.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "[a-zA-Z0-9_./:-]{0,12}".prop_map(Value::String),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z]{1,10}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every path (as a list of keys/indexes) in a JSON value.
fn paths(v: &Value, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    out.push(prefix.clone());
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                let mut p = prefix.clone();
                p.push(k.clone());
                paths(c, p, out);
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                let mut p = prefix.clone();
                p.push(i.to_string());
                paths(c, p, out);
            }
        }
        _ => {}
    }
}

fn replace(v: &mut Value, path: &[String], new: Value) {
    match path.split_first() {
        None => *v = new,
        Some((k, rest)) => {
            let child = match v {
                Value::Object(m) => m.get_mut(k),
                Value::Array(a) => k.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
                _ => None,
            };
            if let Some(c) = child {
                replace(c, rest, new);
            }
        }
    }
}

/// The seed documents the mutations start from: a rich valid pod and every corpus manifest.
fn seeds() -> Vec<Value> {
    let rich = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"rich","namespace":"ns","labels":{"a":"b"}},
      "spec":{"terminationGracePeriodSeconds":5,"restartPolicy":"OnFailure","dnsPolicy":"ClusterFirst",
        "volumes":[{"name":"d","emptyDir":{"sizeLimit":"1Gi"}},{"name":"h","hostPath":{"path":"/tmp","type":"Directory"}}],
        "initContainers":[{"name":"init","image":"busybox","command":["true"]}],
        "containers":[{"name":"app","image":"busybox:1.36","args":["x"],"env":[{"name":"A","value":"1"},
          {"name":"B","valueFrom":{"fieldRef":{"fieldPath":"metadata.name"}}}],
          "ports":[{"name":"http","containerPort":8080,"hostPort":8080,"protocol":"TCP"}],
          "volumeMounts":[{"name":"d","mountPath":"/d","subPath":"x"}],
          "livenessProbe":{"httpGet":{"path":"/","port":"http"},"periodSeconds":1},
          "lifecycle":{"preStop":{"exec":{"command":["sleep","1"]}}},
          "resources":{"requests":{"cpu":"100m","memory":"64Mi"},"limits":{"cpu":"1","memory":"128Mi"}}}]}}"#;
    let mut out = vec![serde_json::from_str(rich).unwrap()];
    for (_, text) in corpus() {
        if let Ok(v) = serde_yaml::from_str::<Value>(&text) {
            out.push(v);
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, failure_persistence: None, ..ProptestConfig::default() })]

    /// Arbitrary bytes: an error or a pod, never a panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = admit(&bytes, "fuzz.yaml");
    }

    /// A valid or corpus document with one subtree replaced by an arbitrary value: never a panic,
    /// and any refusal names the file.
    #[test]
    fn mutated_manifests_never_panic(seed in 0usize..64, pick in any::<prop::sample::Index>(), new in json()) {
        let seeds = seeds();
        let mut doc = seeds[seed % seeds.len()].clone();
        let mut all = Vec::new();
        paths(&doc, Vec::new(), &mut all);
        let path = pick.get(&all).clone();
        replace(&mut doc, &path, new);
        let bytes = serde_json::to_vec(&doc).unwrap();
        if let Err(e) = admit(&bytes, "mutated.yaml") {
            prop_assert!(e.contains("mutated.yaml"), "{}", e);
        }
    }
}
