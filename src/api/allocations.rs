//! `/v1/allocations` (1.52+) and `/v1/nodes/{ident}/allocation`: create (a node is picked in
//! the background, or a deployed node backfilled from 1.58), list, show, patch (`name`, `extra`
//! from 1.57), delete (the node is given back).

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::AppState;
use super::error::ApiError;
use super::extract::{JsonBody, QueryParams};
use super::links::Base;
use super::nodes::node_ident;
use super::patch::{self, PatchOp};
use super::version::Version;
use super::views::{links, opt_ts, timestamp};
use crate::model::node::validate_name;
use crate::model::{Allocation, AllocationState};
use crate::store::{AllocationIdent, AllocationQuery, AllocationSortKey, NodeIdent, StoreError};

/// Every allocation field, with the version that introduced it.
const FIELDS: &[(&str, u32)] = &[
    ("uuid", 52),
    ("name", 52),
    ("node_uuid", 52),
    ("state", 52),
    ("last_error", 52),
    ("resource_class", 52),
    ("traits", 52),
    ("candidate_nodes", 52),
    ("extra", 52),
    ("created_at", 52),
    ("updated_at", 52),
    ("owner", 60),
];

fn gate(version: Version) -> Result<(), ApiError> {
    if version < Version(52) {
        return Err(ApiError::not_found(
            "The API version does not allow allocations",
        ));
    }
    Ok(())
}

fn value(a: &Allocation, field: &str) -> Value {
    match field {
        "uuid" => json!(a.uuid),
        "name" => json!(a.name),
        "node_uuid" => json!(a.node_uuid),
        "state" => json!(a.state.as_str()),
        "last_error" => json!(a.last_error),
        "resource_class" => json!(a.resource_class),
        "traits" => json!(a.traits),
        "candidate_nodes" => json!(a.candidate_nodes),
        "extra" => Value::Object(a.extra.clone()),
        "owner" => json!(a.owner),
        "created_at" => timestamp(&a.created_at),
        "updated_at" => opt_ts(&a.updated_at),
        _ => Value::Null,
    }
}

fn allocation_json(a: &Allocation, fields: Option<&[String]>, v: Version, base: &str) -> Value {
    let mut m = Map::new();
    match fields {
        Some(f) => {
            for f in f {
                m.insert(f.clone(), value(a, f));
            }
        }
        None => {
            for (f, _) in FIELDS.iter().filter(|(_, s)| v >= Version(*s)) {
                m.insert((*f).to_string(), value(a, f));
            }
        }
    }
    m.insert(
        "links".into(),
        links(base, "allocations", &a.uuid.to_string()),
    );
    Value::Object(m)
}

fn parse_fields(raw: Option<String>, v: Version) -> Result<Option<Vec<String>>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    let fields = super::views::field_names(&raw);
    for f in &fields {
        match FIELDS.iter().find(|(n, _)| n == f) {
            None => {
                return Err(ApiError::bad_request(format!(
                    "Schema error: '{f}' is not a valid allocation field"
                )));
            }
            Some((_, since)) if v < Version(*since) => return Err(ApiError::not_acceptable()),
            Some(_) => {}
        }
    }
    Ok(Some(fields))
}

/// Allocation names follow node names' alphabet; unlike nodes, a UUID-shaped name is allowed
/// (Ironic accepts it; such an allocation is then found by its uuid only).
fn check_name(n: &str) -> Result<(), ApiError> {
    let ok = !n.is_empty()
        && n.len() <= 255
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    if ok || validate_name(n).is_ok() {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "Cannot create allocation with invalid name '{n}'"
        )))
    }
}

/// An allocation is named by its uuid or (when it has one) its name.
fn ident(raw: &str) -> AllocationIdent {
    NodeIdent::parse(raw)
}

/// A trait an allocation may ask for.
fn check_trait(t: &Value) -> Result<String, ApiError> {
    let s = t.as_str().unwrap_or_default();
    let ok = !s.is_empty()
        && s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        && s.as_bytes()[0].is_ascii_uppercase()
        && s != "CUSTOM_";
    if ok {
        Ok(s.to_string())
    } else {
        Err(ApiError::bad_request(format!(
            "Schema error: {t} is not a valid trait"
        )))
    }
}

