//! The `ipmitool` power and management interfaces of the `ipmi` hardware type: what the
//! conductor asks of a node ([`crate::driver`]), carried out by the IPMI client of this module's
//! parent. Both share the process's one [`Ipmitool`] (per-BMC serialisation, metrics) and read
//! the node's driver_info on every call, so an edited driver_info takes effect at once.
//!
//! Errors keep the client's [`super::IpmiError`] as their cause; its text names the BMC
//! (`address:port`), the command and what ipmitool said, never the password.

mod force_boot;
mod management;
mod power;

pub use management::IpmitoolManagement;
pub use power::IpmitoolPower;

use super::{BootDevice as IpmiBootDevice, BootDeviceRequest, IpmiClient, IpmiError, Ipmitool};
use crate::driver::{BootDevice, NodeContext};
use crate::model::{BootMode, Node, NodeError};

/// The name of both interfaces (Ironic's).
pub const NAME: &str = "ipmitool";

/// The boot devices `chassis bootdev` can set (floppy is not among Ironic's for ipmitool).
const SUPPORTED: [BootDevice; 4] = [
    BootDevice::Pxe,
    BootDevice::Disk,
    BootDevice::Cdrom,
    BootDevice::Bios,
];

/// What both interfaces need: the shared runner and the boot mode of nodes that name none.
#[derive(Debug, Clone)]
struct Shared {
    tool: Ipmitool,
    default_boot_mode: BootMode,
}

impl Shared {
    fn client(&self, ctx: &NodeContext) -> Result<IpmiClient, IpmiError> {
        self.tool.client_for(&ctx.node.driver_info)
    }
}

/// The IPMI device for a driver-level one, if ipmitool can set it.
fn ipmi_device(device: BootDevice) -> Option<IpmiBootDevice> {
    match device {
        BootDevice::Pxe => Some(IpmiBootDevice::Pxe),
        BootDevice::Disk => Some(IpmiBootDevice::Disk),
        BootDevice::Cdrom => Some(IpmiBootDevice::Cdrom),
        BootDevice::Bios => Some(IpmiBootDevice::Bios),
        BootDevice::Floppy => None,
    }
}

/// The driver-level device of what a BMC reports.
fn driver_device(device: IpmiBootDevice) -> BootDevice {
    match device {
        IpmiBootDevice::Pxe => BootDevice::Pxe,
        IpmiBootDevice::Disk => BootDevice::Disk,
        IpmiBootDevice::Cdrom => BootDevice::Cdrom,
        IpmiBootDevice::Bios => BootDevice::Bios,
    }
}

/// The request for `device`: UEFI (`efiboot`) when the node deploys in UEFI mode, as the
/// firmware must boot the device in the mode the boot files were prepared for.
fn boot_request(
    node: &Node,
    device: IpmiBootDevice,
    persistent: bool,
    default_boot_mode: BootMode,
) -> Result<BootDeviceRequest, NodeError> {
    Ok(BootDeviceRequest {
        device,
        persistent,
        efi: node.boot_mode(default_boot_mode)? == BootMode::Uefi,
    })
}

/// An invalid driver_info as the interfaces report it: the key, the value and why, without
/// the client's own "invalid driver_info" prefix (the interface error has one).
fn driver_info_reason(e: &IpmiError) -> String {
    match e {
        IpmiError::DriverInfo { key, value, reason } => format!("{key} = {value}: {reason}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests;
