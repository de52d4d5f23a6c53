//! Boot interfaces: make a node boot something (the deploy ramdisk, then its instance).
//!
//! Chosen per node by `boot_interface`. `fake` records what it was asked and changes nothing.

pub mod fake;

use crate::conductor::task::{Task, TaskFuture};

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("boot interface {interface}: driver_info is missing or invalid: {reason}")]
    InvalidDriverInfo {
        interface: &'static str,
        reason: String,
    },
    #[error("boot interface {interface} failed for node {node}: {reason}")]
    Failed {
        interface: &'static str,
        node: String,
        reason: String,
    },
}

/// What the conductor asks of a boot interface. Every method leaves the node's boot files in a
/// consistent state: either the old set or the new one, never a mix a node could fetch.
pub trait BootInterface: Send + Sync {
    fn name(&self) -> &'static str;
    /// Checks the node has what this interface needs (deploy kernel/ramdisk, ports, ...).
    fn validate(&self, task: &Task) -> Result<(), BootError>;
    /// Prepares the node to boot the deploy ramdisk, handing it `ramdisk_params`
    /// (`ipa-api-url=...` and friends) on its kernel command line.
    fn prepare_ramdisk<'a>(
        &'a self,
        task: &'a mut Task,
        ramdisk_params: &'a [(String, String)],
    ) -> TaskFuture<'a, (), BootError>;
    /// Removes what `prepare_ramdisk` created.
    fn clean_up_ramdisk<'a>(&'a self, task: &'a mut Task) -> TaskFuture<'a, (), BootError>;
    /// Prepares the node to boot its instance (local disk, or a partition image's kernel).
    fn prepare_instance<'a>(&'a self, task: &'a mut Task) -> TaskFuture<'a, (), BootError>;
    /// Removes what `prepare_instance` created.
    fn clean_up_instance<'a>(&'a self, task: &'a mut Task) -> TaskFuture<'a, (), BootError>;
    /// Regenerates this conductor's copy of the node's boot files after another conductor died.
    fn take_over<'a>(&'a self, task: &'a mut Task) -> TaskFuture<'a, (), BootError>;
}
