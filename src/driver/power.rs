//! Power interfaces: read and change a node's power state.

use async_trait::async_trait;

use super::NodeContext;
use crate::model::PowerState;

#[derive(Debug, thiserror::Error)]
pub enum PowerError {
    #[error("power interface {interface}: driver_info is missing or invalid: {reason}")]
    InvalidDriverInfo {
        interface: &'static str,
        reason: String,
    },
    #[error("power interface {interface} failed to {action} node {node}: {source}")]
    Failed {
        interface: &'static str,
        action: &'static str,
        node: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("power interface {interface} does not support {action}")]
    Unsupported {
        interface: &'static str,
        action: &'static str,
    },
}

impl PowerError {
    /// A failure of `action` caused by `source`.
    pub fn failed(
        interface: &'static str,
        action: &'static str,
        node: &crate::model::Node,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> PowerError {
        PowerError::Failed {
            interface,
            action,
            node: node.ident(),
            source: source.into(),
        }
    }
}

/// What the conductor asks of a power interface.
#[async_trait]
pub trait PowerInterface: Send + Sync {
    fn name(&self) -> &'static str;
    /// Checks `driver_info` has what this interface needs, without touching the hardware.
    fn validate(&self, ctx: &NodeContext) -> Result<(), PowerError>;
    async fn get_power_state(&self, ctx: &mut NodeContext) -> Result<PowerState, PowerError>;
    /// Whether the state this interface reports is only the node's own record (the `fake`
    /// interface): the power sync then has nothing to learn, and a node with no recorded
    /// state keeps none, as in Ironic.
    fn reads_the_record(&self) -> bool {
        false
    }
    /// Moves the node to `target` (`power on`, `power off`, `rebooting`, `soft ...`) and
    /// returns once the hardware reports it there (or fails).
    async fn set_power_state(
        &self,
        ctx: &mut NodeContext,
        target: PowerState,
    ) -> Result<(), PowerError>;
}
