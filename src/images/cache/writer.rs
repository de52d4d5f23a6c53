//! The writer thread: bytes from the network to a temporary file, hashed on the way by a
//! second thread, so that writing into the page cache and hashing (each about as costly as
//! the other) overlap instead of adding up. The pieces are shared (`Bytes`), not copied.

use std::collections::BTreeMap;
use std::io::{Seek, Write};
use std::path::Path;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::fsutil::AtomicFile;
use crate::images::checksum::{Algo, MultiHasher};
use crate::images::source::Chunk;

/// Batches (of about 1 MiB) buffered between the network and the disk writer.
pub(super) const WRITER_QUEUE: usize = 16;
/// Bytes written between two write-back kicks: small enough that the fsync before the
/// commit finds little left to write, large enough to cost few calls.
const WRITE_BEHIND: u64 = 8 * 1024 * 1024;

/// A download written to its temporary file, not yet committed.
pub(super) struct Written {
    pub(super) file: AtomicFile,
    pub(super) digests: BTreeMap<Algo, String>,
    pub(super) len: u64,
}

/// A write error and how many bytes had been received when it happened.
pub(super) type WriteFailure = (std::io::Error, u64);

/// What the hashing thread is sent.
enum ToHasher {
    Data(Vec<Bytes>),
    /// Start over (the download restarted).
    Reset,
}

/// Writes the stream to a temporary file next to `dest`, hashing as it goes (blocking).
/// A failure comes with the number of bytes received so far.
pub(super) fn write_stream(
    dest: &Path,
    rx: mpsc::Receiver<Chunk>,
    extra: Option<Algo>,
) -> std::result::Result<Written, WriteFailure> {
    let mut file = AtomicFile::create(dest).map_err(|e| (e, 0))?;
    let (to_hasher, hasher_rx) = std::sync::mpsc::sync_channel(WRITER_QUEUE);
    let hasher = std::thread::Builder::new()
        .name("image-hash".into())
        .spawn(move || hash_stream(&hasher_rx, extra))
        .map_err(|e| (e, 0))?;
    let written = write_chunks(&mut file, rx, &to_hasher);
    // The hasher ends when its channel closes; it never fails, so joining only waits.
    drop(to_hasher);
    let digests = hasher
        .join()
        .map_err(|_| (std::io::Error::other("the hashing thread panicked"), 0))?;
    let len = written?;
    Ok(Written { file, digests, len })
}

/// The writing half of [`write_stream`]: returns the length written.
fn write_chunks(
    file: &mut AtomicFile,
    mut rx: mpsc::Receiver<Chunk>,
    to_hasher: &std::sync::mpsc::SyncSender<ToHasher>,
) -> std::result::Result<u64, WriteFailure> {
    let hasher_gone = |len| (std::io::Error::other("the hashing thread stopped"), len);
    let mut len = 0u64;
    let mut flushed = 0u64;
    while let Some(chunk) = rx.blocking_recv() {
        match chunk {
            Chunk::Data(pieces) => {
                // Hashed while written: the pieces are reference-counted, not copied.
                to_hasher
                    .send(ToHasher::Data(pieces.clone()))
                    .map_err(|_| hasher_gone(len))?;
                for data in pieces {
                    len += data.len() as u64;
                    file.file().write_all(&data).map_err(|e| (e, len))?;
                }
                if len - flushed >= WRITE_BEHIND {
                    crate::fsutil::start_writeback(file.file(), flushed, len - flushed);
                    flushed = len;
                }
            }
            Chunk::Restart => {
                let f = file.file();
                f.set_len(0)
                    .and_then(|()| f.rewind())
                    .map_err(|e| (e, len))?;
                to_hasher
                    .send(ToHasher::Reset)
                    .map_err(|_| hasher_gone(len))?;
                len = 0;
                flushed = 0;
            }
        }
    }
    Ok(len)
}

/// The hashing thread: digests of everything sent since the last reset.
fn hash_stream(
    rx: &std::sync::mpsc::Receiver<ToHasher>,
    extra: Option<Algo>,
) -> BTreeMap<Algo, String> {
    let mut hasher = MultiHasher::new(extra);
    while let Ok(msg) = rx.recv() {
        match msg {
            ToHasher::Data(pieces) => pieces.iter().for_each(|p| hasher.update(p)),
            ToHasher::Reset => hasher = MultiHasher::new(extra),
        }
    }
    hasher.finish()
}
