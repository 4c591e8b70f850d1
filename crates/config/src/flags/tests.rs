use std::path::PathBuf;

use super::*;
use crate::types::KubeletConfiguration;

fn parse(args: &[&str]) -> Parsed {
    Flags::parse_args(std::iter::once("kubelet").chain(args.iter().copied())).unwrap()
}

fn flags(args: &[&str]) -> Flags {
    parse(args).flags
}

/// A systemd `ExecStart` line split as the shell would (no quoting needed here).
fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

#[test]
fn flags_override_file() {
    let mut cfg = KubeletConfiguration::from_text(
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
         maxPods: 20\ncgroupDriver: systemd\nclusterDomain: file.local\n\
         featureGates:\n  A: true\n  B: true\n",
    )
    .unwrap();
    let f = flags(&[
        "--max-pods=30",
        "--cgroup-driver",
        "cgroupfs",
        "--cluster-dns=10.0.0.10,10.0.0.11",
        "--feature-gates=B=false,C=true",
        "--sync-frequency=30s",
        "--register-node=false",
        "--fail-swap-on",
        "--seccomp-default",
        "-v",
        "4",
    ]);
    let node = f.apply(&mut cfg);
    assert_eq!(cfg.max_pods, 30);
    assert_eq!(cfg.cgroup_driver, "cgroupfs");
    assert_eq!(cfg.cluster_domain, "file.local", "flag not given: file wins");
    assert_eq!(cfg.cluster_dns, vec!["10.0.0.10", "10.0.0.11"]);
    assert_eq!(cfg.feature_gates, [("A".into(), true), ("B".into(), false), ("C".into(), true)].into());
    assert_eq!(cfg.sync_frequency, Duration::from_secs(30));
    assert!(!cfg.register_node);
    assert!(cfg.fail_swap_on);
    assert!(cfg.seccomp_default);
    assert_eq!(cfg.logging.verbosity, 4);
    assert_eq!(node.verbosity, 4);
    assert_eq!(node.root_dir, PathBuf::from("/var/lib/kubelet"));
}

#[test]
fn no_flags_change_nothing() {
    let mut cfg = KubeletConfiguration::default();
    let parsed = parse(&[]);
    let node = parsed.flags.apply(&mut cfg);
    assert_eq!(cfg, KubeletConfiguration::default());
    assert_eq!(node.kubeconfig, None);
    assert_eq!(node.node_ip, None);
    assert!(parsed.given.is_empty());
    assert!(parsed.deprecation_warnings().is_empty());
}

#[test]
fn kubeadm_drop_in_command_line() {
    // 10-kubeadm.conf: $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS
    let line = "--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf \
        --config=/var/lib/kubelet/config.yaml \
        --container-runtime-endpoint=unix:///run/containerd/containerd.sock \
        --pod-infra-container-image=registry.k8s.io/pause:3.10 \
        --node-ip=10.0.0.7,fd00::7 --cloud-provider=external";
    let parsed = parse(&words(line));
    let mut cfg = KubeletConfiguration::default();
    let node = parsed.flags.apply(&mut cfg);
    assert_eq!(node.bootstrap_kubeconfig, Some(PathBuf::from("/etc/kubernetes/bootstrap-kubelet.conf")));
    assert_eq!(node.kubeconfig, Some(PathBuf::from("/etc/kubernetes/kubelet.conf")));
    assert_eq!(node.config, Some(PathBuf::from("/var/lib/kubelet/config.yaml")));
    assert_eq!(cfg.container_runtime_endpoint, "unix:///run/containerd/containerd.sock");
    assert_eq!(node.pod_infra_container_image.as_deref(), Some("registry.k8s.io/pause:3.10"));
    assert_eq!(node.node_ip.as_deref(), Some("10.0.0.7,fd00::7"));
    assert!(node.external_cloud_provider());
    assert_eq!(
        parsed.deprecation_warnings(),
        vec![
            "Flag --container-runtime-endpoint has been deprecated, This parameter should be set via the config file \
             specified by the Kubelet's --config flag. See https://kubernetes.io/docs/tasks/administer-cluster/\
             kubelet-config-file/ for more information.",
            "Flag --pod-infra-container-image has been deprecated, will be removed in 1.35. Image garbage collector \
             will get sandbox image information from CRI.",
        ]
    );
    assert!(parsed.not_acted_on().is_empty());
}

