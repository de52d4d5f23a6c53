//! `GET /v1/nodes` and `/v1/nodes/detail`: Ironic's filters, sorting, `fields`, `detail` and
//! marker paging, each gated at the version that introduced it.

use axum::extract::State;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::extract::QueryParams;
use super::links::Base;
use super::node_view::{self, Shown, field_since};
use super::version::Version;
use crate::model::{Node, ProvisionState};
use crate::store::{NodeQuery, NodeSortKey};

/// Query parameters a node list accepts, with the version that introduced each.
const LIST_PARAMS: &[(&str, u32)] = &[
    ("limit", 1),
    ("marker", 1),
    ("sort_key", 1),
    ("sort_dir", 1),
    ("maintenance", 1),
    ("associated", 1),
    ("instance_uuid", 1),
    ("chassis_uuid", 1),
    ("fields", 8),
    ("provision_state", 9),
    ("driver", 16),
    ("resource_class", 21),
    ("fault", 42),
    ("detail", 43),
    ("conductor_group", 46),
    ("conductor", 49),
    ("owner", 50),
    ("description_contains", 51),
    ("retired", 61),
    ("lessee", 65),
    ("project", 65),
    ("shard", 82),
    ("sharded", 82),
    ("parent_node", 83),
    ("include_children", 83),
    ("instance_name", 104),
];

/// JSON columns, which Ironic refuses to sort by.
const UNSORTABLE: &[&str] = &[
    "properties",
    "driver_info",
    "extra",
    "instance_info",
    "driver_internal_info",
    "clean_step",
    "deploy_step",
    "raid_config",
    "target_raid_config",
    "traits",
    "network_data",
    "service_step",
];

/// Refuses unknown parameters (400) and parameters newer than `version` (406).
fn check_params(q: &QueryParams, version: Version) -> Result<(), ApiError> {
    let names: Vec<&str> = LIST_PARAMS.iter().map(|(n, _)| *n).collect();
    q.only(&names)?;
    if version < Version(43)
        && let Some(d) = q.get("detail")
    {
        return Err(ApiError::bad_request(format!(
            "Invalid query parameter ?detail={d} received."
        )));
    }
    for (name, since) in LIST_PARAMS {
        if version < Version(*since) && q.get(name).is_some() {
            return Err(ApiError::not_acceptable());
        }
    }
    Ok(())
}

fn sort_key(q: &QueryParams, version: Version) -> Result<NodeSortKey, ApiError> {
    let Some(k) = q.get("sort_key") else {
        return Ok(NodeSortKey::default());
    };
    if field_since(k).is_some_and(|since| version < since) {
        return Err(ApiError::not_acceptable());
    }
    if UNSORTABLE.contains(&k) {
        return Err(ApiError::bad_request(format!(
            "The sort_key value {k} is an invalid field for sorting"
        )));
    }
    match NodeSortKey::parse(k) {
        Some(key) => Ok(key),
        // Columns ironboot computes rather than stores (fault, console_enabled, ...) hold one
        // value for every node: the list is in id order, as Ironic's would be.
        None if [
            "fault",
            "console_enabled",
            "chassis_id",
            "conductor_affinity",
        ]
        .contains(&k) =>
        {
            Ok(NodeSortKey::default())
        }
        None => Err(ApiError::bad_request(format!(
            "The sort_key value \"{k}\" is an invalid field for sorting"
        ))),
    }
}

/// The store query for the filters; `None` when no node can match (a fault filter: ironboot
/// records no faults).
fn query(q: &QueryParams, version: Version) -> Result<Option<NodeQuery>, ApiError> {
    let provision_state = q
        .get("provision_state")
        .map(|s| {
            s.parse::<ProvisionState>()
                .map_err(|e| ApiError::bad_request(e.to_string()))
        })
        .transpose()?;
    if let Some(f) = q.get("fault") {
        const FAULTS: &[&str] = &[
            "power failure",
            "clean failure",
            "rescue abort failure",
            "service failure",
        ];
        if !FAULTS.contains(&f) {
            return Err(ApiError::bad_request(format!(
                "Unrecognized fault \"{f}\" is specified, allowed faults are {FAULTS:?}"
            )));
        }
        return Ok(None);
    }
    let string = |k: &str| q.get(k).map(String::from);
    Ok(Some(NodeQuery {
        provision_state,
        maintenance: q.bool("maintenance")?,
        associated: q.bool("associated")?,
        retired: q.bool("retired")?,
        sharded: q.bool("sharded")?,
        instance_uuid: q.uuid("instance_uuid")?,
        parent_node: q.uuid("parent_node")?,
        driver: string("driver"),
        resource_class: string("resource_class"),
        conductor_group: string("conductor_group"),
        owner: string("owner"),
        lessee: string("lessee"),
        project: string("project"),
        description_contains: string("description_contains"),
        instance_name: string("instance_name"),
        shards: q.list("shard"),
        sort_key: sort_key(q, version)?,
        descending: q.descending()?,
        marker: q.uuid("marker")?,
        limit: Some(0),
        ..Default::default()
    }))
}

