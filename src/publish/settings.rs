//! The `[vmedia]` configuration section: which publisher, where local files go, and how to
//! reach Swift. Secrets are wrapped in [`Secret`] so that no `Debug` or log line shows them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize, Serializer};

use super::error::PublishError;
use super::name::{check_segment, validate_subdir};

/// Where built media are published for BMCs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// ironboot's own HTTP root (the standalone default: no Swift needed).
    #[default]
    Local,
    /// OpenStack Swift, handed to BMCs as temp URLs.
    Swift,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Local => "local",
            Backend::Swift => "swift",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Backend {
    type Err = PublishError;

    /// Parses a per-node override (driver_info), e.g. `"swift"`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "local" => Ok(Backend::Local),
            "swift" => Ok(Backend::Swift),
            _ => Err(PublishError::UnknownBackend(s.to_string())),
        }
    }
}

/// `[vmedia]`: publishing of boot ISOs, floppies and config drives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PublishSettings {
    /// Default publisher; a node may override it in driver_info.
    pub publisher: Backend,
    /// Subdirectory of the HTTP root (and of its URL) holding local media; may be empty.
    /// Ironic's Redfish driver uses `redfish`, kept here so existing web-server layouts match.
    pub subdir: String,
    /// Mode of published local files (write it as an octal literal: `0o644`).
    pub file_mode: u32,
    /// `[vmedia.swift]`: needed when any node publishes to Swift.
    pub swift: Option<SwiftSettings>,
}

impl Default for PublishSettings {
    fn default() -> Self {
        Self {
            publisher: Backend::Local,
            subdir: "redfish".to_string(),
            file_mode: 0o644,
            swift: None,
        }
    }
}

impl PublishSettings {
    /// Checks every key; the error names the key, the value and the reason.
    pub fn validate(&self) -> Result<(), PublishError> {
        validate_subdir(&self.subdir)
            .map_err(|reason| bad("vmedia.subdir", &self.subdir, &reason))?;
        if self.file_mode > 0o777 || self.file_mode & 0o400 == 0 {
            return Err(bad(
                "vmedia.file_mode",
                &format!("{:#o}", self.file_mode),
                "must be a permission mode up to 0o777 that the owner can read (write it in octal, e.g. 0o644)",
            ));
        }
        match &self.swift {
            Some(swift) => swift.validate()?,
            None if self.publisher == Backend::Swift => {
                return Err(bad(
                    "vmedia.publisher",
                    "swift",
                    "needs a [vmedia.swift] section",
                ));
            }
            None => {}
        }
        Ok(())
    }
}

/// Swift authentication protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthVersion {
    /// Swift's built-in TempAuth (`GET <auth_url>` with X-Auth-User/X-Auth-Key), as in a
    /// Swift all-in-one.
    Tempauth,
    /// Keystone v3 password authentication, project-scoped; the Swift endpoint comes from
    /// the service catalog.
    #[default]
    V3,
}

/// Which catalog endpoint to use (Keystone v3 only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interface {
    #[default]
    Public,
    Internal,
    Admin,
}

impl Interface {
    pub fn as_str(self) -> &'static str {
        match self {
            Interface::Public => "public",
            Interface::Internal => "internal",
            Interface::Admin => "admin",
        }
    }
}

/// HMAC digest of temp URL signatures. Swift ≥ 2.38 deprecates sha1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TempUrlDigest {
    Sha1,
    #[default]
    Sha256,
    Sha512,
}

/// `[vmedia.swift]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SwiftSettings {
    /// TempAuth: the full auth URL (`http://proxy:8080/auth/v1.0`). Keystone: the identity
    /// URL (`https://keystone:5000/v3`; `/v3` is appended when missing).
    pub auth_url: String,
    pub auth_version: AuthVersion,
    /// TempAuth: `account:user`. Keystone: the user name.
    pub user: String,
    /// TempAuth key or Keystone password.
    #[serde(alias = "password")]
    pub key: Secret,
    /// Keystone: project to scope the token to.
    pub project_name: String,
    pub user_domain_name: String,
    pub project_domain_name: String,
    /// Keystone: region of the object-store endpoint (any region when unset).
    pub region: Option<String>,
    /// Keystone: endpoint interface.
    pub interface: Interface,
    /// Container holding published media (created when missing).
    pub container: String,
    /// Lifetime of the temp URL and of the object (`X-Delete-After`), seconds.
    pub expiry_secs: u64,
    /// Account Temp-URL-Key to sign with. When unset, the account's key is used, and one is
    /// generated and set if the account has none.
    pub temp_url_key: Option<Secret>,
    pub digest: TempUrlDigest,
    /// Attempts per upload (transport errors, 5xx, 408 and 499 are retried).
    pub upload_attempts: u32,
    pub connect_timeout_secs: u64,
    /// Longest silence on a connection before a request fails.
    pub read_timeout_secs: u64,
}

