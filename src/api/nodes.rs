//! `/v1/nodes/{ident}` and `POST /v1/nodes`: create, show, JSON Patch, delete.
//! Lists: [`super::node_list`]; states and actions: [`super::node_states`].

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::AppState;
use super::error::ApiError;
use super::extract::{JsonBody, QueryParams};
use super::links::Base;
use super::node_input::{self, PATCH_FIELDS};
use super::node_view::{self, Shown};
use super::patch::{self, PatchOp};
use super::version::Version;
use crate::conductor::ConductorError;
use crate::model::node::validate_name;
use crate::model::{HardwareType, InterfaceKind, Node, NodeError, ProvisionState};
use crate::store::NodeIdent;

/// How a path names a node at `version`: a UUID, or (from 1.5) a name. Anything else is
/// refused before the database is asked.
pub fn node_ident(raw: &str, version: Version) -> Result<NodeIdent, ApiError> {
    if let Ok(u) = Uuid::parse_str(raw) {
        return Ok(NodeIdent::Uuid(u));
    }
    if validate_name(raw).is_err() {
        return Err(ApiError::http(
            StatusCode::BAD_REQUEST,
            format!("Expected UUID or name for node: {raw}"),
        ));
    }
    if version < Version(5) {
        // Names did not exist yet: nothing can be found by one.
        return Err(ApiError::not_found(format!(
            "Node {raw} could not be found."
        )));
    }
    Ok(NodeIdent::Name(raw.to_string()))
}

/// A node model error as Ironic words it (all are the client's).
fn node_error(e: NodeError) -> ApiError {
    match e {
        NodeError::UnknownDriver(d) => ApiError::bad_request(format!(
            "No valid host was found. Reason: No conductor service registered which supports \
             driver {d} for conductor group \"\". Ensure the driver is valid and enabled."
        )),
        NodeError::UnsupportedInterface {
            field,
            value,
            allowed,
            ..
        } => ApiError::bad_request(format!(
            "Could not find the following interface in the 'ironic.hardware.interfaces.{}' \
             entrypoint: {value}. Valid interfaces are {allowed}.",
            field.trim_end_matches("_interface")
        )),
        other => ApiError::bad_request(other.to_string()),
    }
}

/// Resolves `parent_node` (a UUID or name) to the parent's UUID.
async fn parent_uuid(st: &AppState, v: &Value) -> Result<Option<Uuid>, ApiError> {
    let Some(raw) = v.as_str() else {
        return Ok(None);
    };
    match st.store.get_node(&NodeIdent::parse(raw)).await {
        Ok(n) => Ok(Some(n.uuid)),
        Err(crate::store::StoreError::NodeNotFound(_)) => Err(ApiError::bad_request(format!(
            "Node {raw} could not be found."
        ))),
        Err(e) => Err(e.into()),
    }
}

/// The node's own checks, then the conductor's: every interface must be enabled here.
fn check_node(st: &AppState, node: &Node) -> Result<(), ApiError> {
    node.validate().map_err(node_error)?;
    st.conductor.interfaces().for_node(node)?;
    Ok(())
}

/// A node's conductor group must have a live conductor (Ironic refuses a group no conductor
/// serves).
async fn check_group(st: &AppState, node: &Node) -> Result<(), ApiError> {
    let group = &node.conductor_group;
    if group.is_empty() {
        return Ok(());
    }
    let timeout = st.conductor.settings().heartbeat_timeout;
    let now = chrono::Utc::now();
    let served = st
        .store
        .list_conductors()
        .await?
        .iter()
        .any(|c| &c.conductor_group == group && c.alive(now, timeout));
    if served {
        return Ok(());
    }
    Err(ApiError::bad_request(format!(
        "No valid host was found. Reason: No conductor service registered which supports \
         driver {} for conductor group \"{group}\". Ensure the driver is valid and enabled.",
        node.driver
    )))
}

