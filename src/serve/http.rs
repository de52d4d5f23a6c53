//! Static HTTP server over the http root: GET and HEAD with Range, confined like TFTP.
//!
//! tower-http's `ServeDir` follows symlinks out of its directory, so files are resolved and
//! opened through [`Confinement`] and streamed by this module instead: one byte range at most
//! (a multi-range request gets the whole file, as RFC 9110 allows), `Content-Length`,
//! `Last-Modified`, `If-Range`. Every request is access-logged through `tracing`
//! (target `ironboot::serve::http::access`) and counted.

use std::io::{Seek, SeekFrom};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio_util::io::ReaderStream;
use tokio_util::sync::CancellationToken;

use super::confine::{Confinement, OpenedFile, Refusal};
use super::limits::ConnLimits;
use super::listener::{ConnMetrics, Listener, Refusals, SendFile};
use crate::metrics::Registry;

/// The `[http]` section of the config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// Address the boot HTTP server listens on (what `http_url` points nodes at).
    pub listen: SocketAddr,
    /// Run the boot HTTP server at all (a site may serve the http root with its own).
    pub enabled: bool,
    /// Size of each file read while streaming, in KiB: larger means fewer thread hops per
    /// GiB, at this much memory per download in flight.
    pub read_chunk_kib: usize,
    /// Connections served at once (each may hold a file open too); past it, new ones get
    /// 503 with `Retry-After`. Lowered at start if the open-file limit cannot hold it.
    pub max_connections: usize,
    /// Seconds a client has to send a complete request head, from connecting (or from the
    /// first byte of its next request on a kept-alive connection).
    #[serde(with = "crate::settings::secs")]
    pub header_read_timeout: Duration,
    /// Seconds a kept-alive connection may wait for its next request.
    #[serde(with = "crate::settings::secs")]
    pub keepalive_timeout: Duration,
    /// Seconds a transfer may go without a byte moving while it waits on the client.
    #[serde(with = "crate::settings::secs")]
    pub stall_timeout: Duration,
    /// Send file bodies with `sendfile(2)`, from the page cache straight to the socket;
    /// `false` streams them through user space in `read_chunk_kib` reads.
    pub zero_copy: bool,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            enabled: true,
            read_chunk_kib: 512,
            max_connections: 2048,
            header_read_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(60),
            stall_timeout: Duration::from_secs(60),
            zero_copy: true,
        }
    }
}

impl HttpSettings {
    /// Checks every key; the error names the key, the value and the reason.
    pub fn validate(&self) -> Result<(), HttpError> {
        let bad = |key: &str, value: String, reason: &str| {
            Err(HttpError::Setting {
                key: format!("http.{key}"),
                value,
                reason: reason.into(),
            })
        };
        if !(4..=16384).contains(&self.read_chunk_kib) {
            return bad(
                "read_chunk_kib",
                self.read_chunk_kib.to_string(),
                "must be between 4 and 16384",
            );
        }
        if !(1..=1_000_000).contains(&self.max_connections) {
            return bad(
                "max_connections",
                self.max_connections.to_string(),
                "must be between 1 and 1000000",
            );
        }
        for (key, d) in [
            ("header_read_timeout", self.header_read_timeout),
            ("keepalive_timeout", self.keepalive_timeout),
            ("stall_timeout", self.stall_timeout),
        ] {
            if d.is_zero() || d > Duration::from_secs(3600) {
                return bad(
                    key,
                    d.as_secs().to_string(),
                    "must be between 1 and 3600 seconds",
                );
            }
        }
        Ok(())
    }

    /// The connection limits, with the cap the open-file budget allows.
    pub fn limits(&self, max_connections: usize) -> ConnLimits {
        ConnLimits {
            max_connections,
            header_read_timeout: self.header_read_timeout,
            keepalive_timeout: self.keepalive_timeout,
            stall_timeout: self.stall_timeout,
        }
    }
}

/// Errors of the HTTP server itself (request problems become HTTP statuses).
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("invalid {key} {value:?}: {reason}")]
    Setting {
        key: String,
        value: String,
        reason: String,
    },
    #[error(
        "cannot bind HTTP to {addr}: permission denied; ports below 1024 need root or \
         CAP_NET_BIND_SERVICE, or listen on a port >= 1024 ([http] listen, --http-listen)"
    )]
    BindPrivileged { addr: SocketAddr },
    #[error("cannot bind HTTP to {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RefusalLabels {
    reason: &'static str,
}

/// Prometheus metrics of the boot HTTP server (`ironboot_http_*`).
#[derive(Debug, Clone, Default)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    refused: Family<RefusalLabels, Counter>,
    sent_bytes: Counter,
}

impl HttpMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("ironboot_http");
        r.register(
            "requests",
            "Boot HTTP requests by method and status",
            m.requests.clone(),
        );
        r.register(
            "refused",
            "Boot HTTP requests refused, by reason",
            m.refused.clone(),
        );
        r.register(
            "sent_bytes",
            "File bytes sent in response bodies",
            m.sent_bytes.clone(),
        );
        m
    }
}

