//! Where images come from: `http://`, `https://`, `file://` URLs and plain paths.
//!
//! Downloads stream (never the whole image in memory) with connect and read timeouts, bounded
//! retries with doubling back-off, and redirects followed. A cut connection resumes with a
//! `Range` request guarded by `If-Range`, or starts over when the origin cannot resume. The
//! response's `Last-Modified` and `Cache-Control: no-store` drive the cache's staleness rules.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Once;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use reqwest::header::{self, HeaderMap};
use reqwest::{Client, StatusCode, Url};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use super::error::{ImageError, Result};
use super::settings::CacheSettings;

/// Longest back-off between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Checksum files larger than this are refused (they are a few KiB in practice).
const CHECKSUM_FILE_LIMIT: usize = 4 * 1024 * 1024;
const FILE_CHUNK: usize = 1 << 20;
/// Bytes collected before the writer is handed a batch.
const BATCH_BYTES: usize = 1 << 20;
const WRITER_STOPPED: &str = "the cache writer stopped";

/// An image location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Http(Url),
    File(PathBuf),
}

impl Source {
    pub fn parse(href: &str) -> Result<Self> {
        let invalid = |reason: String| ImageError::InvalidSource {
            href: href.to_string(),
            reason,
        };
        if href.starts_with('/') {
            return Ok(Source::File(PathBuf::from(href)));
        }
        let url = Url::parse(href).map_err(|e| invalid(e.to_string()))?;
        match url.scheme() {
            "http" | "https" => Ok(Source::Http(url)),
            "file" => url
                .to_file_path()
                .map(Source::File)
                .map_err(|()| invalid("not a local absolute file path".into())),
            other => Err(invalid(format!(
                "unsupported scheme {other:?} (use http, https, file or an absolute path)"
            ))),
        }
    }

    /// The last path segment: what a checksums file lists.
    pub fn file_name(&self) -> Option<String> {
        match self {
            Source::Http(url) => url
                .path_segments()
                .and_then(|mut s| s.next_back())
                .filter(|s| !s.is_empty())
                .map(String::from),
            Source::File(p) => p.file_name().map(|n| n.to_string_lossy().into_owned()),
        }
    }
}

/// Basic auth for one image server.
#[derive(Clone, PartialEq, Eq)]
pub struct BasicAuth {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BasicAuth({}, ******)", self.username)
    }
}

/// What the origin said about the image.
#[derive(Debug, Clone, Default)]
pub struct ResponseInfo {
    /// Total length of the image, when known.
    pub size: Option<u64>,
    pub last_modified: Option<SystemTime>,
    /// `Cache-Control: no-store`: use once, keep no master.
    pub no_store: bool,
    /// Where redirects ended.
    pub final_href: String,
    /// `ETag` or `Last-Modified` as sent, for `If-Range` on resume.
    validator: Option<String>,
}

/// One piece of the byte stream handed to the writer.
#[derive(Debug)]
pub enum Chunk {
    /// Consecutive pieces of the image, batched so the writer wakes up once per ~1 MiB.
    Data(Vec<Bytes>),
    /// The origin could not resume: discard what was written and start over.
    Restart,
}

/// An opened image: either unchanged since the given time, or a body to stream.
pub enum Opened {
    NotModified,
    Body(Box<Body>),
}

pub struct Body {
    pub info: ResponseInfo,
    inner: BodyInner,
}

enum BodyInner {
    Http(reqwest::Response),
    File(tokio::fs::File),
}

/// Why an attempt failed: retried, or final.
enum Failure {
    Transient(String),
    Final(ImageError),
}

pub struct Fetcher {
    default: Client,
    per_server: HashMap<String, (Client, Option<BasicAuth>)>,
    retries: u32,
    backoff: Duration,
}

/// reqwest is built without a default crypto provider; ring is this crate's choice.
fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // An error means another provider was installed first, which is fine too.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

