//! The Swift publisher: media are uploaded to a container and handed to BMCs as temp URLs.
//!
//! Uploads stream from the file (never the whole file in memory), carry
//! `X-Delete-After: <expiry>` so Swift removes them on its own, are retried a bounded number
//! of times, and are checked against the ETag (MD5) Swift computed. A Swift PUT is atomic: an
//! interrupted upload leaves no object behind. The temp URL is signed with the account's
//! Temp-URL-Key, which is read once (or set when the account has none).

mod auth;
pub mod tempurl;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::TryStreamExt;
use md5::{Digest, Md5};
use reqwest::header::{CONTENT_LENGTH, HeaderMap};
use reqwest::{Body, Client, Method, Response, StatusCode, Url};
use tokio::sync::OnceCell;
use tokio_util::io::ReaderStream;
use tracing::{debug, info, warn};

use self::auth::Authenticator;
use super::error::{PublishError, Result};
use super::metrics::PublishMetrics;
use super::name::ObjectName;
use super::settings::{Backend, Secret, SwiftSettings};
use super::{Published, Publisher};

/// Read size of the upload stream.
const UPLOAD_CHUNK: usize = 256 * 1024;
const ACCOUNT_KEY: &str = "x-account-meta-temp-url-key";
const ACCOUNT_KEY_2: &str = "x-account-meta-temp-url-key-2";

#[derive(Clone)]
pub struct SwiftPublisher {
    inner: Arc<Inner>,
}

struct Inner {
    settings: SwiftSettings,
    client: Client,
    auth: Authenticator,
    /// Set once the container is known to exist; cleared when an upload gets 404.
    container_ready: AtomicBool,
    temp_url_key: OnceCell<Secret>,
}

