//! What every configuration section shares: durations written as whole seconds (Ironic's
//! convention: `deploy_callback_timeout = 1800`), and the error a section gives for a bad
//! value, naming the key, the value and the reason.
//!
//! Each section (`[conductor]`, `[agent]`, `[pxe]`, ...) lives with the module it configures
//! and validates itself; `config` merges the file, the environment and the flags and asks each
//! section in turn.

use std::time::Duration;

/// A refused setting: `key = value: reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key} = {value:?}: {reason}")]
pub struct SettingError {
    pub key: String,
    pub value: String,
    pub reason: String,
}

impl SettingError {
    pub fn new(key: &str, value: impl ToString, reason: impl ToString) -> SettingError {
        SettingError {
            key: key.to_string(),
            value: value.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// Refuses a zero duration for `key`.
pub fn positive(key: &str, d: Duration) -> Result<(), SettingError> {
    if d.is_zero() {
        Err(SettingError::new(key, 0, "must be > 0 seconds"))
    } else {
        Ok(())
    }
}

/// `#[serde(with = "crate::settings::secs")]`: a `Duration` as whole seconds.
pub mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct S {
        #[serde(with = "secs")]
        t: Duration,
    }

    #[test]
    fn durations_are_whole_seconds_both_ways() {
        let s: S = toml::from_str("t = 90").unwrap();
        assert_eq!(s.t, Duration::from_secs(90));
        assert_eq!(toml::to_string(&s).unwrap().trim(), "t = 90");
        assert!(toml::from_str::<S>("t = -1").is_err());
        assert!(toml::from_str::<S>("t = \"90s\"").is_err());
        assert!(
            positive("k", Duration::ZERO)
                .unwrap_err()
                .to_string()
                .contains("k = \"0\"")
        );
    }
}
