//! The binary's start-up: configuration errors, "not supported yet" reports, waiting for an
//! absent runtime. No container runtime needed.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn kubelet() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kubelet"))
}

#[test]
fn an_invalid_config_is_one_error_listing_every_bad_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(
        &path,
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nmaxPods: -1\nport: 70000\ncgroupDriver: nope\n",
    )
    .unwrap();
    let out = kubelet().arg("--config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    for field in ["maxPods: -1", "port: 70000", "cgroupDriver: \"nope\"", &path.display().to_string()] {
        assert!(err.contains(field), "{field} missing from {err}");
    }
}

#[test]
fn an_unknown_field_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nmaxPodz: 3\n")
        .unwrap();
    let out = kubelet().arg("--config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("maxPodz"));
}

#[test]
fn unsupported_fields_are_reported_and_an_absent_runtime_is_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(
        &path,
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nmemoryThrottlingFactor: 0.5\nhealthzPort: 0\n",
    )
    .unwrap();
    let mut child = kubelet()
        .arg("--config")
        .arg(&path)
        .arg("--root-dir")
        .arg(dir.path().join("root"))
        .arg("--container-runtime-endpoint")
        .arg(format!("unix://{}/absent.sock", dir.path().display()))
        .arg("--fail-swap-on=false")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut unsupported = false;
    let mut retries = 0;
    while Instant::now() < deadline && !(unsupported && retries >= 2) {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            unsupported |= line.contains("not supported yet") && line.contains("memoryThrottlingFactor");
            if line.contains("container runtime not reachable") {
                retries += 1;
            }
            seen.push(line);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(unsupported, "memoryThrottlingFactor reported as not supported yet: {seen:#?}");
    assert!(retries >= 2, "kept retrying the absent runtime: {seen:#?}");
}

#[test]
fn a_bad_pleg_period_is_named_at_start() {
    for (flag, value) in [("--pleg-relist-period", "0s"), ("--pleg-relist-period-with-events", "10m")] {
        let out = kubelet().arg(format!("{flag}={value}")).arg("--fail-swap-on=false").output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{flag}={value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(flag) && err.contains("must be greater than 0 and at most 2m"), "{err}");
    }
}