impl std::fmt::Debug for SwiftPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwiftPublisher")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl SwiftPublisher {
    /// Validates `settings` and prepares the HTTP client; nothing is sent until first use.
    pub fn new(settings: SwiftSettings, metrics: &PublishMetrics) -> Result<Self> {
        settings.validate()?;
        // reqwest is built without a default crypto provider; installing ring is idempotent
        // (an already installed provider is kept).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = Client::builder()
            .connect_timeout(Duration::from_secs(settings.connect_timeout_secs))
            .read_timeout(Duration::from_secs(settings.read_timeout_secs))
            .build()
            .map_err(|e| {
                PublishError::Internal(format!("HTTP client: {}", crate::error_chain::chain(&e)))
            })?;
        let auth = Authenticator::new(settings.clone(), metrics.swift_authentications.clone());
        Ok(Self {
            inner: Arc::new(Inner {
                settings,
                client,
                auth,
                container_ready: AtomicBool::new(false),
                temp_url_key: OnceCell::new(),
            }),
        })
    }

    /// A new GET temp URL for an object already in the container. Signing is local; Swift is
    /// asked only for the key (once) and for a token when none is cached.
    pub async fn temp_url(&self, name: &ObjectName) -> Result<String> {
        let key = self.temp_url_key().await?;
        let session = self.inner.auth.session(&self.inner.client).await?;
        let s = &self.inner.settings;
        let expires =
            chrono::Utc::now().timestamp() + i64::try_from(s.expiry_secs).unwrap_or(i64::MAX / 2);
        Ok(tempurl::temp_url(
            &self.object_url(&session.storage_url, name),
            key.expose().as_bytes(),
            s.digest,
            expires,
            name.as_str(),
        ))
    }

    fn container_url(&self, storage_url: &Url) -> Url {
        let mut url = storage_url.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().push(&self.inner.settings.container);
        }
        url
    }

    fn object_url(&self, storage_url: &Url, name: &ObjectName) -> Url {
        let mut url = self.container_url(storage_url);
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.push(name.as_str());
        }
        url
    }

    /// Sends a bodiless request built on the current session's storage URL, logging in again
    /// once when Swift rejects the token.
    async fn send(
        &self,
        method: Method,
        url_of: impl Fn(&Url) -> Url,
        headers: &[(&'static str, &str)],
    ) -> Result<(Response, Url)> {
        let mut relogged = false;
        loop {
            let session = self.inner.auth.session(&self.inner.client).await?;
            let url = url_of(&session.storage_url);
            let mut req = self
                .inner
                .client
                .request(method.clone(), url.clone())
                .header("X-Auth-Token", session.token.expose());
            for (name, value) in headers {
                req = req.header(*name, *value);
            }
            let resp = req
                .send()
                .await
                .map_err(|e| transport_error(&method, &url, e))?;
            if resp.status() == StatusCode::UNAUTHORIZED && !relogged {
                self.inner.auth.invalidate(&session).await;
                relogged = true;
                continue;
            }
            return Ok((resp, url));
        }
    }

    async fn ensure_container(&self) -> Result<()> {
        if self.inner.container_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let (resp, url) = self
            .send(Method::PUT, |s| self.container_url(s), &[])
            .await?;
        let status = resp.status();
        if !status.is_success() {
            return Err(status_error(&Method::PUT, &url, resp).await);
        }
        if status == StatusCode::CREATED {
            info!(container = %url, "created Swift container");
        }
        self.inner.container_ready.store(true, Ordering::Release);
        Ok(())
    }

    /// The key temp URLs are signed with: the configured one (added to the account when the
    /// account does not have it yet), else the account's, else a new random one set on the
    /// account. Read once per process.
    async fn temp_url_key(&self) -> Result<Secret> {
        self.inner
            .temp_url_key
            .get_or_try_init(|| self.resolve_temp_url_key())
            .await
            .cloned()
    }

    async fn resolve_temp_url_key(&self) -> Result<Secret> {
        let (resp, url) = self.send(Method::HEAD, Url::clone, &[]).await?;
        if !resp.status().is_success() {
            return Err(status_error(&Method::HEAD, &url, resp).await);
        }
        let current = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        let (key1, key2) = (current(ACCOUNT_KEY), current(ACCOUNT_KEY_2));
        let (key, slot) = match &self.inner.settings.temp_url_key {
            Some(wanted) => {
                let w = Some(wanted.expose().to_string());
                if key1 == w || key2 == w {
                    return Ok(wanted.clone());
                }
                // Never overwrite a key other users' temp URLs may depend on.
                match (&key1, &key2) {
                    (None, _) => (wanted.clone(), ACCOUNT_KEY),
                    (Some(_), None) => (wanted.clone(), ACCOUNT_KEY_2),
                    (Some(_), Some(_)) => {
                        return Err(PublishError::Settings(format!(
                            "vmedia.swift.temp_url_key: the Swift account {url} already has two other temp URL keys; \
                             configure one of them or leave temp_url_key unset to use the account's"
                        )));
                    }
                }
            }
            None => match key1.or(key2) {
                Some(existing) => return Ok(Secret::new(existing)),
                None => {
                    let mut raw = [0u8; 32];
                    getrandom::fill(&mut raw)
                        .map_err(|e| PublishError::Internal(format!("random key: {e}")))?;
                    (Secret::new(hex::encode(raw)), ACCOUNT_KEY)
                }
            },
        };
        let (resp, url) = self
            .send(Method::POST, Url::clone, &[(slot, key.expose())])
            .await?;
        if !resp.status().is_success() {
            return Err(status_error(&Method::POST, &url, resp).await);
        }
        info!(account = %url, header = slot, "set the Swift account's temp URL key");
        Ok(key)
    }

    async fn upload(&self, source: &Path, name: &ObjectName, size: u64) -> Result<Url> {
        let attempts = self.inner.settings.upload_attempts;
        let mut attempt = 0;
        let mut relogged = false;
        loop {
            attempt += 1;
            let err = match self.upload_once(source, name, size).await {
                Ok(url) => return Ok(url),
                Err(e) => e,
            };
            // One rejected token is renewed without using up an attempt.
            if !relogged && matches!(err, PublishError::SwiftStatus { status: 401, .. }) {
                relogged = true;
                attempt -= 1;
                continue;
            }
            if attempt >= attempts || !is_retryable(&err) {
                return Err(PublishError::UploadFailed {
                    name: name.to_string(),
                    container: self.inner.settings.container.clone(),
                    attempts: attempt,
                    last: Box::new(err),
                });
            }
            let pause = Duration::from_millis(500 << (attempt - 1).min(4));
            warn!(%name, attempt, error = %err, ?pause, "Swift upload failed; retrying");
            tokio::time::sleep(pause).await;
        }
    }

    async fn upload_once(&self, source: &Path, name: &ObjectName, size: u64) -> Result<Url> {
        self.ensure_container().await?;
        let session = self.inner.auth.session(&self.inner.client).await?;
        let url = self.object_url(&session.storage_url, name);
        let file = tokio::fs::File::open(source)
            .await
            .map_err(|e| PublishError::io("open", source, e))?;
        let md5 = Arc::new(std::sync::Mutex::new(Md5::new()));
        let tap = md5.clone();
        let stream = ReaderStream::with_capacity(file, UPLOAD_CHUNK).inspect_ok(move |chunk| {
            if let Ok(mut h) = tap.lock() {
                h.update(chunk);
            }
        });
        let resp = self
            .inner
            .client
            .put(url.clone())
            .header("X-Auth-Token", session.token.expose())
            .header(
                "X-Delete-After",
                self.inner.settings.expiry_secs.to_string(),
            )
            .header(CONTENT_LENGTH, size)
            .body(Body::wrap_stream(stream))
            .send()
            .await
            .map_err(|e| transport_error(&Method::PUT, &url, e))?;
        let status = resp.status();
        match status {
            StatusCode::UNAUTHORIZED => self.inner.auth.invalidate(&session).await,
            StatusCode::NOT_FOUND => self.inner.container_ready.store(false, Ordering::Release),
            _ => {}
        }
        if !status.is_success() {
            return Err(status_error(&Method::PUT, &url, resp).await);
        }
        let sent = md5
            .lock()
            .map(|h| hex::encode(h.clone().finalize()))
            .map_err(|_| PublishError::Internal("MD5 state poisoned".into()))?;
        let etag = etag_of(resp.headers());
        if etag.as_deref() != Some(sent.as_str()) {
            // Never leave an object whose bytes differ from the file behind a URL.
            let _ = self.delete(name).await;
            return Err(PublishError::ChecksumMismatch {
                url: url.to_string(),
                etag: etag.unwrap_or_else(|| "(none)".into()),
                md5: sent,
            });
        }
        Ok(url)
    }

    /// DELETE the object; `Ok(false)` when it was already gone.
    async fn delete(&self, name: &ObjectName) -> Result<bool> {
        let (resp, url) = self
            .send(Method::DELETE, |s| self.object_url(s, name), &[])
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(status_error(&Method::DELETE, &url, resp).await),
        }
    }
}

