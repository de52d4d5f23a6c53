//! `/v1/ports`: create, list, show, JSON Patch, delete; Ironic's schema (string booleans), its
//! version gating and its rule that a port's connectivity only changes on an idle node.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::AppState;
use super::error::ApiError;
use super::extract::{JsonBody, QueryParams};
use super::links::Base;
use super::node_input::parse_bool;
use super::nodes::node_ident;
use super::patch::{self, PatchOp};
use super::version::Version;
use super::views::{self, PORT_SUMMARY_FIELDS, port_field_since};
use crate::model::{MacAddress, Node, Port, ProvisionState};
use crate::store::{NodeIdent, PortQuery, PortSortKey, StoreError};

/// Fields a create body or a patch may write (Ironic's port schema).
const WRITABLE: &[&str] = &[
    "address",
    "extra",
    "is_smartnic",
    "local_link_connection",
    "node_uuid",
    "physical_network",
    "portgroup_uuid",
    "pxe_enabled",
    "name",
    "description",
    "vendor",
    "category",
    "available_for_dynamic_portgroup",
];

fn schema_error(detail: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("Schema error for port: {detail}"))
}

/// Checks one field's type (and length) as the schema does.
fn check_type(field: &str, v: &Value) -> Result<(), ApiError> {
    let max = match field {
        "physical_network" => Some(64),
        "description" => Some(255),
        "vendor" => Some(32),
        "category" => Some(80),
        _ => None,
    };
    match (field, v) {
        ("address" | "node_uuid", Value::String(_)) => Ok(()),
        ("extra" | "local_link_connection", Value::Object(_) | Value::Null) => Ok(()),
        ("pxe_enabled" | "is_smartnic", _) => parse_bool(field, v).map(|_| ()),
        ("available_for_dynamic_portgroup", Value::Bool(_)) => Ok(()),
        ("uuid" | "portgroup_uuid" | "physical_network" | "name", Value::Null) => Ok(()),
        ("description" | "vendor" | "category", Value::Null) => Ok(()),
        (_, Value::String(s)) if max.is_some_and(|m| s.chars().count() > m) => {
            Err(schema_error(format!("'{s}' is too long")))
        }
        (
            "uuid" | "portgroup_uuid" | "physical_network" | "name" | "description" | "vendor"
            | "category",
            Value::String(_),
        ) => Ok(()),
        (_, other) => Err(schema_error(format!("{other} is not valid for {field}"))),
    }
}

/// Whether `field` may be given (non-empty) at `version`.
fn gated(field: &str, v: &Value, version: Version) -> bool {
    port_field_since(field).is_some_and(|since| version < since) && !v.is_null()
}

fn invalid_mac(v: &str) -> ApiError {
    ApiError::bad_request(format!("Expected valid MAC address for address: {v}"))
}

/// Writes one checked field into `port`.
fn set_field(port: &mut Port, field: &str, v: &Value) -> Result<(), ApiError> {
    check_type(field, v)?;
    let opt = |v: &Value| v.as_str().map(String::from);
    let obj = |v: &Value| v.as_object().cloned().unwrap_or_default();
    match field {
        "address" => {
            let s = v.as_str().unwrap_or_default();
            port.address = MacAddress::parse(s).map_err(|_| invalid_mac(s))?;
        }
        "extra" => port.extra = obj(v),
        "local_link_connection" => {
            let mut llc = obj(v);
            super::local_link::check(&mut llc)?;
            port.local_link_connection = llc;
        }
        "pxe_enabled" => port.pxe_enabled = parse_bool(field, v)?.unwrap_or(true),
        "is_smartnic" => port.is_smartnic = parse_bool(field, v)?.unwrap_or(false),
        "physical_network" => {
            if v == "" {
                return Err(ApiError::bad_request(
                    "A non-empty value is required when setting physical_network",
                ));
            }
            port.physical_network = opt(v);
        }
        "name" => port.name = opt(v),
        "description" => port.description = opt(v),
        "vendor" => port.vendor = opt(v),
        "category" => port.category = opt(v),
        "available_for_dynamic_portgroup" => {
            port.available_for_dynamic_portgroup = v.as_bool().unwrap_or(true)
        }
        "portgroup_uuid" => {
            if let Some(pg) = v.as_str() {
                // ironboot has no port groups, so none can be found.
                return Err(ApiError::bad_request(format!(
                    "Portgroup {pg} could not be found."
                )));
            }
        }
        // node_uuid and uuid are resolved by the caller.
        _ => {}
    }
    Ok(())
}

/// A Smart NIC port says which host runs on the NIC (Ironic's rule).
fn check_smartnic(port: &Port) -> Result<(), ApiError> {
    let llc = &port.local_link_connection;
    if port.is_smartnic && !(llc.contains_key("port_id") && llc.contains_key("hostname")) {
        return Err(ApiError::bad_request(
            "Smart NIC port must have port_id and hostname in local_link_connection",
        ));
    }
    Ok(())
}