impl Default for SwiftSettings {
    fn default() -> Self {
        Self {
            auth_url: String::new(),
            auth_version: AuthVersion::V3,
            user: String::new(),
            key: Secret::default(),
            project_name: String::new(),
            user_domain_name: "Default".to_string(),
            project_domain_name: "Default".to_string(),
            region: None,
            interface: Interface::Public,
            container: "ironboot_vmedia".to_string(),
            expiry_secs: 900,
            temp_url_key: None,
            digest: TempUrlDigest::Sha256,
            upload_attempts: 3,
            connect_timeout_secs: 10,
            read_timeout_secs: 60,
        }
    }
}

impl SwiftSettings {
    pub fn validate(&self) -> Result<(), PublishError> {
        check_base_url(&self.auth_url)
            .map_err(|r| bad("vmedia.swift.auth_url", &self.auth_url, &r))?;
        if self.user.is_empty() {
            return Err(bad("vmedia.swift.user", "", "must be set"));
        }
        if self.key.expose().is_empty() {
            return Err(bad("vmedia.swift.key", "", "must be set"));
        }
        if self.auth_version == AuthVersion::V3 {
            for (key, value) in [
                ("project_name", &self.project_name),
                ("user_domain_name", &self.user_domain_name),
                ("project_domain_name", &self.project_domain_name),
            ] {
                if value.is_empty() {
                    return Err(bad(
                        &format!("vmedia.swift.{key}"),
                        "",
                        "must be set for Keystone v3",
                    ));
                }
            }
        }
        // Signed paths are compared after URL decoding: safe characters keep both sides equal.
        check_segment(&self.container, 256).map_err(|r| {
            bad(
                "vmedia.swift.container",
                &self.container,
                &format!("{r} (1 to 256 ASCII letters, digits, '.', '_' or '-')"),
            )
        })?;
        if self.expiry_secs == 0 {
            return Err(bad("vmedia.swift.expiry_secs", "0", "must be at least 1"));
        }
        if let Some(key) = &self.temp_url_key
            && key.expose().is_empty()
        {
            return Err(bad(
                "vmedia.swift.temp_url_key",
                "",
                "must not be empty (leave it out to use or create the account's key)",
            ));
        }
        if !(1..=10).contains(&self.upload_attempts) {
            return Err(bad(
                "vmedia.swift.upload_attempts",
                &self.upload_attempts.to_string(),
                "must be between 1 and 10",
            ));
        }
        for (key, value) in [
            ("connect_timeout_secs", self.connect_timeout_secs),
            ("read_timeout_secs", self.read_timeout_secs),
        ] {
            if value == 0 {
                return Err(bad(
                    &format!("vmedia.swift.{key}"),
                    "0",
                    "must be at least 1",
                ));
            }
        }
        Ok(())
    }
}

/// A credential read from the configuration. Its `Debug`, `Display` and `Serialize` (so also
/// `ironboot config show`) print `***`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("***")
    }
}

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
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

fn bad(key: &str, value: &str, reason: &str) -> PublishError {
    PublishError::Settings(format!("{key} = {value:?}: {reason}"))
}

