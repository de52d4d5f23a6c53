//! Read-only TFTP server over the tftp root (RFC 1350, with the blksize, tsize, timeout and
//! windowsize options).
//!
//! Shape: listener threads ([`TftpSettings::workers`], one by default, sharing the port
//! through SO_REUSEPORT) receive requests, confine and open the file and negotiate the
//! options; each read then runs on a thread of its own with a blocking socket connected to
//! the client ([`transfer`]), as tftpd-hpa runs a process per client. A lock-step block
//! costs one read, one send and one receive; a window is read with one `preadv2` and sent
//! with one GSO `sendmsg` ([`window`]). The kernel spreads clients across listeners by
//! source address, so a retransmitted request reaches the listener that saw the first.
//!
//! Requests: a write gets ERROR 4; a name refused by the confinement ERROR 2, a missing
//! file ERROR 1; past `max_transfers` ERROR 0 "server busy". A request repeated while its
//! transfer is in progress is ignored (that transfer answers it). A datagram that
//! is not a whole request is dropped; an unknown mode or a non-UTF-8 name is answered
//! ([`packet::Malformed::answer`]). A client's ERROR ends its transfer.

mod metrics;
mod options;
mod packet;
mod settings;
mod transfer;
mod window;

use std::collections::HashSet;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

pub use metrics::TftpMetrics;
pub use settings::{TftpError, TftpSettings};

use super::confine::{Confinement, OpenedFile, Refusal};
use crate::telemetry::LogThrottle;
use options::Agreed;
use packet::Request;
use transfer::Transfer;

/// Stack of a transfer thread: the window lives on the heap, so this only holds the
/// calls a transfer makes (its log line included).
const TRANSFER_STACK: usize = 256 * 1024;
/// Largest request read (a UDP payload can be no larger).
const MAX_REQUEST: usize = 65_536;

/// A bound TFTP service, ready to [`TftpService::run`].
#[derive(Debug)]
pub struct TftpService {
    sockets: Vec<UdpSocket>,
    local_addr: SocketAddr,
    settings: TftpSettings,
    confinement: Confinement,
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
            confinement,
            metrics,
        })
    }

    /// The address actually bound (the real port when `listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` is cancelled. Transfers in flight are not waited for: each
    /// ends at its next packet or timeout (telling its client "server shutting down"), or
    /// with the process.
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
        let shared = Arc::new(Shared {
            admission: Arc::new(Admission {
                max: settings.max_transfers,
                transfers: Mutex::new(HashSet::new()),
            }),
            reply_from: SocketAddr::new(local_addr.ip(), 0),
            settings,
            confinement,
            metrics,
            refused_log: LogThrottle::new(Duration::from_secs(10)),
            junk_log: LogThrottle::new(Duration::from_secs(10)),
            stopping: AtomicBool::new(false),
        });
        let mut wakers = Vec::new();
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
        for (worker, socket) in sockets.into_iter().enumerate() {
            match start_listener(worker, socket, &shared, done_tx.clone()) {
                Ok(waker) => wakers.push(waker),
                Err(e) => {
                    stop_listeners(&shared, &wakers);
                    return Err(e);
                }
            }
        }
        drop(done_tx);
        let stopper = {
            let (shared, shutdown) = (Arc::clone(&shared), shutdown.clone());
            tokio::spawn(async move {
                shutdown.cancelled().await;
                stop_listeners(&shared, &wakers);
            })
        };
        // Results come as listeners end, in any order: one down stops the others at once,
        // or they would leave the share of clients the kernel sends them unanswered.
        let mut first_error = None;
        while let Some((worker, result)) = done_rx.recv().await {
            if let Err(source) = result {
                let e = TftpError::Worker { worker, source };
                tracing::error!(error = %e, "tftp listener failed");
                shutdown.cancel();
                first_error.get_or_insert(e);
            }
        }
        let _ = stopper.await;
        tracing::info!(addr = %local_addr, "tftp server stopped");
        first_error.map_or(Ok(()), Err)
    }
}

type ListenerDone = tokio::sync::mpsc::UnboundedSender<(usize, io::Result<()>)>;

/// Starts listener `worker` on its thread, which reports how it ended on `done`; returns a
/// handle on its socket to wake it with at shutdown.
fn start_listener(
    worker: usize,
    socket: UdpSocket,
    shared: &Arc<Shared>,
    done: ListenerDone,
) -> Result<UdpSocket, TftpError> {
    let waker = socket
        .try_clone()
        .map_err(|source| TftpError::Worker { worker, source })?;
    let shared = Arc::clone(shared);
    std::thread::Builder::new()
        .name(format!("tftp-{worker}"))
        .spawn(move || {
            // A panic is reported like an error, so it too stops the other listeners.
            let listened =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| shared.listen(&socket)));
            let result =
                listened.unwrap_or_else(|_| Err(io::Error::other("listener thread panicked")));
            let _ = done.send((worker, result));
        })
        .map_err(|source| TftpError::Worker { worker, source })?;
    Ok(waker)
}

