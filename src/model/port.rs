//! Ports: the MAC addresses through which a node boots and is looked up.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::node::Fields;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Port {
    pub uuid: Uuid,
    pub node_uuid: Uuid,
    pub address: MacAddress,
    pub pxe_enabled: bool,
    pub extra: Fields,
    /// The switch port the NIC is cabled to (`switch_id`, `port_id`, `switch_info`, ...).
    pub local_link_connection: Fields,
    pub physical_network: Option<String>,
    pub is_smartnic: bool,
    pub internal_info: Fields,
    pub name: Option<String>,
    pub description: Option<String>,
    pub vendor: Option<String>,
    pub category: Option<String>,
    pub available_for_dynamic_portgroup: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl Port {
    /// A new port with Ironic's defaults (PXE enabled, no switch information).
    pub fn new(uuid: Uuid, node_uuid: Uuid, address: MacAddress, now: DateTime<Utc>) -> Port {
        Port {
            uuid,
            node_uuid,
            address,
            pxe_enabled: true,
            extra: Fields::new(),
            local_link_connection: Fields::new(),
            physical_network: None,
            is_smartnic: false,
            internal_info: Fields::new(),
            name: None,
            description: None,
            vendor: None,
            category: None,
            available_for_dynamic_portgroup: true,
            created_at: now,
            updated_at: None,
        }
    }
}

/// A 48-bit MAC address, always held lower-case and colon-separated.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MacAddress(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a valid MAC address (expected six hex octets such as 52:54:00:12:34:56)")]
pub struct InvalidMac(pub String);

impl MacAddress {
    /// Parses `aa:bb:cc:dd:ee:ff` or `aa-bb-cc-dd-ee-ff` in any case.
    pub fn parse(s: &str) -> Result<MacAddress, InvalidMac> {
        let sep = if s.contains('-') { '-' } else { ':' };
        let octets: Vec<&str> = s.split(sep).collect();
        let valid = octets.len() == 6
            && octets
                .iter()
                .all(|o| o.len() == 2 && o.bytes().all(|b| b.is_ascii_hexdigit()));
        if !valid {
            return Err(InvalidMac(s.to_string()));
        }
        Ok(MacAddress(octets.join(":").to_ascii_lowercase()))
    }

    /// `aa:bb:cc:dd:ee:ff`
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `aa-bb-cc-dd-ee-ff`, the form PXELINUX and iPXE file names use.
    pub fn hyphenated(&self) -> String {
        self.0.replace(':', "-")
    }
}

impl TryFrom<String> for MacAddress {
    type Error = InvalidMac;
    fn try_from(s: String) -> Result<Self, InvalidMac> {
        MacAddress::parse(&s)
    }
}

impl From<MacAddress> for String {
    fn from(m: MacAddress) -> String {
        m.0
    }
}

impl std::fmt::Display for MacAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_normalise_and_reject_garbage() {
        assert_eq!(
            MacAddress::parse("52:54:00:AB:cd:EF").unwrap().as_str(),
            "52:54:00:ab:cd:ef"
        );
        assert_eq!(
            MacAddress::parse("52-54-00-ab-cd-ef").unwrap().as_str(),
            "52:54:00:ab:cd:ef"
        );
        assert_eq!(
            MacAddress::parse("52:54:00:ab:cd:ef").unwrap().hyphenated(),
            "52-54-00-ab-cd-ef"
        );
        for bad in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:ef:01",
            "52:54:00:ab:cd:eg",
            "5254.00ab.cdef",
            "52:54-00:ab:cd:ef",
            "052:54:00:ab:cd:e",
        ] {
            assert!(MacAddress::parse(bad).is_err(), "{bad:?}");
        }
    }
}
