//! What a node boots once deployed, read from its record the same way by every boot interface
//! (network boot and virtual media):
//!
//! - a ramdisk boot when `instance_info.capabilities` has `boot_option:ramdisk`;
//! - else a partition image when `driver_internal_info.is_whole_disk_image` is false (or,
//!   before a deploy recorded it, when `instance_info.image_type` is `partition`, or kernel
//!   and ramdisk are both given);
//! - else a whole-disk image.
//!
//! Partition images and ramdisk boots need `instance_info.kernel` and `ramdisk`.

use serde_json::{Map, Value};

use crate::model::Node;
use crate::model::boot_mode::capability;

/// What the node boots once deployed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceKind {
    WholeDisk,
    Partition { kernel: String, ramdisk: String },
    Ramdisk { kernel: String, ramdisk: String },
}

fn text<'a>(fields: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    fields
        .get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// The instance `node` boots. With `recorded`, what the running deploy recorded
/// (`is_whole_disk_image`) decides; before a deploy that value belongs to the previous one.
/// `how` completes the error for a missing kernel or ramdisk ("over the network").
pub fn instance_kind(node: &Node, recorded: bool, how: &str) -> Result<InstanceKind, String> {
    let info = &node.instance_info;
    let images = || {
        let get = |key: &str| {
            let href = text(info, key).ok_or_else(|| {
                format!("instance_info.{key} is required to boot the instance {how}")
            })?;
            crate::images::source::Source::parse(href)
                .map_err(|e| format!("instance_info.{key}: {e}"))?;
            Ok::<_, String>(href.to_string())
        };
        Ok::<_, String>((get("kernel")?, get("ramdisk")?))
    };
    if capability(&node.instance_info, "boot_option").as_deref() == Some("ramdisk") {
        let (kernel, ramdisk) = images()?;
        return Ok(InstanceKind::Ramdisk { kernel, ramdisk });
    }
    let whole_disk = match node
        .driver_internal_info
        .get("is_whole_disk_image")
        .and_then(Value::as_bool)
        .filter(|_| recorded)
    {
        Some(w) => w,
        None => match text(info, "image_type") {
            Some("partition") => false,
            Some(_) => true,
            None => text(info, "kernel").is_none() || text(info, "ramdisk").is_none(),
        },
    };
    if whole_disk {
        return Ok(InstanceKind::WholeDisk);
    }
    let (kernel, ramdisk) = images()?;
    Ok(InstanceKind::Partition { kernel, ramdisk })
}

/// `driver_internal_info.root_uuid_or_disk_id`: the root filesystem UUID the agent reported
/// for a partition image (the disk identifier for a whole-disk one).
pub fn recorded_root(node: &Node) -> Option<String> {
    text(&node.driver_internal_info, "root_uuid_or_disk_id").map(String::from)
}
