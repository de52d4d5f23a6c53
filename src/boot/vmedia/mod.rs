//! The `redfish-virtual-media` boot interface: the node boots ISOs (and reads a floppy) that
//! ironboot built and published, inserted through its BMC's Redfish virtual media — the
//! iLO-style path, which Ironic itself moved to Redfish for iLO 5 and later.
//!
//! - `prepare_ramdisk`: pregenerates the agent token (Ironic's `agent_secret_token` +
//!   `agent_secret_token_pregenerated`: the lookup then answers `******` and the agent uses
//!   the token from its media), builds the deploy ISO from `deploy_kernel` + `deploy_ramdisk`
//!   with the agent's parameters on the kernel command line (or takes `deploy_iso` as it is,
//!   with the parameters in `parameters.txt` on a floppy labelled `ir-vfd-dev`), publishes
//!   (`[vmedia]`: ironboot's HTTP root or Swift), empties the slots, inserts, and asks for a
//!   one-time Cd boot. The conductor sets it and powers the node on: the BMC fetches media
//!   that exist before the node boots.
//! - `prepare_instance`: a whole-disk image boots from its disk (every medium ejected and
//!   unpublished, persistent Hdd boot); a partition image or a ramdisk deploy boots an ISO
//!   of the instance's kernel and ramdisk (persistent Cd boot).
//! - `clean_up_ramdisk` / `clean_up_instance`: eject everything, unpublish everything the
//!   node's record lists, on whichever backend it went to. The conductor calls
//!   `clean_up_ramdisk` when a deploy or cleaning fails too, so no failure leaves a published
//!   medium (which carries the agent token) or an inserted one.
//! - `take_over`: a node waiting for its agent (`wait call-back`, `clean wait`, `inspect wait`,
//!   `rescue wait`) gets its agent media rebuilt
//!   (same token, same names, byte-identical for unchanged inputs), republished from this
//!   conductor and inserted again; an `active` node booting a boot ISO gets that ISO the
//!   same way; an active whole-disk node needs nothing.
//!
//! Published names are opaque (`record`): they reveal neither the node nor the token.
//! Builds happen in `<data_dir>/vmedia-work`, on the HTTP root's filesystem so that local
//! publishing is a hard link.

mod attach;
mod build;
mod cleanup;
mod error;
mod inputs;
mod instance;
mod ramdisk;
pub mod record;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use tracing::Instrument;
use uuid::Uuid;

use super::render::KernelParams;
use super::{BootError, BootFilesError, BootInterface, BootMetrics, RamdiskParams};
use crate::bmc::redfish::Redfish;
use crate::driver::{BootDevice, BootTarget, NodeContext};
use crate::images::ImageCache;
use crate::media::MediaBuilder;
use crate::model::{BootMode, ProvisionState};
use crate::publish::Publishers;

pub use error::VmediaError;
pub use inputs::{DeployMedia, RamdiskInputs};

/// The interface's name (Ironic's).
pub const NAME: &str = "redfish-virtual-media";

/// What the interface needs from the service; built once at start.
pub struct VmediaConfig {
    pub redfish: Redfish,
    pub cache: Arc<ImageCache>,
    pub media: Arc<MediaBuilder>,
    pub publishers: Publishers,
    /// Scratch space for builds, on the HTTP root's filesystem; emptied at start.
    pub work_dir: PathBuf,
    /// `[redfish] kernel_append_params`.
    pub kernel_append_params: String,
    /// Boot mode of nodes that name none (`[agent] default_boot_mode`).
    pub default_boot_mode: BootMode,
}

pub struct VirtualMediaBoot {
    config: Arc<VmediaConfig>,
    default_append: KernelParams,
    metrics: BootMetrics,
}

impl std::fmt::Debug for VirtualMediaBoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtualMediaBoot")
            .field("work_dir", &self.config.work_dir)
            .finish_non_exhaustive()
    }
}

