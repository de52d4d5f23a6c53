//! `/v1/nodes`: create, list, show, JSON Patch, delete, states, provision and power actions.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::AppState;
use super::error::ApiError;
use super::extract::{JsonBody, QueryParams};
use super::patch::{self, PatchOp};
use super::version::Version;
use super::views::{self, NODE_FIELDS, NODE_SUMMARY_FIELDS};
use crate::conductor::ConductorError;
use crate::model::{Fields, HardwareType, Node, PowerState, ProvisionState};
use crate::store::{NodeIdent, NodeQuery, NodeSortKey};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeCreate {
    uuid: Option<Uuid>,
    name: Option<String>,
    driver: String,
    #[serde(default)]
    driver_info: Fields,
    #[serde(default)]
    properties: Fields,
    #[serde(default)]
    instance_info: Fields,
    #[serde(default)]
    extra: Fields,
    boot_interface: Option<String>,
    deploy_interface: Option<String>,
    power_interface: Option<String>,
    resource_class: Option<String>,
}

pub async fn create(
    State(st): State<AppState>,
    JsonBody(req): JsonBody<NodeCreate>,
) -> Result<Response, ApiError> {
    let hw = HardwareType::find(&req.driver).ok_or_else(|| {
        ApiError::bad_request(
            crate::model::NodeError::UnknownDriver(req.driver.clone()).to_string(),
        )
    })?;
    let mut node = Node::new(
        req.uuid.unwrap_or_else(Uuid::new_v4),
        hw,
        crate::model::now(),
    );
    node.name = req.name;
    node.driver_info = req.driver_info;
    node.properties = req.properties;
    node.instance_info = req.instance_info;
    node.extra = req.extra;
    node.resource_class = req.resource_class;
    for (field, value) in [
        (&mut node.boot_interface, req.boot_interface),
        (&mut node.deploy_interface, req.deploy_interface),
        (&mut node.power_interface, req.power_interface),
    ] {
        if let Some(v) = value {
            *field = v;
        }
    }
    node.validate()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    st.conductor.interfaces().for_node(&node)?;
    st.store.create_node(&node).await?;
    tracing::info!(node = %node.uuid, name = ?node.name, "node created");
    let location = format!("{}/v1/nodes/{}", st.base_url, node.uuid);
    let body = views::node_json(&node, NODE_FIELDS, &st.base_url, st.conductor.host());
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(body),
    )
        .into_response())
}

const LIST_PARAMS: &[&str] = &[
    "limit",
    "marker",
    "sort_key",
    "sort_dir",
    "fields",
    "detail",
    "provision_state",
    "maintenance",
    "driver",
    "associated",
];

pub async fn list(
    State(st): State<AppState>,
    q: QueryParams,
) -> Result<axum::Json<Value>, ApiError> {
    let detail = q.bool("detail")?.unwrap_or(false);
    list_nodes(st, q, detail, "nodes").await
}

pub async fn list_detail(
    State(st): State<AppState>,
    q: QueryParams,
) -> Result<axum::Json<Value>, ApiError> {
    if q.get("detail").is_some() {
        return Err(ApiError::bad_request(
            "the detail parameter is not accepted on /v1/nodes/detail",
        ));
    }
    list_nodes(st, q, true, "nodes/detail").await
}