impl Fetcher {
    pub fn new(settings: &CacheSettings) -> Result<Self> {
        install_crypto_provider();
        let builder = || {
            Client::builder()
                .connect_timeout(Duration::from_secs(settings.connect_timeout_secs))
                .read_timeout(Duration::from_secs(settings.read_timeout_secs))
                .redirect(reqwest::redirect::Policy::limited(10))
                .user_agent(concat!("ironboot/", env!("CARGO_PKG_VERSION")))
        };
        let client_err = |what: &str, e: &dyn fmt::Display| ImageError::Client {
            what: what.to_string(),
            reason: e.to_string(),
        };
        let default = builder()
            .build()
            .map_err(|e| client_err("image downloads", &e))?;
        let mut per_server = HashMap::new();
        for (host, server) in &settings.servers {
            let client = match &server.ca_bundle {
                Some(path) => {
                    let pem = std::fs::read(path)
                        .map_err(|e| ImageError::io("reading CA bundle", path, e))?;
                    let certs = reqwest::Certificate::from_pem_bundle(&pem)
                        .map_err(|e| client_err(&format!("{host} ({})", path.display()), &e))?;
                    builder()
                        .tls_certs_only(certs)
                        .build()
                        .map_err(|e| client_err(host, &e))?
                }
                None => default.clone(),
            };
            let auth = match (&server.username, &server.password) {
                (Some(u), Some(p)) => Some(BasicAuth {
                    username: u.clone(),
                    password: p.clone(),
                }),
                _ => None,
            };
            per_server.insert(host.to_ascii_lowercase(), (client, auth));
        }
        Ok(Self {
            default,
            per_server,
            retries: settings.download_retries,
            backoff: Duration::from_millis(settings.retry_backoff_ms),
        })
    }

    fn client_for(&self, url: &Url, auth: Option<&BasicAuth>) -> (&Client, Option<BasicAuth>) {
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        let with_port = url.port().map(|p| format!("{host}:{p}"));
        let server = with_port
            .and_then(|k| self.per_server.get(&k))
            .or_else(|| self.per_server.get(&host));
        match server {
            Some((client, server_auth)) => (client, auth.cloned().or_else(|| server_auth.clone())),
            None => (&self.default, auth.cloned()),
        }
    }

    fn backoff_for(&self, attempt: u32) -> Duration {
        self.backoff
            .saturating_mul(1u32 << attempt.min(16))
            .min(MAX_BACKOFF)
    }

    /// Opens `src`. With `unchanged_since`, an origin that says the image has not changed since
    /// then yields [`Opened::NotModified`]. Retries transient failures.
    pub async fn open(
        &self,
        href: &str,
        src: &Source,
        auth: Option<&BasicAuth>,
        unchanged_since: Option<SystemTime>,
    ) -> Result<Opened> {
        let mut attempt = 0;
        loop {
            let outcome = match src {
                Source::Http(url) => self.open_http(url, auth, unchanged_since, None).await,
                Source::File(path) => open_file(href, path, unchanged_since).await,
            };
            match outcome {
                Ok(opened) => return Ok(opened),
                Err(Failure::Final(e)) => return Err(e),
                Err(Failure::Transient(reason)) if attempt >= self.retries => {
                    return Err(ImageError::Download {
                        href: href.to_string(),
                        attempts: attempt + 1,
                        reason,
                    });
                }
                Err(Failure::Transient(reason)) => {
                    let wait = self.backoff_for(attempt);
                    tracing::warn!(%href, attempt = attempt + 1, %reason, ?wait, "image download failed, retrying");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            }
        }
    }

    async fn open_http(
        &self,
        url: &Url,
        auth: Option<&BasicAuth>,
        unchanged_since: Option<SystemTime>,
        resume: Option<(u64, &str)>,
    ) -> std::result::Result<Opened, Failure> {
        let (client, auth) = self.client_for(url, auth);
        let mut req = client.get(url.clone());
        if let Some(a) = &auth {
            req = req.basic_auth(&a.username, Some(&a.password));
        }
        if let Some(t) = unchanged_since {
            req = req.header(header::IF_MODIFIED_SINCE, http_date(t));
        }
        if let Some((offset, validator)) = resume {
            req = req
                .header(header::RANGE, format!("bytes={offset}-"))
                .header(header::IF_RANGE, validator);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| Failure::Transient(describe(&e)))?;
        let status = resp.status();
        if status == StatusCode::NOT_MODIFIED && unchanged_since.is_some() {
            return Ok(Opened::NotModified);
        }
        if !(status == StatusCode::OK || status == StatusCode::PARTIAL_CONTENT && resume.is_some())
        {
            let e = ImageError::HttpStatus {
                href: url.to_string(),
                status: status.as_u16(),
            };
            return Err(
                if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                    Failure::Transient(e.to_string())
                } else {
                    Failure::Final(e)
                },
            );
        }
        let info = response_info(&resp);
        Ok(Opened::Body(Box::new(Body {
            info,
            inner: BodyInner::Http(resp),
        })))
    }