const CREATE_KEYS: &[(&str, u32)] = &[
    ("uuid", 52),
    ("name", 52),
    ("resource_class", 52),
    ("traits", 52),
    ("candidate_nodes", 52),
    ("extra", 52),
    ("node", 58),
    ("owner", 60),
];

/// Checks a create body and builds the allocation; returns it with the node to backfill.
async fn from_body(
    st: &AppState,
    body: Value,
    v: Version,
) -> Result<(Allocation, Option<NodeIdent>), ApiError> {
    let Value::Object(body) = body else {
        return Err(ApiError::bad_request(format!(
            "Schema error: {body} is not of type 'object'"
        )));
    };
    for k in body.keys() {
        match CREATE_KEYS.iter().find(|(n, _)| n == k) {
            Some((_, since)) if v >= Version(*since) => {}
            Some(("owner", _)) => return Err(ApiError::not_acceptable()),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "Schema error: Additional properties are not allowed ('{k}' was unexpected)"
                )));
            }
        }
    }
    let text = |k: &str| -> Result<Option<String>, ApiError> {
        match body.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(o) => Err(ApiError::bad_request(format!(
                "Schema error: {o} is not of type 'string', 'null'"
            ))),
        }
    };
    let uuid = match text("uuid")? {
        Some(u) => Uuid::parse_str(&u)
            .map_err(|_| ApiError::bad_request(format!("Expected UUID for uuid: {u}")))?,
        None => Uuid::new_v4(),
    };
    let mut a = Allocation::new(uuid, crate::model::now());
    a.name = text("name")?;
    if let Some(n) = &a.name {
        check_name(n)?;
    }
    a.resource_class = text("resource_class")?;
    if a.resource_class
        .as_ref()
        .is_some_and(|r| r.chars().count() > 80)
    {
        return Err(ApiError::bad_request(
            "Schema error: resource_class is too long",
        ));
    }
    a.owner = text("owner")?;
    let list = |k: &str| -> Result<Vec<Value>, ApiError> {
        match body.get(k) {
            None | Some(Value::Null) => Ok(vec![]),
            Some(Value::Array(items)) => Ok(items.clone()),
            Some(o) => Err(ApiError::bad_request(format!(
                "Schema error: {o} is not of type 'array'"
            ))),
        }
    };
    a.traits = list("traits")?
        .iter()
        .map(check_trait)
        .collect::<Result<_, _>>()?;
    a.candidate_nodes = candidates(st, &list("candidate_nodes")?).await?;
    if let Some(extra) = body.get("extra") {
        a.extra = extra.as_object().cloned().ok_or_else(|| {
            ApiError::bad_request(format!("Schema error: {extra} is not of type 'object'"))
        })?;
    }
    let node = text("node")?.map(|n| NodeIdent::parse(&n));
    if node.is_none() && a.resource_class.is_none() {
        return Err(ApiError::bad_request(
            "The resource_class field is mandatory when not backfilling",
        ));
    }
    Ok((a, node))
}

/// Resolves candidate nodes (uuids or names) to uuids; unknown ones are refused together.
async fn candidates(st: &AppState, raw: &[Value]) -> Result<Vec<Uuid>, ApiError> {
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for c in raw {
        let s = c.as_str().ok_or_else(|| {
            ApiError::bad_request(format!("Schema error: {c} is not of type 'string'"))
        })?;
        match st.store.get_node(&NodeIdent::parse(s)).await {
            Ok(n) => out.push(n.uuid),
            Err(StoreError::NodeNotFound(_)) => missing.push(s.to_string()),
            Err(e) => return Err(e.into()),
        }
    }
    if !missing.is_empty() {
        return Err(ApiError::bad_request(format!(
            "Nodes cannot be found: {}",
            missing.join(", ")
        )));
    }
    Ok(out)
}

