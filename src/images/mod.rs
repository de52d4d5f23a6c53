//! The image cache: download once, verify, hard-link everywhere, evict safely.
//!
//! [`ImageCache`] owns one directory (`<data_dir>/cache`) exclusively and keeps one master file
//! per image source there. Callers get a [`CachedImage`] from [`ImageCache::fetch`] and place it
//! into node directories (TFTP/HTTP roots, `<http_root>/agent_images/<node uuid>`) with
//! [`ImageCache::place`]; the periodic task calls [`ImageCache::clean_up`].
//!
//! - `source`: http(s)/file fetchers, streaming, timeouts, retries, resume.
//! - `checksum`: which checksum a request asks for; hashing while streaming.
//! - `master`: master names, metadata, re-index at start.
//! - `flight`: one download per image however many ask.
//! - `evict`: what to evict, free space.
//! - `format`: format detection, qcow2 safety, conversion to raw.
//! - `cli`: `ironboot image fetch|list|clean`.

mod cache;
pub mod checksum;
pub mod cli;
mod error;
pub mod evict;
mod flight;
pub mod format;
pub mod master;
mod metrics;
mod settings;
pub mod source;

pub use cache::{
    AgentImage, CachedImage, CleanReport, ImageCache, ImageKind, ImageRequest, ListedImage,
    Progress,
};
pub use checksum::Algo;
pub use error::{ImageError, Result};
pub use evict::{Clock, SystemClock};
pub use format::ImageFormat;
pub use metrics::CacheMetrics;
pub use settings::{CacheSettings, ServerSettings};
pub use source::BasicAuth;
