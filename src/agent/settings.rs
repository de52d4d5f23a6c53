//! `[agent]`: how the conductor talks to the ironic-python-agent (the `direct` deploy).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::BootMode;
use crate::settings::{SettingError, positive, secs};

/// Image formats an agent may be told to write.
const FORMATS: &[&str] = &["raw", "gpt", "qcow2", "iso", "vmdk", "vdi", "vhd", "vhdx"];

/// `[agent]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentSettings {
    /// Refuse heartbeats whose `callback_url` is not `https://` (the agent's auto-TLS, pinned
    /// to the certificate it sends). Plain http only when this is false.
    pub require_tls: bool,
    /// How long one command request to the agent may take.
    #[serde(with = "secs")]
    pub command_timeout: Duration,
    /// Attempts of one command request when the agent cannot be reached.
    pub max_command_attempts: u32,
    /// Between polls of a command the conductor waits for (`install_bootloader`).
    #[serde(with = "secs")]
    pub command_wait_interval: Duration,
    /// Polls of such a command before giving up.
    pub command_wait_attempts: u32,
    /// Let the agent write raw images straight to disk while downloading.
    pub stream_raw_images: bool,
    /// `http` (alias `local`): cache `instance_info.image_source` and serve it from
    /// `<http_root>/agent_images/<node>`; `direct`: hand an http(s) `image_source` to the
    /// agent as it is (its checksum must then be in `instance_info`).
    pub image_download_source: ImageDownloadSource,
    /// Power-state polls after `standby.power_off` before a hard power off.
    pub post_deploy_get_power_state_retries: u32,
    /// Between those polls.
    #[serde(with = "secs")]
    pub post_deploy_get_power_state_retry_interval: Duration,
    /// Boot mode of nodes that do not say (`properties.capabilities` `boot_mode:`).
    pub default_boot_mode: BootMode,
    /// Allow the agent to install a BIOS boot loader for partition images.
    pub enable_bios_bootloader_install: bool,
    /// Allow md5 image checksums (handed to the agent as `agent_md5_checksum_enable`).
    pub md5_checksum_enable: bool,
    /// Image formats the agent may write (`permitted_image_formats`).
    pub permitted_image_formats: Vec<String>,
    /// Wipe the disk metadata through the agent's `erase_devices_metadata` clean step when a
    /// node is undeployed (boots the agent once more while the node is cleaning).
    pub erase_metadata_on_undeploy: bool,
}

impl Default for AgentSettings {
    fn default() -> Self {
        AgentSettings {
            require_tls: true,
            command_timeout: Duration::from_secs(60),
            max_command_attempts: 3,
            command_wait_interval: Duration::from_secs(6),
            command_wait_attempts: 100,
            stream_raw_images: true,
            image_download_source: ImageDownloadSource::Http,
            post_deploy_get_power_state_retries: 6,
            post_deploy_get_power_state_retry_interval: Duration::from_secs(5),
            default_boot_mode: BootMode::Uefi,
            enable_bios_bootloader_install: false,
            md5_checksum_enable: false,
            permitted_image_formats: ["raw", "gpt", "qcow2", "iso"].map(String::from).to_vec(),
            erase_metadata_on_undeploy: false,
        }
    }
}

/// Where the agent downloads the instance image from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageDownloadSource {
    /// ironboot fetches `image_source` into its image cache and serves it from its own HTTP
    /// server at `<http_url>/agent_images/<node uuid>` (Ironic's `http` for Glance images;
    /// `local` is accepted as a synonym).
    #[serde(alias = "local")]
    Http,
    /// The agent downloads `image_source` itself (an http(s) URL it can reach).
    Direct,
}

impl AgentSettings {
    pub fn validate(&self) -> Result<(), SettingError> {
        positive("agent.command_timeout", self.command_timeout)?;
        positive("agent.command_wait_interval", self.command_wait_interval)?;
        for (key, v) in [
            ("agent.max_command_attempts", self.max_command_attempts),
            ("agent.command_wait_attempts", self.command_wait_attempts),
        ] {
            if v == 0 {
                return Err(SettingError::new(key, v, "must be > 0"));
            }
        }
        if self.permitted_image_formats.is_empty() {
            return Err(SettingError::new(
                "agent.permitted_image_formats",
                "[]",
                "list at least one image format",
            ));
        }
        if let Some(bad) = self
            .permitted_image_formats
            .iter()
            .find(|f| !FORMATS.contains(&f.as_str()))
        {
            return Err(SettingError::new(
                "agent.permitted_image_formats",
                bad,
                format!("unknown image format; known: {}", FORMATS.join(", ")),
            ));
        }
        Ok(())
    }
}
