//! logind over the system D-Bus (upstream's nodeshutdown/systemd/inhibit_linux.go): the delay
//! inhibitor lock, the `InhibitDelayMaxUSec` property, logind's configuration drop-in and its
//! reload, and the `PrepareForShutdown` signal. Behind the [`Logind`] trait so the manager is
//! tested on a fake; [`SystemBus`] is the real one (zbus; the bus address from
//! `DBUS_SYSTEM_BUS_ADDRESS`, else the standard system socket).

use futures::StreamExt;
use futures::stream::BoxStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to connect to the system bus: {0}")]
    Connect(#[source] zbus::Error),
    #[error("failed reading InhibitDelayMaxUSec property from logind: {0}")]
    InhibitDelay(#[source] zbus::Error),
    #[error("failed creating systemd inhibitor: {0}")]
    Inhibit(#[source] zbus::Error),
    #[error("unable to reload logind conf: {0}")]
    Reload(#[source] zbus::Error),
    #[error("failed to monitor shutdown: {0}")]
    Monitor(#[source] zbus::Error),
    #[error("failed writing logind shutdown inhibit override file {path}: {source}")]
    Override { path: PathBuf, source: std::io::Error },
    /// Test fakes.
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A held delay inhibitor lock: logind waits (up to InhibitDelayMaxSec) until it is dropped,
/// which closes the descriptor logind handed out.
pub struct InhibitLock(#[allow(dead_code)] Box<dyn Send + Sync>);

impl InhibitLock {
    pub fn new(held: impl Send + Sync + 'static) -> Self {
        Self(Box::new(held))
    }
}

impl std::fmt::Debug for InhibitLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InhibitLock")
    }
}

/// The logind calls the manager makes (upstream's dbusInhibiter, minus the file write, which is
/// [`override_inhibit_delay`]).
#[async_trait::async_trait]
pub trait Logind: Send + Sync {
    /// logind's `InhibitDelayMaxUSec`.
    async fn inhibit_delay_max(&self) -> Result<Duration>;
    /// `Inhibit("shutdown", "kubelet", …, "delay")`.
    async fn inhibit_shutdown(&self) -> Result<InhibitLock>;
    /// Makes logind read its configuration again (SIGHUP through systemd's KillUnit).
    async fn reload_logind_conf(&self) -> Result<()>;
    /// `PrepareForShutdown(start)` signals; ends when the connection does.
    async fn monitor_shutdown(&self) -> Result<BoxStream<'static, bool>>;
}

/// Makes a new connection (the manager reconnects after losing one).
#[async_trait::async_trait]
pub trait Connect: Send + Sync {
    async fn connect(&self) -> Result<Box<dyn Logind>>;
}

/// logind's drop-in directory and the kubelet's file in it (upstream's names).
pub const LOGIND_CONF_DIR: &str = "/etc/systemd/logind.conf.d";
const KUBELET_LOGIND_CONF: &str = "99-kubelet.conf";

/// Writes the drop-in raising logind's InhibitDelayMaxSec to `delay` (whole seconds, rounded as
/// upstream's `%.0f`), as upstream's OverrideInhibitDelay.
pub fn override_inhibit_delay(dir: &Path, delay: Duration) -> Result<()> {
    let path = dir.join(KUBELET_LOGIND_CONF);
    let io = |source| Error::Override { path: path.clone(), source };
    std::fs::create_dir_all(dir).map_err(io)?;
    let body = format!(
        "# Written by the kubelet for graceful node shutdown\n[Login]\nInhibitDelayMaxSec={}\n",
        delay.as_secs_f64().round() as u64
    );
    std::fs::write(&path, body).map_err(io)
}

#[zbus::proxy(
    interface = "org.freedesktop.login1.Manager",
    default_service = "org.freedesktop.login1",
    default_path = "/org/freedesktop/login1"
)]
trait Login1Manager {
    fn inhibit(&self, what: &str, who: &str, why: &str, mode: &str) -> zbus::Result<zbus::zvariant::OwnedFd>;

    #[zbus(property, name = "InhibitDelayMaxUSec")]
    fn inhibit_delay_max_usec(&self) -> zbus::Result<u64>;

    #[zbus(signal)]
    fn prepare_for_shutdown(&self, start: bool) -> zbus::Result<()>;
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
trait Systemd1Manager {
    fn kill_unit(&self, name: &str, who: &str, signal: i32) -> zbus::Result<()>;
}

/// The real logind, on the system bus.
pub struct SystemBus;

#[async_trait::async_trait]
impl Connect for SystemBus {
    async fn connect(&self) -> Result<Box<dyn Logind>> {
        let conn = zbus::Connection::system().await.map_err(Error::Connect)?;
        Ok(Box::new(Bus { conn }))
    }
}

struct Bus {
    conn: zbus::Connection,
}

impl Bus {
    async fn login1(&self) -> zbus::Result<Login1ManagerProxy<'static>> {
        // Read the property at each call: logind changes it on reload.
        Login1ManagerProxy::builder(&self.conn).cache_properties(zbus::proxy::CacheProperties::No).build().await
    }
}

#[async_trait::async_trait]
impl Logind for Bus {
    async fn inhibit_delay_max(&self) -> Result<Duration> {
        let usec = self.login1().await.map_err(Error::InhibitDelay)?.inhibit_delay_max_usec().await;
        Ok(Duration::from_micros(usec.map_err(Error::InhibitDelay)?))
    }

    async fn inhibit_shutdown(&self) -> Result<InhibitLock> {
        let proxy = self.login1().await.map_err(Error::Inhibit)?;
        let fd = proxy
            .inhibit("shutdown", "kubelet", "Kubelet needs time to handle node shutdown", "delay")
            .await
            .map_err(Error::Inhibit)?;
        Ok(InhibitLock::new(std::os::fd::OwnedFd::from(fd)))
    }

    async fn reload_logind_conf(&self) -> Result<()> {
        let proxy = Systemd1ManagerProxy::new(&self.conn).await.map_err(Error::Reload)?;
        proxy.kill_unit("systemd-logind.service", "all", libc::SIGHUP).await.map_err(Error::Reload)
    }

    async fn monitor_shutdown(&self) -> Result<BoxStream<'static, bool>> {
        let proxy = self.login1().await.map_err(Error::Monitor)?;
        let signals = proxy.receive_prepare_for_shutdown().await.map_err(Error::Monitor)?;
        // The proxy lives as long as the stream.
        let stream = signals.filter_map(move |s| {
            let _keep = &proxy;
            let start = match s.args() {
                Ok(a) => Some(a.start),
                Err(e) => {
                    tracing::error!(error = %e, "failed obtaining shutdown event: PrepareForShutdown was not a bool");
                    None
                }
            };
            async move { start }
        });
        Ok(stream.boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drop_in_sets_inhibit_delay_max_sec_in_whole_seconds() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("logind.conf.d");
        override_inhibit_delay(&conf, Duration::from_millis(7400)).unwrap();
        let body = std::fs::read_to_string(conf.join("99-kubelet.conf")).unwrap();
        assert!(body.contains("[Login]\nInhibitDelayMaxSec=7\n"), "{body}");
    }
}