pub async fn create(
    State(st): State<AppState>,
    version: Version,
    Base(base): Base,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    if version < Version(52) {
        return Err(ApiError::method_not_allowed(
            "The API version does not allow allocations",
        ));
    }
    let (mut a, backfill) = from_body(&st, body, version).await?;
    if let Some(ident) = &backfill {
        let node = match st.store.get_node(ident).await {
            Err(StoreError::NodeNotFound(_)) => {
                return Err(ApiError::bad_request(format!(
                    "Node {ident} could not be found."
                )));
            }
            other => other?,
        };
        // A mismatch the client can see is refused before anything is stored (Ironic's API
        // check); the node's state is the conductor's to judge.
        if a.resource_class.is_some() && a.resource_class != node.resource_class {
            return Err(ApiError::conflict(format!(
                "Cannot create allocation with resource class '{}' for node {} with resource \
                 class '{}'",
                a.resource_class.as_deref().unwrap_or(""),
                node.uuid,
                node.resource_class.as_deref().unwrap_or("")
            )));
        }
        if !a.traits_match(&node) {
            return Err(ApiError::conflict(format!(
                "Cannot create allocation with traits {:?} for node {} with traits {:?}",
                a.traits, node.uuid, node.traits
            )));
        }
    }
    st.store.create_allocation(&a).await?;
    match backfill {
        Some(node) => st.conductor.backfill(&mut a, &node).await?,
        None => st.conductor.start_allocation(a.clone()),
    }
    tracing::info!(allocation = %a.uuid, "allocation created");
    let location = format!("{base}/v1/allocations/{}", a.uuid);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(allocation_json(&a, None, version, &base)),
    )
        .into_response())
}

