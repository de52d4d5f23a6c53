//! `[api]`: the management and ramdisk API listener.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::settings::{SettingError, positive, secs};

/// `[api]` as written in the file.
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
    /// When set, every link the API writes starts with it; else links follow the request.
    pub public_url: Option<String>,
    /// Peers whose `X-Forwarded-Proto` / `X-Forwarded-Host` headers links follow (reverse
    /// proxies in front of the API). Loopback by default: a proxy on this host.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Handed to agents as `heartbeat_timeout` (Ironic's `[api] ramdisk_heartbeat_timeout`).
    #[serde(with = "secs")]
    pub ramdisk_heartbeat_timeout: Duration,
    /// Connections served at once; past it, new ones get 503 with `Retry-After`. Lowered at
    /// start if the open-file limit cannot hold it.
    pub max_connections: usize,
    /// Seconds a client has to send a complete request head, from connecting (or from the
    /// first byte of its next request on a kept-alive connection).
    #[serde(with = "secs")]
    pub header_read_timeout: Duration,
    /// Seconds a kept-alive connection may wait for its next request.
    #[serde(with = "secs")]
    pub keepalive_timeout: Duration,
    /// Seconds a request may go without a byte moving while it waits on the client.
    #[serde(with = "secs")]
    pub stall_timeout: Duration,
    /// Seconds a verified `http_basic` credential is remembered, so bcrypt's cost is paid
    /// once per client rather than per request; 0 verifies every request.
    #[serde(with = "secs")]
    pub auth_cache_ttl: Duration,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 6385)),
            auth_strategy: AuthStrategy::Noauth,
            http_basic_auth_user_file: None,
            public_url: None,
            trusted_proxies: vec![
                std::net::IpAddr::from([127, 0, 0, 1]),
                std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
            ],
            max_body_bytes: 4 * 1024 * 1024,
            ramdisk_heartbeat_timeout: Duration::from_secs(300),
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(60),
            stall_timeout: Duration::from_secs(60),
            auth_cache_ttl: Duration::from_secs(60),
        }
    }
}

/// The file's `auth_strategy` (Ironic's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthStrategy {
    Noauth,
    HttpBasic,
}

/// How API requests are authenticated, with what the strategy needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    Noauth,
    HttpBasic { user_file: PathBuf },
}

impl ApiSettings {
    /// The connection limits, with the cap the open-file budget allows.
    pub fn limits(&self, max_connections: usize) -> crate::serve::limits::ConnLimits {
        crate::serve::limits::ConnLimits {
            max_connections,
            header_read_timeout: self.header_read_timeout,
            keepalive_timeout: self.keepalive_timeout,
            stall_timeout: self.stall_timeout,
        }
    }

    /// Checks the section and returns its authentication.
    pub fn validate(&self) -> Result<Auth, SettingError> {
        if self.max_body_bytes < 1024 {
            return Err(SettingError::new(
                "api.max_body_bytes",
                self.max_body_bytes,
                "must be at least 1024",
            ));
        }
        positive(
            "api.ramdisk_heartbeat_timeout",
            self.ramdisk_heartbeat_timeout,
        )?;
        if !(1..=1_000_000).contains(&self.max_connections) {
            return Err(SettingError::new(
                "api.max_connections",
                self.max_connections,
                "must be between 1 and 1000000",
            ));
        }
        for (key, d) in [
            ("api.header_read_timeout", self.header_read_timeout),
            ("api.keepalive_timeout", self.keepalive_timeout),
            ("api.stall_timeout", self.stall_timeout),
        ] {
            positive(key, d)?;
            if d > Duration::from_secs(3600) {
                return Err(SettingError::new(
                    key,
                    d.as_secs(),
                    "must be at most 3600 seconds",
                ));
            }
        }
        if self.auth_cache_ttl > Duration::from_secs(3600) {
            return Err(SettingError::new(
                "api.auth_cache_ttl",
                self.auth_cache_ttl.as_secs(),
                "must be at most 3600 seconds",
            ));
        }
        match self.auth_strategy {
            AuthStrategy::Noauth if !self.listen.ip().is_loopback() => Err(SettingError::new(
                "api.auth_strategy",
                "noauth",
                format!(
                    "noauth is only allowed when api.listen is a loopback address (it is {}); \
                     use http_basic",
                    self.listen
                ),
            )),
            AuthStrategy::Noauth => Ok(Auth::Noauth),
            AuthStrategy::HttpBasic => match &self.http_basic_auth_user_file {
                None => Err(SettingError::new(
                    "api.http_basic_auth_user_file",
                    "",
                    "required when auth_strategy = \"http_basic\"",
                )),
                Some(p) if !p.is_file() => Err(SettingError::new(
                    "api.http_basic_auth_user_file",
                    p.display(),
                    "file does not exist",
                )),
                Some(p) => Ok(Auth::HttpBasic {
                    user_file: p.clone(),
                }),
            },
        }
    }
}
