//! One transfer, on its own thread, with a blocking socket connected to the client (so the
//! kernel drops datagrams from anyone else): the OACK if options were granted, then
//! windows of DATA, each sent until the client acknowledges a block of it. This is the
//! shape of tftpd-hpa's process per client, without the fork: a window costs one read,
//! one send and one receive, with no event loop or thread hop between them.
//!
//! A duplicate ACK (one for a block before the window) is ignored rather than answered
//! with a resend: resending on duplicates is how both sides end up sending everything
//! twice (the "Sorcerer's Apprentice" of RFC 1123). Only a timeout resends, at most
//! `max_retries` times in a row.

use std::fs::File;
use std::io;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;

use super::options::Agreed;
use super::packet::{self, FromClient};
use super::window::Window;

/// A transfer ready to run.
pub struct Transfer<'a> {
    pub socket: UdpSocket,
    pub file: File,
    /// The file's size when it was opened: what tsize promised, and what is sent.
    pub size: u64,
    pub agreed: Agreed,
    pub max_retries: u32,
    pub shutdown: &'a AtomicBool,
    /// Counts file bytes as they are first sent.
    pub sent_bytes: &'a Counter,
}

/// How a transfer ended.
#[derive(Debug)]
pub enum Outcome {
    /// The client acknowledged the last block.
    Complete,
    /// The client sent an ERROR (it may refuse an option, or have what it needs).
    ClientError { code: u16, message: String },
    /// No acknowledgement after every resend.
    TimedOut,
    /// The client's port is closed (ICMP port unreachable).
    ClientGone,
    /// ironboot is stopping.
    Shutdown,
    /// Reading the file, or the socket, failed.
    Failed(io::Error),
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Complete => "complete",
            _ => "incomplete",
        }
    }

    /// The ERROR the client is sent, when it may still be listening.
    fn farewell(&self, max_retries: u32) -> Option<String> {
        match self {
            Outcome::TimedOut => Some(format!(
                "no acknowledgement after {max_retries} retransmissions"
            )),
            Outcome::Shutdown => Some("server shutting down; retry".into()),
            Outcome::Failed(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                Some("file shrank while it was sent; retry".into())
            }
            Outcome::Failed(_) => Some("I/O error on the server".into()),
            Outcome::Complete | Outcome::ClientError { .. } | Outcome::ClientGone => None,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Complete => f.write_str("last block acknowledged"),
            Outcome::ClientError { code, message } => {
                write!(f, "client sent ERROR {code} {message:?}")
            }
            Outcome::TimedOut => f.write_str("client stopped acknowledging"),
            Outcome::ClientGone => f.write_str("client port closed"),
            Outcome::Shutdown => f.write_str("server shutting down"),
            Outcome::Failed(e) => write!(f, "{e}"),
        }
    }
}

/// What a finished transfer reports.
#[derive(Debug)]
pub struct Report {
    pub outcome: Outcome,
    /// File bytes sent (each counted once, however often it was resent).
    pub bytes: u64,
}

