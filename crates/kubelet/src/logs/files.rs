//! The files of one container log: the current file, the rotated ones beside it
//! (`<current>.<YYYYMMDD-HHMMSS>`, compressed ones with `.gz`), and where the last N lines start.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Suffix of a compressed rotated log.
pub const COMPRESS_SUFFIX: &str = ".gz";
/// Suffix of a file being compressed (left behind by an interrupted rotation).
pub const TMP_SUFFIX: &str = ".tmp";

/// `<pod log dir>/<container>/<restartCount>.log`: where the instance with this restart count logs.
pub fn container_log_path(pod_log_dir: &Path, container: &str, restart_count: i32) -> PathBuf {
    pod_log_dir.join(container).join(format!("{restart_count}.log"))
}

/// The log of the instance before the current one, for `previous=true`.
///
/// `pod_log_dir` is `<podLogsDir>/<ns>_<name>_<uid>` (see `pod::runtime_config::pod_log_dir`),
/// `restart_count` is the *current* instance's restart count (`containerStatuses[].restartCount`).
/// Returns the highest `<n>.log` with `n < restart_count` that still exists (normally
/// `restart_count - 1`; lower when a count was skipped), or None when there is no earlier instance
/// or its log is gone. Upstream answers "previous terminated container ... not found" then.
///
/// When the caller has the previous instance's container ID (`lastState.terminated.containerID`)
/// and the runtime still has the container, `ContainerStatus.log_path` names the same file.
pub fn previous_log_path(pod_log_dir: &Path, container: &str, restart_count: i32) -> Option<PathBuf> {
    (0..restart_count).rev().map(|n| container_log_path(pod_log_dir, container, n)).find(|p| p.is_file())
}

/// Every file `<log>.*` beside `log` (upstream's glob), sorted by name: oldest rotation first.
pub fn rotated_candidates(log: &Path) -> io::Result<Vec<PathBuf>> {
    let (Some(dir), Some(name)) = (log.parent(), log.file_name().and_then(|n| n.to_str())) else {
        return Ok(Vec::new());
    };
    let prefix = format!("{name}.");
    let rd = match std::fs::read_dir(if dir.as_os_str().is_empty() { Path::new(".") } else { dir }) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out: Vec<PathBuf> = rd
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with(&prefix) && n.len() > prefix.len()))
        .map(|e| dir.join(e.file_name()))
        .collect();
    out.sort();
    Ok(out)
}

/// Splits `<log>.*` files into (in use, unused): temporary files are unused, and so is an
/// uncompressed file whose `.gz` exists (it was compressed, the removal was interrupted).
pub fn split_unused(logs: Vec<PathBuf>) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let names: std::collections::HashSet<String> = logs.iter().map(|p| p.display().to_string()).collect();
    logs.into_iter().partition(|l| {
        let s = l.display().to_string();
        if s.ends_with(TMP_SUFFIX) {
            return false;
        }
        s.ends_with(COMPRESS_SUFFIX) || !names.contains(&format!("{s}{COMPRESS_SUFFIX}"))
    })
}

/// The rotated files of `log` that hold log lines, oldest first (upstream's GetAllLogs without
/// the current file).
pub fn rotated_logs(log: &Path) -> io::Result<Vec<PathBuf>> {
    Ok(split_unused(rotated_candidates(log)?).0)
}

pub fn is_compressed(p: &Path) -> bool {
    p.to_str().is_some_and(|s| s.ends_with(COMPRESS_SUFFIX))
}

/// Opens a log file for reading lines, decompressing `.gz` files.
pub fn open_lines(p: &Path) -> io::Result<Box<dyn BufRead + Send>> {
    let f = File::open(p)?;
    Ok(if is_compressed(p) {
        Box::new(BufReader::with_capacity(64 * 1024, flate2::read::GzDecoder::new(f)))
    } else {
        Box::new(BufReader::with_capacity(64 * 1024, f))
    })
}

