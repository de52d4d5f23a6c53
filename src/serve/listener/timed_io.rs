//! A connection's socket as hyper sees it: every read and write updates the connection's
//! [`Phase`], a read or write that waits past the phase's deadline fails with `TimedOut`
//! (hyper then drops the connection), and hyper's empty-bodied answer to an unparsable
//! head is swapped for the listener's own ([`Refusals::replace_parse_error`]).
//!
//! On a zero-copy connection ([`Jobs`]), writes are vectored: hyper then queues body frames
//! without copying them, and a frame of placeholder bytes is sent from its file with
//! `sendfile` instead of being written ([`super::zero_copy`]). Elsewhere vectored writes are
//! declined. Either way hyper hands over each response head in one contiguous buffer, the
//! first of a vectored write, which is what makes its automatic answer recognisable.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::metrics::ConnMetrics;
use super::phase::{Phase, Stage, Timeout};
use super::refusal::Refusals;
use super::zero_copy::{Jobs, SendFileSink, is_placeholder};
use crate::serve::limits::ConnLimits;

pub struct TimedIo<T> {
    inner: T,
    phase: Arc<Phase>,
    limits: ConnLimits,
    timer: Pin<Box<Sleep>>,
    refusals: Refusals,
    /// Our replacement for hyper's parse-error answer, and how much of it is sent.
    replacement: Option<(Vec<u8>, usize)>,
    metrics: ConnMetrics,
    /// File ranges to send in place of placeholder bytes (zero-copy connections only).
    zero_copy: Option<Arc<Jobs>>,
}

impl<T> TimedIo<T> {
    pub fn new(
        inner: T,
        phase: Arc<Phase>,
        limits: ConnLimits,
        refusals: Refusals,
        metrics: ConnMetrics,
    ) -> Self {
        Self {
            inner,
            phase,
            limits,
            timer: Box::pin(tokio::time::sleep_until(Instant::now())),
            refusals,
            replacement: None,
            metrics,
            zero_copy: None,
        }
    }

    /// Makes writes vectored and sends placeholder bytes from `jobs`' files.
    pub fn with_zero_copy(mut self, jobs: Arc<Jobs>) -> Self {
        self.zero_copy = Some(jobs);
        self
    }

    /// `Ready(Err(TimedOut))` once `deadline` has passed, else arms the timer and waits.
    fn expire_at(
        &mut self,
        cx: &mut Context<'_>,
        deadline: Instant,
        which: Timeout,
    ) -> Poll<io::Error> {
        if self.timer.deadline() != deadline {
            self.timer.as_mut().reset(deadline);
        }
        ready!(self.timer.as_mut().poll(cx));
        self.metrics.timed_out(which);
        Poll::Ready(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{} timeout", which.label()),
        ))
    }
}

impl<T: AsyncWrite + Unpin> TimedIo<T> {
    /// Sends what is left of the replacement answer.
    fn flush_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, sent)) = self.replacement.as_mut() {
            if *sent == bytes.len() {
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *sent += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TimedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.replacement.is_some() {
            // The connection is being refused: nothing more is read from it.
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.phase.read(buf.filled().len() - before);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                this.phase.park_reader(cx.waker());
                match this.phase.read_deadline(&this.limits) {
                    Some((deadline, which)) => this.expire_at(cx, deadline, which).map(Err),
                    None => Poll::Pending,
                }
            }
        }
    }
}

impl<T: AsyncWrite + SendFileSink + Unpin> TimedIo<T> {
    /// A write's outcome, with the stall deadline applied while the client takes nothing.
    fn written(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match r {
            Poll::Ready(Ok(n)) => {
                self.phase.wrote(n);
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let (deadline, which) = self.phase.write_deadline(&self.limits);
                self.expire_at(cx, deadline, which).map(Err)
            }
        }
    }
}

