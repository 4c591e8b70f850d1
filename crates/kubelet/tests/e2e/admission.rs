//! Admission end to end: pods refused before they run (sysctls, host namespaces, pod OS) on a kubelet with
//! `allowedUnsafeSysctls: [kernel.msg*]`, through testapi and kubectl; the allowed sysctls reach
//! the container.

use crate::api::{TestApi, eventually, kubectl_present};
use crate::harness::*;

fn pod(name: &str, spec_extra: &str, labels: &str, script: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{{labels}}}
spec:
  terminationGracePeriodSeconds: 1
{spec_extra}  containers:
  - name: app
    image: {img}
    command: ["sh", "-c", {script:?}]
"#,
        img = image("busybox:1.36")
    )
}

fn sysctl(name: &str, value: &str) -> String {
    format!("  securityContext:\n    sysctls:\n    - {{name: {name}, value: \"{value}\"}}\n")
}

/// The last line the pod's container wrote, from its log file on the node.
fn last_log_line(p: &serde_json::Value) -> Option<String> {
    let (name, uid) = (p["metadata"]["name"].as_str()?, p["metadata"]["uid"].as_str()?);
    let log = std::fs::read_to_string(format!("/var/log/pods/default_{name}_{uid}/app/0.log")).ok()?;
    log.lines().last().and_then(|l| l.splitn(4, ' ').nth(3)).map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_sysctls_and_foreign_os_pods_are_rejected_and_allowed_sysctls_apply() {
    let test = "admit";
    if !kubectl_present(test) {
        return;
    }
    let node = format!("e2e-{test}");
    let api = TestApi::start(&node);
    let args = vec!["--kubeconfig".to_string(), api.kubelet_kubeconfig().display().to_string()];
    let extra = "nodeStatusUpdateFrequency: 1s\nallowedUnsafeSysctls:\n- kernel.msg*\n";
    let Some(_k) = Kubelet::start_with_args(test, extra, &args).await else { return };
    let run = "cat /proc/sys/{}; sleep 3600";
    let manifests = [
        pod("forbidden", &sysctl("kernel.shmmax", "100000"), "", "sleep 3600"),
        pod("unsafe", &sysctl("kernel/msgmax", "10000"), "", &run.replace("{}", "kernel/msgmax")),
        pod("safe", &sysctl("net.ipv4.tcp_syncookies", "0"), "", &run.replace("{}", "net/ipv4/tcp_syncookies")),
        pod("hostnet", &format!("  hostNetwork: true\n{}", sysctl("net.ipv4.tcp_syncookies", "0")), "", "sleep 3600"),
        pod("windows", "  os: {name: windows}\n", "", "sleep 3600"),
        pod("oslabel", "", "kubernetes.io/os: windows", "sleep 3600"),
        pod("osselector", "  nodeSelector: {kubernetes.io/os: windows}\n", "", "sleep 3600"),
    ];
    api.apply(&manifests.join("---\n"));

    // Refused at admission, as upstream's rejectPod: Failed, the handler's reason, the message
    // prefixed in the status and bare in a Warning event.
    let refused = [
        ("forbidden", "SysctlForbidden", r#"forbidden sysctl: "kernel.shmmax" not allowlisted"#),
        (
            "hostnet",
            "SysctlForbidden",
            r#"forbidden sysctl: "net.ipv4.tcp_syncookies" not allowed with host net enabled"#,
        ),
        ("windows", "PodOSNotSupported", "Failed to admit pod as the OS field doesn't match node OS"),
        (
            "oslabel",
            "PodOSSelectorNodeLabelDoesNotMatch",
            "Failed to admit pod as the `kubernetes.io/os` label doesn't match node label",
        ),
        (
            "osselector",
            "NodeAffinity",
            "Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector",
        ),
    ];
    for (name, reason, message) in refused {
        let p = eventually(&format!("{name} Failed"), || {
            let p = api.get_json(&["pod", name])?;
            (p["status"]["phase"] == "Failed").then_some(p)
        })
        .await;
        assert_eq!(p["status"]["reason"], reason, "{name}: {}", p["status"]);
        assert_eq!(p["status"]["message"], format!("Pod was rejected: {message}"), "{name}");
        let event = eventually(&format!("{name} {reason} event"), || {
            let events = api.get_json(&["events"])?;
            events["items"]
                .as_array()?
                .iter()
                .find(|e| e["involvedObject"]["name"] == name && e["reason"] == reason)
                .cloned()
        })
        .await;
        assert_eq!(event["type"], "Warning");
        assert_eq!(event["message"], message);
        assert!(p["status"]["containerStatuses"].is_null(), "{name} never ran: {}", p["status"]);
    }

    // The allowed unsafe sysctl (kernel.msg* pattern) and the safe one run with the value set.
    for (name, value) in [("unsafe", "10000"), ("safe", "0")] {
        let line = eventually(&format!("{name} Running and its value logged"), || {
            let p = api.get_json(&["pod", name])?;
            (p["status"]["phase"] == "Running").then_some(())?;
            last_log_line(&p)
        })
        .await;
        assert_eq!(line, value, "{name}");
    }
}
