//! The node record and the rules every node obeys, independent of storage or transport.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::hardware::{HardwareType, InterfaceKind};
use super::state::ProvisionState;

/// A free-form JSON object field (`driver_info`, `properties`, `instance_info`, ...).
pub type Fields = Map<String, Value>;

/// What `reservation` and `conductor_affinity` hold: a conductor host name.
pub type HostName = String;

/// A bare-metal node, as stored and as the API shows it (secrets aside).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub uuid: Uuid,
    pub name: Option<String>,
    pub driver: String,
    pub boot_interface: String,
    pub deploy_interface: String,
    pub power_interface: String,
    pub management_interface: String,
    pub bios_interface: String,
    pub console_interface: String,
    pub firmware_interface: String,
    pub inspect_interface: String,
    pub network_interface: String,
    pub raid_interface: String,
    pub rescue_interface: String,
    pub storage_interface: String,
    pub vendor_interface: String,
    pub driver_info: Fields,
    pub properties: Fields,
    pub instance_info: Fields,
    pub driver_internal_info: Fields,
    pub extra: Fields,
    pub resource_class: Option<String>,
    pub provision_state: ProvisionState,
    pub target_provision_state: Option<ProvisionState>,
    pub power_state: Option<PowerState>,
    pub target_power_state: Option<PowerState>,
    pub last_error: Option<String>,
    pub reservation: Option<HostName>,
    pub conductor_affinity: Option<HostName>,
    pub maintenance: bool,
    pub maintenance_reason: Option<String>,
    /// Traits (`CUSTOM_*` or standard names) that allocations and flavors match on.
    pub traits: Vec<String>,
    pub instance_uuid: Option<Uuid>,
    pub allocation_uuid: Option<Uuid>,
    /// `None` = the conductor's `[conductor] automated_clean` decides.
    pub automated_clean: Option<bool>,
    pub conductor_group: String,
    pub description: Option<String>,
    pub owner: Option<String>,
    pub lessee: Option<String>,
    pub protected: bool,
    pub protected_reason: Option<String>,
    pub retired: bool,
    pub retired_reason: Option<String>,
    pub network_data: Fields,
    pub raid_config: Fields,
    pub target_raid_config: Fields,
    /// The boot mode and secure boot state the management interface last reported.
    pub boot_mode: Option<String>,
    pub secure_boot: Option<bool>,
    pub shard: Option<String>,
    pub parent_node: Option<Uuid>,
    pub instance_name: Option<String>,
    pub disable_power_off: bool,
    pub inspection_started_at: Option<DateTime<Utc>>,
    pub inspection_finished_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: Option<DateTime<Utc>>,
    pub provision_updated_at: Option<DateTime<Utc>>,
}

impl Node {
    /// A new node in `enroll` with the driver's default interfaces.
    pub fn new(uuid: Uuid, driver: &HardwareType, now: DateTime<Utc>) -> Node {
        Node {
            uuid,
            name: None,
            driver: driver.name.to_string(),
            boot_interface: driver.boot.default.to_string(),
            deploy_interface: driver.deploy.default.to_string(),
            power_interface: driver.power.default.to_string(),
            management_interface: driver.management.default.to_string(),
            bios_interface: driver.extras.bios.default.to_string(),
            console_interface: driver.extras.console.default.to_string(),
            firmware_interface: driver.extras.firmware.default.to_string(),
            inspect_interface: driver.extras.inspect.default.to_string(),
            network_interface: driver.extras.network.default.to_string(),
            raid_interface: driver.extras.raid.default.to_string(),
            rescue_interface: driver.extras.rescue.default.to_string(),
            storage_interface: driver.extras.storage.default.to_string(),
            vendor_interface: driver.extras.vendor.default.to_string(),
            driver_info: Fields::new(),
            properties: Fields::new(),
            instance_info: Fields::new(),
            driver_internal_info: Fields::new(),
            extra: Fields::new(),
            resource_class: None,
            provision_state: ProvisionState::Enroll,
            target_provision_state: None,
            power_state: None,
            target_power_state: None,
            last_error: None,
            reservation: None,
            conductor_affinity: None,
            maintenance: false,
            maintenance_reason: None,
            traits: Vec::new(),
            instance_uuid: None,
            allocation_uuid: None,
            automated_clean: None,
            conductor_group: String::new(),
            description: None,
            owner: None,
            lessee: None,
            protected: false,
            protected_reason: None,
            retired: false,
            retired_reason: None,
            network_data: Fields::new(),
            raid_config: Fields::new(),
            target_raid_config: Fields::new(),
            boot_mode: None,
            secure_boot: None,
            shard: None,
            parent_node: None,
            instance_name: None,
            disable_power_off: false,
            inspection_started_at: None,
            inspection_finished_at: None,
            created_at: now,
            updated_at: None,
            provision_updated_at: None,
        }
    }

