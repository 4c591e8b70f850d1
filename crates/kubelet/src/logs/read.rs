//! Reading a container log as a byte stream, as upstream's kuberuntime/logs ReadLogs does, over
//! the rotated files too: `tailLines` and `sinceTime` reach back into `<log>.<time>[.gz]`.
//!
//! The file work runs on the blocking pool in passes ("pump to end of file"); between passes the
//! async task waits for a change in the log directory (inotify, with a 1 s fallback like
//! upstream's force check), for the consumer to go away, or notices that the container stopped.

use super::files::{self, open_lines, tail_start};
use super::options::LogOptions;
use super::parse::{Format, Message, format_timestamp};
use bytes::Bytes;
use chrono::Utc;
use notify::Watcher;
use std::collections::VecDeque;
use std::fs::File;
use std::future::Future;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How often a follower re-reads without a file event, and at most how often it asks whether the
/// container still runs (upstream's logForceCheckPeriod).
const FORCE_CHECK: Duration = Duration::from_secs(1);
/// Output is sent in chunks of about this size.
const CHUNK: usize = 32 * 1024;
/// How long a rotated-away file is still read after the new file appeared: the runtime may
/// flush its last lines into the old file just after creating the new one.
const ROTATION_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to open log file {}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("failed to read log file {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("log reader stopped: {0}")]
    Stopped(String),
}

impl Error {
    /// The log does not exist (a 404 for the server).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Open { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// The decoded log: chunks of output lines, ending when the read is complete (at the end of the
/// files, at the byte limit, or, when following, after the container stopped). An `Err` item is
/// the last one. Dropping the stream stops the reader.
pub struct LogStream {
    rx: mpsc::Receiver<io::Result<Bytes>>,
}

impl futures::Stream for LogStream {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// Reads the container log whose current file is `path` (`.../<container>/<n>.log`; a symlink
/// such as `/var/log/containers/*.log` is resolved first).
///
/// `is_running` is asked (at most once a second, only while following and at the end of the
/// file) whether the container still runs; once it says no, the reader delivers what is left and
/// ends. [`container_running`] gives the check upstream makes over CRI.
///
/// Returns an error before any output when no log file exists or cannot be opened.
pub async fn read_logs<F, Fut>(path: impl Into<PathBuf>, opts: LogOptions, is_running: F) -> Result<LogStream, Error>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    let path: PathBuf = path.into();
    let path = std::fs::canonicalize(&path).unwrap_or(path);
    let (tx, rx) = mpsc::channel(8);
    let reader = tokio::task::spawn_blocking(move || Reader::open(path, opts, tx))
        .await
        .map_err(|e| Error::Stopped(e.to_string()))??;
    tokio::spawn(drive(reader, is_running));
    Ok(LogStream { rx })
}

/// Upstream's isContainerRunning: the runtime reports the container as running.
pub fn container_running(
    runtime: crate::cri::DynRuntime,
    container_id: String,
) -> impl Fn() -> futures::future::BoxFuture<'static, bool> + Send + Sync + 'static {
    move || {
        let (runtime, id) = (runtime.clone(), container_id.clone());
        Box::pin(async move {
            runtime
                .container_status(&id)
                .await
                .is_ok_and(|s| s.state == crate::cri::api::ContainerState::ContainerRunning as i32)
        })
    }
}

async fn drive<F, Fut>(mut reader: Reader, is_running: F)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    let tx = reader.tx.clone();
    let changed = Arc::new(tokio::sync::Notify::new());
    let mut watcher = None;
    let mut last_check: Option<Instant> = None;
    loop {
        let pumped = tokio::task::spawn_blocking(move || {
            let r = reader.pump();
            (reader, r)
        })
        .await;
        let Ok((r, pumped)) = pumped else { return };
        reader = r;
        match pumped {
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
            Ok(Pumped::Finished) => return,
            Ok(Pumped::Eof) => {}
        }
        if watcher.is_none() {
            watcher = Some(watch(reader.path.parent(), changed.clone()));
            // Whatever was written before the watch started: read again first.
            continue;
        }
        if last_check.is_none_or(|t| t.elapsed() >= FORCE_CHECK) {
            last_check = Some(Instant::now());
            if !is_running().await {
                // One more pass to the end of the file, then stop.
                reader.follow = false;
                continue;
            }
        }
        let poll = if watcher.as_ref().is_some_and(Option::is_some) { FORCE_CHECK } else { FORCE_CHECK / 4 };
        tokio::select! {
            _ = changed.notified() => {}
            _ = tokio::time::sleep(poll) => {}
            _ = tx.closed() => return,
        }
    }
}

