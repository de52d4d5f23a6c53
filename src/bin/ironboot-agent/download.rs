//! Downloading images straight onto the disk, checked as they stream: the checksum IPA would
//! use (`os_hash_algo`/`os_hash_value`, else `checksum`, a value or a checksum-file URL), the
//! URLs tried in order, connection errors, 5xx and checksum mismatches retried
//! (`ipa-image-download-connection-retries`), 4xx fatal at once. Nothing is buffered in
//! memory beyond one write: the ramdisk has no room for an image.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use bytes::Bytes;
use futures_util::StreamExt;
use ironboot::images::checksum::{self, Algo, Expected};
use md5::Md5;
use serde_json::Value;
use sha2::{Digest, Sha256, Sha512};

use crate::agent::Agent;
use crate::commands::RestError;
use crate::commands::write::ImageInfo;
use crate::settings::DownloadSettings;

/// IPA's limit for config drives.
pub const MAX_CONFIGDRIVE_BYTES: u64 = 64 << 20;
/// Writes are gathered to this size (a syscall per network chunk is slow under emulation).
const WRITE_BUFFER: usize = 1 << 20;

/// Where a download goes: `limit` bytes of `file` from `offset` (a disk or a partition).
pub struct Target {
    pub file: Arc<File>,
    pub device: String,
    pub offset: u64,
    pub limit: u64,
    /// The error for an image that does not fit (its size, the room).
    pub too_large: fn(u64, u64) -> RestError,
    /// Erase the disk's old metadata (size, sector) just before the first byte is written:
    /// only once the server answered, the image fits and its first bytes look raw, so a
    /// refused image leaves the disk as it was.
    pub erase_first: Option<(u64, u64)>,
    pub erased: std::sync::atomic::AtomicBool,
}

impl Target {
    /// Erases the disk's metadata once (see [`Target::erase_first`]).
    async fn prepare(&self) -> Result<(), RestError> {
        use std::sync::atomic::Ordering;
        let Some((size, sector)) = self.erase_first else {
            return Ok(());
        };
        if self.erased.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let (f, device) = (self.file.clone(), self.device.clone());
        tokio::task::spawn_blocking(move || {
            crate::disk::erase::erase_metadata(&f, size, sector).map_err(|e| {
                RestError::image_write(&device, format!("erasing the old metadata: {e}"))
            })
        })
        .await
        .map_err(|e| RestError::execution(format!("the erase did not complete: {e}")))?
    }
}

