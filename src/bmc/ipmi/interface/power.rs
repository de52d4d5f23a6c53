//! The `ipmitool` power interface: `power status|on|off|soft|...` through the IPMI client,
//! each action returning once the BMC reports the state it leads to. A soft power off the OS
//! ignores ends in a hard one after `[ipmi] soft_power_off_timeout_secs` (logged and counted
//! by the client).

use async_trait::async_trait;

use super::{NAME, Shared, force_boot};
use crate::bmc::ipmi::{IpmiClient, Ipmitool};
use crate::driver::{NodeContext, PowerError, PowerInterface};
use crate::model::{BootMode, PowerState};

#[derive(Debug, Clone)]
pub struct IpmitoolPower {
    shared: Shared,
}

impl IpmitoolPower {
    /// `default_boot_mode`: the boot mode of nodes that name none (`[agent]
    /// default_boot_mode`), for the boot device `ipmi_force_boot_device` sends again.
    pub fn new(tool: Ipmitool, default_boot_mode: BootMode) -> Self {
        Self {
            shared: Shared {
                tool,
                default_boot_mode,
            },
        }
    }

    fn client(&self, ctx: &NodeContext) -> Result<IpmiClient, PowerError> {
        self.shared
            .client(ctx)
            .map_err(|e| PowerError::InvalidDriverInfo {
                interface: NAME,
                reason: super::driver_info_reason(&e),
            })
    }

    /// With `ipmi_force_boot_device`, sends the remembered boot device again (next boot only)
    /// before the node powers on, as Ironic does.
    async fn resend_boot_device(
        &self,
        client: &IpmiClient,
        ctx: &mut NodeContext,
    ) -> Result<(), PowerError> {
        if !client.driver_info().force_boot_device {
            return Ok(());
        }
        let Some(ipmi_device) =
            force_boot::device_to_resend(&mut ctx.node).and_then(super::ipmi_device)
        else {
            return Ok(());
        };
        let action = "restore the boot device of";
        let request =
            super::boot_request(&ctx.node, ipmi_device, false, self.shared.default_boot_mode)
                .map_err(|e| PowerError::failed(NAME, action, &ctx.node, e))?;
        client
            .set_boot_device(request)
            .await
            .map_err(|e| PowerError::failed(NAME, action, &ctx.node, e))?;
        Ok(())
    }
}

/// How a failed `target` reads in an error: "failed to <verb> node X".
fn verb(target: PowerState) -> &'static str {
    match target {
        PowerState::On => "power on",
        PowerState::Off => "power off",
        PowerState::Rebooting => "reboot",
        PowerState::SoftOff => "soft power off",
        PowerState::SoftRebooting => "soft reboot",
    }
}

#[async_trait]
impl PowerInterface for IpmitoolPower {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Parses driver_info only; the BMC is not contacted (as in Ironic).
    fn validate(&self, ctx: &NodeContext) -> Result<(), PowerError> {
        self.client(ctx).map(drop)
    }

    async fn get_power_state(&self, ctx: &mut NodeContext) -> Result<PowerState, PowerError> {
        let client = self.client(ctx)?;
        let status = client
            .power_status()
            .await
            .map_err(|e| PowerError::failed(NAME, "read the power state of", &ctx.node, e))?;
        let state = PowerState::from(status);
        ctx.node.power_state = Some(state);
        Ok(state)
    }

    async fn set_power_state(
        &self,
        ctx: &mut NodeContext,
        target: PowerState,
    ) -> Result<(), PowerError> {
        let client = self.client(ctx)?;
        if matches!(
            target,
            PowerState::On | PowerState::Rebooting | PowerState::SoftRebooting
        ) {
            self.resend_boot_device(&client, ctx).await?;
        }
        let reached = client
            .set_power_state(target, None)
            .await
            .map_err(|e| PowerError::failed(NAME, verb(target), &ctx.node, e))?;
        ctx.node.power_state = Some(reached.into());
        Ok(())
    }
}
