//! Mounts as the volume plugins need them: `/proc/self/mountinfo` parsing, tmpfs, bind mounts of
//! an open file descriptor, unmounting, and removing a directory only when nothing is mounted
//! beneath it. The syscalls sit behind [`Mounter`]: [`HostMounter`] makes them, [`FakeMounter`]
//! keeps an in-memory mount table and records the calls, so tmpfs, subPath and teardown logic is
//! unit-tested without privilege. The volume manager gets one in its `Config`.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    pub mount_point: PathBuf,
    pub fs_type: String,
    pub source: String,
    /// Superblock options (`size=…` for tmpfs).
    pub super_options: String,
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("x"), 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text; malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let mut right = right.split(' ');
            let fs_type = right.next()?.to_string();
            let source = unescape(right.next().unwrap_or(""));
            let super_options = right.next().unwrap_or("").to_string();
            Some(MountInfo { mount_point: PathBuf::from(unescape(left.get(4)?)), fs_type, source, super_options })
        })
        .collect()
}

/// The topmost mount at exactly `path`, if any.
pub fn mount_at<'a>(mounts: &'a [MountInfo], path: &Path) -> Option<&'a MountInfo> {
    mounts.iter().rev().find(|m| m.mount_point == path)
}

/// Mount points at or below `path`.
pub fn mounts_under<'a>(mounts: &'a [MountInfo], path: &Path) -> Vec<&'a MountInfo> {
    mounts.iter().filter(|m| m.mount_point.starts_with(path)).collect()
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading /proc/self/mountinfo: {0}")]
    MountInfo(#[source] io::Error),
    #[error("{} is still mounted", .0.display())]
    StillMounted(PathBuf),
    #[error("removing {}: {source}", path.display())]
    Remove { path: PathBuf, source: io::Error },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The mount syscalls the volume plugins use, so their logic runs on a [`FakeMounter`] in tests.
/// [`HostMounter`] is the real one.
pub trait Mounter: Send + Sync + 'static {
    /// The current mounts of this process's mount namespace.
    fn mounts(&self) -> io::Result<Vec<MountInfo>>;
    /// Mounts a tmpfs on `dir`, sized when `size` is given (bytes).
    fn mount_tmpfs(&self, dir: &Path, size: Option<i64>) -> io::Result<()>;
    /// Bind-mounts what `source` (e.g. `/proc/self/fd/N`) refers to onto `target`.
    fn bind(&self, source: &Path, target: &Path) -> io::Result<()>;
    /// Unmounts `target`; "not mounted" counts as done.
    fn unmount(&self, target: &Path) -> io::Result<()>;
}

pub type DynMounter = Arc<dyn Mounter>;

/// Mounts in this process's mount namespace (libc mount/umount2, /proc/self/mountinfo).
#[derive(Debug, Clone, Copy, Default)]
pub struct HostMounter;

/// The host's mounter, shared.
pub fn host() -> DynMounter {
    Arc::new(HostMounter)
}

impl Mounter for HostMounter {
    fn mounts(&self) -> io::Result<Vec<MountInfo>> {
        Ok(parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo")?))
    }

    fn mount_tmpfs(&self, dir: &Path, size: Option<i64>) -> io::Result<()> {
        let target = cstr(dir)?;
        let data = CString::new(size_option(size)).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let (src, fstype) = (c"tmpfs", c"tmpfs");
        // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
        let rc = unsafe { libc::mount(src.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, data.as_ptr().cast()) };
        if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
    }

    fn bind(&self, source: &Path, target: &Path) -> io::Result<()> {
        let (src, dst) = (cstr(source)?, cstr(target)?);
        // SAFETY: valid NUL-terminated strings; null fstype/data are allowed for MS_BIND.
        let rc = unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null()) };
        if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
    }

    fn unmount(&self, target: &Path) -> io::Result<()> {
        let t = cstr(target)?;
        // SAFETY: valid NUL-terminated string.
        let rc = unsafe { libc::umount2(t.as_ptr(), libc::UMOUNT_NOFOLLOW) };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINVAL) | Some(libc::ENOENT) => Ok(()),
            _ => Err(e),
        }
    }
}

/// tmpfs's `size=` option (empty without a positive size).
fn size_option(size: Option<i64>) -> String {
    size.filter(|s| *s > 0).map(|s| format!("size={s}")).unwrap_or_default()
}

/// The current mounts, as an error the plugins report.
pub fn mounts(m: &dyn Mounter) -> Result<Vec<MountInfo>> {
    m.mounts().map_err(Error::MountInfo)
}

