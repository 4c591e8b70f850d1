//! systemd's D-Bus API over `zbus` (pure Rust, tokio; no libdbus to link): the [`Systemd`]
//! calls of the container manager, on the system bus (`DBUS_SYSTEM_BUS_ADDRESS` or
//! `/run/dbus/system_bus_socket`) or the bus socket it is given. go-systemd (libcontainer) falls
//! back to systemd's private socket `/run/systemd/private` when there is no system bus; we do
//! not: systemd marks its messages there with the sender `org.freedesktop.systemd1`, which zbus
//! refuses (it requires a unique name on every message and panics on it, seen with systemd 252).
//! The connection lives on its own thread with its own small runtime, so the synchronous
//! container manager can call it from anywhere (a tokio worker, a test, a plain thread).

use super::systemd::{BusError, Property, Systemd, Value};
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use zbus::Connection;
use zbus::zvariant::{OwnedObjectPath, OwnedValue};

const DEST: &str = "org.freedesktop.systemd1";
const PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
/// How long a job may take (libcontainer waits 30 s for StartTransientUnit's job).
const JOB_TIMEOUT: Duration = Duration::from_secs(30);

enum Request {
    Start(String, Vec<Property>, std_mpsc::Sender<Result<(), BusError>>),
    Set(String, Vec<Property>, std_mpsc::Sender<Result<(), BusError>>),
    Stop(String, std_mpsc::Sender<Result<(), BusError>>),
}

/// A connection to systemd, served by its own thread.
#[derive(Debug)]
pub struct Bus {
    tx: mpsc::UnboundedSender<Request>,
    version: u32,
    address: String,
}

impl Bus {
    /// Connects to systemd: on the bus at `socket` when given, else the system bus. Reads
    /// Manager.Version.
    pub fn connect(socket: Option<&Path>) -> Result<Bus, BusError> {
        let socket = socket.map(Path::to_path_buf);
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std_mpsc::channel();
        std::thread::Builder::new()
            .name("systemd-bus".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx
                            .send(Err(BusError::Connect { address: "-".into(), message: format!("runtime: {e}") }));
                        return;
                    }
                };
                rt.block_on(serve(socket, rx, ready_tx));
            })
            .map_err(|e| BusError::Connect { address: "-".into(), message: format!("thread: {e}") })?;
        let (version, address) = ready_rx
            .recv()
            .map_err(|_| BusError::Connect { address: "-".into(), message: "bus thread ended".into() })??;
        tracing::info!(%address, systemd_version = version, "connected to systemd");
        Ok(Bus { tx, version, address })
    }

    fn ask(&self, make: impl FnOnce(std_mpsc::Sender<Result<(), BusError>>) -> Request) -> Result<(), BusError> {
        let (reply, answer) = std_mpsc::channel();
        let gone = || BusError::Connect { address: self.address.clone(), message: "bus thread ended".into() };
        self.tx.send(make(reply)).map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())?
    }
}

impl Systemd for Bus {
    fn version(&self) -> u32 {
        self.version
    }

    fn start_transient_unit(&self, unit: &str, properties: &[Property]) -> Result<(), BusError> {
        self.ask(|r| Request::Start(unit.into(), properties.to_vec(), r))
    }

    fn set_unit_properties(&self, unit: &str, properties: &[Property]) -> Result<(), BusError> {
        self.ask(|r| Request::Set(unit.into(), properties.to_vec(), r))
    }

    fn stop_unit(&self, unit: &str) -> Result<(), BusError> {
        self.ask(|r| Request::Stop(unit.into(), r))
    }
}

fn address_of(path: &Path) -> String {
    format!("unix:path={}", path.display())
}

async fn connect(socket: Option<PathBuf>) -> Result<(Connection, String), BusError> {
    let address = socket.as_deref().map(address_of).unwrap_or_else(|| "system bus".into());
    let fail = |e: zbus::Error| BusError::Connect { address: address.clone(), message: e.to_string() };
    let conn = match &socket {
        Some(_) => zbus::connection::Builder::address(address.as_str()).map_err(fail)?.build().await,
        None => Connection::system().await,
    };
    Ok((conn.map_err(fail)?, address))
}

async fn serve(
    socket: Option<PathBuf>,
    mut rx: mpsc::UnboundedReceiver<Request>,
    ready: std_mpsc::Sender<Result<(u32, String), BusError>>,
) {
    let (conn, address) = match connect(socket).await {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let version = match manager_property(&conn, "Version").await {
        Ok(v) => parse_version(&String::try_from(v).unwrap_or_default()),
        Err(e) => {
            let _ = ready.send(Err(BusError::Connect { address, message: e.to_string() }));
            return;
        }
    };
    if ready.send(Ok((version, address))).is_err() {
        return;
    }
    while let Some(req) = rx.recv().await {
        match req {
            Request::Start(unit, props, reply) => {
                let _ = reply.send(start(&conn, &unit, &props).await);
            }
            Request::Set(unit, props, reply) => {
                let _ = reply.send(set(&conn, &unit, &props).await);
            }
            Request::Stop(unit, reply) => {
                let _ = reply.send(stop(&conn, &unit).await);
            }
        }
    }
}

/// `252.38-1~deb12u1` → 252.
fn parse_version(v: &str) -> u32 {
    v.chars().take_while(char::is_ascii_digit).collect::<String>().parse().unwrap_or(0)
}

fn to_value(v: &Value) -> zbus::zvariant::Value<'static> {
    use zbus::zvariant::Value as V;
    match v {
        Value::U64(n) => V::from(*n),
        Value::Bool(b) => V::from(*b),
        Value::Str(s) => V::from(s.clone()),
        Value::Strs(list) => V::from(list.clone()),
    }
}

