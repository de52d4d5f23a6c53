//! The agent's parameters: IPA's kernel command line names (`ipa-api-url`, `BOOTIF`, ...),
//! read from `/proc/cmdline` (or a file), overridden by `parameters.txt` of the `ir-vfd-dev`
//! floppy when `boot_method=vmedia` (as IPA does), then by command-line flags.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ironboot::model::MacAddress;

use crate::Cli;

/// IPA's default API port, advertised unless `ipa-advertise-port` says otherwise.
pub const DEFAULT_PORT: u16 = 9999;

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read the kernel parameters from {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parameter {key}={value:?}: {reason}")]
    Invalid {
        key: String,
        value: String,
        reason: String,
    },
    #[error("no ipa-api-url: give it on the kernel command line (or --api-url)")]
    NoApiUrl,
}

/// What the agent may treat as install targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskScope {
    /// Every local disk (the agent runs in a deploy ramdisk).
    Machine,
    /// Only these paths (tests, development).
    Only(Vec<PathBuf>),
}

/// How "power off" and "reboot" are carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerRole {
    /// PID 1 of the ramdisk: the reboot(2) system call.
    Init,
    /// Anything else: the process exits (its supervisor plays the machine).
    Process,
}

/// Image download behaviour (IPA's `image_download_*` options).
#[derive(Debug, Clone)]
pub struct DownloadSettings {
    pub connect_timeout: Duration,
    /// Extra attempts after the first, for connection errors, 5xx and checksum mismatches.
    pub retries: u32,
    pub retry_interval: Duration,
    /// Zero: unlimited.
    pub max_duration: Duration,
    /// Do not verify the image server's TLS certificate (`ipa-insecure`).
    pub insecure: bool,
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// `ipa-api-url`, comma-separated in the parameter; tried in order.
    pub api_urls: Vec<String>,
    /// `ipa-agent-token`: pre-shared (virtual media) instead of issued at lookup.
    pub agent_token: Option<String>,
    /// `ipa-global-request-id`, sent as `X-OpenStack-Request-ID`.
    pub global_request_id: Option<String>,
    /// `BOOTIF`: the NIC the machine booted from (looked up first).
    pub bootif: Option<MacAddress>,
    pub listen: SocketAddr,
    pub advertise_host: Option<IpAddr>,
    pub advertise_port: u16,
    pub lookup_timeout: Duration,
    pub lookup_interval: Duration,
    /// `ipa-ironic-api-version`: skip version discovery.
    pub api_version: Option<u32>,
    pub auto_tls: bool,
    pub download: DownloadSettings,
    pub disks: DiskScope,
    /// MACs for lookup; `None`: the machine's NICs.
    pub macs: Option<Vec<MacAddress>>,
    pub power: PowerRole,
}

/// Splits a kernel command line into `key=value` pairs (bare words map to "").
pub fn parse_cmdline(text: &str) -> BTreeMap<String, String> {
    text.split_whitespace()
        .map(|w| match w.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (w.to_string(), String::new()),
        })
        .collect()
}

fn read_cmdline(path: &Path) -> Result<BTreeMap<String, String>, SettingsError> {
    std::fs::read_to_string(path)
        .map(|t| parse_cmdline(&t))
        .map_err(|source| SettingsError::Read {
            path: path.to_path_buf(),
            source,
        })
}

/// Adds the floppy's parameters when `boot_method=vmedia` (they win, as in IPA).
fn merge_vmedia(params: &mut BTreeMap<String, String>) {
    if params.get("boot_method").map(String::as_str) != Some("vmedia") {
        return;
    }
    match crate::vmedia::read_parameters() {
        Ok(found) => {
            tracing::info!(device = %found.device.display(), count = found.params.len(),
                "parameters read from the virtual media floppy");
            params.extend(found.params);
        }
        Err(e) => {
            tracing::error!(error = %e, "boot_method=vmedia but no parameters from virtual media")
        }
    }
}

