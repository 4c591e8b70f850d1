//! The certificate manager (client-go util/certificate/certificate_manager.go): keeps one
//! identity's current pair, and at a jittered 70–90 % of its life asks for a new one with a fresh
//! key, stores it and publishes it to the readers (the API client's and the server's TLS).

use super::csr::{self, CsrClient, Kind};
use super::store::{FileStore, Pair};
use crate::clock::DynClock;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How long one request may wait for its certificate (certificate_manager.go's
/// certificateWaitTimeout).
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// nextRotationDeadline: `notBefore + d × (0.7 + 0.2 × jitter)` with `d` the certificate's whole
/// life and `jitter` in [0, 1) (upstream: wait.Jitter(d, 0.2) − 0.3 d).
pub fn next_rotation_deadline(not_before: SystemTime, not_after: SystemTime, jitter: f64) -> SystemTime {
    let life = not_after.duration_since(not_before).unwrap_or_default();
    not_before + life.mul_f64(0.7 + 0.2 * jitter.clamp(0.0, 1.0))
}

/// A uniform number in [0, 1).
pub fn random_jitter() -> f64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 4];
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        return 0.5;
    }
    f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0)
}

/// The newest pair of one identity; `None` until the first is issued.
pub type Current = watch::Receiver<Option<Arc<Pair>>>;

/// Which client asks for a new certificate: the node's own identity while its certificate is
/// valid, else the bootstrap credentials (kubelet server.go's newClientsetFn: an expired client
/// certificate falls back to `--bootstrap-kubeconfig`).
pub struct Clients {
    pub current: Arc<dyn CsrClient>,
    pub bootstrap: Option<Arc<dyn CsrClient>>,
}

pub struct Manager {
    pub kind: Kind,
    pub node_name: String,
    /// Serving SANs (host names and addresses); empty for the client identity.
    pub sans: Vec<String>,
    pub store: FileStore,
    pub clients: Clients,
    pub clock: DynClock,
    publish: watch::Sender<Option<Arc<Pair>>>,
}

/// The channel a manager publishes on, starting from `initial` (the store's current pair).
pub fn channel(initial: Option<Pair>) -> (watch::Sender<Option<Arc<Pair>>>, Current) {
    watch::channel(initial.map(Arc::new))
}

impl Manager {
    /// A manager publishing on `publish` (from [`channel`]).
    pub fn new(
        kind: Kind,
        node_name: &str,
        sans: Vec<String>,
        store: FileStore,
        clients: Clients,
        clock: DynClock,
        publish: watch::Sender<Option<Arc<Pair>>>,
    ) -> Manager {
        Manager { kind, node_name: node_name.into(), sans, store, clients, clock, publish }
    }

    /// When to ask for the next certificate: now without a pair, else the jittered deadline.
    fn deadline(&self, jitter: f64) -> SystemTime {
        match self.publish.borrow().as_ref() {
            Some(p) => next_rotation_deadline(p.not_before, p.not_after, jitter),
            None => self.clock.now(),
        }
    }

    /// One rotation: a new key and request, the answer stored and published.
    pub async fn rotate(&self) -> super::Result<Arc<Pair>> {
        let now = self.clock.now();
        let valid = self.publish.borrow().as_ref().is_some_and(|p| p.valid_at(now));
        let client = match (&self.clients.bootstrap, valid) {
            (Some(b), false) => {
                tracing::info!(kind = ?self.kind, "current certificate is missing or expired: requesting one with the bootstrap credentials");
                b.clone()
            }
            _ => self.clients.current.clone(),
        };
        let prepared = csr::prepare(self.kind, &self.node_name, &self.sans, None)?;
        let cert = client.request_certificate(&prepared, WAIT_TIMEOUT).await?;
        let pair = Arc::new(self.store.update(&cert, &prepared.key_pem, self.clock.now())?);
        tracing::info!(kind = ?self.kind, path = %pair.path.display(), "certificate rotated");
        self.publish.send_replace(Some(pair.clone()));
        Ok(pair)
    }

