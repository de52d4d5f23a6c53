//! `IpmiSettings`: the `[ipmi]` section of the configuration file — how ipmitool is run.
//!
//! Defaults follow Ironic's where it has one (`[ipmi] command_retry_timeout` 60 s,
//! `min_command_interval` 5 s, `[conductor] power_state_change_timeout` 60 s,
//! `soft_power_off_timeout` 600 s). ipmitool's own per-message timeout and retries (`-N`, `-R`)
//! are kept small so that a silent BMC is noticed in seconds and ironboot's retry loop, which
//! respects the per-BMC interval, does the waiting.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::IpmiError;

/// What the boot-parameter-5 read-back after `chassis bootdev` must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootFlagsCheck {
    /// Device, persistence and UEFI bit as asked.
    #[default]
    Strict,
    /// Only the device: for BMCs that accept persistence or the UEFI bit and drop them (OpenIPMI's
    /// `ipmi_sim`, some vendors). The read-back flags are still returned and logged.
    Device,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IpmiSettings {
    /// The ipmitool program (a name looked up on PATH, or a path).
    pub ipmitool: PathBuf,
    /// One ipmitool run is killed after this long.
    pub command_timeout_secs: u64,
    /// Time within which a failed command (BMC silent or busy) is tried again; 0 = one try.
    /// No new try starts after it, so one call lasts at most about this plus
    /// `command_timeout_secs`.
    pub command_retry_timeout_secs: u64,
    /// Least time between the end of one command and the start of the next to the same BMC.
    pub min_command_interval_ms: u64,
    /// ipmitool `-N`: seconds it waits for each answer from the BMC.
    pub lan_timeout_secs: u64,
    /// ipmitool `-R`: how often it resends an unanswered message (1 to 10).
    pub lan_retries: u32,
    /// Longest wait for a power state to be reported after power on/off/reset/cycle.
    pub power_state_change_timeout_secs: u64,
    /// Longest wait for the OS to power off after `power soft` before a hard power off.
    pub soft_power_off_timeout_secs: u64,
    /// Time between two power-state reads while waiting.
    pub poll_interval_ms: u64,
    pub boot_flags_check: BootFlagsCheck,
}

impl Default for IpmiSettings {
    fn default() -> Self {
        Self {
            ipmitool: PathBuf::from("ipmitool"),
            command_timeout_secs: 30,
            command_retry_timeout_secs: 60,
            min_command_interval_ms: 5000,
            lan_timeout_secs: 2,
            lan_retries: 1,
            power_state_change_timeout_secs: 60,
            soft_power_off_timeout_secs: 600,
            poll_interval_ms: 1000,
            boot_flags_check: BootFlagsCheck::Strict,
        }
    }
}

impl IpmiSettings {
    /// Refuses a bad value naming the key, the value and the reason.
    pub fn validate(&self) -> Result<(), IpmiError> {
        if self.ipmitool.as_os_str().is_empty() {
            return Err(bad("ipmitool", "\"\"", "must name the ipmitool program"));
        }
        for (key, value) in [
            ("command_timeout_secs", self.command_timeout_secs),
            ("lan_timeout_secs", self.lan_timeout_secs),
            (
                "power_state_change_timeout_secs",
                self.power_state_change_timeout_secs,
            ),
            (
                "soft_power_off_timeout_secs",
                self.soft_power_off_timeout_secs,
            ),
        ] {
            if value == 0 {
                return Err(bad(key, "0", "must be at least 1"));
            }
        }
        // ipmitool reads `-R 0` as "not given" and resends with its own default (a silent
        // BMC then costs ~20 s per run), so one resend is the least there is.
        if self.lan_retries == 0 {
            return Err(bad(
                "lan_retries",
                "0",
                "must be at least 1: ipmitool takes -R 0 as its own default (about 20 s for a silent BMC)",
            ));
        }
        if self.lan_retries > 10 {
            return Err(bad(
                "lan_retries",
                &self.lan_retries.to_string(),
                "must be at most 10 (ironboot retries whole commands itself)",
            ));
        }
        // ipmitool needs several messages per command (session set-up, then the command); it
        // must at least be able to give up on one unanswered message before it is killed.
        let one_message = self
            .lan_timeout_secs
            .saturating_mul(u64::from(self.lan_retries) + 1);
        if self.command_timeout_secs <= one_message {
            return Err(bad(
                "command_timeout_secs",
                &self.command_timeout_secs.to_string(),
                &format!(
                    "must be more than lan_timeout_secs x (lan_retries + 1) = {one_message}, \
                     or ipmitool is killed before it can report a silent BMC"
                ),
            ));
        }
        if !(10..=60_000).contains(&self.poll_interval_ms) {
            return Err(bad(
                "poll_interval_ms",
                &self.poll_interval_ms.to_string(),
                "must be between 10 and 60000",
            ));
        }
        if self.min_command_interval_ms > 60_000 {
            return Err(bad(
                "min_command_interval_ms",
                &self.min_command_interval_ms.to_string(),
                "must be at most 60000",
            ));
        }
        Ok(())
    }

