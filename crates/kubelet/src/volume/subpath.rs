//! subPath / subPathExpr, safe against symlinks that lead out of the volume (upstream
//! pkg/volume/util/subpath). The path is resolved, checked to be inside the volume, then opened
//! one component at a time with `O_NOFOLLOW` (a symlink swapped in meanwhile is refused), and
//! what the descriptor refers to is bind-mounted through `/proc/self/fd/N` onto
//! `<pod>/volume-subpaths/<volume>/<container>/<index>`, which is what the runtime gets. A
//! container can therefore not make the kubelet mount anything outside the volume, even by
//! racing it.

use super::mount;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// One volume mount of one container with a subPath.
pub struct Request<'a> {
    /// `<root>/pods/<uid>`
    pub pod_dir: &'a Path,
    pub volume: &'a str,
    /// The volume's host directory (or file, for a hostPath).
    pub volume_path: &'a Path,
    /// The subPath, already expanded for subPathExpr.
    pub sub_path: &'a str,
    pub container: &'a str,
    /// The mount's index in the container's volumeMounts.
    pub index: usize,
}

pub const SUBPATHS_DIR: &str = "volume-subpaths";

fn components(sub: &str) -> Result<Vec<&str>, String> {
    if sub.starts_with('/') || sub.split('/').any(|c| c == "..") {
        return Err(format!("subPath {sub:?} must be a relative path without '..'"));
    }
    Ok(sub.split('/').filter(|c| !c.is_empty() && *c != ".").collect())
}

