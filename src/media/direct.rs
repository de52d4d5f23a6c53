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
pub(super) const SECTOR: u64 = 2048;

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
    /// Sparse, `len` bytes long; gone when the build ends.
    _placeholder: Placeholder,
}

/// The stand-in hadris reads (and [`super::tracked::TrackedDevice`] drops) for a payload:
/// a hole of the payload's length. In memory (`memfd_create`, named to hadris as
/// `/proc/self/fd/N`) where possible: reading a tmpfs hole copies the shared zero page,
/// where reading one on a disk filesystem such as ext4 allocates and zeroes page cache
/// (on the 2-core bench VM, 200 MiB took hadris 8–22 ms instead of 80–130 ms). A temporary
/// file otherwise.
enum Placeholder {
    Memory { _file: File, path: PathBuf },
    Temp(tempfile::NamedTempFile),
}

impl Placeholder {
    fn new(len: u64) -> io::Result<Self> {
        if let Some(p) = Self::in_memory(len) {
            return Ok(p);
        }
        let temp = tempfile::NamedTempFile::new()?;
        temp.as_file().set_len(len)?;
        Ok(Self::Temp(temp))
    }

    /// A sparse memfd of `len` bytes that can be opened by its `/proc` path; `None` when
    /// the kernel has no memfd or `/proc` is not mounted.
    fn in_memory(len: u64) -> Option<Self> {
        // SAFETY: the name is a NUL-terminated literal; the flags are valid.
        let fd =
            unsafe { libc::memfd_create(c"ironboot-iso-placeholder".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return None;
        }
        // SAFETY: memfd_create returned a new descriptor that nothing else owns.
        let file = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        file.set_len(len).ok()?;
        let path = PathBuf::from(format!("/proc/self/fd/{fd}"));
        // hadris opens the path again when it writes: make sure that works here.
        let again = File::open(&path).ok()?;
        (again.metadata().ok()?.len() == len).then_some(Self::Memory { _file: file, path })
    }

    fn path(&self) -> &Path {
        match self {
            Self::Memory { path, .. } => path,
            Self::Temp(temp) => temp.path(),
        }
    }
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
            return super::iso::host_file(what, src);
        }
        let placeholder = Placeholder::new(len).map_err(input)?;
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

/// Bytes copied between two write-back kicks: the disk starts on one piece while the next
/// is copied, so the build's final fsync has little left to write.
const WRITEBACK_EVERY: usize = 16 << 20;

fn copy_one(d: &Direct, out: &File) -> io::Result<()> {
    let mut done = 0u64;
    while done < d.len {
        let left = usize::try_from(d.len - done)
            .unwrap_or(usize::MAX)
            .min(WRITEBACK_EVERY);
        match copy_range(&d.src, done, out, d.start + done, left) {
            Ok(0) => return Err(io::Error::other(EndedEarly)),
            Ok(n) => {
                crate::fsutil::start_writeback(out, d.start + done, n as u64);
                done += n as u64;
            }
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
        crate::fsutil::start_writeback(out, d.start + done, n as u64);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn placeholders_are_holes_of_the_payload_length_in_memory() {
        let len = (5 << 20) + 123;
        let p = Placeholder::new(len).unwrap();
        // This kernel has memfd and /proc (the builds and benches run on Linux).
        assert!(matches!(p, Placeholder::Memory { .. }));
        let mut f = File::open(p.path()).unwrap();
        assert_eq!(f.metadata().unwrap().len(), len);
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).unwrap();
        assert_eq!(bytes.len() as u64, len);
        assert!(bytes.iter().all(|&b| b == 0));
        // Reading the hole allocated nothing: the memfd still holds no blocks.
        use std::os::unix::fs::MetadataExt;
        assert_eq!(f.metadata().unwrap().blocks(), 0);
    }
}