    /// Checks the invariants a stored node must satisfy; used after every API change.
    pub fn validate(&self) -> Result<(), NodeError> {
        if let Some(name) = &self.name {
            validate_name(name)?;
        }
        let hw = HardwareType::find(&self.driver)
            .ok_or_else(|| NodeError::UnknownDriver(self.driver.clone()))?;
        for kind in InterfaceKind::ALL {
            hw.interfaces(kind)
                .check(kind.field(), self.interface(kind), &self.driver)?;
        }
        Ok(())
    }

    /// The node's interface of `kind`.
    pub fn interface(&self, kind: InterfaceKind) -> &str {
        self.interface_slot(kind)
    }

    pub fn set_interface(&mut self, kind: InterfaceKind, name: String) {
        *self.interface_slot_mut(kind) = name;
    }

    fn interface_slot(&self, kind: InterfaceKind) -> &String {
        match kind {
            InterfaceKind::Bios => &self.bios_interface,
            InterfaceKind::Boot => &self.boot_interface,
            InterfaceKind::Console => &self.console_interface,
            InterfaceKind::Deploy => &self.deploy_interface,
            InterfaceKind::Firmware => &self.firmware_interface,
            InterfaceKind::Inspect => &self.inspect_interface,
            InterfaceKind::Management => &self.management_interface,
            InterfaceKind::Network => &self.network_interface,
            InterfaceKind::Power => &self.power_interface,
            InterfaceKind::Raid => &self.raid_interface,
            InterfaceKind::Rescue => &self.rescue_interface,
            InterfaceKind::Storage => &self.storage_interface,
            InterfaceKind::Vendor => &self.vendor_interface,
        }
    }

    fn interface_slot_mut(&mut self, kind: InterfaceKind) -> &mut String {
        match kind {
            InterfaceKind::Bios => &mut self.bios_interface,
            InterfaceKind::Boot => &mut self.boot_interface,
            InterfaceKind::Console => &mut self.console_interface,
            InterfaceKind::Deploy => &mut self.deploy_interface,
            InterfaceKind::Firmware => &mut self.firmware_interface,
            InterfaceKind::Inspect => &mut self.inspect_interface,
            InterfaceKind::Management => &mut self.management_interface,
            InterfaceKind::Network => &mut self.network_interface,
            InterfaceKind::Power => &mut self.power_interface,
            InterfaceKind::Raid => &mut self.raid_interface,
            InterfaceKind::Rescue => &mut self.rescue_interface,
            InterfaceKind::Storage => &mut self.storage_interface,
            InterfaceKind::Vendor => &mut self.vendor_interface,
        }
    }

    /// The label operators and logs use: the name when there is one, else the uuid.
    pub fn ident(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.uuid.to_string())
    }
}

/// Power states with Ironic's string values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PowerState {
    #[serde(rename = "power on")]
    On,
    #[serde(rename = "power off")]
    Off,
    #[serde(rename = "rebooting")]
    Rebooting,
    #[serde(rename = "soft rebooting")]
    SoftRebooting,
    #[serde(rename = "soft power off")]
    SoftOff,
}

impl PowerState {
    pub fn as_str(self) -> &'static str {
        match self {
            PowerState::On => "power on",
            PowerState::Off => "power off",
            PowerState::Rebooting => "rebooting",
            PowerState::SoftRebooting => "soft rebooting",
            PowerState::SoftOff => "soft power off",
        }
    }

    pub fn parse(s: &str) -> Option<PowerState> {
        [
            Self::On,
            Self::Off,
            Self::Rebooting,
            Self::SoftRebooting,
            Self::SoftOff,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }
}

/// Errors in node fields, each naming the field and the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    #[error(
        "node name {0:?} is invalid: use 1-255 characters from A-Z a-z 0-9 - . _ ~, and not a UUID"
    )]
    InvalidName(String),
    #[error("driver {0:?} is not supported; supported drivers: {list}", list = HardwareType::names().join(", "))]
    UnknownDriver(String),
    #[error("{field} {value:?} is invalid: {reason}")]
    InvalidField {
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error("{field} {value:?} is not supported by driver {driver:?}; choose one of: {allowed}")]
    UnsupportedInterface {
        field: &'static str,
        value: String,
        driver: String,
        allowed: String,
    },
}

