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
    /// Random passes when `erase_devices` falls back to shred.
    pub shred_random_overwrite_iterations: u32,
    /// A final pass of zeros after shred's random passes.
    pub shred_final_overwrite_with_zeros: bool,
    /// Shred a disk whose ATA/NVMe secure erase failed, instead of failing the step.
    pub continue_if_disk_secure_erase_fails: bool,
    /// Try ATA secure erase first (disks that offer it).
    pub enable_ata_secure_erase: bool,
    /// Try NVMe format first (NVMe disks).
    pub enable_nvme_secure_erase: bool,
    /// Disks the agent erases at once.
    pub disk_erasure_concurrency: u32,
    /// Skip read-only disks instead of failing the erase.
    pub erase_skip_read_only: bool,
}

impl Default for DeploySettings {
    fn default() -> Self {
        DeploySettings {
            http_root: None,
            http_url: None,
            external_http_url: None,
            erase_devices_priority: Some(0),
            erase_devices_metadata_priority: None,
            shred_random_overwrite_iterations: 1,
            shred_final_overwrite_with_zeros: true,
            continue_if_disk_secure_erase_fails: false,
            enable_ata_secure_erase: true,
            enable_nvme_secure_erase: true,
            disk_erasure_concurrency: 4,
            erase_skip_read_only: false,
        }
    }
}

impl DeploySettings {
    /// The priority overrides of automated cleaning, as these settings say.
    pub fn clean_priorities(&self) -> crate::conductor::clean_plan::CleanPriorities {
        crate::conductor::clean_plan::CleanPriorities {
            erase_devices: self.erase_devices_priority,
            erase_devices_metadata: self.erase_devices_metadata_priority,
        }
    }

    /// How the agent's `erase_devices` erases, as these settings say.
    pub fn erase_params(&self) -> crate::conductor::clean_plan::EraseParams {
        crate::conductor::clean_plan::EraseParams {
            shred_random_overwrite_iterations: self.shred_random_overwrite_iterations,
            shred_final_overwrite_with_zeros: self.shred_final_overwrite_with_zeros,
            continue_if_disk_secure_erase_fails: self.continue_if_disk_secure_erase_fails,
            enable_ata_secure_erase: self.enable_ata_secure_erase,
            enable_nvme_secure_erase: self.enable_nvme_secure_erase,
            disk_erasure_concurrency: self.disk_erasure_concurrency,
            erase_skip_read_only: self.erase_skip_read_only,
        }
    }
}