/// Watches the log's directory (writes, the rename and the new file of a rotation).
fn watch(dir: Option<&Path>, changed: Arc<tokio::sync::Notify>) -> Option<notify::RecommendedWatcher> {
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.is_ok_and(|ev| !matches!(ev.kind, notify::EventKind::Access(_))) {
            changed.notify_one();
        }
    })
    .ok()?;
    w.watch(dir?, notify::RecursiveMode::NonRecursive).ok()?;
    Some(w)
}

/// Where reading a rotated file starts (compressed files: always by lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    Offset(u64),
    SkipLines(u64),
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    start: Start,
}

enum Pumped {
    /// At the end of the current file; more may come.
    Eof,
    /// Nothing more to send.
    Finished,
}

/// Applies since / timestamps / limitBytes and batches output.
struct Output {
    since: Option<chrono::DateTime<Utc>>,
    timestamps: bool,
    remain: u64,
    buf: Vec<u8>,
}

impl Output {
    /// Appends the message; false once the byte limit is reached.
    fn write(&mut self, m: &Message) -> bool {
        if self.since.is_some_and(|s| m.timestamp.with_timezone(&Utc) < s) {
            return true;
        }
        let prefix = if self.timestamps { format_timestamp(&m.timestamp) + " " } else { String::new() };
        for part in [prefix.as_bytes(), &m.content] {
            let take = (part.len() as u64).min(self.remain) as usize;
            self.buf.extend_from_slice(&part[..take]);
            self.remain -= take as u64;
        }
        self.remain > 0
    }
}

struct Reader {
    path: PathBuf,
    history: VecDeque<Segment>,
    current: Option<BufReader<File>>,
    /// (device, inode) of the open current file, to notice a rotation.
    current_id: Option<(u64, u64)>,
    /// The file before the last rotation, read for a short while longer.
    rotated_away: Option<RotatedAway>,
    /// An incomplete line (no newline yet).
    pending: Vec<u8>,
    format: Option<Format>,
    out: Output,
    /// Lines left to deliver (tail without follow, as upstream's limited mode).
    lines_left: Option<u64>,
    follow: bool,
    tx: mpsc::Sender<io::Result<Bytes>>,
}

struct RotatedAway {
    reader: BufReader<File>,
    pending: Vec<u8>,
    since: Instant,
}

fn file_id(f: &File) -> io::Result<(u64, u64)> {
    let m = f.metadata()?;
    Ok((m.dev(), m.ino()))
}

