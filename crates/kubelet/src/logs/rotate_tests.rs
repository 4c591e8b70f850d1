use super::*;
use crate::clock::FakeClock;
use crate::cri::Runtime;
use crate::cri::fake::FakeRuntime;
use std::io::Read;
use std::sync::Arc;
use std::time::SystemTime;

struct Setup {
    dir: tempfile::TempDir,
    log: PathBuf,
    fake: FakeRuntime,
    clock: FakeClock,
    manager: LogManager,
    id: String,
}

/// 2024-01-02T03:04:05Z
fn start_time() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_704_164_645)
}

async fn setup(max_size: i64, max_files: usize) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app/0.log");
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    let fake = FakeRuntime::new();
    let sb = fake.run_pod_sandbox(api::PodSandboxConfig::default()).await.unwrap();
    let config = api::ContainerConfig {
        metadata: Some(api::ContainerMetadata { name: "app".into(), attempt: 0 }),
        log_path: log.display().to_string(),
        ..Default::default()
    };
    let id = fake.create_container(&sb, config, api::PodSandboxConfig::default()).await.unwrap();
    fake.start_container(&id).await.unwrap();
    let clock = FakeClock::new(start_time());
    let cfg = Config { max_size, max_files, max_workers: 1, monitor_interval: Duration::from_secs(10) };
    let manager = LogManager::new(cfg, Arc::new(fake.clone()), Arc::new(clock.clone()));
    Setup { dir, log, fake, clock, manager, id }
}

impl Setup {
    fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.log.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn reopens(&self) -> usize {
        self.fake.calls().iter().filter(|c| *c == "ReopenContainerLog").count()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join("app").join(name)
    }
}

fn gunzip(p: &Path) -> String {
    let mut s = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(p).unwrap()).read_to_string(&mut s).unwrap();
    s
}

#[tokio::test]
async fn a_log_below_the_size_is_left_alone() {
    let s = setup(100, 5).await;
    std::fs::write(&s.log, "x".repeat(99)).unwrap();
    s.manager.rotate_once().await;
    assert_eq!(s.names(), ["0.log"]);
    assert_eq!(s.reopens(), 0);
}

#[tokio::test]
async fn a_full_log_is_renamed_with_a_utc_timestamp_and_reopened() {
    let s = setup(100, 5).await;
    std::fs::write(&s.log, "x".repeat(100)).unwrap();
    s.manager.rotate_once().await;
    assert_eq!(s.names(), ["0.log.20240102-030405"]);
    assert_eq!(std::fs::read_to_string(s.path("0.log.20240102-030405")).unwrap(), "x".repeat(100));
    assert_eq!(s.reopens(), 1);
    let _ = &s.id;
}

#[tokio::test]
async fn older_rotations_are_compressed_and_at_most_max_files_remain() {
    let s = setup(100, 3).await;
    for generation in 0..5 {
        // What the runtime does on ReopenContainerLog: a new file at the path.
        std::fs::write(&s.log, format!("generation {generation}\n").repeat(10)).unwrap();
        s.manager.rotate_once().await;
        s.clock.advance(Duration::from_secs(10));
        let names = s.names();
        assert!(names.len() <= 2, "the current file comes back after reopen: at most 2 rotated, got {names:?}");
    }
    std::fs::write(&s.log, "current\n").unwrap();
    // Five rotations 10 s apart: the newest stays plain, the one before is compressed, the rest
    // are gone (3 files with the current one).
    assert_eq!(s.names(), ["0.log", "0.log.20240102-030435.gz", "0.log.20240102-030445"]);
    assert_eq!(gunzip(&s.path("0.log.20240102-030435.gz")), "generation 3\n".repeat(10));
    assert_eq!(std::fs::read_to_string(s.path("0.log.20240102-030445")).unwrap(), "generation 4\n".repeat(10));
    assert_eq!(s.reopens(), 5);
}

