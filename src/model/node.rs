//! The node record and the rules every node obeys, independent of storage or transport.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

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
        hw.boot
            .check("boot_interface", &self.boot_interface, &self.driver)?;
        hw.deploy
            .check("deploy_interface", &self.deploy_interface, &self.driver)?;
        hw.power
            .check("power_interface", &self.power_interface, &self.driver)?;
        hw.management.check(
            "management_interface",
            &self.management_interface,
            &self.driver,
        )?;
        Ok(())
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

/// The interfaces one hardware type offers, with its default.
#[derive(Debug, Clone, Copy)]
pub struct InterfaceSet {
    pub default: &'static str,
    pub enabled: &'static [&'static str],
}

impl InterfaceSet {
    fn check(&self, field: &'static str, value: &str, driver: &str) -> Result<(), NodeError> {
        if self.enabled.contains(&value) {
            Ok(())
        } else {
            Err(NodeError::UnsupportedInterface {
                field,
                value: value.to_string(),
                driver: driver.to_string(),
                allowed: self.enabled.join(", "),
            })
        }
    }
}

/// A hardware type (Ironic's `driver`): which interfaces a node of that type may use.
#[derive(Debug, Clone, Copy)]
pub struct HardwareType {
    pub name: &'static str,
    pub boot: InterfaceSet,
    pub deploy: InterfaceSet,
    pub power: InterfaceSet,
    pub management: InterfaceSet,
}

/// Every hardware type ironboot knows, in the order the API lists them.
pub const HARDWARE_TYPES: &[HardwareType] = &[
    HardwareType {
        name: "fake-hardware",
        boot: InterfaceSet {
            default: "fake",
            enabled: &["fake", "pxe", "ipxe"],
        },
        deploy: InterfaceSet {
            default: "fake",
            enabled: &["fake", "direct"],
        },
        power: InterfaceSet {
            default: "fake",
            enabled: &["fake", "script"],
        },
        management: InterfaceSet {
            default: "fake",
            enabled: &["fake"],
        },
    },
    // Power and boot device over IPMI (ipmitool), network boot, agent deploy: Bifrost's default.
    HardwareType {
        name: "ipmi",
        boot: InterfaceSet {
            default: "pxe",
            enabled: &["pxe", "ipxe"],
        },
        deploy: InterfaceSet {
            default: "direct",
            enabled: &["direct"],
        },
        power: InterfaceSet {
            default: "ipmitool",
            enabled: &["ipmitool"],
        },
        management: InterfaceSet {
            default: "ipmitool",
            enabled: &["ipmitool"],
        },
    },
    // The operator powers the node and sets its boot order by hand: `fake` power records the
    // state asked for, `noop` management logs the device. Ironic's `agent` power (which needs
    // fast track) is not offered.
    HardwareType {
        name: "manual-management",
        boot: InterfaceSet {
            default: "pxe",
            enabled: &["pxe", "ipxe"],
        },
        deploy: InterfaceSet {
            default: "direct",
            enabled: &["direct"],
        },
        power: InterfaceSet {
            default: "fake",
            enabled: &["fake"],
        },
        management: InterfaceSet {
            default: "noop",
            enabled: &["noop", "fake"],
        },
    },
    // A Redfish BMC (iLO 5+, iDRAC, XCC, OpenBMC): power and boot device over Redfish, the
    // deploy ramdisk from virtual media by default (Ironic's `redfish` hardware type).
    HardwareType {
        name: "redfish",
        boot: InterfaceSet {
            default: "redfish-virtual-media",
            enabled: &["redfish-virtual-media", "pxe", "ipxe"],
        },
        deploy: InterfaceSet {
            default: "direct",
            enabled: &["direct"],
        },
        power: InterfaceSet {
            default: "redfish",
            enabled: &["redfish"],
        },
        management: InterfaceSet {
            default: "redfish",
            enabled: &["redfish"],
        },
    },
];

impl HardwareType {
    pub fn find(name: &str) -> Option<&'static HardwareType> {
        HARDWARE_TYPES.iter().find(|h| h.name == name)
    }

    pub fn names() -> Vec<&'static str> {
        HARDWARE_TYPES.iter().map(|h| h.name).collect()
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
