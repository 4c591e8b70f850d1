//! Test-only, not the product: what the graceful node shutdown tests need instead of a real
//! logind (which would power the machine off).
//!
//! - [`Bus`]: a private `dbus-daemon` with a system-bus-like configuration (type `system`, its
//!   own socket in a temporary directory, any name may be owned); the kubelet finds it through
//!   the standard `DBUS_SYSTEM_BUS_ADDRESS` variable ([`Bus::address`]).
//! - [`Login1`]: a fake logind on that bus: `org.freedesktop.login1.Manager` with `Inhibit`
//!   (hands out the write end of a pipe; the lock counts as released when every copy of it is
//!   closed, as logind's FIFO), the `InhibitDelayMaxUSec` property and the `PrepareForShutdown`
//!   signal, emitted when the test says ([`Login1::prepare_for_shutdown`]); and
//!   `org.freedesktop.systemd1.Manager.KillUnit`, which (for `systemd-logind.service`) reads
//!   the kubelet's drop-in from a directory the test chose, as logind's reload would. Every call
//!   is recorded ([`Login1::calls`]).

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zbus::object_server::SignalEmitter;

/// A private system-like bus.
pub struct Bus {
    child: Child,
    dir: tempfile::TempDir,
}

impl Bus {
    /// Starts `dbus-daemon` (Debian's `dbus-daemon` package; hack/env-dbus.sh installs it).
    pub fn start() -> std::io::Result<Self> {
        let dir = tempfile::Builder::new().prefix("login1-test-").tempdir()?;
        let socket = dir.path().join("system_bus_socket");
        let config = format!(
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"#,
            socket.display()
        );
        let conf = dir.path().join("bus.conf");
        std::fs::write(&conf, config)?;
        let log = std::fs::File::create(dir.path().join("dbus-daemon.log"))?;
        let child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf.display()))
            .arg("--nofork")
            .arg("--nopidfile")
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()?;
        let bus = Self { child, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !socket.exists() {
            if Instant::now() > deadline {
                return Err(std::io::Error::other(format!("dbus-daemon did not listen: {}", bus.log())));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(bus)
    }

    /// For `DBUS_SYSTEM_BUS_ADDRESS`.
    pub fn address(&self) -> String {
        format!("unix:path={}", self.dir.path().join("system_bus_socket").display())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dbus-daemon.log")).unwrap_or_default()
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One recorded call or event.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    Inhibit {
        what: String,
        who: String,
        why: String,
        mode: String,
    },
    /// Every copy of the descriptor from the n-th Inhibit (from 0) was closed.
    Released(usize),
    KillUnit {
        unit: String,
        who: String,
        signal: i32,
    },
    PrepareForShutdown(bool),
}

#[derive(Default)]
struct State {
    delay_usec: u64,
    conf_dir: Option<PathBuf>,
    calls: Vec<Call>,
    inhibits: usize,
}

type Shared = Arc<Mutex<State>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

struct Manager(Shared);

#[zbus::interface(name = "org.freedesktop.login1.Manager")]
impl Manager {
    async fn inhibit(
        &self,
        what: &str,
        who: &str,
        why: &str,
        mode: &str,
    ) -> zbus::fdo::Result<zbus::zvariant::OwnedFd> {
        let mut fds = [0; 2];
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(zbus::fdo::Error::Failed(std::io::Error::last_os_error().to_string()));
        }
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let n = {
            let mut s = lock(&self.0);
            s.calls.push(Call::Inhibit { what: what.into(), who: who.into(), why: why.into(), mode: mode.into() });
            s.inhibits += 1;
            s.inhibits - 1
        };
        // The read end sees end-of-file once the holder (and everyone it shared it with) closed
        // the write end; ours is closed once the reply is sent.
        let shared = self.0.clone();
        std::thread::spawn(move || {
            let mut f = std::fs::File::from(read);
            let mut buf = [0u8; 64];
            loop {
                match std::io::Read::read(&mut f, &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            lock(&shared).calls.push(Call::Released(n));
        });
        Ok(zbus::zvariant::OwnedFd::from(write))
    }

    #[zbus(property, name = "InhibitDelayMaxUSec")]
    fn inhibit_delay_max_usec(&self) -> u64 {
        lock(&self.0).delay_usec
    }

    #[zbus(signal)]
    async fn prepare_for_shutdown(emitter: &SignalEmitter<'_>, start: bool) -> zbus::Result<()>;
}

struct Systemd(Shared);

#[zbus::interface(name = "org.freedesktop.systemd1.Manager")]
impl Systemd {
    fn kill_unit(&self, name: &str, who: &str, signal: i32) {
        let mut s = lock(&self.0);
        s.calls.push(Call::KillUnit { unit: name.into(), who: who.into(), signal });
        // logind reloads its configuration on SIGHUP: the drop-ins' InhibitDelayMaxSec.
        if name == "systemd-logind.service" && signal == libc::SIGHUP {
            let secs = s.conf_dir.as_ref().and_then(|d| read_inhibit_delay_max_sec(d));
            if let Some(secs) = secs {
                s.delay_usec = secs * 1_000_000;
            }
        }
    }
}

/// The last `InhibitDelayMaxSec=` of the drop-ins in `dir`, in file-name order.
fn read_inhibit_delay_max_sec(dir: &Path) -> Option<u64> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).ok()?.flatten().map(|e| e.path()).collect();
    files.sort();
    files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|body| body.lines().map(str::to_string).collect::<Vec<_>>())
        .filter_map(|l| l.trim().strip_prefix("InhibitDelayMaxSec=").and_then(|v| v.trim().parse().ok()))
        .next_back()
}

/// The fake logind, serving until dropped.
pub struct Login1 {
    conn: zbus::Connection,
    state: Shared,
}

impl Login1 {
    /// Serves `org.freedesktop.login1` and `org.freedesktop.systemd1` on the bus at `address`,
    /// with `InhibitDelayMaxUSec` = `delay`; a KillUnit of logind reads the drop-ins in
    /// `conf_dir`.
    pub async fn serve(address: &str, delay: Duration, conf_dir: Option<PathBuf>) -> zbus::Result<Self> {
        let state: Shared =
            Arc::new(Mutex::new(State { delay_usec: delay.as_micros() as u64, conf_dir, ..Default::default() }));
        let conn = zbus::connection::Builder::address(address)?
            .serve_at("/org/freedesktop/login1", Manager(state.clone()))?
            .serve_at("/org/freedesktop/systemd1", Systemd(state.clone()))?
            .name("org.freedesktop.login1")?
            .name("org.freedesktop.systemd1")?
            .build()
            .await?;
        Ok(Self { conn, state })
    }

    /// Emits `PrepareForShutdown(start)` as logind does when a shutdown is asked for (true) or
    /// cancelled (false).
    pub async fn prepare_for_shutdown(&self, start: bool) -> zbus::Result<()> {
        lock(&self.state).calls.push(Call::PrepareForShutdown(start));
        let emitter = SignalEmitter::new(&self.conn, "/org/freedesktop/login1")?;
        Manager::prepare_for_shutdown(&emitter, start).await
    }

    pub fn calls(&self) -> Vec<Call> {
        lock(&self.state).calls.clone()
    }

    /// Inhibitor locks handed out and not released.
    pub fn held(&self) -> usize {
        let s = lock(&self.state);
        let released = s.calls.iter().filter(|c| matches!(c, Call::Released(_))).count();
        s.inhibits - released
    }

    pub fn inhibit_delay_max(&self) -> Duration {
        Duration::from_micros(lock(&self.state).delay_usec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_drop_in_value_wins() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("10-a.conf"), "[Login]\nInhibitDelayMaxSec=3\n").unwrap();
        std::fs::write(dir.path().join("99-kubelet.conf"), "# x\n[Login]\nInhibitDelayMaxSec=9\n").unwrap();
        assert_eq!(read_inhibit_delay_max_sec(dir.path()), Some(9));
    }
}
