//! The `ipmitool` management interface: `chassis bootdev` with `options=persistent` for every
//! boot from now on and `options=efiboot` for nodes that boot in UEFI mode, read back from
//! boot parameter 5 before it counts as set; and the boot device the BMC holds.

use async_trait::async_trait;

use super::{NAME, SUPPORTED, Shared, force_boot};
use crate::bmc::ipmi::{IpmiClient, Ipmitool};
use crate::driver::{BootDevice, BootTarget, ManagementError, ManagementInterface, NodeContext};
use crate::model::BootMode;

#[derive(Debug, Clone)]
pub struct IpmitoolManagement {
    shared: Shared,
}

impl IpmitoolManagement {
    /// `default_boot_mode`: the boot mode of nodes that name none (`[agent]
    /// default_boot_mode`), which decides `efiboot`.
    pub fn new(tool: Ipmitool, default_boot_mode: BootMode) -> Self {
        Self {
            shared: Shared {
                tool,
                default_boot_mode,
            },
        }
    }

    fn client(&self, ctx: &NodeContext) -> Result<IpmiClient, ManagementError> {
        self.shared
            .client(ctx)
            .map_err(|e| ManagementError::InvalidDriverInfo {
                interface: NAME,
                reason: super::driver_info_reason(&e),
            })
    }
}

#[async_trait]
impl ManagementInterface for IpmitoolManagement {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Parses driver_info only; the BMC is not contacted (as in Ironic).
    fn validate(&self, ctx: &NodeContext) -> Result<(), ManagementError> {
        self.client(ctx).map(drop)
    }

    fn supported_boot_devices(&self, _ctx: &NodeContext) -> Vec<BootDevice> {
        SUPPORTED.to_vec()
    }

    /// What boot parameter 5 holds (`None`: no override, or a device Ironic has no name for
    /// here). With `ipmi_force_boot_device`, the device ironboot restores at every power on.
    async fn get_boot_device(
        &self,
        ctx: &mut NodeContext,
    ) -> Result<Option<BootTarget>, ManagementError> {
        let client = self.client(ctx)?;
        if client.driver_info().force_boot_device
            && let Some(target) = force_boot::remembered(&ctx.node)
        {
            return Ok(Some(target));
        }
        let flags = client
            .get_boot_device()
            .await
            .map_err(|e| ManagementError::failed(NAME, "read the boot device of", &ctx.node, e))?;
        Ok(flags.device().map(|device| BootTarget {
            device: super::driver_device(device),
            persistent: flags.persistent,
        }))
    }

    async fn set_boot_device(
        &self,
        ctx: &mut NodeContext,
        target: BootTarget,
    ) -> Result<(), ManagementError> {
        let client = self.client(ctx)?;
        let device = super::ipmi_device(target.device).ok_or_else(|| {
            ManagementError::UnsupportedDevice {
                interface: NAME,
                node: ctx.node.ident(),
                device: target.device,
                supported: SUPPORTED.map(BootDevice::as_str).join(", "),
            }
        })?;
        let action = "set the boot device of";
        let mut persistent = target.persistent;
        if client.driver_info().force_boot_device {
            // The BMC gets a one-time device; ironboot sends it again before each power on.
            force_boot::remember(&mut ctx.node, target);
            persistent = false;
        }
        let request =
            super::boot_request(&ctx.node, device, persistent, self.shared.default_boot_mode)
                .map_err(|e| ManagementError::failed(NAME, action, &ctx.node, e))?;
        client
            .set_boot_device(request)
            .await
            .map_err(|e| ManagementError::failed(NAME, action, &ctx.node, e))?;
        Ok(())
    }
}
