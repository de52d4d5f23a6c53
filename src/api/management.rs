//! `/v1/nodes/{ident}/validate` and `/v1/nodes/{ident}/management/boot_device[/supported]`:
//! the node's interfaces asked directly, through the conductor.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::AppState;
use super::error::ApiError;
use super::extract::{JsonBody, QueryParams};
use super::node_input::parse_bool;
use super::nodes::node_ident;
use super::version::Version;
use crate::driver::{BootDevice, BootTarget};
use crate::model::InterfaceKind;

/// `GET /validate`: `{kind: {"result": bool[, "reason": str]}}` for every kind but vendor
/// (vendor passthru is validated per method, as in Ironic).
pub async fn validate(
    State(st): State<AppState>,
    Path(ident): Path<String>,
    version: Version,
) -> Result<axum::Json<Value>, ApiError> {
    let ident = node_ident(&ident, version)?;
    let verdicts = st.conductor.validate(&ident).await?;
    let mut doc = Map::new();
    for (kind, verdict) in verdicts {
        if kind == InterfaceKind::Vendor {
            continue;
        }
        let v = match verdict {
            Ok(()) => json!({"result": true}),
            Err(reason) => json!({"result": false, "reason": reason}),
        };
        doc.insert(kind.as_str().to_string(), v);
    }
    Ok(axum::Json(Value::Object(doc)))
}

/// `GET /v1/nodes/validate?node=<ident>`: the same, with the node in the query.
pub async fn validate_by_query(
    st: State<AppState>,
    version: Version,
    q: QueryParams,
) -> Result<axum::Json<Value>, ApiError> {
    q.only(&["node", "node_uuid"])?;
    let raw = q
        .get("node")
        .or(q.get("node_uuid"))
        .ok_or_else(|| ApiError::bad_request("Missing argument: \"node\""))?
        .to_string();
    validate(st, Path(raw), version).await
}

/// `PUT /management/inject_nmi` (1.29+): no ironboot management interface can send an NMI.
pub async fn inject_nmi(
    State(st): State<AppState>,
    Path(ident): Path<String>,
    version: Version,
) -> Result<StatusCode, ApiError> {
    if version < Version(29) {
        return Err(ApiError::not_found("Resource could not be found."));
    }
    let node = st.store.get_node(&node_ident(&ident, version)?).await?;
    Err(ApiError::bad_request(format!(
        "Driver {} does not support inject_nmi (disabled or not implemented).",
        node.driver
    )))
}

/// `GET /management/indicators` (1.63+): ironboot's management interfaces expose no
/// indicators (LEDs).
pub async fn indicators(
    State(st): State<AppState>,
    Path(ident): Path<String>,
    version: Version,
) -> Result<axum::Json<Value>, ApiError> {
    if version < Version(63) {
        return Err(ApiError::no_route());
    }
    st.store.get_node(&node_ident(&ident, version)?).await?;
    Ok(axum::Json(json!({ "indicators": [] })))
}

/// `GET /states/console`: ironboot offers no serial consoles, so the console is never on.
pub async fn console(
    State(st): State<AppState>,
    Path(ident): Path<String>,
    version: Version,
) -> Result<axum::Json<Value>, ApiError> {
    st.store.get_node(&node_ident(&ident, version)?).await?;
    Ok(axum::Json(
        json!({ "console_enabled": false, "console_info": null }),
    ))
}

pub async fn get_boot_device(
    State(st): State<AppState>,
    Path(ident): Path<String>,
    version: Version,
) -> Result<axum::Json<Value>, ApiError> {
    let ident = node_ident(&ident, version)?;
    let target = st.conductor.get_boot_device(&ident).await?;
    Ok(axum::Json(json!({
        "boot_device": target.map(|t| t.device.as_str()),
        "persistent": target.map(|t| t.persistent),
    })))
}

pub async fn supported_boot_devices(
    State(st): State<AppState>,
    Path(ident): Path<String>,
    version: Version,
) -> Result<axum::Json<Value>, ApiError> {
    let ident = node_ident(&ident, version)?;
    let devices = st.conductor.supported_boot_devices(&ident).await?;
    let names: Vec<&str> = devices.iter().map(|d| d.as_str()).collect();
    Ok(axum::Json(json!({ "supported_boot_devices": names })))
}

/// `PUT /management/boot_device` with `{"boot_device": ..., "persistent": ...}`.
pub async fn set_boot_device(
    State(st): State<AppState>,
    Path(ident): Path<String>,
    version: Version,
    JsonBody(body): JsonBody<Value>,
) -> Result<StatusCode, ApiError> {
    let Value::Object(body) = body else {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    };
    if let Some(k) = body
        .keys()
        .find(|k| !["boot_device", "persistent"].contains(&k.as_str()))
    {
        return Err(ApiError::bad_request(format!("Unknown argument: \"{k}\"")));
    }
    let name = body
        .get("boot_device")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("Missing argument: \"boot_device\""))?;
    let persistent = match body.get("persistent") {
        Some(v) => parse_bool("persistent", v)?.unwrap_or(false),
        None => false,
    };
    let device = BootDevice::parse(name)
        .ok_or_else(|| ApiError::bad_request(format!("Invalid boot device {name} specified.")))?;
    let ident = node_ident(&ident, version)?;
    st.conductor
        .set_boot_device(&ident, BootTarget { device, persistent })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
