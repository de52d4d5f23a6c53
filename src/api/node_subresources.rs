//! Node sub-resources ironboot keeps no records for, answered as Ironic answers for a node
//! without any: `vifs` (no network service attaches VIFs), `bios` and `firmware` (no settings or
//! components read), `history` (no events recorded), `children` (no child nodes listed here).
//! Each is a 404 from the router below the version that introduced it, like any unknown path;
//! a name Ironic does not know is refused the way Ironic refuses it.

use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::links::Base;
use super::nodes::node_ident;
use super::version::Version;

/// Sub-resources answered empty, with the version that introduced each.
const EMPTY: &[(&str, u32)] = &[
    ("portgroups", 24),
    ("vifs", 28),
    ("bios", 40),
    ("history", 78),
    ("children", 83),
    ("firmware", 86),
];

/// Sub-resources Ironic has and ironboot does not implement: the router's 404, as below their
/// version.
const NOT_IMPLEMENTED: &[&str] = &[
    "inventory",
    "vmedia",
    "management",
    "vendor_passthru",
    "console",
    "inject_nmi",
];

pub async fn get(
    State(st): State<AppState>,
    Path((ident, sub)): Path<(String, String)>,
    version: Version,
    Base(base): Base,
) -> Result<axum::Json<Value>, ApiError> {
    if sub == "inventory" {
        return super::inspection::inventory(&st, &ident, version).await;
    }
    if NOT_IMPLEMENTED.contains(&sub.as_str()) {
        return Err(ApiError::no_route());
    }
    let Some((_, since)) = EMPTY.iter().find(|(name, _)| *name == sub) else {
        let ident = node_ident(&ident, version)?;
        st.store.get_node(&ident).await?;
        return Err(ApiError::bad_request(format!(
            "Field {sub} is not a valid field."
        )));
    };
    if version < Version(*since) {
        return Err(ApiError::no_route());
    }
    let node = st.store.get_node(&node_ident(&ident, version)?).await?;
    let mut doc = json!({ sub.as_str(): [] });
    if sub == "children" {
        doc["links"] = json!({
            "href": format!("{base}/v1/nodes?parent_node={}", node.uuid),
            "rel": "children",
        });
    }
    Ok(axum::Json(doc))
}

/// `GET /v1/nodes/{ident}/volume` (1.32+): links to the node's (empty) connectors and targets.
pub async fn volume(
    State(st): State<AppState>,
    Path(ident): Path<String>,
    version: Version,
    Base(base): Base,
) -> Result<axum::Json<Value>, ApiError> {
    if version < Version(32) {
        return Err(ApiError::no_route());
    }
    st.store.get_node(&node_ident(&ident, version)?).await?;
    let link = |p: &str| {
        json!([
            {"href": format!("{base}/v1/nodes/{ident}/volume/{p}"), "rel": "self"},
            {"href": format!("{base}/nodes/{ident}/volume/{p}"), "rel": "bookmark"},
        ])
    };
    Ok(axum::Json(json!({
        "links": link(""),
        "connectors": link("connectors"),
        "targets": link("targets"),
    })))
}

/// `GET /v1/nodes/{ident}/volume/{connectors,targets}`: ironboot keeps none.
pub async fn volume_items(
    State(st): State<AppState>,
    Path((ident, kind)): Path<(String, String)>,
    version: Version,
) -> Result<axum::Json<Value>, ApiError> {
    if version < Version(32) || !matches!(kind.as_str(), "connectors" | "targets") {
        return Err(ApiError::no_route());
    }
    st.store.get_node(&node_ident(&ident, version)?).await?;
    Ok(axum::Json(json!({ kind: [] })))
}