impl Publisher for SwiftPublisher {
    fn backend(&self) -> Backend {
        Backend::Swift
    }

    async fn publish(&self, source: &Path, name: &ObjectName) -> Result<Published> {
        let meta = tokio::fs::metadata(source)
            .await
            .map_err(|e| PublishError::io("read", source, e))?;
        if !meta.is_file() {
            return Err(PublishError::io(
                "publish",
                source,
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"),
            ));
        }
        // The key first: a publish that cannot sign a URL must not leave an object behind.
        self.temp_url_key().await?;
        let object = self.upload(source, name, meta.len()).await?;
        let url = self.temp_url(name).await?;
        info!(%name, %object, bytes = meta.len(), expiry_secs = self.inner.settings.expiry_secs,
            "published media to Swift");
        Ok(Published {
            url,
            bytes: meta.len(),
        })
    }

    async fn unpublish(&self, name: &ObjectName) -> Result<()> {
        if !self.delete(name).await? {
            debug!(%name, "Swift object already gone");
        }
        Ok(())
    }

    async fn exists(&self, name: &ObjectName) -> Result<bool> {
        let (resp, url) = self
            .send(Method::HEAD, |s| self.object_url(s, name), &[])
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(status_error(&Method::HEAD, &url, resp).await),
        }
    }
}

