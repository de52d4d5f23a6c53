//! Large host files (kernel, ramdisk, big injected files) are copied onto an ISO by the
//! kernel with `copy_file_range(2)` (a reflink where the filesystem can share blocks, an
//! in-kernel copy elsewhere) instead of being read into and written from user space.
//!
//! hadris-iso lays out and writes the image as usual, except that each such file is given to
//! it as a sparse placeholder of the same length (reading a hole costs no disk and no page
//! cache) and [`super::tracked::TrackedDevice`] drops the writes that fall in the file's
//! extent, leaving a hole. Once hadris is done, the extent is filled from the host file.
//! Placement depends only on names and lengths, so the image is byte-for-byte the one
//! hadris writes alone; the extents are taken from the plan and checked against the report
//! of the write.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use hadris_fs::{Content, Report};

use super::{MediaError, output_error};

/// Host files at least this large are copied in the kernel.
pub(crate) const DIRECT_MIN: u64 = 1 << 20;
/// ISO 9660 sector: each file's extent is padded with zeros to a whole one.
const SECTOR: u64 = 2048;

/// The host files of one build that go through the kernel, and their placeholders.
pub(crate) struct Payloads {
    /// Files at least this large go through the kernel.
    min: u64,
    files: Vec<Payload>,
}

impl Default for Payloads {
    fn default() -> Self {
        Self::new(DIRECT_MIN)
    }
}

struct Payload {
    /// Path on the ISO, as given to the tree.
    iso_path: String,
    what: &'static str,
    src: PathBuf,
    len: u64,
    /// Sparse, `len` bytes long; removed when the build ends.
    _placeholder: tempfile::NamedTempFile,
}

/// One extent of the image to fill from a host file.
pub(crate) struct Direct {
    /// Byte offset of the extent in the image.
    pub(crate) start: u64,
    /// The file's length (the extent ends with zeros up to a whole sector).
    pub(crate) len: u64,
    pub(crate) src: File,
    what: &'static str,
    path: PathBuf,
}

impl Direct {
    /// End of the extent, padding included.
    pub(crate) fn end(&self) -> u64 {
        self.start + self.len.div_ceil(SECTOR) * SECTOR
    }
}

impl Payloads {
    pub(crate) fn new(min: u64) -> Self {
        Self {
            min,
            files: Vec::new(),
        }
    }

    /// The tree content for host file `src` at `iso_path`: a placeholder when the file is
    /// large enough to be copied in the kernel, else the file itself.
    pub(crate) fn content(
        &mut self,
        iso_path: &str,
        what: &'static str,
        src: &Path,
        len: u64,
    ) -> Result<Content, MediaError> {
        let input = |source| MediaError::Input {
            what,
            path: src.to_path_buf(),
            source,
        };
        if len < self.min {
            return hadris_fs::host::file(src).map_err(|e| input(io::Error::other(e.to_string())));
        }
        let placeholder = tempfile::NamedTempFile::new().map_err(input)?;
        placeholder.as_file().set_len(len).map_err(input)?;
        let content = hadris_fs::host::file(placeholder.path())
            .map_err(|e| input(io::Error::other(e.to_string())))?;
        self.files.push(Payload {
            iso_path: iso_path.trim_start_matches('/').to_owned(),
            what,
            src: src.to_path_buf(),
            len,
            _placeholder: placeholder,
        });
        Ok(content)
    }

    /// Opens each host file and finds its extent in the planned image, sorted by offset.
    pub(crate) fn extents(&self, plan: &Report, out: &Path) -> Result<Vec<Direct>, MediaError> {
        let mut found = Vec::with_capacity(self.files.len());
        for p in &self.files {
            let input = |source| MediaError::Input {
                what: p.what,
                path: p.src.clone(),
                source,
            };
            let src = File::open(&p.src).map_err(input)?;
            if src.metadata().map_err(input)?.len() != p.len {
                return Err(changed(out, &p.src));
            }
            let start = match plan.extents(&p.iso_path) {
                Some([one]) if one.len() == p.len => one.offset(),
                // Several extents (a file of 4 GiB or more) or none: hadris's own path is
                // the only one that knows; never guess.
                _ => {
                    return Err(input(io::Error::other(format!(
                        "no single extent planned for /{} on the ISO",
                        p.iso_path
                    ))));
                }
            };
            found.push(Direct {
                start,
                len: p.len,
                src,
                what: p.what,
                path: p.src.clone(),
            });
        }
        found.sort_by_key(|d| d.start);
        Ok(found)
    }

