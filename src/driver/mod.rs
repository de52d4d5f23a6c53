//! What the conductor's hardware interfaces see and promise.
//!
//! A node's boot, power and management interfaces are chosen per node by name
//! (`boot_interface`, ...). They act on a [`NodeContext`] — the node record, its ports and the
//! record of fake calls — never on the conductor's reservation or the store: the conductor
//! holds the reservation, hands the context in, and saves what the interface changed. This
//! keeps `boot/` and `bmc/` below the conductor (they import `driver`, never `conductor`).
//!
//! Deploy interfaces are different: they run steps that move the provision state and persist
//! progress between heartbeats, so they live with the conductor (`conductor::deploy`).

pub mod boot;
mod context;
pub mod management;
pub mod power;

pub use boot::{BootError, BootInterface, RamdiskParams};
pub use context::NodeContext;
pub use management::{BootDevice, BootTarget, ManagementError, ManagementInterface};
pub use power::{PowerError, PowerInterface};