enum Hasher {
    Md5(Md5),
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    fn new(algo: Algo) -> Self {
        match algo {
            Algo::Md5 => Hasher::Md5(Md5::new()),
            Algo::Sha256 => Hasher::Sha256(Sha256::new()),
            Algo::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    fn update(&mut self, b: &[u8]) {
        match self {
            Hasher::Md5(h) => h.update(b),
            Hasher::Sha256(h) => h.update(b),
            Hasher::Sha512(h) => h.update(b),
        }
    }

    fn finish(self) -> String {
        match self {
            Hasher::Md5(h) => hex::encode(h.finalize()),
            Hasher::Sha256(h) => hex::encode(h.finalize()),
            Hasher::Sha512(h) => hex::encode(h.finalize()),
        }
    }
}

/// An HTTP client for image servers (and checksum files, config drives): the image's
/// proxies, `ipa-insecure`, IPA's connection timeout.
pub fn client(
    settings: &DownloadSettings,
    info: Option<&ImageInfo>,
) -> Result<reqwest::Client, RestError> {
    let mut b = reqwest::Client::builder()
        .tls_backend_preconfigured(crate::tls::client_config(settings.insecure))
        .connect_timeout(settings.connect_timeout)
        .read_timeout(settings.connect_timeout)
        .no_proxy();
    if let Some(info) = info {
        let no_proxy = info
            .no_proxy
            .as_deref()
            .and_then(reqwest::NoProxy::from_string);
        for (scheme, url) in &info.proxies {
            let proxy = match scheme.as_str() {
                "http" => reqwest::Proxy::http(url),
                "https" => reqwest::Proxy::https(url),
                other => {
                    return Err(RestError::invalid_params(format!(
                        "proxies: unknown scheme {other:?} (http or https)"
                    )));
                }
            }
            .map_err(|e| RestError::invalid_params(format!("proxies.{scheme} {url:?}: {e}")))?;
            b = b.proxy(proxy.no_proxy(no_proxy.clone()));
        }
    }
    b.build()
        .map_err(|e| RestError::execution(format!("cannot build the HTTP client: {e}")))
}

fn request(
    client: &reqwest::Client,
    url: &str,
    info: Option<&ImageInfo>,
) -> reqwest::RequestBuilder {
    let mut r = client.get(url);
    if let Some(info) = info {
        if let Some((user, password)) = &info.basic_auth {
            r = r.basic_auth(user, Some(password));
        }
        if let Some(a) = &info.authorization {
            r = r.header(reqwest::header::AUTHORIZATION, a);
        }
    }
    r
}

/// The checksum the image must match.
pub async fn resolve_checksum(agent: &Agent, info: &ImageInfo) -> Result<Expected, RestError> {
    let md5_ok = agent.lookup_config().md5_enable;
    let given = |value: &str, algo: Option<Algo>| -> Result<Option<Expected>, RestError> {
        if value.starts_with("http://") || value.starts_with("https://") {
            return Ok(None);
        }
        let raw = match algo {
            Some(a) => format!("{a}:{value}"),
            None => value.to_string(),
        };
        checksum::parse_value(&raw, md5_ok)
            .map(Some)
            .map_err(|e| RestError::invalid_params(format!("image checksum: {e}")))
    };
    let algo = match info.os_hash_algo.as_deref() {
        Some(a) => match a.parse::<Algo>() {
            Ok(algo) => Some(algo),
            Err(e) if info.checksum.is_none() => {
                return Err(RestError::invalid_params(format!(
                    "os_hash_algo: {e}; this agent verifies md5, sha256 and sha512"
                )));
            }
            Err(_) => None,
        },
        None => None,
    };
    let (value, algo) = match (
        algo,
        info.os_hash_value.as_deref(),
        info.checksum.as_deref(),
    ) {
        (Some(a), Some(v), _) => (v, Some(a)),
        (_, _, Some(c)) => (c, None),
        _ => {
            return Err(RestError::invalid_params(
                "Image checksum is not available: give os_hash_algo and os_hash_value, or checksum",
            ));
        }
    };
    if let Some(e) = given(value, algo)? {
        return Ok(e);
    }
    // A checksum file: find the line for the image's file name.
    let client = client(&agent.settings.download, Some(info))?;
    let text = async {
        let resp = request(&client, value, Some(info)).send().await?;
        resp.error_for_status()?.text().await
    }
    .await
    .map_err(|e| RestError::image_download(value, crate::ironic::describe(e)))?;
    let file_name = info.urls[0]
        .split(['?', '#'])
        .next()
        .and_then(|u| u.rsplit('/').next())
        .unwrap_or_default();
    let found = checksum::find_in_checksum_file(&text, file_name, value, md5_ok)
        .map_err(|e| RestError::image_download(value, e))?;
    Ok(match algo {
        Some(a) if a != found.algo => Expected { algo: a, ..found },
        _ => found,
    })
}

/// The header of a disk format this agent cannot write raw.
fn foreign_format(head: &[u8]) -> Option<&'static str> {
    [
        (&b"QFI\xfb"[..], "qcow2"),
        (b"KDMV", "vmdk"),
        (b"vhdxfile", "vhdx"),
        (b"conectix", "vhd"),
    ]
    .iter()
    .find(|(magic, _)| head.starts_with(magic))
    .map(|(_, name)| *name)
}

enum Failure {
    Fatal(RestError),
    Retry(RestError),
}

enum WriteFail {
    TooLarge(u64),
    Io(std::io::Error),
}

/// The blocking end: hashes and writes what the download sends, in order.
fn writer(
    target: (Arc<File>, u64, u64),
    algo: Algo,
    mut rx: tokio::sync::mpsc::Receiver<Bytes>,
) -> Result<(u64, String), WriteFail> {
    let (file, offset, limit) = target;
    let mut hasher = Hasher::new(algo);
    let mut written = 0u64;
    let mut buf: Vec<u8> = Vec::with_capacity(WRITE_BUFFER);
    let flush = |buf: &mut Vec<u8>, written: &mut u64| -> Result<(), WriteFail> {
        file.write_all_at(buf, offset + *written)
            .map_err(WriteFail::Io)?;
        *written += buf.len() as u64;
        buf.clear();
        Ok(())
    };
    while let Some(chunk) = rx.blocking_recv() {
        let total = written + buf.len() as u64 + chunk.len() as u64;
        if total > limit {
            return Err(WriteFail::TooLarge(total));
        }
        hasher.update(&chunk);
        buf.extend_from_slice(&chunk);
        if buf.len() >= WRITE_BUFFER {
            flush(&mut buf, &mut written)?;
        }
    }
    flush(&mut buf, &mut written)?;
    file.sync_data().map_err(WriteFail::Io)?;
    Ok((written, hasher.finish()))
}

/// Opens the first URL that answers 200.
async fn open(
    client: &reqwest::Client,
    info: &ImageInfo,
) -> Result<(String, reqwest::Response), Failure> {
    let mut notes = Vec::new();
    let mut retryable = false;
    for url in &info.urls {
        match request(client, url, Some(info)).send().await {
            Ok(r) if r.status() == reqwest::StatusCode::OK => return Ok((url.clone(), r)),
            Ok(r) => {
                retryable |= r.status().is_server_error();
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                notes.push(format!(
                    "URL: {url}; received status code {status}, expected 200; body: {}",
                    body.chars().take(200).collect::<String>()
                ));
            }
            Err(e) => {
                retryable = true;
                notes.push(format!("URL: {url}; {}", crate::ironic::describe(e)));
            }
        }
    }
    let err = RestError::image_download(&info.id, notes.join("\n "));
    Err(if retryable {
        Failure::Retry(err)
    } else {
        Failure::Fatal(err)
    })
}

/// Feeds the download to the writer; the failure that stopped it early, if any.
async fn pump(
    settings: &DownloadSettings,
    info: &ImageInfo,
    url: &str,
    resp: reqwest::Response,
    (tx, target): (&tokio::sync::mpsc::Sender<Bytes>, &Target),
    started: Instant,
) -> Option<Failure> {
    let mut stream = resp.bytes_stream();
    let mut first = true;
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                return Some(Failure::Retry(RestError::image_download(
                    &info.id,
                    format!(
                        "the download from {url} broke off: {}",
                        crate::ironic::describe(e)
                    ),
                )));
            }
        };
        if first && let Some(fmt) = foreign_format(&chunk) {
            return Some(Failure::Fatal(RestError::invalid_image(format!(
                "image {} is {fmt} (by its header, declared {:?}); ironboot-agent writes raw \
                 images only: let ironboot convert it ([agent] image_download_source = http, \
                 the default) or provide a raw image",
                info.id,
                info.disk_format.as_deref().unwrap_or("raw")
            ))));
        }
        if first && let Err(e) = target.prepare().await {
            return Some(Failure::Fatal(e));
        }
        first = false;
        if !settings.max_duration.is_zero() && started.elapsed() > settings.max_duration {
            return Some(Failure::Fatal(RestError::image_download(
                &info.id,
                format!(
                    "not done within {:?} (ipa-image-download-max-duration)",
                    settings.max_duration
                ),
            )));
        }
        if tx.send(chunk).await.is_err() {
            // The writer stopped; its result says why.
            return None;
        }
    }
    None
}