pub async fn create(
    State(st): State<AppState>,
    version: Version,
    Base(base): Base,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let body = node_input::check_create(body, version)?;
    let driver = body["driver"].as_str().unwrap_or_default();
    let hw = HardwareType::find(driver)
        .ok_or_else(|| node_error(NodeError::UnknownDriver(driver.to_string())))?;
    let mut node = Node::new(Uuid::new_v4(), hw, crate::model::now());
    for (k, v) in &body {
        if k != "driver" && k != "parent_node" {
            node_input::set_field(&mut node, hw, k, v)?;
        }
    }
    if let Some(p) = body.get("parent_node") {
        node.parent_node = parent_uuid(&st, p).await?;
    }
    if version < Version(11) {
        // Before the enroll state (1.11) a new node was immediately available.
        node.provision_state = ProvisionState::Available;
    }
    check_node(&st, &node)?;
    check_group(&st, &node).await?;
    st.store.create_node(&node).await?;
    tracing::info!(node = %node.uuid, name = ?node.name, "node created");
    let location = format!("{base}/v1/nodes/{}", node.uuid);
    let doc = node_view::node_json(
        &node,
        &Shown::All,
        version,
        &base,
        st.conductor_for(&node).as_deref(),
    );
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(doc),
    )
        .into_response())
}

pub async fn show(
    State(st): State<AppState>,
    Path(ident): Path<String>,
    version: Version,
    Base(base): Base,
    q: QueryParams,
) -> Result<axum::Json<Value>, ApiError> {
    q.only(&["fields"])?;
    let ident = node_ident(&ident, version)?;
    let fields = node_view::parse_fields(q.fields().as_deref(), version)?;
    let node = st.store.get_node(&ident).await?;
    let shown = fields.map(Shown::Only).unwrap_or(Shown::All);
    Ok(axum::Json(node_view::node_json(
        &node,
        &shown,
        version,
        &base,
        st.conductor_for(&node).as_deref(),
    )))
}

/// The patchable fields of a node as the client wrote them (the document a patch applies to).
fn patch_doc(node: &Node) -> Map<String, Value> {
    PATCH_FIELDS
        .iter()
        .map(|f| {
            let v = match *f {
                // Raw values, not the masked or version-adjusted views.
                "driver_info" => Value::Object(node.driver_info.clone()),
                "instance_info" => Value::Object(node.instance_info.clone()),
                "parent_node" => serde_json::json!(node.parent_node),
                _ => node_view::node_value(node, f, None, super::version::MAX),
            };
            (f.to_string(), v)
        })
        .collect()
}

/// States in which the driver and interfaces may change (nothing is in flight).
fn interfaces_changeable(state: ProvisionState) -> bool {
    matches!(
        state,
        ProvisionState::Enroll | ProvisionState::Manageable | ProvisionState::Available
    ) || state.is_failure()
}

/// Checks a patch before the node is touched: known fields, the version, Ironic's rules.
fn check_patch(ops: &[PatchOp], version: Version, reset: Option<bool>) -> Result<(), ApiError> {
    let top = |op: &PatchOp| {
        op.path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or("")
            .to_string()
    };
    for op in ops {
        let field = top(op);
        if field == "traits" {
            return Err(ApiError::bad_request(
                "Cannot update node traits via node patch. Node traits should be updated via \
                 the node traits API.",
            ));
        }
        if !PATCH_FIELDS.contains(&field.as_str()) {
            return Err(ApiError::bad_request(format!(
                "Cannot patch {}. Only the following can be updated: {}",
                op.path,
                PATCH_FIELDS.join(", ")
            )));
        }
    }
    if ops
        .iter()
        .any(|op| node_input::patch_gated(&top(op), op.value.as_ref(), version))
    {
        return Err(ApiError::not_acceptable());
    }
    for op in ops {
        // Network data, once given, is a full network_data.json document.
        if top(op) == "network_data"
            && let Some(v) = &op.value
            && !v.is_null()
        {
            let missing = ["links", "networks", "services"]
                .into_iter()
                .find(|k| v.get(k).is_none());
            if let Some(k) = missing {
                return Err(ApiError::bad_request(format!(
                    "Invalid network_data: '{k}' is a required property"
                )));
            }
        }
    }
    if reset.is_some()
        && !ops
            .iter()
            .any(|op| top(op) == "driver" && op.value.is_some())
    {
        return Err(ApiError::bad_request(
            "The reset_interfaces parameter can only be used when changing the node's driver.",
        ));
    }
    Ok(())
}