fn open_path(dir: Option<&OwnedFd>, name: &Path, extra: libc::c_int) -> std::io::Result<OwnedFd> {
    let c = CString::new(name.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let dirfd = dir.map(|d| d.as_raw_fd()).unwrap_or(libc::AT_FDCWD);
    // SAFETY: a valid NUL-terminated path; the returned descriptor is owned below.
    let fd = unsafe { libc::openat(dirfd, c.as_ptr(), libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC | extra) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fstat(fd: &OwnedFd) -> std::io::Result<libc::stat> {
    // SAFETY: a zeroed stat is a valid out-parameter; fd is open.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st)
}

/// Opens `base/rel` without following any symlink on the way (upstream doSafeOpen).
fn safe_open(base: &Path, rel: &[&str], what: &str) -> Result<OwnedFd, String> {
    let mut fd =
        open_path(None, base, libc::O_DIRECTORY).map_err(|e| format!("{what}: opening {}: {e}", base.display()))?;
    let mut at = base.to_path_buf();
    for c in rel {
        at.push(c);
        let next =
            open_path(Some(&fd), Path::new(c), 0).map_err(|e| format!("{what}: opening {}: {e}", at.display()))?;
        let st = fstat(&next).map_err(|e| format!("{what}: {}: {e}", at.display()))?;
        if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
            return Err(format!("{what}: {} is a symlink, refusing to follow it", at.display()));
        }
        fd = next;
    }
    Ok(fd)
}

/// Creates the missing directories of `sub` below `base` without following symlinks (upstream
/// doSafeMakeDir), with the volume's mode.
fn safe_make_dir(base: &Path, comps: &[&str], perm: u32, what: &str) -> Result<(), String> {
    // The longest prefix that exists (symlinks followed) must lie inside the volume.
    let mut existing = 0;
    while existing < comps.len() && base.join(comps[..=existing].join("/")).exists() {
        existing += 1;
    }
    if existing == comps.len() {
        return Ok(());
    }
    let prefix = base.join(comps[..existing].join("/"));
    let resolved = prefix.canonicalize().map_err(|e| format!("{what}: {}: {e}", prefix.display()))?;
    let rel = resolved
        .strip_prefix(base)
        .map_err(|_| format!("{what} resolves outside the volume ({})", resolved.display()))?;
    let rel: Vec<String> = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
    let rel: Vec<&str> = rel.iter().map(String::as_str).collect();
    let mut fd = safe_open(base, &rel, what)?;
    let mut at = resolved;
    for c in &comps[existing..] {
        at.push(c);
        let name = CString::new(*c).map_err(|_| format!("{what}: bad name {c:?}"))?;
        // SAFETY: fd is an open directory, name a valid NUL-terminated string.
        if unsafe { libc::mkdirat(fd.as_raw_fd(), name.as_ptr(), perm) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::AlreadyExists {
                return Err(format!("{what}: creating {}: {e}", at.display()));
            }
        }
        let next = open_path(Some(&fd), Path::new(c), libc::O_DIRECTORY)
            .map_err(|e| format!("{what}: opening {}: {e}", at.display()))?;
        // The exact mode whatever the umask (fchmod does not work on O_PATH descriptors).
        let _ = std::fs::set_permissions(
            format!("/proc/self/fd/{}", next.as_raw_fd()),
            std::fs::Permissions::from_mode(perm),
        );
        fd = next;
    }
    Ok(())
}

/// Prepares the subPath and returns the host path to hand to the runtime.
pub fn prepare(r: &Request) -> Result<PathBuf, String> {
    let what = format!("subPath {:?} of volume {:?}", r.sub_path, r.volume);
    let comps = components(r.sub_path)?;
    let base = r.volume_path.canonicalize().map_err(|e| format!("{what}: {}: {e}", r.volume_path.display()))?;
    if comps.is_empty() {
        return Ok(base);
    }
    let perm = std::fs::metadata(&base).map(|m| m.permissions().mode() & 0o7777).unwrap_or(0o755);
    if base.is_dir() {
        safe_make_dir(&base, &comps, perm, &what)?;
    }
    let joined = base.join(comps.join("/"));
    let resolved = joined.canonicalize().map_err(|e| format!("{what}: {}: {e}", joined.display()))?;
    let Ok(rel) = resolved.strip_prefix(&base) else {
        return Err(format!("{what} resolves outside the volume (to {}), refusing to mount it", resolved.display()));
    };
    let rel: Vec<String> = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
    let rel: Vec<&str> = rel.iter().map(String::as_str).collect();
    let fd = safe_open(&base, &rel, &what)?;
    let is_dir = fstat(&fd).map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR).map_err(|e| format!("{what}: {e}"))?;

    let dir = r.pod_dir.join(SUBPATHS_DIR).join(r.volume).join(r.container);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(&dir)
        .map_err(|e| format!("{what}: creating {}: {e}", dir.display()))?;
    let target = dir.join(r.index.to_string());
    let real_target = dir.canonicalize().unwrap_or(dir.clone()).join(r.index.to_string());
    // A container restart prepares again: take the earlier bind off first.
    let all = mount::mounts().map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?;
    for _ in all.iter().filter(|m| m.mount_point == real_target) {
        mount::unmount(&target).map_err(|e| format!("{what}: unmounting {}: {e}", target.display()))?;
    }
    let kind_ok = match std::fs::symlink_metadata(&target) {
        Ok(m) => m.is_dir() == is_dir,
        Err(_) => false,
    };
    if !kind_ok {
        let _ = std::fs::remove_dir(&target).or_else(|_| std::fs::remove_file(&target));
        let made = if is_dir { std::fs::create_dir(&target) } else { std::fs::write(&target, b"") };
        made.map_err(|e| format!("{what}: creating {}: {e}", target.display()))?;
    }
    let source = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    mount::bind(&source, &target).map_err(|e| format!("{what}: bind-mounting onto {}: {e}", target.display()))?;
    Ok(target)
}

/// Unmounts and removes the subPath binds of one volume (all volumes with `volume` None).
pub fn clean(pod_dir: &Path, volume: Option<&str>) -> Result<(), String> {
    let mut dir = pod_dir.join(SUBPATHS_DIR);
    if let Some(v) = volume {
        dir.push(v);
    }
    if std::fs::symlink_metadata(&dir).is_err() {
        return Ok(());
    }
    let real = dir.canonicalize().unwrap_or(dir.clone());
    let all = mount::mounts().map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?;
    // Deepest (and latest) first.
    for m in mount::mounts_under(&all, &real).into_iter().rev() {
        mount::unmount(&m.mount_point).map_err(|e| format!("unmounting {}: {e}", m.mount_point.display()))?;
    }
    mount::remove_unmounted(&dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subpaths_must_be_relative_without_backsteps() {
        assert!(components("/etc").is_err());
        assert!(components("a/../../etc").is_err());
        assert_eq!(components("a//b/./c").unwrap(), ["a", "b", "c"]);
    }

    #[test]
    fn a_symlink_out_of_the_volume_is_refused_before_anything_is_mounted() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("vol");
        std::fs::create_dir_all(vol.join("inside")).unwrap();
        std::os::unix::fs::symlink("/etc", vol.join("evil")).unwrap();
        std::os::unix::fs::symlink("../../..", vol.join("up")).unwrap();
        let pod = dir.path().join("pod");
        let req = |sub: &'static str| Request {
            pod_dir: &pod,
            volume: "v",
            volume_path: &vol,
            sub_path: sub,
            container: "c",
            index: 0,
        };
        for sub in ["evil", "evil/passwd", "up/etc", "evil/newdir"] {
            let e = prepare(&req(sub)).unwrap_err();
            assert!(e.contains("resolves outside the volume"), "{sub}: {e}");
        }
        assert!(!pod.join(SUBPATHS_DIR).exists(), "nothing prepared");
        assert!(!Path::new("/etc/newdir").exists());
    }

    #[test]
    fn safe_open_refuses_symlinks_on_the_way() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("real")).unwrap();
        std::os::unix::fs::symlink("real", dir.path().join("link")).unwrap();
        assert!(safe_open(dir.path(), &["real"], "t").is_ok());
        assert!(safe_open(dir.path(), &["link"], "t").unwrap_err().contains("is a symlink"));
    }

    #[test]
    fn missing_directories_are_created_with_the_volume_mode() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("vol");
        std::fs::create_dir(&vol).unwrap();
        std::fs::set_permissions(&vol, std::fs::Permissions::from_mode(0o777)).unwrap();
        safe_make_dir(&vol, &["a", "b"], 0o777, "t").unwrap();
        assert_eq!(std::fs::metadata(vol.join("a/b")).unwrap().permissions().mode() & 0o777, 0o777);
    }

    /// Needs CAP_SYS_ADMIN (the e2e environment runs as root); skipped otherwise.
    #[test]
    fn the_subpath_is_bind_mounted_and_cleaned_up() {
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("vol");
        std::fs::create_dir_all(vol.join("data")).unwrap();
        std::fs::write(vol.join("data/f"), "hello").unwrap();
        let pod = dir.path().join("pod");
        let req = Request { pod_dir: &pod, volume: "v", volume_path: &vol, sub_path: "data", container: "c", index: 2 };
        let target = match prepare(&req) {
            Ok(t) => t,
            // No mount privilege here (a rootless sandbox).
            Err(e) if e.contains("Operation not permitted") => return,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(target, pod.join("volume-subpaths/v/c/2"));
        assert_eq!(std::fs::read_to_string(target.join("f")).unwrap(), "hello");
        // Preparing again (a container restart) does not stack binds.
        prepare(&req).unwrap();
        let all = mount::mounts().unwrap();
        let real = target.canonicalize().unwrap();
        assert_eq!(all.iter().filter(|m| m.mount_point == real).count(), 1);
        clean(&pod, Some("v")).unwrap();
        assert!(!pod.join("volume-subpaths/v").exists());
        assert_eq!(std::fs::read_to_string(vol.join("data/f")).unwrap(), "hello", "the volume is untouched");
    }
}
