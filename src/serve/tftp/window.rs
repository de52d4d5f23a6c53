//! One window of DATA blocks, read and sent in as few system calls as the kernel allows.
//!
//! The buffer is laid out as the datagrams themselves, each a 4-byte header and its block,
//! back to back. One `preadv2` reads every block of the window into place; one `sendmsg`
//! with `UDP_SEGMENT` hands the whole run to the kernel, which cuts it into datagrams
//! (UDP GSO: one trip through the stack instead of one per block). Where GSO is refused
//! (a path MTU smaller than a datagram, a device without checksum offload, an old kernel),
//! the transfer falls back to one `sendmmsg` for the window. A lock-step transfer
//! (windowsize 1) is one `preadv2` and one `send` per block.

use std::fs::File;
use std::io;
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;

use super::packet::data_header;

/// `UDP_SEGMENT` from linux/udp.h (not in the libc crate for glibc targets).
const UDP_SEGMENT: libc::c_int = 103;
/// Datagrams per GSO send: the kernel's UDP_MAX_SEGMENTS before Linux 6.9 raised it.
const MAX_GSO_SEGMENTS: usize = 64;
/// Bytes per GSO send, below the 65,507 a UDP payload over IPv4 can hold.
const MAX_GSO_BYTES: usize = 65_000;

/// The blocks `first ..= last()` of a file, ready to send.
pub struct Window {
    blksize: usize,
    windowsize: usize,
    buf: Vec<u8>,
    /// First block held, 1-based; block numbers on the wire wrap, these do not.
    first: u64,
    /// Blocks held (0 before the first fill).
    count: usize,
    /// Bytes of the last block held (the others are full).
    last_len: usize,
    gso: bool,
}

impl Window {
    pub fn new(blksize: u16, windowsize: u16) -> Window {
        let (blksize, windowsize) = (usize::from(blksize), usize::from(windowsize));
        Window {
            blksize,
            windowsize,
            buf: vec![0; windowsize * (4 + blksize)],
            first: 0,
            count: 0,
            last_len: 0,
            gso: windowsize > 1,
        }
    }

    /// Blocks a `size`-byte file is sent in: a last, short block ends it, empty if the
    /// size is a multiple of the block size.
    pub fn blocks_in(&self, size: u64) -> u64 {
        size / self.blksize as u64 + 1
    }

    pub fn last(&self) -> u64 {
        debug_assert!(self.count > 0, "filled before use");
        self.first + self.count as u64 - 1
    }

    /// File bytes up to the end of the last block held.
    pub fn end_offset(&self) -> u64 {
        (self.last() - 1) * self.blksize as u64 + self.last_len as u64
    }

    /// Reads blocks from `first` on (as many as the window holds, none past the file's
    /// last) out of `file`, whose size was `size` when the transfer started. A file that
    /// has since shrunk is an error, never a short block: that would end the client's
    /// copy early and look complete.
    pub fn fill(&mut self, file: &File, first: u64, size: u64) -> io::Result<()> {
        let stride = 4 + self.blksize;
        let blocks = self.blocks_in(size);
        let count = (blocks - first + 1).min(self.windowsize as u64) as usize;
        let offset = (first - 1) * self.blksize as u64;
        let mut regions = Vec::with_capacity(count);
        for j in 0..count {
            let start = offset + (j * self.blksize) as u64;
            let len = (size - start).min(self.blksize as u64) as usize;
            let at = j * stride;
            self.buf[at..at + 4].copy_from_slice(&data_header(first + j as u64));
            regions.push((at + 4, len));
        }
        self.first = first;
        self.count = count;
        self.last_len = regions.last().map_or(0, |r| r.1);
        read_regions(file, &mut self.buf, &regions, offset)
    }

    /// Sends every block held.
    pub fn send(&mut self, socket: &UdpSocket) -> io::Result<()> {
        let stride = 4 + self.blksize;
        let total = (self.count - 1) * stride + 4 + self.last_len;
        if self.count == 1 {
            return socket.send(&self.buf[..total]).map(drop);
        }
        let fd = socket.as_raw_fd();
        let per_send = (MAX_GSO_BYTES / stride).clamp(1, MAX_GSO_SEGMENTS);
        let mut at = 0;
        while self.gso && at < total && per_send > 1 {
            let end = total.min(at + per_send * stride);
            match send_segmented(fd, &self.buf[at..end], stride) {
                Ok(()) => at = end,
                Err(e) if gso_refused(&e) => self.gso = false,
                Err(e) => return Err(e),
            }
        }
        if at < total {
            send_each(fd, &self.buf[at..total], stride)?;
        }
        Ok(())
    }
}

/// Reads `regions` (offsets into `buf`, lengths) from consecutive file bytes at `offset`.
fn read_regions(
    file: &File,
    buf: &mut [u8],
    regions: &[(usize, usize)],
    offset: u64,
) -> io::Result<()> {
    let wanted: usize = regions.iter().map(|r| r.1).sum();
    assert!(regions.iter().all(|&(at, len)| at + len <= buf.len()));
    // One base pointer for every iovec, so none is invalidated by borrowing `buf` again.
    let base = buf.as_mut_ptr();
    let iov: Vec<libc::iovec> = regions
        .iter()
        .map(|&(at, len)| libc::iovec {
            // SAFETY: at + len <= buf.len() (asserted above), so the pointer is in bounds.
            iov_base: unsafe { base.add(at) }.cast(),
            iov_len: len,
        })
        .collect();
    // SAFETY: every iovec points into `buf`, which outlives the call and is not otherwise
    // used during it, and the regions do not overlap. Past IOV_MAX (1024) regions preadv2
    // reads fewer and the loop below finishes the rest.
    let n = unsafe {
        libc::preadv2(
            file.as_raw_fd(),
            iov.as_ptr(),
            iov.len().min(1024) as libc::c_int,
            offset as libc::off_t,
            0,
        )
    };
    let mut done = if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
        0
    } else {
        n as usize
    };
    if done == wanted {
        return Ok(());
    }
    // Short: the loop finishes each region with pread, and a file that shrank ends in
    // UnexpectedEof.
    let mut file_at = offset;
    for &(at, len) in regions {
        let skip = done.min(len);
        done -= skip;
        if skip < len {
            file.read_exact_at(&mut buf[at + skip..at + len], file_at + skip as u64)?;
        }
        file_at += len as u64;
    }
    Ok(())
}

