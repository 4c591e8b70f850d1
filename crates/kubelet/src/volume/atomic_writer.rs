//! Upstream's AtomicWriter (pkg/volume/util/atomic_writer.go): a set of files written so that a
//! reader never sees half of an update. The data goes into a fresh timestamped directory
//! (`..2024_01_02_15_04_05.123456789`), the `..data` symlink is switched to it by renaming a new
//! symlink over it (atomic), and the user-visible names are symlinks into `..data`:
//!
//! ```text
//! <dir>/key        -> ..data/key
//! <dir>/..data     -> ..2024_01_02_15_04_05.123456789
//! ```

use super::ownership::{self, Ownership};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub const DATA_DIR: &str = "..data";
const NEW_DATA_DIR: &str = "..data_tmp";
const MAX_PATH: usize = 4096;
const MAX_NAME: usize = 255;

/// One file of a payload: its content, mode and, for projected tokens, the owner (upstream's
/// FileProjection.FsUser; the group is left alone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProjection {
    pub data: Vec<u8>,
    pub mode: u32,
    pub fs_user: Option<u32>,
}

impl FileProjection {
    pub fn new(data: Vec<u8>, mode: u32) -> Self {
        Self { data, mode, fs_user: None }
    }
}

/// Relative path → file.
pub type Payload = BTreeMap<String, FileProjection>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The reason follows "invalid path: ".
    #[error("invalid path: {0}")]
    InvalidPath(String),
    #[error("{what} {}: {source}", path.display())]
    Io { what: &'static str, path: PathBuf, source: io::Error },
    #[error("cannot create a timestamped directory in {}", .0.display())]
    NoTimestampDir(PathBuf),
    #[error(transparent)]
    Ownership(#[from] ownership::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Upstream's validatePath: relative, no `..` element, not starting with `..`, length limits.
pub fn validate_path(p: &str) -> Result<()> {
    let invalid = |why: String| Err(Error::InvalidPath(why));
    if p.is_empty() {
        return invalid("must not be empty".into());
    }
    if p.starts_with('/') {
        return invalid(format!("must be relative path: {p}"));
    }
    if p.len() > MAX_PATH {
        return invalid(format!("must be less than or equal to {MAX_PATH} characters"));
    }
    let items: Vec<&str> = p.split('/').collect();
    for item in &items {
        if *item == ".." {
            return invalid(format!("must not contain '..': {p}"));
        }
        if item.len() > MAX_NAME {
            return invalid(format!("filenames must be less than or equal to {MAX_NAME} characters"));
        }
    }
    if items[0].starts_with("..") && items[0].len() > 2 {
        return invalid(format!("must not start with '..': {p}"));
    }
    Ok(())
}

/// `a//b/./c/` → `a/b/c`.
fn clean(p: &str) -> String {
    p.split('/').filter(|s| !s.is_empty() && *s != ".").collect::<Vec<_>>().join("/")
}

fn err(what: &'static str, path: &Path, source: io::Error) -> Error {
    Error::Io { what, path: path.to_path_buf(), source }
}

/// Writes `payload` into `target` (which must exist). Returns whether anything changed.
/// `ownership`: the pod's fsGroup, applied to the whole volume once the new files are written and
/// before they become visible (upstream's setPerms hook: a first write also creates files outside
/// the timestamped directory).
pub fn write(target: &Path, payload: &Payload, now: SystemTime, ownership: Option<&Ownership>) -> Result<bool> {
    let mut clean_payload = Payload::new();
    for (k, v) in payload {
        validate_path(k)?;
        clean_payload.insert(clean(k), v.clone());
    }
    let data_link = target.join(DATA_DIR);
    let old_ts = match std::fs::read_link(&data_link) {
        Ok(p) => Some(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(err("reading link", &data_link, e)),
    };
    let mut to_remove = BTreeSet::new();
    if let Some(old) = &old_ts {
        let old_dir = target.join(old);
        to_remove = paths_to_remove(&clean_payload, &old_dir)?;
        let visible_missing = clean_payload.keys().any(|k| {
            let top = k.split('/').next().unwrap_or(k);
            std::fs::symlink_metadata(target.join(top)).is_err()
        });
        let added = ownership.map_or(0, Ownership::file_bits);
        if !should_write(&clean_payload, &old_dir, added)? && to_remove.is_empty() && !visible_missing {
            return Ok(false);
        }
    }
    let ts_dir = new_timestamp_dir(target, now)?;
    let ts_name = ts_dir.file_name().map(PathBuf::from).unwrap_or_default();
    let written = write_payload(&clean_payload, &ts_dir)
        .and_then(|()| ownership.map_or(Ok(false), |o| o.apply(target)).map_err(Error::from));
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&ts_dir);
        return Err(e);
    }
    create_user_visible(target, &clean_payload)?;
    let tmp_link = target.join(NEW_DATA_DIR);
    let _ = std::fs::remove_file(&tmp_link);
    if let Err(e) = std::os::unix::fs::symlink(&ts_name, &tmp_link) {
        let _ = std::fs::remove_dir_all(&ts_dir);
        return Err(err("creating symlink", &tmp_link, e));
    }
    if let Err(e) = std::fs::rename(&tmp_link, &data_link) {
        let _ = std::fs::remove_file(&tmp_link);
        let _ = std::fs::remove_dir_all(&ts_dir);
        return Err(err("renaming symlink over", &data_link, e));
    }
    for p in to_remove.iter().filter(|p| !p.contains('/')) {
        let visible = target.join(p);
        if let Err(e) = std::fs::remove_file(&visible)
            && e.kind() != io::ErrorKind::NotFound
        {
            return Err(err("removing old user-visible path", &visible, e));
        }
    }
    if let Some(old) = old_ts {
        let old_dir = target.join(old);
        if old_dir != ts_dir {
            std::fs::remove_dir_all(&old_dir).map_err(|e| err("removing old data directory", &old_dir, e))?;
        }
    }
    Ok(true)
}

/// Whether a file's content or mode differs; `added` are the bits fsGroup ownership adds to every
/// file, so a file ownership changed does not count as changed.
fn should_write(payload: &Payload, old_dir: &Path, added: u32) -> Result<bool> {
    for (path, f) in payload {
        let full = old_dir.join(path);
        let meta = match std::fs::symlink_metadata(&full) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
            Err(e) => return Err(err("reading", &full, e)),
        };
        if (meta.permissions().mode() | added) & 0o7777 != (f.mode | added) & 0o7777 {
            return Ok(true);
        }
        let on_disk = std::fs::read(&full).map_err(|e| err("reading", &full, e))?;
        if on_disk != f.data {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Paths of the old data directory that the new payload no longer has (parents of new files
/// are kept).
fn paths_to_remove(payload: &Payload, old_dir: &Path) -> Result<BTreeSet<String>> {
    let mut existing = BTreeSet::new();
    fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<String>) -> io::Result<()> {
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let p = e.path();
            if let Ok(rel) = p.strip_prefix(base) {
                out.insert(rel.to_string_lossy().into_owned());
            }
            if e.file_type()?.is_dir() {
                walk(base, &p, out)?;
            }
        }
        Ok(())
    }
    match walk(old_dir, old_dir, &mut existing) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(e) => return Err(err("walking", old_dir, e)),
    }
    let mut keep = BTreeSet::new();
    for file in payload.keys() {
        let mut p = file.as_str();
        loop {
            keep.insert(p.to_string());
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => break,
            }
        }
    }
    Ok(existing.difference(&keep).cloned().collect())
}