    /// Streams `body` into `tx`, resuming (or restarting) after a cut connection. Returns the
    /// number of bytes of the image.
    pub async fn stream(
        &self,
        href: &str,
        src: &Source,
        auth: Option<&BasicAuth>,
        body: Body,
        tx: &mpsc::Sender<Chunk>,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<u64> {
        let mut info = body.info.clone();
        let mut body = Some(body);
        let mut written = 0u64;
        let mut batch = Vec::new();
        let mut batched = 0usize;
        let mut attempt = 0;
        let mut failure;
        let failed = |attempts, reason| ImageError::Download {
            href: href.to_string(),
            attempts,
            reason,
        };
        loop {
            match body.as_mut() {
                Some(b) => match next_chunk(&mut b.inner).await {
                    Ok(Some(data)) => {
                        written += data.len() as u64;
                        batched += data.len();
                        batch.push(data);
                        if batched >= BATCH_BYTES {
                            send(tx, &mut batch, &mut batched)
                                .await
                                .map_err(|()| failed(attempt + 1, WRITER_STOPPED.into()))?;
                            progress(written);
                        }
                        continue;
                    }
                    Ok(None) => match info.size {
                        Some(size) if size != written => {
                            failure = format!("connection closed after {written} of {size} bytes");
                        }
                        _ => {
                            send(tx, &mut batch, &mut batched)
                                .await
                                .map_err(|()| failed(attempt + 1, WRITER_STOPPED.into()))?;
                            progress(written);
                            return Ok(written);
                        }
                    },
                    Err(reason) => failure = reason,
                },
                None => failure = "reopening failed".into(),
            }
            // What arrived before the failure is good: resuming continues after it.
            send(tx, &mut batch, &mut batched)
                .await
                .map_err(|()| failed(attempt + 1, WRITER_STOPPED.into()))?;
            body = None;
            let Source::Http(url) = src else {
                // A local file that cannot be read does not get better by reading it again.
                return Err(failed(attempt + 1, failure));
            };
            if attempt >= self.retries {
                return Err(failed(attempt + 1, failure));
            }
            let wait = self.backoff_for(attempt);
            attempt += 1;
            tracing::warn!(%href, attempt, reason = %failure, written, ?wait, "image download interrupted, retrying");
            tokio::time::sleep(wait).await;
            let resume = info
                .validator
                .as_deref()
                .filter(|_| written > 0)
                .map(|v| (written, v));
            match self.open_http(url, auth, None, resume).await {
                Ok(Opened::Body(next)) => {
                    let partial = matches!(&next.inner, BodyInner::Http(r) if r.status() == StatusCode::PARTIAL_CONTENT);
                    if !partial {
                        tx.send(Chunk::Restart)
                            .await
                            .map_err(|_| failed(attempt + 1, WRITER_STOPPED.into()))?;
                        written = 0;
                        info = next.info.clone();
                        body = Some(*next);
                    } else if content_range_start(&next.inner) == Some(written) {
                        tracing::info!(%href, offset = written, "image download resumed");
                        body = Some(*next);
                    } else {
                        // Resumed at the wrong offset: ask for the whole image next time.
                        info.validator = None;
                    }
                }
                Ok(Opened::NotModified) => {}
                Err(Failure::Final(e)) => return Err(e),
                Err(Failure::Transient(reason)) => {
                    tracing::warn!(%href, %reason, "reopening the image failed");
                }
            }
        }
    }

    /// Fetches a small text document (a checksums file).
    pub async fn fetch_text(&self, href: &str) -> Result<String> {
        let src = Source::parse(href)?;
        let Opened::Body(mut body) = self.open(href, &src, None, None).await? else {
            unreachable!("open without a condition never yields NotModified")
        };
        let mut out = Vec::new();
        while let Some(data) =
            next_chunk(&mut body.inner)
                .await
                .map_err(|reason| ImageError::Download {
                    href: href.to_string(),
                    attempts: 1,
                    reason,
                })?
        {
            out.extend_from_slice(&data);
            if out.len() > CHECKSUM_FILE_LIMIT {
                return Err(ImageError::InvalidChecksum {
                    value: href.to_string(),
                    reason: format!("checksum file larger than {CHECKSUM_FILE_LIMIT} bytes"),
                });
            }
        }
        String::from_utf8(out).map_err(|_| ImageError::InvalidChecksum {
            value: href.to_string(),
            reason: "checksum file is not UTF-8 text".into(),
        })
    }
}

async fn open_file(
    href: &str,
    path: &std::path::Path,
    unchanged_since: Option<SystemTime>,
) -> std::result::Result<Opened, Failure> {
    let final_err = |e| Failure::Final(ImageError::io("opening image", path, e));
    let file = tokio::fs::File::open(path).await.map_err(final_err)?;
    let meta = file.metadata().await.map_err(final_err)?;
    if !meta.is_file() {
        return Err(Failure::Final(ImageError::InvalidSource {
            href: href.to_string(),
            reason: "not a regular file".into(),
        }));
    }
    let modified = meta.modified().ok();
    if let (Some(since), Some(m)) = (unchanged_since, modified)
        && m <= since
    {
        return Ok(Opened::NotModified);
    }
    Ok(Opened::Body(Box::new(Body {
        info: ResponseInfo {
            size: Some(meta.len()),
            last_modified: modified,
            no_store: false,
            final_href: href.to_string(),
            validator: None,
        },
        inner: BodyInner::File(file),
    })))
}

/// Hands the collected pieces to the writer; `Err` when the writer has gone.
async fn send(
    tx: &mpsc::Sender<Chunk>,
    batch: &mut Vec<Bytes>,
    batched: &mut usize,
) -> std::result::Result<(), ()> {
    if batch.is_empty() {
        return Ok(());
    }
    *batched = 0;
    tx.send(Chunk::Data(std::mem::take(batch)))
        .await
        .map_err(|_| ())
}

async fn next_chunk(inner: &mut BodyInner) -> std::result::Result<Option<Bytes>, String> {
    match inner {
        BodyInner::Http(resp) => resp.chunk().await.map_err(|e| describe(&e)),
        BodyInner::File(f) => {
            let mut buf = vec![0u8; FILE_CHUNK];
            let n = f.read(&mut buf).await.map_err(|e| e.to_string())?;
            buf.truncate(n);
            Ok((n > 0).then(|| Bytes::from(buf)))
        }
    }
}

fn content_range_start(inner: &BodyInner) -> Option<u64> {
    let BodyInner::Http(resp) = inner else {
        return None;
    };
    let v = resp.headers().get(header::CONTENT_RANGE)?.to_str().ok()?;
    let range = v.strip_prefix("bytes ")?;
    range.split('-').next()?.trim().parse().ok()
}

fn response_info(resp: &reqwest::Response) -> ResponseInfo {
    let headers = resp.headers();
    let text = |h: &header::HeaderName| headers.get(h).and_then(|v| v.to_str().ok());
    let last_modified_raw = text(&header::LAST_MODIFIED);
    let size = if resp.status() == StatusCode::PARTIAL_CONTENT {
        text(&header::CONTENT_RANGE)
            .and_then(|v| v.rsplit('/').next())
            .and_then(|t| t.parse().ok())
    } else {
        resp.content_length()
    };
    ResponseInfo {
        size,
        last_modified: last_modified_raw.and_then(parse_http_date),
        no_store: no_store(headers),
        final_href: resp.url().to_string(),
        validator: text(&header::ETAG)
            .filter(|e| !e.starts_with("W/"))
            .or(last_modified_raw)
            .map(String::from),
    }
}

fn no_store(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| d.trim().eq_ignore_ascii_case("no-store"))
}

