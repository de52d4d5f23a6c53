//! HTTP basic authentication against a bcrypt htpasswd file (Ironic's `http_basic`).
//!
//! Version discovery, the ramdisk endpoints (`/v1/lookup`, `/v1/heartbeat/...`, which agent
//! tokens protect) and `/healthz` stay open, as in Ironic.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;

use super::error::ApiError;

/// Users and their bcrypt hashes.
#[derive(Debug, Clone)]
pub struct Htpasswd {
    users: HashMap<String, String>,
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
        Ok(Htpasswd { users })
    }

    /// Checks a `user:password` pair (bcrypt is slow by design: call from a blocking thread).
    pub fn verify(&self, user: &str, password: &str) -> bool {
        match self.users.get(user) {
            Some(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            None => false,
        }
    }
}

fn is_public(path: &str) -> bool {
    matches!(path, "/" | "/v1" | "/v1/" | "/healthz" | "/v1/lookup")
        || path.starts_with("/v1/heartbeat/")
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
    State(users): State<Option<Arc<Htpasswd>>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(users) = users else {
        return next.run(req).await;
    };
    if is_public(req.uri().path()) {
        return next.run(req).await;
    }
    let creds = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok());
    let Some((user, password)) = creds
        .as_deref()
        .and_then(|c| c.split_once(':'))
        .map(|(u, p)| (u.to_string(), p.to_string()))
    else {
        return unauthorized("authentication required (HTTP basic)");
    };
    let ok = tokio::task::spawn_blocking(move || users.verify(&user, &password))
        .await
        .unwrap_or(false);
    if !ok {
        return unauthorized("invalid credentials");
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
    }
}
