//! API errors in Ironic's shapes: a status code and `{"error_message": "<json>"}` where the inner
//! JSON is either a fault (`faultcode`, `faultstring`, `debuginfo`: what Ironic's controllers
//! answer, and what python-ironicclient and the agent unpack) or an HTTP error (`code`, `title`,
//! `description`: what Ironic's WSGI layer answers for routing and version negotiation).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::conductor::ConductorError;
use crate::store::StoreError;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub shape: ErrorShape,
    /// Whether the answer carries the negotiated version headers: Ironic's routing errors
    /// (unknown path, resource newer than the requested version) carry none.
    pub version_headers: bool,
}

/// Which of Ironic's two error bodies an error uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorShape {
    /// `{"faultcode", "faultstring", "debuginfo"}`: raised by a resource's controller.
    Fault,
    /// `{"code", "title", "description"}`: raised before a controller is reached.
    Http,
    /// A fault document without the `error_message` wrapper: raised by Ironic's WSGI
    /// middleware (body parsing).
    Bare,
    /// `error_message` holding plain text: content negotiation.
    Plain,
}

/// Marks a response whose version headers must not be stamped (see [`ApiError::version_headers`]).
#[derive(Debug, Clone, Copy)]
pub struct NoVersionHeaders;

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            shape: ErrorShape::Fault,
            version_headers: true,
        }
    }

    /// An error in the HTTP shape, raised before a controller ran (argument validation,
    /// routing): such answers carry no version headers.
    pub fn http(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            shape: ErrorShape::Http,
            version_headers: false,
            ..Self::new(status, message)
        }
    }

    /// A plain-text error without version headers (content negotiation).
    pub fn plain(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            shape: ErrorShape::Plain,
            version_headers: false,
            ..Self::new(status, message)
        }
    }

    /// An error in the bare fault shape (see [`ErrorShape::Bare`]), without version headers.
    pub fn bare(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            shape: ErrorShape::Bare,
            version_headers: false,
            ..Self::new(status, message)
        }
    }

    /// A path this API does not have (at the requested version): Ironic's router 404, without
    /// version headers.
    pub fn no_route() -> ApiError {
        Self::http(StatusCode::NOT_FOUND, "")
    }

    /// Something the requested microversion does not have (Ironic's `NotAcceptable`).
    pub fn not_acceptable() -> ApiError {
        Self::new(StatusCode::NOT_ACCEPTABLE, "Request not acceptable.")
    }

    /// A verb the resource does not allow at the requested version.
    pub fn method_not_allowed(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, message)
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    pub fn conflict(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::CONFLICT, message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status, self.message)
    }
}

/// The body Ironic sends with every controller error.
pub fn error_body(status: StatusCode, message: &str) -> serde_json::Value {
    shaped_body(status, message, ErrorShape::Fault)
}

fn shaped_body(status: StatusCode, message: &str, shape: ErrorShape) -> serde_json::Value {
    let inner = match shape {
        ErrorShape::Fault => json!({
            "faultcode": if status.is_server_error() { "Server" } else { "Client" },
            "faultstring": message,
            "debuginfo": null,
        }),
        ErrorShape::Bare => {
            return json!({"faultcode": "Client", "faultstring": message});
        }
        ErrorShape::Plain => return json!({ "error_message": message }),
        ErrorShape::Http => json!({
            "code": status.as_u16(),
            "title": status.canonical_reason().unwrap_or(""),
            "description": message,
        }),
    };
    json!({ "error_message": inner.to_string() })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, error = %self.message, "request failed");
        }
        let mut resp = (
            self.status,
            axum::Json(shaped_body(self.status, &self.message, self.shape)),
        )
            .into_response();
        if !self.version_headers {
            resp.extensions_mut().insert(NoVersionHeaders);
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        let status = match &e {
            StoreError::NodeNotFound(_)
            | StoreError::PortNotFound(_)
            | StoreError::AllocationNotFound(_) => StatusCode::NOT_FOUND,
            StoreError::NodeLocked { .. }
            | StoreError::DuplicateNode { .. }
            | StoreError::DuplicateMac(_)
            | StoreError::DuplicatePort(_)
            | StoreError::DuplicateAllocation { .. }
            | StoreError::InstanceAssociated { .. } => StatusCode::CONFLICT,
            // Storage, not a bug: the client can retry once the operator acted.
            StoreError::NoSpace { .. } => StatusCode::INSUFFICIENT_STORAGE,
            StoreError::NotWritable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<ConductorError> for ApiError {
    fn from(e: ConductorError) -> ApiError {
        match e {
            ConductorError::Store(s) => s.into(),
            ConductorError::InvalidTransition(t) => ApiError::bad_request(t.to_string()),
            ConductorError::InvalidParameter(m) | ConductorError::Unsupported(m) => {
                ApiError::bad_request(m)
            }
            ConductorError::Conflict(m) => ApiError::conflict(m),
            e @ ConductorError::ShuttingDown => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
        }
    }
}
