//! The `fake` power interface: no hardware, the node record is the truth, every call recorded.

use super::{PowerError, PowerInterface};
use crate::conductor::task::{Task, TaskFuture};
use crate::model::PowerState;

#[derive(Debug, Default)]
pub struct FakePower;

impl PowerInterface for FakePower {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn validate(&self, _task: &Task) -> Result<(), PowerError> {
        Ok(())
    }

    fn get_power_state<'a>(&'a self, task: &'a mut Task) -> TaskFuture<'a, PowerState, PowerError> {
        Box::pin(async move {
            task.record_fake_call("power.get_power_state");
            Ok(task.node.power_state.unwrap_or(PowerState::Off))
        })
    }

    fn set_power_state<'a>(
        &'a self,
        task: &'a mut Task,
        target: PowerState,
    ) -> TaskFuture<'a, (), PowerError> {
        Box::pin(async move {
            task.record_fake_call(&format!("power.set_power_state:{}", target.as_str()));
            let settled = match target {
                PowerState::On | PowerState::Rebooting | PowerState::SoftRebooting => {
                    PowerState::On
                }
                PowerState::Off | PowerState::SoftOff => PowerState::Off,
            };
            task.node.power_state = Some(settled);
            Ok(())
        })
    }
}
