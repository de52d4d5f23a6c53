//! `[auto_discovery]`: enrolling machines nobody enrolled when their agent reports an inventory.

use serde::{Deserialize, Serialize};

use crate::settings::SettingError;

/// `[auto_discovery]` (Ironic's section and keys).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AutoDiscoverySettings {
    /// An inventory posted to `/v1/continue_inspection` by a machine none of whose MACs is a
    /// known port enrolls a new node (`enroll`) instead of being refused.
    pub enabled: bool,
    /// The hardware type of discovered nodes; required when enabled.
    pub driver: Option<String>,
}

impl AutoDiscoverySettings {
    pub fn validate(&self) -> Result<(), SettingError> {
        if !self.enabled {
            return Ok(());
        }
        let driver = self.driver.as_deref().unwrap_or_default();
        if crate::model::HardwareType::find(driver).is_none() {
            return Err(SettingError::new(
                "auto_discovery.driver",
                driver,
                "auto_discovery.enabled needs the hardware type of discovered nodes \
                 (fake-hardware, ipmi, manual-management, redfish)",
            ));
        }
        Ok(())
    }

    /// The hardware type to enroll discovered nodes with, when discovery is on.
    pub fn driver_if_enabled(&self) -> Option<String> {
        self.enabled.then(|| self.driver.clone()).flatten()
    }
}