/// An absolute http(s) URL without query or fragment, usable as a prefix.
pub(crate) fn check_base_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("must be an http:// or https:// URL".to_string());
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err("must not have a query or fragment".to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn swift_v3() -> SwiftSettings {
        SwiftSettings {
            auth_url: "https://keystone.example:5000/v3".into(),
            user: "ironic".into(),
            key: Secret::new("hunter2"),
            project_name: "service".into(),
            ..SwiftSettings::default()
        }
    }

    #[test]
    fn defaults_are_local_and_valid() {
        let s: PublishSettings = toml::from_str("").unwrap();
        assert_eq!(s, PublishSettings::default());
        assert_eq!(s.publisher, Backend::Local);
        assert_eq!(s.file_mode, 0o644);
        s.validate().unwrap();
    }

    #[test]
    fn swift_section_parses_with_defaults() {
        let s: PublishSettings = toml::from_str(
            r#"
            publisher = "swift"
            file_mode = 0o640
            [swift]
            auth_url = "http://127.0.0.1:8080/auth/v1.0"
            auth_version = "tempauth"
            user = "test:tester"
            password = "testing"
            digest = "sha512"
            "#,
        )
        .unwrap();
        s.validate().unwrap();
        let swift = s.swift.unwrap();
        assert_eq!(swift.key.expose(), "testing");
        assert_eq!(swift.container, "ironboot_vmedia");
        assert_eq!(swift.expiry_secs, 900);
        assert_eq!(swift.digest, TempUrlDigest::Sha512);
        assert_eq!(s.file_mode, 0o640);
    }

    /// The example in docs/configuration.md's `[vmedia]` section is a valid `[vmedia]`.
    #[test]
    fn documented_example_parses_and_validates() {
        let doc = include_str!("../../docs/configuration.md");
        let section = &doc[doc.find("## `[vmedia]` and `[vmedia.swift]`").unwrap()..];
        let start = section.find("```toml\n").unwrap() + "```toml\n".len();
        let block = &section[start..start + section[start..].find("```").unwrap()];
        #[derive(Deserialize)]
        struct File {
            vmedia: PublishSettings,
        }
        let file: File = toml::from_str(block).unwrap();
        file.vmedia.validate().unwrap();
        let swift = file.vmedia.swift.unwrap();
        assert_eq!(swift.auth_version, AuthVersion::V3);
        assert_eq!(swift.region.as_deref(), Some("RegionOne"));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<PublishSettings>("publsher = \"swift\"").unwrap_err();
        assert!(err.to_string().contains("publsher"), "{err}");
    }

    #[test]
    fn bad_values_name_key_value_and_reason() {
        let cases: Vec<(PublishSettings, &str)> = vec![
            (
                PublishSettings {
                    subdir: "../etc".into(),
                    ..Default::default()
                },
                "vmedia.subdir = \"../etc\"",
            ),
            (
                PublishSettings {
                    file_mode: 644,
                    ..Default::default()
                },
                "vmedia.file_mode = \"0o1204\"",
            ),
            (
                PublishSettings {
                    publisher: Backend::Swift,
                    ..Default::default()
                },
                "needs a [vmedia.swift] section",
            ),
            (
                PublishSettings {
                    swift: Some(SwiftSettings {
                        project_name: String::new(),
                        ..swift_v3()
                    }),
                    ..Default::default()
                },
                "vmedia.swift.project_name",
            ),
            (
                PublishSettings {
                    swift: Some(SwiftSettings {
                        container: "a/b".into(),
                        ..swift_v3()
                    }),
                    ..Default::default()
                },
                "vmedia.swift.container = \"a/b\"",
            ),
            (
                PublishSettings {
                    swift: Some(SwiftSettings {
                        upload_attempts: 0,
                        ..swift_v3()
                    }),
                    ..Default::default()
                },
                "vmedia.swift.upload_attempts",
            ),
        ];
        for (settings, want) in cases {
            let err = settings.validate().unwrap_err().to_string();
            assert!(err.contains(want), "{err} should contain {want}");
        }
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let s = SwiftSettings {
            temp_url_key: Some(Secret::new("tempkey-zzz")),
            ..swift_v3()
        };
        let text = format!("{s:?} {} {}", s.key, toml::to_string(&s).unwrap());
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains("tempkey-zzz"), "{text}");
        assert!(text.contains("***"));
    }

    #[test]
    fn backend_override_parses() {
        assert_eq!("Swift".parse::<Backend>().unwrap(), Backend::Swift);
        assert_eq!(" local ".parse::<Backend>().unwrap(), Backend::Local);
        let err = "nfs".parse::<Backend>().unwrap_err().to_string();
        assert!(err.contains("\"nfs\""), "{err}");
    }
}
