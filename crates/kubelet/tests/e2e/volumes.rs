//! Volumes end to end on containerd: every kind read and written by a real container, ConfigMap
//! updates reaching a running container, a sized Memory emptyDir, hostPath type checks, a subPath
//! symlink escape refused, and volumes across a kubelet restart.

use crate::LONG;
use crate::api::{self, eventually};
use crate::harness::*;
use std::path::{Path, PathBuf};

/// Mount points of this (the kubelet's) mount namespace below `dir`, with their types.
fn mounts_under(dir: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let dir = dir.canonicalize().unwrap_or(dir.to_path_buf()).display().to_string();
    text.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let mp = left.split(' ').nth(4)?.replace("\\040", " ");
            let fs = right.split(' ').next()?.to_string();
            mp.starts_with(&dir).then_some((mp, fs))
        })
        .collect()
}

fn pod_dir(k: &Kubelet, uid: &str) -> PathBuf {
    k.dir.path().join("root/pods").join(uid)
}

/// The container's log (CRI format) once it has a line containing `want`.
async fn log_line(path: &str, want: &str) -> String {
    wait_until(LONG, || async { read(Path::new(path)).lines().rfind(|l| l.contains(want)).map(str::to_string) })
        .await
        .unwrap_or_else(|| {
            let dir = Path::new(path).parent().and_then(|d| d.parent()).map(Path::to_path_buf).unwrap_or_default();
            let files: Vec<String> = walk(&dir);
            panic!("no line with {want:?} in {path}:\n{}\nfiles: {files:?}", read(Path::new(path)))
        })
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(format!("{} ({} bytes)", p.display(), std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0)));
        }
    }
    out
}

fn api_log(pod: &serde_json::Value, container: &str) -> String {
    let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    format!("/var/log/pods/default_{name}_{uid}/{container}/0.log")
}

fn waiting(pod: &serde_json::Value, container: &str) -> Option<(String, String)> {
    let statuses = pod["status"]["containerStatuses"].as_array()?;
    let s = statuses.iter().find(|s| s["name"] == container)?;
    let w = &s["state"]["waiting"];
    Some((w["reason"].as_str()?.to_string(), w["message"].as_str().unwrap_or_default().to_string()))
}

fn running_json(pod: &serde_json::Value) -> bool {
    pod["status"]["phase"] == "Running"
        && pod["status"]["containerStatuses"]
            .as_array()
            .is_some_and(|a| a.iter().all(|s| s["state"]["running"].is_object()))
}

const SETTINGS: &str =
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  color: blue\n  size: large\n";

