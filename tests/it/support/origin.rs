//! A misbehaving-on-demand HTTP image origin for the image cache tests (axum on 127.0.0.1:0).
//!
//! It counts requests per path and can throttle, cut a connection half way, lie about the
//! content (serve bytes other than the real image), support or refuse `Range`, honour
//! `If-Modified-Since`, send `Cache-Control: no-store`, redirect and require basic auth.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::Response;
use base64::Engine;
use bytes::Bytes;

#[derive(Clone, Default)]
pub struct Entry {
    pub data: Bytes,
    pub last_modified: Option<SystemTime>,
    pub no_store: bool,
    /// Send at most this many bytes per `delay`.
    pub throttle: Option<(usize, Duration)>,
    /// Cut the connection half way for this many more GETs.
    pub cut_next: usize,
    /// Serve these bytes instead of `data` (same length announced).
    pub lie_with: Option<Bytes>,
    pub ranges: bool,
    /// Send no Content-Length (chunked).
    pub chunked: bool,
    pub redirect_to: Option<String>,
    pub basic_auth: Option<(String, String)>,
}

impl Entry {
    pub fn new(data: impl Into<Bytes>) -> Self {
        Self {
            data: data.into(),
            ranges: true,
            ..Self::default()
        }
    }
}

/// One request as the origin saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub range: Option<String>,
    pub if_modified_since: Option<String>,
    pub status: u16,
}

#[derive(Default)]
struct State {
    entries: Mutex<HashMap<String, Entry>>,
    seen: Mutex<Vec<Seen>>,
}

#[derive(Clone)]
pub struct Origin {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl Origin {
    /// Starts the origin on the current tokio runtime.
    pub async fn start() -> Self {
        let state = Arc::new(State::default());
        let app_state = Arc::clone(&state);
        let app =
            axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap| {
                let state = Arc::clone(&app_state);
                async move { handle(&state, method, uri, headers) }
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn put(&self, path: &str, entry: Entry) {
        self.state
            .entries
            .lock()
            .unwrap()
            .insert(path.to_string(), entry);
    }

    pub fn update(&self, path: &str, f: impl FnOnce(&mut Entry)) {
        f(self.state.entries.lock().unwrap().get_mut(path).unwrap());
    }

    pub fn seen(&self, path: &str) -> Vec<Seen> {
        self.state
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path == path)
            .cloned()
            .collect()
    }

    pub fn gets(&self, path: &str) -> usize {
        self.seen(path)
            .iter()
            .filter(|s| s.method == Method::GET)
            .count()
    }
}

fn handle(state: &State, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let text = |h: header::HeaderName| {
        headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    let mut seen = Seen {
        method: method.clone(),
        path: uri.path().to_string(),
        range: text(header::RANGE),
        if_modified_since: text(header::IF_MODIFIED_SINCE),
        status: 200,
    };
    let response = respond(state, &method, uri.path(), &headers, &seen);
    seen.status = response.status().as_u16();
    state.seen.lock().unwrap().push(seen);
    response
}

fn status(code: StatusCode) -> Response {
    Response::builder()
        .status(code)
        .body(Body::empty())
        .unwrap()
}

fn respond(
    state: &State,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    seen: &Seen,
) -> Response {
    let mut entries = state.entries.lock().unwrap();
    let Some(entry) = entries.get_mut(path) else {
        return status(StatusCode::NOT_FOUND);
    };
    if let Some((user, pass)) = &entry.basic_auth {
        let want = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        );
        if headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            != Some(want.as_str())
        {
            return status(StatusCode::UNAUTHORIZED);
        }
    }
    if let Some(to) = &entry.redirect_to {
        return Response::builder()
            .status(StatusCode::FOUND)
            .header(header::LOCATION, to.as_str())
            .body(Body::empty())
            .unwrap();
    }
    let last_modified = entry.last_modified.map(http_date);
    if let (Some(lm), Some(ims)) = (entry.last_modified, &seen.if_modified_since) {
        let ims = chrono::DateTime::parse_from_rfc2822(ims).unwrap();
        if lm <= SystemTime::from(ims) + Duration::from_millis(999) {
            return status(StatusCode::NOT_MODIFIED);
        }
    }
    let data = entry.lie_with.clone().unwrap_or_else(|| entry.data.clone());
    let total = data.len();
    let mut start = 0;
    let mut code = StatusCode::OK;
    if entry.ranges
        && let Some(r) = &seen.range
        && let Some(from) = r.strip_prefix("bytes=").and_then(|r| r.strip_suffix('-'))
    {
        let if_range = headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok());
        if if_range.is_none() || if_range == last_modified.as_deref() {
            start = from.parse().unwrap();
            code = StatusCode::PARTIAL_CONTENT;
        }
    }
    let mut b = Response::builder().status(code);
    if !entry.chunked {
        b = b.header(header::CONTENT_LENGTH, total - start);
    }
    if entry.ranges {
        b = b.header(header::ACCEPT_RANGES, "bytes");
    }
    if code == StatusCode::PARTIAL_CONTENT {
        b = b.header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{total}", total - 1),
        );
    }
    if let Some(lm) = &last_modified {
        b = b.header(header::LAST_MODIFIED, lm.as_str());
    }
    if entry.no_store {
        b = b.header(header::CACHE_CONTROL, "no-store");
    }
    if method == Method::HEAD {
        return b.body(Body::empty()).unwrap();
    }
    let cut_at = (entry.cut_next > 0).then(|| {
        entry.cut_next -= 1;
        total / 2
    });
    let throttle = entry.throttle;
    let chunk = throttle.map_or(64 * 1024, |(n, _)| n);
    let stream = async_stream(data, start, chunk, throttle.map(|(_, d)| d), cut_at);
    b.body(Body::from_stream(stream)).unwrap()
}

fn async_stream(
    data: Bytes,
    start: usize,
    chunk: usize,
    delay: Option<Duration>,
    cut_at: Option<usize>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    futures_util::stream::unfold(start, move |pos| {
        let data = data.clone();
        async move {
            // After the error: end the stream (hyper has aborted the connection by then).
            if pos == usize::MAX {
                return None;
            }
            if let Some(cut) = cut_at
                && pos >= cut
            {
                return Some((
                    Err(std::io::Error::other("origin cut the connection")),
                    usize::MAX,
                ));
            }
            if pos >= data.len() {
                return None;
            }
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            let end = (pos + chunk)
                .min(data.len())
                .min(cut_at.filter(|c| *c > pos).unwrap_or(usize::MAX));
            Some((Ok(data.slice(pos..end)), end))
        }
    })
}

pub fn http_date(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t)
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}
