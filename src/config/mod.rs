//! Configuration: a TOML file, `IRONBOOT_*` environment variables and command-line flags,
//! merged in that order (later wins) into one validated [`Config`].
//!
//! With no file at all ironboot runs on embedded defaults: everything lives in one data
//! directory (database, TFTP root, HTTP root, image cache), so hard links between the cache and
//! the served roots always work.
//!
//! Environment variables name keys as `IRONBOOT_<KEY>` for top-level keys (`IRONBOOT_DATA_DIR`)
//! and `IRONBOOT_<SECTION>__<KEY>` for section keys (`IRONBOOT_API__LISTEN=0.0.0.0:6385`).
//! Values are read as TOML when they parse as TOML (numbers, booleans, arrays), else as strings.
//!
//! Each section is defined and validated by the module it configures (`[conductor]` in
//! `conductor::settings`, `[pxe]` in `boot::settings`, ...); this module merges the layers,
//! fills in derived values ([`resolve`]) and keeps each section's own error as the cause.
//! A bad value is refused at start with the key, the value and the reason.

mod auto_discovery;
mod deploy;
mod env;
mod resolve;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::agent::{AgentSettings, ImageDownloadSource};
pub use crate::api::{ApiSettings, Auth, AuthStrategy};
pub use crate::conductor::ConductorSettings;
pub use crate::model::BootMode;
pub use crate::store::{Database, DatabaseSettings};
pub use crate::telemetry::{LogFormat, LogSettings};
pub use auto_discovery::AutoDiscoverySettings;
pub use deploy::DeploySettings;