fn all_kinds_pod(host_dir: &Path) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: vols
  labels: {{app: vols}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: {img}
    resources:
      limits: {{memory: 256Mi}}
    command: ["sh", "-c"]
    args:
    - |
      echo "cfg=$(cat /cfg/paint) mode=$(stat -L -c %a /cfg/paint)"
      echo "sec=$(cat /sec/password) mode=$(stat -L -c %a /sec/password)"
      echo "dapi=$(cat /info/labels | tr '\n' ',') mem=$(cat /info/mem)"
      echo "proj=$(cat /proj/color) $(cat /proj/password) parts=$(awk -F. '{{print NF}}' /proj/token)"
      echo "memmount=$(grep ' /mem ' /proc/mounts)"
      echo "sizedmount=$(grep ' /sized ' /proc/mounts)"
      echo hi > /scratch/f && echo hi > /mem/f && echo hi > /host/f && echo "wrote=$(cat /scratch/f /mem/f /host/f | tr '\n' ,)"
      trap 'exit 0' TERM
      while true; do echo "color=$(cat /cfg/paint) labels=$(cat /info/labels | tr '\n' ',')"; sleep 1; done
    volumeMounts:
    - {{name: cfg, mountPath: /cfg, readOnly: true}}
    - {{name: sec, mountPath: /sec}}
    - {{name: info, mountPath: /info}}
    - {{name: proj, mountPath: /proj}}
    - {{name: scratch, mountPath: /scratch}}
    - {{name: mem, mountPath: /mem}}
    - {{name: sized, mountPath: /sized}}
    - {{name: host, mountPath: /host}}
  volumes:
  - name: cfg
    configMap:
      name: settings
      items: [{{key: color, path: paint, mode: 0600}}]
  - name: sec
    secret: {{secretName: creds, defaultMode: 0400}}
  - name: info
    downwardAPI:
      items:
      - {{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}
      - {{path: mem, resourceFieldRef: {{containerName: app, resource: limits.memory, divisor: 1Mi}}}}
  - name: proj
    projected:
      sources:
      - configMap: {{name: settings, items: [{{key: color, path: color}}]}}
      - secret: {{name: creds}}
      - serviceAccountToken: {{path: token, expirationSeconds: 3600}}
  - name: scratch
    emptyDir: {{}}
  - name: mem
    emptyDir: {{medium: Memory}}
  - name: sized
    emptyDir: {{medium: Memory, sizeLimit: 64Mi}}
  - name: host
    hostPath: {{path: {host}, type: DirectoryOrCreate}}
"#,
        img = image("busybox:1.36"),
        host = host_dir.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_volume_kind_is_read_and_written_and_config_map_updates_reach_the_container() {
    let Some((api, mut k)) = api::start("volkinds").await else { return };
    api.apply(SETTINGS);
    api.kubectl(&["create", "secret", "generic", "creds", "--from-literal=password=hunter2"]);
    let host_dir = k.dir.path().join("hostpath/created");
    api.apply(&all_kinds_pod(&host_dir));
    let pod = eventually("vols running", || api.get_json(&["pod", "vols"]).filter(running_json)).await;
    let log = api_log(&pod, "app");
    let ends = |line: String, want: &str| assert!(line.ends_with(want), "{line:?} does not end with {want:?}");
    ends(log_line(&log, "cfg=").await, "cfg=blue mode=600");
    ends(log_line(&log, "sec=").await, "sec=hunter2 mode=400");
    ends(log_line(&log, "dapi=").await, "dapi=app=\"vols\" mem=256");
    let proj = log_line(&log, "proj=").await;
    assert!(proj.ends_with("proj=blue hunter2 parts=3"), "{proj}");
    let mem = log_line(&log, "memmount=").await;
    assert!(mem.contains("memmount=tmpfs /mem tmpfs"), "{mem}");
    // No sizeLimit: the pod's memory limit sizes the tmpfs; with one, the smaller.
    assert!(mem.contains("size=262144k"), "{mem}");
    let sized = log_line(&log, "sizedmount=").await;
    assert!(sized.contains("tmpfs /sized tmpfs") && sized.contains("size=65536k"), "{sized}");
    ends(log_line(&log, "wrote=").await, "wrote=hi,hi,hi,");
    // On the host: the hostPath was created 0755, the files are there, secrets are on tmpfs.
    assert_eq!(read(&host_dir.join("f")), "hi\n");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&host_dir).unwrap().permissions().mode() & 0o777, 0o755);
    let uid = pod["metadata"]["uid"].as_str().unwrap().to_string();
    let pd = pod_dir(&k, &uid);
    assert_eq!(std::fs::metadata(&pd).unwrap().permissions().mode() & 0o777, 0o750);
    assert_eq!(read(&pd.join("volumes/kubernetes.io~empty-dir/scratch/f")), "hi\n");
    let mounts = mounts_under(&pd);
    for v in ["kubernetes.io~secret/sec", "kubernetes.io~projected/proj", "kubernetes.io~empty-dir/mem"] {
        assert!(mounts.iter().any(|(mp, fs)| mp.ends_with(v) && fs == "tmpfs"), "{v} on tmpfs: {mounts:?}");
    }
    assert!(!mounts.iter().any(|(mp, _)| mp.contains("configmap")), "configMaps are on disk");
    let cfg_dir = pd.join("volumes/kubernetes.io~configmap/cfg");
    assert!(std::fs::read_link(cfg_dir.join("..data")).unwrap().to_string_lossy().starts_with("..20"));

    // A ConfigMap change through the API shows up in the running container (resync ≤ 1 min).
    api.apply(&SETTINGS.replace("color: blue", "color: green"));
    log_line(&log, "color=green").await;
    // A label change rewrites the downward API file at once.
    api.kubectl(&["label", "pod", "vols", "tier=front"]);
    log_line(&log, "tier=\"front\"").await;

    // Deleted: every mount gone, the pod directory too.
    api.kubectl(&["delete", "pod", "vols", "--timeout=90s"]);
    assert!(mounts_under(&pd).is_empty(), "{:?}", mounts_under(&pd));
    assert!(!pd.exists(), "pod directory removed");
    k.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_config_map_leaves_the_pod_creating_with_failed_mount_until_it_exists() {
    let Some((api, mut k)) = api::start("volmissing").await else { return };
    api.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: waits\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: app\n    image: {}\n    command: [\"sh\", \"-c\", \"echo color=$(cat /cfg/color); sleep 3600\"]\n    volumeMounts: [{{name: cfg, mountPath: /cfg}}]\n  volumes:\n  - name: cfg\n    configMap: {{name: later}}\n",
        image("busybox:1.36")
    ));
    let (reason, message) = eventually("ContainerCreating with the mount error", || {
        waiting(&api.get_json(&["pod", "waits"])?, "app").filter(|(_, m)| m.contains("not found"))
    })
    .await;
    assert_eq!(reason, "ContainerCreating");
    assert!(
        message.contains("unmounted volumes=[cfg]")
            && message.contains("MountVolume.SetUp failed for volume \"cfg\" : configmap \"later\" not found"),
        "{message}"
    );
    let events = eventually("FailedMount event", || {
        let e = api.kubectl(&["get", "events"]);
        e.contains("FailedMount").then_some(e)
    })
    .await;
    assert!(events.contains("configmap \"later\" not found"), "{events}");
    let pod = api.get_json(&["pod", "waits"]).unwrap();
    assert_eq!(pod["status"]["phase"], "Pending");
    api.kubectl(&["create", "configmap", "later", "--from-literal=color=red"]);
    let pod =
        eventually("running once the ConfigMap exists", || api.get_json(&["pod", "waits"]).filter(running_json)).await;
    log_line(&api_log(&pod, "app"), "color=red").await;
    api.kubectl(&["delete", "pod", "waits", "--timeout=90s"]);
    k.cleanup().await;
}