    pub fn command_timeout(&self) -> Duration {
        Duration::from_secs(self.command_timeout_secs)
    }

    pub fn command_retry_timeout(&self) -> Duration {
        Duration::from_secs(self.command_retry_timeout_secs)
    }

    pub fn min_command_interval(&self) -> Duration {
        Duration::from_millis(self.min_command_interval_ms)
    }

    pub fn power_state_change_timeout(&self) -> Duration {
        Duration::from_secs(self.power_state_change_timeout_secs)
    }

    pub fn soft_power_off_timeout(&self) -> Duration {
        Duration::from_secs(self.soft_power_off_timeout_secs)
    }

    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }
}

fn bad(key: &'static str, value: &str, reason: &str) -> IpmiError {
    IpmiError::Settings {
        key,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_follow_ironic() {
        let s: IpmiSettings = toml::from_str("").unwrap();
        assert_eq!(s, IpmiSettings::default());
        s.validate().unwrap();
        assert_eq!(s.command_retry_timeout(), Duration::from_secs(60));
        assert_eq!(s.min_command_interval(), Duration::from_secs(5));
        assert_eq!(s.power_state_change_timeout(), Duration::from_secs(60));
        assert_eq!(s.soft_power_off_timeout(), Duration::from_secs(600));
        assert_eq!(s.boot_flags_check, BootFlagsCheck::Strict);
    }

    #[test]
    fn values_parse_and_convert() {
        let s: IpmiSettings = toml::from_str(
            r#"
            ipmitool = "/usr/local/bin/ipmitool"
            command_timeout_secs = 10
            command_retry_timeout_secs = 0
            min_command_interval_ms = 50
            lan_timeout_secs = 1
            lan_retries = 1
            poll_interval_ms = 100
            boot_flags_check = "device"
            "#,
        )
        .unwrap();
        s.validate().unwrap();
        assert_eq!(s.command_timeout(), Duration::from_secs(10));
        assert_eq!(s.command_retry_timeout(), Duration::ZERO);
        assert_eq!(s.min_command_interval(), Duration::from_millis(50));
        assert_eq!(s.poll_interval(), Duration::from_millis(100));
        assert_eq!(s.boot_flags_check, BootFlagsCheck::Device);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<IpmiSettings>("comand_timeout_secs = 3").unwrap_err();
        assert!(err.to_string().contains("comand_timeout_secs"), "{err}");
    }

    #[test]
    fn bad_values_name_key_value_and_reason() {
        let cases = [
            (
                IpmiSettings {
                    command_timeout_secs: 0,
                    ..Default::default()
                },
                "command_timeout_secs = 0: must be at least 1",
            ),
            (
                IpmiSettings {
                    command_timeout_secs: 4,
                    lan_timeout_secs: 2,
                    lan_retries: 1,
                    ..Default::default()
                },
                "command_timeout_secs = 4: must be more than lan_timeout_secs x (lan_retries + 1) = 4",
            ),
            (
                IpmiSettings {
                    lan_retries: 11,
                    ..Default::default()
                },
                "lan_retries = 11",
            ),
            (
                IpmiSettings {
                    lan_retries: 0,
                    ..Default::default()
                },
                "lan_retries = 0: must be at least 1",
            ),
            (
                IpmiSettings {
                    poll_interval_ms: 1,
                    ..Default::default()
                },
                "poll_interval_ms = 1",
            ),
            (
                IpmiSettings {
                    ipmitool: PathBuf::new(),
                    ..Default::default()
                },
                "ipmitool = \"\"",
            ),
        ];
        for (settings, want) in cases {
            let err = settings.validate().unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
            assert!(err.starts_with("[ipmi] "), "{err}");
        }
    }
}
