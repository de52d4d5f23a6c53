//! The agent's life, in IPA's order: version discovery, lookup by the machine's MACs (the
//! agent token), the advertised address, auto-TLS, the command API, then heartbeats until
//! the machine goes down. And the state the commands share.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use ironboot::model::MacAddress;
use serde_json::{Map, Value, json};
use subtle::ConstantTimeEq;
use tokio::sync::Notify;

use crate::commands::CommandLog;
use crate::ironic::{IronicClient, IronicError, VERSION_TLS};
use crate::logbuf::LogBuffer;
use crate::settings::Settings;

/// The IPA release whose protocol this agent speaks.
pub const IPA_PROTOCOL: &str = "13.0.0";
/// Tokens shorter than this are ignored, as IPA does.
const MIN_TOKEN_LEN: usize = 32;
const MASKED_TOKEN: &str = "******";

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Ironic(#[from] IronicError),
    #[error(
        "the conductor already handed out this node's agent token (lookup answered ******) and \
         none was given with ipa-agent-token: this agent cannot authenticate; deploy the node again"
    )]
    TokenAlreadyIssued,
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot find the address the conductor reaches this machine on (via {api}): {reason}; set ipa-advertise-host"
    )]
    NoAdvertiseAddress { api: String, reason: String },
}

/// The conductor's settings from lookup (`config`).
#[derive(Debug, Clone)]
pub struct LookupConfig {
    pub heartbeat_timeout: Duration,
    pub md5_enable: bool,
    pub enable_bios_bootloader_install: bool,
}

