//! The node's `driver_info` for Redfish, with Ironic's keys and Ironic's defaults:
//!
//! - `redfish_address`: `https://bmc` or `http://bmc:8000`; a bare host (`10.0.0.5`,
//!   `bmc.example:8443`) means https. Any path is ignored: resources are found from
//!   `/redfish/v1/`.
//! - `redfish_system_id` (optional): the system's path (`/redfish/v1/Systems/1`) or its last
//!   segment (`1`); without it the BMC must manage exactly one system.
//! - `redfish_username`, `redfish_password` (optional: no credentials means no authentication).
//! - `redfish_verify_ca`: true (the default), false, or a CA bundle file or directory.
//! - `redfish_auth_type`: `auto` (the default: a session where the BMC offers one, else basic),
//!   `session` or `basic`.
//!
//! Parsing checks everything that can be checked without the network, so a power or
//! management interface's `validate` can call it.

use std::fmt;
use std::path::PathBuf;

use reqwest::Url;
use serde_json::{Map, Value};

use super::error::RedfishError;

pub const ADDRESS: &str = "redfish_address";
pub const SYSTEM_ID: &str = "redfish_system_id";
pub const USERNAME: &str = "redfish_username";
pub const PASSWORD: &str = "redfish_password";
pub const VERIFY_CA: &str = "redfish_verify_ca";
pub const AUTH_TYPE: &str = "redfish_auth_type";

/// A password or token: `******` in every `Debug` and `Display`, as the API masks it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The clear value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("******")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("******")
    }
}

/// How the BMC's TLS certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum VerifyCa {
    /// Against the system's trust store.
    System,
    /// Not at all.
    Disabled,
    /// Against this CA bundle (a PEM file, or a directory of PEM files) only.
    Bundle(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthType {
    /// A session where the BMC offers SessionService, basic authentication otherwise.
    #[default]
    Auto,
    Session,
    Basic,
}

impl AuthType {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthType::Auto => "auto",
            AuthType::Session => "session",
            AuthType::Basic => "basic",
        }
    }
}

/// A parsed Redfish `driver_info`. `Debug` never shows the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverInfo {
    /// `scheme://host[:port]`, without a path.
    pub address: Url,
    pub system_id: Option<String>,
    pub username: Option<String>,
    pub password: Secret,
    pub verify_ca: VerifyCa,
    pub auth_type: AuthType,
}

impl DriverInfo {
    pub fn parse(info: &Map<String, Value>) -> Result<Self, RedfishError> {
        let address = match info.get(ADDRESS) {
            None | Some(Value::Null) => {
                return Err(bad(
                    ADDRESS,
                    "(missing)",
                    "is required (e.g. https://10.0.0.5)",
                ));
            }
            Some(v) => parse_address(&string(ADDRESS, v)?)?,
        };
        let optional = |key: &'static str| -> Result<Option<String>, RedfishError> {
            match info.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => Ok(Some(string(key, v)?).filter(|s| !s.is_empty())),
            }
        };
        let system_id = optional(SYSTEM_ID)?.map(|s| s.trim().to_string());
        let username = optional(USERNAME)?;
        let password = match info.get(PASSWORD) {
            None | Some(Value::Null) => Secret::default(),
            Some(Value::String(s)) => Secret::new(s.clone()),
            Some(_) => return Err(bad(PASSWORD, "******", "must be a string")),
        };
        if username.is_none() && !password.expose().is_empty() {
            return Err(bad(
                PASSWORD,
                "******",
                "is set but redfish_username is not; set both or neither",
            ));
        }
        let verify_ca = match info.get(VERIFY_CA) {
            None | Some(Value::Null) => VerifyCa::System,
            Some(v) => parse_verify_ca(v)?,
        };
        let auth_type = match optional(AUTH_TYPE)? {
            None => AuthType::Auto,
            Some(s) => match s.trim().to_ascii_lowercase().as_str() {
                "auto" => AuthType::Auto,
                "session" => AuthType::Session,
                "basic" => AuthType::Basic,
                _ => return Err(bad(AUTH_TYPE, &s, "must be auto, session or basic")),
            },
        };
        Ok(DriverInfo {
            address,
            system_id,
            username,
            password,
            verify_ca,
            auth_type,
        })
    }

    /// The BMC as errors and logs name it: `https://10.0.0.5` or `http://127.0.0.1:8000`.
    pub fn bmc(&self) -> String {
        self.address.as_str().trim_end_matches('/').to_string()
    }
}

