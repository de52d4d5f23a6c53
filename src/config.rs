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
//! A bad value is refused at start with the key, the value and the reason.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::model::BootMode;

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
    #[error("invalid config: {key} = {value:?}: {reason}")]
    Invalid {
        key: String,
        value: String,
        reason: String,
    },
    /// A section's own validation, whose message already names key, value and reason.
    #[error("invalid config: {0}")]
    Section(String),
}

fn invalid(key: &str, value: impl ToString, reason: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// `[api]`: the management and ramdisk API listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSettings {
    /// Address of the API (management + ramdisk endpoints + /metrics + /healthz).
    pub listen: SocketAddr,
    /// `noauth` (only allowed on a loopback listener) or `http_basic`.
    pub auth_strategy: AuthStrategy,
    /// bcrypt htpasswd file for `http_basic` (as Ironic's `[DEFAULT] http_basic_auth_user_file`).
    pub http_basic_auth_user_file: Option<PathBuf>,
    /// URL agents use to reach this API (`ipa-api-url`); derived from `listen` and `my_ip`.
    pub public_url: Option<String>,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Handed to agents as `heartbeat_timeout` (Ironic's `[api] ramdisk_heartbeat_timeout`).
    pub ramdisk_heartbeat_timeout: u64,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 6385)),
            auth_strategy: AuthStrategy::Noauth,
            http_basic_auth_user_file: None,
            public_url: None,
            max_body_bytes: 4 * 1024 * 1024,
            ramdisk_heartbeat_timeout: 300,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthStrategy {
    Noauth,
    HttpBasic,
}

/// `[database]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://<path>`; default `sqlite://<data_dir>/ironboot.sqlite`.
    pub url: Option<String>,
}

/// `[conductor]`: the control loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConductorSettings {
    /// Seconds between keepalive touches of this conductor's row.
    pub heartbeat_interval: u64,
    /// Seconds after which a silent conductor counts as dead.
    pub heartbeat_timeout: u64,
    /// Seconds between runs of the provision-state checks (callback timeouts).
    pub check_provision_state_interval: u64,
    /// Seconds a node may stay in `wait call-back` without progress before it is failed.
    pub deploy_callback_timeout: u64,
    /// Seconds a node may stay in `clean wait` without progress before it is failed.
    pub clean_callback_timeout: u64,
    /// Run cleaning on provide/undeploy (no clean steps exist yet, so it only passes through).
    pub automated_clean: bool,
    /// Most deploy/undeploy operations running at once.
    pub max_concurrent_operations: usize,
    /// Power the node off when a deploy fails (Ironic's `power_off_after_deploy_failure`).
    pub power_off_after_deploy_failure: bool,
    /// Seconds between image cache clean-ups (TTL and size cap); 0 disables them.
    pub cache_clean_up_interval: u64,
    /// Seconds between take-over runs (active nodes whose boot files another conductor
    /// served get them regenerated here); 0 disables them.
    pub sync_local_state_interval: u64,
    /// Enable the `script` power interface. It runs commands named in a node's driver_info on
    /// this host, so anyone allowed to edit nodes could run programs here: labs and tests only.
    pub enable_script_power: bool,
}

