use super::*;
use futures::StreamExt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

fn cri(sec: u32, stream: &str, tag: &str, content: &str) -> String {
    format!("2024-01-01T00:00:{sec:02}.000000001Z {stream} {tag} {content}\n")
}

/// Lines `line <i>` for i in range, one second apart.
fn lines(range: std::ops::Range<u32>) -> String {
    range.map(|i| cri(i, "stdout", "F", &format!("line {i}"))).collect()
}

fn write_gz(path: &Path, text: &str) {
    let mut enc = flate2::write::GzEncoder::new(File::create(path).unwrap(), flate2::Compression::default());
    enc.write_all(text.as_bytes()).unwrap();
    enc.finish().unwrap();
}

/// 0.log.20240101-000000.gz: lines 0..3, 0.log.20240101-000003: 3..6, 0.log: 6..8.
fn rotated_set(dir: &Path) -> PathBuf {
    write_gz(&dir.join("0.log.20240101-000000.gz"), &lines(0..3));
    std::fs::write(dir.join("0.log.20240101-000003"), lines(3..6)).unwrap();
    let log = dir.join("0.log");
    std::fs::write(&log, lines(6..8)).unwrap();
    log
}

async fn always() -> bool {
    true
}

async fn read(path: &Path, opts: LogOptions) -> String {
    let s = read_logs(path, opts, always).await.unwrap();
    collect(s).await
}

async fn collect(mut s: LogStream) -> String {
    let mut out = Vec::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), s.next()).await.expect("stream stalled") {
        out.extend_from_slice(&chunk.unwrap());
    }
    String::from_utf8(out).unwrap()
}

fn numbered(range: std::ops::Range<u32>) -> String {
    range.map(|i| format!("line {i}\n")).collect()
}

#[tokio::test]
async fn partial_lines_are_joined_and_stderr_is_included() {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("0.log");
    let text = [
        cri(1, "stdout", "F", "a"),
        cri(2, "stdout", "P", "b1"),
        cri(2, "stdout", "P", "b2"),
        cri(3, "stdout", "F", "b3"),
        cri(4, "stderr", "F", "oops"),
        "not a log line\n".to_string(),
        cri(5, "stdout", "F", ""),
    ]
    .concat();
    std::fs::write(&log, text).unwrap();
    assert_eq!(read(&log, LogOptions::default()).await, "a\nb1b2b3\noops\n\n");
}

#[tokio::test]
async fn timestamps_prefix_every_line_as_upstream_prints_them() {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("0.log");
    std::fs::write(&log, [cri(1, "stdout", "F", "a"), cri(2, "stderr", "F", "b")].concat()).unwrap();
    let got = read(&log, LogOptions { timestamps: true, ..Default::default() }).await;
    assert_eq!(got, "2024-01-01T00:00:01.000000001Z a\n2024-01-01T00:00:02.000000001Z b\n");
}

#[tokio::test]
async fn whole_log_spans_compressed_rotated_and_current_files_in_order() {
    let d = tempfile::tempdir().unwrap();
    let log = rotated_set(d.path());
    assert_eq!(read(&log, LogOptions::default()).await, numbered(0..8));
}

#[tokio::test]
async fn tail_reaches_back_into_rotated_files() {
    let d = tempfile::tempdir().unwrap();
    let log = rotated_set(d.path());
    let tail = |n| LogOptions { tail_lines: Some(n), ..Default::default() };
    assert_eq!(read(&log, tail(0)).await, "");
    assert_eq!(read(&log, tail(2)).await, numbered(6..8));
    assert_eq!(read(&log, tail(3)).await, numbered(5..8));
    assert_eq!(read(&log, tail(5)).await, numbered(3..8));
    assert_eq!(read(&log, tail(7)).await, numbered(1..8));
    assert_eq!(read(&log, tail(100)).await, numbered(0..8));
}

#[tokio::test]
async fn limit_bytes_counts_from_the_tail_and_cuts_the_last_line() {
    let d = tempfile::tempdir().unwrap();
    let log = rotated_set(d.path());
    let got = read(&log, LogOptions { tail_lines: Some(4), limit_bytes: Some(10), ..Default::default() }).await;
    assert_eq!(got, "line 4\nlin");
    let got = read(&log, LogOptions { limit_bytes: Some(7), timestamps: true, ..Default::default() }).await;
    assert_eq!(got, "2024-01");
}

#[tokio::test]
async fn since_skips_older_lines_in_every_file() {
    let d = tempfile::tempdir().unwrap();
    let log = rotated_set(d.path());
    let since = chrono::DateTime::parse_from_rfc3339("2024-01-01T00:00:02Z").unwrap().with_timezone(&Utc);
    let got = read(&log, LogOptions { since: Some(since), ..Default::default() }).await;
    assert_eq!(got, numbered(2..8));
    // Tail first, then since (upstream order).
    let got = read(&log, LogOptions { since: Some(since), tail_lines: Some(7), ..Default::default() }).await;
    assert_eq!(got, numbered(2..8));
}

