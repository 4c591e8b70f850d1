//! Termination messages, as upstream's kuberuntime does (makeMounts, getTerminationMessage,
//! readLastStringFromContainerLogs): the kubelet creates one host file per container instance,
//! mounts it at `terminationMessagePath`, and reads it back once the container exited; with
//! `FallbackToLogsOnError` a failed container with an empty file gets the tail of its log.

use crate::cri::api;
use crate::cri::labels::ContainerAnnotations;
use crate::logs::LogOptions;
use futures::StreamExt;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Upstream's MaxContainerTerminationMessageLength: the file's last 4 KiB are kept.
pub const MAX_LENGTH: u64 = 4 * 1024;
/// Upstream's MaxContainerTerminationMessageLogLines: the log fallback reads the last 80 lines.
pub const MAX_LOG_LINES: u64 = 80;
/// Upstream's MaxContainerTerminationMessageLogLength: of those lines, the last 2 KiB are kept.
pub const MAX_LOG_LENGTH: usize = 2 * 1024;

/// Creates the host file for one container instance, `<pod dir>/containers/<name>/<8 hex>`
/// (upstream's makeUID), mode 0666 whatever the umask so a non-root container can write it,
/// and returns its mount. As upstream, a failure is logged and the container runs without it.
pub fn mount(pod_dir: &Path, container: &str, container_path: &str) -> Option<api::Mount> {
    if container_path.is_empty() {
        return None;
    }
    // Upstream's getPodContainerDir, created 0750 (the file's own mode is what the container
    // sees through the bind mount).
    let dir = pod_dir.join("containers").join(container);
    let file = dir.join(format!("{:08x}", random_u32()));
    let created = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(&dir)
        .and_then(|()| std::fs::File::create(&file))
        .and_then(|_| std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)));
    if let Err(e) = created {
        tracing::error!(path = %file.display(), error = %e, "failed to create the termination-log file");
        return None;
    }
    Some(api::Mount {
        container_path: container_path.to_string(),
        host_path: file.display().to_string(),
        ..Default::default()
    })
}

/// A random u32 from std's randomly seeded hasher (no crate for one number).
fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.finish() as u32
}

/// The last `max` bytes of a file (upstream's tail.ReadAtMost).
fn read_at_most(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(path)?;
    let size = f.metadata()?.len();
    f.seek(SeekFrom::Start(size.saturating_sub(max)))?;
    let mut data = Vec::with_capacity(size.min(max) as usize);
    f.take(max).read_to_end(&mut data)?;
    Ok(data)
}

/// Where to take an exited container's message from (upstream's getTerminationMessage).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The message file's content (or an error text), possibly empty.
    File(String),
    /// The tail of the container's log.
    Logs,
}

/// Upstream's getTerminationMessage: the file mounted at `path` is read (its last 4 KiB); the
/// logs are used when `fallback` and the file is empty, missing or not mounted at all.
pub fn source(mounts: &[api::Mount], path: &str, fallback: bool) -> Source {
    let none = || if fallback { Source::Logs } else { Source::File(String::new()) };
    if path.is_empty() {
        return none();
    }
    let Some(m) = mounts.iter().find(|m| m.container_path == path) else { return none() };
    match read_at_most(Path::new(&m.host_path), MAX_LENGTH) {
        Ok(data) if data.is_empty() => none(),
        Ok(data) => Source::File(String::from_utf8_lossy(&data).into_owned()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => none(),
        Err(e) => Source::File(format!("Error on reading termination log {}: {e}", m.host_path)),
    }
}

/// Upstream's readLastStringFromContainerLogs: the log's last 80 lines (both streams, without
/// timestamps), of which the last 2 KiB.
pub async fn from_logs(log_path: &Path) -> String {
    let opts = LogOptions { tail_lines: Some(MAX_LOG_LINES), ..Default::default() };
    let mut stream = match crate::logs::read_logs(PathBuf::from(log_path), opts, || async { false }).await {
        Ok(s) => s,
        Err(e) => return format!("Error on reading termination message from logs: {e}"),
    };
    let mut tail: Vec<u8> = Vec::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => {
                tail.extend_from_slice(&bytes);
                let excess = tail.len().saturating_sub(MAX_LOG_LENGTH);
                tail.drain(..excess);
            }
            Err(e) => return format!("Error on reading termination message from logs: {e}"),
        }
    }
    String::from_utf8_lossy(&tail).into_owned()
}

/// An exited container's message as upstream's convertToKubeContainerStatus builds it: the
/// runtime's message, then ": " and the termination message when there is one. The logs are a
/// fallback only with `FallbackToLogsOnError`, a non-zero exit, and a container that ran.
pub async fn enrich(status: &api::ContainerStatus, annotations: &ContainerAnnotations) -> String {
    let fallback = annotations.termination_message_policy == "FallbackToLogsOnError"
        && status.exit_code != 0
        && status.reason != "ContainerCannotRun";
    let message = match source(&status.mounts, &annotations.termination_message_path, fallback) {
        Source::File(m) => m,
        Source::Logs => from_logs(Path::new(&status.log_path)).await,
    };
    join(&status.message, &message)
}