/// Where the last `n` lines of the file start: (byte offset, lines found). A line is counted
/// by its `\n`, as upstream's tail does; fewer lines than `n` means the whole file (offset 0).
pub fn tail_start(f: &File, n: u64) -> io::Result<(u64, u64)> {
    const BLOCK: u64 = 64 * 1024;
    let size = f.metadata()?.len();
    let mut buf = vec![0u8; BLOCK as usize];
    let mut right = size;
    // The (n+1)-th newline from the end: the last n lines start after it.
    let mut seen = 0u64;
    while right > 0 {
        let left = right.saturating_sub(BLOCK);
        let chunk = &mut buf[..(right - left) as usize];
        f.read_exact_at(chunk, left)?;
        for (i, b) in chunk.iter().enumerate().rev() {
            if *b == b'\n' {
                seen += 1;
                if seen == n + 1 {
                    return Ok((left + i as u64 + 1, n));
                }
            }
        }
        right = left;
    }
    Ok((0, seen))
}

/// How many lines (newlines) a possibly compressed file holds.
pub fn count_lines(p: &Path) -> io::Result<u64> {
    let mut r = open_lines(p)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0u64;
    loop {
        let got = r.read(&mut buf)?;
        if got == 0 {
            return Ok(n);
        }
        n += buf[..got].iter().filter(|b| **b == b'\n').count() as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn touch(p: &Path) {
        std::fs::write(p, b"").unwrap();
    }

    #[test]
    fn rotated_logs_are_sorted_and_skip_tmp_and_already_compressed_files() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("0.log");
        for f in [
            "0.log",
            "0.log.20240101-000003",
            "0.log.20240101-000001.gz",
            "0.log.20240101-000002",
            "0.log.20240101-000002.gz",
            "0.log.20240101-000004.gz.tmp",
            "1.log.20240101-000000",
            "0.logx",
        ] {
            touch(&d.path().join(f));
        }
        let names: Vec<String> =
            rotated_logs(&log).unwrap().iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["0.log.20240101-000001.gz", "0.log.20240101-000002.gz", "0.log.20240101-000003"]);
        assert!(rotated_logs(&d.path().join("missing/0.log")).unwrap().is_empty());
    }

    #[test]
    fn previous_log_is_the_highest_earlier_instance_that_exists() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("app")).unwrap();
        assert_eq!(previous_log_path(d.path(), "app", 0), None);
        assert_eq!(previous_log_path(d.path(), "app", 2), None);
        touch(&d.path().join("app/0.log"));
        touch(&d.path().join("app/2.log"));
        assert_eq!(previous_log_path(d.path(), "app", 2), Some(d.path().join("app/0.log")));
        touch(&d.path().join("app/1.log"));
        assert_eq!(previous_log_path(d.path(), "app", 2), Some(d.path().join("app/1.log")));
        assert_eq!(container_log_path(d.path(), "app", 3), d.path().join("app/3.log"));
    }

    #[test]
    fn tail_start_counts_newlines_from_the_end() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, b"a\nbb\nccc\n").unwrap();
        let f = File::open(&p).unwrap();
        assert_eq!(tail_start(&f, 0).unwrap(), (9, 0));
        assert_eq!(tail_start(&f, 1).unwrap(), (5, 1));
        assert_eq!(tail_start(&f, 2).unwrap(), (2, 2));
        assert_eq!(tail_start(&f, 3).unwrap(), (0, 3));
        assert_eq!(tail_start(&f, 10).unwrap(), (0, 3));
        // A large file spanning several blocks.
        let mut big = File::create(&p).unwrap();
        for i in 0..50_000 {
            writeln!(big, "line {i}").unwrap();
        }
        let f = File::open(&p).unwrap();
        let (off, n) = tail_start(&f, 3).unwrap();
        let mut rest = String::new();
        let mut r = File::open(&p).unwrap();
        io::Seek::seek(&mut r, io::SeekFrom::Start(off)).unwrap();
        r.read_to_string(&mut rest).unwrap();
        assert_eq!((n, rest.as_str()), (3, "line 49997\nline 49998\nline 49999\n"));
    }
}