fn bad(key: &'static str, value: &str, reason: &str) -> RedfishError {
    RedfishError::DriverInfo {
        key,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

fn string(key: &'static str, v: &Value) -> Result<String, RedfishError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        other => Err(bad(key, &other.to_string(), "must be a string")),
    }
}

fn parse_address(raw: &str) -> Result<Url, RedfishError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(bad(ADDRESS, raw, "is empty"));
    }
    // As in Ironic, a bare host (with or without a port) means https.
    let with_scheme = if trimmed.contains("://") {
        trimmed.to_string()
    } else {
        format!("https://{trimmed}")
    };
    let url = Url::parse(&with_scheme)
        .map_err(|e| bad(ADDRESS, raw, &format!("is not a URL or host name: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad(
            ADDRESS,
            raw,
            &format!(
                "scheme {:?} is not supported: use https://host (or http://host); a bare host means https",
                url.scheme()
            ),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad(ADDRESS, raw, "has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            ADDRESS,
            "(a URL with credentials, not shown)",
            "must not carry credentials: use redfish_username and redfish_password",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad(ADDRESS, raw, "must not have a query or fragment"));
    }
    let mut origin = url;
    origin.set_path("/");
    Ok(origin)
}

fn parse_verify_ca(v: &Value) -> Result<VerifyCa, RedfishError> {
    let s = match v {
        Value::Bool(true) => return Ok(VerifyCa::System),
        Value::Bool(false) => return Ok(VerifyCa::Disabled),
        Value::String(s) => s.trim(),
        other => {
            return Err(bad(
                VERIFY_CA,
                &other.to_string(),
                "must be true, false or the path of a CA bundle",
            ));
        }
    };
    // The spellings Ironic's strict boolean parsing accepts.
    match s.to_ascii_lowercase().as_str() {
        "true" | "t" | "yes" | "y" | "on" | "1" => return Ok(VerifyCa::System),
        "false" | "f" | "no" | "n" | "off" | "0" => return Ok(VerifyCa::Disabled),
        _ => {}
    }
    let path = PathBuf::from(s);
    if !path.is_absolute() {
        return Err(bad(
            VERIFY_CA,
            s,
            "is neither true/false nor an absolute path of a CA bundle",
        ));
    }
    if !path.exists() {
        return Err(bad(
            VERIFY_CA,
            s,
            "CA bundle not found (give an existing PEM file or directory, or true/false)",
        ));
    }
    Ok(VerifyCa::Bundle(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<DriverInfo, RedfishError> {
        DriverInfo::parse(v.as_object().unwrap())
    }

    fn err(v: Value) -> String {
        parse(v).unwrap_err().to_string()
    }

    #[test]
    fn defaults_follow_ironic() {
        let d = parse(json!({"redfish_address": "10.0.0.5"})).unwrap();
        assert_eq!(d.address.as_str(), "https://10.0.0.5/");
        assert_eq!(d.bmc(), "https://10.0.0.5");
        assert_eq!(d.verify_ca, VerifyCa::System);
        assert_eq!(d.auth_type, AuthType::Auto);
        assert_eq!(d.system_id, None);
        assert_eq!(d.username, None);
        assert_eq!(d.password.expose(), "");
    }

    #[test]
    fn addresses() {
        let addr = |a: &str| parse(json!({"redfish_address": a})).unwrap().bmc();
        assert_eq!(addr("bmc.example:8443"), "https://bmc.example:8443");
        assert_eq!(addr("http://127.0.0.1:8000"), "http://127.0.0.1:8000");
        assert_eq!(addr("https://10.0.0.5/redfish/v1/"), "https://10.0.0.5");
        assert_eq!(addr("[fd00::5]"), "https://[fd00::5]");
        assert_eq!(addr(" HTTPS://BMC "), "https://bmc");

        let e = err(json!({"redfish_address": "ftp://10.0.0.5"}));
        assert!(e.contains("redfish_address = ftp://10.0.0.5"), "{e}");
        assert!(e.contains("scheme \"ftp\" is not supported"), "{e}");
        let e = err(json!({"redfish_address": "redfish+unix:///run/bmc.sock"}));
        assert!(e.contains("not supported"), "{e}");
        let e = err(json!({"redfish_address": "https://admin:pw@10.0.0.5"}));
        assert!(!e.contains("pw@"), "{e}");
        assert!(e.contains("redfish_username"), "{e}");
        assert!(err(json!({})).contains("redfish_address = (missing)"));
        assert!(err(json!({"redfish_address": ""})).contains("is empty"));
        assert!(
            err(json!({"redfish_address": 5})).contains("redfish_address = 5: must be a string")
        );
        assert!(err(json!({"redfish_address": "https://b/?x=1"})).contains("query"));
    }

    #[test]
    fn verify_ca_spellings_and_paths() {
        let v = |x: Value| {
            parse(json!({"redfish_address": "b", "redfish_verify_ca": x})).map(|d| d.verify_ca)
        };
        for t in [json!(true), json!("true"), json!("True"), json!("yes")] {
            assert_eq!(v(t).unwrap(), VerifyCa::System);
        }
        for f in [json!(false), json!("false"), json!("False"), json!("0")] {
            assert_eq!(v(f).unwrap(), VerifyCa::Disabled);
        }
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "x").unwrap();
        assert_eq!(
            v(json!(ca.to_str().unwrap())).unwrap(),
            VerifyCa::Bundle(ca.clone())
        );
        let missing = dir.path().join("nope.pem");
        let e = v(json!(missing.to_str().unwrap())).unwrap_err().to_string();
        assert!(e.contains("redfish_verify_ca"), "{e}");
        assert!(e.contains("nope.pem"), "{e}");
        assert!(e.contains("not found"), "{e}");
        let e = v(json!("maybe")).unwrap_err().to_string();
        assert!(e.contains("redfish_verify_ca = maybe"), "{e}");
        assert!(v(json!(3)).is_err());
    }

    #[test]
    fn auth_type_and_credentials() {
        let d = parse(
            json!({"redfish_address": "b", "redfish_auth_type": "Session",
            "redfish_username": "admin", "redfish_password": "hunter2",
            "redfish_system_id": "/redfish/v1/Systems/1"}),
        )
        .unwrap();
        assert_eq!(d.auth_type, AuthType::Session);
        assert_eq!(d.username.as_deref(), Some("admin"));
        assert_eq!(d.password.expose(), "hunter2");
        assert_eq!(d.system_id.as_deref(), Some("/redfish/v1/Systems/1"));
        let shown = format!("{d:?} {}", d.password);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("******"), "{shown}");

        let e = err(json!({"redfish_address": "b", "redfish_auth_type": "digest"}));
        assert!(
            e.contains("redfish_auth_type = digest: must be auto, session or basic"),
            "{e}"
        );
        let e = err(json!({"redfish_address": "b", "redfish_password": "hunter2"}));
        assert!(!e.contains("hunter2"), "{e}");
        assert!(e.contains("redfish_username"), "{e}");
        let e =
            err(json!({"redfish_address": "b", "redfish_username": "a", "redfish_password": 7}));
        assert!(!e.contains('7'), "{e}");
    }
}