#[tokio::test]
async fn an_incomplete_last_line_is_delivered_when_not_following() {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("0.log");
    std::fs::write(&log, format!("{}2024-01-01T00:00:09Z stdout F no newline", lines(0..1))).unwrap();
    assert_eq!(read(&log, LogOptions::default()).await, "line 0\nno newline");
}

#[tokio::test]
async fn a_missing_log_is_not_found() {
    let d = tempfile::tempdir().unwrap();
    let err = read_logs(d.path().join("0.log"), LogOptions::default(), always).await.err().unwrap();
    assert!(err.is_not_found(), "{err}");
}

async fn next_text(s: &mut LogStream, want: &str) -> String {
    let mut got = String::new();
    while !got.contains(want) {
        let chunk = tokio::time::timeout(Duration::from_secs(10), s.next())
            .await
            .unwrap_or_else(|_| panic!("no {want:?} within 10s; got {got:?}"))
            .expect("stream ended early")
            .unwrap();
        got.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    got
}

fn append(path: &Path, text: &str) {
    std::fs::OpenOptions::new().append(true).open(path).unwrap().write_all(text.as_bytes()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_reads_appended_lines_across_a_rotation_until_the_container_stops() {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("0.log");
    std::fs::write(&log, lines(0..2)).unwrap();
    let running = Arc::new(AtomicBool::new(true));
    let r = running.clone();
    let check = move || {
        let r = r.clone();
        async move { r.load(Ordering::SeqCst) }
    };
    let opts = LogOptions { follow: true, tail_lines: Some(1), ..Default::default() };
    let mut s = read_logs(&log, opts, check).await.unwrap();
    assert_eq!(next_text(&mut s, "line 1\n").await, "line 1\n");

    // Appended, in two writes that split a line.
    let next = lines(2..3);
    let (a, b) = next.split_at(10);
    append(&log, a);
    append(&log, b);
    assert_eq!(next_text(&mut s, "line 2\n").await, "line 2\n");

    // Rotation as the kubelet and runtime do it: rename, a last write to the old file, a new file.
    let rotated = d.path().join("0.log.20240101-000003");
    std::fs::rename(&log, &rotated).unwrap();
    append(&rotated, &lines(3..4));
    std::fs::write(&log, lines(4..5)).unwrap();
    assert_eq!(next_text(&mut s, "line 4\n").await, "line 3\nline 4\n");
    // The runtime's last flush into the old file lands after the new file appeared.
    append(&rotated, &lines(5..6));
    append(&log, &lines(6..7));
    assert_eq!(next_text(&mut s, "line 6\n").await, "line 5\nline 6\n");

    append(&log, &lines(7..8));
    running.store(false, Ordering::SeqCst);
    // What is left is delivered, then the stream ends.
    assert_eq!(collect(s).await, "line 7\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_of_a_stopped_container_ends_after_the_log() {
    let d = tempfile::tempdir().unwrap();
    let log = rotated_set(d.path());
    let s = read_logs(&log, LogOptions { follow: true, ..Default::default() }, || async { false }).await.unwrap();
    assert_eq!(collect(s).await, numbered(0..8));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_stream_stops_the_follower() {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("0.log");
    std::fs::write(&log, lines(0..1)).unwrap();
    let token = Arc::new(());
    let held = token.clone();
    let check = move || {
        let _keep = held.clone();
        async { true }
    };
    let mut s = read_logs(&log, LogOptions { follow: true, ..Default::default() }, check).await.unwrap();
    next_text(&mut s, "line 0\n").await;
    drop(s);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Arc::strong_count(&token) > 1 {
        assert!(Instant::now() < deadline, "follower still running after the stream was dropped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn container_running_asks_the_runtime_for_the_state() {
    use crate::cri::{Runtime, api};
    let fake = crate::cri::fake::FakeRuntime::new();
    let sb = fake.run_pod_sandbox(api::PodSandboxConfig::default()).await.unwrap();
    let id =
        fake.create_container(&sb, api::ContainerConfig::default(), api::PodSandboxConfig::default()).await.unwrap();
    let check = container_running(Arc::new(fake.clone()), id.clone());
    assert!(!check().await, "created, not started");
    fake.start_container(&id).await.unwrap();
    assert!(check().await);
    fake.exit_container(&id, 0);
    assert!(!check().await);
    assert!(!container_running(Arc::new(fake), "gone".into())().await, "unknown container");
}
