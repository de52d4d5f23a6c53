//! Pure domain model: nodes, ports, provision states and their transitions. No I/O here.

pub mod allocation;
pub mod boot_mode;
pub mod hardware;
pub mod node;
pub mod port;
pub mod state;

pub use allocation::{Allocation, AllocationState};
pub use boot_mode::BootMode;
pub use hardware::{ExtraInterfaces, HARDWARE_TYPES, HardwareType, InterfaceKind, InterfaceSet};
pub use node::{Fields, Node, NodeError, PowerState};
pub use port::{InvalidMac, MacAddress, Port};
pub use state::{Event, InvalidTransition, ProvisionState, Transition};

/// The current time at the precision the store keeps (microseconds), so a value written and
/// read back compares equal.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::SubsecRound;
    chrono::Utc::now().trunc_subsecs(6)
}