impl<T: AsyncWrite + SendFileSink + Unpin> AsyncWrite for TimedIo<T> {
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let Some(jobs) = this.zero_copy.clone() else {
            let first = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &**b);
            return Pin::new(this).poll_write(cx, first);
        };
        let Some(first) = bufs.iter().find(|b| !b.is_empty()).map(|b| &**b) else {
            return Poll::Ready(Ok(0));
        };
        if is_placeholder(first) {
            let r = jobs.poll_send(cx, &mut this.inner, first.len());
            return this.written(cx, r);
        }
        if this.replacement.is_some() || this.phase.stage() == Stage::AwaitingHead {
            // Possibly hyper's own answer to a bad head: the single-buffer path checks it.
            return Pin::new(this).poll_write(cx, first);
        }
        // The plain bytes before the first placeholder (empty slices carry nothing).
        let plain = bufs
            .iter()
            .position(|b| is_placeholder(b))
            .unwrap_or(bufs.len());
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, &bufs[..plain]);
        this.written(cx, r)
    }

    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if is_placeholder(buf) {
            if let Some(jobs) = this.zero_copy.clone() {
                let r = jobs.poll_send(cx, &mut this.inner, buf.len());
                return this.written(cx, r);
            }
            return Poll::Ready(Err(io::Error::other(
                "placeholder bytes on a plain connection",
            )));
        }
        if this.replacement.is_none() && this.phase.stage() == Stage::AwaitingHead {
            // No request was handed to the service since the last head began: this is
            // hyper answering a head it could not parse.
            if let Some(answer) = this.refusals.replace_parse_error(buf) {
                this.metrics.malformed();
                this.replacement = Some((answer, 0));
            }
        }
        if this.replacement.is_some() {
            ready!(this.flush_replacement(cx))?;
            // hyper's own bytes are consumed and dropped: ours went instead.
            return Poll::Ready(Ok(buf.len()));
        }
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.written(cx, r)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.flush_replacement(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.flush_replacement(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.zero_copy.is_some()
    }
}

#[cfg(test)]
impl SendFileSink for tokio::io::DuplexStream {
    fn poll_send_file(
        &mut self,
        _cx: &mut Context<'_>,
        _file: &std::fs::File,
        _offset: u64,
        _count: usize,
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Err(io::ErrorKind::Unsupported.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn limits() -> ConnLimits {
        ConnLimits {
            max_connections: 1,
            header_read_timeout: Duration::from_millis(200),
            keepalive_timeout: Duration::from_millis(400),
            stall_timeout: Duration::from_millis(300),
        }
    }

    #[tokio::test]
    async fn a_silent_client_times_out_on_the_header_deadline() {
        let (ours, _theirs) = tokio::io::duplex(64);
        let phase = Arc::new(Phase::new());
        let mut io = TimedIo::new(
            ours,
            phase,
            limits(),
            Refusals::plain(),
            ConnMetrics::default(),
        );
        let started = Instant::now();
        let mut buf = [0u8; 8];
        let e = io.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_secs(2),
            "{took:?}"
        );
    }

    #[tokio::test]
    async fn a_busy_handler_is_not_timed_out_but_a_stalled_body_is() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let phase = Arc::new(Phase::new());
        let mut io = TimedIo::new(
            ours,
            phase.clone(),
            limits(),
            Refusals::plain(),
            ConnMetrics::default(),
        );
        phase.request_started();
        let mut buf = [0u8; 8];
        let read = tokio::time::timeout(Duration::from_secs(1), io.read(&mut buf)).await;
        assert!(read.is_err(), "no deadline while the handler works");
        phase.waiting_for_body(true);
        theirs.write_all(b"ab").await.unwrap();
        assert_eq!(io.read(&mut buf).await.unwrap(), 2);
        let e = io.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn hypers_parse_error_answer_is_replaced() {
        let (ours, mut theirs) = tokio::io::duplex(4096);
        let phase = Arc::new(Phase::new());
        let mut io = TimedIo::new(
            ours,
            phase,
            limits(),
            Refusals::plain(),
            ConnMetrics::default(),
        );
        io.write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
        io.shutdown().await.unwrap();
        let mut out = String::new();
        theirs.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 431"), "{out}");
        assert!(out.ends_with("too large\n"), "{out}");
    }
}
