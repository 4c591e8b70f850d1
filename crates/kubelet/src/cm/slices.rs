//! The container manager's cgroups under the systemd driver (upstream cgroupManager with
//! `useSystemd`, through libcontainer's systemd managers): create = StartTransientUnit of the
//! slice with its accounting and resource properties, then SetUnitProperties with the resources
//! (libcontainer's Apply(-1) then Set, as the kubelet's Create calls them); update =
//! SetUnitProperties; destroy = StopUnit.

use super::resources::CgroupConfig;
use super::systemd::{self, BusError};
use super::{CgroupName, ContainerManager, Error};

impl ContainerManager {
    fn bus(&self) -> Result<&dyn systemd::Systemd, Error> {
        self.systemd.as_deref().ok_or_else(|| {
            Error::Systemd(BusError::Connect { address: "-".into(), message: "no systemd connection".into() })
        })
    }

    fn resource_properties(&self, cfg: &CgroupConfig) -> Result<Vec<systemd::Property>, Error> {
        Ok(systemd::resource_properties(cfg, self.hierarchy.is_v2(), self.bus()?.version()))
    }

    pub(super) fn create_slice(&self, name: &CgroupName, cfg: &CgroupConfig) -> Result<(), Error> {
        let bus = self.bus()?;
        let unit = systemd::slice_name(name);
        let resources = self.resource_properties(cfg)?;
        let mut props = systemd::unit_properties(name, self.hierarchy.is_v2());
        props.extend(resources.iter().cloned());
        tracing::debug!(%unit, "systemd: start transient slice");
        bus.start_transient_unit(&unit, &props)?;
        if !resources.is_empty() {
            bus.set_unit_properties(&unit, &resources)?;
        }
        Ok(())
    }

    pub(super) fn update_slice(&self, name: &CgroupName, cfg: &CgroupConfig) -> Result<(), Error> {
        let resources = self.resource_properties(cfg)?;
        if resources.is_empty() {
            return Ok(());
        }
        let unit = systemd::slice_name(name);
        tracing::debug!(%unit, "systemd: set slice properties");
        Ok(self.bus()?.set_unit_properties(&unit, &resources)?)
    }

    pub(super) fn stop_slice(&self, name: &CgroupName) -> Result<(), Error> {
        let unit = systemd::slice_name(name);
        match self.bus()?.stop_unit(&unit) {
            Ok(()) | Err(BusError::NoSuchUnit(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
