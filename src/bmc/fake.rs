//! The `fake` power and management interfaces: no hardware, the node record is the truth,
//! every call recorded.

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{ManagementError, ManagementInterface, PowerError, PowerInterface};
use crate::driver::{BootDevice, BootTarget, NodeContext};
use crate::model::PowerState;

/// Where the fake management interface keeps the boot device it was last given.
const BOOT_DEVICE_KEY: &str = "fake_boot_device";

#[derive(Debug, Default)]
pub struct FakePower;

#[async_trait]
impl PowerInterface for FakePower {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn validate(&self, _ctx: &NodeContext) -> Result<(), PowerError> {
        Ok(())
    }

    async fn get_power_state(&self, ctx: &mut NodeContext) -> Result<PowerState, PowerError> {
        ctx.record_fake_call("power.get_power_state");
        Ok(ctx.node.power_state.unwrap_or(PowerState::Off))
    }

    fn reads_the_record(&self) -> bool {
        true
    }

    async fn set_power_state(
        &self,
        ctx: &mut NodeContext,
        target: PowerState,
    ) -> Result<(), PowerError> {
        ctx.record_fake_call(&format!("power.set_power_state:{}", target.as_str()));
        let settled = match target {
            PowerState::On | PowerState::Rebooting | PowerState::SoftRebooting => PowerState::On,
            PowerState::Off | PowerState::SoftOff => PowerState::Off,
        };
        ctx.node.power_state = Some(settled);
        Ok(())
    }
}

#[derive(Debug, Default)]
pub struct FakeManagement;

#[async_trait]
impl ManagementInterface for FakeManagement {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn validate(&self, _ctx: &NodeContext) -> Result<(), ManagementError> {
        Ok(())
    }

    fn supported_boot_devices(&self, _ctx: &NodeContext) -> Vec<BootDevice> {
        BootDevice::ALL.to_vec()
    }

    async fn get_boot_device(
        &self,
        ctx: &mut NodeContext,
    ) -> Result<Option<BootTarget>, ManagementError> {
        ctx.record_fake_call("management.get_boot_device");
        let stored = ctx.node.driver_internal_info.get(BOOT_DEVICE_KEY);
        let device = stored
            .and_then(|v| v.get("boot_device"))
            .and_then(Value::as_str)
            .and_then(BootDevice::parse);
        let persistent = stored
            .and_then(|v| v.get("persistent"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        // Never set: network boot, once (what Ironic's fake management reports).
        Ok(Some(BootTarget {
            device: device.unwrap_or(BootDevice::Pxe),
            persistent,
        }))
    }

    async fn set_boot_device(
        &self,
        ctx: &mut NodeContext,
        target: BootTarget,
    ) -> Result<(), ManagementError> {
        let mode = if target.persistent {
            "persistent"
        } else {
            "once"
        };
        ctx.record_fake_call(&format!(
            "management.set_boot_device:{}:{mode}",
            target.device
        ));
        ctx.node.driver_internal_info.insert(
            BOOT_DEVICE_KEY.into(),
            json!({"boot_device": target.device.as_str(), "persistent": target.persistent}),
        );
        Ok(())
    }
}
