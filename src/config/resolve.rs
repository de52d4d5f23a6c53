//! From the merged file to a [`Config`]: derived values filled in, every section checked.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;

use super::{Config, ConfigError, ConfigFile};
use crate::settings::SettingError;
use crate::store::Database;

/// Fills derived values into `file` (so `config show` prints them) and checks every key.
pub(super) fn resolve(mut file: ConfigFile) -> Result<Config, ConfigError> {
    let data_dir = absolute(
        file.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("./ironboot-data")),
    );
    file.data_dir = Some(data_dir.clone());
    let host = host(&mut file)?;
    let my_ip = *file.my_ip.get_or_insert_with(detect_my_ip);
    let deprecations = move_legacy_http_keys(&mut file)?;
    let (db_url, database) = file.database.resolve(&data_dir)?;
    // What `config show` prints: the password stays in `database` only.
    file.database.url = Some(crate::store::mask_password(&db_url));
    let database = match database {
        Database::Sqlite { path } => Database::Sqlite {
            path: absolute(path),
        },
        pg @ Database::Postgres { .. } => pg,
    };
    let roots = Roots::resolve(&mut file, &data_dir)?;
    let auth = file.api.validate()?;
    let derived_urls = super::DerivedUrls {
        api: file.api.public_url.is_none(),
        http: file.deploy.http_url.is_none(),
    };
    let api_public_url = match &file.api.public_url {
        Some(u) => check_url("api.public_url", u)?,
        None => format!("http://{}", url_host_port(file.api.listen, my_ip)),
    };
    file.api.public_url = Some(api_public_url.clone());
    let http_url = match &file.deploy.http_url {
        Some(u) => check_url("deploy.http_url", u)?,
        None => format!("http://{}", url_host_port(file.http.listen, my_ip)),
    };
    file.deploy.http_url = Some(http_url.clone());
    let external_http_url = file
        .deploy
        .external_http_url
        .as_deref()
        .map(|u| check_url("deploy.external_http_url", u))
        .transpose()?;
    validate_sections(&file)?;
    Ok(Config {
        data_dir,
        host,
        my_ip,
        database,
        tftp_root: roots.tftp,
        http_root: roots.http,
        cache_dir: roots.cache,
        auth,
        api_public_url,
        http_url,
        external_http_url,
        api: file.api.clone(),
        conductor: file.conductor.clone(),
        agent: file.agent.clone(),
        clean_priorities: file.deploy.clean_priorities(),
        erase_params: file.deploy.erase_params(),
        log: file.log.clone(),
        pxe: file.pxe.clone(),
        tftp: file.tftp.clone(),
        http: file.http.clone(),
        image_cache: file.image_cache.clone(),
        media: file.media.clone(),
        vmedia: file.vmedia.clone(),
        redfish: file.redfish.clone(),
        deprecations,
        ipmi: file.ipmi.clone(),
        auto_discovery: file.auto_discovery.clone(),
        file,
        derived_urls,
    })
}

/// Each section's own checks, its error kept as the cause.
fn validate_sections(file: &ConfigFile) -> Result<(), ConfigError> {
    file.conductor.validate()?;
    file.auto_discovery.validate()?;
    if file.deploy.disk_erasure_concurrency == 0 {
        return Err(SettingError::new("deploy.disk_erasure_concurrency", 0, "must be > 0").into());
    }
    file.agent.validate()?;
    file.log.validate()?;
    file.pxe.validate()?;
    file.tftp.validate()?;
    file.http.validate()?;
    file.vmedia.validate()?;
    file.media.validate()?;
    file.image_cache.validate()?;
    file.redfish.validate().map_err(|e| match e {
        crate::bmc::redfish::RedfishError::Settings { key, value, reason } => {
            SettingError::new(key, value, reason)
        }
        other => SettingError::new("redfish", "", other),
    })?;
    // The boot interface parses these at start too; refusing them here names the key in
    // `config check`.
    crate::boot::render::KernelParams::parse(
        "redfish.kernel_append_params",
        &file.redfish.kernel_append_params,
    )?;
    file.ipmi.validate()?;
    Ok(())
}