async fn attempt(
    settings: &DownloadSettings,
    client: &reqwest::Client,
    info: &ImageInfo,
    expected: &Expected,
    target: &Target,
) -> Result<u64, Failure> {
    let started = Instant::now();
    let (url, resp) = open(client, info).await?;
    if let Some(len) = resp.content_length()
        && len > target.limit
    {
        return Err(Failure::Fatal((target.too_large)(len, target.limit)));
    }
    tracing::info!(%url, device = %target.device, offset = target.offset,
        size = ?resp.content_length(), "downloading the image onto the disk");
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let dest = (target.file.clone(), target.offset, target.limit);
    let algo = expected.algo;
    let write = tokio::task::spawn_blocking(move || writer(dest, algo, rx));
    let failure = pump(settings, info, &url, resp, (&tx, target), started).await;
    drop(tx);
    let written = write.await.map_err(|e| {
        Failure::Fatal(RestError::execution(format!(
            "the disk writer stopped: {e}"
        )))
    })?;
    if let Some(f) = failure {
        return Err(f);
    }
    let (bytes, digest) = match written {
        Ok(w) => w,
        Err(WriteFail::TooLarge(n)) => {
            return Err(Failure::Fatal((target.too_large)(n, target.limit)));
        }
        Err(WriteFail::Io(e)) => {
            return Err(Failure::Fatal(RestError::image_write(&target.device, e)));
        }
    };
    if digest != expected.hex {
        return Err(Failure::Retry(RestError::image_checksum(
            &info.id,
            &url,
            &expected.hex,
            &digest,
        )));
    }
    tracing::info!(%url, bytes, algo = %expected.algo, secs = started.elapsed().as_secs_f64(),
        "image written and verified");
    Ok(bytes)
}