/// The node a port names, refused with 400 when it does not exist.
async fn port_node(st: &AppState, raw: &str) -> Result<Node, ApiError> {
    let ident = Uuid::parse_str(raw)
        .map(NodeIdent::Uuid)
        .map_err(|_| ApiError::bad_request(format!("Expected UUID for node_uuid: {raw}")))?;
    match st.store.get_node(&ident).await {
        Err(StoreError::NodeNotFound(_)) => Err(ApiError::bad_request(format!(
            "Node {raw} could not be found."
        ))),
        other => Ok(other?),
    }
}

pub async fn create(
    State(st): State<AppState>,
    version: Version,
    Base(base): Base,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let Value::Object(body) = body else {
        return Err(schema_error(format!("{body} is not of type 'object'")));
    };
    if let Some(extra) = body
        .keys()
        .find(|k| !WRITABLE.contains(&k.as_str()) && k.as_str() != "uuid")
    {
        return Err(schema_error(format!(
            "Additional properties are not allowed ('{extra}' was unexpected)"
        )));
    }
    for (k, v) in &body {
        check_type(k, v)?;
    }
    let (Some(address), Some(node_raw)) = (
        body.get("address").and_then(Value::as_str),
        body.get("node_uuid").and_then(Value::as_str),
    ) else {
        return Err(schema_error(
            "'address' and 'node_uuid' are required properties",
        ));
    };
    let node = port_node(&st, node_raw).await?;
    if body.iter().any(|(k, v)| gated(k, v, version)) {
        return Err(ApiError::not_acceptable());
    }
    let uuid = match body.get("uuid").and_then(Value::as_str) {
        Some(u) => Uuid::parse_str(u)
            .map_err(|_| ApiError::bad_request(format!("Expected UUID for uuid: {u}")))?,
        None => Uuid::new_v4(),
    };
    let mac = MacAddress::parse(address).map_err(|_| invalid_mac(address))?;
    let mut port = Port::new(uuid, node.uuid, mac, crate::model::now());
    for (k, v) in &body {
        set_field(&mut port, k, v)?;
    }
    check_smartnic(&port)?;
    let store = st.store.clone();
    let port = st
        .conductor
        .with_reserved(&NodeIdent::Uuid(node.uuid), |task| async move {
            let result = store
                .create_port(&port)
                .await
                .map(|_| port)
                .map_err(ApiError::from);
            (task, result)
        })
        .await?;
    tracing::info!(port = %port.uuid, node = %port.node_uuid, address = %port.address, "port created");
    let location = format!("{base}/v1/ports/{}", port.uuid);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(views::port_json(&port, None, version, &base)),
    )
        .into_response())
}

/// Query parameters a port list accepts, with the version that introduced each.
const LIST_PARAMS: &[(&str, u32)] = &[
    ("node_uuid", 1),
    ("address", 1),
    ("limit", 1),
    ("marker", 1),
    ("sort_key", 1),
    ("sort_dir", 1),
    ("node", 5),
    ("fields", 8),
    ("portgroup", 24),
    ("detail", 43),
    ("shard", 82),
    ("description_contains", 1),
    ("conductor_groups", 1),
];

fn check_list_params(q: &QueryParams, version: Version) -> Result<(), ApiError> {
    let names: Vec<&str> = LIST_PARAMS.iter().map(|(n, _)| *n).collect();
    q.only(&names)?;
    if version < Version(43)
        && let Some(d) = q.get("detail")
    {
        return Err(ApiError::bad_request(format!(
            "Invalid query parameter ?detail={d} received."
        )));
    }
    if LIST_PARAMS
        .iter()
        .any(|(n, since)| version < Version(*since) && q.get(n).is_some())
    {
        return Err(ApiError::not_acceptable());
    }
    Ok(())
}

fn port_sort(q: &QueryParams, version: Version) -> Result<(PortSortKey, bool), ApiError> {
    let key = match q.get("sort_key") {
        None => PortSortKey::default(),
        Some(k) if port_field_since(k).is_some_and(|s| version < s) => {
            return Err(ApiError::not_acceptable());
        }
        Some(k @ ("extra" | "internal_info" | "local_link_connection")) => {
            return Err(ApiError::bad_request(format!(
                "The sort_key value {k} is an invalid field for sorting"
            )));
        }
        // Ironic's internal columns: node_id orders like the node, portgroup_id is empty here.
        Some("node_id") => PortSortKey::parse("node_uuid").unwrap_or_default(),
        Some("portgroup_id") => PortSortKey::default(),
        Some(k) => PortSortKey::parse(k).ok_or_else(|| {
            ApiError::bad_request(format!(
                "The sort_key value \"{k}\" is an invalid field for sorting"
            ))
        })?,
    };
    let desc = q.descending()?;
    Ok((key, desc))
}