/// The node after `ops`, checked; the error says what a client got wrong.
async fn patched(
    st: &AppState,
    node: &Node,
    ops: &[PatchOp],
    reset: bool,
) -> Result<Node, ApiError> {
    let before = patch_doc(node);
    let mut doc = before.clone();
    // Removing a field resets it (null = its default); the driver cannot be removed.
    patch::apply(&mut doc, ops, PATCH_FIELDS, |f| {
        (f != "driver").then_some(Value::Null)
    })?;
    let driver = doc["driver"].as_str().unwrap_or_default().to_string();
    let hw = HardwareType::find(&driver)
        .ok_or_else(|| node_error(NodeError::UnknownDriver(driver.clone())))?;
    let mut updated = node.clone();
    for f in PATCH_FIELDS {
        if doc[*f] != before[*f] && *f != "parent_node" {
            node_input::set_field(&mut updated, hw, f, &doc[*f])?;
        }
    }
    if doc["parent_node"] != before["parent_node"] {
        updated.parent_node = parent_uuid(st, &doc["parent_node"]).await?;
    }
    if updated.driver != node.driver {
        // A new hardware type: interfaces the patch did not set fall back to its defaults
        // (all of them with reset_interfaces).
        for kind in InterfaceKind::ALL {
            if reset || doc[kind.field()] == before[kind.field()] {
                updated.set_interface(kind, hw.interfaces(kind).default.to_string());
            }
        }
    }
    apply_rules(node, &mut updated)?;
    Ok(updated)
}

/// The conductor's rules on an update (protection, retirement, instances, maintenance).
fn apply_rules(node: &Node, updated: &mut Node) -> Result<(), ApiError> {
    if updated.protected
        && !node.protected
        && !matches!(
            node.provision_state,
            ProvisionState::Active | ProvisionState::Rescue
        )
    {
        return Err(ApiError::conflict(format!(
            "Node {} can only be made protected in provision states 'active' or 'rescue', the \
             current state is '{}'",
            node.uuid, node.provision_state
        )));
    }
    if !updated.protected {
        if updated.protected_reason.is_some() && updated.protected_reason != node.protected_reason {
            return Err(ApiError::bad_request(format!(
                "Cannot provide protected_reason without setting protected to True on node {}",
                node.uuid
            )));
        }
        updated.protected_reason = None;
    }
    if !updated.retired {
        if updated.retired_reason.is_some() && updated.retired_reason != node.retired_reason {
            return Err(ApiError::bad_request(format!(
                "Cannot set retired_reason without setting retired to True on node {}",
                node.uuid
            )));
        }
        updated.retired_reason = None;
    }
    if let (Some(old), Some(new)) = (node.instance_uuid, updated.instance_uuid)
        && old != new
    {
        return Err(ApiError::conflict(format!(
            "Node {} is associated with instance {old}.",
            node.uuid
        )));
    }
    if !updated.maintenance {
        updated.maintenance_reason = None;
    }
    if updated.instance_name.is_none()
        && let Some(display) = updated
            .instance_info
            .get("display_name")
            .and_then(Value::as_str)
        && updated.instance_info != node.instance_info
    {
        updated.instance_name = Some(display.to_string());
    }
    let changes_interfaces = updated.driver != node.driver
        || InterfaceKind::ALL
            .iter()
            .any(|k| updated.interface(*k) != node.interface(*k));
    if changes_interfaces && !interfaces_changeable(node.provision_state) {
        return Err(ApiError::conflict(format!(
            "the driver and interfaces of node {} cannot change while it is {}",
            node.ident(),
            node.provision_state
        )));
    }
    Ok(())
}