/// Downloads the image onto `target`, retrying as IPA does. On success every byte written
/// was verified against the checksum.
pub async fn stream_to(
    agent: &Agent,
    info: &ImageInfo,
    expected: &Expected,
    target: &Target,
) -> Result<u64, RestError> {
    let settings = &agent.settings.download;
    let client = client(settings, Some(info))?;
    let mut tries = 0;
    loop {
        match attempt(settings, &client, info, expected, target).await {
            Ok(n) => return Ok(n),
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Retry(e)) if tries >= settings.retries => return Err(e),
            Err(Failure::Retry(e)) => {
                tries += 1;
                tracing::warn!(error = %e, attempt = tries, of = settings.retries,
                    "image download failed; retrying in {:?}", settings.retry_interval);
                tokio::time::sleep(settings.retry_interval).await;
            }
        }
    }
}

/// The config drive's bytes: downloaded from a URL, or base64 (gzipped or not).
pub async fn configdrive(agent: &Agent, value: &Value) -> Result<Option<Vec<u8>>, RestError> {
    let text = match value {
        Value::Null => return Ok(None),
        Value::String(s) if s.trim().is_empty() => return Ok(None),
        Value::String(s) => s.trim(),
        other => {
            return Err(RestError::invalid_params(format!(
                "configdrive must be a string (gzip+base64 or URL), got {other}"
            )));
        }
    };
    let fail = |msg: String| RestError::execution(format!("config drive: {msg}"));
    let encoded: Vec<u8> = if text.starts_with("http://") || text.starts_with("https://") {
        let client = client(&agent.settings.download, None)?;
        let resp = client
            .get(text)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| {
                fail(format!(
                    "cannot download {text}: {}",
                    crate::ironic::describe(e)
                ))
            })?;
        resp.bytes()
            .await
            .map_err(|e| {
                fail(format!(
                    "cannot download {text}: {}",
                    crate::ironic::describe(e)
                ))
            })?
            .to_vec()
    } else {
        text.as_bytes().to_vec()
    };
    let compact: Vec<u8> = encoded
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&compact)
        .unwrap_or(encoded);
    let data = if raw.starts_with(&[0x1f, 0x8b]) {
        use std::io::Read;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .take(MAX_CONFIGDRIVE_BYTES + 1)
            .read_to_end(&mut out)
            .map_err(|e| fail(format!("not a valid gzip stream: {e}")))?;
        out
    } else {
        raw
    };
    if data.len() as u64 > MAX_CONFIGDRIVE_BYTES {
        return Err(fail(format!(
            "Config drive size exceeds maximum limit of 64MiB (it is larger than {} bytes)",
            MAX_CONFIGDRIVE_BYTES
        )));
    }
    Ok(Some(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_formats_are_recognised_by_their_header() {
        assert_eq!(foreign_format(b"QFI\xfb\0\0\0\x03"), Some("qcow2"));
        assert_eq!(foreign_format(b"conectix"), Some("vhd"));
        assert_eq!(foreign_format(&[0u8; 512]), None);
        assert_eq!(foreign_format(b"\xebc\x90"), None);
    }

    #[test]
    fn the_writer_refuses_to_go_past_its_region() {
        let f = Arc::new(tempfile::tempfile().unwrap());
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.try_send(Bytes::from(vec![1u8; 60])).unwrap();
        tx.try_send(Bytes::from(vec![2u8; 60])).unwrap();
        drop(tx);
        match writer((f.clone(), 10, 100), Algo::Sha256, rx) {
            Err(WriteFail::TooLarge(n)) => assert_eq!(n, 120),
            _ => panic!("expected TooLarge"),
        }
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.try_send(Bytes::from_static(b"abc")).unwrap();
        drop(tx);
        let Ok((n, digest)) = writer((f.clone(), 5, 100), Algo::Sha256, rx) else {
            panic!("write failed")
        };
        assert_eq!(n, 3);
        assert_eq!(
            digest,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let mut back = [0u8; 3];
        f.read_exact_at(&mut back, 5).unwrap();
        assert_eq!(&back, b"abc");
    }
}
