//! Security contexts end to end: what the running container gets (its PID 1's
//! `/proc/1/status` Seccomp, NoNewPrivs, CapEff, Uid/Gid/Groups lines, a read-only root, masked
//! `/proc/keys`, its namespaces), and the refusals (runAsNonRoot, a missing seccomp profile,
//! AppArmor on a host without it, Strict supplemental groups, an unmasked /proc without a user
//! namespace). Two kubelets, each running many static pods at once.

use crate::LONG;
use crate::harness::*;
use k8s_openapi::api::core::v1::Pod;
use std::time::Duration;

/// A static pod with one long-running container `app` (or the given containers).
fn pod(name: &str, pod_extra: &str, container_extra: &str, image_name: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 1
{pod_extra}  containers:
  - name: app
    image: {img}
    command: ["sleep", "3600"]
{container_extra}"#,
        img = image(image_name)
    )
}

/// Runs `cmd` in the pod's container through CRI; stdout and stderr together.
async fn exec(k: &Kubelet, p: &Pod, container: &str, cmd: &[&str]) -> String {
    let id = container_status(p, container).and_then(|c| c.container_id.clone()).expect("container id");
    let id = id.trim_start_matches("containerd://");
    let out = k
        .runtime
        .exec_sync(id, cmd.iter().map(|s| s.to_string()).collect(), Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("exec {cmd:?}: {e:?}"));
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The value of `field` in the container's `/proc/1/status` (its main process).
async fn status_line(k: &Kubelet, p: &Pod, container: &str, field: &str) -> String {
    let status = exec(k, p, container, &["cat", "/proc/1/status"]).await;
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| panic!("no {field} in /proc/1/status:\n{status}"))
}

async fn running(k: &Kubelet, name: &str) -> Pod {
    k.wait_pod(name, "running", LONG, |p| {
        p.spec.as_ref()?.containers.iter().all(|c| is_running(p, &c.name)).then(|| p.clone())
    })
    .await
}

/// The waiting container's reason and message, once it is `reason`.
async fn waiting(k: &Kubelet, name: &str, reason: &str) -> String {
    k.wait_pod(name, reason, LONG, |p| {
        let w = container_status(p, "app")?.state.as_ref()?.waiting.as_ref()?;
        (w.reason.as_deref() == Some(reason)).then(|| w.message.clone().unwrap_or_default())
    })
    .await
}

/// A refused pod's status reason and message.
async fn rejected(k: &Kubelet, name: &str) -> (String, String) {
    let p = k.wait_pod(name, "Failed", LONG, |p| (phase(p) == "Failed").then(|| p.clone())).await;
    let st = p.status.unwrap();
    assert!(
        st.container_statuses.as_ref().is_none_or(|c| c.iter().all(|c| c.container_id.is_none())),
        "{name} never ran"
    );
    (st.reason.unwrap_or_default(), st.message.unwrap_or_default())
}

/// A masked path (upstream's defaults) this kernel has: masked, it is /dev/null bound over it
/// (this VM's kernel has no /proc/kcore).
const MASKED: &str = "/proc/keys";

