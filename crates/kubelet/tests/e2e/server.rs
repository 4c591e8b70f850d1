//! The kubelet server on 10250 end to end: kubectl logs/exec/port-forward through testapi (the
//! in-memory API server proxies pods/log, pods/exec and pods/portforward to the kubelet, which
//! proxies on to containerd's streaming server), and direct HTTPS calls checking 401/403/200 for
//! client certificates and webhook tokens.

use crate::LONG;
use crate::api::{TestApi, eventually, kubectl_present};
use crate::harness::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

/// testapi with a token for `alice` and a policy letting her read nodes/proxy only; the kubelet
/// trusts testapi's CA for client certificates and asks it to review tokens and access.
pub(crate) async fn start(test: &str) -> Option<(TestApi, Kubelet, tempfile::TempDir)> {
    if !kubectl_present(test) {
        return None;
    }
    let node = format!("e2e-{test}");
    let scratch = tempfile::tempdir().unwrap();
    let policy = scratch.path().join("policy.yaml");
    // monitor: a read-only role with the fine-grained nodes/pods and nodes/healthz only.
    let rules = "- user: alice\n  verbs: [get]\n  resources: [nodes]\n  subresources: [proxy]\n\
                 - user: monitor\n  verbs: [get]\n  resources: [nodes]\n  subresources: [pods, healthz]\n";
    std::fs::write(&policy, rules).unwrap();
    let api = TestApi::start_with_args(
        &node,
        &[
            "--token".into(),
            "alice-token:alice".into(),
            "--token".into(),
            "monitor-token:monitor".into(),
            "--policy".into(),
            policy.display().to_string(),
        ],
    );
    let args = vec![
        "--kubeconfig".to_string(),
        api.kubelet_kubeconfig().display().to_string(),
        "--node-ip=127.0.0.1".to_string(),
        "--client-ca-file".to_string(),
        api.dir.path().join("ca.crt").display().to_string(),
    ];
    let k = Kubelet::start_with_args(test, "nodeStatusUpdateFrequency: 1s\n", &args).await?;
    // testapi must see the node's address and port before it can proxy to the kubelet.
    eventually("node registered with its kubelet port", || {
        let n = api.get_json(&["node", &k.node])?;
        (n["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"] == k.port).then_some(())
    })
    .await;
    Some((api, k, scratch))
}

fn web_pod(img: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  terminationGracePeriodSeconds: 2
  volumes: [{{name: state, emptyDir: {{}}}}]
  containers:
  - name: app
    image: {img}
    command: ["sh", "-c", "i=0; while true; do i=$((i+1)); echo line-$i; sleep 0.3; done"]
  - name: httpd
    image: {img}
    command: ["sh", "-c", "mkdir -p /www && echo served-through-port-forward > /www/index.html && exec httpd -f -p 8080 -h /www"]
  - name: crasher
    image: {img}
    command: ["sh", "-c", "n=$(cat /state/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /state/n; echo run-$n; sleep 1; exit 1"]
    volumeMounts: [{{name: state, mountPath: /state}}]
"#
    )
}

