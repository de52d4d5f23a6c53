//! The instance boot. A whole-disk image boots from its disk: every medium is ejected and
//! unpublished. A partition image (seed 003 netboot) or a ramdisk deploy boots an ISO of the
//! instance's kernel and ramdisk: `root=UUID=<root uuid the agent reported>` or
//! `root=/dev/ram0 text <ramdisk_kernel_arguments>` on its command line after the node's
//! kernel parameters. Take over of an active node rebuilds that ISO and inserts it again.

use crate::bmc::redfish::DriverInfo;
use crate::boot::BootError;
use crate::boot::instance::{InstanceKind, instance_kind, recorded_root};
use crate::boot::render::KernelParams;
use crate::driver::NodeContext;
use crate::model::Node;
use crate::publish::Publisher;

use super::build::BootIsoInputs;
use super::error::VmediaError;
use super::inputs::{self, invalid_driver_info, invalid_node};
use super::record::{MediaKind, MediaRecord};

/// What the instance boots from virtual media, when it does.
pub(super) struct InstanceInputs {
    pub bmc: DriverInfo,
    pub publishing: inputs::Publishing,
    pub iso: BootIsoInputs,
}

impl super::VirtualMediaBoot {
    /// `None` for a whole-disk image; the boot ISO's inputs otherwise.
    pub(super) fn instance_inputs(&self, node: &Node) -> Result<Option<InstanceInputs>, BootError> {
        let (kernel, ramdisk, root) = match instance_kind(node, true, "from virtual media")
            .map_err(invalid_node)?
        {
            InstanceKind::WholeDisk => return Ok(None),
            InstanceKind::Partition { kernel, ramdisk } => {
                let uuid = recorded_root(node)
                    .ok_or_else(|| BootError::failed(super::NAME, node, VmediaError::NoRootUuid))?;
                (kernel, ramdisk, Some(uuid))
            }
            InstanceKind::Ramdisk { kernel, ramdisk } => (kernel, ramdisk, None),
        };
        let mut cmdline = inputs::append_params(node, &self.default_append)?;
        match root {
            Some(uuid) => cmdline
                .push(
                    "driver_internal_info.root_uuid_or_disk_id",
                    "root",
                    Some(&format!("UUID={uuid}")),
                )
                .map_err(invalid_node)?,
            None => {
                let mut ramdisk_boot = KernelParams::parse("ramdisk boot", "root=/dev/ram0 text")
                    .map_err(invalid_node)?;
                if let Some(args) = node
                    .instance_info
                    .get("ramdisk_kernel_arguments")
                    .and_then(serde_json::Value::as_str)
                {
                    let extra = KernelParams::parse("instance_info.ramdisk_kernel_arguments", args)
                        .map_err(invalid_node)?;
                    ramdisk_boot.extend(&extra);
                }
                // Ironic's ramdisk boot line: root and text first, no other parameters.
                cmdline = ramdisk_boot;
            }
        }
        Ok(Some(InstanceInputs {
            bmc: DriverInfo::parse(&node.driver_info).map_err(invalid_driver_info)?,
            publishing: inputs::publishing(node)?,
            iso: BootIsoInputs {
                kernel,
                ramdisk,
                cmdline: cmdline.to_cmdline(),
                mode: inputs::boot_mode(node, self.config.default_boot_mode)?,
            },
        }))
    }

    /// Publishes and inserts the instance boot ISO. `first` (the deploy's end, not a take
    /// over): the slots are emptied first and the deploy media unpublished afterwards.
    pub(super) async fn install_boot_iso(
        &self,
        ctx: &mut NodeContext,
        inputs: &InstanceInputs,
        first: bool,
    ) -> Result<(), VmediaError> {
        let mut record = MediaRecord::read(&ctx.node);
        if record.name_secret.is_empty() {
            record = MediaRecord::fresh()?;
        }
        let publisher = self.publisher(&inputs.publishing)?;
        let node = ctx.node.uuid;
        let ((_scratch, built), system) = tokio::try_join!(
            self.build_boot_iso(node, &inputs.iso, &record),
            self.connect_and_eject(&inputs.bmc, first),
        )?;
        let name = record.name(MediaKind::BootIso);
        let published = publisher
            .publish(&built.path, &name)
            .await
            .map_err(|source| VmediaError::Publish {
                what: built.what,
                source,
            })?;
        let moved_from = record
            .entry(MediaKind::BootIso)
            .map(|e| e.backend)
            .filter(|old| *old != publisher.backend());
        record.add(MediaKind::BootIso, publisher.backend());
        record.write(&mut ctx.node);
        if let Some(old) = moved_from {
            self.unpublish_from(old, &name).await;
        }
        self.insert(&system, &built, &published.url).await?;
        if first {
            self.unpublish_ramdisk_media(ctx).await?;
        }
        tracing::info!(%node, backend = %publisher.backend(), "instance boot ISO published and inserted");
        Ok(())
    }

    /// Unpublishes the deploy ISO and floppy once the instance boots from its own medium.
    async fn unpublish_ramdisk_media(&self, ctx: &mut NodeContext) -> Result<(), VmediaError> {
        let record = MediaRecord::read(&ctx.node);
        let (ramdisk, rest): (Vec<_>, Vec<_>) = record
            .published
            .iter()
            .copied()
            .partition(|e| e.kind.is_ramdisk());
        if ramdisk.is_empty() {
            return Ok(());
        }
        // Unpublish through the common path on a record that lists the ramdisk media only,
        // then put the instance's entries back.
        let only_ramdisk = MediaRecord {
            name_secret: record.name_secret.clone(),
            published: ramdisk,
        };
        only_ramdisk.write(&mut ctx.node);
        let result = self.unpublish_recorded(ctx).await;
        let mut left = MediaRecord::read(&ctx.node);
        left.name_secret = record.name_secret;
        left.published.extend(rest);
        left.write(&mut ctx.node);
        result
    }
}
