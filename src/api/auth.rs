//! HTTP basic authentication against a bcrypt htpasswd file (Ironic's `http_basic`).
//!
//! Version discovery, the ramdisk endpoints (`/v1/lookup`, `/v1/heartbeat/...`, which agent
//! tokens protect, and `/v1/continue_inspection`, which only a node in `inspect wait` with a
//! matching port accepts) and `/healthz` stay open, as in Ironic.
//!
//! bcrypt is slow on purpose (~250 ms of CPU at cost 12), which made every request pay it and
//! made an unknown user (no hash to check, 0 ms) easy to tell from a known one. So:
//! - an unknown user is checked against a dummy hash of the file's highest cost, and costs
//!   what a known user costs (keep every user at one cost: a cheaper user is still told
//!   apart from an unknown one);
//! - a successful check is remembered for `[api] auth_cache_ttl`, keyed on an HMAC (with a
//!   key drawn at start) of the whole `Authorization` value, so a correct password pays
//!   bcrypt once per TTL and the memory holds no credential;
//! - checks run at most a few at a time, so guessing cannot take every core;
//! - failures are counted (`ironboot_api_auth_failures_total`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::error::ApiError;

/// Verified credentials remembered at most (beyond it, expired ones go, then all).
const CACHE_CAPACITY: usize = 1024;

/// Users and their bcrypt hashes.
#[derive(Debug, Clone)]
pub struct Htpasswd {
    users: HashMap<String, String>,
    /// A hash of a random password at the file's highest cost, checked for unknown users.
    dummy: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthFileError {
    #[error("cannot read htpasswd file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("htpasswd file {path} line {line}: {reason}")]
    Invalid {
        path: String,
        line: usize,
        reason: String,
    },
    #[error("cannot prepare the dummy hash for unknown users: {0}")]
    Dummy(String),
}

impl Htpasswd {
    pub fn load(path: &Path) -> Result<Htpasswd, AuthFileError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| AuthFileError::Read {
            path: p.clone(),
            source: e,
        })?;
        Self::parse(&text, &p)
    }

    pub fn parse(text: &str, origin: &str) -> Result<Htpasswd, AuthFileError> {
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let invalid = |reason: &str| AuthFileError::Invalid {
                path: origin.to_string(),
                line: i + 1,
                reason: reason.into(),
            };
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| invalid("expected user:bcrypt-hash"))?;
            if !(hash.starts_with("$2y$") || hash.starts_with("$2b$") || hash.starts_with("$2a$")) {
                return Err(invalid(
                    "only bcrypt hashes ($2y$, $2b$, $2a$) are accepted, as in Ironic (htpasswd -B)",
                ));
            }
            users.insert(user.to_string(), hash.to_string());
        }
        if users.is_empty() {
            return Err(AuthFileError::Invalid {
                path: origin.to_string(),
                line: 0,
                reason: "no users defined".into(),
            });
        }
        let cost = users
            .values()
            .filter_map(|h| bcrypt_cost(h))
            .max()
            .unwrap_or(12);
        let mut secret = [0u8; 18];
        getrandom::fill(&mut secret).map_err(|e| AuthFileError::Dummy(e.to_string()))?;
        let dummy = bcrypt::hash(hex::encode(secret), cost)
            .map_err(|e| AuthFileError::Dummy(e.to_string()))?;
        Ok(Htpasswd { users, dummy })
    }

    /// Checks a `user:password` pair (bcrypt is slow by design: call from a blocking thread).
    /// An unknown user costs one bcrypt check too, so timing does not reveal user names.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        match self.users.get(user) {
            Some(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            None => {
                let _ = bcrypt::verify(password, &self.dummy);
                false
            }
        }
    }
}

/// The cost field of a `$2y$12$...` hash.
fn bcrypt_cost(hash: &str) -> Option<u32> {
    hash.get(4..6)?.parse().ok()
}

/// What the middleware checks requests with: the users, the cache of verified credentials,
/// the bound on concurrent checks, the failure counter.
pub struct BasicAuth {
    users: Arc<Htpasswd>,
    ttl: Duration,
    key: [u8; 32],
    verified: Mutex<HashMap<[u8; 32], Instant>>,
    checks: tokio::sync::Semaphore,
    failures: Family<FailureLabels, Counter>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// `missing` (no `Authorization` header) or `invalid_credentials`.
    pub reason: &'static str,
}

