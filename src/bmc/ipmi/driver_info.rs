//! A node's IPMI driver_info, with Ironic's keys and defaults (`ipmitool._parse_driver_info`):
//! `ipmi_address` (required), `ipmi_port` (623), `ipmi_username`, `ipmi_password`,
//! `ipmi_protocol_version` (`2.0` = lanplus, or `1.5` = lan), `ipmi_cipher_suite` (3 with 2.0),
//! `ipmi_priv_level` (ADMINISTRATOR), `ipmi_bridging` (only `no`), `ipmi_disable_boot_timeout`
//! (true), `ipmi_force_boot_device` (false). Unknown keys are left alone, as Ironic does.

use std::fmt;
use std::net::IpAddr;

use serde_json::Value;

use super::error::IpmiError;
use crate::model::Fields;

/// What ironboot puts in place of a password wherever it shows one (Ironic's mask).
pub const PASSWORD_MASK: &str = "******";
const DEFAULT_PORT: u16 = 623;
/// ipmi_sim and most BMCs accept suite 3 (RAKP-HMAC-SHA1, AES-CBC-128); without `-C`,
/// ipmitool 1.8.19 first asks for the suite list, which some BMCs drop (10 s per call).
const DEFAULT_CIPHER_SUITE: u8 = 3;
/// IPMI 2.0 limits (user name 16 bytes, password 20 bytes; 16 for IPMI 1.5).
const MAX_USERNAME: usize = 16;
const MAX_PASSWORD_LANPLUS: usize = 20;
const MAX_PASSWORD_LAN: usize = 16;

/// A BMC password: shown as `******` by `Debug` and `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The clear value, for the one place that hands it to ipmitool (its environment).
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(PASSWORD_MASK)
    }
}

impl fmt::Display for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(PASSWORD_MASK)
    }
}

/// `ipmi_protocol_version`: the ipmitool interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// IPMI 2.0, RMCP+ (`-I lanplus`).
    Lanplus,
    /// IPMI 1.5 (`-I lan`).
    Lan,
}

impl Protocol {
    pub fn interface(self) -> &'static str {
        match self {
            Protocol::Lanplus => "lanplus",
            Protocol::Lan => "lan",
        }
    }
}

/// `ipmi_priv_level`: the session privilege ironboot asks for (`-L`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrivLevel {
    Callback,
    User,
    Operator,
    Administrator,
}

impl PrivLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            PrivLevel::Callback => "CALLBACK",
            PrivLevel::User => "USER",
            PrivLevel::Operator => "OPERATOR",
            PrivLevel::Administrator => "ADMINISTRATOR",
        }
    }
}

/// Everything needed to open a session with one node's BMC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverInfo {
    /// IP address or host name (`ipmi_address`).
    pub address: String,
    pub port: u16,
    /// `None`: the anonymous (NULL) user.
    pub username: Option<String>,
    pub password: Option<Password>,
    pub protocol: Protocol,
    /// `None` with IPMI 1.5, which has no cipher suites.
    pub cipher_suite: Option<u8>,
    pub priv_level: PrivLevel,
    /// Send "don't clear the boot flags after 60 s" (boot parameter 3) before a boot device.
    pub disable_boot_timeout: bool,
    /// Ironic's `ipmi_force_boot_device`, parsed for the management interface, which owns it.
    pub force_boot_device: bool,
}

