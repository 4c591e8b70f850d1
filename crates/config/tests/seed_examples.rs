//! The 11 KubeletConfiguration examples of the seed document, extracted verbatim into
//! tests/seed/. Every one must decode with every field typed; validation stays faithful to
//! upstream, so the examples that upstream would reject are expected to fail on exactly the
//! fields upstream rejects.

use std::path::PathBuf;

use kubelet_config::{KubeletConfiguration, Quantity, load, unsupported_fields};

fn seed_files() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/seed");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// Fields upstream validation rejects in each example; examples not listed are valid.
fn expected_invalid(name: &str) -> &'static [&'static str] {
    match name {
        // maxParallelImagePulls 5 with serializeImagePulls true; system-reserved and
        // kube-reserved enforcement without systemReservedCgroup / kubeReservedCgroup.
        "01-full-reference.yaml" => {
            &["maxParallelImagePulls", "enforceNodeAllocatable[1]", "enforceNodeAllocatable[2]"]
        }
        // shutdownGracePeriod and shutdownGracePeriodByPodPriority together.
        "05-graceful-shutdown.yaml" => &["shutdownGracePeriodByPodPriority"],
        // maxParallelImagePulls 5 with serializeImagePulls true.
        "07-image-lifecycle.yaml" => &["maxParallelImagePulls"],
        _ => &[],
    }
}

#[test]
fn all_eleven_seed_examples_parse_and_validate_as_upstream() {
    let files = seed_files();
    assert_eq!(files.len(), 11);
    for path in files {
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let cfg = load(&path).unwrap_or_else(|e| panic!("{e}"));
        let expected = expected_invalid(&name);
        match cfg.validate() {
            Ok(()) => assert!(expected.is_empty(), "{name} should be invalid: {expected:?}"),
            Err(err) => {
                let mut fields: Vec<_> = err.errors.iter().map(|e| e.field.as_str()).collect();
                fields.sort();
                let mut want = expected.to_vec();
                want.sort();
                assert_eq!(fields, want, "{name}: {err}");
            }
        }
    }
}

#[test]
fn full_reference_example_is_typed() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/seed");
    let cfg = load(&dir.join("01-full-reference.yaml")).unwrap();
    assert_eq!(cfg.authentication.x509.client_ca_file, "/etc/kubernetes/pki/ca.crt");
    assert_eq!(cfg.authorization.webhook.cache_unauthorized_ttl.to_string(), "30s");
    assert_eq!(cfg.cluster_dns, vec!["10.96.0.10"]);
    assert_eq!(cfg.node_ip, "10.0.1.100");
    assert_eq!(cfg.pod_pids_limit, 4096);
    assert_eq!(cfg.system_reserved["memory"], Quantity::parse("512Mi").unwrap());
    assert_eq!(cfg.eviction_soft_grace_period["memory.available"], "1m30s");
    assert_eq!(cfg.eviction_max_pod_grace_period, 30);
    assert_eq!(cfg.image_pull_progress_deadline.to_string(), "1m0s");
    assert_eq!(cfg.logging.verbosity, 2);
    assert!(cfg.logging.vmodule.is_empty());
    assert!(cfg.feature_gates["RotateKubeletServerCertificate"]);
    assert_eq!(cfg.cni_bin_dir, "/opt/cni/bin");
    assert_eq!(cfg.register_with_taints[0].effect, "NoSchedule");
    assert_eq!(cfg.cpu_cfs_quota_period.to_string(), "100ms");
    assert_eq!(cfg.streaming_connection_idle_timeout.to_string(), "4h0m0s");
    // nodeStatusReportFrequency written explicitly: kept.
    assert_eq!(cfg.node_status_report_frequency.to_string(), "5m0s");
    // Written true, so not switched off by maxParallelImagePulls.
    assert!(cfg.serialize_image_pulls);
}

#[test]
fn seed_examples_report_their_unsupported_fields() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/seed");
    let cfg: KubeletConfiguration = load(&dir.join("09-hft-node.yaml")).unwrap();
    let unsupported = unsupported_fields(&cfg, &["evictionHard"]);
    assert_eq!(
        unsupported,
        vec![
            "cpuManagerPolicy",
            "memoryManagerPolicy",
            "topologyManagerPolicy",
            "systemReserved",
            "kubeReserved",
            "reservedSystemCPUs",
        ]
    );
}
