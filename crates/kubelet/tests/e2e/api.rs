//! API-server mode end to end: testapi (the project's in-memory API server) + kubectl + the
//! kubelet on containerd.

use crate::LONG;
use crate::harness::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The testapi binary `cargo test --workspace` built next to this test.
fn testapi_bin() -> PathBuf {
    let bin = std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().join("testapi");
    assert!(bin.exists(), "{} missing: run the tests with `cargo test --workspace`", bin.display());
    bin
}

pub struct TestApi {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub listen: String,
    node: String,
    extra: Vec<String>,
}

impl TestApi {
    pub fn start(node: &str) -> Self {
        Self::start_with_args(node, &[])
    }

    /// As [`TestApi::start`] with extra `testapi serve` flags (`--token`, `--policy`, …).
    pub fn start_with_args(node: &str, extra: &[String]) -> Self {
        let dir = tempfile::Builder::new().prefix("testapi-").tempdir().unwrap();
        let mut t = Self { child: None, dir, listen: "127.0.0.1:0".into(), node: node.into(), extra: extra.to_vec() };
        t.spawn();
        t
    }

    fn spawn(&mut self) {
        let _ = std::fs::remove_file(self.dir.path().join("ready"));
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("testapi.log")).unwrap();
        let child = Command::new(testapi_bin())
            .args(["serve", "--dir"])
            .arg(self.dir.path())
            .args(["--listen", &self.listen, "--bind-unscheduled-to", &self.node, "--kubelet-node", &self.node])
            .arg("--persist")
            .arg(self.dir.path().join("state.json"))
            .args(&self.extra)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start testapi");
        self.child = Some(child);
        let ready = self.dir.path().join("ready");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ready.exists() {
            assert!(Instant::now() < deadline, "testapi did not become ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        // Keep the port across restarts (the kubelet's kubeconfig points at it).
        let url = std::fs::read_to_string(&ready).unwrap();
        self.listen = url.trim().trim_start_matches("https://").to_string();
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn kubelet_kubeconfig(&self) -> PathBuf {
        self.dir.path().join(format!("kubelet-{}.kubeconfig", self.node))
    }

    /// Runs kubectl as admin; returns stdout, panics with stderr on failure.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let out = self.kubectl_raw(args, None);
        assert!(out.status.success(), "kubectl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn kubectl_raw(&self, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        let mut cmd = Command::new("kubectl");
        cmd.env("KUBECONFIG", self.dir.path().join("admin.kubeconfig")).args(args);
        cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("kubectl");
        if let Some(input) = stdin {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        }
        child.wait_with_output().unwrap()
    }

    pub fn apply(&self, yaml: &str) {
        let out = self.kubectl_raw(&["apply", "-f", "-"], Some(yaml));
        assert!(out.status.success(), "kubectl apply failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    pub fn get_json(&self, args: &[&str]) -> Option<serde_json::Value> {
        let mut a = vec!["get"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["-o", "json"]);
        let out = self.kubectl_raw(&a, None);
        out.status.success().then(|| serde_json::from_slice(&out.stdout).ok()).flatten()
    }
}

impl Drop for TestApi {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn kubectl_present(test: &str) -> bool {
    let ok = Command::new("kubectl").arg("version").arg("--client").output().is_ok_and(|o| o.status.success());
    if !ok {
        if std::env::var("KUBELET_E2E_REQUIRED").is_ok_and(|v| v == "1") {
            panic!("{test}: kubectl is missing");
        }
        eprintln!("SKIPPED {test}: kubectl is missing");
    }
    ok
}

pub async fn start(test: &str) -> Option<(TestApi, Kubelet)> {
    if !kubectl_present(test) {
        return None;
    }
    let node = format!("e2e-{test}");
    let api = TestApi::start(&node);
    let args = vec!["--kubeconfig".to_string(), api.kubelet_kubeconfig().display().to_string()];
    let k =
        Kubelet::start_with_args(test, "nodeStatusUpdateFrequency: 1s\nnodeLeaseDurationSeconds: 4\n", &args).await?;
    assert_eq!(k.node, node);
    Some((api, k))
}

pub async fn eventually<T>(what: &str, f: impl Fn() -> Option<T>) -> T {
    let deadline = Instant::now() + LONG;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn pod_phase(api: &TestApi, name: &str) -> Option<String> {
    api.get_json(&["pod", name])?["status"]["phase"].as_str().map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_registers_ready_and_renews_its_lease() {
    let Some((api, mut k)) = start("apinode").await else { return };
    let node = eventually("node Ready", || {
        let n = api.get_json(&["node", &k.node])?;
        let ready = n["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == "Ready")?.clone();
        (ready["status"] == "True").then_some(n)
    })
    .await;
    assert_eq!(node["metadata"]["labels"]["kubernetes.io/hostname"], k.node.as_str());
    // enableControllerAttachDetach (default true): the attach/detach controller manages the volumes.
    assert_eq!(node["metadata"]["annotations"]["volumes.kubernetes.io/controller-managed-attach-detach"], "true");
    assert_eq!(node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"], k.port);
    assert!(node["status"]["nodeInfo"]["containerRuntimeVersion"].as_str().unwrap().starts_with("containerd://"));
    assert!(node["status"]["capacity"]["cpu"].is_string());
    let renew = |api: &TestApi| {
        api.get_json(&["lease", "-n", "kube-node-lease", &k.node]).map(|l| l["spec"]["renewTime"].clone())
    };
    let first = eventually("lease", || renew(&api)).await;
    eventually("lease renewed", || renew(&api).filter(|r| *r != first)).await;
    let table = api.kubectl(&["get", "nodes"]);
    assert!(table.contains(&k.node) && table.contains("Ready"), "{table}");
    // Upstream's condition events: the new pressure conditions, and NodeReady once the Ready
    // condition flips back from the node controller's Unknown.
    let node_event = |reason: &str| {
        let events = api.get_json(&["events"])?;
        events["items"]
            .as_array()?
            .iter()
            .find(|e| {
                e["involvedObject"]["kind"] == "Node"
                    && e["involvedObject"]["name"] == k.node.as_str()
                    && e["reason"] == reason
            })
            .cloned()
    };
    for reason in ["NodeHasSufficientMemory", "NodeHasNoDiskPressure", "NodeHasSufficientPID"] {
        let e = eventually(reason, || node_event(reason)).await;
        assert_eq!(e["message"], format!("Node {} status is now: {reason}", k.node), "{e}");
        assert_eq!(e["type"], "Normal");
    }
    api.kubectl(&[
        "patch",
        "node",
        &k.node,
        "--subresource=status",
        "--type=strategic",
        "-p",
        r#"{"status":{"conditions":[{"type":"Ready","status":"Unknown","reason":"NodeStatusUnknown","message":"Kubelet stopped posting node status."}]}}"#,
    ]);
    let e = eventually("NodeReady", || node_event("NodeReady")).await;
    assert_eq!(e["message"], format!("Node {} status is now: NodeReady", k.node), "{e}");
    k.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_runs_a_pod_with_env_from_the_api_and_delete_removes_it() {
    let Some((api, mut k)) = start("apipod").await else { return };
    api.kubectl(&["create", "configmap", "settings", "--from-literal=color=blue"]);
    api.kubectl(&["create", "secret", "generic", "creds", "--from-literal=password=hunter2"]);
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {{app: web}}
spec:
  terminationGracePeriodSeconds: 3
  containers:
  - name: app
    image: {img}
    command: ["sh", "-c", "echo color=$COLOR password=$PASSWORD pod=$POD node=$NODE cfg_color=$CFG_color; trap 'exit 0' TERM; while true; do sleep 0.2; done"]
    envFrom:
    - {{prefix: CFG_, configMapRef: {{name: settings}}}}
    env:
    - {{name: COLOR, valueFrom: {{configMapKeyRef: {{name: settings, key: color}}}}}}
    - {{name: PASSWORD, valueFrom: {{secretKeyRef: {{name: creds, key: password}}}}}}
    - {{name: POD, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
    - {{name: NODE, valueFrom: {{fieldRef: {{fieldPath: spec.nodeName}}}}}}
"#,
        img = image("busybox:1.36")
    );
    api.apply(&manifest);
    // Upstream's downward-API env conformance cases (test/e2e/common/node/downwardapi.go):
    // limits/requests with the default divisor 1, rounded up; without limits, node allocatable.
    api.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: downward-env
spec:
  restartPolicy: Never
  containers:
  - name: limited
    image: {img}
    command: ["sh", "-c", "echo CPU_LIMIT=$CPU_LIMIT MEMORY_LIMIT=$MEMORY_LIMIT CPU_REQUEST=$CPU_REQUEST MEMORY_REQUEST=$MEMORY_REQUEST"]
    resources:
      requests: {{cpu: 250m, memory: 32Mi}}
      limits: {{cpu: 1250m, memory: 64Mi}}
    env:
    - {{name: CPU_LIMIT, valueFrom: {{resourceFieldRef: {{resource: limits.cpu}}}}}}
    - {{name: MEMORY_LIMIT, valueFrom: {{resourceFieldRef: {{resource: limits.memory}}}}}}
    - {{name: CPU_REQUEST, valueFrom: {{resourceFieldRef: {{resource: requests.cpu}}}}}}
    - {{name: MEMORY_REQUEST, valueFrom: {{resourceFieldRef: {{resource: requests.memory}}}}}}
  - name: unlimited
    image: {img}
    command: ["sh", "-c", "echo CPU_LIMIT=$CPU_LIMIT MEMORY_LIMIT=$MEMORY_LIMIT"]
    env:
    - {{name: CPU_LIMIT, valueFrom: {{resourceFieldRef: {{resource: limits.cpu}}}}}}
    - {{name: MEMORY_LIMIT, valueFrom: {{resourceFieldRef: {{resource: limits.memory}}}}}}
"#,
        img = image("busybox:1.36")
    ));
    let downward = eventually("the downward-env pod finished", || {
        let p = api.get_json(&["pod", "downward-env"])?;
        (p["status"]["phase"] == "Succeeded").then_some(p)
    })
    .await;
    let dir = format!("/var/log/pods/default_downward-env_{}", downward["metadata"]["uid"].as_str().unwrap());
    let limited = read(Path::new(&format!("{dir}/limited/0.log")));
    assert!(limited.contains("CPU_LIMIT=2 MEMORY_LIMIT=67108864 CPU_REQUEST=1 MEMORY_REQUEST=33554432"), "{limited}");
    let node = api.get_json(&["node", &k.node]).expect("the node");
    let cpu = node["status"]["allocatable"]["cpu"].as_str().unwrap().to_string();
    let cores = match cpu.strip_suffix('m') {
        Some(milli) => milli.parse::<u64>().unwrap().div_ceil(1000),
        None => cpu.parse::<u64>().unwrap(),
    };
    let memory = node["status"]["allocatable"]["memory"].as_str().unwrap().to_string();
    let bytes = match memory.strip_suffix("Ki") {
        Some(ki) => ki.parse::<u64>().unwrap() * 1024,
        None => memory.parse::<u64>().unwrap(),
    };
    let unlimited = read(Path::new(&format!("{dir}/unlimited/0.log")));
    assert!(
        unlimited.contains(&format!("CPU_LIMIT={cores} MEMORY_LIMIT={bytes}")),
        "{unlimited} (allocatable {cpu}, {memory})"
    );
    api.kubectl(&["delete", "pod", "downward-env", "--timeout=90s"]);
    let pod = eventually("Running with a ready container", || {
        let p = api.get_json(&["pod", "web"])?;
        (p["status"]["phase"] == "Running" && p["status"]["containerStatuses"][0]["ready"] == true).then_some(p)
    })
    .await;
    assert!(pod["status"]["podIP"].as_str().is_some_and(|ip| ip.starts_with("10.")), "{}", pod["status"]);
    assert!(pod["status"]["hostIP"].is_string());
    let uid = pod["metadata"]["uid"].as_str().unwrap().to_string();
    let log = format!("/var/log/pods/default_web_{uid}/app/0.log");
    let line =
        wait_until(LONG, || async { read(Path::new(&log)).lines().find(|l| l.contains("color=")).map(str::to_string) })
            .await
            .expect("env echoed");
    assert!(line.ends_with(&format!("color=blue password=hunter2 pod=web node={} cfg_color=blue", k.node)), "{line}");
    let table = api.kubectl(&["get", "pods"]);
    assert!(table.contains("web") && table.contains("Running") && table.contains("1/1"), "{table}");
    // Lifecycle events, as kubectl shows them.
    let events = eventually("events", || {
        let e = api.kubectl(&["get", "events"]);
        (e.contains("Started") && e.contains("Created") && e.contains("Pulled")).then_some(e)
    })
    .await;
    assert!(events.contains("pod/web"), "{events}");
    // kubectl delete waits until the object is gone: the kubelet stops the container
    // (SIGTERM, which it traps) and then deletes the pod with grace 0.
    let t = Instant::now();
    api.kubectl(&["delete", "pod", "web", "--timeout=90s"]);
    assert!(t.elapsed() < Duration::from_secs(60));
    assert!(api.get_json(&["pod", "web"]).is_none());
    assert!(
        k.our_sandboxes().await.is_empty()
            || wait_until(LONG, || async { k.our_sandboxes().await.is_empty().then_some(()) }).await.is_some()
    );
    let events = api.kubectl(&["get", "events"]);
    assert!(events.contains("Killing"), "{events}");
    k.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_pod_is_mirrored_and_its_mirror_comes_back() {
    let Some((api, mut k)) = start("apimirror").await else { return };
    k.write_manifest(
        "static.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: static\nspec:\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: app\n    image: {}\n    command: [\"sleep\", \"3600\"]\n",
            image("busybox:1.36")
        ),
    );
    let name = format!("static-{}", k.node);
    let mirror = eventually("mirror Running", || {
        let p = api.get_json(&["pod", &name])?;
        (p["status"]["phase"] == "Running").then_some(p)
    })
    .await;
    assert!(mirror["metadata"]["annotations"]["kubernetes.io/config.mirror"].is_string());
    assert_eq!(mirror["metadata"]["ownerReferences"][0]["kind"], "Node");
    let first_uid = mirror["metadata"]["uid"].clone();
    let running = k.pod("static").await.unwrap();
    // Deleting the mirror does not stop the static pod; the mirror is recreated.
    api.kubectl(&["delete", "pod", &name, "--grace-period=0", "--force", "--wait=false"]);
    eventually("mirror recreated", || api.get_json(&["pod", &name]).filter(|p| p["metadata"]["uid"] != first_uid))
        .await;
    let still = k.pod("static").await.unwrap();
    assert_eq!(
        container_status(&still, "app").unwrap().container_id,
        container_status(&running, "app").unwrap().container_id
    );
    // The manifest goes: so does the mirror.
    k.remove_manifest("static.yaml");
    eventually("mirror deleted", || api.get_json(&["pod", &name]).is_none().then_some(())).await;
    k.cleanup().await;
}

/// Pod status goes to the API as upstream sends it: a strategic merge patch against the API's
/// copy, so fields that became empty are cleared (no stale "creating pod sandbox" message on a
/// Running pod) and conditions merge by type (one another actor owns survives the kubelet's
/// later writes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_patches_clear_stale_fields_and_keep_conditions_other_actors_own() {
    let Some((api, mut k)) = start("apistatus").await else { return };
    // A finalizer keeps the object after the kubelet deletes it, so its last status can be read.
    api.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  finalizers: [example.com/keep]\nspec:\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: app\n    image: {}\n    command: [\"sh\", \"-c\", \"trap 'exit 0' TERM; while true; do sleep 0.2; done\"]\n",
        image("busybox:1.36")
    ));
    let running = eventually("Running and Ready", || {
        let p = api.get_json(&["pod", "web"])?;
        (p["status"]["phase"] == "Running" && p["status"]["containerStatuses"][0]["ready"] == true).then_some(p)
    })
    .await;
    assert!(running["status"]["message"].is_null() && running["status"]["reason"].is_null(), "{}", running["status"]);
    // Another actor's condition (as a disruption controller or a readiness-gate controller writes it).
    api.kubectl(&[
        "patch",
        "pod",
        "web",
        "--subresource=status",
        "--type=strategic",
        "-p",
        r#"{"status":{"conditions":[{"type":"example.com/Gate","status":"True","reason":"Checked"}]}}"#,
    ]);
    api.kubectl(&["delete", "pod", "web", "--wait=false"]);
    // The kubelet stops the container and writes the final status (then deletes the object,
    // which the finalizer keeps).
    let last = eventually("the terminated container in the API", || {
        let p = api.get_json(&["pod", "web"])?;
        p["status"]["containerStatuses"][0]["state"]["terminated"].is_object().then_some(p)
    })
    .await;
    // A deleted pod's last status is terminal (upstream's podIsTerminal): the container
    // trapped SIGTERM and exited 0.
    assert_eq!(last["status"]["phase"], "Succeeded", "{}", last["status"]);
    let conditions = last["status"]["conditions"].as_array().cloned().unwrap_or_default();
    let find = |t: &str| conditions.iter().find(|c| c["type"] == t).cloned();
    let gate = find("example.com/Gate").unwrap_or_else(|| panic!("the gate condition was wiped: {}", last["status"]));
    assert_eq!((gate["status"].as_str(), gate["reason"].as_str()), (Some("True"), Some("Checked")));
    assert_eq!(find("Ready").map(|c| c["status"].clone()), Some(serde_json::json!("False")), "{}", last["status"]);
    assert!(find("PodScheduled").is_some(), "{}", last["status"]);
    api.kubectl(&["patch", "pod", "web", "--type=json", "-p", r#"[{"op":"remove","path":"/metadata/finalizers"}]"#]);
    eventually("the pod object gone", || api.get_json(&["pod", "web"]).is_none().then_some(())).await;
    k.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_outage_keeps_pods_running_and_status_catches_up() {
    let Some((mut api, mut k)) = start("apioutage").await else { return };
    api.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: job\nspec:\n  restartPolicy: OnFailure\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: app\n    image: {}\n    command: [\"sh\", \"-c\", \"sleep 8; exit 1\"]\n",
        image("busybox:1.36")
    ));
    eventually("Running", || (pod_phase(&api, "job")? == "Running").then_some(())).await;
    let before = k.pod_exact("job").await.expect("the kubelet runs the pod");
    api.stop();
    // 60 s away (the issue's figure): the container exits and is restarted meanwhile.
    let away = Instant::now();
    wait_until(LONG, || async {
        k.pod_exact("job").await.and_then(|p| (container_status(&p, "app")?.restart_count >= 1).then_some(()))
    })
    .await
    .expect("restarted while the API is away");
    let left = Duration::from_secs(60).saturating_sub(away.elapsed());
    tokio::time::sleep(left).await;
    assert_eq!(uid(&k.pod_exact("job").await.unwrap()), uid(&before), "the pod kept running");
    api.restart();
    eventually("restart count caught up in the API", || {
        let p = api.get_json(&["pod", "job"])?;
        (p["status"]["containerStatuses"][0]["restartCount"].as_i64()? >= 1).then_some(())
    })
    .await;
    eventually("node Ready again", || {
        let n = api.get_json(&["node", &k.node])?;
        let ready = n["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == "Ready")?.clone();
        (ready["status"] == "True").then_some(())
    })
    .await;
    api.kubectl(&["delete", "pod", "job", "--timeout=90s"]);
    k.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_pull_secrets_open_the_authenticated_registry() {
    let Some((api, mut k)) = start("apisecret").await else { return };
    // hack/env-up.sh runs a second registry on 127.0.0.1:5001 behind htpasswd (kubelet / e2e-secret).
    api.kubectl(&[
        "create",
        "secret",
        "docker-registry",
        "regcred",
        "--docker-server=127.0.0.1:5001",
        "--docker-username=kubelet",
        "--docker-password=e2e-secret",
    ]);
    let pod = |name: &str, secret: bool| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 1\n{}  containers:\n  - name: app\n    image: 127.0.0.1:5001/private:1\n    imagePullPolicy: Always\n    command: [\"sleep\", \"3600\"]\n",
            if secret { "  imagePullSecrets: [{name: regcred}]\n" } else { "" }
        )
    };
    api.apply(&pod("without", false));
    let waiting = eventually("pull refused without credentials", || {
        let p = api.get_json(&["pod", "without"])?;
        let w = p["status"]["containerStatuses"][0]["state"]["waiting"].clone();
        (w["reason"] == "ErrImagePull").then_some(w)
    })
    .await;
    let msg = waiting["message"].as_str().unwrap_or_default().to_lowercase();
    assert!(msg.contains("401") || msg.contains("unauthorized") || msg.contains("authorization"), "{msg}");
    api.apply(&pod("with", true));
    eventually("pulled with the secret", || (pod_phase(&api, "with")? == "Running").then_some(())).await;
    api.kubectl(&["delete", "pod", "with", "without", "--timeout=90s"]);
    k.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_api_pod_starts_flushes_the_final_statuses() {
    use kubelet::cri::api::ContainerState;
    let Some((api, mut k)) = start("apidrain").await else { return };
    const N: usize = 8;
    let docs: Vec<String> = (0..N)
        .map(|i| format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: drainapi-{i}\n  namespace: default\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: app\n    image: {}\n    command: [\"sleep\", \"3600\"]\n",
            image("busybox:1.36")
        ))
        .collect();
    api.apply(&docs.join("---\n"));
    let ours = |sandboxes: Vec<kubelet::cri::api::PodSandbox>| -> Vec<kubelet::cri::api::PodSandbox> {
        sandboxes.into_iter().filter(|s| s.metadata.as_ref().is_some_and(|m| m.name.starts_with("drainapi-"))).collect()
    };
    // SIGTERM once the first few run.
    eventually("a few pods Running", || {
        (0..N).filter(|i| pod_phase(&api, &format!("drainapi-{i}")).as_deref() == Some("Running")).nth(1)
    })
    .await;
    let took = k.terminate();
    assert!(
        took.is_some_and(|t| t < Duration::from_secs(15)),
        "exit within 15 s: {took:?}; log:\n{}",
        tail(&k.log(), 40)
    );
    // Every container running now was reported to the API before the kubelet exited.
    let sandboxes = ours(k.runtime.list_pod_sandboxes(None).await.unwrap_or_default());
    let containers = k.runtime.list_containers(None).await.unwrap_or_default();
    let mut checked = 0;
    for c in containers.iter().filter(|c| c.state == ContainerState::ContainerRunning as i32) {
        let Some(sb) = sandboxes.iter().find(|s| s.id == c.pod_sandbox_id) else { continue };
        let name = sb.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
        let pod = api.get_json(&["pod", &name]).unwrap_or_default();
        let status = &pod["status"]["containerStatuses"][0];
        assert_eq!(status["containerID"], format!("containerd://{}", c.id), "{name}: the API has the final status");
        assert!(status["state"]["running"].is_object(), "{name}: reported running: {status}");
        checked += 1;
    }
    assert!(checked >= 2, "at least the pods Running before SIGTERM: {checked}");

    k.start_again().await;
    for i in 0..N {
        let name = format!("drainapi-{i}");
        eventually("Running after the restart", || {
            (pod_phase(&api, &name).as_deref() == Some("Running")).then_some(())
        })
        .await;
    }
    let sandboxes = ours(k.runtime.list_pod_sandboxes(None).await.unwrap_or_default());
    assert_eq!(sandboxes.len(), N, "one sandbox per pod: {sandboxes:?}");
    api.kubectl(&["delete", "pod", "--all", "--grace-period=1", "--wait=false"]);
    let gone = wait_until(LONG, || async {
        let left = ours(k.runtime.list_pod_sandboxes(None).await.unwrap_or_default());
        (k.pods().await.is_empty() && left.is_empty()).then_some(())
    })
    .await;
    k.cleanup().await;
    for sb in ours(k.runtime.list_pod_sandboxes(None).await.unwrap_or_default()) {
        let _ = k.runtime.stop_pod_sandbox(&sb.id).await;
        let _ = k.runtime.remove_pod_sandbox(&sb.id).await;
    }
    assert!(gone.is_some(), "the API pods were removed");
}
