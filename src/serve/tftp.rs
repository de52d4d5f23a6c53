//! Read-only TFTP server over the tftp root: async-tftp with a confining [`Handler`].
//!
//! Shape: one or more async-tftp servers ("workers") share the listen port through
//! SO_REUSEPORT, each on its own thread running `async_io::block_on`. With one worker (the
//! default) that thread also drives async-io's reactor, so an ACK is received, the next
//! block read and sent on one thread: no hop to async-io's reactor thread and back to a
//! tokio worker per block. async-io has a single reactor per process, though: with more
//! workers, whichever is idle polls it and must wake the one owning the transfer, a thread
//! hop per block. Measured here, two workers more than halved single-client lock-step
//! speed but cut a 200-client storm by about a quarter; `workers` is the knob for
//! storm-heavy sites.
//! The kernel spreads clients across workers by source address, so a client's retransmitted
//! RRQ always reaches the same worker.
//!
//! What the Handler can and cannot see: async-tftp hands it only the client address and the
//! file name, never the RRQ options or mode, and answers malformed packets with silence
//! before the Handler is involved. So per-transfer logs and metrics carry what is
//! observable: name, size, bytes read, outcome, duration, and the negotiated block size —
//! taken from the size of the first read the transfer makes (it reads one block at a
//! time). Whether tsize, timeout or windowsize were asked for is not observable; the caps
//! on them are enforced by the builder settings below.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_tftp::packet;
use async_tftp::server::{Handler, TftpServerBuilder};
use futures_lite::AsyncRead;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::confine::{Confinement, Refusal};
use super::file_reader::CacheFirstReader;
use crate::metrics::{Registry, duration_buckets};
use crate::telemetry::LogThrottle;

/// Read-ahead buffer per transfer: large enough to keep a window of blocks ready, small
/// enough that hundreds of transfers stay cheap.
const READ_BUFFER: usize = 64 * 1024;
/// RFC 2348's largest block size.
const MAX_BLKSIZE: u16 = 65464;
/// Largest window (blksize × windowsize) accepted: beyond it a receiver's default socket
/// buffer overflows and async-tftp, which has no congestion control, stalls on timeouts.
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
    /// Server instances sharing the port (SO_REUSEPORT), one thread each. More than one
    /// spreads many concurrent transfers over cores but slows each lock-step transfer.
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
        let bad = |key: &str, value: String, reason: &str| {
            Err(TftpError::Setting {
                key: format!("tftp.{key}"),
                value,
                reason: reason.to_string(),
            })
        };
        if !(512..=MAX_BLKSIZE).contains(&self.block_size_limit) {
            return bad(
                "block_size_limit",
                self.block_size_limit.to_string(),
                "must be between 512 and 65464",
            );
        }
        if self.window_size_limit == 0 {
            return bad("window_size_limit", "0".into(), "must be at least 1");
        }
        let window = u32::from(self.block_size_limit) * u32::from(self.window_size_limit);
        if window > MAX_WINDOW_BYTES {
            return bad(
                "window_size_limit",
                self.window_size_limit.to_string(),
                &format!(
                    "block_size_limit × window_size_limit = {window} bytes; keep it at most \
                     {MAX_WINDOW_BYTES} or receivers drop packets"
                ),
            );
        }
        if !(100..=255_000).contains(&self.timeout_ms) {
            return bad(
                "timeout_ms",
                self.timeout_ms.to_string(),
                "must be between 100 and 255000",
            );
        }
        if !(1..=100).contains(&self.max_send_retries) {
            return bad(
                "max_send_retries",
                self.max_send_retries.to_string(),
                "must be between 1 and 100",
            );
        }
        if !(1..=64).contains(&self.workers) {
            return bad(
                "workers",
                self.workers.to_string(),
                "must be between 1 and 64",
            );
        }
        if !(1..=100_000).contains(&self.max_transfers) {
            return bad(
                "max_transfers",
                self.max_transfers.to_string(),
                "must be between 1 and 100000",
            );
        }
        Ok(())
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
    #[error("TFTP worker {worker}: {detail}")]
    Worker { worker: usize, detail: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    /// `read` or `write`.
    op: &'static str,
    /// `ok`, or why it was refused (`not_found`, `outside_root`, `bad_name`, ...).
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ErrorLabels {
    /// TFTP error code sent (1 file not found, 2 access violation, 4 illegal operation).
    code: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    /// `complete` (all bytes read) or `incomplete` (client gone, timed out, aborted).
    outcome: &'static str,
}

/// Prometheus metrics of the TFTP server (`ironboot_tftp_*`).
#[derive(Debug, Clone)]
pub struct TftpMetrics {
    requests: Family<RequestLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    transfers: Family<OutcomeLabels, Counter>,
    sent_bytes: Counter,
    active: Gauge,
    blksize: Histogram,
    duration: Histogram,
}

impl TftpMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::unregistered();
        let r = registry.sub_registry_with_prefix("ironboot_tftp");
        r.register(
            "requests",
            "TFTP requests by operation and result",
            m.requests.clone(),
        );
        r.register(
            "errors",
            "TFTP ERROR packets sent for refused requests, by code",
            m.errors.clone(),
        );
        r.register(
            "transfers",
            "Finished TFTP transfers by outcome",
            m.transfers.clone(),
        );
        r.register(
            "sent_bytes",
            "File bytes handed to TFTP transfers",
            m.sent_bytes.clone(),
        );
        r.register(
            "active_transfers",
            "TFTP transfers in progress",
            m.active.clone(),
        );
        r.register(
            "negotiated_blksize",
            "Block size each transfer used (512 when the client negotiated none)",
            m.blksize.clone(),
        );
        r.register(
            "transfer_duration_seconds",
            "Time from open to the end of a transfer",
            m.duration.clone(),
        );
        m
    }

    /// Metrics that are counted but exported nowhere (tests, tools).
    pub fn unregistered() -> Self {
        Self {
            requests: Family::default(),
            errors: Family::default(),
            transfers: Family::default(),
            sent_bytes: Counter::default(),
            active: Gauge::default(),
            blksize: Histogram::new([
                512.0, 1024.0, 1408.0, 1432.0, 1468.0, 4096.0, 8192.0, 65464.0,
            ]),
            duration: Histogram::new(duration_buckets()),
        }
    }

    fn refused(&self, op: &'static str, result: &'static str, code: u16) {
        self.requests
            .get_or_create(&RequestLabels { op, result })
            .inc();
        self.errors.get_or_create(&ErrorLabels { code }).inc();
    }
}