/// Docker's and containerd's default capability set (CHOWN … SETFCAP).
const DEFAULT_CAPS: &str = "00000000a80425fb";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_contexts_are_enforced_in_the_running_container() {
    let Some(mut k) = Kubelet::start("secctx").await else { return };
    // A Localhost profile that allows everything but mkdir, under <root-dir>/seccomp.
    let profiles = k.dir.path().join("root/seccomp/profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    std::fs::write(
        profiles.join("deny-mkdir.json"),
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let restricted_pod = "  securityContext:\n    runAsUser: 1000\n    runAsGroup: 3000\n    fsGroup: 2000\n    supplementalGroups: [4000]\n    seccompProfile: {type: RuntimeDefault}\n";
    let restricted_container = "    securityContext:\n      runAsNonRoot: true\n      allowPrivilegeEscalation: false\n      readOnlyRootFilesystem: true\n      capabilities: {drop: [ALL]}\n";
    let manifests = [
        ("restricted", pod("restricted", restricted_pod, restricted_container, "busybox:1.36")),
        ("plain", pod("plain", "", "", "busybox:1.36")),
        ("caps", pod("caps", "", "    securityContext:\n      capabilities: {drop: [ALL], add: [NET_ADMIN]}\n", "busybox:1.36")),
        ("privileged", pod("privileged", "", "    securityContext: {privileged: true}\n", "busybox:1.36")),
        (
            "localhost",
            pod(
                "localhost",
                "",
                "    securityContext:\n      seccompProfile: {type: Localhost, localhostProfile: profiles/deny-mkdir.json}\n",
                "busybox:1.36",
            ),
        ),
        (
            "missing-profile",
            pod(
                "missing-profile",
                "",
                "    securityContext:\n      seccompProfile: {type: Localhost, localhostProfile: profiles/absent.json}\n",
                "busybox:1.36",
            ),
        ),
        ("apparmor", pod("apparmor", "  securityContext:\n    appArmorProfile: {type: RuntimeDefault}\n", "", "busybox:1.36")),
        (
            "apparmor-annotation",
            pod("apparmor-annotation", "", "", "busybox:1.36").replace(
                "  name: apparmor-annotation\n",
                "  name: apparmor-annotation\n  annotations:\n    container.apparmor.security.beta.kubernetes.io/app: localhost/k8s-profile\n",
            ),
        ),
        ("strict", pod("strict", "  securityContext:\n    supplementalGroupsPolicy: Strict\n", "", "busybox:1.36")),
        ("unmasked", pod("unmasked", "", "    securityContext: {procMount: Unmasked}\n", "busybox:1.36")),
        ("hostns", pod("hostns", "  hostPID: true\n  hostIPC: true\n  hostNetwork: true\n", "", "busybox:1.36")),
        (
            "shared",
            pod("shared", "  shareProcessNamespace: true\n", "", "busybox:1.36").replace(
                "    command: [\"sleep\", \"3600\"]\n",
                &format!(
                    "    command: [\"sleep\", \"3600\"]\n  - name: sidecar\n    image: {}\n    command: [\"sleep\", \"3601\"]\n",
                    image("busybox:1.36")
                ),
            ),
        ),
    ];
    for (name, m) in &manifests {
        k.write_manifest(&format!("{name}.yaml"), m);
    }

    // The restricted pod: seccomp filter, no new privileges, no capabilities, its user and
    // groups (fsGroup and supplementalGroups added), a read-only root, /proc/keys masked.
    let p = running(&k, "restricted").await;
    assert_eq!(status_line(&k, &p, "app", "Seccomp").await, "2");
    assert_eq!(status_line(&k, &p, "app", "NoNewPrivs").await, "1");
    assert_eq!(status_line(&k, &p, "app", "CapEff").await, "0000000000000000");
    assert_eq!(status_line(&k, &p, "app", "Uid").await, "1000 1000 1000 1000");
    assert_eq!(status_line(&k, &p, "app", "Gid").await, "3000 3000 3000 3000");
    let groups = status_line(&k, &p, "app", "Groups").await;
    assert!(groups.split(' ').any(|g| g == "2000") && groups.split(' ').any(|g| g == "4000"), "Groups: {groups}");
    let id = exec(&k, &p, "app", &["id"]).await;
    assert!(id.starts_with("uid=1000 gid=3000"), "id: {id}");
    let write = exec(&k, &p, "app", &["sh", "-c", "touch /written 2>&1; echo rc=$?"]).await;
    assert!(write.contains("Read-only file system") && write.contains("rc=1"), "writing to /: {write}");
    assert_eq!(exec(&k, &p, "app", &["stat", "-c", "%F", MASKED]).await.trim(), "character special file");

    // No security context: unconfined (seccompDefault is off), the runtime's default
    // capabilities, root, /proc/keys masked, / writable.
    let p = running(&k, "plain").await;
    assert_eq!(status_line(&k, &p, "app", "Seccomp").await, "0");
    assert_eq!(status_line(&k, &p, "app", "NoNewPrivs").await, "0");
    assert_eq!(status_line(&k, &p, "app", "CapEff").await, DEFAULT_CAPS);
    assert_eq!(status_line(&k, &p, "app", "Uid").await, "0 0 0 0");
    assert_eq!(exec(&k, &p, "app", &["stat", "-c", "%F", MASKED]).await.trim(), "character special file");
    assert!(exec(&k, &p, "app", &["sh", "-c", "touch /written && echo ok"]).await.contains("ok"));

    // drop ALL then add NET_ADMIN (bit 12).
    let p = running(&k, "caps").await;
    assert_eq!(status_line(&k, &p, "app", "CapEff").await, "0000000000001000");

    // Privileged: more capabilities than the default set, nothing masked, the host's devices.
    let p = running(&k, "privileged").await;
    let caps = u64::from_str_radix(&status_line(&k, &p, "app", "CapEff").await, 16).unwrap();
    assert_eq!(caps & 0xa80425fb, 0xa80425fb);
    assert!(caps.count_ones() > 0xa80425fbu64.count_ones() + 10, "privileged CapEff {caps:x}");
    assert_eq!(status_line(&k, &p, "app", "Seccomp").await, "0");
    assert_ne!(exec(&k, &p, "app", &["stat", "-c", "%F", MASKED]).await.trim(), "character special file");
    let plain = running(&k, "plain").await;
    let devices = |out: String| out.lines().count();
    let (privileged_dev, plain_dev) =
        (devices(exec(&k, &p, "app", &["ls", "/dev"]).await), devices(exec(&k, &plain, "app", &["ls", "/dev"]).await));
    assert!(privileged_dev > plain_dev, "privileged /dev has {privileged_dev} entries, plain {plain_dev}");

    // The Localhost profile is the one applied: mkdir is refused, the rest works.
    let p = running(&k, "localhost").await;
    assert_eq!(status_line(&k, &p, "app", "Seccomp").await, "2");
    let mkdir = exec(&k, &p, "app", &["sh", "-c", "mkdir /tmp/d 2>&1; echo rc=$?"]).await;
    assert!(mkdir.contains("Operation not permitted") && mkdir.contains("rc=1"), "mkdir: {mkdir}");

    // A missing Localhost profile: the runtime refuses the container, naming the file.
    let message = waiting(&k, "missing-profile", "CreateContainerError").await;
    let file = k.dir.path().join("root/seccomp/profiles/absent.json");
    assert!(message.contains(&file.display().to_string()), "{message}");

    // This host has no AppArmor: pods that ask for a profile are refused at admission.
    for name in ["apparmor", "apparmor-annotation"] {
        let (reason, message) = rejected(&k, name).await;
        assert_eq!(reason, "AppArmor", "{name}");
        assert_eq!(message, "Pod was rejected: Cannot enforce AppArmor: AppArmor is not enabled on the host", "{name}");
    }
    // containerd 1.6 cannot honour Strict supplemental groups: refused rather than merged.
    let (reason, message) = rejected(&k, "strict").await;
    assert_eq!(reason, "SupplementalGroupsPolicyNotSupported");
    assert_eq!(message, "Pod was rejected: SupplementalGroupsPolicy=Strict is not supported in this node");

    // Host namespaces: the host's PID, IPC and network namespaces (the host's PID 1 is seen).
    let p = running(&k, "hostns").await;
    for ns in ["pid", "ipc", "net"] {
        let host = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap().display().to_string();
        assert_eq!(exec(&k, &p, "app", &["readlink", &format!("/proc/self/ns/{ns}")]).await.trim(), host, "{ns}");
    }
    let host_init = std::fs::read("/proc/1/cmdline").unwrap();
    let seen = exec(&k, &p, "app", &["cat", "/proc/1/cmdline"]).await;
    assert_eq!(seen.as_bytes(), &host_init[..], "hostPID sees the host's PID 1");
    // Not shared without them: the plain pod has its own.
    for ns in ["pid", "ipc", "net"] {
        let host = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap().display().to_string();
        assert_ne!(exec(&k, &plain, "app", &["readlink", &format!("/proc/self/ns/{ns}")]).await.trim(), host, "{ns}");
    }
    // shareProcessNamespace: each container sees the other's process.
    let p = running(&k, "shared").await;
    assert!(exec(&k, &p, "app", &["ps"]).await.contains("sleep 3601"), "app sees the sidecar");
    assert!(exec(&k, &p, "sidecar", &["ps"]).await.contains("sleep 3600"), "the sidecar sees app");
    assert!(!exec(&k, &plain, "app", &["ps"]).await.contains("sleep 3601"));

    // An unmasked /proc without a user namespace is an invalid manifest, named in the log.
    let reported = wait_until(LONG, || async {
        let log = k.log();
        (log.contains("unmasked.yaml")
            && log.contains("securityContext.procMount")
            && log.contains("`hostUsers` must be false"))
        .then_some(())
    })
    .await;
    assert!(reported.is_some(), "log:\n{}", tail(&k.log(), 40));
    assert!(k.pod("unmasked").await.is_none());
    k.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_as_non_root_is_verified_and_seccomp_default_applies() {
    let args = vec!["--seccomp-default".to_string()];
    let Some(mut k) = Kubelet::start_with_args("nonroot", "", &args).await else { return };
    let non_root = "    securityContext: {runAsNonRoot: true}\n";
    let manifests = [
        (
            "root-user",
            pod("root-user", "", "    securityContext: {runAsNonRoot: true, runAsUser: 0}\n", "busybox:1.36"),
        ),
        ("root-image", pod("root-image", "", non_root, "busybox:1.36")),
        ("named-user", pod("named-user", "", non_root, "user:nobody")),
        ("numeric-user", pod("numeric-user", "", non_root, "user:1000")),
        (
            "pod-level",
            pod("pod-level", "  securityContext: {runAsNonRoot: true, runAsUser: 1234}\n", "", "busybox:1.36"),
        ),
        (
            "unconfined",
            pod("unconfined", "", "    securityContext:\n      seccompProfile: {type: Unconfined}\n", "busybox:1.36"),
        ),
        ("privileged", pod("privileged", "", "    securityContext: {privileged: true}\n", "busybox:1.36")),
    ];
    for (name, m) in &manifests {
        k.write_manifest(&format!("{name}.yaml"), m);
    }
    let desc = |name: &str, p: &Pod| format!("\"{name}-{}_default({})\"", k.node, uid(p));
    let refused = [
        ("root-user", "container's runAsUser breaks non-root policy"),
        ("root-image", "container has runAsNonRoot and image will run as root"),
        (
            "named-user",
            "container has runAsNonRoot and image has non-numeric user (nobody), cannot verify user is non-root",
        ),
    ];
    for (name, text) in refused {
        let message = waiting(&k, name, "CreateContainerConfigError").await;
        let p = k.pod(name).await.unwrap();
        assert_eq!(message, format!("{text} (pod: {}, container: app)", desc(name, &p)), "{name}");
        // Lasting: the container is never created.
        assert!(container_status(&p, "app").unwrap().container_id.is_none(), "{name}");
    }

    // The image's numeric user passes and is the one the container runs as; seccompDefault
    // makes RuntimeDefault the profile.
    let p = running(&k, "numeric-user").await;
    assert_eq!(status_line(&k, &p, "app", "Uid").await, "1000 1000 1000 1000");
    assert_eq!(status_line(&k, &p, "app", "Seccomp").await, "2");
    let p = running(&k, "pod-level").await;
    assert_eq!(status_line(&k, &p, "app", "Uid").await, "1234 1234 1234 1234");
    // An explicit Unconfined wins over seccompDefault.
    let p = running(&k, "unconfined").await;
    assert_eq!(status_line(&k, &p, "app", "Seccomp").await, "0");

    // Privileged containers run unconfined whatever the profile.
    let p = running(&k, "privileged").await;
    assert_eq!(status_line(&k, &p, "app", "Seccomp").await, "0");

    // Still refused after all that (each sync retries and fails the same way).
    for (name, _) in refused {
        let p = k.pod(name).await.unwrap();
        assert_eq!(waiting_reason(&p, "app"), Some("CreateContainerConfigError"), "{name}");
    }
    k.cleanup().await;
}
