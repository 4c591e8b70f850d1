//! The 10250 server's certificate with serverTLSBootstrap: each handshake gets the serving
//! manager's current pair. Until one is issued there is none and handshakes fail, as upstream's
//! `GetCertificate` answers "no serving certificate available for the kubelet".

use super::rotation::Current;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::sync::Arc;

#[derive(Debug)]
pub struct Resolver(Current);

impl Resolver {
    pub fn new(current: Current) -> Resolver {
        Resolver(current)
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let key = self.0.borrow().as_ref().map(|p| p.key.clone());
        if key.is_none() {
            tracing::warn!("no serving certificate available for the kubelet yet");
        }
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certificate::rotation::channel;
    use crate::certificate::store::{FileStore, tests::issue};

    #[test]
    fn resolver_follows_the_published_pair() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path(), "kubelet-server");
        let (cert, key) = issue("system:node:n1", 1);
        let pair = store.update(&cert, &key, std::time::SystemTime::now()).unwrap();
        let (publish, current) = channel(None);
        let r = Resolver::new(current);
        assert!(r.0.borrow().is_none());
        let expected = pair.key.clone();
        publish.send_replace(Some(Arc::new(pair)));
        let got = r.0.borrow().as_ref().map(|p| p.key.clone()).unwrap();
        assert!(Arc::ptr_eq(&got, &expected));
    }
}
