//! `ImageCache`: fetch an image once, verify it, and hard-link it wherever nodes need it.
//!
//! The cache owns its directory exclusively (it refuses one that is, contains or lies inside a
//! served root: eviction must never reach boot loaders or node files). Every download goes to a
//! temporary file inside that directory, is fsynced and verified, and only then renamed to its
//! master name, so a crash leaves either no entry or a complete, verified one.
//!
//! - [`pins`]: what keeps a master out of eviction while requests hold it;
//! - [`download`]: a leader's download: fetch, write, verify, commit (single flight in `flight`);
//! - [`writer`]: the blocking writer thread that hashes while it writes;
//! - [`clean`]: eviction under the linking lock.

mod clean;
mod download;
mod pins;
mod writer;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::{RwLock, Semaphore};

use super::checksum::{Algo, ChecksumSpec, Expected, find_in_checksum_file};
use super::evict::{Clock, SystemClock};
use super::flight::Flights;
use super::format::ImageFormat;
use super::master::{self, MasterMeta};
use super::metrics::CacheMetrics;
use super::settings::CacheSettings;
use super::source::{BasicAuth, Fetcher, Source};
use crate::fsutil::{self};
use crate::images::error::{ImageError, IoContext, Result};
use crate::metrics::Registry;

use pins::{Pin, lock};

/// What a request is for: instance images are inspected (and maybe converted); boot files
/// (deploy kernel and ramdisk, boot ISOs) are taken as they are, as Ironic's TFTP and ISO
/// caches do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImageKind {
    #[default]
    Instance,
    BootFile,
}

/// Reports bytes received so far and the total when known.
pub type Progress = Arc<dyn Fn(u64, Option<u64>) + Send + Sync>;

#[derive(Clone, Default)]
pub struct ImageRequest {
    pub href: String,
    /// `image_checksum`: `algo:value`, a bare value, or a URL of a checksums file.
    pub checksum: Option<String>,
    pub os_hash_algo: Option<String>,
    pub os_hash_value: Option<String>,
    /// `disk_format` the image must have (detected before any conversion).
    pub expected_format: Option<ImageFormat>,
    pub kind: ImageKind,
    /// Overrides the configured credentials of the image server.
    pub auth: Option<BasicAuth>,
    /// Called while this request's download runs (not when it joins another's).
    pub progress: Option<Progress>,
}

impl ImageRequest {
    pub fn new(href: impl Into<String>) -> Self {
        Self {
            href: href.into(),
            ..Self::default()
        }
    }
}

impl std::fmt::Debug for ImageRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageRequest")
            .field("href", &self.href)
            .field("checksum", &self.checksum)
            .field("os_hash_algo", &self.os_hash_algo)
            .field("os_hash_value", &self.os_hash_value)
            .field("expected_format", &self.expected_format)
            .field("kind", &self.kind)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

/// A verified image in the cache. While any clone of it lives, eviction leaves it alone.
#[derive(Debug, Clone)]
pub struct CachedImage {
    pub path: PathBuf,
    pub href: String,
    pub size: u64,
    /// `None` for boot files, which are not inspected.
    pub format: Option<ImageFormat>,
    /// Hex digests computed over the file as cached (sha256 always).
    pub digests: BTreeMap<Algo, String>,
    /// Converted to raw; the digests are those of the converted file.
    pub converted: bool,
    /// True when this request downloaded it.
    pub downloaded: bool,
    _pin: Arc<Pin>,
}

impl CachedImage {
    pub fn sha256(&self) -> &str {
        self.digests.get(&Algo::Sha256).map_or("", String::as_str)
    }
}

/// What the conductor puts into `instance_info` for an agent that downloads from ironboot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentImage {
    pub path: PathBuf,
    /// Relative to the HTTP root: `agent_images/<node uuid>`.
    pub url_path: String,
    pub disk_format: Option<ImageFormat>,
    pub os_hash_algo: Algo,
    pub os_hash_value: String,
}

/// What one clean-up removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CleanReport {
    pub removed: Vec<String>,
    pub freed_bytes: u64,
    pub remaining_bytes: u64,
}

/// One line of `ironboot image list`.
#[derive(Debug, Clone)]
pub struct ListedImage {
    pub name: String,
    pub meta: Option<MasterMeta>,
    pub disk_bytes: u64,
    pub links: u64,
    pub last_used: SystemTime,
}

