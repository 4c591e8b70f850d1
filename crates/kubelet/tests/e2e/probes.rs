//! Probes and lifecycle hooks on containerd.

use crate::LONG;
use crate::harness::*;
use std::time::Duration;

/// busybox httpd on :8080 serving the emptyDir `www`, which starts with `healthz` in it.
fn httpd_pod(name: &str, probes: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: httpd
    image: {img}
    command: ["sh", "-c", "echo ok > /www/healthz; exec httpd -f -p 8080 -h /www"]
    ports:
    - {{name: http, containerPort: 8080}}
    volumeMounts:
    - {{name: www, mountPath: /www}}
{probes}
  volumes:
  - {{name: www, emptyDir: {{}}}}
"#,
        img = image("busybox:1.36")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_liveness_restarts_after_exactly_failure_threshold_failures() {
    let Some(mut k) = Kubelet::start("liveness").await else { return };
    let probe = "    livenessProbe:\n      httpGet: {path: /healthz, port: http}\n      periodSeconds: 1\n      failureThreshold: 3";
    k.write_manifest("live.yaml", &httpd_pod("live", probe));
    let pod = k.wait_pod("live", "running", LONG, |p| is_running(p, "httpd").then(|| p.clone())).await;
    let healthz = empty_dir(&k, &pod, "www").join("healthz");
    wait_until(LONG, || async { healthz.exists().then_some(()) }).await.expect("healthz written");
    std::fs::remove_file(&healthz).unwrap();
    let restarted = k
        .wait_pod("live", "restarted by liveness", LONG, |p| {
            (container_status(p, "httpd")?.restart_count == 1 && is_running(p, "httpd")).then(|| p.clone())
        })
        .await;
    let last = container_status(&restarted, "httpd").unwrap().last_state.clone().unwrap().terminated.unwrap();
    assert_ne!(last.exit_code, 0, "killed: {last:?}");
    let log = k.log();
    let failures: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("probe failed") && l.contains("probe=Liveness") && l.contains("container=httpd"))
        .collect();
    assert_eq!(failures.len(), 3, "exactly failureThreshold failures before the restart:\n{}", failures.join("\n"));
    assert!(failures[0].contains("HTTP 404 from :8080/healthz"), "{}", failures[0]);
    assert!(log.contains("Container httpd failed liveness probe, will be restarted"));
    k.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_flips_ready_both_ways() {
    let Some(mut k) = Kubelet::start("readiness").await else { return };
    let probe = "    readinessProbe:\n      httpGet: {path: /ready, port: 8080}\n      periodSeconds: 1";
    k.write_manifest("rdy.yaml", &httpd_pod("rdy", probe));
    let pod = k
        .wait_pod("rdy", "running, unready", LONG, |p| {
            (is_running(p, "httpd") && condition(p, "Ready").as_deref() == Some("False")).then(|| p.clone())
        })
        .await;
    let msg = k
        .wait_pod("rdy", "blocker message", LONG, |p| {
            p.status.as_ref()?.message.clone().filter(|m| m.starts_with("readiness probe failing"))
        })
        .await;
    assert_eq!(msg, "readiness probe failing: HTTP 404 from :8080/ready");
    let ready = empty_dir(&k, &pod, "www").join("ready");
    std::fs::write(&ready, "yes").unwrap();
    k.wait_pod("rdy", "Ready", LONG, |p| (condition(p, "Ready").as_deref() == Some("True")).then_some(())).await;
    let p = k.pod("rdy").await.unwrap();
    assert!(container_status(&p, "httpd").unwrap().ready);
    assert_eq!(p.status.as_ref().unwrap().message, None);
    std::fs::remove_file(&ready).unwrap();
    k.wait_pod("rdy", "unready again", LONG, |p| (condition(p, "Ready").as_deref() == Some("False")).then_some(()))
        .await;
    std::fs::write(&ready, "yes").unwrap();
    let p = k
        .wait_pod("rdy", "Ready again", LONG, |p| (condition(p, "Ready").as_deref() == Some("True")).then(|| p.clone()))
        .await;
    assert_eq!(container_status(&p, "httpd").unwrap().restart_count, 0, "readiness never restarts");
    k.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_probe_protects_a_slow_starter() {
    let Some(mut k) = Kubelet::start("startup").await else { return };
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: slow
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: app
    image: {img}
    command: ["sh", "-c", "sleep 5; touch /tmp/started; exec sleep 3600"]
    startupProbe:
      exec: {{command: ["test", "-f", "/tmp/started"]}}
      periodSeconds: 1
      failureThreshold: 30
    livenessProbe:
      exec: {{command: ["test", "-f", "/tmp/started"]}}
      periodSeconds: 1
      failureThreshold: 1
"#,
        img = image("busybox:1.36")
    );
    k.write_manifest("slow.yaml", &manifest);
    let p = k
        .wait_pod("slow", "running, not started", LONG, |p| {
            let c = container_status(p, "app")?;
            (is_running(p, "app") && c.started == Some(false)).then(|| p.clone())
        })
        .await;
    assert_eq!(p.status.as_ref().unwrap().message.as_deref(), Some("startup probe of container app not passing yet"));
    let p = k
        .wait_pod("slow", "started and ready", LONG, |p| {
            let c = container_status(p, "app")?;
            (c.started == Some(true) && c.ready).then(|| p.clone())
        })
        .await;
    assert_eq!(container_status(&p, "app").unwrap().restart_count, 0, "not killed while starting");
    k.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_and_tcp_socket_probes() {
    let Some(mut k) = Kubelet::start("tcpexec").await else { return };
    let probes = "    readinessProbe:\n      tcpSocket: {port: http}\n      periodSeconds: 1\n    livenessProbe:\n      exec: {command: [\"cat\", \"/www/healthz\"]}\n      periodSeconds: 1\n      failureThreshold: 1";
    k.write_manifest("ok.yaml", &httpd_pod("ok", probes));
    let closed = "    readinessProbe:\n      tcpSocket: {port: 9999}\n      periodSeconds: 1";
    k.write_manifest("closed.yaml", &httpd_pod("closed", closed));
    let ok = k
        .wait_pod("ok", "ready over tcp", LONG, |p| {
            (condition(p, "Ready").as_deref() == Some("True")).then(|| p.clone())
        })
        .await;
    let msg = k
        .wait_pod("closed", "tcp failure message", LONG, |p| {
            p.status.as_ref()?.message.clone().filter(|m| m.starts_with("readiness probe failing: dial tcp"))
        })
        .await;
    assert!(msg.contains(":9999"), "{msg}");
    // The exec liveness probe (failureThreshold 1) keeps passing: no restart. Then break it.
    assert_eq!(container_status(&ok, "httpd").unwrap().restart_count, 0);
    std::fs::remove_file(empty_dir(&k, &ok, "www").join("healthz")).unwrap();
    k.wait_pod("ok", "restarted by exec liveness", LONG, |p| {
        (container_status(p, "httpd")?.restart_count >= 1).then_some(())
    })
    .await;
    assert!(
        k.log()
            .lines()
            .any(|l| l.contains("probe failed") && l.contains("probe=Liveness") && l.contains("exited with 1"))
    );
    k.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_hooks_run_around_the_container() {
    let Some(mut k) = Kubelet::start("hooks").await else { return };
    let hooks = k.dir.path().join("hooks");
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: hooked
spec:
  terminationGracePeriodSeconds: 10
  containers:
  - name: app
    image: {img}
    command: ["sh", "-c", "trap 'if [ -f /hooks/prestop ]; then echo after-prestop > /hooks/term; else echo no-prestop > /hooks/term; fi; exit 0' TERM; while true; do sleep 0.2; done"]
    lifecycle:
      postStart:
        exec: {{command: ["sh", "-c", "echo $HOSTNAME > /hooks/poststart"]}}
      preStop:
        exec: {{command: ["sh", "-c", "echo stopping > /hooks/prestop"]}}
    volumeMounts:
    - {{name: hooks, mountPath: /hooks}}
  - name: sleeper
    image: {img}
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"]
    lifecycle:
      preStop:
        sleep: {{seconds: 2}}
  volumes:
  - name: hooks
    hostPath: {{path: {hooks}, type: DirectoryOrCreate}}
"#,
        img = image("busybox:1.36"),
        hooks = hooks.display()
    );
    k.write_manifest("hooked.yaml", &manifest);
    k.wait_pod("hooked", "running", LONG, |p| (is_running(p, "app") && is_running(p, "sleeper")).then_some(())).await;
    wait_until(LONG, || async { hooks.join("poststart").exists().then_some(()) }).await.expect("postStart ran");
    let removed = std::time::Instant::now();
    k.remove_manifest("hooked.yaml");
    wait_until(LONG, || async { k.pod("hooked").await.is_none().then_some(()) }).await.expect("removed");
    assert_eq!(read(&hooks.join("prestop")).trim(), "stopping");
    assert_eq!(read(&hooks.join("term")).trim(), "after-prestop", "preStop runs before SIGTERM");
    assert!(removed.elapsed() >= Duration::from_secs(2), "the sleep preStop hook was waited for");
    k.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_post_start_hook_kills_the_container() {
    let Some(mut k) = Kubelet::start("poststart").await else { return };
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: badhook
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: app
    image: {img}
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"]
    lifecycle:
      postStart:
        exec: {{command: ["sh", "-c", "echo nope >&2; exit 3"]}}
"#,
        img = image("busybox:1.36")
    );
    k.write_manifest("badhook.yaml", &manifest);
    let p = k
        .wait_pod("badhook", "killed by the failed hook", LONG, |p| {
            let c = container_status(p, "app")?;
            c.last_state.as_ref()?.terminated.as_ref()?;
            Some(p.clone())
        })
        .await;
    let c = container_status(&p, "app").unwrap();
    let w = c.state.as_ref().unwrap().waiting.clone();
    // Right after the kill the container waits with the hook error, then backs off.
    if let Some(w) = w {
        assert!(matches!(w.reason.as_deref(), Some("PostStartHookError") | Some("CrashLoopBackOff")), "{w:?}");
    }
    assert!(k.log().contains("FailedPostStartHook"), "hook failure logged");
    assert!(k.log().contains("exited with 3: nope"), "hook output in the message");
    k.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_probes_against_a_real_health_server() {
    let Some(mut k) = Kubelet::start("grpc").await else { return };
    // The grpc.health.v1 server is this crate's example binary, run from the host's build
    // output with the host's C library mounted in (busybox has none).
    let server =
        std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().join("examples/grpc_health_server");
    assert!(server.exists(), "{} is built by `cargo test`", server.display());
    let bin_dir = server.parent().unwrap();
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: grpc
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: server
    image: {img}
    command: ["/grpc-bin/grpc_health_server", "9090"]
    readinessProbe:
      grpc: {{port: 9090}}
      periodSeconds: 1
    volumeMounts:
    - {{name: bin, mountPath: /grpc-bin, readOnly: true}}
    - {{name: libs, mountPath: /lib/x86_64-linux-gnu, readOnly: true}}
    - {{name: lib64, mountPath: /lib64, readOnly: true}}
  - name: down
    image: {img}
    command: ["sleep", "3600"]
    readinessProbe:
      grpc: {{port: 9090, service: down}}
      periodSeconds: 1
  volumes:
  - {{name: bin, hostPath: {{path: {bin}, type: Directory}}}}
  - {{name: libs, hostPath: {{path: /usr/lib/x86_64-linux-gnu, type: Directory}}}}
  - {{name: lib64, hostPath: {{path: /usr/lib64, type: Directory}}}}
"#,
        img = image("busybox:1.36"),
        bin = bin_dir.display()
    );
    k.write_manifest("grpc.yaml", &manifest);
    k.wait_pod("grpc", "server ready over grpc", LONG, |p| container_status(p, "server")?.ready.then_some(())).await;
    let msg = k
        .wait_pod("grpc", "down service reported", LONG, |p| {
            p.status.as_ref()?.message.clone().filter(|m| m.contains("NOT_SERVING"))
        })
        .await;
    assert_eq!(msg, "readiness probe failing: service unhealthy (responded with NOT_SERVING)");
    let p = k.pod("grpc").await.unwrap();
    assert!(!container_status(&p, "down").unwrap().ready);
    k.cleanup().await;
}
