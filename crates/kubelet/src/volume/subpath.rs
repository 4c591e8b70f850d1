//! subPath / subPathExpr, safe against symlinks that lead out of the volume (upstream
//! pkg/volume/util/subpath). The path is resolved, checked to be inside the volume, then opened
//! one component at a time with `O_NOFOLLOW` (a symlink swapped in meanwhile is refused), and
//! what the descriptor refers to is bind-mounted through `/proc/self/fd/N` onto
//! `<pod>/volume-subpaths/<volume>/<container>/<index>`, which is what the runtime gets. A
//! container can therefore not make the kubelet mount anything outside the volume, even by
//! racing it.

use super::mount::{self, HostMounter, Mounter};
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

/// `what` names the subPath and its volume (`subPath "a" of volume "v"`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("subPath {0:?} must be a relative path without '..'")]
    NotRelative(String),
    #[error("{what}: opening {}: {source}", path.display())]
    Open { what: String, path: PathBuf, source: std::io::Error },
    #[error("{what}: {}: {source}", path.display())]
    Resolve { what: String, path: PathBuf, source: std::io::Error },
    #[error("{what}: {} is a symlink, refusing to follow it", path.display())]
    Symlink { what: String, path: PathBuf },
    #[error("{what} resolves outside the volume ({})", path.display())]
    Outside { what: String, path: PathBuf },
    #[error("{what} resolves outside the volume (to {}), refusing to mount it", path.display())]
    OutsideTarget { what: String, path: PathBuf },
    #[error("{what}: bad name {name:?}")]
    BadName { what: String, name: String },
    #[error("{what}: creating {}: {source}", path.display())]
    Create { what: String, path: PathBuf, source: std::io::Error },
    #[error("{what}: {source}")]
    Stat { what: String, source: std::io::Error },
    #[error("{what}: unmounting {}: {source}", path.display())]
    UnmountTarget { what: String, path: PathBuf, source: std::io::Error },
    #[error("{what}: bind-mounting onto {}: {source}", path.display())]
    Bind { what: String, path: PathBuf, source: std::io::Error },
    #[error("unmounting {}: {source}", path.display())]
    Unmount { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Mount(#[from] mount::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn components(sub: &str) -> Result<Vec<&str>> {
    if sub.starts_with('/') || sub.split('/').any(|c| c == "..") {
        return Err(Error::NotRelative(sub.to_string()));
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
fn safe_open(base: &Path, rel: &[&str], what: &str) -> Result<OwnedFd> {
    let open_err = |path: &Path, source| Error::Open { what: what.to_string(), path: path.to_path_buf(), source };
    let mut fd = open_path(None, base, libc::O_DIRECTORY).map_err(|e| open_err(base, e))?;
    let mut at = base.to_path_buf();
    for c in rel {
        at.push(c);
        let next = open_path(Some(&fd), Path::new(c), 0).map_err(|e| open_err(&at, e))?;
        let st = fstat(&next).map_err(|source| resolve_err(what, &at, source))?;
        if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
            return Err(Error::Symlink { what: what.to_string(), path: at });
        }
        fd = next;
    }
    Ok(fd)
}

/// Creates the missing directories of `sub` below `base` without following symlinks (upstream
/// doSafeMakeDir), with the volume's mode.
fn resolve_err(what: &str, path: &Path, source: std::io::Error) -> Error {
    Error::Resolve { what: what.to_string(), path: path.to_path_buf(), source }
}

fn safe_make_dir(base: &Path, comps: &[&str], perm: u32, what: &str) -> Result<()> {
    // The longest prefix that exists (symlinks followed) must lie inside the volume.
    let mut existing = 0;
    while existing < comps.len() && base.join(comps[..=existing].join("/")).exists() {
        existing += 1;
    }
    if existing == comps.len() {
        return Ok(());
    }
    let prefix = base.join(comps[..existing].join("/"));
    let resolved = prefix.canonicalize().map_err(|e| resolve_err(what, &prefix, e))?;
    let Ok(rel) = resolved.strip_prefix(base) else {
        return Err(Error::Outside { what: what.to_string(), path: resolved });
    };
    let rel: Vec<String> = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
    let rel: Vec<&str> = rel.iter().map(String::as_str).collect();
    let mut fd = safe_open(base, &rel, what)?;
    let mut at = resolved;
    for c in &comps[existing..] {
        at.push(c);
        let name = CString::new(*c).map_err(|_| Error::BadName { what: what.to_string(), name: c.to_string() })?;
        // SAFETY: fd is an open directory, name a valid NUL-terminated string.
        if unsafe { libc::mkdirat(fd.as_raw_fd(), name.as_ptr(), perm) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::AlreadyExists {
                return Err(Error::Create { what: what.to_string(), path: at, source: e });
            }
        }
        let next = open_path(Some(&fd), Path::new(c), libc::O_DIRECTORY).map_err(|source| Error::Open {
            what: what.to_string(),
            path: at.clone(),
            source,
        })?;
        // The exact mode whatever the umask (fchmod does not work on O_PATH descriptors).
        let _ = std::fs::set_permissions(
            format!("/proc/self/fd/{}", next.as_raw_fd()),
            std::fs::Permissions::from_mode(perm),
        );
        fd = next;
    }
    Ok(())
}

/// Prepares the subPath with the host's mounts; see [`prepare_with`].
pub fn prepare(r: &Request) -> Result<PathBuf> {
    prepare_with(&HostMounter, r)
}

/// Prepares the subPath and returns the host path to hand to the runtime. A failed bind leaves
/// no target behind.
pub fn prepare_with(m: &dyn Mounter, r: &Request) -> Result<PathBuf> {
    let what = format!("subPath {:?} of volume {:?}", r.sub_path, r.volume);
    let comps = components(r.sub_path)?;
    let base = r.volume_path.canonicalize().map_err(|e| resolve_err(&what, r.volume_path, e))?;
    if comps.is_empty() {
        return Ok(base);
    }
    let perm = std::fs::metadata(&base).map(|m| m.permissions().mode() & 0o7777).unwrap_or(0o755);
    if base.is_dir() {
        safe_make_dir(&base, &comps, perm, &what)?;
    }
    let joined = base.join(comps.join("/"));
    let resolved = joined.canonicalize().map_err(|e| resolve_err(&what, &joined, e))?;
    let Ok(rel) = resolved.strip_prefix(&base) else {
        return Err(Error::OutsideTarget { what, path: resolved });
    };
    let rel: Vec<String> = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
    let rel: Vec<&str> = rel.iter().map(String::as_str).collect();
    let fd = safe_open(&base, &rel, &what)?;
    let is_dir = match fstat(&fd) {
        Ok(st) => st.st_mode & libc::S_IFMT == libc::S_IFDIR,
        Err(source) => return Err(Error::Stat { what, source }),
    };

    let dir = r.pod_dir.join(SUBPATHS_DIR).join(r.volume).join(r.container);
    if let Err(source) = std::fs::DirBuilder::new().recursive(true).mode(0o750).create(&dir) {
        return Err(Error::Create { what, path: dir, source });
    }
    let target = dir.join(r.index.to_string());
    let real_target = dir.canonicalize().unwrap_or(dir.clone()).join(r.index.to_string());
    // A container restart prepares again: take the earlier bind off first.
    let all = mount::mounts(m)?;
    for _ in all.iter().filter(|m| m.mount_point == real_target) {
        if let Err(source) = m.unmount(&target) {
            return Err(Error::UnmountTarget { what, path: target, source });
        }
    }
    let kind_ok = match std::fs::symlink_metadata(&target) {
        Ok(m) => m.is_dir() == is_dir,
        Err(_) => false,
    };
    if !kind_ok {
        let _ = std::fs::remove_dir(&target).or_else(|_| std::fs::remove_file(&target));
        let made = if is_dir { std::fs::create_dir(&target) } else { std::fs::write(&target, b"") };
        if let Err(source) = made {
            return Err(Error::Create { what, path: target, source });
        }
    }
    let source = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    if let Err(e) = m.bind(&source, &target) {
        // As upstream's doBindSubPath: the target goes, and the directories above it when empty.
        let _ = std::fs::remove_dir(&target).or_else(|_| std::fs::remove_file(&target));
        for d in dir.ancestors().take(3) {
            let _ = std::fs::remove_dir(d);
        }
        return Err(Error::Bind { what, path: target, source: e });
    }
    Ok(target)
}

/// Unmounts and removes the subPath binds of one volume (all volumes with `volume` None).
pub fn clean(m: &dyn Mounter, pod_dir: &Path, volume: Option<&str>) -> Result<()> {
    let mut dir = pod_dir.join(SUBPATHS_DIR);
    if let Some(v) = volume {
        dir.push(v);
    }
    if std::fs::symlink_metadata(&dir).is_err() {
        return Ok(());
    }
    let real = dir.canonicalize().unwrap_or(dir.clone());
    let all = mount::mounts(m)?;
    // Deepest (and latest) first.
    for mp in mount::mounts_under(&all, &real).into_iter().rev() {
        m.unmount(&mp.mount_point).map_err(|source| Error::Unmount { path: mp.mount_point.clone(), source })?;
    }
    Ok(mount::remove_unmounted_with(m, &dir)?)
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
            let e = prepare(&req(sub)).unwrap_err().to_string();
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
        assert!(safe_open(dir.path(), &["link"], "t").unwrap_err().to_string().contains("is a symlink"));
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
            Err(e) if e.to_string().contains("Operation not permitted") => return,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(target, pod.join("volume-subpaths/v/c/2"));
        assert_eq!(std::fs::read_to_string(target.join("f")).unwrap(), "hello");
        // Preparing again (a container restart) does not stack binds.
        prepare(&req).unwrap();
        let all = mount::mounts(&HostMounter).unwrap();
        let real = target.canonicalize().unwrap();
        assert_eq!(all.iter().filter(|m| m.mount_point == real).count(), 1);
        clean(&HostMounter, &pod, Some("v")).unwrap();
        assert!(!pod.join("volume-subpaths/v").exists());
        assert_eq!(std::fs::read_to_string(vol.join("data/f")).unwrap(), "hello", "the volume is untouched");
    }
}