/// A configuration problem, naming the key, the value and why it is refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: String, message: String },
    #[error("invalid config: {0}")]
    Setting(#[from] crate::settings::SettingError),
    #[error("invalid config: {0}")]
    Pxe(#[from] crate::boot::BootFilesError),
    #[error("invalid config: {0}")]
    Tftp(#[from] crate::serve::tftp::TftpError),
    #[error("invalid config: {0}")]
    Http(#[from] crate::serve::http::HttpError),
    #[error("invalid config: {0}")]
    Vmedia(#[from] crate::publish::PublishError),
    #[error("invalid config: {0}")]
    Media(#[from] crate::media::MediaError),
    #[error("invalid config: {0}")]
    ImageCache(#[from] crate::images::ImageError),
    #[error("invalid config: {0}")]
    Ipmi(#[from] crate::bmc::ipmi::IpmiError),
}

/// The configuration file's shape. After [`Config::load`] every derived `Option` is filled in,
/// so `ironboot config show` prints a complete file that loads back to the same config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ConfigFile {
    /// Directory holding the database, the served roots and the image cache.
    pub data_dir: Option<PathBuf>,
    /// This conductor's name (reservations, the conductors table); default: the host name.
    pub host: Option<String>,
    /// The address nodes reach this host on; default: the address of the default route.
    pub my_ip: Option<IpAddr>,
    pub api: ApiSettings,
    pub database: DatabaseSettings,
    pub conductor: ConductorSettings,
    pub log: LogSettings,
    pub pxe: crate::boot::PxeSettings,
    pub deploy: DeploySettings,
    pub tftp: crate::serve::tftp::TftpSettings,
    pub http: crate::serve::http::HttpSettings,
    pub agent: AgentSettings,
    pub image_cache: crate::images::CacheSettings,
    pub media: crate::media::MediaSettings,
    pub vmedia: crate::publish::PublishSettings,
    pub redfish: crate::bmc::redfish::RedfishSettings,
    pub ipmi: crate::bmc::ipmi::IpmiSettings,
    pub auto_discovery: AutoDiscoverySettings,
}

/// Values given on the command line; they override the file and the environment.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub api_listen: Option<SocketAddr>,
    pub http_listen: Option<SocketAddr>,
    pub tftp_listen: Option<SocketAddr>,
    pub log_json: bool,
}

/// The validated configuration the service runs with: every section checked, every derived
/// value (paths, URLs, authentication) resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub data_dir: PathBuf,
    pub host: String,
    pub my_ip: IpAddr,
    pub database: Database,
    pub tftp_root: PathBuf,
    pub http_root: PathBuf,
    /// Owned exclusively by the image cache.
    pub cache_dir: PathBuf,
    pub auth: Auth,
    /// `ipa-api-url`, without a trailing slash.
    pub api_public_url: String,
    /// `http_url`, without a trailing slash: where nodes reach the http root.
    pub http_url: String,
    /// Where BMCs reach the http root (virtual media), when it differs from `http_url`.
    pub external_http_url: Option<String>,
    pub api: ApiSettings,
    pub conductor: ConductorSettings,
    pub agent: AgentSettings,
    /// `[deploy] erase_devices_priority` / `erase_devices_metadata_priority`.
    pub clean_priorities: crate::conductor::clean_plan::CleanPriorities,
    /// `[deploy]` shred and secure-erase settings handed to the agent's `erase_devices`.
    pub erase_params: crate::conductor::clean_plan::EraseParams,
    pub log: LogSettings,
    pub pxe: crate::boot::PxeSettings,
    pub tftp: crate::serve::tftp::TftpSettings,
    pub http: crate::serve::http::HttpSettings,
    pub image_cache: crate::images::CacheSettings,
    pub media: crate::media::MediaSettings,
    pub vmedia: crate::publish::PublishSettings,
    /// `[redfish]`: the Redfish client and the `redfish-virtual-media` ISOs' kernel parameters.
    pub redfish: crate::bmc::redfish::RedfishSettings,
    /// Deprecated keys found while loading, each with its replacement; logged once logging
    /// is set up ([`Config::warn_deprecated`]).
    pub deprecations: Vec<String>,
    /// How ipmitool is run for `ipmi` nodes.
    pub ipmi: crate::bmc::ipmi::IpmiSettings,
    /// `[auto_discovery]`: enrolling unknown machines at inspection.
    pub auto_discovery: AutoDiscoverySettings,
    /// The merged file with every derived value filled in (what `config show` prints).
    file: ConfigFile,
    /// Whether `api_public_url` / `http_url` were derived from the listen addresses (and so
    /// follow the port actually bound when the configured one is 0).
    derived_urls: DerivedUrls,
}

/// How the URLs came about, not what they are: two configs with the same values in effect are
/// equal whether a URL was written or derived (`config show` writes the derived ones out).
#[derive(Debug, Clone, Copy)]
struct DerivedUrls {
    api: bool,
    http: bool,
}

impl PartialEq for DerivedUrls {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Config {
    /// Reads `path` (if any), applies the environment and `overrides`, and validates.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_with_env(path, &env, overrides)
    }

    /// [`Config::load`] with an explicit environment (tests).
    pub fn load_with_env(
        path: Option<&Path>,
        env: &[(String, String)],
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let mut table = match path {
            Some(p) => read_file(p)?,
            None => toml::Table::new(),
        };
        env::apply(&mut table, env)?;
        // Round-trip through text so an error quotes the offending `key = value` line.
        let merged = toml::to_string(&table).unwrap_or_default();
        let mut file: ConfigFile = toml::from_str(&merged).map_err(|e| ConfigError::Parse {
            path: format!(
                "{} with IRONBOOT_* environment applied",
                path.map_or("embedded defaults".into(), |p| p.display().to_string())
            ),
            message: e.to_string(),
        })?;
        overrides.apply(&mut file);
        resolve::resolve(file)
    }

    /// The effective configuration as TOML (what `ironboot config show` prints), with
    /// password-like values masked.
    pub fn to_toml(&self) -> String {
        fn mask(v: &mut toml::Value) {
            if let toml::Value::Table(t) = v {
                for (k, inner) in t.iter_mut() {
                    if crate::model::node::is_secret_key(k) && inner.is_str() {
                        *inner = toml::Value::String("******".into());
                    } else {
                        mask(inner);
                    }
                }
            }
        }
        // Serialising plain structs of strings, numbers and tables cannot fail.
        let mut v =
            toml::Value::try_from(&self.file).unwrap_or(toml::Value::Table(toml::Table::new()));
        mask(&mut v);
        toml::to_string_pretty(&v).unwrap_or_default()
    }
}

impl Config {
    /// Whether `[api] public_url` was configured (rather than derived from the listener).
    pub fn api_public_url_configured(&self) -> bool {
        !self.derived_urls.api
    }

    /// Logs each deprecated key the configuration used (call after logging is set up).
    pub fn warn_deprecated(&self) {
        for d in &self.deprecations {
            tracing::warn!("deprecated configuration: {d}");
        }
    }

    /// Derived URLs take the ports the listeners actually bound (a configured port 0 means
    /// "any free port").
    pub fn set_bound_ports(&mut self, api: SocketAddr, http: Option<SocketAddr>) {
        if self.derived_urls.api && self.api.listen.port() == 0 {
            self.api_public_url = format!(
                "http://{}",
                resolve::url_host_port(
                    SocketAddr::new(self.api.listen.ip(), api.port()),
                    self.my_ip
                )
            );
            self.file.api.public_url = Some(self.api_public_url.clone());
        }
        if let Some(http) = http
            && self.derived_urls.http
            && self.http.listen.port() == 0
        {
            self.http_url = format!(
                "http://{}",
                resolve::url_host_port(
                    SocketAddr::new(self.http.listen.ip(), http.port()),
                    self.my_ip
                )
            );
            self.file.deploy.http_url = Some(self.http_url.clone());
        }
    }
}

impl Overrides {
    fn apply(&self, file: &mut ConfigFile) {
        if let Some(d) = &self.data_dir {
            file.data_dir = Some(d.clone());
        }
        if let Some(a) = self.api_listen {
            file.api.listen = a;
        }
        if let Some(a) = self.http_listen {
            file.http.listen = a;
        }
        if let Some(a) = self.tftp_listen {
            file.tftp.listen = a;
        }
        if self.log_json {
            file.log.format = LogFormat::Json;
        }
    }
}

/// The file as a table, after checking it parses into the typed shape (so errors point at the
/// file's own lines).
fn read_file(p: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(p).map_err(|e| ConfigError::Read {
        path: p.to_path_buf(),
        source: e,
    })?;
    let parse_err = |e: toml::de::Error| ConfigError::Parse {
        path: p.display().to_string(),
        message: e.to_string(),
    };
    toml::from_str::<ConfigFile>(&text).map_err(parse_err)?;
    toml::from_str::<toml::Table>(&text).map_err(parse_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn embedded_defaults_live_in_one_data_dir() {
        let c = Config::load_with_env(
            None,
            &[],
            &Overrides {
                data_dir: Some("/srv/ib".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            c.database,
            Database::Sqlite {
                path: "/srv/ib/ironboot.sqlite".into()
            }
        );
        assert_eq!(c.tftp_root, Path::new("/srv/ib/tftpboot"));
        assert_eq!(c.http_root, Path::new("/srv/ib/httpboot"));
        assert_eq!(c.cache_dir, Path::new("/srv/ib/cache"));
        assert_eq!(c.api.listen, "127.0.0.1:6385".parse().unwrap());
        assert_eq!(c.http.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.tftp.listen, "0.0.0.0:69".parse().unwrap());
        assert_eq!(c.api_public_url, "http://127.0.0.1:6385");
        assert_eq!(
            c.http_url,
            format!("http://{}", SocketAddr::new(c.my_ip, 8080))
        );
    }

    #[test]
    fn a_postgres_url_keeps_its_password_out_of_config_show() {
        let url = "postgres://ironboot:pg-secret@db.example:5432/ironboot";
        let c = Config::load_with_env(
            None,
            &env(&[("IRONBOOT_DATABASE__URL", url)]),
            &Overrides {
                data_dir: Some("/srv/ib".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.database, Database::Postgres { url: url.into() });
        let shown = c.to_toml();
        assert!(
            shown.contains("postgres://ironboot:******@db.example:5432/ironboot")
                && !shown.contains("pg-secret"),
            "{shown}"
        );
    }

    #[test]
    fn file_then_env_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("ironboot.toml");
        std::fs::write(
            &f,
            "data_dir = \"/var/lib/ib\"\n[api]\nlisten = \"127.0.0.1:7000\"\n[conductor]\ndeploy_callback_timeout = 60\n",
        )
        .unwrap();
        let e = env(&[
            ("IRONBOOT_CONDUCTOR__DEPLOY_CALLBACK_TIMEOUT", "120"),
            ("IRONBOOT_DEPLOY__HTTP_URL", "http://10.0.0.1:8080/"),
            ("IRONBOOT_REQUIRE_PEERS", "1"),
            ("IRONBOOT_IPMI__BOOT_FLAGS_CHECK", "device"),
        ]);
        let o = Overrides {
            api_listen: Some("127.0.0.2:7001".parse().unwrap()),
            ..Default::default()
        };
        let c = Config::load_with_env(Some(&f), &e, &o).unwrap();
        assert_eq!(c.data_dir, Path::new("/var/lib/ib"));
        assert_eq!(
            c.ipmi.boot_flags_check,
            crate::bmc::ipmi::BootFlagsCheck::Device
        );
        assert_eq!(
            c.conductor.deploy_callback_timeout,
            std::time::Duration::from_secs(120)
        );
        assert_eq!(c.http_url, "http://10.0.0.1:8080");
        assert_eq!(c.api.listen, "127.0.0.2:7001".parse().unwrap());
        // What `config show` prints loads back to the same configuration.
        let shown = dir.path().join("shown.toml");
        std::fs::write(&shown, c.to_toml()).unwrap();
        let again = Config::load_with_env(Some(&shown), &[], &Overrides::default()).unwrap();
        // `config show` prints the derived URLs, so they read back as given: same values, but
        // no longer derived (which only matters for a listener on port 0).
        assert!(!again.derived_urls.api && !again.derived_urls.http);
        assert_eq!(again, c);
    }

    #[test]
    fn bad_values_name_key_value_and_reason() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("IRONBOOT_API__LISTEN", "0.0.0.0:6385")],
                "api.auth_strategy",
            ),
            (
                &[("IRONBOOT_API__AUTH_STRATEGY", "http_basic")],
                "api.http_basic_auth_user_file",
            ),
            (&[("IRONBOOT_DATABASE__URL", "mysql://x")], "database.url"),
            (
                &[("IRONBOOT_DEPLOY__HTTP_URL", "ftp://x")],
                "deploy.http_url",
            ),
            (
                &[("IRONBOOT_CONDUCTOR__HEARTBEAT_TIMEOUT", "5")],
                "conductor.heartbeat_timeout",
            ),
            (
                &[("IRONBOOT_CONDUCTOR__HEARTBEAT_INTERVAL", "0")],
                "conductor.heartbeat_interval",
            ),
            (
                &[
                    ("IRONBOOT_PXE__TFTP_ROOT", "/d/cache/tftp"),
                    ("IRONBOOT_DATA_DIR", "/d"),
                ],
                "pxe.tftp_root",
            ),
            (&[("IRONBOOT_LOG__LEVEL", "[[[")], "log.level"),
            (
                &[("IRONBOOT_IPMI__COMMAND_TIMEOUT_SECS", "0")],
                "[ipmi] command_timeout_secs = 0",
            ),
            (
                &[("IRONBOOT_CONDUCTOR__SYNC_POWER_STATE_WORKERS", "0")],
                "conductor.sync_power_state_workers",
            ),
        ];
        for (vars, key) in cases {
            let err = Config::load_with_env(None, &env(vars), &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{vars:?}: {err}");
        }
        let unknown = Config::load_with_env(
            None,
            &env(&[("IRONBOOT_API__LISTN", "x")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(unknown.to_string().contains("listn"), "{unknown}");
        let wrong_type = Config::load_with_env(
            None,
            &env(&[("IRONBOOT_API__LISTEN", "nowhere")]),
            &Overrides::default(),
        );
        assert!(wrong_type.unwrap_err().to_string().contains("nowhere"));
    }

    #[test]
    fn legacy_pxe_http_keys_are_deprecated_aliases() {
        let c = Config::load_with_env(
            None,
            &env(&[
                ("IRONBOOT_PXE__HTTP_ROOT", "/srv/legacy/http"),
                ("IRONBOOT_PXE__HTTP_URL", "http://10.0.0.9:8080/"),
            ]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.http_root, Path::new("/srv/legacy/http"));
        assert_eq!(c.http_url, "http://10.0.0.9:8080");
        assert_eq!(
            c.deprecations,
            [
                "pxe.http_root is deprecated; use deploy.http_root",
                "pxe.http_url is deprecated; use deploy.http_url"
            ]
        );
        // `config show` prints the current names only, and loads back without warnings.
        let shown = c.to_toml();
        assert!(!shown.contains("[pxe]\nhttp_root"), "{shown}");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("shown.toml");
        std::fs::write(&f, &shown).unwrap();
        let again = Config::load_with_env(Some(&f), &[], &Overrides::default()).unwrap();
        assert_eq!(again.http_root, c.http_root);
        assert!(again.deprecations.is_empty());
        // Both names, same value: accepted with the warning; different values: refused.
        let same = Config::load_with_env(
            None,
            &env(&[
                ("IRONBOOT_PXE__HTTP_ROOT", "/srv/h"),
                ("IRONBOOT_DEPLOY__HTTP_ROOT", "/srv/h"),
            ]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(same.deprecations.len(), 1);
        let err = Config::load_with_env(
            None,
            &env(&[
                ("IRONBOOT_PXE__HTTP_URL", "http://a:1"),
                ("IRONBOOT_DEPLOY__HTTP_URL", "http://b:2"),
            ]),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("pxe.http_url") && err.contains("http://b:2"),
            "{err}"
        );
    }

    #[test]
    fn redfish_section_is_read_and_checked() {
        let c = Config::load_with_env(
            None,
            &env(&[
                ("IRONBOOT_REDFISH__CONNECTION_ATTEMPTS", "2"),
                ("IRONBOOT_REDFISH__KERNEL_APPEND_PARAMS", "console=ttyS0"),
            ]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.redfish.connection_attempts, 2);
        assert_eq!(c.redfish.kernel_append_params, "console=ttyS0");
        for (key, value) in [
            ("IRONBOOT_REDFISH__CONNECTION_ATTEMPTS", "0"),
            ("IRONBOOT_REDFISH__KERNEL_APPEND_PARAMS", "a=\"unbalanced"),
        ] {
            let err = Config::load_with_env(None, &env(&[(key, value)]), &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("redfish."), "{key}={value}: {err}");
        }
    }

    #[test]
    fn unreadable_and_malformed_files() {
        let err = Config::load_with_env(
            Some(Path::new("/nonexistent/x.toml")),
            &[],
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/x.toml"));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("bad.toml");
        std::fs::write(&f, "[api\nlisten=").unwrap();
        let err = Config::load_with_env(Some(&f), &[], &Overrides::default()).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
    }
}
