//! hostPath (pkg/volume/hostpath): nothing is mounted by the kubelet, the host path is handed to
//! the runtime as is, after the `type` check upstream makes (checkTypeInternal).

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("hostPath {0:?} must not contain '..'")]
    DotDot(String),
    /// `what` is "a directory", "a file", "a socket file", ...
    #[error("hostPath type check failed: {path} is not {what}")]
    WrongType { path: String, what: &'static str },
    #[error("{0} is an invalid volume type")]
    InvalidType(String),
    #[error("hostPath: creating {what} {}: {source}", path.display())]
    Create { what: &'static str, path: PathBuf, source: std::io::Error },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Checks (and for the *OrCreate types, creates) `path` per `type_`; unset/empty checks nothing.
pub fn check(path: &str, type_: Option<&str>) -> Result<()> {
    if path.split('/').any(|c| c == "..") {
        return Err(Error::DotDot(path.to_string()));
    }
    let not = |what| Err(Error::WrongType { path: path.to_string(), what });
    let p = Path::new(path);
    // Stat follows symlinks, as upstream's GetFileType does.
    let meta = std::fs::metadata(p).ok();
    let ft = meta.as_ref().map(|m| m.file_type());
    let is = |f: fn(&std::fs::FileType) -> bool| ft.as_ref().is_some_and(f);
    match type_.unwrap_or("") {
        "" => Ok(()),
        "DirectoryOrCreate" if meta.is_none() => make_dir(p),
        "DirectoryOrCreate" | "Directory" if !is(|f| f.is_dir()) => not("a directory"),
        "DirectoryOrCreate" | "Directory" => Ok(()),
        "FileOrCreate" if meta.is_none() => make_file(p),
        "FileOrCreate" | "File" if !is(|f| f.is_file()) => not("a file"),
        "FileOrCreate" | "File" => Ok(()),
        "Socket" if !is(|f| f.is_socket()) => not("a socket file"),
        "CharDevice" if !is(|f| f.is_char_device()) => not("a character device"),
        "BlockDevice" if !is(|f| f.is_block_device()) => not("a block device"),
        "Socket" | "CharDevice" | "BlockDevice" => Ok(()),
        other => Err(Error::InvalidType(other.to_string())),
    }
}

/// DirectoryOrCreate: `mkdir -p` with 0755.
fn make_dir(p: &Path) -> Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o755).create(p).map_err(|source| Error::Create {
        what: "directory",
        path: p.to_path_buf(),
        source,
    })
}

/// FileOrCreate: an empty 0644 file; the parent directory must exist.
fn make_file(p: &Path) -> Result<()> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(p)
        .map_err(|source| Error::Create { what: "file", path: p.to_path_buf(), source })?;
    // The exact mode whatever the umask.
    let _ = f.set_permissions(std::fs::Permissions::from_mode(0o644));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_is_checked_as_upstream() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let s = |p: &Path| p.to_str().unwrap().to_string();
        std::fs::write(d.join("file"), "x").unwrap();
        std::fs::create_dir(d.join("dir")).unwrap();
        let _sock = std::os::unix::net::UnixListener::bind(d.join("sock")).unwrap();
        let (file, dirp, sock) = (s(&d.join("file")), s(&d.join("dir")), s(&d.join("sock")));

        assert!(check("/nonexistent/whatever", None).is_ok());
        assert!(check("/nonexistent/whatever", Some("")).is_ok());
        assert!(check(&dirp, Some("Directory")).is_ok());
        assert_eq!(
            check(&file, Some("Directory")).unwrap_err().to_string(),
            format!("hostPath type check failed: {file} is not a directory")
        );
        assert!(check(&s(&d.join("missing")), Some("Directory")).is_err());
        assert!(check(&file, Some("File")).is_ok());
        assert_eq!(
            check(&dirp, Some("File")).unwrap_err().to_string(),
            format!("hostPath type check failed: {dirp} is not a file")
        );
        assert!(check(&sock, Some("Socket")).is_ok());
        assert!(check(&file, Some("Socket")).unwrap_err().to_string().ends_with("is not a socket file"));
        assert!(check("/dev/null", Some("CharDevice")).is_ok());
        assert!(check(&file, Some("CharDevice")).unwrap_err().to_string().ends_with("is not a character device"));
        assert!(check("/dev/null", Some("BlockDevice")).unwrap_err().to_string().ends_with("is not a block device"));
        assert_eq!(check(&file, Some("Bogus")).unwrap_err().to_string(), "Bogus is an invalid volume type");
        assert!(check("/a/../etc", Some("Directory")).is_err());
    }

    #[test]
    fn or_create_types_create_with_upstream_modes() {
        let dir = tempfile::tempdir().unwrap();
        let newdir = dir.path().join("a/b/c");
        check(newdir.to_str().unwrap(), Some("DirectoryOrCreate")).unwrap();
        assert_eq!(std::fs::metadata(&newdir).unwrap().permissions().mode() & 0o777, 0o755);
        // An existing file is not a directory.
        let f = dir.path().join("f");
        check(f.to_str().unwrap(), Some("FileOrCreate")).unwrap();
        let m = std::fs::metadata(&f).unwrap();
        assert!(m.is_file() && m.len() == 0);
        assert_eq!(m.permissions().mode() & 0o777, 0o644);
        assert!(
            check(f.to_str().unwrap(), Some("DirectoryOrCreate"))
                .unwrap_err()
                .to_string()
                .ends_with("is not a directory")
        );
        assert!(
            check(newdir.to_str().unwrap(), Some("FileOrCreate")).unwrap_err().to_string().ends_with("is not a file")
        );
        // FileOrCreate does not create parents.
        let deep = dir.path().join("missing/parent/f");
        assert!(check(deep.to_str().unwrap(), Some("FileOrCreate")).is_err());
    }
}