async fn list_nodes(
    st: AppState,
    q: QueryParams,
    detail: bool,
    path: &str,
) -> Result<axum::Json<Value>, ApiError> {
    q.only(LIST_PARAMS)?;
    let fields = views::parse_fields(q.get("fields"), NODE_FIELDS)?;
    if detail && fields.is_some() {
        return Err(ApiError::bad_request(
            "fields and detail cannot be used together",
        ));
    }
    let limit = q.limit(st.max_limit)?;
    let sort_key = match q.get("sort_key") {
        None => NodeSortKey::Id,
        Some(k) => NodeSortKey::parse(k).ok_or_else(|| {
            ApiError::bad_request(format!("sort_key {k:?} is not supported; use id, uuid, name, created_at, provision_state or driver"))
        })?,
    };
    let descending = match q.get("sort_dir") {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(d) => {
            return Err(ApiError::bad_request(format!(
                "sort_dir {d:?} must be asc or desc"
            )));
        }
    };
    let provision_state = q
        .get("provision_state")
        .map(|s| {
            s.parse::<ProvisionState>()
                .map_err(|e| ApiError::bad_request(e.to_string()))
        })
        .transpose()?;
    // ironboot has no compute service, so no node is ever associated with an instance.
    if q.bool("associated")? == Some(true) {
        return Ok(axum::Json(json!({ "nodes": [] })));
    }
    let query = NodeQuery {
        provision_state,
        maintenance: q.bool("maintenance")?,
        driver: q.get("driver").map(String::from),
        sort_key,
        descending,
        marker: q.uuid("marker")?,
        limit: Some(limit),
        ..Default::default()
    };
    let nodes = st.store.list_nodes(&query).await?;
    let shown: Vec<&str> = match (&fields, detail) {
        (Some(f), _) => f.iter().map(String::as_str).collect(),
        (None, true) => NODE_FIELDS.to_vec(),
        (None, false) => NODE_SUMMARY_FIELDS.to_vec(),
    };
    let docs: Vec<Value> = nodes
        .iter()
        .map(|n| views::node_json(n, &shown, &st.base_url, st.conductor.host()))
        .collect();
    let mut body = json!({ "nodes": docs });
    if nodes.len() as u32 == limit
        && let Some(last) = nodes.last()
    {
        let mut params: Vec<(String, String)> =
            q.0.iter()
                .filter(|(k, _)| k.as_str() != "marker" && k.as_str() != "limit")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
        params.push(("limit".into(), limit.to_string()));
        params.push(("marker".into(), last.uuid.to_string()));
        let query = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish();
        body["next"] = json!(format!("{}/v1/{path}?{query}", st.base_url));
    }
    Ok(axum::Json(body))
}

pub async fn show(
    State(st): State<AppState>,
    Path(ident): Path<String>,
    q: QueryParams,
) -> Result<axum::Json<Value>, ApiError> {
    q.only(&["fields"])?;
    let fields = views::parse_fields(q.get("fields"), NODE_FIELDS)?;
    let node = st.store.get_node(&NodeIdent::parse(&ident)).await?;
    let shown: Vec<&str> = match &fields {
        Some(f) => f.iter().map(String::as_str).collect(),
        None => NODE_FIELDS.to_vec(),
    };
    Ok(axum::Json(views::node_json(
        &node,
        &shown,
        &st.base_url,
        st.conductor.host(),
    )))
}

/// Fields a JSON Patch may change.
const WRITABLE: &[&str] = &[
    "name",
    "driver",
    "driver_info",
    "properties",
    "instance_info",
    "extra",
    "boot_interface",
    "deploy_interface",
    "power_interface",
    "resource_class",
    "maintenance",
    "maintenance_reason",
];

/// What a removed top-level field becomes.
fn removed_value(field: &str) -> Option<Value> {
    match field {
        "driver_info" | "properties" | "instance_info" | "extra" => Some(json!({})),
        "name" | "resource_class" | "maintenance_reason" => Some(Value::Null),
        "maintenance" => Some(json!(false)),
        _ => None,
    }
}

fn patch_doc(node: &Node) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("name".into(), json!(node.name));
    m.insert("driver".into(), json!(node.driver));
    m.insert(
        "driver_info".into(),
        Value::Object(node.driver_info.clone()),
    );
    m.insert("properties".into(), Value::Object(node.properties.clone()));
    m.insert(
        "instance_info".into(),
        Value::Object(node.instance_info.clone()),
    );
    m.insert("extra".into(), Value::Object(node.extra.clone()));
    m.insert("boot_interface".into(), json!(node.boot_interface));
    m.insert("deploy_interface".into(), json!(node.deploy_interface));
    m.insert("power_interface".into(), json!(node.power_interface));
    m.insert("resource_class".into(), json!(node.resource_class));
    m.insert("maintenance".into(), json!(node.maintenance));
    m.insert("maintenance_reason".into(), json!(node.maintenance_reason));
    m
}

