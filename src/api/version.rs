//! API microversions: discovery documents at `/` and `/v1`, and negotiation of the
//! `X-OpenStack-Ironic-API-Version` header on every request.

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::error::{ApiError, NoVersionHeaders};

pub const HEADER: &str = "x-openstack-ironic-api-version";
pub const MIN_HEADER: &str = "x-openstack-ironic-api-minimum-version";
pub const MAX_HEADER: &str = "x-openstack-ironic-api-maximum-version";

/// Oldest microversion served.
pub const MIN: Version = Version(1);
/// Newest microversion served: Ironic 39's. Features ironboot does not have are answered as an
/// Ironic without them answers (see docs/api.md).
pub const MAX: Version = Version(115);

/// A `1.N` microversion (only major version 1 exists).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32);

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "1.{}", self.0)
    }
}

/// Why a version header was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionError {
    /// Not `X.Y` nor `latest`: refused before the range is even known.
    Malformed,
    /// A major version other than 1.
    Major(String),
    /// A minor version outside [`MIN`, `MAX`].
    Range(Version),
}

impl VersionError {
    pub fn to_api_error(&self) -> ApiError {
        let range = format!("The supported version range is: [{MIN}, {MAX}].");
        let mut e = ApiError::http(
            StatusCode::NOT_ACCEPTABLE,
            match self {
                VersionError::Malformed => format!("Invalid value for {HEADER_NAME} header"),
                VersionError::Major(v) => format!(
                    "Mutually exclusive versions requested. Version {v} requested but not \
                     supported by this service. {range}"
                ),
                VersionError::Range(v) => format!(
                    "Version {v} was requested but the minor version is not supported by this \
                     service. {range}"
                ),
            },
        );
        // Ironic answers a malformed header before it has stamped any version header.
        e.version_headers = !matches!(self, VersionError::Malformed);
        e
    }

    /// The root document's controller answers a refused version itself, as a fault.
    pub fn to_root_error(&self) -> ApiError {
        let e = self.to_api_error();
        ApiError {
            shape: super::error::ErrorShape::Fault,
            ..e
        }
    }
}

const HEADER_NAME: &str = "X-OpenStack-Ironic-API-Version";

impl Version {
    /// Parses a header value: absent → the minimum, `latest` → the maximum, else `X.Y`.
    pub fn negotiate(header: Option<&str>) -> Result<Version, VersionError> {
        let raw = match header {
            None => return Ok(MIN),
            Some(h) => h.trim(),
        };
        if raw.eq_ignore_ascii_case("latest") {
            return Ok(MAX);
        }
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let (major, minor) = raw
            .split_once('.')
            .filter(|(a, b)| digits(a) && digits(b))
            .ok_or(VersionError::Malformed)?;
        if major.parse::<u32>() != Ok(1) {
            return Err(VersionError::Major(raw.to_string()));
        }
        let v = Version(minor.parse().map_err(|_| VersionError::Malformed)?);
        if v < MIN || v > MAX {
            return Err(VersionError::Range(v));
        }
        Ok(v)
    }
}

/// Middleware: negotiates the version, stores it in the request and stamps response headers
/// (the range on every answer, the negotiated version on answers of a negotiated request),
/// except on the answers Ironic's router gives without them.
pub async fn negotiate(mut req: Request, next: Next) -> Response {
    let header = req
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (mut resp, negotiated) = match Version::negotiate(header.as_deref()) {
        Ok(v) => {
            req.extensions_mut().insert(v);
            (next.run(req).await, Some(v))
        }
        Err(e) if req.uri().path() == "/" => (e.to_root_error().into_response(), None),
        Err(e) => (e.to_api_error().into_response(), None),
    };
    if resp.extensions().get::<NoVersionHeaders>().is_none() {
        let h = resp.headers_mut();
        h.insert(MIN_HEADER, header_value(&MIN.to_string()));
        h.insert(MAX_HEADER, header_value(&MAX.to_string()));
        if let Some(v) = negotiated {
            h.insert(HEADER, header_value(&v.to_string()));
        }
    }
    resp
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
        "description": "ironboot: boot and media service with an Ironic-compatible API",
        "default_version": version_doc(base),
        "versions": [version_doc(base)],
    })
}

/// Resources `/v1` lists, with the version each appeared in.
const V1_RESOURCES: &[(&str, u32)] = &[
    ("chassis", 1),
    ("nodes", 1),
    ("ports", 1),
    ("drivers", 1),
    ("portgroups", 23),
    ("volume", 32),
    ("lookup", 22),
    ("heartbeat", 22),
    ("conductors", 49),
    ("allocations", 52),
    ("events", 54),
    ("deploy_templates", 55),
    ("shards", 82),
    ("runbooks", 92),
    ("inspection_rules", 96),
    ("continue_inspection", 84),
];

/// `GET /v1` at `version`.
pub fn v1_doc(base: &str, version: Version) -> Value {
    let link = |p: &str| json!([{"href": format!("{base}/v1/{p}/"), "rel": "self"}, {"href": format!("{base}/{p}/"), "rel": "bookmark"}]);
    let mut doc = json!({
        "id": "v1",
        "links": [
            {"href": format!("{base}/v1/"), "rel": "self"},
            {"href": "https://docs.openstack.org//ironic/latest/contributor//webapi.html", "rel": "describedby", "type": "text/html"},
        ],
        "media_types": {"base": "application/json", "type": "application/vnd.openstack.ironic.v1+json"},
        "version": version_doc(base),
    });
    for (name, since) in V1_RESOURCES {
        if version >= Version(*since) {
            doc[*name] = link(name);
        }
    }
    doc
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
            Version::negotiate(Some("1.999")),
            Err(VersionError::Range(Version(999)))
        );
        assert_eq!(
            Version::negotiate(Some("1.0")),
            Err(VersionError::Range(Version(0)))
        );
        assert_eq!(
            Version::negotiate(Some("2.1")),
            Err(VersionError::Major("2.1".into()))
        );
        for bad in ["1.", "1.x", "one", "1.-3", ""] {
            let e = Version::negotiate(Some(bad)).unwrap_err();
            assert_eq!(e, VersionError::Malformed, "{bad:?}");
            let api = e.to_api_error();
            assert_eq!(api.status, StatusCode::NOT_ACCEPTABLE);
            assert!(!api.version_headers);
        }
        assert!(MAX >= Version(73));
    }
}
