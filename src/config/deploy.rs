//! `[deploy]`: where the HTTP root lives and how nodes and BMCs reach it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[deploy]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeploySettings {
    /// Root served over HTTP; default `<data_dir>/httpboot`.
    pub http_root: Option<PathBuf>,
    /// URL of `http_root` as nodes see it; default `http://<my_ip>:<http port>`.
    pub http_url: Option<String>,
    /// URL given to BMCs for virtual media, when it differs from `http_url`.
    pub external_http_url: Option<String>,
    /// Priority of the agent's `erase_devices` clean step in automated cleaning (0 disables
    /// it; unset keeps the agent's own, 10). ironboot's default is 0: a full erase of every
    /// disk takes hours, so it runs only when an operator asks for it.
    pub erase_devices_priority: Option<u32>,
    /// Priority of the agent's `erase_devices_metadata` clean step in automated cleaning (0
    /// disables it; unset keeps the agent's own, 99).
    pub erase_devices_metadata_priority: Option<u32>,
}

impl Default for DeploySettings {
    fn default() -> Self {
        DeploySettings {
            http_root: None,
            http_url: None,
            external_http_url: None,
            erase_devices_priority: Some(0),
            erase_devices_metadata_priority: None,
        }
    }
}
