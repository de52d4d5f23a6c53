//! The accept loop both HTTP listeners (the API and boot HTTP) run instead of
//! `axum::serve`, which has no header-read or idle timeout, no connection cap and, out of
//! descriptors, sleeps a second per failed accept while every client waits.
//!
//! Per listener:
//! - a cap on connections served at once ([`ConnLimits::max_connections`], fitted to the
//!   open-file limit by [`crate::serve::limits::FdBudget`]); past it a connection is answered
//!   503 with `Retry-After` and closed at once, in the listener's error format;
//! - deadlines for the head, the keep-alive wait and a stalled transfer ([`phase`]);
//! - out of descriptors anyway (another part of the process took them), a spare descriptor
//!   is given up to accept the waiting connection and close it, so the loop neither spins
//!   nor leaves clients hanging in the backlog;
//! - on shutdown, accepting stops and each connection finishes its request in progress.
//!
//! The response path is the service's: a connection hands each request to the listener's
//! `Service` (an axum `Router`) and streams whatever body it returns, except that on a
//! zero-copy listener a response offering a file range ([`SendFile`]) has it sent with
//! `sendfile` ([`zero_copy`]).

mod connection;
pub mod metrics;
mod phase;
pub mod refusal;
mod timed_io;
pub mod zero_copy;

use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service;

pub use metrics::{ConnMetrics, ListenerMetrics};
pub use refusal::Refusals;
pub use zero_copy::SendFile;

use crate::serve::limits::ConnLimits;
use crate::telemetry::LogThrottle;

/// Connections past the cap being answered 503 at once; beyond this they are just closed.
/// Their descriptors come out of the reserve ([`crate::serve::limits::RESERVED_FDS`]).
const SHEDDING_AT_ONCE: usize = 128;
/// How long a shed connection is kept to deliver its 503. Short: a flood of clients that
/// never close would otherwise hold every shedding slot, and the connections queued behind
/// them (a real client among them) would wait their turn.
const SHED_LINGER: Duration = Duration::from_millis(100);

/// A bound listener and how it treats its connections.
#[derive(Debug)]
pub struct Listener {
    /// `api` or `http`: log field and metrics label.
    pub name: &'static str,
    pub tcp: TcpListener,
    pub limits: ConnLimits,
    pub refusals: Refusals,
    pub metrics: ConnMetrics,
    /// Send the file ranges responses offer ([`SendFile`]) with `sendfile`.
    pub zero_copy: bool,
}

/// What every connection of one listener shares.
#[derive(Debug)]
struct Shared {
    name: &'static str,
    limits: ConnLimits,
    refusals: Refusals,
    metrics: ConnMetrics,
    zero_copy: bool,
}

/// Accepts and serves connections with `service` until `shutdown` fires, then waits for the
/// connections' requests in progress. Accept errors never end the loop.
pub async fn serve<S>(listener: Listener, service: S, shutdown: CancellationToken) -> io::Result<()>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let Listener {
        name,
        tcp,
        limits,
        refusals,
        metrics,
        zero_copy,
    } = listener;
    let addr = tcp.local_addr()?;
    metrics.set_cap(limits.max_connections);
    let shared = Arc::new(Shared {
        name,
        limits,
        refusals,
        metrics,
        zero_copy,
    });
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let shedding = Arc::new(Semaphore::new(SHEDDING_AT_ONCE));
    let connections = TaskTracker::new();
    let mut spare = SpareFd::open();
    let exhausted = LogThrottle::new(Duration::from_secs(10));
    tracing::info!(listener = name, %addr, max_connections = limits.max_connections,
        header_read_timeout_s = limits.header_read_timeout.as_secs(),
        keepalive_timeout_s = limits.keepalive_timeout.as_secs(),
        stall_timeout_s = limits.stall_timeout.as_secs(), "{name} listening");
    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            r = tcp.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => match slots.clone().try_acquire_owned() {
                Ok(slot) => {
                    let conn = connection::serve(
                        stream,
                        peer,
                        shared.clone(),
                        service.clone(),
                        shutdown.clone(),
                        slot,
                    );
                    connections.spawn(conn);
                }
                Err(_) => {
                    shared.metrics.shed("cap");
                    shed(stream, &shared, &shedding);
                }
            },
            Err(e) if is_out_of_descriptors(&e) => {
                shared.metrics.shed("descriptors");
                spare.close_one_waiting(&tcp).await;
                if let Some(suppressed) = exhausted.admit() {
                    tracing::warn!(listener = name, error = %e, suppressed,
                        "out of file descriptors: closing waiting connections unanswered \
                         (raise LimitNOFILE, or lower the connection caps)");
                }
            }
            // The client gave up between SYN and accept: nothing to do.
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
            Err(e) => {
                tracing::warn!(listener = name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(tcp);
    connections.close();
    connections.wait().await;
    tracing::info!(listener = name, %addr, "{name} stopped");
    Ok(())
}

fn is_out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// Answers a connection past the cap with 503 and closes it. At most [`SHEDDING_AT_ONCE`]
/// are answered at a time; the rest are closed without a word.
fn shed(mut stream: TcpStream, shared: &Shared, shedding: &Arc<Semaphore>) {
    let Ok(permit) = shedding.clone().try_acquire_owned() else {
        return;
    };
    let answer = shared.refusals.over_capacity(shared.limits.max_connections);
    tokio::spawn(async move {
        let _permit = permit;
        let _ = tokio::time::timeout(SHED_LINGER, async {
            stream.write_all(&answer).await?;
            stream.shutdown().await?;
            // Take in what the client sent: closing with unread data would reset the
            // connection, and a reset can destroy the 503 before the client reads it.
            let mut sink = [0u8; 4096];
            let mut taken = 0;
            while taken < 64 * 1024 {
                match stream.read(&mut sink).await? {
                    0 => break,
                    n => taken += n,
                }
            }
            Ok::<_, io::Error>(())
        })
        .await;
    });
}

/// One descriptor held back for the moment the process runs out: given up to accept and
/// close a waiting connection, then taken again.
struct SpareFd(Option<std::fs::File>);

impl SpareFd {
    fn open() -> SpareFd {
        SpareFd(std::fs::File::open("/dev/null").ok())
    }

    async fn close_one_waiting(&mut self, tcp: &TcpListener) {
        self.0 = None;
        if let Ok(Ok((stream, _))) =
            tokio::time::timeout(Duration::from_millis(10), tcp.accept()).await
        {
            drop(stream);
        }
        self.0 = std::fs::File::open("/dev/null").ok();
        if self.0.is_none() {
            // Still none free: give whatever holds them a moment instead of spinning.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