fn invalid(key: &str, value: &str, reason: impl Into<String>) -> SettingsError {
    SettingsError::Invalid {
        key: key.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

fn num<T: std::str::FromStr>(
    p: &BTreeMap<String, String>,
    key: &str,
    default: T,
) -> Result<T, SettingsError> {
    match p.get(key) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| invalid(key, v, "not a non-negative number")),
    }
}

fn secs(p: &BTreeMap<String, String>, key: &str, default: u64) -> Result<Duration, SettingsError> {
    num(p, key, default).map(Duration::from_secs)
}

/// oslo-style booleans: 1/true/yes/on, and a bare word means true.
fn flag(p: &BTreeMap<String, String>, key: &str, default: bool) -> Result<bool, SettingsError> {
    match p.get(key).map(|v| v.to_ascii_lowercase()) {
        None => Ok(default),
        Some(v) => match v.as_str() {
            "" | "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err(invalid(key, &v, "not a boolean")),
        },
    }
}

/// `BOOTIF=01-aa-bb-cc-dd-ee-ff` (PXELINUX) or a plain MAC (iPXE, GRUB).
pub fn parse_bootif(value: &str) -> Result<MacAddress, SettingsError> {
    let v = value.trim();
    let mac = match v.strip_prefix("01-") {
        Some(rest) if rest.len() == 17 => rest.replace('-', ":"),
        _ => v.replace('-', ":"),
    };
    MacAddress::parse(&mac).map_err(|e| invalid("BOOTIF", value, e.to_string()))
}