pub async fn list(
    State(st): State<AppState>,
    version: Version,
    base: Base,
    q: QueryParams,
) -> Result<axum::Json<Value>, ApiError> {
    check_list_params(&q, version)?;
    let detail = q.bool("detail")?.unwrap_or(false);
    list_ports(st, version, base, q, None, detail).await
}

pub async fn list_detail(
    State(st): State<AppState>,
    version: Version,
    base: Base,
    q: QueryParams,
) -> Result<axum::Json<Value>, ApiError> {
    check_list_params(&q, version)?;
    list_ports(st, version, base, q, None, true).await
}

pub async fn list_for_node(
    State(st): State<AppState>,
    Path(ident): Path<String>,
    version: Version,
    base: Base,
    q: QueryParams,
) -> Result<axum::Json<Value>, ApiError> {
    check_list_params(&q, version)?;
    let detail = q.bool("detail")?.unwrap_or(false);
    list_ports(st, version, base, q, Some(ident), detail).await
}

pub async fn list_detail_for_node(
    State(st): State<AppState>,
    Path(ident): Path<String>,
    version: Version,
    base: Base,
    q: QueryParams,
) -> Result<axum::Json<Value>, ApiError> {
    check_list_params(&q, version)?;
    list_ports(st, version, base, q, Some(ident), true).await
}

async fn list_ports(
    st: AppState,
    version: Version,
    Base(base): Base,
    q: QueryParams,
    node: Option<String>,
    detail: bool,
) -> Result<axum::Json<Value>, ApiError> {
    let fields = views::parse_port_fields(q.fields().as_deref(), version)?;
    if detail && fields.is_some() {
        return Err(ApiError::bad_request(
            "Can not specify ?detail=True and fields in the same request.",
        ));
    }
    if q.get("portgroup").is_some() {
        // ironboot has no port groups.
        return Err(ApiError::not_found(format!(
            "Portgroup {} could not be found.",
            q.get("portgroup").unwrap_or_default()
        )));
    }
    let node_raw = node.as_deref().or(q.get("node")).or(q.get("node_uuid"));
    let node_uuid = match node_raw {
        Some(n) => Some(st.store.get_node(&node_ident(n, version)?).await?.uuid),
        None => None,
    };
    let addresses = match q.get("address") {
        Some(a) => vec![MacAddress::parse(a).map_err(|_| invalid_mac(a))?],
        None => vec![],
    };
    // Ironic lists a node's ports when a node is named, whatever the address says.
    let addresses = if node_uuid.is_some() {
        vec![]
    } else {
        addresses
    };
    let limit = q.limit(st.max_limit)?;
    let (sort_key, descending) = port_sort(&q, version)?;
    let ports = st
        .store
        .list_ports(&PortQuery {
            node: node_uuid,
            addresses,
            marker: q.uuid("marker")?,
            limit: Some(limit),
            sort_key,
            descending,
            description_contains: q.get("description_contains").map(String::from),
            node_shards: q.list("shard"),
            node_conductor_groups: q.list("conductor_groups"),
        })
        .await?;
    let docs: Vec<Value> = ports
        .iter()
        .map(|p| match (&fields, detail) {
            (Some(f), _) => views::port_json(p, Some(f), version, &base),
            (None, true) => views::port_json(p, None, version, &base),
            (None, false) => {
                let summary: Vec<String> =
                    PORT_SUMMARY_FIELDS.iter().map(|f| f.to_string()).collect();
                views::port_json(p, Some(&summary), version, &base)
            }
        })
        .collect();
    let mut body = json!({ "ports": docs });
    if ports.len() as u32 == limit
        && let Some(last) = ports.last()
    {
        let leaf = if q.get("detail").is_none() && detail {
            "ports/detail"
        } else {
            "ports"
        };
        let path = match &node {
            Some(n) => format!("nodes/{n}/{leaf}"),
            None => leaf.to_string(),
        };
        let mut args = format!(
            "sort_key={}&sort_dir={}&",
            q.get("sort_key").unwrap_or("id"),
            q.get("sort_dir").unwrap_or("asc")
        );
        match &fields {
            Some(f) => args.push_str(&format!("fields={}&", f.join(","))),
            // Ironic's summary is a field list, and its next link says so.
            None if !detail => args.push_str("fields=uuid,address&"),
            None => {}
        }
        if let Ok(Some(d)) = q.bool("detail") {
            args.push_str(&format!("detail={}&", if d { "True" } else { "False" }));
        }
        body["next"] = json!(format!(
            "{base}/v1/{path}?{args}limit={limit}&marker={}",
            last.uuid
        ));
    }
    Ok(axum::Json(body))
}