/// Reads the patched document back into `node`, checking every type.
fn apply_doc(node: &mut Node, doc: Map<String, Value>, ops: &[PatchOp]) -> Result<(), ApiError> {
    fn string(doc: &Map<String, Value>, k: &str) -> Result<String, ApiError> {
        doc[k].as_str().map(String::from).ok_or_else(|| {
            ApiError::bad_request(format!("'/{k}' must be a string, got {}", doc[k]))
        })
    }
    fn opt_string(doc: &Map<String, Value>, k: &str) -> Result<Option<String>, ApiError> {
        match &doc[k] {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s.clone())),
            other => Err(ApiError::bad_request(format!(
                "'/{k}' must be a string or null, got {other}"
            ))),
        }
    }
    fn object(doc: &Map<String, Value>, k: &str) -> Result<Fields, ApiError> {
        doc[k].as_object().cloned().ok_or_else(|| {
            ApiError::bad_request(format!("'/{k}' must be a JSON object, got {}", doc[k]))
        })
    }
    let old_driver = node.driver.clone();
    node.name = opt_string(&doc, "name")?;
    node.driver = string(&doc, "driver")?;
    node.driver_info = object(&doc, "driver_info")?;
    node.properties = object(&doc, "properties")?;
    node.instance_info = object(&doc, "instance_info")?;
    node.extra = object(&doc, "extra")?;
    node.boot_interface = string(&doc, "boot_interface")?;
    node.deploy_interface = string(&doc, "deploy_interface")?;
    node.power_interface = string(&doc, "power_interface")?;
    node.resource_class = opt_string(&doc, "resource_class")?;
    node.maintenance = doc["maintenance"]
        .as_bool()
        .ok_or_else(|| ApiError::bad_request("'/maintenance' must be a boolean"))?;
    node.maintenance_reason = opt_string(&doc, "maintenance_reason")?;
    if node.driver != old_driver {
        // A new hardware type resets the interfaces the patch did not set explicitly.
        let hw = HardwareType::find(&node.driver).ok_or_else(|| {
            ApiError::bad_request(
                crate::model::NodeError::UnknownDriver(node.driver.clone()).to_string(),
            )
        })?;
        let touched = |f: &str| {
            ops.iter()
                .any(|op| op.path.trim_start_matches('/').split('/').next() == Some(f))
        };
        if !touched("boot_interface") {
            node.boot_interface = hw.boot.default.into();
        }
        if !touched("deploy_interface") {
            node.deploy_interface = hw.deploy.default.into();
        }
        if !touched("power_interface") {
            node.power_interface = hw.power.default.into();
        }
        // Not writable through the API yet, so always the new type's default.
        node.management_interface = hw.management.default.into();
    }
    if !node.maintenance {
        node.maintenance_reason = None;
    }
    node.validate()
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

/// States in which the driver and interfaces may change (nothing is in flight).
fn interfaces_changeable(state: ProvisionState) -> bool {
    matches!(
        state,
        ProvisionState::Enroll | ProvisionState::Manageable | ProvisionState::Available
    ) || state.is_failure()
}

