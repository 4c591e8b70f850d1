//! The kubelet-managed /etc/hosts end to end (upstream conformance: test/e2e/common/node
//! kubelet_etc_hosts.go "should test kubelet managed /etc/hosts file" and pods.go's hostAliases
//! case): each container prints its /etc/hosts, compared byte for byte with upstream's format.

use crate::LONG;
use crate::api::{self, TestApi};
use crate::harness::*;

const MANAGED: &str = "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost \
    ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n";
const END: &str = "--- end of /etc/hosts ---\n";

fn container(name: &str, mounts: &str) -> String {
    format!(
        "  - name: {name}\n    image: {img}\n    command: [\"sh\", \"-c\", \"cat /etc/hosts; echo '{end}'; sleep 3600\"]\n{mounts}",
        img = image("busybox:1.36"),
        end = END.trim_end()
    )
}

fn pod(name: &str, spec: &str, containers: &[String]) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 1\n{spec}  containers:\n{}",
        containers.concat()
    )
}

/// A container's stdout from its CRI log file (`<time> <stream> <P|F> <text>`; P lines are
/// continued by the next one).
fn stdout_of(api: &TestApi, pod: &str, c: &str) -> String {
    let uid = api.get_json(&["pod", pod]).and_then(|p| p["metadata"]["uid"].as_str().map(str::to_string));
    let Some(uid) = uid else { return String::new() };
    let log = read(std::path::Path::new(&format!("/var/log/pods/default_{pod}_{uid}/{c}/0.log")));
    let mut out = String::new();
    for line in log.lines() {
        let mut f = line.splitn(4, ' ');
        let (_, stream, tag, text) = (f.next(), f.next(), f.next(), f.next().unwrap_or_default());
        if stream == Some("stdout") {
            out.push_str(text);
            if tag == Some("F") {
                out.push('\n');
            }
        }
    }
    out
}

/// What the container printed before the end marker (its /etc/hosts, exactly).
async fn hosts_of(api: &TestApi, k: &Kubelet, pod: &str, c: &str) -> String {
    let printed = wait_until(LONG, || async {
        let log = stdout_of(api, pod, c);
        log.rfind(END.trim_end()).map(|at| log[..at].to_string())
    })
    .await;
    printed.unwrap_or_else(|| {
        let status = api.get_json(&["pod", pod]).map(|p| p["status"].clone());
        panic!(
            "{pod}/{c} printed no /etc/hosts: {:?}\nstatus: {status:?}\nkubelet: {}",
            stdout_of(api, pod, c),
            tail(&k.log(), 30)
        )
    })
}

/// The pod's IP once the API has it: a container can print before the kubelet's status write
/// for its sandbox has reached the API server.
async fn pod_ip(api: &TestApi, pod: &str) -> String {
    api::eventually(&format!("{pod}'s podIP in the API"), || {
        api.get_json(&["pod", pod])?["status"]["podIP"].as_str().map(str::to_string)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_get_the_kubelet_managed_hosts_file_unless_they_mount_their_own() {
    let Some((api, mut k)) = api::start("etchosts").await else { return };
    let host_etc_hosts = "  volumes:\n  - name: host-etc-hosts\n    hostPath: {path: /etc/hosts, type: File}\n";
    let original = "    volumeMounts:\n    - {name: host-etc-hosts, mountPath: /etc/hosts-original}\n";
    let own = format!("{original}    - {{name: host-etc-hosts, mountPath: /etc/hosts}}\n");
    api.apply(&pod(
        "plain",
        host_etc_hosts,
        &[container("managed", original), container("managed-2", ""), container("own", &own)],
    ));
    api.apply(&pod("fqdn", "  hostname: h1\n  subdomain: sub\n", &[container("app", "")]));
    let aliases =
        "  hostAliases:\n  - {ip: 123.45.67.89, hostnames: [foo, bar]}\n  - {ip: 10.1.2.3, hostnames: [baz]}\n";
    api.apply(&pod("aliases", aliases, &[container("app", "")]));
    let host_network = "  hostNetwork: true\n  hostAliases:\n  - {ip: 1.2.3.4, hostnames: [hn-alias, hn-alias-2]}\n";
    api.apply(&pod("hostnet", host_network, &[container("app", "")]));

    // A pod's own IP with its name; every container but the one mounting /etc/hosts itself,
    // which sees the node's file untouched.
    let node_hosts = std::fs::read_to_string("/etc/hosts").unwrap();
    let managed = hosts_of(&api, &k, "plain", "managed").await;
    let ip = pod_ip(&api, "plain").await;
    assert_eq!(managed, format!("{MANAGED}{ip}\tplain\n"));
    assert_eq!(hosts_of(&api, &k, "plain", "managed-2").await, managed);
    assert_eq!(hosts_of(&api, &k, "plain", "own").await, node_hosts);

    // hostname + subdomain: the FQDN first, then the short name.
    let fqdn = hosts_of(&api, &k, "fqdn", "app").await;
    let ip = pod_ip(&api, "fqdn").await;
    assert_eq!(fqdn, format!("{MANAGED}{ip}\th1.sub.default.svc.cluster.local\th1\n"));

    // hostAliases after the pod's line, one tab-separated line per IP.
    let with_aliases = hosts_of(&api, &k, "aliases", "app").await;
    let ip = pod_ip(&api, "aliases").await;
    let want =
        format!("{MANAGED}{ip}\taliases\n\n# Entries added by HostAliases.\n123.45.67.89\tfoo\tbar\n10.1.2.3\tbaz\n");
    assert_eq!(with_aliases, want);

    // hostNetwork: the node's own file under the host-network header, then the aliases (not
    // "kubelet-managed" in the conformance test's sense: the header differs).
    let hostnet = hosts_of(&api, &k, "hostnet", "app").await;
    let want = format!(
        "# Kubernetes-managed hosts file (host network).\n{node_hosts}\n# Entries added by HostAliases.\n\
         1.2.3.4\thn-alias\thn-alias-2\n"
    );
    assert_eq!(hostnet, want);
    assert!(!hostnet.starts_with("# Kubernetes-managed hosts file."));

    // On the node: <root>/pods/<uid>/etc-hosts, mode 0644, as upstream.
    let uid = api.get_json(&["pod", "fqdn"]).unwrap()["metadata"]["uid"].as_str().unwrap().to_string();
    let file = k.dir.path().join("root/pods").join(&uid).join("etc-hosts");
    assert_eq!(read(&file), fqdn);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o644);
    k.cleanup().await;
}