#[test]
fn cloud_node_command_line_with_many_flags() {
    // An EKS/GKE-style unit: space- and '='-separated values, deprecated and cAdvisor flags.
    let line = "--v=2 --cloud-provider=external --node-ip 10.0.1.23 \
        --hostname-override=ip-10-0-1-23.us-west-2.compute.internal \
        --provider-id aws:///us-west-2a/i-0123456789abcdef0 \
        --node-labels=eks.amazonaws.com/nodegroup=ng-1,eks.amazonaws.com/capacityType=ON_DEMAND \
        --node-labels=topology.kubernetes.io/zone=us-west-2a \
        --register-with-taints=dedicated=gpu:NoSchedule,spot:PreferNoSchedule \
        --max-pods=29 --pods-per-core 0 --pod-max-pids=4096 \
        --image-credential-provider-config /etc/eks/image-credential-provider/config.json \
        --image-credential-provider-bin-dir=/etc/eks/image-credential-provider \
        --kubeconfig /var/lib/kubelet/kubeconfig --cert-dir=/var/lib/kubelet/pki/ \
        --container-runtime-endpoint unix:///run/containerd/containerd.sock \
        --runtime-cgroups=/system.slice/containerd.service \
        --experimental-mounter-path=/home/kubernetes/containerized_mounter/mounter \
        --volume-plugin-dir=/home/kubernetes/flexvolume --node-status-max-images=25 \
        --registry-qps=10 --registry-burst 20 --event-qps=0 --kube-api-qps=20 --kube-api-burst=40 \
        --eviction-hard=memory.available<100Mi,nodefs.available<10%,nodefs.inodesFree<5% \
        --eviction-soft=memory.available<300Mi --eviction-soft-grace-period=memory.available=1m30s \
        --eviction-max-pod-grace-period=60 --eviction-pressure-transition-period 30s \
        --eviction-minimum-reclaim=imagefs.available=2Gi \
        --kube-reserved=cpu=1060m,memory=1019Mi,ephemeral-storage=41Gi --system-reserved cpu=100m \
        --system-reserved-cgroup= --enforce-node-allocatable=pods \
        --feature-gates=RotateKubeletServerCertificate=true,ExecProbeTimeout=1 \
        --cgroup-root=/ --cgroup-driver=systemd --cgroups-per-qos=true \
        --cpu-manager-policy=static --cpu-manager-policy-options=full-pcpus-only=true \
        --topology-manager-policy=single-numa-node --reserved-cpus=0-1 \
        --reserved-memory 0:memory=1Gi --reserved-memory=1:memory=2Gi,hugepages-1Gi=1Gi \
        --manifest-url=http://127.0.0.1:8080/pods --manifest-url-header=a:hello,b:again --manifest-url-header b:beautiful \
        --container-log-max-size=50Mi --container-log-max-files=3 \
        --rotate-certificates --rotate-server-certificates=false --anonymous-auth=false \
        --authentication-token-webhook --authorization-mode=Webhook --client-ca-file=/etc/kubernetes/pki/ca.crt \
        --read-only-port=0 --address=0.0.0.0 --healthz-bind-address 127.0.0.1 --healthz-port=10248 \
        --tls-cipher-suites=TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 \
        --tls-min-version=VersionTLS12 --cluster-dns=172.20.0.10 --cluster-domain=cluster.local \
        --resolv-conf=/run/systemd/resolve/resolv.conf --streaming-connection-idle-timeout=5m \
        --protect-kernel-defaults --make-iptables-util-chains=true --iptables-masquerade-bit=14 \
        --allowed-unsafe-sysctls=net.core.somaxconn,kernel.msg* --serialize-image-pulls=false \
        --image-gc-high-threshold=85 --image-gc-low-threshold 80 --minimum-image-ttl-duration=2m \
        --logging-format=text --vmodule=pod*=4 --log-flush-frequency=10s \
        --lock-file=/var/run/lock/kubelet.lock --exit-on-lock-contention \
        --maximum-dead-containers=100 --minimum-container-ttl-duration=1m --housekeeping-interval=10s \
        --docker-only --containerd /run/containerd/containerd.sock";
    let parsed = parse(&words(line));
    let mut cfg = KubeletConfiguration::default();
    let node = parsed.flags.apply(&mut cfg);

    assert_eq!(cfg.logging.verbosity, 2);
    assert!(node.external_cloud_provider());
    assert_eq!(node.node_ip.as_deref(), Some("10.0.1.23"));
    assert_eq!(node.hostname_override.as_deref(), Some("ip-10-0-1-23.us-west-2.compute.internal"));
    assert_eq!(cfg.provider_id, "aws:///us-west-2a/i-0123456789abcdef0");
    assert_eq!(node.node_labels.len(), 3, "{:?}", node.node_labels);
    assert_eq!(node.node_labels["topology.kubernetes.io/zone"], "us-west-2a");
    assert_eq!(cfg.register_with_taints.len(), 2);
    assert_eq!(cfg.register_with_taints[1].key, "spot");
    assert_eq!(cfg.register_with_taints[1].effect, "PreferNoSchedule");
    assert_eq!((cfg.max_pods, cfg.pods_per_core, cfg.pod_pids_limit), (29, 0, 4096));
    assert_eq!(node.image_credential_provider_config, Some("/etc/eks/image-credential-provider/config.json".into()));
    assert_eq!(node.image_credential_provider_bin_dir, Some("/etc/eks/image-credential-provider".into()));
    assert_eq!(node.cert_dir, PathBuf::from("/var/lib/kubelet/pki/"));
    assert_eq!(cfg.volume_plugin_dir, "/home/kubernetes/flexvolume");
    assert_eq!(cfg.node_status_max_images, 25);
    assert_eq!((cfg.registry_pull_qps, cfg.registry_burst, cfg.event_record_qps), (10, 20, 0));
    assert_eq!((cfg.kube_api_qps, cfg.kube_api_burst), (20, 40));
    assert_eq!(cfg.eviction_hard.len(), 3);
    assert_eq!(cfg.eviction_hard["nodefs.inodesFree"], "5%");
    assert_eq!(cfg.eviction_soft["memory.available"], "300Mi");
    assert_eq!(cfg.eviction_soft_grace_period["memory.available"], "1m30s");
    assert_eq!(cfg.eviction_max_pod_grace_period, 60);
    assert_eq!(cfg.eviction_pressure_transition_period, Duration::from_secs(30));
    assert_eq!(cfg.eviction_minimum_reclaim["imagefs.available"], "2Gi");
    assert_eq!(cfg.kube_reserved["memory"].as_str(), "1019Mi");
    assert_eq!(cfg.kube_reserved.len(), 3);
    assert_eq!(cfg.system_reserved["cpu"].as_str(), "100m");
    assert_eq!(cfg.enforce_node_allocatable, vec!["pods"]);
    assert!(cfg.feature_gates["ExecProbeTimeout"]);
    assert_eq!((cfg.cgroup_root.as_str(), cfg.cgroup_driver.as_str()), ("/", "systemd"));
    assert!(cfg.cgroups_per_qos);
    assert_eq!(cfg.cpu_manager_policy, "static");
    assert_eq!(cfg.cpu_manager_policy_options["full-pcpus-only"], "true");
    assert_eq!(cfg.topology_manager_policy, "single-numa-node");
    assert_eq!(cfg.reserved_system_cpus, "0-1");
    assert_eq!(cfg.reserved_memory.len(), 2);
    assert_eq!(cfg.reserved_memory[1].limits.len(), 2);
    assert_eq!(cfg.static_pod_url, "http://127.0.0.1:8080/pods");
    assert_eq!(cfg.static_pod_url_header["b"], vec!["again", "beautiful"]);
    assert_eq!(cfg.container_log_max_size.as_str(), "50Mi");
    assert_eq!(cfg.container_log_max_files, 3);
    assert!(cfg.rotate_certificates && !cfg.server_tls_bootstrap);
    assert!(!cfg.authentication.anonymous.enabled && cfg.authentication.webhook.enabled);
    assert_eq!(cfg.authorization.mode, "Webhook");
    assert_eq!(cfg.authentication.x509.client_ca_file, "/etc/kubernetes/pki/ca.crt");
    assert_eq!((cfg.read_only_port, cfg.healthz_port), (0, 10248));
    assert_eq!(cfg.tls_cipher_suites.len(), 2);
    assert_eq!(cfg.tls_min_version, "VersionTLS12");
    assert_eq!(cfg.cluster_dns, vec!["172.20.0.10"]);
    assert_eq!(cfg.resolv_conf, "/run/systemd/resolve/resolv.conf");
    assert_eq!(cfg.streaming_connection_idle_timeout, Duration::from_mins(5));
    assert!(cfg.protect_kernel_defaults && cfg.make_iptables_util_chains);
    assert_eq!(cfg.allowed_unsafe_sysctls, vec!["net.core.somaxconn", "kernel.msg*"]);
    assert!(!cfg.serialize_image_pulls);
    assert_eq!((cfg.image_gc_high_threshold_percent, cfg.image_gc_low_threshold_percent), (85, 80));
    assert_eq!(cfg.logging.format, "text");
    assert_eq!(cfg.logging.vmodule[0].file_pattern, "pod*");
    assert_eq!(cfg.logging.flush_frequency, Duration::from_secs(10));
    assert_eq!(node.lock_file, Some(PathBuf::from("/var/run/lock/kubelet.lock")));
    assert!(node.exit_on_lock_contention);
    cfg.validate().unwrap();

    let warnings = parsed.deprecation_warnings();
    assert!(
        warnings.iter().any(|w| w.starts_with("Flag --max-pods has been deprecated, This parameter should be set"))
    );
    assert!(warnings.iter().any(|w| w == "Flag --maximum-dead-containers has been deprecated, Use --eviction-hard or --eviction-soft instead. Will be removed in a future version."));
    assert!(warnings.iter().any(|w| w.starts_with("Flag --docker-only has been deprecated, This is a cadvisor flag")));
    for not_deprecated in
        ["v", "vmodule", "log-flush-frequency", "provider-id", "node-ip", "lock-file", "housekeeping-interval"]
    {
        assert!(
            !warnings.iter().any(|w| w.contains(&format!("--{not_deprecated} "))),
            "{not_deprecated}: {warnings:?}"
        );
    }
    assert_eq!(
        parsed.not_acted_on(),
        vec![
            "runtime-cgroups",
            "minimum-container-ttl-duration",
            "maximum-dead-containers",
            "experimental-mounter-path",
            "housekeeping-interval",
            "containerd",
            "docker-only",
        ]
    );
}

