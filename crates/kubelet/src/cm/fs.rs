//! The cgroup filesystem behind a small trait, so the hierarchy code runs against a temporary
//! directory tree in tests.

use std::fmt::Debug;
use std::io;
use std::path::{Path, PathBuf};

pub trait CgroupFs: Send + Sync + Debug {
    fn exists(&self, path: &Path) -> bool;
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    fn read(&self, path: &Path) -> io::Result<String>;
    fn write(&self, path: &Path, data: &str) -> io::Result<()>;
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
    /// Subdirectories (child cgroups) of `path`.
    fn sub_dirs(&self, path: &Path) -> io::Result<Vec<PathBuf>>;
}

/// The real filesystem (`/sys/fs/cgroup`, or a directory tree in tests).
#[derive(Debug, Default, Clone, Copy)]
pub struct OsFs;

impl CgroupFs for OsFs {
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn read(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn write(&self, path: &Path, data: &str) -> io::Result<()> {
        // cgroup files take one write(2) of the whole value; no truncation or create semantics.
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(path)?;
        f.write_all(data.as_bytes())
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }

    fn sub_dirs(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(path)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                out.push(e.path());
            }
        }
        Ok(out)
    }
}