fn body(props: &[Property]) -> Vec<(&'static str, zbus::zvariant::Value<'static>)> {
    props.iter().map(|p| (p.name, to_value(&p.value))).collect()
}

fn call_error(method: &'static str, unit: &str, e: zbus::Error) -> BusError {
    if let zbus::Error::MethodError(name, _, _) = &e {
        match name.as_str() {
            "org.freedesktop.systemd1.UnitExists" => return BusError::UnitExists(unit.into()),
            "org.freedesktop.systemd1.NoSuchUnit" => return BusError::NoSuchUnit(unit.into()),
            _ => {}
        }
    }
    BusError::Call { method, unit: unit.into(), message: e.to_string() }
}

async fn manager_property(conn: &Connection, name: &str) -> zbus::Result<OwnedValue> {
    let reply =
        conn.call_method(Some(DEST), PATH, Some("org.freedesktop.DBus.Properties"), "Get", &(MANAGER, name)).await?;
    reply.body().deserialize::<OwnedValue>()
}

/// The unit's ActiveState, or None when systemd has no such unit loaded.
async fn active_state(conn: &Connection, unit: &str) -> Result<Option<String>, BusError> {
    let reply = match conn.call_method(Some(DEST), PATH, Some(MANAGER), "GetUnit", &(unit,)).await {
        Ok(r) => r,
        Err(e) => {
            return match call_error("GetUnit", unit, e) {
                BusError::NoSuchUnit(_) => Ok(None),
                other => Err(other),
            };
        }
    };
    let path: OwnedObjectPath = reply.body().deserialize().map_err(|e| call_error("GetUnit", unit, e))?;
    let state = conn
        .call_method(
            Some(DEST),
            path.as_str(),
            Some("org.freedesktop.DBus.Properties"),
            "Get",
            &("org.freedesktop.systemd1.Unit", "ActiveState"),
        )
        .await
        .map_err(|e| call_error("Get", unit, e))?;
    let value: OwnedValue = state.body().deserialize().map_err(|e| call_error("Get", unit, e))?;
    Ok(Some(String::try_from(value).unwrap_or_default()))
}

/// libcontainer's `startUnit`: an existing unit is fine; otherwise wait for its job, and reset
/// a unit that failed to start.
async fn start(conn: &Connection, unit: &str, props: &[Property]) -> Result<(), BusError> {
    let aux: Vec<(&str, Vec<(&str, zbus::zvariant::Value<'_>)>)> = Vec::new();
    let res = conn
        .call_method(Some(DEST), PATH, Some(MANAGER), "StartTransientUnit", &(unit, "replace", body(props), aux))
        .await;
    if let Err(e) = res {
        return match call_error("StartTransientUnit", unit, e) {
            BusError::UnitExists(_) => Ok(()),
            other => Err(other),
        };
    }
    let deadline = Instant::now() + JOB_TIMEOUT;
    loop {
        match active_state(conn, unit).await?.as_deref() {
            Some("active") => return Ok(()),
            Some(s @ ("failed" | "inactive")) => {
                let state = s.to_string();
                let _ = conn.call_method(Some(DEST), PATH, Some(MANAGER), "ResetFailedUnit", &(unit,)).await;
                return Err(BusError::Failed { unit: unit.into(), state });
            }
            _ if Instant::now() > deadline => {
                let _ = conn.call_method(Some(DEST), PATH, Some(MANAGER), "ResetFailedUnit", &(unit,)).await;
                return Err(BusError::Timeout { what: "create", unit: unit.into() });
            }
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn set(conn: &Connection, unit: &str, props: &[Property]) -> Result<(), BusError> {
    conn.call_method(Some(DEST), PATH, Some(MANAGER), "SetUnitProperties", &(unit, true, body(props)))
        .await
        .map(|_| ())
        .map_err(|e| call_error("SetUnitProperties", unit, e))
}

/// libcontainer's `stopUnit`: a unit systemd does not know is already stopped.
async fn stop(conn: &Connection, unit: &str) -> Result<(), BusError> {
    if let Err(e) = conn.call_method(Some(DEST), PATH, Some(MANAGER), "StopUnit", &(unit, "replace")).await {
        return match call_error("StopUnit", unit, e) {
            BusError::NoSuchUnit(_) => Ok(()),
            other => Err(other),
        };
    }
    let deadline = Instant::now() + JOB_TIMEOUT;
    loop {
        match active_state(conn, unit).await?.as_deref() {
            None | Some("inactive" | "failed") => return Ok(()),
            _ if Instant::now() > deadline => return Err(BusError::Timeout { what: "stop", unit: unit.into() }),
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_is_the_leading_number() {
        assert_eq!(parse_version("252.38-1~deb12u1"), 252);
        assert_eq!(parse_version("257"), 257);
        assert_eq!(parse_version("v"), 0);
    }
}
