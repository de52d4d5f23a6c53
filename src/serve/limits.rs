//! What one process may hold open, and how it is shared between the listeners.
//!
//! A service manager's default soft `RLIMIT_NOFILE` is 1,024 while its hard limit is usually
//! far higher; at 1,024 a flood of idle connections to one port used to exhaust every
//! descriptor, and then the API, TFTP and the database all failed with EMFILE. So the soft
//! limit is raised to the hard one at start ([`raise_nofile`]), and [`FdBudget::plan`] gives
//! each listener a cap that fits in what the limit leaves after a reserve for everything
//! else (database, image downloads, BMC and agent clients, logs): the boot HTTP server can
//! be flooded to its cap without taking a descriptor the API or TFTP needs.

use std::time::Duration;

/// Descriptors kept for everything that is not a client connection or transfer: the
/// database pool (a file, its WAL and shared memory per connection), image downloads and
/// cache files, BMC and agent clients, the runtime's own, logs.
pub const RESERVED_FDS: u64 = 256;
/// Descriptors one boot HTTP connection can hold: its socket and the file it streams.
pub const FDS_PER_HTTP_CONNECTION: u64 = 2;
/// Descriptors one TFTP transfer holds: its own UDP socket and the file it reads.
pub const FDS_PER_TFTP_TRANSFER: u64 = 2;
/// Descriptors one API connection holds.
pub const FDS_PER_API_CONNECTION: u64 = 1;

/// How a listener treats its connections (from `[api]` or `[http]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Connections served at once; past it, new ones get 503 with `Retry-After`.
    pub max_connections: usize,
    /// From the moment a connection is ready for a request (accepted, or a keep-alive
    /// connection's first byte of the next request) until that request's head is complete.
    pub header_read_timeout: Duration,
    /// How long a keep-alive connection may wait for its next request.
    pub keepalive_timeout: Duration,
    /// How long a request in progress may go without a byte moving while it waits on the
    /// client (a body the handler reads, a response the client does not read).
    pub stall_timeout: Duration,
}

/// The open-file limit before and after [`raise_nofile`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    pub soft_before: u64,
    pub soft: u64,
    pub hard: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and logs both.
pub fn raise_nofile() -> std::io::Result<NofileLimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let before = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own; raising soft up to hard needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            let e = std::io::Error::last_os_error();
            tracing::warn!(soft = before, hard = lim.rlim_max, error = %e,
                "cannot raise the open-file limit to the hard limit");
        } else {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    let limit = NofileLimit {
        soft_before: before,
        soft: lim.rlim_cur,
        hard: lim.rlim_max,
    };
    if limit.soft > before {
        tracing::info!(
            soft = before,
            hard = limit.hard,
            "open-file limit: soft limit {before} raised to the hard limit {}",
            limit.hard
        );
    } else {
        tracing::info!(
            soft = before,
            hard = limit.hard,
            "open-file limit: soft {before}, hard {} (nothing to raise)",
            limit.hard
        );
    }
    Ok(limit)
}

/// What each listener may hold, within one open-file limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdBudget {
    pub api_connections: usize,
    pub http_connections: usize,
    pub tftp_transfers: usize,
    /// True when a configured cap had to be lowered to fit the limit.
    pub lowered: bool,
}

impl FdBudget {
    /// Fits the configured caps into `limit`. When they do not fit, the descriptors left
    /// after [`RESERVED_FDS`] are shared out — a quarter for the API, a quarter for TFTP, half
    /// for boot HTTP — and no listener gets more than it asked for, so a flood of one never
    /// takes what another needs.
    pub fn plan(limit: u64, api: usize, http: usize, tftp: usize) -> FdBudget {
        let need = api as u64 * FDS_PER_API_CONNECTION
            + http as u64 * FDS_PER_HTTP_CONNECTION
            + tftp as u64 * FDS_PER_TFTP_TRANSFER;
        if need + RESERVED_FDS <= limit {
            return FdBudget {
                api_connections: api,
                http_connections: http,
                tftp_transfers: tftp,
                lowered: false,
            };
        }
        let available = limit.saturating_sub(RESERVED_FDS);
        let share = |fds: u64, per: u64, wanted: usize| {
            usize::try_from(fds / per)
                .unwrap_or(usize::MAX)
                .clamp(1, wanted.max(1))
        };
        FdBudget {
            api_connections: share(available / 4, FDS_PER_API_CONNECTION, api),
            tftp_transfers: share(available / 4, FDS_PER_TFTP_TRANSFER, tftp),
            http_connections: share(available / 2, FDS_PER_HTTP_CONNECTION, http),
            lowered: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_that_fit_are_kept() {
        let b = FdBudget::plan(100_000, 1024, 2048, 512);
        assert_eq!(
            (b.api_connections, b.http_connections, b.tftp_transfers),
            (1024, 2048, 512)
        );
        assert!(!b.lowered);
    }

    #[test]
    fn at_1024_every_listener_keeps_a_share() {
        let b = FdBudget::plan(1024, 1024, 2048, 512);
        assert!(b.lowered);
        let used = b.api_connections as u64 * FDS_PER_API_CONNECTION
            + b.http_connections as u64 * FDS_PER_HTTP_CONNECTION
            + b.tftp_transfers as u64 * FDS_PER_TFTP_TRANSFER;
        assert!(used + RESERVED_FDS <= 1024, "{b:?}");
        assert_eq!(b.api_connections, 192);
        assert_eq!(b.http_connections, 192);
        assert_eq!(b.tftp_transfers, 96);
        // A listener that asks for little keeps what it asked for.
        let small = FdBudget::plan(1024, 10, 5000, 5000);
        assert_eq!(small.api_connections, 10);
        // Even an absurd limit leaves each listener one slot rather than none.
        let tiny = FdBudget::plan(100, 10, 10, 10);
        assert_eq!(
            (
                tiny.api_connections,
                tiny.http_connections,
                tiny.tftp_transfers
            ),
            (1, 1, 1)
        );
    }

    #[test]
    fn raising_reports_the_limits() {
        let l = raise_nofile().unwrap();
        assert!(l.soft >= l.soft_before && l.soft <= l.hard);
    }
}