impl BasicAuth {
    /// `ttl` zero verifies every request. Failures are counted into `failures`.
    pub fn new(
        users: Arc<Htpasswd>,
        ttl: Duration,
        failures: Family<FailureLabels, Counter>,
    ) -> Result<BasicAuth, AuthFileError> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| AuthFileError::Dummy(e.to_string()))?;
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(BasicAuth {
            users,
            ttl,
            key,
            verified: Mutex::new(HashMap::new()),
            checks: tokio::sync::Semaphore::new(cores),
            failures,
        })
    }

    fn fingerprint(&self, header: &str) -> [u8; 32] {
        use hmac::{KeyInit, Mac};
        // Any key length is valid for HMAC.
        let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!());
        mac.update(header.as_bytes());
        mac.finalize().into_bytes().into()
    }

    fn remembered(&self, print: &[u8; 32]) -> bool {
        let now = Instant::now();
        // A poisoned lock only means a panic while inserting; the map is still a valid map.
        let cache = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        cache.get(print).is_some_and(|until| *until > now)
    }

    fn remember(&self, print: [u8; 32]) {
        if self.ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut cache = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_CAPACITY {
            cache.retain(|_, until| *until > now);
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
        }
        cache.insert(print, now + self.ttl);
    }

    fn failed(&self, reason: &'static str) {
        self.failures.get_or_create(&FailureLabels { reason }).inc();
    }

    /// Whether the `Authorization` value carries valid credentials.
    async fn check(self: &Arc<Self>, header: Option<&str>) -> Result<(), &'static str> {
        let header = header.ok_or("authentication required (HTTP basic)")?;
        let print = self.fingerprint(header);
        if self.remembered(&print) {
            return Ok(());
        }
        let (user, password) =
            basic_credentials(header).ok_or("authentication required (HTTP basic)")?;
        // The semaphore is never closed, so acquire cannot fail.
        let _slot = self
            .checks
            .acquire()
            .await
            .map_err(|_| "invalid credentials")?;
        let users = Arc::clone(&self.users);
        let ok = tokio::task::spawn_blocking(move || users.verify(&user, &password))
            .await
            .unwrap_or(false);
        if !ok {
            return Err("invalid credentials");
        }
        self.remember(print);
        Ok(())
    }
}

/// `user` and `password` from a `Basic <base64>` value.
fn basic_credentials(header: &str) -> Option<(String, String)> {
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(header.strip_prefix("Basic ")?.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

fn is_public(path: &str) -> bool {
    matches!(path, "/" | "/v1" | "/v1/" | "/healthz" | "/v1/lookup")
        || path.starts_with("/v1/heartbeat/")
        || super::inspection::is_callback(path)
}

fn unauthorized(msg: &str) -> Response {
    let mut r = ApiError::new(StatusCode::UNAUTHORIZED, msg).into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Basic realm=\"ironboot\""),
    );
    r
}

/// Middleware: requires valid basic credentials on non-public paths when a file is configured.
pub async fn require_basic(
    State(auth): State<Option<Arc<BasicAuth>>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(auth) = auth else {
        return next.run(req).await;
    };
    if is_public(req.uri().path()) {
        return next.run(req).await;
    }
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if let Err(why) = auth.check(header).await {
        auth.failed(if header.is_none() {
            "missing"
        } else {
            "invalid_credentials"
        });
        return unauthorized(why);
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bcrypt_users_verify() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let h = Htpasswd::parse(&format!("# comment\nadmin:{hash}\n"), "test").unwrap();
        assert!(h.verify("admin", "s3cret"));
        assert!(!h.verify("admin", "wrong"));
        assert!(!h.verify("nobody", "s3cret"));
        assert!(Htpasswd::parse("admin:{SHA}abc", "t").is_err());
        assert!(Htpasswd::parse("nocolon", "t").is_err());
        assert!(Htpasswd::parse("", "t").is_err());
        assert!(is_public("/v1/heartbeat/x") && is_public("/") && !is_public("/v1/nodes"));
        assert_eq!(bcrypt_cost(&hash), Some(4));
        assert_eq!(
            bcrypt_cost(&h.dummy),
            Some(4),
            "the dummy costs what the users cost"
        );
    }

    fn header(user: &str, password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    }

    #[tokio::test]
    async fn verified_credentials_are_remembered_and_failures_are_not() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let users = Arc::new(Htpasswd::parse(&format!("admin:{hash}\n"), "test").unwrap());
        let failures = Default::default();
        let auth = Arc::new(BasicAuth::new(users, Duration::from_secs(60), failures).unwrap());
        let good = header("admin", "s3cret");
        assert!(auth.check(Some(&good)).await.is_ok());
        assert!(auth.remembered(&auth.fingerprint(&good)));
        let bad = header("admin", "nope");
        assert!(auth.check(Some(&bad)).await.is_err());
        assert!(!auth.remembered(&auth.fingerprint(&bad)));
        assert!(auth.check(Some("Basic !!!")).await.is_err());
        assert!(auth.check(None).await.is_err());
    }
}
