//! Resources of Ironic's API that ironboot does not keep: chassis, port groups, deploy
//! templates, volume connectors and targets, runbooks and inspection rules.
//!
//! They answer as an Ironic in which none was ever created: lists are empty, any one of them
//! "could not be found", and writes are refused with 405 naming what ironboot does not keep.
//! Below the version that introduced a resource, Ironic's own "not supported for this version"
//! answer.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, get};
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::version::Version;

/// One absent collection.
#[derive(Debug, Clone, Copy)]
pub struct Absent {
    /// The list key and URL segment (`chassis`, `portgroups`, ...).
    pub key: &'static str,
    /// How an item is named in "could not be found" (`Chassis`, `Portgroup`, ...).
    pub item: &'static str,
    pub since: u32,
    /// How Ironic refuses the resource below its version: `None`, a fault with version headers
    /// ("not supported for this version"); `Some(text)`, its router's 404 with that text.
    pub too_old: Option<&'static str>,
}

pub const CHASSIS: Absent = Absent {
    key: "chassis",
    item: "Chassis",
    since: 1,
    too_old: None,
};
pub const PORTGROUPS: Absent = Absent {
    key: "portgroups",
    item: "Portgroup",
    since: 23,
    too_old: None,
};
pub const DEPLOY_TEMPLATES: Absent = Absent {
    key: "deploy_templates",
    item: "Deploy template",
    since: 55,
    too_old: Some("The API version does not allow deploy templates"),
};
pub const VOLUME_CONNECTORS: Absent = Absent {
    key: "connectors",
    item: "Volume connector",
    since: 32,
    too_old: None,
};
pub const VOLUME_TARGETS: Absent = Absent {
    key: "targets",
    item: "Volume target",
    since: 32,
    too_old: None,
};
pub const RUNBOOKS: Absent = Absent {
    key: "runbooks",
    item: "Runbook",
    since: 92,
    too_old: Some("The API version does not allow runbooks"),
};
pub const INSPECTION_RULES: Absent = Absent {
    key: "inspection_rules",
    item: "Inspection rule",
    since: 96,
    too_old: Some("The API version does not allow inspection rules"),
};

impl Absent {
    fn gate(&self, version: Version) -> Result<(), ApiError> {
        if version < Version(self.since) {
            return Err(match self.too_old {
                None => ApiError::not_found("The API is not supported for this version"),
                Some(text) => ApiError::http(StatusCode::NOT_FOUND, text),
            });
        }
        Ok(())
    }

    fn refuse(&self) -> ApiError {
        ApiError::method_not_allowed(format!(
            "ironboot does not keep {}; see docs/api.md",
            self.key.replace('_', " ")
        ))
    }

    /// `GET` of the collection (and `/detail`): empty; `POST`: refused.
    pub fn collection(self) -> MethodRouter<AppState> {
        get(move |v: Version| async move {
            self.gate(v)?;
            Ok::<_, ApiError>(axum::Json(json!({ self.key: [] })))
        })
        .post(move |v: Version| async move {
            self.gate(v)?;
            Err::<StatusCode, _>(self.refuse())
        })
    }

    /// `GET` of one item: not found; `PATCH`/`DELETE`: refused.
    pub fn item(self) -> MethodRouter<AppState> {
        get(move |v: Version, Path(id): Path<String>| async move {
            self.gate(v)?;
            Err::<StatusCode, _>(ApiError::not_found(format!(
                "{} {id} could not be found.",
                self.item
            )))
        })
        .patch(move |v: Version| async move {
            self.gate(v)?;
            Err::<StatusCode, _>(self.refuse())
        })
        .delete(move |v: Version| async move {
            self.gate(v)?;
            Err::<StatusCode, _>(self.refuse())
        })
    }
}

/// `GET /v1/volume` (1.32+): the links to the (empty) connectors and targets.
pub async fn volume(v: Version, super::links::Base(base): super::links::Base) -> impl IntoResponse {
    if v < Version(32) {
        return ApiError::not_found("The API is not supported for this version").into_response();
    }
    let link = |p: &str| {
        json!([
            {"href": format!("{base}/v1/volume/{p}"), "rel": "self"},
            {"href": format!("{base}/volume/{p}"), "rel": "bookmark"},
        ])
    };
    axum::Json(json!({
        "links": link(""),
        "connectors": link("connectors"),
        "targets": link("targets"),
    }))
    .into_response()
}

/// `GET /v1/shards` (1.82+): the shards nodes are in, with how many nodes each.
pub async fn shards(State(st): State<AppState>, v: Version) -> Result<axum::Json<Value>, ApiError> {
    if v < Version(82) {
        return Err(ApiError::not_found("The API version does not allow shards"));
    }
    let nodes = st
        .store
        .list_nodes(&crate::store::NodeQuery::default())
        .await?;
    // Nodes without a shard count as the shard `null`, as in Ironic.
    let mut counts = std::collections::BTreeMap::<Option<String>, u64>::new();
    for n in nodes {
        *counts.entry(n.shard).or_default() += 1;
    }
    let shards: Vec<Value> = counts
        .into_iter()
        .map(|(name, count)| json!({"name": name, "count": count}))
        .collect();
    Ok(axum::Json(json!({ "shards": shards })))
}
