//! `/v1/nodes/{ident}/states` and the actions on a node: provision verbs, power, maintenance.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;

use super::AppState;
use super::error::ApiError;
use super::extract::JsonBody;
use super::links::Base;
use super::node_view;
use super::nodes::node_ident;
use super::version::Version;
use crate::model::PowerState;
use crate::store::NodeIdent;

pub async fn states(
    State(st): State<AppState>,
    Path(ident): Path<String>,
    version: Version,
) -> Result<axum::Json<Value>, ApiError> {
    let node = st.store.get_node(&node_ident(&ident, version)?).await?;
    Ok(axum::Json(node_view::node_states(&node, version)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionRequest {
    target: String,
    configdrive: Option<Value>,
    clean_steps: Option<Value>,
    deploy_steps: Option<Value>,
    service_steps: Option<Value>,
    rescue_password: Option<String>,
    disable_ramdisk: Option<bool>,
    runbook: Option<String>,
}

pub async fn set_provision_state(
    State(st): State<AppState>,
    Path(ident): Path<String>,
    version: Version,
    Base(base): Base,
    JsonBody(req): JsonBody<ProvisionRequest>,
) -> Result<Response, ApiError> {
    if matches!(req.target.as_str(), "deploy" | "undeploy") && version < Version(73) {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            format!(
                "target {:?} needs API version 1.73 or later (requested {version})",
                req.target
            ),
        ));
    }
    let unsupported = [
        ("clean_steps", req.clean_steps.is_some()),
        ("deploy_steps", req.deploy_steps.is_some()),
        ("service_steps", req.service_steps.is_some()),
        ("rescue_password", req.rescue_password.is_some()),
        ("disable_ramdisk", req.disable_ramdisk.is_some()),
        ("runbook", req.runbook.is_some()),
    ];
    if let Some((name, _)) = unsupported.iter().find(|(_, given)| *given) {
        return Err(ApiError::bad_request(format!(
            "{name} is not supported by ironboot"
        )));
    }
    let ident = node_ident(&ident, version)?;
    st.conductor
        .provision(&ident, &req.target, req.configdrive)
        .await?;
    let location = format!("{base}/v1/nodes/{ident}/states");
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)]).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerRequest {
    target: String,
    timeout: Option<u64>,
}

pub async fn set_power_state(
    State(st): State<AppState>,
    Path(ident): Path<String>,
    version: Version,
    Base(base): Base,
    JsonBody(req): JsonBody<PowerRequest>,
) -> Result<Response, ApiError> {
    let target = PowerState::parse(&req.target).ok_or_else(|| {
        ApiError::bad_request(format!(
            "{:?} is not a valid power state target; use power on, power off, rebooting, soft power off or soft rebooting",
            req.target
        ))
    })?;
    if req.timeout.is_some() && version < Version(27) {
        return Err(ApiError::not_acceptable());
    }
    if req.timeout == Some(0) {
        return Err(ApiError::bad_request(
            "timeout must be a positive number of seconds",
        ));
    }
    let ident = node_ident(&ident, version)?;
    st.conductor.set_power(&ident, target).await?;
    let location = format!("{base}/v1/nodes/{ident}/states");
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)]).into_response())
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceRequest {
    reason: Option<String>,
}

async fn set_maintenance(
    st: AppState,
    ident: NodeIdent,
    on: bool,
    reason: Option<String>,
) -> Result<StatusCode, ApiError> {
    st.conductor
        .with_reserved(&ident, |mut task| async move {
            task.node.maintenance = on;
            task.node.maintenance_reason = if on { reason } else { None };
            let result = task.save().await.map_err(ApiError::from);
            (task, result)
        })
        .await?;
    Ok(StatusCode::ACCEPTED)
}

/// The body (`{"reason": ...}`) is optional.
pub async fn maintenance_on(
    State(st): State<AppState>,
    Path(ident): Path<String>,
    version: Version,
    body: axum::body::Bytes,
) -> Result<StatusCode, ApiError> {
    let req: MaintenanceRequest = if body.is_empty() {
        MaintenanceRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))?
    };
    set_maintenance(st, node_ident(&ident, version)?, true, req.reason).await
}

pub async fn maintenance_off(
    State(st): State<AppState>,
    Path(ident): Path<String>,
    version: Version,
) -> Result<StatusCode, ApiError> {
    set_maintenance(st, node_ident(&ident, version)?, false, None).await
}
