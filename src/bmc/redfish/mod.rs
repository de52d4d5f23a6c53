//! The Redfish client: what the `redfish` power and management interfaces and the
//! `redfish-virtual-media` boot interface use to drive a BMC (iLO 5+, iDRAC, XCC, OpenBMC,
//! sushy-tools...).
//!
//! - [`DriverInfo::parse`] reads a node's driver_info (Ironic's keys) without touching the
//!   network: use it in `validate`.
//! - [`Redfish`] is shared by every interface of the conductor: settings, HTTP clients and
//!   the session cache (one session per BMC and user, reused across calls and nodes).
//! - [`Redfish::connect`] finds the node's [`RedfishSystem`]: power ([`RedfishSystem::set_power`]
//!   waits for the new state), boot source override, virtual media.
//! - Every [`RedfishError`] names the BMC and the call, carries the BMC's own messages, and
//!   has an [`ErrorClass`] telling bad driver_info, credentials and missing features apart
//!   from an unreachable BMC; [`Advised`] adds what the operator should do.
//! - [`RedfishPower`] and [`RedfishManagement`] are the `redfish` power and management
//!   interfaces built on it (the boot interface is `boot::vmedia`).
//!
//! Nothing here logs a password or a session token.

mod client;
mod connect;
pub mod driver_info;
mod error;
mod management;
pub mod metrics;
mod odata;
mod power;
mod session;
pub mod settings;
mod system;
mod tls;
mod vmedia;

pub use connect::Redfish;
pub use driver_info::{AuthType, DriverInfo, Secret, VerifyCa};
pub use error::{Advised, ErrorClass, RedfishError};
pub use management::RedfishManagement;
pub use metrics::RedfishMetrics;
pub use power::RedfishPower;
pub use session::SessionCache;
pub use settings::RedfishSettings;
pub use system::{
    BootDevice, BootFrequency, BootMode, BootOverride, PowerState, PowerTarget, RedfishSystem,
    ResetType,
};
pub use vmedia::{MediaKind, VirtualMediaSlot};

#[cfg(test)]
mod tests {
    use super::*;

    fn is_send<T: Send>(_: T) {}

    /// Interfaces box these futures as `Send` (the conductor's task futures): this only
    /// has to compile.
    #[allow(dead_code)]
    fn system_futures_are_send(s: &RedfishSystem) {
        is_send(s.power_state());
        is_send(s.set_power(PowerTarget::Reboot));
        is_send(s.reset(ResetType::ForceOff));
        is_send(s.boot_override());
        is_send(s.set_boot_override(BootDevice::Cd, BootFrequency::Once, Some(BootMode::Uefi)));
        is_send(s.insert_media(MediaKind::Cd, "http://x/boot.iso"));
        is_send(s.eject_media(MediaKind::Floppy));
        is_send(s.eject_all());
        is_send(s.virtual_media());
    }

    #[test]
    fn the_shared_handle_is_send_and_sync() {
        fn is_sync<T: Send + Sync + 'static>(_: &T) {}
        let r = Redfish::new(RedfishSettings::default(), None).unwrap();
        is_sync(&r);
        let info = DriverInfo::parse(
            serde_json::json!({"redfish_address": "127.0.0.1:1"})
                .as_object()
                .unwrap(),
        )
        .unwrap();
        is_send(r.connect(&info));
        is_send(r.close());
        // Bad settings are refused at construction.
        let bad = RedfishSettings {
            connection_attempts: 0,
            ..RedfishSettings::default()
        };
        assert!(Redfish::new(bad, None).is_err());
    }
}

/// Every parser of BMC answers in this module, on one document (the `fuzz/` targets call
/// this; built only with `--cfg fuzzing`).
#[cfg(fuzzing)]
pub fn fuzz_parse_answer(bytes: &[u8]) {
    let _ = error::text_excerpt(bytes);
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return;
    };
    let _ = error::redfish_messages(&doc);
    for key in ["Systems", "Members", "VirtualMedia", "Manager", "@odata.id"] {
        let _ = odata::link(&doc, key);
        let _ = odata::links(doc.get(key));
        let _ = odata::string(&doc, key);
        let _ = odata::allowable(&doc, key);
        let _ = odata::last_segment(key);
    }
    if let Some(id) = doc.get("@odata.id").and_then(serde_json::Value::as_str) {
        let _ = odata::same_path(id, "/redfish/v1/Systems/1");
        let _ = odata::last_segment(id);
    }
}
