//! The firmware boot mode of a node and the node fields that choose it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::node::{Fields, Node, NodeError};

/// Firmware boot mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BootMode {
    Bios,
    Uefi,
}

impl BootMode {
    pub fn as_str(self) -> &'static str {
        match self {
            BootMode::Bios => "bios",
            BootMode::Uefi => "uefi",
        }
    }
}

impl std::fmt::Display for BootMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for BootMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "bios" => Ok(BootMode::Bios),
            "uefi" => Ok(BootMode::Uefi),
            other => Err(format!("boot mode {other:?} must be \"bios\" or \"uefi\"")),
        }
    }
}

/// The `key` entry of the `capabilities` field of `fields` (`properties` or `instance_info`).
/// Ironic writes capabilities as `"k1:v1,k2:v2"`; some clients send a JSON object.
pub fn capability(fields: &Fields, key: &str) -> Option<String> {
    match fields.get("capabilities") {
        Some(Value::String(s)) => s.split(',').find_map(|kv| {
            let (k, v) = kv.split_once(':')?;
            (k.trim() == key).then(|| v.trim().to_string())
        }),
        Some(Value::Object(m)) => m.get(key).and_then(Value::as_str).map(String::from),
        _ => None,
    }
}

impl Node {
    /// A `properties.capabilities` entry.
    pub fn capability(&self, key: &str) -> Option<String> {
        capability(&self.properties, key)
    }

    /// The boot mode to deploy with: `instance_info.deploy_boot_mode`, else the `boot_mode`
    /// capability, else `default` (as Ironic resolves it).
    pub fn boot_mode(&self, default: BootMode) -> Result<BootMode, NodeError> {
        let given = match self
            .instance_info
            .get("deploy_boot_mode")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            Some(m) => Some(("instance_info.deploy_boot_mode", m.to_string())),
            None => self
                .capability("boot_mode")
                .map(|m| ("properties.capabilities boot_mode", m)),
        };
        match given {
            None => Ok(default),
            Some((field, value)) => value.parse().map_err(|reason| NodeError::InvalidField {
                field,
                value,
                reason,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::HardwareType;
    use serde_json::json;

    #[test]
    fn boot_mode_precedence() {
        let mut n = Node::new(
            uuid::Uuid::new_v4(),
            HardwareType::find("fake-hardware").unwrap(),
            crate::model::now(),
        );
        assert_eq!(n.boot_mode(BootMode::Uefi).unwrap(), BootMode::Uefi);
        n.properties.insert(
            "capabilities".into(),
            json!("disk_label:gpt, boot_mode:bios"),
        );
        assert_eq!(n.capability("disk_label").as_deref(), Some("gpt"));
        assert_eq!(n.boot_mode(BootMode::Uefi).unwrap(), BootMode::Bios);
        n.instance_info
            .insert("deploy_boot_mode".into(), json!("uefi"));
        assert_eq!(n.boot_mode(BootMode::Bios).unwrap(), BootMode::Uefi);
        n.instance_info
            .insert("deploy_boot_mode".into(), json!("legacy"));
        let err = n.boot_mode(BootMode::Bios).unwrap_err().to_string();
        assert!(
            err.contains("deploy_boot_mode") && err.contains("legacy"),
            "{err}"
        );
        n.properties
            .insert("capabilities".into(), json!({"boot_mode": "uefi"}));
        assert_eq!(n.capability("boot_mode").as_deref(), Some("uefi"));
    }
}