    /// Checks that the write put every file where the plan said.
    pub(crate) fn check_written(&self, plan: &Report, written: &Report) -> bool {
        self.files
            .iter()
            .all(|p| plan.extents(&p.iso_path) == written.extents(&p.iso_path))
    }
}

/// A host file whose length changed after it was measured: the error hadris-iso gives for
/// its own host content.
fn changed(out: &Path, src: &Path) -> MediaError {
    MediaError::Iso {
        path: out.to_path_buf(),
        source: Box::new(
            hadris_fs::PathError::new(
                hadris_fs::ErrorKind::Corrupt,
                "host file changed while the image was written",
            )
            .with_host_path(src),
        ),
    }
}

/// The source ended early.
#[derive(Debug, thiserror::Error)]
#[error("ended early")]
struct EndedEarly;

/// Fills each extent of `file` (the image being built at `out`) from its host file.
pub(crate) fn copy_all(directs: &[Direct], file: &File, out: &Path) -> Result<(), MediaError> {
    for d in directs {
        match copy_one(d, file) {
            Ok(()) => {}
            Err(e) if e.get_ref().is_some_and(|e| e.is::<EndedEarly>()) => {
                return Err(changed(out, &d.path));
            }
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG)
                ) =>
            {
                return Err(output_error(out, e));
            }
            Err(source) => {
                return Err(MediaError::Input {
                    what: d.what,
                    path: d.path.clone(),
                    source,
                });
            }
        }
        if d.src.metadata().map(|m| m.len()).ok() != Some(d.len) {
            return Err(changed(out, &d.path));
        }
    }
    Ok(())
}

fn copy_one(d: &Direct, out: &File) -> io::Result<()> {
    let mut done = 0u64;
    while done < d.len {
        let left = usize::try_from(d.len - done)
            .unwrap_or(usize::MAX)
            .min(1 << 30);
        match copy_range(&d.src, done, out, d.start + done, left) {
            Ok(0) => return Err(io::Error::other(EndedEarly)),
            Ok(n) => done += n as u64,
            Err(e) if in_kernel_unsupported(&e) => return copy_user(d, out, done),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn copy_range(src: &File, from: u64, dst: &File, to: u64, len: usize) -> io::Result<usize> {
    let bad = |_| io::Error::from(io::ErrorKind::InvalidInput);
    let mut from = libc::loff_t::try_from(from).map_err(bad)?;
    let mut to = libc::loff_t::try_from(to).map_err(bad)?;
    // SAFETY: both descriptors are open for the call; the offsets are valid, writable
    // loff_t values, so neither file's own offset is used or moved; flags must be 0.
    let n = unsafe {
        libc::copy_file_range(src.as_raw_fd(), &mut from, dst.as_raw_fd(), &mut to, len, 0)
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        // n >= 0 and at most `len`.
        Ok(n as usize)
    }
}

/// Errors that mean "not between these two files", not "failed".
fn in_kernel_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EXDEV | libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
    )
}

/// The user-space copy, for filesystems or kernels without `copy_file_range` between them.
fn copy_user(d: &Direct, out: &File, mut done: u64) -> io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    while done < d.len {
        let want = usize::try_from(d.len - done)
            .unwrap_or(buf.len())
            .min(buf.len());
        let n = d.src.read_at(&mut buf[..want], done)?;
        if n == 0 {
            return Err(io::Error::other(EndedEarly));
        }
        out.write_all_at(&buf[..n], d.start + done)?;
        done += n as u64;
    }
    Ok(())
}

/// Reads `buf.len()` bytes of the extent from `offset` within it (zeros past the file's end),
/// for hashing the image in order.
pub(crate) fn read_extent(d: &Direct, offset: u64, buf: &mut [u8]) -> io::Result<()> {
    let in_file = usize::try_from(d.len.saturating_sub(offset))
        .unwrap_or(usize::MAX)
        .min(buf.len());
    d.src.read_exact_at(&mut buf[..in_file], offset)?;
    buf[in_file..].fill(0);
    Ok(())
}
