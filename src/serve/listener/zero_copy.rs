//! Zero-copy file bodies: the bytes of a plain file go from the page cache to the socket with
//! `sendfile(2)`, never through user space, while hyper still writes the head, counts the
//! body against `Content-Length`, keeps the connection alive and drives the deadlines.
//!
//! How it fits under hyper: a handler that can answer with a file range attaches a
//! [`SendFile`] to its response (its body stays a normal streaming body, used wherever
//! zero-copy is off). On a zero-copy listener the connection takes the [`SendFile`] off,
//! queues it as a [`Job`] and gives hyper a [`PlaceholderBody`] of the same length instead:
//! its frames are slices of one static [`PLACEHOLDER`] region, which hyper queues without
//! copying (the connection's writes are vectored) and hands back, in order, to the
//! connection's I/O. There, a slice that lies inside that region is never written: that many
//! bytes of the queue's front job are `sendfile`d instead. Jobs and placeholder bytes are
//! both in response order, so the front job is always the one the slice stands for.
//!
//! The event loop never waits for the disk: before a window of [`RESIDENT_WINDOW`] bytes is
//! sent, `cachestat(2)` says whether it is in the page cache; if not (or the kernel cannot
//! say), `readahead(2)` runs on a thread first, as `CacheFirstReader` does for reads.

use std::collections::VecDeque;
use std::fs::File;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// The region placeholder frames are cut from; never read or written by anyone.
static PLACEHOLDER: [u8; PLACEHOLDER_LEN] = [0; PLACEHOLDER_LEN];
/// Size of one placeholder frame at most (hyper flushes each before buffering more).
const PLACEHOLDER_LEN: usize = 1 << 20;
/// Bytes checked for page-cache residency (and read ahead if needed) at a time.
const RESIDENT_WINDOW: u64 = 8 << 20;

/// A file range a handler offers to send without copying (a response extension).
#[derive(Clone, Debug)]
pub struct SendFile {
    pub file: Arc<File>,
    pub offset: u64,
    pub len: u64,
    /// Counts the bytes as they are sent.
    pub sent: Counter,
}

/// `true` when `buf` is a slice of [`PLACEHOLDER`] (so it stands for file bytes).
pub fn is_placeholder(buf: &[u8]) -> bool {
    let start = PLACEHOLDER.as_ptr() as usize;
    let p = buf.as_ptr() as usize;
    !buf.is_empty() && p >= start && p + buf.len() <= start + PLACEHOLDER_LEN
}

/// A body of `len` placeholder bytes, in frames of at most [`PLACEHOLDER_LEN`].
pub struct PlaceholderBody {
    left: u64,
}

impl PlaceholderBody {
    pub fn new(len: u64) -> Self {
        Self { left: len }
    }
}

impl http_body::Body for PlaceholderBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.left == 0 {
            return Poll::Ready(None);
        }
        let n = usize::try_from(this.left).map_or(PLACEHOLDER_LEN, |l| l.min(PLACEHOLDER_LEN));
        this.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&PLACEHOLDER[..n])))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

/// The file ranges a connection still has to send, in response order.
#[derive(Default)]
pub struct Jobs(Mutex<VecDeque<Job>>);

impl Jobs {
    pub fn push(&self, send: SendFile) {
        self.lock().push_back(Job::new(send));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Job>> {
        // A panic while holding this lock leaves a queue of plain data: still usable.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends up to `max` bytes of the front job to `sink`.
    pub fn poll_send(
        &self,
        cx: &mut Context<'_>,
        sink: &mut dyn SendFileSink,
        max: usize,
    ) -> Poll<io::Result<usize>> {
        let mut jobs = self.lock();
        let Some(job) = jobs.front_mut() else {
            return Poll::Ready(Err(io::Error::other(
                "placeholder bytes without a file to send",
            )));
        };
        let n = ready!(job.poll_send(cx, sink, max))?;
        if job.next == job.end {
            jobs.pop_front();
        }
        Poll::Ready(Ok(n))
    }
}

type Warming = blocking::Task<()>;

/// One file range being sent.
struct Job {
    send: SendFile,
    next: u64,
    end: u64,
    /// Bytes before this offset were found in the page cache (or just read ahead).
    resident_until: u64,
    warming: Option<Warming>,
}

impl Job {
    fn new(send: SendFile) -> Self {
        let next = send.offset;
        Self {
            end: send.offset + send.len,
            next,
            resident_until: next,
            warming: None,
            send,
        }
    }

    fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        sink: &mut dyn SendFileSink,
        max: usize,
    ) -> Poll<io::Result<usize>> {
        loop {
            if let Some(task) = self.warming.as_mut() {
                ready!(Pin::new(task).poll(cx));
                self.warming = None;
                self.resident_until = self.window_end();
            }
            if self.next >= self.resident_until {
                let end = self.window_end();
                if resident(&self.send.file, self.next, end - self.next) {
                    self.resident_until = end;
                } else {
                    let (file, offset, len) = (self.send.file.clone(), self.next, end - self.next);
                    self.warming = Some(blocking::unblock(move || read_ahead(&file, offset, len)));
                    continue;
                }
            }
            let left = self.resident_until.min(self.end) - self.next;
            let count = usize::try_from(left).map_or(max, |l| l.min(max));
            let n = ready!(sink.poll_send_file(cx, &self.send.file, self.next, count))?;
            if n == 0 {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file ended before its announced length",
                )));
            }
            self.next += n as u64;
            self.send.sent.inc_by(n as u64);
            return Poll::Ready(Ok(n));
        }
    }

    fn window_end(&self) -> u64 {
        (self.next + RESIDENT_WINDOW).min(self.end)
    }
}