pub async fn list(
    State(st): State<AppState>,
    version: Version,
    Base(base): Base,
    q: QueryParams,
) -> Result<axum::Json<Value>, ApiError> {
    gate(version)?;
    q.only(&[
        "node",
        "resource_class",
        "state",
        "owner",
        "fields",
        "limit",
        "marker",
        "sort_key",
        "sort_dir",
    ])?;
    if q.get("owner").is_some() && version < Version(60) {
        return Err(ApiError::not_acceptable());
    }
    let fields = parse_fields(q.fields(), version)?;
    let node = match q.get("node") {
        Some(n) => match st.store.get_node(&node_ident(n, version)?).await {
            Ok(node) => Some(node.uuid),
            Err(StoreError::NodeNotFound(_)) => {
                return Err(ApiError::bad_request(format!(
                    "Node {n} could not be found."
                )));
            }
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    let sort_key = match q.get("sort_key") {
        None => AllocationSortKey::default(),
        Some(k) => AllocationSortKey::parse(k).ok_or_else(|| {
            ApiError::bad_request(format!(
                "The sort_key value {k} is an invalid field for sorting"
            ))
        })?,
    };
    let descending = q.descending()?;
    let limit = q.limit(st.max_limit)?;
    let state = match q.get("state") {
        // An unknown state matches no allocation.
        Some(s) => match AllocationState::parse(s) {
            Some(s) => Some(s),
            None => return Ok(axum::Json(json!({ "allocations": [] }))),
        },
        None => None,
    };
    let all = st
        .store
        .list_allocations(&AllocationQuery {
            node,
            resource_class: q.get("resource_class").map(String::from),
            state,
            owner: q.get("owner").map(String::from),
            sort_key,
            descending,
            marker: q.uuid("marker")?,
            limit: Some(limit),
        })
        .await?;
    let docs: Vec<Value> = all
        .iter()
        .map(|a| allocation_json(a, fields.as_deref(), version, &base))
        .collect();
    let mut body = json!({ "allocations": docs });
    if all.len() as u32 == limit
        && let Some(last) = all.last()
    {
        let mut args = format!(
            "sort_key={}&sort_dir={}&",
            q.get("sort_key").unwrap_or("id"),
            q.get("sort_dir").unwrap_or("asc")
        );
        if let Some(f) = &fields {
            args.push_str(&format!("fields={}&", f.join(",")));
        }
        body["next"] = json!(format!(
            "{base}/v1/allocations?{args}limit={limit}&marker={}",
            last.uuid
        ));
    }
    Ok(axum::Json(body))
}

pub async fn show(
    State(st): State<AppState>,
    Path(id): Path<String>,
    version: Version,
    Base(base): Base,
    q: QueryParams,
) -> Result<axum::Json<Value>, ApiError> {
    gate(version)?;
    q.only(&["fields"])?;
    let fields = parse_fields(q.fields(), version)?;
    let a = st.store.get_allocation(&ident(&id)).await?;
    Ok(axum::Json(allocation_json(
        &a,
        fields.as_deref(),
        version,
        &base,
    )))
}

pub async fn update(
    State(st): State<AppState>,
    Path(id): Path<String>,
    version: Version,
    Base(base): Base,
    JsonBody(ops): JsonBody<Vec<PatchOp>>,
) -> Result<axum::Json<Value>, ApiError> {
    if version < Version(57) {
        return Err(ApiError::method_not_allowed(
            "The API version does not allow updating allocations",
        ));
    }
    let writable: &[&str] = &["name", "extra"];
    let mut a = st.store.get_allocation(&ident(&id)).await?;
    let mut doc = Map::new();
    for f in writable {
        doc.insert(f.to_string(), value(&a, f));
    }
    for op in &ops {
        let top = op
            .path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or("");
        if !writable.contains(&top) {
            return Err(ApiError::bad_request(format!(
                "Cannot patch {}. Only the following can be updated: {}",
                op.path,
                writable.join(", ")
            )));
        }
    }
    patch::apply(&mut doc, &ops, writable, |f| match f {
        "extra" => Some(json!({})),
        _ => Some(Value::Null),
    })?;
    a.name = doc["name"].as_str().map(String::from);
    if let Some(n) = &a.name {
        check_name(n)?;
    }
    a.extra = doc["extra"].as_object().cloned().ok_or_else(|| {
        ApiError::bad_request(format!(
            "Schema error: {} is not of type 'object'",
            doc["extra"]
        ))
    })?;
    let a = st.store.save_allocation(&a).await?;
    Ok(axum::Json(allocation_json(&a, None, version, &base)))
}

pub async fn delete(
    State(st): State<AppState>,
    Path(id): Path<String>,
    version: Version,
) -> Result<StatusCode, ApiError> {
    gate(version)?;
    let a = st.store.get_allocation(&ident(&id)).await?;
    st.conductor.delete_allocation(&a).await?;
    tracing::info!(allocation = %a.uuid, "allocation deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// The allocation of a node, or Ironic's 404 when it has none.
async fn of_node(st: &AppState, raw: &str, version: Version) -> Result<Allocation, ApiError> {
    let node = st.store.get_node(&node_ident(raw, version)?).await?;
    let missing = || ApiError::not_found(format!("Allocation for node {raw} was not found"));
    let a = node.allocation_uuid.ok_or_else(missing)?;
    match st.store.get_allocation(&AllocationIdent::Uuid(a)).await {
        Err(StoreError::AllocationNotFound(_)) => Err(missing()),
        other => Ok(other?),
    }
}

/// Below 1.52 a node has no allocation sub-resource: the router's 404.
fn node_gate(version: Version) -> Result<(), ApiError> {
    if version < Version(52) {
        return Err(ApiError::no_route());
    }
    Ok(())
}

pub async fn show_for_node(
    State(st): State<AppState>,
    Path(node): Path<String>,
    version: Version,
    Base(base): Base,
    q: QueryParams,
) -> Result<axum::Json<Value>, ApiError> {
    node_gate(version)?;
    q.only(&["fields"])?;
    let fields = parse_fields(q.fields(), version)?;
    let a = of_node(&st, &node, version).await?;
    Ok(axum::Json(allocation_json(
        &a,
        fields.as_deref(),
        version,
        &base,
    )))
}

pub async fn delete_for_node(
    State(st): State<AppState>,
    Path(node): Path<String>,
    version: Version,
) -> Result<StatusCode, ApiError> {
    node_gate(version)?;
    let a = of_node(&st, &node, version).await?;
    st.conductor.delete_allocation(&a).await?;
    Ok(StatusCode::NO_CONTENT)
}