fn etag_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim_matches('"').to_ascii_lowercase())
}

fn is_retryable(err: &PublishError) -> bool {
    match err {
        PublishError::SwiftTransport { .. } | PublishError::ChecksumMismatch { .. } => true,
        PublishError::SwiftStatus { status, .. } => {
            matches!(status, 401 | 404 | 408 | 499) || *status >= 500
        }
        _ => false,
    }
}

fn transport_error(method: &Method, url: &Url, err: reqwest::Error) -> PublishError {
    PublishError::SwiftTransport {
        method: method.to_string(),
        url: url.to_string(),
        // The URL is in the message already.
        source: err.without_url(),
    }
}

async fn status_error(method: &Method, url: &Url, resp: Response) -> PublishError {
    let status = resp.status().as_u16();
    PublishError::SwiftStatus {
        method: method.to_string(),
        url: url.to_string(),
        status,
        body: body_excerpt(resp).await,
    }
}

/// The start of an error answer's body, on one line.
pub(crate) async fn body_excerpt(resp: Response) -> String {
    let text = resp.text().await.unwrap_or_default();
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &one_line[..cut]),
        None if one_line.is_empty() => "(empty body)".to_string(),
        None => one_line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::extract::State;
    use axum::http::{HeaderMap as AxHeaders, Method as AxMethod, StatusCode as AxStatus, Uri};
    use axum::response::IntoResponse;
    use std::sync::Mutex;

    /// What the fake Swift does to object PUTs, and what it saw.
    #[derive(Default)]
    struct Fake {
        /// Statuses to answer the next object PUTs with (then 201 with the right ETag).
        put_failures: Vec<u16>,
        wrong_etag: bool,
        requests: Vec<String>,
    }

    type Shared = Arc<Mutex<Fake>>;

    async fn fake_swift(
        State(fake): State<Shared>,
        method: AxMethod,
        uri: Uri,
        headers: AxHeaders,
        body: axum::body::Bytes,
    ) -> axum::response::Response {
        let mut f = fake.lock().unwrap();
        f.requests.push(format!("{method} {}", uri.path()));
        let port = headers["host"].to_str().unwrap().to_string();
        match (method.as_str(), uri.path().matches('/').count()) {
            ("GET", _) => (
                [
                    ("x-auth-token", "tok".to_string()),
                    ("x-storage-url", format!("http://{port}/v1/AUTH_x")),
                ],
                "",
            )
                .into_response(),
            ("HEAD", 2) => [(ACCOUNT_KEY, "k")].into_response(),
            ("PUT", 3) => AxStatus::CREATED.into_response(),
            ("PUT", 4) if !f.put_failures.is_empty() => {
                AxStatus::from_u16(f.put_failures.remove(0))
                    .unwrap()
                    .into_response()
            }
            ("PUT", 4) => {
                let mut etag = hex::encode(Md5::digest(&body));
                if f.wrong_etag {
                    etag = "0".repeat(32);
                }
                (AxStatus::CREATED, [("etag", etag)]).into_response()
            }
            ("DELETE", 4) => AxStatus::NO_CONTENT.into_response(),
            _ => AxStatus::BAD_REQUEST.into_response(),
        }
    }

    async fn start_fake(fake: Fake) -> (Shared, String) {
        let shared = Arc::new(Mutex::new(fake));
        let app = Router::new()
            .fallback(fake_swift)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (shared, format!("http://{addr}/auth/v1.0"))
    }

    fn fake_publisher(auth_url: String, attempts: u32) -> SwiftPublisher {
        let settings = SwiftSettings {
            auth_url,
            auth_version: super::super::settings::AuthVersion::Tempauth,
            user: "a:b".into(),
            key: Secret::new("c"),
            upload_attempts: attempts,
            ..Default::default()
        };
        SwiftPublisher::new(settings, &PublishMetrics::default()).unwrap()
    }

    fn puts(fake: &Shared) -> usize {
        let f = fake.lock().unwrap();
        f.requests
            .iter()
            .filter(|r| r.starts_with("PUT /v1/AUTH_x/ironboot_vmedia/"))
            .count()
    }

    #[tokio::test]
    async fn server_errors_are_retried_a_bounded_number_of_times() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("f.iso");
        std::fs::write(&src, b"data").unwrap();
        let name = ObjectName::new("f.iso").unwrap();

        let (fake, url) = start_fake(Fake {
            put_failures: vec![503, 500],
            ..Default::default()
        })
        .await;
        fake_publisher(url, 3).publish(&src, &name).await.unwrap();
        assert_eq!(puts(&fake), 3);

        let (fake, url) = start_fake(Fake {
            put_failures: vec![503, 503, 503],
            ..Default::default()
        })
        .await;
        let err = fake_publisher(url, 2)
            .publish(&src, &name)
            .await
            .unwrap_err();
        assert!(
            matches!(err, PublishError::UploadFailed { attempts: 2, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("503"), "{err}");
        assert_eq!(puts(&fake), 2);

        // A rejected token is renewed once without using up an attempt.
        let (fake, url) = start_fake(Fake {
            put_failures: vec![401],
            ..Default::default()
        })
        .await;
        fake_publisher(url, 1).publish(&src, &name).await.unwrap();
        assert_eq!(puts(&fake), 2);
        let logins = fake
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|r| r.starts_with("GET /auth"))
            .count();
        assert_eq!(logins, 2);

        // A client error is not retried.
        let (fake, url) = start_fake(Fake {
            put_failures: vec![413],
            ..Default::default()
        })
        .await;
        let err = fake_publisher(url, 3)
            .publish(&src, &name)
            .await
            .unwrap_err();
        assert!(
            matches!(err, PublishError::UploadFailed { attempts: 1, .. }),
            "{err}"
        );
        assert_eq!(puts(&fake), 1);
    }

    #[tokio::test]
    async fn etag_mismatch_deletes_the_object() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("f.iso");
        std::fs::write(&src, b"data").unwrap();
        let (fake, url) = start_fake(Fake {
            wrong_etag: true,
            ..Default::default()
        })
        .await;
        let name = ObjectName::new("f.iso").unwrap();
        let err = fake_publisher(url, 1)
            .publish(&src, &name)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("MD5"), "{err}");
        let f = fake.lock().unwrap();
        assert_eq!(
            f.requests.last().unwrap(),
            "DELETE /v1/AUTH_x/ironboot_vmedia/f.iso",
            "{:?}",
            f.requests
        );
    }

    #[test]
    fn urls_are_built_segment_by_segment() {
        let p = SwiftPublisher::new(
            SwiftSettings {
                auth_url: "http://127.0.0.1:1/auth/v1.0".into(),
                auth_version: super::super::settings::AuthVersion::Tempauth,
                user: "test:tester".into(),
                key: Secret::new("testing"),
                container: "media".into(),
                ..Default::default()
            },
            &PublishMetrics::default(),
        )
        .unwrap();
        let storage = Url::parse("http://swift:8080/v1/AUTH_test").unwrap();
        let name = ObjectName::new("boot-x.iso").unwrap();
        assert_eq!(
            p.object_url(&storage, &name).as_str(),
            "http://swift:8080/v1/AUTH_test/media/boot-x.iso"
        );
        let storage = Url::parse("http://swift:8080/v1/AUTH_test/").unwrap();
        assert_eq!(
            p.container_url(&storage).as_str(),
            "http://swift:8080/v1/AUTH_test/media"
        );
        assert!(!format!("{p:?}").contains("testing"));
    }

    #[test]
    fn retry_policy() {
        let status = |s| PublishError::SwiftStatus {
            method: "PUT".into(),
            url: "u".into(),
            status: s,
            body: String::new(),
        };
        for s in [401, 404, 408, 499, 500, 503] {
            assert!(is_retryable(&status(s)), "{s}");
        }
        for s in [400, 403, 411, 413, 422] {
            assert!(!is_retryable(&status(s)), "{s}");
        }
        assert!(!is_retryable(&PublishError::io(
            "open",
            "/x",
            std::io::Error::from(std::io::ErrorKind::NotFound)
        )));
    }
}
