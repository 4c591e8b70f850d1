//! Upstream command lines end to end: a kubeadm/cloud-style flag set against testapi (the Node
//! as kubectl shows it), JSON log lines, `--lock-file` hand-over, image credential provider
//! plugins against the htpasswd registry, and start-up refusals.

use crate::LONG;
use crate::api::{TestApi, eventually, kubectl_present};
use crate::harness::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The kubelet binary run with `args` only; (exit success, stderr) of a start-up failure.
fn refused(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kubelet")).args(args).output().expect("run kubelet");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubeadm_and_cloud_flags_shape_the_registered_node() {
    let test = "flagnode";
    if !kubectl_present(test) {
        return;
    }
    let node = format!("e2e-{test}");
    let api = TestApi::start(&node);
    let args: Vec<String> = [
        "--kubeconfig",
        &api.kubelet_kubeconfig().display().to_string(),
        // kubeadm's KUBELET_KUBEADM_ARGS, deprecated flags included.
        "--container-runtime-endpoint=unix:///run/containerd/containerd.sock",
        "--pod-infra-container-image=registry.k8s.io/pause:3.10",
        "--cloud-provider=external",
        "--node-ip=127.0.0.1",
        "--provider-id=e2e://zone-a/flagnode",
        "--register-with-taints=dedicated=e2e:NoSchedule",
        "--node-labels=e2e.example.com/role=worker",
        "--max-pods",
        "50",
        "--maximum-dead-containers=10",
        "--logging-format=json",
    ]
    .map(String::from)
    .to_vec();
    let Some(mut k) = Kubelet::start_with_args(test, "nodeStatusUpdateFrequency: 1s\n", &args).await else { return };

    let n = eventually("node registered with its status", || {
        let n = api.get_json(&["node", &node])?;
        n["status"]["addresses"].as_array().is_some_and(|a| !a.is_empty()).then_some(n)
    })
    .await;
    let taints: Vec<String> = n["spec"]["taints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            format!(
                "{}={}:{}",
                t["key"].as_str().unwrap(),
                t["value"].as_str().unwrap_or(""),
                t["effect"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        taints,
        vec!["dedicated=e2e:NoSchedule", "node.cloudprovider.kubernetes.io/uninitialized=true:NoSchedule"]
    );
    assert_eq!(n["spec"]["providerID"], "e2e://zone-a/flagnode");
    assert_eq!(n["metadata"]["labels"]["e2e.example.com/role"], "worker");
    assert_eq!(n["metadata"]["annotations"]["alpha.kubernetes.io/provided-node-ip"], "127.0.0.1");
    let addresses: Vec<String> = n["status"]["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| format!("{}={}", a["type"].as_str().unwrap(), a["address"].as_str().unwrap()))
        .collect();
    assert_eq!(addresses, vec!["InternalIP=127.0.0.1".to_string(), format!("Hostname={node}")]);
    assert_eq!(n["status"]["capacity"]["pods"], "50");

    // The log: pflag's deprecation warnings first, then one JSON object per line.
    let log = k.log();
    assert!(
        log.contains(
            "Flag --container-runtime-endpoint has been deprecated, This parameter should be set via the config file"
        ),
        "{}",
        tail(&log, 20)
    );
    assert!(log.contains("Flag --pod-infra-container-image has been deprecated, will be removed in 1.35."));
    let json: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.starts_with("Flag --"))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    assert!(json.len() > 3, "{log}");
    assert!(json.iter().all(|l| l["ts"].is_f64() && l["msg"].is_string()), "{log}");
    assert!(json.iter().any(|l| l["msg"] == "starting kubelet" && l["v"] == 0 && l["node"] == node));
    assert!(
        json.iter()
            .any(|l| l["msg"] == "flag is accepted but not supported yet" && l["flag"] == "--maximum-dead-containers")
    );
    k.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_kubelet_on_the_lock_file_makes_the_first_exit() {
    let lock_dir = tempfile::tempdir().unwrap();
    let lock = lock_dir.path().join("kubelet.lock");
    let lock_args = vec![format!("--lock-file={}", lock.display()), "--exit-on-lock-contention".to_string()];
    let Some(mut k) = Kubelet::start_with_args("lockfile", "", &lock_args).await else { return };
    // The same node started again (a new kubelet taking over): it opens the lock file, the
    // first one sees the open, exits, and releases the lock to it.
    let mut second = Command::new(env!("CARGO_BIN_EXE_kubelet"))
        .arg("--config")
        .arg(k.dir.path().join("config.yaml"))
        .arg("--root-dir")
        .arg(k.dir.path().join("root"))
        .args(["--hostname-override", &k.node])
        .args(&lock_args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::from(std::fs::File::create(k.dir.path().join("second.log")).unwrap()))
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + LONG;
    let status = loop {
        if let Some(status) = k.exit_status() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "the first kubelet did not exit:\n{}", tail(&k.log(), 20));
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(status.success(), "{status:?}\n{}", tail(&k.log(), 20));
    assert!(k.log().contains("another process opened the lock file"), "{}", tail(&k.log(), 20));
    // The second now holds the lock and serves.
    let healthz = format!("http://127.0.0.1:{}/healthz", k.healthz_port);
    let served = wait_until(LONG, || async {
        reqwest::get(&healthz).await.ok().filter(|r| r.status().is_success()).map(|_| ())
    })
    .await;
    let second_log = read(&k.dir.path().join("second.log"));
    assert!(served.is_some(), "second kubelet not serving:\n{}", tail(&second_log, 20));
    assert!(second_log.contains("acquiring file lock"), "{}", tail(&second_log, 20));
    // SAFETY: signalling the child this test started.
    unsafe { libc::kill(second.id() as i32, libc::SIGTERM) };
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        while second.try_wait().ok().flatten().is_none() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let _ = second.kill();
    let _ = second.wait();
    k.cleanup().await;
}

/// A credential provider plugin (a shell script) answering the htpasswd registry's credentials
/// and recording each request.
fn write_plugin(bin_dir: &Path, calls: &Path) {
    let script = format!(
        "#!/bin/sh\ncat >> {calls}\necho >> {calls}\necho '{answer}'\n",
        calls = calls.display(),
        answer = r#"{"kind":"CredentialProviderResponse","apiVersion":"credentialprovider.kubelet.k8s.io/v1","cacheKeyType":"Registry","cacheDuration":"0s","auth":{"127.0.0.1:5001":{"username":"kubelet","password":"e2e-secret"}}}"#
    );
    let path = bin_dir.join("e2e-registry-auth");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

const PROVIDER_CONFIG: &str = "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders:\n\
- name: e2e-registry-auth\n  matchImages: [\"127.0.0.1:5001\"]\n  defaultCacheDuration: 1m\n\
\x20 apiVersion: credentialprovider.kubelet.k8s.io/v1\n";

fn private_pod(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: app\n    image: 127.0.0.1:5001/private:1\n    imagePullPolicy: Always\n    command: [\"sleep\", \"3600\"]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_provider_plugin_opens_the_authenticated_registry() {
    let test = "credplugin";
    if !kubectl_present(test) {
        return;
    }
    let node = format!("e2e-{test}");
    let api = TestApi::start(&node);
    let kubeconfig = vec!["--kubeconfig".to_string(), api.kubelet_kubeconfig().display().to_string()];

    // Without the plugin (and without imagePullSecrets) the registry refuses the pull.
    let Some(mut k) = Kubelet::start_with_args(test, "", &kubeconfig).await else { return };
    api.apply(&private_pod("noplugin"));
    let waiting = eventually("pull refused without credentials", || {
        let p = api.get_json(&["pod", "noplugin"])?;
        let w = p["status"]["containerStatuses"][0]["state"]["waiting"].clone();
        (w["reason"] == "ErrImagePull" || w["reason"] == "ImagePullBackOff").then_some(w)
    })
    .await;
    let msg = waiting["message"].as_str().unwrap_or_default().to_lowercase();
    assert!(
        msg.contains("401") || msg.contains("unauthorized") || msg.contains("authoriz") || msg.contains("back-off"),
        "{msg}"
    );
    api.kubectl(&["delete", "pod", "noplugin", "--timeout=90s"]);
    k.cleanup().await;
    drop(k);

    // With the plugin: the same pod pulls.
    let plugin_dir = tempfile::tempdir().unwrap();
    let calls = plugin_dir.path().join("calls");
    write_plugin(plugin_dir.path(), &calls);
    let config = plugin_dir.path().join("credential-providers.yaml");
    std::fs::write(&config, PROVIDER_CONFIG).unwrap();
    let mut args = kubeconfig.clone();
    args.push(format!("--image-credential-provider-config={}", config.display()));
    args.push(format!("--image-credential-provider-bin-dir={}", plugin_dir.path().display()));
    let Some(mut k) = Kubelet::start_with_args(test, "", &args).await else { return };
    api.apply(&private_pod("withplugin"));
    eventually("pulled with the plugin's credentials", || {
        let p = api.get_json(&["pod", "withplugin"])?;
        (p["status"]["phase"] == "Running").then_some(())
    })
    .await;
    let request: serde_json::Value = serde_json::from_str(read(&calls).lines().next().unwrap()).unwrap();
    assert_eq!(request["kind"], "CredentialProviderRequest");
    assert_eq!(request["image"], "127.0.0.1:5001/private:1");
    api.kubectl(&["delete", "pod", "withplugin", "--timeout=90s"]);
    k.cleanup().await;
}

#[test]
fn bad_start_up_flags_are_refused_with_upstreams_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root").display().to_string();
    let (ok, err) = refused(&["--root-dir", &root, "--cloud-provider=aws"]);
    assert!(!ok);
    assert!(err.contains("cloud provider \"aws\" was specified, but built-in cloud providers are disabled"), "{err}");
    let (ok, err) = refused(&["--root-dir", &root, "--node-ip=10.0.0.1,10.0.0.2"]);
    assert!(!ok);
    assert!(err.contains("must contain either a single IP or a dual-stack pair of IPs"), "{err}");
    let config = dir.path().join("cp.yaml");
    std::fs::write(
        &config,
        "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders:\n- name: missing\n  matchImages: []\n  defaultCacheDuration: 1m\n  apiVersion: credentialprovider.kubelet.k8s.io/v1\n",
    )
    .unwrap();
    let (ok, err) = refused(&[
        "--root-dir",
        &root,
        &format!("--image-credential-provider-config={}", config.display()),
        &format!("--image-credential-provider-bin-dir={}", dir.path().display()),
    ]);
    assert!(!ok);
    assert!(err.contains("providers[0].matchImages: Required value"), "{err}");
    assert!(err.contains("plugin binary executable"), "{err}");
    let (ok, err) = refused(&["--root-dir", &root, "--exit-on-lock-contention"]);
    assert!(!ok);
    assert!(err.contains("cannot exit on lock file contention: no lock file specified"), "{err}");
}
