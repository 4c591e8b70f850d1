//! Drives the real kubectl (/usr/bin/kubectl) against a testapi server on a free port.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const KUBECTL: &str = "/usr/bin/kubectl";

struct Server {
    child: Child,
    dir: tempfile::TempDir,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(extra: &[&str]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["serve", "--dir", dir.path().to_str().unwrap(), "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let child = Command::new(env!("CARGO_BIN_EXE_testapi"))
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let ready = dir.path().join("ready");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "testapi did not get ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(50));
    let url = std::fs::read_to_string(&ready).unwrap().trim().to_string();
    Server { child, dir, url }
}

fn kubeconfig(s: &Server, name: &str) -> PathBuf {
    s.dir.path().join(format!("{name}.kubeconfig"))
}

/// Runs kubectl with the given kubeconfig; returns (success, stdout, stderr).
fn kubectl_with(config: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(KUBECTL)
        .args(args)
        .env("KUBECONFIG", config)
        .env("HOME", config.parent().unwrap())
        .output()
        .unwrap();
    let r = (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    eprintln!("$ kubectl {}\n{}{}", args.join(" "), r.1, r.2);
    r
}

fn ok(config: &Path, args: &[&str]) -> String {
    let (success, out, err) = kubectl_with(config, args);
    assert!(success, "kubectl {args:?} failed: {err}");
    out
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap()
}

#[test]
fn kubectl_end_to_end() {
    if !Path::new(KUBECTL).exists() {
        eprintln!("skipping: {KUBECTL} is missing");
        return;
    }
    let s = start(&["--bind-unscheduled-to", "n1", "--kubelet-node", "n1", "--token", "t0k3n:alice:devs"]);
    let admin = kubeconfig(&s, "admin");
    let d = s.dir.path();

    // Discovery and the pre-created namespaces.
    let ns = ok(&admin, &["get", "ns"]);
    for n in ["default", "kube-system", "kube-node-lease", "kube-public"] {
        assert!(ns.contains(n), "{ns}");
    }
    assert!(ok(&admin, &["api-resources"]).contains("leases"));

    // A kubelet identity registers its node.
    let node = write(
        d,
        "node.yaml",
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: n1\nstatus:\n  addresses:\n  - type: InternalIP\n    address: 127.0.0.1\n",
    );
    ok(&kubeconfig(&s, "kubelet-n1"), &["create", "-f", &node]);
    assert!(ok(&admin, &["get", "nodes"]).contains("n1"));

    // create -f: the pod is bound by --bind-unscheduled-to.
    let pod = write(
        d,
        "pod.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels: {app: web}\nspec:\n  containers:\n  - name: c\n    image: nginx:1.27\n",
    );
    ok(&admin, &["create", "-f", &pod]);
    let p = json(&ok(&admin, &["get", "pods", "-o", "json"]));
    assert_eq!(p["items"][0]["metadata"]["name"], "web");
    assert_eq!(p["items"][0]["spec"]["nodeName"], "n1");
    assert_eq!(p["items"][0]["status"]["phase"], "Pending");
    // Server-side tables for kubectl's human-readable output.
    let table = ok(&admin, &["get", "pods", "-o", "wide"]);
    assert!(table.contains("READY") && table.contains("Pending") && table.contains("n1"), "{table}");
    let (dup, _, err) = kubectl_with(&admin, &["create", "-f", &pod]);
    assert!(!dup && err.contains("AlreadyExists"), "{err}");

    // kubectl's typed generators send protobuf bodies.
    ok(&admin, &["create", "namespace", "t1"]);
    ok(&admin, &["-n", "t1", "create", "configmap", "x", "--from-literal=a=b"]);
    ok(&admin, &["-n", "t1", "create", "secret", "generic", "s", "--from-literal=p=q"]);
    assert_eq!(ok(&admin, &["-n", "t1", "get", "secret", "s", "-o", "jsonpath={.data.p}"]), "cQ==");
    ok(&admin, &["delete", "namespace", "t1"]);
    assert!(!kubectl_with(&admin, &["-n", "t1", "get", "configmap", "x"]).0);

    // apply twice: create, then update.
    let cm = write(d, "cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata:\n  a: \"1\"\n");
    assert!(ok(&admin, &["apply", "-f", &cm]).contains("created"));
    write(d, "cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata:\n  a: \"2\"\n  b: \"3\"\n");
    assert!(ok(&admin, &["apply", "-f", &cm]).contains("configured"));
    assert_eq!(ok(&admin, &["get", "cm", "cfg", "-o", "jsonpath={.data.a}{.data.b}"]), "23");

    // get -w sees an update.
    let mut watcher = Command::new(KUBECTL)
        .args(["get", "pods", "-w", "--output-watch-events", "-o", "json", "--request-timeout=20s"])
        .env("KUBECONFIG", &admin)
        .env("HOME", d)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    ok(&admin, &["label", "pod", "web", "watched=yes"]);
    std::thread::sleep(Duration::from_millis(1500));
    let _ = watcher.kill();
    let mut watched = String::new();
    watcher.stdout.take().unwrap().read_to_string(&mut watched).unwrap();
    let _ = watcher.wait();
    assert!(watched.contains("\"MODIFIED\"") && watched.contains("watched"), "watch output: {watched}");

    // Status subresource patch (what the kubelet does) and the main resource ignoring status.
    ok(
        &admin,
        &["patch", "pod", "web", "--subresource=status", "--type=merge", "-p", r#"{"status":{"phase":"Running"}}"#],
    );
    ok(&admin, &["patch", "pod", "web", "--type=merge", "-p", r#"{"status":{"phase":"Failed"}}"#]);
    assert_eq!(ok(&admin, &["get", "pod", "web", "-o", "jsonpath={.status.phase}"]), "Running");

    // Events and describe.
    // (describe selects events by involvedObject name, namespace, kind and uid)
    let uid = ok(&admin, &["get", "pod", "web", "-o", "jsonpath={.metadata.uid}"]);
    let ev = write(
        d,
        "ev.yaml",
        &format!(
            "apiVersion: v1\nkind: Event\nmetadata: {{name: web.1}}\ninvolvedObject: {{kind: Pod, name: web, namespace: default, uid: {uid}}}\n\
reason: Pulled\nmessage: pulled the image\ntype: Normal\ncount: 1\nsource: {{component: kubelet, host: n1}}\n"
        ),
    );
    ok(&admin, &["create", "-f", &ev]);
    let events = ok(&admin, &["get", "events"]);
    assert!(events.contains("Pulled") && events.contains("pod/web"), "{events}");
    let described = ok(&admin, &["describe", "pod", "web"]);
    assert!(
        described.contains("Node:") && described.contains("n1") && described.contains("pulled the image"),
        "{described}"
    );

    // Deleting a bound pod only marks it; a grace-period-0 DELETE removes it.
    ok(&admin, &["delete", "pod", "web", "--wait=false"]);
    let marked = json(&ok(&admin, &["get", "pod", "web", "-o", "json"]));
    assert!(marked["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 30);
    ok(&admin, &["delete", "--raw", "/api/v1/namespaces/default/pods/web?gracePeriodSeconds=0"]);
    let (found, _, err) = kubectl_with(&admin, &["get", "pod", "web"]);
    assert!(!found && err.contains("NotFound"), "{err}");

    // kubectl run works without a scheduler.
    ok(&admin, &["run", "r1", "--image=busybox"]);
    assert_eq!(ok(&admin, &["get", "pod", "r1", "-o", "jsonpath={.spec.nodeName}"]), "n1");

    // Bearer tokens and anonymous access.
    let ca = d.join("ca.crt");
    let none = PathBuf::from(write(d, "none.kubeconfig", "apiVersion: v1\nkind: Config\n"));
    let base =
        ["--kubeconfig", none.to_str().unwrap(), "--server", &s.url, "--certificate-authority", ca.to_str().unwrap()];
    let with = |extra: &[&str]| {
        let mut a: Vec<&str> = base.to_vec();
        a.extend_from_slice(extra);
        kubectl_with(&none, &a)
    };
    assert!(with(&["--token", "t0k3n", "get", "ns"]).0);
    let (allowed, _, err) = with(&["--token", "wrong", "get", "ns"]);
    assert!(!allowed && err.contains("Unauthorized"), "{err}");
    // /healthz answers whatever the credentials.
    assert!(with(&["--token", "wrong", "get", "--raw", "/healthz"]).0);
    assert!(!with(&["--token", "wrong", "get", "--raw", "/api"]).0);

    // TokenReview answers from the known tokens.
    let tr = write(d, "tr.yaml", "apiVersion: authentication.k8s.io/v1\nkind: TokenReview\nspec:\n  token: t0k3n\n");
    let review = json(&ok(&admin, &["create", "-f", &tr, "-o", "json"]));
    assert_eq!(review["status"]["user"]["username"], "alice");
}

/// `kubectl debug` adds an ephemeral container with a strategic merge patch on the pod's
/// `ephemeralcontainers` subresource; a second one keeps the first.
#[test]
fn kubectl_debug_adds_ephemeral_containers() {
    if !Path::new(KUBECTL).exists() {
        eprintln!("skipping: {KUBECTL} is missing");
        return;
    }
    let s = start(&["--bind-unscheduled-to", "n1"]);
    let admin = kubeconfig(&s, "admin");
    ok(&admin, &["run", "web", "--image=busybox:1.36", "--", "sleep", "3600"]);
    let before = json(&ok(&admin, &["get", "pod", "web", "-o", "json"]));
    let debug = ["debug", "web", "--image=busybox:1.36", "--target=web", "-c", "debugger", "--", "sh", "-c", "ps"];
    ok(&admin, &debug);
    ok(&admin, &["debug", "web", "--image=busybox:1.36", "-c", "shell", "--", "sh"]);
    let after = json(&ok(&admin, &["get", "pod", "web", "-o", "json"]));
    let ecs = after["spec"]["ephemeralContainers"].as_array().expect("ephemeral containers");
    let names: Vec<&str> = ecs.iter().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(names, ["debugger", "shell"]);
    assert_eq!(ecs[0]["targetContainerName"], "web");
    assert_eq!(ecs[0]["command"], serde_json::json!(["sh", "-c", "ps"]));
    assert_eq!(ecs[0]["imagePullPolicy"], "IfNotPresent", "defaulted as a container");
    assert_eq!(after["spec"]["containers"], before["spec"]["containers"]);
    let rv = |p: &serde_json::Value| p["metadata"]["resourceVersion"].as_str().unwrap().parse::<u64>().unwrap();
    assert!(rv(&after) > rv(&before));
    // The subresource answers GET with the pod.
    let raw = ok(&admin, &["get", "--raw", "/api/v1/namespaces/default/pods/web/ephemeralcontainers"]);
    assert_eq!(json(&raw)["spec"]["ephemeralContainers"], after["spec"]["ephemeralContainers"]);
    // An unknown target is refused with kube-apiserver's message, and nothing changes.
    let (added, _, err) = kubectl_with(&admin, &["debug", "web", "--image=busybox:1.36", "-c", "x", "--target=nope"]);
    assert!(!added);
    let want = "The Pod \"web\" is invalid: spec.ephemeralContainers[2].targetContainerName: Not found: \"nope\"";
    assert!(err.contains(want), "{err}");
    let last = json(&ok(&admin, &["get", "pod", "web", "-o", "json"]));
    assert_eq!(last["metadata"]["resourceVersion"], after["metadata"]["resourceVersion"]);
}

#[test]
fn unbound_pods_are_deleted_immediately() {
    if !Path::new(KUBECTL).exists() {
        eprintln!("skipping: {KUBECTL} is missing");
        return;
    }
    let s = start(&[]);
    let admin = kubeconfig(&s, "admin");
    ok(&admin, &["run", "lonely", "--image=busybox"]);
    assert_eq!(ok(&admin, &["get", "pod", "lonely", "-o", "jsonpath={.spec.nodeName}"]), "");
    ok(&admin, &["delete", "pod", "lonely"]);
    let (found, _, _) = kubectl_with(&admin, &["get", "pod", "lonely"]);
    assert!(!found);
}

#[test]
fn whoami_and_can_i_follow_the_policy() {
    if !Path::new(KUBECTL).exists() {
        eprintln!("skipping: {KUBECTL} is missing");
        return;
    }
    let policy = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(policy.path(), "- user: bob\n  verbs: [get, list]\n  resources: [pods]\n").unwrap();
    let s = start(&["--token", "bobtok:bob:devs", "--policy", policy.path().to_str().unwrap()]);
    let admin = kubeconfig(&s, "admin");
    assert!(ok(&admin, &["auth", "whoami"]).contains("system:masters"));
    assert_eq!(ok(&admin, &["auth", "can-i", "delete", "nodes"]).trim(), "yes");
    let d = s.dir.path();
    let none = PathBuf::from(write(d, "none.kubeconfig", "apiVersion: v1\nkind: Config\n"));
    let ca = d.join("ca.crt");
    let bob = |extra: &[&str]| {
        let mut a = vec!["--kubeconfig", none.to_str().unwrap(), "--server", &s.url];
        a.extend(["--certificate-authority", ca.to_str().unwrap(), "--token", "bobtok"]);
        a.extend_from_slice(extra);
        kubectl_with(&none, &a)
    };
    let who = bob(&["auth", "whoami"]);
    assert!(who.0 && who.1.contains("bob") && who.1.contains("devs"), "{who:?}");
    assert_eq!(bob(&["auth", "can-i", "list", "pods"]).1.trim(), "yes");
    let denied = bob(&["auth", "can-i", "delete", "pods"]);
    assert!(!denied.0 && denied.1.starts_with("no"), "{denied:?}");
}

fn b64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            out.push(if i <= chunk.len() { T[((n >> (18 - 6 * i)) & 63) as usize] as char } else { '=' });
        }
    }
    out
}

/// A CSR for a node's client identity, as the kubelet sends it (base64 of the PEM request).
fn node_csr(name: &str, node: &str) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(rcgen::DnType::OrganizationName, "system:nodes");
    p.distinguished_name.push(rcgen::DnType::CommonName, format!("system:node:{node}"));
    let pem = p.serialize_request(&key).unwrap().pem().unwrap();
    let request = b64(pem.as_bytes());
    format!(
        "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: {name}\nspec:\n  \
         signerName: kubernetes.io/kube-apiserver-client-kubelet\n  usages: [digital signature, client auth]\n  \
         request: {request}\n"
    )
}

#[test]
fn kubectl_lists_approves_and_denies_certificate_signing_requests() {
    let s = start(&["--csr-signing-seconds=3600"]);
    let admin = kubeconfig(&s, "admin");
    let dir = s.dir.path();
    ok(&admin, &["create", "-f", &write(dir, "a.yaml", &node_csr("a", "n1"))]);
    ok(&admin, &["create", "-f", &write(dir, "b.yaml", &node_csr("b", "n2"))]);
    let list = ok(&admin, &["get", "csr"]);
    assert!(list.contains("a") && list.contains("b"), "{list}");
    let a = json(&ok(&admin, &["get", "csr", "a", "-o", "json"]));
    assert_eq!(a["spec"]["username"], "admin", "the requester is recorded");
    ok(&admin, &["certificate", "approve", "a"]);
    ok(&admin, &["certificate", "deny", "b"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let a = json(&ok(&admin, &["get", "csr", "a", "-o", "json"]));
        if a["status"]["certificate"].as_str().is_some_and(|c| !c.is_empty()) {
            assert_eq!(a["status"]["conditions"][0]["type"], "Approved");
            break;
        }
        assert!(Instant::now() < deadline, "no certificate issued: {a}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let b = json(&ok(&admin, &["get", "csr", "b", "-o", "json"]));
    assert_eq!(b["status"]["conditions"][0]["type"], "Denied");
    assert!(b["status"].get("certificate").is_none());
    ok(&admin, &["delete", "csr", "a"]);
    assert!(!ok(&admin, &["get", "csr"]).contains("a "));
}