/// Ironic's rule for node names: RFC 3986 unreserved characters, and not UUID-like (a name that
/// parses as a UUID would make `/v1/nodes/{ident}` ambiguous).
pub fn validate_name(name: &str) -> Result<(), NodeError> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
        && Uuid::parse_str(name).is_err();
    if ok {
        Ok(())
    } else {
        Err(NodeError::InvalidName(name.to_string()))
    }
}

/// Keys whose values are secrets: shown as `******` by the API and the ramdisk lookup.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("password")
        || k.contains("secret")
        || k.ends_with("token")
        || k.ends_with("_key")
        || k == "key"
}

/// Replaces every secret-looking value (recursively) with `******`.
pub fn mask_secrets(fields: &Fields) -> Fields {
    fields
        .iter()
        .map(|(k, v)| {
            // A flag about a secret (`agent_secret_token_pregenerated`) is not one.
            let masked = if is_secret_key(k) && !v.is_null() && !v.is_boolean() {
                Value::String("******".into())
            } else if let Value::Object(inner) = v {
                Value::Object(mask_secrets(inner))
            } else {
                v.clone()
            };
            (k.clone(), masked)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_follow_ironic_rules() {
        for good in ["node-1", "a", "rack1.slot_2~x", &"n".repeat(255)] {
            validate_name(good).unwrap();
        }
        for bad in [
            "",
            "has space",
            "slash/y",
            "ünïcode",
            &"n".repeat(256),
            "1be26c0b-03f2-4d2e-ae87-c02d7f33c123",
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn new_node_uses_driver_defaults_and_validates() {
        let hw = HardwareType::find("fake-hardware").unwrap();
        let mut n = Node::new(Uuid::new_v4(), hw, Utc::now());
        assert_eq!(n.provision_state, ProvisionState::Enroll);
        n.validate().unwrap();
        n.boot_interface = "nonsense".into();
        let err = n.validate().unwrap_err().to_string();
        assert!(
            err.contains("boot_interface") && err.contains("nonsense"),
            "{err}"
        );
        n.boot_interface = "fake".into();
        n.driver = "ilo".into();
        assert!(matches!(n.validate(), Err(NodeError::UnknownDriver(_))));
    }

    #[test]
    fn ipmi_and_manual_management_take_ironics_interfaces() {
        let ipmi = Node::new(
            Uuid::new_v4(),
            HardwareType::find("ipmi").unwrap(),
            Utc::now(),
        );
        assert_eq!(
            (
                ipmi.boot_interface.as_str(),
                ipmi.deploy_interface.as_str(),
                ipmi.power_interface.as_str(),
                ipmi.management_interface.as_str()
            ),
            ("pxe", "direct", "ipmitool", "ipmitool")
        );
        ipmi.validate().unwrap();
        for (field, value) in [("boot", "ipxe"), ("deploy", "fake"), ("power", "fake")] {
            let mut n = ipmi.clone();
            match field {
                "boot" => n.boot_interface = value.into(),
                "deploy" => n.deploy_interface = value.into(),
                _ => n.power_interface = value.into(),
            }
            assert_eq!(n.validate().is_ok(), field == "boot", "{field} {value}");
        }
        let hw = HardwareType::find("manual-management").unwrap();
        let mut manual = Node::new(Uuid::new_v4(), hw, Utc::now());
        assert_eq!(
            (
                manual.power_interface.as_str(),
                manual.management_interface.as_str()
            ),
            ("fake", "noop")
        );
        manual.management_interface = "fake".into();
        manual.validate().unwrap();
        manual.management_interface = "ipmitool".into();
        let err = manual.validate().unwrap_err().to_string();
        assert!(err.contains("noop, fake"), "{err}");
        let names = HardwareType::names();
        assert!(
            names.contains(&"ipmi") && names.contains(&"manual-management"),
            "{names:?}"
        );
    }

    #[test]
    fn secrets_are_masked_recursively() {
        let f = json!({"redfish_password": "p", "user": "u", "nested": {"agent_secret_token": "t"}, "token": null, "agent_secret_token_pregenerated": true});
        let m = mask_secrets(f.as_object().unwrap());
        assert_eq!(
            Value::Object(m),
            json!({"redfish_password": "******", "user": "u", "nested": {"agent_secret_token": "******"}, "token": null, "agent_secret_token_pregenerated": true})
        );
    }

    #[test]
    fn power_states_round_trip() {
        for p in [
            PowerState::On,
            PowerState::Off,
            PowerState::Rebooting,
            PowerState::SoftRebooting,
            PowerState::SoftOff,
        ] {
            assert_eq!(PowerState::parse(p.as_str()), Some(p));
            assert_eq!(serde_json::to_value(p).unwrap(), json!(p.as_str()));
        }
        assert_eq!(PowerState::parse("on"), None);
    }
}
