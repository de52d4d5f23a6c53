//! The writer thread: bytes from the network to a temporary file, hashed on the way.

use std::collections::BTreeMap;
use std::io::{Seek, Write};
use std::path::Path;

use tokio::sync::mpsc;

use crate::fsutil::AtomicFile;
use crate::images::checksum::{Algo, MultiHasher};
use crate::images::source::Chunk;

/// Batches (of about 1 MiB) buffered between the network and the disk writer.
pub(super) const WRITER_QUEUE: usize = 16;
/// Bytes written between two write-back kicks.
const WRITE_BEHIND: u64 = 32 * 1024 * 1024;

/// A download written to its temporary file, not yet committed.
pub(super) struct Written {
    pub(super) file: AtomicFile,
    pub(super) digests: BTreeMap<Algo, String>,
    pub(super) len: u64,
}

/// A write error and how many bytes had been received when it happened.
pub(super) type WriteFailure = (std::io::Error, u64);

/// Writes the stream to a temporary file next to `dest`, hashing as it goes (blocking).
/// A failure comes with the number of bytes received so far.
pub(super) fn write_stream(
    dest: &Path,
    mut rx: mpsc::Receiver<Chunk>,
    extra: Option<Algo>,
) -> std::result::Result<Written, WriteFailure> {
    let mut file = AtomicFile::create(dest).map_err(|e| (e, 0))?;
    let mut hasher = MultiHasher::new(extra);
    let mut len = 0u64;
    let mut flushed = 0u64;
    while let Some(chunk) = rx.blocking_recv() {
        match chunk {
            Chunk::Data(pieces) => {
                for data in pieces {
                    len += data.len() as u64;
                    file.file().write_all(&data).map_err(|e| (e, len))?;
                    hasher.update(&data);
                }
                if len - flushed >= WRITE_BEHIND {
                    start_writeback(file.file(), flushed, len - flushed);
                    flushed = len;
                }
            }
            Chunk::Restart => {
                let f = file.file();
                f.set_len(0)
                    .and_then(|()| f.rewind())
                    .map_err(|e| (e, len))?;
                hasher = MultiHasher::new(extra);
                len = 0;
                flushed = 0;
            }
        }
    }
    Ok(Written {
        file,
        digests: hasher.finish(),
        len,
    })
}

/// Asks the kernel to start writing a range back now (without waiting), so that the fsync
/// before the commit has little left to do instead of the whole image.
pub(super) fn start_writeback(file: &std::fs::File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: the descriptor is open for the lifetime of `file`; the call only schedules I/O.
    // Failure is harmless (the final fsync writes everything), so its result is ignored.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}