/// What the command handlers share.
pub struct Agent {
    pub settings: Settings,
    pub logs: LogBuffer,
    /// Sent as `agent_version` and in `/v1/status`.
    pub version: String,
    pub started_at: f64,
    pub commands: CommandLog,
    /// Set when an async command ends: the conductor learns it on the next heartbeat.
    pub force_heartbeat: Notify,
    token: RwLock<Option<String>>,
    node: Mutex<Option<Value>>,
    config: Mutex<LookupConfig>,
    partition_uuids: Mutex<Map<String, Value>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Agent {
    pub fn new(
        settings: Settings,
        logs: LogBuffer,
        token: Option<String>,
        node: Value,
        config: LookupConfig,
    ) -> Agent {
        let started_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        Agent {
            settings,
            logs,
            version: format!(
                "{IPA_PROTOCOL}+ironboot.agent.{}",
                env!("CARGO_PKG_VERSION")
            ),
            started_at,
            commands: CommandLog::default(),
            force_heartbeat: Notify::new(),
            token: RwLock::new(token),
            node: Mutex::new(Some(node)),
            config: Mutex::new(config),
            partition_uuids: Mutex::new(Map::new()),
        }
    }

    pub fn token(&self) -> Option<String> {
        self.token.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The command API's check: the token must be present and equal (constant time).
    pub fn token_matches(&self, given: Option<&str>) -> bool {
        match (self.token(), given) {
            (Some(t), Some(g)) => t.as_bytes().ct_eq(g.as_bytes()).into(),
            _ => false,
        }
    }

    pub fn node(&self) -> Option<Value> {
        lock(&self.node).clone()
    }

    /// Keeps the newest node the conductor sent (root device hints, boot mode).
    pub fn cache_node(&self, node: Option<&Value>) {
        if let Some(n) = node.filter(|n| n.is_object()) {
            *lock(&self.node) = Some(n.clone());
        }
    }

    pub fn lookup_config(&self) -> LookupConfig {
        lock(&self.config).clone()
    }

    pub fn partition_uuids(&self) -> Map<String, Value> {
        lock(&self.partition_uuids).clone()
    }

    pub fn set_partition_uuids(&self, uuids: Map<String, Value>) {
        *lock(&self.partition_uuids) = uuids;
    }
}

/// The machine's Ethernet interfaces: name, MAC, IPv4 addresses.
pub fn interfaces() -> Vec<Value> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/sys/class/net") else {
        return out;
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let read = |n: &str, f: &str| {
        std::fs::read_to_string(format!("/sys/class/net/{n}/{f}"))
            .map(|s| s.trim().to_string())
            .ok()
    };
    for n in names {
        // ARPHRD_ETHER only (no loopback, tunnels, ...).
        if read(&n, "type").as_deref() != Some("1") {
            continue;
        }
        out.push(json!({"name": n, "mac_address": read(&n, "address"),
                        "carrier": read(&n, "carrier").as_deref() == Some("1")}));
    }
    out
}

/// The MACs lookup sends: the flags', else every NIC's, the boot NIC first.
fn lookup_macs(settings: &Settings) -> Vec<MacAddress> {
    let mut macs: Vec<MacAddress> = match &settings.macs {
        Some(m) => m.clone(),
        None => interfaces()
            .iter()
            .filter_map(|i| MacAddress::parse(i["mac_address"].as_str()?).ok())
            .collect(),
    };
    if let Some(boot) = &settings.bootif
        && let Some(at) = macs.iter().position(|m| m == boot)
    {
        let m = macs.remove(at);
        macs.insert(0, m);
    }
    macs
}

/// The local address of the route to the API (what `ip route get` would say), retried while
/// the network comes up.
async fn advertise_ip(settings: &Settings, api: &str) -> Result<IpAddr, AgentError> {
    if let Some(ip) = settings.advertise_host {
        return Ok(ip);
    }
    let fail = |reason: String| AgentError::NoAdvertiseAddress {
        api: api.to_string(),
        reason,
    };
    let url = reqwest::Url::parse(api).map_err(|e| fail(e.to_string()))?;
    let host = url
        .host_str()
        .ok_or_else(|| fail("no host".into()))?
        .to_string();
    let port = url.port_or_known_default().unwrap_or(80);
    let mut last = String::new();
    for _ in 0..6 {
        let found = async {
            let addr = tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
                .await
                .map_err(|e| e.to_string())?
                .next()
                .ok_or("no address")?;
            let bind = if addr.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            };
            let s = UdpSocket::bind(bind).map_err(|e| e.to_string())?;
            s.connect(addr).map_err(|e| e.to_string())?;
            let ip = s.local_addr().map_err(|e| e.to_string())?.ip();
            if ip.is_unspecified()
                || matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
            {
                return Err(format!("{ip} cannot be advertised"));
            }
            Ok::<_, String>(ip)
        }
        .await;
        match found {
            Ok(ip) => return Ok(ip),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    Err(fail(last))
}

/// Applies lookup's `config` and token; returns (token, config).
fn accept_lookup(
    settings: &Settings,
    config: &Value,
) -> Result<(Option<String>, LookupConfig), AgentError> {
    let given = config.get("agent_token").and_then(Value::as_str);
    let token = match given {
        Some(t) if t.len() >= MIN_TOKEN_LEN => Some(t.to_string()),
        Some(MASKED_TOKEN) => match &settings.agent_token {
            Some(t) => Some(t.clone()),
            None => return Err(AgentError::TokenAlreadyIssued),
        },
        Some(other) => {
            tracing::warn!(
                len = other.len(),
                "ignoring an invalid agent token from lookup"
            );
            settings.agent_token.clone()
        }
        None => settings.agent_token.clone(),
    };
    let flag = |k: &str| config.get(k).and_then(Value::as_bool).unwrap_or(false);
    Ok((
        token,
        LookupConfig {
            heartbeat_timeout: Duration::from_secs(
                config
                    .get("heartbeat_timeout")
                    .and_then(Value::as_u64)
                    .unwrap_or(300),
            ),
            md5_enable: flag("agent_md5_checksum_enable"),
            enable_bios_bootloader_install: flag("enable_bios_bootloader_install"),
        },
    ))
}

/// Runs the agent until the machine powers off (or the lookup times out).
pub async fn run(settings: Settings, logs: LogBuffer) -> Result<(), AgentError> {
    let mut client = IronicClient::new(&settings)?;
    client.discover_version().await;
    let macs = lookup_macs(&settings);
    tracing::info!(macs = ?macs.iter().map(MacAddress::as_str).collect::<Vec<_>>(), "looking the node up");
    let found = client.lookup(&macs, None, &settings).await?;
    let (token, config) = accept_lookup(&settings, &found.config)?;
    tracing::info!(node = %found.node_uuid, token = token.is_some(), heartbeat_timeout = ?config.heartbeat_timeout, "node found");
    let ip = advertise_ip(&settings, client.base()).await?;
    let tls = if settings.auto_tls && client.version >= VERSION_TLS {
        Some(crate::tls::auto_tls(ip)?)
    } else {
        None
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let host = match ip {
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) => v4.to_string(),
    };
    let callback_url = format!("{scheme}://{host}:{}", settings.advertise_port);
    let listen = settings.listen;
    let agent = Arc::new(Agent::new(
        settings,
        logs,
        token,
        found.node.clone(),
        config,
    ));
    let bound = crate::api::serve(
        agent.clone(),
        listen,
        tls.as_ref().map(|t| t.server.clone()),
    )
    .await?;
    tracing::info!(%bound, %callback_url, tls = tls.is_some(), "command API listening");
    crate::heartbeat::run(
        agent,
        client,
        found.node_uuid,
        callback_url,
        tls.map(|t| t.pem),
    )
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{DiskScope, PowerRole};

    fn settings(token: Option<&str>) -> Settings {
        let mut p = std::collections::BTreeMap::new();
        p.insert("ipa-api-url".to_string(), "http://x".to_string());
        if let Some(t) = token {
            p.insert("ipa-agent-token".into(), t.into());
        }
        Settings::from_params(&p, DiskScope::Only(vec![]), PowerRole::Process).unwrap()
    }

    #[test]
    fn tokens_are_taken_as_ipa_takes_them() {
        let real = "t".repeat(43);
        let (t, c) = accept_lookup(
            &settings(None),
            &json!({"agent_token": real, "heartbeat_timeout": 30,
            "agent_md5_checksum_enable": true}),
        )
        .unwrap();
        assert_eq!(t.as_deref(), Some(real.as_str()));
        assert_eq!(c.heartbeat_timeout, Duration::from_secs(30));
        assert!(c.md5_enable && !c.enable_bios_bootloader_install);
        assert!(matches!(
            accept_lookup(&settings(None), &json!({"agent_token": "******"})),
            Err(AgentError::TokenAlreadyIssued)
        ));
        let (t, _) = accept_lookup(
            &settings(Some("pre-shared")),
            &json!({"agent_token": "******"}),
        )
        .unwrap();
        assert_eq!(t.as_deref(), Some("pre-shared"));
        let (t, _) = accept_lookup(&settings(None), &json!({"agent_token": "short"})).unwrap();
        assert!(t.is_none());
    }

    #[test]
    fn the_token_check_needs_a_token_on_both_sides() {
        let cfg = LookupConfig {
            heartbeat_timeout: Duration::from_secs(1),
            md5_enable: false,
            enable_bios_bootloader_install: false,
        };
        let a = Agent::new(
            settings(None),
            LogBuffer::default(),
            Some("abc".into()),
            json!({}),
            cfg.clone(),
        );
        assert!(a.token_matches(Some("abc")));
        assert!(!a.token_matches(Some("abd")) && !a.token_matches(None));
        let none = Agent::new(settings(None), LogBuffer::default(), None, json!({}), cfg);
        assert!(!none.token_matches(Some("")) && !none.token_matches(None));
    }
}