/// The Handler: confines names, opens files, wraps them in a logging, counting reader.
struct ConfinedHandler {
    confinement: Arc<Confinement>,
    metrics: TftpMetrics,
    /// Transfers in progress across every worker, and the cap on them.
    transfers: Arc<AtomicUsize>,
    max_transfers: usize,
    /// Refusals a client can repeat at will are logged at most once per period.
    refused_log: Arc<LogThrottle>,
}

impl Handler for ConfinedHandler {
    type Reader = TransferReader;
    type Writer = futures_lite::io::Sink;

    async fn read_req_open(
        &mut self,
        client: &SocketAddr,
        path: &Path,
    ) -> Result<(Self::Reader, Option<u64>), packet::Error> {
        // async-tftp drops non-UTF-8 names before calling us; to_string_lossy is for safety.
        let name = path.to_string_lossy();
        // Counted before opening, so a burst of requests cannot overshoot the cap.
        let slot = TransferSlot::take(&self.transfers, self.max_transfers);
        let Some(slot) = slot else {
            self.metrics.refused("read", "busy", 0);
            if let Some(held) = self.refused_log.admit() {
                tracing::warn!(%client, max_transfers = self.max_transfers, suppressed = held,
                    "tftp: transfer cap reached, answering \"server busy\"");
            }
            return Err(packet::Error::Msg(format!(
                "server busy ({} transfers in progress); retry",
                self.max_transfers
            )));
        };
        // Opening is a handful of metadata syscalls on a local disk; it runs inline because
        // async-tftp serialises opens anyway and a thread hop would cost more than it saves.
        match self.confinement.open(&name) {
            Ok(opened) => {
                self.metrics
                    .requests
                    .get_or_create(&RequestLabels {
                        op: "read",
                        result: "ok",
                    })
                    .inc();
                tracing::debug!(%client, file = %name, size = opened.len, "tftp read request");
                let reader = TransferReader {
                    _slot: slot,
                    inner: CacheFirstReader::new(opened.file, READ_BUFFER),
                    client: *client,
                    name: name.into_owned(),
                    size: opened.len,
                    read: 0,
                    blksize: None,
                    started: Instant::now(),
                    metrics: self.metrics.clone(),
                };
                self.metrics.active.inc();
                Ok((reader, Some(opened.len)))
            }
            Err(refusal) => {
                let (error, code) = match &refusal {
                    Refusal::NotFound => (packet::Error::FileNotFound, 1),
                    _ => (packet::Error::PermissionDenied, 2),
                };
                self.metrics.refused("read", refusal.label(), code);
                // Missing files are routine (pxelinux probes many names): debug, not warn.
                if refusal == Refusal::NotFound {
                    tracing::debug!(%client, file = %name.escape_debug(), "tftp: no such file");
                } else if let Some(held) = self.refused_log.admit() {
                    tracing::warn!(%client, file = %name.escape_debug(), reason = %refusal,
                        suppressed = held, "tftp: refused");
                }
                Err(error)
            }
        }
    }

