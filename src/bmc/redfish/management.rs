//! The `redfish` management interface: the boot device as the system's boot source override.
//!
//! The conductor sets the device the boot interface prepared before it powers the node on
//! (`BootTarget`): once for the deploy ramdisk (Pxe for pxe/ipxe, Cd for virtual media),
//! continuously for the instance (Hdd, or Cd for a partition image's boot ISO). The firmware
//! boot mode comes from the node (`instance_info.deploy_boot_mode`, the `boot_mode`
//! capability, else the conductor's default) and is sent where the system has
//! `BootSourceOverrideMode`.

use async_trait::async_trait;

use super::connect::Redfish;
use super::driver_info::DriverInfo;
use super::error::Advised;
use super::system::{BootDevice as RfDevice, BootFrequency, BootMode as RfMode, RedfishSystem};
use crate::driver::{BootDevice, BootTarget, ManagementError, ManagementInterface, NodeContext};
use crate::model::BootMode;

const NAME: &str = "redfish";

#[derive(Debug, Clone)]
pub struct RedfishManagement {
    redfish: Redfish,
    /// Boot mode of nodes that name none (`[agent] default_boot_mode`).
    default_boot_mode: BootMode,
}

impl RedfishManagement {
    pub fn new(redfish: Redfish, default_boot_mode: BootMode) -> Self {
        Self {
            redfish,
            default_boot_mode,
        }
    }

    async fn system(
        &self,
        ctx: &NodeContext,
        action: &'static str,
    ) -> Result<RedfishSystem, ManagementError> {
        let info = driver_info(ctx)?;
        self.redfish
            .connect(&info)
            .await
            .map_err(|e| ManagementError::failed(NAME, action, &ctx.node, Advised::new(e)))
    }
}

fn driver_info(ctx: &NodeContext) -> Result<DriverInfo, ManagementError> {
    DriverInfo::parse(&ctx.node.driver_info).map_err(|e| ManagementError::InvalidDriverInfo {
        interface: NAME,
        reason: e.to_string(),
    })
}

/// Ironic's boot devices as Redfish override targets.
fn redfish_device(device: BootDevice) -> RfDevice {
    match device {
        BootDevice::Pxe => RfDevice::Pxe,
        BootDevice::Disk => RfDevice::Hdd,
        BootDevice::Cdrom => RfDevice::Cd,
        BootDevice::Bios => RfDevice::BiosSetup,
        BootDevice::Floppy => RfDevice::Floppy,
    }
}

fn ironic_device(device: RfDevice) -> Option<BootDevice> {
    match device {
        RfDevice::Pxe => Some(BootDevice::Pxe),
        RfDevice::Hdd => Some(BootDevice::Disk),
        RfDevice::Cd => Some(BootDevice::Cdrom),
        RfDevice::BiosSetup => Some(BootDevice::Bios),
        RfDevice::Floppy => Some(BootDevice::Floppy),
        RfDevice::Usb => None,
    }
}

fn redfish_mode(mode: BootMode) -> RfMode {
    match mode {
        BootMode::Bios => RfMode::Legacy,
        BootMode::Uefi => RfMode::Uefi,
    }
}

#[async_trait]
impl ManagementInterface for RedfishManagement {
    fn name(&self) -> &'static str {
        NAME
    }

    fn validate(&self, ctx: &NodeContext) -> Result<(), ManagementError> {
        driver_info(ctx).map(|_| ())
    }

    fn supported_boot_devices(&self, _ctx: &NodeContext) -> Vec<BootDevice> {
        // What a BMC allows is only known by asking it; set_boot_device refuses (naming the
        // allowed targets) what it does not list.
        BootDevice::ALL.to_vec()
    }

    async fn get_boot_device(
        &self,
        ctx: &mut NodeContext,
    ) -> Result<Option<BootTarget>, ManagementError> {
        let action = "read the boot device of";
        let system = self.system(ctx, action).await?;
        let current = system
            .boot_override()
            .await
            .map_err(|e| ManagementError::failed(NAME, action, &ctx.node, Advised::new(e)))?;
        Ok(current
            .device()
            .and_then(ironic_device)
            .map(|device| BootTarget {
                device,
                persistent: current.persistent().unwrap_or(false),
            }))
    }

    async fn set_boot_device(
        &self,
        ctx: &mut NodeContext,
        target: BootTarget,
    ) -> Result<(), ManagementError> {
        let action = "set the boot device of";
        let mode = ctx
            .node
            .boot_mode(self.default_boot_mode)
            .map_err(|e| ManagementError::failed(NAME, action, &ctx.node, e))?;
        let system = self.system(ctx, action).await?;
        let frequency = if target.persistent {
            BootFrequency::Continuous
        } else {
            BootFrequency::Once
        };
        system
            .set_boot_override(
                redfish_device(target.device),
                frequency,
                Some(redfish_mode(mode)),
            )
            .await
            .map_err(|e| ManagementError::failed(NAME, action, &ctx.node, Advised::new(e)))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_map_both_ways() {
        for d in BootDevice::ALL {
            assert_eq!(ironic_device(redfish_device(d)), Some(d));
        }
        assert_eq!(redfish_device(BootDevice::Cdrom).as_str(), "Cd");
        assert_eq!(redfish_device(BootDevice::Disk).as_str(), "Hdd");
        assert_eq!(ironic_device(RfDevice::Usb), None);
        assert_eq!(redfish_mode(BootMode::Bios).as_str(), "Legacy");
    }
}
