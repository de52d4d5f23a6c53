//! Request extractors that report malformed input in Ironic's error format.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::version::Version;

/// A JSON request body; any parse or type error becomes a 400 naming what was wrong.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            ApiError::new(
                e.status(),
                format!("cannot read request body: {}", e.body_text()),
            )
        })?;
        if bytes.is_empty() {
            return Err(ApiError::bad_request(
                "request body is empty; a JSON document is required",
            ));
        }
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            if e.to_string().contains("recursion limit") {
                // Ironic's JSON parser refuses such a body before its API runs.
                ApiError::bare(
                    StatusCode::BAD_REQUEST,
                    "Request body JSON is nested too deeply. Please contact the service \
                     administrator.",
                )
            } else {
                ApiError::bad_request(format!("invalid request body: {e}"))
            }
        })
    }
}

/// Query parameters, checked against the names a route accepts. A repeated parameter takes its
/// last value, except `fields`, whose values add up (as with Ironic).
#[derive(Debug, Default)]
pub struct QueryParams(pub BTreeMap<String, String>, Vec<String>, Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let mut map = BTreeMap::new();
        let mut fields = Vec::new();
        let mut repeated = None;
        if let Some(q) = parts.uri.query() {
            for (k, v) in form_urlencoded::parse(q.as_bytes()) {
                if k == "fields" {
                    fields.push(v.to_string());
                } else if map.contains_key(k.as_ref()) && repeated.is_none() {
                    repeated = Some(k.to_string());
                }
                map.insert(k.to_string(), v.to_string());
            }
        }
        Ok(QueryParams(map, fields, repeated))
    }
}

impl QueryParams {
    /// Refuses parameters outside `allowed`.
    pub fn only(&self, allowed: &[&str]) -> Result<(), ApiError> {
        if let Some(k) = &self.2 {
            return Err(ApiError::bad_request(format!(
                "Expected string for {k}: a single value (it was given more than once)"
            )));
        }
        if let Some(bad) = self.0.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(ApiError::bad_request(format!(
                "unknown query parameter {bad:?}; accepted: {}",
                allowed.join(", ")
            )));
        }
        Ok(())
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    /// `sort_dir`: `asc` (the default) or `desc`; anything else is Ironic's 400.
    pub fn descending(&self) -> Result<bool, ApiError> {
        match self.get("sort_dir") {
            None | Some("asc") => Ok(false),
            Some("desc") => Ok(true),
            Some(d) => Err(ApiError::bad_request(format!(
                "Invalid sort direction: {d}. Acceptable values are 'asc' or 'desc'"
            ))),
        }
    }

    /// A comma-separated filter (`shard=a,b`): its trimmed items, none when not given.
    pub fn list(&self, k: &str) -> Vec<String> {
        self.get(k)
            .map(|s| s.split(',').map(|x| x.trim().to_string()).collect())
            .unwrap_or_default()
    }

    /// Every `fields=` value, joined with commas.
    pub fn fields(&self) -> Option<String> {
        (!self.1.is_empty()).then(|| self.1.join(","))
    }

    pub fn bool(&self, k: &str) -> Result<Option<bool>, ApiError> {
        self.get(k)
            .map(|v| match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" | "t" | "y" => Ok(true),
                "false" | "0" | "no" | "off" | "f" | "n" => Ok(false),
                _ => Err(ApiError::bad_request(format!(
                    "Invalid {k}: Unrecognized value '{v}', acceptable values are: '0', '1', \
                     'f', 'false', 'n', 'no', 'off', 'on', 't', 'true', 'y', 'yes'"
                ))),
            })
            .transpose()
    }

    pub fn uuid(&self, k: &str) -> Result<Option<uuid::Uuid>, ApiError> {
        self.get(k)
            .map(|v| {
                uuid::Uuid::parse_str(v).map_err(|_| {
                    ApiError::bad_request(format!("query parameter {k}={v:?} is not a UUID"))
                })
            })
            .transpose()
    }

    /// `limit`: a positive integer, capped at `max`; absent means `max`.
    pub fn limit(&self, max: u32) -> Result<u32, ApiError> {
        match self.get("limit") {
            None => Ok(max),
            // A limit beyond any integer is still a limit: capped like any other.
            Some(v) if v.len() > 18 && v.bytes().all(|b| b.is_ascii_digit()) => Ok(max),
            Some(v) => match v.parse::<u64>() {
                Ok(0) => Err(ApiError::bad_request("Limit must be positive")),
                Err(_) => Err(ApiError::bad_request(format!(
                    "Invalid limit: invalid literal for int() with base 10: '{v}'"
                ))),
                Ok(n) => Ok(n.min(u64::from(max)) as u32),
            },
        }
    }
}

/// The negotiated microversion (set by the version middleware).
impl<S: Send + Sync> FromRequestParts<S> for Version {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        Ok(parts
            .extensions
            .get::<Version>()
            .copied()
            .unwrap_or(super::version::MIN))
    }
}