/// Makes every listener return: a blocked `recv` on a socket shut down for reading
/// returns at once (Linux wakes it even on an unconnected UDP socket).
fn stop_listeners(shared: &Shared, wakers: &[UdpSocket]) {
    shared.stopping.store(true, Ordering::SeqCst);
    for socket in wakers {
        let _ = socket2::SockRef::from(socket).shutdown(std::net::Shutdown::Read);
    }
}

/// What the listeners and the transfers share.
struct Shared {
    settings: TftpSettings,
    confinement: Confinement,
    metrics: TftpMetrics,
    admission: Arc<Admission>,
    /// Refusals a client can repeat at will are logged at most once per period.
    refused_log: LogThrottle,
    /// The same for datagrams that are no request, apart so junk cannot hold back the
    /// refusals' warnings.
    junk_log: LogThrottle,
    stopping: AtomicBool,
    /// Where transfer sockets bind: the listen address's IP, a free port.
    reply_from: SocketAddr,
}

impl Shared {
    fn listen(self: &Arc<Self>, socket: &UdpSocket) -> io::Result<()> {
        // socket2's recv_from, because std's panics on the empty sender address a socket
        // shut down for reading returns (stop_listeners).
        let receiver = socket2::SockRef::from(socket);
        let mut buf = vec![std::mem::MaybeUninit::<u8>::uninit(); MAX_REQUEST];
        loop {
            let received = receiver.recv_from(&mut buf);
            if self.stopping.load(Ordering::SeqCst) {
                return Ok(());
            }
            match received {
                Ok((n, from)) => {
                    // SAFETY: recv_from initialised the first n bytes of buf.
                    let datagram = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast(), n) };
                    if let Some(client) = from.as_socket() {
                        self.answer(socket, datagram, client);
                    }
                }
                // An ICMP error for an earlier reply, a signal, a moment without memory:
                // none of them is the socket failing.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted
                            | io::ErrorKind::WouldBlock
                            | io::ErrorKind::ConnectionRefused
                    ) || matches!(e.raw_os_error(), Some(libc::ENOBUFS | libc::ENOMEM)) => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn answer(self: &Arc<Self>, socket: &UdpSocket, datagram: &[u8], client: SocketAddr) {
        match packet::parse_request(datagram) {
            Ok(request) if request.write => {
                self.metrics.refused("write", "read_only", 4);
                if let Some(held) = self.refused_log.admit() {
                    tracing::warn!(%client, file = %request.name.escape_debug(),
                        suppressed = held, "tftp: write refused (read-only server)");
                }
                reply(
                    socket,
                    client,
                    4,
                    "read-only server: write requests are refused",
                );
            }
            Ok(request) => self.start_read(socket, request, datagram, client),
            Err(malformed) => {
                let op = match datagram.get(..2) {
                    Some([0, 1]) => "read",
                    Some([0, 2]) => "write",
                    _ => "other",
                };
                match malformed.answer() {
                    Some((code, message)) => {
                        self.metrics.refused(op, malformed.label(), code);
                        reply(socket, client, code, &message);
                    }
                    None => self.metrics.request(op, malformed.label()),
                }
                if let Some(held) = self.junk_log.admit() {
                    tracing::debug!(%client, reason = %malformed, suppressed = held,
                        "tftp: not a request it can serve");
                }
            }
        }
    }