fn new_timestamp_dir(target: &Path, now: SystemTime) -> Result<PathBuf> {
    let t: chrono::DateTime<chrono::Utc> = now.into();
    let prefix = t.format("..%Y_%m_%d_%H_%M_%S.").to_string();
    // os.MkdirTemp's random suffix, decimal digits.
    let mut seed =
        now.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0) ^ std::process::id();
    for _ in 0..1000 {
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let dir = target.join(format!("{prefix}{}", seed % 1_000_000_000));
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                // 0755 so group and other can traverse, whatever the umask.
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
                    .map_err(|e| err("setting the mode of", &dir, e))?;
                return Ok(dir);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(err("creating", &dir, e)),
        }
    }
    Err(Error::NoTimestampDir(target.to_path_buf()))
}

fn write_payload(payload: &Payload, dir: &Path) -> Result<()> {
    for (path, f) in payload {
        let full = dir.join(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent).map_err(|e| err("creating", parent, e))?;
        }
        std::fs::write(&full, &f.data).map_err(|e| err("writing", &full, e))?;
        // The exact mode, whatever the umask.
        std::fs::set_permissions(&full, std::fs::Permissions::from_mode(f.mode & 0o7777))
            .map_err(|e| err("setting the mode of", &full, e))?;
        if let Some(uid) = f.fs_user {
            std::os::unix::fs::chown(&full, Some(uid), None).map_err(|e| err("changing the owner of", &full, e))?;
        }
    }
    Ok(())
}

