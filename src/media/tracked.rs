//! A block device wrapper that reports progress and hashes the image as hadris-iso writes it.
//!
//! hadris-iso writes every block once, in ascending order, so hashing the writes in passing
//! gives the image's SHA-256 without reading hundreds of megabytes back. The wrapper checks
//! that promise instead of trusting it: any write that is not the next expected block marks
//! the hash unusable, and the caller then hashes the finished file.
//!
//! Writes that fall in the extent of a file copied in the kernel ([`super::direct`]) are
//! dropped (hadris wrote a placeholder's zeros there); the hash takes those bytes from the
//! host file instead, in their place in the order.

use hadris_io::{Error, ErrorType};
use hadris_storage::sync::BlockDevice;
use hadris_storage::{BlockIndex, BlockSize};
use sha2::{Digest, Sha256};

use super::Progress;
use super::direct::{Direct, read_extent};

pub(crate) struct TrackedDevice<'p, D> {
    inner: D,
    total: u64,
    progress: Option<Progress<'p>>,
    hasher: Option<Sha256>,
    /// Byte offset the next in-order write must start at.
    next: u64,
    /// Extents filled later from host files, sorted by offset; not written here.
    skips: Vec<Direct>,
}

impl<'p, D: BlockDevice> TrackedDevice<'p, D> {
    pub(crate) fn new(inner: D, total: u64, progress: Option<Progress<'p>>, hash: bool) -> Self {
        Self {
            inner,
            total,
            progress,
            hasher: hash.then(Sha256::new),
            next: 0,
            skips: Vec::new(),
        }
    }

    /// Leaves `skips` (sorted, non-overlapping, block-aligned) unwritten.
    pub(crate) fn skipping(mut self, skips: Vec<Direct>) -> Self {
        self.skips = skips;
        self
    }

    /// The extents that were skipped, to be filled.
    pub(crate) fn skipped(&self) -> &[Direct] {
        &self.skips
    }

    /// The SHA-256 of everything written, if it was written in order and covers `total` bytes.
    pub(crate) fn finish(&mut self) -> Option<String> {
        let complete = self.next == self.total;
        self.hasher
            .take()
            .filter(|_| complete)
            .map(|h| hex::encode(h.finalize()))
    }

    /// Where the piece of a write starting at `pos` ends, and the skipped extent it lies in.
    fn piece(&self, pos: u64, end: u64) -> (u64, Option<usize>) {
        for (i, d) in self.skips.iter().enumerate() {
            if pos < d.start {
                return (end.min(d.start), None);
            }
            if pos < d.end() {
                return (end.min(d.end()), Some(i));
            }
        }
        (end, None)
    }

    /// Hashes a skipped piece from its host file (only while the writes are in order).
    fn hash_skipped(&mut self, i: usize, pos: u64, stop: u64) -> std::io::Result<()> {
        let Some(h) = self.hasher.as_mut() else {
            return Ok(());
        };
        let d = &self.skips[i];
        let mut buf = vec![0u8; (stop - pos).min(1 << 20) as usize];
        let mut at = pos;
        while at < stop {
            let n = ((stop - at) as usize).min(buf.len());
            read_extent(d, at - d.start, &mut buf[..n])?;
            h.update(&buf[..n]);
            at += n as u64;
        }
        Ok(())
    }
}

impl<D: ErrorType> ErrorType for TrackedDevice<'_, D> {
    type Error = D::Error;
}

impl<D: BlockDevice> BlockDevice for TrackedDevice<'_, D> {
    fn block_size(&self) -> BlockSize {
        self.inner.block_size()
    }

    fn physical_block_size(&self) -> BlockSize {
        self.inner.physical_block_size()
    }

    fn block_count(&self) -> u64 {
        self.inner.block_count()
    }

    fn max_block_count(&self) -> u64 {
        self.inner.max_block_count()
    }

    fn disk_offset(&self) -> u64 {
        self.inner.disk_offset()
    }

    fn writable(&self) -> bool {
        self.inner.writable()
    }

    fn read_blocks(&mut self, first: BlockIndex, buf: &mut [u8]) -> Result<(), Error<Self::Error>> {
        self.inner.read_blocks(first, buf)
    }

    fn write_blocks(&mut self, first: BlockIndex, buf: &[u8]) -> Result<(), Error<Self::Error>> {
        let block = u64::from(self.block_size().get());
        let offset = first.get() * block;
        let end = offset + buf.len() as u64;
        if offset != self.next {
            self.hasher = None;
        }
        let mut pos = offset;
        while pos < end {
            let (stop, skipped) = self.piece(pos, end);
            let piece = &buf[(pos - offset) as usize..(stop - offset) as usize];
            match skipped {
                Some(i) => {
                    if self.hash_skipped(i, pos, stop).is_err() {
                        // The copy reads the file again and reports the error itself.
                        self.hasher = None;
                    }
                }
                None => {
                    self.inner
                        .write_blocks(BlockIndex::new(pos / block), piece)?;
                    if let Some(h) = self.hasher.as_mut() {
                        h.update(piece);
                    }
                }
            }
            pos = stop;
        }
        self.next = self.next.max(end);
        if let Some(report) = self.progress {
            report(self.next.min(self.total), self.total);
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Error<Self::Error>> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn hashes_in_order_writes_and_gives_up_otherwise() {
        let size = BlockSize::new(512).unwrap();
        let seen = Mutex::new(Vec::new());
        let report = |done, total| seen.lock().unwrap().push((done, total));
        let mut dev = TrackedDevice::new(
            hadris_storage::MemDevice::new(vec![0u8; 2048], size),
            2048,
            Some(&report),
            true,
        );
        dev.write_blocks(BlockIndex::new(0), &[1u8; 1024]).unwrap();
        dev.write_blocks(BlockIndex::new(2), &[2u8; 1024]).unwrap();
        let mut expected = Sha256::new();
        expected.update([1u8; 1024]);
        expected.update([2u8; 1024]);
        assert_eq!(dev.finish(), Some(hex::encode(expected.finalize())));
        assert_eq!(*seen.lock().unwrap(), vec![(1024, 2048), (2048, 2048)]);

        let mut dev = TrackedDevice::new(
            hadris_storage::MemDevice::new(vec![0u8; 2048], size),
            2048,
            None,
            true,
        );
        dev.write_blocks(BlockIndex::new(2), &[2u8; 1024]).unwrap();
        dev.write_blocks(BlockIndex::new(0), &[1u8; 1024]).unwrap();
        assert_eq!(dev.finish(), None);
    }
}
