//! Reliability on containerd: bad manifests beside running pods, kubelet restarts with many
//! running pods (SIGTERM and SIGKILL), and containerd going away and coming back.

use crate::LONG;
use crate::api::{TestApi, eventually};
use crate::harness::*;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/manifests")
}

fn sleeper(name: &str, probe: bool) -> String {
    let probe =
        if probe { "\n    readinessProbe:\n      exec: {command: [\"true\"]}\n      periodSeconds: 5" } else { "" };
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: app\n    image: {img}\n    command: [\"sh\", \"-c\", \"trap 'exit 0' TERM; while true; do sleep 1; done\"]{probe}\n",
        img = image("busybox:1.36")
    )
}

fn container_id(p: &k8s_openapi::api::core::v1::Pod) -> Option<String> {
    container_status(p, "app")?.container_id.clone()
}

fn ready(p: &k8s_openapi::api::core::v1::Pod) -> bool {
    condition(p, "Ready").as_deref() == Some("True")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_manifests_beside_a_running_pod_disturb_nothing() {
    let Some(mut k) = Kubelet::start("corpus").await else { return };
    k.write_manifest("good.yaml", &sleeper("good", false));
    let good = k.wait_pod("good", "running", LONG, |p| is_running(p, "app").then(|| p.clone())).await;
    let names: Vec<String> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    // Each file lands whole (written hidden, then renamed; the file source skips hidden files as
    // upstream does): a half-copied corpus file can be a valid pod, which would start.
    let place = |name: &str, bytes: &[u8]| {
        let hidden = k.manifests().join(format!(".{name}.part"));
        std::fs::write(&hidden, bytes).unwrap();
        std::fs::rename(&hidden, k.manifests().join(name)).unwrap();
    };
    for n in &names {
        place(n, &std::fs::read(corpus_dir().join(n)).unwrap());
    }
    let mut big = b"apiVersion: v1\nkind: Pod\n# ".to_vec();
    big.resize(10 * 1024 * 1024 + 1, b'x');
    place("oversized.yaml", &big);
    let reported = wait_until(LONG, || async {
        let log = k.log();
        (names.iter().all(|n| log.contains(n.as_str())) && log.contains("oversized.yaml")).then_some(())
    })
    .await;
    let log = k.log();
    let missing: Vec<&String> = names.iter().filter(|n| !log.contains(n.as_str())).collect();
    assert!(reported.is_some(), "not reported: {missing:?}\n{}", tail(&log, 40));
    // Each error names its field (the corpus says which).
    let expected: Vec<(String, String)> = names
        .iter()
        .map(|n| {
            let text = std::fs::read_to_string(corpus_dir().join(n)).unwrap();
            (n.clone(), text.lines().next().unwrap().trim_start_matches("# expect: ").to_string())
        })
        .collect();
    let names_field = |log: &str, n: &str, expect: &str| {
        log.lines().any(|l| l.contains(n) && (l.contains(expect) || l.contains(&expect.replace('"', "\\\""))))
    };
    let all = wait_until(LONG, || async {
        let log = k.log();
        expected.iter().all(|(n, e)| names_field(&log, n, e)).then_some(())
    })
    .await;
    let log = k.log();
    let wrong: Vec<&(String, String)> = expected.iter().filter(|(n, e)| !names_field(&log, n, e)).collect();
    assert!(all.is_some(), "errors not naming their field: {wrong:?}\n{}", tail(&log, 40));
    assert!(k.exit_status().is_none(), "kubelet still running");
    use std::os::unix::fs::PermissionsExt;
    for dir in ["root", "root/pods"] {
        let mode = std::fs::metadata(k.dir.path().join(dir)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o750, "{dir} is not readable by other users");
    }
    let again = k.pod("good").await.expect("good pod still reported");
    assert_eq!(container_id(&again), container_id(&good), "good pod untouched");
    assert_eq!(container_status(&again, "app").unwrap().restart_count, 0);
    assert_eq!(k.pods().await.len(), 1, "no pod from the corpus");
    k.cleanup().await;
}

/// How many pods the restart test runs (the issue asks for 50).
fn restart_pods() -> usize {
    std::env::var("KUBELET_E2E_RESTART_PODS").ok().and_then(|v| v.parse().ok()).unwrap_or(50)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_with_many_running_pods_keep_every_container_and_status() {
    let Some(mut k) = Kubelet::start_with("restart50", "maxPods: 200\n").await else { return };
    let n = restart_pods();
    for i in 0..n {
        k.write_manifest(&format!("p{i}.yaml"), &sleeper(&format!("p{i}"), i % 2 == 0));
    }
    let all_ready = |pods: &[k8s_openapi::api::core::v1::Pod]| {
        pods.len() == n && pods.iter().all(|p| is_running(p, "app") && ready(p))
    };
    let before = wait_until(LONG * 4, || async {
        let pods = k.pods().await;
        all_ready(&pods).then_some(pods)
    })
    .await
    .unwrap_or_else(|| panic!("{n} pods did not all become ready; log:\n{}", tail(&k.log(), 30)));
    let ids: HashMap<String, Option<String>> =
        before.iter().map(|p| (p.metadata.name.clone().unwrap(), container_id(p))).collect();
    let sandboxes = k.our_sandboxes().await.len();
    assert_eq!(sandboxes, n);
    for signal in [libc::SIGTERM, libc::SIGKILL] {
        let t = Instant::now();
        k.restart(signal).await;
        let healthy = t.elapsed();
        // Every pod reported again, Running and Ready: the restart takes no pod out of service.
        let mut saw_unready = Vec::new();
        let deadline = Instant::now() + LONG;
        let after = loop {
            let pods = k.pods().await;
            for p in &pods {
                if is_running(p, "app") && !ready(p) {
                    saw_unready.push(p.metadata.name.clone().unwrap_or_default());
                }
            }
            if all_ready(&pods) {
                break pods;
            }
            assert!(Instant::now() < deadline, "statuses not back after signal {signal}; log:\n{}", tail(&k.log(), 30));
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        };
        eprintln!(
            "signal {signal}: healthy after {:?}, all {n} statuses Running+Ready {:?} after start",
            healthy,
            t.elapsed()
        );
        assert!(saw_unready.is_empty(), "pods reported NotReady after the restart: {saw_unready:?}");
        for p in &after {
            let name = p.metadata.name.clone().unwrap();
            assert_eq!(container_id(p), ids[&name], "{name}: container replaced (signal {signal})");
            assert_eq!(container_status(p, "app").unwrap().restart_count, 0, "{name}");
        }
        assert_eq!(k.our_sandboxes().await.len(), sandboxes, "no sandbox created or removed (signal {signal})");
    }
    k.cleanup().await;
}

fn containerd(action: &str) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../hack/containerd.sh");
    let out = std::process::Command::new("bash").arg(script).arg(action).output().expect("hack/containerd.sh");
    assert!(out.status.success(), "containerd {action}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Starts containerd again when the test ends, whatever happened.
struct RestoreContainerd;

impl Drop for RestoreContainerd {
    fn drop(&mut self) {
        containerd("start");
    }
}

fn node_ready(api: &TestApi, node: &str) -> Option<(String, String)> {
    let n = api.get_json(&["node", node])?;
    let c = n["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == "Ready")?.clone();
    Some((c["status"].as_str()?.to_string(), c["message"].as_str().unwrap_or("").to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_going_away_and_back_is_survived() {
    let Some((api, mut k)) = crate::api::start("crirestart").await else { return };
    api.apply(&sleeper("steady", false));
    eventually("steady running", || {
        let p = api.get_json(&["pod", "steady"])?;
        (p["status"]["containerStatuses"][0]["state"]["running"].is_object()).then_some(())
    })
    .await;
    eventually("node Ready", || (node_ready(&api, &k.node)?.0 == "True").then_some(())).await;
    let before = k.pod_exact("steady").await.unwrap();
    let id = container_id(&before);

    let _restore = RestoreContainerd;
    containerd("stop");
    // While the runtime is gone: NotReady with the runtime's reason; the kubelet keeps running.
    let (_, message) = eventually("node NotReady", || node_ready(&api, &k.node).filter(|(s, _)| s == "False")).await;
    assert!(message.contains("container runtime"), "NotReady message: {message}");
    assert!(k.exit_status().is_none(), "kubelet still running without its runtime");
    containerd("start");

    eventually("node Ready again", || (node_ready(&api, &k.node)?.0 == "True").then_some(())).await;
    // The pod kept its container; nothing duplicated; new pods start again.
    let after = wait_until(LONG, || async { k.pod_exact("steady").await.filter(|p| is_running(p, "app")) })
        .await
        .expect("steady reported running");
    assert_eq!(container_id(&after), id, "container kept");
    assert_eq!(container_status(&after, "app").unwrap().restart_count, 0);
    // One sandbox for the pod, the same one (the test's own CRI connection may need a call or
    // two to reconnect, hence the wait).
    let pod_uid = uid(&after);
    let sandboxes_of = |uid: String| {
        let rt = k.runtime.clone();
        async move {
            let all = rt.list_pod_sandboxes(None).await.ok()?;
            Some(all.into_iter().filter(|s| s.metadata.as_ref().is_some_and(|m| m.uid == uid)).count())
        }
    };
    let sandboxes = wait_until(LONG, || sandboxes_of(pod_uid.clone())).await;
    assert_eq!(sandboxes, Some(1), "no duplicate sandbox");
    api.apply(&sleeper("fresh", false));
    eventually("a new pod runs after the restart", || {
        let p = api.get_json(&["pod", "fresh"])?;
        (p["status"]["containerStatuses"][0]["state"]["running"].is_object()).then_some(())
    })
    .await;
    k.cleanup().await;
}

/// User + system CPU time of a process.
fn cpu_time(pid: u32) -> std::time::Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<u64> = after.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    let ticks = f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0);
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    std::time::Duration::from_millis(ticks * 1000 / hz)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_errors_and_throttling_for_a_minute_lose_nothing() {
    if !crate::api::kubectl_present("api5xx") {
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let fault = scratch.path().join("fault");
    let node = "e2e-api5xx";
    let api = TestApi::start_with_args(node, &["--fault-file".into(), fault.display().to_string()]);
    let args = vec!["--kubeconfig".to_string(), api.kubelet_kubeconfig().display().to_string()];
    let extra = "nodeStatusUpdateFrequency: 1s\nnodeLeaseDurationSeconds: 4\n";
    let Some(mut k) = Kubelet::start_with_args("api5xx", extra, &args).await else { return };
    api.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: job\nspec:\n  restartPolicy: Never\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: app\n    image: {}\n    command: [\"sh\", \"-c\", \"sleep 10; exit 0\"]\n",
        image("busybox:1.36")
    ));
    let phase =
        |api: &TestApi| api.get_json(&["pod", "job"]).and_then(|p| p["status"]["phase"].as_str().map(str::to_string));
    eventually("Running in the API", || (phase(&api)? == "Running").then_some(())).await;
    let renew =
        |api: &TestApi| api.get_json(&["lease", "-n", "kube-node-lease", node]).map(|l| l["spec"]["renewTime"].clone());
    let pid = k.pid().unwrap();
    let cpu_before = cpu_time(pid);
    let started = Instant::now();
    // 20 s of 503, 20 s of 429 (Retry-After: 1), 20 s of 500.
    for code in ["503", "429", "500"] {
        std::fs::write(&fault, code).unwrap();
        let until = started
            + std::time::Duration::from_secs(20)
                * (["503", "429", "500"].iter().position(|c| *c == code).unwrap() as u32 + 1);
        while Instant::now() < until {
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    }
    let cpu = cpu_time(pid) - cpu_before;
    let lease_during = renew(&api);
    // The pod finished during the faults: the kubelet knows, the API does not yet.
    let local = k.pod_exact("job").await.expect("pod still known to the kubelet");
    assert_eq!(phase_of(&local), "Succeeded");
    assert_eq!(phase(&api).as_deref(), Some("Running"), "no write got through the faults");
    std::fs::remove_file(&fault).unwrap();
    eventually("Succeeded flushed to the API", || (phase(&api)? == "Succeeded").then_some(())).await;
    eventually("lease renewed again", || renew(&api).filter(|r| Some(r) != lease_during.as_ref())).await;
    eprintln!("kubelet CPU over 60 s of API faults: {cpu:?}");
    assert!(cpu < std::time::Duration::from_secs(6), "busy loop during API faults: {cpu:?} CPU in 60 s");
    assert!(k.exit_status().is_none());
    k.cleanup().await;
}

fn phase_of(p: &k8s_openapi::api::core::v1::Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_burst_of_pod_starts_drains_and_the_next_start_adopts_everything() {
    use kubelet::cri::api::{ContainerState, PodSandboxState};
    let Some(mut k) = Kubelet::start_with("drain", "maxPods: 200\n").await else { return };
    const N: usize = 15;
    for i in 0..N {
        k.write_manifest(&format!("d{i}.yaml"), &sleeper(&format!("d{i}"), i % 2 == 0));
    }
    // SIGTERM once the first few run, the others still being started.
    let running = wait_until(LONG, || async {
        let pods = k.pods().await;
        let ids: Vec<String> = pods.iter().filter(|p| is_running(p, "app")).filter_map(container_id).collect();
        (ids.len() >= 3).then_some(ids)
    })
    .await
    .unwrap_or_else(|| panic!("no pod ran; log:\n{}", tail(&k.log(), 30)));
    let took = k.terminate();
    let log = k.log();
    eprintln!("SIGTERM with {} of {N} pods running: exited after {took:?}", running.len());
    assert!(took.is_some_and(|t| t < Duration::from_secs(15)), "exit within 15 s: {took:?}; log:\n{}", tail(&log, 40));
    assert!(!log.contains("did not stop in time"), "every task stopped by itself; log:\n{}", tail(&log, 40));
    // A kubelet stop stops no container.
    for id in &running {
        let raw = id.rsplit("://").next().unwrap_or(id);
        let st = k.runtime.container_status(raw).await.expect("container still there");
        assert_eq!(st.state, ContainerState::ContainerRunning as i32, "container {raw} still runs after SIGTERM");
    }

    k.start_again().await;
    let pods = wait_until(LONG * 2, || async {
        let pods = k.pods().await;
        (pods.len() == N && pods.iter().all(|p| is_running(p, "app"))).then_some(pods)
    })
    .await
    .unwrap_or_else(|| panic!("not every pod ran after the restart; log:\n{}", tail(&k.log(), 40)));
    // What ran before SIGTERM is the same instance.
    let now: Vec<String> = pods.iter().filter_map(container_id).collect();
    for id in &running {
        assert!(now.contains(id), "container {id} replaced after the restart");
    }
    // One ready sandbox per pod, nothing half-made left over.
    let sandboxes = k.our_sandboxes().await;
    let mut per_pod: HashMap<String, usize> = HashMap::new();
    for sb in &sandboxes {
        assert_eq!(sb.state, PodSandboxState::SandboxReady as i32, "a sandbox left not ready: {sb:?}");
        *per_pod.entry(sb.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default()).or_default() += 1;
    }
    assert_eq!(per_pod.len(), N, "a sandbox per pod: {per_pod:?}");
    assert!(per_pod.values().all(|n| *n == 1), "duplicate sandboxes: {per_pod:?}");
    let ours: std::collections::HashSet<String> = sandboxes.iter().map(|s| s.id.clone()).collect();
    let containers = k.runtime.list_containers(None).await.unwrap_or_default();
    let mine: Vec<_> = containers.iter().filter(|c| ours.contains(&c.pod_sandbox_id)).collect();
    assert_eq!(mine.len(), N, "one container per pod, none left created and not started");
    assert!(mine.iter().all(|c| c.state == ContainerState::ContainerRunning as i32));
    k.cleanup().await;
}
