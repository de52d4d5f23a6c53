//! A leader's download: a hit, or fetch, write, verify and commit.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::fsutil::AtomicFile;
use crate::images::checksum::{Expected, hash_file};
use crate::images::error::{ImageError, IoContext, Result};
use crate::images::evict;
use crate::images::format::{self, ImageFormat};
use crate::images::master::{self, MasterMeta};
use crate::images::source::{Body, Opened};

use super::writer::{WRITER_QUEUE, write_stream};
use super::*;

impl Inner {
    /// The leader's work for one image: a hit, or a download.
    pub(super) async fn load(self: Arc<Self>, job: Job) -> Result<CachedImage> {
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

    pub(super) async fn download_slot(&self) -> Result<tokio::sync::SemaphorePermit<'_>> {
        // The semaphore is never closed; the error arm only satisfies the type.
        self.downloads
            .acquire()
            .await
            .map_err(|_| ImageError::Settings("download semaphore closed".into()))
    }

    pub(super) async fn download(self: &Arc<Self>, job: Job, body: Body) -> Result<CachedImage> {
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

    pub(super) fn image_from(
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

    pub(super) fn check_format(&self, job: &Job, inspection: &format::Inspection) -> Result<()> {
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
    pub(super) async fn verify_cached(
        &self,
        image: &mut CachedImage,
        exp: &Expected,
    ) -> Result<()> {
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
    pub(super) async fn ensure_space(&self, needed: u64, href: &str) -> Result<()> {
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
}