fn describe(e: &reqwest::Error) -> String {
    use std::error::Error;
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

pub(crate) fn parse_http_date(s: &str) -> Option<SystemTime> {
    chrono::DateTime::parse_from_rfc2822(s)
        .ok()
        .map(|d| SystemTime::from(d.with_timezone(&chrono::Utc)))
}

pub(crate) fn http_date(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t)
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources() {
        assert_eq!(
            Source::parse("/srv/a.img").unwrap(),
            Source::File("/srv/a.img".into())
        );
        assert_eq!(
            Source::parse("file:///srv/a.img").unwrap(),
            Source::File("/srv/a.img".into())
        );
        let s = Source::parse("https://h:8443/images/disk.qcow2?x=1").unwrap();
        assert_eq!(s.file_name().as_deref(), Some("disk.qcow2"));
        assert!(
            Source::parse("ftp://h/a")
                .unwrap_err()
                .to_string()
                .contains("ftp")
        );
        assert!(Source::parse("relative/path").is_err());
    }

    #[test]
    fn http_dates_round_trip() {
        let t = parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
    }

    #[test]
    fn no_store_directive() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CACHE_CONTROL,
            "max-age=0, No-Store".parse().unwrap(),
        );
        assert!(no_store(&h));
        h.insert(header::CACHE_CONTROL, "no-cache".parse().unwrap());
        assert!(!no_store(&h));
    }
}
