//! Certificate/key pairs on disk as upstream's `certificate.FileStore` (client-go
//! util/certificate/certificate_store.go) keeps them in `--cert-dir`: each issued pair is one PEM
//! file `<prefix>-<YYYY-MM-DD-HH-MM-SS>.pem` (certificate blocks, then the key, mode 0600) and
//! `<prefix>-current.pem` is a symlink to the newest one, moved by renaming a fresh
//! `<prefix>-updated.pem` link over it. An existing node's files are therefore read as they are.

use super::{Error, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A certificate chain with its key, parsed once.
#[derive(Debug)]
pub struct Pair {
    /// The file it was read from (or written to).
    pub path: PathBuf,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// For rustls (client resolver, server resolver).
    pub key: Arc<CertifiedKey>,
}

impl Pair {
    /// A pair from PEM text holding the certificate(s) and the key, in any order.
    pub fn from_pem(path: &Path, pem: &[u8]) -> Result<Pair> {
        let bad = |message: String| Error::BadPair { path: path.to_path_buf(), message };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| bad(format!("{e:?}")))?;
        let Some(leaf) = certs.first() else {
            return Err(bad("no certificate in the file".into()));
        };
        let key = PrivateKeyDer::from_pem_slice(pem).map_err(|e| bad(format!("no usable private key: {e:?}")))?;
        let (not_before, not_after) = validity(leaf).ok_or_else(|| bad("unreadable certificate".into()))?;
        let signing = rustls::crypto::ring::default_provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| bad(e.to_string()))?;
        let key = Arc::new(CertifiedKey::new(certs, signing));
        key.keys_match().map_err(|e| bad(format!("the key does not match the certificate: {e}")))?;
        Ok(Pair { path: path.to_path_buf(), not_before, not_after, key })
    }

    /// Whether the certificate is still valid at `now` (upstream compares with NotAfter only).
    pub fn valid_at(&self, now: SystemTime) -> bool {
        now <= self.not_after
    }
}

/// NotBefore and NotAfter of a DER certificate.
pub fn validity(der: &[u8]) -> Option<(SystemTime, SystemTime)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let at = |t: i64| UNIX_EPOCH + Duration::from_secs(u64::try_from(t).unwrap_or(0));
    Some((at(cert.validity().not_before.timestamp()), at(cert.validity().not_after.timestamp())))
}

/// The pairs of one kind (`kubelet-client` or `kubelet-server`) in a directory.
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
    prefix: &'static str,
    /// Separate files tried when there is no current pair (tlsCertFile/tlsPrivateKeyFile, or a
    /// kubeconfig's client-certificate/client-key).
    fallback: Option<(PathBuf, PathBuf)>,
}

impl FileStore {
    pub fn new(dir: &Path, prefix: &'static str) -> FileStore {
        FileStore { dir: dir.to_path_buf(), prefix, fallback: None }
    }

    pub fn with_fallback(mut self, cert: PathBuf, key: PathBuf) -> FileStore {
        self.fallback = Some((cert, key));
        self
    }

    /// `<dir>/<prefix>-current.pem`, what kubeconfigs and the server point at.
    pub fn current_path(&self) -> PathBuf {
        self.dir.join(format!("{}-current.pem", self.prefix))
    }

    /// The current pair, as upstream's `Current`: the `-current.pem` link, else the configured
    /// separate files, else `<prefix>.crt`/`<prefix>.key` in the directory; `None` when there is
    /// none of them.
    pub fn current(&self) -> Result<Option<Pair>> {
        let current = self.current_path();
        match std::fs::read(&current) {
            Ok(pem) => return Pair::from_pem(&current, &pem).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(Error::Io { path: current, source }),
        }
        let crt_key = [
            self.fallback.clone(),
            Some((self.dir.join(format!("{}.crt", self.prefix)), self.dir.join(format!("{}.key", self.prefix)))),
        ];
        for (crt, key) in crt_key.into_iter().flatten() {
            let (Ok(mut pem), Ok(key_pem)) = (std::fs::read(&crt), std::fs::read(&key)) else {
                continue;
            };
            pem.push(b'\n');
            pem.extend_from_slice(&key_pem);
            return Pair::from_pem(&crt, &pem).map(Some);
        }
        Ok(None)
    }