fn static_pod(name: &str, volumes: &str, mounts: &str, script: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: app\n    image: {img}\n    command: [\"sh\", \"-c\", {script:?}]\n    volumeMounts:\n{mounts}  volumes:\n{volumes}",
        img = image("busybox:1.36")
    )
}

fn block_device() -> Option<PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    let rd = std::fs::read_dir("/dev").ok()?;
    rd.flatten().map(|e| e.path()).find(|p| std::fs::metadata(p).is_ok_and(|m| m.file_type().is_block_device()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_path_types_are_checked_as_upstream() {
    let Some(mut k) = Kubelet::start("volhostpath").await else { return };
    let base = k.dir.path().join("host");
    std::fs::create_dir_all(base.join("dir")).unwrap();
    std::fs::write(base.join("file"), "x").unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(base.join("sock")).unwrap();
    let p = |s: &str| base.join(s).display().to_string();
    let block = block_device().map(|b| b.display().to_string());
    let mut good = vec![
        ("dir", p("dir"), "Directory"),
        ("mkdir", p("new/dir"), "DirectoryOrCreate"),
        ("file", p("file"), "File"),
        ("mkfile", p("newfile"), "FileOrCreate"),
        ("sock", p("sock"), "Socket"),
        ("chr", "/dev/null".to_string(), "CharDevice"),
        ("unset", p("dir"), ""),
    ];
    if let Some(b) = &block {
        good.push(("blk", b.clone(), "BlockDevice"));
    }
    let vols = |list: &[(&str, String, &str)]| {
        list.iter()
            .map(|(n, path, t)| format!("  - name: {n}\n    hostPath: {{path: {path}, type: {t:?}}}\n"))
            .collect::<String>()
    };
    let mounts = |list: &[(&str, String, &str)]| {
        list.iter().map(|(n, _, _)| format!("    - {{name: {n}, mountPath: /v/{n}}}\n")).collect::<String>()
    };
    k.write_manifest("good.yaml", &static_pod("good", &vols(&good), &mounts(&good), "ls /v; sleep 3600"));
    let bad = vec![
        ("notdir", p("file"), "Directory"),
        ("notfile", p("dir"), "File"),
        ("notsock", p("file"), "Socket"),
        ("notchr", p("dir"), "CharDevice"),
        ("notblk", "/dev/null".to_string(), "BlockDevice"),
        ("noparent", p("missing/parent/f"), "FileOrCreate"),
        ("dirisfile", p("file"), "DirectoryOrCreate"),
    ];
    k.write_manifest("bad.yaml", &static_pod("bad", &vols(&bad), &mounts(&bad), "sleep 3600"));
    k.wait_pod("good", "running with every type", LONG, |p| is_running(p, "app").then_some(())).await;
    assert!(base.join("new/dir").is_dir() && base.join("newfile").is_file());
    let pod = k
        .wait_pod("bad", "ContainerCreating naming every bad volume", LONG, |p| {
            let c = container_status(p, "app")?;
            let msg = c.state.as_ref()?.waiting.as_ref()?.message.clone()?;
            (msg.matches("MountVolume.SetUp failed").count() == bad.len()).then(|| p.clone())
        })
        .await;
    assert_eq!(waiting_reason(&pod, "app"), Some("ContainerCreating"));
    let msg = container_status(&pod, "app").unwrap().state.clone().unwrap().waiting.unwrap().message.unwrap();
    for (name, path, want) in [
        ("notdir", p("file"), "is not a directory"),
        ("notfile", p("dir"), "is not a file"),
        ("notsock", p("file"), "is not a socket file"),
        ("notchr", p("dir"), "is not a character device"),
        ("notblk", "/dev/null".into(), "is not a block device"),
        ("dirisfile", p("file"), "is not a directory"),
    ] {
        let expect = format!("volume \"{name}\" : hostPath type check failed: {path} {want}");
        assert!(msg.contains(&expect), "{expect}\nnot in: {msg}");
    }
    assert!(msg.contains("volume \"noparent\" : hostPath: creating file"), "{msg}");
    assert_eq!(phase(&pod), "Pending");
    k.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sub_path_through_a_symlink_to_etc_is_refused() {
    let Some(mut k) = Kubelet::start("volsubpath").await else { return };
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: escape
spec:
  terminationGracePeriodSeconds: 1
  initContainers:
  - name: plant
    image: {img}
    command: ["sh", "-c", "ln -s /etc /shared/evil && mkdir -p /shared/ok && echo fine > /shared/ok/f"]
    volumeMounts: [{{name: shared, mountPath: /shared}}]
  containers:
  - name: good
    image: {img}
    command: ["sh", "-c", "echo got=$(cat /data/f) $SUB; sleep 3600"]
    env: [{{name: SUB, value: ok}}]
    volumeMounts: [{{name: shared, mountPath: /data, subPathExpr: $(SUB)}}]
  - name: reader
    image: {img}
    command: ["sh", "-c", "cat /stolen/passwd; sleep 3600"]
    volumeMounts: [{{name: shared, mountPath: /stolen, subPath: evil}}]
  volumes:
  - name: shared
    emptyDir: {{}}
"#,
        img = image("busybox:1.36")
    );
    k.write_manifest("escape.yaml", &manifest);
    let pod = k
        .wait_pod("escape", "reader refused, good running", LONG, |p| {
            (is_running(p, "good") && waiting_reason(p, "reader") == Some("CreateContainerConfigError"))
                .then(|| p.clone())
        })
        .await;
    let msg = container_status(&pod, "reader").unwrap().state.clone().unwrap().waiting.unwrap().message.unwrap();
    assert!(msg.contains("subPath \"evil\" of volume \"shared\" resolves outside the volume"), "{msg}");
    let uid = uid(&pod);
    let pd = pod_dir(&k, &uid);
    let mounts = mounts_under(&pd);
    assert!(!mounts.iter().any(|(mp, _)| mp.contains("/reader/")), "nothing mounted for reader: {mounts:?}");
    assert!(mounts.iter().any(|(mp, _)| mp.contains("volume-subpaths/shared/good/0")), "{mounts:?}");
    let log = format!("/var/log/pods/default_escape-{}_{uid}/good/0.log", k.node);
    assert!(log_line(&log, "got=").await.ends_with("got=fine ok"));
    k.remove_manifest("escape.yaml");
    wait_until(LONG, || async { k.pod("escape").await.is_none().then_some(()) }).await.expect("removed");
    assert!(mounts_under(&pd).is_empty(), "subPath binds undone: {:?}", mounts_under(&pd));
    assert!(!pd.exists());
    assert!(Path::new("/etc/passwd").exists());
    k.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_survive_a_kubelet_restart_without_double_mounts_and_still_tear_down() {
    let Some(mut k) = Kubelet::start("volrestart").await else { return };
    let volumes = "  - name: mem\n    emptyDir: {medium: Memory, sizeLimit: 32Mi}\n  - name: info\n    downwardAPI:\n      items: [{path: name, fieldRef: {fieldPath: metadata.name}}]\n  - name: disk\n    emptyDir: {}\n";
    let mounts = "    - {name: mem, mountPath: /mem}\n    - {name: info, mountPath: /info}\n    - {name: disk, mountPath: /sub, subPath: inner}\n";
    let script = "echo kept > /mem/f; echo sub > /sub/f; trap 'exit 0' TERM; while true; do sleep 1; done";
    k.write_manifest("keep.yaml", &static_pod("keep", volumes, mounts, script));
    let pod = k.wait_pod("keep", "running", LONG, |p| is_running(p, "app").then(|| p.clone())).await;
    let id = container_status(&pod, "app").unwrap().container_id.clone();
    let pd = pod_dir(&k, &uid(&pod));
    let before = mounts_under(&pd);
    assert_eq!(before.iter().filter(|(_, fs)| fs == "tmpfs").count(), 2, "mem and info: {before:?}");
    assert_eq!(before.len(), 3, "plus the subPath bind: {before:?}");
    wait_until(LONG, || async { (read(&pd.join("volumes/kubernetes.io~empty-dir/mem/f")) == "kept\n").then_some(()) })
        .await
        .expect("written");

    k.restart(libc::SIGKILL).await;
    // The pod keeps running (same container); after the new kubelet's first syncs and the
    // volume refresh, nothing is mounted twice and the data is still there.
    k.wait_pod("keep", "adopted", LONG, |p| {
        (container_status(p, "app")?.container_id == id && is_running(p, "app")).then_some(())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let after = mounts_under(&pd);
    assert_eq!(after, before, "no mount added or lost across the restart");
    assert_eq!(read(&pd.join("volumes/kubernetes.io~empty-dir/mem/f")), "kept\n");
    assert!(k.log().contains("reconstructed volume"), "reconstruction logged");

    k.remove_manifest("keep.yaml");
    wait_until(LONG, || async { k.pod("keep").await.is_none().then_some(()) }).await.expect("removed");
    assert!(mounts_under(&pd).is_empty(), "all unmounted: {:?}", mounts_under(&pd));
    assert!(!pd.exists(), "pod directory removed");
    k.cleanup().await;
}
