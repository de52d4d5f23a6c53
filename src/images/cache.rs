//! `ImageCache`: fetch an image once, verify it, and hard-link it wherever nodes need it.
//!
//! The cache owns its directory exclusively (it refuses one that is, contains or lies inside a
//! served root: eviction must never reach boot loaders or node files). Every download goes to a
//! temporary file inside that directory, is fsynced and verified, and only then renamed to its
//! master name, so a crash leaves either no entry or a complete, verified one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::{RwLock, Semaphore, mpsc};

use super::checksum::{
    Algo, ChecksumSpec, Expected, MultiHasher, find_in_checksum_file, hash_file,
};
use super::error::{ImageError, IoContext, Result};
use super::evict::{self, Clock, SystemClock};
use super::flight::Flights;
use super::format::{self, ImageFormat};
use super::master::{self, MasterMeta};
use super::metrics::CacheMetrics;
use super::settings::CacheSettings;
use super::source::{BasicAuth, Body, Chunk, Fetcher, Opened, Source};
use crate::fsutil::{self, AtomicFile};
use crate::metrics::Registry;

/// Batches (of about 1 MiB) buffered between the network and the disk writer.
const WRITER_QUEUE: usize = 16;
/// Bytes written between two write-back kicks.
const WRITE_BEHIND: u64 = 32 * 1024 * 1024;

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

/// Keeps a master out of eviction while requests hold it.
#[derive(Debug)]
struct Pin {
    name: String,
    pins: Arc<Mutex<HashMap<String, usize>>>,
}