fn open_current(path: &Path) -> io::Result<Option<File>> {
    match File::open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl Reader {
    fn open(path: PathBuf, opts: LogOptions, tx: mpsc::Sender<io::Result<Bytes>>) -> Result<Self, Error> {
        let open_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Open { path, source }
        };
        // A rotation between listing and opening would lose or repeat a file: list again.
        let mut attempt = 0;
        let (rotated, current) = loop {
            let before = files::rotated_logs(&path).map_err(open_err(&path))?;
            let current = open_current(&path).map_err(open_err(&path))?;
            let after = files::rotated_logs(&path).map_err(open_err(&path))?;
            attempt += 1;
            if before == after || attempt >= 3 {
                break (after, current);
            }
        };
        if current.is_none() && rotated.is_empty() {
            return Err(Error::Open { path, source: io::Error::from(io::ErrorKind::NotFound) });
        }
        // Rotated files last written before `since` hold nothing to show.
        let rotated: Vec<PathBuf> = match opts.since {
            Some(since) => rotated
                .into_iter()
                .filter(|p| {
                    let mtime = std::fs::metadata(p).and_then(|m| m.modified());
                    mtime.map_or(true, |t| chrono::DateTime::<Utc>::from(t) >= since)
                })
                .collect(),
            None => rotated,
        };
        let mut current_start = 0;
        let mut history = VecDeque::new();
        match opts.tail_lines {
            None => history.extend(rotated.into_iter().map(|path| {
                let start = if files::is_compressed(&path) { Start::SkipLines(0) } else { Start::Offset(0) };
                Segment { path, start }
            })),
            Some(n) => {
                let mut remaining = n;
                if let Some(f) = &current {
                    let (off, found) = tail_start(f, remaining).map_err(open_err(&path))?;
                    current_start = off;
                    remaining -= found;
                }
                for p in rotated.into_iter().rev() {
                    if remaining == 0 {
                        break;
                    }
                    let start = if files::is_compressed(&p) {
                        let lines = files::count_lines(&p).map_err(open_err(&p))?;
                        let skip = lines.saturating_sub(remaining);
                        remaining -= lines - skip;
                        Start::SkipLines(skip)
                    } else {
                        let f = File::open(&p).map_err(open_err(&p))?;
                        let (off, found) = tail_start(&f, remaining).map_err(open_err(&p))?;
                        remaining -= found;
                        Start::Offset(off)
                    };
                    history.push_front(Segment { path: p, start });
                }
            }
        }
        let current_id = current.as_ref().map(file_id).transpose().map_err(open_err(&path))?;
        let current = match current {
            Some(mut f) => {
                f.seek(SeekFrom::Start(current_start)).map_err(open_err(&path))?;
                Some(BufReader::with_capacity(64 * 1024, f))
            }
            None => None,
        };
        Ok(Reader {
            path,
            history,
            current,
            current_id,
            rotated_away: None,
            pending: Vec::new(),
            format: None,
            out: Output {
                since: opts.since,
                timestamps: opts.timestamps,
                remain: opts.limit_bytes.unwrap_or(u64::MAX),
                buf: Vec::with_capacity(CHUNK),
            },
            lines_left: opts.tail_lines.filter(|_| !opts.follow),
            follow: opts.follow,
            tx,
        })
    }

    /// Delivers one raw line; false when nothing more is to be sent.
    fn line(&mut self, raw: &[u8]) -> bool {
        if self.lines_left == Some(0) {
            return false;
        }
        if self.format.is_none() {
            self.format = Format::detect(raw);
        }
        let Some(format) = self.format else {
            tracing::debug!(path = %self.path.display(), "unsupported log format; line skipped");
            return true;
        };
        match format.parse(raw) {
            Ok(m) => {
                if !self.out.write(&m) {
                    return false;
                }
            }
            Err(e) => {
                tracing::debug!(path = %self.path.display(), error = %e, "unparsable log line skipped");
                return true;
            }
        }
        if let Some(n) = self.lines_left.as_mut() {
            *n -= 1;
        }
        self.out.buf.len() < CHUNK || self.flush()
    }

    /// Sends the batched output; false when the consumer is gone.
    fn flush(&mut self) -> bool {
        if self.out.buf.is_empty() {
            return true;
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.out.buf, Vec::with_capacity(CHUNK)));
        self.tx.blocking_send(Ok(chunk)).is_ok()
    }

    /// Delivers the incomplete line as it is (end of a file that will not grow).
    fn finish_pending(&mut self) -> bool {
        if self.pending.is_empty() {
            return true;
        }
        let raw = std::mem::take(&mut self.pending);
        self.line(&raw)
    }

    /// Reads whole lines until the end of `r`; Ok(false) when nothing more is to be sent.
    fn read_lines(&mut self, r: &mut dyn BufRead) -> io::Result<bool> {
        loop {
            let n = r.read_until(b'\n', &mut self.pending)?;
            if n == 0 || self.pending.last() != Some(&b'\n') {
                return Ok(true);
            }
            let raw = std::mem::take(&mut self.pending);
            let more = self.line(&raw);
            self.pending = raw;
            self.pending.clear();
            if !more {
                return Ok(false);
            }
        }
    }

    fn read_segment(&mut self, seg: &Segment) -> io::Result<bool> {
        let mut r: Box<dyn BufRead + Send> = match seg.start {
            Start::Offset(off) => {
                let mut f = File::open(&seg.path)?;
                f.seek(SeekFrom::Start(off))?;
                Box::new(BufReader::with_capacity(64 * 1024, f))
            }
            Start::SkipLines(n) => {
                let mut r = open_lines(&seg.path)?;
                let mut sink = Vec::new();
                for _ in 0..n {
                    sink.clear();
                    if r.read_until(b'\n', &mut sink)? == 0 {
                        break;
                    }
                }
                r
            }
        };
        Ok(self.read_lines(&mut r)? && self.finish_pending())
    }

    /// Reads to the end of what is there; errors name the file (output before them is sent).
    fn pump(&mut self) -> io::Result<Pumped> {
        let r = self.pump_inner();
        if r.is_err() {
            self.flush();
        }
        r
    }

    fn pump_inner(&mut self) -> io::Result<Pumped> {
        let done = |r: &mut Reader| {
            r.flush();
            Ok(Pumped::Finished)
        };
        while let Some(seg) = self.history.pop_front() {
            let more = self.read_segment(&seg).map_err(|e| {
                io::Error::new(e.kind(), format!("failed to read log file {}: {e}", seg.path.display()))
            })?;
            if !more {
                return done(self);
            }
        }
        loop {
            if !self.drain_rotated_away()? {
                return done(self);
            }
            if let Some(mut cur) = self.current.take() {
                let res = self.read_lines(&mut cur);
                self.current = Some(cur);
                let more = res.map_err(|e| {
                    io::Error::new(e.kind(), format!("failed to read log file {}: {e}", self.path.display()))
                })?;
                if !more {
                    return done(self);
                }
            }
            if !self.follow {
                self.finish_pending();
                return done(self);
            }
            // A rotation: the runtime writes to a new file at the path; the old one is read out.
            if !self.switch_if_rotated()? {
                break;
            }
        }
        if self.flush() { Ok(Pumped::Eof) } else { Ok(Pumped::Finished) }
    }

    fn switch_if_rotated(&mut self) -> io::Result<bool> {
        let Some(f) = open_current(&self.path)? else { return Ok(false) };
        let id = file_id(&f)?;
        if Some(id) == self.current_id {
            return Ok(false);
        }
        tracing::debug!(path = %self.path.display(), "log file rotated; following the new file");
        let old = self.current.replace(BufReader::with_capacity(64 * 1024, f));
        self.current_id = Some(id);
        if let Some(reader) = old {
            // An earlier rotated-away file (two rotations within the grace) is done.
            if let Some(mut prev) = self.rotated_away.take() {
                prev.since = Instant::now() - ROTATION_GRACE;
                self.rotated_away = Some(prev);
                self.drain_rotated_away()?;
            }
            let pending = std::mem::take(&mut self.pending);
            self.rotated_away = Some(RotatedAway { reader, pending, since: Instant::now() });
        }
        Ok(true)
    }

    /// Reads what the runtime still wrote to the rotated-away file (with its own incomplete
    /// line); after the grace, or on the last pass, its rest is delivered and it is closed.
    fn drain_rotated_away(&mut self) -> io::Result<bool> {
        let Some(mut old) = self.rotated_away.take() else { return Ok(true) };
        std::mem::swap(&mut self.pending, &mut old.pending);
        let mut res = self.read_lines(&mut old.reader);
        let keep = self.follow && old.since.elapsed() < ROTATION_GRACE;
        if !keep && matches!(res, Ok(true)) {
            res = Ok(self.finish_pending());
        }
        std::mem::swap(&mut self.pending, &mut old.pending);
        if keep {
            self.rotated_away = Some(old);
        }
        res.map_err(|e| io::Error::new(e.kind(), format!("failed to read rotated log of {}: {e}", self.path.display())))
    }
}

#[cfg(test)]
#[path = "read_tests.rs"]
mod tests;
