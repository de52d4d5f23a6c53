//! Out-of-band control of a node: power (and later boot device and virtual media).
//!
//! A power interface is chosen per node by `power_interface`. `fake` keeps the power state in
//! the node record and records every call, like Ironic's `fake-hardware`; `script` runs
//! commands named in driver_info (labs and tests).

pub mod fake;
pub mod ipmi;
pub mod script;

use crate::conductor::task::{Task, TaskFuture};
use crate::model::PowerState;

#[derive(Debug, thiserror::Error)]
pub enum PowerError {
    #[error("power interface {interface}: driver_info is missing or invalid: {reason}")]
    InvalidDriverInfo {
        interface: &'static str,
        reason: String,
    },
    #[error("power interface {interface} failed to {action} node {node}: {reason}")]
    Failed {
        interface: &'static str,
        action: &'static str,
        node: String,
        reason: String,
    },
    #[error("power interface {interface} does not support {action}")]
    Unsupported {
        interface: &'static str,
        action: &'static str,
    },
}

/// What the conductor asks of a power interface.
pub trait PowerInterface: Send + Sync {
    fn name(&self) -> &'static str;
    /// Checks `driver_info` has what this interface needs, without touching the hardware.
    fn validate(&self, task: &Task) -> Result<(), PowerError>;
    fn get_power_state<'a>(&'a self, task: &'a mut Task) -> TaskFuture<'a, PowerState, PowerError>;
    /// Moves the node to `target` (`power on`, `power off`, `rebooting`, `soft ...`).
    fn set_power_state<'a>(
        &'a self,
        task: &'a mut Task,
        target: PowerState,
    ) -> TaskFuture<'a, (), PowerError>;
}
