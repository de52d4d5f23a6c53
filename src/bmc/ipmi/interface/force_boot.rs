//! Ironic's `ipmi_force_boot_device`: for BMCs that forget a persistent boot device, or refuse
//! to set one, ironboot remembers it in the node and sends it again, as a next-boot-only
//! device, before every power on. A one-time device asked for in between is honoured once.
//!
//! The state lives in `driver_internal_info` under Ironic's keys, so a node moved between
//! Ironic and ironboot keeps its meaning: `persistent_boot_device` (the device) and
//! `is_next_boot_persistent` (`false` while a one-time device is pending).

use serde_json::{Value, json};

use crate::driver::{BootDevice, BootTarget};
use crate::model::Node;

const PERSISTENT_BOOT_DEVICE: &str = "persistent_boot_device";
const NEXT_BOOT_PERSISTENT: &str = "is_next_boot_persistent";

/// Records `target` before it is sent (as a one-time device): a persistent one becomes the
/// device every power on restores; a one-time one marks the next boot as the exception.
pub(super) fn remember(node: &mut Node, target: BootTarget) {
    let dii = &mut node.driver_internal_info;
    if target.persistent {
        dii.remove(NEXT_BOOT_PERSISTENT);
        dii.insert(PERSISTENT_BOOT_DEVICE.into(), json!(target.device.as_str()));
    } else {
        dii.insert(NEXT_BOOT_PERSISTENT.into(), json!(false));
    }
}

/// The remembered persistent device, unless a one-time device is pending.
pub(super) fn remembered(node: &Node) -> Option<BootTarget> {
    let dii = &node.driver_internal_info;
    if dii.get(NEXT_BOOT_PERSISTENT) == Some(&Value::Bool(false)) {
        return None;
    }
    dii.get(PERSISTENT_BOOT_DEVICE)
        .and_then(Value::as_str)
        .and_then(BootDevice::parse)
        .map(BootTarget::persistent)
}

/// Before a power on: the device to send again, if any. A pending one-time device is left in
/// place (and the mark cleared: it is used by this boot).
pub(super) fn device_to_resend(node: &mut Node) -> Option<BootDevice> {
    let dii = &mut node.driver_internal_info;
    if dii.get(NEXT_BOOT_PERSISTENT) == Some(&Value::Bool(false)) {
        dii.remove(NEXT_BOOT_PERSISTENT);
        return None;
    }
    dii.get(PERSISTENT_BOOT_DEVICE)
        .and_then(Value::as_str)
        .and_then(BootDevice::parse)
}
