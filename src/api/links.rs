//! Where links point: the base URL of every `href`, `next` and `Location` the API writes.
//!
//! A configured `[api] public_url` wins (the operator said where clients reach the API).
//! Otherwise the request says it: `X-Forwarded-Proto` / `X-Forwarded-Host` when the peer is a
//! trusted proxy (`[api] trusted_proxies`), else the `Host` header, else the derived URL. So a
//! client behind a proxy follows links back through the proxy, as with Ironic.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;

use super::AppState;
use super::error::ApiError;

/// How the base URL of links is chosen.
#[derive(Debug, Clone)]
pub enum LinkPolicy {
    /// `[api] public_url` was configured.
    Fixed(String),
    /// From the request, with `fallback` when it says nothing usable.
    FromRequest {
        fallback: String,
        trusted_proxies: Arc<[IpAddr]>,
    },
}

impl LinkPolicy {
    /// The base URL (no trailing slash) for a request with `headers` from `peer`.
    pub fn base(&self, headers: &HeaderMap, peer: Option<IpAddr>) -> String {
        let (fallback, trusted) = match self {
            LinkPolicy::Fixed(url) => return url.clone(),
            LinkPolicy::FromRequest {
                fallback,
                trusted_proxies,
            } => (fallback, trusted_proxies),
        };
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                // A proxy chain appends: the first entry is what the client asked for.
                .and_then(|v| v.split(',').next())
                .map(str::trim)
                .filter(|v| valid_host_or_scheme(v))
                .map(str::to_string)
        };
        let proxied = peer.is_some_and(|p| trusted.contains(&p));
        // RFC 7239 `Forwarded: proto=https;host=example` (its first element) wins over the
        // X-Forwarded-* pair, as with Ironic's proxy-header parsing.
        let forwarded = |key: &str| {
            headers
                .get("forwarded")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .and_then(|first| {
                    first.split(';').find_map(|kv| {
                        let (k, v) = kv.trim().split_once('=')?;
                        k.eq_ignore_ascii_case(key)
                            .then(|| v.trim_matches('"').to_string())
                    })
                })
                .filter(|v| valid_host_or_scheme(v))
        };
        let fallback_scheme = fallback.split("://").next().unwrap_or("http").to_string();
        let scheme = proxied
            .then(|| forwarded("proto").or_else(|| header("x-forwarded-proto")))
            .flatten()
            .unwrap_or(fallback_scheme);
        let host = proxied
            .then(|| forwarded("host").or_else(|| header("x-forwarded-host")))
            .flatten()
            .or_else(|| header("host"));
        match host {
            Some(h) => format!("{scheme}://{h}"),
            None => fallback.clone(),
        }
    }
}

/// A host (`name[:port]`, `[v6]:port`) or scheme: no characters that could break out of a URL.
fn valid_host_or_scheme(v: &str) -> bool {
    !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b))
}

/// The base URL of this request's links.
#[derive(Debug, Clone)]
pub struct Base(pub String);

impl FromRequestParts<AppState> for Base {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        Ok(Base(st.links.base(&parts.headers, peer)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn configured_url_wins_then_trusted_proxy_then_host() {
        let fixed = LinkPolicy::Fixed("https://api.example".into());
        let h = headers(&[("host", "other:1"), ("x-forwarded-host", "p:2")]);
        assert_eq!(fixed.base(&h, None), "https://api.example");

        let policy = LinkPolicy::FromRequest {
            fallback: "http://10.0.0.1:6385".into(),
            trusted_proxies: Arc::from(vec![IpAddr::from([127, 0, 0, 1])]),
        };
        let local = Some(IpAddr::from([127, 0, 0, 1]));
        let remote = Some(IpAddr::from([192, 0, 2, 9]));
        let h = headers(&[
            ("host", "inner:6385"),
            ("x-forwarded-host", "proxy.example:8443, inner"),
            ("x-forwarded-proto", "https"),
        ]);
        assert_eq!(policy.base(&h, local), "https://proxy.example:8443");
        // An untrusted peer's forwarding headers are ignored.
        assert_eq!(policy.base(&h, remote), "http://inner:6385");
        assert_eq!(
            policy.base(&HeaderMap::new(), local),
            "http://10.0.0.1:6385"
        );
        let evil = headers(&[("host", "a/b@c")]);
        assert_eq!(policy.base(&evil, local), "http://10.0.0.1:6385");
    }
}