impl DriverInfo {
    /// Reads and checks the `ipmi_*` keys; the error names the key, the value and the reason
    /// (a password shows as `******`).
    pub fn from_fields(info: &Fields) -> Result<Self, IpmiError> {
        check_unsupported(info)?;
        let address = string(info, "ipmi_address")?
            .ok_or_else(|| bad("ipmi_address", "(missing)", "is required"))?;
        check_address(&address)?;
        let port = match number(info, "ipmi_port")? {
            None => DEFAULT_PORT,
            Some(p) => u16::try_from(p)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("ipmi_port", &p.to_string(), "must be a port, 1 to 65535"))?,
        };
        let protocol = match string(info, "ipmi_protocol_version")?.as_deref() {
            None | Some("2.0") | Some("2") => Protocol::Lanplus,
            Some("1.5") => Protocol::Lan,
            Some(other) => {
                return Err(bad("ipmi_protocol_version", other, "must be 2.0 or 1.5"));
            }
        };
        let username = string(info, "ipmi_username")?;
        if let Some(user) = &username {
            check_text("ipmi_username", user, user, MAX_USERNAME)?;
        }
        let password = string(info, "ipmi_password")?;
        if let Some(pw) = &password {
            let max = match protocol {
                Protocol::Lanplus => MAX_PASSWORD_LANPLUS,
                Protocol::Lan => MAX_PASSWORD_LAN,
            };
            check_text("ipmi_password", pw, PASSWORD_MASK, max)?;
        }
        Ok(Self {
            address,
            port,
            username,
            password: password.map(Password),
            protocol,
            cipher_suite: cipher_suite(info, protocol)?,
            priv_level: priv_level(info)?,
            disable_boot_timeout: boolean(info, "ipmi_disable_boot_timeout", true)?,
            force_boot_device: boolean(info, "ipmi_force_boot_device", false)?,
        })
    }

    /// `address:port` (`[v6]:port`), as errors and logs name the BMC.
    pub fn bmc(&self) -> String {
        if self.address.contains(':') {
            format!("[{}]:{}", self.address, self.port)
        } else {
            format!("{}:{}", self.address, self.port)
        }
    }

    /// ipmitool's session options. The password is not among them: it travels in the
    /// environment (`-E`, `IPMI_PASSWORD`), which only the process owner can read.
    pub(crate) fn session_args(&self) -> Vec<String> {
        let mut args = vec![
            "-I".to_string(),
            self.protocol.interface().to_string(),
            "-H".to_string(),
            self.address.clone(),
            "-p".to_string(),
            self.port.to_string(),
            "-L".to_string(),
            self.priv_level.as_str().to_string(),
        ];
        if let Some(user) = &self.username {
            args.extend(["-U".to_string(), user.clone()]);
        }
        if let Some(suite) = self.cipher_suite {
            args.extend(["-C".to_string(), suite.to_string()]);
        }
        if self.password.is_some() {
            args.push("-E".to_string());
        }
        args
    }
}

fn bad(key: &'static str, value: &str, reason: &str) -> IpmiError {
    IpmiError::DriverInfo {
        key,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// A string value; numbers are accepted as their text. Empty strings count as absent, as
/// clients send `ipmi_username=` to mean "none".
fn string(info: &Fields, key: &'static str) -> Result<Option<String>, IpmiError> {
    match info.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(bad(key, &shown(key, other), "must be a string")),
    }
}

fn number(info: &Fields, key: &'static str) -> Result<Option<u64>, IpmiError> {
    match info.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| bad(key, &n.to_string(), "must be a whole number")),
        Some(Value::String(s)) => s
            .trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|_| bad(key, &format!("{s:?}"), "must be a whole number")),
        Some(other) => Err(bad(key, &other.to_string(), "must be a whole number")),
    }
}

/// Ironic's `bool_from_string`: true/false, yes/no, on/off, 1/0, any case.
fn boolean(info: &Fields, key: &'static str, default: bool) -> Result<bool, IpmiError> {
    match info.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" | "y" | "t" => Ok(true),
            "false" | "no" | "off" | "0" | "n" | "f" => Ok(false),
            _ => Err(bad(key, &format!("{s:?}"), "must be true or false")),
        },
        Some(other) => Err(bad(key, &other.to_string(), "must be true or false")),
    }
}

/// How a refused value is shown: never a password.
fn shown(key: &str, value: &Value) -> String {
    if key == "ipmi_password" {
        PASSWORD_MASK.to_string()
    } else {
        value.to_string()
    }
}

fn check_address(address: &str) -> Result<(), IpmiError> {
    if address.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let host_ok = address.len() <= 253
        && !address.starts_with(['-', '.'])
        && address.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if host_ok {
        Ok(())
    } else {
        Err(bad(
            "ipmi_address",
            &format!("{address:?}"),
            "must be an IP address or a host name",
        ))
    }
}

