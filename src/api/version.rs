//! API microversions: discovery documents at `/` and `/v1`, and negotiation of the
//! `X-OpenStack-Ironic-API-Version` header on every request.

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::error::ApiError;

pub const HEADER: &str = "x-openstack-ironic-api-version";
pub const MIN_HEADER: &str = "x-openstack-ironic-api-minimum-version";
pub const MAX_HEADER: &str = "x-openstack-ironic-api-maximum-version";

/// Oldest microversion served.
pub const MIN: Version = Version(1);
/// Newest microversion served: ≥ 1.68 so the agent enables tokens and auto-TLS, ≥ 1.73 for the
/// `deploy`/`undeploy` verbs.
pub const MAX: Version = Version(80);

/// A `1.N` microversion (only major version 1 exists).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32);

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "1.{}", self.0)
    }
}

impl Version {
    /// Parses a header value: absent → the minimum, `latest` → the maximum, else `1.N`.
    pub fn negotiate(header: Option<&str>) -> Result<Version, ApiError> {
        let raw = match header {
            None => return Ok(MIN),
            Some(h) => h.trim(),
        };
        if raw.eq_ignore_ascii_case("latest") {
            return Ok(MAX);
        }
        let minor = raw
            .strip_prefix("1.")
            .and_then(|m| {
                if m.bytes().all(|b| b.is_ascii_digit()) && !m.is_empty() {
                    m.parse::<u32>().ok()
                } else {
                    None
                }
            })
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "invalid value for {HEADER} header: {raw:?} (expected 1.N or latest)"
                ))
            })?;
        let v = Version(minor);
        if v < MIN || v > MAX {
            return Err(ApiError::new(
                StatusCode::NOT_ACCEPTABLE,
                format!("version {v} was requested but the supported range is {MIN} to {MAX}"),
            ));
        }
        Ok(v)
    }
}

/// Middleware: negotiates the version, stores it in the request and stamps response headers.
pub async fn negotiate(mut req: Request, next: Next) -> Response {
    let header = req
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut resp = match Version::negotiate(header.as_deref()) {
        Ok(v) => {
            req.extensions_mut().insert(v);
            let mut resp = next.run(req).await;
            resp.headers_mut()
                .insert(HEADER, header_value(&v.to_string()));
            resp
        }
        Err(e) => e.into_response(),
    };
    stamp_range(resp.headers_mut());
    resp
}

fn stamp_range(h: &mut HeaderMap) {
    h.insert(MIN_HEADER, header_value(&MIN.to_string()));
    h.insert(MAX_HEADER, header_value(&MAX.to_string()));
}

fn header_value(s: &str) -> HeaderValue {
    // Versions are ASCII digits and dots, always valid header values.
    HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static("1.1"))
}

fn version_doc(base: &str) -> Value {
    json!({
        "id": "v1",
        "links": [{"href": format!("{base}/v1/"), "rel": "self"}],
        "status": "CURRENT",
        "min_version": MIN.to_string(),
        "version": MAX.to_string(),
    })
}

/// `GET /`: the root document agents and clients discover versions from.
pub fn root_doc(base: &str) -> Value {
    json!({
        "name": "OpenStack Ironic API (ironboot)",
        "description": "ironboot: boot and media service with an Ironic-compatible API subset",
        "default_version": version_doc(base),
        "versions": [version_doc(base)],
    })
}

/// `GET /v1`
pub fn v1_doc(base: &str) -> Value {
    let link = |p: &str| json!([{"href": format!("{base}/v1/{p}/"), "rel": "self"}, {"href": format!("{base}/{p}/"), "rel": "bookmark"}]);
    json!({
        "id": "v1",
        "links": [{"href": format!("{base}/v1/"), "rel": "self"}],
        "media_types": [{"base": "application/json", "type": "application/vnd.openstack.ironic.v1+json"}],
        "nodes": link("nodes"),
        "ports": link("ports"),
        "drivers": link("drivers"),
        "lookup": link("lookup"),
        "heartbeat": link("heartbeat"),
        "version": version_doc(base),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation() {
        assert_eq!(Version::negotiate(None).unwrap(), MIN);
        assert_eq!(Version::negotiate(Some("latest")).unwrap(), MAX);
        assert_eq!(Version::negotiate(Some("1.68")).unwrap(), Version(68));
        assert_eq!(
            Version::negotiate(Some("1.999")).unwrap_err().status,
            StatusCode::NOT_ACCEPTABLE
        );
        assert_eq!(
            Version::negotiate(Some("1.0")).unwrap_err().status,
            StatusCode::NOT_ACCEPTABLE
        );
        for bad in ["2.1", "1.", "1.x", "one", "1.-3", ""] {
            assert_eq!(
                Version::negotiate(Some(bad)).unwrap_err().status,
                StatusCode::BAD_REQUEST,
                "{bad:?}"
            );
        }
        assert!(MAX >= Version(73));
    }
}
