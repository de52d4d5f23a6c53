//! `CacheSettings`: the `[image_cache]` section of the configuration file.
//!
//! Defaults follow Ironic's (`[pxe] image_cache_size` 20480 MiB, `image_cache_ttl` 10080 min,
//! `image_download_concurrency` 20, `[conductor] permitted_image_formats`, `force_raw_images`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::{ImageError, Result};
use super::format::ImageFormat;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheSettings {
    /// Size cap of the master directory in MiB; unused masters are evicted oldest-first above it.
    pub size_cap_mib: u64,
    /// Unused masters older than this (last used = max(atime, mtime, ctime)) are evicted.
    pub ttl_minutes: u64,
    /// Global bound on simultaneous downloads (and conversions).
    pub max_concurrent_downloads: usize,
    pub connect_timeout_secs: u64,
    /// Longest wait for the next bytes of a response (not for the whole download).
    pub read_timeout_secs: u64,
    /// Extra attempts after a failed download; back-off doubles from `retry_backoff_ms` up to 30 s.
    pub download_retries: u32,
    pub retry_backoff_ms: u64,
    /// Convert instance images that are not raw/gpt/iso to raw with `qemu-img convert`.
    pub force_raw_images: bool,
    pub permitted_image_formats: Vec<String>,
    /// Accept bare 32-hex-digit checksums as md5 (Ironic `[agent] allow_md5_checksum`).
    pub allow_md5_checksum: bool,
    pub qemu_img: PathBuf,
    /// Per image server (`host` or `host:port`) basic auth and CA bundle.
    pub servers: BTreeMap<String, ServerSettings>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    pub username: Option<String>,
    pub password: Option<String>,
    /// PEM bundle that replaces the system roots for this server.
    pub ca_bundle: Option<PathBuf>,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            size_cap_mib: 20480,
            ttl_minutes: 10080,
            max_concurrent_downloads: 20,
            connect_timeout_secs: 10,
            read_timeout_secs: 60,
            download_retries: 3,
            retry_backoff_ms: 1000,
            force_raw_images: true,
            permitted_image_formats: ["raw", "gpt", "qcow2", "iso"].map(String::from).to_vec(),
            allow_md5_checksum: true,
            qemu_img: PathBuf::from("qemu-img"),
            servers: BTreeMap::new(),
        }
    }
}

impl CacheSettings {
    /// Refuses a bad value naming the key, the value and the reason.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, value: String, reason: &str| {
            Err(ImageError::Settings(format!(
                "image_cache.{key} = {value}: {reason}"
            )))
        };
        if self.size_cap_mib == 0 {
            return bad("size_cap_mib", "0".into(), "must be at least 1");
        }
        if self.max_concurrent_downloads == 0 {
            return bad("max_concurrent_downloads", "0".into(), "must be at least 1");
        }
        if self.connect_timeout_secs == 0 {
            return bad("connect_timeout_secs", "0".into(), "must be at least 1");
        }
        if self.read_timeout_secs == 0 {
            return bad("read_timeout_secs", "0".into(), "must be at least 1");
        }
        if self.permitted_image_formats.is_empty() {
            return bad("permitted_image_formats", "[]".into(), "lists no format");
        }
        for f in &self.permitted_image_formats {
            if f.parse::<ImageFormat>().is_err() {
                return bad(
                    "permitted_image_formats",
                    format!("{f:?}"),
                    "unknown format (known: raw, gpt, qcow2, iso, vmdk, vhdx, vdi, luks)",
                );
            }
        }
        for (host, server) in &self.servers {
            if host.is_empty() || host.contains('/') {
                return bad(
                    "servers",
                    format!("{host:?}"),
                    "key must be host or host:port",
                );
            }
            if server.username.is_some() != server.password.is_some() {
                return bad(
                    &format!("servers.{host:?}"),
                    "username/password".into(),
                    "set both or neither",
                );
            }
            if let Some(ca) = &server.ca_bundle
                && !ca.is_file()
            {
                return bad(
                    &format!("servers.{host:?}.ca_bundle"),
                    ca.display().to_string(),
                    "file does not exist",
                );
            }
        }
        Ok(())
    }

    pub fn size_cap_bytes(&self) -> u64 {
        self.size_cap_mib.saturating_mul(1024 * 1024)
    }

    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.ttl_minutes.saturating_mul(60))
    }

    /// The permitted formats, parsed (call after [`CacheSettings::validate`]).
    pub fn permitted(&self) -> Vec<ImageFormat> {
        self.permitted_image_formats
            .iter()
            .filter_map(|f| f.parse().ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_match_ironic() {
        let s = CacheSettings::default();
        s.validate().unwrap();
        assert_eq!(s.size_cap_bytes(), 20 * 1024 * 1024 * 1024);
        assert_eq!(s.ttl(), Duration::from_secs(7 * 24 * 3600));
        assert_eq!(s.permitted().len(), 4);
    }

    #[test]
    fn bad_values_name_key_and_value() {
        let s: CacheSettings =
            toml::from_str("permitted_image_formats = [\"raw\", \"vhd2\"]").unwrap();
        let e = s.validate().unwrap_err().to_string();
        assert!(
            e.contains("permitted_image_formats") && e.contains("vhd2"),
            "{e}"
        );
        let s: CacheSettings = toml::from_str("max_concurrent_downloads = 0").unwrap();
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("max_concurrent_downloads")
        );
        assert!(toml::from_str::<CacheSettings>("size_cap = 3").is_err());
        let s: CacheSettings =
            toml::from_str("[servers.\"img:8080\"]\nusername = \"u\"\n").unwrap();
        assert!(s.validate().unwrap_err().to_string().contains("both"));
    }
}
