//! `image.install_bootloader`. A whole-disk image brings its own boot loader: nothing to do
//! (as IPA, for a null or `0x...` root UUID). A partition image would need GRUB installed
//! into it, and this ramdisk carries no GRUB: that is refused clearly (unless the conductor
//! says to ignore boot loader failures), so partition images boot over the network.

use std::sync::Arc;

use futures_util::FutureExt;
use serde_json::{Map, Value};

use super::{Kind, RestError, Spec, no_validation, str_param};
use crate::agent::Agent;

pub static SPECS: &[Spec] = &[Spec {
    extension: "image",
    name: "install_bootloader",
    kind: Kind::Async,
    required: &[],
    optional: Some(&[
        "root_uuid",
        "efi_system_part_uuid",
        "prep_boot_part_uuid",
        "target_boot_mode",
        "ignore_bootloader_failure",
    ]),
    validate: no_validation,
    run: |agent, p| install_bootloader(agent, p).boxed(),
}];

async fn install_bootloader(agent: Arc<Agent>, p: Map<String, Value>) -> Result<Value, RestError> {
    let root = str_param(&p, "root_uuid")?;
    let mode = str_param(&p, "target_boot_mode")?.unwrap_or("bios");
    let ignore = p
        .get("ignore_bootloader_failure")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if root.is_none_or(|r| r.starts_with("0x")) {
        tracing::info!(
            boot_mode = mode,
            "whole-disk image: it carries its own boot loader; nothing installed \
             (UEFI boot entries are not managed: the firmware finds \\EFI\\BOOT\\BOOTX64.EFI)"
        );
        return Ok(Value::Null);
    }
    let error = if mode != "uefi" && !agent.lookup_config().enable_bios_bootloader_install {
        RestError::invalid_image(
            "installing a BIOS boot loader into a partition image is disabled: the \
             conductor's lookup did not set enable_bios_bootloader_install",
        )
    } else {
        RestError::incompatible_hardware(format!(
            "ironboot-agent's ramdisk carries no GRUB to install into the partition image \
             (root {}, {mode}): boot the instance over the network (the conductor's \
             boot_partition entry) or deploy a whole-disk image",
            root.unwrap_or_default()
        ))
    };
    if ignore {
        tracing::warn!(error = %error, "boot loader not installed (ignore_bootloader_failure)");
        return Ok(Value::Null);
    }
    Err(error)
}