#[derive(Clone)]
struct HttpState {
    confinement: Arc<Confinement>,
    metrics: HttpMetrics,
    chunk: usize,
}

/// The boot HTTP service: every GET/HEAD path is a file under the confinement's root.
pub fn router(confinement: Confinement, settings: &HttpSettings, metrics: HttpMetrics) -> Router {
    let state = HttpState {
        confinement: Arc::new(confinement),
        metrics,
        chunk: settings.read_chunk_kib * 1024,
    };
    Router::new()
        .fallback(serve_file)
        .layer(middleware::from_fn_with_state(state.clone(), access_log))
        .with_state(state)
}

/// Binds the listener, with a clear error for privileged ports.
pub async fn bind(settings: &HttpSettings) -> Result<TcpListener, HttpError> {
    settings.validate()?;
    let addr = settings.listen;
    TcpListener::bind(addr).await.map_err(|source| {
        if source.kind() == std::io::ErrorKind::PermissionDenied {
            HttpError::BindPrivileged { addr }
        } else {
            HttpError::Bind { addr, source }
        }
    })
}

/// Serves `router` on `listener` within `limits` until `shutdown` is cancelled, then lets
/// requests in flight finish (downloads included) before returning. With `zero_copy`, file
/// bodies are sent with `sendfile` ([`HttpSettings::zero_copy`]).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    metrics: ConnMetrics,
    zero_copy: bool,
    shutdown: CancellationToken,
) -> Result<(), HttpError> {
    let listener = Listener {
        name: "boot_http",
        tcp: listener,
        limits,
        refusals: Refusals::plain(),
        metrics,
        zero_copy,
    };
    super::listener::serve(listener, router, shutdown)
        .await
        .map_err(HttpError::Serve)
}

async fn access_log(State(state): State<HttpState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let client = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string())
        .unwrap_or_default();
    let range = req.headers().contains_key(header::RANGE);
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    let length = resp
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            method: method.as_str().to_string(),
            status,
        })
        .inc();
    tracing::info!(
        target: "ironboot::serve::http::access",
        %client,
        method = %method,
        path = %path.escape_debug(),
        status,
        length,
        range,
        ms_to_headers = started.elapsed().as_secs_f64() * 1000.0,
        "http"
    );
    resp
}

