//! `RedfishSettings`: the `[redfish]` section. How hard the client tries and how long it
//! waits, and the kernel parameters the `redfish-virtual-media` boot interface puts on the ISOs
//! it builds. Defaults follow Ironic where it has an equivalent (`[redfish]
//! connection_attempts` 5, `[conductor] power_state_change_timeout` 60 s, `[redfish]
//! kernel_append_params` `nofb vga=normal`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::RedfishError;

/// The longest pause between two attempts, however many attempts are allowed.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedfishSettings {
    /// Attempts per call when the BMC cannot be reached or answers 5xx.
    pub connection_attempts: u32,
    /// Pause after the first failed attempt; it doubles after each further one (up to 30 s).
    pub connection_retry_interval_ms: u64,
    /// Longest wait for a TCP (and TLS) connection.
    pub connect_timeout_secs: u64,
    /// Longest wait for a whole answer. InsertMedia may take this long: some BMCs (and
    /// sushy-tools) download the image before they answer.
    pub request_timeout_secs: u64,
    /// Longest wait for a power change to show in `PowerState`.
    pub power_state_change_timeout_secs: u64,
    /// Pause between two reads of `PowerState` while waiting.
    pub power_state_poll_interval_ms: u64,
    /// A cached session unused for this long is logged out rather than reused.
    pub session_idle_timeout_secs: u64,
    /// Kernel parameters of the ISOs `redfish-virtual-media` builds, before the agent's own
    /// (a node's `kernel_append_params` replaces them; `%default%` there expands to these).
    pub kernel_append_params: String,
}

/// Longest `kernel_append_params` accepted (the kernel's command line is 2048 bytes, and the
/// agent's parameters need room too).
const MAX_APPEND_PARAMS: usize = 1024;

impl Default for RedfishSettings {
    fn default() -> Self {
        Self {
            connection_attempts: 5,
            connection_retry_interval_ms: 2000,
            connect_timeout_secs: 10,
            request_timeout_secs: 60,
            power_state_change_timeout_secs: 60,
            power_state_poll_interval_ms: 1000,
            session_idle_timeout_secs: 600,
            kernel_append_params: "nofb vga=normal".to_string(),
        }
    }
}

impl RedfishSettings {
    /// Refuses a bad value naming the key, the value and the reason.
    pub fn validate(&self) -> Result<(), RedfishError> {
        let bad = |key: &'static str, value: u64, reason: &str| {
            Err(RedfishError::Settings {
                key,
                value: value.to_string(),
                reason: reason.to_string(),
            })
        };
        if !(1..=20).contains(&self.connection_attempts) {
            return bad(
                "redfish.connection_attempts",
                self.connection_attempts.into(),
                "must be between 1 and 20",
            );
        }
        if self.connection_retry_interval_ms > 60_000 {
            return bad(
                "redfish.connection_retry_interval_ms",
                self.connection_retry_interval_ms,
                "must be at most 60000 (one minute)",
            );
        }
        for (key, value) in [
            ("redfish.connect_timeout_secs", self.connect_timeout_secs),
            ("redfish.request_timeout_secs", self.request_timeout_secs),
            (
                "redfish.power_state_change_timeout_secs",
                self.power_state_change_timeout_secs,
            ),
            (
                "redfish.session_idle_timeout_secs",
                self.session_idle_timeout_secs,
            ),
        ] {
            if value == 0 {
                return bad(key, value, "must be at least 1");
            }
        }
        if !(10..=60_000).contains(&self.power_state_poll_interval_ms) {
            return bad(
                "redfish.power_state_poll_interval_ms",
                self.power_state_poll_interval_ms,
                "must be between 10 and 60000",
            );
        }
        if let Some(reason) = append_params_problem(&self.kernel_append_params) {
            return Err(RedfishError::Settings {
                key: "redfish.kernel_append_params",
                value: self.kernel_append_params.clone(),
                reason,
            });
        }
        if self.power_state_poll_interval_ms > self.power_state_change_timeout_secs * 1000 {
            return bad(
                "redfish.power_state_poll_interval_ms",
                self.power_state_poll_interval_ms,
                "must not exceed power_state_change_timeout_secs",
            );
        }
        Ok(())
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    pub fn power_state_change_timeout(&self) -> Duration {
        Duration::from_secs(self.power_state_change_timeout_secs)
    }