impl Pin {
    fn new(pins: &Arc<Mutex<HashMap<String, usize>>>, name: &str) -> Arc<Self> {
        *lock(pins).entry(name.to_string()).or_default() += 1;
        Arc::new(Self {
            name: name.to_string(),
            pins: Arc::clone(pins),
        })
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut pins = lock(&self.pins);
        if let Some(n) = pins.get_mut(&self.name) {
            *n -= 1;
            if *n == 0 {
                pins.remove(&self.name);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded maps stay valid if a holder panicked; keep going.
    m.lock().unwrap_or_else(|p| p.into_inner())
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

impl Inner {
    /// The leader's work for one image: a hit, or a download.
    async fn load(self: Arc<Self>, job: Job) -> Result<CachedImage> {
        let pin = Pin::new(&self.pins, &job.name);
        let existing = {
            let _linking = self.links.read().await;
            let (dir, name) = (self.dir.clone(), job.name.clone());
            blocking(move || {
                Ok(master::read_meta(&dir, &name).filter(|m| {
                    std::fs::metadata(dir.join(&name)).is_ok_and(|f| f.len() == m.size)
                }))
            })
            .await?
        };
        let since = existing.as_ref().map(MasterMeta::downloaded_at);
        let mut hit = existing
            .clone()
            .map(|meta| self.image_from(&job.name, meta, pin.clone(), false));
        if let (Some(image), Some(exp), Some(mut meta)) = (hit.as_mut(), &job.expected, existing) {
            match self.verify_cached(image, exp).await {
                Ok(()) if !meta.digests.contains_key(&exp.algo) => {
                    // Remember the digest computed for this algorithm; the next hit needs no
                    // pass over the file.
                    meta.digests = image.digests.clone();
                    let (dir, name) = (self.dir.clone(), job.name.clone());
                    let _linking = self.links.read().await;
                    blocking(move || {
                        master::write_meta(&dir, &name, &meta)
                            .ctx("updating metadata of", &dir.join(&name))
                    })
                    .await?;
                }
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(href = %job.href, error = %e, "cached master does not match the requested checksum; downloading again");
                    hit = None;
                }
            }
        }
        let since = since.filter(|_| hit.is_some());
        // Without a usable master this is a download: wait for a slot before asking the origin,
        // so that no response sits unread while other downloads run.
        let permit = match hit {
            None => Some(self.download_slot().await?),
            Some(_) => None,
        };
        let opened = self
            .fetcher
            .open(&job.href, &job.src, job.auth.as_ref(), since)
            .await?;
        let body = match (opened, hit) {
            (Opened::NotModified, Some(image)) => return Ok(image),
            (Opened::Body(body), Some(image))
                if !body.info.no_store
                    && body
                        .info
                        .last_modified
                        .zip(since)
                        .is_some_and(|(modified, fetched)| modified <= fetched) =>
            {
                // The origin ignored If-Modified-Since but says the image is older than ours.
                return Ok(image);
            }
            (Opened::Body(body), _) => body,
            (Opened::NotModified, None) => {
                unreachable!("NotModified only answers a request sent with a date")
            }
        };
        drop(pin);
        let _permit = match permit {
            Some(p) => p,
            None => self.download_slot().await?,
        };
        self.download(job, *body).await
    }

    async fn download_slot(&self) -> Result<tokio::sync::SemaphorePermit<'_>> {
        // The semaphore is never closed; the error arm only satisfies the type.
        self.downloads
            .acquire()
            .await
            .map_err(|_| ImageError::Settings("download semaphore closed".into()))
    }

    async fn download(self: &Arc<Self>, job: Job, body: Body) -> Result<CachedImage> {
        self.metrics.downloads_in_flight.inc();
        let _in_flight = scopeguard(|| {
            self.metrics.downloads_in_flight.dec();
        });
        let info = body.info.clone();
        if let Some(size) = info.size {
            self.ensure_space(size, &job.href).await?;
        }
        let name = if info.no_store {
            master::no_store_name(&job.name).ctx("naming", &self.dir)?
        } else {
            job.name.clone()
        };
        let pin = Pin::new(&self.pins, &name);
        let dest = self.dir.join(&name);
        let started = std::time::Instant::now();
        // The origin's answer dates from now: a change made during the download is newer.
        let fetched_at = chrono::Utc::now();
        tracing::info!(href = %job.href, size = ?info.size, "downloading image");

        let (tx, rx) = mpsc::channel(WRITER_QUEUE);
        let writer = {
            let dest = dest.clone();
            let extra = job.expected.as_ref().map(|e| e.algo);
            tokio::task::spawn_blocking(move || write_stream(&dest, rx, extra))
        };
        let progress = job.progress.clone();
        let total = info.size;
        let report = move |done: u64| {
            if let Some(p) = &progress {
                p(done, total);
            }
        };
        let streamed = self
            .fetcher
            .stream(&job.href, &job.src, job.auth.as_ref(), body, &tx, &report)
            .await;
        drop(tx);
        let written = writer
            .await
            .map_err(|e| ImageError::io("writing", &dest, std::io::Error::other(e)))?;
        // A writer failure comes first: it is why the stream stopped ("writer stopped").
        let (mut file, mut digests, len) = match (written, streamed) {
            (Err((e, written)), _) if e.raw_os_error() == Some(libc::ENOSPC) => {
                return Err(ImageError::DiskFull {
                    dir: self.dir.clone(),
                    href: job.href.clone(),
                    needed: info.size.unwrap_or(written),
                    free: evict::free_bytes(&self.dir).unwrap_or_default(),
                });
            }
            (Err((e, _)), _) => return Err(ImageError::io("writing", &dest, e)),
            (Ok(_), Err(e)) => return Err(e),
            (Ok(w), Ok(_)) => (w.file, w.digests, w.len),
        };
        self.metrics.downloaded_bytes.inc_by(len);
        if let Some(exp) = &job.expected {
            let actual = digests.get(&exp.algo).cloned().unwrap_or_default();
            if actual != exp.hex {
                // `file` drops here, which removes the download.
                return Err(ImageError::ChecksumMismatch {
                    href: job.href.clone(),
                    algo: exp.algo.to_string(),
                    expected: exp.hex.clone(),
                    actual,
                });
            }
        }

        let mut format = None;
        let mut source_format = None;
        let mut size = len;
        if job.kind == ImageKind::Instance {
            let tmp = file.temp_path().to_path_buf();
            let inspection =
                blocking(move || format::inspect_file(&tmp).ctx("inspecting", &tmp)).await?;
            self.check_format(&job, &inspection)?;
            let mut found = inspection.format;
            if job.convert && found.needs_conversion() {
                self.ensure_space(inspection.virtual_size.unwrap_or(len), &job.href)
                    .await?;
                let raw = AtomicFile::create(&dest).ctx("creating", &dest)?;
                format::convert_to_raw(
                    &self.settings.qemu_img,
                    found,
                    file.temp_path(),
                    raw.temp_path(),
                )
                .await
                .map_err(|reason| ImageError::Convert {
                    href: job.href.clone(),
                    reason,
                })?;
                drop(file);
                file = raw;
                let tmp = file.temp_path().to_path_buf();
                let (after, hashed, raw_len) = blocking(move || {
                    let inspection = format::inspect_file(&tmp).ctx("inspecting", &tmp)?;
                    let digests = hash_file(&tmp, None).ctx("hashing", &tmp)?;
                    let len = std::fs::metadata(&tmp).ctx("reading", &tmp)?.len();
                    Ok((inspection, digests, len))
                })
                .await?;
                if !after.format.satisfies(ImageFormat::Raw) {
                    return Err(ImageError::Convert {
                        href: job.href.clone(),
                        reason: format!("the result is {}, not raw", after.format),
                    });
                }
                source_format = Some(found);
                found = after.format;
                digests = hashed;
                size = raw_len;
            }
            format = Some(found);
        }

        let meta = MasterMeta {
            href: job.href.clone(),
            size,
            format,
            source_format,
            digests,
            downloaded_at: fetched_at,
            last_modified: info.last_modified.map(Into::into),
        };
        {
            let _linking = self.links.read().await;
            let (dir, name, meta, no_store) =
                (self.dir.clone(), name.clone(), meta.clone(), info.no_store);
            blocking(move || {
                if !no_store {
                    // The old master (if stale) goes before its metadata is replaced, so that a
                    // crash never pairs new metadata with old content.
                    master::remove(&dir, &name).ctx("replacing", &dir.join(&name))?;
                    master::write_meta(&dir, &name, &meta)
                        .ctx("writing metadata for", &dir.join(&name))?;
                }
                file.commit().ctx("committing", &dir.join(&name))
            })
            .await?;
        }
        tracing::info!(href = %job.href, master = %dest.display(), bytes = len, secs = started.elapsed().as_secs_f64(), converted = source_format.is_some(), "image cached");
        let image = self.image_from(&name, meta, pin, true);
        if !info.no_store
            && let Err(e) = self.clean_up(None).await
        {
            tracing::warn!(error = %e, "cache clean-up after a download failed");
        }
        Ok(image)
    }

    fn image_from(
        &self,
        name: &str,
        meta: MasterMeta,
        pin: Arc<Pin>,
        downloaded: bool,
    ) -> CachedImage {
        CachedImage {
            path: self.dir.join(name),
            converted: meta.converted(),
            href: meta.href,
            size: meta.size,
            format: meta.format,
            digests: meta.digests,
            downloaded,
            _pin: pin,
        }
    }

    fn check_format(&self, job: &Job, inspection: &format::Inspection) -> Result<()> {
        let found = inspection.format;
        if let Some(reason) = &inspection.unsafe_reason {
            return Err(ImageError::UnsafeImage {
                href: job.href.clone(),
                reason: reason.clone(),
            });
        }
        if !self.permitted.contains(&found) {
            return Err(ImageError::FormatNotPermitted {
                href: job.href.clone(),
                found: found.to_string(),
                permitted: self.settings.permitted_image_formats.join(","),
            });
        }
        if let Some(want) = job.expected_format
            && !found.satisfies(want)
        {
            return Err(ImageError::FormatMismatch {
                href: job.href.clone(),
                found: found.to_string(),
                expected: want.to_string(),
            });
        }
        Ok(())
    }

    /// Checks a cached image against a checksum, hashing the file when the digest for that
    /// algorithm was not computed at download time.
    async fn verify_cached(&self, image: &mut CachedImage, exp: &Expected) -> Result<()> {
        let actual = match image.digests.get(&exp.algo) {
            Some(d) => d.clone(),
            None => {
                let path = image.path.clone();
                let algo = exp.algo;
                let d =
                    blocking(move || hash_file(&path, Some(algo)).ctx("hashing", &path)).await?;
                let actual = d.get(&exp.algo).cloned().unwrap_or_default();
                image.digests.insert(exp.algo, actual.clone());
                actual
            }
        };
        if actual == exp.hex {
            Ok(())
        } else {
            Err(ImageError::ChecksumMismatch {
                href: image.href.clone(),
                algo: exp.algo.to_string(),
                expected: exp.hex.clone(),
                actual,
            })
        }
    }

    /// Makes room for `needed` bytes, evicting if the filesystem is short of space.
    async fn ensure_space(&self, needed: u64, href: &str) -> Result<()> {
        let free = evict::free_bytes(&self.dir).ctx("measuring free space in", &self.dir)?;
        if needed <= free {
            return Ok(());
        }
        self.clean_up(Some(needed - free)).await?;
        let free = evict::free_bytes(&self.dir).ctx("measuring free space in", &self.dir)?;
        if needed > free {
            return Err(ImageError::DiskFull {
                dir: self.dir.clone(),
                href: href.to_string(),
                needed,
                free,
            });
        }
        Ok(())
    }

    async fn clean_up(&self, reclaim: Option<u64>) -> Result<CleanReport> {
        let _evicting = self.links.write().await;
        let pinned: HashSet<String> = lock(&self.pins).keys().cloned().collect();
        let (dir, now) = (self.dir.clone(), self.clock.now());
        let (ttl, cap) = (self.settings.ttl(), self.settings.size_cap_bytes());
        let report = blocking(move || {
            let entries = master::scan(&dir, &pinned).ctx("scanning", &dir)?;
            let mut report = CleanReport {
                remaining_bytes: entries.iter().map(|e| e.disk_bytes).sum(),
                ..CleanReport::default()
            };
            for i in evict::plan(&entries, now, ttl, cap, reclaim) {
                let e = &entries[i];
                // Re-check: a link made by another process since the scan keeps it.
                match std::fs::symlink_metadata(&e.path) {
                    Ok(m) if std::os::unix::fs::MetadataExt::nlink(&m) == 1 => {}
                    _ => continue,
                }
                master::remove(&dir, &e.name).ctx("evicting", &e.path)?;
                report.removed.push(e.name.clone());
                report.freed_bytes += e.disk_bytes;
                report.remaining_bytes -= e.disk_bytes;
            }
            Ok(report)
        })
        .await?;
        if !report.removed.is_empty() {
            self.metrics.evictions.inc_by(report.removed.len() as u64);
            self.metrics.evicted_bytes.inc_by(report.freed_bytes);
            tracing::info!(removed = ?report.removed, freed = report.freed_bytes, "evicted unused images");
        }
        if let Some(r) = reclaim
            && report.freed_bytes < r
        {
            tracing::warn!(
                wanted = r,
                freed = report.freed_bytes,
                "could not reclaim the space asked for: the rest is in use"
            );
        }
        if report.remaining_bytes > cap {
            tracing::info!(
                remaining = report.remaining_bytes,
                cap,
                "image cache is above its size cap; what remains is in use"
            );
        }
        Ok(report)
    }
}

/// A download written to its temporary file, not yet committed.
struct Written {
    file: AtomicFile,
    digests: BTreeMap<Algo, String>,
    len: u64,
}

/// A write error and how many bytes had been received when it happened.
type WriteFailure = (std::io::Error, u64);

/// Writes the stream to a temporary file next to `dest`, hashing as it goes (blocking).
/// A failure comes with the number of bytes received so far.
fn write_stream(
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
fn start_writeback(file: &std::fs::File, offset: u64, len: u64) {
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
