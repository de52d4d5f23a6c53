//! The `redfish` power interface: `PowerState` read from the node's system, changes made
//! with `ComputerSystem.Reset` and waited for until the BMC reports them
//! ([`RedfishSystem::set_power`]).

use async_trait::async_trait;

use super::connect::Redfish;
use super::driver_info::DriverInfo;
use super::error::Advised;
use super::system::{PowerState as RfPower, PowerTarget, RedfishSystem};
use crate::driver::{NodeContext, PowerError, PowerInterface};
use crate::model::PowerState;

const NAME: &str = "redfish";

/// Power through the node's BMC; shares the conductor's [`Redfish`] handle (sessions, TLS).
#[derive(Debug, Clone)]
pub struct RedfishPower {
    redfish: Redfish,
}

impl RedfishPower {
    pub fn new(redfish: Redfish) -> Self {
        Self { redfish }
    }

    async fn system(
        &self,
        ctx: &NodeContext,
        action: &'static str,
    ) -> Result<RedfishSystem, PowerError> {
        let info = driver_info(ctx)?;
        self.redfish
            .connect(&info)
            .await
            .map_err(|e| PowerError::failed(NAME, action, &ctx.node, Advised::new(e)))
    }
}

fn driver_info(ctx: &NodeContext) -> Result<DriverInfo, PowerError> {
    DriverInfo::parse(&ctx.node.driver_info).map_err(|e| PowerError::InvalidDriverInfo {
        interface: NAME,
        reason: e.to_string(),
    })
}

/// Ironic's reading of a Redfish `PowerState`: a system on its way somewhere counts as there.
fn ironic_state(state: RfPower) -> Option<PowerState> {
    match state {
        RfPower::On | RfPower::PoweringOn => Some(PowerState::On),
        RfPower::Off | RfPower::PoweringOff => Some(PowerState::Off),
        RfPower::Paused | RfPower::Unknown => None,
    }
}

fn target_of(state: PowerState) -> PowerTarget {
    match state {
        PowerState::On => PowerTarget::On,
        PowerState::Off => PowerTarget::Off,
        PowerState::SoftOff => PowerTarget::SoftOff,
        PowerState::Rebooting => PowerTarget::Reboot,
        PowerState::SoftRebooting => PowerTarget::SoftReboot,
    }
}

/// The BMC reported a state Ironic has no name for.
#[derive(Debug, thiserror::Error)]
#[error(
    "BMC {bmc} reports system {system} in power state {state}, which is neither on nor off; \
     check the node on its BMC"
)]
struct UnusableState {
    bmc: String,
    system: String,
    state: RfPower,
}

#[async_trait]
impl PowerInterface for RedfishPower {
    fn name(&self) -> &'static str {
        NAME
    }

    fn validate(&self, ctx: &NodeContext) -> Result<(), PowerError> {
        driver_info(ctx).map(|_| ())
    }

    async fn get_power_state(&self, ctx: &mut NodeContext) -> Result<PowerState, PowerError> {
        let action = "read the power state of";
        let system = self.system(ctx, action).await?;
        let state = system
            .power_state()
            .await
            .map_err(|e| PowerError::failed(NAME, action, &ctx.node, Advised::new(e)))?;
        ironic_state(state).ok_or_else(|| {
            let unusable = UnusableState {
                bmc: system.bmc().to_string(),
                system: system.path().to_string(),
                state,
            };
            PowerError::failed(NAME, action, &ctx.node, unusable)
        })
    }

    async fn set_power_state(
        &self,
        ctx: &mut NodeContext,
        target: PowerState,
    ) -> Result<(), PowerError> {
        let action = match target {
            PowerState::On => "power on",
            PowerState::Off => "power off",
            PowerState::SoftOff => "soft power off",
            PowerState::Rebooting => "reboot",
            PowerState::SoftRebooting => "soft reboot",
        };
        let system = self.system(ctx, action).await?;
        let seen = system
            .set_power(target_of(target))
            .await
            .map_err(|e| PowerError::failed(NAME, action, &ctx.node, Advised::new(e)))?;
        ctx.node.power_state = ironic_state(seen);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitional_states_count_as_their_destination() {
        assert_eq!(ironic_state(RfPower::PoweringOn), Some(PowerState::On));
        assert_eq!(ironic_state(RfPower::PoweringOff), Some(PowerState::Off));
        assert_eq!(ironic_state(RfPower::Paused), None);
        assert_eq!(
            target_of(PowerState::SoftRebooting),
            PowerTarget::SoftReboot
        );
    }

    #[test]
    fn validate_reads_driver_info_only() {
        let hw = crate::model::HardwareType::find("fake-hardware").unwrap();
        let mut node = crate::model::Node::new(uuid::Uuid::new_v4(), hw, crate::model::now());
        node.driver_info
            .insert("redfish_address".into(), "ftp://bmc".into());
        let ctx = NodeContext::new(node, vec![]);
        let p = RedfishPower::new(Redfish::new(Default::default(), None).unwrap());
        let err = p.validate(&ctx).unwrap_err().to_string();
        assert!(
            err.contains("redfish_address") && err.contains("ftp"),
            "{err}"
        );
    }
}