    fn start_read(
        self: &Arc<Self>,
        socket: &UdpSocket,
        request: Request<'_>,
        datagram: &[u8],
        client: SocketAddr,
    ) {
        let seat = match self.admission.admit(client, datagram) {
            Admitted::Seat(seat) => seat,
            Admitted::Duplicate => return self.metrics.request("read", "duplicate"),
            Admitted::Busy => return self.busy(socket, client),
        };
        let name = request.name;
        let opened = match self.confinement.open(name) {
            Ok(opened) => opened,
            Err(refusal) => return self.refuse(socket, client, name, &refusal),
        };
        let agreed = request.options.agree(&self.settings, opened.len);
        tracing::debug!(%client, file = %name, size = opened.len, blksize = agreed.blksize,
            windowsize = agreed.windowsize, "tftp read request");
        let connected = UdpSocket::bind(self.reply_from).and_then(|s| {
            s.connect(client)?;
            Ok(s)
        });
        let transfer_socket = match connected {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%client, error = %e, "tftp: cannot open a transfer socket");
                self.metrics.refused("read", "no_socket", 0);
                return reply(socket, client, 0, "server cannot open a socket now; retry");
            }
        };
        let name = name.to_owned();
        let shared = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("tftp-transfer".into())
            .stack_size(TRANSFER_STACK)
            .spawn(move || shared.transfer(seat, transfer_socket, opened, agreed, name));
        match spawned {
            Ok(_) => self.metrics.request("read", "ok"),
            Err(e) => {
                tracing::warn!(%client, error = %e, "tftp: cannot start a transfer thread");
                self.metrics.refused("read", "no_thread", 0);
                let message = "server busy (no thread for a transfer); retry";
                reply(socket, client, 0, message);
            }
        }
    }

    fn busy(&self, socket: &UdpSocket, client: SocketAddr) {
        self.metrics.refused("read", "busy", 0);
        let max = self.settings.max_transfers;
        if let Some(held) = self.refused_log.admit() {
            tracing::warn!(%client, max_transfers = max, suppressed = held,
                "tftp: transfer cap reached, answering \"server busy\"");
        }
        let message = format!("server busy ({max} transfers in progress); retry");
        reply(socket, client, 0, &message);
    }

    fn refuse(&self, socket: &UdpSocket, client: SocketAddr, name: &str, refusal: &Refusal) {
        let (code, message) = match refusal {
            Refusal::NotFound => (1, "file not found".to_string()),
            _ => (2, format!("access violation: {refusal}")),
        };
        self.metrics.refused("read", refusal.label(), code);
        // Missing files are routine (pxelinux probes many names): debug, not warn.
        if *refusal == Refusal::NotFound {
            tracing::debug!(%client, file = %name.escape_debug(), "tftp: no such file");
        } else if let Some(held) = self.refused_log.admit() {
            tracing::warn!(%client, file = %name.escape_debug(), reason = %refusal,
                suppressed = held, "tftp: refused");
        }
        reply(socket, client, code, &message);
    }

    /// Runs one transfer on the calling thread, then records and logs how it ended.
    fn transfer(
        &self,
        seat: Seat,
        socket: UdpSocket,
        opened: OpenedFile,
        agreed: Agreed,
        name: String,
    ) {
        let started = Instant::now();
        let (size, blksize, windowsize) = (opened.len, agreed.blksize, agreed.windowsize);
        self.metrics.started();
        let report = Transfer {
            socket,
            file: opened.file,
            size,
            agreed,
            max_retries: self.settings.max_send_retries,
            shutdown: &self.stopping,
            sent_bytes: self.metrics.sent_bytes(),
        }
        .run();
        let seconds = started.elapsed().as_secs_f64();
        let outcome = report.outcome.label();
        self.metrics.finished(outcome, blksize, seconds);
        tracing::info!(
            client = %seat.key.0,
            file = %name,
            size,
            bytes = report.bytes,
            blksize,
            windowsize,
            seconds,
            outcome,
            ended = %report.outcome,
            "tftp transfer"
        );
    }
}

/// An ERROR to a request, from the listen port. A failed send is not retried: the client
/// asks again.
fn reply(socket: &UdpSocket, client: SocketAddr, code: u16, message: &str) {
    let _ = socket.send_to(&packet::error(code, message), client);
}

/// Transfers in progress, at most `max`, each known by its client's address and a hash of
/// its request: the same request again from the same address is a retransmission, while a
/// different one (the next file, asked for before the last ACK was seen) is a transfer of
/// its own.
struct Admission {
    max: usize,
    transfers: Mutex<HashSet<RequestKey>>,
}

type RequestKey = (SocketAddr, u64);

enum Admitted {
    Seat(Seat),
    /// This request is already being answered.
    Duplicate,
    /// `max` transfers are in progress.
    Busy,
}

impl Admission {
    fn admit(self: &Arc<Self>, client: SocketAddr, request: &[u8]) -> Admitted {
        let mut hasher = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(request, &mut hasher);
        let key = (client, std::hash::Hasher::finish(&hasher));
        // A poisoned lock only means a panic while inserting or removing; the set is whole.
        let mut transfers = self
            .transfers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if transfers.contains(&key) {
            Admitted::Duplicate
        } else if transfers.len() >= self.max {
            Admitted::Busy
        } else {
            transfers.insert(key);
            Admitted::Seat(Seat {
                admission: Arc::clone(self),
                key,
            })
        }
    }
}