async fn serve_file(State(state): State<HttpState>, method: Method, req: Request) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET, HEAD")],
        )
            .into_response();
    }
    let Some(name) = percent_decode(req.uri().path()) else {
        state
            .metrics
            .refused
            .get_or_create(&RefusalLabels {
                reason: "bad_encoding",
            })
            .inc();
        return StatusCode::BAD_REQUEST.into_response();
    };
    let confinement = Arc::clone(&state.confinement);
    let opened = match tokio::task::spawn_blocking(move || confinement.open(&name)).await {
        Ok(Ok(f)) => f,
        Ok(Err(refusal)) => return refused(&state, &refusal),
        Err(join) => {
            tracing::error!(error = %join, "http open task failed");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    respond(&state, &method, req.headers(), opened).await
}

fn refused(state: &HttpState, refusal: &Refusal) -> Response {
    state
        .metrics
        .refused
        .get_or_create(&RefusalLabels {
            reason: refusal.label(),
        })
        .inc();
    let status = match refusal {
        Refusal::BadName(_) => StatusCode::BAD_REQUEST,
        Refusal::Outside => StatusCode::FORBIDDEN,
        Refusal::NotFound => StatusCode::NOT_FOUND,
        Refusal::Unreadable(_) => StatusCode::FORBIDDEN,
    };
    if status != StatusCode::NOT_FOUND {
        tracing::warn!(reason = %refusal, "http: refused");
    }
    status.into_response()
}

async fn respond(
    state: &HttpState,
    method: &Method,
    headers: &HeaderMap,
    opened: OpenedFile,
) -> Response {
    let OpenedFile {
        mut file,
        len,
        modified,
        ..
    } = opened;
    let last_modified = modified.map(http_date);
    let range = match requested_range(headers, len, last_modified.as_deref()) {
        RangeRequest::Whole => None,
        RangeRequest::Part(start, end) => Some((start, end)),
        RangeRequest::Unsatisfiable => {
            return (
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{len}"))],
            )
                .into_response();
        }
    };
    let (status, start, count) = match range {
        Some((s, e)) => (StatusCode::PARTIAL_CONTENT, s, e - s + 1),
        None => (StatusCode::OK, 0, len),
    };
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, count)
        .header(header::ACCEPT_RANGES, "bytes");
    if let Some(lm) = &last_modified
        && let Ok(v) = HeaderValue::from_str(lm)
    {
        builder = builder.header(header::LAST_MODIFIED, v);
    }
    if let Some((s, e)) = range {
        builder = builder.header(header::CONTENT_RANGE, format!("bytes {s}-{e}/{len}"));
    }
    let body = if *method == Method::HEAD || count == 0 {
        Body::empty()
    } else {
        // A seek only sets the descriptor's offset (no I/O): done here, not on a thread.
        if start > 0 && file.seek(SeekFrom::Start(start)).is_err() {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        let sent = state.metrics.sent_bytes.clone();
        // The zero-copy offer shares the descriptor's file, not its offset (sendfile takes
        // its own); without a spare descriptor the body is streamed as usual.
        if let Ok(dup) = file.try_clone() {
            builder = builder.extension(SendFile {
                file: Arc::new(dup),
                offset: start,
                len: count,
                sent: sent.clone(),
            });
        }
        let reader = tokio::fs::File::from_std(file).take(count);
        let stream = ReaderStream::with_capacity(reader, state.chunk).inspect(move |chunk| {
            if let Ok(bytes) = chunk {
                sent.inc_by(bytes.len() as u64);
            }
        });
        Body::from_stream(stream)
    };
    builder
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

#[derive(Debug, PartialEq, Eq)]
enum RangeRequest {
    Whole,
    /// Inclusive byte range.
    Part(u64, u64),
    Unsatisfiable,
}

/// Interprets `Range` (and `If-Range`): one `bytes=` range or the whole file.
fn requested_range(headers: &HeaderMap, len: u64, last_modified: Option<&str>) -> RangeRequest {
    let Some(spec) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return RangeRequest::Whole;
    };
    if let Some(if_range) = headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok())
        && Some(if_range) != last_modified
    {
        return RangeRequest::Whole;
    }
    let Some(set) = spec.trim().strip_prefix("bytes=") else {
        return RangeRequest::Whole;
    };
    if set.contains(',') {
        return RangeRequest::Whole;
    }
    let Some((a, b)) = set.trim().split_once('-') else {
        return RangeRequest::Whole;
    };
    let (a, b) = (a.trim(), b.trim());
    match (a.parse::<u64>(), b.parse::<u64>()) {
        // bytes=-N: the last N bytes.
        (Err(_), Ok(n)) if a.is_empty() => {
            if n == 0 || len == 0 {
                RangeRequest::Unsatisfiable
            } else {
                RangeRequest::Part(len.saturating_sub(n), len - 1)
            }
        }
        (Ok(s), Err(_)) if b.is_empty() => {
            if s >= len {
                RangeRequest::Unsatisfiable
            } else {
                RangeRequest::Part(s, len - 1)
            }
        }
        (Ok(s), Ok(e)) if s <= e => {
            if s >= len {
                RangeRequest::Unsatisfiable
            } else {
                RangeRequest::Part(s, e.min(len - 1))
            }
        }
        _ => RangeRequest::Whole,
    }
}

/// Decodes `%XX` escapes; `None` for a malformed escape or a result that is not UTF-8.
fn percent_decode(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// RFC 9110 IMF-fixdate.
fn http_date(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t)
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(spec: &str, len: u64) -> RangeRequest {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_str(spec).unwrap());
        requested_range(&h, len, None)
    }

    #[test]
    fn ranges() {
        use RangeRequest::*;
        assert_eq!(range("bytes=0-99", 1000), Part(0, 99));
        assert_eq!(range("bytes=900-", 1000), Part(900, 999));
        assert_eq!(range("bytes=-100", 1000), Part(900, 999));
        assert_eq!(range("bytes=-5000", 1000), Part(0, 999));
        assert_eq!(range("bytes=990-5000", 1000), Part(990, 999));
        assert_eq!(range("bytes=1000-", 1000), Unsatisfiable);
        assert_eq!(range("bytes=-0", 1000), Unsatisfiable);
        assert_eq!(range("bytes=0-1,5-6", 1000), Whole);
        assert_eq!(range("bytes=5-1", 1000), Whole);
        assert_eq!(range("items=0-1", 1000), Whole);
        assert_eq!(range("bytes=0-0", 0), Unsatisfiable);
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_static("bytes=0-1"));
        h.insert(
            header::IF_RANGE,
            HeaderValue::from_static("Mon, 01 Jan 2024 00:00:00 GMT"),
        );
        assert_eq!(
            requested_range(&h, 10, Some("Tue, 02 Jan 2024 00:00:00 GMT")),
            Whole
        );
        assert_eq!(
            requested_range(&h, 10, Some("Mon, 01 Jan 2024 00:00:00 GMT")),
            Part(0, 1)
        );
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("/a%2e%2E/b").unwrap(), "/a../b");
        assert_eq!(percent_decode("/%00").unwrap(), "/\0");
        assert_eq!(percent_decode("/%zz"), None);
        assert_eq!(percent_decode("/%2"), None);
        assert_eq!(percent_decode("/%ff"), None);
    }

    #[test]
    fn dates_are_imf_fixdate() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(784111777);
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
    }
}