impl Transfer<'_> {
    /// Runs the transfer to its end; the client is told (ERROR 0) why, unless it ended it.
    pub fn run(self) -> Report {
        let mut link = Link::new(&self.socket, self.agreed.timeout, self.shutdown);
        let mut bytes = 0;
        let outcome = match self.exchange(&mut link, &mut bytes) {
            Ok(()) => Outcome::Complete,
            Err(outcome) => outcome,
        };
        if let Some(message) = outcome.farewell(self.max_retries) {
            let _ = self.socket.send(&packet::error(0, &message));
        }
        Report { outcome, bytes }
    }

    fn exchange(&self, link: &mut Link<'_>, bytes: &mut u64) -> Result<(), Outcome> {
        if let Some(oack) = &self.agreed.oack {
            self.until_acked(link, 0, 0, |socket| socket.send(oack).map(drop))?;
        }
        let mut window = Window::new(self.agreed.blksize, self.agreed.windowsize);
        let blocks = window.blocks_in(self.size);
        let mut first = 1;
        loop {
            window
                .fill(&self.file, first, self.size)
                .map_err(Outcome::Failed)?;
            let last = window.last();
            let acked = self.until_acked(link, first, last, |socket| {
                window.send(socket)?;
                let end = window.end_offset();
                if end > *bytes {
                    self.sent_bytes.inc_by(end - *bytes);
                    *bytes = end;
                }
                Ok(())
            })?;
            if acked == blocks {
                return Ok(());
            }
            // RFC 7440: an ACK inside the window means the blocks after it were lost;
            // the next window starts right after it.
            first = acked + 1;
        }
    }

    /// Sends with `send`, then waits for an ACK of a block in `lo..=hi`; resends on each
    /// timeout, up to `max_retries` times.
    fn until_acked(
        &self,
        link: &mut Link<'_>,
        lo: u64,
        hi: u64,
        mut send: impl FnMut(&UdpSocket) -> io::Result<()>,
    ) -> Result<u64, Outcome> {
        for _ in 0..=self.max_retries {
            if link.stopping() {
                return Err(Outcome::Shutdown);
            }
            match send(&self.socket) {
                Ok(()) => {}
                Err(e) if is_loss(&e) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    return Err(Outcome::ClientGone);
                }
                Err(e) => return Err(Outcome::Failed(e)),
            }
            if let Some(block) = link.await_ack(lo, hi)? {
                return Ok(block);
            }
        }
        Err(Outcome::TimedOut)
    }
}

/// The receiving side of a transfer's socket.
struct Link<'a> {
    socket: &'a UdpSocket,
    timeout: Duration,
    /// The receive timeout set on the socket, so it is changed only when it must be.
    armed: Option<Duration>,
    shutdown: &'a AtomicBool,
    buf: [u8; 516],
}

impl<'a> Link<'a> {
    fn new(socket: &'a UdpSocket, timeout: Duration, shutdown: &'a AtomicBool) -> Link<'a> {
        Link {
            socket,
            timeout,
            armed: None,
            shutdown,
            buf: [0; 516],
        }
    }

    fn stopping(&self) -> bool {
        self.shutdown.load(Ordering::Relaxed)
    }

    /// Waits up to the timeout for an ACK of a block in `lo..=hi` (block numbers on the
    /// wire wrap; `hi - lo` is below 65,536, so the match is unambiguous). `Ok(None)` when
    /// the time ran out.
    fn await_ack(&mut self, lo: u64, hi: u64) -> Result<Option<u64>, Outcome> {
        let deadline = Instant::now() + self.timeout;
        let mut wait = self.timeout;
        loop {
            if self.armed != Some(wait) {
                self.socket
                    .set_read_timeout(Some(wait))
                    .map_err(Outcome::Failed)?;
                self.armed = Some(wait);
            }
            let received = self.socket.recv(&mut self.buf);
            if self.stopping() {
                return Err(Outcome::Shutdown);
            }
            match received {
                Ok(n) => match packet::parse_from_client(&self.buf[..n]) {
                    FromClient::Ack(wire) => {
                        let block = lo + u64::from(wire.wrapping_sub(lo as u16));
                        if block <= hi {
                            return Ok(Some(block));
                        }
                    }
                    FromClient::Error { code, message } => {
                        return Err(Outcome::ClientError { code, message });
                    }
                    FromClient::Other => {}
                },
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted || is_loss(&e) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    return Err(Outcome::ClientGone);
                }
                Err(e) => return Err(Outcome::Failed(e)),
            }
            // Something else arrived: wait out the rest of the timeout, not a new one.
            wait = deadline.saturating_duration_since(Instant::now());
            if wait.is_zero() {
                return Ok(None);
            }
        }
    }
}

/// Errors a connected UDP socket reports for one datagram, not for the transfer: a full
/// local queue (ENOBUFS), or an ICMP error for an earlier datagram (a smaller path MTU,
/// an unreachable hop on the way). Like a loss on the wire, the timeout resends; the
/// kernel fragments from then on where the MTU was the cause.
fn is_loss(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOBUFS | libc::EMSGSIZE | libc::EHOSTUNREACH | libc::ENETUNREACH)
    )
}