/// One transfer's place, given back when the transfer ends.
struct Seat {
    admission: Arc<Admission>,
    key: RequestKey,
}

impl Drop for Seat {
    fn drop(&mut self) {
        let mut transfers = (self.admission.transfers)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        transfers.remove(&self.key);
    }
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
    use crate::metrics::Registry;

    /// A service on 127.0.0.1 serving a 5,000-byte file `f`, with short timeouts.
    fn service(dir: &std::path::Path, registry: &mut Registry) -> (TftpService, Vec<u8>) {
        let root = dir.join("root");
        std::fs::create_dir_all(&root).unwrap();
        let bytes: Vec<u8> = (0..5000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(root.join("f"), &bytes).unwrap();
        let settings = TftpSettings {
            listen: "127.0.0.1:0".parse().unwrap(),
            timeout_ms: 100,
            max_send_retries: 2,
            max_transfers: 1,
            ..TftpSettings::default()
        };
        let confinement = Confinement::new(&root, &[]).unwrap();
        let service = TftpService::bind(&settings, confinement, TftpMetrics::register(registry));
        (service.unwrap(), bytes)
    }

    fn client() -> UdpSocket {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s
    }

    fn recv(s: &UdpSocket) -> (Vec<u8>, SocketAddr) {
        let mut buf = vec![0u8; 2000];
        let (n, from) = s.recv_from(&mut buf).expect("no reply");
        (buf[..n].to_vec(), from)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn transfers_end_as_the_client_says_and_the_service_stops_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let mut registry = Registry::default();
        let (service, bytes) = service(dir.path(), &mut registry);
        let addr = service.local_addr();
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(service.run(shutdown.clone()));
        tokio::task::spawn_blocking(move || {
            // Lock-step, 512-byte blocks, from a port of the transfer's own.
            let c = client();
            c.send_to(b"\0\x01f\0octet\0", addr).unwrap();
            let mut got = Vec::new();
            loop {
                let (p, from) = recv(&c);
                assert_ne!(from, addr, "DATA comes from the transfer's port");
                assert_eq!(&p[..2], &[0, 3]);
                got.extend_from_slice(&p[4..]);
                c.send_to(&[0, 4, p[2], p[3]], from).unwrap();
                if p.len() < 516 {
                    break;
                }
            }
            assert!(got == bytes);
            // The transfer ends (and gives back its place) once it has read the last ACK.
            std::thread::sleep(Duration::from_millis(100));

            // A repeated request while a transfer runs is ignored; a second client past
            // max_transfers (1) is busy; the client's ERROR ends the transfer.
            let c = client();
            c.send_to(b"\0\x01f\0octet\0", addr).unwrap();
            let (first, from) = recv(&c);
            assert_eq!(&first[..4], &[0, 3, 0, 1]);
            c.send_to(b"\0\x01f\0octet\0", addr).unwrap();
            let (again, again_from) = recv(&c);
            assert_eq!(
                (again, again_from),
                (first, from),
                "a resend, not a second transfer"
            );
            let other = client();
            other.send_to(b"\0\x01f\0octet\0", addr).unwrap();
            let (busy, _) = recv(&other);
            assert!(busy.starts_with(b"\0\x05\0\0server busy"), "{busy:?}");
            c.send_to(b"\0\x05\0\x00enough\0", from).unwrap();

            // A client that stops acknowledging is told so after the retries.
            std::thread::sleep(Duration::from_millis(100));
            let c = client();
            c.send_to(b"\0\x01f\0octet\0", addr).unwrap();
            let mut packets = Vec::new();
            loop {
                let (p, _) = recv(&c);
                packets.push(p[..4].to_vec());
                if p[1] == 5 {
                    assert!(p.ends_with(b"no acknowledgement after 2 retransmissions\0"));
                    break;
                }
            }
            assert_eq!(packets.len(), 4, "block 1 three times, then the ERROR");
        })
        .await
        .unwrap();
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), running)
            .await
            .expect("run returns when cancelled")
            .unwrap()
            .unwrap();
        let text = crate::metrics::encode(&registry);
        for line in [
            "ironboot_tftp_transfers_total{outcome=\"complete\"} 1",
            "ironboot_tftp_transfers_total{outcome=\"incomplete\"} 2",
            "ironboot_tftp_requests_total{op=\"read\",result=\"duplicate\"} 1",
            "ironboot_tftp_requests_total{op=\"read\",result=\"busy\"} 1",
            "ironboot_tftp_active_transfers 0",
            "ironboot_tftp_sent_bytes_total 6024",
        ] {
            assert!(text.contains(line), "{line} in:\n{text}");
        }
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
