//! `/v1/ports`: create, list, show, delete.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::AppState;
use super::error::ApiError;
use super::extract::{JsonBody, QueryParams};
use super::views::{self, PORT_FIELDS, PORT_SUMMARY_FIELDS};
use crate::model::{Fields, MacAddress, Port};
use crate::store::{NodeIdent, PortQuery};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortCreate {
    uuid: Option<Uuid>,
    address: String,
    node_uuid: String,
    #[serde(default = "default_true")]
    pxe_enabled: bool,
    #[serde(default)]
    extra: Fields,
}

fn default_true() -> bool {
    true
}

pub async fn create(
    State(st): State<AppState>,
    JsonBody(req): JsonBody<PortCreate>,
) -> Result<Response, ApiError> {
    let address =
        MacAddress::parse(&req.address).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let ident = NodeIdent::parse(&req.node_uuid);
    let store = st.store.clone();
    let port = st
        .conductor
        .with_reserved(&ident, |task| async move {
            let port = Port {
                uuid: req.uuid.unwrap_or_else(Uuid::new_v4),
                node_uuid: task.node.uuid,
                address,
                pxe_enabled: req.pxe_enabled,
                extra: req.extra,
                created_at: crate::model::now(),
                updated_at: None,
            };
            let result = store
                .create_port(&port)
                .await
                .map(|_| port)
                .map_err(ApiError::from);
            (task, result)
        })
        .await?;
    tracing::info!(port = %port.uuid, node = %port.node_uuid, address = %port.address, "port created");
    let location = format!("{}/v1/ports/{}", st.base_url, port.uuid);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(views::port_json(&port, PORT_FIELDS, &st.base_url)),
    )
        .into_response())
}

const LIST_PARAMS: &[&str] = &[
    "node",
    "node_uuid",
    "address",
    "limit",
    "marker",
    "fields",
    "detail",
    "sort_key",
    "sort_dir",
];

pub async fn list(
    State(st): State<AppState>,
    q: QueryParams,
) -> Result<axum::Json<Value>, ApiError> {
    let detail = q.bool("detail")?.unwrap_or(false);
    list_ports(st, q, None, detail).await
}

pub async fn list_detail(
    State(st): State<AppState>,
    q: QueryParams,
) -> Result<axum::Json<Value>, ApiError> {
    list_ports(st, q, None, true).await
}

pub async fn list_for_node(
    State(st): State<AppState>,
    Path(ident): Path<String>,
    q: QueryParams,
) -> Result<axum::Json<Value>, ApiError> {
    let detail = q.bool("detail")?.unwrap_or(false);
    list_ports(st, q, Some(ident), detail).await
}

async fn list_ports(
    st: AppState,
    q: QueryParams,
    node: Option<String>,
    detail: bool,
) -> Result<axum::Json<Value>, ApiError> {
    q.only(LIST_PARAMS)?;
    match (q.get("sort_key"), q.get("sort_dir")) {
        (None | Some("id") | Some("created_at"), None | Some("asc")) => {}
        _ => {
            return Err(ApiError::bad_request(
                "ports can only be listed oldest first (sort_key=id, sort_dir=asc)",
            ));
        }
    }
    let fields = views::parse_fields(q.get("fields"), PORT_FIELDS)?;
    let node_ident = node.as_deref().or(q.get("node")).or(q.get("node_uuid"));
    let node_uuid = match node_ident {
        Some(n) => Some(st.store.get_node(&NodeIdent::parse(n)).await?.uuid),
        None => None,
    };
    let addresses = match q.get("address") {
        Some(a) => vec![MacAddress::parse(a).map_err(|e| ApiError::bad_request(e.to_string()))?],
        None => vec![],
    };
    let limit = q.limit(st.max_limit)?;
    let ports = st
        .store
        .list_ports(&PortQuery {
            node: node_uuid,
            addresses,
            marker: q.uuid("marker")?,
            limit: Some(limit),
        })
        .await?;
    let shown: Vec<&str> = match (&fields, detail) {
        (Some(f), _) => f.iter().map(String::as_str).collect(),
        (None, true) => PORT_FIELDS.to_vec(),
        (None, false) => PORT_SUMMARY_FIELDS.to_vec(),
    };
    let docs: Vec<Value> = ports
        .iter()
        .map(|p| views::port_json(p, &shown, &st.base_url))
        .collect();
    let mut body = json!({ "ports": docs });
    if ports.len() as u32 == limit
        && let Some(last) = ports.last()
    {
        body["next"] = json!(format!(
            "{}/v1/ports?limit={limit}&marker={}",
            st.base_url, last.uuid
        ));
    }
    Ok(axum::Json(body))
}

fn parse_port_uuid(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::bad_request(format!("{id:?} is not a port UUID")))
}

pub async fn show(
    State(st): State<AppState>,
    Path(id): Path<String>,
    q: QueryParams,
) -> Result<axum::Json<Value>, ApiError> {
    q.only(&["fields"])?;
    let fields = views::parse_fields(q.get("fields"), PORT_FIELDS)?;
    let port = st.store.get_port(parse_port_uuid(&id)?).await?;
    let shown: Vec<&str> = fields
        .as_ref()
        .map(|f| f.iter().map(String::as_str).collect())
        .unwrap_or_else(|| PORT_FIELDS.to_vec());
    Ok(axum::Json(views::port_json(&port, &shown, &st.base_url)))
}

pub async fn delete(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let port = st.store.get_port(parse_port_uuid(&id)?).await?;
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