    async fn write_req_open(
        &mut self,
        client: &SocketAddr,
        path: &Path,
        _size: Option<u64>,
    ) -> Result<Self::Writer, packet::Error> {
        self.metrics.refused("write", "read_only", 4);
        if let Some(held) = self.refused_log.admit() {
            tracing::warn!(%client, file = %path.to_string_lossy().escape_debug(),
                suppressed = held, "tftp: write refused (read-only server)");
        }
        Err(packet::Error::IllegalOperation)
    }
}

/// One transfer's place under `max_transfers`, given back on drop.
struct TransferSlot(Arc<AtomicUsize>);

impl TransferSlot {
    fn take(count: &Arc<AtomicUsize>, max: usize) -> Option<TransferSlot> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| TransferSlot(Arc::clone(count)))
    }
}

impl Drop for TransferSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A file being sent: counts bytes, learns the block size, logs and records the outcome
/// when async-tftp drops it at the end of the transfer.
struct TransferReader {
    _slot: TransferSlot,
    inner: CacheFirstReader,
    client: SocketAddr,
    name: String,
    size: u64,
    read: u64,
    blksize: Option<usize>,
    started: Instant,
    metrics: TftpMetrics,
}

impl AsyncRead for TransferReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        // async-tftp reads each block into a buffer of exactly the negotiated block size,
        // so the first read tells which size was agreed.
        if self.blksize.is_none() {
            self.blksize = Some(buf.len());
        }
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = &poll {
            self.read += *n as u64;
            self.metrics.sent_bytes.inc_by(*n as u64);
        }
        poll
    }
}

impl Drop for TransferReader {
    fn drop(&mut self) {
        let complete = self.read >= self.size;
        let outcome = if complete { "complete" } else { "incomplete" };
        let secs = self.started.elapsed().as_secs_f64();
        self.metrics.active.dec();
        self.metrics
            .transfers
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        self.metrics.duration.observe(secs);
        if let Some(b) = self.blksize {
            self.metrics.blksize.observe(b as f64);
        }
        tracing::info!(
            client = %self.client,
            file = %self.name,
            size = self.size,
            bytes = self.read,
            blksize = self.blksize,
            seconds = secs,
            outcome,
            "tftp transfer"
        );
    }
}

/// A bound TFTP service, ready to [`TftpService::run`].
#[derive(Debug)]
pub struct TftpService {
    sockets: Vec<UdpSocket>,
    local_addr: SocketAddr,
    settings: TftpSettings,
    confinement: Arc<Confinement>,
    metrics: TftpMetrics,
}

impl TftpService {
    /// Validates the settings and binds the listen socket(s) (one per worker, sharing the
    /// port). A privileged port without the privilege is a clear error here.
    pub fn bind(
        settings: &TftpSettings,
        confinement: Confinement,
        metrics: TftpMetrics,
    ) -> Result<Self, TftpError> {
        settings.validate()?;
        let first = bind_reuseport(settings.listen)?;
        let local_addr = first.local_addr().map_err(|source| TftpError::Bind {
            addr: settings.listen,
            source,
        })?;
        let mut sockets = vec![first];
        for _ in 1..settings.workers {
            sockets.push(bind_reuseport(local_addr)?);
        }
        Ok(Self {
            sockets,
            local_addr,
            settings: settings.clone(),
            confinement: Arc::new(confinement),
            metrics,
        })
    }