fn join(runtime: &str, termination: &str) -> String {
    match (runtime.is_empty(), termination.is_empty()) {
        (_, true) => runtime.to_string(),
        (true, false) => termination.to_string(),
        (false, false) => format!("{runtime}: {termination}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mounted(dir: &Path, content: &[u8]) -> Vec<api::Mount> {
        let m = mount(dir, "app", "/dev/termination-log").unwrap();
        std::fs::write(&m.host_path, content).unwrap();
        vec![m]
    }

    #[test]
    fn the_file_is_world_writable_in_a_per_container_dir() {
        let dir = tempfile::tempdir().unwrap();
        let m = mount(dir.path(), "app", "/dev/termination-custom-log").unwrap();
        assert_eq!(m.container_path, "/dev/termination-custom-log");
        let host = Path::new(&m.host_path);
        assert_eq!(host.parent().unwrap(), dir.path().join("containers/app"));
        assert_eq!(host.file_name().unwrap().len(), 8);
        assert_eq!(std::fs::metadata(host).unwrap().permissions().mode() & 0o777, 0o666);
        assert!(mount(dir.path(), "app", "").is_none());
    }

    #[test]
    fn the_file_keeps_its_last_4096_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut content = vec![b'a'; 10];
        content.extend(vec![b'b'; 4096]);
        let mounts = mounted(dir.path(), &content);
        assert_eq!(source(&mounts, "/dev/termination-log", false), Source::File("b".repeat(4096)));
    }

    #[test]
    fn logs_are_used_only_when_falling_back_and_the_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let empty = mounted(dir.path(), b"");
        assert_eq!(source(&empty, "/dev/termination-log", true), Source::Logs);
        assert_eq!(source(&empty, "/dev/termination-log", false), Source::File(String::new()));
        let full = mounted(dir.path(), b"OK");
        assert_eq!(source(&full, "/dev/termination-log", true), Source::File("OK".into()));
        // Not mounted, or the file gone: as empty.
        assert_eq!(source(&[], "/dev/termination-log", true), Source::Logs);
        std::fs::remove_file(&full[0].host_path).unwrap();
        assert_eq!(source(&full, "/dev/termination-log", false), Source::File(String::new()));
        assert_eq!(source(&full, "", true), Source::Logs);
    }

    #[test]
    fn runtime_and_termination_messages_are_joined() {
        assert_eq!(join("", ""), "");
        assert_eq!(join("oom", ""), "oom");
        assert_eq!(join("", "DONE"), "DONE");
        assert_eq!(join("oom", "DONE"), "oom: DONE");
    }

    fn cri_log(lines: impl Iterator<Item = String>) -> String {
        lines.map(|l| format!("2026-01-01T00:00:00.000000000Z stdout F {l}\n")).collect()
    }

    #[tokio::test]
    async fn the_log_fallback_is_the_last_80_lines_within_2048_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("0.log");
        std::fs::write(&log, cri_log((0..100).map(|i| format!("l{i}")))).unwrap();
        let expected: String = (20..100).map(|i| format!("l{i}\n")).collect();
        assert_eq!(from_logs(&log).await, expected);

        std::fs::write(&log, cri_log((0..30).map(|i| format!("{i:02}{}", "x".repeat(98))))).unwrap();
        let all: String = (0..30).map(|i| format!("{i:02}{}\n", "x".repeat(98))).collect();
        assert_eq!(from_logs(&log).await, all[all.len() - 2048..]);

        // A partial last line ("-n") is part of the message.
        std::fs::write(&log, "2026-01-01T00:00:00.000000000Z stdout P DONE\n").unwrap();
        assert_eq!(from_logs(&log).await, "DONE");
        let missing = from_logs(&dir.path().join("gone.log")).await;
        assert!(missing.starts_with("Error on reading termination message from logs: "), "{missing}");
    }

    #[tokio::test]
    async fn a_failed_container_falls_back_to_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("0.log");
        std::fs::write(&log, "2026-01-01T00:00:00.000000000Z stdout P DONE\n").unwrap();
        let annotations = ContainerAnnotations {
            termination_message_path: "/dev/termination-log".into(),
            termination_message_policy: "FallbackToLogsOnError".into(),
            ..Default::default()
        };
        let status = |exit_code, reason: &str| api::ContainerStatus {
            exit_code,
            reason: reason.into(),
            mounts: mounted(dir.path(), b""),
            log_path: log.display().to_string(),
            ..Default::default()
        };
        assert_eq!(enrich(&status(1, "Error"), &annotations).await, "DONE");
        assert_eq!(enrich(&status(0, "Completed"), &annotations).await, "");
        assert_eq!(enrich(&status(128, "ContainerCannotRun"), &annotations).await, "");
        let file = ContainerAnnotations { termination_message_policy: "File".into(), ..annotations };
        assert_eq!(enrich(&status(1, "Error"), &file).await, "");
    }
}
