//! IPMI client: drives a node's BMC with `ipmitool` (IPMI 2.0 lanplus by default, 1.5 lan on
//! request) for power and boot device, the out-of-band half of the `ipmi` hardware type.
//!
//! - [`Ipmitool`] is made once per process from `[ipmi]` ([`IpmiSettings`]) and shared by
//!   every node (it is a cheap `Clone`): it owns the per-BMC registry that lets one command
//!   at a time reach a BMC, with `min_command_interval_ms` between them, and the metrics.
//! - [`IpmiClient`] is one node's BMC ([`DriverInfo`], parsed from driver_info with Ironic's
//!   keys). Its calls are power ([`IpmiClient::power_status`], [`IpmiClient::set_power_state`],
//!   ...) and boot device ([`IpmiClient::set_boot_device`], [`IpmiClient::get_boot_device`]).
//! - [`IpmitoolPower`] and [`IpmitoolManagement`] are the `ipmitool` power and management
//!   interfaces of the `ipmi` hardware type, on top of the client.
//!
//! Guarantees: the password is only ever in ipmitool's environment (never its command line,
//! an error or a log line); every ipmitool run is killed after `command_timeout_secs`;
//! transient failures (no answer, busy BMC) are retried within `command_retry_timeout_secs`,
//! refusals and authentication failures never are; every power action returns only once the
//! BMC reports the state it leads to, or fails after its timeout; a boot device is read back
//! before it is reported set. Errors ([`IpmiError`]) say which kind of failure it was and
//! name the BMC (`address:port`), the command and what ipmitool printed.

mod bootdev;
mod classify;
mod driver_info;
mod error;
mod interface;
mod metrics;
mod power;
mod registry;
mod settings;
mod tool;

use std::sync::Arc;

pub use self::bootdev::{BootDevice, BootDeviceRequest, BootFlags, BootSelector};
pub use self::driver_info::{DriverInfo, PASSWORD_MASK, Password, PrivLevel, Protocol};
pub use self::error::IpmiError;
pub use self::interface::{IpmitoolManagement, IpmitoolPower};
pub use self::metrics::IpmiMetrics;
pub use self::power::{PowerStatus, SoftOff};
pub use self::settings::{BootFlagsCheck, IpmiSettings};

use self::registry::BmcRegistry;
use crate::model::Fields;

/// The ipmitool runner shared by every node of the process.
#[derive(Debug, Clone)]
pub struct Ipmitool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: IpmiSettings,
    registry: BmcRegistry,
    metrics: Option<IpmiMetrics>,
}

impl Ipmitool {
    /// Checks `settings` (the error names the key, the value and the reason).
    pub fn new(settings: IpmiSettings, metrics: Option<IpmiMetrics>) -> Result<Self, IpmiError> {
        settings.validate()?;
        Ok(Self {
            inner: Arc::new(Inner {
                settings,
                registry: BmcRegistry::default(),
                metrics,
            }),
        })
    }

    pub fn settings(&self) -> &IpmiSettings {
        &self.inner.settings
    }

    /// A client for one node's BMC.
    pub fn client(&self, info: DriverInfo) -> IpmiClient {
        IpmiClient {
            tool: self.clone(),
            info,
        }
    }

    /// Parses a node's driver_info ([`DriverInfo::from_fields`]) into a client.
    pub fn client_for(&self, driver_info: &Fields) -> Result<IpmiClient, IpmiError> {
        DriverInfo::from_fields(driver_info).map(|info| self.client(info))
    }

    /// Where the configured ipmitool is: the path itself, or the first match on PATH for a
    /// bare name. `None` when it is not there (every IPMI call would fail to start it).
    pub fn find_program(&self) -> Option<std::path::PathBuf> {
        let program = &self.inner.settings.ipmitool;
        if program.components().count() > 1 {
            return program.is_file().then(|| program.clone());
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    }

    fn registry(&self) -> &BmcRegistry {
        &self.inner.registry
    }

    fn metrics(&self) -> Option<&IpmiMetrics> {
        self.inner.metrics.as_ref()
    }
}

/// One node's BMC. Cheap to make per call; everything shared lives in its [`Ipmitool`].
#[derive(Debug, Clone)]
pub struct IpmiClient {
    tool: Ipmitool,
    info: DriverInfo,
}

impl IpmiClient {
    pub fn driver_info(&self) -> &DriverInfo {
        &self.info
    }

    /// `address:port` of the BMC.
    pub fn bmc(&self) -> String {
        self.info.bmc()
    }
}

#[cfg(test)]
mod tests;