#[test]
fn verbosity_spellings() {
    for args in [&["-v=3"][..], &["-v", "3"], &["--v=3"], &["--v", "3"], &["-v3"]] {
        assert_eq!(flags(args).verbosity, Some(3), "{args:?}");
    }
}

#[test]
fn scalar_flags_given_twice_keep_the_last() {
    assert_eq!(flags(&["--max-pods=1", "--max-pods=2"]).max_pods, Some(2));
    let f = flags(&["--register-with-taints=a:NoSchedule", "--register-with-taints=b:NoExecute"]);
    assert_eq!(f.register_with_taints.unwrap().0[0].key, "b");
}

#[test]
fn every_upstream_flag_is_accepted() {
    // The flags of the Go kubelet 1.34's --help (Linux), each given once.
    let mut command = Flags::full_command();
    command.build();
    let ours: Vec<&str> = command.get_arguments().filter_map(|a| a.get_long()).collect();
    for flag in UPSTREAM_FLAGS {
        assert!(ours.contains(flag), "--{flag} is not accepted");
    }
}

const UPSTREAM_FLAGS: &[&str] = &[
    "address",
    "allowed-unsafe-sysctls",
    "anonymous-auth",
    "authentication-token-webhook",
    "authentication-token-webhook-cache-ttl",
    "authorization-mode",
    "authorization-webhook-cache-authorized-ttl",
    "authorization-webhook-cache-unauthorized-ttl",
    "bootstrap-kubeconfig",
    "cert-dir",
    "cgroup-driver",
    "cgroup-root",
    "cgroups-per-qos",
    "client-ca-file",
    "cloud-config",
    "cloud-provider",
    "cluster-dns",
    "cluster-domain",
    "config",
    "config-dir",
    "container-log-max-files",
    "container-log-max-size",
    "container-runtime-endpoint",
    "contention-profiling",
    "cpu-cfs-quota",
    "cpu-cfs-quota-period",
    "cpu-manager-policy",
    "cpu-manager-policy-options",
    "cpu-manager-reconcile-period",
    "enable-controller-attach-detach",
    "enable-debugging-handlers",
    "enable-server",
    "enforce-node-allocatable",
    "event-burst",
    "event-qps",
    "eviction-hard",
    "eviction-max-pod-grace-period",
    "eviction-minimum-reclaim",
    "eviction-pressure-transition-period",
    "eviction-soft",
    "eviction-soft-grace-period",
    "exit-on-lock-contention",
    "experimental-allocatable-ignore-eviction",
    "experimental-mounter-path",
    "fail-cgroupv1",
    "fail-swap-on",
    "feature-gates",
    "file-check-frequency",
    "hairpin-mode",
    "healthz-bind-address",
    "healthz-port",
    "help",
    "hostname-override",
    "housekeeping-interval",
    "http-check-frequency",
    "image-credential-provider-bin-dir",
    "image-credential-provider-config",
    "image-gc-high-threshold",
    "image-gc-low-threshold",
    "image-service-endpoint",
    "kernel-memcg-notification",
    "kube-api-burst",
    "kube-api-content-type",
    "kube-api-qps",
    "kube-reserved",
    "kube-reserved-cgroup",
    "kubeconfig",
    "kubelet-cgroups",
    "local-storage-capacity-isolation",
    "lock-file",
    "log-flush-frequency",
    "log-json-info-buffer-size",
    "log-json-split-stream",
    "log-text-info-buffer-size",
    "log-text-split-stream",
    "logging-format",
    "make-iptables-util-chains",
    "manifest-url",
    "manifest-url-header",
    "max-open-files",
    "max-pods",
    "maximum-dead-containers",
    "maximum-dead-containers-per-container",
    "memory-manager-policy",
    "minimum-container-ttl-duration",
    "minimum-image-ttl-duration",
    "node-ip",
    "node-labels",
    "node-status-max-images",
    "node-status-update-frequency",
    "oom-score-adj",
    "pod-cidr",
    "pod-infra-container-image",
    "pod-manifest-path",
    "pod-max-pids",
    "pods-per-core",
    "port",
    "protect-kernel-defaults",
    "provider-id",
    "qos-reserved",
    "read-only-port",
    "register-node",
    "register-schedulable",
    "register-with-taints",
    "registry-burst",
    "registry-qps",
    "reserved-cpus",
    "reserved-memory",
    "resolv-conf",
    "root-dir",
    "rotate-certificates",
    "rotate-server-certificates",
    "runonce",
    "runtime-cgroups",
    "runtime-request-timeout",
    "seccomp-default",
    "serialize-image-pulls",
    "streaming-connection-idle-timeout",
    "sync-frequency",
    "system-cgroups",
    "system-reserved",
    "system-reserved-cgroup",
    "tls-cert-file",
    "tls-cipher-suites",
    "tls-min-version",
    "tls-private-key-file",
    "topology-manager-policy",
    "topology-manager-policy-options",
    "topology-manager-scope",
    "v",
    "version",
    "vmodule",
    "volume-plugin-dir",
    "volume-stats-agg-period",
    "iptables-masquerade-bit",
    "iptables-drop-bit",
    "keep-terminated-pod-volumes",
];