    /// Rotates at each deadline until `token` is cancelled; failures are retried 2 s doubling to
    /// 128 s (upstream's rotation backoff).
    pub async fn run(self, token: CancellationToken) {
        let mut retry = Duration::from_secs(2);
        loop {
            let deadline = self.deadline(random_jitter());
            let wait = deadline.duration_since(self.clock.now()).unwrap_or_default();
            if !wait.is_zero() {
                tracing::info!(kind = ?self.kind, wait = ?wait, "waiting for the next certificate rotation");
            }
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            let outcome = tokio::select! {
                _ = token.cancelled() => return,
                r = self.rotate() => r,
            };
            match outcome {
                Ok(_) => retry = Duration::from_secs(2),
                Err(e) => {
                    tracing::warn!(kind = ?self.kind, error = %e, retry = ?retry, "certificate rotation failed");
                    tokio::select! {
                        _ = token.cancelled() => return,
                        _ = tokio::time::sleep(retry) => {}
                    }
                    retry = (retry * 2).min(Duration::from_secs(128));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, FakeClock};
    use std::sync::Mutex;
    use std::time::UNIX_EPOCH;

    #[test]
    fn deadline_is_between_70_and_90_percent_of_the_life() {
        let start = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let end = start + Duration::from_secs(1000);
        assert_eq!(next_rotation_deadline(start, end, 0.0), start + Duration::from_secs(700));
        assert_eq!(next_rotation_deadline(start, end, 0.5), start + Duration::from_secs(800));
        let late = next_rotation_deadline(start, end, 0.999_999);
        assert!(late < start + Duration::from_secs(900) && late > start + Duration::from_millis(899_000));
        // A certificate that ends before it starts rotates at once.
        assert_eq!(next_rotation_deadline(end, start, 0.3), end);
        for _ in 0..100 {
            let j = random_jitter();
            assert!((0.0..1.0).contains(&j));
        }
    }

    /// Signs every request with a test CA, recording who asked.
    struct Signer {
        who: &'static str,
        calls: Arc<Mutex<Vec<&'static str>>>,
        life: Duration,
    }

    #[async_trait::async_trait]
    impl CsrClient for Signer {
        async fn request_certificate(&self, p: &csr::Prepared, _wait: Duration) -> super::super::Result<String> {
            self.calls.lock().unwrap().push(self.who);
            let req = rcgen::CertificateSigningRequestParams::from_pem(&p.csr_pem).unwrap();
            let ca_key = rcgen::KeyPair::generate().unwrap();
            let ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap().self_signed(&ca_key).unwrap();
            let mut req = req;
            let now = time_of(SystemTime::now());
            req.params.not_before = now;
            req.params.not_after = time_of(SystemTime::now() + self.life);
            Ok(req.signed_by(&ca, &ca_key).unwrap().pem())
        }
    }

    fn time_of(t: SystemTime) -> time::OffsetDateTime {
        let secs = t.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        time::OffsetDateTime::from_unix_timestamp(secs).unwrap()
    }

    #[tokio::test]
    async fn rotation_stores_and_publishes_and_falls_back_to_bootstrap_when_expired() {
        let dir = tempfile::tempdir().unwrap();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let clients = Clients {
            current: Arc::new(Signer { who: "node", calls: calls.clone(), life: Duration::from_secs(3600) }),
            bootstrap: Some(Arc::new(Signer {
                who: "bootstrap",
                calls: calls.clone(),
                life: Duration::from_secs(3600),
            })),
        };
        let clock = FakeClock::new(SystemTime::now());
        let store = FileStore::new(dir.path(), "kubelet-client");
        let (publish, mut current) = channel(None);
        let m = Manager::new(Kind::Client, "n1", vec![], store.clone(), clients, Arc::new(clock.clone()), publish);
        // No pair: the deadline is now and the bootstrap identity asks.
        assert_eq!(m.deadline(0.5), clock.now());
        let first = m.rotate().await.unwrap();
        assert!(current.has_changed().unwrap());
        assert_eq!(current.borrow_and_update().as_ref().unwrap().not_after, first.not_after);
        assert_eq!(std::fs::read_link(store.current_path()).unwrap().parent().unwrap(), dir.path());
        // Valid: the node's own identity asks.
        clock.advance(Duration::from_secs(1));
        m.rotate().await.unwrap();
        // Expired: back to the bootstrap credentials.
        clock.advance(Duration::from_secs(7200));
        m.rotate().await.unwrap();
        assert_eq!(*calls.lock().unwrap(), ["bootstrap", "node", "bootstrap"]);
    }
}
