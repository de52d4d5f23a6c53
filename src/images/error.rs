//! The image cache's one error type: every variant names what failed and with which input.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::fsutil::human_bytes;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid cache settings: {0}")]
    Settings(String),

    #[error(
        "cache directory {cache} overlaps served root {root}: the cache evicts files and must own its directory exclusively"
    )]
    SharedDirectory { cache: PathBuf, root: PathBuf },

    #[error("invalid image source {href:?}: {reason}")]
    InvalidSource { href: String, reason: String },

    #[error("invalid checksum {value:?}: {reason}")]
    InvalidChecksum { value: String, reason: String },

    #[error("checksum file {url} has no entry for {file_name:?}")]
    ChecksumFileEntry { url: String, file_name: String },

    #[error("checksum mismatch for {href}: expected {algo}:{expected}, got {algo}:{actual}")]
    ChecksumMismatch {
        href: String,
        algo: String,
        expected: String,
        actual: String,
    },

    #[error("{href} answered HTTP {status}")]
    HttpStatus { href: String, status: u16 },

    #[error("downloading {href} failed after {attempts} attempt(s): {reason}")]
    Download {
        href: String,
        attempts: u32,
        reason: String,
    },

    #[error("building the HTTP client for {what}: {reason}")]
    Client { what: String, reason: String },

    #[error(
        "not enough disk space in {} for {href}: needs at least {}, only {} free after eviction",
        dir.display(), human_bytes(*needed), human_bytes(*free)
    )]
    DiskFull {
        dir: PathBuf,
        href: String,
        needed: u64,
        free: u64,
    },

    #[error("image {href} is {found}, which is not in permitted_image_formats ({permitted})")]
    FormatNotPermitted {
        href: String,
        found: String,
        permitted: String,
    },

    #[error("image {href} is {found}, but {expected} was expected")]
    FormatMismatch {
        href: String,
        found: String,
        expected: String,
    },

    #[error("qcow2 image {href} refused: {reason}")]
    UnsafeImage { href: String, reason: String },

    #[error("converting {href} to raw failed: {reason}")]
    Convert { href: String, reason: String },

    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The same failure, handed to every request that joined one shared download.
    #[error("{0}")]
    Shared(Arc<ImageError>),
}

pub type Result<T, E = ImageError> = std::result::Result<T, E>;

impl ImageError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// The underlying error when this one was shared by a single-flight download.
    pub fn root(&self) -> &ImageError {
        match self {
            Self::Shared(inner) => inner.root(),
            other => other,
        }
    }
}

/// Adds a path and an action to `io::Error`s.
pub(crate) trait IoContext<T> {
    fn ctx(self, action: &'static str, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, action: &'static str, path: &std::path::Path) -> Result<T> {
        self.map_err(|e| ImageError::io(action, path, e))
    }
}