impl Default for ConductorSettings {
    fn default() -> Self {
        ConductorSettings {
            heartbeat_interval: 10,
            heartbeat_timeout: 60,
            check_provision_state_interval: 60,
            deploy_callback_timeout: 1800,
            clean_callback_timeout: 1800,
            automated_clean: false,
            max_concurrent_operations: 64,
            power_off_after_deploy_failure: true,
            cache_clean_up_interval: 3600,
            sync_local_state_interval: 180,
            enable_script_power: false,
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A tracing filter (`info`, `ironboot=debug,tower_http=info`); `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Human,
    Json,
}

/// `[deploy]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct DeploySettings {
    /// Root served over HTTP; default `<data_dir>/httpboot`.
    pub http_root: Option<PathBuf>,
    /// URL of `http_root` as nodes see it; default `http://<my_ip>:<http port>`.
    pub http_url: Option<String>,
    /// URL given to BMCs for virtual media, when it differs from `http_url`.
    pub external_http_url: Option<String>,
}

/// `[agent]`: talking to the ironic-python-agent (the `direct` deploy interface).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentSettings {
    /// Refuse heartbeats whose `callback_url` is not `https://` (the agent's auto-TLS, pinned
    /// to the certificate it sends). Plain http only when this is false.
    pub require_tls: bool,
    /// Seconds one command request to the agent may take.
    pub command_timeout: u64,
    /// Attempts of one command request when the agent cannot be reached.
    pub max_command_attempts: u32,
    /// Seconds between polls of a command the conductor waits for (`install_bootloader`).
    pub command_wait_interval: u64,
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
    /// Seconds between those polls.
    pub post_deploy_get_power_state_retry_interval: u64,
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
            command_timeout: 60,
            max_command_attempts: 3,
            command_wait_interval: 6,
            command_wait_attempts: 100,
            stream_raw_images: true,
            image_download_source: ImageDownloadSource::Http,
            post_deploy_get_power_state_retries: 6,
            post_deploy_get_power_state_retry_interval: 5,
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

/// The validated configuration the service runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The merged file with every derived value filled in (what `config show` prints).
    pub file: ConfigFile,
    pub data_dir: PathBuf,
    pub host: String,
    pub my_ip: IpAddr,
    pub database_path: PathBuf,
    pub tftp_root: PathBuf,
    pub http_root: PathBuf,
    /// Owned exclusively by the image cache.
    pub cache_dir: PathBuf,
    /// `ipa-api-url`, without a trailing slash.
    pub api_public_url: String,
    /// `http_url`, without a trailing slash.
    pub http_url: String,
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
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| ConfigError::Read {
                    path: p.to_path_buf(),
                    source: e,
                })?;
                let parse_err = |e: toml::de::Error| ConfigError::Parse {
                    path: p.display().to_string(),
                    message: e.to_string(),
                };
                // Parse into the typed shape first so errors point at the file's own lines.
                toml::from_str::<ConfigFile>(&text).map_err(parse_err)?;
                toml::from_str::<toml::Table>(&text).map_err(parse_err)?
            }
            None => toml::Table::new(),
        };
        apply_env(&mut table, env)?;
        // Round-trip through text so an error quotes the offending `key = value` line.
        let merged = toml::to_string(&table).unwrap_or_default();
        let mut file: ConfigFile = toml::from_str(&merged).map_err(|e| ConfigError::Parse {
            path: format!(
                "{} with IRONBOOT_* environment applied",
                path.map_or("embedded defaults".into(), |p| p.display().to_string())
            ),
            message: e.to_string(),
        })?;
        if let Some(d) = &overrides.data_dir {
            file.data_dir = Some(d.clone());
        }
        if let Some(a) = overrides.api_listen {
            file.api.listen = a;
        }
        if let Some(a) = overrides.http_listen {
            file.http.listen = a;
        }
        if let Some(a) = overrides.tftp_listen {
            file.tftp.listen = a;
        }
        if overrides.log_json {
            file.log.format = LogFormat::Json;
        }
        Self::resolve(file)
    }

    /// Fills derived values and checks every key.
    pub fn resolve(mut file: ConfigFile) -> Result<Config, ConfigError> {
        let data_dir = absolute(
            file.data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("./ironboot-data")),
        );
        file.data_dir = Some(data_dir.clone());

        let host = match file.host.clone() {
            Some(h) => h,
            None => system_hostname(),
        };
        if host.is_empty()
            || host.len() > 255
            || host.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(invalid(
                "host",
                &host,
                "must be 1-255 characters without spaces",
            ));
        }
        file.host = Some(host.clone());

        let my_ip = file.my_ip.unwrap_or_else(detect_my_ip);
        file.my_ip = Some(my_ip);

        let db_url =
            file.database.url.clone().unwrap_or_else(|| {
                format!("sqlite://{}", data_dir.join("ironboot.sqlite").display())
            });
        let database_path = match db_url.strip_prefix("sqlite://") {
            Some(p) if !p.is_empty() => absolute(PathBuf::from(p)),
            _ => {
                return Err(invalid(
                    "database.url",
                    &db_url,
                    "only sqlite://<path> is supported by this build",
                ));
            }
        };
        file.database.url = Some(db_url);

        let tftp_root = absolute(
            file.pxe
                .tftp_root
                .clone()
                .unwrap_or_else(|| data_dir.join("tftpboot")),
        );
        file.pxe.tftp_root = Some(tftp_root.clone());
        let http_root = absolute(
            file.deploy
                .http_root
                .clone()
                .unwrap_or_else(|| data_dir.join("httpboot")),
        );
        file.deploy.http_root = Some(http_root.clone());
        let cache_dir = data_dir.join("cache");
        for (key, root) in [
            ("pxe.tftp_root", &tftp_root),
            ("deploy.http_root", &http_root),
        ] {
            if root.starts_with(&cache_dir) || cache_dir.starts_with(root) {
                return Err(invalid(
                    key,
                    root.display(),
                    format!(
                        "must not contain or lie inside the image cache {}",
                        cache_dir.display()
                    ),
                ));
            }
        }

        let api = &file.api;
        if api.auth_strategy == AuthStrategy::Noauth && !api.listen.ip().is_loopback() {
            return Err(invalid(
                "api.auth_strategy",
                "noauth",
                format!(
                    "noauth is only allowed when api.listen is a loopback address (it is {}); use http_basic",
                    api.listen
                ),
            ));
        }
        if api.auth_strategy == AuthStrategy::HttpBasic {
            match &api.http_basic_auth_user_file {
                None => {
                    return Err(invalid(
                        "api.http_basic_auth_user_file",
                        "",
                        "required when auth_strategy = \"http_basic\"",
                    ));
                }
                Some(p) if !p.is_file() => {
                    return Err(invalid(
                        "api.http_basic_auth_user_file",
                        p.display(),
                        "file does not exist",
                    ));
                }
                Some(_) => {}
            }
        }
        if api.max_body_bytes < 1024 {
            return Err(invalid(
                "api.max_body_bytes",
                api.max_body_bytes,
                "must be at least 1024",
            ));
        }
        if api.ramdisk_heartbeat_timeout == 0 {
            return Err(invalid("api.ramdisk_heartbeat_timeout", 0, "must be > 0"));
        }
        let api_public_url = match &api.public_url {
            Some(u) => check_url("api.public_url", u)?,
            None => format!("http://{}", url_host_port(api.listen, my_ip)),
        };
        file.api.public_url = Some(api_public_url.clone());

        let http_url = match &file.deploy.http_url {
            Some(u) => check_url("deploy.http_url", u)?,
            None => format!("http://{}", url_host_port(file.http.listen, my_ip)),
        };
        file.deploy.http_url = Some(http_url.clone());
        if let Some(u) = &file.deploy.external_http_url {
            check_url("deploy.external_http_url", u)?;
        }

        let c = &file.conductor;
        for (key, v) in [
            ("conductor.heartbeat_interval", c.heartbeat_interval),
            ("conductor.heartbeat_timeout", c.heartbeat_timeout),
            (
                "conductor.check_provision_state_interval",
                c.check_provision_state_interval,
            ),
        ] {
            if v == 0 {
                return Err(invalid(key, v, "must be > 0 seconds"));
            }
        }
        if c.heartbeat_timeout <= c.heartbeat_interval {
            return Err(invalid(
                "conductor.heartbeat_timeout",
                c.heartbeat_timeout,
                format!(
                    "must be longer than conductor.heartbeat_interval ({})",
                    c.heartbeat_interval
                ),
            ));
        }
        if c.max_concurrent_operations == 0 {
            return Err(invalid(
                "conductor.max_concurrent_operations",
                0,
                "must be > 0",
            ));
        }
        let a = &file.agent;
        for (key, v) in [
            ("agent.command_timeout", a.command_timeout),
            ("agent.command_wait_interval", a.command_wait_interval),
            (
                "agent.max_command_attempts",
                u64::from(a.max_command_attempts),
            ),
            (
                "agent.command_wait_attempts",
                u64::from(a.command_wait_attempts),
            ),
        ] {
            if v == 0 {
                return Err(invalid(key, v, "must be > 0"));
            }
        }
        const FORMATS: &[&str] = &["raw", "gpt", "qcow2", "iso", "vmdk", "vdi", "vhd", "vhdx"];
        if a.permitted_image_formats.is_empty() {
            return Err(invalid(
                "agent.permitted_image_formats",
                "[]",
                "list at least one image format",
            ));
        }
        if let Some(bad) = a
            .permitted_image_formats
            .iter()
            .find(|f| !FORMATS.contains(&f.as_str()))
        {
            return Err(invalid(
                "agent.permitted_image_formats",
                bad,
                format!("unknown image format; known: {}", FORMATS.join(", ")),
            ));
        }
        if tracing_subscriber::EnvFilter::try_new(&file.log.level).is_err() {
            return Err(invalid(
                "log.level",
                &file.log.level,
                "not a valid tracing filter (e.g. info, ironboot=debug)",
            ));
        }

        file.pxe
            .validate()
            .map_err(|e| ConfigError::Section(e.to_string()))?;
        file.tftp
            .validate()
            .map_err(|e| ConfigError::Section(e.to_string()))?;
        file.http
            .validate()
            .map_err(|e| ConfigError::Section(e.to_string()))?;
        file.vmedia
            .validate()
            .map_err(|e| ConfigError::Section(e.to_string()))?;
        file.media
            .validate()
            .map_err(|e| ConfigError::Section(e.to_string()))?;
        file.image_cache
            .validate()
            .map_err(|e| ConfigError::Section(e.to_string()))?;

        Ok(Config {
            file,
            data_dir,
            host,
            my_ip,
            database_path,
            tftp_root,
            http_root,
            cache_dir,
            api_public_url,
            http_url,
        })
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

    pub fn conductor_heartbeat_interval(&self) -> Duration {
        Duration::from_secs(self.file.conductor.heartbeat_interval)
    }
}