#[derive(Clone, Debug)]
pub struct ImageCache {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    settings: CacheSettings,
    permitted: Vec<ImageFormat>,
    fetcher: Fetcher,
    flights: Arc<Flights<CachedImage>>,
    downloads: Semaphore,
    /// Linking (read) against eviction (write), Ironic's `master_image` lock.
    links: RwLock<()>,
    pins: Arc<Mutex<HashMap<String, usize>>>,
    metrics: CacheMetrics,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageCache")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// One leader's job: everything `load` needs, owned.
struct Job {
    href: String,
    src: Source,
    auth: Option<BasicAuth>,
    expected: Option<Expected>,
    expected_format: Option<ImageFormat>,
    kind: ImageKind,
    name: String,
    convert: bool,
    progress: Option<Progress>,
}

impl ImageCache {
    /// Opens (creating it if needed) the cache in `cache_dir`, which it then owns exclusively,
    /// and re-indexes it: leftovers of a crash are removed.
    pub fn open(
        settings: CacheSettings,
        cache_dir: &Path,
        served_roots: &[PathBuf],
        registry: &mut Registry,
    ) -> Result<Self> {
        Self::open_with_clock(
            settings,
            cache_dir,
            served_roots,
            CacheMetrics::register(registry),
            Arc::new(SystemClock),
        )
    }

