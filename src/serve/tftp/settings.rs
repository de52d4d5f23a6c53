//! The `[tftp]` settings and the server's own errors.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::options::MAX_BLKSIZE;

/// Largest window (blksize × windowsize) accepted: beyond it a receiver's default socket
/// buffer overflows, and a window resent whole after each timeout never gets through.
const MAX_WINDOW_BYTES: u32 = 64 * 1024;

/// The `[tftp]` section of the config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TftpSettings {
    /// Address to listen on; port 69 needs root or CAP_NET_BIND_SERVICE.
    pub listen: SocketAddr,
    /// Run the TFTP server at all (a site may run its own).
    pub enabled: bool,
    /// Largest blksize granted (larger requests are lowered to it). 1468 fills a 1500-byte
    /// MTU without fragmenting.
    pub block_size_limit: u16,
    /// Largest windowsize granted (RFC 7440); 1 disables windowing.
    pub window_size_limit: u16,
    /// Retransmission timeout in milliseconds.
    pub timeout_ms: u64,
    /// Retransmissions of one block (or window) before a transfer is dropped; with the
    /// timeout this bounds how long a vanished client holds its source port.
    pub max_send_retries: u32,
    /// Let a client's `timeout` option replace `timeout_ms` (curl asks for 6 s).
    pub honour_client_timeout: bool,
    /// Threads receiving requests on the port (SO_REUSEPORT, one socket each). Transfers
    /// run on threads of their own either way; more than one only helps a port flooded
    /// with requests.
    pub workers: usize,
    /// Transfers in progress at once (each holds a UDP socket and a file); a request past it
    /// gets an ERROR "server busy", which boot firmware takes as a failed boot. Sized above a
    /// 1,000-node boot storm (`benches/storm.sh 1000`: at 512, 457-465 of the 1,000 nodes
    /// failed in each round). Lowered at start if the open-file limit cannot hold it.
    pub max_transfers: usize,
}

impl Default for TftpSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 69)),
            enabled: true,
            block_size_limit: 1468,
            window_size_limit: 16,
            timeout_ms: 1000,
            max_send_retries: 5,
            honour_client_timeout: false,
            workers: 1,
            max_transfers: 4096,
        }
    }
}

impl TftpSettings {
    /// Checks every key; the error names the key, the value and the reason.
    pub fn validate(&self) -> Result<(), TftpError> {
        within("block_size_limit", self.block_size_limit, 512, MAX_BLKSIZE)?;
        if self.window_size_limit == 0 {
            return Err(setting("window_size_limit", 0, "must be at least 1".into()));
        }
        let window = u32::from(self.block_size_limit) * u32::from(self.window_size_limit);
        if window > MAX_WINDOW_BYTES {
            return Err(setting(
                "window_size_limit",
                self.window_size_limit,
                format!(
                    "block_size_limit × window_size_limit = {window} bytes; keep it at most \
                     {MAX_WINDOW_BYTES} or receivers drop packets"
                ),
            ));
        }
        within("timeout_ms", self.timeout_ms, 100, 255_000)?;
        within("max_send_retries", self.max_send_retries, 1, 100)?;
        within("workers", self.workers, 1, 64)?;
        within("max_transfers", self.max_transfers, 1, 100_000)
    }
}

fn within<T: PartialOrd + std::fmt::Display>(
    key: &str,
    value: T,
    min: T,
    max: T,
) -> Result<(), TftpError> {
    if value < min || value > max {
        return Err(setting(
            key,
            value,
            format!("must be between {min} and {max}"),
        ));
    }
    Ok(())
}

fn setting(key: &str, value: impl std::fmt::Display, reason: String) -> TftpError {
    TftpError::Setting {
        key: format!("tftp.{key}"),
        value: value.to_string(),
        reason,
    }
}

/// Errors of the TFTP server (its own failures; client errors become TFTP ERROR packets).
#[derive(Debug, thiserror::Error)]
pub enum TftpError {
    #[error("invalid {key} {value:?}: {reason}")]
    Setting {
        key: String,
        value: String,
        reason: String,
    },
    #[error(
        "cannot bind TFTP to {addr}: permission denied; ports below 1024 need root or \
         CAP_NET_BIND_SERVICE (setcap cap_net_bind_service=+ep on the binary), or listen \
         on a port >= 1024 ([tftp] listen, --tftp-listen)"
    )]
    BindPrivileged { addr: SocketAddr },
    #[error("cannot bind TFTP to {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("TFTP worker {worker}: {source}")]
    Worker {
        worker: usize,
        #[source]
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_settings_validate_and_bad_ones_name_the_key() {
        let s: TftpSettings = toml::from_str("").unwrap();
        assert_eq!(s, TftpSettings::default());
        s.validate().unwrap();
        let s = TftpSettings {
            block_size_limit: 8192,
            window_size_limit: 16,
            ..TftpSettings::default()
        };
        let e = s.validate().unwrap_err().to_string();
        assert!(
            e.contains("tftp.window_size_limit") && e.contains("131072"),
            "{e}"
        );
        let e = toml::from_str::<TftpSettings>("blksize = 1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field"), "{e}");
    }
}
