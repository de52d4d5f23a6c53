//! Errors of the publishers. Swift URLs in messages never carry a query, a token or a key.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("invalid vmedia settings: {0}")]
    Settings(String),

    #[error("invalid object name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },

    #[error("unknown publisher {0:?} (expected \"local\" or \"swift\")")]
    UnknownBackend(String),

    #[error("publisher \"swift\" requested but [vmedia.swift] is not configured")]
    SwiftNotConfigured,

    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("Swift authentication at {url} failed: {reason}")]
    Auth { url: String, reason: String },

    #[error("Swift {method} {url} answered {status}: {body}")]
    SwiftStatus {
        method: String,
        url: String,
        status: u16,
        body: String,
    },

    #[error("Swift {method} {url} failed: {}", crate::error_chain::chain(source))]
    SwiftTransport {
        method: String,
        url: String,
        /// Without its URL: the message names it (minus the temp-URL signature).
        #[source]
        source: reqwest::Error,
    },

    #[error("Swift PUT {url}: Swift stored ETag {etag} but the file's MD5 is {md5}")]
    ChecksumMismatch {
        url: String,
        etag: String,
        md5: String,
    },

    #[error(
        "upload of {name} to Swift container {container} failed after {attempts} attempt(s): {last}"
    )]
    UploadFailed {
        name: String,
        container: String,
        attempts: u32,
        last: Box<PublishError>,
    },

    #[error("{0}")]
    Internal(String),
}

impl PublishError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        PublishError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = PublishError> = std::result::Result<T, E>;