pub async fn update(
    State(st): State<AppState>,
    Path(ident): Path<String>,
    JsonBody(ops): JsonBody<Vec<PatchOp>>,
) -> Result<axum::Json<Value>, ApiError> {
    if ops.is_empty() {
        return Err(ApiError::bad_request("the patch is empty"));
    }
    let ident = NodeIdent::parse(&ident);
    let conductor = st.conductor.clone();
    let node = st
        .conductor
        .with_reserved(&ident, |mut task| async move {
            let result = async {
                let mut doc = patch_doc(&task.node);
                patch::apply(&mut doc, &ops, WRITABLE, removed_value)?;
                let mut updated = task.node.clone();
                apply_doc(&mut updated, doc, &ops)?;
                let changes_interfaces = updated.driver != task.node.driver
                    || updated.boot_interface != task.node.boot_interface
                    || updated.deploy_interface != task.node.deploy_interface
                    || updated.power_interface != task.node.power_interface
                    || updated.management_interface != task.node.management_interface;
                if changes_interfaces && !interfaces_changeable(task.node.provision_state) {
                    return Err(ApiError::conflict(format!(
                        "the driver and interfaces of node {} cannot change while it is {}",
                        task.node.ident(),
                        task.node.provision_state
                    )));
                }
                if changes_interfaces {
                    // Only interfaces this conductor has enabled (as Ironic refuses them).
                    conductor.interfaces().for_node(&updated)?;
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
    Ok(axum::Json(views::node_json(
        &node,
        NODE_FIELDS,
        &st.base_url,
        st.conductor.host(),
    )))
}

pub async fn delete(
    State(st): State<AppState>,
    Path(ident): Path<String>,
) -> Result<StatusCode, ApiError> {
    let ident = NodeIdent::parse(&ident);
    let store = st.store.clone();
    st.conductor
        .with_reserved(&ident, |task| async move {
            let state = task.node.provision_state;
            let result = if !state.deletable() {
                Err(ConductorError::Conflict(format!(
                    "node {} cannot be deleted while it is {state}; undeploy or manage it first",
                    task.node.ident()
                )))
            } else {
                store
                    .delete_node(task.node.uuid)
                    .await
                    .map_err(ConductorError::from)
            };
            (task, result)
        })
        .await
        .map_err(ApiError::from)?;
    tracing::info!(node = %ident, "node deleted");
    Ok(StatusCode::NO_CONTENT)
}

pub async fn states(
    State(st): State<AppState>,
    Path(ident): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let node = st.store.get_node(&NodeIdent::parse(&ident)).await?;
    Ok(axum::Json(views::node_states(&node)))
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
    let ident = NodeIdent::parse(&ident);
    st.conductor
        .provision(&ident, &req.target, req.configdrive)
        .await?;
    let location = format!("{}/v1/nodes/{}/states", st.base_url, ident);
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
    JsonBody(req): JsonBody<PowerRequest>,
) -> Result<Response, ApiError> {
    let target = PowerState::parse(&req.target).ok_or_else(|| {
        ApiError::bad_request(format!(
            "{:?} is not a valid power state target; use power on, power off, rebooting, soft power off or soft rebooting",
            req.target
        ))
    })?;
    if req.timeout == Some(0) {
        return Err(ApiError::bad_request(
            "timeout must be a positive number of seconds",
        ));
    }
    let ident = NodeIdent::parse(&ident);
    st.conductor.set_power(&ident, target).await?;
    let location = format!("{}/v1/nodes/{}/states", st.base_url, ident);
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)]).into_response())
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceRequest {
    reason: Option<String>,
}

async fn set_maintenance(
    st: AppState,
    ident: String,
    on: bool,
    reason: Option<String>,
) -> Result<StatusCode, ApiError> {
    let ident = NodeIdent::parse(&ident);
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
    body: axum::body::Bytes,
) -> Result<StatusCode, ApiError> {
    let req: MaintenanceRequest = if body.is_empty() {
        MaintenanceRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))?
    };
    set_maintenance(st, ident, true, req.reason).await
}

pub async fn maintenance_off(
    State(st): State<AppState>,
    Path(ident): Path<String>,
) -> Result<StatusCode, ApiError> {
    set_maintenance(st, ident, false, None).await
}

pub async fn drivers(State(st): State<AppState>) -> axum::Json<Value> {
    let drivers: Vec<Value> = HardwareType::names()
        .into_iter()
        .map(|name| {
            json!({
                "name": name,
                "hosts": [st.conductor.host()],
                "type": "dynamic",
                "links": [{"href": format!("{}/v1/drivers/{name}", st.base_url), "rel": "self"}],
            })
        })
        .collect();
    axum::Json(json!({ "drivers": drivers }))
}