/// A port is shown by its UUID; a name-like identifier names no port here (ironboot does not
/// look ports up by name), anything else is refused.
fn parse_port_uuid(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| {
        if crate::model::node::validate_name(id).is_ok() {
            ApiError::not_found(format!("Port {id} could not be found."))
        } else {
            ApiError::bad_request(format!("Expected UUID or name for port_ident: {id}"))
        }
    })
}

pub async fn show(
    State(st): State<AppState>,
    Path(id): Path<String>,
    version: Version,
    Base(base): Base,
    q: QueryParams,
) -> Result<axum::Json<Value>, ApiError> {
    q.only(&["fields"])?;
    let fields = views::parse_port_fields(q.fields().as_deref(), version)?;
    let port = st.store.get_port(parse_port_uuid(&id)?).await?;
    Ok(axum::Json(views::port_json(
        &port,
        fields.as_deref(),
        version,
        &base,
    )))
}

/// The writable fields of a port as a document a patch applies to.
fn patch_doc(port: &Port) -> Map<String, Value> {
    let all: Vec<String> = WRITABLE.iter().map(|f| f.to_string()).collect();
    match views::port_json(port, Some(&all), super::version::MAX, "") {
        Value::Object(mut m) => {
            m.remove("links");
            m
        }
        _ => Map::new(),
    }
}

/// Whether the node lets its ports' connectivity change (Ironic: while nothing is using it).
fn connectivity_changeable(node: &Node) -> bool {
    node.maintenance
        || matches!(
            node.provision_state,
            ProvisionState::Enroll
                | ProvisionState::Inspecting
                | ProvisionState::InspectWait
                | ProvisionState::Manageable
        )
}

/// The port after `ops`, checked against the schema, the version and the node's state.
async fn patched(
    st: &AppState,
    port: &Port,
    ops: &[PatchOp],
    version: Version,
) -> Result<Port, ApiError> {
    let before = patch_doc(port);
    let mut doc = before.clone();
    patch::apply(&mut doc, ops, WRITABLE, |f| match f {
        "extra" | "local_link_connection" => Some(json!({})),
        "address" | "node_uuid" => None,
        _ => Some(Value::Null),
    })?;
    if ops
        .iter()
        .filter_map(|op| op.path.trim_start_matches('/').split('/').next())
        .any(|f| doc.get(f).is_some_and(|v| gated(f, v, version)))
    {
        return Err(ApiError::not_acceptable());
    }
    let mut updated = port.clone();
    for f in WRITABLE {
        if doc[*f] != before[*f] {
            set_field(&mut updated, f, &doc[*f])?;
        }
    }
    if doc["node_uuid"] != before["node_uuid"] {
        updated.node_uuid = port_node(st, doc["node_uuid"].as_str().unwrap_or_default())
            .await?
            .uuid;
    }
    Ok(updated)
}

pub async fn update(
    State(st): State<AppState>,
    Path(id): Path<String>,
    version: Version,
    Base(base): Base,
    JsonBody(ops): JsonBody<Vec<PatchOp>>,
) -> Result<axum::Json<Value>, ApiError> {
    let port = st.store.get_port(parse_port_uuid(&id)?).await?;
    let st2 = st.clone();
    let port = st
        .conductor
        .with_reserved(&NodeIdent::Uuid(port.node_uuid), |task| async move {
            let result = async {
                let updated = patched(&st2, &port, &ops, version).await?;
                let connectivity = updated.pxe_enabled != port.pxe_enabled
                    || updated.physical_network != port.physical_network
                    || updated.local_link_connection != port.local_link_connection;
                if connectivity && !connectivity_changeable(&task.node) {
                    return Err(ApiError::conflict(format!(
                        "Port {} can not have any connectivity attributes (physical_network, \
                         pxe_enabled, local_link_connection, portgroup) updated unless node {} \
                         is in a enroll, inspecting, inspect wait, manageable state or in \
                         maintenance mode.",
                        port.uuid, task.node.uuid
                    )));
                }
                if updated == port {
                    return Ok(port);
                }
                Ok(st2.store.save_port(&updated).await?)
            }
            .await;
            (task, result)
        })
        .await?;
    tracing::info!(port = %port.uuid, "port updated");
    Ok(axum::Json(views::port_json(&port, None, version, &base)))
}

pub async fn delete(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let uuid = Uuid::parse_str(&id)
        .map_err(|_| ApiError::bad_request(format!("Expected UUID for port_uuid: {id}")))?;
    let port = st.store.get_port(uuid).await?;
    let store = st.store.clone();
    st.conductor
        .with_reserved(&NodeIdent::Uuid(port.node_uuid), |task| async move {
            let result = store.delete_port(port.uuid).await.map_err(ApiError::from);
            (task, result)
        })
        .await?;
    tracing::info!(port = %port.uuid, "port deleted");
    Ok(StatusCode::NO_CONTENT)
}