/// `[pxe] http_root` and `http_url`, where Ironic kept them before Liberty, are accepted as
/// aliases of `[deploy] http_root` and `http_url`: moved there (so `config show` prints the
/// current names) and reported as deprecated. Both names with different values are refused:
/// neither can be assumed to be the one meant.
fn move_legacy_http_keys(file: &mut ConfigFile) -> Result<Vec<String>, SettingError> {
    let mut notes = Vec::new();
    if let Some(legacy) = file.pxe.http_root.take() {
        match &file.deploy.http_root {
            Some(current) if *current != legacy => {
                return Err(SettingError::new(
                    "pxe.http_root",
                    legacy.display(),
                    format!(
                        "is a deprecated alias of deploy.http_root, which is set to {}; \
                         remove pxe.http_root",
                        current.display()
                    ),
                ));
            }
            Some(_) => {}
            None => file.deploy.http_root = Some(legacy),
        }
        notes.push("pxe.http_root is deprecated; use deploy.http_root".to_string());
    }
    if let Some(legacy) = file.pxe.http_url.take() {
        match &file.deploy.http_url {
            Some(current) if current.trim_end_matches('/') != legacy.trim_end_matches('/') => {
                return Err(SettingError::new(
                    "pxe.http_url",
                    &legacy,
                    format!(
                        "is a deprecated alias of deploy.http_url, which is set to {current}; \
                         remove pxe.http_url"
                    ),
                ));
            }
            Some(_) => {}
            None => file.deploy.http_url = Some(legacy),
        }
        notes.push("pxe.http_url is deprecated; use deploy.http_url".to_string());
    }
    Ok(notes)
}

fn host(file: &mut ConfigFile) -> Result<String, SettingError> {
    let host = file.host.clone().unwrap_or_else(system_hostname);
    if host.is_empty()
        || host.len() > 255
        || host.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(SettingError::new(
            "host",
            &host,
            "must be 1-255 characters without spaces",
        ));
    }
    file.host = Some(host.clone());
    Ok(host)
}

/// The served roots and the image cache's own directory.
struct Roots {
    tftp: PathBuf,
    http: PathBuf,
    cache: PathBuf,
}

impl Roots {
    fn resolve(file: &mut ConfigFile, data_dir: &std::path::Path) -> Result<Roots, SettingError> {
        let tftp = absolute(
            file.pxe
                .tftp_root
                .clone()
                .unwrap_or_else(|| data_dir.join("tftpboot")),
        );
        file.pxe.tftp_root = Some(tftp.clone());
        let http = absolute(
            file.deploy
                .http_root
                .clone()
                .unwrap_or_else(|| data_dir.join("httpboot")),
        );
        file.deploy.http_root = Some(http.clone());
        let cache = data_dir.join("cache");
        for (key, root) in [("pxe.tftp_root", &tftp), ("deploy.http_root", &http)] {
            if root.starts_with(&cache) || cache.starts_with(root) {
                return Err(SettingError::new(
                    key,
                    root.display(),
                    format!(
                        "must not contain or lie inside the image cache {}",
                        cache.display()
                    ),
                ));
            }
        }
        Ok(Roots { tftp, http, cache })
    }
}

fn check_url(key: &str, u: &str) -> Result<String, SettingError> {
    match reqwest::Url::parse(u) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some() => {
            Ok(u.trim_end_matches('/').to_string())
        }
        Ok(_) => Err(SettingError::new(
            key,
            u,
            "must be an http:// or https:// URL with a host",
        )),
        Err(e) => Err(SettingError::new(key, u, e)),
    }
}

/// `host:port` for a URL built from a listen address: a wildcard listener is reached on `my_ip`.
pub(super) fn url_host_port(listen: SocketAddr, my_ip: IpAddr) -> String {
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
