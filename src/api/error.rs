//! API errors in Ironic's shape: a status code and `{"error_message": "<json>"}` where the inner
//! JSON carries `faultstring`, which python-ironicclient and the agent both unpack.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::conductor::ConductorError;
use crate::store::StoreError;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
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

/// The body Ironic sends with every error.
pub fn error_body(status: StatusCode, message: &str) -> serde_json::Value {
    let fault = json!({
        "faultcode": if status.is_server_error() { "Server" } else { "Client" },
        "faultstring": message,
        "debuginfo": null,
    });
    json!({ "error_message": fault.to_string() })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, error = %self.message, "request failed");
        }
        (
            self.status,
            axum::Json(error_body(self.status, &self.message)),
        )
            .into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        let status = match &e {
            StoreError::NodeNotFound(_) | StoreError::PortNotFound(_) => StatusCode::NOT_FOUND,
            StoreError::NodeLocked { .. }
            | StoreError::DuplicateNode { .. }
            | StoreError::DuplicateMac(_) => StatusCode::CONFLICT,
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