fn running(api: &TestApi, name: &str, containers: &[&str]) -> Option<serde_json::Value> {
    let p = api.get_json(&["pod", name])?;
    let statuses = p["status"]["containerStatuses"].as_array()?;
    containers
        .iter()
        .all(|c| statuses.iter().any(|s| s["name"] == *c && s["state"]["running"].is_object()))
        .then_some(p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs_exec_and_port_forward_reach_containers() {
    let Some((api, mut k, _scratch)) = start("srvkubectl").await else { return };
    api.apply(&web_pod(&image("busybox:1.36")));
    eventually("web running", || running(&api, "web", &["app", "httpd"])).await;

    // exec without a TTY: command, arguments and exit status come through.
    let out = api.kubectl(&["exec", "web", "-c", "app", "--", "sh", "-c", "echo $((6*7)); echo to-stderr >&2"]);
    assert_eq!(out.trim(), "42");
    let failed = api.kubectl_raw(&["exec", "web", "-c", "app", "--", "sh", "-c", "exit 3"], None);
    assert_eq!(failed.status.code(), Some(3), "exit status of the remote command");
    // exec with stdin.
    let piped = api.kubectl_raw(&["exec", "-i", "web", "-c", "app", "--", "sh", "-c", "tr a-z A-Z"], Some("shout\n"));
    assert!(piped.status.success(), "{}", String::from_utf8_lossy(&piped.stderr));
    assert_eq!(String::from_utf8_lossy(&piped.stdout).trim(), "SHOUT");
    // exec -it under a real pseudo-terminal (script(1) provides one): the shell sees a TTY.
    let kubeconfig = api.dir.path().join("admin.kubeconfig");
    let tty = Command::new("script")
        .args(["-qec", "kubectl exec -it web -c app -- sh -c 'tty; echo tty-ok'", "/dev/null"])
        .env("KUBECONFIG", &kubeconfig)
        .stdin(Stdio::null())
        .output()
        .expect("script(1)");
    let text = String::from_utf8_lossy(&tty.stdout);
    assert!(text.contains("/dev/pts/") && text.contains("tty-ok"), "exec -it: {text:?} {:?}", tty.stderr);

    // logs: whole, --tail, -f (new lines keep arriving), --previous.
    let all = api.kubectl(&["logs", "web", "-c", "app"]);
    assert!(all.lines().next().is_some_and(|l| l == "line-1"), "{all}");
    let tail = api.kubectl(&["logs", "web", "-c", "app", "--tail=2"]);
    let lines: Vec<&str> = tail.lines().collect();
    assert_eq!(lines.len(), 2, "{tail}");
    let n = |l: &str| l.trim_start_matches("line-").parse::<u64>().unwrap();
    assert_eq!(n(lines[1]), n(lines[0]) + 1, "{tail}");
    let mut follow = Command::new("kubectl")
        .args(["logs", "-f", "web", "-c", "app", "--tail=1"])
        .env("KUBECONFIG", &kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let seen = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout).lines().map_while(Result::ok).take(4).collect::<Vec<String>>()
    });
    let seen = tokio::time::timeout(LONG, seen).await.expect("follow produced lines").unwrap();
    let _ = follow.kill();
    let _ = follow.wait();
    assert_eq!(seen.len(), 4, "{seen:?}");
    for w in seen.windows(2) {
        assert_eq!(n(&w[1]), n(&w[0]) + 1, "followed lines arrive in order: {seen:?}");
    }
    assert!(n(&seen[3]) > n(lines[1]), "follow saw lines written after the tail: {seen:?} vs {tail}");

    // --limit-bytes cuts the output; --timestamps prefixes the runtime's RFC3339Nano time.
    let limited = api.kubectl(&["logs", "web", "-c", "app", "--limit-bytes=9"]);
    assert_eq!(limited, "line-1\nli");
    let stamped = api.kubectl(&["logs", "web", "-c", "app", "--timestamps", "--tail=1"]);
    let (ts, rest) = stamped.trim().split_once(' ').unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok() && rest.starts_with("line-"), "{stamped}");
    // attach: the running container's output as it is written.
    let mut attach = Command::new("kubectl")
        .args(["attach", "web", "-c", "app"])
        .env("KUBECONFIG", &kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = attach.stdout.take().unwrap();
    let attached = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .filter(|l| l.starts_with("line-"))
            .take(2)
            .collect::<Vec<_>>()
    });
    let attached = tokio::time::timeout(LONG, attached).await.expect("attach produced lines").unwrap();
    let _ = attach.kill();
    let _ = attach.wait();
    assert_eq!(attached.len(), 2, "{attached:?}");
    assert_eq!(n(&attached[1]), n(&attached[0]) + 1, "{attached:?}");

    eventually("crasher restarted and running again", || {
        let p = api.get_json(&["pod", "web"])?;
        let s = p["status"]["containerStatuses"].as_array()?.iter().find(|s| s["name"] == "crasher")?.clone();
        (s["restartCount"].as_i64()? >= 1).then_some(())
    })
    .await;
    let (prev, cur) = eventually("previous and current logs differ", || {
        let prev = api.kubectl_raw(&["logs", "web", "-c", "crasher", "--previous"], None);
        let cur = api.kubectl_raw(&["logs", "web", "-c", "crasher"], None);
        let (prev, cur) = (
            String::from_utf8_lossy(&prev.stdout).trim().to_string(),
            String::from_utf8_lossy(&cur.stdout).trim().to_string(),
        );
        (prev.starts_with("run-") && cur.starts_with("run-") && prev != cur).then_some((prev, cur))
    })
    .await;
    let run = |s: &str| s.trim_start_matches("run-").parse::<u64>().unwrap();
    assert!(run(&prev) < run(&cur), "previous {prev} is older than current {cur}");

    // port-forward to busybox httpd: a random local port, then a real HTTP request through it.
    let mut pf = Command::new("kubectl")
        .args(["port-forward", "pod/web", ":8080", "--address", "127.0.0.1"])
        .env("KUBECONFIG", &kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pf_out = pf.stdout.take().unwrap();
    let local = tokio::task::spawn_blocking(move || {
        let mut reader = BufReader::new(pf_out);
        let mut line = String::new();
        while reader.read_line(&mut line).ok()? > 0 {
            // "Forwarding from 127.0.0.1:41234 -> 8080"
            if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
                let port = rest.split_whitespace().next()?.parse::<u16>().ok();
                // Keep draining: kubectl dies of SIGPIPE when its stdout is closed.
                std::thread::spawn(move || for _ in reader.lines() {});
                return port;
            }
            line.clear();
        }
        None
    });
    let local = tokio::time::timeout(LONG, local).await.expect("port-forward started").unwrap();
    let Some(local) = local else {
        let _ = pf.kill();
        let out = pf.wait_with_output().unwrap();
        panic!("port-forward failed: {}", String::from_utf8_lossy(&out.stderr));
    };
    let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().unwrap();
    let body = wait_until(Duration::from_secs(30), || async {
        client.get(format!("http://127.0.0.1:{local}/index.html")).send().await.ok()?.text().await.ok()
    })
    .await;
    let _ = pf.kill();
    let out = pf.wait_with_output().unwrap();
    assert_eq!(
        body.as_deref().map(str::trim),
        Some("served-through-port-forward"),
        "port-forward: {}\nkubelet log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        crate::harness::tail(&k.log(), 30)
    );

    api.kubectl(&["delete", "pod", "web", "--wait=false"]);
    k.cleanup().await;
}

