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
use crate::conductor::verbs::VerbArgs;
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

/// The version that introduced each provision verb (Ironic's `MIN_VERB_VERSIONS`).
fn verb_since(verb: &str) -> u32 {
    match verb {
        "manage" | "provide" => 4,
        "inspect" => 6,
        "abort" => 13,
        "clean" => 15,
        "adopt" => 17,
        "rescue" | "unrescue" => 38,
        "deploy" | "undeploy" => 73,
        "service" => 87,
        _ => 1,
    }
}

/// Checks the request's arguments against the verb and the version, as Ironic does.
fn check_args(req: &ProvisionRequest, version: Version) -> Result<(), ApiError> {
    if version < Version(verb_since(&req.target)) {
        return Err(ApiError::not_acceptable());
    }
    if req.configdrive.as_ref().is_some_and(Value::is_object) && version < Version(56) {
        return Err(ApiError::bad_request(
            "Providing a JSON object for configdrive is only supported starting with API \
             version 1.56",
        ));
    }
    let gated = [
        ("deploy_steps", req.deploy_steps.is_some(), 69),
        ("disable_ramdisk", req.disable_ramdisk.is_some(), 70),
        ("service_steps", req.service_steps.is_some(), 87),
        ("runbook", req.runbook.is_some(), 92),
    ];
    if let Some((name, _, since)) = gated
        .iter()
        .find(|(_, given, since)| *given && version < Version(*since))
    {
        return Err(ApiError::bad_request(format!(
            "{name} is only supported starting with API version 1.{since}"
        )));
    }
    let unsupported = [
        ("deploy_steps", req.deploy_steps.is_some()),
        ("service_steps", req.service_steps.is_some()),
        ("runbook", req.runbook.is_some()),
    ];
    if let Some((name, _)) = unsupported.iter().find(|(_, given)| *given) {
        return Err(ApiError::bad_request(format!(
            "{name} is not supported by ironboot"
        )));
    }
    if req.rescue_password.is_some() && req.target != "rescue" {
        return Err(ApiError::bad_request(
            "\"rescue_password\" is only valid when setting target provision state to rescue",
        ));
    }
    if req.clean_steps.is_some() && req.target != "clean" {
        return Err(ApiError::bad_request(
            "\"clean_steps\" is only valid when setting target provision state to clean",
        ));
    }
    Ok(())
}

pub async fn set_provision_state(
    State(st): State<AppState>,
    Path(ident): Path<String>,
    version: Version,
    Base(base): Base,
    JsonBody(req): JsonBody<ProvisionRequest>,
) -> Result<Response, ApiError> {
    check_args(&req, version)?;
    let clean_steps = match req.clean_steps {
        None => None,
        Some(Value::Array(steps)) => Some(steps),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Invalid clean_steps: {other} is not of type 'array'"
            )));
        }
    };
    let args = VerbArgs {
        clean_steps,
        rescue_password: req.rescue_password,
    };
    let ident = node_ident(&ident, version)?;
    st.conductor
        .provision_with(&ident, &req.target, req.configdrive, args)
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetRequest {
    target: Value,
}

/// Sets the node's boot mode or secure boot through its management interface (1.76+), as
/// Ironic's `fake` management does: accepted (202); `apply` records what the interface did.
async fn set_firmware_setting(
    st: AppState,
    ident: String,
    version: Version,
    base: String,
    apply: impl FnOnce(&mut crate::model::Node) + Send + 'static,
) -> Result<Response, ApiError> {
    if version < Version(76) {
        return Err(ApiError::not_found(
            "This endpoint is supported starting with the API version 1.76",
        ));
    }
    let ident = node_ident(&ident, version)?;
    st.conductor
        .with_reserved(&ident, |mut task| async move {
            let result = if task.node.management_interface == "fake" {
                apply(&mut task.node);
                task.save().await.map_err(ApiError::from)
            } else {
                Err(ApiError::bad_request(format!(
                    "The {} management interface of node {} cannot change firmware settings",
                    task.node.management_interface, task.node.uuid
                )))
            };
            (task, result)
        })
        .await?;
    let location = format!("{base}/v1/nodes/{ident}/states");
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)]).into_response())
}

pub async fn set_boot_mode(
    State(st): State<AppState>,
    Path(ident): Path<String>,
    version: Version,
    Base(base): Base,
    JsonBody(req): JsonBody<TargetRequest>,
) -> Result<Response, ApiError> {
    let mode = match req.target.as_str() {
        Some(m @ ("bios" | "uefi")) => m.to_string(),
        _ => {
            return Err(ApiError::bad_request(format!(
                "Invalid boot mode {}: use bios or uefi",
                req.target
            )));
        }
    };
    // The fake management interface accepts a boot mode and changes nothing it reports.
    let _ = mode;
    set_firmware_setting(st, ident, version, base, |_| {}).await
}

pub async fn set_secure_boot(
    State(st): State<AppState>,
    Path(ident): Path<String>,
    version: Version,
    Base(base): Base,
    JsonBody(req): JsonBody<TargetRequest>,
) -> Result<Response, ApiError> {
    let on = crate::api::node_input::parse_bool("target", &req.target)?
        .ok_or_else(|| ApiError::bad_request("Invalid secure boot target: null"))?;
    // No ironboot management interface can change secure boot: the request is accepted and
    // fails on the node, as with Ironic's fake management.
    set_firmware_setting(st, ident, version, base, move |n| {
        n.last_error = Some(format!(
            "Failed to change secure_boot state to '{}': Driver {} does not support \
             set_secure_boot_state (disabled or not implemented).",
            if on { "True" } else { "False" },
            n.driver
        ));
    })
    .await
}
