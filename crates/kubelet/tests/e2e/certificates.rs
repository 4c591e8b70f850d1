//! TLS bootstrap and certificate rotation end to end: a kubelet that starts from a bootstrap
//! token only gets its client certificate through a CertificateSigningRequest (auto-approved and
//! signed by testapi), writes upstream's files, registers Ready, gets a serving certificate for
//! 10250, and with two-minute certificates rotates both while the lease keeps renewing and
//! `kubectl logs` keeps working.

use crate::api::{TestApi, eventually, kubectl_present};
use crate::harness::*;
use std::path::Path;
use std::time::{Duration, Instant};

const TOKEN_ID: &str = "abcdef";
const TOKEN_SECRET: &str = "0123456789abcdef";

fn bootstrap_secret() -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: bootstrap-token-{TOKEN_ID}\n  namespace: kube-system\n\
         type: bootstrap.kubernetes.io/token\nstringData:\n  token-id: {TOKEN_ID}\n  token-secret: {TOKEN_SECRET}\n  \
         usage-bootstrap-authentication: \"true\"\n  usage-bootstrap-signing: \"true\"\n"
    )
}

fn bootstrap_kubeconfig(api: &TestApi) -> std::path::PathBuf {
    let server = std::fs::read_to_string(api.dir.path().join("ready")).unwrap();
    let path = api.dir.path().join("bootstrap-kubelet.conf");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority: {}\n\
         users:\n- name: tls-bootstrap-token-user\n  user:\n    token: {TOKEN_ID}.{TOKEN_SECRET}\n\
         contexts:\n- name: tls-bootstrap-token-user@kubernetes\n  context:\n    cluster: c\n    user: tls-bootstrap-token-user\n\
         current-context: tls-bootstrap-token-user@kubernetes\n",
        server.trim(),
        api.dir.path().join("ca.crt").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Where `<pki>/<prefix>-current.pem` points, if it is a link.
fn current(pki: &Path, prefix: &str) -> Option<std::path::PathBuf> {
    std::fs::read_link(pki.join(format!("{prefix}-current.pem"))).ok()
}

/// `<prefix>-YYYY-MM-DD-HH-MM-SS.pem`, upstream's FileStore name.
fn upstream_name(path: &Path, prefix: &str) -> bool {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let Some(ts) = name.strip_prefix(&format!("{prefix}-")).and_then(|r| r.strip_suffix(".pem")) else {
        return false;
    };
    ts.len() == 19 && ts.split('-').count() == 6 && ts.split('-').all(|p| p.bytes().all(|b| b.is_ascii_digit()))
}

fn csrs(api: &TestApi) -> Vec<serde_json::Value> {
    api.get_json(&["csr"]).and_then(|l| l["items"].as_array().cloned()).unwrap_or_default()
}

fn approved_and_issued(c: &serde_json::Value) -> bool {
    c["status"]["conditions"].as_array().is_some_and(|cs| cs.iter().any(|x| x["type"] == "Approved"))
        && c["status"]["certificate"].as_str().is_some_and(|s| !s.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_token_gets_certificates_that_rotate_without_a_restart() {
    let test = "certs";
    if !kubectl_present(test) {
        return;
    }
    let node = format!("e2e-{test}");
    let api = TestApi::start_with_args(&node, &["--csr-auto-approve".into(), "--csr-signing-seconds=120".into()]);
    api.apply(&bootstrap_secret());
    let kubeconfig = api.dir.path().join("kubelet-bootstrapped.conf");
    let args = vec![
        "--bootstrap-kubeconfig".to_string(),
        bootstrap_kubeconfig(&api).display().to_string(),
        "--kubeconfig".to_string(),
        kubeconfig.display().to_string(),
        "--node-ip=127.0.0.1".to_string(),
        "--client-ca-file".to_string(),
        api.dir.path().join("ca.crt").display().to_string(),
    ];
    let config = "rotateCertificates: true\nserverTLSBootstrap: true\nnodeStatusUpdateFrequency: 1s\nnodeLeaseDurationSeconds: 4\n";
    let Some(mut k) = Kubelet::start_with_args(test, config, &args).await else { return };
    let pki = k.dir.path().join("root").join("pki");

    // The client pair: upstream's names, one PEM with the certificate then the key, 0600.
    let client = current(&pki, "kubelet-client").expect("kubelet-client-current.pem link");
    assert!(upstream_name(&client, "kubelet-client"), "{}", client.display());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&client).unwrap().permissions().mode() & 0o777, 0o600);
    let pem = read(&client);
    assert!(pem.find("BEGIN CERTIFICATE").unwrap() < pem.find("PRIVATE KEY").unwrap());
    // --kubeconfig as upstream writes it: points at the current pair.
    let written = read(&kubeconfig);
    let link = pki.join("kubelet-client-current.pem").display().to_string();
    assert!(written.contains("default-auth") && written.contains("default-context"), "{written}");
    assert!(written.contains(&format!("client-certificate: {link}")), "{written}");
    assert!(written.contains(&format!("client-key: {link}")), "{written}");

    // The first request, asked by the token's user, approved, issued. With rotateCertificates
    // upstream bootstraps through the certificate manager ("will bootstrap in background"),
    // whose requests use generateName `csr-`; `node-csr-<digest>` is LoadClientCert's (no
    // rotation), unit-tested in certificate::bootstrap.
    let first = csrs(&api);
    let bootstrap = first
        .iter()
        .find(|c| c["spec"]["signerName"] == "kubernetes.io/kube-apiserver-client-kubelet")
        .expect("client CSR")
        .clone();
    assert!(bootstrap["metadata"]["name"].as_str().unwrap().starts_with("csr-"), "{bootstrap}");
    assert_eq!(bootstrap["spec"]["username"], format!("system:bootstrap:{TOKEN_ID}"));
    assert_eq!(bootstrap["spec"]["usages"], serde_json::json!(["digital signature", "client auth"]));
    assert!(approved_and_issued(&bootstrap), "{bootstrap}");

    let ready = |api: &TestApi| {
        let n = api.get_json(&["node", &node])?;
        let ready = n["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == "Ready")?.clone();
        (ready["status"] == "True" && n["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"] == k.port).then_some(n)
    };
    eventually("node Ready", || ready(&api)).await;

    // The serving request comes from the node's own identity, with its addresses.
    let serving = eventually("serving certificate issued", || {
        csrs(&api)
            .into_iter()
            .find(|c| c["spec"]["signerName"] == "kubernetes.io/kubelet-serving" && approved_and_issued(c))
    })
    .await;
    assert_eq!(serving["spec"]["username"], format!("system:node:{node}"));
    assert_eq!(serving["spec"]["usages"], serde_json::json!(["digital signature", "server auth"]));
    let server = eventually("kubelet-server-current.pem", || current(&pki, "kubelet-server")).await;
    assert!(upstream_name(&server, "kubelet-server"), "{}", server.display());

    // kubectl logs reaches 10250, which only has the issued certificate to serve.
    api.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: ticker\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  \
         - name: app\n    image: {}\n    command: [\"sh\", \"-c\", \"while true; do echo tick; sleep 0.5; done\"]\n",
        image("busybox:1.36")
    ));
    let logs = |api: &TestApi| {
        let out = api.kubectl_raw(&["logs", "ticker", "--tail=1"], None);
        (out.status.success() && String::from_utf8_lossy(&out.stdout).contains("tick")).then_some(())
    };
    eventually("kubectl logs", || logs(&api)).await;

    // Two-minute certificates: both rotate at 70–90 % of their life, without a restart.
    let pid = k.pid();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (c, s) = (current(&pki, "kubelet-client"), current(&pki, "kubelet-server"));
        if c.as_ref().is_some_and(|c| *c != client) && s.as_ref().is_some_and(|s| *s != server) {
            assert!(upstream_name(c.as_ref().unwrap(), "kubelet-client"));
            break;
        }
        assert!(Instant::now() < deadline, "no rotation: client {c:?} server {s:?}\n{}", tail(&k.log(), 60));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(k.pid(), pid, "rotation needs no restart");
    assert!(client.exists(), "old pairs are kept, as upstream");
    // The rotation's request was made with the node's own (client certificate) identity.
    let own = csrs(&api)
        .into_iter()
        .filter(|c| c["spec"]["signerName"] == "kubernetes.io/kube-apiserver-client-kubelet")
        .find(|c| c["spec"]["username"] == format!("system:node:{node}"))
        .expect("a rotation request from the node itself");
    assert!(own["metadata"]["name"].as_str().unwrap().starts_with("csr-"), "{own}");

    // After the rotation: the lease keeps renewing and kubectl logs keeps working.
    let renew = |api: &TestApi| {
        api.get_json(&["lease", "-n", "kube-node-lease", &node]).map(|l| l["spec"]["renewTime"].clone())
    };
    let before = eventually("lease", || renew(&api)).await;
    eventually("lease renewed after the rotation", || renew(&api).filter(|r| *r != before)).await;
    eventually("kubectl logs after the rotation", || logs(&api)).await;

    api.kubectl(&["delete", "pod", "ticker", "--timeout=90s"]);
    k.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_without_rotation_names_its_request_from_the_digest_and_a_restart_reuses_the_files() {
    let test = "certsonce";
    if !kubectl_present(test) {
        return;
    }
    let node = format!("e2e-{test}");
    let api = TestApi::start_with_args(&node, &["--csr-auto-approve".into()]);
    api.apply(&bootstrap_secret());
    let kubeconfig = api.dir.path().join("kubelet-bootstrapped.conf");
    let args = vec![
        "--bootstrap-kubeconfig".to_string(),
        bootstrap_kubeconfig(&api).display().to_string(),
        "--kubeconfig".to_string(),
        kubeconfig.display().to_string(),
    ];
    let Some(mut k) = Kubelet::start_with_args(test, "nodeStatusUpdateFrequency: 1s\n", &args).await else { return };
    let pki = k.dir.path().join("root").join("pki");
    let client = current(&pki, "kubelet-client").expect("kubelet-client-current.pem link");
    assert!(upstream_name(&client, "kubelet-client"), "{}", client.display());
    assert!(!pki.join("kubelet-client.key.tmp").exists(), "the temporary key is removed once issued");
    let client_csrs = |api: &TestApi| {
        csrs(api)
            .into_iter()
            .filter(|c| c["spec"]["signerName"] == "kubernetes.io/kube-apiserver-client-kubelet")
            .collect::<Vec<_>>()
    };
    let first = client_csrs(&api);
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(first[0]["metadata"]["name"].as_str().unwrap().starts_with("node-csr-"), "{}", first[0]);
    assert!(approved_and_issued(&first[0]));
    let registered = |api: &TestApi| {
        let n = api.get_json(&["node", &node])?;
        n["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
            .then_some(())
    };
    eventually("node Ready", || registered(&api)).await;

    // A restart finds a valid kubeconfig: no new request, the same pair, the node stays Ready.
    k.restart(libc::SIGTERM).await;
    let renew = |api: &TestApi| {
        api.get_json(&["lease", "-n", "kube-node-lease", &node]).map(|l| l["spec"]["renewTime"].clone())
    };
    let before = eventually("lease", || renew(&api)).await;
    eventually("lease renewed after the restart", || renew(&api).filter(|r| *r != before)).await;
    assert_eq!(client_csrs(&api).len(), 1, "a valid client certificate is reused");
    assert_eq!(current(&pki, "kubelet-client"), Some(client));
    assert!(k.log().contains("skipping bootstrap"), "{}", tail(&k.log(), 40));
    k.cleanup().await;
}