impl Settings {
    /// From parameters (kernel command line, floppy) for the ramdisk's init.
    pub fn from_params(
        p: &BTreeMap<String, String>,
        disks: DiskScope,
        power: PowerRole,
    ) -> Result<Settings, SettingsError> {
        let api_urls: Vec<String> = p
            .get("ipa-api-url")
            .map(|v| {
                v.split(',')
                    .map(|u| u.trim().trim_end_matches('/').to_string())
                    .filter(|u| !u.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        for u in &api_urls {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(invalid("ipa-api-url", u, "must be an http(s) URL"));
            }
        }
        let listen_host: IpAddr = match p.get("ipa-listen-host") {
            Some(h) => h
                .parse()
                .map_err(|_| invalid("ipa-listen-host", h, "not an IP address"))?,
            None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        };
        let advertise_host = match p.get("ipa-advertise-host") {
            Some(h) => Some(h.parse().map_err(|_| {
                invalid(
                    "ipa-advertise-host",
                    h,
                    "not an IP address (host names are not supported)",
                )
            })?),
            None => None,
        };
        let api_version = match p.get("ipa-ironic-api-version") {
            Some(v) => Some(
                v.strip_prefix("1.")
                    .and_then(|m| m.parse().ok())
                    .ok_or_else(|| invalid("ipa-ironic-api-version", v, "must look like 1.68"))?,
            ),
            None => None,
        };
        Ok(Settings {
            api_urls,
            agent_token: p.get("ipa-agent-token").filter(|t| !t.is_empty()).cloned(),
            global_request_id: p.get("ipa-global-request-id").cloned(),
            bootif: p.get("BOOTIF").map(|v| parse_bootif(v)).transpose()?,
            listen: SocketAddr::new(listen_host, num(p, "ipa-listen-port", DEFAULT_PORT)?),
            advertise_host,
            advertise_port: num(p, "ipa-advertise-port", DEFAULT_PORT)?,
            lookup_timeout: secs(p, "ipa-lookup-timeout", 600)?,
            lookup_interval: secs(p, "ipa-lookup-interval", 1)?,
            api_version,
            auto_tls: flag(p, "ipa-enable-auto-tls", true)?,
            download: DownloadSettings {
                connect_timeout: secs(p, "ipa-image-download-connection-timeout", 60)?,
                retries: num(p, "ipa-image-download-connection-retries", 9)?,
                retry_interval: secs(p, "ipa-image-download-connection-retry-interval", 10)?,
                max_duration: secs(p, "ipa-image-download-max-duration", 0)?,
                insecure: flag(p, "ipa-insecure", false)?,
            },
            disks,
            macs: None,
            power,
        })
    }

    /// For the ramdisk's init: `/proc/cmdline`, then the floppy.
    pub fn for_init() -> Result<Settings, SettingsError> {
        let mut p = read_cmdline(Path::new("/proc/cmdline"))?;
        merge_vmedia(&mut p);
        let s = Self::from_params(&p, DiskScope::Machine, PowerRole::Init)?;
        if s.api_urls.is_empty() {
            return Err(SettingsError::NoApiUrl);
        }
        Ok(s)
    }

    /// For an ordinary process: parameters from `--cmdline-file` (or /proc/cmdline), the
    /// floppy, then the flags.
    pub fn for_process(cli: &Cli) -> Result<Settings, SettingsError> {
        let path = cli
            .cmdline_file
            .clone()
            .unwrap_or_else(|| PathBuf::from("/proc/cmdline"));
        let mut p = read_cmdline(&path)?;
        merge_vmedia(&mut p);
        let disks = if cli.ramdisk {
            DiskScope::Machine
        } else {
            DiskScope::Only(cli.disks.clone())
        };
        let mut s = Self::from_params(&p, disks, PowerRole::Process)?;
        if let Some(u) = &cli.api_url {
            s.api_urls = vec![u.trim_end_matches('/').to_string()];
        }
        if let Some(l) = cli.listen {
            s.listen = l;
        }
        if cli.advertise_host.is_some() {
            s.advertise_host = cli.advertise_host;
        }
        if let Some(p) = cli.advertise_port {
            s.advertise_port = p;
        }
        if cli.no_tls {
            s.auto_tls = false;
        }
        if !cli.macs.is_empty() {
            let macs = cli
                .macs
                .iter()
                .map(|m| MacAddress::parse(m).map_err(|e| invalid("--mac", m, e.to_string())))
                .collect::<Result<Vec<_>, _>>()?;
            s.macs = Some(macs);
        }
        if s.api_urls.is_empty() {
            return Err(SettingsError::NoApiUrl);
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_parameters_become_settings() {
        let p = parse_cmdline(
            "BOOT_IMAGE=/vmlinuz console=ttyS0 ipa-api-url=http://10.0.2.2:6385/,http://b:1 \
             BOOTIF=01-52-54-00-12-34-56 ipa-advertise-host=127.0.0.1 ipa-advertise-port=4321 \
             ipa-global-request-id=req-1 ipa-image-download-connection-retries=1 ipa-debug quiet",
        );
        assert_eq!(p["quiet"], "");
        let s = Settings::from_params(&p, DiskScope::Machine, PowerRole::Init).unwrap();
        assert_eq!(s.api_urls, ["http://10.0.2.2:6385", "http://b:1"]);
        assert_eq!(s.bootif.unwrap().as_str(), "52:54:00:12:34:56");
        assert_eq!(s.advertise_port, 4321);
        assert_eq!(s.listen.port(), DEFAULT_PORT);
        assert_eq!(s.download.retries, 1);
        assert_eq!(s.global_request_id.as_deref(), Some("req-1"));
        assert!(s.auto_tls);
        assert!(s.agent_token.is_none());
    }

    #[test]
    fn bad_values_name_the_parameter() {
        for (k, v) in [
            ("ipa-api-url", "ftp://x"),
            ("ipa-lookup-timeout", "soon"),
            ("BOOTIF", "zz"),
            ("ipa-insecure", "maybe"),
            ("ipa-advertise-host", "agent.example"),
            ("ipa-ironic-api-version", "2"),
        ] {
            let p = BTreeMap::from([(k.to_string(), v.to_string())]);
            let e = Settings::from_params(&p, DiskScope::Machine, PowerRole::Init).unwrap_err();
            assert!(e.to_string().contains(k), "{e}");
        }
    }

    #[test]
    fn bootif_in_every_spelling() {
        for v in [
            "01-52-54-00-ab-cd-ef",
            "52:54:00:ab:cd:ef",
            "52-54-00-AB-CD-EF",
        ] {
            assert_eq!(parse_bootif(v).unwrap().as_str(), "52:54:00:ab:cd:ef");
        }
    }
}
