//! The plugin binary on its own: before any kubelet is there it makes its file-backed devices
//! and serves on its socket (and waits to register). Also makes `cargo test --workspace` build
//! the binary the kubelet's device e2e test runs.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn makes_its_devices_and_serves_before_a_kubelet_is_there() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_device-plugin-test"))
        .args(["--dir", dir.path().to_str().unwrap(), "--state-dir", state.path().to_str().unwrap(), "--count", "3"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let socket = dir.path().join("widget.sock");
    let deadline = Instant::now() + Duration::from_secs(60);
    let devices = || std::fs::read_dir(state.path().join("devices")).map(|d| d.count()).unwrap_or(0);
    while !(socket.exists() && devices() == 3) {
        assert!(child.try_wait().unwrap().is_none(), "the plugin exited early");
        assert!(Instant::now() < deadline, "no socket or devices: socket {}, {} devices", socket.exists(), devices());
        std::thread::sleep(Duration::from_millis(50));
    }
    // No kubelet.sock: nothing registered, so the plugin is still waiting.
    assert!(child.try_wait().unwrap().is_none());
    child.kill().unwrap();
    child.wait().unwrap();
}
