//! Which cgroup driver the node uses. Upstream (cmd/kubelet/app/server.go
//! `getCgroupDriverFromCRI`, KubeletCgroupDriverFromCRI, on by default since 1.31) asks the runtime
//! first: CRI RuntimeConfig's `linux.cgroup_driver` replaces `cgroupDriver` from the
//! configuration (no mismatch error: the runtime wins, logged). A runtime without the call
//! (Unimplemented, e.g. containerd 1.6) leaves the configured driver; a runtime with no linux
//! config too. Other errors are retried (3 tries, 2 s apart) and then stop the kubelet.

use crate::cri::{CriError, Runtime, api};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Cgroupfs,
    Systemd,
}

impl Driver {
    /// The KubeletConfiguration spelling (`validate()` allows only these two).
    pub fn parse(s: &str) -> Driver {
        if s == "systemd" { Driver::Systemd } else { Driver::Cgroupfs }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Driver::Cgroupfs => "cgroupfs",
            Driver::Systemd => "systemd",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("runtime returned an unknown cgroup driver {0}")]
    Unknown(i32),
    #[error("cannot get the runtime's configuration: {0}")]
    Runtime(#[source] CriError),
}

/// How many times RuntimeConfig is asked, and the pause between tries.
const TRIES: usize = 3;
const PAUSE: Duration = Duration::from_secs(2);

/// What one RuntimeConfig answer means for the driver: `Ok(None)` keeps the configured one.
pub fn from_answer(answer: &Option<api::LinuxRuntimeConfiguration>) -> Result<Option<Driver>, Error> {
    let Some(linux) = answer else { return Ok(None) };
    match api::CgroupDriver::try_from(linux.cgroup_driver) {
        Ok(api::CgroupDriver::Systemd) => Ok(Some(Driver::Systemd)),
        Ok(api::CgroupDriver::Cgroupfs) => Ok(Some(Driver::Cgroupfs)),
        Err(_) => Err(Error::Unknown(linux.cgroup_driver)),
    }
}

/// The driver to use: the runtime's when it reports one, else `configured`.
pub async fn resolve(runtime: &dyn Runtime, configured: Driver) -> Result<Driver, Error> {
    let mut last = None;
    for attempt in 0..TRIES {
        match runtime.runtime_config().await {
            Ok(linux) => {
                let Some(driver) = from_answer(&linux)? else { return Ok(configured) };
                if driver != configured {
                    tracing::warn!(
                        configured = configured.as_str(),
                        runtime = driver.as_str(),
                        "cgroupDriver differs from the runtime's; using the runtime's"
                    );
                }
                tracing::info!(
                    cgroup_driver = driver.as_str(),
                    "using cgroup driver setting received from the CRI runtime"
                );
                return Ok(driver);
            }
            Err(e) if e.code == tonic::Code::Unimplemented => {
                tracing::info!(
                    cgroup_driver = configured.as_str(),
                    "the CRI runtime does not implement RuntimeConfig; using cgroupDriver from the kubelet configuration"
                );
                return Ok(configured);
            }
            Err(e) => {
                last = Some(e);
                if attempt + 1 < TRIES {
                    tokio::time::sleep(PAUSE).await;
                }
            }
        }
    }
    Err(Error::Runtime(last.unwrap_or_else(|| CriError::new("RuntimeConfig", tonic::Code::Unknown, "no answer"))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cri::fake::FakeRuntime;

    fn linux(d: api::CgroupDriver) -> Option<api::LinuxRuntimeConfiguration> {
        Some(api::LinuxRuntimeConfiguration { cgroup_driver: d as i32 })
    }

    #[test]
    fn the_runtimes_driver_wins_and_no_linux_config_keeps_the_configured_one() {
        assert_eq!(from_answer(&linux(api::CgroupDriver::Systemd)).unwrap(), Some(Driver::Systemd));
        assert_eq!(from_answer(&linux(api::CgroupDriver::Cgroupfs)).unwrap(), Some(Driver::Cgroupfs));
        assert_eq!(from_answer(&None).unwrap(), None);
        let bad = Some(api::LinuxRuntimeConfiguration { cgroup_driver: 7 });
        assert_eq!(from_answer(&bad).unwrap_err().to_string(), "runtime returned an unknown cgroup driver 7");
    }

    #[tokio::test(start_paused = true)]
    async fn a_runtime_without_runtime_config_keeps_the_configuration() {
        let rt = FakeRuntime::new();
        assert_eq!(resolve(&rt, Driver::Systemd).await.unwrap(), Driver::Systemd);
        rt.set_cgroup_driver(Some(api::CgroupDriver::Cgroupfs));
        assert_eq!(resolve(&rt, Driver::Systemd).await.unwrap(), Driver::Cgroupfs);
        rt.set_runtime_config_error(Some(tonic::Code::Unavailable));
        let err = resolve(&rt, Driver::Systemd).await.unwrap_err();
        assert!(err.to_string().starts_with("cannot get the runtime's configuration"), "{err}");
        assert_eq!(rt.calls().iter().filter(|c| c.starts_with("RuntimeConfig")).count(), 2 + 3);
    }
}