/// Removes `dir` and everything in it, refusing (without touching anything) when a mount point
/// is at or below it: removing would otherwise delete what the mount shows.
pub fn remove_unmounted_with(m: &dyn Mounter, dir: &Path) -> Result<()> {
    if std::fs::symlink_metadata(dir).is_err() {
        return Ok(());
    }
    let all = mounts(m)?;
    let real = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    if let Some(m) = mounts_under(&all, &real).first() {
        return Err(Error::StillMounted(m.mount_point.clone()));
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Remove { path: dir.to_path_buf(), source }),
    }
}

/// [`remove_unmounted_with`] on the host's mounts.
pub fn remove_unmounted(dir: &Path) -> Result<()> {
    remove_unmounted_with(&HostMounter, dir)
}

/// What a [`FakeMounter`] was asked to do (paths as given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Tmpfs {
        target: PathBuf,
        size: Option<i64>,
    },
    /// `source` is what a `/proc/self/fd/N` source referred to at the time of the call.
    Bind {
        source: PathBuf,
        target: PathBuf,
    },
    Unmount(PathBuf),
}

#[derive(Default)]
struct FakeState {
    table: Vec<MountInfo>,
    calls: Vec<Call>,
    fail_mounts: Option<i32>,
}

/// An in-memory mount table that records every call; directories stay plain directories. Mounts
/// can be made to fail (with an errno) to test the error paths.
#[derive(Default)]
pub struct FakeMounter(Mutex<FakeState>);

impl FakeMounter {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every call that succeeded, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    /// The mount points mounted now, oldest first.
    pub fn mounted(&self) -> Vec<PathBuf> {
        self.state().table.iter().map(|m| m.mount_point.clone()).collect()
    }

    /// Makes every tmpfs and bind mount fail with `errno` (None: succeed again).
    pub fn fail_mounts(&self, errno: Option<i32>) {
        self.state().fail_mounts = errno;
    }

    fn mount(&self, call: Call, info: MountInfo) -> io::Result<()> {
        let mut st = self.state();
        if let Some(errno) = st.fail_mounts {
            return Err(io::Error::from_raw_os_error(errno));
        }
        st.calls.push(call);
        st.table.push(info);
        Ok(())
    }
}

impl Mounter for FakeMounter {
    fn mounts(&self) -> io::Result<Vec<MountInfo>> {
        Ok(self.state().table.clone())
    }

    fn mount_tmpfs(&self, dir: &Path, size: Option<i64>) -> io::Result<()> {
        let info = MountInfo {
            mount_point: dir.to_path_buf(),
            fs_type: "tmpfs".into(),
            source: "tmpfs".into(),
            super_options: size_option(size),
        };
        self.mount(Call::Tmpfs { target: dir.to_path_buf(), size }, info)
    }

    fn bind(&self, source: &Path, target: &Path) -> io::Result<()> {
        let source = std::fs::read_link(source).unwrap_or_else(|_| source.to_path_buf());
        let mount_point = target.canonicalize().unwrap_or_else(|_| target.to_path_buf());
        let info = MountInfo {
            mount_point,
            fs_type: "bind".into(),
            source: source.to_string_lossy().into_owned(),
            super_options: String::new(),
        };
        self.mount(Call::Bind { source, target: target.to_path_buf() }, info)
    }

    fn unmount(&self, target: &Path) -> io::Result<()> {
        let real = target.canonicalize().unwrap_or_else(|_| target.to_path_buf());
        let mut st = self.state();
        if let Some(i) = st.table.iter().rposition(|m| m.mount_point == real || m.mount_point == target) {
            st.table.remove(i);
            st.calls.push(Call::Unmount(target.to_path_buf()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_give_mount_point_type_and_size() {
        let text = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
                    99 22 0:50 / /var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/my\\040cache rw,relatime - tmpfs tmpfs rw,size=65536k\n\
                    garbage\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 2);
        let p = Path::new("/var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/my cache");
        let t = mount_at(&m, p).unwrap();
        assert_eq!((t.fs_type.as_str(), t.super_options.as_str()), ("tmpfs", "rw,size=65536k"));
        assert_eq!(mounts_under(&m, Path::new("/var/lib/kubelet/pods/u1")).len(), 1);
        assert!(mounts_under(&m, Path::new("/var/lib/kubelet/pods/u2")).is_empty());
    }

    #[test]
    fn removing_a_plain_directory_works_and_a_missing_one_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("a/b");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("f"), "x").unwrap();
        remove_unmounted(&dir.path().join("a")).unwrap();
        assert!(!dir.path().join("a").exists());
        remove_unmounted(&dir.path().join("a")).unwrap();
    }
}