    pub fn power_state_poll_interval(&self) -> Duration {
        Duration::from_millis(self.power_state_poll_interval_ms)
    }

    pub fn session_idle_timeout(&self) -> Duration {
        Duration::from_secs(self.session_idle_timeout_secs)
    }

    /// The pause after failed attempt number `attempt` (1-based): the interval, doubled for
    /// each attempt after the first, at most 30 s.
    pub fn retry_pause(&self, attempt: u32) -> Duration {
        Duration::from_millis(self.connection_retry_interval_ms)
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(MAX_RETRY_PAUSE)
    }
}

/// What makes a kernel parameter line unusable before any boot interface parses it.
fn append_params_problem(params: &str) -> Option<String> {
    if let Some(c) = params.chars().find(|c| c.is_control()) {
        return Some(format!("contains the control character {c:?}"));
    }
    (params.len() > MAX_APPEND_PARAMS)
        .then(|| format!("is {} bytes; at most {MAX_APPEND_PARAMS}", params.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_validate() {
        let s: RedfishSettings = toml::from_str("").unwrap();
        assert_eq!(s, RedfishSettings::default());
        s.validate().unwrap();
        assert_eq!(s.power_state_change_timeout(), Duration::from_secs(60));
        assert_eq!(s.request_timeout(), Duration::from_secs(60));
        assert_eq!(s.power_state_poll_interval(), Duration::from_secs(1));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = toml::from_str::<RedfishSettings>("connection_atempts = 3").unwrap_err();
        assert!(e.to_string().contains("connection_atempts"), "{e}");
    }

    #[test]
    fn bad_values_name_key_value_and_reason() {
        let cases = [
            (
                RedfishSettings {
                    connection_attempts: 0,
                    ..Default::default()
                },
                "redfish.connection_attempts = 0: must be between 1 and 20",
            ),
            (
                RedfishSettings {
                    request_timeout_secs: 0,
                    ..Default::default()
                },
                "redfish.request_timeout_secs = 0: must be at least 1",
            ),
            (
                RedfishSettings {
                    power_state_poll_interval_ms: 5,
                    ..Default::default()
                },
                "redfish.power_state_poll_interval_ms = 5",
            ),
            (
                RedfishSettings {
                    power_state_change_timeout_secs: 1,
                    power_state_poll_interval_ms: 2000,
                    ..Default::default()
                },
                "must not exceed power_state_change_timeout_secs",
            ),
            (
                RedfishSettings {
                    kernel_append_params: "nofb\ninit=/bin/sh".into(),
                    ..Default::default()
                },
                "redfish.kernel_append_params",
            ),
            (
                RedfishSettings {
                    connection_retry_interval_ms: 120_000,
                    ..Default::default()
                },
                "redfish.connection_retry_interval_ms = 120000",
            ),
        ];
        for (s, want) in cases {
            let e = s.validate().unwrap_err().to_string();
            assert!(e.contains(want), "{e} should contain {want}");
        }
    }

    #[test]
    fn retry_pauses_double_up_to_a_cap() {
        let s = RedfishSettings {
            connection_retry_interval_ms: 500,
            ..Default::default()
        };
        let pauses: Vec<u128> = (1..=8).map(|a| s.retry_pause(a).as_millis()).collect();
        assert_eq!(pauses, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);
        let zero = RedfishSettings {
            connection_retry_interval_ms: 0,
            ..Default::default()
        };
        assert_eq!(zero.retry_pause(3), Duration::ZERO);
    }
}
