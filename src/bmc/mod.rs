//! Out-of-band control of a node: power, boot device (and virtual media, where the BMC has it).
//!
//! Power and management interfaces are chosen per node by `power_interface` and
//! `management_interface`. `fake` keeps the power state in the node record and records every
//! call, like Ironic's `fake-hardware`; `script` runs commands named in driver_info (labs and
//! tests); `ipmitool` drives a BMC over IPMI ([`ipmi`]); `noop` management leaves the boot
//! order to the operator (`manual-management`).

pub mod fake;
pub mod ipmi;
pub mod noop;
pub mod redfish;
pub mod script;

pub use crate::driver::management::{ManagementError, ManagementInterface};
pub use crate::driver::power::{PowerError, PowerInterface};