/// A client for the kubelet's HTTPS port (its serving certificate is self-signed).
fn https(identity: Option<reqwest::Identity>) -> reqwest::Client {
    let mut b =
        reqwest::Client::builder().danger_accept_invalid_certs(true).no_proxy().timeout(Duration::from_secs(10));
    if let Some(id) = identity {
        b = b.identity(id);
    }
    b.build().unwrap()
}

fn identity(dir: &std::path::Path, name: &str) -> reqwest::Identity {
    let mut pem = std::fs::read(dir.join(format!("{name}.crt"))).unwrap();
    pem.extend(std::fs::read(dir.join(format!("{name}.key"))).unwrap());
    reqwest::Identity::from_pem(&pem).unwrap()
}

async fn status(c: &reqwest::Client, url: &str, token: Option<&str>) -> (u16, String) {
    let mut r = c.get(url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let resp = r.send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let code = resp.status().as_u16();
    (code, resp.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_calls_are_authenticated_and_authorized() {
    let Some((api, mut k, _scratch)) = start("srvauth").await else { return };
    let base = format!("https://127.0.0.1:{}", k.port);
    let dir = api.dir.path();

    // No credentials (anonymous is off by default): 401.
    let anon = https(None);
    assert_eq!(status(&anon, &format!("{base}/pods"), None).await.0, 401);
    assert_eq!(status(&anon, &format!("{base}/healthz"), None).await.0, 401);
    // A bad token: 401.
    assert_eq!(status(&anon, &format!("{base}/pods"), Some("wrong")).await.0, 401);

    // A valid client certificate without permission (the node's own identity has no policy rule): 403.
    let node = https(Some(identity(dir, &format!("kubelet-{}", k.node))));
    let (code, body) = status(&node, &format!("{base}/pods"), None).await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(
        body,
        format!("Forbidden (user=system:node:{}, verb=get, resource=nodes, subresource(s)=[pods proxy])\n", k.node)
    );

    // A certificate with permission (system:masters): 200, and the server answers.
    let admin = https(Some(identity(dir, "admin")));
    let (code, body) = status(&admin, &format!("{base}/healthz"), None).await;
    assert_eq!((code, body.as_str()), (200, "ok"));
    let (code, body) = status(&admin, &format!("{base}/configz"), None).await;
    assert_eq!(code, 200);
    let cfg: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(cfg["kubeletconfig"]["port"], k.port);

    // The webhook token path: TokenReview says alice; the policy lets her read nodes/proxy only.
    let (code, body) = status(&anon, &format!("{base}/pods"), Some("alice-token")).await;
    assert_eq!(code, 200, "{body}");
    let pods: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(pods["kind"], "PodList");
    let (code, body) = status(&anon, &format!("{base}/logs/"), Some("alice-token")).await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(body, "Forbidden (user=alice, verb=get, resource=nodes, subresource(s)=[log])\n");
    let (code, _) = status(&anon, &format!("{base}/stats/summary"), Some("alice-token")).await;
    assert_eq!(code, 403, "stats is its own subresource");

    // Fine-grained authorization: nodes/pods and nodes/healthz reach /pods and /healthz without
    // nodes/proxy; /configz needs nodes/configz or nodes/proxy.
    let (code, body) = status(&anon, &format!("{base}/pods"), Some("monitor-token")).await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = status(&anon, &format!("{base}/healthz"), Some("monitor-token")).await;
    assert_eq!((code, body.as_str()), (200, "ok"));
    let (code, body) = status(&anon, &format!("{base}/configz"), Some("monitor-token")).await;
    assert_eq!(
        (code, body.as_str()),
        (403, "Forbidden (user=monitor, verb=get, resource=nodes, subresource(s)=[configz proxy])\n")
    );

    // Plain HTTP on the TLS port is refused, and TLS below 1.2 is never negotiated (rustls has none).
    let plain = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5)).build().unwrap();
    let r = plain.get(format!("http://127.0.0.1:{}/healthz", k.port)).send().await;
    assert!(r.is_err() || !r.unwrap().status().is_success());

    // runningpods: what the runtime runs, through an authorized client.
    api.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: sleeper\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: s\n    image: {}\n    command: [sleep, \"3600\"]\n",
        image("busybox:1.36")
    ));
    let running = wait_until(LONG, || async {
        let (code, body) = status(&admin, &format!("{base}/runningpods/"), None).await;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let found = v["items"].as_array()?.iter().any(|p| {
            p["metadata"]["name"] == "sleeper" && p["spec"]["containers"].as_array().is_some_and(|c| c.len() == 1)
        });
        (code == 200 && found).then_some(())
    })
    .await;
    assert!(running.is_some(), "sleeper in /runningpods/");
    let (code, out) = {
        let r = admin.post(format!("{base}/run/default/sleeper/s?cmd=echo+ran-in-container")).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    assert_eq!((code, out.trim()), (200, "ran-in-container"));
    api.kubectl(&["delete", "pod", "sleeper", "--wait=false"]);
    k.cleanup().await;
}