/// Sets `table[section][key]` from `IRONBOOT_SECTION__KEY` variables (see the module docs).
fn apply_env(table: &mut toml::Table, env: &[(String, String)]) -> Result<(), ConfigError> {
    const TOP_LEVEL: &[&str] = &["data_dir", "host", "my_ip"];
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix("IRONBOOT_") else {
            continue;
        };
        let rest = rest.to_ascii_lowercase();
        let path: Vec<&str> = match rest.split_once("__") {
            Some((section, key)) if !section.is_empty() && !key.is_empty() => vec![section, key],
            Some(_) => return Err(invalid(name, raw, "expected IRONBOOT_<SECTION>__<KEY>")),
            None if TOP_LEVEL.contains(&rest.as_str()) => vec![rest.as_str()],
            // Other IRONBOOT_* variables (IRONBOOT_CONFIG, test switches) are not config keys.
            None => continue,
        };
        let value = parse_env_value(raw);
        let mut cursor = &mut *table;
        for part in &path[..path.len() - 1] {
            let entry = cursor
                .entry(part.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            cursor = entry
                .as_table_mut()
                .ok_or_else(|| invalid(name, raw, format!("{part} is not a section")))?;
        }
        cursor.insert(path[path.len() - 1].to_string(), value);
    }
    Ok(())
}

