//! Mounts as the volume plugins need them: `/proc/self/mountinfo` parsing, tmpfs, bind mounts of
//! an open file descriptor, unmounting, and removing a directory only when nothing is mounted
//! beneath it.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

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

/// The current mounts of this process's mount namespace.
pub fn mounts() -> io::Result<Vec<MountInfo>> {
    Ok(parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo")?))
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

/// Mounts a tmpfs on `dir`, sized when `size` is given (bytes).
pub fn mount_tmpfs(dir: &Path, size: Option<i64>) -> io::Result<()> {
    let target = cstr(dir)?;
    let data = CString::new(size.filter(|s| *s > 0).map(|s| format!("size={s}")).unwrap_or_default())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let (src, fstype) = (c"tmpfs", c"tmpfs");
    // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
    let rc = unsafe { libc::mount(src.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, data.as_ptr().cast()) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Bind-mounts what `source` (e.g. `/proc/self/fd/N`) refers to onto `target`.
pub fn bind(source: &Path, target: &Path) -> io::Result<()> {
    let (src, dst) = (cstr(source)?, cstr(target)?);
    // SAFETY: valid NUL-terminated strings; null fstype/data are allowed for MS_BIND.
    let rc = unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null()) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Unmounts `target`; "not mounted" counts as done.
pub fn unmount(target: &Path) -> io::Result<()> {
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

/// Removes `dir` and everything in it, refusing (without touching anything) when a mount point
/// is at or below it: removing would otherwise delete what the mount shows.
pub fn remove_unmounted(dir: &Path) -> Result<(), String> {
    if std::fs::symlink_metadata(dir).is_err() {
        return Ok(());
    }
    let all = mounts().map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?;
    let real = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    if let Some(m) = mounts_under(&all, &real).first() {
        return Err(format!("{} is still mounted", m.mount_point.display()));
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("removing {}: {e}", dir.display())),
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