    /// The address actually bound (the real port when `listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` is cancelled. async-tftp has no graceful stop: transfers in
    /// flight end with the workers, and their clients time out.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), TftpError> {
        let TftpService {
            sockets,
            local_addr,
            settings,
            confinement,
            metrics,
        } = self;
        tracing::info!(addr = %local_addr, root = %confinement.root().display(),
            workers = sockets.len(), max_transfers = settings.max_transfers,
            "tftp server listening");
        let transfers = Arc::new(AtomicUsize::new(0));
        let refused_log = Arc::new(LogThrottle::new(Duration::from_secs(10)));
        let mut workers = Vec::new();
        for (worker, socket) in sockets.into_iter().enumerate() {
            let handler = ConfinedHandler {
                confinement: Arc::clone(&confinement),
                metrics: metrics.clone(),
                transfers: Arc::clone(&transfers),
                max_transfers: settings.max_transfers,
                refused_log: Arc::clone(&refused_log),
            };
            let token = shutdown.clone();
            let settings = settings.clone();
            let (done_tx, done_rx) = tokio::sync::oneshot::channel();
            let thread = std::thread::Builder::new()
                .name(format!("tftp-{worker}"))
                .spawn(move || {
                    let result =
                        async_io::block_on(serve_worker(socket, handler, &settings, token));
                    let _ =
                        done_tx.send(result.map_err(|detail| TftpError::Worker { worker, detail }));
                })
                .map_err(|e| TftpError::Worker {
                    worker,
                    detail: format!("cannot start thread: {e}"),
                })?;
            workers.push((thread, done_rx));
        }
        let mut first_error = None;
        for (thread, done) in workers {
            // A worker that fails (its socket broke) stops the whole service: the others
            // would keep half the port's clients unanswered.
            let result = done.await.unwrap_or(Ok(()));
            if let Err(e) = result {
                tracing::error!(error = %e, "tftp worker failed");
                shutdown.cancel();
                first_error.get_or_insert(e);
            }
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        tracing::info!(addr = %local_addr, "tftp server stopped");
        first_error.map_or(Ok(()), Err)
    }
}

async fn serve_worker(
    socket: UdpSocket,
    handler: ConfinedHandler,
    settings: &TftpSettings,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let mut builder = TftpServerBuilder::with_handler(handler)
        .std_socket(socket)
        .map_err(|e| e.to_string())?
        .block_size_limit(settings.block_size_limit)
        .window_size_limit(settings.window_size_limit)
        .timeout(Duration::from_millis(settings.timeout_ms))
        .max_send_retries(settings.max_send_retries);
    if !settings.honour_client_timeout {
        builder = builder.ignore_client_timeout();
    }
    let server = builder.build().await.map_err(|e| e.to_string())?;
    let serve = async { server.serve().await.map_err(|e| e.to_string()) };
    let stop = async {
        shutdown.cancelled().await;
        Ok(())
    };
    futures_lite::future::or(stop, serve).await
}

fn bind_reuseport(addr: SocketAddr) -> Result<UdpSocket, TftpError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let map = |source| bind_error(addr, source);
    let socket =
        Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).map_err(map)?;
    socket.set_reuse_port(true).map_err(map)?;
    socket.bind(&addr.into()).map_err(map)?;
    Ok(socket.into())
}

fn bind_error(addr: SocketAddr, source: std::io::Error) -> TftpError {
    if source.kind() == std::io::ErrorKind::PermissionDenied {
        TftpError::BindPrivileged { addr }
    } else {
        TftpError::Bind { addr, source }
    }
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

    #[test]
    fn permission_denied_on_bind_names_the_privilege() {
        let addr: SocketAddr = "0.0.0.0:69".parse().unwrap();
        let e = bind_error(addr, std::io::ErrorKind::PermissionDenied.into()).to_string();
        assert!(
            e.contains("0.0.0.0:69") && e.contains("CAP_NET_BIND_SERVICE"),
            "{e}"
        );
        let e = bind_error(addr, std::io::ErrorKind::AddrInUse.into());
        assert!(matches!(e, TftpError::Bind { .. }));
    }
}