/// One `sendmsg` of datagrams of `segment` bytes each (the last may be shorter).
fn send_segmented(fd: RawFd, bytes: &[u8], segment: usize) -> io::Result<()> {
    if bytes.len() <= segment {
        return send_each(fd, bytes, segment);
    }
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr().cast_mut().cast(),
        iov_len: bytes.len(),
    };
    // One control message carrying a u16; u64s keep it aligned as cmsghdr needs.
    let mut control = [0u64; 4];
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(size_of::<u16>() as u32) } as usize;
    debug_assert!(space <= size_of_val(&control));
    // SAFETY: msghdr is plain data; zero is a valid "no name, no flags" value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: msg_control points at `control`, large enough for one header and a u16
    // (asserted above), so CMSG_FIRSTHDR is non-null and its data in bounds; the data
    // pointer may be unaligned for u16, hence write_unaligned.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), segment as u16);
    }
    loop {
        // SAFETY: msg and everything it points at live across the call.
        let n = unsafe { libc::sendmsg(fd, &msg, 0) };
        if n >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Datagrams of `segment` bytes each (the last may be shorter), one `sendmmsg` for all.
fn send_each(fd: RawFd, bytes: &[u8], segment: usize) -> io::Result<()> {
    let mut iov: Vec<libc::iovec> = bytes
        .chunks(segment)
        .map(|d| libc::iovec {
            iov_base: d.as_ptr().cast_mut().cast(),
            iov_len: d.len(),
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = iov
        .iter_mut()
        .map(|iov| {
            // SAFETY: mmsghdr is plain data; zero is a valid "no name, no flags" value.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    let mut sent = 0;
    while sent < msgs.len() {
        let rest = &mut msgs[sent..];
        // SAFETY: each header points at one iovec in `iov`, each iovec into `bytes`; all
        // outlive the call.
        let n = unsafe { libc::sendmmsg(fd, rest.as_mut_ptr(), rest.len() as libc::c_uint, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        } else {
            sent += n as usize;
        }
    }
    Ok(())
}

/// Errors that mean "not with GSO here" rather than "the send failed".
fn gso_refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::EIO | libc::ENOPROTOOPT | libc::EOPNOTSUPP)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Receives every datagram waiting on `s`.
    fn drain(s: &UdpSocket) -> Vec<Vec<u8>> {
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut out = Vec::new();
        let mut buf = vec![0u8; 70_000];
        while let Ok(n) = s.recv(&mut buf) {
            out.push(buf[..n].to_vec());
        }
        out
    }

    fn pair() -> (UdpSocket, UdpSocket) {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        a.connect(b.local_addr().unwrap()).unwrap();
        (a, b)
    }

    #[test]
    fn a_window_arrives_as_one_datagram_per_block_with_the_file_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let bytes: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let file = File::open(&path).unwrap();
        for (blksize, windowsize, gso) in [(1000, 4, true), (1000, 4, false), (512, 1, false)] {
            let (tx, rx) = pair();
            let mut w = Window::new(blksize, windowsize);
            w.gso = gso;
            let size = bytes.len() as u64;
            assert_eq!(w.blocks_in(size), 10_000 / u64::from(blksize) + 1);
            let mut got = Vec::new();
            let mut first = 1;
            while first <= w.blocks_in(size) {
                w.fill(&file, first, size).unwrap();
                w.send(&tx).unwrap();
                let datagrams = drain(&rx);
                assert_eq!(datagrams.len() as u64, w.last() - first + 1);
                for (j, d) in datagrams.iter().enumerate() {
                    assert_eq!(&d[..4], &data_header(first + j as u64));
                    got.extend_from_slice(&d[4..]);
                }
                assert_eq!(w.end_offset(), got.len() as u64);
                first = w.last() + 1;
            }
            assert!(got == bytes, "blksize {blksize} windowsize {windowsize}");
        }
    }

    #[test]
    fn a_size_that_fills_its_blocks_ends_with_an_empty_block() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), [5u8; 1024]).unwrap();
        let file = File::open(dir.path().join("f")).unwrap();
        let (tx, rx) = pair();
        let mut w = Window::new(512, 16);
        w.fill(&file, 1, 1024).unwrap();
        w.send(&tx).unwrap();
        let lens: Vec<usize> = drain(&rx).iter().map(Vec::len).collect();
        assert_eq!(lens, [516, 516, 4]);
    }

    #[test]
    fn a_file_that_shrank_is_an_error_not_a_short_block() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, [1u8; 4000]).unwrap();
        let file = File::open(&path).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(1500)
            .unwrap();
        let mut w = Window::new(1000, 4);
        let e = w.fill(&file, 1, 4000).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }
}