/// Removing the instance of a node with an allocation deletes the allocation (Ironic allows it
/// while nothing is deployed, or in maintenance).
async fn release_allocation(
    st: &AppState,
    node: &Node,
    updated: &mut Node,
) -> Result<(), ApiError> {
    let idle = matches!(
        node.provision_state,
        ProvisionState::Enroll
            | ProvisionState::Inspecting
            | ProvisionState::InspectWait
            | ProvisionState::Manageable
            | ProvisionState::Available
    );
    if !node.maintenance && !idle {
        return Err(ApiError::conflict(format!(
            "Node {} with an allocation can not have instance_uuid removed unless it is in one \
             of allowed (enroll, inspecting, inspect wait, manageable, available) states or in \
             maintenance mode. Current state is '{}'.",
            node.uuid, node.provision_state
        )));
    }
    st.conductor.forget_allocation(updated).await?;
    Ok(())
}

pub async fn update(
    State(st): State<AppState>,
    Path(ident): Path<String>,
    version: Version,
    Base(base): Base,
    q: QueryParams,
    headers: axum::http::HeaderMap,
    JsonBody(ops): JsonBody<Vec<PatchOp>>,
) -> Result<axum::Json<Value>, ApiError> {
    // A patch is JSON; a form body is read as stray arguments (Ironic's answer).
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| !ct.contains("json"));
    if form {
        return Err(ApiError::bad_request(format!(
            "Unexpected arguments: {}",
            serde_json::to_string(&ops.iter().map(|o| &o.path).collect::<Vec<_>>())
                .unwrap_or_default()
        )));
    }
    q.only(&["reset_interfaces"])?;
    let reset = q.bool("reset_interfaces")?;
    if reset.is_some() && version < Version(45) {
        return Err(ApiError::not_acceptable());
    }
    let ident = node_ident(&ident, version)?;
    check_patch(&ops, version, reset)?;
    let st2 = st.clone();
    let node = st
        .conductor
        .with_reserved(&ident, |mut task| async move {
            let result = async {
                if ops.is_empty() {
                    return Ok(task.node.clone());
                }
                let mut updated = patched(&st2, &task.node, &ops, reset.unwrap_or(false)).await?;
                check_node(&st2, &updated)?;
                if updated.conductor_group != task.node.conductor_group {
                    check_group(&st2, &updated).await?;
                }
                if task.node.allocation_uuid.is_some() && updated.instance_uuid.is_none() {
                    release_allocation(&st2, &task.node, &mut updated).await?;
                }
                task.node = updated;
                task.save().await?;
                Ok::<_, ApiError>(task.node.clone())
            }
            .await;
            (task, result)
        })
        .await?;
    tracing::info!(node = %node.uuid, "node updated");
    Ok(axum::Json(node_view::node_json(
        &node,
        &Shown::All,
        version,
        &base,
        st.conductor_for(&node).as_deref(),
    )))
}

pub async fn delete(
    State(st): State<AppState>,
    Path(ident): Path<String>,
    version: Version,
) -> Result<StatusCode, ApiError> {
    let ident = node_ident(&ident, version)?;
    let store = st.store.clone();
    let conductor = st.conductor.clone();
    st.conductor
        .with_reserved(&ident, |task| async move {
            let state = task.node.provision_state;
            let result = if task.node.protected {
                Err(ConductorError::Conflict(format!(
                    "Node {} is protected and cannot be undeployed, rebuilt or deleted",
                    task.node.uuid
                )))
            } else if !state.deletable() {
                Err(ConductorError::Conflict(format!(
                    "node {} cannot be deleted while it is {state}; undeploy or manage it first",
                    task.node.ident()
                )))
            } else {
                // The node's allocation goes with it.
                let mut node = task.node.clone();
                let forgotten = conductor.forget_allocation(&mut node).await;
                match forgotten {
                    Ok(()) => store
                        .delete_node(task.node.uuid)
                        .await
                        .map_err(ConductorError::from),
                    Err(e) => Err(ConductorError::from(e)),
                }
            };
            (task, result)
        })
        .await
        .map_err(ApiError::from)?;
    tracing::info!(node = %ident, "node deleted");
    Ok(StatusCode::NO_CONTENT)
}