    /// The file name of a pair issued at `at` (Go's `2006-01-02-15-04-05` layout).
    pub fn file_name(&self, at: SystemTime) -> String {
        let t: chrono::DateTime<chrono::Utc> = at.into();
        format!("{}-{}.pem", self.prefix, t.format("%Y-%m-%d-%H-%M-%S"))
    }

    /// Writes a new pair and points `-current.pem` at it (upstream's `Update`: the pair is
    /// checked before the link moves, so a bad answer never replaces a good pair).
    pub fn update(&self, cert_pem: &str, key_pem: &str, at: SystemTime) -> Result<Pair> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { path, source }
        };
        let path = self.dir.join(self.file_name(at));
        let mut text = cert_pem.trim_end().to_string();
        text.push('\n');
        text.push_str(key_pem.trim_end());
        text.push('\n');
        let pair = Pair::from_pem(&path, text.as_bytes())?;
        write_private(&self.dir, &path, text.as_bytes())?;
        // updateSymlink: a fresh link renamed over the current one (atomic for readers).
        let updated = self.dir.join(format!("{}-updated.pem", self.prefix));
        let _ = std::fs::remove_file(&updated);
        std::os::unix::fs::symlink(&path, &updated).map_err(io(&updated))?;
        let current = self.current_path();
        std::fs::rename(&updated, &current).map_err(io(&current))?;
        Ok(Pair { path: current, ..pair })
    }
}

/// Writes a file only root reads (0600, synced) in `dir`, made 0700 if missing: the
/// certificate files and the bootstrap key.
pub(super) fn write_private(dir: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io(dir))?;
    let mut f =
        std::fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(path).map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn issue(cn: &str, days: i64) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        use chrono::Datelike;
        let end = (chrono::Utc::now() + chrono::Duration::days(days)).date_naive();
        params.not_after = rcgen::date_time_ymd(end.year(), end.month() as u8, end.day() as u8);
        (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    #[test]
    fn update_writes_a_timestamped_pair_and_moves_the_link() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path(), "kubelet-client");
        assert!(store.current().unwrap().is_none());
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let (cert, key) = issue("system:node:n1", 1);
        store.update(&cert, &key, at).unwrap();
        let file = dir.path().join("kubelet-client-2023-11-14-22-13-20.pem");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_link(store.current_path()).unwrap(), file);
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.find("CERTIFICATE").unwrap() < text.find("PRIVATE KEY").unwrap());
        let (cert2, key2) = issue("system:node:n1", 2);
        let later = at + Duration::from_secs(60);
        let second = store.update(&cert2, &key2, later).unwrap();
        assert_eq!(std::fs::read_link(store.current_path()).unwrap(), dir.path().join(store.file_name(later)));
        assert!(file.exists(), "old pairs are kept, as upstream");
        assert_eq!(store.current().unwrap().unwrap().not_after, second.not_after);
        assert!(!dir.path().join("kubelet-client-updated.pem").exists());
    }

    #[test]
    fn a_mismatched_key_is_refused_and_the_link_stays() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path(), "kubelet-server");
        let (cert, key) = issue("a", 1);
        store.update(&cert, &key, UNIX_EPOCH).unwrap();
        let (other, _) = issue("b", 1);
        let err = store.update(&other, &key, UNIX_EPOCH + Duration::from_secs(5)).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
        assert_eq!(std::fs::read_link(store.current_path()).unwrap(), dir.path().join(store.file_name(UNIX_EPOCH)));
    }

    #[test]
    fn separate_crt_and_key_files_are_read_when_there_is_no_current_pair() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = issue("system:node:n1", 1);
        std::fs::write(dir.path().join("kubelet-client.crt"), cert).unwrap();
        std::fs::write(dir.path().join("kubelet-client.key"), key).unwrap();
        let pair = FileStore::new(dir.path(), "kubelet-client").current().unwrap().unwrap();
        assert!(pair.valid_at(SystemTime::now()));
        assert!(!pair.valid_at(SystemTime::now() + Duration::from_secs(3 * 86400)));
    }
}