#[tokio::test]
async fn the_reader_sees_the_rotated_set_as_one_log() {
    let s = setup(30, 4).await;
    for i in 0..4 {
        let line = format!("2024-01-02T03:04:0{i}Z stdout F line {i}\n");
        std::fs::write(&s.log, line).unwrap();
        s.manager.rotate_once().await;
        s.clock.advance(Duration::from_secs(1));
    }
    std::fs::write(&s.log, "2024-01-02T03:04:09Z stdout F line 4\n").unwrap();
    // Four rotations with 4 files: two compressed, the newest plain, the current one.
    assert_eq!(s.names().iter().filter(|n| n.ends_with(".gz")).count(), 2);
    let opts = crate::logs::LogOptions { tail_lines: Some(3), ..Default::default() };
    let stream = crate::logs::read_logs(&s.log, opts, || async { false }).await.unwrap();
    let chunks: Vec<_> = futures::StreamExt::collect::<Vec<_>>(stream).await;
    let text: String = chunks.into_iter().map(|c| String::from_utf8(c.unwrap().to_vec()).unwrap()).collect();
    assert_eq!(text, "line 2\nline 3\nline 4\n");
}

#[tokio::test]
async fn a_failed_reopen_renames_the_log_back() {
    let s = setup(10, 5).await;
    std::fs::write(&s.log, "0123456789abc").unwrap();
    s.fake.fail_next("ReopenContainerLog", "runtime busy");
    s.manager.rotate_once().await;
    assert_eq!(s.names(), ["0.log"]);
    assert_eq!(std::fs::read_to_string(&s.log).unwrap(), "0123456789abc");
    // The next pass succeeds.
    s.clock.advance(Duration::from_secs(10));
    s.manager.rotate_once().await;
    assert_eq!(s.names(), ["0.log.20240102-030415"]);
    assert_eq!(s.reopens(), 2);
}

#[tokio::test]
async fn stopped_containers_are_not_rotated() {
    let s = setup(10, 5).await;
    std::fs::write(&s.log, "0123456789abc").unwrap();
    s.fake.exit_container(&s.id, 0);
    s.manager.rotate_once().await;
    assert_eq!(s.names(), ["0.log"]);
    assert_eq!(s.reopens(), 0);
}

#[tokio::test]
async fn a_missing_log_is_reopened_not_rotated() {
    let s = setup(10, 5).await;
    s.manager.rotate_once().await;
    assert_eq!(s.reopens(), 1);
    assert!(s.names().is_empty());
}

#[tokio::test]
async fn leftovers_of_an_interrupted_rotation_are_cleaned_up() {
    let s = setup(10, 5).await;
    for f in ["0.log.20240101-000000", "0.log.20240101-000000.gz", "0.log.20240101-000001.tmp"] {
        std::fs::write(s.path(f), "old").unwrap();
    }
    std::fs::write(&s.log, "0123456789abc").unwrap();
    s.manager.rotate_once().await;
    assert_eq!(s.names(), ["0.log.20240101-000000.gz", "0.log.20240102-030405"]);
}

#[tokio::test]
async fn a_rotation_within_the_same_second_waits_for_the_next_pass() {
    let s = setup(10, 5).await;
    std::fs::write(&s.log, "0123456789abc").unwrap();
    s.manager.rotate_once().await;
    std::fs::write(&s.log, "second file!!").unwrap();
    s.manager.rotate_once().await;
    assert_eq!(s.names(), ["0.log", "0.log.20240102-030405"]);
    assert_eq!(std::fs::read_to_string(&s.log).unwrap(), "second file!!");
}

#[test]
fn config_comes_from_the_kubelet_configuration() {
    let mut cfg = kubelet_config::KubeletConfiguration::default();
    let c = Config::from_kubelet_config(&cfg);
    assert_eq!(
        c,
        Config { max_size: 10 << 20, max_files: 5, max_workers: 1, monitor_interval: Duration::from_secs(10) }
    );
    cfg.container_log_max_size = kubelet_config::quantity::Quantity::parse("50Ki").unwrap();
    assert_eq!(Config::from_kubelet_config(&cfg).max_size, 50 * 1024);
}
