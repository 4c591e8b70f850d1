//! Container log rotation and reading across rotations on containerd.

use crate::LONG;
use crate::harness::*;
use futures::StreamExt;
use kubelet::logs::{LogOptions, LogStream, read_logs};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const MAX_SIZE: u64 = 50 * 1024;
const LINES: u32 = 2000;

/// `LINES` numbered lines of about 215 bytes, 10 ms apart (~20 KB/s: a rotation every few
/// seconds at 50Ki), then `done-writing` and quiet.
fn chatty_pod() -> String {
    let pad = "x".repeat(200);
    let script = format!(
        "i=0; while [ $i -lt {LINES} ]; do printf 'line %06d {pad}\\n' $i; i=$((i+1)); sleep 0.01; done; \
         echo done-writing; exec sleep 3600"
    );
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: chatty
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: {img}
    command: ["sh", "-c", {script:?}]
"#,
        img = image("busybox:1.36")
    )
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn decoded(path: &Path) -> String {
    let mut s = String::new();
    let f = std::fs::File::open(path).unwrap();
    if path.extension().is_some_and(|e| e == "gz") {
        flate2::read::GzDecoder::new(f).read_to_string(&mut s).unwrap();
    } else {
        std::io::BufReader::new(f).read_to_string(&mut s).unwrap();
    }
    s
}

/// The number in `line 000123 xxx`, or None for other lines.
fn number(line: &str) -> Option<u32> {
    line.strip_prefix("line ")?.get(..6)?.parse().ok()
}

/// The highest line number in a raw CRI log file.
fn last_number(path: &Path) -> Option<u32> {
    decoded(path).lines().filter_map(|l| l.split_once(" F ").and_then(|(_, c)| number(c))).max()
}

async fn text(stream: LogStream) -> String {
    let chunks: Vec<_> = stream.collect().await;
    chunks.into_iter().map(|c| String::from_utf8(c.expect("log chunk").to_vec()).expect("utf-8")).collect()
}