#[test]
fn node_options_collect_flag_only_values() {
    let mut cfg = KubeletConfiguration::default();
    let node = flags(&[
        "--root-dir=/tmp/kubelet",
        "--kubeconfig=/etc/kubernetes/kubelet.conf",
        "--hostname-override= Node-A ",
        "--node-ip=192.168.1.5",
        "--node-labels=role=worker,zone=a",
        "--pod-manifest-path=/etc/kubernetes/manifests",
        "--cloud-provider=external",
        "--pod-infra-container-image=pause:3.9",
        "--v=2",
    ])
    .apply(&mut cfg);
    assert_eq!(node.root_dir, PathBuf::from("/tmp/kubelet"));
    assert_eq!(node.kubeconfig, Some(PathBuf::from("/etc/kubernetes/kubelet.conf")));
    assert_eq!(node.node_name("ignored").unwrap(), "node-a");
    assert_eq!(node.node_ip.as_deref(), Some("192.168.1.5"));
    assert_eq!(node.node_labels["role"], "worker");
    assert_eq!(node.node_labels["zone"], "a");
    assert_eq!(cfg.static_pod_path, "/etc/kubernetes/manifests");
    assert_eq!(node.verbosity, 2);
}

#[test]
fn bad_flag_values_are_rejected() {
    let parse = |args: &[&str]| Flags::parse_args(std::iter::once("kubelet").chain(args.iter().copied()));
    assert!(parse(&["--node-labels=novalue"]).is_err());
    assert!(parse(&["--feature-gates=A=maybe"]).is_err());
    assert!(parse(&["--sync-frequency=10"]).is_err());
    assert!(parse(&["--max-pods=many"]).is_err());
    assert!(parse(&["--address=localhost"]).is_err());
    assert!(parse(&["--eviction-hard=memory.available=1Gi"]).is_err());
    assert!(parse(&["--register-with-taints=a=b"]).is_err());
    assert!(parse(&["--no-such-flag"]).is_err());
    // A boolean takes its value only after '=' (pflag): a separate word is an argument.
    assert!(parse(&["--fail-swap-on", "false"]).is_err());
    // Any cloud provider name parses; start-up refuses all but "" and "external".
    assert!(parse(&["--cloud-provider=aws"]).is_ok());
}

#[test]
fn node_name_falls_back_to_host_name() {
    let node = flags(&[]).apply(&mut KubeletConfiguration::default());
    assert_eq!(node.node_name("MyHost\n").unwrap(), "myhost");
    assert_eq!(node.node_name(" "), Err(FlagsError::EmptyNodeName));
}

#[test]
fn help_groups_the_deprecated_flags() {
    let help = Flags::full_command().render_help().to_string();
    let first_deprecated = help.find("Deprecated: set in the --config file").unwrap();
    assert!(help.find("--lock-file").unwrap() < first_deprecated, "flag-only flags come first");
    assert!(help.contains("cAdvisor (ignored)"));
    assert!(!help.contains("housekeeping-period-for-tests"));
}
