//! Boot interfaces: make a node boot something (the deploy ramdisk, then its instance).

use async_trait::async_trait;

use super::{BootTarget, NodeContext};

/// Kernel parameters a deploy interface hands its ramdisk (`ipa-api-url=...`), in order.
pub type RamdiskParams = Vec<(String, String)>;

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("boot interface {interface}: driver_info is missing or invalid: {reason}")]
    InvalidDriverInfo {
        interface: &'static str,
        reason: String,
    },
    /// Node input other than driver_info (instance_info, properties, ports) is unusable.
    #[error("boot interface {interface}: {reason}")]
    InvalidNode {
        interface: &'static str,
        reason: String,
    },
    /// The work failed; `source` says why, with its own causes.
    #[error("boot interface {interface} failed for node {node}: {source}")]
    Failed {
        interface: &'static str,
        node: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl BootError {
    /// A failure caused by `source` (a library or a lower module's error, or a message).
    pub fn failed(
        interface: &'static str,
        node: &crate::model::Node,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> BootError {
        BootError::Failed {
            interface,
            node: node.ident(),
            source: source.into(),
        }
    }
}

/// What the conductor asks of a boot interface. Every method leaves the node's boot files
/// (or media) in a consistent state: the old set or the new one, never a mix a node could fetch.
#[async_trait]
pub trait BootInterface: Send + Sync {
    fn name(&self) -> &'static str;
    /// Checks the node has what this interface needs (deploy kernel/ramdisk, ports, ...),
    /// without changing anything.
    fn validate(&self, ctx: &NodeContext) -> Result<(), BootError>;
    /// Prepares the node to boot the deploy ramdisk with `params` on its kernel command line,
    /// and says which device the node must boot from next (set before powering it on).
    async fn prepare_ramdisk(
        &self,
        ctx: &mut NodeContext,
        params: &RamdiskParams,
    ) -> Result<BootTarget, BootError>;
    /// Removes what `prepare_ramdisk` created.
    async fn clean_up_ramdisk(&self, ctx: &mut NodeContext) -> Result<(), BootError>;
    /// Prepares the node to boot its instance (local disk, or a partition image's kernel), and
    /// says which device it boots from from now on.
    async fn prepare_instance(&self, ctx: &mut NodeContext) -> Result<BootTarget, BootError>;
    /// Removes what `prepare_instance` created.
    async fn clean_up_instance(&self, ctx: &mut NodeContext) -> Result<(), BootError>;
    /// Regenerates this conductor's copy of the node's boot files (or media) after another
    /// conductor served the node (or this one under another host name).
    ///
    /// The conductor calls it for nodes in `active` and in the waiting states (`wait
    /// call-back`, `clean wait`, `inspect wait`, `rescue wait`), whose ramdisk is booted or
    /// booting from what the previous conductor prepared. `params` are the ramdisk parameters
    /// `prepare_ramdisk` got (the deploy interface's, or the inspection's), so an interface
    /// that rebuilds its ramdisk boot (virtual media carrying `ipa-api-url`) gives the same
    /// result as the original preparation.
    /// Whatever the state, nothing is powered or rebooted: only files and media the node
    /// may read are made to exist here again, with the same content.
    async fn take_over(
        &self,
        ctx: &mut NodeContext,
        params: &RamdiskParams,
    ) -> Result<(), BootError>;
}