/// Ironic's `next`: the sort, the flags it carries, `fields`, then limit and marker.
fn next_link(q: &QueryParams, base: &str, path: &str, limit: u32, last: &Node) -> String {
    let mut args = format!(
        "sort_key={}&sort_dir={}&",
        q.get("sort_key").unwrap_or("id"),
        q.get("sort_dir").unwrap_or("asc")
    );
    for flag in ["associated", "maintenance", "retired"] {
        if let Ok(Some(true)) = q.bool(flag) {
            args.push_str(&format!("{flag}=True&"));
        }
    }
    if let Ok(Some(d)) = q.bool("detail") {
        args.push_str(&format!("detail={}&", if d { "True" } else { "False" }));
    }
    match q.fields() {
        Some(f) => {
            let f: Vec<&str> = f
                .split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .collect();
            args.push_str(&format!("fields={}&", f.join(",")));
        }
        // Ironic's summary is a field list, and its next link says so.
        None if path == "nodes" && q.bool("detail").ok().flatten() != Some(true) => {
            args.push_str(
                "fields=instance_uuid,maintenance,power_state,provision_state,uuid,name&",
            );
        }
        None => {}
    }
    format!("{base}/v1/{path}?{args}limit={limit}&marker={}", last.uuid)
}

pub async fn list(
    State(st): State<AppState>,
    version: Version,
    base: Base,
    q: QueryParams,
) -> Result<axum::Json<Value>, ApiError> {
    check_params(&q, version)?;
    let detail = q.bool("detail")?.unwrap_or(false);
    list_nodes(st, version, base, q, detail, "nodes").await
}

pub async fn list_detail(
    State(st): State<AppState>,
    version: Version,
    base: Base,
    q: QueryParams,
) -> Result<axum::Json<Value>, ApiError> {
    check_params(&q, version)?;
    if q.get("detail").is_some() || q.get("fields").is_some() {
        let bad = if q.get("detail").is_some() {
            "detail"
        } else {
            "fields"
        };
        return Err(ApiError::bad_request(format!(
            "Invalid query parameter ?{bad}={} received.",
            q.get(bad).unwrap_or_default()
        )));
    }
    list_nodes(st, version, base, q, true, "nodes/detail").await
}

async fn list_nodes(
    st: AppState,
    version: Version,
    Base(base): Base,
    q: QueryParams,
    detail: bool,
    path: &str,
) -> Result<axum::Json<Value>, ApiError> {
    let fields = node_view::parse_fields(q.fields().as_deref(), version)?;
    if detail && fields.is_some() && path == "nodes" {
        return Err(ApiError::bad_request(
            "Can not specify ?detail=True and fields in the same request.",
        ));
    }
    if let Some(c) = q.get("chassis_uuid") {
        let c = q
            .uuid("chassis_uuid")?
            .map(|u| u.to_string())
            .unwrap_or(c.into());
        // ironboot keeps no chassis.
        return Err(ApiError::not_found(format!(
            "Chassis {c} could not be found."
        )));
    }
    let limit = q.limit(st.max_limit)?;
    let Some(mut query) = query(&q, version)? else {
        return Ok(axum::Json(json!({ "nodes": [] })));
    };
    query.limit = Some(limit);
    let mut nodes = st.store.list_nodes(&query).await?;
    if let Some(c) = q.get("conductor") {
        nodes.retain(|n| st.conductor_for(n).unwrap_or_default() == c);
    }
    let shown = match fields {
        Some(f) => Shown::Only(f),
        None if detail => Shown::All,
        None => Shown::Summary,
    };
    let docs: Vec<Value> = nodes
        .iter()
        .map(|n| node_view::node_json(n, &shown, version, &base, st.conductor_for(n).as_deref()))
        .collect();
    let mut body = json!({ "nodes": docs });
    // A list by instance is at most one node: Ironic gives it no next link.
    if nodes.len() as u32 == limit
        && q.get("instance_uuid").is_none()
        && let Some(last) = nodes.last()
    {
        body["next"] = json!(next_link(&q, &base, path, limit, last));
    }
    Ok(axum::Json(body))
}