/// Lines of the reader's output: consecutive numbers, then `done-writing`.
fn assert_consecutive(out: &str, what: &str) -> (u32, usize) {
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.last().copied(), Some("done-writing"), "{what}: ends with the last line");
    let nums: Vec<u32> = lines[..lines.len() - 1]
        .iter()
        .map(|l| number(l).unwrap_or_else(|| panic!("{what}: unexpected line {l:?}")))
        .collect();
    for w in nums.windows(2) {
        assert_eq!(w[1], w[0] + 1, "{what}: lines in order without gaps");
    }
    assert_eq!(nums.last().copied(), Some(LINES - 1), "{what}: the newest lines");
    (nums.first().copied().unwrap_or(LINES), lines.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chatty_container_logs_are_rotated_and_read_across_rotations() {
    let extra = "containerLogMaxSize: 50Ki\ncontainerLogMaxFiles: 3\ncontainerLogMonitorInterval: 3s\n";
    let Some(mut k) = Kubelet::start_with("logrotate", extra).await else { return };
    k.write_manifest("chatty.yaml", &chatty_pod());
    let pod = k.wait_pod("chatty", "running", LONG, |p| is_running(p, "app").then(|| p.clone())).await;
    let dir = PathBuf::from(format!("/var/log/pods/default_chatty-{}_{}/app", k.node, uid(&pod)));
    let log = dir.join("0.log");

    // A follower from the start sees every line once, in order, through every rotation.
    let follower = {
        let log = log.clone();
        tokio::spawn(async move {
            let opts = LogOptions { follow: true, ..Default::default() };
            let mut s = read_logs(&log, opts, || async { true }).await.expect("follow the log");
            let mut out = String::new();
            while !out.contains("done-writing\n") {
                match tokio::time::timeout(LONG, s.next()).await {
                    Ok(Some(chunk)) => out.push_str(std::str::from_utf8(&chunk.expect("log chunk")).expect("utf-8")),
                    _ => break,
                }
            }
            out
        })
    };

    // Rotated: a plain `0.log.<time>` appears, and the container goes on in the reopened 0.log.
    let rotated = wait_until(LONG, || async {
        names(&dir).into_iter().find(|n| n.starts_with("0.log.") && !n.ends_with(".gz")).map(|n| dir.join(n))
    })
    .await
    .unwrap_or_else(|| panic!("no rotated log in {}: {:?}\n{}", dir.display(), names(&dir), tail(&k.log(), 40)));
    let rotated_last = last_number(&rotated).expect("rotated file has lines");
    wait_until(LONG, || async { last_number(&log).filter(|n| *n > rotated_last) })
        .await
        .unwrap_or_else(|| panic!("no line after {rotated_last} in the reopened {}", log.display()));

    // Writing ends; wait until no rotation happened for three monitor intervals.
    let seen = Mutex::new((Vec::new(), Instant::now()));
    let settled = wait_until(LONG + LONG, || async {
        let now = names(&dir);
        let mut s = seen.lock().unwrap();
        if now != s.0 {
            *s = (now, Instant::now());
            None
        } else {
            (s.1.elapsed() > Duration::from_secs(10) && last_written(&dir)).then(|| s.0.clone())
        }
    })
    .await
    .unwrap_or_else(|| panic!("log files never settled: {:?}", names(&dir)));

    // At most 3 files, the current one among them; the newest rotated plain, older ones gzip.
    assert!(settled.len() <= 3, "containerLogMaxFiles 3: {settled:?}");
    assert!(settled.contains(&"0.log".to_string()), "current file: {settled:?}");
    let rotated: Vec<&String> = settled.iter().filter(|n| n.starts_with("0.log.")).collect();
    assert_eq!(rotated.len(), 2, "two rotated files after {LINES} lines: {settled:?}");
    assert!(rotated[0].ends_with(".gz"), "older rotated file compressed: {settled:?}");
    assert!(!rotated[1].ends_with(".gz"), "newest rotated file plain: {settled:?}");
    for n in &settled {
        let size = decoded(&dir.join(n)).len() as u64;
        // The file is checked every 3 s while ~20 KB/s arrive: some overshoot, never much.
        assert!(size <= 4 * MAX_SIZE, "{n} is {size} bytes (max size {MAX_SIZE})");
    }

    // The follower got every line exactly once.
    let followed = tokio::time::timeout(LONG, follower).await.expect("follower finished").expect("follower task");
    let (first, count) = assert_consecutive(&followed, "follow");
    assert_eq!((first, count), (0, LINES as usize + 1), "follow from the start: every line once");

    // The whole log, read from the rotated set: consecutive up to the end, starting in the .gz.
    let all = text(read_logs(&log, LogOptions::default(), || async { true }).await.unwrap()).await;
    let (first, total) = assert_consecutive(&all, "whole log");
    let gz_first =
        decoded(&dir.join(rotated[0])).lines().find_map(|l| l.split_once(" F ").and_then(|(_, c)| number(c)));
    assert_eq!(Some(first), gz_first, "the oldest line comes from the compressed file");

    // Tail reaching a few lines into the .gz file.
    let newer_lines = decoded(&log).lines().count() + decoded(&dir.join(rotated[1])).lines().count();
    let n = newer_lines + 5;
    let opts = LogOptions { tail_lines: Some(n as u64), ..Default::default() };
    let tailed = text(read_logs(&log, opts, || async { true }).await.unwrap()).await;
    let (first, count) = assert_consecutive(&tailed, "tail");
    assert_eq!(count, n, "tail {n} of {total} lines");
    assert_eq!(first as usize, LINES as usize + 1 - n, "tail starts {n} lines before the end");

    // Ten lines only.
    let opts = LogOptions { tail_lines: Some(10), ..Default::default() };
    let tailed = text(read_logs(&log, opts, || async { true }).await.unwrap()).await;
    assert_eq!(assert_consecutive(&tailed, "tail 10"), (LINES - 9, 10));

    k.cleanup().await;
}

/// `done-writing` is in the newest file that has content (current, else the newest rotated).
fn last_written(dir: &Path) -> bool {
    let all = names(dir);
    let mut candidates: Vec<&String> = all.iter().filter(|n| n.starts_with("0.log")).collect();
    // Current first, then rotated newest first.
    candidates.sort_by_key(|n| (n.as_str() != "0.log", std::cmp::Reverse(n.to_string())));
    candidates
        .into_iter()
        .map(|n| decoded(&dir.join(n)))
        .find(|t| !t.is_empty())
        .is_some_and(|t| t.trim_end().ends_with(" F done-writing"))
}
