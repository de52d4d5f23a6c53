//! Where a connection stands, shared by its I/O (which enforces the deadlines) and its
//! request and response bodies (which say when a request starts, waits and ends).
//!
//! hyper's own header-read timeout cannot tell a keep-alive wait from a slow head, nor see a
//! client that stops reading a download, so the phase is tracked here instead:
//! - `AwaitingHead`: accepted, or the first byte of the next request has arrived; the head
//!   must be complete within `header_read_timeout` of that moment however it trickles in;
//! - `Handling`: hyper handed the request to the service; only waits on the client count
//!   (a body the handler reads, a response the client does not take), `stall_timeout` each;
//! - `Idle`: the response is sent; the next request must start within `keepalive_timeout`.

use std::sync::Mutex;
use std::task::Waker;

use tokio::time::Instant;

use crate::serve::limits::ConnLimits;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    AwaitingHead,
    Handling,
    Idle,
}

/// Which deadline passed (a metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    Header,
    KeepAlive,
    Stall,
}

impl Timeout {
    pub fn label(self) -> &'static str {
        match self {
            Timeout::Header => "header",
            Timeout::KeepAlive => "keepalive",
            Timeout::Stall => "stall",
        }
    }
}

#[derive(Debug)]
struct State {
    stage: Stage,
    /// When the current stage began.
    since: Instant,
    /// When a byte last moved either way.
    progress: Instant,
    /// The handler is waiting for request body bytes.
    waiting_for_body: bool,
    /// The connection task's last read that found nothing: woken when a change of stage
    /// gives that read a deadline it did not have (hyper does not poll again by itself).
    reader: Option<Waker>,
}

/// A connection's phase; cheap to update from its one task.
#[derive(Debug)]
pub struct Phase(Mutex<State>);

impl Phase {
    pub fn new() -> Phase {
        let now = Instant::now();
        Phase(Mutex::new(State {
            stage: Stage::AwaitingHead,
            since: now,
            progress: now,
            waiting_for_body: false,
            reader: None,
        }))
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        // A poisoned lock only means a panic elsewhere on this connection; the state is plain.
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s)
    }

    pub fn stage(&self) -> Stage {
        self.with(|s| s.stage)
    }

    /// `n` bytes arrived from the client.
    pub fn read(&self, n: usize) {
        if n == 0 {
            return;
        }
        self.with(|s| {
            let now = Instant::now();
            s.progress = now;
            if s.stage == Stage::Idle {
                s.stage = Stage::AwaitingHead;
                s.since = now;
            }
        });
    }

    /// `n` bytes went to the client.
    pub fn wrote(&self, n: usize) {
        if n > 0 {
            self.with(|s| s.progress = Instant::now());
        }
    }

    pub fn request_started(&self) {
        self.with(|s| {
            s.stage = Stage::Handling;
            s.since = Instant::now();
            s.waiting_for_body = false;
        });
    }

    pub fn response_done(&self) {
        let reader = self.with(|s| {
            if s.stage != Stage::Handling {
                return None;
            }
            s.stage = Stage::Idle;
            s.since = Instant::now();
            s.waiting_for_body = false;
            s.reader.take()
        });
        if let Some(w) = reader {
            w.wake();
        }
    }

    pub fn waiting_for_body(&self, waiting: bool) {
        let reader = self.with(|s| {
            let started = waiting && !s.waiting_for_body;
            s.waiting_for_body = waiting;
            if started { s.reader.take() } else { None }
        });
        if let Some(w) = reader {
            w.wake();
        }
    }

    /// Remembers who to wake when the stage changes under a read that is waiting.
    pub fn park_reader(&self, waker: &Waker) {
        self.with(|s| match &s.reader {
            Some(w) if w.will_wake(waker) => {}
            _ => s.reader = Some(waker.clone()),
        });
    }

    /// The deadline a read that found nothing is held to, if any: none while the handler is
    /// busy on its own (the client is not late then).
    pub fn read_deadline(&self, limits: &ConnLimits) -> Option<(Instant, Timeout)> {
        self.with(|s| match s.stage {
            Stage::AwaitingHead => Some((s.since + limits.header_read_timeout, Timeout::Header)),
            Stage::Idle => Some((s.since + limits.keepalive_timeout, Timeout::KeepAlive)),
            Stage::Handling if s.waiting_for_body => {
                Some((s.progress + limits.stall_timeout, Timeout::Stall))
            }
            Stage::Handling => None,
        })
    }

    /// The deadline a write the client does not take is held to.
    pub fn write_deadline(&self, limits: &ConnLimits) -> (Instant, Timeout) {
        self.with(|s| (s.progress + limits.stall_timeout, Timeout::Stall))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits() -> ConnLimits {
        ConnLimits {
            max_connections: 1,
            header_read_timeout: Duration::from_secs(2),
            keepalive_timeout: Duration::from_secs(7),
            stall_timeout: Duration::from_secs(30),
        }
    }

    #[test]
    fn deadlines_follow_the_stage() {
        let p = Phase::new();
        let l = limits();
        assert_eq!(p.read_deadline(&l).unwrap().1, Timeout::Header);
        p.request_started();
        assert_eq!(
            p.read_deadline(&l),
            None,
            "a busy handler is not the client's fault"
        );
        p.waiting_for_body(true);
        assert_eq!(p.read_deadline(&l).unwrap().1, Timeout::Stall);
        p.response_done();
        assert_eq!(p.stage(), Stage::Idle);
        assert_eq!(p.read_deadline(&l).unwrap().1, Timeout::KeepAlive);
        p.read(0);
        assert_eq!(p.stage(), Stage::Idle, "no byte, no new request");
        p.read(3);
        assert_eq!(p.stage(), Stage::AwaitingHead);
        assert_eq!(p.write_deadline(&l).1, Timeout::Stall);
    }
}