fn parse_env_value(raw: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

fn check_url(key: &str, u: &str) -> Result<String, ConfigError> {
    match reqwest::Url::parse(u) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some() => {
            Ok(u.trim_end_matches('/').to_string())
        }
        Ok(_) => Err(invalid(
            key,
            u,
            "must be an http:// or https:// URL with a host",
        )),
        Err(e) => Err(invalid(key, u, e)),
    }
}

/// `host:port` for a URL built from a listen address: a wildcard listener is reached on `my_ip`.
fn url_host_port(listen: SocketAddr, my_ip: IpAddr) -> String {
    let ip = if listen.ip().is_unspecified() {
        my_ip
    } else {
        listen.ip()
    };
    SocketAddr::new(ip, listen.port()).to_string()
}

/// Makes `p` absolute against the current directory, dropping `.` components.
fn absolute(p: PathBuf) -> PathBuf {
    let joined = if p.is_absolute() {
        p
    } else {
        // The current directory is only unavailable if it was deleted; then keep the relative path.
        std::env::current_dir().map(|cwd| cwd.join(&p)).unwrap_or(p)
    };
    joined.components().collect()
}

fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The source address of the default route (no packet is sent: UDP connect only picks a route).
fn detect_my_ip() -> IpAddr {
    UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect("192.0.2.1:9")?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
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
        assert_eq!(c.database_path, Path::new("/srv/ib/ironboot.sqlite"));
        assert_eq!(c.tftp_root, Path::new("/srv/ib/tftpboot"));
        assert_eq!(c.http_root, Path::new("/srv/ib/httpboot"));
        assert_eq!(c.cache_dir, Path::new("/srv/ib/cache"));
        assert_eq!(c.file.api.listen, "127.0.0.1:6385".parse().unwrap());
        assert_eq!(c.file.http.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.file.tftp.listen, "0.0.0.0:69".parse().unwrap());
        assert_eq!(c.api_public_url, "http://127.0.0.1:6385");
        assert_eq!(
            c.http_url,
            format!("http://{}", SocketAddr::new(c.my_ip, 8080))
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
        ]);
        let o = Overrides {
            api_listen: Some("127.0.0.2:7001".parse().unwrap()),
            ..Default::default()
        };
        let c = Config::load_with_env(Some(&f), &e, &o).unwrap();
        assert_eq!(c.data_dir, Path::new("/var/lib/ib"));
        assert_eq!(c.file.conductor.deploy_callback_timeout, 120);
        assert_eq!(c.http_url, "http://10.0.0.1:8080");
        assert_eq!(c.file.api.listen, "127.0.0.2:7001".parse().unwrap());
        // What `config show` prints loads back to the same configuration.
        let shown = dir.path().join("shown.toml");
        std::fs::write(&shown, c.to_toml()).unwrap();
        let again = Config::load_with_env(Some(&shown), &[], &Overrides::default()).unwrap();
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
            (
                &[("IRONBOOT_DATABASE__URL", "postgres://x")],
                "database.url",
            ),
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
