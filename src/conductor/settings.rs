//! `[conductor]`: the control loop's settings.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::settings::{SettingError, positive, secs};

/// `[conductor]`. Durations are whole seconds in the file; a zero timeout or interval where
/// noted disables what it times.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConductorSettings {
    /// This conductor's group (Ironic's `[conductor] conductor_group`): it serves the nodes
    /// whose `conductor_group` is the same (empty: the default group).
    pub conductor_group: String,
    /// Between keepalive touches of this conductor's row.
    #[serde(with = "secs")]
    pub heartbeat_interval: Duration,
    /// After which a silent conductor counts as dead.
    #[serde(with = "secs")]
    pub heartbeat_timeout: Duration,
    /// Between runs of the provision-state checks (callback timeouts).
    #[serde(with = "secs")]
    pub check_provision_state_interval: Duration,
    /// How long a node may stay in `wait call-back` without progress (0: forever).
    #[serde(with = "secs")]
    pub deploy_callback_timeout: Duration,
    /// How long a node may stay in `clean wait` without progress (0: forever).
    #[serde(with = "secs")]
    pub clean_callback_timeout: Duration,
    /// How long a node may stay in `inspect wait` for the agent's inventory (0: forever).
    #[serde(with = "secs")]
    pub inspect_wait_timeout: Duration,
    /// How long a node may stay in `rescue wait` for the rescue agent (0: forever).
    #[serde(with = "secs")]
    pub rescue_callback_timeout: Duration,
    /// Run automated cleaning on provide and after undeploy (a node's own `automated_clean`
    /// wins when set). Nodes whose deploy interface has no clean steps (`fake`) pass straight
    /// through; the `direct` interface boots the agent and runs its steps.
    pub automated_clean: bool,
    /// Most deploy/undeploy/power operations running at once.
    pub max_concurrent_operations: usize,
    /// Power the node off when a deploy fails (Ironic's `power_off_after_deploy_failure`).
    pub power_off_after_deploy_failure: bool,
    /// Between image cache clean-ups (TTL and size cap); 0 disables them.
    #[serde(with = "secs")]
    pub cache_clean_up_interval: Duration,
    /// Between take-over runs (nodes whose boot files another conductor served get them
    /// regenerated here); 0 disables them.
    #[serde(with = "secs")]
    pub sync_local_state_interval: Duration,
    /// Enable the `script` power interface. It runs commands named in a node's driver_info on
    /// this host, so anyone allowed to edit nodes could run programs here: labs and tests only.
    pub enable_script_power: bool,
    /// Between runs of the power state sync (Ironic's `sync_power_states`); 0 disables it.
    #[serde(with = "secs")]
    pub sync_power_state_interval: Duration,
    /// Power states read at once during a sync run.
    pub sync_power_state_workers: usize,
    /// Failed syncs of one node in a row tolerated; the next failure puts it in maintenance.
    pub power_state_sync_max_retries: u32,
    /// When the hardware disagrees with the recorded power state, put the hardware back into
    /// the recorded state instead of recording what it says (Ironic's default is true).
    pub force_power_state_during_sync: bool,
}

impl Default for ConductorSettings {
    fn default() -> Self {
        ConductorSettings {
            conductor_group: String::new(),
            heartbeat_interval: Duration::from_secs(10),
            heartbeat_timeout: Duration::from_secs(60),
            check_provision_state_interval: Duration::from_secs(60),
            deploy_callback_timeout: Duration::from_secs(1800),
            clean_callback_timeout: Duration::from_secs(1800),
            inspect_wait_timeout: Duration::from_secs(1800),
            rescue_callback_timeout: Duration::from_secs(1800),
            automated_clean: true,
            max_concurrent_operations: 64,
            power_off_after_deploy_failure: true,
            cache_clean_up_interval: Duration::from_secs(3600),
            sync_local_state_interval: Duration::from_secs(180),
            enable_script_power: false,
            sync_power_state_interval: Duration::from_secs(60),
            sync_power_state_workers: 8,
            power_state_sync_max_retries: 3,
            force_power_state_during_sync: false,
        }
    }
}

impl ConductorSettings {
    pub fn validate(&self) -> Result<(), SettingError> {
        if let Some(bad) = self
            .conductor_group
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(SettingError::new(
                "conductor.conductor_group",
                &self.conductor_group,
                format!("{bad:?} is not allowed: letters, digits, '.', '_' and '-' only"),
            ));
        }
        positive("conductor.heartbeat_interval", self.heartbeat_interval)?;
        positive("conductor.heartbeat_timeout", self.heartbeat_timeout)?;
        positive(
            "conductor.check_provision_state_interval",
            self.check_provision_state_interval,
        )?;
        if self.heartbeat_timeout <= self.heartbeat_interval {
            return Err(SettingError::new(
                "conductor.heartbeat_timeout",
                self.heartbeat_timeout.as_secs(),
                format!(
                    "must be longer than conductor.heartbeat_interval ({})",
                    self.heartbeat_interval.as_secs()
                ),
            ));
        }
        if self.sync_power_state_workers == 0 {
            return Err(SettingError::new(
                "conductor.sync_power_state_workers",
                0,
                "must be > 0",
            ));
        }
        if self.max_concurrent_operations == 0 {
            return Err(SettingError::new(
                "conductor.max_concurrent_operations",
                0,
                "must be > 0",
            ));
        }
        Ok(())
    }
}
