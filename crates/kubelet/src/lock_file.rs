//! `--lock-file` and `--exit-on-lock-contention` (upstream's flock.Acquire and
//! watchForLockfileContention): the kubelet holds an exclusive flock on the file while it runs,
//! waiting for another holder to let go; with exit-on-lock-contention it watches the file with
//! inotify and stops as soon as another process opens it (or the file is deleted), so a new
//! kubelet waiting on the lock can take over.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Errors taking or watching the lock file; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unable to acquire file lock on {path:?}: {source}")]
    Acquire { path: PathBuf, source: std::io::Error },
    #[error("unable to watch lockfile {path:?}: {source}")]
    Watch { path: PathBuf, source: std::io::Error },
    #[error("cannot exit on lock file contention: no lock file specified")]
    NoLockFile,
}

/// The held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

/// Opens (creating it, mode 0600) and exclusively flocks `path`, blocking until any other
/// holder lets go.
pub fn acquire(path: &Path) -> Result<Lock, Error> {
    let err = |source| Error::Acquire { path: path.to_path_buf(), source };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    loop {
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(Lock { _file: file });
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(err(e));
        }
    }
}

/// Watches `path` for an open by anyone (IN_OPEN) or its deletion (IN_DELETE_SELF); the
/// returned receiver fires on the first one. The watch is set up before this returns, so the
/// kubelet's own earlier open does not count.
pub fn watch_for_contention(path: &Path) -> Result<tokio::sync::oneshot::Receiver<()>, Error> {
    let err = |source| Error::Watch { path: path.to_path_buf(), source };
    // SAFETY: a fresh inotify descriptor, owned from here on.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    if fd < 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just returned by inotify_init1 and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains NUL")))?;
    // SAFETY: valid descriptor and NUL-terminated path.
    let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c_path.as_ptr(), libc::IN_OPEN | libc::IN_DELETE_SELF) };
    if wd < 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    let path = path.to_path_buf();
    std::thread::Builder::new()
        .name("lock-file-watch".into())
        .spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                // SAFETY: reading into a local buffer from the owned descriptor.
                let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n > 0 {
                    tracing::info!(path = %path.display(), "lock file contention: another process opened it");
                    let _ = tx.send(());
                    return;
                }
                let e = std::io::Error::last_os_error();
                if n < 0 && e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!(path = %path.display(), error = %e, "watching the lock file failed");
                return;
            }
        })
        .map_err(err)?;
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_opener_is_contention() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubelet.lock");
        let lock = acquire(&path).unwrap();
        let mut contention = watch_for_contention(&path).unwrap();
        assert!(contention.try_recv().is_err(), "our own open does not count");
        let other = std::fs::File::open(&path).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), contention).await.unwrap().unwrap();
        // SAFETY: test-only non-blocking flock on our own descriptor.
        let busy = unsafe { libc::flock(other.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_ne!(busy, 0, "the lock is still held");
        drop(lock);
        // SAFETY: as above.
        assert_eq!(unsafe { libc::flock(other.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }, 0);
    }
}