fn create_user_visible(target: &Path, payload: &Payload) -> Result<()> {
    for path in payload.keys() {
        let top = path.split('/').next().unwrap_or(path);
        let visible = target.join(top);
        if std::fs::symlink_metadata(&visible).is_err() {
            std::os::unix::fs::symlink(Path::new(DATA_DIR).join(top), &visible)
                .map_err(|e| err("creating symlink", &visible, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn file(s: &str, mode: u32) -> FileProjection {
        FileProjection::new(s.as_bytes().to_vec(), mode)
    }

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    #[test]
    fn files_are_symlinks_into_a_timestamped_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let p = Payload::from([("a".into(), file("1", 0o644)), ("sub/b".into(), file("2", 0o400))]);
        assert!(write(dir.path(), &p, t0(), None).unwrap());
        let data = std::fs::read_link(dir.path().join(DATA_DIR)).unwrap();
        assert!(data.to_string_lossy().starts_with("..2023_11_14_22_13_20."), "{data:?}");
        assert_eq!(std::fs::read_link(dir.path().join("a")).unwrap(), Path::new("..data/a"));
        assert_eq!(std::fs::read_link(dir.path().join("sub")).unwrap(), Path::new("..data/sub"));
        assert_eq!(std::fs::read_to_string(dir.path().join("sub/b")).unwrap(), "2");
        let mode = std::fs::metadata(dir.path().join("sub/b")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o400);
        let ts_mode = std::fs::metadata(dir.path().join(&data)).unwrap().permissions().mode() & 0o777;
        assert_eq!(ts_mode, 0o755);
    }

    #[test]
    fn an_unchanged_payload_is_not_rewritten_and_a_change_swaps_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let p = Payload::from([("a".into(), file("1", 0o644)), ("b".into(), file("2", 0o644))]);
        write(dir.path(), &p, t0(), None).unwrap();
        let first = std::fs::read_link(dir.path().join(DATA_DIR)).unwrap();
        assert!(!write(dir.path(), &p, t0() + Duration::from_secs(60), None).unwrap());
        // A key goes, one changes, one comes.
        let q = Payload::from([("a".into(), file("new", 0o644)), ("c".into(), file("3", 0o644))]);
        assert!(write(dir.path(), &q, t0() + Duration::from_secs(120), None).unwrap());
        let second = std::fs::read_link(dir.path().join(DATA_DIR)).unwrap();
        assert_ne!(first, second);
        assert!(!dir.path().join(&first).exists(), "old data dir removed");
        assert_eq!(std::fs::read_to_string(dir.path().join("a")).unwrap(), "new");
        assert_eq!(std::fs::read_to_string(dir.path().join("c")).unwrap(), "3");
        assert!(std::fs::symlink_metadata(dir.path().join("b")).is_err(), "removed key's link gone");
        // Only a mode change still rewrites.
        let r = Payload::from([("a".into(), file("new", 0o600)), ("c".into(), file("3", 0o644))]);
        assert!(write(dir.path(), &r, t0() + Duration::from_secs(180), None).unwrap());
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("..") && n != DATA_DIR)
            .collect();
        assert_eq!(names.len(), 1, "one timestamped dir left: {names:?}");
    }

    #[test]
    fn a_deleted_visible_link_is_recreated() {
        let dir = tempfile::tempdir().unwrap();
        let p = Payload::from([("a".into(), file("1", 0o644))]);
        write(dir.path(), &p, t0(), None).unwrap();
        std::fs::remove_file(dir.path().join("a")).unwrap();
        assert!(write(dir.path(), &p, t0(), None).unwrap());
        assert_eq!(std::fs::read_to_string(dir.path().join("a")).unwrap(), "1");
    }

    #[test]
    fn bad_paths_are_refused() {
        for bad in ["", "/abs", "a/../b", "..hidden", "..data"] {
            assert!(validate_path(bad).is_err(), "{bad}");
        }
        assert!(validate_path("ok/..x").is_ok());
        assert!(validate_path(&"x".repeat(256)).is_err());
        let dir = tempfile::tempdir().unwrap();
        let p = Payload::from([("../escape".into(), file("1", 0o644))]);
        assert!(write(dir.path(), &p, t0(), None).is_err());
        assert!(!dir.path().join(DATA_DIR).exists());
    }
}