    /// [`ImageCache::open`] with a clock of the caller's (tests) and metrics registered already.
    pub fn open_with_clock(
        settings: CacheSettings,
        cache_dir: &Path,
        served_roots: &[PathBuf],
        metrics: CacheMetrics,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        settings.validate()?;
        // Checked before anything is created: a refused directory must stay untouched.
        let wanted = resolve(cache_dir);
        for root in served_roots {
            let root_abs = resolve(root);
            if wanted.starts_with(&root_abs) || root_abs.starts_with(&wanted) {
                return Err(ImageError::SharedDirectory {
                    cache: wanted,
                    root: root_abs,
                });
            }
        }
        fsutil::ensure_dir(cache_dir).ctx("creating cache directory", cache_dir)?;
        let dir = cache_dir
            .canonicalize()
            .ctx("resolving cache directory", cache_dir)?;
        let report = master::reindex(&dir).ctx("re-indexing cache directory", &dir)?;
        if !report.removed.is_empty() {
            tracing::info!(dir = %dir.display(), removed = ?report.removed, "removed leftovers of an interrupted download");
        }
        if !report.foreign.is_empty() {
            tracing::warn!(dir = %dir.display(), files = ?report.foreign, "the image cache directory holds files it did not create; they are never evicted, but the directory should belong to the cache alone");
        }
        tracing::info!(dir = %dir.display(), masters = report.masters, "image cache opened");
        Ok(Self {
            inner: Arc::new(Inner {
                permitted: settings.permitted(),
                fetcher: Fetcher::new(&settings)?,
                downloads: Semaphore::new(settings.max_concurrent_downloads),
                settings,
                dir,
                flights: Arc::new(Flights::default()),
                links: RwLock::new(()),
                pins: Arc::new(Mutex::new(HashMap::new())),
                metrics,
                clock,
            }),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub fn metrics(&self) -> &CacheMetrics {
        &self.inner.metrics
    }

    /// Returns the image, from the cache when it is still valid, else downloaded (once, however
    /// many requests ask at the same time), verified, inspected and maybe converted.
    pub async fn fetch(&self, req: &ImageRequest) -> Result<CachedImage> {
        let inner = &self.inner;
        let src = Source::parse(&req.href)?;
        let expected = match ChecksumSpec::from_request(
            req.checksum.as_deref(),
            req.os_hash_algo.as_deref(),
            req.os_hash_value.as_deref(),
            inner.settings.allow_md5_checksum,
        )? {
            ChecksumSpec::None => None,
            ChecksumSpec::Value(e) => Some(e),
            ChecksumSpec::File(url) => {
                let text = inner.fetcher.fetch_text(&url).await?;
                let file_name = src.file_name().unwrap_or_default();
                Some(find_in_checksum_file(
                    &text,
                    &file_name,
                    &url,
                    inner.settings.allow_md5_checksum,
                )?)
            }
        };
        let convert = req.kind == ImageKind::Instance && inner.settings.force_raw_images;
        let name = master::master_name(&req.href, convert);
        let job = Job {
            href: req.href.clone(),
            src,
            auth: req.auth.clone(),
            expected: expected.clone(),
            expected_format: req.expected_format,
            kind: req.kind,
            name: name.clone(),
            convert,
            progress: req.progress.clone(),
        };
        let flight_inner = Arc::clone(inner);
        let (result, leader) = inner
            .flights
            .run(&name, move || flight_inner.load(job))
            .await;
        let mut image = result?;
        image.downloaded &= leader;
        if image.downloaded {
            inner.metrics.misses.inc();
        } else {
            inner.metrics.hits.inc();
        }
        // A request that joined another's flight still checks its own expectations.
        if !leader {
            if let Some(exp) = &expected {
                inner.verify_cached(&mut image, exp).await?;
            }
            if let (Some(want), Some(found)) = (req.expected_format, image.format)
                && !image.converted
                && !found.satisfies(want)
            {
                return Err(ImageError::FormatMismatch {
                    href: req.href.clone(),
                    found: found.to_string(),
                    expected: want.to_string(),
                });
            }
        }
        Ok(image)
    }

    /// Hard-links the image to `dest` (creating its directory), or copies it when `dest` is on
    /// another filesystem (with a warning: that doubles the disk space used). Returns `true`
    /// when it copied.
    pub async fn place(&self, image: &CachedImage, dest: &Path) -> Result<bool> {
        let _linking = self.inner.links.read().await;
        let (src, dest_owned) = (image.path.clone(), dest.to_path_buf());
        let copied = blocking(move || {
            if let Some(parent) = dest_owned.parent() {
                fsutil::ensure_dir(parent).ctx("creating directory", parent)?;
            }
            fsutil::link_or_copy_atomic(&src, &dest_owned).ctx("linking image to", &dest_owned)
        })
        .await?;
        if copied {
            tracing::warn!(master = %image.path.display(), dest = %dest.display(), "destination is on another filesystem than the image cache: copied instead of linking, which doubles disk use");
        }
        Ok(copied)
    }

    /// Serves an instance image to the agent: `<http_root>/agent_images/<node uuid>`, with the
    /// checksum the agent must verify (sha256 of the file as served).
    pub async fn place_agent_image(
        &self,
        image: &CachedImage,
        http_root: &Path,
        node_uuid: &uuid::Uuid,
    ) -> Result<AgentImage> {
        let url_path = format!("agent_images/{node_uuid}");
        let path = http_root.join(&url_path);
        self.place(image, &path).await?;
        Ok(AgentImage {
            path,
            url_path,
            disk_format: image
                .format
                .map(|f| if image.converted { ImageFormat::Raw } else { f }),
            os_hash_algo: Algo::Sha256,
            os_hash_value: image.sha256().to_string(),
        })
    }

    /// Removes a node's agent image link (the master stays until evicted).
    pub async fn remove_agent_image(&self, http_root: &Path, node_uuid: &uuid::Uuid) -> Result<()> {
        let path = http_root.join(format!("agent_images/{node_uuid}"));
        blocking(move || fsutil::remove_if_exists(&path).ctx("removing agent image", &path)).await
    }

    /// Evicts unused masters: TTL first, then oldest first down to the size cap, and, with
    /// `reclaim`, until that many bytes are freed. For the periodic task and `image clean`.
    pub async fn clean_up(&self, reclaim: Option<u64>) -> Result<CleanReport> {
        self.inner.clean_up(reclaim).await
    }

    /// Every master in the cache with its metadata, oldest use first.
    pub async fn list(&self) -> Result<Vec<ListedImage>> {
        let dir = self.inner.dir.clone();
        let pinned = HashSet::new();
        blocking(move || {
            let mut out: Vec<ListedImage> = master::scan(&dir, &pinned)
                .ctx("listing", &dir)?
                .into_iter()
                .map(|c| ListedImage {
                    meta: master::read_meta(&dir, &c.name),
                    name: c.name,
                    disk_bytes: c.disk_bytes,
                    links: c.links,
                    last_used: c.last_used,
                })
                .collect();
            out.sort_by_key(|l| l.last_used);
            Ok(out)
        })
        .await
    }
}

/// Runs blocking filesystem work off the async runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(ImageError::io(
            "running blocking task",
            PathBuf::new(),
            std::io::Error::other(e),
        ))
    })
}

/// The canonical form of a path that may not exist yet (its deepest existing ancestor
/// canonicalized, the rest appended).
fn resolve(path: &Path) -> PathBuf {
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    loop {
        if let Ok(c) = existing.canonicalize() {
            return rest.into_iter().rev().fold(c, |p, part| p.join(part));
        }
        match (
            existing.file_name().map(ToOwned::to_owned),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return path.to_path_buf(),
        }
    }
}

struct ScopeGuard<F: FnMut()>(F);

impl<F: FnMut()> Drop for ScopeGuard<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

fn scopeguard<F: FnMut()>(f: F) -> ScopeGuard<F> {
    ScopeGuard(f)
}