impl VirtualMediaBoot {
    /// Checks the kernel parameters and empties the scratch directory (builds a previous run
    /// left when it stopped).
    pub fn new(config: VmediaConfig, metrics: BootMetrics) -> Result<Self, BootFilesError> {
        let default_append =
            KernelParams::parse("redfish.kernel_append_params", &config.kernel_append_params)?;
        let dir = &config.work_dir;
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|e| BootFilesError::io("empty", dir, e))?;
        }
        crate::fsutil::ensure_dir(dir).map_err(|e| BootFilesError::io("create", dir, e))?;
        Ok(Self {
            config: Arc::new(config),
            default_append,
            metrics,
        })
    }

    /// Runs one operation in a span carrying the node, and counts it.
    async fn observed<T>(
        &self,
        op: &'static str,
        node: Uuid,
        work: impl Future<Output = Result<T, BootError>>,
    ) -> Result<T, BootError> {
        let started = Instant::now();
        let span = tracing::info_span!("boot", interface = NAME, op, node = %node);
        let result = work.instrument(span).await;
        self.metrics
            .observe(NAME, op, result.is_ok(), started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            tracing::warn!(node = %node, interface = NAME, op, error = %e, "boot operation failed");
        }
        result
    }

    fn ramdisk_inputs(&self, ctx: &NodeContext) -> Result<RamdiskInputs, BootError> {
        RamdiskInputs::read(ctx, &self.default_append, self.config.default_boot_mode)
    }

    async fn clean_up(&self, ctx: &mut NodeContext) -> Result<(), BootError> {
        let result = self.release(ctx).await;
        result.map_err(|e| BootError::failed(NAME, &ctx.node, e))
    }
}

#[async_trait]
impl BootInterface for VirtualMediaBoot {
    fn name(&self) -> &'static str {
        NAME
    }

    fn validate(&self, ctx: &NodeContext) -> Result<(), BootError> {
        let inputs = self.ramdisk_inputs(ctx)?;
        // The publisher must exist here (a node asking for Swift on a conductor without it).
        self.publisher(&inputs.publishing)
            .map_err(inputs::invalid_driver_info)?;
        // The instance side checks what it can before the deploy (no root UUID yet).
        inputs::append_params(&ctx.node, &self.default_append)?;
        crate::boot::instance::instance_kind(&ctx.node, false, "from virtual media")
            .map_err(inputs::invalid_node)?;
        Ok(())
    }

    async fn prepare_ramdisk(
        &self,
        ctx: &mut NodeContext,
        params: &RamdiskParams,
    ) -> Result<BootTarget, BootError> {
        let uuid = ctx.node.uuid;
        self.observed("prepare_ramdisk", uuid, async {
            let inputs = self.ramdisk_inputs(ctx)?;
            let result = self.prepare_ramdisk_media(ctx, &inputs, params).await;
            result.map_err(|e| BootError::failed(NAME, &ctx.node, e))?;
            Ok(BootTarget::once(BootDevice::Cdrom))
        })
        .await
    }

    async fn clean_up_ramdisk(&self, ctx: &mut NodeContext) -> Result<(), BootError> {
        let uuid = ctx.node.uuid;
        self.observed("clean_up", uuid, self.clean_up(ctx)).await
    }

    async fn prepare_instance(&self, ctx: &mut NodeContext) -> Result<BootTarget, BootError> {
        let uuid = ctx.node.uuid;
        self.observed("prepare_instance", uuid, async {
            let Some(inputs) = self.instance_inputs(&ctx.node)? else {
                self.clean_up(ctx).await?;
                return Ok(BootTarget::persistent(BootDevice::Disk));
            };
            let result = self.install_boot_iso(ctx, &inputs, true).await;
            result.map_err(|e| BootError::failed(NAME, &ctx.node, e))?;
            Ok(BootTarget::persistent(BootDevice::Cdrom))
        })
        .await
    }

    async fn clean_up_instance(&self, ctx: &mut NodeContext) -> Result<(), BootError> {
        let uuid = ctx.node.uuid;
        self.observed("clean_up", uuid, self.clean_up(ctx)).await
    }

    async fn take_over(
        &self,
        ctx: &mut NodeContext,
        params: &RamdiskParams,
    ) -> Result<(), BootError> {
        let uuid = ctx.node.uuid;
        self.observed("take_over", uuid, async {
            let result = match ctx.node.provision_state {
                state if state.waits_for_agent() => {
                    let inputs = self.ramdisk_inputs(ctx)?;
                    self.take_over_ramdisk_media(ctx, &inputs, params).await
                }
                ProvisionState::Active => {
                    let has_boot_iso = record::MediaRecord::read(&ctx.node)
                        .entry(record::MediaKind::BootIso)
                        .is_some();
                    match self.instance_inputs(&ctx.node)? {
                        Some(inputs) if has_boot_iso => {
                            self.install_boot_iso(ctx, &inputs, false).await
                        }
                        // A whole-disk node boots from its disk: nothing to regenerate.
                        _ => Ok(()),
                    }
                }
                _ => Ok(()),
            };
            result.map_err(|e| BootError::failed(NAME, &ctx.node, e))
        })
        .await
    }
}

#[cfg(test)]
mod tests;