/// A socket that file bytes can be sent to directly.
pub trait SendFileSink {
    /// Sends up to `count` bytes of `file` from `offset`; `Pending` until the socket can
    /// take some.
    fn poll_send_file(
        &mut self,
        cx: &mut Context<'_>,
        file: &File,
        offset: u64,
        count: usize,
    ) -> Poll<io::Result<usize>>;
}

impl SendFileSink for TcpStream {
    fn poll_send_file(
        &mut self,
        cx: &mut Context<'_>,
        file: &File,
        offset: u64,
        count: usize,
    ) -> Poll<io::Result<usize>> {
        let (sock, src) = (self.as_raw_fd(), file.as_raw_fd());
        loop {
            ready!(self.poll_write_ready(cx))?;
            match self.try_io(Interest::WRITABLE, || send_file(sock, src, offset, count)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }
}

fn send_file(sock: RawFd, src: RawFd, offset: u64, count: usize) -> io::Result<usize> {
    let mut off =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: both descriptors are open for the duration of the call (the socket is borrowed
    // from its stream, the file from its `Arc`); `off` is a valid, writable off_t.
    let n = unsafe { libc::sendfile(sock, src, &mut off, count) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        // n >= 0 and at most `count`, so it fits a usize.
        Ok(n as usize)
    }
}

/// `cachestat(2)` (Linux 6.5+), not in the libc crate yet: the same number on every arch.
const SYS_CACHESTAT: libc::c_long = 451;

#[repr(C)]
struct CachestatRange {
    off: u64,
    len: u64,
}

#[repr(C)]
#[derive(Default)]
struct Cachestat {
    nr_cache: u64,
    nr_dirty: u64,
    nr_writeback: u64,
    nr_evicted: u64,
    nr_recently_evicted: u64,
}

/// Set once the kernel answered `cachestat` with ENOSYS (before 6.5): it is not asked again.
static NO_CACHESTAT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The page size, read once.
fn page_size() -> u64 {
    static PAGE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    // SAFETY: sysconf only reads a system constant.
    *PAGE
        .get_or_init(|| u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096))
}

/// Whether every page of the range is in the page cache; `false` when the kernel cannot say.
fn resident(file: &File, offset: u64, len: u64) -> bool {
    use std::sync::atomic::Ordering::Relaxed;
    if len == 0 {
        return true;
    }
    if NO_CACHESTAT.load(Relaxed) {
        return false;
    }
    let page = page_size();
    let range = CachestatRange { off: offset, len };
    let mut stat = Cachestat::default();
    // SAFETY: the descriptor is open; `range` and `stat` are valid for reads and writes of
    // their #[repr(C)] layouts, which match the kernel's; flags must be 0.
    let r = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file.as_raw_fd(),
            &range as *const CachestatRange,
            &mut stat as *mut Cachestat,
            0,
        )
    };
    if r != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
        NO_CACHESTAT.store(true, Relaxed);
    }
    let pages = (offset + len).div_ceil(page) - offset / page;
    r == 0 && stat.nr_cache >= pages
}

/// Reads a range into the page cache (blocking; on a thread).
fn read_ahead(file: &File, offset: u64, len: u64) {
    let (Ok(offset), Ok(len)) = (libc::off64_t::try_from(offset), usize::try_from(len)) else {
        return;
    };
    // SAFETY: the descriptor is open for the lifetime of `file`; readahead only fills the
    // page cache. A failure is harmless: sendfile then reads (and reports errors) itself.
    unsafe {
        libc::readahead(file.as_raw_fd(), offset, len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;

    #[tokio::test]
    async fn placeholder_frames_add_up_and_are_recognised() {
        let mut body = PlaceholderBody::new(PLACEHOLDER_LEN as u64 * 2 + 5);
        let mut total = 0;
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            let data = frame.unwrap().into_data().unwrap();
            assert!(is_placeholder(&data));
            total += data.len();
        }
        assert_eq!(total, PLACEHOLDER_LEN * 2 + 5);
        assert!(!is_placeholder(b"plain bytes"));
        assert!(!is_placeholder(&[]));
    }

    #[test]
    fn residency_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![7u8; 1 << 20]).unwrap();
        let file = File::open(&path).unwrap();
        // Just written: in the page cache (unless the kernel has no cachestat).
        let cached = resident(&file, 0, 1 << 20);
        let r = unsafe {
            libc::syscall(
                SYS_CACHESTAT,
                file.as_raw_fd(),
                &CachestatRange { off: 0, len: 1 } as *const CachestatRange,
                &mut Cachestat::default() as *mut Cachestat,
                0,
            )
        };
        assert_eq!(cached, r == 0);
    }
}
