//! `POST /v1/continue_inspection`: where an agent booted for inspection posts what it found,
//! and `GET /v1/nodes/{node}/inventory`, where it can be read back.
//!
//! The callback is open like the other ramdisk endpoints (IPA posts before it has looked its
//! node up, so it sends no token): only a node waiting in `inspect wait` whose port matches one
//! of the reported MACs takes the report; everything else is the same 404. A report that does
//! carry an `agent_token` (an agent that was handed one on its virtual media, say) must carry
//! the node's: any other is refused with the heartbeat's 400, and the token is never stored
//! with the plugin data. The body is bounded by `[api] max_body_bytes` like every request.
//!
//! The answer depends on the version, as in Ironic: `{"uuid": <node>}` at 1.1 (IPA then looks
//! up with `node_uuid`), a lookup's `{"node": ..., "config": {..., "agent_token"}}` from 1.84.

use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::AppState;
use super::error::ApiError;
use super::extract::{JsonBody, QueryParams};
use super::nodes::node_ident;
use super::version::Version;
use crate::conductor::ConductorError;
use crate::conductor::inspection::InspectionReport;
use crate::conductor::ramdisk::refusal_reason;
use crate::model::MacAddress;
use crate::store::StoreError;

/// The callback exists at 1.1 (what an agent sending no version header gets, as
/// ironic-inspector's drop-in) and from 1.84 on.
const CALLBACK_SINCE: Version = Version(84);
/// The inventory endpoint's version.
const INVENTORY_SINCE: Version = Version(81);

/// `POST /v1/continue_inspection[?node_uuid=]` → 202. Refusals are counted and logged like
/// lookup's and heartbeat's (endpoint `continue_inspection`).
pub async fn continue_inspection(
    State(st): State<AppState>,
    version: Version,
    q: QueryParams,
    JsonBody(body): JsonBody<Value>,
) -> Result<(StatusCode, axum::Json<Value>), ApiError> {
    match take_report(&st, version, &q, body).await {
        Ok((uuid, answer)) => {
            tracing::info!(node = %uuid, "inventory received from the agent");
            Ok((StatusCode::ACCEPTED, axum::Json(answer)))
        }
        Err((reason, e)) => {
            super::ramdisk::refused(&st, "continue_inspection", reason, &e);
            Err(e)
        }
    }
}

/// The checks, then the conductor: the node and the answer, or a refusal with its reason
/// label.
async fn take_report(
    st: &AppState,
    version: Version,
    q: &QueryParams,
    body: Value,
) -> Result<(uuid::Uuid, Value), (&'static str, ApiError)> {
    let invalid = |e: ApiError| ("invalid_request", e);
    let report = check_request(version, q, body).map_err(invalid)?;
    // With discovery on, a report nobody claims enrolls its machine: keep what that needs.
    let discovery = st
        .ramdisk
        .discovery_driver
        .as_deref()
        .filter(|_| report.node_uuid.is_none() && report.agent_token.is_none())
        .map(|driver| (driver, report.addresses.clone(), report.data.clone()));
    let conductor = |e: ConductorError| (refusal_reason(&e), ApiError::from(e));
    let issue_token = version >= CALLBACK_SINCE;
    match st.conductor.continue_inspection(report, issue_token).await {
        Ok((node, Some(token))) => Ok((
            node.uuid,
            json!({
                "node": super::ramdisk::node_view(&node, &st.base_url),
                "config": super::ramdisk::config_view(&st.ramdisk, &token),
            }),
        )),
        Ok((node, None)) => Ok((node.uuid, json!({"uuid": node.uuid}))),
        // A discovered node is in `enroll`, where no agent is looked up: its uuid only.
        Err(ConductorError::Store(StoreError::NodeNotFound(_))) if discovery.is_some() => {
            let (driver, addresses, data) = discovery.unwrap_or_default();
            let uuid = st
                .conductor
                .discover(&addresses, driver, data)
                .await
                .map_err(conductor)?;
            Ok((uuid, json!({"uuid": uuid})))
        }
        Err(e) => Err(conductor(e)),
    }
}

/// The version, query and body checks.
fn check_request(
    version: Version,
    q: &QueryParams,
    body: Value,
) -> Result<InspectionReport, ApiError> {
    let Value::Object(mut data) = body else {
        return Err(ApiError::bad_request(
            "Schema error for data: the body must be a JSON object",
        ));
    };
    let agent_token = match data.remove("agent_token") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) => Some(t),
        Some(_) => {
            return Err(ApiError::bad_request(
                "Schema error for data: agent_token must be a string",
            ));
        }
    };
    let addresses = check_report(&data)?;
    // Ironic checks the body's schema first, then the version.
    if version != Version(1) && version < CALLBACK_SINCE {
        return Err(ApiError::not_found(format!(
            "API version {CALLBACK_SINCE} or newer is required"
        )));
    }
    q.only(&["node_uuid"])?;
    let node_uuid = q.uuid("node_uuid")?;
    if node_uuid.is_some() && version < CALLBACK_SINCE {
        return Err(ApiError::bad_request(format!(
            "node_uuid needs API version {CALLBACK_SINCE} or newer"
        )));
    }
    if addresses.is_empty() && node_uuid.is_none() {
        return Err(ApiError::bad_request("No lookup information provided"));
    }
    Ok(InspectionReport {
        addresses,
        node_uuid,
        agent_token,
        data,
    })
}

/// Checks the report's shape (Ironic's schema: `inventory` an object whose `interfaces` list
/// has at least one entry, each with a string `mac_address`); returns its valid MACs
/// (invalid ones are dropped, as Ironic does).
fn check_report(report: &Map<String, Value>) -> Result<Vec<MacAddress>, ApiError> {
    let invalid = |m: &str| ApiError::bad_request(format!("Schema error for data: {m}"));
    let inventory = match report.get("inventory") {
        Some(Value::Object(i)) => i,
        Some(_) => return Err(invalid("'inventory' is not of type 'object'")),
        None => return Err(invalid("'inventory' is a required property")),
    };
    let interfaces = match inventory.get("interfaces") {
        Some(Value::Array(list)) if !list.is_empty() => list,
        Some(Value::Array(_)) => return Err(invalid("inventory.interfaces should be non-empty")),
        Some(_) => return Err(invalid("inventory.interfaces is not of type 'array'")),
        None => return Err(invalid("'interfaces' is a required property")),
    };
    let mut macs = Vec::new();
    for nic in interfaces {
        match nic.get("mac_address") {
            Some(Value::String(m)) => {
                if let Ok(mac) = MacAddress::parse(m) {
                    macs.push(mac);
                }
            }
            _ => return Err(invalid("every interface needs a string mac_address")),
        }
    }
    Ok(macs)
}

/// `GET /v1/nodes/{node}/inventory` → `{"inventory": ..., "plugin_data": ...}`.
pub async fn inventory(
    st: &AppState,
    ident: &str,
    version: Version,
) -> Result<axum::Json<Value>, ApiError> {
    if version < INVENTORY_SINCE {
        return Err(ApiError::no_route());
    }
    let node = st.store.get_node(&node_ident(ident, version)?).await?;
    match st.store.get_inventory(node.uuid).await? {
        Some(r) => Ok(axum::Json(
            json!({"inventory": r.inventory, "plugin_data": r.plugin_data}),
        )),
        None => Err(ApiError::not_found(format!(
            "Node inventory record for node {} could not be found.",
            node.uuid
        ))),
    }
}

/// The path of the callback, open like lookup and heartbeat.
pub fn is_callback(path: &str) -> bool {
    path == crate::conductor::inspection::CALLBACK_PATH
}