/// `shown` is what the error prints in place of the value.
fn check_text(key: &'static str, value: &str, shown: &str, max: usize) -> Result<(), IpmiError> {
    if value.len() > max {
        return Err(bad(
            key,
            shown,
            &format!("is longer than IPMI allows ({max} bytes)"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(bad(key, shown, "must not contain control characters"));
    }
    Ok(())
}

fn cipher_suite(info: &Fields, protocol: Protocol) -> Result<Option<u8>, IpmiError> {
    let given = number(info, "ipmi_cipher_suite")?;
    match (protocol, given) {
        (Protocol::Lan, None) => Ok(None),
        (Protocol::Lan, Some(s)) => Err(bad(
            "ipmi_cipher_suite",
            &s.to_string(),
            "cipher suites cannot be used with IPMI 1.5 (ipmi_protocol_version)",
        )),
        (Protocol::Lanplus, None) => Ok(Some(DEFAULT_CIPHER_SUITE)),
        (Protocol::Lanplus, Some(s)) => u8::try_from(s)
            .ok()
            .filter(|s| *s <= 17)
            .map(Some)
            .ok_or_else(|| bad("ipmi_cipher_suite", &s.to_string(), "must be 0 to 17")),
    }
}

fn priv_level(info: &Fields) -> Result<PrivLevel, IpmiError> {
    let Some(level) = string(info, "ipmi_priv_level")? else {
        return Ok(PrivLevel::Administrator);
    };
    match level.to_ascii_uppercase().as_str() {
        "ADMINISTRATOR" => Ok(PrivLevel::Administrator),
        "OPERATOR" => Ok(PrivLevel::Operator),
        "USER" => Ok(PrivLevel::User),
        "CALLBACK" => Ok(PrivLevel::Callback),
        _ => Err(bad(
            "ipmi_priv_level",
            &level,
            "must be ADMINISTRATOR, OPERATOR, USER or CALLBACK",
        )),
    }
}

/// Keys whose features this client does not implement: refused rather than ignored, because
/// ignoring them would talk to the wrong controller or without the expected key.
fn check_unsupported(info: &Fields) -> Result<(), IpmiError> {
    if let Some(b) = string(info, "ipmi_bridging")? {
        match b.to_ascii_lowercase().as_str() {
            "no" | "none" => {}
            _ => {
                return Err(bad(
                    "ipmi_bridging",
                    &b,
                    "bridging is not supported by ironboot's IPMI client (only \"no\")",
                ));
            }
        }
    }
    if string(info, "ipmi_hex_kg_key")?.is_some() {
        return Err(bad(
            "ipmi_hex_kg_key",
            PASSWORD_MASK,
            "BMC Kg keys are not supported by ironboot's IPMI client",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(v: Value) -> Fields {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn ironic_defaults() {
        let d = DriverInfo::from_fields(&fields(json!({"ipmi_address": "10.0.0.5"}))).unwrap();
        assert_eq!(d.port, 623);
        assert_eq!(d.protocol, Protocol::Lanplus);
        assert_eq!(d.cipher_suite, Some(3));
        assert_eq!(d.priv_level, PrivLevel::Administrator);
        assert_eq!(d.username, None);
        assert_eq!(d.password, None);
        assert!(d.disable_boot_timeout);
        assert!(!d.force_boot_device);
        assert_eq!(d.bmc(), "10.0.0.5:623");
        assert_eq!(
            d.session_args().join(" "),
            "-I lanplus -H 10.0.0.5 -p 623 -L ADMINISTRATOR -C 3"
        );
    }

    #[test]
    fn every_key_parses() {
        let d = DriverInfo::from_fields(&fields(json!({
            "ipmi_address": "bmc-7.rack2.example",
            "ipmi_port": "6230",
            "ipmi_username": "admin",
            "ipmi_password": "s3cret!",
            "ipmi_cipher_suite": 17,
            "ipmi_priv_level": "operator",
            "ipmi_bridging": "no",
            "ipmi_protocol_version": "2.0",
            "ipmi_disable_boot_timeout": "False",
            "ipmi_force_boot_device": true,
            "ipmi_terminal_port": 8023,
        })))
        .unwrap();
        assert_eq!(d.port, 6230);
        assert_eq!(d.cipher_suite, Some(17));
        assert_eq!(d.priv_level, PrivLevel::Operator);
        assert!(!d.disable_boot_timeout);
        assert!(d.force_boot_device);
        let args = d.session_args().join(" ");
        assert_eq!(
            args,
            "-I lanplus -H bmc-7.rack2.example -p 6230 -L OPERATOR -U admin -C 17 -E"
        );
        assert!(!args.contains("s3cret"));
    }

    #[test]
    fn ipmi_1_5_uses_lan_without_cipher_suite() {
        let d = DriverInfo::from_fields(&fields(json!({
            "ipmi_address": "fe80::1", "ipmi_protocol_version": "1.5", "ipmi_port": 1623
        })))
        .unwrap();
        assert_eq!(d.protocol, Protocol::Lan);
        assert_eq!(d.cipher_suite, None);
        assert_eq!(d.bmc(), "[fe80::1]:1623");
        assert!(d.session_args().join(" ").starts_with("-I lan -H fe80::1"));
    }

    #[test]
    fn passwords_are_masked() {
        let d = DriverInfo::from_fields(&fields(json!({
            "ipmi_address": "10.0.0.5", "ipmi_password": "hunter2-xyz"
        })))
        .unwrap();
        let text = format!("{d:?} {}", d.password.as_ref().unwrap());
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("******"), "{text}");
        // Too long: refused without showing it.
        let err = DriverInfo::from_fields(&fields(json!({
            "ipmi_address": "10.0.0.5", "ipmi_password": "hunter2-hunter2-hunter2"
        })))
        .unwrap_err()
        .to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(err.contains("ipmi_password = ******"), "{err}");
        let err = DriverInfo::from_fields(&fields(json!({
            "ipmi_address": "10.0.0.5", "ipmi_password": ["hunter2"]
        })))
        .unwrap_err()
        .to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn bad_values_name_key_and_value() {
        let cases = [
            (json!({}), "ipmi_address = (missing): is required"),
            (
                json!({"ipmi_address": "-oProxy"}),
                "ipmi_address = \"-oProxy\"",
            ),
            (json!({"ipmi_address": "a b"}), "ipmi_address = \"a b\""),
            (
                json!({"ipmi_address": "h", "ipmi_port": 70000}),
                "ipmi_port = 70000",
            ),
            (
                json!({"ipmi_address": "h", "ipmi_port": "x1"}),
                "ipmi_port = \"x1\"",
            ),
            (
                json!({"ipmi_address": "h", "ipmi_cipher_suite": 30}),
                "ipmi_cipher_suite = 30",
            ),
            (
                json!({"ipmi_address": "h", "ipmi_protocol_version": "1.5", "ipmi_cipher_suite": 3}),
                "cannot be used with IPMI 1.5",
            ),
            (
                json!({"ipmi_address": "h", "ipmi_protocol_version": "3"}),
                "ipmi_protocol_version = 3",
            ),
            (
                json!({"ipmi_address": "h", "ipmi_priv_level": "ROOT"}),
                "ipmi_priv_level = ROOT",
            ),
            (
                json!({"ipmi_address": "h", "ipmi_bridging": "single"}),
                "ipmi_bridging = single: bridging is not supported",
            ),
            (
                json!({"ipmi_address": "h", "ipmi_hex_kg_key": "0102"}),
                "ipmi_hex_kg_key = ******",
            ),
            (
                json!({"ipmi_address": "h", "ipmi_username": "a-very-long-user-name"}),
                "ipmi_username = a-very-long-user-name",
            ),
            (
                json!({"ipmi_address": "h", "ipmi_disable_boot_timeout": "maybe"}),
                "ipmi_disable_boot_timeout = \"maybe\"",
            ),
        ];
        for (info, want) in cases {
            let err = DriverInfo::from_fields(&fields(info.clone()))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(want),
                "{info}: {err:?} should contain {want:?}"
            );
            assert!(err.starts_with("invalid driver_info: "), "{err}");
        }
    }
}
